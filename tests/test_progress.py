"""Progress you can see: a status line on a terminal, nothing anywhere else (harness/progress.py).

The reporter draws on a real pty here; a pipe, a file or a log gets nothing. `attestlab run`
shows the step under way and what long work reports (the egress window, a dump's bytes and
rate) on a terminal, is quiet with -q, and prints no progress escape at all when its stderr is
a pipe."""

from __future__ import annotations

import fcntl
import io
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import BOARDS, PCIE_PLAN
from harness import progress
from probes import egress

STATUS = re.compile(r"\x1bD\x1b7\r\x1b\[K(.*?)\x1b8\x1bM", re.S)  # one draw of the status line


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def terminal():
    """A pty: (the reporter's stream on its slave side, a function reading what reached the master)."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    stream = os.fdopen(slave, "w", encoding="utf-8")

    def drawn() -> str:
        out = b""
        while select.select([master], [], [], 0)[0]:
            out += os.read(master, 65536)
        return out.decode()

    yield stream, drawn
    stream.close()
    os.close(master)


@pytest.fixture
def installed():
    """Install a reporter for one test; the previous one (none, normally) comes back after it."""
    previous = progress.current()
    yield lambda reporter: progress.install(reporter)
    progress.uninstall()
    if previous is not None:
        progress.install(previous)


def reporter_on(stream, clock, **kwargs) -> progress.TerminalReporter:
    return progress.TerminalReporter(stream, clock=clock, ticker=False, **kwargs)


def test_the_status_line_appears_on_a_terminal_and_is_cleared_when_the_work_ends(terminal, installed):
    stream, drawn = terminal
    clock = Clock()
    installed(reporter_on(stream, clock))
    progress.update("L1-FW-INTEGRITY::digests")
    clock.now += 1
    progress.update("dump vbios", done=0, total=1 << 20, unit="B")
    clock.now += 1
    progress.update("dump vbios", done=512 << 10, total=1 << 20, unit="B")
    progress.done("dump vbios", "1048576 bytes in 2.0 s")
    progress.done("L1-FW-INTEGRITY::digests")
    lines = STATUS.findall(drawn())
    assert lines[0] == "L1-FW-INTEGRITY::digests (1 s)"
    assert "L1-FW-INTEGRITY::digests (2 s) · dump vbios 512.0 KiB of 1.0 MiB (50%), 512.0 KiB/s" in lines
    assert "L1-FW-INTEGRITY::digests (2 s) · dump vbios: 1048576 bytes in 2.0 s" in lines
    assert lines[-1] == ""  # cleared: the terminal is as pytest left it


def test_the_line_goes_below_the_cursor_and_comes_back_to_the_same_column(terminal, installed):
    """pytest -v has written `plan.yaml::REQ::step ` and writes PASSED after it: the status line
    must not overwrite that, nor leave the cursor anywhere else."""
    stream, drawn = terminal
    clock = Clock()
    installed(reporter_on(stream, clock, delay=0))
    progress.update("L1-EGRESS::window", done=3, total=8, unit="s", detail="6 frames")
    raw = drawn()
    assert raw.startswith("\x1bD\x1b7\r")  # down one line, column kept; save; to column 0 there
    assert raw.endswith("\x1b8\x1bM")        # back to the saved place, then up: where it started
    assert "\n" not in raw
    assert STATUS.findall(raw) == ["L1-EGRESS::window 3 of 8 s, 5 s left, 6 frames"]


def test_nothing_is_drawn_on_a_pipe_a_file_or_a_dumb_terminal(tmp_path, terminal, installed, monkeypatch):
    read_end, write_end = os.pipe()
    targets = [os.fdopen(write_end, "w"), open(tmp_path / "log", "w"), io.StringIO()]
    for stream in targets:
        reporter = progress.TerminalReporter(stream, delay=0, ticker=False)
        assert not reporter.enabled
        installed(reporter)
        progress.update("egress window on enp5s0", done=1, total=8, unit="s")
        progress.done("egress window on enp5s0", "over")
    targets[0].close()
    assert os.read(read_end, 100) == b""
    os.close(read_end)
    targets[1].close()
    assert (tmp_path / "log").read_text() == "" and targets[2].getvalue() == ""
    assert progress.terminal_stream(write_end) is None  # not a tty (here: not even open)
    monkeypatch.setenv("TERM", "dumb")
    assert not progress.TerminalReporter(terminal[0]).enabled


def test_redraws_are_rate_limited_and_quick_work_never_shows(terminal, installed):
    stream, drawn = terminal
    clock = Clock()
    installed(reporter_on(stream, clock, interval=0.25, delay=0.5))
    progress.update("L1-PCIE-IDENTITY::identity")  # a step of 40 ms: never drawn
    clock.now += 0.04
    progress.done("L1-PCIE-IDENTITY::identity")
    assert drawn() == ""
    progress.update("dump vbios", done=0, total=10_000_000, unit="B")
    clock.now += 0.6
    for n in range(1000):  # a transfer reporting every block
        clock.now += 0.0001
        progress.update("dump vbios", done=n * 1000, total=10_000_000, unit="B")
    assert len(STATUS.findall(drawn())) == 1
    clock.now += 0.3
    progress.update("dump vbios", done=1_200_000, total=10_000_000, unit="B")
    assert len(STATUS.findall(drawn())) == 1


def test_the_line_fits_the_terminal_and_board_text_moves_no_cursor(terminal, installed):
    stream, drawn = terminal
    clock = Clock()
    installed(reporter_on(stream, clock, delay=0))
    progress.update("transfer", detail="file 'ok\x1b[2K\rPASS\nx' " + "y" * 300)
    (line,) = STATUS.findall(drawn())
    assert "\x1b" not in line and "\r" not in line and "\n" not in line
    assert "\\x1b[2K\\x0dPASS\\x0a" in line
    assert len(line) == 99 and line.endswith("…")  # 100 columns, the last one left free


numbers = st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True), st.integers(-2**70, 2**70))


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.text(max_size=200), numbers, numbers, st.sampled_from(["", "B", "s", "\x1b[2J"]),
                          st.text(max_size=200), st.booleans()), max_size=8))
def test_whatever_work_reports_the_line_is_one_line_that_fits_and_nothing_raises(reports):
    """A file name or a size from a board's ZMODEM header ends up on the status line: whatever it
    is, the line escapes it, fits the terminal and never raises into the work."""
    master, slave = pty.openpty()
    stream = os.fdopen(slave, "w", encoding="utf-8", errors="replace")
    clock = Clock()
    reporter = reporter_on(stream, clock, delay=0, width=60)
    previous = progress.install(reporter)
    try:
        for activity, done, total, unit, detail, finish in reports:
            clock.now += 1
            progress.update(activity, done=done, total=total, unit=unit, detail=detail)
            if finish:
                progress.done(activity, detail)
            line = reporter.line(clock.now)
            assert len(line) <= 59 and not any(c in line for c in "\x1b\r\n\t\x00\x7f\u2028\u202e")
    finally:
        progress.uninstall()
        if previous is not None:
            progress.install(previous)
        stream.close()
        os.close(master)


def test_a_terminal_that_goes_away_loses_the_line_not_the_run(installed):
    master, slave = pty.openpty()
    stream = os.fdopen(slave, "w")
    reporter = progress.TerminalReporter(stream, delay=0, ticker=False)
    installed(reporter)
    stream.close()
    os.close(master)
    progress.update("dump vbios", done=1, total=2, unit="B")  # the write fails: no exception
    progress.done("dump vbios", "done")
    assert not reporter.enabled


def test_without_a_reporter_every_call_is_a_no_op():
    assert progress.current() is None
    progress.update("anything", done=1, total=2, unit="B", detail="x")
    progress.done("anything", "y")
    progress.clear()
    with progress.activity("block"):
        pass


def test_the_egress_window_counts_down_with_the_frames_seen(monkeypatch, installed):
    """probes/egress reports through harness.progress (one way for everything long), ending the
    activity however the window ends."""
    calls = []

    class Recorder:
        def update(self, activity, done, total, unit, detail):
            calls.append(("update", activity, done, total, unit, detail))

        def done(self, activity, summary):
            calls.append(("done", activity))

        def clear(self):
            pass

        def close(self):
            pass

    class Point:
        interface = "enp5s0"
        elapsed = 0.0

        def run_for(self, seconds):
            self.elapsed += seconds

        def progress(self):
            return {"frames": int(self.elapsed * 10), "dropped": 0, "bytes": 1 << 20, "max_bytes": 512 << 20,
                    "elapsed_ns": int(self.elapsed * 1e9)}

    installed(Recorder())
    monkeypatch.setattr(egress, "_PROGRESS_EVERY_S", 0.02)
    egress._run_window(Point(), 0.05)
    updates = [c for c in calls if c[0] == "update"]
    assert updates and all(c[1] == "egress window on enp5s0" and c[3] == 0.05 and c[4] == "s" for c in updates)
    assert updates[0][5].endswith("frames, 0 lost; capture 1.0 of 512 MiB")
    assert calls[-1] == ("done", "egress window on enp5s0")

    class Broken(Point):
        def run_for(self, seconds):
            raise RuntimeError("capture thread died")

    calls.clear()
    with pytest.raises(RuntimeError):
        egress._run_window(Broken(), 1)
    assert calls == [("done", "egress window on enp5s0")]


def run_on_a_pty(argv: list[str], cwd) -> str:
    """`argv` with a pty as its stdout and stderr: everything an operator would see."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 160, 0, 0))
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=slave, stderr=slave, cwd=cwd,
                            env={**os.environ, "TERM": "xterm"})
    os.close(slave)
    out = b""
    try:
        while select.select([master], [], [], 120)[0]:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the child closed the pty
                break
            if not chunk:
                break
            out += chunk
    finally:
        proc.wait(timeout=60)
        os.close(master)
    return out.decode(errors="replace")


