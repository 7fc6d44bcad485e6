"""What long work is doing, shown on an operator's terminal and nowhere else.

Long work reports itself here; a reporter that `attestlab run` (or the pytest plugin) installs
shows it. Without a reporter every call is a cheap no-op, so probes and interfaces call it freely:

    from harness import progress
    progress.update("dump vbios", done=512_000, total=1_048_576, unit="B")   # bytes, total, rate
    progress.update("egress window", done=12.0, total=60.0, unit="s", detail="1234 frames")
    progress.done("dump vbios", "1048576 bytes in 0.9 s")

Activities nest by time: everything begun and not yet done shows on one status line, oldest first
(`L1-FW-VBIOS::digest · dump vbios 512.0 KiB of 1.0 MiB (49%), 110.3 KiB/s`). An activity done
with a summary keeps showing it while an activity begun before it goes on.

`TerminalReporter` draws that line only on a terminal: a stream that is not a TTY (a log file, a
pipe, a CI job, the capture of a JUnit run) gets nothing at all. Progress is never evidence: a
reporter that cannot write loses its line, never the run.
"""

from __future__ import annotations

import contextlib
import os
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO, Protocol


class Reporter(Protocol):
    def update(self, activity: str, done: float | None, total: float | None, unit: str, detail: str) -> None: ...
    def done(self, activity: str, summary: str) -> None: ...
    def clear(self) -> None: ...
    def close(self) -> None: ...


_reporter: Reporter | None = None


def install(reporter: Reporter) -> Reporter | None:
    """Make `reporter` the one that shows progress; returns the one it replaces (not closed)."""
    global _reporter
    previous, _reporter = _reporter, reporter
    return previous


def uninstall() -> None:
    """Close the installed reporter (its status line is cleared) and go back to no-ops."""
    global _reporter
    reporter, _reporter = _reporter, None
    if reporter is not None:
        _quietly(reporter.close)


def current() -> Reporter | None:
    return _reporter


def update(activity: str, *, done: float | None = None, total: float | None = None, unit: str = "",
           detail: str = "") -> None:
    """`activity` is under way: `done` of `total` `unit`s so far, and a few words of `detail`."""
    reporter = _reporter
    if reporter is not None:
        _quietly(reporter.update, activity, done, total, unit, detail)


def done(activity: str, summary: str = "") -> None:
    """`activity` ended; `summary` (if any) says how, while the work around it goes on."""
    reporter = _reporter
    if reporter is not None:
        _quietly(reporter.done, activity, summary)


def clear() -> None:
    """Take the status line off the terminal before writing other output there (it comes back
    at the next update)."""
    reporter = _reporter
    if reporter is not None:
        _quietly(reporter.clear)


@contextlib.contextmanager
def activity(name: str, detail: str = "") -> Iterator[None]:
    """`name` is under way for the duration of the block (it is done however the block ends)."""
    update(name, detail=detail)
    try:
        yield
    finally:
        done(name)


def _quietly(call, *args) -> None:
    # What is shown never decides anything: a terminal that went away (EIO, a closed fd), or a
    # value it cannot show, loses the status line; the work and its verdict go on.
    try:
        call(*args)
    except Exception:
        pass


def human_bytes(n: float) -> str:
    """`n` bytes in B, KiB, MiB or GiB (one decimal above bytes)."""
    for unit in ("B", "KiB", "MiB"):
        if abs(n) < 1024:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e\u2066-\u2069]")


