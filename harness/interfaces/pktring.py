"""The capture socket: an AF_PACKET socket bound to one interface, read through a TPACKET_V3
ring (what libpcap uses on Linux), or with recvmsg where the kernel refuses a ring.

`open_packet_socket` opens and binds it (call it inside the capture namespace);
The socket joins the interface's promiscuous membership (PACKET_MR_PROMISC): a NIC behind a
switch mirror port or a tap receives frames addressed to other MACs, and without it the NIC's own
filter drops them before any socket sees them. The kernel undoes the membership when the socket
closes; `netcap` confirms it took effect (the interface's promiscuity count) before a window.
`FrameCapture` drains it into a pcapng writer, counting frames by direction, frames that forge
the capture side's MAC, frames beyond the size cap, and the kernel's drops. VLAN tags the kernel
stripped are put back, as libpcap does.
"""

from __future__ import annotations

import errno
import os
import select
import socket
import struct
import threading
import time

from harness.formats.pcap import PcapngWriter

ETH_P_ALL = 0x0003
SOL_PACKET = 263
PACKET_STATISTICS = 6
PACKET_AUXDATA = 8
PACKET_VERSION = 10
PACKET_RX_RING = 5
TPACKET_V3 = 2
SO_RCVBUFFORCE = 33
SO_TIMESTAMPNS = 35
TP_STATUS_VLAN_VALID = 0x10
TP_STATUS_VLAN_TPID_VALID = 0x40
PACKET_OUTGOING = 4
PACKET_ADD_MEMBERSHIP = 1
PACKET_MR_PROMISC = 1

_AUX = struct.Struct("IIIHHHH")
_TIMESPEC = struct.Struct("qq")


