"""A board's UART debug console, reached through pyserial, with every byte kept as evidence.

`SerialConsole` takes any URL `serial.serial_for_url` understands: a device (``/dev/ttyUSB0``),
a pty path (the CI simulator), ``rfc2217://host:port`` (ser2net, labgrid exporters),
``socket://host:port`` and ``loop://``. It offers an expect-style API over a *cleaned* text
view of the output, raw reads, and the firmware-dump protocol (harness/formats/dumpframe.py).

Reading never blocks forever: every read has a deadline, every expect a byte budget, and a
line longer than ``max_line`` characters keeps only its head and tail in the text view. Any
failure (timeout, budget, the tty vanishing, a dump that cannot complete) raises
`ConsoleError`, a `ProbeError` (the run records ERROR), and the console's `transcript`, which
holds every byte read and written so far, stays readable after the error and after `close()`.

As a board's `serial` interface (`open_serial`, registered in OPENERS): the board config's
settings are checked (`serial_settings`: SerialConsole's keys plus ``boot_log``,
``boot_timeout``, ``reboot_command``), the port is opened once per run and shared by the serial
probes, and the boot log is captured at open (`SerialConsole.capture_boot_log`); see
docs/board-config.md#serial and docs/serial.md.

Nothing the board prints is dropped unread (docs/serial.md#what-the-console-reads):

- A prompt counts only when ``settle_s`` seconds of silence follow it (`command`, `sync`,
  `wait_prompt`, the boot log). Text after an earlier prompt match is part of the answer, that
  prompt verbatim in it.
- Text that arrives while nobody reads (after a command returned, before the next call types)
  is read before typing and kept: `take_unread()` hands it over as `UnreadText` (the text, the
  command whose prompt it followed, the transcript chunks it came from).
- A region is dumped once per console; `dumped_images()` returns every verified image.

The text view is `harness/interfaces/textclean.py`'s; the transcript format is in
`harness/interfaces/transcript.py`; the dump client is `harness/interfaces/serial_dump.py`; the
ports (a tty, ``socket://``, ``rfc2217://``: block reads, writes by a deadline, nothing
discarded at open) are `harness/interfaces/serial_transport.py`.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import serial

from harness.formats.dumpframe import FrameError
from harness.interfaces.serial_dump import DumpResult, dump_region
from harness.interfaces.serial_transfer import TransferSettingsError, transfer_config, transfer_region
from harness.interfaces.serial_transport import Port, PortTimeout, open_port
from harness.interfaces.textclean import LineCapper, TextCleaner, clean_text
from harness.interfaces.transcript import (
    MAX_TRANSCRIPT_BYTES,
    TRANSCRIPT_MEDIA_TYPE,
    TRANSCRIPT_TEXT_MEDIA_TYPE,
    Chunk,
    Transcript,
    escape_bytes,
    unescape_text,
)
from harness.verdict import ProbeError


class _Pending:
    """Text read but not yet consumed, plus a little consumed context (for ^ and lookbehind)."""

    CONTEXT = 256
    PART = 1024  # small pieces are joined up to this many characters

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.size = 0
        self.context = "\n"

    def add(self, s: str) -> None:
        if s:
            if self.parts and len(self.parts[-1]) < self.PART:
                self.parts[-1] += s  # (a console that arrives a byte at a time: few parts for window())
            else:
                self.parts.append(s)
            self.size += len(s)
            if len(self.parts) > 512:
                self.parts = ["".join(self.parts)]

    def window(self, start: int) -> tuple[str, int, int]:
        """(text, index of its first char in pending (negative: context), search position)."""
        lo = start - self.CONTEXT
        acc: list[str] = []
        pos = self.size
        for p in reversed(self.parts):
            if pos <= lo:
                break
            acc.append(p)
            pos -= len(p)
        s = "".join(reversed(acc))
        if lo >= pos:
            return s[lo - pos :], lo, start - lo
        ctx = self.context[max(0, len(self.context) + lo) :] if lo < 0 else ""
        return ctx + s, -len(ctx), start + len(ctx)

    def text(self) -> str:
        if len(self.parts) > 1:
            self.parts = ["".join(self.parts)]
        return self.parts[0] if self.parts else ""

    def take(self, end: int) -> str:
        s = self.text()
        head, rest = s[:end], s[end:]
        self.parts = [rest] if rest else []
        self.size = len(rest)
        self.context = (self.context + head)[-self.CONTEXT :]
        return head

    def discard(self) -> str:
        return self.take(self.size)

    def tail(self, n: int = 200) -> str:
        return self.text()[-n:]


# --------------------------------------------------------------------------------------------
# Results and errors


class ConsoleError(ProbeError):
    """The console did not give what was expected. `transcript` holds everything so far."""

    def __init__(self, message: str, *, transcript: Transcript | None = None, details: Mapping[str, Any] | None = None,
                 partial: bytes | None = None) -> None:
        super().__init__(message)
        self.transcript = transcript
        self.details = dict(details or {})
        self.partial = partial


@dataclass(frozen=True)
class ExpectMatch:
    """What `expect` found: the match and the (clean) text before it since the last match."""

    pattern: str
    text: str
    before: str
    groups: tuple[str | None, ...]
    named: dict[str, str | None]
    elapsed: float
    bytes_read: int

    def group(self, key: int | str = 0) -> str | None:
        if key == 0:
            return self.text
        return self.named[key] if isinstance(key, str) else self.groups[key - 1]


@dataclass(frozen=True)
class UnreadText:
    """Text the board printed that no call consumed: it arrived after a command had returned
    (after its settled prompt) and before the next call read the port, or between a command
    being sent and its echo. `SerialConsole.take_unread` hands it over; nothing is dropped.
    """

    text: str  # clean text, verbatim (prompts included)
    after: str | None  # the command whose prompt it followed ("" an Enter); None: at open, around the boot log
    first_chunk: int  # transcript chunk indices of the rx bytes it came from
    last_chunk: int


@dataclass
class _Limits:
    deadline: float
    budget: int
    started: float
    got: int = 0


# --------------------------------------------------------------------------------------------
# The console

_DEFAULTS: dict[str, Any] = {
    "url": None,
    "baudrate": 115200,
    "prompt": None,  # literal
    "prompt_regex": None,
    "newline": "\r",
    "echo": True,  # the board echoes what is typed; command() skips the echo
    "timeout": 10.0,  # s, default for expect/command/read_* calls
    "max_bytes": 4 << 20,  # byte budget per expect/command/read call
    "max_line": 64 << 10,  # characters kept per line in the text view
    "max_match": 64 << 10,  # characters a match may reach back into earlier reads
    "settle_s": 0.3,  # s of silence after a prompt before it counts as the prompt (see command())
    "poll_interval": 0.05,  # s, longest single blocking read
    "write_timeout": 5.0,  # s
    "flush_on_open": False,  # True: discard what the port buffered before open
    "dump_command": "dump {name}",
    "dump_timeout": 600.0,  # s, a whole dump
    "dump_start_timeout": 10.0,  # s, command to first dump record
    "dump_idle_timeout": 2.0,  # s of silence before asking for what is missing
    "dump_max_rounds": 8,  # RESEND rounds before giving up
    "dump_max_size": 1 << 30,  # largest region accepted, bytes
    "transfer": None,  # how regions are read: None dumpframe; serial_transfer.transfer_config's mapping
    "serial_options": {},  # passed to serial_for_url (bytesize, parity, rtscts, xonxoff, ...)
}


class SerialConsole:
    """An expect-style console on any pyserial URL, recording a `Transcript`.

    Config keys (a mapping, e.g. the simulator's endpoint or a board config) and defaults are in
    `_DEFAULTS`; ``url`` is required. Unknown keys are an error. Use as a context manager.
    """

    def __init__(self, config: Mapping[str, Any], **overrides: Any) -> None:
        cfg = {**dict(config), **overrides}
        unknown = sorted(set(cfg) - set(_DEFAULTS))
        if unknown:
            raise ValueError(f"unknown console config key(s): {', '.join(unknown)} (known: {', '.join(_DEFAULTS)})")
        cfg = {**_DEFAULTS, **cfg}
        if not cfg["url"] or not isinstance(cfg["url"], str):
            raise ValueError("console config needs a 'url' (a tty path, rfc2217://, socket://, loop://)")
        if cfg["prompt"] is not None and cfg["prompt_regex"] is not None:
            raise ValueError("console config: give 'prompt' (literal) or 'prompt_regex', not both")
        self.config = cfg
        self.url: str = cfg["url"]
        self.timeout = float(cfg["timeout"])
        self.max_bytes = int(cfg["max_bytes"])
        self.max_match = int(cfg["max_match"])
        self.newline: str = cfg["newline"]
        self.echo = bool(cfg["echo"])
        self.settle_s = float(cfg["settle_s"])
        if cfg["prompt"] is not None:
            self.prompt_description = repr(cfg["prompt"])
            self._prompt_rx: re.Pattern | None = re.compile(r"(?m)^" + re.escape(str(cfg["prompt"])))
        elif cfg["prompt_regex"] is not None:
            self.prompt_description = f"/{cfg['prompt_regex']}/"
            try:
                self._prompt_rx = re.compile(r"(?m)^(?:" + str(cfg["prompt_regex"]) + ")")
            except re.error as e:
                raise ValueError(f"console config: prompt_regex {cfg['prompt_regex']!r} is not a regex: {e}") from None
        else:
            self.prompt_description = "(none configured)"
            self._prompt_rx = None
        self.transcript = Transcript(self.url)
        self._ser: Port | None = None  # the open port (harness/interfaces/serial_transport.py)
        self._poll = float(cfg["poll_interval"])
        self._cleaner = TextCleaner()
        self._capper = LineCapper(int(cfg["max_line"]))
        self._pending = _Pending()
        self._raw_left = b""
        self._last_rx = -1  # transcript index of the latest rx chunk
        self._unread_from = 0  # unconsumed text comes from rx chunks at or after this index
        self._unread: list[UnreadText] = []
        self._unread_chars = 0  # characters in _unread: at most about max_bytes (see _drain)
        self._elided_before = 0  # characters elided by text views since replaced (_reset_text)
        # The command typed last ("" an Enter), None before any (and again after the boot log).
        self.last_command: str | None = None
        self._dumps: dict[str, DumpResult] = {}  # region -> verified image, read once per console
        # Told the size of every block read (for progress on long text answers such as a hex dump).
        self.on_rx: Callable[[int], None] | None = None
        # What the board printed up to its first prompt, captured once when the board's console
        # is opened (see `capture_boot_log`); None with `boot_log_problem` saying why when not.
        self.boot_log: str | None = None
        self.boot_log_problem: str | None = None
        self.boot_log_mode: str | None = None
        self.boot_span: tuple[int, int] = (0, 0)  # transcript chunks of the capture

    # -- lifecycle --

    @classmethod
    def from_endpoint(cls, endpoint: Mapping[str, Any], **overrides: Any) -> "SerialConsole":
        """From a simulator endpoint (``{"url", "baudrate", "prompt"}``) plus overrides."""
        return cls(endpoint, **overrides)

    @property
    def is_open(self) -> bool:
        return self._ser is not None

    def open(self) -> "SerialConsole":
        if self._ser is not None:
            return self
        cfg = self.config
        try:
            # What the board said before we attached (a boot log) is evidence: nothing is
            # discarded at open unless flush_on_open says so.
            port = open_port(self.url, baudrate=int(cfg["baudrate"]), poll_interval=self._poll,
                             write_timeout=float(cfg["write_timeout"]), options=cfg["serial_options"],
                             flush_on_open=bool(cfg["flush_on_open"]))
        except (serial.SerialException, OSError, ValueError) as e:
            self.transcript.note(f"open {self.url} failed: {e}")
            raise ConsoleError(f"cannot open console {self.url}: {e}", transcript=self.transcript) from e
        self._ser = port
        self.transcript.note(f"opened {self.url} at {cfg['baudrate']} baud ({port.kind})")
        self._note_port()
        return self

    def _note_port(self) -> None:
        """Put what the port did not take (settings, unanswered requests) in the transcript."""
        if self._ser is not None:
            while self._ser.notes:
                self.transcript.note(f"port: {self._ser.notes.pop(0)}")

    def close(self) -> None:
        """Close the port. What the board printed and nobody read yet is read first (without
        waiting): it is in the transcript, and `take_unread()` still hands it over."""
        if self._ser is not None:
            try:
                self._drain()
            except ConsoleError:
                pass  # (noted in the transcript; what was read is kept)
        self._note_port()
        ser, self._ser = self._ser, None
        if ser is None:
            return
        try:
            ser.close()
        except Exception as e:  # closing a vanished tty may fail; the transcript says so
            self.transcript.note(f"close {self.url}: {type(e).__name__}: {e}")
        else:
            self.transcript.note(f"closed {self.url}")

    def __enter__(self) -> "SerialConsole":
        return self.open()

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- low level --

    def _error(self, message: str, *, details: Mapping[str, Any] | None = None, partial: bytes | None = None) -> ConsoleError:
        self.transcript.note(f"error: {message}")
        return ConsoleError(f"console {self.url}: {message}", transcript=self.transcript, details=details, partial=partial)

    def _require_open(self) -> None:
        if self._ser is None:
            raise self._error("not open (call open() or use it as a context manager)")

    def _read_chunk(self, deadline: float, doing: str | Callable[[], str], *, wait: bool = True) -> bytes:
        """At most one chunk: what is waiting, else wait up to one poll interval (never past deadline).

        ``wait=False``: only what is already waiting, at once (the deadline is not used).
        """
        left = deadline - time.monotonic() if wait else 0.0
        if left <= 0 and wait:
            return b""
        try:
            # One block: all that is waiting, whatever carries it (serial_transport.py).
            data = self._ser.read(min(left, self._poll))
        except Exception as e:  # SerialException, OSError (EIO), and pyserial's odd ones on a dead fd
            what = doing() if callable(doing) else doing
            raise self._error(f"port failed while {what}: {type(e).__name__}: {e}") from e
        if data:
            self.transcript.record("rx", data)
            self._last_rx = len(self.transcript) - 1
            if self.on_rx is not None:
                self.on_rx(len(data))
        return data

    def write(self, data: bytes) -> None:
        """Write raw bytes (recorded)."""
        self._require_open()
        data = bytes(data)
        self.transcript.record("tx", data)
        timeout = float(self.config["write_timeout"])
        try:
            self._ser.write(data, time.monotonic() + timeout)
        except (serial.SerialTimeoutException, PortTimeout) as e:
            raise self._error(f"write of {len(data)} bytes timed out after {timeout:g} s "
                              f"(the other end is not reading): {e}") from e
        except Exception as e:
            raise self._error(f"port failed while writing {len(data)} bytes: {type(e).__name__}: {e}") from e

    def send_line(self, text: str) -> None:
        """Type `text` and Enter (the configured newline, CR by default)."""
        self.write((text + self.newline).encode("utf-8"))

    def interrupt(self) -> None:
        """Ctrl-C."""
        self.write(b"\x03")

    # -- text view --

    def _to_text(self, data: bytes) -> None:
        self._pending.add(self._capper.feed(self._cleaner.feed(data)))

    def _take_raw_left(self) -> None:
        if self._raw_left:
            data, self._raw_left = self._raw_left, b""
            self._to_text(data)

    def _reset_text(self) -> None:
        """A fresh text view (the byte stream was cut by raw reads); what it held becomes unread."""
        self._pending.add(self._capper.feed(self._cleaner.feed(b"", final=True)))
        self._keep_unread(*self._consume_all(), self.last_command)
        self._elided_before = self.elided_characters
        self._cleaner = TextCleaner()
        self._capper = LineCapper(int(self.config["max_line"]))

    @property
    def elided_characters(self) -> int:
        """Characters left out of the text view so far: the middles of lines longer than
        ``max_line`` (they are in the transcript). Text a check judges is complete only if this
        did not grow while it was read."""
        return self._elided_before + self._capper.total_elided + self._capper.elided

    def _consume_all(self) -> tuple[str, int | None]:
        """Every character read and not consumed (an over-long line's held tail too), and the
        transcript index of the first rx chunk it came from."""
        self._pending.add(self._capper.flush())
        text = self._pending.discard()
        first = self.transcript.index("rx", self._unread_from)
        self._unread_from = self._last_rx if self._cleaner.holding else len(self.transcript)
        return text, first

    def _consume_kept(self) -> str:
        """For a ConsoleError: every character received and not consumed, also kept as unread
        text (after the command typed last), so a caller that drops the error loses nothing."""
        text, first = self._consume_all()
        self._keep_unread(text, first, self.last_command)
        return text

    def _rekeep(self, kept: int, head: str, first_chunk: int | None) -> None:
        """Put `head` (text an error's caller consumed before the error) in front of the unread
        text kept since index `kept`, as one piece: a failed call leaves all it received unread."""
        tail, self._unread[kept:] = self._unread[kept:], []
        self._unread_chars -= sum(len(u.text) for u in tail)
        self._keep_unread(head + "".join(u.text for u in tail), first_chunk, self.last_command)

    def _keep_unread(self, text: str, first_chunk: int | None, after: str | None) -> None:
        """Keep text nobody asked for (blank text holds nothing to judge; its bytes stay in the transcript)."""
        if text.strip():
            last = self._last_rx
            self._unread.append(UnreadText(text, after, last if first_chunk is None else first_chunk, last))
            self._unread_chars += len(text)

    def _drain(self) -> None:
        """Before typing: read what is already waiting (no waiting for more, at most `max_bytes`),
        and keep every unconsumed character as unread text (`take_unread`)."""
        self._require_open()
        self._take_raw_left()
        got = 0
        while got < self.max_bytes:
            data = self._read_chunk(0.0, "reading what the board printed unasked", wait=False)
            if not data:
                break
            got += len(data)
            self._to_text(data)
        self._keep_unread(*self._consume_all(), self.last_command)
        if self._unread_chars > self.max_bytes:
            # A board that talks this much unasked would fill memory; what it said is kept.
            raise self._error(f"the board printed {self._unread_chars} characters nobody asked for (more than "
                              f"max_bytes {self.max_bytes}); take_unread() holds them",
                              details={"bytes": got, "reason": "budget", "text": ""})

    def take_unread(self) -> list[UnreadText]:
        """Text the board printed that no call consumed, oldest first; returns it and clears the list.

        Reads what is already waiting first (when open). A port that fails during that read is
        noted in the transcript; the text read so far is still returned.
        """
        if self._ser is not None:
            try:
                self._drain()
            except ConsoleError:
                pass
        self._keep_unread(*self._consume_all(), self.last_command)  # (closed, or the read failed)
        unread, self._unread, self._unread_chars = self._unread, [], 0
        return unread

    def _seen(self) -> str:
        tail = self._pending.tail(200) + self._capper.held()[-200:]
        return escape_bytes(tail.encode("utf-8", "replace")[-240:])

    def _limits(self, timeout: float | None, max_bytes: int | None) -> _Limits:
        now = time.monotonic()
        return _Limits(now + (self.timeout if timeout is None else float(timeout)),
                       self.max_bytes if max_bytes is None else int(max_bytes), now)

    _TAIL = 256  # characters before the new text searched after each read (a prompt, an echo fit)
    _WHOLE_EVERY = 4096  # new characters after which the whole window is searched again

    def _expect(self, rx: re.Pattern, what: str, lim: _Limits, quiet: float | None = None) -> ExpectMatch | None:
        """Wait for `rx`; consumes through the match. On timeout or budget the ConsoleError's
        ``details["text"]`` holds every character received and not yet consumed (consumed, and
        kept as unread text). `quiet`: None when no byte arrives for that long first."""
        self._require_open()
        self._take_raw_left()
        # Searching the whole window (up to max_match characters) after every read made a console
        # that arrives a byte at a time (a slow UART) cost O(max_match) per byte. So after a read
        # only the new text and _TAIL characters before it are searched, and the whole window
        # when that finds a match (an earlier-starting match may win: leftmost), when
        # _WHOLE_EVERY characters came since, or when the board paused (a read gave nothing) or a
        # limit ends the wait: a long match is found at the latest then, as if it had come in
        # one read.
        start = 0  # a match may start here or later (max_match before the end at the last whole search)
        searched = -1  # pending size at the last whole search
        looked = 0  # pending size at the last search of the tail
        fresh = True
        heard = time.monotonic()
        while True:
            size = self._pending.size
            if size != searched:
                now = time.monotonic()
                whole = (searched < 0 or not fresh or size - searched >= self._WHOLE_EVERY or lim.got >= lim.budget
                         or now >= lim.deadline or (quiet is not None and now - heard >= quiet))
                if not whole:
                    w, wstart, spos = self._pending.window(max(start, looked - self._TAIL))
                    whole = rx.search(w, spos) is not None
                    looked = size
                if whole:
                    w, wstart, spos = self._pending.window(start)
                    m = rx.search(w, spos)
                    if m:
                        a, b = wstart + m.start(), wstart + m.end()
                        consumed = self._pending.take(b)
                        left = self._pending.size or self._capper.held() or self._cleaner.holding
                        self._unread_from = self._last_rx if left else len(self.transcript)
                        return ExpectMatch(rx.pattern, consumed[a:], consumed[:a], m.groups(), m.groupdict(),
                                           time.monotonic() - lim.started, lim.got)
                    start = max(0, size - self.max_match)
                    searched = looked = size
            self._check_limits(what, lim)
            if quiet is not None and time.monotonic() - heard >= quiet:
                return None
            until = lim.deadline if quiet is None else min(lim.deadline, heard + quiet)
            data = self._read_chunk(until, f"waiting for {what}")
            fresh = bool(data)
            if data:
                heard = time.monotonic()
                lim.got += len(data)
                self._to_text(data)

    def _check_limits(self, what: str, lim: _Limits) -> None:
        """Raise ConsoleError (reason "budget" or "timeout") when a limit is reached; its
        ``details["text"]`` holds (and consumes) every character received and not yet consumed."""
        elapsed = time.monotonic() - lim.started
        over = lim.got >= lim.budget
        if over or time.monotonic() >= lim.deadline:
            why = (f"no {what} after {lim.got} bytes in {elapsed:.2f} s (byte budget {lim.budget})" if over else
                   f"timed out after {elapsed:.2f} s waiting for {what} ({lim.got} bytes received)")
            seen = self._seen()
            raise self._error(f"{why}; last output: '{seen}'",
                              details={"bytes": lim.got, "seconds": elapsed, "reason": "budget" if over else "timeout",
                                       "text": self._consume_kept()})

    def _settled(self, lim: _Limits) -> bool:
        """After a prompt match: does `settle_s` pass with no text after it? Text that arrives
        means the prompt was not the end of the output. Bytes that clean to no text (escape
        sequences, line noise) are not text; they count toward the byte budget. (A prompt that
        came just before the deadline may settle up to `settle_s` after it.)"""
        self._take_raw_left()
        until = time.monotonic() + self.settle_s
        while not (self._pending.size or self._capper.held()):
            if time.monotonic() >= until:
                return True
            data = self._read_chunk(until, "waiting for the console to settle after its prompt")
            if data:
                lim.got += len(data)
                self._to_text(data)
        return False

    def _settled_prompt(self, what: str, lim: _Limits) -> str:
        """The text before the first prompt followed by `settle_s` of silence. Earlier prompt
        matches (a fake prompt, then more output) stay in it verbatim. Text after the last prompt
        and no prompt again (the board fell silent for `settle_s`, or the deadline came with one
        prompt only): the answer ends at that prompt, the text is unread text after the command."""
        prompt = self._prompt()
        parts: list[str] = []
        since = self._unread_from  # (the rx chunks what this reads comes from)
        while True:
            kept = len(self._unread)
            try:
                if parts:  # a prompt that did not settle: the limits hold across prompts
                    self._check_limits(what, lim)
                m = self._expect(prompt, what, lim, quiet=self.settle_s if parts else None)
            except ConsoleError as e:
                if len(parts) == 2 and e.details.get("reason") == "timeout":
                    # (the text after the prompt was kept as unread text by _check_limits)
                    self.transcript.note(f"{what}: text after the prompt and no prompt again within the "
                                         f"deadline; the answer ends at the prompt, the rest is unread text")
                    return parts[0]
                if parts:  # what came before the earlier prompt is part of what was received
                    e.details["text"] = "".join(parts) + str(e.details.get("text") or "")
                    self._rekeep(kept, "".join(parts), self.transcript.index("rx", since))
                raise
            if m is None:  # a line printed after the prompt, then silence (a late log line)
                self._keep_unread(*self._consume_all(), self.last_command)
                self.transcript.note(f"{what}: text after the prompt, then {self.settle_s:g} s of silence and no "
                                     f"prompt; the answer ends at the prompt, the rest is unread text")
                return "".join(parts[:-1])
            parts.append(m.before)
            if self._settled(lim):
                return "".join(parts)
            parts.append(m.text)

    @staticmethod
    def _compile(pattern: str | re.Pattern) -> re.Pattern:
        return pattern if isinstance(pattern, re.Pattern) else re.compile(pattern)

    def expect(self, pattern: str | re.Pattern, timeout: float | None = None, *, max_bytes: int | None = None) -> ExpectMatch:
        """Wait for a regex in the clean text view; consumes text through the match."""
        rx = self._compile(pattern)
        return self._expect(rx, f"/{rx.pattern}/", self._limits(timeout, max_bytes))

    def _prompt(self) -> re.Pattern:
        if self._prompt_rx is None:
            raise ValueError("this console has no prompt configured ('prompt' or 'prompt_regex')")
        return self._prompt_rx

    def wait_prompt(self, timeout: float | None = None, *, max_bytes: int | None = None) -> str:
        """Wait for a settled prompt without typing anything; returns the text before it (a boot log)."""
        self._prompt()
        return self._settled_prompt(f"prompt {self.prompt_description}", self._limits(timeout, max_bytes))

    def sync(self, timeout: float | None = None, *, max_bytes: int | None = None) -> str:
        """Press Enter and wait for a fresh, settled prompt; returns the text that came before it.

        What arrived unasked before the Enter is kept as unread text first (`take_unread`). An
        Enter asks nothing, so what came before the fresh prompt (beyond blank lines) is also
        kept as unread text, after ``""``: callers that only want the prompt lose nothing.
        """
        return self._enter(timeout, max_bytes, "")

    def _enter(self, timeout: float | None, max_bytes: int | None, after: str | None) -> str:
        self._prompt()
        self._drain()
        lim = self._limits(timeout, max_bytes)
        self.last_command = ""
        sent = len(self.transcript)
        self.send_line("")
        text = self._settled_prompt(f"prompt {self.prompt_description} after Enter", lim)
        self._keep_unread(text, self.transcript.index("rx", sent), after)
        return text

    def capture_boot_log(self, mode: str = "capture", timeout: float = 5.0, reboot_command: str = "reboot") -> None:
        """Once, right after `open`: keep what the board printed up to its first settled prompt,
        and leave the console at its prompt.

        ``capture``: the text before the first prompt that arrives within `timeout` s and is
        followed by `settle_s` of silence: the boot log of a board that boots while the port is
        held (a simulated board, whose pty the simulator holds open; a bench board power-cycled
        while this waits; what a console server logged). The port's buffered input is not
        flushed at open.
        A board that was already up prints nothing: no boot log (`boot_log_problem` says why);
        then Enter brings a prompt. ``reboot``: Enter, then `reboot_command`; its output up to
        the next settled prompt (within `timeout` s) is the boot log. ``off``: Enter only, no
        boot log. Whatever else the board prints meanwhile (text without a prompt, the answer to
        Enter) is kept as unread text after None (`take_unread`).
        Raises ConsoleError when no prompt can be had at all.
        """
        start = len(self.transcript)
        self.boot_log_mode = mode
        self.transcript.note(f"boot log: mode {mode}, up to {timeout:g} s")
        try:
            if mode == "capture":
                try:
                    self.boot_log = self.wait_prompt(timeout=timeout)
                except ConsoleError as e:
                    text = str(e.details.get("text") or "")  # (kept as unread text, after None)
                    said = len(text.strip())
                    heard = (f"{said} characters arrived without a prompt (still booting? raise "
                             f"interfaces.serial.boot_timeout)") if said else "nothing arrived"
                    self.boot_log_problem = (
                        f"no boot log: no prompt {self.prompt_description} within {timeout:g} s of opening "
                        f"{self.url} ({heard}); the board was up before the console was opened, so its boot "
                        f"messages were not seen. Power-cycle the board after the run starts, or set "
                        f"interfaces.serial.boot_log: reboot to have the harness reboot it")
                    self._enter(None, None, None)
            elif mode == "reboot":
                self._enter(None, None, None)
                self.last_command = None  # (text before the echo of the reboot is still "at open")
                self.boot_log = self.command(reboot_command, timeout=timeout)
            elif mode == "off":
                self.boot_log_problem = "no boot log: capture is off (interfaces.serial.boot_log: off)"
                self._enter(None, None, None)
            else:
                raise ValueError(f"boot log mode {mode!r} is not one of capture, reboot, off")
        finally:
            self.boot_span = (start, len(self.transcript))
            self.last_command = None
        self.transcript.note("boot log: " + (f"{len(self.boot_log)} characters" if self.boot_log is not None
                                             else str(self.boot_log_problem)))
        self.boot_span = (start, len(self.transcript))

    def command(self, text: str, timeout: float | None = None, *, max_bytes: int | None = None) -> str:
        """Run a command at the prompt; returns its output: the clean text between its echo and
        the first prompt followed by `settle_s` of silence.

        Assumes the console is at its prompt (after `wait_prompt`, `sync` or a previous command).
        Text that arrives after an earlier prompt match (a fake prompt, then more output) is part
        of the output, that prompt verbatim in it. What arrived unasked before the command was
        typed, or between typing it and its echo, is kept as unread text (`take_unread`).
        """
        self._prompt()
        if "\r" in text or "\n" in text:
            raise ValueError("command text must be one line")
        self._drain()
        lim = self._limits(timeout, max_bytes)
        previous, self.last_command = self.last_command, text
        sent = len(self.transcript)
        self.send_line(text)
        if self.echo:
            echo = self._expect(re.compile(re.escape(text.strip()) + r"[ \t]*\n"), f"echo of {text!r}", lim)
            self._keep_unread(echo.before, self.transcript.index("rx", sent), previous)
        out = self._settled_prompt(f"prompt {self.prompt_description} after {text!r}", lim)
        return out[:-1] if out.endswith("\n") else out

    def wait_quiet(self, quiet: float, timeout: float | None = None) -> bool:
        """Read until nothing arrives for `quiet` seconds (at most `timeout`, at most `max_bytes`);
        all of it is kept as unread text (`take_unread`). False: the board did not go quiet."""
        self._drain()
        deadline = time.monotonic() + (self.timeout if timeout is None else float(timeout))
        last, got = time.monotonic(), 0
        while time.monotonic() - last < quiet:
            if time.monotonic() >= deadline or got > self.max_bytes:
                self._drain()
                return False
            data = self._read_chunk(min(deadline, last + quiet), f"waiting for {quiet:g} s of quiet")
            if data:
                got += len(data)
                last = time.monotonic()
                self._to_text(data)
        self._drain()
        return True

    def read_until_quiet(self, quiet: float = 0.5, timeout: float | None = None, *, max_bytes: int | None = None) -> str:
        """Read until nothing arrives for `quiet` seconds; returns the clean text (consumed).

        A board that does not go quiet raises ConsoleError; its ``details["text"]`` holds (and
        consumes) the text received."""
        self._require_open()
        self._take_raw_left()
        lim = self._limits(timeout, max_bytes)
        last = time.monotonic()
        while True:
            now = time.monotonic()
            if now - last >= quiet:
                break
            if now >= lim.deadline:
                seen = self._seen()
                raise self._error(f"did not go quiet for {quiet:.2f} s within {now - lim.started:.2f} s "
                                  f"({lim.got} bytes received); last output: '{seen}'",
                                  details={"bytes": lim.got, "reason": "timeout", "text": self._consume_kept()})
            data = self._read_chunk(min(lim.deadline, last + quiet), f"reading until quiet for {quiet} s")
            if data:
                lim.got += len(data)
                last = time.monotonic()
                self._to_text(data)
                if lim.got > lim.budget:
                    seen = self._seen()
                    raise self._error(f"still talking after {lim.got} bytes (byte budget {lim.budget}) while "
                                      f"waiting for {quiet:.2f} s of quiet; last output: '{seen}'",
                                      details={"bytes": lim.got, "reason": "budget", "text": self._consume_kept()})
        return self._consume_all()[0]

    # -- raw --

    def read_bytes(self, n: int | None = None, *, until: bytes | None = None, timeout: float | None = None,
                   max_bytes: int | None = None) -> bytes:
        """Raw bytes: exactly `n`, or up to and including `until`.

        Text not yet consumed is kept as unread text (`take_unread`) and the text view starts
        afresh. Bytes read past what is returned are kept for the next read (raw or text).
        """
        if (n is None) == (until is None):
            raise ValueError("read_bytes needs exactly one of n= or until=")
        if until is not None and not until:
            raise ValueError("until= must not be empty")
        self._require_open()
        self._reset_text()
        lim = self._limits(timeout, max_bytes)
        buf = bytearray(self._raw_left)
        self._raw_left = b""
        what = f"{n} bytes" if n is not None else f"bytes until {escape_bytes(until)!r}"
        while True:
            if n is not None and len(buf) >= n:
                self._raw_left = bytes(buf[n:])
                return bytes(buf[:n])
            if until is not None:
                i = buf.find(until)
                if i >= 0:
                    end = i + len(until)
                    self._raw_left = bytes(buf[end:])
                    return bytes(buf[:end])
            elapsed = time.monotonic() - lim.started
            if len(buf) >= lim.budget:
                raise self._error(f"no end of {what} within {len(buf)} bytes (byte budget {lim.budget})",
                                  partial=bytes(buf))
            if time.monotonic() >= lim.deadline:
                raise self._error(f"timed out after {elapsed:.2f} s reading {what}; got {len(buf)} bytes",
                                  partial=bytes(buf))
            data = self._read_chunk(lim.deadline, f"reading {what}")
            if data:
                lim.got += len(data)
                buf += data

    def dump_region(self, name: str, *, timeout: float | None = None, start_timeout: float | None = None,
                    idle_timeout: float | None = None, max_rounds: int | None = None, max_size: int | None = None,
                    command: str | None = None, on_frame: Callable[[int, int], None] | None = None) -> DumpResult:
        """Read flash region `name` with the board's transfer (``transfer``: the dumpframe
        protocol by default, else serial_transfer.transfer_region); returns the verified image.

        A region is read once per console: asking again returns the first verified image, with
        no second transfer (every check of a run judges the same bytes; see `dumped_images`).
        Sends ``dump_command`` (``dump {name}``) at the prompt, collects DATA frames, asks for
        missing or damaged ones (at most `max_rounds` RESEND rounds), checks the length and the
        sha256 from BEGIN, sends DONE and waits for the prompt. Anything short of that raises
        ConsoleError (after telling the board ABORT where possible); partial data is never
        returned. `on_frame(have, total)` is called after each new frame (total 0 before BEGIN).
        """
        done = self._dumps.get(name)
        if done is not None:
            self.transcript.note(f"dump {name!r}: already read on this console (sha256 {done.sha256}); not read again")
            return done
        try:
            transfer = transfer_config(self.config["transfer"])
        except TransferSettingsError as e:
            raise self._error(f"interfaces.serial.transfer.{e}", details={"region": name}) from None
        if transfer.method == "dumpframe":
            result = dump_region(self, name, timeout=timeout, start_timeout=start_timeout, idle_timeout=idle_timeout,
                                 max_rounds=max_rounds, max_size=max_size, command=command, on_frame=on_frame)
        else:
            cfg = self.config
            result = transfer_region(
                self, name, transfer, timeout=float(cfg["dump_timeout"] if timeout is None else timeout),
                start_timeout=float(cfg["dump_start_timeout"] if start_timeout is None else start_timeout),
                idle_timeout=float(cfg["dump_idle_timeout"] if idle_timeout is None else idle_timeout),
                max_size=int(cfg["dump_max_size"] if max_size is None else max_size))
        self._dumps[name] = result
        return result

    def dumped_images(self) -> dict[str, bytes]:
        """Every region dumped on this console so far: complete, verified images only."""
        return {name: result.data for name, result in self._dumps.items()}


# --------------------------------------------------------------------------------------------
# The `serial` interface kind of a board (harness/interfaces/__init__.py OPENERS)

# Board-config settings beyond SerialConsole's own keys: how the boot log is captured at open.
BOOT_LOG_MODES = ("capture", "reboot", "off")
_OPEN_DEFAULTS: dict[str, Any] = {"boot_log": "capture", "boot_timeout": 5.0, "reboot_command": "reboot"}
_POSITIVE = ("timeout", "settle_s", "poll_interval", "write_timeout", "dump_timeout", "dump_start_timeout",
             "dump_idle_timeout", "boot_timeout")
_COUNTS = ("max_bytes", "max_line", "max_match", "dump_max_size")


class SerialSettingsError(ConsoleError):
    """The board config's `interfaces.serial` settings are unusable: ERROR for every serial step."""


def _settings_error(key: str, message: str) -> SerialSettingsError:
    return SerialSettingsError(f"interfaces.serial.{key}: {message}" if key else f"interfaces.serial: {message}")


def serial_settings(settings: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """Check a board's `interfaces.serial` settings: (SerialConsole config, open options).

    Raises SerialSettingsError naming the setting and what a good value looks like.
    """
    if not isinstance(settings, Mapping):
        raise _settings_error("", f"must be a mapping such as {{url: /dev/ttyUSB0, prompt: \"bmc> \"}}, "
                                  f"got {type(settings).__name__}")
    known = [*_DEFAULTS, *_OPEN_DEFAULTS]
    unknown = sorted(set(settings) - set(known))
    if unknown:
        raise _settings_error(str(unknown[0]), f"unknown setting (known: {', '.join(known)})")
    url = settings.get("url")
    if not isinstance(url, str) or not url.strip():
        raise _settings_error("url", f"give the console's port: a tty (/dev/ttyUSB0), rfc2217://host:port "
                                     f"(ser2net, a labgrid exporter) or socket://host:port; got {url!r}")
    baud = settings.get("baudrate", _DEFAULTS["baudrate"])
    if isinstance(baud, bool) or not isinstance(baud, int) or baud <= 0:
        raise _settings_error("baudrate", f"must be a positive integer such as 115200, got {baud!r}")
    if settings.get("prompt") is None and settings.get("prompt_regex") is None:
        raise _settings_error("prompt", "give the console's prompt, literal (prompt: \"h100-bmc> \") or as a "
                                        "regex (prompt_regex: '[a-z0-9-]+> '); the serial probes type commands at it")
    for key in ("prompt", "prompt_regex", "newline", "dump_command", "reboot_command"):
        value = settings.get(key)
        if value is not None and (not isinstance(value, str) or (key != "newline" and not value.strip())):
            raise _settings_error(key, f"must be a non-empty string, got {value!r}")
    for key in _POSITIVE:
        value = settings.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0):
            raise _settings_error(key, f"must be a positive number of seconds, got {value!r}")
    for key in (*_COUNTS, "dump_max_rounds"):
        value = settings.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0
                                  or (value == 0 and key != "dump_max_rounds")):
            raise _settings_error(key, f"must be a positive integer, got {value!r}")
    options = settings.get("serial_options")
    if options is not None and not isinstance(options, Mapping):
        raise _settings_error("serial_options", f"must be a mapping of pyserial options "
                                                f"(bytesize, parity, stopbits, rtscts, xonxoff), got {options!r}")
    mode = settings.get("boot_log", _OPEN_DEFAULTS["boot_log"])
    if mode not in BOOT_LOG_MODES:
        raise _settings_error("boot_log", f"must be one of {', '.join(BOOT_LOG_MODES)}, got {mode!r}")
    try:
        transfer = transfer_config(settings.get("transfer"))
    except TransferSettingsError as e:
        raise _settings_error(f"transfer.{e.key}" if e.key else "transfer", e.message) from None
    console = {k: v for k, v in settings.items() if k in _DEFAULTS}
    if "transfer" in console:
        console["transfer"] = transfer
    if console.get("serial_options") is not None:
        console["serial_options"] = dict(console["serial_options"])
    opening = {**_OPEN_DEFAULTS, **{k: v for k, v in settings.items() if k in _OPEN_DEFAULTS}}
    return console, opening


def open_serial(settings: Mapping[str, Any]) -> SerialConsole:
    """The `serial` opener: check the settings, open the port, capture the boot log, reach the prompt.

    A board opens its console once per run (Board caches interfaces); every serial probe shares
    it and its transcript. The boot log is captured here, once (`SerialConsole.capture_boot_log`,
    mode from `boot_log`). Raises SerialSettingsError for bad settings and ConsoleError (with the
    transcript so far) when the port cannot be opened or gives no prompt; the port is then closed.
    """
    config, opening = serial_settings(settings)
    try:
        console = SerialConsole(config)
    except ValueError as e:  # e.g. a prompt_regex that does not compile
        raise SerialSettingsError(f"interfaces.serial: {e}") from None
    console.open()
    try:
        console.capture_boot_log(opening["boot_log"], float(opening["boot_timeout"]), opening["reboot_command"])
    except BaseException:
        console.close()
        raise
    return console


__all__ = [
    "BOOT_LOG_MODES",
    "ConsoleError",
    "SerialSettingsError",
    "open_serial",
    "serial_settings",
    "Chunk",
    "DumpResult",
    "ExpectMatch",
    "UnreadText",
    "SerialConsole",
    "TextCleaner",
    "Transcript",
    "TRANSCRIPT_MEDIA_TYPE",
    "TRANSCRIPT_TEXT_MEDIA_TYPE",
    "MAX_TRANSCRIPT_BYTES",
    "clean_text",
    "escape_bytes",
    "unescape_text",
    "FrameError",
]
