"""The dumpframe wire format: round trips, strict parsing, and a decoder that survives anything."""

from __future__ import annotations

import hashlib
import os
import struct
import zlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from harness.formats import dumpframe as df
from harness.formats.dumpframe import (
    FRAME_OVERHEAD,
    HEADER_SIZE,
    MAGIC,
    MAX_PAYLOAD,
    Abort,
    Begin,
    Corrupt,
    Data,
    Done,
    End,
    FrameDecoder,
    FrameError,
    Resend,
    Skipped,
    encode_frame,
    encode_image,
    parse_frame,
)

RECORD_TYPES = (Begin, Data, End, Resend, Done, Abort)


def decode_all(stream: bytes, chunk: int | None = None) -> list:
    dec = FrameDecoder()
    events: list = []
    if chunk is None:
        events += dec.feed(stream)
    else:
        for i in range(0, len(stream), chunk):
            events += dec.feed(stream[i : i + chunk])
    events += dec.flush()
    assert dec.buffered == 0
    return events


def records(events: list) -> list:
    return [e for e in events if isinstance(e, RECORD_TYPES)]


def wire_size(event) -> int:
    if isinstance(event, Skipped):
        return len(event.data)
    if isinstance(event, Corrupt):
        return event.size
    return len(event.encode())


def assemble(events: list) -> bytes:
    begin = next(e for e in events if isinstance(e, Begin))
    frames = {e.seq: e.payload for e in events if isinstance(e, Data)}
    return b"".join(frames[i] for i in range(begin.frame_count))


# --- the format's constants ---


def test_layout_constants():
    assert HEADER_SIZE == 16
    assert FRAME_OVERHEAD == 20
    assert len(MAGIC) == 4
    # The magic cannot overlap itself, so skipping it never skips the start of a frame.
    assert all(MAGIC[:k] != MAGIC[-k:] for k in range(1, len(MAGIC)))


def test_framing_overhead_below_1_03():
    assert df.wire_overhead(df.DEFAULT_FRAME_SIZE) < 1.03
    assert df.wire_overhead(df.DEFAULT_FRAME_SIZE) == (4096 + 20) / 4096
    # A whole image, BEGIN and END included, and a frame size as small as 1 KiB.
    for size, frame in ((8 << 20, 4096), (1 << 20, 1024), (64 << 10, 4096)):
        assert df.image_wire_size(size, frame, "vbios") / size < 1.03
    image = os.urandom(100_000)
    wire = b"".join(encode_image(image, name="vbios", stream=1))
    assert len(wire) == df.image_wire_size(len(image), df.DEFAULT_FRAME_SIZE, "vbios")
    assert len(wire) / len(image) < 1.03


# --- records ---


def test_begin_layout_is_as_documented():
    b = Begin(0x1234, "vbios", 10_000, bytes(range(32)), 4096)
    raw = b.encode()
    magic, vt, flags, stream, seq, length, hcheck = struct.unpack_from(">4sBBHIHH", raw)
    assert (magic, vt, flags, stream, seq) == (b"\xd7DMP", 0x11, 0, 0x1234, 0)
    assert length == len(raw) - 20 == 8 + 32 + 4 + 2 + 5
    assert hcheck == zlib.crc32(raw[:14]) & 0xFFFF
    assert struct.unpack(">I", raw[-4:])[0] == zlib.crc32(raw[:-4])
    assert raw[16:24] == (10_000).to_bytes(8, "big")
    assert raw[-9:-4] == b"vbios"
    assert b.frame_count == 3


names = st.text(max_size=40).filter(lambda s: len(s.encode()) <= df.MAX_NAME)
streams = st.integers(0, 0xFFFF)
record_strategy = st.one_of(
    st.builds(Begin, streams, names, st.integers(0, 2**31), st.binary(min_size=32, max_size=32), st.integers(1, MAX_PAYLOAD)),
    st.builds(Data, streams, st.integers(0, df.MAX_SEQ), st.binary(max_size=2000), st.booleans()),
    st.builds(End, streams, st.integers(0, 2**32 - 1)),
    st.builds(Resend, streams, st.lists(st.integers(0, 2**32 - 1), min_size=1, max_size=50).map(tuple)),
    st.builds(Done, streams),
    st.builds(Abort, streams, st.text(max_size=100)),
)


@given(record_strategy)
def test_record_round_trip(record):
    raw = record.encode()
    assert parse_frame(raw) == record
    assert records(decode_all(raw)) == [record]


