"""Flow analysis and egress policy (harness.formats.flows, harness.formats.egress_policy).

Captures are built by hand (struct), written with PcapngWriter or a classic-pcap writer, read
back with read_capture, and analysed; tshark cross-checks the conversation counts.
"""

from __future__ import annotations

import io
import json
import shutil
import socket
import struct
import subprocess

import pytest
from hypothesis import HealthCheck, example, given, settings, strategies as st

from harness.formats.egress_policy import (
    EgressPolicy, PolicyError, egress_report_json, evaluate, judge, load_policy,
)
from harness.cli import load_egress_policy
from harness.formats.flows import analyze, analyze_bytes, flow_analysis_json, iso_ns
from harness.formats.pcap import Capture, CaptureStats, Packet, PcapngWriter, read_capture

TSHARK = shutil.which("tshark")
needs_tshark = pytest.mark.skipif(TSHARK is None, reason="tshark not installed")

BOARD_MAC = bytes.fromhex("020000000002")
GW_MAC = bytes.fromhex("020000000001")
BOARD = "10.0.0.2"
RESOLVER = "10.0.0.1"
T0 = 1_700_000_000_000_000_000
S = 1_000_000_000  # one second in ns


# --------------------------------------------------------------------------------------------
# Packet builders


def eth(payload: bytes, ethertype: int = 0x0800, src: bytes = BOARD_MAC, dst: bytes = GW_MAC,
        vlan: int | None = None, pad: bool = True) -> bytes:
    """An Ethernet frame, padded to the 60-byte minimum as a receiver captures it."""
    tag = struct.pack("!HH", 0x8100, vlan) if vlan is not None else b""
    f = dst + src + tag + struct.pack("!H", ethertype) + payload
    return f + b"\0" * (60 - len(f)) if pad and len(f) < 60 else f


def ipv4(src: str, dst: str, proto: int, payload: bytes, *, ttl: int = 64, ident: int = 1,
         flags_frag: int = 0x4000, options: bytes = b"") -> bytes:
    hl = 20 + len(options)
    return struct.pack("!BBHHHBBH4s4s", 0x40 | hl // 4, 0, hl + len(payload), ident, flags_frag,
                       ttl, proto, 0, socket.inet_aton(src), socket.inet_aton(dst)) + options + payload


def ipv6(src: str, dst: str, nh: int, payload: bytes, *, hlim: int = 64) -> bytes:
    return struct.pack("!IHBB", 6 << 28, len(payload), nh, hlim) + \
        socket.inet_pton(socket.AF_INET6, src) + socket.inet_pton(socket.AF_INET6, dst) + payload


def udp(sport: int, dport: int, payload: bytes) -> bytes:
    return struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload


def tcp(sport: int, dport: int, flags: int = 0x18, payload: bytes = b"", seq: int = 1000,
        ack: int = 0) -> bytes:
    return struct.pack("!HHIIBBHHH", sport, dport, seq, ack, 0x50, flags, 65535, 0, 0) + payload


def icmp_echo(type_: int, ident: int, seq: int, payload: bytes) -> bytes:
    return struct.pack("!BBHHH", type_, 0, 0, ident, seq) + payload


def icmpv6(type_: int, body: bytes = b"\0\0\0\0") -> bytes:
    return struct.pack("!BBH", type_, 0, 0) + body


def arp(op: int, spa: str, tpa: str) -> bytes:
    return struct.pack("!HHBBH", 1, 0x0800, 6, 4, op) + BOARD_MAC + socket.inet_aton(spa) + \
        bytes(6) + socket.inet_aton(tpa)


def dns_name(name: str) -> bytes:
    return b"".join(bytes([len(p)]) + p.encode() for p in name.split(".") if p) + b"\0"


def dns_query(ident: int, name: str, qtype: int = 1) -> bytes:
    return struct.pack("!HHHHHH", ident, 0x0100, 1, 0, 0, 0) + dns_name(name) + \
        struct.pack("!HH", qtype, 1)


def dns_answer(ident: int, name: str, addr: str, cname: str | None = None) -> bytes:
    q = dns_name(name) + b"\0\x01\0\x01"
    if cname is None:
        rrs = b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, 60, 4) + socket.inet_aton(addr)
        n = 1
    else:
        target = dns_name(cname)
        rrs = (b"\xc0\x0c" + struct.pack("!HHIH", 5, 1, 60, len(target)) + target
               + dns_name(cname) + struct.pack("!HHIH", 1, 1, 60, 4) + socket.inet_aton(addr))
        n = 2
    return struct.pack("!HHHHHH", ident, 0x8180, 1, n, 0, 0) + q + rrs


def client_hello(sni: str) -> bytes:
    n = sni.encode()
    ext = struct.pack("!HHHBH", 0, len(n) + 5, len(n) + 3, 0, len(n)) + n
    body = (b"\x03\x03" + bytes(32) + b"\x00" + struct.pack("!H", 2) + b"\x13\x01" + b"\x01\x00"
            + struct.pack("!H", len(ext)) + ext)
    hs = b"\x01" + len(body).to_bytes(3, "big") + body
    return b"\x16\x03\x01" + struct.pack("!H", len(hs)) + hs


def out4(dst: str, proto: int, payload: bytes, **kw) -> bytes:
    """A frame from the board to dst."""
    return eth(ipv4(BOARD, dst, proto, payload, **kw))


def in4(src: str, proto: int, payload: bytes, **kw) -> bytes:
    """A frame from src to the board."""
    return eth(ipv4(src, BOARD, proto, payload, **kw), src=GW_MAC, dst=BOARD_MAC)


def tls_connection(server: str, sni: str, port: int = 40000, data_segments: int = 3):
    """Frames of a TLS connection from the board: handshake, ClientHello, server data, FIN."""
    ch = client_hello(sni)
    frames = [
        out4(server, 6, tcp(port, 443, 0x02, seq=100)),
        in4(server, 6, tcp(443, port, 0x12, seq=500, ack=101)),
        out4(server, 6, tcp(port, 443, 0x10, seq=101, ack=501)),
        out4(server, 6, tcp(port, 443, 0x18, ch, seq=101, ack=501)),
    ]
    for i in range(data_segments):
        frames.append(in4(server, 6, tcp(443, port, 0x18, b"\x17\x03\x03" + bytes(300),
                                         seq=501 + 303 * i, ack=101 + len(ch))))
        frames.append(out4(server, 6, tcp(port, 443, 0x10, seq=101 + len(ch),
                                          ack=501 + 303 * (i + 1))))
    frames.append(out4(server, 6, tcp(port, 443, 0x11, seq=101 + len(ch), ack=501 + 303 * data_segments)))
    return frames


