"""Whose frame is it: the egress judgement takes ownership from the link layer, never from ports.

Every frame that does not come from the capture side's MAC (the pcapng's if_MACaddr) is the
board's, whatever its addresses or ports claim; a flow belongs to whoever sent its first frame;
a board frame whose source address is not the board's own is a finding of its own.
"""

from __future__ import annotations

import pytest

from harness.formats.egress_policy import judge, load_policy
from harness.formats.flows import analyze_bytes

from test_flows_policy import (
    BOARD, BOARD_MAC, GW_MAC, POLICY, RESOLVER, arp, dns_answer, dns_query, eth, icmp_echo, in4, ipv4,
    out4, pcapng, tcp, udp,
)

NTP = "192.0.2.10"   # POLICY allows udp to 192.0.2.10:123
OUTSIDE = "203.0.113.77"
BOARD_ARP = eth(arp(1, BOARD, RESOLVER), 0x0806, dst=b"\xff" * 6)


def _judge(frames, policy=POLICY, **kw):
    return judge(load_policy(policy), analyze_bytes(pcapng(frames, **kw)))


def _forged(src: str, sport: int, dst: str, dport: int, payload: bytes = bytes(48)) -> bytes:
    """A frame the board puts on the wire (its MAC) with a source address that is not its own."""
    return eth(ipv4(src, dst, 17, udp(sport, dport, payload)))


def test_udp_from_a_forged_ntp_server_address_to_outside_is_the_boards_flow_and_forged():
    j = _judge([BOARD_ARP, _forged(NTP, 123, OUTSIDE, 40000)])
    assert j.outcome == "FAIL" and j.board_addresses == (BOARD,)
    (v,) = j.violations
    assert (v.src, v.sport, v.dst, v.dport) == (NTP, 123, OUTSIDE, 40000)
    assert "forged source address: the board sent frames as 192.0.2.10:123" in v.why
    assert "matches no allow rule" in v.why


def test_a_forged_source_is_a_finding_even_when_a_rule_allows_the_flow():
    j = _judge([BOARD_ARP, _forged("198.51.100.1", 5555, NTP, 123)])
    (v,) = j.violations
    assert v.why.startswith("UDP to 192.0.2.10:123: forged source address") and "allow rule" not in v.why


def test_without_an_arp_claim_the_first_source_the_board_used_is_its_own():
    j = _judge([out4(NTP, 17, udp(40000, 123, bytes(48))), _forged(NTP, 123, OUTSIDE, 40001)])
    assert j.board_addresses == (BOARD,)
    assert [v.src for v in j.violations] == [NTP] and "forged source" in j.violations[0].why


def test_a_board_filter_by_address_does_not_hide_a_forged_source_when_the_mac_is_known():
    j = _judge([BOARD_ARP, _forged(NTP, 123, OUTSIDE, 40000)], {**POLICY, "board": [BOARD]})
    assert j.outcome == "FAIL" and j.not_judged_flows == 0 and "forged source" in j.violations[0].why


def test_a_board_named_by_mac_on_a_tap_recording_owns_its_forged_frames():
    j = _judge([BOARD_ARP, _forged(NTP, 123, OUTSIDE, 40000)], {**POLICY, "board": [BOARD_MAC.hex(":")]},
               if_mac=None)
    assert j.outcome == "FAIL" and "forged source address" in j.violations[0].why


def test_a_syn_ack_nobody_asked_for_is_a_flow_the_board_started():
    j = _judge([BOARD_ARP, out4(OUTSIDE, 6, tcp(443, 51000, 0x12, b"data"))])
    (v,) = j.violations
    assert (v.src, v.sport, v.dst, v.dport) == (BOARD, 443, OUTSIDE, 51000)


def test_an_echo_reply_answering_no_request_is_judged_as_a_flow():
    frames = [out4("198.51.100.7", 1, icmp_echo(0, 7, n, b"RPL1" + bytes(40))) for n in range(3)]
    j = _judge(frames)
    (v,) = j.violations
    assert v.why == ("ICMP echo reply answering no request to 198.51.100.7 (payload sizes 44) matches "
                     "no allow rule")
    assert v.packets == 3


def test_an_echo_reply_answers_only_a_request_the_other_side_sent():
    request, reply = out4("198.51.100.7", 1, icmp_echo(8, 1, 1, bytes(8))), in4("198.51.100.7", 1, icmp_echo(0, 1, 1, bytes(8)))
    a = analyze_bytes(pcapng([request, reply]))
    (f,) = a.flows
    assert f.sport == 8 and f.packets == 2 and f.responder_macs == (GW_MAC.hex(":"),)


def test_the_boards_own_forged_dns_answer_names_no_address_and_is_forged():
    """A board answering its own query (as the resolver) must not make a later flow 'named'."""
    policy = {"allow": [{"dns": "*.lab.example"}]}
    fake = eth(ipv4(RESOLVER, BOARD, 17, udp(53, 5555, dns_answer(7, "ntp.lab.example", "203.0.113.66"))),
               dst=BOARD_MAC)  # sent by the board (its MAC), in the resolver's name
    frames = [BOARD_ARP, out4(RESOLVER, 17, udp(5555, 53, dns_query(7, "ntp.lab.example"))), fake,
              out4("203.0.113.66", 6, tcp(40000, 443, 0x02))]
    a = analyze_bytes(pcapng(frames))
    assert a.resolutions == ()
    j = judge(load_policy(policy), a)
    whys = [v.why for v in j.violations]
    assert any("in the answering direction as 10.0.0.1:53" in w for w in whys), whys
    assert "TCP to 203.0.113.66:443 matches no allow rule" in whys


def test_the_capture_sides_answer_names_the_address():
    policy = {"allow": [{"dns": "*.lab.example"}]}
    frames = [BOARD_ARP, out4(RESOLVER, 17, udp(5555, 53, dns_query(7, "ntp.lab.example"))),
              in4(RESOLVER, 17, udp(53, 5555, dns_answer(7, "ntp.lab.example", "203.0.113.66"))),
              out4("203.0.113.66", 6, tcp(40000, 443, 0x02))]
    j = _judge(frames, policy)
    assert j.outcome == "PASS", j.violations


def test_without_a_capture_mac_or_a_board_the_judgement_cannot_pass():
    j = _judge([out4(NTP, 17, udp(40000, 123, bytes(48)))], if_mac=None)
    assert j.outcome == "ERROR" and "cannot tell which frames the board sent" in j.errors[0]


def test_a_raw_ip_recording_falls_back_to_the_boards_addresses_and_says_so():
    frames = [ipv4(BOARD, NTP, 17, udp(40000, 123, bytes(48))), ipv4(NTP, OUTSIDE, 17, udp(123, 40000, b"x"))]
    j = judge(load_policy({**POLICY, "board": [BOARD]}), analyze_bytes(pcapng(frames, linktype=101)))
    assert j.outcome == "PASS" and j.not_judged_flows == 1
    assert "forged source address cannot be seen" in j.identity


@pytest.mark.parametrize("src_mac", [GW_MAC, bytes.fromhex("02aabbccddee")])
def test_the_boards_frames_are_judged_whatever_mac_they_carry(src_mac):
    """From the capture side's MAC only ARP/ND/ICMP errors are left out; any other MAC is the board's."""
    frame = eth(ipv4(BOARD, OUTSIDE, 17, udp(40000, 9999, b"x")), src=src_mac)
    j = _judge([BOARD_ARP, frame])
    assert [v.dst for v in j.violations] == [OUTSIDE]
