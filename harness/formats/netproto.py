"""Decoders for what a board's packets carry, from the link layer up to the names they reveal.

Link and network layers: Ethernet II / 802.3 with 802.1Q and 802.1ad tags, Linux cooked capture
(SLL and SLL2), ARP, IPv4 (options parsed, fragments flagged), IPv6 (extension-header chain,
fragment header), IGMP. Transport: UDP, TCP, ICMP and ICMPv6 (echo, neighbour discovery, MLD).
Application: DNS messages (questions and resource records, name compression), the server name
and ALPN of a TLS ClientHello, and the Host of an HTTP/1.x request.

Every decoder is pure: bytes in, a frozen dataclass out. Decoders that sit inside a frame take an
`offset` and report positions in the frame; the application decoders take just the payload and
report positions in it. Header decoders return offsets into the data given to them
(`payload_offset`, `payload_end`) rather than copies, so the caller slices only when it needs to.

Input is hostile. Any malformation raises `DecodeError` (a ValueError) carrying the offset at
which decoding failed; `IncompleteError`, its subclass, means the data stopped before the
structure did, so more bytes (the next TCP segment) might complete it. Nothing else is raised,
and every loop is bounded by the data length or an explicit limit: DNS compression pointers must
point strictly backwards of the name they continue, names stop at 255 bytes, extension-header and
VLAN chains stop at a fixed depth.
"""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass

__all__ = [
    "DecodeError", "IncompleteError",
    "Ethernet", "decode_ethernet", "LinuxSLL", "decode_linux_sll", "decode_linux_sll2",
    "ARP", "decode_arp", "IPv4", "decode_ipv4", "IPv6", "IPv6Fragment", "decode_ipv6",
    "UDP", "decode_udp", "TCP", "decode_tcp", "ICMP", "decode_icmp", "ICMPv6", "decode_icmpv6",
    "IGMP", "decode_igmp", "GroupRecord",
    "DnsQuestion", "DnsRecord", "DnsMessage", "decode_dns", "decode_dns_tcp", "format_dns_name",
    "TlsClientHello", "decode_tls_client_hello", "HttpRequest", "decode_http_request",
    "ETH_IPV4", "ETH_IPV6", "ETH_ARP", "IP_PROTO_NAMES", "NAME_RDATA_TYPES",
]

ETH_IPV4 = 0x0800
ETH_ARP = 0x0806
ETH_IPV6 = 0x86DD
_VLAN_TPIDS = (0x8100, 0x88A8, 0x9100)
_MAX_VLAN_TAGS = 8
_MAX_IPV6_EXT_HEADERS = 16

IP_PROTO_NAMES = {
    1: "icmp", 2: "igmp", 4: "ipip", 6: "tcp", 17: "udp", 41: "ipv6", 47: "gre", 50: "esp",
    51: "ah", 58: "icmpv6", 89: "ospf", 103: "pim", 112: "vrrp", 132: "sctp", 136: "udplite",
}


class DecodeError(ValueError):
    """The bytes are not a valid instance of the structure; `offset` says where it went wrong."""

    def __init__(self, reason: str, offset: int) -> None:
        super().__init__(f"{reason} at offset {offset}")
        self.reason = reason
        self.offset = offset


class IncompleteError(DecodeError):
    """The data ended before the structure did (it may continue in a later segment)."""


def _ip4(b: bytes) -> str:
    return socket.inet_ntoa(b)


def _ip6(b: bytes) -> str:
    return socket.inet_ntop(socket.AF_INET6, b)


def _mac(b: bytes) -> str:
    return b.hex(":")


# ---------------------------------------------------------------------------------------------
# Link layer


@dataclass(frozen=True)
class Ethernet:
    dst: str
    src: str
    ethertype: int          # for 802.3 frames (length field <= 1500) this is the length; see llc
    vlans: tuple[int, ...]  # VLAN ids, outermost first
    header_len: int         # offset of the payload
    llc: bool = False       # 802.3 length field instead of an EtherType


def decode_ethernet(data: bytes, offset: int = 0) -> Ethernet:
    n = len(data)
    if n - offset < 14:
        raise DecodeError("Ethernet header truncated", offset)
    dst = _mac(data[offset:offset + 6])
    src = _mac(data[offset + 6:offset + 12])
    pos = offset + 12
    etype = int.from_bytes(data[pos:pos + 2], "big")
    vlans: list[int] = []
    while etype in _VLAN_TPIDS:
        if len(vlans) >= _MAX_VLAN_TAGS:
            raise DecodeError(f"more than {_MAX_VLAN_TAGS} VLAN tags", pos)
        if n - pos < 6:
            raise DecodeError("VLAN tag truncated", pos)
        vlans.append(int.from_bytes(data[pos + 2:pos + 4], "big") & 0x0FFF)
        pos += 4
        etype = int.from_bytes(data[pos:pos + 2], "big")
    pos += 2
    if etype <= 1500:
        return Ethernet(dst, src, etype, tuple(vlans), pos - offset, llc=True)
    if etype < 0x0600:
        raise DecodeError(f"EtherType/length field 0x{etype:04x} is neither", pos - 2)
    return Ethernet(dst, src, etype, tuple(vlans), pos - offset)