def pcapng(frames, t0: int = T0, step: int = 1_000_000, linktype: int = 1, stats=None,
           if_mac: bytes | None = GW_MAC) -> bytes:
    """frames: list of bytes (spaced `step` ns apart) or (ts, bytes). The capturing host is the
    gateway side (GW_MAC, written as the interface's if_MACaddr), as on attestlab's own captures."""
    buf = io.BytesIO()
    w = PcapngWriter(buf, linktype=linktype, if_mac=if_mac if linktype == 1 else None,
                     if_addresses=[f"{RESOLVER}/24"] if if_mac == GW_MAC and linktype == 1 else ())
    for i, f in enumerate(frames):
        ts, data = f if isinstance(f, tuple) else (t0 + i * step, f)
        w.write_packet(ts, data)
    if stats:
        w.write_stats(t0, *stats)
    return buf.getvalue()


def pcap(frames, endian: str = "<", t0: int = T0, step: int = 1_000_000, linktype: int = 1) -> bytes:
    out = [struct.pack(endian + "IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, linktype)]
    for i, f in enumerate(frames):
        sec, ns = divmod(t0 + i * step, S)
        out.append(struct.pack(endian + "IIII", sec, ns // 1000, len(f), len(f)) + f)
    return b"".join(out)


def run(frames, **kw):
    return analyze(read_capture(pcapng(frames, **kw)))


def flow(analysis, proto: str, dst: str, dport=None):
    found = [f for f in analysis.flows if f.proto == proto and f.dst == dst
             and (dport is None or f.dport == dport)]
    assert len(found) == 1, [f.key for f in analysis.flows]
    return found[0]


POLICY = {"allow": [{"proto": "udp", "dst": "192.0.2.10/32", "dport": 123},
                    {"dns": "*.lab.example"}]}


# --------------------------------------------------------------------------------------------
# Flows


def test_tcp_flow_counts_both_directions_oriented_from_the_syn_sender():
    frames = tls_connection("203.0.113.5", "telemetry.vendor.example")
    a = run(frames)
    (f,) = a.flows
    assert f.key == ("tcp", BOARD, "203.0.113.5", 40000, 443)
    assert (f.packets, f.bytes) == (len(frames), sum(len(x) for x in frames))
    assert (f.first_seen, f.last_seen) == (T0, T0 + (len(frames) - 1) * 1_000_000)
    assert f.sni == ("telemetry.vendor.example",) and f.names == ("telemetry.vendor.example",)
    assert a.undecoded == 0 and a.anomalies == () and a.packets == len(frames)


def test_flow_started_by_whoever_sent_first_even_a_syn_ack():
    """Who sent first on the 5-tuple started the flow: a SYN-ACK or a reply-looking port says
    nothing (a board can send either unasked)."""
    a = run(tls_connection("203.0.113.5", "x.example")[1:])
    assert a.flows[0].key == ("tcp", "203.0.113.5", BOARD, 443, 40000)
    assert a.flows[0].initiator_macs == (GW_MAC.hex(":"),)
    assert a.flows[0].responder_macs == (BOARD_MAC.hex(":"),)


def test_flow_started_by_the_first_sender_whatever_its_ports():
    a = run([out4("198.51.100.9", 17, udp(123, 40000, b"x" * 48)),
             in4("198.51.100.9", 17, udp(40000, 123, b"y"))])
    (f,) = a.flows
    assert f.key == ("udp", BOARD, "198.51.100.9", 123, 40000) and f.packets == 2


def test_classic_pcap_both_byte_orders_give_the_same_flows():
    frames = tls_connection("203.0.113.5", "t.example")
    results = [analyze(read_capture(pcap(frames, endian=e))).flows for e in "<>"]
    assert results[0] == results[1]
    assert results[0][0].packets == len(frames)


def test_dns_answer_names_the_destination_contacted_after_it():
    frames = [out4(RESOLVER, 17, udp(5555, 53, dns_query(7, "telemetry.vendor.example"))),
              in4(RESOLVER, 17, udp(53, 5555, dns_answer(7, "telemetry.vendor.example",
                                                          "203.0.113.5")))]
    frames += tls_connection("203.0.113.5", "other.example")
    a = run(frames)
    dns = flow(a, "udp", RESOLVER)
    assert dns.dns_queries == ("telemetry.vendor.example",) and dns.packets == 2
    conn = flow(a, "tcp", "203.0.113.5")
    assert conn.resolved_names == ("telemetry.vendor.example",)
    assert conn.names == ("telemetry.vendor.example", "other.example")
    assert [(q.name, q.src, q.dst) for q in a.dns_queries] == \
           [("telemetry.vendor.example", BOARD, RESOLVER)]
    assert [(r.address, r.name) for r in a.resolutions] == [("203.0.113.5", "telemetry.vendor.example")]


def test_resolution_after_the_flow_began_does_not_name_it():
    frames = tls_connection("203.0.113.5", "a.example")[:1]
    frames += [in4(RESOLVER, 17, udp(53, 5555, dns_answer(7, "late.example", "203.0.113.5")))]
    assert flow(run(frames), "tcp", "203.0.113.5").resolved_names == ()


def test_cname_chain_names_the_address_with_every_alias():
    frames = [out4(RESOLVER, 17, udp(5555, 53, dns_query(7, "api.vendor.example"))),
              in4(RESOLVER, 17, udp(53, 5555, dns_answer(7, "api.vendor.example", "203.0.113.9",
                                                          cname="edge.cdn.example"))),
              out4("203.0.113.9", 6, tcp(40001, 443, 0x02))]
    f = flow(run(frames), "tcp", "203.0.113.9")
    assert set(f.resolved_names) == {"api.vendor.example", "edge.cdn.example"}


def test_tls_client_hello_split_across_segments_is_reassembled():
    ch = client_hello("split.vendor.example")
    server = "203.0.113.5"
    frames = [out4(server, 6, tcp(40000, 443, 0x02, seq=100)),
              in4(server, 6, tcp(443, 40000, 0x12, seq=500, ack=101)),
              out4(server, 6, tcp(40000, 443, 0x18, ch[:30], seq=101)),
              out4(server, 6, tcp(40000, 443, 0x18, ch[:30], seq=101)),  # retransmission
              out4(server, 6, tcp(40000, 443, 0x18, ch[30:], seq=131))]
    f = flow(run(frames), "tcp", server)
    assert f.sni == ("split.vendor.example",) and f.notes == ()


def test_tls_client_data_out_of_order_is_noted_not_guessed():
    ch = client_hello("ooo.example")
    frames = [out4("203.0.113.5", 6, tcp(40000, 443, 0x18, ch[:30], seq=101)),
              out4("203.0.113.5", 6, tcp(40000, 443, 0x18, ch[40:], seq=141))]
    f = run(frames).flows[0]
    assert f.sni == () and "client data out of order" in f.notes[0]


def test_http_request_host_recorded():
    req = b"GET /collect HTTP/1.1\r\nHost: metrics.vendor.example\r\n\r\n"
    f = run([out4("198.51.100.20", 6, tcp(40000, 80, 0x18, req))]).flows[0]
    assert f.http_hosts == ("metrics.vendor.example",) and f.names == ("metrics.vendor.example",)


def test_icmp_echo_sizes_recorded_and_replies_folded_into_the_request_flow():
    frames = [out4("198.51.100.7", 1, icmp_echo(8, 1, 1, bytes(56))),
              in4("198.51.100.7", 1, icmp_echo(0, 1, 1, bytes(56))),
              out4("198.51.100.7", 1, icmp_echo(8, 1, 2, bytes(1200)))]
    (f,) = run(frames).flows
    assert f.key == ("icmp", BOARD, "198.51.100.7", 8, 0)
    assert f.packets == 3 and f.icmp_echo_sizes == (56, 56, 1200)


def test_link_local_housekeeping_classified():
    ll = "fe80::2"
    frames = [
        eth(arp(1, BOARD, RESOLVER), 0x0806, dst=b"\xff" * 6),
        eth(ipv6("::", "ff02::1:ff00:2", 58, icmpv6(135, bytes(4) + socket.inet_pton(
            socket.AF_INET6, ll)), hlim=255), 0x86DD),
        eth(ipv6(ll, "ff02::2", 58, icmpv6(133), hlim=255), 0x86DD),
        eth(ipv6(ll, "ff02::16", 58, icmpv6(143, struct.pack("!HH", 0, 1)) + struct.pack(
            "!BBH", 4, 0, 0) + socket.inet_pton(socket.AF_INET6, "ff02::1:ff00:2"), hlim=1), 0x86DD),
        eth(ipv4(BOARD, "224.0.0.22", 2, struct.pack("!BBHHH", 0x22, 0, 0, 0, 1) + struct.pack(
            "!BBH4s", 4, 0, 0, socket.inet_aton("224.0.0.251")), ttl=1)),
        eth(ipv6(ll, "2001:db8::1", 58, icmpv6(135, bytes(20)), hlim=64), 0x86DD),  # not ND: hop limit
    ]
    a = run(frames)
    assert [f.housekeeping for f in a.flows] == ["arp", "dad", "nd", "mld", "igmp", None]


def test_undecodable_frames_are_counted_and_named():
    frames = tls_connection("203.0.113.5", "x.example")[:2]
    frames.insert(1, eth(b"\x45\x00\x00", pad=False))         # IPv4 header cut short
    frames.append(eth(ipv4(BOARD, "203.0.113.5", 6, b"\x00\x01")))  # TCP header cut short
    a = run(frames)
    assert a.undecoded == 2
    assert "frame 2: IPv4 header truncated at offset 14" in a.anomalies
    assert "frame 4: TCP header truncated at offset 34" in a.anomalies
    assert sum(f.packets for f in a.flows) + a.undecoded == a.packets


def test_unsupported_link_type_is_undecoded():
    a = run([b"\x00" * 30], linktype=147)
    assert a.undecoded == 1 and a.anomalies == ("frame 1: link type 147 not supported at offset 0",)


def test_ipv4_total_length_beyond_frame_is_noted_but_attributed():
    ip = bytearray(ipv4(BOARD, "198.51.100.1", 17, udp(1000, 2000, b"x" * 30)))
    ip[2:4] = struct.pack("!H", 1400)
    a = run([eth(bytes(ip))])
    assert a.undecoded == 0 and a.flows[0].packets == 1
    assert "IPv4 total length 1400 exceeds" in a.anomalies[0]


def test_fast_path_and_full_decode_agree():
    """The same traffic over Ethernet (fast path) and raw IP (always decoded) gives equal flows."""
    ips = []
    for i in range(3):
        ips += [ipv4(BOARD, "198.51.100.1", 17, udp(30000 + i, 5004, bytes(100 + j)))
                for j in range(20)]
        ips += [ipv4("198.51.100.1", BOARD, 17, udp(5004, 30000 + i, bytes(64)))]
        ips += [ipv6("2001:db8::2", "2001:db8::1", 6, tcp(40000 + i, 443, 0x18, bytes(j), seq=j))
                for j in range(20)]
        ips += [ipv6("2001:db8::1", "2001:db8::2", 17, udp(53, 40000 + i, bytes(30)))]
    frames_eth = [eth(p, 0x0800 if p[0] >> 4 == 4 else 0x86DD) for p in ips]
    a_eth = run(frames_eth)
    a_raw = run(ips, linktype=101)
    strip = [(f.key, f.packets, f.first_seen, f.last_seen) for f in a_eth.flows]
    assert strip == [(f.key, f.packets, f.first_seen, f.last_seen) for f in a_raw.flows]
    assert [f.bytes - f.packets * 14 for f in a_eth.flows] == [f.bytes for f in a_raw.flows]


def test_vlan_tagged_and_raw_ipv4_ipv6_link_types():
    frames = [eth(ipv4(BOARD, "198.51.100.1", 17, udp(1, 2, b"v")), vlan=10)]
    assert flow(run(frames), "udp", "198.51.100.1").packets == 1
    a4 = run([ipv4(BOARD, "198.51.100.1", 17, udp(1, 2, b""))], linktype=228)
    a6 = run([ipv6("2001:db8::2", "2001:db8::1", 17, udp(1, 2, b""))], linktype=229)
    assert a4.flows[0].key == ("udp", BOARD, "198.51.100.1", 1, 2)
    assert a6.flows[0].key == ("udp", "2001:db8::2", "2001:db8::1", 1, 2)
    bad = run([ipv6("::1", "::2", 17, udp(1, 2, b""))], linktype=228)
    assert bad.undecoded == 1 and "IP version 6 on raw-IP link type 228" in bad.anomalies[0]


def test_ipv4_later_fragments_join_the_first_fragments_flow():
    first = ipv4(BOARD, "198.51.100.3", 17, udp(4000, 9999, bytes(32)), ident=77, flags_frag=0x2000)
    later = ipv4(BOARD, "198.51.100.3", 17, bytes(40), ident=77, flags_frag=0x0005)
    orphan = ipv4(BOARD, "198.51.100.4", 17, bytes(40), ident=78, flags_frag=0x0005)
    a = run([eth(first), eth(later), eth(orphan)])
    f = flow(a, "udp", "198.51.100.3")
    assert (f.packets, f.fragments, f.sport, f.dport) == (2, 2, 4000, 9999)
    o = flow(a, "udp", "198.51.100.4")
    assert (o.sport, o.dport) == (None, None) and "first fragment was not seen" in o.notes[0]


def test_ipv6_flow_through_extension_headers():
    hop = bytes([6, 0]) + bytes(6)
    f = run([eth(ipv6("2001:db8::2", "2001:db8::99", 0, hop + tcp(40000, 443, 0x02)), 0x86DD)]).flows[0]
    assert f.key == ("tcp", "2001:db8::2", "2001:db8::99", 40000, 443)


def test_non_ip_frames_become_ether_flows():
    a = run([eth(b"\x02\x07\x04" + bytes(40), 0x88CC, dst=bytes.fromhex("0180c200000e"))])
    assert a.flows[0].key == ("ether", "02:00:00:00:00:02", "01:80:c2:00:00:0e", None, 0x88CC)


def test_periodic_contacts_detected_for_a_destination_and_a_flow():
    frames = []
    for k in range(6):  # a new connection every 30 s, +-0.2 s
        t = T0 + k * 30 * S + (200_000_000 if k % 2 else 0)
        for j, f in enumerate(tls_connection("203.0.113.50", "beacon.example", port=41000 + k,
                                             data_segments=1)):
            frames.append((t + j * 1_000_000, f))
    for k in range(4):  # one UDP flow with a heartbeat every 10 s
        frames.append((T0 + 5 * S + k * 10 * S, out4("198.51.100.60", 17, udp(7000, 7000, b"hb"))))
    frames.sort()
    a = run(frames)
    dest = [p for p in a.periodic if p.scope == "destination" and p.dst == "203.0.113.50"]
    assert len(dest) == 1 and dest[0].contacts == 6
    assert dest[0].period_s == pytest.approx(30.0, abs=0.25) and dest[0].jitter_s < 0.25
    hb = flow(a, "udp", "198.51.100.60")
    assert hb.periodicity.contacts == 4 and hb.periodicity.period_s == pytest.approx(10.0)
    assert hb.periodicity.jitter_s == 0 and hb.periodicity.regular
    assert any(p.scope == "flow" and p.dst == "198.51.100.60" for p in a.periodic)


def test_irregular_contacts_are_not_reported_as_periodic():
    times = [0, 3, 40, 41.5, 90, 200]
    a = run([(T0 + int(t * S), out4("198.51.100.61", 17, udp(7001, 7001, b"x"))) for t in times])
    f = a.flows[0]
    assert f.periodicity is not None and f.periodicity.contacts == 6 and not f.periodicity.regular
    assert a.periodic == ()


def _dns_queries(names, server=RESOLVER):
    return [out4(server, 17, udp(5000 + i, 53, dns_query(i, n))) for i, n in enumerate(names)]


def test_dns_tunnel_many_unique_subdomains_and_high_entropy():
    import hashlib
    names = [hashlib.sha256(bytes([i])).hexdigest()[:32] + ".t.exfil.example" for i in range(40)]
    a = run(_dns_queries(names))
    (s,) = a.tunnel_suspects
    assert s.parent == "exfil.example" and s.unique_names == 40
    assert any("unique subdomains" in r for r in s.reasons)
    assert any("high-entropy" in r for r in s.reasons)


def test_dns_tunnel_long_label():
    a = run(_dns_queries(["a" * 50 + ".x.example"]))
    assert a.tunnel_suspects[0].reasons == ("label of 50 characters",)


def test_ordinary_names_are_not_tunnel_suspects():
    names = ["time.lab.example", "api.lab.example", "updates.lab.example", "www.example.com",
             "telemetry-upload-service.vendor.example"]
    assert run(_dns_queries(names)).tunnel_suspects == ()


def test_non_dns_payload_on_port_53_is_counted():
    f = run([out4("198.51.100.53", 17, udp(5000, 53, b"\x00\x01 not dns"))]).flows[0]
    assert f.dns_undecoded == 1 and f.dns_queries == () and "not DNS" in f.notes[0]


def test_mdns_announcement_names_count_as_sent():
    ans = struct.pack("!HHHHHH", 0, 0x8400, 0, 1, 0, 0) + dns_name("gpu-card.local") + \
        struct.pack("!HHIH", 1, 0x8001, 120, 4) + socket.inet_aton(BOARD)
    f = run([out4("224.0.0.251", 17, udp(5353, 5353, ans), ttl=255)]).flows[0]
    assert f.dns_queries == ("gpu-card.local",)


def test_flow_analysis_json_is_serialisable():
    frames = _dns_queries(["a.lab.example"]) + tls_connection("203.0.113.5", "x.example")
    doc = flow_analysis_json(run(frames))
    json.dumps(doc)
    assert doc["packets"] == len(frames) and doc["undecoded"] == 0
    assert doc["flows"][1]["first_seen"] == iso_ns(T0 + 1_000_000)
    assert iso_ns(T0 + 5) == "2023-11-14T22:13:20.000000005Z"


def test_analyze_bytes_streams_to_the_same_result_as_analyze():
    frames = (_dns_queries(["a.lab.example"]) + tls_connection("203.0.113.5", "x.example")
              + [eth(b"\x45\x00", pad=False)])
    for data in (pcapng(frames), pcap(frames, ">"), pcapng(frames)[:-9],
                 pcapng(frames, stats=(40, 3))):
        assert analyze_bytes(data) == analyze(read_capture(data))
    assert analyze_bytes(pcapng(frames), contact_gap_s=0.0001).periodic == \
        analyze(read_capture(pcapng(frames)), contact_gap_s=0.0001).periodic


@needs_tshark
def test_ip_conversation_counts_agree_with_tshark(tmp_path):
    frames = (_dns_queries(["a.lab.example", "b.lab.example"])
              + [in4(RESOLVER, 17, udp(53, 5000, dns_answer(0, "a.lab.example", "203.0.113.5")))]
              + tls_connection("203.0.113.5", "a.lab.example")
              + tls_connection("198.51.100.7", "b.lab.example", port=40001)
              + [out4("198.51.100.7", 1, icmp_echo(8, 1, 1, bytes(8)))])
    path = tmp_path / "c.pcapng"
    path.write_bytes(pcapng(frames))
    out = subprocess.run([TSHARK, "-r", str(path), "-q", "-z", "conv,ip"], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    theirs = {}
    for line in out.stdout.splitlines():
        p = line.split()
        if len(p) > 9 and p[1] == "<->":
            # a <-> b | frames bytes unit | frames bytes unit | total-frames total-bytes unit
            theirs[frozenset((p[0], p[2]))] = (int(p[9]), int(p[10]))
    ours: dict = {}
    for f in run(frames).flows:
        k = frozenset((f.src, f.dst))
        n, b = ours.get(k, (0, 0))
        ours[k] = (n + f.packets, b + f.bytes)
    assert ours == theirs


# --------------------------------------------------------------------------------------------
# Hostile input


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.sampled_from([1, 1, 1, 101, 113, 228, 229, 276, 9999]),
                          st.binary(max_size=120)), max_size=12),
       st.sampled_from([b"", eth(ipv4(BOARD, "198.51.100.1", 6, b"")),
                        eth(ipv4(BOARD, "198.51.100.1", 17, udp(5, 53, b""))),
                        eth(b"", 0x86DD)]))
def test_analyze_on_arbitrary_packet_data_never_crashes_and_accounts_every_frame(pkts, prefix):
    packets = tuple(Packet(T0 + i, lt, (prefix + d) if lt == 1 else d, len(prefix) + len(d))
                    for i, (lt, d) in enumerate(pkts))
    a = analyze(Capture(packets=packets, anomalies=(), stats=None, format="pcapng"))
    assert a.packets == len(packets)
    assert sum(f.packets for f in a.flows) + a.undecoded == len(packets)
    assert len([x for x in a.anomalies if "not decoded" in x or "at offset" in x]) >= a.undecoded
    json.dumps(flow_analysis_json(a))
    evaluate(load_policy(POLICY), a)


def _seed_frames() -> list[bytes]:
    ll = "fe80::2"
    return (tls_connection("203.0.113.5", "seed.example", data_segments=1)
            + _dns_queries(["a.lab.example"])
            + [in4(RESOLVER, 17, udp(53, 5000, dns_answer(0, "a.lab.example", "203.0.113.5",
                                                          cname="b.cdn.example"))),
               out4("198.51.100.20", 6, tcp(40000, 80, 0x18, b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")),
               out4("198.51.100.7", 1, icmp_echo(8, 1, 1, bytes(20))),
               out4("198.51.100.3", 17, udp(4000, 9999, bytes(32)), ident=7, flags_frag=0x2000),
               out4("198.51.100.3", 17, bytes(40), ident=7, flags_frag=0x0005),
               eth(arp(1, BOARD, RESOLVER), 0x0806),
               eth(ipv6(ll, "ff02::2", 58, icmpv6(133), hlim=255), 0x86DD),
               eth(ipv6(ll, "2001:db8::1", 0, bytes([17, 0]) + bytes(6) + udp(1, 53, dns_query(1, "x.y"))),
                   0x86DD),
               eth(ipv4(BOARD, "224.0.0.22", 2, bytes(8), ttl=1, options=b"\x94\x04\x00\x00")),
               eth(ipv6("2001:db8::2", "2001:db8::1", 6, tcp(40000, 443, 0x18, b"\0data")), 0x86DD),
               eth(ipv6("2001:db8::2", "2001:db8::1", 17, udp(40000, 4433, b"quic")), 0x86DD)])


_SEEDS = _seed_frames()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.integers(0, len(_SEEDS) - 1),
                          st.lists(st.tuples(st.integers(0, 400), st.integers(0, 255)), max_size=3),
                          st.integers(0, 400)), min_size=1, max_size=16))
def test_analyze_on_mutated_valid_frames_never_crashes_and_accounts_every_frame(choices):
    packets = []
    for i, (k, edits, cut) in enumerate(choices):
        d = bytearray(_SEEDS[k])
        for pos, val in edits:
            d[pos % len(d)] = val
        d = bytes(d[:max(cut, 1)]) if cut < len(d) else bytes(d)
        packets.append(Packet(T0 + i * S // 4, 1, d, len(d)))
    a = analyze(Capture(packets=tuple(packets), anomalies=(), stats=None, format="pcapng"))
    assert sum(f.packets for f in a.flows) + a.undecoded == len(packets)
    json.dumps(egress_report_json(a, evaluate(load_policy(POLICY), a)))


def _summary(a):
    return ([(f.key, f.packets, f.first_seen, f.last_seen, f.names, f.dns_queries,
              f.dns_undecoded, f.housekeeping, f.fragments, f.notes, f.icmp_echo_sizes,
              f.initiator_concealed, f.responder_concealed)
             for f in a.flows], a.undecoded, len(a.anomalies))


def _plain_and_tagged(frames):
    """The frames analysed as they are, and each with a priority tag (VLAN 0: this LAN), which
    sends every frame down the full decoder."""
    plain, tagged = [], []
    for i, d in enumerate(frames):
        plain.append(Packet(T0 + i, 1, d, len(d)))
        t = d[:12] + b"\x81\x00\xa0\x00" + d[12:]
        tagged.append(Packet(T0 + i, 1, t, len(t)))
    return (analyze(Capture(tuple(plain), (), None, "pcapng")),
            analyze(Capture(tuple(tagged), (), None, "pcapng")))


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.integers(0, len(_SEEDS) - 1),
                          st.lists(st.tuples(st.integers(0, 120), st.integers(0, 255)), max_size=2),
                          st.integers(14, 400)), min_size=1, max_size=24))
