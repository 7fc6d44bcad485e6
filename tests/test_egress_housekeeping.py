"""Link-local housekeeping is exactly what RFC 4861/4862/3810 (and ARP, IGMP) let a host send.

Everything else that looks like it -- a solicitation for an off-link address, an option no host
sends, a router advertisement from a board, a report to a unicast address, bytes after the
message -- is judged as an ordinary flow, and the reference policy does not allow it.
"""

from __future__ import annotations

import socket
import struct

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from harness.formats.egress_policy import judge, load_policy
from harness.formats.flows import analyze_bytes

from test_flows_policy import BOARD, BOARD_MAC, POLICY, RESOLVER, arp, eth, ipv4, ipv6, pcapng

LL = "fe80::5eff:fe10:2"
GW_LL = "fe80::1"
SLLA = bytes([1, 1]) + BOARD_MAC
NONCE = bytes([14, 1]) + bytes(6)


def a6(text: str) -> bytes:
    return socket.inet_pton(socket.AF_INET6, text)


def sol(target: str) -> str:
    return "ff02::1:ff" + a6(target)[13:].hex()[:2] + ":" + a6(target)[14:].hex()


def icmp6(src: str, dst: str, typ: int, body: bytes, hops: int = 255) -> bytes:
    return eth(ipv6(src, dst, 58, struct.pack("!BBH", typ, 0, 0) + body, hlim=hops), 0x86DD)


def ns(src, dst, target, opts=b"", hops=255, reserved=0):
    return icmp6(src, dst, 135, struct.pack("!I", reserved) + a6(target) + opts, hops)


def na(src, dst, target, flags=0x20000000, opts=b""):
    return icmp6(src, dst, 136, struct.pack("!I", flags) + a6(target) + opts)


def rs(src, dst="ff02::2", opts=b""):
    return icmp6(src, dst, 133, bytes(4) + opts)


def mld1(typ, dst, group, src=LL, hops=1, extra=b""):
    return icmp6(src, dst, typ, bytes(4) + a6(group) + extra, hops)


def mld2(dst="ff02::16", records=((4, "ff02::1:ff10:2", 0),), src=LL, hops=1, extra=b""):
    body = struct.pack("!HH", 0, len(records))
    for rtype, group, aux in records:
        body += struct.pack("!BBH", rtype, aux, 0) + a6(group) + bytes(4 * aux)
    return icmp6(src, dst, 143, body + extra, hops)


def igmp(typ, dst, group, ttl=1, extra=b""):
    return eth(ipv4(BOARD, dst, 2, struct.pack("!BBH4s", typ, 0, 0, socket.inet_aton(group)) + extra, ttl=ttl))


def igmp3(records=((4, "224.0.0.251"),), dst="224.0.0.22", extra=b""):
    body = struct.pack("!BBHHH", 0x22, 0, 0, 0, len(records))
    for rtype, group in records:
        body += struct.pack("!BBH4s", rtype, 0, 0, socket.inet_aton(group))
    return eth(ipv4(BOARD, dst, 2, body + extra, ttl=1))


HOUSEKEEPING = {
    "router solicitation from ::": (rs("::"), "nd"),
    "router solicitation with SLLA": (rs(LL, opts=SLLA), "nd"),
    "DAD with nonce": (ns("::", sol(LL), LL, NONCE), "dad"),
    "address resolution of a link-local neighbour": (ns(LL, sol(GW_LL), GW_LL, SLLA), "nd"),
    "unreachability check to the neighbour": (ns(LL, GW_LL, GW_LL, SLLA), "nd"),
    "unsolicited advertisement to all nodes": (na(LL, "ff02::1", LL, opts=bytes([2, 1]) + BOARD_MAC), "nd"),
    "solicited advertisement": (na(LL, GW_LL, LL, flags=0x60000000), "nd"),
    "MLDv1 report": (mld1(131, "ff02::fb", "ff02::fb"), "mld"),
    "MLD done": (mld1(132, "ff02::2", "ff02::fb"), "mld"),
    "MLDv2 report": (mld2(), "mld"),
    "MLDv2 report from ::": (mld2(src="::"), "mld"),
    "IGMPv2 report": (igmp(0x16, "224.0.0.251", "224.0.0.251"), "igmp"),
    "IGMP leave": (igmp(0x17, "224.0.0.2", "224.0.0.251"), "igmp"),
    "IGMPv3 report": (igmp3(), "igmp"),
    "ARP request": (eth(arp(1, BOARD, RESOLVER), 0x0806, dst=b"\xff" * 6), "arp"),
}