def terminal_safe(text: str) -> str:
    """`text` on one line with control characters escaped: a reason quoting the board's bytes must
    not move the operator's cursor, clear a line, reorder text or start a line of its own (an ESC
    sequence or a newline that shows FAIL as PASS on screen)."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}" if ord(m.group()) < 0x100
                        else f"\\u{ord(m.group()):04x}", text)


@dataclass
class _Activity:
    name: str
    started: float
    first_done: float | None = None
    done: float | None = None
    total: float | None = None
    unit: str = ""
    detail: str = ""
    summary: str | None = None   # set when the activity is done

    def text(self, now: float) -> str:
        if self.summary is not None:
            return f"{self.name}: {self.summary}"
        text = self.name
        if self.done is not None:
            text += " " + self._amount(now)
        elif now - self.started >= 1:
            text += f" ({now - self.started:.0f} s)"
        return f"{text}, {self.detail}" if self.detail else text

    def _amount(self, now: float) -> str:
        done, total = self.done, self.total
        if self.unit == "B":
            text = human_bytes(done) + (f" of {human_bytes(total)} ({100 * done / total:.0f}%)" if total else "")
            elapsed = now - self.started
            if elapsed >= 0.5 and self.first_done is not None:
                text += f", {human_bytes((done - self.first_done) / elapsed)}/s"
            return text
        unit = f" {self.unit}" if self.unit else ""
        if not total:
            return f"{done:g}{unit}"
        if self.unit == "s":  # a window: how much of it is left
            return f"{done:.0f} of {total:g} s, {max(0.0, total - done):.0f} s left"
        return f"{done:g} of {total:g}{unit} ({100 * done / total:.0f}%)"


# The status line is drawn on the line below the cursor, and the cursor goes back where it was,
# column kept: pytest -v has written `plan.yaml::REQ::step ` and will write PASSED after it. IND
# (ESC D) moves down a line in the same column, scrolling at the bottom, so a cursor saved after
# it (ESC 7) is restored (ESC 8) to the same place; RI (ESC M) goes back up, same column.
_DOWN, _UP, _SAVE, _RESTORE, _ERASE = "\x1bD", "\x1bM", "\x1b7", "\x1b8", "\x1b[K"


class TerminalReporter:
    """One status line on a TTY, redrawn at most every `interval` seconds; nothing on anything else.

    An activity shows once it has lasted `delay` seconds (quick steps do not flicker). With
    `ticker`, a background thread redraws while nothing reports, so a step that waits silently
    still shows its elapsed time; tests call `tick(now)` themselves with a clock of their own.
    """

    def __init__(self, stream: IO[str], *, interval: float = 0.25, delay: float = 0.5,
                 clock=time.monotonic, ticker: bool = True, width: int | None = None) -> None:
        self.stream = stream
        self.interval, self.delay, self.clock = interval, delay, clock
        self.enabled = _is_terminal(stream)
        self._width = width
        self._activities: dict[str, _Activity] = {}
        self._shown = ""          # the status line now on the terminal ("" when none)
        self._last_draw = float("-inf")
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._want_ticker = ticker

    def update(self, activity: str, done: float | None, total: float | None, unit: str, detail: str) -> None:
        if not self.enabled:
            return
        now = self.clock()
        with self._lock:
            entry = self._activities.get(activity)
            if entry is None or entry.summary is not None:  # new, or begun again
                self._activities.pop(activity, None)
                entry = self._activities[activity] = _Activity(activity, now, first_done=done)
            entry.done, entry.total, entry.unit, entry.detail = done, total, unit, detail
            self._start_ticker()
            self.tick(now)

    def done(self, activity: str, summary: str) -> None:
        if not self.enabled:
            return
        with self._lock:
            entry = self._activities.get(activity)
            if entry is None:
                return
            entry.summary = summary
            if not summary:
                del self._activities[activity]
            live_before = False  # a summary shows while something begun before it goes on
            for name, other in list(self._activities.items()):
                live_before = live_before or other.summary is None
                if not live_before:
                    del self._activities[name]
            self.tick(force=True)

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=1)
        with self._lock:
            self._activities.clear()
            self.clear()

    def line(self, now: float) -> str:
        """The status line at `now`: the activities older than `delay`, cut to the terminal's width."""
        text = " · ".join(a.text(now) for a in self._activities.values() if now - a.started >= self.delay)
        text = terminal_safe(text).replace("\t", " ")  # a name or detail from the board moves no cursor
        width = self.width() - 1  # writing the last column wraps on some terminals
        return text if len(text) <= width else text[:width - 1] + "…"

    def tick(self, now: float | None = None, *, force: bool = False) -> None:
        """Redraw when the line changed and the last draw is `interval` old (at once with `force`)."""
        if not self.enabled:
            return
        now = self.clock() if now is None else now
        with self._lock:
            if not force and now - self._last_draw < self.interval:
                return
            text = self.line(now)
            if text != self._shown:
                self._last_draw = now
                self._draw(text)

    def clear(self) -> None:
        """Take the status line off the terminal (and keep it off for `interval`: time for the
        output it makes room for)."""
        with self._lock:
            if self._shown:
                self._draw("")
            self._last_draw = self.clock()

    def width(self) -> int:
        if self._width is not None:
            return self._width
        try:
            columns = os.get_terminal_size(self.stream.fileno()).columns
        except (OSError, ValueError, AttributeError):
            columns = 0
        return columns if columns >= 20 else 80  # a fresh pty says 0 columns

    def _draw(self, text: str) -> None:
        self._shown = text
        try:
            self.stream.write(f"{_DOWN}{_SAVE}\r{_ERASE}{text}{_RESTORE}{_UP}")
            self.stream.flush()
        except (OSError, ValueError):
            self.enabled = False  # the terminal is gone: stop drawing, keep working

    def _start_ticker(self) -> None:
        if self._want_ticker and self._thread is None and not self._stop.is_set():
            self._thread = threading.Thread(target=self._tick_loop, name="attestlab-progress", daemon=True)
            self._thread.start()

    def _tick_loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.tick()
            except Exception:  # a redraw never ends the run
                return


def _is_terminal(stream: IO[str]) -> bool:
    if os.environ.get("TERM") == "dumb":
        return False
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):
        return False


def terminal_stream(fd: int = 2) -> IO[str] | None:
    """A stream of its own on `fd` when that is a terminal, else None. It is a dup of `fd`, so
    pytest's capture of fd 2 during a test does not take it; a log or a pipe gets no progress."""
    try:
        if not os.isatty(fd):
            return None
        return os.fdopen(os.dup(fd), "w", encoding="utf-8", errors="replace")
    except OSError:
        return None