SLOW_TEST = """
import time
from harness import progress

def test_a_long_transfer():
    for n in range(5):
        progress.update("dump vbios", done=n * 1000, total=4000, unit="B")
        time.sleep(0.2)
    progress.done("dump vbios", "4000 bytes")
"""


def test_a_run_shows_progress_on_its_terminal_through_pytest_s_capture_and_nowhere_else(tmp_path):
    """The reporter is a dup of the terminal taken before pytest captures fd 2: a test's progress
    reaches the operator while pytest captures the test's output; -q shows none. (`attestlab run`
    with its output on pipes draws nothing: tests/test_interop.py.)"""
    (tmp_path / "test_slow.py").write_text(SLOW_TEST)
    pytest_argv = [sys.executable, "-m", "pytest", "test_slow.py", f"--board={BOARDS / 'sim-clean.yaml'}",
                   "-p", "no:cacheprovider", "-p", "no:hypothesispytest"]
    seen = run_on_a_pty(pytest_argv, tmp_path)
    lines = STATUS.findall(seen)
    assert any(re.fullmatch(r"dump vbios [\d.]+ K?i?B of 3.9 KiB \(\d+%\), [\d.]+ K?i?B/s", line) for line in lines), seen
    assert lines[-1] == "" and "1 passed" in seen
    quiet = run_on_a_pty([*pytest_argv, "-q"], tmp_path)
    assert "\x1bD" not in quiet and "1 passed" in quiet


