"""Flow analysis of a capture: who the board talked to, under which names, how often.

`analyze(capture)` decodes every frame (see `harness.formats.netproto`) and groups them into
flows keyed by (proto, src, dst, sport, dport). Flows are bidirectional and started by whoever
sent the first frame on the 5-tuple -- never what the ports, a SYN-ACK or a reply-looking
message suggest: a board can send any of those unasked. Each flow keeps the link-layer sources
of the frames sent each way (`initiator_macs`, `responder_macs`), from which the judgement
decides whose frames they were. ICMP flows use type and code as ports; an echo reply joins the
flow of a request the other side sent first, and a reply that answers no request is a flow of
its own; so is each sender's ARP (an answer never joins the asker's flow). Non-IP frames become
flows with proto "ether" (dport = EtherType) or "llc". `analyze_bytes(data)` gives the same result
in one streaming pass over the file bytes, without building Packet objects.

What a frame carries that its flow's key does not show is kept per direction
(`initiator_concealed`, `responder_concealed`, with counts): a VLAN tag other than priority tag 0,
a source route (IPv4 option 131/137, an IPv6 routing header with segments left), bytes after the IP
datagram other than zero padding of a frame of at most 64 bytes (judged by the frame's length on
the wire when the recording cut it short), non-zero bytes inside the IP packet after the UDP
datagram, a packet addressed to one host in a frame to a broadcast or multicast MAC, frames of
one direction from or to more than _MAX_NEXT_HOPS different MACs.

For each flow it records first/last seen (ns), packets and bytes (both directions, frame
lengths as on the wire) and the names that tie the destination to a name: the DNS names whose
answers gave the destination before the flow began (the 8 most recent, the rest counted: a board
that resolves thousands of names to one address costs linear time, not names x flows), the TLS
ClientHello SNI, the HTTP Host. Only an answer from the other side of a DNS flow names an
address: what the asking side sends itself names nothing. DNS flows (ports 53, 5353, 5355) list
the names they asked about (64 per flow, the rest counted); a payload on a DNS port that is not
DNS is counted (`dns_undecoded`) so a policy cannot be satisfied by garbage on port 53. ICMP echo
payload sizes are kept. The addresses senders claim on the link (ARP, duplicate-address
detection, neighbour advertisements) are kept as `claims`. Link-local housekeeping is exactly
what a host may send unasked: ARP requests and replies from the frame's own sender with nothing
but zero padding; router solicitations to ff02::2; neighbour solicitations for a link-local or
same-/64 target to its solicited-node group or the target itself (DAD from :: without a
link-layer option); neighbour advertisements; MLD and IGMP reports to the groups RFC 3810/2236/
3376 define; hop limit 255 for ND and 1 for MLD/IGMP; only the options each message defines, of
the right length, a link-layer address option giving the frame's own source MAC, a neighbour
advertisement about the sender's own address, group records without source lists, no extension
header (ND) or only a hop-by-hop Router Alert (MLD), no IPv4 option but Router Alert (IGMP), ARP
whose target hardware address is zero, broadcast or the frame's destination, and no bytes after
the message; and at most _MAX_SUBJECTS distinct neighbours and groups named by one sender. Router
advertisements, redirects and queries are a router's. Anything else is an ordinary flow. What the
asking side of a DNS flow sends is DNS only: every name in it (any section, name-valued data) is
a name it asked about, and a query with records besides its questions and one OPT (an mDNS query:
known answers and probes allowed), EDNS options no client sends or bytes after its last record
counts in `dns_undecoded`.

Heuristics reported, not judged here: periodicity (a flow or destination contacted at a regular
interval, with period and jitter, once there are three contacts; a contact starts after a quiet
gap) and DNS tunnelling (long labels, high-entropy labels, many unique subdomains of one parent).

Bounded: the lists of DNS queries and resolutions hold the first 200 (with exact counts), and a
record or JSON document lists at most MAX_RECORDED_FLOWS flows with `flow_count` for all of them.

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
import ipaddress
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
    "DNS_PORTS", "flow_analysis_record", "flow_analysis_from_record", "flow_count",
    "MAX_RECORDED_FLOWS",
]

DNS_PORTS = frozenset((53, 5353, 5355))
_MAX_ANOMALY_LINES = 1000
_MAX_ECHO_SIZES = 10_000
_MAX_CONTACTS = 100_000
_MAX_TCP_INSPECT = 64 * 1024
_MAX_TCP_INSPECT_SEGMENTS = 16
_MAX_NOTES = 20
_MAX_FLOW_MACS = 8           # link-layer sources kept per direction of a flow
_MAX_NAMES_PER_ADDRESS = 8   # names kept per resolved address, most recent first
_MAX_FLOW_QUERIES = 64       # names kept per DNS flow; more are counted
_MAX_LISTED = 200            # DNS queries and resolutions listed; more are counted
_MAX_CLAIMS = 256            # (MAC, address) claims kept
_MAX_RAW_KEYS = 100_000      # fast-path keys per table; frames beyond take the full decoder
_MAX_NEXT_HOPS = 2           # unicast destination MACs one direction of a flow plausibly uses
_MAX_DISTINCT_NAMES = 100_000
MAX_RECORDED_FLOWS = 300     # flows a record or JSON document lists; the rest are counted
RECORD_FORMAT = "attestlab-flow-analysis/3"


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
    # Link-layer sources of the frames sent in each direction: the initiator's (its first frame
    # began the flow) and the responder's. Who owns a frame is decided from these, not from ports.
    initiator_macs: tuple[str, ...] = ()
    responder_macs: tuple[str, ...] = ()
    resolved_unlisted: int = 0        # names resolved to dst before the flow beyond resolved_names
    dns_queries_unlisted: int = 0     # names asked in this flow beyond dns_queries
    # What frames sent each way carried that the flow's key does not show, each with its count
    # ("3 frames carried 1200 bytes after their IP datagram"): a VLAN tag, a source route, bytes
    # after the datagram. The judgement holds them against whoever sent them.
    initiator_concealed: tuple[str, ...] = ()
    responder_concealed: tuple[str, ...] = ()

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
    # Counts that stay exact when the lists above are capped (a flood, or a record's flow cap).
    flow_count: int = 0                  # flows in the capture (len(flows) unless a record capped them)
    dns_query_count: int = 0             # DNS questions asked (dns_queries lists the first ones)
    dns_name_count: int = 0              # distinct names asked
    resolution_count: int = 0            # (address, name) answers seen (resolutions lists the first)
    # (MAC, address) pairs a sender claimed on the link: ARP sender (or an ARP probe's target),
    # the target of duplicate-address detection or of a neighbour advertisement.
    claims: tuple[tuple[str, str], ...] = ()
    # The capturing interface's own addresses (pcapng if_IPv4addr/if_IPv6addr): never the board's.
    capture_addresses: tuple[str, ...] = ()


class _St:
    """Mutable per-flow accumulator (the hot path touches only the first few slots)."""

    __slots__ = ("fast", "packets", "bytes", "first", "last", "contacts",
                 "proto", "src", "dst", "sport", "dport", "hk", "mac", "sni", "hosts",
                 "queries", "queries_more", "dns_bad", "echo", "echo_n", "notes", "frags",
                 "app_done", "tcp_buf", "tcp_next", "tcp_segs", "omacs", "rmacs", "rnames",
                 "rmore", "conceal", "hops")

    def __init__(self, key: tuple, ts: int, hk: str | None, mac: str | None,
                 rnames: tuple[str, ...] = (), rmore: int = 0) -> None:
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
        self.queries_more = 0
        self.omacs: list[str] = [mac] if mac is not None else []
        self.rmacs: list[str] = []
        self.rnames = rnames
        self.rmore = rmore
        self.dns_bad = 0
        self.echo: list[int] = []
        self.echo_n = 0
        self.notes: list[str] = []
        self.frags = 0
        self.app_done = False
        self.tcp_buf: bytearray | None = None
        self.tcp_next: int | None = None
        self.tcp_segs = 0
        # (initiator's direction?, what) -> [frames, bytes]
        self.conceal: dict[tuple[bool, str], list[int]] | None = None
        self.hops: dict[bool, list[bytes]] | None = None   # direction -> unicast destination MACs

    def concealed(self, forward: bool, what: str, nbytes: int) -> None:
        if self.conceal is None:
            self.conceal = {}
        c = self.conceal.setdefault((forward, what), [0, 0])
        c[0] += 1
        c[1] += nbytes

    def next_hop(self, forward: bool, dst_mac: bytes) -> bool:
        """Note a unicast destination MAC; False when it is one more than a flow's next hop
        explains (a destination MAC is the sender's to choose: 6 bytes a frame)."""
        if self.hops is None:
            self.hops = {}
        seen = self.hops.setdefault(forward, [])
        if dst_mac in seen:
            return True
        if len(seen) < _MAX_NEXT_HOPS:
            seen.append(dst_mac)
            return True
        return False

    def concealed_texts(self, forward: bool) -> tuple[str, ...]:
        out = []
        for (fwd, what), (frames, nbytes) in (self.conceal or {}).items():
            if fwd == forward:
                out.append(f"{frames} frame{'s' if frames != 1 else ''} {what.format(n=nbytes)}")
        return tuple(out)

    def note(self, text: str) -> None:
        if len(self.notes) < _MAX_NOTES and text not in self.notes:
            self.notes.append(text)

    def sender(self, mac: str | None, forward: bool) -> None:
        """Remember the link-layer source of a frame sent in one direction."""
        macs = self.omacs if forward else self.rmacs
        if mac is not None and mac not in macs and len(macs) < _MAX_FLOW_MACS:
            macs.append(mac)

    def query(self, name: str) -> None:
        if name in self.queries:
            return
        if len(self.queries) < _MAX_FLOW_QUERIES:
            self.queries[name] = None
        else:
            self.queries_more += 1


# ---------------------------------------------------------------------------------------------
# Link-local housekeeping: exactly what a host may send unasked (RFC 826, 4861, 4862, 3810,
# 2236, 3376), to the addresses and with the options those define. Anything else is a flow.

_ND_SLLA, _ND_TLLA, _ND_NONCE = 1, 2, 14
_ALL_NODES, _ALL_ROUTERS, _ALL_MLDV2_ROUTERS = "ff02::1", "ff02::2", "ff02::16"


_ZERO_MAC, _BROADCAST_MAC = "00:00:00:00:00:00", "ff:ff:ff:ff:ff:ff"
# What a frame may carry that its flow's key does not show ({n}: bytes, {hops}: addresses).
_AFTER_DATAGRAM = "carried {n} bytes after the IP datagram (hidden in the Ethernet trailer)"
_AFTER_UDP = "carried {n} bytes after the UDP datagram, inside the IP packet"
_ROUTED = "source-routed on to {hops} (the header's destination is only the next hop)"
_MORE_HOPS = (f"went to more than {_MAX_NEXT_HOPS} different link-layer destinations (a "
              f"destination MAC is the sender's to choose)")
_MORE_SOURCES = (f"came from more than {_MAX_NEXT_HOPS} different link-layer sources (a source "
                 f"MAC is the sender's to choose)")
_TO_EVERYONE = ("went to a broadcast or multicast MAC though addressed to one host (every host "
                "on the link receives them)")


def _unicast_ip_at(etype: int, d: bytes, off: int) -> bool:
    """Whether the IP packet at `off` is addressed to one host (its destination, read in place)."""
    if etype == npr.ETH_IPV4 and len(d) >= off + 20:
        return not 224 <= d[off + 16] <= 239 and d[off + 16:off + 20] != b"\xff\xff\xff\xff"
    return etype == npr.ETH_IPV6 and len(d) >= off + 40 and d[off + 24] != 0xFF


def _arp_housekeeping(arp: npr.ARP, frame: bytes, mac: str | None, eth_dst: str | None) -> bool:
    """An Ethernet/IPv4 request or reply from the frame's own sender, followed by nothing but
    zero padding up to the minimum frame size. Its target hardware address is what RFC 826/5227
    put there, never the sender's choice: a request's is zero, broadcast or the frame's
    destination; a reply's is the frame's destination (the asker), or for an announcement to
    broadcast zero, broadcast or the sender's own."""
    if not (arp.htype == 1 and arp.ptype == npr.ETH_IPV4 and (arp.hlen, arp.plen) == (6, 4)
            and arp.op in (1, 2) and len(frame) <= 64 and not frame[arp.end:].strip(b"\0")
            and (mac is None or arp.sender_hw == mac)):
        return False
    tha = arp.target_hw
    if arp.op == 1:
        return tha in (_ZERO_MAC, _BROADCAST_MAC) or tha == eth_dst
    if eth_dst is None or eth_dst == _BROADCAST_MAC:
        return tha in (_ZERO_MAC, _BROADCAST_MAC, arp.sender_hw)
    return tha == eth_dst


def _v6(text: str) -> ipaddress.IPv6Address | None:
    try:
        return ipaddress.IPv6Address(text)
    except ValueError:
        return None


def _solicited_node(target: ipaddress.IPv6Address) -> str:
    return str(ipaddress.IPv6Address((0xFF02 << 112) | (0x1FF << 24) | (int(target) & 0xFFFFFF)))


def _on_link(addr: ipaddress.IPv6Address, src: ipaddress.IPv6Address | None) -> bool:
    """Link-local, or in the /64 of the sender's own (source) address."""
    return addr.is_link_local or (src is not None and not src.is_unspecified
                                  and int(addr) >> 64 == int(src) >> 64)


def _unicast(a: ipaddress.IPv6Address | None) -> bool:
    return a is not None and not (a.is_multicast or a.is_unspecified or a.is_loopback)


def _nd_options(options: tuple, allowed: tuple[int, ...], mac: str | None) -> bool:
    """Only the allowed options, each once, each with the 6-byte value an Ethernet link gives it;
    a link-layer address option gives the frame's own source MAC (a host's own address)."""
    kinds = [t for t, _v in options]
    return (all(t in allowed for t in kinds) and len(set(kinds)) == len(kinds)
            and all(len(v) == 6 for _t, v in options)
            and (mac is None or all(v.hex(":") == mac for t, v in options
                                    if t in (_ND_SLLA, _ND_TLLA))))


# What an IP header around housekeeping may carry besides the message: nothing ("plain"), or
# only the Router Alert option MLD and IGMP put there ("router-alert", with zero padding).
_PLAIN, _ROUTER_ALERT, _OTHER = "plain", "router-alert", "other"
_MAX_SUBJECTS = 16  # distinct neighbours and groups one sender's housekeeping may name


def _ipv4_extras(ip: npr.IPv4) -> str:
    if not ip.options:
        return _PLAIN
    return _ROUTER_ALERT if ip.options == ((148, b"\0\0"),) else _OTHER


def _ipv6_extras(ip: npr.IPv6) -> str:
    if not ip.extension_headers:
        return _PLAIN
    if ip.extension_headers != (0,):
        return _OTHER
    named = [(t, v) for t, v in ip.ext_options if t not in (0, 1)]
    pads_zero = all(not v.strip(b"\0") for t, v in ip.ext_options if t == 1)
    return _ROUTER_ALERT if named == [(5, b"\0\0")] and pads_zero else _OTHER


def _icmpv6_housekeeping(src: str, dst: str, hops: int, c6: npr.ICMPv6, mac: str | None = None,
                         extras: str = _PLAIN) -> str | None:
    """'nd', 'dad' or 'mld' when the message is one a host sends as RFC 4861/4862/3810 allow;
    router advertisements, redirects and MLD queries are a router's, never a host's. Neighbour
    discovery comes without extension headers, MLD with at most the Router Alert option."""
    if c6.code != 0 or c6.payload_offset != c6.payload_end or extras == _OTHER:
        return None
    t = c6.type
    s = _v6(src)
    if t in (133, 135, 136):
        if hops != 255 or s is None or s.is_multicast or s.is_loopback or extras != _PLAIN:
            return None
        opts = c6.options
        if t == 133:  # router solicitation: to all routers; from :: without a link-layer address
            if dst != _ALL_ROUTERS or c6.word:
                return None
            if s.is_unspecified:
                return "nd" if not opts else None
            return "nd" if s.is_link_local and _nd_options(opts, (_ND_SLLA,), mac) else None
        target = _v6(c6.target or "")
        if not _unicast(target):
            return None
        if t == 135:  # neighbour solicitation
            if c6.word or not _nd_options(opts, (_ND_SLLA, _ND_NONCE), mac):
                return None
            if s.is_unspecified:  # duplicate-address detection of the sender's tentative address
                ok = dst == _solicited_node(target) and _ND_SLLA not in dict(opts)
                return "dad" if ok else None
            if not _on_link(target, s):
                return None
            return "nd" if dst in (_solicited_node(target), str(target)) else None
        # neighbour advertisement of the sender's own address (a host does not proxy): flags R,
        # S, O only; to all nodes unsolicited, else to a neighbour
        if (s.is_unspecified or c6.word & 0x1FFFFFFF or not _nd_options(opts, (_ND_TLLA,), mac)
                or target != s):
            return None
        if not _on_link(target, s):
            return None
        d = _v6(dst)
        if dst == _ALL_NODES:
            return "nd" if not c6.word & 0x40000000 else None  # S set only when answering
        return "nd" if _unicast(d) and _on_link(d, s) else None
    if t in (131, 132, 143):  # MLD reports and done
        if hops != 1 or s is None or not (s.is_link_local or (s.is_unspecified and t == 143)):
            return None
        groups = c6.groups
        if not groups or not all(_reportable_v6(g) for g in groups):
            return None
        if t == 131:
            return "mld" if dst == groups[0].group else None
        if t == 132:
            return "mld" if dst == _ALL_ROUTERS else None
        return "mld" if dst == _ALL_MLDV2_ROUTERS else None
    return None


def _reportable_v6(g: npr.GroupRecord) -> bool:
    """A group a host joins or leaves: multicast, not all-nodes, without auxiliary data or source
    addresses (a host's kernel reports any-source groups; a source list is 16 bytes a source)."""
    a = _v6(g.group)
    return (a is not None and a.is_multicast and g.group != _ALL_NODES and g.aux_words == 0
            and g.sources == 0 and (g.type == 0 or 1 <= g.type <= 6))


def _igmp_housekeeping(dst: str, ttl: int, g: npr.IGMP, extras: str = _PLAIN) -> bool:
    """A report (v1, v2 to its group; v3 to 224.0.0.22) or a leave (to 224.0.0.2) with TTL 1,
    at most the Router Alert option and nothing after what the message type defines; queries are
    a router's."""
    if ttl != 1 or g.payload_offset != g.payload_end or extras == _OTHER:
        return False
    if g.type in (0x12, 0x16):
        return _reportable_v4(g.group) and dst == g.group
    if g.type == 0x17:
        return _reportable_v4(g.group) and dst == "224.0.0.2"
    if g.type == 0x22:
        return (dst == "224.0.0.22" and bool(g.groups)
                and all(_reportable_v4(r.group) and 1 <= r.type <= 6 and r.aux_words == 0
                        and r.sources == 0 for r in g.groups))
    return False


def _reportable_v4(group: str | None) -> bool:
    try:
        a = ipaddress.IPv4Address(group or "")
    except ValueError:
        return False
    return a.is_multicast and group != "224.0.0.1"


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
        self.query_count = 0
        self.names: set[str] = set()
        self.name_overflow = 0
        # address -> {name: None}, most recent last, at most _MAX_NAMES_PER_ADDRESS; and how many
        # names were pushed out. Each flow takes a snapshot when it begins: linear, bounded.
        self.resolved: dict[str, dict[str, None]] = {}
        self.resolved_more: dict[str, int] = {}
        self.resolutions: list[Resolution] = []
        self.resolution_count = 0
        self.claims: dict[tuple[str, str], None] = {}
        self.subjects: dict[str, set[str]] = {}   # sender -> neighbours and groups it named
        # The flow the frame being decoded went to, and whether it went the initiator's way.
        self.current: tuple[_St, bool] | None = None
        # What the frame carries that its flow's key does not show: ("...{n}..." text, the bytes
        # it concerns), added to the flow once the frame has found it.
        self.pending: list[tuple[str, int]] = []
        # The fast-path table and raw key of the frame being decoded, with its flow: entered only
        # once the whole frame, its flow's next hops and sources included, gave no remark.
        self.fast_key: tuple[dict[bytes, _St], bytes, _St] | None = None

    # -- bookkeeping ------------------------------------------------------------------------

    def anomaly(self, text: str) -> None:
        if len(self.anomalies) < _MAX_ANOMALY_LINES:
            self.anomalies.append(text)
        else:
            self.anomaly_overflow += 1

    def lookup(self, key: tuple, ts: int, *, reverse: bool = True, hk: str | None = None,
               mac: str | None = None) -> tuple[_St, bool]:
        """The flow for `key` in either direction, and whether this frame goes the initiator's way.

        A new flow is started by the sender of its first frame: who sent first on the 5-tuple,
        never what the ports look like, decides which side began it.
        """
        st = self.flows.get(key)
        if st is not None:
            fwd = st.src == key[1] and st.sport == key[3]
            st.sender(mac, fwd)
            self.current = (st, fwd)
            return st, fwd
        proto, src, dst, sport, dport = key
        per = self.resolved.get(dst)
        rnames = tuple(reversed(per)) if per else ()
        st = _St(key, ts, hk, mac, rnames, self.resolved_more.get(dst, 0))
        self.flows[key] = st
        if reverse:
            self.flows.setdefault((proto, dst, src, dport, sport), st)
        self.order.append(st)
        self.current = (st, True)
        return st, True

    def claim(self, mac: str | None, address: str) -> None:
        if mac is not None and len(self.claims) < _MAX_CLAIMS:
            self.claims.setdefault((mac, address), None)

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
        self.current = None
        self.fast_key = None
        self.pending.clear()
        try:
            self._frame(idx, ts, lt, d, orig)
        except DecodeError as e:
            self.undecoded += 1
            self.anomaly(f"frame {idx}: {e}")
            return
        if lt == 1 and self.current is not None:
            st, fwd = self.current
            if not d[0] & 1 and not st.next_hop(fwd, d[0:6]):
                self.pending.append((_MORE_HOPS, 0))
            # One sender's frames come from its one or two MACs; a source MAC is its choice too.
            if d[6:12].hex(":") not in (st.omacs if fwd else st.rmacs)[:_MAX_NEXT_HOPS]:
                self.pending.append((_MORE_SOURCES, 0))
        if self.pending and self.current is not None:
            st, fwd = self.current
            for what, n in self.pending:
                st.concealed(fwd, what, n)
        elif self.fast_key is not None:
            # Remarks on a key's frames never change once made: the first two sources and next
            # hops of a direction stay the first two. So a key whose frame drew none can skip the
            # decoder from now on, and one whose frame drew one (a third MAC) must not.
            tbl, raw, st = self.fast_key
            if raw not in tbl and len(tbl) < _MAX_RAW_KEYS:
                tbl[raw] = st

    def _frame(self, idx: int, ts: int, lt: int, d: bytes, orig: int) -> None:
        mac = None
        plain_eth = False
        eth_dst = None
        if lt == 1:
            eth = npr.decode_ethernet(d)
            off, etype, mac, eth_dst = eth.header_len, eth.ethertype, eth.src, eth.dst
            if any(eth.vlans):
                # 802.1Q/802.1ad tags send the frame to another LAN, where the allowed address
                # may be another host (VLAN 0 is a priority tag on this one).
                self.pending.append(("tagged for VLAN " + "/".join(str(v) for v in eth.vlans if v)
                                     + " (another LAN)", 0))
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

        if lt == 1 and d[0] & 1 and _unicast_ip_at(etype, d, off):
            self.pending.append((_TO_EVERYONE, 0))
        if etype == npr.ETH_IPV4:
            self._ipv4(idx, ts, d, off, orig, mac, plain_eth)
        elif etype == npr.ETH_IPV6:
            self._ipv6(idx, ts, d, off, orig, mac, plain_eth)
        elif etype == npr.ETH_ARP:
            arp = npr.decode_arp(d, off)
            hk = "arp" if _arp_housekeeping(arp, d, mac, eth_dst) else None
            if arp.ptype == npr.ETH_IPV4 and arp.htype == 1:
                self.claim(mac, arp.target_proto if arp.sender_proto == "0.0.0.0"
                           else arp.sender_proto)
            # One direction per flow: an answer to the capture side's request is the answerer's
            # own flow, judged as its own, never a part of the capture side's.
            st, _ = self.lookup(("arp", arp.sender_proto, arp.target_proto, None, None), ts,
                                reverse=False, hk=hk, mac=mac)
            if st.hk != hk:
                st.hk = None  # one frame of the flow was not what a host's ARP is
            if hk is not None:
                self._subjects(st, mac, [arp.target_proto])
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
        self._after_datagram(d, off, off + ip.total_length, orig)
        if ip.source_route:
            self.pending.append((_ROUTED.format(hops=", ".join(ip.source_route)), 0))
        if ip.fragment_offset:
            self._later_fragment(self.frag4, (ip.src, ip.dst, ip.proto, ip.ident),
                                 npr.IP_PROTO_NAMES.get(ip.proto, f"ip-{ip.proto}"),
                                 ip.src, ip.dst, ts, orig, mac)
            return
        raw = None
        if plain_eth and ip.header_len == 20 and not ip.more_fragments and ip.proto in (6, 17):
            raw = d[0:12] + d[26:38]  # the MACs too: each sender's, each destination's, seen once
        st = self._transport(idx, ts, d, orig, ip.proto, ip.src, ip.dst, ip.payload_offset,
                             ip.payload_end, ip.ttl, mac, ip.more_fragments, _ipv4_extras(ip))
        if st is None:
            return
        if ip.more_fragments:
            st.frags += 1
            st.note("IP fragments (payload not reassembled)")
            self.frag4[(ip.src, ip.dst, ip.proto, ip.ident)] = st
            if len(self.frag4) > 10_000:
                self.frag4.clear()
        if raw is not None:
            self.fast_key = (self.tcp_raw if ip.proto == 6 else self.udp_raw, raw, st)

    def _ipv6(self, idx: int, ts: int, d: bytes, off: int, orig: int, mac: str | None,
              plain_eth: bool) -> None:
        ip = npr.decode_ipv6(d, off)
        if ip.truncated and orig <= len(d):
            self.anomaly(f"frame {idx}: IPv6 payload length {ip.payload_length} exceeds the "
                         f"{len(d) - off - 40} bytes present at offset {off + 4} "
                         f"(flow still attributed)")
        if ip.payload_length:  # 0: a jumbogram, as long as the frame
            self._after_datagram(d, off, off + 40 + ip.payload_length, orig)
        if ip.source_route:
            self.pending.append((_ROUTED.format(hops=", ".join(ip.source_route)), 0))
        frag = ip.fragment
        if frag is not None and frag.offset:
            self._later_fragment(self.frag6, (ip.src, ip.dst, frag.ident),
                                 npr.IP_PROTO_NAMES.get(ip.next_header, f"ip-{ip.next_header}"),
                                 ip.src, ip.dst, ts, orig, mac)
            return
        more = frag is not None and frag.more
        st = self._transport(idx, ts, d, orig, ip.next_header, ip.src, ip.dst, ip.payload_offset,
                             ip.payload_end, ip.hop_limit, mac, more, _ipv6_extras(ip), v6=True)
        if st is not None and more:
            st.frags += 1
            st.note("IP fragments (payload not reassembled)")
            self.frag6[(ip.src, ip.dst, frag.ident)] = st
            if len(self.frag6) > 10_000:
                self.frag6.clear()
        if (plain_eth and not ip.extension_headers and ip.payload_length
                and ip.next_header in (6, 17)):
            self.fast_key = (self.tcp6_raw if ip.next_header == 6 else self.udp6_raw,
                             d[0:12] + d[22:58], st)

    def _after_datagram(self, d: bytes, off: int, end: int, orig: int) -> None:
        """Bytes after the IP datagram are no part of it: zero padding up to the 64-byte minimum
        frame, or data that no receiver's IP stack reads but anyone on the wire can. A frame the
        recording cut short (`orig`, its length on the wire, is longer) is judged by that length:
        what was not recorded cannot be shown to be padding."""
        after = max(orig, len(d)) - end
        if after > 0 and (max(orig, len(d)) - off + 14 > 64 or d[end:].strip(b"\0")):
            self.pending.append((_AFTER_DATAGRAM, after))

    def _later_fragment(self, table: dict, fkey: tuple, proto: str, src: str, dst: str, ts: int,
                        orig: int, mac: str | None) -> None:
        st = table.get(fkey)
        if st is None:
            st, _ = self.lookup((proto, src, dst, None, None), ts, mac=mac)
            st.note("IP fragments whose first fragment was not seen")
        else:
            fwd = st.src == src
            st.sender(mac, fwd)
            self.current = (st, fwd)
        st.frags += 1
        self.touch(st, ts, orig)

    def _transport(self, idx: int, ts: int, d: bytes, orig: int, proto: int, src: str, dst: str,
                   poff: int, pend: int, hops: int, mac: str | None, fragmented: bool,
                   extras: str, v6: bool = False) -> _St | None:
        if proto == 6:
            t = npr.decode_tcp(d, poff, pend)
            st, fwd = self.lookup(("tcp", src, dst, t.sport, t.dport), ts, mac=mac)
            self.touch(st, ts, orig)
            plen = t.payload_end - t.payload_offset
            if t.sport == 53 or t.dport == 53:
                if plen > 0:
                    self._dns_tcp(st, fwd, ts, src, dst, d[t.payload_offset:t.payload_end],
                                  fragmented, mac)
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
            if u.payload_end < pend and not fragmented and d[u.payload_end:pend].strip(b"\0"):
                self.pending.append((_AFTER_UDP, pend - u.payload_end))
            st, fwd = self.lookup(("udp", src, dst, u.sport, u.dport), ts, mac=mac)
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
                    self._dns(st, fwd, ts, src, dst, msg, mac)
            else:
                # Nothing more to learn from this flow's payloads. (Only frames of the plain
                # Ethernet/IPv4 shape can reach the fast path; others keep coming here.)
                st.fast = True
            return st
        if proto == 1 and not v6:
            c = npr.decode_icmp(d, poff, pend)
            st = self._icmp("icmp", src, dst, c.type, c.code, 8, 0, ts, mac, None)
            self.touch(st, ts, orig)
            if c.type in (0, 8):
                self._echo(st, pend - c.payload_offset)
            return st
        if proto == 58 and v6:
            c6 = npr.decode_icmpv6(d, poff, pend)
            hk = _icmpv6_housekeeping(src, dst, hops, c6, mac, extras)
            if hk == "dad" or (hk == "nd" and c6.type == 136):
                self.claim(mac, c6.target or "")
            st = self._icmp("icmpv6", src, dst, c6.type, c6.code, 128, 129, ts, mac, hk)
            if hk is not None:
                self._subjects(st, mac, [c6.target] if c6.target else [g.group for g in c6.groups])
            self.touch(st, ts, orig)
            if c6.type in (128, 129):
                self._echo(st, pend - c6.payload_offset)
            return st
        if proto == 2 and not v6:
            g = npr.decode_igmp(d, poff, pend)
            hk = "igmp" if _igmp_housekeeping(dst, hops, g, extras) else None
            st, _ = self.lookup(("igmp", src, dst, g.type, None), ts, reverse=False, hk=hk,
                                mac=mac)
            if st.hk != hk:
                st.hk = None
            if hk is not None:
                self._subjects(st, mac, [g.group] if g.group else [r.group for r in g.groups])
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

    def _icmp(self, proto: str, src: str, dst: str, typ: int, code: int, request: int, reply: int,
              ts: int, mac: str | None, hk: str | None) -> _St:
        """ICMP flows are one message type each. An echo reply joins the flow of the request the
        other side sent first; a reply that answers no request is a flow of its own."""
        if typ == reply:
            st = self.flows.get((proto, dst, src, request, 0))
            if st is not None:
                st.sender(mac, False)
                self.current = (st, False)
                return st
        st, _ = self.lookup((proto, src, dst, typ, code), ts, reverse=False, hk=hk, mac=mac)
        if st.hk != hk:
            st.hk = None  # the same key seen both with and without housekeeping traits
        return st

    def _subjects(self, st: _St, sender: str | None, subjects: list[str]) -> None:
        """A host names few neighbours and groups in its housekeeping, and which ones it names is
        its choice: data, if it names many. Housekeeping that names one beyond the sender's first
        _MAX_SUBJECTS distinct ones (ARP and ND targets, MLD/IGMP groups) is a flow like any other."""
        seen = self.subjects.setdefault(sender or st.src, set())
        new = [x for x in dict.fromkeys(subjects) if x not in seen]
        if len(seen) + len(new) > _MAX_SUBJECTS:
            if st.hk is not None:
                st.hk = None
                st.note(f"its sender names more than {_MAX_SUBJECTS} distinct neighbours or "
                        f"groups in link-local messages: not housekeeping")
            return
        seen.update(new)

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
                 fragmented: bool, mac: str | None) -> None:
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
            self._dns(st, fwd, ts, src, dst, m, mac)

    def _dns(self, st: _St, fwd: bool, ts: int, src: str, dst: str, msg: npr.DnsMessage,
             mac: str | None) -> None:
        for q in msg.questions:
            st.query(q.name)
            if not msg.is_response:
                self.query_count += 1
                if len(self.queries) < _MAX_LISTED:
                    self.queries.append(DnsQuery(ts, src, dst, q.name, q.qtype))
                if q.name not in self.names:
                    if len(self.names) < _MAX_DISTINCT_NAMES:
                        self.names.add(q.name)
                    else:
                        self.name_overflow += 1
        asker = fwd or (mac is not None and mac in st.omacs)
        if asker:
            # Every name the asking side writes gives it away, in whatever section; a response
            # it sends (an mDNS announcement) answers nobody, so it names no address.
            for r in msg.answers + msg.authorities + msg.additionals:
                if r.rtype != 41:
                    st.query(r.name)
                if r.rtype in npr.NAME_RDATA_TYPES:
                    st.query(r.data)
            why = _not_plain_dns(msg, mdns=5353 in (st.sport, st.dport))
            if why:
                st.dns_bad += 1
                st.note(f"DNS message from the asking side {why}")
            return
        if not msg.is_response:
            return
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
                self.resolution_count += 1
                if len(self.resolutions) < _MAX_LISTED:
                    self.resolutions.append(Resolution(r.data, nme, ts))
                per.pop(nme, None)
                per[nme] = None  # the most recent last
                if len(per) > _MAX_NAMES_PER_ADDRESS:
                    del per[next(iter(per))]
                    self.resolved_more[r.data] = self.resolved_more.get(r.data, 0) + 1

    # -- results ----------------------------------------------------------------------------

    def result(self, capture: Capture, npackets: int, cfg: dict) -> FlowAnalysis:
        max_jitter_ratio = cfg["max_jitter_ratio"]
        tunnel = cfg["tunnel"]
        flows = []
        for st in self.order:
            resolved = st.rnames
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
                periodicity=per, src_mac=st.mac, fragments=st.frags, notes=tuple(notes),
                initiator_macs=tuple(st.omacs), responder_macs=tuple(st.rmacs),
                resolved_unlisted=st.rmore, dns_queries_unlisted=st.queries_more,
                initiator_concealed=st.concealed_texts(True),
                responder_concealed=st.concealed_texts(False)))

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

        anomalies = list(capture.anomalies) + self.anomalies
        if self.anomaly_overflow:
            anomalies.append(f"{self.anomaly_overflow} more anomalies not listed")
        return FlowAnalysis(
            packets=npackets, flows=tuple(flows), dns_queries=tuple(self.queries),
            resolutions=tuple(self.resolutions), periodic=tuple(periodic),
            tunnel_suspects=_tunnel_suspects([n for f in flows for n in f.dns_queries], **tunnel),
            anomalies=tuple(anomalies), undecoded=self.undecoded, capture_format=capture.format,
            capture_data_lost=capture.data_lost, stats=capture.stats,
            capture_macs=capture.interface_macs, flow_count=len(flows),
            dns_query_count=self.query_count, dns_name_count=len(self.names) + self.name_overflow,
            resolution_count=self.resolution_count, claims=tuple(self.claims),
            capture_addresses=capture.interface_addresses)


