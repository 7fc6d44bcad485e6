"""Protocol decoders (harness.formats.netproto): hand-built packets, malformed ones, fuzzing."""

from __future__ import annotations

import socket
import struct

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from harness.formats import netproto as npr
from harness.formats.netproto import DecodeError, IncompleteError

BOARD_MAC = bytes.fromhex("020000000002")
GW_MAC = bytes.fromhex("020000000001")


def eth(payload: bytes, ethertype: int = 0x0800, vlans: tuple[int, ...] = (),
        src: bytes = BOARD_MAC, dst: bytes = GW_MAC) -> bytes:
    tags = b"".join(struct.pack("!HH", 0x8100, v) for v in vlans)
    return dst + src + tags + struct.pack("!H", ethertype) + payload


def ipv4(src: str, dst: str, proto: int, payload: bytes, *, ttl: int = 64, ident: int = 1,
         flags_frag: int = 0, options: bytes = b"", total: int | None = None) -> bytes:
    hl = 20 + len(options)
    assert hl % 4 == 0
    return struct.pack("!BBHHHBBH4s4s", 0x40 | hl // 4, 0, hl + len(payload) if total is None
                       else total, ident, flags_frag, ttl, proto, 0, socket.inet_aton(src),
                       socket.inet_aton(dst)) + options + payload


def ipv6(src: str, dst: str, nh: int, payload: bytes, *, hlim: int = 64, plen: int | None = None) -> bytes:
    return struct.pack("!IHBB", 6 << 28, len(payload) if plen is None else plen, nh, hlim) + \
        socket.inet_pton(socket.AF_INET6, src) + socket.inet_pton(socket.AF_INET6, dst) + payload


def udp(sport: int, dport: int, payload: bytes) -> bytes:
    return struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload


def tcp(sport: int, dport: int, flags: int = 0x18, payload: bytes = b"", seq: int = 1000,
        ack: int = 0, options: bytes = b"") -> bytes:
    off = (20 + len(options)) // 4
    return struct.pack("!HHIIBBHHH", sport, dport, seq, ack, off << 4, flags, 65535, 0, 0) + \
        options + payload


def icmp_echo(type_: int, ident: int, seq: int, payload: bytes) -> bytes:
    return struct.pack("!BBHHH", type_, 0, 0, ident, seq) + payload


def dns_name(name: str) -> bytes:
    return b"".join(bytes([len(p)]) + p.encode() for p in name.split(".") if p) + b"\0"


def dns_query(ident: int, name: str, qtype: int = 1) -> bytes:
    return struct.pack("!HHHHHH", ident, 0x0100, 1, 0, 0, 0) + dns_name(name) + \
        struct.pack("!HH", qtype, 1)


def client_hello(sni: str | None, alpn: tuple[str, ...] = (), ech: bool = False) -> bytes:
    exts = b""
    if sni is not None:
        n = sni.encode()
        exts += struct.pack("!HHHBH", 0, len(n) + 5, len(n) + 3, 0, len(n)) + n
    if alpn:
        lst = b"".join(bytes([len(a)]) + a.encode() for a in alpn)
        exts += struct.pack("!HHH", 16, len(lst) + 2, len(lst)) + lst
    if ech:
        exts += struct.pack("!HH", 0xFE0D, 4) + b"\0\0\0\0"
    body = (b"\x03\x03" + bytes(32) + b"\x20" + bytes(32) + struct.pack("!H", 4)
            + b"\x13\x01\x13\x02" + b"\x01\x00" + struct.pack("!H", len(exts)) + exts)
    hs = b"\x01" + len(body).to_bytes(3, "big") + body
    return b"\x16\x03\x01" + struct.pack("!H", len(hs)) + hs


# --------------------------------------------------------------------------------------------
# Link layer


def test_ethernet_plain():
    e = npr.decode_ethernet(eth(b"x" * 46))
    assert (e.dst, e.src, e.ethertype, e.vlans, e.header_len, e.llc) == \
           ("02:00:00:00:00:01", "02:00:00:00:00:02", 0x0800, (), 14, False)


