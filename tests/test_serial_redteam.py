"""A board that tries to pass, or to hide what it says, through the firmware transfers alone.

Each test is one way a lying board (or a console server in between) tried to get past the
transfers of harness/interfaces/serial_transfer.py; each failed before the fix it names.
The boards are the simulator (fixtures/sim/console.py, profile `shell:` options, started by
test_serial_transfers.py's `shell` fixture) or the pure receivers fed crafted sessions.
"""

from __future__ import annotations


import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from harness.formats.ymodem import YmodemReceiver
from harness.formats.zmodem import FrameType, TransferError, ZmodemReceiver, hex_header
from harness.interfaces.serial import ConsoleError, SerialConsole, serial_settings

from test_serial_transfers import open_with, shell  # noqa: F401  (shell: the fixture)
from test_zmodem import session
from test_ymodem import session as ymodem_session

SECRET = "secure boot: signature check SKIPPED (debug unlock)"
INFOROM = {"inforom": {"path": "/flash/inforom.bin"}}


def unread_text(console: SerialConsole) -> str:
    return "\n".join(piece.text for piece in console.take_unread())


@pytest.mark.parametrize("method", ["zmodem", "ymodem"])
@pytest.mark.parametrize("after_bytes", [0, 40_000])
def test_text_printed_inside_a_transfer_stream_is_judged_like_all_console_text(shell, method, after_bytes):
    """A console line the board prints as sz starts, or among its frames, must reach the audit
    (as unread text after the command), whether or not the transfer survives it. Before: the
    receivers skipped it as noise, and the text said before the first frame was thrown away."""
    endpoint = shell(sz_says={"lines": [SECRET], "after_bytes": after_bytes})
    with open_with(endpoint, {"method": method, "regions": INFOROM}) as console:
        if method == "ymodem" and after_bytes:
            # A line inside a block shifts YMODEM's framing; this receiver NAKs at once instead of
            # first waiting for the line to go quiet, and stays out of step: ERROR, never PASS.
            with pytest.raises(ConsoleError, match="errors in a row"):
                console.dump_region("inforom")
        else:
            dump = console.dump_region("inforom")  # ZMODEM: a line in a subpacket costs one ZRPOS
            assert dump.size == 256 << 10
        assert SECRET in unread_text(console)


@settings(max_examples=150, deadline=None)
@given(data=st.binary(max_size=3000), where=st.integers(min_value=0), crc32=st.booleans())
def test_zmodem_text_anywhere_in_a_session_reaches_the_caller(data, where, crc32):
    """Whatever frame boundary a console line lands on, the receiver hands it on (noise or leftover),
    and a file it accepts is still exactly the file."""
    frames = session(data, crc32=crc32, chunk=512)
    frames.insert(where % (len(frames) + 1), f"\r\n{SECRET}\r\n".encode())
    rx = ZmodemReceiver(max_input=1 << 16)
    try:
        for frame in frames:
            rx.feed(frame)
    except TransferError:
        pass
    if rx.done:
        assert rx.result().data == data
    assert SECRET.encode() in rx.take_noise() + rx.leftover


def test_ymodem_text_between_or_inside_blocks_reaches_the_caller():
    frames = ymodem_session(bytes(range(256)) * 8, blk=128)
    for at in range(len(frames) + 1):
        rx = YmodemReceiver(max_input=1 << 16)
        rx.start()
        inserted = frames[:at] + [f"\r\n{SECRET}\r\n".encode()] + frames[at:]
        try:
            for frame in inserted:
                rx.feed(frame)
        except TransferError:
            pass
        assert SECRET.encode() in rx.take_noise() + rx.leftover, at


def test_the_senders_zfin_again_after_the_session_is_no_text():
    """sz sends ZFIN again when ours crossed its first (seen after a retransmission); the rest
    ("OO", the prompt) must still reach the console, or the prompt is never found. Before: the
    header stayed in the leftover, the prompt followed it mid-line, and an honest board ERRORed."""
    rx = ZmodemReceiver()
    for frame in session(b"firmware" * 100)[:-1]:
        rx.feed(frame)
    assert rx.done
    rx.feed(hex_header(FrameType.ZFIN) + b"OO" + b"bmc> ")
    assert rx.leftover == b"bmc> "


@pytest.mark.parametrize("method", ["zmodem", "ymodem"])
def test_sz_that_sends_another_file_than_the_one_asked_for_is_an_error(shell, method):
    """The board's sz answers `sz /flash/vbios.bin` with a file of another name (a stashed copy):
    the name it announces must be the one asked for. Before: taken as vbios."""
    endpoint = shell(sz_sends_instead={"/flash/vbios.bin": "/flash/inforom.bin"})
    with open_with(endpoint, {"method": method, "regions": {"vbios": {"path": "/flash/vbios.bin"}}}) as console:
        with pytest.raises(ConsoleError, match=r"sent a file named 'inforom.bin', not the 'vbios.bin' asked for"):
            console.dump_region("vbios")
        assert console.command("version") == "version: 96.00.DA.00.0C"  # back at the prompt
