"""The ZMODEM receiver: the real lrzsz `sz` gets its files across, a hostile sender never does.

Interop runs the real `sz` with pipes for its console and this receiver driving it; the hostile
cases are recordings of real sessions with bytes flipped, and sessions crafted with the module's
own encoders (a header, a subpacket at a time) that break one rule each.
"""

from __future__ import annotations

import os
import select
import shutil
import subprocess
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from harness.formats import zmodem as zm
from harness.formats.zmodem import (
    ZCRCE,
    ZCRCG,
    ZCRCQ,
    ZCRCW,
    FrameType,
    TransferError,
    ZmodemReceiver,
    binary_header,
    hex_header,
    position,
    subpacket,
)

SZ = shutil.which("sz")
needs_sz = pytest.mark.skipif(SZ is None, reason="lrzsz `sz` is not installed (apt-get install lrzsz)")
HYPOTHESIS = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def run_sender(cmd: list[str], receiver, *, flips: tuple[int, ...] = (), quiet: float = 1.0,
               deadline: float = 30.0) -> tuple[int, bytes]:
    """Run a real sender (`sz ...`) with pipes for its console and `receiver` answering it.

    `flips` are offsets in the sender's output whose byte is damaged (xor 1) on the way, as a
    noisy line would. Returns the sender's exit status and everything it wrote (undamaged).
    """
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    out, into = proc.stdout.fileno(), proc.stdin.fileno()
    os.set_blocking(out, False)
    transcript = bytearray()
    quiet_since = time.monotonic()
    stop = quiet_since + deadline

    def send(reply: bytes) -> None:
        try:
            os.write(into, reply)
        except BrokenPipeError:
            pass

    try:
        send(receiver.start())
        while time.monotonic() < stop:
            if not select.select([out], [], [], 0.05)[0]:
                if not receiver.done and time.monotonic() - quiet_since > quiet:
                    quiet_since = time.monotonic()
                    send(receiver.on_timeout())
                continue
            chunk = os.read(out, 65536)
            if not chunk:
                break
            damaged = bytearray(chunk)
            for offset in flips:
                if len(transcript) <= offset < len(transcript) + len(chunk):
                    damaged[offset - len(transcript)] ^= 0x01
            transcript += chunk
            quiet_since = time.monotonic()
            send(receiver.feed(bytes(damaged)))
    except TransferError:
        send(receiver.abort())
        raise
    finally:
        proc.stdin.close()
        try:
            rc = proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            rc = proc.wait()
        proc.stdout.close()
    return rc, bytes(transcript)


def random_file(tmp_path, size: int, name: str = "image.bin"):
    data = os.urandom(size)
    path = tmp_path / name
    path.write_bytes(data)
    return path, data


# --- interop with the real sz ---

@needs_sz
@pytest.mark.parametrize("size", [0, 1, 1023, 1024, 1025, 100 * 1024])
def test_real_sz_file_arrives_whole(tmp_path, size):
    path, data = random_file(tmp_path, size)
    rx = ZmodemReceiver()
    rc, _ = run_sender([SZ, "--binary", str(path)], rx)
    got = rx.result()
    assert (rc, got.data, got.size, got.name, got.protocol) == (0, data, size, "image.bin", "zmodem")
    assert rx.received == rx.expected == size
    assert got.stats["retries"] == 0 and got.stats["subpackets"] >= 1


@needs_sz
def test_real_sz_one_mebibyte_in_8k_subpackets(tmp_path):
    path, data = random_file(tmp_path, 1 << 20)
    rx = ZmodemReceiver()
    rc, _ = run_sender([SZ, "--binary", "--try-8k", str(path)], rx)
    assert rc == 0 and rx.result().data == data
    assert rx.stats["subpackets"] < 1024   # some subpackets were longer than 1 KiB


@needs_sz
@pytest.mark.parametrize("options, receiver_escapes", [
    (["--escape"], False),           # the sender escapes every control byte (and says so in ZSINIT)
    (["--16-bit-crc"], False),       # ZBIN headers and CRC-16 subpackets
    (["--windowsize", "4096"], False),  # ZCRCQ subpackets the receiver acknowledges
    ([], True),                      # the receiver asks for escaped controls (ZRINIT ESCCTL)
], ids=["escape", "crc16", "window", "escctl"])
def test_real_sz_framing_options(tmp_path, options, receiver_escapes):
    path, data = random_file(tmp_path, 20000)
    rx = ZmodemReceiver(escape_controls=receiver_escapes)
    rc, transcript = run_sender([SZ, "--binary", *options, str(path)], rx)
    assert rc == 0 and rx.result().data == data
    if options == ["--16-bit-crc"]:
        assert b"*\x18A" in transcript and b"*\x18C" not in transcript
    if options == ["--escape"] or receiver_escapes:
        assert max(transcript.count(bytes([c])) for c in (0x01, 0x02, 0x03)) <= 3   # controls escaped