@dataclass(frozen=True)
class LinuxSLL:
    packet_type: int   # 0 to us, 1 broadcast, 2 multicast, 3 to another host, 4 sent by us
    address: str       # link-layer address of the sender (hex, colon separated)
    protocol: int      # EtherType of the payload
    header_len: int


def decode_linux_sll(data: bytes, offset: int = 0) -> LinuxSLL:
    """Linux cooked capture v1 (link type 113), 16-byte header."""
    if len(data) - offset < 16:
        raise DecodeError("Linux cooked (SLL) header truncated", offset)
    ptype, _hatype, halen = struct.unpack_from("!HHH", data, offset)
    addr = data[offset + 6:offset + 6 + min(halen, 8)]
    proto = struct.unpack_from("!H", data, offset + 14)[0]
    return LinuxSLL(ptype, _mac(addr), proto, 16)


def decode_linux_sll2(data: bytes, offset: int = 0) -> LinuxSLL:
    """Linux cooked capture v2 (link type 276), 20-byte header."""
    if len(data) - offset < 20:
        raise DecodeError("Linux cooked (SLL2) header truncated", offset)
    proto = struct.unpack_from("!H", data, offset)[0]
    ptype = data[offset + 10]
    halen = data[offset + 11]
    addr = data[offset + 12:offset + 12 + min(halen, 8)]
    return LinuxSLL(ptype, _mac(addr), proto, 20)


@dataclass(frozen=True)
class ARP:
    htype: int
    ptype: int
    op: int            # 1 request, 2 reply
    sender_hw: str
    sender_proto: str  # dotted quad for IPv4, hex otherwise
    target_hw: str
    target_proto: str
    end: int = 0       # offset just after the target address: what follows is padding or worse
    hlen: int = 6      # hardware and protocol address lengths the header gives
    plen: int = 4


def decode_arp(data: bytes, offset: int = 0) -> ARP:
    n = len(data)
    if n - offset < 8:
        raise DecodeError("ARP header truncated", offset)
    htype, ptype, hlen, plen, op = struct.unpack_from("!HHBBH", data, offset)
    pos = offset + 8
    need = 2 * (hlen + plen)
    if n - pos < need:
        raise DecodeError(f"ARP addresses truncated (need {need} bytes)", pos)
    sha = data[pos:pos + hlen]
    spa = data[pos + hlen:pos + hlen + plen]
    tha = data[pos + hlen + plen:pos + 2 * hlen + plen]
    tpa = data[pos + 2 * hlen + plen:pos + need]
    fmt = _ip4 if (ptype == ETH_IPV4 and plen == 4) else (lambda b: b.hex())
    return ARP(htype, ptype, op, _mac(sha), fmt(spa), _mac(tha), fmt(tpa), pos + need, hlen, plen)


# ---------------------------------------------------------------------------------------------
# Network layer


@dataclass(frozen=True)
class IPv4:
    src: str
    dst: str
    proto: int
    ttl: int
    header_len: int
    total_length: int
    ident: int
    dont_fragment: bool
    more_fragments: bool
    fragment_offset: int            # in bytes
    options: tuple[tuple[int, bytes], ...]
    payload_offset: int
    payload_end: int                # min(header's total length, data available)
    truncated: bool                 # total length claims more than the data holds

    @property
    def is_fragment(self) -> bool:
        return self.more_fragments or self.fragment_offset > 0

    @property
    def source_route(self) -> tuple[str, ...]:
        """The hops a loose or strict source-route option (131, 137) sends the packet on to: the
        header's destination is then only the next hop, the last of these the real one."""
        return tuple(_ip4(v[i:i + 4]) for t, v in self.options if t in (131, 137)
                     for i in range(1, len(v) - 3, 4))


def _ipv4_options(data: bytes, start: int, end: int) -> tuple[tuple[int, bytes], ...]:
    """The options as (type, value); no-ops are left out. Bytes after the end-of-list marker
    should be zero: when they are not, they are kept as a last (0, bytes) entry, as they are data."""
    opts: list[tuple[int, bytes]] = []
    pos = start
    while pos < end:
        t = data[pos]
        if t == 0:  # end of option list
            rest = bytes(data[pos + 1:end])
            if rest.strip(b"\0"):
                opts.append((0, rest))
            break
        if t == 1:  # no-op
            pos += 1
            continue
        if pos + 1 >= end:
            raise DecodeError(f"IPv4 option {t} length missing", pos)
        length = data[pos + 1]
        if length < 2 or pos + length > end:
            raise DecodeError(f"IPv4 option {t} length {length} invalid", pos + 1)
        opts.append((t, bytes(data[pos + 2:pos + length])))
        pos += length
    return tuple(opts)