# A third source MAC (byte 6), then that frame again: the fast path once counted the repeat
# without the remark; the same with a third destination MAC (bytes 0, 1) on IPv6.
@example([(0, [(6, 0)], 400), (0, [(6, 1)], 400), (0, [(76, 1)], 400), (0, [], 400)])
@example([(17, [(0, 0)], 400), (17, [(1, 1)], 400), (17, [], 400), (17, [], 400)])
def test_fast_path_agrees_with_full_decode_on_mutated_frames(choices):
    """The results, what frames carry beyond their flow included, must not differ."""
    frames = []
    for k, edits, cut in choices:
        d = bytearray(_SEEDS[k])
        for pos, val in edits:
            d[pos % len(d)] = val
        frames.append(bytes(d[:cut]))
    a, b = _plain_and_tagged(frames)
    assert _summary(a) == _summary(b)


@pytest.mark.parametrize("where", ["src", "dst"])
def test_every_frame_from_or_to_a_third_mac_is_remarked_on_the_fast_path_too(where):
    """Which frames a flow's direction got from or sent to more MACs than a sender plausibly
    uses does not depend on the path a frame took: every frame of a third MAC counts, however
    often it repeats (the fast path must not learn it as a plain frame)."""
    macs = [bytes.fromhex(f"02000000010{i}") for i in range(3)]
    payload = ipv4(BOARD, "198.51.100.1", 17, udp(1000, 2000, bytes(30)))
    frames = [eth(payload, **{where: m}) for m in macs] + [eth(payload, **{where: macs[2]})] * 3
    what = {"src": "came from more than 2 different link-layer sources (a source",
            "dst": "went to more than 2 different link-layer destinations (a destination"}[where]
    for a in _plain_and_tagged(frames):
        (f,) = a.flows
        assert f.packets == 6
        assert f.initiator_concealed == (f"4 frames {what} MAC is the sender's to choose)",)


