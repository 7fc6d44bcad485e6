"""Sinkhole: the services a board finds on its management link during an egress capture.

It runs inside the capture namespace (harness.interfaces.netcap opens its sockets there), where
the only other interface is loopback, so nothing it answers and nothing the board sends can leave
the machine. Its job is to make the board *reveal* what it wants to talk to, so the capture
shows names and payloads instead of a lone SYN:

What it does
* DNS on UDP and TCP port 53: every well-formed query gets an authoritative answer. A (and ANY)
  -> the sinkhole IPv4 address (the gateway, e.g. 192.0.2.1); AAAA -> the IPv6 sinkhole address
  when one is configured, otherwise NOERROR with no answer (NODATA, so resolvers fall back to
  A rather than giving up); every other type (TXT, MX, ...) -> NODATA. TTL 60. Non-query opcodes
  get NOTIMP, undecodable questions FORMERR; responses and garbage are ignored (they are in the
  capture anyway).
* TCP listeners on `DEFAULT_TCP_PORTS` (or the list given): accept any connection, read what the
  client sends (up to 64 KiB, until it stops sending for 1 s or 3 s have passed), then close.
  A TLS client's ClientHello (with its SNI) or an HTTP request (with its Host) therefore appears
  in the capture. Every connection and query is also logged in `Sinkhole.events`.
* With ``transparent=True`` (the capture point's `claim_all`, on with the sinkhole) sockets are
  bound to the wildcard with IP_TRANSPARENT and the capture namespace routes every off-link
  destination that arrives on the board link locally (``ip rule iif <link> lookup 100`` +
  ``local 0.0.0.0/0 dev lo table 100`` + ``throw <link subnet> table 100``; no iptables), so a
  board that connects to a hard-coded address (say 203.0.113.50:443) or asks a hard-coded
  resolver (8.8.8.8 -- only ever inside this namespace) is answered the same way, from the
  address it asked. On-link addresses are not claimed (no ARP answers for them) unless they are
  given to the capture interface as extra addresses.

What it does not do
* No TLS handshake is completed (no ServerHello; the client sees the connection close after its
  ClientHello), no HTTP response, no application data is ever sent back except DNS answers.
* No catch-all for TCP ports outside the list: a SYN to another port is still captured (address
  and port visible) but gets no answer, so no payload follows. No UDP services besides DNS
  (NTP, QUIC, syslog, ... are captured as sent and not answered).
* No IPv6 catch-all: IPv6 destinations other than the configured sinkhole address are not claimed.
* No DHCP: boards are configured statically (or their DHCP requests are simply captured).

Threads: one selector thread serves everything; `stop()` wakes it through a socketpair and joins
it (bounded). Connections are bounded (`max_connections`, excess ones are closed at once), reads
are bounded, and the event log keeps the first `max_events` entries.
"""

from __future__ import annotations

import ipaddress
import selectors
import socket
import struct
import threading
import time
from typing import Any

__all__ = ["Sinkhole", "DEFAULT_TCP_PORTS", "dns_response", "parse_question"]

# Ports boards and agents commonly phone home on: web, alt-web, TLS test ports, MQTT(S), AMQP(S),
# XMPP, syslog-TLS, Kubernetes API, DoT, mail, remote shells.
DEFAULT_TCP_PORTS: tuple[int, ...] = (
    21, 22, 23, 25, 53, 80, 110, 143, 443, 465, 587, 853, 993, 995, 1883, 4433, 5222, 5223,
    5671, 5672, 6443, 6514, 8000, 8080, 8443, 8883, 9000, 9443, 10443,
)

IP_TRANSPARENT = 19
IPV6_TRANSPARENT = 75
_IP_PKTINFO = getattr(socket, "IP_PKTINFO", 8)
_HDR = struct.Struct("!HHHHHH")

TYPE_A, TYPE_AAAA, TYPE_ANY = 1, 28, 255
_TYPE_NAMES = {1: "A", 2: "NS", 5: "CNAME", 6: "SOA", 12: "PTR", 15: "MX", 16: "TXT", 28: "AAAA",
               33: "SRV", 64: "SVCB", 65: "HTTPS", 255: "ANY"}