def decode_ipv4(data: bytes, offset: int = 0) -> IPv4:
    n = len(data)
    if n - offset < 20:
        raise DecodeError("IPv4 header truncated", offset)
    vihl = data[offset]
    if vihl >> 4 != 4:
        raise DecodeError(f"IPv4 version field is {vihl >> 4}", offset)
    hl = (vihl & 0x0F) * 4
    if hl < 20:
        raise DecodeError(f"IPv4 header length {hl} is below 20", offset)
    if n - offset < hl:
        raise DecodeError(f"IPv4 header truncated (options need {hl} bytes)", offset)
    total, ident, frag, ttl, proto = struct.unpack_from("!HHHBB", data, offset + 2)
    if total < hl:
        raise DecodeError(f"IPv4 total length {total} is shorter than its header ({hl})",
                          offset + 2)
    if frag & 0x8000:
        raise DecodeError("IPv4 reserved flag set", offset + 6)
    options = _ipv4_options(data, offset + 20, offset + hl) if hl > 20 else ()
    end = offset + total
    return IPv4(
        src=_ip4(data[offset + 12:offset + 16]), dst=_ip4(data[offset + 16:offset + 20]),
        proto=proto, ttl=ttl, header_len=hl, total_length=total, ident=ident,
        dont_fragment=bool(frag & 0x4000), more_fragments=bool(frag & 0x2000),
        fragment_offset=(frag & 0x1FFF) * 8, options=options,
        payload_offset=offset + hl, payload_end=min(end, n), truncated=end > n,
    )


@dataclass(frozen=True)
class IPv6Fragment:
    offset: int          # in bytes
    more: bool
    ident: int


@dataclass(frozen=True)
class IPv6:
    src: str
    dst: str
    next_header: int                      # the upper-layer protocol after the extension headers
    hop_limit: int
    flow_label: int
    payload_length: int
    extension_headers: tuple[int, ...]    # in order
    fragment: IPv6Fragment | None
    payload_offset: int
    payload_end: int
    truncated: bool
    # TLV options of the hop-by-hop and destination-options headers, in order (Pad1 as (0, b""))
    ext_options: tuple[tuple[int, bytes], ...] = ()
    # The addresses a routing header still sends the packet on to (segments left > 0): the
    # header's destination is then only the next hop.
    source_route: tuple[str, ...] = ()

    @property
    def is_fragment(self) -> bool:
        return self.fragment is not None and (self.fragment.more or self.fragment.offset > 0)


def _tlv_options(data: bytes, pos: int, end: int) -> list[tuple[int, bytes]]:
    """The options of a hop-by-hop or destination-options header body (RFC 8200 4.2)."""
    out: list[tuple[int, bytes]] = []
    while pos < end:  # each option consumes >= 1 byte
        t = data[pos]
        if t == 0:
            out.append((0, b""))
            pos += 1
            continue
        if end - pos < 2 or pos + 2 + data[pos + 1] > end:
            raise DecodeError(f"IPv6 option {t} runs past its header", pos)
        out.append((t, bytes(data[pos + 2:pos + 2 + data[pos + 1]])))
        pos += 2 + data[pos + 1]
    return out


def _route_hops(data: bytes, pos: int, hlen: int) -> list[str]:
    """The addresses still ahead in a routing header: type 0 and segment routing (4) list
    16-byte addresses after 8 bytes; the ones left are the last `segments left` (type 0) or
    the first (type 4, whose list is in reverse order); type 2 carries the home address."""
    rtype, left = data[pos + 2], data[pos + 3]
    if not left:
        return []
    addrs = [_ip6(data[i:i + 16]) for i in range(pos + 8, pos + hlen - 15, 16)]
    if rtype == 4:
        return addrs[:left] or ["(routing header type 4 without addresses)"]
    return addrs[-left:] if addrs else [f"(routing header type {rtype}, {left} segments left)"]


_IPV6_GENERIC_EXT = (0, 43, 60, 135, 139, 140, 253, 254)


def decode_ipv6(data: bytes, offset: int = 0) -> IPv6:
    n = len(data)
    if n - offset < 40:
        raise DecodeError("IPv6 header truncated", offset)
    vtf, plen, nxt, hlim = struct.unpack_from("!IHBB", data, offset)
    if vtf >> 28 != 6:
        raise DecodeError(f"IPv6 version field is {vtf >> 28}", offset)
    src = _ip6(data[offset + 8:offset + 24])
    dst = _ip6(data[offset + 24:offset + 40])
    start = offset + 40
    # Payload length 0 means a jumbogram (hop-by-hop option); take what was captured.
    end = start + plen if plen else n
    truncated = end > n
    end = min(end, n)
    pos = start
    exts: list[int] = []
    options: list[tuple[int, bytes]] = []
    route: list[str] = []
    frag: IPv6Fragment | None = None
    while True:
        if nxt in _IPV6_GENERIC_EXT or nxt == 44 or nxt == 51:
            if len(exts) >= _MAX_IPV6_EXT_HEADERS:
                raise DecodeError(f"more than {_MAX_IPV6_EXT_HEADERS} IPv6 extension headers", pos)
            if end - pos < 8:
                raise DecodeError(f"IPv6 extension header {nxt} truncated", pos)
            exts.append(nxt)
            if nxt == 44:
                following = data[pos]
                fo = int.from_bytes(data[pos + 2:pos + 4], "big")
                frag = IPv6Fragment(offset=fo & 0xFFF8, more=bool(fo & 1),
                                    ident=int.from_bytes(data[pos + 4:pos + 8], "big"))
                pos += 8
                nxt = following
                if frag.offset:
                    # A later fragment: what follows is the middle of the payload, not a header.
                    break
                continue
            hlen = (data[pos + 1] + 2) * 4 if nxt == 51 else (data[pos + 1] + 1) * 8
            if end - pos < hlen:
                raise DecodeError(f"IPv6 extension header {nxt} length {hlen} runs past the packet",
                                  pos + 1)
            if nxt in (0, 60):
                options += _tlv_options(data, pos + 2, pos + hlen)
            elif nxt == 43:
                route += _route_hops(data, pos, hlen)
            nxt = data[pos]
            pos += hlen
            continue
        break
    return IPv6(src, dst, nxt, hlim, vtf & 0xFFFFF, plen, tuple(exts), frag, pos, end, truncated,
                tuple(options), tuple(route))


