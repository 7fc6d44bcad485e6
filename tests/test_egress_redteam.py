"""A lying board's ways to hide data from the egress check, each one now judged.

Each test crafts the frames a misbehaving board would send (the capture side is the gateway, its
MAC the pcapng's if_MACaddr, as in attestlab's own captures) next to an allowed NTP request, and
shows the capture no longer passes. The class each one stands for is fixed where the data is read
(harness/formats/netproto.py, flows.py, egress_policy.py), not for the example: every byte a
board puts on the wire is either judged or makes the capture fail.
"""

from __future__ import annotations

import io
import socket
import struct

import pytest

from harness.formats.egress_policy import judge, load_policy
from harness.formats.flows import analyze_bytes
from harness.formats.pcap import PcapngWriter

from test_flows_policy import BOARD, BOARD_MAC, GW_MAC, POLICY, RESOLVER, dns_name, eth, ipv4, ipv6, out4, pcapng, udp
from test_egress_housekeeping import HOUSEKEEPING, LL, a6, icmp6, mld2, na, ns, sol

NTP = "192.0.2.10"   # POLICY allows udp to 192.0.2.10:123 and DNS names under *.lab.example
SECRET = b"ssh_host_key=AAAAC3NzaC1lZDI1NTE5AAAAIOr8YpUq2s7b1mDLc0Zq4"
BCAST = b"\xff" * 6


def ntp_request() -> bytes:
    return out4(NTP, 17, udp(40000, 123, b"\x23" + bytes(47)))


def arp_frame(op: int, sha: bytes, spa: str, tha: bytes, tpa: str, *, src: bytes, dst: bytes,
              extra: bytes = b"") -> bytes:
    body = (struct.pack("!HHBBH", 1, 0x0800, 6, 4, op) + sha + socket.inet_aton(spa) + tha
            + socket.inet_aton(tpa) + extra)
    return dst + src + b"\x08\x06" + body


BOARD_ARP = arp_frame(1, BOARD_MAC, BOARD, bytes(6), RESOLVER, src=BOARD_MAC, dst=BCAST)


def outcome(frames: list[bytes], policy: dict = POLICY):
    a = analyze_bytes(pcapng(frames))
    return judge(load_policy(policy), a), a


def test_the_baseline_passes():
    j, _ = outcome([BOARD_ARP, ntp_request()])
    assert j.outcome == "PASS", (j.violations, j.errors)


# ---------------------------------------------------------------------------------------------
# ARP: the board's answer to the harness's own ARP request is the board's frame, judged


def test_an_arp_reply_carrying_data_inside_the_harness_arp_flow_is_judged():
    host_asks = arp_frame(1, GW_MAC, RESOLVER, bytes(6), BOARD, src=GW_MAC, dst=BCAST)
    reply = arp_frame(2, BOARD_MAC, BOARD, GW_MAC, RESOLVER, src=BOARD_MAC, dst=GW_MAC, extra=SECRET * 20)
    j, _ = outcome([host_asks, reply, ntp_request()])
    assert j.outcome == "FAIL", j
    assert "ARP between 10.0.0.2 and 10.0.0.1" in j.violations[0].why


def test_an_arp_request_with_data_in_its_target_hardware_address_is_not_housekeeping():
    leak = arp_frame(1, BOARD_MAC, BOARD, SECRET[:6], RESOLVER, src=BOARD_MAC, dst=BCAST)
    j, a = outcome([leak, ntp_request()])
    assert [f.housekeeping for f in a.flows if f.proto == "arp"] == [None]
    assert j.outcome == "FAIL"


def test_an_arp_reply_naming_another_asker_than_its_destination_is_not_housekeeping():
    leak = arp_frame(2, BOARD_MAC, BOARD, SECRET[:6], RESOLVER, src=BOARD_MAC, dst=GW_MAC)
    j, _ = outcome([BOARD_ARP, leak, ntp_request()])
    assert j.outcome == "FAIL"


