"""The YMODEM receiver: the real lrzsz `sz --ymodem` gets its files across, a hostile sender never does."""

from __future__ import annotations

import os

import pytest
from hypothesis import given
from hypothesis import strategies as st

from harness.formats import ymodem as ym
from harness.formats.ymodem import ACK, EOT, NAK, YmodemReceiver, block, header_block
from harness.formats.zmodem import TransferError
from test_zmodem import (
    HYPOTHESIS,
    SZ,
    check_any_chunks_same_file,
    check_damage_never_wrong,
    check_random_bytes_fail_closed,
    needs_sz,
    random_file,
    run_sender,
)

C = b"C"


# --- interop with the real sz ---

@needs_sz
@pytest.mark.parametrize("size", [0, 1, 1023, 1024, 1025, 100 * 1024])
def test_real_sz_ymodem_file_arrives_whole(tmp_path, size):
    path, data = random_file(tmp_path, size)
    rx = YmodemReceiver()
    rc, _ = run_sender([SZ, "--ymodem", str(path)], rx)
    got = rx.result()
    assert (rc, got.data, got.size, got.name, got.protocol) == (0, data, size, "image.bin", "ymodem")
    assert got.stats["retries"] == 0 and rx.received == size


@needs_sz
def test_real_sz_ymodem_one_mebibyte_in_1k_blocks(tmp_path):
    path, data = random_file(tmp_path, 1 << 20)
    rx = YmodemReceiver()
    rc, _ = run_sender([SZ, "--ymodem", "--1k", str(path)], rx)
    assert rc == 0 and rx.result().data == data
    assert rx.stats["blocks"] == 1024 + 2     # block 0, 1024 data blocks (numbers wrap 4 times), the end


@needs_sz
def test_real_sz_ymodem_line_errors_recovered_by_nak(tmp_path):
    path, data = random_file(tmp_path, 5000)
    rx = YmodemReceiver()
    rc, _ = run_sender([SZ, "--ymodem", str(path)], rx, flips=(50, 700, 3000))
    assert rc == 0 and rx.result().data == data
    assert rx.stats["crc_errors"] + rx.stats["bad_blocks"] == 3 and rx.stats["retries"] == 3


# --- recordings of real sessions, replayed ---

@pytest.fixture(scope="module")
def recording(tmp_path_factory):
    if SZ is None:
        pytest.skip("lrzsz `sz` is not installed")
    path, data = random_file(tmp_path_factory.mktemp("ymodem"), 3000)
    rx = YmodemReceiver()
    _, transcript = run_sender([SZ, "--ymodem", "--1k", str(path)], rx)
    assert rx.result().data == data
    return transcript, data


@given(st.lists(st.integers(0, 10_000), max_size=40))
@HYPOTHESIS
def test_replay_in_any_chunks_gives_the_same_file(recording, cuts):
    check_any_chunks_same_file(recording, cuts, YmodemReceiver)


@given(st.integers(0, 10**9), st.integers(1, 255))
@HYPOTHESIS
def test_damaged_recording_never_yields_wrong_data(recording, where, xor):
    check_damage_never_wrong(recording, where, xor, YmodemReceiver)


# --- crafted senders ---

def session(data: bytes, *, name: bytes = b"fw.bin", size: int | None | str = "auto", blk: int = 1024) -> list[bytes]:
    size = len(data) if size == "auto" else size
    frames = [header_block(name, size)]
    frames += [block(i + 1, data[o:o + blk], size=blk) for i, o in enumerate(range(0, len(data), blk))]
    return frames + [bytes([EOT]), bytes([EOT]), header_block(b"", None)]


def feed_all(rx, frames) -> bytes:
    return b"".join(rx.feed(f) for f in frames)


def test_crafted_session_replies_as_the_protocol_says():
    data = os.urandom(2500)
    rx = YmodemReceiver()
    replies = [rx.feed(f) for f in session(data) + [b"$ "]]
    assert replies == [bytes([ACK]) + C, bytes([ACK]), bytes([ACK]), bytes([ACK]),
                       bytes([NAK]), bytes([ACK]) + C, bytes([ACK]), b""]
    got = rx.result()
    assert got.data == data and got.stats["padding"] == 3 * 1024 - 2500 and rx.leftover == b"$ "


def test_without_a_size_the_padding_is_kept_and_said():
    rx = YmodemReceiver()
    feed_all(rx, session(b"abc", size=None, blk=128))
    got = rx.result()
    assert got.size is None and got.data == b"abc" + bytes([ym.PAD]) * 125 and got.stats["padding_kept"] == 1


