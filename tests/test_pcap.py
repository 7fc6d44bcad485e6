"""pcap / pcapng reading and the pcapng writer (harness.formats.pcap)."""

from __future__ import annotations

import io
import shutil
import struct
import subprocess

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from harness.formats.pcap import (
    Capture, CaptureFormatError, CaptureScan, CaptureStats, Packet, PcapngWriter, iter_packets,
    read_capture,
)

TSHARK = shutil.which("tshark")
needs_tshark = pytest.mark.skipif(TSHARK is None, reason="tshark not installed")

T0 = 1_700_000_000_123_456_789  # ns


def frame(n: int, fill: int = 0xAB) -> bytes:
    """A plausible Ethernet/IPv4 frame of n bytes (content irrelevant to the reader)."""
    head = bytes.fromhex("020000000001020000000002") + b"\x08\x00"
    return (head + bytes([fill]) * n)[:n]


def pcap_bytes(records, *, endian: str = "<", nanos: bool = False, linktype: int = 1,
               snaplen: int = 65535, version=(2, 4)) -> bytes:
    """Classic pcap writer for tests: records are (ts_ns, data[, orig_len])."""
    magic = 0xA1B23C4D if nanos else 0xA1B2C3D4
    out = [struct.pack(endian + "IHHiIII", magic, version[0], version[1], 0, 0, snaplen, linktype)]
    for rec in records:
        ts, data = rec[0], rec[1]
        orig = rec[2] if len(rec) > 2 else len(data)
        sec, frac = divmod(ts, 1_000_000_000)
        if not nanos:
            frac //= 1000
        out.append(struct.pack(endian + "IIII", sec, frac, len(data), orig) + data)
    return b"".join(out)


def pcapng_bytes(packets, **kw) -> bytes:
    buf = io.BytesIO()
    w = PcapngWriter(buf, **kw)
    for ts, data in packets:
        w.write_packet(ts, data)
    return buf.getvalue()


# Hand-built pcapng blocks (either byte order) for the reader's less common paths.

def blk(btype: int, body: bytes, e: str = "<") -> bytes:
    body += b"\0" * (-len(body) % 4)
    n = 12 + len(body)
    return struct.pack(e + "II", btype, n) + body + struct.pack(e + "I", n)


def opt(code: int, value: bytes, e: str = "<") -> bytes:
    return struct.pack(e + "HH", code, len(value)) + value + b"\0" * (-len(value) % 4)


def shb(e: str = "<") -> bytes:
    return blk(0x0A0D0D0A, struct.pack(e + "IHHq", 0x1A2B3C4D, 1, 0, -1), e)


def idb(linktype: int = 1, snaplen: int = 0, opts: bytes = b"", e: str = "<") -> bytes:
    if opts:
        opts += opt(0, b"", e)
    return blk(1, struct.pack(e + "HHI", linktype, 0, snaplen) + opts, e)


def epb(iface: int, ts: int, data: bytes, orig: int | None = None, e: str = "<",
        caplen: int | None = None) -> bytes:
    cl = len(data) if caplen is None else caplen
    return blk(6, struct.pack(e + "IIIII", iface, ts >> 32, ts & 0xFFFFFFFF, cl,
                              len(data) if orig is None else orig) + data, e)


# --------------------------------------------------------------------------------------------
# Writer


def test_pcapng_writer_round_trip_keeps_timestamps_data_and_lengths():
    pkts = [(T0 + i * 1_000_001, frame(60 + i)) for i in range(5)]
    cap = read_capture(pcapng_bytes(pkts))
    assert cap.format == "pcapng"
    assert cap.anomalies == () and not cap.data_lost and cap.stats is None
    assert [p.timestamp_ns for p in cap.packets] == [t for t, _ in pkts]
    assert [p.data for p in cap.packets] == [d for _, d in pkts]
    assert all(p.linktype == 1 and p.interface == 0 and p.orig_len == len(p.data)
               for p in cap.packets)


def test_pcapng_writer_cuts_data_to_snaplen_and_keeps_orig_len():
    buf = io.BytesIO()
    w = PcapngWriter(buf, snaplen=64)
    w.write_packet(T0, frame(100))
    w.write_packet(T0 + 1, frame(40), orig_len=1500)
    p1, p2 = read_capture(buf.getvalue()).packets
    assert (len(p1.data), p1.orig_len) == (64, 100)
    assert (len(p2.data), p2.orig_len) == (40, 1500)


