"""Nothing a board prints is discarded: settled prompts, unread text, dumps read once.

The board here is a scripted peer on a real pty (os.openpty): the harness opens the slave path
with pyserial as it opens a USB-serial adapter; a thread on the master side echoes what is
typed and answers each command with a script of (delay, bytes).
"""

from __future__ import annotations

import os
import threading
import time
import tty

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from harness.interfaces.serial import (
    ConsoleError,
    SerialConsole,
    SerialSettingsError,
    UnreadText,
    clean_text,
    serial_settings,
)

from conftest import start_console_simulator, stop_processes

PROMPT = b"bmc> "


class PtyBoard:
    """A board on a pty: `boot` is written at once; a typed line is echoed, then its script runs."""

    def __init__(self, scripts: dict[str, list[tuple[float, bytes]]], boot: list[tuple[float, bytes]] = ()) -> None:
        self.master, self.slave = os.openpty()
        tty.setraw(self.slave)  # before pyserial opens it: no line discipline between us and the harness
        self.url = os.ttyname(self.slave)
        self.scripts = scripts
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._serve, args=(list(boot),), daemon=True)
        self.thread.start()

    def _play(self, script: list[tuple[float, bytes]]) -> None:
        for delay, data in script:
            if self.stopped.wait(delay):
                return
            os.write(self.master, data)

    def _serve(self, boot: list[tuple[float, bytes]]) -> None:
        self._play(boot)
        line = b""
        while not self.stopped.is_set():
            try:
                data = os.read(self.master, 4096)
            except OSError:
                return
            for byte in data:
                if byte == 0x0D:
                    os.write(self.master, line + b"\r\n")
                    unknown = b"unknown command: " + line + b"\r\n" if line else b""
                    self._play(self.scripts.get(line.decode(), [(0, unknown + PROMPT)]))
                    line = b""
                else:
                    line += bytes([byte])

    def console(self, **overrides) -> SerialConsole:
        return SerialConsole({"url": self.url, "prompt": PROMPT.decode(), "timeout": 3, **overrides})

    def close(self) -> None:
        self.stopped.set()
        for fd in (self.master, self.slave):
            os.close(fd)
        self.thread.join(2)


@pytest.fixture
def board():
    boards: list[PtyBoard] = []

    def make(scripts=None, boot=()) -> PtyBoard:
        boards.append(PtyBoard(scripts or {}, boot))
        return boards[-1]

    yield make
    for b in boards:
        b.close()


def rx_between(console: SerialConsole, unread: UnreadText) -> bytes:
    chunks = console.transcript.chunks[unread.first_chunk : unread.last_chunk + 1]
    assert chunks[0].direction == "rx" and chunks[-1].direction == "rx"
    return b"".join(c.data for c in chunks if c.direction == "rx")


# --- (a) a prompt counts only when the board then stays silent ---


def test_text_after_a_fake_prompt_is_part_of_the_answer_prompt_verbatim(board):
    b = board({"debug_unlock": [(0, b"unknown command: debug_unlock\r\n" + PROMPT),
                                (0.1, b"JTAG unlocked\r\n" + PROMPT)]}, boot=[(0, PROMPT)])
    with b.console(settle_s=0.6) as c:  # (well above the board's 0.1 s, on a loaded machine too)
        c.wait_prompt()
        assert c.command("debug_unlock") == "unknown command: debug_unlock\nbmc> JTAG unlocked"
        assert c.command("version") == "unknown command: version"
        assert c.take_unread() == []


def test_boot_log_runs_to_the_first_settled_prompt(board):
    b = board({}, boot=[(0, b"secure boot: ON\r\n" + PROMPT), (0.1, b"debug mode: ENABLED\r\n" + PROMPT)])
    with b.console(settle_s=0.6) as c:
        c.capture_boot_log("capture", timeout=3)
        assert c.boot_log == "secure boot: ON\nbmc> debug mode: ENABLED\n"
        assert c.last_command is None