# ---------------------------------------------------------------------------------------------
# Neighbour discovery and MLD: every field is the sender's own or fixed by the RFC


def test_a_solicitation_whose_link_layer_option_is_not_the_senders_mac_is_not_housekeeping():
    frame = ns(LL, sol("fe80::1"), "fe80::1", bytes([1, 1]) + SECRET[:6])
    j, a = outcome([BOARD_ARP, frame, ntp_request()])
    assert [f.housekeeping for f in a.flows if f.proto == "icmpv6"] == [None]
    assert j.outcome == "FAIL"


def test_an_advertisement_whose_target_link_layer_option_is_not_the_senders_mac_is_not_housekeeping():
    frame = na(LL, "ff02::1", LL, opts=bytes([2, 1]) + SECRET[:6])
    j, _ = outcome([BOARD_ARP, frame, ntp_request()])
    assert j.outcome == "FAIL"


def test_an_mldv2_report_with_source_addresses_carrying_data_is_not_housekeeping():
    sources = [SECRET[i:i + 16].ljust(16, b"\0") for i in range(0, 48, 16)]
    body = struct.pack("!HH", 0, 1) + struct.pack("!BBH", 1, 0, len(sources)) + a6("ff0e::1234") + b"".join(sources)
    frame = icmp6(LL, "ff02::16", 143, body, 1)
    j, a = outcome([BOARD_ARP, frame, ntp_request()])
    assert [f.housekeeping for f in a.flows if f.proto == "icmpv6"] == [None]
    assert j.outcome == "FAIL"


