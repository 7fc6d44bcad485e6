"""Packet capture files: classic pcap and pcapng, read from bytes; pcapng written to a file object.

Reading (`read_capture`, `iter_packets`) understands:

* classic pcap in both byte orders, microsecond (0xa1b2c3d4) and nanosecond (0xa1b23c4d) magic,
  the header's snaplen and link type (the FCS bits above the low 16 are masked off);
* pcapng: Section Header (either byte order, several sections), Interface Description
  (per-interface link type, snaplen, if_tsresol, if_tsoffset), Enhanced Packet, Simple Packet,
  the obsolete Packet block, and Interface Statistics (isb_ifrecv / isb_ifdrop / isb_osdrop).
  Other block types (name resolution, decryption secrets, custom) are skipped.

Only the bytes are read; link-layer decoding lives in `harness.formats.netproto`.

Captures are hostile input. Only a header that cannot be used at all (unknown magic, no room for
the file header, a first pcapng block that is not a usable Section Header) raises
`CaptureFormatError`, whose message names the offset. Everything after that is reported in
`Capture.anomalies` with its offset, and the packets before the problem are kept: a truncated
tail, a record or block whose length is absurd or disagrees with its trailer, a packet that names
an interface that was never described. Problems that mean packets may be missing set
`Capture.data_lost`, so a caller that must fail closed can tell them from harmless oddities
(a record longer than the snaplen). Every loop advances by at least one record header, so
reading ends on any input.

`PcapngWriter` writes the live capture: one section, one interface with if_tsresol = 9
(timestamps in nanoseconds), optionally the capturing interface's MAC address (if_MACaddr),
Enhanced Packet blocks and Interface Statistics blocks. The reader reports every interface's
if_MACaddr in `Capture.interface_macs`: frames with that source address were sent by the capturing
host itself (for attestlab's capture point: ARP replies, sinkhole answers), not by the board. The
writer also names the interface's own addresses (if_IPv4addr, if_IPv6addr), which the reader gives
as `Capture.interface_addresses`: addresses the capturing host holds are never the board's.
"""

from __future__ import annotations

import gc
import ipaddress
import struct
from contextlib import contextmanager
from dataclasses import dataclass
from typing import BinaryIO, Iterator

__all__ = [
    "CaptureFormatError",
    "Packet",
    "CaptureStats",
    "Capture",
    "read_capture",
    "iter_packets",
    "CaptureScan",
    "PcapngWriter",
    "LINKTYPE_ETHERNET",
    "LINKTYPE_RAW",
    "LINKTYPE_IPV4",
    "LINKTYPE_IPV6",
    "LINKTYPE_LINUX_SLL",
]

LINKTYPE_ETHERNET = 1
LINKTYPE_RAW = 101
LINKTYPE_LINUX_SLL = 113
LINKTYPE_IPV4 = 228
LINKTYPE_IPV6 = 229

# Larger than any real frame (Wireshark's own ceiling is 256 KiB for most link types); a record
# claiming more is corruption, and we cannot resynchronise after it.
MAX_RECORD_LEN = 16 * 1024 * 1024
MAX_BLOCK_LEN = MAX_RECORD_LEN + 4096
# Beyond this many anomalies of one kind only a count is kept: hostile files stay small in memory.
_MAX_ANOMALIES_PER_KIND = 20

_PCAP_MAGIC_US = 0xA1B2C3D4
_PCAP_MAGIC_NS = 0xA1B23C4D
_SHB = 0x0A0D0D0A
_IDB = 0x00000001
_PB_OBSOLETE = 0x00000002
_SPB = 0x00000003
_ISB = 0x00000005
_EPB = 0x00000006
_BYTE_ORDER_MAGIC = 0x1A2B3C4D


class CaptureFormatError(ValueError):
    """The file cannot be used at all (its header is unusable). The message names the offset."""

    def __init__(self, message: str, offset: int = 0) -> None:
        super().__init__(f"{message} at offset {offset}")
        self.offset = offset


@dataclass(frozen=True, slots=True)
class Packet:
    timestamp_ns: int
    linktype: int
    data: bytes
    orig_len: int
    interface: int = 0