# ---------------------------------------------------------------------------------------------
# Transport layer


@dataclass(frozen=True)
class UDP:
    sport: int
    dport: int
    length: int
    payload_offset: int
    payload_end: int


def decode_udp(data: bytes, offset: int = 0, end: int | None = None) -> UDP:
    end = len(data) if end is None else min(end, len(data))
    if end - offset < 8:
        raise DecodeError("UDP header truncated", offset)
    sport, dport, length = struct.unpack_from("!HHH", data, offset)
    if length and length < 8:
        raise DecodeError(f"UDP length {length} is shorter than its header", offset + 4)
    # Length 0 is legal for UDP over IPv6 jumbograms; otherwise trust the IP layer's end.
    pend = min(end, offset + length) if length else end
    return UDP(sport, dport, length, offset + 8, pend)


@dataclass(frozen=True)
class TCP:
    sport: int
    dport: int
    seq: int
    ack: int
    flags: int
    window: int
    header_len: int
    payload_offset: int
    payload_end: int

    @property
    def syn(self) -> bool:
        return bool(self.flags & 0x02)

    @property
    def ack_flag(self) -> bool:
        return bool(self.flags & 0x10)

    @property
    def fin(self) -> bool:
        return bool(self.flags & 0x01)

    @property
    def rst(self) -> bool:
        return bool(self.flags & 0x04)


def decode_tcp(data: bytes, offset: int = 0, end: int | None = None) -> TCP:
    end = len(data) if end is None else min(end, len(data))
    if end - offset < 20:
        raise DecodeError("TCP header truncated", offset)
    sport, dport, seq, ack, off_flags, window = struct.unpack_from("!HHIIHH", data, offset)
    hl = (off_flags >> 12) * 4
    if hl < 20:
        raise DecodeError(f"TCP data offset {hl} is below 20", offset + 12)
    if end - offset < hl:
        raise DecodeError(f"TCP options truncated (header is {hl} bytes)", offset)
    return TCP(sport, dport, seq, ack, off_flags & 0x1FF, window, hl, offset + hl, end)


@dataclass(frozen=True)
class ICMP:
    type: int
    code: int
    ident: int | None     # echo request / reply only
    seq: int | None
    payload_offset: int   # after the 8-byte header
    payload_end: int

    @property
    def is_echo(self) -> bool:
        return self.type in (0, 8)


def decode_icmp(data: bytes, offset: int = 0, end: int | None = None) -> ICMP:
    end = len(data) if end is None else min(end, len(data))
    if end - offset < 8:
        raise DecodeError("ICMP header truncated", offset)
    t, c = data[offset], data[offset + 1]
    ident = seq = None
    if t in (0, 8):
        ident, seq = struct.unpack_from("!HH", data, offset + 4)
    return ICMP(t, c, ident, seq, offset + 8, end)


@dataclass(frozen=True)
class ICMPv6:
    type: int
    code: int
    ident: int | None                        # echo only
    seq: int | None
    target: str | None                       # neighbour solicitation/advertisement, redirect
    options: tuple[tuple[int, bytes], ...]   # neighbour-discovery options (type, value)
    payload_offset: int                      # after the structure the type defines (echo: its data)
    payload_end: int
    groups: tuple["GroupRecord", ...] = ()   # MLD: the group of a v1 message, the records of a v2 report
    word: int = 0                            # ND: the 32-bit word after the header (reserved; NA: flags)

    @property
    def is_echo(self) -> bool:
        return self.type in (128, 129)


@dataclass(frozen=True)
class GroupRecord:
    """One multicast group an MLD or IGMP message names (v1/v2: type 0, no sources)."""
    type: int
    group: str
    sources: int
    aux_words: int


# ND message type -> length of the fixed part after the 4-byte ICMPv6 header.
_ND_FIXED = {133: 4, 134: 12, 135: 20, 136: 20, 137: 36}