# --------------------------------------------------------------------------------------------
# Policy


def _judge(frames, policy=POLICY, **kw):
    a = run(frames, **kw)
    return a, evaluate(load_policy(policy), a)


def test_telemetry_connection_violates_with_sni_in_why():
    frames = tls_connection("203.0.113.5", "telemetry.vendor.example")
    _, j = _judge(frames)
    assert j.verdict == "FAIL"
    (v,) = j.violations
    assert v.why == "TCP to 203.0.113.5:443 (SNI telemetry.vendor.example) matches no allow rule"
    assert v.as_dict() == {
        "proto": "tcp", "src": BOARD, "dst": "203.0.113.5", "sport": 40000, "dport": 443,
        "names": ["telemetry.vendor.example"], "packets": len(frames),
        "bytes": sum(map(len, frames)), "first_seen": "2023-11-14T22:13:20.000000000Z",
        "last_seen": iso_ns(T0 + (len(frames) - 1) * 1_000_000), "why": v.why}
    assert v["why"] == v.why


def test_dns_query_for_unlisted_name_is_a_violation():
    _, j = _judge(_dns_queries(["telemetry.vendor.example"]))
    assert [v.why for v in j.violations] == \
           ["DNS query for telemetry.vendor.example (not in allowed names)"]
    assert j.violations[0].names == ("telemetry.vendor.example",)


