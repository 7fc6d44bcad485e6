"""Flow analysis of a capture: who the board talked to, under which names, how often.

`analyze(capture)` decodes every frame (see `harness.formats.netproto`) and groups them into
flows keyed by (proto, src, dst, sport, dport). Flows are bidirectional and oriented from the
initiator: the sender of the first packet seen, corrected by a TCP SYN/SYN-ACK, or, when the
first packet is from a port below 1024 to an ephemeral one (32768 and up), taken as the
server's reply to a conversation that began before the capture. ICMP flows use type and code
as ports and fold echo replies into the request's flow; non-IP frames become flows with proto
"ether" (dport = EtherType) or "llc". `analyze_bytes(data)` gives the same result in one
streaming pass over the file bytes, without building Packet objects.

For each flow it records first/last seen (ns), packets and bytes (both directions, frame
lengths as on the wire) and the names that tie the destination to a name: DNS names that resolved
to the destination before the flow began, the TLS ClientHello SNI, the HTTP Host. DNS flows
(ports 53, 5353, 5355) list the names they asked about; a payload on a DNS port that is not DNS
is counted (`dns_undecoded`) so a policy cannot be satisfied by garbage on port 53. ICMP echo
payload sizes are kept. Link-local housekeeping (ARP, IPv6 neighbour discovery and DAD with hop
limit 255, MLD and IGMP with hop limit 1) is classified so a policy can allow it by default.

Heuristics reported, not judged here: periodicity (a flow or destination contacted at a regular
interval, with period and jitter, once there are three contacts; a contact starts after a quiet
gap) and DNS tunnelling (long labels, high-entropy labels, many unique subdomains of one parent).

Fail closed: a frame that cannot be decoded is counted in `undecoded` and named in `anomalies`
("frame 17: IPv4 header truncated at offset 14"), never silently dropped. Anomaly text is capped
at a thousand lines with a count of the rest; the counts are exact. The capture's own anomalies
are carried through, with `capture_data_lost` set when they mean packets may be missing.

Speed: the common frame (Ethernet; IPv4 without options or fragmentation, or IPv6 without
extension headers; TCP or UDP) of a flow already seen and fully inspected is counted from fixed
offsets without decoding; every other frame takes the full decoder path, so the two paths
agree on what is and is not decodable.
"""

from __future__ import annotations

import datetime as _dt
import math
import operator
import statistics
from collections import Counter
from dataclasses import dataclass
from typing import Iterable

from harness.formats import netproto as npr
from harness.formats.netproto import DecodeError, IncompleteError
from harness.formats.pcap import Capture, CaptureScan, CaptureStats, gc_paused

__all__ = [
    "Flow", "Periodicity", "DnsQuery", "Resolution", "PeriodicContact", "TunnelSuspect",
    "FlowAnalysis", "analyze", "analyze_bytes", "flow_analysis_json", "flow_json", "iso_ns",
    "DNS_PORTS", "flow_analysis_record", "flow_analysis_from_record",
]

DNS_PORTS = frozenset((53, 5353, 5355))
_MAX_ANOMALY_LINES = 1000
_MAX_ECHO_SIZES = 10_000
_MAX_CONTACTS = 100_000
_MAX_TCP_INSPECT = 64 * 1024
_MAX_TCP_INSPECT_SEGMENTS = 16
_MAX_NOTES = 20