def test_pcapng_writer_raises_orig_len_to_data_length_and_rejects_bad_timestamps():
    buf = io.BytesIO()
    w = PcapngWriter(buf)
    w.write_packet(T0, frame(60), orig_len=10)
    assert read_capture(buf.getvalue()).packets[0].orig_len == 60
    with pytest.raises(ValueError):
        w.write_packet(-1, frame(60))
    with pytest.raises(ValueError):
        w.write_packet(1 << 64, frame(60))


def test_pcapng_writer_stats_become_capture_stats():
    buf = io.BytesIO()
    w = PcapngWriter(buf)
    w.write_packet(T0, frame(60))
    w.write_stats(T0 + 5, received=10, dropped=0)
    w.write_stats(T0 + 9, received=12, dropped=3)  # the latest ISB wins
    cap = read_capture(buf.getvalue())
    assert cap.stats == CaptureStats(received=12, dropped=3)
    assert len(cap.packets) == 1


def test_pcapng_writer_records_interface_name_application_and_linktype():
    data = pcapng_bytes([(T0, b"\x45" + bytes(19))], linktype=101, if_name="eth-board0",
                        application="attestlab-test")
    assert b"eth-board0" in data and b"attestlab-test" in data
    (p,) = read_capture(data).packets
    assert p.linktype == 101