def test_dns_rule_allows_the_query_and_the_flow_to_the_resolved_address():
    frames = (_dns_queries(["ntp.LAB.example"])
              + [in4(RESOLVER, 17, udp(53, 5000, dns_answer(0, "ntp.LAB.example", "198.51.100.77")))]
              + [out4("198.51.100.77", 17, udp(40000, 4444, b"x"))])
    _, j = _judge(frames)
    assert j.verdict == "PASS" and j.allowed_flows == 2, j.violations


def _resolved(name: str, addr: str) -> list[bytes]:
    return (_dns_queries([name]) + [in4(RESOLVER, 17, udp(53, 5000, dns_answer(0, name, addr)))])


def test_dns_rule_allows_a_connection_to_what_an_allowed_name_resolved_to():
    _, j = _judge(_resolved("api.lab.example", "203.0.113.5") + tls_connection("203.0.113.5", "api.lab.example"))
    assert j.verdict == "PASS", j.violations
    req = b"GET / HTTP/1.1\r\nHost: files.lab.example:8080\r\n\r\n"
    _, j = _judge(_resolved("files.lab.example", "198.51.100.20") + [out4("198.51.100.20", 6, tcp(40000, 8080, 0x18, req))])
    assert j.verdict == "PASS", j.violations


def test_the_sni_or_host_the_board_sends_does_not_tie_a_destination_to_a_name():
    # the board picks its SNI: an allowed one sent to any address proves nothing about the address
    _, j = _judge(tls_connection("203.0.113.5", "api.lab.example"))
    assert j.verdict == "FAIL"
    assert j.violations[0].why == "TCP to 203.0.113.5:443 (SNI api.lab.example) matches no allow rule"
    req = b"GET / HTTP/1.1\r\nHost: files.lab.example:8080\r\n\r\n"
    _, j = _judge([out4("198.51.100.20", 6, tcp(40000, 8080, 0x18, req))])
    assert j.verdict == "FAIL"