@needs_sz
def test_real_sz_line_errors_recovered_by_zrpos(tmp_path):
    path, data = random_file(tmp_path, 30000)
    rx = ZmodemReceiver()
    # damage the ZFILE subpacket's region, data, and data again further on
    rc, _ = run_sender([SZ, "--binary", str(path)], rx, flips=(60, 5000, 20000))
    assert rc == 0 and rx.result().data == data
    assert rx.stats["retries"] >= 2 and rx.stats["crc_errors"] >= 2


@needs_sz
def test_real_sz_leftover_is_what_follows_the_session(tmp_path):
    path, _ = random_file(tmp_path, 100)
    rx = ZmodemReceiver()
    run_sender([SZ, "--binary", str(path)], rx)
    assert rx.done and rx.leftover == b""     # the trailing "OO" was taken, nothing else came
    rx.feed(b"root@bmc:~# ")
    assert rx.leftover == b"root@bmc:~# "


# --- recordings of real sessions, replayed ---

@pytest.fixture(scope="module")
def recording(tmp_path_factory):
    """What a real sz wrote in a clean session of a 6000-byte file, and the file."""
    if SZ is None:
        pytest.skip("lrzsz `sz` is not installed")
    path, data = random_file(tmp_path_factory.mktemp("zmodem"), 6000)
    rx = ZmodemReceiver()
    _, transcript = run_sender([SZ, "--binary", str(path)], rx)
    assert rx.result().data == data
    return transcript, data


def replay(transcript: bytes, cuts: list[int] = (), *, receiver=ZmodemReceiver, timeouts: int = 12):
    """Feed a recording in pieces cut at `cuts`, then let the line go quiet until it ends.
    Returns the receiver and everything it answered."""
    rx = receiver()
    replies = bytearray(rx.start())
    bounds = [0, *sorted(set(cuts)), len(transcript)]
    for a, b in zip(bounds, bounds[1:]):
        replies += rx.feed(transcript[a:b])
    for _ in range(timeouts):
        if rx.done:
            break
        replies += rx.on_timeout()
    return rx, bytes(replies)


def check_any_chunks_same_file(recording, cuts, receiver) -> None:
    transcript, data = recording
    rx, replies = replay(transcript, [c % (len(transcript) + 1) for c in cuts], receiver=receiver)
    assert rx.result().data == data and rx.leftover == b""
    whole, whole_replies = replay(transcript, receiver=receiver)
    assert replies == whole_replies and rx.stats == whole.stats


def check_damage_never_wrong(recording, where, xor, receiver) -> None:
    """One damaged byte anywhere: the receiver asks again; the recording cannot answer, so the
    transfer fails, or it finishes (damage after the end) with the right file."""
    transcript, data = recording
    damaged = bytearray(transcript)
    damaged[where % len(damaged)] ^= xor
    try:
        rx, _ = replay(bytes(damaged), receiver=receiver)
    except TransferError as exc:
        assert str(exc)
        return
    assert rx.done and rx.result().data == data, "neither finished right nor failed after 12 timeouts"


def check_random_bytes_fail_closed(streams, chunk, receiver, announced) -> None:
    """Arbitrary bytes (after a valid announcement or not) fail or stay unfinished."""
    for stream in streams:
        rx = receiver()
        try:
            for i in range(0, len(stream), chunk):
                rx.feed(stream[i:i + chunk])
            rx.on_timeout()
        except TransferError:
            continue
        assert not rx.done and rx.received <= announced


@given(st.lists(st.integers(0, 10_000), max_size=40))
@HYPOTHESIS
def test_replay_in_any_chunks_gives_the_same_file(recording, cuts):
    check_any_chunks_same_file(recording, cuts, ZmodemReceiver)