# EDNS options a client puts in a query (RFC 6891 and after): NSID and TCP keepalive empty, a
# cookie (its 8-byte client part, or with the server part it was given), padding of zeros.
_CLIENT_EDNS = {3: (0, 0), 10: (8, 40), 11: (0, 0), 12: (0, 0xFFFF)}


def _not_plain_dns(msg: npr.DnsMessage, mdns: bool = False) -> str | None:
    """Why a DNS message the asking side sent carries more than DNS gives it to carry, or None.

    A query holds its questions and at most one OPT record (an mDNS query also its known
    answers and, probing, the records it proposes: RFC 6762 7.1, 8.2; their names are judged);
    every message ends with its last record; EDNS options are those a client sends, padding
    zero."""
    if msg.trailing:
        return f"has {msg.trailing} bytes after its last record"
    if not msg.is_response:
        extra = (0 if mdns else len(msg.answers) + len(msg.authorities)) + sum(
            1 for r in msg.additionals if r.rtype != 41)
        if extra or sum(1 for r in msg.additionals if r.rtype == 41) > 1:
            return f"is a query carrying {extra} record(s) besides its questions and OPT"
    for code, value in msg.edns:
        lo, hi = _CLIENT_EDNS.get(code, (-1, -1))
        if not lo <= len(value) <= hi or (code == 12 and value.strip(b"\0")):
            return f"carries EDNS option {code} with {len(value)} bytes no client sends"
    return None


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
    # would have decoded without remark: nothing after the datagram but zero padding of a short
    # frame, a UDP length that ends where the IP packet does, no VLAN tag, no IP options. Raw
    # keys are both MACs, the address and the port bytes, entered only for a frame the full path
    # found nothing to remark on (no third source or next hop: see _Analyzer.frame).
    for ts, lt, d, orig, _iface in records:
        idx += 1
        # Not for a frame cut short (see _after_datagram) or sent to a group MAC (_TO_EVERYONE).
        if lt == 1 and len(d) >= 42 and orig == len(d) and not d[0] & 1:
            st = None
            if d[12] == 8 and d[13] == 0:
                if d[14] == 0x45 and not d[20] & 0xBF and not d[21]:
                    tot = d[16] << 8 | d[17]
                    if tot + 14 == len(d) or (tot + 14 < len(d) <= 64
                                              and not d[tot + 14:].strip(b"\0")):
                        pr = d[23]
                        if pr == 6:
                            if tot >= 40 and d[46] >= 0x50 and 20 + ((d[46] >> 4) << 2) <= tot:
                                st = tcp_raw.get(d[0:12] + d[26:38])
                        elif pr == 17:
                            if tot >= 28 and (d[38] << 8 | d[39]) == tot - 20:
                                st = udp_raw.get(d[0:12] + d[26:38])
            elif d[12] == 0x86 and d[13] == 0xDD and d[14] >> 4 == 6 and len(d) >= 62:
                plen = d[18] << 8 | d[19]
                if plen and plen + 54 == len(d):
                    nh = d[20]
                    if nh == 6:
                        if plen >= 20 and d[66] >= 0x50 and (d[66] >> 4) << 2 <= plen:
                            st = tcp6_raw.get(d[0:12] + d[22:58])
                    elif nh == 17:
                        if plen >= 8 and (d[58] << 8 | d[59]) == plen:
                            st = udp6_raw.get(d[0:12] + d[22:58])
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
        "initiator_macs": list(f.initiator_macs), "responder_macs": list(f.responder_macs),
        "resolved_unlisted": f.resolved_unlisted, "dns_queries_unlisted": f.dns_queries_unlisted,
        "initiator_concealed": list(f.initiator_concealed),
        "responder_concealed": list(f.responder_concealed),
    }