def test_ethernet_8021q_and_qinq_tags():
    e = npr.decode_ethernet(eth(b"x" * 46, 0x86DD, vlans=(0x2064, 7)))
    assert (e.ethertype, e.vlans, e.header_len) == (0x86DD, (0x064, 7), 22)


def test_ethernet_too_many_vlan_tags_rejected():
    with pytest.raises(DecodeError, match="more than 8 VLAN tags"):
        npr.decode_ethernet(eth(b"", vlans=tuple(range(9))))


def test_ethernet_8023_length_field_marked_llc():
    e = npr.decode_ethernet(eth(b"\x42\x42\x03" + bytes(40), 43))
    assert e.llc and e.ethertype == 43


def test_ethernet_truncated_header_offset():
    with pytest.raises(DecodeError) as ei:
        npr.decode_ethernet(b"\x00" * 13)
    assert ei.value.offset == 0 and "Ethernet header truncated" in str(ei.value)
    with pytest.raises(DecodeError, match="VLAN tag truncated at offset 12"):
        npr.decode_ethernet(GW_MAC + BOARD_MAC + b"\x81\x00\x00")


def test_linux_cooked_capture_v1_and_v2():
    sll = struct.pack("!HHH", 4, 1, 6) + BOARD_MAC + b"\0\0" + struct.pack("!H", 0x0800)
    s = npr.decode_linux_sll(sll + b"x")
    assert (s.packet_type, s.address, s.protocol, s.header_len) == (4, "02:00:00:00:00:02", 0x0800, 16)
    sll2 = struct.pack("!HHIHBB", 0x86DD, 0, 2, 1, 4, 6) + BOARD_MAC + b"\0\0"
    s2 = npr.decode_linux_sll2(sll2)
    assert (s2.protocol, s2.packet_type, s2.address, s2.header_len) == (0x86DD, 4, "02:00:00:00:00:02", 20)


def test_arp_request_decoded():
    body = struct.pack("!HHBBH", 1, 0x0800, 6, 4, 1) + BOARD_MAC + socket.inet_aton("10.0.0.2") + \
        bytes(6) + socket.inet_aton("10.0.0.1")
    a = npr.decode_arp(body)
    assert (a.op, a.sender_hw, a.sender_proto, a.target_proto) == \
           (1, "02:00:00:00:00:02", "10.0.0.2", "10.0.0.1")


def test_arp_addresses_truncated():
    with pytest.raises(DecodeError, match="ARP addresses truncated .* at offset 22"):
        npr.decode_arp(bytes(14) + struct.pack("!HHBBH", 1, 0x0800, 6, 4, 1) + bytes(10), 14)


# --------------------------------------------------------------------------------------------
# IPv4 / IPv6


def test_ipv4_header_fields_and_payload_bounds():
    pkt = ipv4("10.0.0.2", "192.0.2.10", 17, udp(1, 2, b"hi"), ttl=7, ident=99)
    ip = npr.decode_ipv4(pkt + b"\0" * 10)  # Ethernet padding beyond total length
    assert (ip.src, ip.dst, ip.proto, ip.ttl, ip.ident) == ("10.0.0.2", "192.0.2.10", 17, 7, 99)
    assert (ip.payload_offset, ip.payload_end, ip.truncated, ip.is_fragment) == (20, 30, False, False)


def test_ipv4_options_parsed():
    # Router alert, then NOP padding and end-of-list.
    ip = npr.decode_ipv4(ipv4("10.0.0.2", "224.0.0.22", 2, bytes(8),
                              options=b"\x94\x04\x00\x00" + b"\x01\x01\x01\x00"))
    assert ip.header_len == 28 and ip.options == ((0x94, b"\x00\x00"),)


def test_ipv4_option_with_bad_length_rejected_with_offset():
    with pytest.raises(DecodeError, match="IPv4 option 7 length 9 invalid at offset 35"):
        npr.decode_ipv4(b"\0" * 14 + ipv4("1.1.1.1", "2.2.2.2", 6, b"", options=b"\x07\x09\x00\x00"), 14)