def parse_question(msg: bytes) -> tuple[str, int, int, int] | None:
    """(qname, qtype, qclass, end offset) of the first question, or None if it cannot be read.

    Compression pointers are not accepted in a question (no real client sends them there).
    """
    off = 12
    labels = []
    total = 0
    for _ in range(128):
        if off >= len(msg):
            return None
        n = msg[off]
        if n == 0:
            off += 1
            break
        if n > 63 or off + 1 + n > len(msg):
            return None
        labels.append(msg[off + 1:off + 1 + n])
        total += n + 1
        if total > 255:
            return None
        off += 1 + n
    else:
        return None
    if off + 4 > len(msg):
        return None
    qtype, qclass = struct.unpack_from("!HH", msg, off)
    name = ".".join(lab.decode("ascii", "backslashreplace") for lab in labels)
    return name, qtype, qclass, off + 4


def dns_response(query: bytes, answer_v4: str | None, answer_v6: str | None,
                 ttl: int = 60) -> tuple[bytes | None, dict[str, Any]]:
    """The sinkhole's answer to one DNS message, and a description of it for the event log.

    Returns (None, info) for messages that get no answer (responses, too short to be a query).
    """
    if len(query) < 12:
        return None, {"error": "shorter than a DNS header"}
    qid, flags, qdcount, _an, _ns, _ar = _HDR.unpack_from(query)
    if flags & 0x8000:
        return None, {"error": "a response, not a query"}
    opcode = (flags >> 11) & 0xF
    rd = flags & 0x0100
    base = 0x8000 | (opcode << 11) | 0x0400 | rd | 0x0080  # QR, AA, RD copied, RA

    def header_only(rcode: int) -> bytes:
        return _HDR.pack(qid, base | rcode, 0, 0, 0, 0)

    if opcode != 0:
        return header_only(4), {"rcode": "NOTIMP", "opcode": opcode}
    q = parse_question(query) if qdcount >= 1 else None
    if q is None:
        return header_only(1), {"rcode": "FORMERR"}
    qname, qtype, qclass, end = q
    question = query[12:end]
    answers = []
    info: dict[str, Any] = {"qname": qname, "qtype": _TYPE_NAMES.get(qtype, str(qtype)), "rcode": "NOERROR"}
    if qclass in (1, 255):
        if qtype in (TYPE_A, TYPE_ANY) and answer_v4:
            answers.append((TYPE_A, ipaddress.IPv4Address(answer_v4).packed))
        if qtype in (TYPE_AAAA, TYPE_ANY) and answer_v6:
            answers.append((TYPE_AAAA, ipaddress.IPv6Address(answer_v6).packed))
    body = b"".join(b"\xc0\x0c" + struct.pack("!HHIH", t, 1, ttl, len(rdata)) + rdata for t, rdata in answers)
    info["answers"] = [str(ipaddress.ip_address(rdata)) for _t, rdata in answers]
    return _HDR.pack(qid, base, 1, len(answers), 0, 0) + question + body, info


class _Conn:
    __slots__ = ("sock", "peer", "local", "dns", "data", "opened", "last")

    def __init__(self, sock: socket.socket, peer: Any, local: Any, dns: bool) -> None:
        self.sock, self.peer, self.local, self.dns = sock, peer, local, dns
        self.data = bytearray()
        self.opened = self.last = time.monotonic()