class PacketRing:
    """A TPACKET_V3 receive ring mapped into this process (what libpcap uses on Linux).

    The kernel fills blocks of `block_size` bytes with frames and hands a block over when it is
    full or `retire_ms` after its first frame; we walk it and give it back. Small frames cost
    their length plus ~80 bytes of the ring (a socket buffer costs ~1 KiB of skb per frame), so a
    64 MiB ring holds several hundred thousand frames of burst.
    """

    HDR = struct.Struct("IIIIIIHHIIH")  # tpacket3_hdr up to tp_vlan_tpid
    BLOCK_STATUS, NUM_PKTS, FIRST_PKT = 8, 12, 16
    TP_STATUS_USER = 1

    def __init__(self, sock: socket.socket, total: int, snaplen: int, retire_ms: int = 20) -> None:
        import mmap
        page = mmap.PAGESIZE
        block = max(page, 1 << (snaplen + 4096 - 1).bit_length())  # a full frame fits one block
        block = min(max(block, 1 << 20), 4 << 20)
        nr = max(4, total // block)
        frame = 2048
        req = struct.pack("IIIIIII", block, nr, frame, block // frame * nr, retire_ms, 0, 0)
        sock.setsockopt(SOL_PACKET, PACKET_VERSION, TPACKET_V3)
        sock.setsockopt(SOL_PACKET, PACKET_RX_RING, req)
        self.map = mmap.mmap(sock.fileno(), block * nr, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        self.block_size, self.blocks = block, nr

    def close(self) -> None:
        try:
            self.map.close()
        except (BufferError, ValueError):
            pass


def join_promiscuous(sock: socket.socket, ifname: str) -> None:
    """Make `ifname` promiscuous for as long as `sock` is open (PACKET_ADD_MEMBERSHIP).

    Call in the interface's namespace. A membership rather than IFF_PROMISC via ioctl: the
    kernel counts it, drops it when the socket closes (even on SIGKILL), and leaves any
    promiscuity set by someone else alone. Raises OSError when the kernel refuses.
    """
    # struct packet_mreq: int mr_ifindex; unsigned short mr_type, mr_alen; unsigned char mr_address[8]
    mreq = struct.pack("iHH8s", socket.if_nametoindex(ifname), PACKET_MR_PROMISC, 0, b"")
    sock.setsockopt(SOL_PACKET, PACKET_ADD_MEMBERSHIP, mreq)


def open_packet_socket(ifname: str, buffer_bytes: int, snaplen: int,
                        use_ring: bool = True) -> tuple[socket.socket, "PacketRing | None", str]:
    """Open and bind the capture socket (with a TPACKET_V3 ring when the kernel allows) and make
    the interface promiscuous; call inside the capture namespace."""
    # Protocol 0 at creation: the socket receives nothing until bound, so no frame of another
    # interface slips in before the bind.
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
    ring = None
    try:
        if use_ring:
            try:
                ring = PacketRing(sock, buffer_bytes, snaplen)
            except (OSError, ValueError):
                ring = None  # fall back to recvmsg with a large socket buffer
        if ring is None:
            try:
                sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, buffer_bytes)
            except OSError:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, buffer_bytes)
            sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
            sock.setsockopt(SOL_PACKET, PACKET_AUXDATA, 1)
        sock.bind((ifname, ETH_P_ALL))
        join_promiscuous(sock, ifname)
        # Bound to an interface that is still down: the kernel flags ENETDOWN once; clear it. The
        # socket starts receiving when the interface comes up.
        sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        mac = ":".join(f"{b:02x}" for b in sock.getsockname()[4])
        return sock, ring, mac
    except BaseException:
        if ring is not None:
            ring.close()
        sock.close()
        raise


class FrameCapture:
    """Drain a bound capture socket (ring or recvmsg) into a pcapng writer.

    counts: packets (written), in (from the board's side), out (sent by the capture side),
    not_written (beyond `max_bytes`), received and kdrops (the kernel's PACKET_STATISTICS),
    forged (frames from the board's side carrying `capture_mac` as source).
    """

    def __init__(self, sock: socket.socket, ring: "PacketRing | None", writer: PcapngWriter, out, *,
                 interface: str, capture_mac: str, snaplen: int, max_bytes: int) -> None:
        self.sock, self.ring, self.writer, self.out = sock, ring, writer, out
        self.interface = interface
        self.capture_mac = capture_mac
        self.snaplen = snaplen
        self.max_bytes = max_bytes
        self.error: str | None = None
        self.counts = {"packets": 0, "in": 0, "out": 0, "not_written": 0, "received": 0, "kdrops": 0,
                       "forged": 0}
        self._stop_evt = threading.Event()

    def run(self, stop: threading.Event) -> None:
        """Drain the socket into the writer until `stop` is set (the capture thread's body).

        Never raises: a failure is kept in `error`, in words, for the capture point to report.
        """
        self._stop_evt = stop
        try:
            if self.ring is not None:
                self._ring_loop()
            else:
                self._recv_loop()
        except OSError as exc:
            if exc.errno in (errno.ENETDOWN, errno.ENXIO, errno.ENODEV):
                self.error = (f"interface {self.interface} went down or disappeared during the capture "
                               f"({exc.strerror}); frames after that were not seen")
            else:
                self.error = f"capture socket on {self.interface} failed: {exc}"
        except BaseException as exc:  # never let the thread die silently
            self.error = f"capture thread failed: {exc!r}"
        finally:
            try:
                self.read_stats()
            except OSError:
                pass

    def _ring_loop(self) -> None:
        ring, sock, writer, counts = self.ring, self.sock, self.writer, self.counts
        assert ring is not None and sock is not None and writer is not None
        mm = ring.map
        bsize, nblocks = ring.block_size, ring.blocks
        unpack_hdr = PacketRing.HDR.unpack_from
        u32 = struct.Struct("I").unpack_from
        write = writer.write_packet
        out = self.out
        max_bytes = self.max_bytes
        poller = select.poll()
        poller.register(sock.fileno(), select.POLLIN | select.POLLERR)
        zero = b"\0\0\0\0"
        blk = 0
        n_in = n_out = n_written = n_skipped = n_forged = 0
        own = bytes.fromhex(self.capture_mac.replace(":", "")) if self.capture_mac else b"-"
        last_stats = time.monotonic()
        drain_until = None
        try:
            while True:
                base = blk * bsize
                if not u32(mm, base + PacketRing.BLOCK_STATUS)[0] & PacketRing.TP_STATUS_USER:
                    now = time.monotonic()
                    if now - last_stats >= 1.0:
                        self.read_stats()
                        last_stats = now
                    if drain_until is None and self._stop_evt.is_set():
                        # Blocks are handed over at most retire_ms after their first frame.
                        drain_until = now + 0.2
                    if drain_until is not None and now >= drain_until:
                        return
                    for _fd, ev in poller.poll(50):
                        if ev & select.POLLERR:
                            err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                            if err:
                                raise OSError(err, os.strerror(err))
                    continue
                num = u32(mm, base + PacketRing.NUM_PKTS)[0]
                p = base + u32(mm, base + PacketRing.FIRST_PKT)[0]
                for _ in range(num):
                    (nxt, sec, nsec, snap, length, status, mac, _net, _rxhash, tci,
                     tpid) = unpack_hdr(mm, p)
                    data = mm[p + mac:p + mac + snap]
                    if mm[p + 58] == PACKET_OUTGOING:  # sockaddr_ll.sll_pkttype after the header
                        n_out += 1
                    else:
                        n_in += 1
                        if data[6:12] == own:  # arrived from the board's side with our own MAC
                            n_forged += 1
                    if status & TP_STATUS_VLAN_VALID and snap >= 12:
                        if not status & TP_STATUS_VLAN_TPID_VALID or not tpid:
                            tpid = 0x8100
                        data = data[:12] + struct.pack("!HH", tpid, tci) + data[12:]
                        length += 4
                    if out.tell() >= max_bytes:
                        n_skipped += 1
                    else:
                        write(sec * 1_000_000_000 + nsec, data, length)
                        n_written += 1
                    p += nxt
                mm[base + PacketRing.BLOCK_STATUS:base + PacketRing.BLOCK_STATUS + 4] = zero  # back to the kernel
                blk = (blk + 1) % nblocks
                if self._stop_evt.is_set():
                    # A link that never goes quiet must not keep the window open: 2 s at most.
                    now = time.monotonic()
                    if drain_until is None:
                        drain_until = now + 0.2
                    if now >= drain_until + 1.8:
                        return
                counts["packets"], counts["in"], counts["out"], counts["not_written"], counts["forged"] = (
                    n_written, n_in, n_out, n_skipped, n_forged)
        finally:
            counts["packets"], counts["in"], counts["out"], counts["not_written"], counts["forged"] = (
                n_written, n_in, n_out, n_skipped, n_forged)

    def _recv_loop(self) -> None:
        sock, writer, counts = self.sock, self.writer, self.counts
        assert sock is not None and writer is not None
        anc = socket.CMSG_SPACE(_TIMESPEC.size) + socket.CMSG_SPACE(_AUX.size)
        bufsize = self.snaplen
        recvmsg = sock.recvmsg
        out = self.out
        max_bytes = self.max_bytes
        poller = select.poll()
        poller.register(sock.fileno(), select.POLLIN)
        last_stats = time.monotonic()
        own = bytes.fromhex(self.capture_mac.replace(":", "")) if self.capture_mac else b"-"
        try:
            draining = False
            drain_deadline = 0.0
            while True:
                if not draining and self._stop_evt.is_set():
                    draining = True
                    drain_deadline = time.monotonic() + 2.0
                if not draining:
                    if not poller.poll(100):
                        continue
                got = 0
                for _ in range(4096):
                    try:
                        data, ancdata, flags, addr = recvmsg(bufsize, anc, socket.MSG_DONTWAIT)
                    except (BlockingIOError, InterruptedError):
                        break
                    got += 1
                    ts = 0
                    aux = None
                    for level, typ, cdata in ancdata:
                        if level == socket.SOL_SOCKET and typ == SO_TIMESTAMPNS and len(cdata) >= 16:
                            sec, nsec = _TIMESPEC.unpack_from(cdata)
                            ts = sec * 1_000_000_000 + nsec
                        elif level == SOL_PACKET and typ == PACKET_AUXDATA and len(cdata) >= _AUX.size:
                            aux = _AUX.unpack_from(cdata)
                    if not ts:
                        ts = time.time_ns()
                    orig_len = len(data)
                    if aux is not None:
                        status, tp_len, _snap, _mac, _net, tci, tpid = aux
                        orig_len = max(tp_len, orig_len)
                        if status & TP_STATUS_VLAN_VALID and len(data) >= 12:
                            # The kernel strips the VLAN tag into metadata; put it back as libpcap does.
                            if not status & TP_STATUS_VLAN_TPID_VALID or not tpid:
                                tpid = 0x8100
                            data = data[:12] + struct.pack("!HH", tpid, tci) + data[12:]
                            orig_len += 4
                    if addr[2] == PACKET_OUTGOING:
                        counts["out"] += 1
                    else:
                        counts["in"] += 1
                        if data[6:12] == own:  # arrived from the board's side with our own MAC
                            counts["forged"] += 1
                    if out.tell() >= max_bytes:
                        counts["not_written"] += 1
                        continue
                    writer.write_packet(ts, data, orig_len)
                    counts["packets"] += 1
                now = time.monotonic()
                if now - last_stats >= 1.0:
                    self.read_stats()
                    last_stats = now
                if draining and (got == 0 or now > drain_deadline):
                    break
        finally:
            pass

    def read_stats(self) -> None:
        if self.sock is None:
            return
        # tpacket_stats (or tpacket_stats_v3 with a ring); tp_packets includes the drops.
        raw = self.sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, 12 if self.ring is not None else 8)
        packets, drops = struct.unpack_from("II", raw)
        self.counts["received"] += packets
        self.counts["kdrops"] += drops