def flow_count(analysis: FlowAnalysis) -> int:
    """How many flows the capture held (a record lists at most MAX_RECORDED_FLOWS of them)."""
    return max(analysis.flow_count, len(analysis.flows))


def flow_analysis_json(analysis: FlowAnalysis) -> dict:
    """Everything `analyze` found, as JSON-ready dicts and lists; at most MAX_RECORDED_FLOWS
    flows (the first ones), with the count of all (a flood is counted, not replayed)."""
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
        "capture_addresses": list(analysis.capture_addresses),
        "flow_count": flow_count(analysis),
        "dns_query_count": analysis.dns_query_count,
        "dns_name_count": analysis.dns_name_count,
        "resolution_count": analysis.resolution_count,
        "claims": [list(c) for c in analysis.claims],
        "flows": [flow_json(f) for f in analysis.flows[:MAX_RECORDED_FLOWS]],
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
    doc["format"] = RECORD_FORMAT
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
    if not isinstance(doc, dict) or doc.get("format") != RECORD_FORMAT:
        raise ValueError(f"not a flow analysis record (format {RECORD_FORMAT})")
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
                src_mac=f["src_mac"], fragments=int(f["fragments"]), notes=tuple(f["notes"]),
                initiator_macs=tuple(f["initiator_macs"]), responder_macs=tuple(f["responder_macs"]),
                resolved_unlisted=int(f["resolved_unlisted"]),
                dns_queries_unlisted=int(f["dns_queries_unlisted"]),
                initiator_concealed=tuple(f["initiator_concealed"]),
                responder_concealed=tuple(f["responder_concealed"])))
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
            capture_macs=tuple(doc["capture_macs"]), flow_count=int(doc["flow_count"]),
            dns_query_count=int(doc["dns_query_count"]), dns_name_count=int(doc["dns_name_count"]),
            resolution_count=int(doc["resolution_count"]),
            claims=tuple((str(m), str(a)) for m, a in doc["claims"]),
            capture_addresses=tuple(str(a) for a in doc["capture_addresses"]))
    except (KeyError, TypeError) as exc:
        raise ValueError(f"flow analysis record is malformed: {type(exc).__name__}: {exc}") from None