def _fmt(addr: Any) -> str:
    host, port = addr[0], addr[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class Sinkhole:
    """DNS + read-and-close TCP listeners; see the module docstring.

    Call `open()` from a thread inside the target network namespace (sockets keep the namespace
    they were created in), then `start()` from anywhere; `stop()` ends it.
    """

    def __init__(self, answer_v4: str | None = "192.0.2.1", answer_v6: str | None = None, *,
                 tcp_ports: tuple[int, ...] = DEFAULT_TCP_PORTS, transparent: bool = False,
                 bind_v4: str | None = None, bind_v6: str | None = None,
                 idle_timeout: float = 1.0, max_conn_time: float = 3.0, max_read: int = 65536,
                 max_connections: int = 256, max_events: int = 2000) -> None:
        self.answer_v4 = answer_v4
        self.answer_v6 = answer_v6
        self.tcp_ports = tuple(sorted(set(tcp_ports)))
        self.transparent = transparent
        # Wildcard when transparent (answers any destination), else the sinkhole address itself.
        self.bind_v4 = bind_v4 or ("0.0.0.0" if transparent or not answer_v4 else answer_v4)
        self.bind_v6 = bind_v6 or (("::" if transparent else answer_v6) if answer_v6 else None)
        self.idle_timeout = idle_timeout
        self.max_conn_time = max_conn_time
        self.max_read = max_read
        self.max_connections = max_connections
        self.max_events = max_events
        self.events: list[dict[str, Any]] = []
        self.events_dropped = 0
        self._socks: list[tuple[str, socket.socket]] = []
        self._conns: dict[int, _Conn] = {}
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._wake_r: socket.socket | None = None
        self._wake_w: socket.socket | None = None
        self.error: str | None = None

    # -- sockets ------------------------------------------------------------------------------

    def open(self) -> None:
        """Create and bind every socket; run inside the target namespace. Raises OSError."""
        try:
            families = [(socket.AF_INET, self.bind_v4)]
            if self.bind_v6:
                families.append((socket.AF_INET6, self.bind_v6))
            for fam, host in families:
                u = self._new(fam, socket.SOCK_DGRAM)
                if fam == socket.AF_INET:
                    u.setsockopt(socket.IPPROTO_IP, _IP_PKTINFO, 1)
                else:
                    u.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_RECVPKTINFO, 1)
                u.bind((host, 53))
                self._socks.append(("dns-udp", u))
                for port in self.tcp_ports:
                    t = self._new(fam, socket.SOCK_STREAM)
                    t.bind((host, port))
                    t.listen(64)
                    self._socks.append(("dns-tcp" if port == 53 else "tcp", t))
            self._wake_r, self._wake_w = socket.socketpair()
        except BaseException:
            self.close()
            raise

    def _new(self, fam: int, typ: int) -> socket.socket:
        s = socket.socket(fam, typ)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if fam == socket.AF_INET6:
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        if self.transparent:
            if fam == socket.AF_INET:
                s.setsockopt(socket.IPPROTO_IP, IP_TRANSPARENT, 1)
            else:
                s.setsockopt(socket.IPPROTO_IPV6, IPV6_TRANSPARENT, 1)
        s.setblocking(False)
        return s

    def close(self) -> None:
        for _kind, s in self._socks:
            s.close()
        self._socks.clear()
        for c in list(self._conns.values()):
            c.sock.close()
        self._conns.clear()
        for s in (self._wake_r, self._wake_w):
            if s is not None:
                s.close()
        self._wake_r = self._wake_w = None

    # -- running ------------------------------------------------------------------------------

    def start(self) -> None:
        if not self._socks:
            raise RuntimeError("Sinkhole.open() must be called (inside the namespace) before start()")
        self._thread = threading.Thread(target=self._serve, name="sinkhole", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._wake_w is not None:
            try:
                self._wake_w.send(b"x")
            except OSError:
                pass
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                raise RuntimeError(f"sinkhole thread did not stop within {timeout:g} s")
        self.close()

    def __enter__(self) -> "Sinkhole":
        if not self._socks:
            self.open()
        self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def _log(self, event: dict[str, Any]) -> None:
        if len(self.events) < self.max_events:
            event["t_ns"] = time.time_ns()
            self.events.append(event)
        else:
            self.events_dropped += 1

    def _serve(self) -> None:
        sel = selectors.DefaultSelector()
        try:
            assert self._wake_r is not None
            sel.register(self._wake_r, selectors.EVENT_READ, ("wake", None))
            for kind, s in self._socks:
                sel.register(s, selectors.EVENT_READ, (kind, s))
            while not self._stop.is_set():
                for key, _ev in sel.select(timeout=0.2):
                    kind, obj = key.data
                    if kind == "wake":
                        break
                    if kind == "dns-udp":
                        self._udp(obj)
                    elif kind in ("tcp", "dns-tcp"):
                        self._accept(sel, obj, kind == "dns-tcp")
                    elif kind == "conn":
                        self._read(sel, obj)
                self._expire(sel)
        except Exception as exc:  # recorded; the capture itself is unaffected
            self.error = f"sinkhole failed: {exc!r}"
        finally:
            for c in list(self._conns.values()):
                self._finish(None, c, "stopped")
            sel.close()

    def _udp(self, s: socket.socket) -> None:
        for _ in range(256):
            try:
                data, anc, _flags, peer = s.recvmsg(4096, socket.CMSG_SPACE(40))
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            local = None
            for level, typ, cdata in anc:
                if level == socket.IPPROTO_IP and typ == _IP_PKTINFO and len(cdata) >= 12:
                    local = socket.inet_ntop(socket.AF_INET, cdata[8:12])  # ipi_addr: the header's destination
                elif level == socket.IPPROTO_IPV6 and typ == socket.IPV6_PKTINFO and len(cdata) >= 16:
                    local = socket.inet_ntop(socket.AF_INET6, cdata[:16])
            reply, info = dns_response(data, self.answer_v4, self.answer_v6)
            self._log({"kind": "dns", "proto": "udp", "peer": _fmt(peer), "server": local, **info})
            if reply is None:
                continue
            anc_out = []
            if local and s.family == socket.AF_INET:
                # struct in_pktinfo {ifindex; spec_dst; addr}: answer from the address that was asked.
                anc_out = [(socket.IPPROTO_IP, _IP_PKTINFO,
                            struct.pack("I4s4s", 0, socket.inet_aton(local), b"\0" * 4))]
            elif local:
                anc_out = [(socket.IPPROTO_IPV6, socket.IPV6_PKTINFO,
                            socket.inet_pton(socket.AF_INET6, local) + struct.pack("I", 0))]
            try:
                s.sendmsg([reply], anc_out, 0, peer)
            except OSError:
                pass

    def _accept(self, sel: selectors.BaseSelector, s: socket.socket, dns: bool) -> None:
        for _ in range(64):
            try:
                c, peer = s.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            local = c.getsockname()
            if len(self._conns) >= self.max_connections:
                self._log({"kind": "tcp", "peer": _fmt(peer), "local": _fmt(local), "bytes": 0,
                           "closed": "too many connections"})
                c.close()
                continue
            c.setblocking(False)
            conn = _Conn(c, peer, local, dns)
            self._conns[c.fileno()] = conn
            sel.register(c, selectors.EVENT_READ, ("conn", conn))

    def _read(self, sel: selectors.BaseSelector, conn: _Conn) -> None:
        try:
            chunk = conn.sock.recv(16384)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._finish(sel, conn, f"error: {exc.strerror}")
            return
        if not chunk:
            self._finish(sel, conn, "client closed")
            return
        conn.data += chunk[: self.max_read - len(conn.data)]
        conn.last = time.monotonic()
        if conn.dns and len(conn.data) >= 2:
            need = struct.unpack_from("!H", conn.data)[0]
            if len(conn.data) >= 2 + need:
                reply, info = dns_response(bytes(conn.data[2:2 + need]), self.answer_v4, self.answer_v6)
                self._log({"kind": "dns", "proto": "tcp", "peer": _fmt(conn.peer),
                           "server": conn.local[0], **info})
                if reply is not None:
                    try:
                        conn.sock.setblocking(True)
                        conn.sock.settimeout(1.0)
                        conn.sock.sendall(struct.pack("!H", len(reply)) + reply)
                    except OSError:
                        pass
                self._finish(sel, conn, "answered")
                return
        if len(conn.data) >= self.max_read:
            self._finish(sel, conn, "read limit")

    def _expire(self, sel: selectors.BaseSelector) -> None:
        now = time.monotonic()
        for conn in list(self._conns.values()):
            if now - conn.last > self.idle_timeout:
                self._finish(sel, conn, "idle")
            elif now - conn.opened > self.max_conn_time:
                self._finish(sel, conn, "time limit")

    def _finish(self, sel: selectors.BaseSelector | None, conn: _Conn, why: str) -> None:
        self._conns.pop(conn.sock.fileno(), None)
        if sel is not None:
            try:
                sel.unregister(conn.sock)
            except (KeyError, ValueError):
                pass
        if not conn.dns:
            self._log({"kind": "tcp", "peer": _fmt(conn.peer), "local": _fmt(conn.local),
                       "bytes": len(conn.data), "head_hex": bytes(conn.data[:64]).hex(), "closed": why})
        try:
            conn.sock.close()
        except OSError:
            pass