BIG_OPTION = bytes([254, 47]) + bytes(374)
NOT_HOUSEKEEPING = {
    "solicitation for an off-link address with a large option": ns(LL, sol("2001:db8:dead::1"), "2001:db8:dead::1", BIG_OPTION),
    "solicitation for an off-link address": ns(LL, sol("2001:db8:dead::1"), "2001:db8:dead::1"),
    "solicitation with an option no host sends": ns(LL, sol(GW_LL), GW_LL, BIG_OPTION),
    "solicitation with a 3-unit link-layer option": ns(LL, sol(GW_LL), GW_LL, bytes([1, 3]) + bytes(22)),
    "solicitation with two link-layer options": ns(LL, sol(GW_LL), GW_LL, SLLA + SLLA),
    "solicitation with data in its reserved word": ns(LL, sol(GW_LL), GW_LL, reserved=0xDEADBEEF),
    "solicitation to someone else's multicast group": ns(LL, "ff02::1", GW_LL),
    "solicitation with hop limit 64": ns(LL, sol(GW_LL), GW_LL, hops=64),
    "DAD carrying a link-layer address": ns("::", sol(LL), LL, SLLA),
    "DAD to a unicast address": ns("::", GW_LL, LL),
    "router advertisement from the board": icmp6(LL, "ff02::1", 134, bytes(12)),
    "redirect from the board": icmp6(LL, GW_LL, 137, bytes(4) + a6(GW_LL) + a6("2001:db8::9")),
    "router solicitation to all nodes": rs(LL, "ff02::1"),
    "router solicitation from :: with a link-layer address": rs("::", opts=SLLA),
    "advertisement from ::": na("::", "ff02::1", LL),
    "unsolicited advertisement with the solicited flag": na(LL, "ff02::1", LL, flags=0x40000000),
    "advertisement with data in the reserved bits": na(LL, "ff02::1", LL, flags=0x20001234),
    "advertisement to an off-link address": na(LL, "2001:db8::5", LL),
    "MLDv1 report to a unicast address": mld1(131, GW_LL, "ff02::fb"),
    "MLDv1 report with bytes after it": mld1(131, "ff02::fb", "ff02::fb", extra=b"exfil!!!"),
    "MLD report of all nodes": mld1(131, "ff02::1", "ff02::1"),
    "MLD query from the board": mld1(130, "ff02::1", "::"),
    "MLDv2 report to all nodes": mld2(dst="ff02::1"),
    "MLDv2 report with hop limit 255": mld2(hops=255),
    "MLDv2 report with auxiliary data": mld2(records=((4, "ff02::fb", 2),)),
    "MLDv2 report with bytes after the records": mld2(extra=b"\xde\xad"),
    "MLDv2 report naming a unicast group": mld2(records=((4, "2001:db8::1", 0),)),
    "MLDv2 report from a global address": mld2(src="2001:db8::2"),
    "IGMP report with a payload": igmp(0x16, "224.0.0.251", "224.0.0.251", extra=b"x" * 40),
    "IGMP report to another group": igmp(0x16, "239.9.9.9", "224.0.0.251"),
    "IGMP report with TTL 64": igmp(0x16, "224.0.0.251", "224.0.0.251", ttl=64),
    "IGMP query from the board": igmp(0x11, "224.0.0.1", "0.0.0.0"),
    "IGMPv3 report with bytes after the records": igmp3(extra=b"\x01\x02\x03\x04"),
    "ARP with data in its padding": eth(arp(1, BOARD, RESOLVER) + b"secret", 0x0806, dst=b"\xff" * 6),
    "ARP for someone else's hardware address": eth(arp(1, BOARD, RESOLVER), 0x0806, src=bytes.fromhex("02aabbccddee")),
}


@pytest.mark.parametrize("name", HOUSEKEEPING)
def test_what_a_host_sends_on_the_link_is_housekeeping(name):
    frame, kind = HOUSEKEEPING[name]
    a = analyze_bytes(pcapng([frame]))
    assert [f.housekeeping for f in a.flows] == [kind]
    j = judge(load_policy(POLICY), a)
    assert j.outcome == "PASS" and j.housekeeping_flows == 1, j.violations


@pytest.mark.parametrize("name", NOT_HOUSEKEEPING)
def test_anything_else_is_judged_as_a_flow(name):
    a = analyze_bytes(pcapng([NOT_HOUSEKEEPING[name]]))
    assert a.undecoded == 0, a.anomalies
    assert [f.housekeeping for f in a.flows] == [None]
    j = judge(load_policy(POLICY), a)
    assert j.outcome == "FAIL" and len(j.violations) == 1, j


def test_the_nd_abuse_boards_solicitation_is_named_as_what_it_is():
    j = judge(load_policy(POLICY), analyze_bytes(pcapng([NOT_HOUSEKEEPING[
        "solicitation for an off-link address with a large option"]])))
    assert j.violations[0].why.startswith("ICMPv6 neighbour solicitation to ff02::1:ff00:1 ")


_SEEDS = [f for f, _k in HOUSEKEEPING.values()] + list(NOT_HOUSEKEEPING.values())


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(_SEEDS), st.lists(st.tuples(st.integers(14, 600), st.integers(0, 255)), max_size=4),
       st.integers(15, 600))
def test_mutated_link_messages_are_housekeeping_only_when_the_rules_hold(frame, edits, cut):
    d = bytearray(frame)
    for pos, val in edits:
        d[pos % len(d)] = val
    a = analyze_bytes(pcapng([bytes(d[:cut])]))
    assert sum(f.packets for f in a.flows) + a.undecoded == 1
    for f in a.flows:
        if f.housekeeping in ("nd", "dad"):
            assert f.proto == "icmpv6" and f.sport in (133, 135, 136)
        elif f.housekeeping == "mld":
            assert f.proto == "icmpv6" and f.sport in (131, 132, 143) and f.dst.startswith("ff")
        elif f.housekeeping == "igmp":
            assert f.proto == "igmp" and f.dst.startswith("224.")
    judge(load_policy(POLICY), a)  # never raises