def test_ipv4_fragments_flagged():
    first = npr.decode_ipv4(ipv4("1.1.1.1", "2.2.2.2", 17, bytes(16), flags_frag=0x2000))
    later = npr.decode_ipv4(ipv4("1.1.1.1", "2.2.2.2", 17, bytes(16), flags_frag=0x0003))
    assert first.is_fragment and first.more_fragments and first.fragment_offset == 0
    assert later.is_fragment and not later.more_fragments and later.fragment_offset == 24


def test_ipv4_truncated_header_reports_frame_offset():
    with pytest.raises(DecodeError) as ei:
        npr.decode_ipv4(eth(b"\x45\x00\x00"), 14)
    assert str(ei.value) == "IPv4 header truncated at offset 14"


def test_ipv4_total_length_shorter_than_header_and_bad_version():
    with pytest.raises(DecodeError, match="total length 10 is shorter"):
        npr.decode_ipv4(ipv4("1.1.1.1", "2.2.2.2", 6, b"", total=10))
    with pytest.raises(DecodeError, match="version field is 6"):
        npr.decode_ipv4(b"\x65" + bytes(19))


def test_ipv4_total_length_beyond_data_marked_truncated():
    ip = npr.decode_ipv4(ipv4("1.1.1.1", "2.2.2.2", 6, bytes(20), total=1500))
    assert ip.truncated and ip.payload_end == 40


def test_ipv6_extension_header_chain_walked():
    hop = bytes([60, 0]) + bytes(6)           # hop-by-hop, next: destination options
    dst_opts = bytes([17, 0]) + bytes(6)      # destination options, next: UDP
    ip = npr.decode_ipv6(ipv6("fe80::1", "2001:db8::5", 0, hop + dst_opts + udp(5, 6, b"x")))
    assert ip.extension_headers == (0, 60) and ip.next_header == 17
    assert ip.payload_offset == 56 and ip.src == "fe80::1" and ip.dst == "2001:db8::5"


def test_ipv6_fragment_header_first_and_later():
    first = npr.decode_ipv6(ipv6("::1", "::2", 44, bytes([17, 0, 0, 1]) + struct.pack("!I", 7) +
                                 udp(1, 2, b"")))
    assert first.fragment == npr.IPv6Fragment(0, True, 7) and first.next_header == 17
    assert first.is_fragment and first.payload_offset == 48
    later = npr.decode_ipv6(ipv6("::1", "::2", 44, bytes([17, 0, 0, 0x40]) + struct.pack("!I", 7) +
                                 b"middle of payload"))
    assert later.fragment.offset == 64 and later.payload_offset == 48


def test_ipv6_extension_header_truncated_or_too_many():
    with pytest.raises(DecodeError, match="extension header 60 length 16 runs past"):
        npr.decode_ipv6(ipv6("::1", "::2", 60, bytes([17, 1]) + bytes(6)))
    chain = b"".join(bytes([0, 0]) + bytes(6) for _ in range(17))
    with pytest.raises(DecodeError, match="more than 16 IPv6 extension headers"):
        npr.decode_ipv6(ipv6("::1", "::2", 0, chain))


def test_ipv6_header_truncated():
    with pytest.raises(DecodeError, match="IPv6 header truncated at offset 14"):
        npr.decode_ipv6(bytes(14) + b"\x60" + bytes(20), 14)


# --------------------------------------------------------------------------------------------
# Transport


def test_udp_decoded_and_length_bounds_payload():
    u = npr.decode_udp(udp(5353, 53, b"abc") + b"pad")
    assert (u.sport, u.dport, u.length, u.payload_offset, u.payload_end) == (5353, 53, 11, 8, 11)


def test_udp_length_below_header_rejected():
    with pytest.raises(DecodeError, match="UDP length 4 is shorter than its header at offset 4"):
        npr.decode_udp(struct.pack("!HHHH", 1, 2, 4, 0))