def test_a_board_that_never_settles_times_out_with_everything_it_said(board):
    chatter = [(0.05, b"tick\r\n" + PROMPT)] * 40
    b = board({"status": [(0, b"ok\r\n" + PROMPT)] + chatter}, boot=[(0, PROMPT)])
    with b.console(settle_s=0.2) as c:
        c.wait_prompt()
        with pytest.raises(ConsoleError, match="timed out") as info:
            c.command("status", timeout=1)
        assert info.value.details["reason"] == "timeout"
        text = info.value.details["text"]
        assert text.startswith("ok\nbmc> tick\nbmc> tick\n")
        kept = c.take_unread()  # a caller that drops the error loses nothing (then: later ticks)
        assert kept[0].text == text and all(u.after == "status" for u in kept)
        with pytest.raises(ConsoleError, match="byte budget 100") as info:
            c.command("status", timeout=5, max_bytes=100)
        assert info.value.details["reason"] == "budget" and "tick\nbmc> tick" in info.value.details["text"]


def test_escape_sequences_after_the_prompt_are_not_text(board):
    b = board({"status": [(0, b"ok\r\n" + PROMPT), (0.05, b"\x1b[0m\x1b[K")]}, boot=[(0, PROMPT)])
    with b.console() as c:
        c.wait_prompt()
        assert c.command("status") == "ok"


# --- (b) text that arrives while nobody reads is kept ---


def test_text_after_a_settled_prompt_is_unread_not_dropped(board):
    b = board({"status": [(0, b"fans: OK\r\n" + PROMPT), (0.5, b"debug mode: ENABLED\r\n")]}, boot=[(0, PROMPT)])
    with b.console(settle_s=0.2) as c:
        c.wait_prompt()
        assert c.command("status") == "fans: OK"
        time.sleep(0.6)
        assert c.command("board") == "unknown command: board"
        unread = c.take_unread()
        assert [(u.text, u.after) for u in unread] == [("debug mode: ENABLED\n", "status")]
        assert b"debug mode: ENABLED\r\n" in rx_between(c, unread[0])
        assert c.take_unread() == [] and c.last_command == "board"


def test_take_unread_reads_what_is_waiting_without_a_command(board):
    b = board({"status": [(0, b"ok\r\n" + PROMPT), (0.4, b"late line\r\n")]}, boot=[(0, PROMPT)])
    with b.console(settle_s=0.2) as c:
        c.wait_prompt()
        c.command("status")
        time.sleep(1.0)
        assert [(u.text, u.after) for u in c.take_unread()] == [("late line\n", "status")]


def test_text_between_the_command_and_its_echo_is_unread(board):
    class EarlyBoard(PtyBoard):  # prints a line as soon as a byte arrives, before echoing
        def _serve(self, boot):
            os.write(self.master, PROMPT)
            os.read(self.master, 4096)
            os.write(self.master, b"FSP: debug fuse set\r\nstatus\r\nok\r\n" + PROMPT)
            self.stopped.wait(10)

    b = EarlyBoard({})
    try:
        with b.console() as c:
            c.wait_prompt()
            assert c.command("status") == "ok"
            assert [(u.text, u.after) for u in c.take_unread()] == [("FSP: debug fuse set\n", None)]
    finally:
        b.close()


def test_unread_around_the_boot_log_is_after_none(board):
    b = board({}, boot=[(0, b"boot ok\r\n" + PROMPT), (0.5, b"debug mode: ENABLED\r\n")])
    with b.console(settle_s=0.2) as c:
        c.capture_boot_log("capture", timeout=3)
        time.sleep(1.0)
        c.sync()
        assert [(u.text, u.after) for u in c.take_unread()] == [("debug mode: ENABLED\n", None)]