def iso_ns(ns: int) -> str:
    """ISO-8601 UTC with nanoseconds; timestamps outside datetime's range are written as-is."""
    sec, frac = divmod(ns, 1_000_000_000)
    try:
        base = _dt.datetime.fromtimestamp(sec, _dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
    except (OverflowError, OSError, ValueError):
        return f"@{ns}ns"
    return f"{base}.{frac:09d}Z"


@dataclass(frozen=True)
class Periodicity:
    period_s: float   # median interval between contacts
    jitter_s: float   # population standard deviation of the intervals
    contacts: int
    regular: bool     # jitter small against the period


@dataclass(frozen=True)
class Flow:
    proto: str
    src: str
    dst: str
    sport: int | None
    dport: int | None
    first_seen: int  # ns
    last_seen: int
    packets: int
    bytes: int
    names: tuple[str, ...]            # resolved_names + sni + http_hosts, deduplicated
    resolved_names: tuple[str, ...]   # DNS names that resolved to dst before the flow began
    sni: tuple[str, ...]
    http_hosts: tuple[str, ...]
    dns_queries: tuple[str, ...]      # names asked about (or announced) in this flow's DNS
    dns_undecoded: int                # payloads on a DNS port that did not decode as DNS
    icmp_echo_sizes: tuple[int, ...]
    housekeeping: str | None          # "arp", "nd", "dad", "mld", "igmp" or None
    periodicity: Periodicity | None
    src_mac: str | None               # link-layer source of the initiator's first frame
    fragments: int                    # IP fragments counted in this flow
    notes: tuple[str, ...]

    @property
    def key(self) -> tuple[str, str, str, int | None, int | None]:
        return (self.proto, self.src, self.dst, self.sport, self.dport)

    @property
    def is_dns(self) -> bool:
        return self.proto in ("udp", "tcp") and (self.dport in DNS_PORTS or self.sport in DNS_PORTS)


@dataclass(frozen=True)
class DnsQuery:
    timestamp_ns: int
    src: str
    dst: str
    name: str
    qtype: int


@dataclass(frozen=True)
class Resolution:
    address: str
    name: str
    timestamp_ns: int


@dataclass(frozen=True)
class PeriodicContact:
    scope: str           # "flow" or "destination"
    proto: str | None    # None for a destination
    dst: str
    dport: int | None
    period_s: float
    jitter_s: float
    contacts: int


@dataclass(frozen=True)
class TunnelSuspect:
    parent: str
    unique_names: int
    max_label_len: int
    max_entropy: float            # bits per character of the most random subdomain part
    reasons: tuple[str, ...]
    examples: tuple[str, ...]


@dataclass(frozen=True)
class FlowAnalysis:
    packets: int
    flows: tuple[Flow, ...]
    dns_queries: tuple[DnsQuery, ...]
    resolutions: tuple[Resolution, ...]
    periodic: tuple[PeriodicContact, ...]   # regular ones only; every flow keeps its own
    tunnel_suspects: tuple[TunnelSuspect, ...]
    anomalies: tuple[str, ...]
    undecoded: int
    capture_format: str
    capture_data_lost: bool
    stats: CaptureStats | None
    # The capturing interface's own MAC(s), from the pcapng's if_MACaddr: frames from them were
    # sent by the capturing host (ARP replies, sinkhole answers), not by the board.
    capture_macs: tuple[str, ...] = ()


class _St:
    """Mutable per-flow accumulator (the hot path touches only the first few slots)."""

    __slots__ = ("fast", "packets", "bytes", "first", "last", "contacts",
                 "proto", "src", "dst", "sport", "dport", "hk", "mac", "sni", "hosts",
                 "queries", "dns_bad", "echo", "echo_n", "notes", "frags", "app_done", "tcp_buf",
                 "tcp_next", "tcp_segs")

    def __init__(self, key: tuple, ts: int, hk: str | None, mac: str | None) -> None:
        self.fast = False
        self.packets = 0
        self.bytes = 0
        self.first = ts
        self.last = ts
        self.contacts = [ts]
        self.proto, self.src, self.dst, self.sport, self.dport = key
        self.hk = hk
        self.mac = mac
        self.sni: list[str] = []
        self.hosts: list[str] = []
        self.queries: dict[str, None] = {}
        self.dns_bad = 0
        self.echo: list[int] = []
        self.echo_n = 0
        self.notes: list[str] = []
        self.frags = 0
        self.app_done = False
        self.tcp_buf: bytearray | None = None
        self.tcp_next: int | None = None
        self.tcp_segs = 0

    def note(self, text: str) -> None:
        if len(self.notes) < _MAX_NOTES and text not in self.notes:
            self.notes.append(text)


def _server_side(sport: int, dport: int) -> bool:
    """The sender looks like the server: a well-known port talking to an ephemeral one.

    Used only when the first packet seen is not a SYN (the capture began mid-conversation).
    """
    return sport < 1024 and dport >= 32768


class _Analyzer:
    def __init__(self, gap_ns: int) -> None:
        self.gap = gap_ns
        self.flows: dict[tuple, _St] = {}
        self.order: list[_St] = []
        self.tcp_raw: dict[bytes, _St] = {}
        self.udp_raw: dict[bytes, _St] = {}
        self.tcp6_raw: dict[bytes, _St] = {}
        self.udp6_raw: dict[bytes, _St] = {}
        self.frag4: dict[tuple, _St] = {}
        self.frag6: dict[tuple, _St] = {}
        self.anomalies: list[str] = []
        self.anomaly_overflow = 0
        self.undecoded = 0
        self.queries: list[DnsQuery] = []
        self.resolved: dict[str, dict[str, int]] = {}   # address -> name -> first seen

    # -- bookkeeping ------------------------------------------------------------------------

    def anomaly(self, text: str) -> None:
        if len(self.anomalies) < _MAX_ANOMALY_LINES:
            self.anomalies.append(text)
        else:
            self.anomaly_overflow += 1

    def lookup(self, key: tuple, ts: int, *, reverse: bool = True, swap: bool = False,
               hk: str | None = None, mac: str | None = None) -> tuple[_St, bool]:
        """The flow for `key` in either direction; a new one is oriented as `key` (or reversed)."""
        st = self.flows.get(key)
        if st is not None:
            return st, (st.src == key[1] and st.sport == key[3])
        proto, src, dst, sport, dport = key
        rev = (proto, dst, src, dport, sport)
        if reverse and swap:
            st = _St(rev, ts, hk, None)
        else:
            st = _St(key, ts, hk, mac)
        self.flows[key] = st
        if reverse:
            self.flows.setdefault(rev, st)
        self.order.append(st)
        return st, not (reverse and swap)

    def touch(self, st: _St, ts: int, size: int) -> None:
        st.packets += 1
        st.bytes += size
        dt = ts - st.last
        if dt > 0:
            if dt > self.gap and len(st.contacts) < _MAX_CONTACTS:
                st.contacts.append(ts)
            st.last = ts
        elif ts < st.first:
            st.first = ts

    # -- frames -----------------------------------------------------------------------------

    def frame(self, idx: int, ts: int, lt: int, d: bytes, orig: int) -> None:
        try:
            self._frame(idx, ts, lt, d, orig)
        except DecodeError as e:
            self.undecoded += 1
            self.anomaly(f"frame {idx}: {e}")

    def _frame(self, idx: int, ts: int, lt: int, d: bytes, orig: int) -> None:
        mac = None
        plain_eth = False
        if lt == 1:
            eth = npr.decode_ethernet(d)
            off, etype, mac = eth.header_len, eth.ethertype, eth.src
            if eth.llc:
                st, _ = self.lookup(("llc", eth.src, eth.dst, None, None), ts, reverse=False,
                                    mac=mac)
                self.touch(st, ts, orig)
                return
            plain_eth = off == 14
        elif lt == 113:
            sll = npr.decode_linux_sll(d)
            off, etype, mac = sll.header_len, sll.protocol, sll.address
        elif lt == 276:
            sll = npr.decode_linux_sll2(d)
            off, etype, mac = sll.header_len, sll.protocol, sll.address
        elif lt in (101, 228, 229):
            if not d:
                raise DecodeError("raw IP packet is empty", 0)
            v = d[0] >> 4
            if v == 4 and lt != 229:
                etype = npr.ETH_IPV4
            elif v == 6 and lt != 228:
                etype = npr.ETH_IPV6
            else:
                raise DecodeError(f"IP version {v} on raw-IP link type {lt}", 0)
            off = 0
        else:
            raise DecodeError(f"link type {lt} not supported", 0)

        if etype == npr.ETH_IPV4:
            self._ipv4(idx, ts, d, off, orig, mac, plain_eth)
        elif etype == npr.ETH_IPV6:
            self._ipv6(idx, ts, d, off, orig, mac, plain_eth)
        elif etype == npr.ETH_ARP:
            arp = npr.decode_arp(d, off)
            st, _ = self.lookup(("arp", arp.sender_proto, arp.target_proto, None, None), ts,
                                hk="arp", mac=mac)
            self.touch(st, ts, orig)
        else:
            if lt == 1:
                src, dst = eth.src, eth.dst
            else:
                src, dst = mac or "", ""
            st, _ = self.lookup(("ether", src, dst, None, etype), ts, reverse=False, mac=mac)
            self.touch(st, ts, orig)

    def _ipv4(self, idx: int, ts: int, d: bytes, off: int, orig: int, mac: str | None,
              plain_eth: bool) -> None:
        ip = npr.decode_ipv4(d, off)
        if ip.truncated and orig <= len(d):
            self.anomaly(f"frame {idx}: IPv4 total length {ip.total_length} exceeds the "
                         f"{len(d) - off} bytes present at offset {off + 2} "
                         f"(flow still attributed)")
        if ip.fragment_offset:
            self._later_fragment(self.frag4, (ip.src, ip.dst, ip.proto, ip.ident),
                                 npr.IP_PROTO_NAMES.get(ip.proto, f"ip-{ip.proto}"),
                                 ip.src, ip.dst, ts, orig, mac)
            return
        raw = None
        if plain_eth and ip.header_len == 20 and not ip.more_fragments and ip.proto in (6, 17):
            raw = d[26:38]
        st = self._transport(idx, ts, d, orig, ip.proto, ip.src, ip.dst, ip.payload_offset,
                             ip.payload_end, ip.ttl, mac, ip.more_fragments,
                             224 <= d[off + 16] <= 239)
        if st is None:
            return
        if ip.more_fragments:
            st.frags += 1
            st.note("IP fragments (payload not reassembled)")
            self.frag4[(ip.src, ip.dst, ip.proto, ip.ident)] = st
            if len(self.frag4) > 10_000:
                self.frag4.clear()
        if raw is not None:
            tbl = self.tcp_raw if ip.proto == 6 else self.udp_raw
            if raw not in tbl:
                tbl[raw] = st

    def _ipv6(self, idx: int, ts: int, d: bytes, off: int, orig: int, mac: str | None,
              plain_eth: bool) -> None:
        ip = npr.decode_ipv6(d, off)
        if ip.truncated and orig <= len(d):
            self.anomaly(f"frame {idx}: IPv6 payload length {ip.payload_length} exceeds the "
                         f"{len(d) - off - 40} bytes present at offset {off + 4} "
                         f"(flow still attributed)")
        frag = ip.fragment
        if frag is not None and frag.offset:
            self._later_fragment(self.frag6, (ip.src, ip.dst, frag.ident),
                                 npr.IP_PROTO_NAMES.get(ip.next_header, f"ip-{ip.next_header}"),
                                 ip.src, ip.dst, ts, orig, mac)
            return
        more = frag is not None and frag.more
        st = self._transport(idx, ts, d, orig, ip.next_header, ip.src, ip.dst, ip.payload_offset,
                             ip.payload_end, ip.hop_limit, mac, more, ip.dst.startswith("ff"),
                             v6=True)
        if st is not None and more:
            st.frags += 1
            st.note("IP fragments (payload not reassembled)")
            self.frag6[(ip.src, ip.dst, frag.ident)] = st
            if len(self.frag6) > 10_000:
                self.frag6.clear()
        if (plain_eth and not ip.extension_headers and ip.payload_length
                and ip.next_header in (6, 17)):
            tbl = self.tcp6_raw if ip.next_header == 6 else self.udp6_raw
            raw = d[22:58]
            if raw not in tbl:
                tbl[raw] = st

    def _later_fragment(self, table: dict, fkey: tuple, proto: str, src: str, dst: str, ts: int,
                        orig: int, mac: str | None) -> None:
        st = table.get(fkey)
        if st is None:
            st, _ = self.lookup((proto, src, dst, None, None), ts, mac=mac)
            st.note("IP fragments whose first fragment was not seen")
        st.frags += 1
        self.touch(st, ts, orig)

    def _transport(self, idx: int, ts: int, d: bytes, orig: int, proto: int, src: str, dst: str,
                   poff: int, pend: int, hops: int, mac: str | None, fragmented: bool,
                   multicast: bool, v6: bool = False) -> _St | None:
        if proto == 6:
            t = npr.decode_tcp(d, poff, pend)
            swap = ((t.flags & 0x12) == 0x12
                    or (not t.flags & 0x02 and _server_side(t.sport, t.dport)))
            st, fwd = self.lookup(("tcp", src, dst, t.sport, t.dport), ts, swap=swap, mac=mac)
            self.touch(st, ts, orig)
            plen = t.payload_end - t.payload_offset
            if t.sport == 53 or t.dport == 53:
                if plen > 0:
                    self._dns_tcp(st, fwd, ts, src, dst, d[t.payload_offset:t.payload_end],
                                  fragmented)
                return st
            if fwd and plen > 0 and not st.app_done:
                if fragmented:
                    st.app_done = True
                    st.note("first client data fragmented; TLS/HTTP names not decoded")
                else:
                    self._tcp_client_data(st, t.seq, d[t.payload_offset:t.payload_end])
            if st.app_done:
                st.fast = True
            return st
        if proto == 17:
            u = npr.decode_udp(d, poff, pend)
            swap = _server_side(u.sport, u.dport)
            st, fwd = self.lookup(("udp", src, dst, u.sport, u.dport), ts, swap=swap, mac=mac)
            self.touch(st, ts, orig)
            if u.sport in DNS_PORTS or u.dport in DNS_PORTS:
                payload = d[u.payload_offset:u.payload_end]
                if fragmented:
                    st.dns_bad += 1
                    st.note("DNS message fragmented; not decoded")
                    return st
                try:
                    msg = npr.decode_dns(payload)
                except DecodeError as e:
                    st.dns_bad += 1
                    st.note(f"payload on a DNS port is not DNS: {e}")
                else:
                    self._dns(st, fwd, ts, src, dst, msg)
            else:
                # Nothing more to learn from this flow's payloads. (Only frames of the plain
                # Ethernet/IPv4 shape can reach the fast path; others keep coming here.)
                st.fast = True
            return st
        if proto == 1 and not v6:
            c = npr.decode_icmp(d, poff, pend)
            if c.type == 0:
                key = ("icmp", dst, src, 8, 0)
            else:
                key = ("icmp", src, dst, c.type, c.code)
            st, _ = self.lookup(key, ts, reverse=False, mac=mac)
            self.touch(st, ts, orig)
            if c.type in (0, 8):
                self._echo(st, pend - c.payload_offset)
            return st
        if proto == 58 and v6:
            c6 = npr.decode_icmpv6(d, poff, pend)
            hk = None
            if 133 <= c6.type <= 137 and c6.code == 0 and hops == 255:
                hk = "dad" if (c6.type == 135 and src == "::") else "nd"
            elif c6.type in (130, 131, 132, 143) and hops == 1:
                hk = "mld"
            if c6.type == 129:
                key = ("icmpv6", dst, src, 128, 0)
            else:
                key = ("icmpv6", src, dst, c6.type, c6.code)
            st, _ = self.lookup(key, ts, reverse=False, hk=hk, mac=mac)
            if st.hk != hk:
                st.hk = None  # the same key seen both with and without housekeeping traits
            self.touch(st, ts, orig)
            if c6.type in (128, 129):
                self._echo(st, pend - c6.payload_offset)
            return st
        if proto == 2 and not v6:
            g = npr.decode_igmp(d, poff, pend)
            hk = "igmp" if (hops == 1 and multicast) else None
            st, _ = self.lookup(("igmp", src, dst, g.type, None), ts, reverse=False, hk=hk,
                                mac=mac)
            if st.hk != hk:
                st.hk = None
            self.touch(st, ts, orig)
            return st
        name = npr.IP_PROTO_NAMES.get(proto, f"ip-{proto}")
        sport = dport = None
        if proto == 132 and pend - poff >= 4:  # SCTP: ports in the common header
            sport = d[poff] << 8 | d[poff + 1]
            dport = d[poff + 2] << 8 | d[poff + 3]
        st, _ = self.lookup((name, src, dst, sport, dport), ts, mac=mac)
        self.touch(st, ts, orig)
        return st

    def _echo(self, st: _St, size: int) -> None:
        st.echo_n += 1
        if len(st.echo) < _MAX_ECHO_SIZES:
            st.echo.append(size)

    # -- application layer ------------------------------------------------------------------

    def _tcp_client_data(self, st: _St, seq: int, payload: bytes) -> None:
        if st.tcp_next is None:
            st.tcp_next = seq
            st.tcp_buf = bytearray()
        if seq != st.tcp_next:
            if (st.tcp_next - seq) % (1 << 32) < (1 << 31):
                return  # retransmission of data already taken
            st.app_done = True
            st.note("client data out of order; TLS/HTTP names not decoded")
            return
        buf = st.tcp_buf
        buf += payload
        st.tcp_next = (seq + len(payload)) % (1 << 32)
        st.tcp_segs += 1
        give_up = len(buf) >= _MAX_TCP_INSPECT or st.tcp_segs >= _MAX_TCP_INSPECT_SEGMENTS
        data = bytes(buf)
        if data[0] == 0x16:
            try:
                hello = npr.decode_tls_client_hello(data)
            except IncompleteError as e:
                if give_up:
                    st.note(f"TLS ClientHello not decoded: {e}")
                    self._app_finished(st)
                return
            except DecodeError as e:
                st.note(f"TLS ClientHello not decoded: {e}")
                self._app_finished(st)
                return
            if hello.sni:
                st.sni.append(hello.sni)
            if hello.ech:
                st.note("TLS encrypted ClientHello: the SNI is only the public name")
            self._app_finished(st)
            return
        try:
            req = npr.decode_http_request(data)
        except IncompleteError:
            if give_up:
                self._app_finished(st)
            return
        except DecodeError:
            self._app_finished(st)  # neither TLS nor HTTP: nothing to name
            return
        if req.host:
            st.hosts.append(req.host)
            self._app_finished(st)
        elif req.headers_complete or give_up:
            self._app_finished(st)

    @staticmethod
    def _app_finished(st: _St) -> None:
        st.app_done = True
        st.tcp_buf = None

    def _dns_tcp(self, st: _St, fwd: bool, ts: int, src: str, dst: str, payload: bytes,
                 fragmented: bool) -> None:
        if fragmented:
            st.dns_bad += 1
            st.note("DNS message fragmented; not decoded")
            return
        try:
            msgs = npr.decode_dns_tcp(payload)
        except DecodeError as e:
            st.dns_bad += 1
            st.note(f"DNS-over-TCP segment not decoded: {e}")
            return
        for m in msgs:
            self._dns(st, fwd, ts, src, dst, m)

    def _dns(self, st: _St, fwd: bool, ts: int, src: str, dst: str, msg: npr.DnsMessage) -> None:
        for q in msg.questions:
            st.queries.setdefault(q.name, None)
            if not msg.is_response:
                self.queries.append(DnsQuery(ts, src, dst, q.name, q.qtype))
        if not msg.is_response:
            return
        if fwd:
            # A response sent by the initiator (an mDNS announcement) gives names away too.
            for r in msg.answers:
                st.queries.setdefault(r.name, None)
        # Which names lead to each address: owner names plus the CNAME chains into them.
        cname_to: dict[str, list[str]] = {}
        for r in msg.answers:
            if r.rtype == 5:
                cname_to.setdefault(r.data.lower().rstrip("."), []).append(r.name)
        for r in msg.answers:
            if r.rtype not in (1, 28):
                continue
            names = [r.name]
            seen = {r.name.lower().rstrip(".")}
            frontier = [r.name.lower().rstrip(".")]
            for _ in range(16):  # CNAME chains are short; loops in hostile answers are cut
                nxt = []
                for nme in frontier:
                    for alias in cname_to.get(nme, ()):
                        al = alias.lower().rstrip(".")
                        if al not in seen:
                            seen.add(al)
                            names.append(alias)
                            nxt.append(al)
                if not nxt:
                    break
                frontier = nxt
            per = self.resolved.setdefault(r.data, {})
            for nme in names:
                nme = nme.rstrip(".")
                if nme not in per:
                    per[nme] = ts

    # -- results ----------------------------------------------------------------------------

    def result(self, capture: Capture, npackets: int, cfg: dict) -> FlowAnalysis:
        max_jitter_ratio = cfg["max_jitter_ratio"]
        tunnel = cfg["tunnel"]
        flows = []
        for st in self.order:
            resolved = tuple(n for n, t in self.resolved.get(st.dst, {}).items() if t <= st.first)
            names = tuple(dict.fromkeys(list(resolved) + st.sni + st.hosts))
            per = _periodicity(st.contacts, max_jitter_ratio)
            notes = list(st.notes)
            if st.echo_n > len(st.echo):
                notes.append(f"{st.echo_n - len(st.echo)} more ICMP echo sizes not listed")
            if len(st.contacts) >= _MAX_CONTACTS:
                notes.append(f"contact list capped at {_MAX_CONTACTS}")
            flows.append(Flow(
                proto=st.proto, src=st.src, dst=st.dst, sport=st.sport, dport=st.dport,
                first_seen=st.first, last_seen=st.last, packets=st.packets, bytes=st.bytes,
                names=names, resolved_names=resolved, sni=tuple(dict.fromkeys(st.sni)),
                http_hosts=tuple(dict.fromkeys(st.hosts)), dns_queries=tuple(st.queries),
                dns_undecoded=st.dns_bad, icmp_echo_sizes=tuple(st.echo), housekeeping=st.hk,
                periodicity=per, src_mac=st.mac, fragments=st.frags, notes=tuple(notes)))

        periodic: list[PeriodicContact] = []
        for f in flows:
            if f.periodicity is not None and f.periodicity.regular:
                periodic.append(PeriodicContact("flow", f.proto, f.dst, f.dport,
                                                f.periodicity.period_s, f.periodicity.jitter_s,
                                                f.periodicity.contacts))
        by_dst: dict[str, list[int]] = {}
        for st in self.order:
            if st.hk is None:
                by_dst.setdefault(st.dst, []).extend(st.contacts)
        gap = self.gap
        for dst, times in by_dst.items():
            times.sort()
            merged: list[int] = []
            for t in times:
                if not merged or t - merged[-1] > gap:
                    merged.append(t)
            p = _periodicity(merged, max_jitter_ratio)
            if p is not None and p.regular:
                periodic.append(PeriodicContact("destination", None, dst, None, p.period_s,
                                                p.jitter_s, p.contacts))

        resolutions = tuple(Resolution(addr, n, t) for addr, per in self.resolved.items()
                            for n, t in per.items())
        anomalies = list(capture.anomalies) + self.anomalies
        if self.anomaly_overflow:
            anomalies.append(f"{self.anomaly_overflow} more anomalies not listed")
        return FlowAnalysis(
            packets=npackets, flows=tuple(flows), dns_queries=tuple(self.queries),
            resolutions=resolutions, periodic=tuple(periodic),
            tunnel_suspects=_tunnel_suspects([n for f in flows for n in f.dns_queries], **tunnel),
            anomalies=tuple(anomalies), undecoded=self.undecoded, capture_format=capture.format,
            capture_data_lost=capture.data_lost, stats=capture.stats,
            capture_macs=capture.interface_macs)


def _periodicity(times: list[int], max_jitter_ratio: float) -> Periodicity | None:
    if len(times) < 3:
        return None
    ts = sorted(times)
    iv = [b - a for a, b in zip(ts, ts[1:])]
    period = statistics.median(iv)
    if period <= 0:
        return None
    jitter = statistics.pstdev(iv)
    return Periodicity(period_s=period / 1e9, jitter_s=jitter / 1e9, contacts=len(ts),
                       regular=jitter <= max_jitter_ratio * period)


def _entropy(s: str) -> float:
    if not s:
        return 0.0
    n = len(s)
    return -sum(c / n * math.log2(c / n) for c in Counter(s).values())


def _tunnel_suspects(names: list[str], *, long_label: int, entropy_min_len: int,
                     entropy_bits: float, unique_subdomains: int) -> tuple[TunnelSuspect, ...]:
    by_parent: dict[str, set[str]] = {}
    for name in names:
        n = name.lower().rstrip(".")
        labels = n.split(".")
        if len(labels) < 3:
            continue  # no subdomain under the parent, nothing to carry data in
        by_parent.setdefault(".".join(labels[-2:]), set()).add(n)
    out = []
    for parent, subs in sorted(by_parent.items()):
        max_label = 0
        max_h = 0.0
        high = []
        for n in subs:
            sub = n.split(".")[:-2]
            max_label = max(max_label, max(len(lab) for lab in sub))
            joined = "".join(sub)
            if len(joined) >= entropy_min_len:
                h = _entropy(joined)
                max_h = max(max_h, h)
                if h >= entropy_bits:
                    high.append(n)
        reasons = []
        if len(subs) >= unique_subdomains:
            reasons.append(f"{len(subs)} unique subdomains")
        if max_label >= long_label:
            reasons.append(f"label of {max_label} characters")
        if len(high) >= 3:
            reasons.append(f"{len(high)} high-entropy names (up to {max_h:.2f} bits/char)")
        if reasons:
            examples = tuple(sorted(high or subs, key=len, reverse=True)[:3])
            out.append(TunnelSuspect(parent, len(subs), max_label, round(max_h, 3),
                                     tuple(reasons), examples))
    return tuple(out)


def analyze(capture: Capture, *, contact_gap_s: float = 0.5, max_jitter_ratio: float = 0.2,
            tunnel_long_label: int = 40, tunnel_entropy_min_len: int = 20,
            tunnel_entropy_bits: float = 3.6, tunnel_unique_subdomains: int = 30) -> FlowAnalysis:
    """Group the capture's packets into flows and collect names, periodicity and anomalies.

    contact_gap_s: a packet after this much silence in its flow starts a new contact.
    max_jitter_ratio: contacts are regular when the interval's std-dev is within this share
        of the median interval.
    tunnel_*: DNS-tunnel thresholds (label length; minimum subdomain length and bits/char for
        "high entropy"; unique subdomains under one parent).
    """
    cfg = _config(contact_gap_s, max_jitter_ratio, tunnel_long_label, tunnel_entropy_min_len,
                  tunnel_entropy_bits, tunnel_unique_subdomains)
    with gc_paused():
        a, n = _run(map(_PACKET_FIELDS, capture.packets), cfg)
        return a.result(capture, n, cfg)


def analyze_bytes(data: bytes, **options) -> FlowAnalysis:
    """`analyze(read_capture(data), **options)` in one streaming pass, without Packet objects.

    Same result, less memory and time for large captures. CaptureFormatError for an unusable
    header, as read_capture.
    """
    cfg = _config(**options)
    scan = CaptureScan(data)
    with gc_paused():
        a, n = _run(scan.records, cfg)
        return a.result(scan.summary(), n, cfg)


_PACKET_FIELDS = operator.attrgetter("timestamp_ns", "linktype", "data", "orig_len", "interface")


def _config(contact_gap_s: float = 0.5, max_jitter_ratio: float = 0.2, tunnel_long_label: int = 40,
            tunnel_entropy_min_len: int = 20, tunnel_entropy_bits: float = 3.6,
            tunnel_unique_subdomains: int = 30) -> dict:
    return dict(gap_ns=int(contact_gap_s * 1e9), max_jitter_ratio=max_jitter_ratio,
                tunnel=dict(long_label=tunnel_long_label, entropy_min_len=tunnel_entropy_min_len,
                            entropy_bits=tunnel_entropy_bits,
                            unique_subdomains=tunnel_unique_subdomains))


def _run(records: Iterable[tuple[int, int, bytes, int, int]], cfg: dict) -> tuple[_Analyzer, int]:
    a = _Analyzer(cfg["gap_ns"])
    gap = a.gap
    tcp_raw, udp_raw = a.tcp_raw, a.udp_raw
    tcp6_raw, udp6_raw = a.tcp6_raw, a.udp6_raw
    slow = a.frame
    idx = 0
    # Hot loop: see the module docstring. The conditions mirror what the decoders would accept
    # (IPv4: version 4, IHL 5, no reserved/MF flag, offset 0; IPv6: version 6, TCP or UDP right
    # after the fixed header; lengths consistent), so a frame counted here is one the full path
    # would have decoded without remark. Raw keys are the address and port bytes.
    for ts, lt, d, orig, _iface in records:
        idx += 1
        if lt == 1 and len(d) >= 42:
            st = None
            if d[12] == 8 and d[13] == 0:
                if d[14] == 0x45 and not d[20] & 0xBF and not d[21]:
                    tot = d[16] << 8 | d[17]
                    if tot + 14 <= len(d):
                        pr = d[23]
                        if pr == 6:
                            if tot >= 40 and d[46] >= 0x50 and 20 + ((d[46] >> 4) << 2) <= tot:
                                st = tcp_raw.get(d[26:38])
                        elif pr == 17:
                            if tot >= 28 and (d[38] or d[39] >= 8 or not d[39]):
                                st = udp_raw.get(d[26:38])
            elif d[12] == 0x86 and d[13] == 0xDD and d[14] >> 4 == 6 and len(d) >= 62:
                plen = d[18] << 8 | d[19]
                if plen and plen + 54 <= len(d):
                    nh = d[20]
                    if nh == 6:
                        if plen >= 20 and d[66] >= 0x50 and (d[66] >> 4) << 2 <= plen:
                            st = tcp6_raw.get(d[22:58])
                    elif nh == 17:
                        if plen >= 8 and (d[58] or d[59] >= 8 or not d[59]):
                            st = udp6_raw.get(d[22:58])
            if st is not None and st.fast:
                st.packets += 1
                st.bytes += orig
                dt = ts - st.last
                if dt > 0:
                    if dt > gap and len(st.contacts) < _MAX_CONTACTS:
                        st.contacts.append(ts)
                    st.last = ts
                elif ts < st.first:
                    st.first = ts
                continue
        slow(idx, ts, lt, d, orig)
    return a, idx


# ---------------------------------------------------------------------------------------------
# JSON


def _periodicity_json(p: Periodicity | None) -> dict | None:
    if p is None:
        return None
    return {"period_s": round(p.period_s, 6), "jitter_s": round(p.jitter_s, 6),
            "contacts": p.contacts, "regular": p.regular}


def flow_json(f: Flow) -> dict:
    return {
        "proto": f.proto, "src": f.src, "dst": f.dst, "sport": f.sport, "dport": f.dport,
        "first_seen": iso_ns(f.first_seen), "last_seen": iso_ns(f.last_seen),
        "first_seen_ns": f.first_seen, "last_seen_ns": f.last_seen,
        "packets": f.packets, "bytes": f.bytes, "names": list(f.names),
        "resolved_names": list(f.resolved_names), "sni": list(f.sni),
        "http_hosts": list(f.http_hosts), "dns_queries": list(f.dns_queries),
        "dns_undecoded": f.dns_undecoded, "icmp_echo_sizes": list(f.icmp_echo_sizes),
        "housekeeping": f.housekeeping, "periodicity": _periodicity_json(f.periodicity),
        "src_mac": f.src_mac, "fragments": f.fragments, "notes": list(f.notes),
    }


def flow_analysis_json(analysis: FlowAnalysis) -> dict:
    """Everything `analyze` found, as JSON-ready dicts and lists."""
    stats = None
    if analysis.stats is not None:
        stats = {"received": analysis.stats.received, "dropped": analysis.stats.dropped}
    return {
        "packets": analysis.packets,
        "undecoded": analysis.undecoded,
        "capture_format": analysis.capture_format,
        "capture_data_lost": analysis.capture_data_lost,
        "stats": stats,
        "capture_macs": list(analysis.capture_macs),
        "flows": [flow_json(f) for f in analysis.flows],
        "dns_queries": [{"timestamp": iso_ns(q.timestamp_ns), "timestamp_ns": q.timestamp_ns,
                         "src": q.src, "dst": q.dst, "name": q.name, "qtype": q.qtype}
                        for q in analysis.dns_queries],
        "resolutions": [{"address": r.address, "name": r.name, "timestamp": iso_ns(r.timestamp_ns),
                         "timestamp_ns": r.timestamp_ns} for r in analysis.resolutions],
        "periodic": [{"scope": p.scope, "proto": p.proto, "dst": p.dst, "dport": p.dport,
                      "period_s": round(p.period_s, 6), "jitter_s": round(p.jitter_s, 6),
                      "contacts": p.contacts} for p in analysis.periodic],
        "tunnel_suspects": [{"parent": t.parent, "unique_names": t.unique_names,
                             "max_label_len": t.max_label_len, "max_entropy": t.max_entropy,
                             "reasons": list(t.reasons), "examples": list(t.examples)}
                            for t in analysis.tunnel_suspects],
        "anomalies": list(analysis.anomalies),
    }


# ---------------------------------------------------------------------------------------------
# A float-free record (signed run records hold no floats), and back


def _exact(x: float) -> str:
    return repr(float(x))  # float(repr(x)) == x: the record round-trips exactly


def flow_analysis_record(analysis: FlowAnalysis) -> dict:
    """The analysis as canonical-JSON-safe plain data (integers and strings, no floats).

    `flow_analysis_from_record` turns it back into an equal FlowAnalysis, so a check can judge
    what a probe recorded in its facts. Floats (periods, jitter, entropy) are their exact
    `repr` strings; timestamps are integers in ns next to their ISO text.
    """
    doc = flow_analysis_json(analysis)
    doc["format"] = "attestlab-flow-analysis/1"
    for f, flow in zip(doc["flows"], analysis.flows):
        p = flow.periodicity
        f["periodicity"] = None if p is None else {
            "period_s": _exact(p.period_s), "jitter_s": _exact(p.jitter_s), "contacts": p.contacts,
            "regular": p.regular}
    doc["periodic"] = [{"scope": p.scope, "proto": p.proto, "dst": p.dst, "dport": p.dport,
                        "period_s": _exact(p.period_s), "jitter_s": _exact(p.jitter_s),
                        "contacts": p.contacts} for p in analysis.periodic]
    doc["tunnel_suspects"] = [{"parent": t.parent, "unique_names": t.unique_names,
                               "max_label_len": t.max_label_len, "max_entropy": _exact(t.max_entropy),
                               "reasons": list(t.reasons), "examples": list(t.examples)}
                              for t in analysis.tunnel_suspects]
    return doc


def flow_analysis_from_record(doc: dict) -> FlowAnalysis:
    """Rebuild the FlowAnalysis that `flow_analysis_record` wrote. ValueError on anything else."""
    if not isinstance(doc, dict) or doc.get("format") != "attestlab-flow-analysis/1":
        raise ValueError("not a flow analysis record (format attestlab-flow-analysis/1)")
    try:
        flows = []
        for f in doc["flows"]:
            p = f["periodicity"]
            flows.append(Flow(
                proto=f["proto"], src=f["src"], dst=f["dst"], sport=f["sport"], dport=f["dport"],
                first_seen=int(f["first_seen_ns"]), last_seen=int(f["last_seen_ns"]),
                packets=int(f["packets"]), bytes=int(f["bytes"]), names=tuple(f["names"]),
                resolved_names=tuple(f["resolved_names"]), sni=tuple(f["sni"]),
                http_hosts=tuple(f["http_hosts"]), dns_queries=tuple(f["dns_queries"]),
                dns_undecoded=int(f["dns_undecoded"]), icmp_echo_sizes=tuple(f["icmp_echo_sizes"]),
                housekeeping=f["housekeeping"],
                periodicity=None if p is None else Periodicity(float(p["period_s"]), float(p["jitter_s"]),
                                                                int(p["contacts"]), bool(p["regular"])),
                src_mac=f["src_mac"], fragments=int(f["fragments"]), notes=tuple(f["notes"])))
        stats = doc["stats"]
        return FlowAnalysis(
            packets=int(doc["packets"]), flows=tuple(flows),
            dns_queries=tuple(DnsQuery(int(q["timestamp_ns"]), q["src"], q["dst"], q["name"], int(q["qtype"]))
                              for q in doc["dns_queries"]),
            resolutions=tuple(Resolution(r["address"], r["name"], int(r["timestamp_ns"]))
                              for r in doc["resolutions"]),
            periodic=tuple(PeriodicContact(p["scope"], p["proto"], p["dst"], p["dport"], float(p["period_s"]),
                                           float(p["jitter_s"]), int(p["contacts"])) for p in doc["periodic"]),
            tunnel_suspects=tuple(TunnelSuspect(t["parent"], int(t["unique_names"]), int(t["max_label_len"]),
                                                float(t["max_entropy"]), tuple(t["reasons"]), tuple(t["examples"]))
                                  for t in doc["tunnel_suspects"]),
            anomalies=tuple(doc["anomalies"]), undecoded=int(doc["undecoded"]),
            capture_format=doc["capture_format"], capture_data_lost=bool(doc["capture_data_lost"]),
            stats=None if stats is None else CaptureStats(stats["received"], stats["dropped"]),
            capture_macs=tuple(doc.get("capture_macs", ())))
    except (KeyError, TypeError) as exc:
        raise ValueError(f"flow analysis record is malformed: {type(exc).__name__}: {exc}") from None