def test_tcp_flags_ports_and_payload_after_options():
    t = npr.decode_tcp(tcp(40000, 443, 0x12, b"data", seq=5, ack=9, options=b"\x02\x04\x05\xb4"))
    assert (t.sport, t.dport, t.seq, t.ack, t.header_len) == (40000, 443, 5, 9, 24)
    assert t.syn and t.ack_flag and not t.fin and not t.rst
    assert (t.payload_offset, t.payload_end) == (24, 28)


def test_tcp_bad_data_offset_and_truncated_options():
    bad = bytearray(tcp(1, 2))
    bad[12] = 0x40
    with pytest.raises(DecodeError, match="TCP data offset 16 is below 20 at offset 12"):
        npr.decode_tcp(bytes(bad))
    with pytest.raises(DecodeError, match="TCP options truncated"):
        npr.decode_tcp(tcp(1, 2, options=bytes(8))[:24])
    with pytest.raises(DecodeError, match="TCP header truncated at offset 34"):
        npr.decode_tcp(bytes(40), 34)


def test_icmp_echo_identifier_and_payload():
    c = npr.decode_icmp(icmp_echo(8, 0x1234, 7, b"x" * 56))
    assert (c.type, c.ident, c.seq, c.payload_end - c.payload_offset, c.is_echo) == (8, 0x1234, 7, 56, True)
    unreach = npr.decode_icmp(struct.pack("!BBHI", 3, 3, 0, 0) + bytes(28))
    assert unreach.ident is None and not unreach.is_echo


def test_icmpv6_neighbor_solicitation_target_and_options():
    body = struct.pack("!BBHI", 135, 0, 0, 0) + socket.inet_pton(socket.AF_INET6, "fe80::1") + \
        bytes([1, 1]) + BOARD_MAC
    c = npr.decode_icmpv6(body)
    assert c.type == 135 and c.target == "fe80::1" and c.options == ((1, BOARD_MAC),)


def test_icmpv6_router_solicitation_and_echo():
    rs = npr.decode_icmpv6(struct.pack("!BBHI", 133, 0, 0, 0))
    assert rs.type == 133 and rs.options == ()
    echo = npr.decode_icmpv6(icmp_echo(128, 9, 1, b"ping"))
    assert echo.is_echo and echo.ident == 9 and echo.payload_end - echo.payload_offset == 4


def test_icmpv6_nd_option_zero_length_rejected():
    body = struct.pack("!BBHI", 135, 0, 0, 0) + bytes(16) + bytes([1, 0]) + bytes(6)
    with pytest.raises(DecodeError, match="ND option 1 has length 0 at offset 25"):
        npr.decode_icmpv6(body)


def test_igmp_report():
    g = npr.decode_igmp(struct.pack("!BBH4s", 0x16, 0, 0, socket.inet_aton("239.1.2.3")))
    assert g.type == 0x16 and g.group == "239.1.2.3"


# --------------------------------------------------------------------------------------------
# DNS


def test_dns_query_decoded():
    m = npr.decode_dns(dns_query(0xBEEF, "telemetry.vendor.example", 28))
    assert (m.ident, m.is_response, m.opcode) == (0xBEEF, False, 0)
    assert m.questions == (npr.DnsQuestion("telemetry.vendor.example", 28, 1),)


def test_dns_response_with_compression_cname_and_addresses():
    q = dns_name("www.vendor.example") + b"\0\x01\0\x01"
    cname_target = b"\x03cdn" + b"\xc0\x10"   # cdn.vendor.example via pointer to offset 16
    ans = (b"\xc0\x0c" + struct.pack("!HHIH", 5, 1, 60, len(cname_target)) + cname_target
           + b"\xc0\x30" + struct.pack("!HHIH", 1, 1, 60, 4) + socket.inet_aton("203.0.113.5")
           + b"\xc0\x30" + struct.pack("!HHIH", 28, 1, 60, 16)
           + socket.inet_pton(socket.AF_INET6, "2001:db8::5"))
    msg = struct.pack("!HHHHHH", 1, 0x8180, 1, 3, 0, 0) + q + ans
    assert msg[0x30:0x32] == b"\x03c"  # the CNAME target's own labels start at 48
    m = npr.decode_dns(msg)
    assert m.is_response
    assert [(r.name, r.rtype, r.data) for r in m.answers] == [
        ("www.vendor.example", 5, "cdn.vendor.example"),
        ("cdn.vendor.example", 1, "203.0.113.5"),
        ("cdn.vendor.example", 28, "2001:db8::5"),
    ]