def decode_icmpv6(data: bytes, offset: int = 0, end: int | None = None) -> ICMPv6:
    end = len(data) if end is None else min(end, len(data))
    if end - offset < 4:
        raise DecodeError("ICMPv6 header truncated", offset)
    t, c = data[offset], data[offset + 1]
    ident = seq = None
    target = None
    options: tuple[tuple[int, bytes], ...] = ()
    if t in (128, 129):
        if end - offset < 8:
            raise DecodeError("ICMPv6 echo header truncated", offset)
        ident, seq = struct.unpack_from("!HH", data, offset + 4)
        return ICMPv6(t, c, ident, seq, None, (), offset + 8, end)
    if t in _ND_FIXED:
        fixed = _ND_FIXED[t]
        body = offset + 4
        if end - body < fixed:
            raise DecodeError(f"ICMPv6 neighbour-discovery message {t} truncated", offset)
        if t in (135, 136, 137):
            target = _ip6(data[body + 4:body + 20])
        opts: list[tuple[int, bytes]] = []
        pos = body + fixed
        while pos < end:  # each option is at least 8 bytes, so this ends
            if end - pos < 2:
                raise DecodeError("ND option truncated", pos)
            otype, olen = data[pos], data[pos + 1] * 8
            if olen == 0:
                raise DecodeError(f"ND option {otype} has length 0", pos + 1)
            if pos + olen > end:
                raise DecodeError(f"ND option {otype} runs past the message", pos + 1)
            opts.append((otype, bytes(data[pos + 2:pos + olen])))
            pos += olen
        options = tuple(opts)
        word = 0 if t == 134 else int.from_bytes(data[body:body + 4], "big")
        return ICMPv6(t, c, None, None, target, options, end, end, word=word)
    if t in (130, 131, 132):  # MLDv1 query, report, done: delay, reserved, the group
        if end - offset < 24:
            raise DecodeError(f"MLD message {t} truncated", offset)
        group = GroupRecord(0, _ip6(data[offset + 8:offset + 24]), 0, 0)
        return ICMPv6(t, c, None, None, None, (), offset + 24, end, (group,))
    if t == 143:  # MLDv2 report: reserved, number of records, the records
        if end - offset < 8:
            raise DecodeError("MLDv2 report truncated", offset)
        count = int.from_bytes(data[offset + 6:offset + 8], "big")
        groups, pos = _group_records(data, offset + 8, end, count, 16, _ip6, "MLDv2")
        return ICMPv6(t, c, None, None, None, (), pos, end, groups)
    return ICMPv6(t, c, None, None, None, (), offset + min(8, end - offset), end)


def _group_records(data: bytes, pos: int, end: int, count: int, alen: int, fmt,
                   what: str) -> tuple[tuple[GroupRecord, ...], int]:
    """The multicast address records of an MLDv2 or IGMPv3 report (RFC 3810 5.2, RFC 3376 4.2)."""
    out = []
    for _ in range(count):  # each record takes >= 4 + alen bytes, so a bogus count fails fast
        if end - pos < 4 + alen:
            raise DecodeError(f"{what} group record truncated", pos)
        rtype, aux, nsrc = data[pos], data[pos + 1], int.from_bytes(data[pos + 2:pos + 4], "big")
        size = 4 + alen + nsrc * alen + aux * 4
        if end - pos < size:
            raise DecodeError(f"{what} group record runs past the message", pos)
        out.append(GroupRecord(rtype, fmt(data[pos + 4:pos + 4 + alen]), nsrc, aux))
        pos += size
    return tuple(out), pos


@dataclass(frozen=True)
class IGMP:
    type: int
    group: str | None
    groups: tuple[GroupRecord, ...] = ()   # v3 report: its records
    payload_offset: int = 0                # after the structure the type defines
    payload_end: int = 0


def decode_igmp(data: bytes, offset: int = 0, end: int | None = None) -> IGMP:
    end = len(data) if end is None else min(end, len(data))
    if end - offset < 8:
        raise DecodeError("IGMP message truncated", offset)
    t = data[offset]
    if t == 0x22:  # v3 report: reserved, number of records, the records
        count = int.from_bytes(data[offset + 6:offset + 8], "big")
        groups, pos = _group_records(data, offset + 8, end, count, 4, _ip4, "IGMPv3")
        return IGMP(t, None, groups, pos, end)
    return IGMP(t, _ip4(data[offset + 4:offset + 8]), (), offset + 8, end)


# ---------------------------------------------------------------------------------------------
# DNS


_MAX_NAME = 255
_PRINTABLE = frozenset(range(0x21, 0x7F)) - {ord("."), ord("\\")}


def format_dns_name(labels: list[bytes] | tuple[bytes, ...]) -> str:
    """Presentation form: printable ASCII as-is, '.' and '\\' escaped, other bytes as \\DDD."""
    if not labels:
        return "."
    out = []
    for lab in labels:
        if all(b in _PRINTABLE for b in lab):
            out.append(lab.decode("ascii"))
        else:
            out.append("".join(chr(b) if b in _PRINTABLE else
                               ("\\" + chr(b) if b in (0x2E, 0x5C) else f"\\{b:03d}")
                               for b in lab))
    return ".".join(out)