def test_parse_frame_is_strict():
    good = Data(3, 9, b"payload", True).encode()
    parse_frame(good)
    cases = {
        "short": good[:10],
        "magic": b"XXXX" + good[4:],
        "header": good[:12] + b"\xff\xff" + good[14:],
        "crc": good[:-1] + bytes([good[-1] ^ 1]),
        "length": good + b"x",
    }
    for what, raw in cases.items():
        with pytest.raises(FrameError):
            parse_frame(raw)
    # A valid frame whose payload does not fit its type.
    with pytest.raises(FrameError, match="END payload"):
        parse_frame(encode_frame(df.RecordType.END, 1, 0, b"abc"))
    with pytest.raises(FrameError, match="unknown record type"):
        parse_frame(encode_frame(9, 1, 0, b""))


def test_constructors_validate():
    with pytest.raises(FrameError):
        Begin(1, "x", 10, b"short", 4096)
    with pytest.raises(FrameError):
        Begin(1, "x", 10, bytes(32), 0)
    with pytest.raises(FrameError):
        Data(70000, 0, b"")
    with pytest.raises(FrameError):
        Data(1, df.BEGIN_SEQ, b"")
    with pytest.raises(FrameError):
        Data(1, 0, bytes(MAX_PAYLOAD + 1))
    with pytest.raises(FrameError):
        Resend(1, ())
    with pytest.raises(FrameError):
        Resend(1, tuple(range(df.MAX_RESEND_SEQS + 1)))


# --- images ---


@given(st.binary(max_size=20_000), st.integers(1, 5000), streams)
@settings(max_examples=60)
def test_image_round_trip(image, frame_size, stream):
    wire = b"".join(encode_image(image, name="inforom", stream=stream, frame_size=frame_size))
    events = decode_all(wire, chunk=997)
    assert not [e for e in events if isinstance(e, (Corrupt, Skipped))]
    begin = events[0]
    assert isinstance(begin, Begin) and begin.sha256 == hashlib.sha256(image).digest()
    assert begin.total_length == len(image) and begin.frame_size == frame_size
    assert isinstance(events[-1], End) and events[-1].frame_count == begin.frame_count
    data = [e for e in events if isinstance(e, Data)]
    assert [d.seq for d in data] == list(range(begin.frame_count))
    assert [d.last for d in data] == [i == begin.frame_count - 1 for i in range(begin.frame_count)]
    assert assemble(events) == image


# --- the decoder against damage ---


def test_chatter_and_echo_are_skipped():
    image = os.urandom(9000)
    frames = list(encode_image(image, name="vbios", stream=7))
    wire = b"dump vbios\r\n" + frames[0] + b"\r\n[ 1.234] pcie: link up\r\n" + b"".join(frames[1:]) + b"h100> "
    events = decode_all(wire, chunk=5)
    chatter = b"".join(e.data for e in events if isinstance(e, Skipped))
    assert chatter == b"dump vbios\r\n\r\n[ 1.234] pcie: link up\r\nh100> "
    assert assemble(events) == image


def test_corrupt_frame_is_reported_with_its_seq_and_the_rest_recovered():
    image = os.urandom(5 * 1024)
    frames = list(encode_image(image, name="r", stream=2, frame_size=1024))
    bad = bytearray(frames[3])  # DATA seq 2
    bad[100] ^= 0xFF
    frames[3] = bytes(bad)
    events = decode_all(b"".join(frames), chunk=333)
    corrupt = [e for e in events if isinstance(e, Corrupt)]
    assert len(corrupt) == 1
    assert corrupt[0].type == df.RecordType.DATA and corrupt[0].seq == 2 and corrupt[0].stream == 2
    assert "CRC" in corrupt[0].reason
    assert sorted(e.seq for e in events if isinstance(e, Data)) == [0, 1, 3, 4]


def test_lost_bytes_inside_a_frame_do_not_swallow_the_next_one():
    frames = list(encode_image(os.urandom(3 * 512), name="r", stream=2, frame_size=512))
    frames[1] = frames[1][:200] + frames[1][260:]  # DATA 0 lost 60 bytes
    events = decode_all(b"".join(frames))
    assert [e.seq for e in events if isinstance(e, Data)] == [1, 2]
    assert isinstance(events[-1], End)