@dataclass(frozen=True)
class CaptureStats:
    received: int | None
    dropped: int | None


@dataclass(frozen=True)
class Capture:
    packets: tuple[Packet, ...]
    anomalies: tuple[str, ...]
    stats: CaptureStats | None
    format: str  # "pcap" | "pcapng"
    # True when an anomaly means packets may be missing (truncated tail, corrupt lengths, a block
    # that could not be read); a fail-closed judge treats such a capture as inconclusive.
    data_lost: bool = False
    # if_MACaddr of the pcapng interfaces that give one ("02:00:5e:00:00:01"), in file order.
    interface_macs: tuple[str, ...] = ()
    # if_IPv4addr / if_IPv6addr of those interfaces: the capturing host's own addresses.
    interface_addresses: tuple[str, ...] = ()


class _Anomalies:
    """Collects anomaly messages, keeping the first few of each kind and counting the rest."""

    __slots__ = ("messages", "_counts", "data_lost")

    def __init__(self) -> None:
        self.messages: list[str] = []
        self._counts: dict[str, int] = {}
        self.data_lost = False

    def add(self, kind: str, message: str, lost: bool) -> None:
        n = self._counts.get(kind, 0) + 1
        self._counts[kind] = n
        if lost:
            self.data_lost = True
        if n <= _MAX_ANOMALIES_PER_KIND:
            self.messages.append(message)

    def finish(self) -> tuple[str, ...]:
        extra = [f"{n - _MAX_ANOMALIES_PER_KIND} more {kind} anomalies not listed"
                 for kind, n in self._counts.items() if n > _MAX_ANOMALIES_PER_KIND]
        return tuple(self.messages + extra)


class _StatsAcc:
    """Latest ISB counters per interface, summed over interfaces at the end; and the if_MACaddr
    and addresses of each interface description that has them."""

    __slots__ = ("received", "ifdrop", "osdrop", "macs", "addresses")

    def __init__(self) -> None:
        self.received: dict[int, int] = {}
        self.ifdrop: dict[int, int] = {}
        self.osdrop: dict[int, int] = {}
        self.macs: list[str] = []
        self.addresses: list[str] = []

    def address(self, text: str) -> None:
        if text not in self.addresses and len(self.addresses) < 64:
            self.addresses.append(text)

    def result(self) -> CaptureStats | None:
        if not (self.received or self.ifdrop or self.osdrop):
            return None
        dropped = None
        if self.ifdrop or self.osdrop:
            # Dropped by the interface or by the OS: either way packets we never saw.
            dropped = sum(self.ifdrop.values()) + sum(self.osdrop.values())
        return CaptureStats(received=sum(self.received.values()) if self.received else None,
                            dropped=dropped)


# ---------------------------------------------------------------------------------------------
# Sniffing and reading


def _sniff(buf: bytes) -> str:
    if len(buf) < 4:
        raise CaptureFormatError(f"capture is {len(buf)} bytes, too short for a file header", 0)
    head = buf[:4]
    if head == b"\x0a\x0d\x0d\x0a":
        return "pcapng"
    le = int.from_bytes(head, "little")
    be = int.from_bytes(head, "big")
    if le in (_PCAP_MAGIC_US, _PCAP_MAGIC_NS) or be in (_PCAP_MAGIC_US, _PCAP_MAGIC_NS):
        return "pcap"
    raise CaptureFormatError(f"unknown capture magic 0x{be:08x} (neither pcap nor pcapng)", 0)


def _iter_raw(buf: bytes, anoms: _Anomalies, stats: _StatsAcc) -> Iterator[tuple]:
    """Yield (timestamp_ns, linktype, data, orig_len, interface) for each readable packet."""
    fmt = _sniff(buf)
    if fmt == "pcap":
        return _iter_pcap(buf, anoms)
    return _iter_pcapng(buf, anoms, stats)