def test_dns_compression_pointer_loop_rejected():
    msg = struct.pack("!HHHHHH", 1, 0, 1, 0, 0, 0) + b"\x01a\xc0\x0c" + b"\0\x01\0\x01"
    with pytest.raises(DecodeError, match="does not point backwards at offset 14"):
        npr.decode_dns(msg)


def test_dns_forward_pointer_rejected_and_mutual_pointers_terminate():
    fwd = struct.pack("!HHHHHH", 1, 0, 1, 0, 0, 0) + b"\xc0\x20" + b"\0\x01\0\x01" + bytes(20)
    with pytest.raises(DecodeError, match="pointer to 32"):
        npr.decode_dns(fwd)
    # Two names pointing at each other: the second one's pointer goes back, then forward again.
    msg = struct.pack("!HHHHHH", 1, 0x8000, 1, 1, 0, 0) + b"\x01a\xc0\x14" + b"\0\x01\0\x01" + \
        b"\x01b\xc0\x0c" + struct.pack("!HHIH", 1, 1, 0, 4) + bytes(4)
    with pytest.raises(DecodeError):
        npr.decode_dns(msg)


def test_dns_name_over_255_bytes_rejected():
    name = ".".join(["a" * 63] * 5)
    with pytest.raises(DecodeError, match="longer than 255 bytes"):
        npr.decode_dns(dns_query(1, name))


def test_dns_unsupported_label_type_rejected():
    with pytest.raises(DecodeError, match="label type 0x40 unsupported at offset 12"):
        npr.decode_dns(struct.pack("!HHHHHH", 1, 0, 1, 0, 0, 0) + b"\x41" + bytes(5))


def test_dns_truncated_message_is_incomplete_with_offset():
    with pytest.raises(IncompleteError) as ei:
        npr.decode_dns(dns_query(1, "abc.example")[:-3])
    assert ei.value.offset == 25 and "question truncated" in str(ei.value)
    with pytest.raises(IncompleteError, match="DNS header truncated at offset 0"):
        npr.decode_dns(b"\0" * 11)


def test_dns_bogus_record_count_fails_fast():
    msg = struct.pack("!HHHHHH", 1, 0x8180, 0, 65535, 65535, 65535)
    with pytest.raises(IncompleteError):
        npr.decode_dns(msg)


def test_dns_odd_label_bytes_escaped_in_presentation_form():
    assert npr.format_dns_name([b"a.b", b"x\\y", b"\x00\xff", b"ok"]) == r"a\.b.x\\y.\000\255.ok"
    m = npr.decode_dns(struct.pack("!HHHHHH", 1, 0, 1, 0, 0, 0) + b"\x03a b\x00" + b"\0\x01\0\x01")
    assert m.questions[0].name == r"a\032b"


def test_dns_txt_and_unknown_rdata():
    rr = b"\xc0\x0c" + struct.pack("!HHIH", 16, 1, 0, 6) + b"\x05hello" + \
        b"\xc0\x0c" + struct.pack("!HHIH", 99, 1, 0, 2) + b"\xab\xcd"
    msg = struct.pack("!HHHHHH", 1, 0x8180, 1, 2, 0, 0) + dns_name("t.example") + b"\0\x10\0\x01" + rr
    assert [r.data for r in npr.decode_dns(msg).answers] == ["hello", "abcd"]


def test_dns_over_tcp_length_prefixed_messages():
    q1, q2 = dns_query(1, "a.example"), dns_query(2, "b.example")
    msgs = npr.decode_dns_tcp(struct.pack("!H", len(q1)) + q1 + struct.pack("!H", len(q2)) + q2)
    assert [m.questions[0].name for m in msgs] == ["a.example", "b.example"]
    with pytest.raises(IncompleteError, match="DNS-over-TCP message truncated"):
        npr.decode_dns_tcp(struct.pack("!H", 100) + q1)
    with pytest.raises(DecodeError, match="at offset 14"):
        npr.decode_dns_tcp(struct.pack("!H", 13) + q1[:13])  # declared complete but cut