@given(st.integers(0, 10**9), st.integers(1, 255))
@HYPOTHESIS
def test_damaged_recording_never_yields_wrong_data(recording, where, xor):
    check_damage_never_wrong(recording, where, xor, ZmodemReceiver)


# --- crafted senders, one broken rule each ---

def session(data: bytes, *, name: bytes = b"fw.bin", size: int | str | None = "auto", crc32: bool = True,
            chunk: int = 1024, eof_at: int | None = None) -> list[bytes]:
    """A well-formed sender session as frames: ZRQINIT, ZFILE, ZDATA + subpackets, ZEOF, ZFIN, "OO"."""
    size = len(data) if size == "auto" else size
    info = name + b"\0" + (b"" if size is None else str(size).encode() + b" 14750110000 100644 0 1 0") + b"\0"
    frames = [b"rz\r", hex_header(FrameType.ZRQINIT),
              binary_header(FrameType.ZFILE, b"\0\0\0\x01", crc32=crc32) + subpacket(info, ZCRCW, crc32=crc32),
              binary_header(FrameType.ZDATA, position(0), crc32=crc32)]
    pieces = [data[i:i + chunk] for i in range(0, len(data), chunk)] or [b""]
    for i, piece in enumerate(pieces):
        frames.append(subpacket(piece, ZCRCE if i == len(pieces) - 1 else ZCRCG, crc32=crc32))
    frames += [binary_header(FrameType.ZEOF, position(len(data) if eof_at is None else eof_at), crc32=crc32),
               hex_header(FrameType.ZFIN), b"OO"]
    return frames


def feed_all(rx: ZmodemReceiver, frames: list[bytes]) -> bytes:
    return b"".join(rx.feed(f) for f in frames)


@pytest.mark.parametrize("crc32", [True, False])
def test_crafted_session_round_trips(crc32):
    data = bytes(range(256)) * 20 + b"\x18\x11\x13\x91\x93@\r\x7f\xff"
    rx = ZmodemReceiver()
    replies = feed_all(rx, session(data, crc32=crc32) + [b"prompt$ "])
    got = rx.result()
    assert got.data == data and got.name == "fw.bin" and got.size == len(data)
    assert rx.leftover == b"prompt$ "
    assert replies.count(b"**\x18B09") == 1          # one ZRPOS(0), for the ZFILE
    assert replies.endswith(hex_header(FrameType.ZFIN))


def test_escaped_controls_and_rub_escapes_decode():
    data = bytes(range(32)) + b"\x7f\xff" + bytes(range(0x80, 0xA0))
    body = zm.escape(data, controls=True).replace(b"\x7f", b"\x18l").replace(b"\xff", b"\x18m")
    tail = bytes([ZCRCE])
    crc = zm.zlib.crc32(tail, zm.zlib.crc32(data)).to_bytes(4, "little")
    frames = session(data)
    frames[4] = body + b"\x18" + tail + zm.escape(crc)
    rx = ZmodemReceiver()
    feed_all(rx, frames)
    assert rx.result().data == data