def test_absurd_length_and_false_magic_are_rejected_at_once():
    head = struct.pack(">4sBBHIH", MAGIC, 0x12, 0, 1, 0, 60000)
    head += struct.pack(">H", zlib.crc32(head) & 0xFFFF)
    dec = FrameDecoder()
    events = dec.feed(head + b"more")
    assert any(isinstance(e, Corrupt) and "absurd" in e.reason for e in events)
    assert dec.buffered < HEADER_SIZE  # it did not wait for 60000 bytes
    events = dec.feed(MAGIC + b"\x00" * 12 + b"tail")  # a false magic: header check fails
    assert any(isinstance(e, Corrupt) and "header check" in e.reason for e in events)
    assert dec.buffered < HEADER_SIZE


def test_truncated_frame_is_released_by_flush():
    frames = list(encode_image(os.urandom(4096), name="r", stream=4, frame_size=4096))
    dec = FrameDecoder()
    events = dec.feed(frames[0] + frames[1][:1000])
    assert dec.buffered == 1000
    events += dec.flush()
    assert any(isinstance(e, Corrupt) and "truncated" in e.reason and e.seq == 0 for e in events)
    # Still usable afterwards.
    events = dec.feed(frames[1] + frames[2])
    assert [type(e) for e in events] == [Data, End]


def test_feeding_not_bytes_is_a_frame_error():
    with pytest.raises(FrameError):
        FrameDecoder().feed("text")  # type: ignore[arg-type]


def test_buffer_stays_bounded():
    dec = FrameDecoder()
    head = Data(1, 0, bytes(MAX_PAYLOAD)).encode()
    dec.feed(head[:-1])  # all but the last CRC byte: it has to wait
    assert dec.buffered == len(head) - 1 <= dec.max_buffer
    for _ in range(50):
        dec.feed(os.urandom(10_000).replace(MAGIC, b"----"))
        assert dec.buffered <= dec.max_buffer


@given(st.binary(max_size=5000), st.lists(st.integers(1, 700), max_size=30))
@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
def test_decoder_survives_arbitrary_bytes(data, cuts):
    dec = FrameDecoder()
    events: list = []
    pos = 0
    for c in cuts:
        events += dec.feed(data[pos : pos + c])
        assert dec.buffered <= dec.max_buffer
        pos += c
    events += dec.feed(data[pos:])
    events += dec.flush()
    assert dec.buffered == 0
    for e in events:
        assert isinstance(e, RECORD_TYPES + (Corrupt, Skipped))
    # Every byte fed is accounted for exactly once: as chatter, as damage, or in a record.
    assert sum(wire_size(e) for e in events) == len(data)


@st.composite
def damaged_streams(draw):
    """Intact frames with garbage between them: random bytes, truncated and corrupted frames."""
    image = draw(st.binary(max_size=3000))
    frame_size = draw(st.integers(1, 600))
    stream = draw(st.integers(0, 0xFFFF))
    frames = list(encode_image(image, name="img", stream=stream, frame_size=frame_size))
    intact: list[bytes] = []
    parts: list[bytes] = []
    for f in frames:
        kind = draw(st.sampled_from(["intact", "intact", "intact", "garbage", "truncated", "corrupt", "magicjunk"]))
        if kind == "garbage":
            parts.append(draw(st.binary(max_size=50)))
        elif kind == "truncated":
            parts.append(f[: draw(st.integers(0, len(f) - 1))])
        elif kind == "corrupt":
            i = draw(st.integers(0, len(f) - 1))
            parts.append(f[:i] + bytes([f[i] ^ draw(st.integers(1, 255))]) + f[i + 1 :])
            continue
        elif kind == "magicjunk":
            parts.append(MAGIC + draw(st.binary(max_size=30)))
        parts.append(f)
        intact.append(f)
    parts.append(draw(st.binary(max_size=20)))
    return b"".join(parts), intact


def is_subsequence(needles: list, haystack: list) -> bool:
    it = iter(haystack)
    return all(any(n == h for h in it) for n in needles)


@given(damaged_streams(), st.integers(1, 2000))
@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
def test_decoder_recovers_every_intact_frame(stream_and_frames, chunk):
    wire, intact = stream_and_frames
    events = decode_all(wire, chunk=chunk)
    expected = [parse_frame(f) for f in intact]
    assert is_subsequence(expected, records(events))
    assert sum(wire_size(e) for e in events) == len(wire)


def test_megabytes_of_garbage_decode_in_bounded_time():
    import time

    garbage = os.urandom(4 << 20)
    t0 = time.monotonic()
    events = decode_all(garbage, chunk=4096)
    assert time.monotonic() - t0 < 5
    assert sum(wire_size(e) for e in events) == len(garbage)