# --------------------------------------------------------------------------------------------
# TLS ClientHello


def test_tls_client_hello_sni_and_alpn():
    h = npr.decode_tls_client_hello(client_hello("telemetry.vendor.example", ("h2", "http/1.1")))
    assert h.sni == "telemetry.vendor.example" and h.alpn == ("h2", "http/1.1")
    assert (h.record_version, h.client_version, h.ech) == (0x0301, 0x0303, False)


def test_tls_client_hello_without_sni_and_with_ech():
    h = npr.decode_tls_client_hello(client_hello(None, ech=True))
    assert h.sni is None and h.ech


def test_tls_client_hello_split_across_segments_is_incomplete():
    ch = client_hello("a.example")
    for cut in (3, 5, 20, len(ch) - 1):
        with pytest.raises(IncompleteError):
            npr.decode_tls_client_hello(ch[:cut])


def test_tls_handshake_fragmented_over_two_records_decodes():
    ch = client_hello("two.records.example")
    hs = ch[5:]
    a, b = hs[:40], hs[40:]
    two = (b"\x16\x03\x01" + struct.pack("!H", len(a)) + a
           + b"\x16\x03\x01" + struct.pack("!H", len(b)) + b)
    assert npr.decode_tls_client_hello(two).sni == "two.records.example"


def test_tls_not_handshake_or_not_client_hello_rejected():
    with pytest.raises(DecodeError, match="record type 23 is not handshake at offset 0"):
        npr.decode_tls_client_hello(b"\x17\x03\x03\x00\x05hello")
    server_hello = b"\x16\x03\x03\x00\x04\x02\x00\x00\x00"
    with pytest.raises(DecodeError, match="handshake type 2 is not ClientHello"):
        npr.decode_tls_client_hello(server_hello)


def test_tls_extension_overrunning_rejected():
    ch = bytearray(client_hello("x.example"))
    # The SNI extension's length field sits after the fixed part and the extensions length.
    ext_len_at = 5 + 4 + 2 + 32 + 1 + 32 + 2 + 4 + 2 + 2 + 2
    ch[ext_len_at:ext_len_at + 2] = b"\x01\x00"
    with pytest.raises(DecodeError, match="extension 0 runs past"):
        npr.decode_tls_client_hello(bytes(ch))


# --------------------------------------------------------------------------------------------
# HTTP


@pytest.mark.parametrize("raw,host", [
    (b"GET /v1/ping HTTP/1.1\r\nHost: telemetry.vendor.example\r\nAccept: */*\r\n\r\n",
     "telemetry.vendor.example"),
    (b"POST /up HTTP/1.0\r\nhOsT: 192.0.2.7:8080\r\n\r\n", "192.0.2.7"),
    (b"GET / HTTP/1.1\r\nHost: [2001:db8::7]:80\r\n\r\n", "2001:db8::7"),
    (b"GET http://proxy.example:3128/x HTTP/1.1\r\n\r\n", "proxy.example"),
    (b"CONNECT tunnel.example:443 HTTP/1.1\r\n\r\n", "tunnel.example"),
])
def test_http_request_host(raw, host):
    r = npr.decode_http_request(raw)
    assert r.host == host and r.headers_complete


def test_http_request_without_blank_line_yet():
    r = npr.decode_http_request(b"GET /a HTTP/1.1\r\nHost: h.example\r\nUser-Ag")
    assert (r.method, r.target, r.version, r.host, r.headers_complete) == \
           ("GET", "/a", "HTTP/1.1", "h.example", False)
    with pytest.raises(IncompleteError):
        npr.decode_http_request(b"GET /long/path/witho")


def test_http_not_a_request_rejected():
    for raw in (b"\x16\x03\x01\x00\x05", b"SSH-2.0-OpenSSH_9.0\r\n", b"GET / HTTP/2.0\r\n\r\n",
                b"GET /\x01 HTTP/1.1\r\n\r\n", b"GET / HTTP/1.1\r\nnocolon\r\n\r\n"):
        with pytest.raises(DecodeError):
            npr.decode_http_request(raw)