def _iter_pcap(buf: bytes, anoms: _Anomalies) -> Iterator[tuple]:
    n = len(buf)
    if n < 24:
        raise CaptureFormatError(f"pcap file header needs 24 bytes, file has {n}", 0)
    if int.from_bytes(buf[:4], "little") in (_PCAP_MAGIC_US, _PCAP_MAGIC_NS):
        e = "<"
    else:
        e = ">"
    magic, major, minor, _zone, _sigfigs, snaplen, network = struct.unpack_from(e + "IHHiIII",
                                                                                buf, 0)
    if major != 2:
        raise CaptureFormatError(f"pcap version {major}.{minor} is not 2.x", 4)
    # Bits 16-31 of the link-type field carry FCS information, not the link type.
    linktype = network & 0xFFFF
    ts_mul = 1 if magic == _PCAP_MAGIC_NS else 1000
    return _pcap_records(buf, e, snaplen, linktype, ts_mul, anoms)


def _pcap_records(buf: bytes, e: str, snaplen: int, linktype: int, ts_mul: int,
                  anoms: _Anomalies) -> Iterator[tuple]:
    n = len(buf)
    rec = struct.Struct(e + "IIII").unpack_from
    off = 24
    index = 0
    limit = snaplen if snaplen else MAX_RECORD_LEN
    while off < n:
        index += 1
        if n - off < 16:
            anoms.add("truncated", f"record {index} at offset {off}: header truncated "
                      f"({n - off} of 16 bytes)", True)
            return
        sec, frac, incl, orig = rec(buf, off)
        if incl > MAX_RECORD_LEN:
            anoms.add("absurd length", f"record {index} at offset {off}: captured length {incl} is "
                      f"absurd; rest of file unreadable", True)
            return
        start = off + 16
        end = start + incl
        if end > n:
            anoms.add("truncated", f"record {index} at offset {off}: data truncated "
                      f"({n - start} of {incl} bytes)", True)
            return
        if incl > limit:
            anoms.add("snaplen", f"record {index} at offset {off}: captured length {incl} exceeds "
                      f"snaplen {snaplen}", False)
        if orig < incl:
            anoms.add("orig_len", f"record {index} at offset {off}: original length {orig} is less "
                      f"than captured length {incl}", False)
            orig = incl
        yield (sec * 1_000_000_000 + frac * ts_mul, linktype, buf[start:end], orig, 0)
        off = end


class _Iface:
    __slots__ = ("linktype", "snaplen", "mul", "div", "shift", "offset_ns", "index")

    def __init__(self, linktype: int, snaplen: int, index: int) -> None:
        self.linktype = linktype
        self.snaplen = snaplen
        self.index = index
        # Default resolution is microseconds. ns = ts * mul // div >> shift.
        self.mul, self.div, self.shift = 1000, 1, 0
        self.offset_ns = 0

    def set_tsresol(self, v: int) -> None:
        if v & 0x80:
            # Negative power of two: ns = ts * 1e9 / 2**k.
            self.mul, self.div, self.shift = 1_000_000_000, 1, v & 0x7F
        elif v <= 9:
            self.mul, self.div, self.shift = 10 ** (9 - v), 1, 0
        else:
            self.mul, self.div, self.shift = 1, 10 ** (v - 9), 0


def _options(buf: bytes, start: int, end: int, e: str) -> Iterator[tuple[int, int, int]]:
    """Yield (code, value_offset, value_len) for each option in buf[start:end].

    Stops quietly at opt_endofopt or when an option would run past `end`: options are
    descriptive, and a damaged one must not cost the packet it annotates.
    """
    hdr = struct.Struct(e + "HH").unpack_from
    off = start
    while off + 4 <= end:
        code, length = hdr(buf, off)
        if code == 0:
            return
        vstart = off + 4
        if vstart + length > end:
            return
        yield code, vstart, length
        off = vstart + ((length + 3) & ~3)


