"""Small hand-built captures of a board's management link, for the egress probe and CLI tests.

Addresses as the simulated bench has them: the board 192.0.2.2 (MAC 02:00:5e:10:00:02), the
capture side 192.0.2.1 (MAC 02:00:5e:00:00:01, written as the pcapng's if_MACaddr), the lab
NTP server 192.0.2.123. The reference policy allows NTP to 192.0.2.123:123 only.
"""

from __future__ import annotations

import io
import socket
import struct

from harness.formats.pcap import PcapngWriter

from test_flows_policy import client_hello, dns_answer, dns_query, ipv4, tcp, udp

BOARD, BOARD_MAC = "192.0.2.2", bytes.fromhex("02005e100002")
GATEWAY, CAPTURE_MAC = "192.0.2.1", bytes.fromhex("02005e000001")
NTP = "192.0.2.123"
CAPTURE_MAC_TEXT = CAPTURE_MAC.hex(":")
T0 = 1_790_000_000_000_000_000


def eth(payload: bytes, src: bytes, dst: bytes, ethertype: int = 0x0800) -> bytes:
    f = dst + src + struct.pack("!H", ethertype) + payload
    return f + b"\0" * (60 - len(f)) if len(f) < 60 else f


def arp(op: int, sha: bytes, spa: str, tha: bytes, tpa: str) -> bytes:
    body = struct.pack("!HHBBH", 1, 0x0800, 6, 4, op) + sha + socket.inet_aton(spa) + tha + socket.inet_aton(tpa)
    return eth(body, sha, b"\xff" * 6 if op == 1 else tha, 0x0806)


def from_board(dst: str, proto: int, payload: bytes) -> bytes:
    return eth(ipv4(BOARD, dst, proto, payload), BOARD_MAC, CAPTURE_MAC)


def to_board(src: str, proto: int, payload: bytes) -> bytes:
    return eth(ipv4(src, BOARD, proto, payload), CAPTURE_MAC, BOARD_MAC)


def ntp_request() -> bytes:
    return b"\x23" + bytes(47)


def clean_frames() -> list[bytes]:
    """ARP for the NTP server, two NTP requests, and the capture side's ICMP port unreachable
    (a flow the capturing host starts: not the board's)."""
    request = from_board(NTP, 17, udp(40000, 123, ntp_request()))
    unreachable = to_board(NTP, 1, struct.pack("!BBHI", 3, 3, 0, 0) + ipv4(BOARD, NTP, 17, udp(40000, 123, b"")))
    return [arp(1, BOARD_MAC, BOARD, bytes(6), NTP), arp(2, CAPTURE_MAC, NTP, BOARD_MAC, BOARD),
            request, unreachable, from_board(NTP, 17, udp(40000, 123, ntp_request())), unreachable]


def phone_home_frames() -> list[bytes]:
    """DNS lookup of telemetry.acme.example answered by the sinkhole, then TLS to the answer."""
    hello = client_hello("telemetry.acme.example")
    return [
        from_board(GATEWAY, 17, udp(41000, 53, dns_query(7, "telemetry.acme.example"))),
        to_board(GATEWAY, 17, udp(53, 41000, dns_answer(7, "telemetry.acme.example", GATEWAY))),
        from_board(GATEWAY, 6, tcp(42000, 443, 0x02, seq=100)),
        to_board(GATEWAY, 6, tcp(443, 42000, 0x12, seq=500, ack=101)),
        from_board(GATEWAY, 6, tcp(42000, 443, 0x10, seq=101, ack=501)),
        from_board(GATEWAY, 6, tcp(42000, 443, 0x18, hello, seq=101, ack=501)),
        to_board(GATEWAY, 6, tcp(443, 42000, 0x11, seq=501, ack=101 + len(hello))),
    ]


def undecodable_frame() -> bytes:
    """An IPv4 frame whose header is cut short: the analysis cannot say what it was."""
    return CAPTURE_MAC + BOARD_MAC + b"\x08\x00" + b"\x45\x00\x00"


def pcapng(frames: list[bytes], *, if_mac: bytes | None = CAPTURE_MAC, stats: tuple[int, int] | None = None,
           step: int = 250_000_000) -> bytes:
    buf = io.BytesIO()
    w = PcapngWriter(buf, if_name="enp5s0", if_mac=if_mac)
    for i, f in enumerate(frames):
        w.write_packet(T0 + i * step, f)
    if stats is not None:
        w.write_stats(T0 + len(frames) * step, *stats)
    return buf.getvalue()