# --------------------------------------------------------------------------------------------
# Hostile input: only DecodeError, ever.


FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

_DECODERS = [
    npr.decode_dns, npr.decode_dns_tcp, npr.decode_tls_client_hello, npr.decode_http_request,
    npr.decode_ethernet, npr.decode_linux_sll, npr.decode_linux_sll2, npr.decode_arp,
    npr.decode_ipv4, npr.decode_ipv6, npr.decode_udp, npr.decode_tcp, npr.decode_icmp,
    npr.decode_icmpv6, npr.decode_igmp,
]


def _only_decode_error(fn, data: bytes) -> None:
    try:
        fn(data)
    except DecodeError as e:
        assert isinstance(e.offset, int) and e.offset >= 0
        assert f"at offset {e.offset}" in str(e)


@FUZZ
@given(st.sampled_from(_DECODERS), st.binary(max_size=300))
def test_decoders_on_arbitrary_bytes_raise_only_decode_error(fn, data):
    _only_decode_error(fn, data)


_DNS_SEEDS = [
    dns_query(7, "x.example"),
    struct.pack("!HHHHHH", 1, 0x8180, 1, 2, 0, 0) + dns_name("a.b.example") + b"\0\x01\0\x01"
    + b"\xc0\x0c" + struct.pack("!HHIH", 5, 1, 0, 4) + b"\x01c\xc0\x0e"
    + b"\xc0\x1d" + struct.pack("!HHIH", 1, 1, 0, 4) + bytes(4),
]


@FUZZ
@given(st.sampled_from(_DNS_SEEDS), st.lists(st.tuples(st.integers(0, 200), st.integers(0, 255)),
                                              max_size=4))
def test_dns_decoder_on_mutated_messages_raises_only_decode_error(seed, edits):
    data = bytearray(seed)
    for pos, val in edits:
        data[pos % len(data)] = val
    _only_decode_error(npr.decode_dns, bytes(data))


@FUZZ
@given(st.lists(st.tuples(st.integers(0, 400), st.integers(0, 255)), max_size=4),
       st.integers(0, 400))
def test_tls_decoder_on_mutated_client_hello_raises_only_decode_error(edits, cut):
    data = bytearray(client_hello("fuzz.example", ("h2",)))
    for pos, val in edits:
        data[pos % len(data)] = val
    _only_decode_error(npr.decode_tls_client_hello, bytes(data[:cut]))


# --------------------------------------------------------------------------------------------
# What the egress judgement needs beyond addresses: options, routes, EDNS, bytes after records


def test_ipv4_bytes_after_the_end_of_options_marker_are_kept_when_not_zero():
    ip = npr.decode_ipv4(ipv4("10.0.0.2", "224.0.0.22", 2, bytes(8), options=b"\x94\x04\x00\x00\x00abc"))
    assert ip.options == ((0x94, b"\x00\x00"), (0, b"abc"))
    clean = npr.decode_ipv4(ipv4("10.0.0.2", "224.0.0.22", 2, bytes(8), options=b"\x94\x04\x00\x00\x00\x00\x00\x00"))
    assert clean.options == ((0x94, b"\x00\x00"),)


def test_ipv4_source_route_names_the_hops_still_ahead():
    lsrr = bytes([131, 11, 4]) + socket.inet_aton("198.51.100.1") + socket.inet_aton("203.0.113.5") + b"\0"
    ip = npr.decode_ipv4(ipv4("10.0.0.2", "192.0.2.10", 17, udp(1, 2, b""), options=lsrr))
    assert ip.source_route == ("198.51.100.1", "203.0.113.5")
    assert npr.decode_ipv4(ipv4("10.0.0.2", "192.0.2.10", 17, b"")).source_route == ()