def _hop_by_hop(options: bytes, nh: int = 58) -> bytes:
    body = bytes([nh, 0]) + options
    body += bytes((-len(body)) % 8)
    return bytes([nh, len(body) // 8 - 1]) + body[2:]


def _mld_behind(ext: bytes, first: int = 0) -> bytes:
    report = struct.pack("!BBHHH", 143, 0, 0, 0, 1) + struct.pack("!BBH", 4, 0, 0) + a6("ff02::1:ff10:2")
    return eth(ipv6(LL, "ff02::16", first, ext + report, hlim=1), 0x86DD, dst=bytes.fromhex("333300000016"))


def test_an_mld_report_behind_linuxs_router_alert_option_is_housekeeping():
    frame = _mld_behind(_hop_by_hop(bytes([5, 2, 0, 0, 1, 0])))
    j, a = outcome([BOARD_ARP, frame, ntp_request()])
    assert [f.housekeeping for f in a.flows if f.proto == "icmpv6"] == ["mld"]
    assert j.outcome == "PASS", j.violations


@pytest.mark.parametrize("options", [
    bytes([5, 2, 0, 0, 1, 34]) + SECRET[:34],       # PadN carrying data
    bytes([5, 2, 0, 0, 0x3E, 32]) + SECRET[:32],    # an option no host sends, skippable by routers
])
def test_an_mld_report_behind_a_hop_by_hop_header_carrying_data_is_not_housekeeping(options):
    frame = _mld_behind(_hop_by_hop(options))
    j, a = outcome([BOARD_ARP, frame, ntp_request()])
    assert [f.housekeeping for f in a.flows if f.proto == "icmpv6"] == [None]
    assert j.outcome == "FAIL"


def test_a_solicitation_behind_a_destination_options_header_is_not_housekeeping():
    dest_opts = _hop_by_hop(bytes([1, 36]) + SECRET[:36])
    body = struct.pack("!BBHI", 135, 0, 0, 0) + a6("fe80::1") + bytes([1, 1]) + BOARD_MAC
    frame = eth(ipv6(LL, sol("fe80::1"), 60, dest_opts + body, hlim=255), 0x86DD)
    j, a = outcome([BOARD_ARP, frame, ntp_request()])
    assert [f.housekeeping for f in a.flows if f.proto == "icmpv6"] == [None]
    assert j.outcome == "FAIL"


def _igmp_report(options: bytes) -> bytes:
    body = struct.pack("!BBH4s", 0x16, 0, 0, socket.inet_aton("224.0.0.251"))
    return eth(ipv4(BOARD, "224.0.0.251", 2, body, ttl=1, options=options), dst=bytes.fromhex("01005e0000fb"))


def test_an_igmp_report_with_the_router_alert_option_is_housekeeping():
    j, a = outcome([BOARD_ARP, _igmp_report(bytes([148, 4, 0, 0])), ntp_request()])
    assert [f.housekeeping for f in a.flows if f.proto == "igmp"] == ["igmp"]
    assert j.outcome == "PASS", j.violations


@pytest.mark.parametrize("options", [
    bytes([148, 4, 0, 0, 0x99, 32]) + SECRET[:30],       # an unknown option carrying data
    bytes([148, 4, 0, 0, 0]) + SECRET[:31],              # bytes after the end-of-options marker
])
def test_an_igmp_report_with_ip_options_carrying_data_is_not_housekeeping(options):
    j, a = outcome([BOARD_ARP, _igmp_report(options), ntp_request()])
    assert [f.housekeeping for f in a.flows if f.proto == "igmp"] == [None]
    assert j.outcome == "FAIL"


def test_the_existing_housekeeping_examples_stay_housekeeping():
    for name, (frame, kind) in HOUSEKEEPING.items():
        j, a = outcome([frame])
        assert [f.housekeeping for f in a.flows] == [kind], name


# ---------------------------------------------------------------------------------------------
# Bytes no decoder reads: the Ethernet trailer after the IP datagram


def test_data_after_the_ip_datagram_of_an_allowed_flow_is_a_violation():
    j, _ = outcome([BOARD_ARP, ntp_request() + SECRET * 8])
    assert j.outcome == "FAIL"
    assert "bytes after the IP datagram" in j.violations[0].why


def test_data_after_the_ip_datagram_of_a_flow_seen_before_is_still_seen():
    # the second frame of a known flow takes the fast path: it must not skip the trailer
    j, _ = outcome([BOARD_ARP, ntp_request(), ntp_request(), ntp_request() + SECRET])
    assert j.outcome == "FAIL"


def test_data_after_the_ipv6_datagram_of_housekeeping_is_a_violation():
    j, _ = outcome([BOARD_ARP, mld2() + SECRET, ntp_request()])
    assert j.outcome == "FAIL"


def test_zero_padding_to_the_minimum_frame_size_is_not_data():
    short = out4(NTP, 17, udp(40000, 123, b""))   # eth() pads it to 60 bytes with zeros
    assert len(short) == 60
    j, _ = outcome([BOARD_ARP, ntp_request(), short])
    assert j.outcome == "PASS", j.violations


def test_non_zero_padding_of_a_short_frame_is_data():
    short = out4(NTP, 17, udp(40000, 123, b""))
    leaky = short[:42] + SECRET[:18]
    j, _ = outcome([BOARD_ARP, ntp_request(), leaky])
    assert j.outcome == "FAIL"


# ---------------------------------------------------------------------------------------------
# VLAN tags: the allowed address on another LAN is another host


def test_an_allowed_flow_tagged_for_another_vlan_is_a_violation():
    tagged = eth(ipv4(BOARD, NTP, 17, udp(40000, 123, b"\x23" + bytes(47))), vlan=42)
    j, _ = outcome([BOARD_ARP, ntp_request(), tagged])
    assert j.outcome == "FAIL"
    assert "VLAN 42" in j.violations[0].why


# ---------------------------------------------------------------------------------------------
# DNS: a query for an allowed name carries nothing else


def _query_with(extra_rr: bytes, an: int = 0, ar: int = 1, name: str = "ntp.lab.example") -> bytes:
    msg = struct.pack("!HHHHHH", 9, 0x0100, 1, an, 0, ar) + dns_name(name) + b"\0\x01\0\x01" + extra_rr
    return out4(RESOLVER, 17, udp(41000, 53, msg))


def _txt(name: str, text: bytes) -> bytes:
    rdata = bytes([len(text)]) + text
    return dns_name(name) + struct.pack("!HHIH", 16, 1, 0, len(rdata)) + rdata


def test_a_query_for_an_allowed_name_is_allowed():
    j, _ = outcome([BOARD_ARP, _query_with(b"", ar=0)])
    assert j.outcome == "PASS", j.violations


def test_a_query_for_an_allowed_name_carrying_an_additional_record_is_a_violation():
    j, _ = outcome([BOARD_ARP, _query_with(_txt("leak.evil.example", SECRET))])
    assert j.outcome == "FAIL"


def test_a_query_for_an_allowed_name_carrying_an_answer_is_a_violation():
    j, _ = outcome([BOARD_ARP, _query_with(_txt("ntp.lab.example", SECRET), an=1, ar=0)])
    assert j.outcome == "FAIL"


def test_a_query_with_an_edns_option_carrying_data_is_a_violation():
    opt_data = struct.pack("!HH", 65001, len(SECRET)) + SECRET
    opt = b"\0" + struct.pack("!HHIH", 41, 1232, 0, len(opt_data)) + opt_data
    j, _ = outcome([BOARD_ARP, _query_with(opt)])
    assert j.outcome == "FAIL"


def test_a_query_with_an_ordinary_edns_record_is_allowed():
    cookie = struct.pack("!HH", 10, 8) + bytes(range(8))
    opt = b"\0" + struct.pack("!HHIH", 41, 1232, 0, len(cookie)) + cookie
    j, _ = outcome([BOARD_ARP, _query_with(opt)])
    assert j.outcome == "PASS", j.violations


def test_names_in_an_announcement_the_board_sends_are_all_judged():
    # an mDNS-style response from the board: its answer's name is allowed, its additional's is not
    msg = (struct.pack("!HHHHHH", 0, 0x8400, 0, 1, 0, 1) + _txt("ntp.lab.example", b"ok")
           + _txt("leak.evil.example", SECRET))
    j, _ = outcome([BOARD_ARP, out4(RESOLVER, 17, udp(41000, 53, msg))])
    assert j.outcome == "FAIL"
    assert "leak.evil.example" in j.violations[0].why


def test_an_advertisement_of_an_address_not_the_senders_own_is_not_housekeeping():
    j, a = outcome([BOARD_ARP, na(LL, "ff02::1", "fe80::dead:beef:1", opts=bytes([2, 1]) + BOARD_MAC), ntp_request()])
    assert [f.housekeeping for f in a.flows if f.proto == "icmpv6"] == [None]
    assert j.outcome == "FAIL"


def test_naming_many_neighbours_in_arp_requests_is_not_housekeeping():
    # which addresses a board asks for is its choice: 4 bytes of data each
    asks = [arp_frame(1, BOARD_MAC, BOARD, bytes(6), f"10.0.{i}.{i + 1}", src=BOARD_MAC, dst=BCAST) for i in range(20)]
    j, a = outcome(asks + [ntp_request()])
    assert sum(f.housekeeping == "arp" for f in a.flows) == 16
    assert j.outcome == "FAIL"
    assert "more than 16 distinct neighbours" in " ".join(n for f in a.flows for n in f.notes)


def test_naming_many_groups_in_mld_reports_is_not_housekeeping():
    reports = [mld2(records=((4, f"ff02::1:ff00:{i:x}", 0),)) for i in range(1, 20)]
    j, a = outcome([BOARD_ARP] + reports + [ntp_request()])
    assert [f.housekeeping for f in a.flows if f.proto == "icmpv6"] == [None]
    assert j.outcome == "FAIL"


def test_an_allowed_flow_source_routed_on_to_another_host_is_a_violation():
    lsrr = bytes([131, 7, 4]) + socket.inet_aton("203.0.113.5") + b"\0"   # loose source route, then end
    frame = eth(ipv4(BOARD, NTP, 17, udp(40000, 123, b"\x23" + bytes(47)), options=lsrr))
    j, _ = outcome([BOARD_ARP, frame])
    assert j.outcome == "FAIL"
    assert "source-routed on to 203.0.113.5" in j.violations[0].why


def test_an_ipv6_flow_with_a_routing_header_to_another_host_is_a_violation():
    policy = {"allow": [{"proto": "udp", "dst": "2001:db8::10", "dport": 123}]}
    srh = bytes([17, 2, 4, 1, 0, 0, 0, 0]) + a6("2001:db8:bad::5")   # segment routing, 1 left
    frame = eth(ipv6("2001:db8::2", "2001:db8::10", 43, srh + udp(40000, 123, b"\x23" + bytes(47))), 0x86DD)
    j, _ = outcome([BOARD_ARP, frame], policy)
    assert j.outcome == "FAIL"
    assert "source-routed on to 2001:db8:bad::5" in j.violations[0].why


def test_data_inside_the_ip_packet_after_the_udp_datagram_is_a_violation():
    datagram = udp(40000, 123, b"\x23" + bytes(47)) + SECRET   # UDP length covers only the request
    j, _ = outcome([BOARD_ARP, out4(NTP, 17, datagram)])
    assert j.outcome == "FAIL"
    assert "after the UDP datagram" in j.violations[0].why


def test_a_dns_query_with_bytes_after_its_question_is_a_violation():
    j, _ = outcome([BOARD_ARP, out4(RESOLVER, 17, udp(41000, 53, _query_with(b"", ar=0)[42:] + SECRET))])
    assert j.outcome == "FAIL"


def test_a_recording_cut_short_cannot_hide_a_trailer():
    frame = ntp_request() + SECRET * 4
    a = analyze_bytes(pcapng([BOARD_ARP, frame]))   # whole frame: seen
    assert a.flows[-1].initiator_concealed
    buf = io.BytesIO()
    w = PcapngWriter(buf, if_mac=GW_MAC)
    w.write_packet(1, BOARD_ARP)
    w.write_packet(2, frame[:90], len(frame))          # recorded up to the datagram's end only
    j = judge(load_policy(POLICY), analyze_bytes(buf.getvalue()))
    assert j.outcome == "FAIL"
    assert f"carried {len(frame) - 90} bytes after the IP datagram" in j.violations[0].why


# ---------------------------------------------------------------------------------------------
# Claiming the harness's own addresses


def _with_capture_addresses(frames: list[bytes]) -> bytes:
    buf = io.BytesIO()
    w = PcapngWriter(buf, if_mac=GW_MAC, if_addresses=[f"{RESOLVER}/24", f"{NTP}/32", "fd00::1/64"])
    for i, f in enumerate(frames):
        w.write_packet(1_700_000_000_000_000_000 + i, f)
    return buf.getvalue()


def test_the_pcapng_names_the_capture_sides_addresses():
    a = analyze_bytes(_with_capture_addresses([BOARD_ARP]))
    assert a.capture_addresses == (RESOLVER, NTP, "fd00::1")


def test_a_board_claiming_the_gateways_address_claims_what_is_not_its_own():
    # a gratuitous ARP for the gateway's address (poisoning every neighbour's cache), its own ARP
    # and an allowed NTP request: the gateway's address is the harness's, never the board's
    spoof = arp_frame(2, BOARD_MAC, RESOLVER, BCAST, RESOLVER, src=BOARD_MAC, dst=BCAST)
    frames = [BOARD_ARP, spoof, ntp_request()]
    j = judge(load_policy(POLICY), analyze_bytes(_with_capture_addresses(frames)))
    assert j.outcome == "FAIL"
    assert f"forged source address: the board sent frames as {RESOLVER}" in j.violations[0].why
    assert RESOLVER not in j.board_addresses


def test_an_mdns_query_may_carry_known_answers_whose_names_are_judged():
    policy = {"allow": [{"dns": ["board.lab.example", "svc.lab.example"]}]}
    known = struct.pack("!HHHHHH", 0, 0, 1, 1, 0, 0) + dns_name("svc.lab.example") + b"\0\x0c\0\x01" \
        + _txt("svc.lab.example", b"ok")
    frame = eth(ipv4(BOARD, "224.0.0.251", 17, udp(5353, 5353, known), ttl=255), dst=bytes.fromhex("01005e0000fb"))
    j, _ = outcome([BOARD_ARP, frame], policy)
    assert j.outcome == "PASS", j.violations
    leaky = known[:6] + b"\0\x02" + known[8:] + _txt("leak.evil.example", SECRET)
    frame = eth(ipv4(BOARD, "224.0.0.251", 17, udp(5353, 5353, leaky), ttl=255), dst=bytes.fromhex("01005e0000fb"))
    j, _ = outcome([BOARD_ARP, frame], policy)
    assert j.outcome == "FAIL" and "leak.evil.example" in j.violations[0].why


# ---------------------------------------------------------------------------------------------
# Tried and already caught before this change: kept so that they stay caught


def _dhcp_discover() -> bytes:
    bootp = struct.pack("!BBBBIHH4s4s4s4s16s64s128s", 1, 1, 6, 0, 0x1234, 0, 0x8000, bytes(4), bytes(4),
                        bytes(4), bytes(4), BOARD_MAC.ljust(16, b"\0"), bytes(64), bytes(128))
    options = b"\x63\x82\x53\x63" + bytes([53, 1, 1, 12, len(SECRET[:40])]) + SECRET[:40] + b"\xff"
    return eth(ipv4("0.0.0.0", "255.255.255.255", 17, udp(68, 67, bootp + options)), dst=BCAST)


def _frag(offset8: int, more: bool, payload: bytes, ident: int = 77) -> bytes:
    return eth(ipv4(BOARD, NTP, 17, payload, ident=ident, flags_frag=(0x2000 if more else 0) | offset8))


CAUGHT = {
    "ICMP unreachable from the board carrying data out": (
        out4("203.0.113.5", 1, struct.pack("!BBHI", 3, 3, 0, 0) + SECRET), "FAIL"),
    "DHCP discover carrying data in its hostname option": (_dhcp_discover(), "FAIL"),
    "mDNS query to 224.0.0.251 for a name not allowed": (
        eth(ipv4(BOARD, "224.0.0.251", 17, udp(5353, 5353, _query_with(b"", ar=0, name="board.local")[42:])),
            dst=BCAST), "FAIL"),
    "SSDP to 239.255.255.250": (out4("239.255.255.250", 17, udp(40000, 1900, b"M-SEARCH * HTTP/1.1\r\n\r\n")), "FAIL"),
    "later fragments whose first was never sent": (_frag(8, False, SECRET, ident=99), "FAIL"),
    "a second first fragment naming another port": (_frag(0, True, udp(40000, 4444, SECRET), ident=77), "FAIL"),
    "802.3/LLC frame carrying data": (BCAST + BOARD_MAC + struct.pack("!H", len(SECRET)) + SECRET, "FAIL"),
    "PPPoE discovery": (eth(bytes([0x11, 0x09, 0, 0, 0, len(SECRET)]) + SECRET, 0x8863, dst=BCAST), "FAIL"),
    "LLDP with a payload": (eth(SECRET, 0x88CC, dst=bytes.fromhex("0180c200000e")), "FAIL"),
    "an IPv6 first fragment without its upper-layer header": (
        eth(ipv6(LL, "fe80::1", 44, bytes([60, 0, 0, 1]) + struct.pack("!I", 5) + bytes([17, 5])), 0x86DD), "ERROR"),
}


@pytest.mark.parametrize("name", CAUGHT)
def test_other_ways_out_stay_caught(name):
    frame, verdict = CAUGHT[name]
    first = _frag(0, True, udp(40000, 123, b"\x23" + bytes(47)), ident=77)
    j, _ = outcome([BOARD_ARP, first, frame] if "fragment" in name else [BOARD_ARP, frame])
    assert j.outcome == verdict, (j.violations, j.errors)


def test_a_silent_board_is_an_error_not_a_pass():
    j, _ = outcome([arp_frame(1, GW_MAC, RESOLVER, bytes(6), BOARD, src=GW_MAC, dst=BCAST)])
    assert j.outcome == "ERROR" and "nothing to judge" in j.errors[-1]


def test_a_query_for_an_allowed_name_to_a_resolver_nobody_allowed_is_a_violation():
    # the name is allowed, the destination is a hard-coded outside resolver: on a mirror port the
    # query reaches it, its id, cookie and type carrying what the board likes
    msg = _query_with(b"", ar=0)[42:]
    j, _ = outcome([BOARD_ARP, out4("203.0.113.53", 17, udp(41000, 53, msg))])
    assert j.outcome == "FAIL"
    assert "DNS to a resolver no rule allows" in j.violations[0].why
    allowed = {"allow": POLICY["allow"] + [{"proto": "udp", "dst": "203.0.113.53", "dport": 53}]}
    j, _ = outcome([BOARD_ARP, out4("203.0.113.53", 17, udp(41000, 53, msg))], allowed)
    assert j.outcome == "PASS", j.violations


def test_an_allowed_flow_sent_to_every_host_on_the_link_is_a_violation():
    # unicast IP to the allowed server, but in a broadcast frame: every host on the segment gets it
    frame = eth(ipv4(BOARD, NTP, 17, udp(40000, 123, b"\x23" + bytes(47))), dst=BCAST)
    j, _ = outcome([BOARD_ARP, ntp_request(), frame])
    assert j.outcome == "FAIL"
    assert "went to a broadcast or multicast MAC though addressed to one host" in j.violations[0].why
    multicast = eth(ipv4(BOARD, "224.0.0.251", 17, udp(5353, 5353, b"")), dst=bytes.fromhex("01005e0000fb"))
    assert not analyze_bytes(pcapng([multicast])).flows[0].initiator_concealed


def test_destination_macs_carrying_data_are_a_violation():
    # every frame of the allowed flow to another unicast MAC: 6 bytes a frame for anyone on the wire
    frames = [eth(ipv4(BOARD, NTP, 17, udp(40000, 123, b"\x23" + bytes(47))), dst=b"\x02" + SECRET[i:i + 5])
              for i in range(0, 40, 5)]
    j, _ = outcome([BOARD_ARP] + frames)
    assert j.outcome == "FAIL"
    assert "6 frames went to more than 2 different link-layer destinations" in j.violations[0].why
    j, _ = outcome([BOARD_ARP] + [ntp_request()] * 5)   # one next hop, frame after frame
    assert j.outcome == "PASS", j.violations


def test_source_macs_carrying_data_are_a_violation():
    frames = [eth(ipv4(BOARD, NTP, 17, udp(40000, 123, b"\x23" + bytes(47))), src=b"\x02" + SECRET[i:i + 5])
              for i in range(0, 40, 5)]
    j, _ = outcome([BOARD_ARP, ntp_request()] + frames)
    assert j.outcome == "FAIL"
    assert "7 frames came from more than 2 different link-layer sources" in j.violations[0].why


def test_a_board_rotating_macs_and_addresses_claims_too_many_addresses():
    # each (MAC, address) pair asks for one neighbour once: every flow looks like another host's
    frames = []
    for i in range(12):
        mac = bytes([2, 0, 0, 0, 1, i])
        frames.append(arp_frame(1, mac, f"10.0.0.{100 + i}", bytes(6), f"10.0.0.{200 + i}", src=mac, dst=BCAST))
    j, _ = outcome(frames + [ntp_request()])
    assert j.outcome == "FAIL"
    assert "the board claims 12 addresses on the link (more than 8)" in j.violations[-1].why