def _read_name(msg: bytes, pos: int) -> tuple[str, int]:
    """Decode a possibly compressed name at `pos`; return (name, position after it)."""
    n = len(msg)
    labels: list[bytes] = []
    total = 0
    after: int | None = None
    floor = pos  # a pointer must land strictly before where the current run of labels began
    while True:
        if pos >= n:
            raise IncompleteError("DNS name runs past the end of the message", pos)
        length = msg[pos]
        kind = length & 0xC0
        if kind == 0xC0:
            if pos + 1 >= n:
                raise IncompleteError("DNS compression pointer truncated", pos)
            target = ((length & 0x3F) << 8) | msg[pos + 1]
            if target >= floor:
                raise DecodeError(f"DNS compression pointer to {target} does not point backwards",
                                  pos)
            if after is None:
                after = pos + 2
            pos = floor = target
            continue
        if kind:
            raise DecodeError(f"DNS label type 0x{kind:02x} unsupported", pos)
        if length == 0:
            pos += 1
            break
        if pos + 1 + length > n:
            raise IncompleteError("DNS label runs past the end of the message", pos)
        total += length + 1
        if total > _MAX_NAME:
            raise DecodeError("DNS name longer than 255 bytes", pos)
        labels.append(msg[pos + 1:pos + 1 + length])
        pos += 1 + length
    return format_dns_name(labels), (after if after is not None else pos)


@dataclass(frozen=True)
class DnsQuestion:
    name: str
    qtype: int
    qclass: int


@dataclass(frozen=True)
class DnsRecord:
    name: str
    rtype: int
    rclass: int
    ttl: int
    # A/AAAA: the address; CNAME/NS/PTR/DNAME/MX: the name; TXT: text; others: hex of rdata.
    data: str


@dataclass(frozen=True)
class DnsMessage:
    ident: int
    is_response: bool
    opcode: int
    rcode: int
    flags: int
    questions: tuple[DnsQuestion, ...]
    answers: tuple[DnsRecord, ...]
    authorities: tuple[DnsRecord, ...]
    additionals: tuple[DnsRecord, ...]
    edns: tuple[tuple[int, bytes], ...] = ()   # the options of its OPT record(s), (code, data)
    trailing: int = 0                          # bytes after the last record: not DNS


_NAME_RDATA = (2, 5, 12, 39)  # NS, CNAME, PTR, DNAME
NAME_RDATA_TYPES = frozenset(_NAME_RDATA + (15,))   # record types whose data is a name (and MX)


def _rdata(msg: bytes, rtype: int, start: int, rdlen: int) -> str:
    end = start + rdlen
    if rtype == 1:
        if rdlen != 4:
            raise DecodeError(f"DNS A record with {rdlen}-byte data", start)
        return _ip4(msg[start:end])
    if rtype == 28:
        if rdlen != 16:
            raise DecodeError(f"DNS AAAA record with {rdlen}-byte data", start)
        return _ip6(msg[start:end])
    if rtype in _NAME_RDATA or rtype == 15:
        npos = start + 2 if rtype == 15 else start
        name, after = _read_name(msg[:end], npos)
        if after != end:
            raise DecodeError("DNS record data length disagrees with its name", start)
        return name
    if rtype == 16:  # TXT: character-strings
        parts = []
        pos = start
        while pos < end:
            ln = msg[pos]
            if pos + 1 + ln > end:
                raise DecodeError("DNS TXT string runs past its record", pos)
            parts.append(msg[pos + 1:pos + 1 + ln].decode("latin-1"))
            pos += 1 + ln
        return " ".join(parts)
    return msg[start:min(end, start + 64)].hex()


def _edns_options(msg: bytes, pos: int, end: int) -> list[tuple[int, bytes]]:
    out = []
    while pos < end:  # each option consumes >= 4 bytes
        if end - pos < 4:
            raise DecodeError("EDNS option header truncated", pos)
        code, ln = struct.unpack_from("!HH", msg, pos)
        if pos + 4 + ln > end:
            raise DecodeError(f"EDNS option {code} runs past its record", pos)
        out.append((code, bytes(msg[pos + 4:pos + 4 + ln])))
        pos += 4 + ln
    return out


def _read_records(msg: bytes, pos: int, count: int,
                  edns: list[tuple[int, bytes]] | None = None) -> tuple[tuple[DnsRecord, ...], int]:
    n = len(msg)
    out = []
    for _ in range(count):  # each record takes >= 11 bytes, so a bogus count fails fast
        name, pos = _read_name(msg, pos)
        if n - pos < 10:
            raise IncompleteError("DNS resource record header truncated", pos)
        rtype, rclass, ttl, rdlen = struct.unpack_from("!HHIH", msg, pos)
        pos += 10
        if n - pos < rdlen:
            raise IncompleteError(f"DNS record data truncated (need {rdlen} bytes)", pos)
        if rtype == 41:  # OPT pseudo-record: rdata is EDNS options, collected in `edns`
            data = ""
            if edns is not None:
                edns += _edns_options(msg, pos, pos + rdlen)
        else:
            data = _rdata(msg, rtype, pos, rdlen)
        out.append(DnsRecord(name, rtype, rclass, ttl, data))
        pos += rdlen
    return tuple(out), pos


def decode_dns(msg: bytes) -> DnsMessage:
    """Decode one DNS message (as carried by UDP; see decode_dns_tcp for the TCP framing)."""
    msg = bytes(msg)
    if len(msg) < 12:
        raise IncompleteError("DNS header truncated", 0)
    ident, flags, qd, an, ns, ar = struct.unpack_from("!HHHHHH", msg, 0)
    pos = 12
    questions = []
    for _ in range(qd):
        name, pos = _read_name(msg, pos)
        if len(msg) - pos < 4:
            raise IncompleteError("DNS question truncated", pos)
        qtype, qclass = struct.unpack_from("!HH", msg, pos)
        pos += 4
        questions.append(DnsQuestion(name, qtype, qclass))
    edns: list[tuple[int, bytes]] = []
    answers, pos = _read_records(msg, pos, an, edns)
    auth, pos = _read_records(msg, pos, ns, edns)
    addl, pos = _read_records(msg, pos, ar, edns)
    return DnsMessage(ident, bool(flags & 0x8000), (flags >> 11) & 0x0F, flags & 0x0F, flags,
                      tuple(questions), answers, auth, addl, tuple(edns), len(msg) - pos)