def test_an_sni_nobody_allowed_behind_an_allowed_name_is_a_violation():
    # domain fronting: resolve an allowed name, then ask the same address for another host
    _, j = _judge(_resolved("api.lab.example", "203.0.113.5") + tls_connection("203.0.113.5", "c2.evil.example"))
    assert j.verdict == "FAIL"
    assert "SNI c2.evil.example" in j.violations[0].why


def test_ip_rule_with_port_list_and_range():
    policy = {"allow": [{"proto": "udp", "dst": ["192.0.2.10", "198.51.100.0/24"],
                         "dport": [123, "5000-5010"]}]}
    frames = [out4("192.0.2.10", 17, udp(1000, 123, bytes(48))),
              out4("198.51.100.9", 17, udp(1001, 5004, b"m")),
              out4("198.51.100.9", 17, udp(1002, 5011, b"m")),
              out4("198.51.100.9", 6, tcp(1003, 5004, 0x02))]
    _, j = _judge(frames, policy)
    assert [(v.proto, v.dport) for v in j.violations] == [("udp", 5011), ("tcp", 5004)]


def test_ipv6_cidr_rule():
    policy = {"allow": [{"proto": "tcp", "dst": "2001:db8:1::/48", "dport": 443}]}
    frames = [eth(ipv6("2001:db8::2", "2001:db8:1::5", 6, tcp(40000, 443, 0x02)), 0x86DD),
              eth(ipv6("2001:db8::2", "2001:db8:2::5", 6, tcp(40001, 443, 0x02)), 0x86DD)]
    _, j = _judge(frames, policy)
    assert [v.dst for v in j.violations] == ["2001:db8:2::5"]
    assert j.violations[0].why == "TCP to [2001:db8:2::5]:443 matches no allow rule"