def test_ipv6_options_of_hop_by_hop_and_destination_headers_are_decoded():
    hop = bytes([60, 0, 5, 2, 0, 0, 1, 0])                  # router alert, PadN of 0
    dst_opts = bytes([17, 0, 0x3E, 4]) + b"data"            # an experimental option
    ip = npr.decode_ipv6(ipv6("fe80::1", "ff02::16", 0, hop + dst_opts + udp(5, 6, b"")))
    assert ip.ext_options == ((5, b"\0\0"), (1, b""), (0x3E, b"data"))
    with pytest.raises(DecodeError, match="IPv6 option 62 runs past its header at offset 42"):
        npr.decode_ipv6(ipv6("fe80::1", "ff02::16", 0, bytes([17, 0, 0x3E, 9]) + bytes(4) + udp(5, 6, b"")))


def test_ipv6_routing_header_names_the_segments_left():
    srh = bytes([17, 4, 4, 2, 1, 0, 0, 0]) + socket.inet_pton(socket.AF_INET6, "2001:db8::9") \
        + socket.inet_pton(socket.AF_INET6, "2001:db8::5")
    ip = npr.decode_ipv6(ipv6("2001:db8::2", "2001:db8::5", 43, srh + udp(1, 2, b"")))
    assert ip.source_route == ("2001:db8::9", "2001:db8::5") and ip.next_header == 17
    done = bytes([17, 2, 4, 0, 0, 0, 0, 0]) + socket.inet_pton(socket.AF_INET6, "2001:db8::5")
    assert npr.decode_ipv6(ipv6("2001:db8::2", "2001:db8::5", 43, done + udp(1, 2, b""))).source_route == ()


def test_arp_reports_its_address_lengths():
    arp = npr.decode_arp(struct.pack("!HHBBH", 1, 0x0800, 6, 4, 1) + BOARD_MAC + bytes(4) + bytes(6) + bytes(4))
    assert (arp.hlen, arp.plen, arp.end) == (6, 4, 28)


def test_dns_edns_options_and_bytes_after_the_last_record():
    opt = b"\0" + struct.pack("!HHIH", 41, 1232, 0, 12) + struct.pack("!HH", 10, 8) + bytes(range(8))
    msg = struct.pack("!HHHHHH", 7, 0x0100, 1, 0, 0, 1) + dns_name("x.example") + b"\0\x01\0\x01" + opt
    m = npr.decode_dns(msg)
    assert m.edns == ((10, bytes(range(8))),) and m.trailing == 0
    assert npr.decode_dns(msg + b"more").trailing == 4
    with pytest.raises(DecodeError, match="EDNS option 10 runs past its record"):
        npr.decode_dns(msg[:-12] + struct.pack("!HH", 10, 40) + bytes(8))


_EXT_SEEDS = [
    ipv6("fe80::1", "ff02::16", 0, bytes([60, 0, 5, 2, 0, 0, 1, 0]) + bytes([17, 0, 1, 4]) + b"data" + udp(5, 6, b"x")),
    ipv6("2001:db8::2", "2001:db8::5", 43, bytes([17, 2, 4, 1, 0, 0, 0, 0])
         + socket.inet_pton(socket.AF_INET6, "2001:db8::9") + udp(1, 2, b"")),
    ipv4("10.0.0.2", "192.0.2.10", 17, udp(1, 2, b""), options=bytes([131, 7, 4]) + bytes(4) + b"\0"),
    struct.pack("!HHHHHH", 7, 0x0100, 1, 0, 0, 1) + dns_name("x.example") + b"\0\x01\0\x01"
    + b"\0" + struct.pack("!HHIH", 41, 1232, 0, 12) + struct.pack("!HH", 10, 8) + bytes(8),
]


@FUZZ
@given(st.sampled_from(_EXT_SEEDS), st.lists(st.tuples(st.integers(0, 120), st.integers(0, 255)), max_size=4),
       st.integers(0, 130))
def test_options_routes_and_edns_on_mutated_input_raise_only_decode_error(seed, edits, cut):
    data = bytearray(seed)
    for pos, val in edits:
        data[pos % len(data)] = val
    for fn in (npr.decode_ipv4, npr.decode_ipv6, npr.decode_dns):
        _only_decode_error(fn, bytes(data[:cut]))