def test_duplicate_block_is_acked_and_ignored():
    data = os.urandom(3000)
    frames = session(data)
    rx = YmodemReceiver()
    replies = feed_all(rx, frames[:3] + [frames[2]] + frames[3:])
    assert rx.result().data == data and rx.stats["duplicates"] == 1
    assert replies.count(bytes([ACK])) == 7


def test_out_of_sequence_block_fails():
    frames = session(os.urandom(5000))
    rx = YmodemReceiver()
    feed_all(rx, frames[:2])
    with pytest.raises(TransferError, match="block 3 out of sequence: expected 2"):
        rx.feed(frames[3])


def test_more_data_than_announced_is_refused():
    with pytest.raises(TransferError, match="beyond the announced size"):
        feed_all(YmodemReceiver(), session(os.urandom(3000), size=1000))


def test_file_shorter_than_announced_fails_at_eot():
    with pytest.raises(TransferError, match="shorter than the 5000 bytes announced"):
        feed_all(YmodemReceiver(), session(os.urandom(3000), size=5000))


def test_limits_on_size_and_name():
    with pytest.raises(TransferError, match="exceeds the limit"):
        YmodemReceiver().feed(header_block(b"big", 10**12))
    with pytest.raises(TransferError, match="max_size=2000"):
        feed_all(YmodemReceiver(max_size=2000), session(os.urandom(3000), size=None))
    with pytest.raises(TransferError, match="not terminated by NUL"):    # a name that fills block 0
        YmodemReceiver().feed(block(0, b"n" * 1024, size=1024, pad=0))
    with pytest.raises(TransferError, match="not a decimal number"):
        YmodemReceiver().feed(block(0, b"n\0-5", pad=0))


def test_second_file_and_empty_batch_are_refused():
    frames = session(b"one")
    rx = YmodemReceiver()
    feed_all(rx, frames[:-1])
    with pytest.raises(TransferError, match="second file 'two.bin'"):
        rx.feed(header_block(b"two.bin", 3))
    with pytest.raises(TransferError, match="batch is empty"):
        YmodemReceiver().feed(header_block(b"", None))


@pytest.mark.parametrize("split", [False, True])
def test_can_can_cancels(split):
    rx = YmodemReceiver()
    feed_all(rx, session(os.urandom(3000))[:2])
    with pytest.raises(TransferError, match="cancelled"):
        if split:
            rx.feed(b"\x18")
            rx.feed(b"\x18")
        else:
            rx.feed(b"\x18" * 8 + b"\x08" * 8)


def test_bad_crc_and_bad_number_are_naked_and_counted():
    frames = session(os.urandom(3000))
    rx = YmodemReceiver(max_errors=3)
    feed_all(rx, frames[:2])
    bad_crc = bytearray(frames[2])
    bad_crc[500] ^= 1
    bad_num = bytearray(frames[2])
    bad_num[2] ^= 1
    assert rx.feed(bytes(bad_crc)) == bytes([NAK])
    assert rx.feed(bytes(bad_num)) == bytes([NAK])
    with pytest.raises(TransferError, match="3 errors in a row"):
        rx.on_timeout()
    assert rx.received == 1024


def test_timeouts_ask_again_then_fail():
    rx = YmodemReceiver(max_errors=3)
    assert rx.on_timeout() == C and rx.on_timeout() == C
    with pytest.raises(TransferError, match="timeout"):
        rx.on_timeout()
    with pytest.raises(TransferError):            # the failure sticks
        rx.feed(b"")


def test_endless_garbage_fails_after_max_errors():
    rx = YmodemReceiver(max_errors=4)
    noise = b"garbage without a block start " * 2000
    with pytest.raises(TransferError, match="no valid frame"):
        for _ in range(10_000):
            rx.feed(noise)
    assert rx.stats["bytes_in"] <= 4 * (ym.GARBAGE_LIMIT + len(noise))


def test_max_input_ends_a_stream_that_never_finishes():
    rx = YmodemReceiver(max_input=4000)
    with pytest.raises(TransferError, match="max_input=4000"):
        feed_all(rx, session(os.urandom(10_000)))


@given(st.binary(max_size=4000), st.integers(1, 700))
@HYPOTHESIS
def test_random_bytes_never_finish_or_crash(blob, chunk):
    check_random_bytes_fail_closed([blob, header_block(b"x", 3000) + blob], chunk, YmodemReceiver, 3000)