@needs_tshark
def test_tshark_reads_writer_output_with_same_lengths_and_timestamps(tmp_path):
    pkts = [(T0 + i * 333_333_333, frame(60 + 7 * i)) for i in range(6)]
    buf = io.BytesIO()
    w = PcapngWriter(buf, if_name="board0")
    for ts, d in pkts:
        w.write_packet(ts, d)
    w.write_stats(pkts[-1][0], received=6, dropped=0)
    path = tmp_path / "w.pcapng"
    path.write_bytes(buf.getvalue())
    out = subprocess.run([TSHARK, "-r", str(path), "-T", "fields", "-e", "frame.len",
                          "-e", "frame.time_epoch"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    rows = [line.split("\t") for line in out.stdout.splitlines()]
    assert [int(r[0]) for r in rows] == [len(d) for _, d in pkts]
    # tshark prints epoch seconds with nanoseconds: compare exactly as integers.
    assert [int(r[1].replace(".", "")) for r in rows] == [t for t, _ in pkts]


@needs_tshark
@pytest.mark.parametrize("endian,nanos", [("<", False), (">", True)])
def test_tshark_agrees_with_test_pcap_writer(tmp_path, endian, nanos):
    pkts = [(T0 + i * 1_000_000, frame(60 + i)) for i in range(3)]
    path = tmp_path / "t.pcap"
    path.write_bytes(pcap_bytes(pkts, endian=endian, nanos=nanos))
    out = subprocess.run([TSHARK, "-r", str(path), "-T", "fields", "-e", "frame.len"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert [int(x) for x in out.stdout.split()] == [p.orig_len for p in
                                                    read_capture(path.read_bytes()).packets]


# --------------------------------------------------------------------------------------------
# Classic pcap


@pytest.mark.parametrize("endian", ["<", ">"])
def test_classic_pcap_both_byte_orders_microsecond_timestamps(endian):
    pkts = [(T0 - T0 % 1000 + i * 1000, frame(60 + i)) for i in range(3)]
    cap = read_capture(pcap_bytes(pkts, endian=endian))
    assert cap.format == "pcap" and cap.anomalies == ()
    assert [(p.timestamp_ns, p.data, p.linktype) for p in cap.packets] == \
           [(t, d, 1) for t, d in pkts]


@pytest.mark.parametrize("endian", ["<", ">"])
def test_classic_pcap_nanosecond_magic(endian):
    cap = read_capture(pcap_bytes([(T0, frame(60))], endian=endian, nanos=True))
    assert cap.packets[0].timestamp_ns == T0


@pytest.mark.parametrize("linktype", [1, 101, 228, 229])
def test_classic_pcap_link_types_and_fcs_bits_masked(linktype):
    cap = read_capture(pcap_bytes([(T0, frame(60))], linktype=linktype | 0x14000000))
    assert cap.packets[0].linktype == linktype


def test_classic_pcap_record_longer_than_snaplen_is_anomaly_without_loss():
    cap = read_capture(pcap_bytes([(T0, frame(100)), (T0, frame(60))], snaplen=64))
    assert len(cap.packets) == 2
    assert not cap.data_lost
    assert any("exceeds snaplen 64" in a for a in cap.anomalies)


def test_classic_pcap_orig_len_below_captured_len_reported():
    cap = read_capture(pcap_bytes([(T0, frame(80), 60)]))
    assert cap.packets[0].orig_len == 80
    assert any("original length 60" in a for a in cap.anomalies)


def test_classic_pcap_truncated_record_data_keeps_earlier_packets():
    data = pcap_bytes([(T0, frame(60)), (T0 + 1000, frame(60)), (T0 + 2000, frame(90))])
    cap = read_capture(data[:-10])
    assert len(cap.packets) == 2 and cap.data_lost
    assert cap.anomalies == (f"record 3 at offset {24 + 2 * 76}: data truncated (80 of 90 bytes)",)


def test_classic_pcap_truncated_record_header():
    data = pcap_bytes([(T0, frame(60))]) + b"\x01\x02\x03"
    cap = read_capture(data)
    assert len(cap.packets) == 1 and cap.data_lost
    assert "header truncated (3 of 16 bytes)" in cap.anomalies[0]


def test_classic_pcap_absurd_record_length_stops_with_offset():
    good = pcap_bytes([(T0, frame(60))])
    bad = struct.pack("<IIII", 1, 0, 0xFFFFFFF0, 60) + frame(60)
    cap = read_capture(good + bad)
    assert len(cap.packets) == 1 and cap.data_lost
    assert cap.anomalies[0].startswith(f"record 2 at offset {len(good)}: captured length "
                                       f"4294967280 is absurd")


def test_classic_pcap_empty_after_header_is_fine():
    cap = read_capture(pcap_bytes([]))
    assert cap == Capture(packets=(), anomalies=(), stats=None, format="pcap")


# --------------------------------------------------------------------------------------------
# pcapng


def test_pcapng_big_endian_section():
    data = shb(">") + idb(1, 0, opt(9, b"\x09", ">"), ">") + epb(0, T0, frame(61), e=">")
    (p,) = read_capture(data).packets
    assert (p.timestamp_ns, p.data, p.orig_len) == (T0, frame(61), 61)


def test_pcapng_multiple_interfaces_each_with_own_tsresol_and_linktype():
    data = (shb()
            + idb(1)                                  # default: microseconds
            + idb(101, 0, opt(9, b"\x09"))            # nanoseconds
            + idb(228, 0, opt(9, bytes([0x80 | 10])))  # 2^-10 s
            + epb(0, 1_700_000_000_000_001, frame(60))
            + epb(1, T0, b"\x45" + bytes(39))
            + epb(2, 3 * 1024 + 512, b"\x45" + bytes(19)))
    p0, p1, p2 = read_capture(data).packets
    assert (p0.interface, p0.linktype, p0.timestamp_ns) == (0, 1, 1_700_000_000_000_001_000)
    assert (p1.interface, p1.linktype, p1.timestamp_ns) == (1, 101, T0)
    assert (p2.interface, p2.linktype, p2.timestamp_ns) == (2, 228, 3_500_000_000)


def test_pcapng_if_tsoffset_added_in_seconds():
    data = shb() + idb(1, 0, opt(9, b"\x09") + opt(14, struct.pack("<q", 100))) + epb(0, 5, frame(60))
    assert read_capture(data).packets[0].timestamp_ns == 100_000_000_005


def test_pcapng_simple_packet_block_uses_snaplen_and_previous_timestamp():
    spb = blk(3, struct.pack("<I", 200) + frame(200))
    data = shb() + idb(1, 100, opt(9, b"\x09")) + epb(0, T0, frame(60)) + spb
    p0, p1 = read_capture(data).packets
    assert (len(p1.data), p1.orig_len, p1.timestamp_ns) == (100, 200, T0)


def test_pcapng_obsolete_packet_block_read():
    pb = blk(2, struct.pack("<HHIIII", 0, 0, T0 >> 32, T0 & 0xFFFFFFFF, 60, 60) + frame(60))
    data = shb() + idb(1, 0, opt(9, b"\x09")) + pb
    (p,) = read_capture(data).packets
    assert (p.timestamp_ns, p.data) == (T0, frame(60))


def test_pcapng_unknown_and_name_resolution_blocks_skipped():
    data = shb() + idb() + blk(4, b"\0" * 8) + blk(0x0BAD, b"hello") + epb(0, 1, frame(60))
    cap = read_capture(data)
    assert len(cap.packets) == 1 and cap.anomalies == ()


def test_pcapng_second_section_in_other_byte_order_numbers_interfaces_uniquely():
    data = (shb() + idb(1) + epb(0, 1, frame(60))
            + shb(">") + idb(101, 0, b"", ">") + epb(0, 2, b"\x45" + bytes(19), e=">"))
    p0, p1 = read_capture(data).packets
    assert (p0.interface, p0.linktype) == (0, 1)
    assert (p1.interface, p1.linktype) == (1, 101)


def test_pcapng_truncated_block_keeps_earlier_packets():
    data = shb() + idb() + epb(0, 1, frame(60)) + epb(0, 2, frame(60))
    cap = read_capture(data[:-7])
    assert len(cap.packets) == 1 and cap.data_lost
    off = len(shb() + idb() + epb(0, 1, frame(60)))
    assert cap.anomalies == (f"block at offset {off}: truncated (85 of 92 bytes)",)


def test_pcapng_trailing_length_mismatch_reported():
    bad = bytearray(epb(0, 2, frame(60)))
    bad[-4:] = struct.pack("<I", 96)
    data = shb() + idb() + epb(0, 1, frame(60)) + bytes(bad)
    cap = read_capture(data)
    assert len(cap.packets) == 1 and cap.data_lost
    assert "trailing length 96 differs from leading length 92" in cap.anomalies[0]


def test_pcapng_absurd_block_length_reported_not_allocated():
    data = shb() + idb() + struct.pack("<II", 6, 0xFFFFFFF0) + b"\0" * 20
    cap = read_capture(data)
    assert cap.packets == () and cap.data_lost
    assert "length 4294967280 is absurd" in cap.anomalies[0]


def test_pcapng_block_length_not_multiple_of_four_or_too_small():
    for n in (13, 8):
        cap = read_capture(shb() + idb() + struct.pack("<II", 6, n) + b"\0" * 24)
        assert cap.data_lost and f"length {n} invalid" in cap.anomalies[0]


def test_pcapng_packet_for_undescribed_interface_reported():
    cap = read_capture(shb() + idb() + epb(3, 1, frame(60)))
    assert cap.packets == () and cap.data_lost
    assert "interface 3 was never described" in cap.anomalies[0]


def test_pcapng_captured_length_beyond_block_reported():
    cap = read_capture(shb() + idb() + epb(0, 1, frame(60), caplen=400))
    assert cap.packets == () and cap.data_lost
    assert "captured length 400 exceeds the block" in cap.anomalies[0]


def test_pcapng_isb_drops_from_interface_and_os_summed_over_interfaces():
    def isb(iface, recv, ifdrop, osdrop):
        return blk(5, struct.pack("<III", iface, 0, 0) + opt(4, struct.pack("<Q", recv))
                   + opt(5, struct.pack("<Q", ifdrop)) + opt(7, struct.pack("<Q", osdrop))
                   + opt(0, b""))
    data = shb() + idb() + idb() + isb(0, 10, 1, 2) + isb(1, 5, 0, 4)
    assert read_capture(data).stats == CaptureStats(received=15, dropped=7)


def test_anomalies_of_one_kind_are_capped_with_a_count():
    cap = read_capture(pcap_bytes([(T0, frame(100))] * 50, snaplen=64))
    assert len(cap.packets) == 50
    assert len(cap.anomalies) == 21
    assert cap.anomalies[-1] == "30 more snaplen anomalies not listed"


@pytest.mark.parametrize("data,offset,text", [
    (b"", 0, "too short"),
    (b"\x00\x01\x02\x03" * 8, 0, "unknown capture magic"),
    (struct.pack("<I", 0xA1B2C3D4) + b"\0" * 10, 0, "needs 24 bytes"),
    (struct.pack("<IHHiIII", 0xA1B2C3D4, 3, 0, 0, 0, 0, 1), 4, "version 3.0"),
    (b"\x0a\x0d\x0d\x0a" + struct.pack("<I", 28) + b"\x11\x22\x33\x44" + bytes(16), 8,
     "byte-order magic"),
    (b"\x0a\x0d\x0d\x0a" + struct.pack("<I", 1000) + struct.pack("<I", 0x1A2B3C4D) + bytes(16), 4,
     "length 1000"),
])
def test_unusable_header_raises_capture_format_error_with_offset(data, offset, text):
    with pytest.raises(CaptureFormatError) as ei:
        read_capture(data)
    assert ei.value.offset == offset
    assert text in str(ei.value) and f"at offset {offset}" in str(ei.value)


def test_iter_packets_streams_and_hands_back_anomalies():
    data = pcapng_bytes([(T0, frame(60)), (T0 + 1, frame(60))])[:-5]
    anomalies: list[str] = []
    got = list(iter_packets(data, anomalies))
    assert [type(p) for p in got] == [Packet]
    assert len(anomalies) == 1 and "truncated" in anomalies[0]


def test_capture_scan_gives_bare_records_then_the_same_summary():
    buf = io.BytesIO()
    w = PcapngWriter(buf)
    w.write_packet(T0, frame(60))
    w.write_stats(T0, received=1, dropped=0)
    data = buf.getvalue() + b"\x06\0\0"  # a block header cut short: data lost
    scan = CaptureScan(data)
    assert list(scan.records) == [(T0, 1, frame(60), 60, 0)]
    full = read_capture(data)
    assert scan.summary() == Capture((), full.anomalies, full.stats, "pcapng", True)
    with pytest.raises(CaptureFormatError):
        CaptureScan(b"junk")


def test_packet_is_frozen():
    (p,) = read_capture(pcapng_bytes([(T0, frame(60))])).packets
    with pytest.raises(AttributeError):
        p.data = b""  # type: ignore[misc]
    assert p == Packet(T0, 1, frame(60), 60, 0)


# --------------------------------------------------------------------------------------------
# Hostile input


def _read_or_format_error(data: bytes) -> None:
    try:
        cap = read_capture(data)
    except CaptureFormatError:
        return
    assert isinstance(cap, Capture)
    for p in cap.packets:
        assert len(p.data) <= len(data) and p.orig_len >= len(p.data)


FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(st.binary(max_size=600))
def test_read_capture_on_arbitrary_bytes_only_capture_format_error(data):
    _read_or_format_error(data)


@FUZZ
@given(st.sampled_from([b"\xd4\xc3\xb2\xa1\x02\x00\x04\x00", b"\xa1\xb2\x3c\x4d\x00\x02\x00\x04",
                        b"\x0a\x0d\x0d\x0a\x1c\x00\x00\x00\x4d\x3c\x2b\x1a\x01\x00\x00\x00"]),
       st.binary(max_size=600))
def test_read_capture_on_valid_magic_with_random_tail(head, tail):
    _read_or_format_error(head + tail)


_VALID = [
    pcapng_bytes([(T0 + i, frame(40 + 9 * i)) for i in range(4)]),
    pcap_bytes([(T0 + i * 1000, frame(50 + i)) for i in range(4)], endian=">"),
    pcap_bytes([(T0 + i, frame(50 + i)) for i in range(4)], nanos=True),
    shb(">") + idb(1, 0, opt(9, b"\x86", ">"), ">") + epb(0, 9, frame(60), e=">")
    + blk(3, struct.pack(">I", 70) + frame(70), ">"),
]


@FUZZ
@given(st.sampled_from(_VALID), st.integers(0, 10_000), st.integers(0, 2**32 - 1),
       st.sampled_from(["truncate", "u32", "byte"]))
def test_read_capture_on_mutated_valid_captures(base, where, value, how):
    data = bytearray(base)
    pos = where % len(data)
    if how == "truncate":
        del data[pos:]
    elif how == "u32":
        data[pos:pos + 4] = value.to_bytes(4, "little")
    else:
        data[pos] = value & 0xFF
    _read_or_format_error(bytes(data))