def test_icmp_rule_and_icmp_violation_names_payload_sizes():
    frames = [out4("192.0.2.1", 1, icmp_echo(8, 1, 1, bytes(56))),
              out4("198.51.100.66", 1, icmp_echo(8, 2, 1, bytes(900)))]
    _, j = _judge(frames, {"allow": [{"icmp": True, "dst": "192.0.2.1"}]})
    (v,) = j.violations
    assert v.why == "ICMP echo request to 198.51.100.66 (payload sizes 900) matches no allow rule"


def test_ethertype_rule_allows_lldp():
    frames = [eth(bytes(40), 0x88CC)]
    assert _judge(frames)[1].verdict == "FAIL"
    assert _judge(frames, {"allow": [{"ethertype": 0x88CC}]})[1].verdict == "PASS"


@pytest.mark.parametrize("doc", [None, {}, {"allow": []}, {"allow": None}])
def test_empty_or_missing_allow_list_allows_nothing(doc):
    _, j = _judge([out4("192.0.2.10", 17, udp(1000, 123, bytes(48)))], doc)
    assert j.verdict == "FAIL" and len(j.violations) == 1


@pytest.mark.parametrize("rule,text", [
    ({"dst": "0.0.0.0/0"}, "0.0.0.0/0 matches every address"),
    ({"proto": "tcp", "dst": "::/0"}, "::/0 matches every address"),
    ({"dns": "*"}, "'*' matches every name"),
    ({"dns": ["*.lab.example", "*.*"]}, "'*.*' matches every name"),
    ({"proto": "tcp"}, "allows every destination"),
    ({"proto": "udp", "dport": "1-65535"}, "every port to every destination"),
])
def test_allow_everything_is_rejected_naming_the_rule(rule, text):
    with pytest.raises(PolicyError) as ei:
        load_policy({"allow": [{"dns": "*.lab.example"}, rule]})
    assert "allow rule 2" in str(ei.value) and text in str(ei.value)


@pytest.mark.parametrize("doc,key", [
    ({"allow": [], "allow_all": True}, "'allow_all'"),
    ({"allow": [{"dns": "*.lab.example", "port": 53}]}, "'port'"),
])
def test_unknown_keys_are_rejected_naming_the_key(doc, key):
    with pytest.raises(PolicyError, match=key):
        load_policy(doc)


@pytest.mark.parametrize("rule,text", [
    ({"proto": "udp", "dst": "192.0.2.1", "dport": 70000}, "port 70000"),
    ({"proto": "udp", "dst": "192.0.2.1", "dport": "9-1"}, "is empty"),
    ({"proto": "udp", "dst": "192.0.2.1", "dport": "a-b"}, "not a port"),
    ({"proto": "foo", "dst": "192.0.2.1"}, "proto 'foo' unknown"),
    ({"icmp": "yes", "dst": "192.0.2.1"}, "icmp must be true or false"),
    ({"icmp": True, "dport": 8}, "dport applies only to"),
    ({"dst": "192.0.2.300"}, "not an address or CIDR"),
    ("udp 123", "expected a mapping"),
])
def test_invalid_rule_values_rejected(rule, text):
    with pytest.raises(PolicyError, match=text):
        load_policy({"allow": [rule]})


def test_housekeeping_allowed_by_default_and_can_be_turned_off():
    frames = [eth(arp(1, BOARD, RESOLVER), 0x0806, dst=b"\xff" * 6)]
    _, j = _judge(frames)
    assert j.verdict == "PASS" and j.housekeeping_flows == 1
    _, j = _judge(frames, {**POLICY, "link_local_housekeeping": False})
    assert j.verdict == "FAIL" and "arp housekeeping not allowed" in j.violations[0].why


def test_verdict_error_when_frames_not_decoded_even_with_violations():
    a, j = _judge(tls_connection("203.0.113.5", "t.example") + [eth(b"\x45\x00")])
    assert j.verdict == "ERROR" and j.errors == ("1 frame not decoded",)
    assert j.violations  # still reported


def test_verdict_error_when_capture_truncated():
    data = pcapng(tls_connection("203.0.113.5", "api.lab.example"))
    a = analyze(read_capture(data[:-9]))
    j = evaluate(load_policy(POLICY), a)
    assert a.capture_data_lost and j.verdict == "ERROR"
    assert "truncated" in j.reason


def test_verdict_error_when_capture_dropped_packets():
    a = analyze(read_capture(pcapng([out4("192.0.2.10", 17, udp(1, 123, b""))], stats=(5, 2))))
    j = evaluate(load_policy(POLICY), a)
    assert a.stats == CaptureStats(5, 2) and j.verdict == "ERROR"
    assert "capture dropped 2 packets" in j.errors


def test_verdict_pass_with_only_allowed_traffic():
    frames = [out4("192.0.2.10", 17, udp(40000, 123, bytes(48))),
              in4("192.0.2.10", 17, udp(123, 40000, bytes(48)))]
    _, j = _judge(frames)
    assert (j.verdict, j.violations, j.allowed_flows) == ("PASS", (), 1)


def test_dns_tunnel_suspect_is_a_violation_even_under_an_allowed_name():
    import hashlib
    names = [hashlib.md5(bytes([i])).hexdigest() + ".lab.example" for i in range(35)]
    frames = _dns_queries(names)
    _, j = _judge(frames)
    tunnel = [v for v in j.violations if v.why.startswith("DNS tunnel suspected under lab.example")]
    assert len(tunnel) == 1 and tunnel[0].packets == 35
    assert [v for v in j.violations if v not in tunnel] == []  # the names themselves are allowed
    _, j = _judge(frames, {**POLICY, "dns_tunnel_check": False})
    assert j.verdict == "PASS"