def decode_dns_tcp(data: bytes) -> tuple[DnsMessage, ...]:
    """Decode the length-prefixed DNS messages in a TCP payload (each must be complete)."""
    data = bytes(data)
    out = []
    pos = 0
    while pos < len(data):  # each iteration consumes >= 2 bytes
        if len(data) - pos < 2:
            raise IncompleteError("DNS-over-TCP length prefix truncated", pos)
        ln = int.from_bytes(data[pos:pos + 2], "big")
        if len(data) - pos - 2 < ln:
            raise IncompleteError(f"DNS-over-TCP message truncated (need {ln} bytes)", pos)
        try:
            out.append(decode_dns(data[pos + 2:pos + 2 + ln]))
        except IncompleteError as e:
            # The frame said how long the message is, so a short message is malformed.
            raise DecodeError(e.reason, pos + 2 + e.offset) from None
        except DecodeError as e:
            raise DecodeError(e.reason, pos + 2 + e.offset) from None
        pos += 2 + ln
    return tuple(out)


# ---------------------------------------------------------------------------------------------
# TLS ClientHello


@dataclass(frozen=True)
class TlsClientHello:
    record_version: int
    client_version: int
    sni: str | None
    alpn: tuple[str, ...]
    ech: bool   # an encrypted_client_hello extension: the real name is hidden


_MAX_HANDSHAKE = 64 * 1024


def _sni_name(raw: bytes) -> str:
    if all(0x21 <= b < 0x7F for b in raw):
        return raw.decode("ascii")
    return "".join(chr(b) if 0x21 <= b < 0x7F else f"\\{b:03d}" for b in raw)


def decode_tls_client_hello(data: bytes) -> TlsClientHello:
    """Decode the ClientHello at the start of a TLS stream (the client's first bytes).

    The handshake message may span several records; if the data stops first, IncompleteError.
    """
    data = bytes(data)
    n = len(data)
    if n < 5:
        raise IncompleteError("TLS record header truncated", 0)
    if data[0] != 0x16:
        raise DecodeError(f"TLS record type {data[0]} is not handshake", 0)
    record_version = int.from_bytes(data[1:3], "big")
    if data[1] != 3:
        raise DecodeError(f"TLS record version 0x{record_version:04x} unknown", 1)
    # Gather handshake bytes from consecutive handshake records.
    hs = bytearray()
    pos = 0
    need: int | None = None
    while need is None or len(hs) < need:
        if pos >= n:
            raise IncompleteError("TLS handshake continues beyond the data", pos)
        if n - pos < 5:
            raise IncompleteError("TLS record header truncated", pos)
        if data[pos] != 0x16 or data[pos + 1] != 3:
            raise DecodeError("TLS ClientHello interrupted by a non-handshake record", pos)
        rlen = int.from_bytes(data[pos + 3:pos + 5], "big")
        if rlen == 0 or rlen > 16384 + 2048:
            raise DecodeError(f"TLS record length {rlen} invalid", pos + 3)
        body_end = pos + 5 + rlen
        hs += data[pos + 5:min(body_end, n)]
        if need is None and len(hs) >= 4:
            if hs[0] != 1:
                raise DecodeError(f"TLS handshake type {hs[0]} is not ClientHello", 5)
            need = 4 + int.from_bytes(hs[1:4], "big")
            if need > _MAX_HANDSHAKE:
                raise DecodeError(f"TLS ClientHello length {need - 4} implausible", 6)
        if body_end > n and (need is None or len(hs) < need):
            raise IncompleteError("TLS record continues beyond the data", pos)
        pos = body_end
    body = bytes(hs[4:need])
    return _client_hello_body(body, record_version)