def test_what_answers_an_enter_is_unread_too(board):
    b = board({"": [(0, b"FSP: debug console unlocked\r\n" + PROMPT)]}, boot=[(0, PROMPT)])
    with b.console() as c:
        c.wait_prompt()
        assert c.sync() == "\nFSP: debug console unlocked\n"  # (the first LF is the echo of Enter)
        assert [(u.text, u.after) for u in c.take_unread()] == [("\nFSP: debug console unlocked\n", "")]


def test_text_without_any_prompt_at_open_is_unread(board):
    b = board({}, boot=[(0, b"half a boot log, no prompt\r\n")])
    with b.console() as c:
        c.capture_boot_log("capture", timeout=0.5)
        assert c.boot_log is None and "characters arrived without a prompt" in c.boot_log_problem
        assert [(u.text, u.after) for u in c.take_unread()] == [("half a boot log, no prompt\n", None)]


def test_a_timed_out_answer_is_kept_as_unread_text_too(board):
    b = board({"hang": [(0, b"started\r\n")]}, boot=[(0, PROMPT)])
    with b.console() as c:
        c.wait_prompt()
        with pytest.raises(ConsoleError) as info:
            c.command("hang", timeout=0.5)
        assert info.value.details["text"] == "started\n"
        c.sync()
        # A caller that drops the error loses nothing: the text is unread text after the command.
        assert [(u.text, u.after) for u in c.take_unread()] == [("started\n", "hang")]


def test_a_line_after_the_prompt_and_no_new_prompt_is_unread_after_that_command(board):
    b = board({"version": [(0, b"version: 1.0\r\n" + PROMPT), (0.05, b"debug mode: ENABLED\r\n")]},
              boot=[(0, PROMPT)])
    with b.console(settle_s=0.5) as c:  # (the line comes well inside the settle time)
        c.wait_prompt()
        assert c.command("version") == "version: 1.0"
        unread = c.take_unread()
        assert [(u.text, u.after) for u in unread] == [("debug mode: ENABLED\n", "version")]
        assert b"debug mode: ENABLED\r\n" in rx_between(c, unread[0])
        assert c.command("board") == "unknown command: board"  # the console is still usable


def test_text_after_the_prompt_until_the_deadline_is_unread_after_that_command(board):
    chatter = [(0.05, b"tick\r\n")] * 30  # no prompt again, never quiet for settle_s
    b = board({"status": [(0, b"ok\r\n" + PROMPT)] + chatter}, boot=[(0, PROMPT)])
    with b.console(settle_s=0.2) as c:
        c.wait_prompt()
        assert c.command("status", timeout=0.8) == "ok"
        time.sleep(1.0)
        c.sync()
        unread = c.take_unread()
        assert unread and all(u.after == "status" for u in unread)
        assert "".join(u.text for u in unread).count("tick") == 30


def test_what_arrives_before_close_is_in_the_transcript_and_unread(board):
    b = board({"status": [(0, b"ok\r\n" + PROMPT), (0.4, b"debug mode: ENABLED\r\n")]}, boot=[(0, PROMPT)])
    c = b.console(settle_s=0.1)
    with c:
        c.wait_prompt()
        assert c.command("status") == "ok"
        time.sleep(0.8)
    assert b"debug mode: ENABLED" in c.transcript.data("rx")
    assert [(u.text, u.after) for u in c.take_unread()] == [("debug mode: ENABLED\n", "status")]


def test_wait_quiet_keeps_what_it_hears_as_unread(board):
    b = board({"status": [(0, b"ok\r\n" + PROMPT), (0.3, b"late one\r\n"), (0.3, b"late two\r\n")]},
              boot=[(0, PROMPT)])
    with b.console(settle_s=0.1) as c:
        c.wait_prompt()
        c.command("status")
        assert c.wait_quiet(0.6, timeout=5)
        assert "".join(u.text for u in c.take_unread()) == "late one\nlate two\n"