def test_garbage_on_port_53_is_not_allowed_by_dns_names():
    _, j = _judge([out4(RESOLVER, 17, udp(5000, 53, b"\x01\x02\x03 exfil"))])
    assert j.violations[0].why.startswith(f"UDP to {RESOLVER}:53 carried 1 payload(s) that are not DNS "
                                          f"as a client sends it (payload on a DNS port is not DNS: ")
    assert j.violations[0].why.endswith(" and matches no allow rule")


def test_board_filter_judges_only_flows_the_board_starts():
    frames = [eth(ipv4("10.0.0.99", "198.51.100.1", 17, udp(1, 2, b"x")), src=GW_MAC),
              out4("198.51.100.1", 17, udp(3, 4, b"y"))]
    _, j = _judge(frames, {**POLICY, "board": [BOARD]}, if_mac=None)
    assert [v.src for v in j.violations] == [BOARD] and j.not_judged_flows == 1
    _, j = _judge(frames, {**POLICY, "board": ["02:00:00:00:00:02"]}, if_mac=None)
    assert [v.src for v in j.violations] == [BOARD]


def test_egress_report_json_shape():
    frames = _dns_queries(["telemetry.vendor.example"]) + [b"\x00" * 10]
    a, j = _judge(frames)
    doc = egress_report_json(a, j)
    assert set(doc) == {"packets", "flows", "flow_count", "violations", "violation_count", "anomalies",
                        "identity", "board_addresses"}
    assert doc["packets"] == 2 and len(doc["flows"]) == 1
    assert doc["violations"][0]["why"] == "DNS query for telemetry.vendor.example (not in allowed names)"
    assert doc["anomalies"] == ["frame 2: Ethernet header truncated at offset 0"]
    json.dumps(doc)


def test_policy_files_are_read_above_formats_and_bad_files_named(tmp_path):
    p = tmp_path / "egress.yaml"
    p.write_text("allow:\n  - {proto: udp, dst: 192.0.2.10/32, dport: 123}\n"
                 "  - {dns: \"*.lab.example\"}\nlink_local_housekeeping: true\n")
    pol, kind = load_egress_policy(str(p))
    assert isinstance(pol, EgressPolicy) and len(pol.rules) == 2 and kind == "policy file"
    assert pol.allows_name("a.LAB.example.") and not pol.allows_name("lab.example")
    p.write_text("allow: [\n")
    with pytest.raises(PolicyError, match="egress.yaml"):
        load_egress_policy(str(p))
    p.write_text("allow:\n  - {dns: '*'}\n")
    with pytest.raises(PolicyError, match=r"egress.yaml: allow rule 1"):
        load_egress_policy(str(p))
    import harness.formats.egress_policy as formats_module
    assert not hasattr(formats_module, "load_policy_file")


def test_dns_tunnel_suspect_is_reported_when_the_board_is_named_by_its_mac_only():
    """DNS queries carry no MAC: a MAC-only `board:` must not make tunnel suspects vanish."""
    import hashlib
    names = [hashlib.md5(bytes([i])).hexdigest() + ".lab.example" for i in range(35)]
    _, j = _judge(_dns_queries(names), {**POLICY, "board": ["02:00:00:00:00:02"]})
    tunnel = [v for v in j.violations if v.why.startswith("DNS tunnel suspected under lab.example")]
    assert len(tunnel) == 1 and tunnel[0].packets == 35
    assert j.verdict == "FAIL"


@pytest.mark.parametrize("rules,text", [
    ([{"dst": "0.0.0.0/1"}, {"dst": "128.0.0.0/1"}],
     "allow rules 1 {dst: 0.0.0.0/1} and 2 {dst: 128.0.0.0/1} together allow every IPv4 address"),
    ([{"proto": "tcp", "dst": "0.0.0.0/1", "dport": 443}, {"proto": "tcp", "dst": "128.0.0.0/1", "dport": 443}],
     "every IPv4 address for tcp port 443"),
    ([{"proto": "udp", "dst": "::/1"}, {"proto": "udp", "dst": "8000::/1"}], "every IPv6 address for udp port 0"),
    ([{"dst": "0.0.0.0/1"}, {"proto": "tcp", "dst": "128.0.0.0/1"}], "every IPv4 address for tcp port 0"),
    ([{"proto": "tcp", "dst": "0.0.0.0/1", "dport": "1-100"},
      {"proto": "tcp", "dst": "128.0.0.0/1", "dport": "50-200"}], "for tcp port 50"),
    ([{"proto": "udp", "dport": 123}], "allow rule 1 {proto: udp, dport: 123} allows every IPv4 address for udp port 123"),
    ([{"icmp": True}], "allow rule 1 {icmp: True} allows every IPv4 address for icmp"),
    ([{"dst": ["0.0.0.0/2", "64.0.0.0/2", "128.0.0.0/2", "192.0.0.0/2"], "proto": 47}],
     "every IPv4 address for gre"),
])
def test_rules_that_together_allow_everything_are_refused(rules, text):
    with pytest.raises(PolicyError) as ei:
        load_policy({"allow": [*rules, {"dns": "*.lab.example"}]})
    assert text in str(ei.value) and "allowing everything is not possible" in str(ei.value)


@pytest.mark.parametrize("rules", [
    [{"proto": "tcp", "dst": "0.0.0.0/1"}, {"proto": "udp", "dst": "128.0.0.0/1"}],
    [{"proto": "tcp", "dst": "0.0.0.0/1", "dport": 443}, {"proto": "tcp", "dst": "128.0.0.0/1", "dport": 80}],
    [{"dst": "0.0.0.0/1"}, {"dst": "128.0.0.0/2"}],
    [{"proto": "udp", "dst": "192.0.2.123/32", "dport": 123}, {"proto": "arp"}, {"ethertype": 0x88CC}],
])
def test_rules_that_leave_addresses_out_load(rules):
    assert len(load_policy({"allow": rules}).rules) == len(rules)


@pytest.mark.parametrize("pattern", ["*.com", "[a-z]*", "*com*", "ntp?", "*.*.example", "*.ex?mple", "x.*"])
def test_dns_patterns_too_wide_to_name_a_domain_are_refused(pattern):
    with pytest.raises(PolicyError, match="too wide|matches every name"):
        load_policy({"allow": [{"dns": pattern}]})


@pytest.mark.parametrize("pattern", ["*.lab.example", "ntp.example.org", "host?.lab.example", "localhost"])
def test_dns_patterns_naming_a_domain_load(pattern):
    assert load_policy({"allow": [{"dns": pattern}]}).rules[0].dns == (pattern,)