def _client_hello_body(b: bytes, record_version: int) -> TlsClientHello:
    # Offsets in errors are within the handshake body (after the 4-byte handshake header).
    n = len(b)
    if n < 35:
        raise DecodeError("TLS ClientHello too short for version and random", 0)
    client_version = int.from_bytes(b[0:2], "big")
    pos = 34
    sid = b[pos]
    pos += 1 + sid
    if sid > 32 or pos + 2 > n:
        raise DecodeError("TLS session id invalid", 34)
    cs = int.from_bytes(b[pos:pos + 2], "big")
    if cs % 2 or pos + 2 + cs > n:
        raise DecodeError(f"TLS cipher-suite list length {cs} invalid", pos)
    pos += 2 + cs
    if pos >= n:
        raise DecodeError("TLS compression methods missing", pos)
    cm = b[pos]
    pos += 1 + cm
    if pos > n:
        raise DecodeError("TLS compression methods truncated", pos - 1 - cm)
    sni: str | None = None
    alpn: list[str] = []
    ech = False
    if pos == n:  # no extensions at all (old clients)
        return TlsClientHello(record_version, client_version, None, (), False)
    if n - pos < 2:
        raise DecodeError("TLS extensions length truncated", pos)
    ext_end = pos + 2 + int.from_bytes(b[pos:pos + 2], "big")
    if ext_end > n:
        raise DecodeError("TLS extensions run past the ClientHello", pos)
    pos += 2
    while pos < ext_end:  # each extension consumes >= 4 bytes
        if ext_end - pos < 4:
            raise DecodeError("TLS extension header truncated", pos)
        etype = int.from_bytes(b[pos:pos + 2], "big")
        elen = int.from_bytes(b[pos + 2:pos + 4], "big")
        estart = pos + 4
        eend = estart + elen
        if eend > ext_end:
            raise DecodeError(f"TLS extension {etype} runs past the extensions", pos)
        if etype == 0 and elen:
            if elen < 2 or 2 + int.from_bytes(b[estart:estart + 2], "big") != elen:
                raise DecodeError("TLS server_name list length invalid", estart)
            p = estart + 2
            while p < eend:
                if eend - p < 3:
                    raise DecodeError("TLS server_name entry truncated", p)
                ntype = b[p]
                nlen = int.from_bytes(b[p + 1:p + 3], "big")
                if p + 3 + nlen > eend:
                    raise DecodeError("TLS server_name runs past its extension", p)
                if ntype == 0 and sni is None:
                    sni = _sni_name(b[p + 3:p + 3 + nlen])
                p += 3 + nlen
        elif etype == 16 and elen:
            if elen < 2 or 2 + int.from_bytes(b[estart:estart + 2], "big") != elen:
                raise DecodeError("TLS ALPN list length invalid", estart)
            p = estart + 2
            while p < eend:
                ln = b[p]
                if ln == 0 or p + 1 + ln > eend:
                    raise DecodeError("TLS ALPN protocol name invalid", p)
                alpn.append(b[p + 1:p + 1 + ln].decode("latin-1"))
                p += 1 + ln
        elif etype == 0xFE0D:
            ech = True
        pos = eend
    return TlsClientHello(record_version, client_version, sni, tuple(alpn), ech)


# ---------------------------------------------------------------------------------------------
# HTTP/1.x request


@dataclass(frozen=True)
class HttpRequest:
    method: str
    target: str
    version: str
    host: str | None           # Host header, or the authority of an absolute-form / CONNECT target
    headers_complete: bool     # the blank line ending the headers was seen


_MAX_HTTP_HEAD = 64 * 1024
_MAX_HTTP_HEADERS = 200
_TOKEN = frozenset(b"!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")


def _authority_host(authority: str) -> str | None:
    a = authority.rsplit("@", 1)[-1]
    if a.startswith("["):
        end = a.find("]")
        return a[1:end] if end > 1 else None
    h = a.split(":", 1)[0]
    return h or None


def decode_http_request(data: bytes) -> HttpRequest:
    data = bytes(data[:_MAX_HTTP_HEAD])
    eol = data.find(b"\r\n")
    if eol < 0:
        sp = data.find(b" ")
        if sp < 0 and len(data) < 32 and all(c in _TOKEN for c in data):
            raise IncompleteError("HTTP request line incomplete", len(data))
        if sp > 0 and all(c in _TOKEN for c in data[:sp]) and len(data) < _MAX_HTTP_HEAD:
            raise IncompleteError("HTTP request line incomplete", len(data))
        raise DecodeError("not an HTTP request line", 0)
    line = data[:eol]
    parts = line.split(b" ")
    if len(parts) != 3:
        raise DecodeError("HTTP request line does not have three parts", 0)
    method, target, version = parts
    if not method or not all(c in _TOKEN for c in method):
        raise DecodeError("HTTP method is not a token", 0)
    if not (version.startswith(b"HTTP/1.") and len(version) == 8 and version[7:8].isdigit()):
        raise DecodeError(f"HTTP version {version[:16]!r} is not HTTP/1.x",
                          len(method) + len(target) + 2)
    if not target or any(c <= 0x20 or c >= 0x7F for c in target):
        raise DecodeError("HTTP request target invalid", len(method) + 1)
    m = method.decode("ascii")
    t = target.decode("ascii")
    host: str | None = None
    if m == "CONNECT":
        host = _authority_host(t)
    elif "://" in t[:16]:
        host = _authority_host(t.split("://", 1)[1].split("/", 1)[0])
    pos = eol + 2
    complete = False
    for _ in range(_MAX_HTTP_HEADERS):
        e = data.find(b"\r\n", pos)
        if e < 0:
            break
        if e == pos:
            complete = True
            break
        hline = data[pos:e]
        colon = hline.find(b":")
        if colon <= 0:
            raise DecodeError("HTTP header line without a name", pos)
        if hline[:colon].lower() == b"host" and host is None:
            value = hline[colon + 1:].strip()
            if any(c < 0x20 or c >= 0x7F for c in value):
                raise DecodeError("HTTP Host header has non-ASCII bytes", pos)
            host = _authority_host(value.decode("ascii"))
        pos = e + 2
    return HttpRequest(m, t, version.decode("ascii"), host, complete)