def test_flow_control_bytes_on_the_line_are_not_data():
    data = os.urandom(3000)
    frames = session(data)
    rx = ZmodemReceiver()
    feed_all(rx, [f[:len(f) // 2] + b"\x11\x13" + f[len(f) // 2:] if i >= 2 else f for i, f in enumerate(frames)])
    assert rx.result().data == data


def test_more_data_than_announced_is_refused():
    frames = session(b"x" * 2000, size=1000)
    with pytest.raises(TransferError, match="beyond the announced size"):
        feed_all(ZmodemReceiver(), frames)


def test_file_shorter_than_announced_fails_at_zeof():
    with pytest.raises(TransferError, match="shorter than the 5000 bytes announced"):
        feed_all(ZmodemReceiver(), session(b"y" * 3000, size=5000))


def test_data_beyond_max_size_is_refused_with_or_without_a_size():
    with pytest.raises(TransferError, match="announced size 4096 exceeds"):
        feed_all(ZmodemReceiver(max_size=4000), session(b"z" * 4096))
    with pytest.raises(TransferError, match="max_size=4000"):
        feed_all(ZmodemReceiver(max_size=4000), session(b"z" * 4096, size=None))


def test_huge_announced_size_is_refused_at_once():
    rx = ZmodemReceiver()
    with pytest.raises(TransferError, match="exceeds the limit"):
        feed_all(rx, session(b"", size=10**12)[:3])
    with pytest.raises(TransferError, match="more than 20 digits"):
        feed_all(ZmodemReceiver(), session(b"", size=10**30)[:3])
    with pytest.raises(TransferError, match="not a decimal number"):
        feed_all(ZmodemReceiver(), session(b"", size="12ab")[:3])


def test_name_longer_than_1024_bytes_is_refused():
    with pytest.raises(TransferError, match="longer than 1024"):
        feed_all(ZmodemReceiver(), session(b"", name=b"a" * 1025)[:3])


def test_a_second_file_is_refused():
    first = session(b"one" * 100)
    second = session(b"two" * 100, name=b"other.bin")
    rx = ZmodemReceiver()
    feed_all(rx, first[:6])                       # the first file, up to its ZEOF
    with pytest.raises(TransferError, match="second file"):
        rx.feed(second[2])
    with pytest.raises(TransferError, match="second file"):   # the failure sticks
        rx.feed(b"")


def test_zfile_repeated_before_data_is_answered_again_not_a_second_file():
    frames = session(b"abc" * 500)
    rx = ZmodemReceiver()
    replies = feed_all(rx, frames[:3] + [frames[2]] + frames[3:])
    assert rx.result().data == b"abc" * 500
    assert replies.count(hex_header(FrameType.ZRPOS, position(0))) == 2


@pytest.mark.parametrize("cut", [0, 2, 5, 7])
def test_five_can_cancel_even_split_across_reads(cut):
    frames = session(os.urandom(5000))
    rx = ZmodemReceiver()
    feed_all(rx, frames[:4])
    cancel = b"\x18" * 8 + b"\x08" * 8
    with pytest.raises(TransferError, match="cancelled"):
        rx.feed(frames[4][:100] + cancel[:cut])
        rx.feed(cancel[cut:])
    assert not rx.done


@pytest.mark.parametrize("frame_type", [FrameType.ZABORT, FrameType.ZFERR, FrameType.ZCAN, FrameType.ZCOMMAND])
def test_sender_abort_or_remote_command_ends_the_transfer(frame_type):
    rx = ZmodemReceiver()
    feed_all(rx, session(b"q" * 100)[:3])
    with pytest.raises(TransferError, match="aborted|command"):
        rx.feed(binary_header(frame_type))


def test_zfin_before_the_end_of_the_file_fails():
    frames = session(b"r" * 3000)
    rx = ZmodemReceiver()
    feed_all(rx, frames[:4] + [subpacket(b"r" * 1000, ZCRCE)])
    with pytest.raises(TransferError, match="before the end of the file"):
        rx.feed(hex_header(FrameType.ZFIN))
    with pytest.raises(TransferError, match="before sending a file"):
        ZmodemReceiver().feed(hex_header(FrameType.ZFIN))


def test_zdata_at_another_offset_is_answered_with_our_offset():
    frames = session(b"s" * 3000)
    rx = ZmodemReceiver()
    feed_all(rx, frames[:3])
    reply = rx.feed(binary_header(FrameType.ZDATA, position(999)) + subpacket(b"s" * 100, ZCRCW))
    assert reply == hex_header(FrameType.ZRPOS, position(0)) and rx.received == 0


def test_zcrcq_and_zcrcw_are_acknowledged_with_the_offset():
    rx = ZmodemReceiver()
    feed_all(rx, session(b"", size=300)[:3])
    reply = rx.feed(binary_header(FrameType.ZDATA, position(0)) + subpacket(b"a" * 100, ZCRCQ)
                    + subpacket(b"b" * 100, ZCRCG) + subpacket(b"c" * 100, ZCRCW))
    assert reply == hex_header(FrameType.ZACK, position(100)) + hex_header(FrameType.ZACK, position(300))


def test_bad_subpacket_crc_asks_zrpos_at_the_last_good_offset():
    rx = ZmodemReceiver()
    feed_all(rx, session(b"", size=300)[:3])
    good = subpacket(b"a" * 100, ZCRCG)
    bad = bytearray(subpacket(b"b" * 100, ZCRCG))
    bad[50] ^= 0x04
    reply = rx.feed(binary_header(FrameType.ZDATA, position(0)) + good + bytes(bad) + subpacket(b"c" * 100, ZCRCE))
    assert reply == hex_header(FrameType.ZRPOS, position(100))
    assert rx.received == 100 and rx.stats["crc_errors"] == 1


def test_subpacket_longer_than_the_limit_is_an_error():
    rx = ZmodemReceiver()
    feed_all(rx, session(b"", size=100_000)[:3])
    reply = rx.feed(binary_header(FrameType.ZDATA, position(0)) + b"A" * (zm.MAX_SUBPACKET + 10))
    assert reply == hex_header(FrameType.ZRPOS, position(0)) and rx.received == 0


def test_stale_zeof_is_ignored_then_timeouts_ask_again():
    frames = session(b"t" * 3000)
    rx = ZmodemReceiver(max_errors=3)
    feed_all(rx, frames[:3])
    assert rx.feed(binary_header(FrameType.ZEOF, position(3000))) == b""     # the spec: ignore it
    assert rx.on_timeout() == hex_header(FrameType.ZRPOS, position(0))
    assert rx.on_timeout() == hex_header(FrameType.ZRPOS, position(0))
    with pytest.raises(TransferError, match="3 errors in a row"):
        rx.on_timeout()


def test_endless_garbage_fails_after_max_errors():
    rx = ZmodemReceiver(max_errors=4)
    noise = bytes(range(256)).replace(b"\x18", b"") * 256           # 64 KiB with no ZDLE
    with pytest.raises(TransferError, match="no valid frame"):
        for _ in range(10_000):
            rx.feed(noise)
    assert rx.stats["bytes_in"] <= 4 * (zm.GARBAGE_LIMIT + len(noise))


def test_endless_repeated_headers_fail_after_max_errors():
    for frame in (hex_header(FrameType.ZRQINIT), hex_header(FrameType.ZRINIT),
                  binary_header(FrameType.ZEOF, position(77))):
        rx = ZmodemReceiver(max_errors=2)
        if frame.startswith(b"*\x18C"):
            feed_all(rx, session(b"", size=100)[:3])
        with pytest.raises(TransferError, match="errors in a row"):
            for _ in range(100_000):
                rx.feed(frame * 64)


def test_max_input_ends_an_endless_stream_even_with_progress():
    rx = ZmodemReceiver(max_input=5000)
    with pytest.raises(TransferError, match="max_input=5000"):
        feed_all(rx, session(os.urandom(20000)))
    assert rx.received < 5000


def test_result_before_done_and_bad_limits_are_refused():
    rx = ZmodemReceiver()
    with pytest.raises(TransferError, match="not finished"):
        rx.result()
    with pytest.raises(ValueError):
        ZmodemReceiver(max_size=1 << 33)
    with pytest.raises(TypeError):
        rx.feed("text")


# --- anything at all ---

@given(st.binary(max_size=4000), st.integers(1, 500))
@HYPOTHESIS
def test_random_bytes_never_finish_or_crash(blob, chunk):
    check_random_bytes_fail_closed([blob, b"".join(session(b"", size=3000)[:4]) + blob], chunk, ZmodemReceiver, 3000)


frame_kinds = st.sampled_from(["garbage", "flip", "drop", "dup", "none"])


@given(st.binary(max_size=3000), st.lists(st.tuples(frame_kinds, st.integers(0, 10**6), st.binary(max_size=30)),
                                          max_size=6), st.booleans())
@HYPOTHESIS
def test_mangled_sessions_yield_the_file_or_an_error(data, mangles, crc32):
    frames = session(data, crc32=crc32, chunk=512)
    for kind, where, noise in mangles:
        i = where % len(frames)
        if kind == "garbage":
            frames.insert(i, noise.replace(b"\x18", b""))
        elif kind == "flip" and frames[i]:
            f = bytearray(frames[i])
            f[where % len(f)] ^= 0x20
            frames[i] = bytes(f)
        elif kind == "drop":
            del frames[i]
        elif kind == "dup":
            frames.insert(i, frames[i])
    rx = ZmodemReceiver()
    try:
        for f in frames:
            rx.feed(f)
        for _ in range(12):
            if rx.done:
                break
            rx.on_timeout()
    except TransferError:
        return
    assert not rx.done or rx.result().data == data


def test_unexpected_header_is_an_error_answered_with_where_we_are():
    rx = ZmodemReceiver()
    feed_all(rx, session(b"", size=100)[:3])
    assert rx.feed(binary_header(99) + binary_header(FrameType.ZRINIT)) == 2 * hex_header(FrameType.ZRPOS, position(0))
    assert rx.stats["errors"] == 2