def _iter_pcapng(buf: bytes, anoms: _Anomalies, stats: _StatsAcc) -> Iterator[tuple]:
    n = len(buf)
    if n < 28:
        raise CaptureFormatError(f"pcapng section header needs 28 bytes, file has {n}", 0)
    bom = buf[8:12]
    if bom == b"\x4d\x3c\x2b\x1a":
        e = "<"
    elif bom == b"\x1a\x2b\x3c\x4d":
        e = ">"
    else:
        raise CaptureFormatError(f"pcapng byte-order magic {bom.hex()} is invalid", 8)
    first_len = int.from_bytes(buf[4:8], "little" if e == "<" else "big")
    if first_len < 28 or first_len % 4 or first_len > n:
        raise CaptureFormatError(f"pcapng section header length {first_len} is unusable "
                                 f"(file has {n} bytes)", 4)
    major = int.from_bytes(buf[12:14], "little" if e == "<" else "big")
    if major != 1:
        raise CaptureFormatError(f"pcapng major version {major} is not 1", 12)
    return _pcapng_blocks(buf, e, anoms, stats)


def _pcapng_blocks(buf: bytes, e: str, anoms: _Anomalies, stats: _StatsAcc) -> Iterator[tuple]:
    n = len(buf)
    S = {"<": (struct.Struct("<II").unpack_from, struct.Struct("<IIIII").unpack_from,
               struct.Struct("<I").unpack_from),
         ">": (struct.Struct(">II").unpack_from, struct.Struct(">IIIII").unpack_from,
               struct.Struct(">I").unpack_from)}
    hdr, epb, u32 = S[e]
    epb7 = struct.Struct(e + "7I").unpack_from
    ifaces: list[_Iface] = []
    # Per interface: (linktype, snaplen limit, global index) when timestamps are plain
    # nanoseconds with no offset, so the fast path below can skip the conversion; else None.
    fastif: list[tuple[int, int, int] | None] = []
    nif = 0
    iface_base = 0  # interface numbers are made unique across sections
    last_ts = 0
    off = 0
    while off < n:
        # Fast path: a well-formed Enhanced Packet Block on a nanosecond interface. Anything
        # that fails a check here goes through the general code below, which reports it.
        if n - off >= 32:
            btype, blen, iface_id, tsh, tsl, caplen, orig = epb7(buf, off)
            if (btype == 6 and 32 + caplen <= blen <= MAX_BLOCK_LEN and not blen & 3
                    and off + blen <= n and iface_id < nif and orig >= caplen):
                fi = fastif[iface_id]
                if fi is not None and caplen <= fi[1] and u32(buf, off + blen - 4)[0] == blen:
                    last_ts = tsh << 32 | tsl
                    yield (last_ts, fi[0], buf[off + 28:off + 28 + caplen], orig, fi[2])
                    off += blen
                    continue
        if n - off < 12:
            anoms.add("truncated", f"block at offset {off}: header truncated ({n - off} bytes)",
                      True)
            return
        btype = u32(buf, off)[0]
        if btype == _SHB:
            bom = buf[off + 8:off + 12]
            if bom == b"\x4d\x3c\x2b\x1a":
                e = "<"
            elif bom == b"\x1a\x2b\x3c\x4d":
                e = ">"
            else:
                anoms.add("bad block", f"section header at offset {off}: byte-order magic "
                          f"{bom.hex()} invalid; rest of file unreadable", True)
                return
            hdr, epb, u32 = S[e]
            epb7 = struct.Struct(e + "7I").unpack_from
        blen = hdr(buf, off)[1]
        if blen < 12 or blen % 4:
            anoms.add("bad block", f"block at offset {off}: length {blen} invalid; rest of file "
                      f"unreadable", True)
            return
        if blen > MAX_BLOCK_LEN:
            anoms.add("absurd length", f"block at offset {off}: length {blen} is absurd; rest of "
                      f"file unreadable", True)
            return
        end = off + blen
        if end > n:
            anoms.add("truncated", f"block at offset {off}: truncated ({n - off} of {blen} bytes)",
                      True)
            return
        if u32(buf, end - 4)[0] != blen:
            anoms.add("bad block", f"block at offset {off}: trailing length "
                      f"{u32(buf, end - 4)[0]} differs from leading length {blen}; rest of file "
                      f"unreadable", True)
            return

        if btype == _EPB or btype == _PB_OBSOLETE:
            # The obsolete Packet Block is an EPB with a 16-bit interface id and a drop count.
            kind = "enhanced packet block" if btype == _EPB else "packet block"
            if blen < 32:
                anoms.add("bad block", f"{kind} at offset {off}: length {blen} too short", True)
            else:
                if btype == _EPB:
                    iface_id, tsh, tsl, caplen, orig = epb(buf, off + 8)
                else:
                    iface_id, _drops, tsh, tsl, caplen, orig = struct.unpack_from(e + "HHIIII", buf, off + 8)
                if caplen > blen - 32:
                    anoms.add("bad block", f"{kind} at offset {off}: captured "
                              f"length {caplen} exceeds the block", True)
                elif iface_id >= len(ifaces):
                    anoms.add("unknown interface", f"{kind} at offset {off}: "
                              f"interface {iface_id} was never described", True)
                else:
                    ifc = ifaces[iface_id]
                    ts = (((tsh << 32 | tsl) * ifc.mul // ifc.div) >> ifc.shift) + ifc.offset_ns
                    last_ts = ts
                    if ifc.snaplen and caplen > ifc.snaplen:
                        anoms.add("snaplen", f"{kind} at offset {off}: captured "
                                  f"length {caplen} exceeds snaplen {ifc.snaplen}", False)
                    if orig < caplen:
                        anoms.add("orig_len", f"{kind} at offset {off}: original "
                                  f"length {orig} is less than captured length {caplen}", False)
                        orig = caplen
                    yield (ts, ifc.linktype, buf[off + 28:off + 28 + caplen], orig, ifc.index)
        elif btype == _SHB:
            if blen < 28:
                anoms.add("bad block", f"section header at offset {off}: length {blen} too short; "
                          f"rest of file unreadable", True)
                return
            major = struct.unpack_from(e + "H", buf, off + 12)[0]
            if major != 1:
                anoms.add("bad block", f"section header at offset {off}: major version {major} "
                          f"is not 1; rest of file unreadable", True)
                return
            iface_base += len(ifaces)
            ifaces = []
            fastif = []
            nif = 0
        elif btype == _IDB:
            if blen < 20:
                anoms.add("bad block", f"interface description block at offset {off}: length "
                          f"{blen} too short", True)
                # Later packets naming it will be reported as unknown-interface.
            else:
                linktype, _res, snaplen = struct.unpack_from(e + "HHI", buf, off + 8)
                ifc = _Iface(linktype, snaplen, iface_base + len(ifaces))
                for code, vo, vl in _options(buf, off + 16, end - 4, e):
                    if code == 9 and vl >= 1:  # if_tsresol
                        ifc.set_tsresol(buf[vo])
                    elif code == 14 and vl >= 8:  # if_tsoffset, seconds
                        ifc.offset_ns = struct.unpack_from(e + "q", buf, vo)[0] * 1_000_000_000
                    elif code == 6 and vl == 6:  # if_MACaddr
                        mac = buf[vo:vo + 6].hex(":")
                        if mac not in stats.macs:
                            stats.macs.append(mac)
                    elif code == 4 and vl == 8:  # if_IPv4addr: address, netmask
                        stats.address(str(ipaddress.IPv4Address(bytes(buf[vo:vo + 4]))))
                    elif code == 5 and vl == 17:  # if_IPv6addr: address, prefix length
                        stats.address(str(ipaddress.IPv6Address(bytes(buf[vo:vo + 16]))))
                ifaces.append(ifc)
                plain = (ifc.mul, ifc.div, ifc.shift, ifc.offset_ns) == (1, 1, 0, 0)
                fastif.append((ifc.linktype, ifc.snaplen or MAX_RECORD_LEN, ifc.index)
                              if plain else None)
                nif = len(ifaces)
        elif btype == _SPB:
            if blen < 16:
                anoms.add("bad block", f"simple packet block at offset {off}: length {blen} too "
                          f"short", True)
            elif not ifaces:
                anoms.add("unknown interface", f"simple packet block at offset {off}: no "
                          f"interface described", True)
            else:
                ifc = ifaces[0]
                orig = u32(buf, off + 8)[0]
                caplen = min(orig, blen - 16)
                if ifc.snaplen:
                    caplen = min(caplen, ifc.snaplen)
                # SPBs carry no timestamp; the previous packet's keeps flow timing ordered.
                yield (last_ts, ifc.linktype, buf[off + 12:off + 12 + caplen], orig, ifc.index)
        elif btype == _ISB:
            if blen >= 24:
                iface_id = u32(buf, off + 8)[0]
                gid = iface_base + iface_id
                for code, vo, vl in _options(buf, off + 20, end - 4, e):
                    if vl < 8:
                        continue
                    v = struct.unpack_from(e + "Q", buf, vo)[0]
                    if code == 4:  # isb_ifrecv
                        stats.received[gid] = v
                    elif code == 5:  # isb_ifdrop
                        stats.ifdrop[gid] = v
                    elif code == 7:  # isb_osdrop
                        stats.osdrop[gid] = v
        # Other block types (NRB, DSB, custom, unknown) carry no packets of their own.
        off = end


@contextmanager
def gc_paused():
    """Pause the cyclic garbage collector while building millions of acyclic objects.

    Packets hold no references to containers, so no cycles are created; the collector's
    repeated passes over a growing heap would otherwise cost more than the parsing itself.
    """
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def read_capture(data: bytes) -> Capture:
    """Parse a whole pcap or pcapng capture held in memory.

    Raises CaptureFormatError only when the file header is unusable; any later damage is
    reported in `anomalies` and the packets before it are kept.
    """
    anoms = _Anomalies()
    stats = _StatsAcc()
    buf = bytes(data)
    fmt = _sniff(buf)
    it = _iter_raw(buf, anoms, stats)
    with gc_paused():
        packets = tuple([Packet(*r) for r in it])
    return Capture(packets=packets, anomalies=anoms.finish(), stats=stats.result(), format=fmt,
                   data_lost=anoms.data_lost, interface_macs=tuple(stats.macs),
                   interface_addresses=tuple(stats.addresses))


def iter_packets(data: bytes, anomalies: list[str] | None = None) -> Iterator[Packet]:
    """Yield packets one at a time; anomalies found on the way are appended to `anomalies`.

    The header is checked before the first packet is yielded (CaptureFormatError then).
    """
    scan = CaptureScan(data)

    def gen() -> Iterator[Packet]:
        try:
            for r in scan.records:
                yield Packet(*r)
        finally:
            if anomalies is not None:
                anomalies.extend(scan.summary().anomalies)

    return gen()


class CaptureScan:
    """Streaming read without Packet objects, for analyses of very large captures.

    `records` yields bare (timestamp_ns, linktype, data, orig_len, interface) tuples; once it
    is exhausted, `summary()` gives a Capture with no packets but the anomalies, stats, format
    and data_lost that read_capture would have reported. The constructor checks the header
    (CaptureFormatError).
    """

    def __init__(self, data: bytes) -> None:
        buf = bytes(data)
        self.format = _sniff(buf)
        self._anoms = _Anomalies()
        self._stats = _StatsAcc()
        self.records: Iterator[tuple[int, int, bytes, int, int]] = _iter_raw(buf, self._anoms,
                                                                            self._stats)

    def summary(self) -> Capture:
        return Capture(packets=(), anomalies=self._anoms.finish(), stats=self._stats.result(),
                       format=self.format, data_lost=self._anoms.data_lost,
                       interface_macs=tuple(self._stats.macs),
                       interface_addresses=tuple(self._stats.addresses))


# ---------------------------------------------------------------------------------------------
# Writing


def _opt(code: int, value: bytes) -> bytes:
    return struct.pack("<HH", code, len(value)) + value + b"\0" * (-len(value) % 4)


def _block(btype: int, body: bytes) -> bytes:
    blen = 12 + len(body)
    return struct.pack("<II", btype, blen) + body + struct.pack("<I", blen)


class PcapngWriter:
    """Write a single-interface pcapng stream (little-endian, nanosecond timestamps).

    The section and interface headers are written by the constructor; each `write_packet`
    appends an Enhanced Packet Block, each `write_stats` an Interface Statistics Block.
    """

    def __init__(self, fileobj: BinaryIO, linktype: int = 1, snaplen: int = 262144,
                 if_name: str | None = None, application: str = "attestlab",
                 if_mac: str | bytes | None = None, if_addresses: tuple[str, ...] | list[str] = ()) -> None:
        if not 0 <= linktype <= 0xFFFF:
            raise ValueError(f"link type {linktype} does not fit in 16 bits")
        if not 0 <= snaplen <= 0xFFFFFFFF:
            raise ValueError(f"snaplen {snaplen} does not fit in 32 bits")
        self._f = fileobj
        self.linktype = linktype
        self.snaplen = snaplen
        shb_opts = b""
        if application:
            shb_opts += _opt(4, application.encode("utf-8"))  # shb_userappl
        shb_opts += _opt(0, b"") if shb_opts else b""
        # Section length -1: unknown, we stream.
        shb = _block(_SHB, struct.pack("<IHHq", _BYTE_ORDER_MAGIC, 1, 0, -1) + shb_opts)
        idb_opts = b""
        if if_name:
            idb_opts += _opt(2, if_name.encode("utf-8"))  # if_name
        if if_mac:
            mac = if_mac if isinstance(if_mac, bytes) else bytes.fromhex(if_mac.replace(":", "").replace("-", ""))
            if len(mac) != 6:
                raise ValueError(f"if_mac {if_mac!r} is not a 6-byte MAC address")
            idb_opts += _opt(6, mac)  # if_MACaddr: the capturing interface
        for text in if_addresses:  # its own addresses, "192.0.2.1/24", "fd00::1/64"
            iface = ipaddress.ip_interface(text)
            if iface.version == 4:
                idb_opts += _opt(4, iface.ip.packed + iface.netmask.packed)  # if_IPv4addr
            else:
                idb_opts += _opt(5, iface.ip.packed + bytes([iface.network.prefixlen]))  # if_IPv6addr
        idb_opts += _opt(9, b"\x09")  # if_tsresol: 10^-9 s
        idb_opts += _opt(0, b"")
        idb = _block(_IDB, struct.pack("<HHI", linktype, 0, snaplen) + idb_opts)
        self._f.write(shb + idb)
        self._epb = struct.Struct("<IIIIIII")

    def write_packet(self, timestamp_ns: int, data: bytes, orig_len: int | None = None) -> None:
        """Append one packet; data longer than the snaplen is cut (orig_len keeps the truth)."""
        if timestamp_ns < 0 or timestamp_ns >> 64:
            raise ValueError(f"timestamp {timestamp_ns} ns does not fit pcapng's 64 bits")
        data = bytes(data)
        size = len(data)
        if orig_len is None:
            orig_len = size
        if self.snaplen and size > self.snaplen:
            data = data[:self.snaplen]
        caplen = len(data)
        if orig_len > 0xFFFFFFFF:
            raise ValueError(f"orig_len {orig_len} does not fit pcapng's 32 bits")
        # The bytes in hand are real: a smaller orig_len (a driver quirk) must not make the
        # block inconsistent, nor abort a live capture.
        orig_len = max(orig_len, size)
        pad = -caplen % 4
        blen = 32 + caplen + pad
        self._f.write(self._epb.pack(_EPB, blen, 0, timestamp_ns >> 32, timestamp_ns & 0xFFFFFFFF,
                                     caplen, orig_len)
                      + data + b"\0" * pad + blen.to_bytes(4, "little"))

    def write_stats(self, timestamp_ns: int, received: int, dropped: int) -> None:
        """Append interface statistics: packets received and dropped by the interface."""
        if timestamp_ns < 0 or timestamp_ns >> 64:
            raise ValueError(f"timestamp {timestamp_ns} ns does not fit pcapng's 64 bits")
        opts = (_opt(4, struct.pack("<Q", received)) + _opt(5, struct.pack("<Q", dropped))
                + _opt(0, b""))
        self._f.write(_block(_ISB, struct.pack("<III", 0, timestamp_ns >> 32,
                                               timestamp_ns & 0xFFFFFFFF) + opts))