def test_raw_reads_keep_unconsumed_text_unread(board):
    b = board({}, boot=[(0, b"line one\r\nRAW|line two\r\n")])
    with b.console() as c:
        c.expect("RAW")  # leaves "|line two\n" unconsumed
        with pytest.raises(ConsoleError, match="got 0 bytes"):
            c.read_bytes(4, timeout=0.2)
        assert [u.text for u in c.take_unread()] == ["|line two\n"]


# --- settings ---


def test_settle_s_is_a_checked_setting():
    config, _ = serial_settings({"url": "/dev/ttyUSB0", "prompt": "> ", "settle_s": 0.05})
    assert SerialConsole(config).settle_s == 0.05
    for bad in (0, -1, "0.3", True):
        with pytest.raises(SerialSettingsError, match="interfaces.serial.settle_s: must be a positive number"):
            serial_settings({"url": "/dev/ttyUSB0", "prompt": "> ", "settle_s": bad})


# --- (c) a region is read once per console ---


def test_a_region_is_dumped_once_and_kept(tmp_path):
    profile = {"console": {"prompt": "bmc> ", "boot_log": ["ok"], "version": "1",
                           "regions": {"vbios": {"size": 20_000, "seed": "s"}, "inforom": {"size": 5000, "seed": "t"}}}}
    proc, endpoint = start_console_simulator(profile, tmp_path)
    try:
        with SerialConsole(endpoint) as c:
            c.wait_prompt(timeout=5)
            assert c.dumped_images() == {}
            first = c.dump_region("vbios", timeout=30)
            rx = c.transcript.rx_bytes
            again = c.dump_region("vbios", timeout=30)
            assert again is first and c.transcript.rx_bytes == rx
            assert "already read" in c.transcript.chunks[-1].data.decode()
            with pytest.raises(ConsoleError):
                c.dump_region("nope", timeout=30)
            c.sync()
            other = c.dump_region("inforom", timeout=30)
            assert c.dumped_images() == {"vbios": first.data, "inforom": other.data}
    finally:
        stop_processes([proc])


# --- the whole answer reaches the caller, however the board writes it ---

ANSWER_PIECES = [b"\r\n", b"\r", b"\n", b"\x1b", b"\x1b[1;31m", b"\x1b]0;t", b"\x07", b"\x1b\\", b"\x1b(B",
                 "\u00e9\u4e2d".encode(), b"\xe4", b"\xb8\xad", b"\xff", b"\x00", b"ok", b"debug mode: ENABLED"]


@given(st.lists(st.one_of(st.sampled_from(ANSWER_PIECES), st.binary(max_size=4)), min_size=1, max_size=12))
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_an_answer_reaches_the_caller_whole_however_it_is_written(board, writes):
    answer = b"".join(writes)
    assume("bmc> " not in clean_text(answer + b"\r\n") and b"x" not in answer)
    b = board({"x": [(0.002, w) for w in writes] + [(0.002, b"\r\n" + PROMPT)]}, boot=[(0, PROMPT)])
    with b.console(settle_s=0.05) as c:
        c.wait_prompt()
        assert c.command("x") == clean_text(answer + b"\r\n")[:-1]
        assert c.take_unread() == []


def test_a_board_that_floods_unasked_is_an_error_and_its_text_is_kept(board):
    flood = [(0, b"ok\r\n" + PROMPT), (0.3, b"")] + [(0.01, b"spam " * 200 + b"\r\n")] * 20  # 20 KB, unasked
    b = board({"status": flood}, boot=[(0, PROMPT)])
    with b.console(max_bytes=4000, settle_s=0.05) as c:
        c.wait_prompt()
        assert c.command("status") == "ok"
        time.sleep(1.0)
        with pytest.raises(ConsoleError, match="characters nobody asked for") as info:
            c.command("board")
        assert info.value.details["reason"] == "budget"
        kept = c.take_unread()
        assert kept and all(u.after == "status" for u in kept) and sum(len(u.text) for u in kept) > 4000