RECORDER_TEST = """
from harness import progress

class Recorder:
    def __init__(self, path):
        self.path = path
    def update(self, activity, done, total, unit, detail):
        open(self.path, "a").write(f"update {activity}\\n")
    def done(self, activity, summary):
        open(self.path, "a").write(f"done {activity}\\n")
    def clear(self):
        pass
    def close(self):
        pass

def test_install_a_recorder():
    progress.install(Recorder("steps.log"))
"""


def test_each_plan_step_reports_itself_while_it_runs(tmp_path):
    """Which step is running (requirement::step) is what the status line leads with."""
    (tmp_path / "test_recorder.py").write_text(RECORDER_TEST)
    run = subprocess.run([sys.executable, "-m", "pytest", "test_recorder.py", str(PCIE_PLAN),
                          f"--board={BOARDS / 'sim-clean.yaml'}", "-p", "no:cacheprovider", "-p", "no:hypothesispytest", "-q"],
                         capture_output=True, text=True, cwd=tmp_path)
    assert "3 passed" in run.stdout, run.stdout
    assert (tmp_path / "steps.log").read_text().splitlines() == [
        "update L1-PCIE-IDENTITY::identity", "done L1-PCIE-IDENTITY::identity",
        "update L1-PCIE-CAPABILITIES::inventory", "done L1-PCIE-CAPABILITIES::inventory"]
