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

Text view. Bytes are decoded as UTF-8 (invalid bytes dropped), ANSI/VT escape sequences are
removed, CRLF and lone CR become LF, other control characters are dropped. Patterns given to
`expect` are matched against that text; a match may span at most ``max_match`` characters of
text that arrived before the current read. The prompt (``prompt`` literal or ``prompt_regex``)
is matched at the start of a line.

Transcript evidence format (`Transcript.to_jsonl`, media type TRANSCRIPT_MEDIA_TYPE): UTF-8
JSON Lines. Line 1 is a header::

    {"format": "attestlab.transcript", "version": 1, "source": "<url>",
     "started_wall": <unix seconds>, "clock": "monotonic seconds since start"
     [, "chunks": [start, stop]]}

(``chunks``: a `Transcript.slice`, chunks start..stop-1 of the console's whole transcript)

then one object per read or write, in order::

    {"dir": "rx"|"tx"|"note", "t": <monotonic s since start>, "wall": <unix s>, "n": <bytes>,
     "b64": "<base64 of the exact bytes>"}

"rx" is board to host, "tx" host to board, "note" a harness annotation (UTF-8 text: open,
close, errors, dump rounds). Base64 because console output is arbitrary bytes (NUL, invalid
UTF-8, escape sequences, binary dump frames) that must survive exactly; it costs 4/3 where hex
costs 2, and every JSON library decodes it. One record per line keeps the read/write
boundaries and timestamps, lets a transcript be appended while recording and still be read
after a crash (line by line). `render_text()` gives a readable version: one line per chunk
(continued after each LF), pure ASCII, with ``\\r``, ``\\n``, ``\\t``, ``\\\\`` and ``\\xNN``
escapes for everything else (so ANSI escapes show as ``\\x1b[32m`` and binary as hex).
"""

from __future__ import annotations

import base64
import codecs
import hashlib
import json
import os
import re
import select
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable, Iterator, Mapping

import serial

from harness.formats.dumpframe import (
    BEGIN_SEQ,
    MAX_RESEND_SEQS,
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
)
from harness.verdict import ProbeError

TRANSCRIPT_FORMAT = "attestlab.transcript"
TRANSCRIPT_VERSION = 1
TRANSCRIPT_MEDIA_TYPE = "application/vnd.attestlab.transcript+jsonl"
TRANSCRIPT_TEXT_MEDIA_TYPE = "text/plain; charset=utf-8"
DIRECTIONS = ("rx", "tx", "note")


# --------------------------------------------------------------------------------------------
# Transcript


def _escape_table() -> dict[int, str]:
    table = {}
    for b in range(256):
        if b == 0x5C:
            table[b] = "\\\\"
        elif b == 0x0D:
            table[b] = "\\r"
        elif b == 0x0A:
            table[b] = "\\n"
        elif b == 0x09:
            table[b] = "\\t"
        elif 0x20 <= b < 0x7F:
            continue
        else:
            table[b] = f"\\x{b:02x}"
    return table


_ESCAPES = _escape_table()
_UNESCAPE_RE = re.compile(r"\\(?:x([0-9a-f]{2})|(.))", re.S)
_UNESCAPE_SIMPLE = {"\\": b"\\", "r": b"\r", "n": b"\n", "t": b"\t"}


def escape_bytes(data: bytes) -> str:
    """Bytes as printable ASCII: ``\\r \\n \\t \\\\ \\xNN`` for everything but printable ASCII."""
    return bytes(data).decode("latin-1").translate(_ESCAPES)


def unescape_text(text: str) -> bytes:
    """Inverse of `escape_bytes`; ValueError on anything `escape_bytes` cannot have produced."""
    out = bytearray()
    pos = 0
    for m in _UNESCAPE_RE.finditer(text):
        lit = text[pos : m.start()]
        if "\\" in lit or any(not 0x20 <= ord(c) < 0x7F for c in lit):
            raise ValueError(f"not an escaped byte string at {pos}")
        out += lit.encode("ascii")
        if m.group(1):
            out.append(int(m.group(1), 16))
        elif m.group(2) in _UNESCAPE_SIMPLE:
            out += _UNESCAPE_SIMPLE[m.group(2)]
        else:
            raise ValueError(f"unknown escape \\{m.group(2)!s} at {m.start()}")
        pos = m.end()
    lit = text[pos:]
    if "\\" in lit or any(not 0x20 <= ord(c) < 0x7F for c in lit):
        raise ValueError(f"not an escaped byte string at {pos}")
    out += lit.encode("ascii")
    return bytes(out)


@dataclass(frozen=True, slots=True)
class Chunk:
    """One read ("rx"), write ("tx") or harness note ("note", UTF-8 text)."""

    direction: str
    t: float  # seconds since the transcript started, monotonic clock
    wall: float  # Unix time, seconds
    data: bytes

    def to_json(self) -> dict[str, Any]:
        return {"dir": self.direction, "t": self.t, "wall": self.wall, "n": len(self.data),
                "b64": base64.b64encode(self.data).decode("ascii")}


class Transcript:
    """Every byte both ways, one chunk per read or write, with monotonic and wall timestamps."""

    def __init__(self, source: str = "", *, clock: Callable[[], float] = time.monotonic,
                 wall_clock: Callable[[], float] = time.time) -> None:
        self.source = source
        self._clock = clock
        self._wall_clock = wall_clock
        self._t0 = clock()
        self.started_wall = wall_clock()
        self._chunks: list[Chunk] = []
        self.rx_bytes = 0
        self.tx_bytes = 0
        self.span: tuple[int, int] | None = None  # a slice: which chunks of the whole it holds

    def record(self, direction: str, data: bytes) -> Chunk:
        if direction not in DIRECTIONS:
            raise ValueError(f"direction {direction!r} is not one of {DIRECTIONS}")
        chunk = Chunk(direction, self._clock() - self._t0, self._wall_clock(), bytes(data))
        self._chunks.append(chunk)
        if direction == "rx":
            self.rx_bytes += len(chunk.data)
        elif direction == "tx":
            self.tx_bytes += len(chunk.data)
        return chunk

    def note(self, text: str) -> Chunk:
        return self.record("note", text.encode("utf-8", "replace"))

    @property
    def chunks(self) -> tuple[Chunk, ...]:
        return tuple(self._chunks)

    def __len__(self) -> int:
        return len(self._chunks)

    def __iter__(self) -> Iterator[Chunk]:
        return iter(list(self._chunks))

    def data(self, direction: str = "rx") -> bytes:
        """All bytes of one direction, concatenated."""
        return b"".join(c.data for c in self._chunks if c.direction == direction)

    def header(self) -> dict[str, Any]:
        head = {"format": TRANSCRIPT_FORMAT, "version": TRANSCRIPT_VERSION, "source": self.source,
                "started_wall": self.started_wall, "clock": "monotonic seconds since start"}
        if self.span is not None:
            head["chunks"] = list(self.span)
        return head

    def slice(self, start: int, stop: int | None = None) -> "Transcript":
        """Chunks ``start`` to ``stop`` (exclusive) as a transcript of their own.

        Times stay relative to this transcript's start (same ``started_wall``), and the header
        says which chunks of the whole it holds (``"chunks": [start, stop]``), so a slice of a
        shared console's transcript (one probe's work, the boot log) is evidence on its own.
        Chunk ``i`` of the whole is JSON line ``i - start + 2`` of the slice's `to_jsonl`.
        """
        chunks = self._chunks[start:stop]
        stop = start + len(chunks)
        part = Transcript(self.source, clock=self._clock, wall_clock=self._wall_clock)
        part._t0, part.started_wall = self._t0, self.started_wall
        part._chunks = list(chunks)
        part.rx_bytes = sum(len(c.data) for c in chunks if c.direction == "rx")
        part.tx_bytes = sum(len(c.data) for c in chunks if c.direction == "tx")
        offset = (self.span[0] if self.span is not None else 0)
        part.span = (offset + start, offset + stop)
        return part

    def to_jsonl(self) -> bytes:
        lines = [json.dumps(self.header(), sort_keys=True)]
        lines += [json.dumps(c.to_json(), sort_keys=True) for c in self._chunks]
        return ("\n".join(lines) + "\n").encode("utf-8")

    @classmethod
    def from_jsonl(cls, blob: bytes | str) -> "Transcript":
        """Parse `to_jsonl` output; ValueError names the line that is wrong."""
        text = blob.decode("utf-8") if isinstance(blob, (bytes, bytearray)) else blob
        lines = text.splitlines()
        if not lines:
            raise ValueError("empty transcript")
        try:
            head = json.loads(lines[0])
        except json.JSONDecodeError as e:
            raise ValueError(f"line 1: not JSON: {e}") from None
        if not isinstance(head, dict) or head.get("format") != TRANSCRIPT_FORMAT or head.get("version") != TRANSCRIPT_VERSION:
            raise ValueError(f"line 1: not an {TRANSCRIPT_FORMAT} v{TRANSCRIPT_VERSION} header")
        t = cls(str(head.get("source", "")))
        t.started_wall = float(head.get("started_wall", 0.0))
        span = head.get("chunks")
        if span is not None:
            if not (isinstance(span, list) and len(span) == 2 and all(isinstance(x, int) for x in span)):
                raise ValueError(f"line 1: 'chunks' must be [start, stop], got {span!r}")
            t.span = (span[0], span[1])
        for i, line in enumerate(lines[1:], start=2):
            try:
                obj = json.loads(line)
                data = base64.b64decode(obj["b64"], validate=True)
                chunk = Chunk(str(obj["dir"]), float(obj["t"]), float(obj["wall"]), data)
            except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
                raise ValueError(f"line {i}: bad transcript record: {e}") from None
            if chunk.direction not in DIRECTIONS:
                raise ValueError(f"line {i}: direction {chunk.direction!r} is not one of {DIRECTIONS}")
            if obj.get("n", len(data)) != len(data):
                raise ValueError(f"line {i}: n={obj.get('n')} but b64 holds {len(data)} bytes")
            t._chunks.append(chunk)
            if chunk.direction == "rx":
                t.rx_bytes += len(data)
            elif chunk.direction == "tx":
                t.tx_bytes += len(data)
        return t

    def render_text(self, *, max_chunk_bytes: int | None = None, numbered: bool = False) -> str:
        """Readable, pure-ASCII rendering; chunks longer than `max_chunk_bytes` are shortened.

        `numbered`: each chunk starts with its line number in `to_jsonl` (the header is line 1),
        the numbers the probes' reasons cite ("evidence serial/...-transcript.jsonl line 8").
        """
        started = datetime.fromtimestamp(self.started_wall, timezone.utc).isoformat(timespec="microseconds")
        out = [f"# attestlab console transcript: {escape_bytes(self.source.encode())}, started {started}",
               f"# rx {self.rx_bytes} bytes, tx {self.tx_bytes} bytes, {len(self._chunks)} chunks;"
               " escapes: \\r \\n \\t \\\\ \\xNN"]
        number = (lambda i: f"L{i + 2:<6} ") if numbered else (lambda i: "")
        gutter = " " * (28 + len(number(0))) + "| "
        for i, c in enumerate(self._chunks):
            data = c.data
            suffix = ""
            if max_chunk_bytes is not None and len(data) > max_chunk_bytes:
                suffix = f" [... {len(data) - max_chunk_bytes} more bytes]"
                data = data[:max_chunk_bytes]
            if c.direction == "note":
                body = escape_bytes(data) + suffix
                out.append(f"{number(i)}+{c.t:12.6f} --   note    # {body}")
                continue
            pieces = escape_bytes(data).split("\\n")
            lines = [p + "\\n" for p in pieces[:-1]] + ([pieces[-1]] if pieces[-1] else [])
            lines = lines or [""]
            lines[-1] += suffix
            out.append(f"{number(i)}+{c.t:12.6f} {c.direction} {len(c.data):8d} B | {lines[0]}")
            out.extend(gutter + line for line in lines[1:])
        return "\n".join(out) + "\n"


# --------------------------------------------------------------------------------------------
# Text view: cleaning and line capping

_ANSI_RE = re.compile(
    r"\x1b\[[0-?]*[ -/]*[@-~]"  # CSI
    r"|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)"  # OSC, ended by BEL or ST
    r"|\x1b[PX^_][^\x1b]*\x1b\\"  # DCS, SOS, PM, APC
    r"|\x1b[ -/]*[0-~]"  # two-or-more-character escapes (ESC ( B, ESC 7, ESC M, ...)
)
_ANSI_PARTIAL_RE = re.compile(r"\x1b(?:\[[0-?]*[ -/]*|\][^\x07\x1b]*\x1b?|[PX^_][^\x1b]*\x1b?|[ -/]*)\Z")
_CTRL_RE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\ufffd]")
_MAX_ESCAPE_CARRY = 512


class TextCleaner:
    """Incremental bytes -> clean text (see the module docstring). Chunking does not matter."""

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")
        self._carry = ""

    def feed(self, data: bytes, final: bool = False) -> str:
        s = self._carry + self._decoder.decode(bytes(data), final)
        self._carry = ""
        if not final:
            esc = s.rfind("\x1b")
            if esc >= 0 and len(s) - esc <= _MAX_ESCAPE_CARRY and _ANSI_PARTIAL_RE.match(s, esc):
                self._carry, s = s[esc:], s[:esc]
        s = _ANSI_RE.sub("", s)
        if s.endswith("\r") and not final:
            self._carry = "\r" + self._carry
            s = s[:-1]
        s = s.replace("\r\n", "\n").replace("\r", "\n")
        return _CTRL_RE.sub("", s)


def clean_text(data: bytes) -> str:
    """The text view of `data`: UTF-8, no escape sequences or control characters, LF line ends."""
    return TextCleaner().feed(data, final=True)


class _LineCapper:
    """Keeps at most `max_line` characters of each line: the head and the tail, eliding the middle."""

    def __init__(self, max_line: int) -> None:
        self.head_max = max(1, max_line - max_line // 4)
        self.tail_max = max_line // 4
        self.cur = 0
        self.tail = ""
        self.elided = 0
        self.total_elided = 0

    def feed(self, s: str) -> str:
        out: list[str] = []
        while s:
            nl = s.find("\n")
            body, s = (s, "") if nl < 0 else (s[:nl], s[nl + 1 :])
            if self.cur < self.head_max and not self.tail and not self.elided:
                take = body[: self.head_max - self.cur]
                out.append(take)
                self.cur += len(take)
                body = body[len(take) :]
            if body:
                t = self.tail + body
                if len(t) > self.tail_max:
                    self.elided += len(t) - self.tail_max
                    t = t[len(t) - self.tail_max :]
                self.tail = t
            if nl >= 0:
                out.append(self._release())
                out.append("\n")
                self.cur = 0
        return "".join(out)

    def _release(self) -> str:
        s = ""
        if self.elided:
            s = f"[... {self.elided} characters elided ...]"
            self.total_elided += self.elided
        s += self.tail
        self.tail, self.elided = "", 0
        return s

    def flush(self) -> str:
        """Release the held tail of an unfinished over-long line (the line goes on being capped)."""
        if not self.tail and not self.elided:
            return ""
        s = self._release()
        self.cur = self.head_max
        return s

    def held(self) -> str:
        return (f"[... {self.elided} characters elided ...]" if self.elided else "") + self.tail


class _Pending:
    """Text read but not yet consumed, plus a little consumed context (for ^ and lookbehind)."""

    CONTEXT = 256

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.size = 0
        self.context = "\n"

    def add(self, s: str) -> None:
        if s:
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
class DumpResult:
    """A verified image: its length and sha256 match the BEGIN record, every frame's CRC passed."""

    name: str
    data: bytes = field(repr=False)
    sha256: str
    size: int
    frame_size: int
    frames: int
    resend_rounds: int
    frames_requested: int
    corrupt_records: int
    duplicate_frames: int
    skipped_bytes: int
    rx_bytes: int
    tx_bytes: int
    seconds: float

    @property
    def overhead(self) -> float:
        """Bytes read from the console per image byte (echo, chatter, retransmissions included)."""
        return self.rx_bytes / self.size if self.size else float("inf")

    @property
    def throughput(self) -> float:
        """Image bytes per second."""
        return self.size / self.seconds if self.seconds > 0 else float("inf")

    def to_facts(self) -> dict[str, Any]:
        """Plain data for a run record: integers and text only (signed records hold no floats)."""
        return {"region": self.name, "size": self.size, "sha256": self.sha256, "frame_size": self.frame_size,
                "frames": self.frames, "resend_rounds": self.resend_rounds, "frames_requested": self.frames_requested,
                "corrupt_records": self.corrupt_records, "duplicate_frames": self.duplicate_frames,
                "skipped_bytes": self.skipped_bytes, "rx_bytes": self.rx_bytes, "tx_bytes": self.tx_bytes,
                "microseconds": int(round(self.seconds * 1e6))}


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
    "poll_interval": 0.05,  # s, longest single blocking read
    "write_timeout": 5.0,  # s
    "flush_on_open": False,  # True: discard what the port buffered before open
    "dump_command": "dump {name}",
    "dump_timeout": 600.0,  # s, a whole dump
    "dump_start_timeout": 10.0,  # s, command to first dump record
    "dump_idle_timeout": 2.0,  # s of silence before asking for what is missing
    "dump_max_rounds": 8,  # RESEND rounds before giving up
    "dump_max_size": 1 << 30,  # largest region accepted, bytes
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
        self._ser: Any = None
        self._fd: int | None = None
        self._last_full = False
        self._poll = float(cfg["poll_interval"])
        self._cleaner = TextCleaner()
        self._capper = _LineCapper(int(cfg["max_line"]))
        self._pending = _Pending()
        self._raw_left = b""
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
            ser = serial.serial_for_url(self.url, do_not_open=True, baudrate=int(cfg["baudrate"]),
                                        timeout=float(cfg["poll_interval"]), write_timeout=float(cfg["write_timeout"]),
                                        **dict(cfg["serial_options"] or {}))
            if not cfg["flush_on_open"] and hasattr(ser, "_reset_input_buffer"):
                # pyserial's POSIX open() discards what the tty buffered (tcflush). What the board
                # said before we attached (a boot log) is evidence: keep it.
                ser._reset_input_buffer = lambda: None
            ser.open()
            ser.__dict__.pop("_reset_input_buffer", None)
        except (serial.SerialException, OSError, ValueError) as e:
            self.transcript.note(f"open {self.url} failed: {e}")
            raise ConsoleError(f"cannot open console {self.url}: {e}", transcript=self.transcript) from e
        self._ser = ser
        self._fd = ser.fd if type(ser).__module__ == "serial.serialposix" and isinstance(getattr(ser, "fd", None), int) else None
        self.transcript.note(f"opened {self.url} at {cfg['baudrate']} baud")
        return self

    def close(self) -> None:
        ser, self._ser, self._fd = self._ser, None, None
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

    def _read_chunk(self, deadline: float, doing: str | Callable[[], str]) -> bytes:
        """At most one chunk: what is waiting, else wait up to one poll interval (never past deadline)."""
        left = deadline - time.monotonic()
        if left <= 0:
            return b""
        try:
            if self._fd is not None:
                # A local tty (device or pty), opened non-blocking by pyserial (VMIN 0). After a
                # full read (the tty's 4 KiB line-discipline buffer) more is likely waiting: read
                # at once; otherwise wait in select (at most one poll interval) first. Readable
                # yet no data means the tty hung up.
                data = b""
                if self._last_full:
                    try:
                        data = os.read(self._fd, 1 << 16)
                    except BlockingIOError:
                        pass
                if not data:
                    ready, _, _ = select.select([self._fd], [], [], min(left, self._poll))
                    if not ready:
                        self._last_full = False
                        return b""
                    try:
                        data = os.read(self._fd, 1 << 16)
                    except BlockingIOError:
                        return b""
                    if not data:
                        raise serial.SerialException("the tty reports readiness to read but returned no data "
                                                     "(device disconnected or hung up)")
                self._last_full = len(data) >= 4000
            else:
                n = self._ser.in_waiting
                data = self._ser.read(n if n > 0 else 1)
        except Exception as e:  # SerialException, OSError (EIO), and pyserial's odd ones on a dead fd
            what = doing() if callable(doing) else doing
            raise self._error(f"port failed while {what}: {type(e).__name__}: {e}") from e
        if data:
            self.transcript.record("rx", data)
        return data

    def write(self, data: bytes) -> None:
        """Write raw bytes (recorded)."""
        self._require_open()
        data = bytes(data)
        self.transcript.record("tx", data)
        try:
            n = self._ser.write(data)
        except serial.SerialTimeoutException as e:
            raise self._error(f"write of {len(data)} bytes timed out after {self.config['write_timeout']} s "
                              "(the other end is not reading)") from e
        except Exception as e:
            raise self._error(f"port failed while writing {len(data)} bytes: {type(e).__name__}: {e}") from e
        if n is not None and n != len(data):
            raise self._error(f"wrote {n} of {len(data)} bytes")

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
        self._pending.discard()
        self._cleaner = TextCleaner()
        self._capper = _LineCapper(int(self.config["max_line"]))

    def _unconsumed(self, limit: int = 4000) -> str:
        """The clean text read but not consumed (head and tail when longer than `limit`)."""
        text = self._pending.text() + self._capper.held()
        if len(text) > limit:
            text = text[: limit // 2] + f"[... {len(text) - limit} characters elided ...]" + text[-limit // 2 :]
        return text

    def _seen(self) -> str:
        tail = self._pending.tail(200) + self._capper.held()[-200:]
        return escape_bytes(tail.encode("utf-8", "replace")[-240:])

    def _limits(self, timeout: float | None, max_bytes: int | None) -> _Limits:
        now = time.monotonic()
        return _Limits(now + (self.timeout if timeout is None else float(timeout)),
                       self.max_bytes if max_bytes is None else int(max_bytes), now)

    def _expect(self, rx: re.Pattern, what: str, lim: _Limits) -> ExpectMatch:
        self._require_open()
        self._take_raw_left()
        start = 0
        fresh = True
        while True:
            if fresh:
                w, wstart, spos = self._pending.window(start)
                m = rx.search(w, spos)
                if m:
                    a, b = wstart + m.start(), wstart + m.end()
                    consumed = self._pending.take(b)
                    return ExpectMatch(rx.pattern, consumed[a:], consumed[:a], m.groups(), m.groupdict(),
                                       time.monotonic() - lim.started, lim.got)
                start = max(0, self._pending.size - self.max_match)
            elapsed = time.monotonic() - lim.started
            if lim.got >= lim.budget:
                raise self._error(f"no {what} after {lim.got} bytes in {elapsed:.2f} s (byte budget {lim.budget}); "
                                  f"last output: '{self._seen()}'",
                                  details={"bytes": lim.got, "seconds": elapsed, "reason": "budget",
                                           "text": self._unconsumed()})
            if time.monotonic() >= lim.deadline:
                raise self._error(f"timed out after {elapsed:.2f} s waiting for {what} ({lim.got} bytes received); "
                                  f"last output: '{self._seen()}'",
                                  details={"bytes": lim.got, "seconds": elapsed, "reason": "timeout",
                                           "text": self._unconsumed()})
            data = self._read_chunk(lim.deadline, f"waiting for {what}")
            fresh = bool(data)
            if data:
                lim.got += len(data)
                self._to_text(data)

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
        """Wait for the prompt without typing anything; returns the text before it (e.g. a boot log)."""
        return self._expect(self._prompt(), f"prompt {self.prompt_description}", self._limits(timeout, max_bytes)).before

    def sync(self, timeout: float | None = None, *, max_bytes: int | None = None) -> str:
        """Press Enter and wait for a fresh prompt; returns the text that came before it."""
        prompt = self._prompt()
        self._take_raw_left()
        self._pending.discard()
        lim = self._limits(timeout, max_bytes)
        self.send_line("")
        return self._expect(prompt, f"prompt {self.prompt_description} after Enter", lim).before

    def capture_boot_log(self, mode: str = "capture", timeout: float = 5.0, reboot_command: str = "reboot") -> None:
        """Once, right after `open`: keep what the board printed up to its first prompt, and leave
        the console at its prompt.

        ``capture``: the text before the first prompt that arrives within `timeout` s: the boot
        log of a board that boots while the port is held (a simulated board, whose pty the
        simulator holds open; a bench board power-cycled while this waits; what a console server
        logged). The port's buffered input is not flushed at open.
        A board that was already up prints nothing: no boot log (`boot_log_problem` says why);
        then Enter brings a prompt. ``reboot``: Enter, then `reboot_command`; its output up to
        the next prompt (within `timeout` s) is the boot log. ``off``: Enter only, no boot log.
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
                    said = len(str(e.details.get("text") or "").strip())
                    heard = (f"{said} characters arrived without a prompt (still booting? raise "
                             f"interfaces.serial.boot_timeout)") if said else "nothing arrived"
                    self.boot_log_problem = (
                        f"no boot log: no prompt {self.prompt_description} within {timeout:g} s of opening "
                        f"{self.url} ({heard}); the board was up before the console was opened, so its boot "
                        f"messages were not seen. Power-cycle the board after the run starts, or set "
                        f"interfaces.serial.boot_log: reboot to have the harness reboot it")
                    self.sync()
            elif mode == "reboot":
                self.sync()
                self.boot_log = self.command(reboot_command, timeout=timeout)
            elif mode == "off":
                self.boot_log_problem = "no boot log: capture is off (interfaces.serial.boot_log: off)"
                self.sync()
            else:
                raise ValueError(f"boot log mode {mode!r} is not one of capture, reboot, off")
        finally:
            self.boot_span = (start, len(self.transcript))
        self.transcript.note("boot log: " + (f"{len(self.boot_log)} characters" if self.boot_log is not None
                                             else str(self.boot_log_problem)))
        self.boot_span = (start, len(self.transcript))

    def command(self, text: str, timeout: float | None = None, *, max_bytes: int | None = None) -> str:
        """Run a command at the prompt; returns its output (clean text between echo and prompt).

        Assumes the console is at its prompt (after `wait_prompt`, `sync` or a previous command).
        """
        prompt = self._prompt()
        if "\r" in text or "\n" in text:
            raise ValueError("command text must be one line")
        self._require_open()
        self._take_raw_left()
        self._pending.discard()
        lim = self._limits(timeout, max_bytes)
        self.send_line(text)
        if self.echo:
            self._expect(re.compile(re.escape(text.strip()) + r"[ \t]*\n"), f"echo of {text!r}", lim)
        m = self._expect(prompt, f"prompt {self.prompt_description} after {text!r}", lim)
        out = m.before
        return out[:-1] if out.endswith("\n") else out

    def read_until_quiet(self, quiet: float = 0.5, timeout: float | None = None, *, max_bytes: int | None = None) -> str:
        """Read until nothing arrives for `quiet` seconds; returns the clean text (consumed)."""
        self._require_open()
        self._take_raw_left()
        lim = self._limits(timeout, max_bytes)
        last = time.monotonic()
        while True:
            now = time.monotonic()
            if now - last >= quiet:
                break
            if now >= lim.deadline:
                raise self._error(f"did not go quiet for {quiet:.2f} s within {now - lim.started:.2f} s "
                                  f"({lim.got} bytes received); last output: '{self._seen()}'",
                                  details={"bytes": lim.got})
            data = self._read_chunk(min(lim.deadline, last + quiet), f"reading until quiet for {quiet} s")
            if data:
                lim.got += len(data)
                last = time.monotonic()
                self._to_text(data)
                if lim.got > lim.budget:
                    raise self._error(f"still talking after {lim.got} bytes (byte budget {lim.budget}) while "
                                      f"waiting for {quiet:.2f} s of quiet; last output: '{self._seen()}'",
                                      details={"bytes": lim.got})
        self._pending.add(self._capper.flush())
        return self._pending.discard()

    # -- raw --

    def read_bytes(self, n: int | None = None, *, until: bytes | None = None, timeout: float | None = None,
                   max_bytes: int | None = None) -> bytes:
        """Raw bytes: exactly `n`, or up to and including `until`. Text not yet consumed is dropped.

        Bytes read past what is returned are kept for the next read (raw or text).
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

    # -- firmware dump --

    def dump_region(self, name: str, *, timeout: float | None = None, start_timeout: float | None = None,
                    idle_timeout: float | None = None, max_rounds: int | None = None, max_size: int | None = None,
                    command: str | None = None, on_frame: Callable[[int, int], None] | None = None) -> DumpResult:
        """Dump flash region `name` with the dumpframe protocol; returns the verified image.

        Sends ``dump_command`` (``dump {name}``) at the prompt, collects DATA frames, asks for
        missing or damaged ones (at most `max_rounds` RESEND rounds), checks the length and the
        sha256 from BEGIN, sends DONE and waits for the prompt. Anything short of that raises
        ConsoleError (after telling the board ABORT where possible); partial data is never
        returned. `on_frame(have, total)` is called after each new frame (total 0 before BEGIN).
        """
        cfg = self.config
        self._prompt()
        self._require_open()
        timeout = float(cfg["dump_timeout"] if timeout is None else timeout)
        start_timeout = float(cfg["dump_start_timeout"] if start_timeout is None else start_timeout)
        idle_timeout = float(cfg["dump_idle_timeout"] if idle_timeout is None else idle_timeout)
        max_rounds = int(cfg["dump_max_rounds"] if max_rounds is None else max_rounds)
        max_size = int(cfg["dump_max_size"] if max_size is None else max_size)
        cmd = (command or cfg["dump_command"]).format(name=name)
        self._take_raw_left()
        self._reset_text()
        rx0, tx0 = self.transcript.rx_bytes, self.transcript.tx_bytes
        state = _DumpState(self, name, cmd, timeout, start_timeout, idle_timeout, max_rounds, max_size, on_frame)
        self.transcript.note(f"dump {name!r}: sending {cmd!r}")
        self.send_line(cmd)
        try:
            image, begin = state.run()
        except ConsoleError as e:
            if state.stream is not None and self._ser is not None:
                try:
                    self.write(Abort(state.stream, str(e)[:1000]).encode())
                except ConsoleError:
                    pass
            raise
        seconds = time.monotonic() - state.t0
        self.write(Done(begin.stream).encode())
        after = max(1.0, min(10.0, self.timeout))
        try:
            self._expect(self._prompt(), f"prompt {self.prompt_description} after the dump of {name!r}",
                         self._limits(after, None))
        except ConsoleError as e:
            raise self._error(f"dump of {name!r}: the image arrived and verified (sha256 {begin.sha256_hex}) but "
                              f"the board did not return to its prompt after DONE: {e}",
                              details={"region": name, "sha256": begin.sha256_hex}) from e
        self.transcript.note(f"dump {name!r}: {len(image)} bytes, sha256 {begin.sha256_hex}, "
                             f"{state.rounds} RESEND rounds, {state.requested} frames requested")
        return DumpResult(name=name, data=image, sha256=begin.sha256_hex, size=len(image), frame_size=begin.frame_size,
                          frames=begin.frame_count, resend_rounds=state.rounds, frames_requested=state.requested,
                          corrupt_records=state.decoder.corrupt, duplicate_frames=state.duplicates,
                          skipped_bytes=state.decoder.skipped_bytes,
                          rx_bytes=self.transcript.rx_bytes - rx0, tx_bytes=self.transcript.tx_bytes - tx0,
                          seconds=seconds)


class _DumpState:
    """The host side of one dump (see SerialConsole.dump_region)."""

    CHATTER_KEEP = 64 << 10

    def __init__(self, console: SerialConsole, name: str, cmd: str, timeout: float, start_timeout: float,
                 idle_timeout: float, max_rounds: int, max_size: int, on_frame: Callable[[int, int], None] | None) -> None:
        self.c = console
        self.name, self.cmd = name, cmd
        self.timeout, self.start_timeout, self.idle_timeout = timeout, start_timeout, idle_timeout
        self.max_rounds, self.max_size, self.on_frame = max_rounds, max_size, on_frame
        self.t0 = time.monotonic()
        self.decoder = FrameDecoder()
        self.stream: int | None = None
        self.begin: Begin | None = None
        self.frames: dict[int, bytes] = {}
        self.missing: set[int] = set()
        self.buffered = 0  # payload bytes held before BEGIN
        self.rounds = 0
        self.requested = 0
        self.duplicates = 0
        self.stale = 0
        self.chatter = bytearray()
        self.chatter_cleaner = TextCleaner()
        self.chatter_text = ""

    def fail(self, message: str) -> ConsoleError:
        have = len(self.frames)
        total = self.begin.frame_count if self.begin else None
        details = {"region": self.name, "frames_have": have, "frames_total": total, "resend_rounds": self.rounds,
                   "corrupt_records": self.decoder.corrupt, "seconds": time.monotonic() - self.t0}
        progress = f"{have}/{total if total is not None else '?'} frames"
        return self.c._error(f"dump of {self.name!r} failed ({progress}, {self.rounds} RESEND rounds): {message}",
                             details=details)

    def _frame_ok(self, d: Data) -> str | None:
        b = self.begin
        assert b is not None
        count = b.frame_count
        if d.seq >= count:
            return f"seq {d.seq} beyond the {count} frames BEGIN announced"
        expect = b.frame_size if d.seq < count - 1 else b.total_length - (count - 1) * b.frame_size
        if len(d.payload) != expect:
            return f"frame {d.seq} carries {len(d.payload)} bytes, expected {expect}"
        if d.last != (d.seq == count - 1):
            return f"frame {d.seq} has the LAST flag {'set' if d.last else 'clear'} wrongly"
        return None

    def _accept(self, d: Data) -> None:
        if d.seq in self.frames:
            self.duplicates += 1
            return
        if self.begin is not None:
            problem = self._frame_ok(d)
            if problem:
                self.c.transcript.note(f"dump {self.name!r}: dropped a frame: {problem}")
                return
            self.missing.discard(d.seq)
        else:
            self.buffered += len(d.payload)
            if self.buffered > self.max_size:
                raise self.fail(f"more than {self.max_size} bytes of frames without a BEGIN record")
        self.frames[d.seq] = d.payload
        if self.on_frame is not None:
            self.on_frame(len(self.frames), self.begin.frame_count if self.begin else 0)

    def _on_begin(self, b: Begin) -> None:
        if self.begin is not None:
            if b != self.begin:
                raise self.fail(f"BEGIN changed during the dump: {self.begin} then {b}")
            return
        if b.name != self.name:
            raise self.fail(f"board announced region {b.name!r}, asked for {self.name!r}")
        if b.total_length > self.max_size:
            raise self.fail(f"region is {b.total_length} bytes, more than the {self.max_size}-byte limit")
        self.begin = b
        early = dict(self.frames)
        self.frames.clear()  # (cleared in place: run() holds a reference)
        self.missing = set(range(b.frame_count))
        for seq, payload in early.items():
            self._accept(Data(b.stream, seq, payload, seq == b.frame_count - 1))

    def _adopt(self, stream: int, is_begin: bool) -> bool:
        """Is this record part of our dump? The first record names the stream."""
        if self.stream is None or (is_begin and self.begin is None and stream != self.stream):
            if self.stream is not None:
                self.c.transcript.note(f"dump {self.name!r}: switching from stream {self.stream} to {stream}")
                self.frames.clear()
                self.buffered = 0
            self.stream = stream
            return True
        if stream != self.stream:
            self.stale += 1
            return False
        return True

    def _chatter(self, data: bytes) -> None:
        if self.stream is not None or len(self.chatter) >= self.CHATTER_KEEP:
            return
        data = data[: self.CHATTER_KEEP - len(self.chatter)]
        self.chatter += data
        self.chatter_text += self.chatter_cleaner.feed(data)
        text = self.chatter_text
        if self.c.echo:
            # Only a prompt after the echo of the command is the board's answer to it; one before
            # is stale (e.g. a second prompt from an Enter that followed an ABORT).
            echo = re.search(re.escape(self.cmd) + r"[ \t]*\n", text)
            if echo is None:
                return
            text = text[echo.end() - 1 :]
        if self.c._prompt().search(text):
            said = text.strip().replace("\n", " | ")
            raise self.fail(f"the board answered {self.cmd!r} without starting a dump: '{said}'")

    def _request(self) -> bool:
        """Ask for what is missing; False when nothing is."""
        if self.begin is None:
            seqs = [BEGIN_SEQ]
        else:
            seqs = sorted(self.missing)
            if not seqs:
                return False
        if self.rounds >= self.max_rounds:
            first = ", ".join(str(s) for s in seqs[:8]) + (" ..." if len(seqs) > 8 else "")
            what = "the BEGIN record" if self.begin is None else f"{len(seqs)} frames ({first})"
            raise self.fail(f"{what} still missing after {self.max_rounds} RESEND rounds")
        self.rounds += 1
        self.c.transcript.note(f"dump {self.name!r}: RESEND round {self.rounds}: {len(seqs)} "
                               + ("record (BEGIN)" if self.begin is None else "frames"))
        assert self.stream is not None
        for i in range(0, len(seqs), MAX_RESEND_SEQS):
            self.c.write(Resend(self.stream, tuple(seqs[i : i + MAX_RESEND_SEQS])).encode())
        self.requested += len(seqs)
        return True

    def _complete(self) -> bool:
        return self.begin is not None and not self.missing

    def _doing(self) -> str:
        total = self.begin.frame_count if self.begin else "?"
        return f"dumping {self.name!r} ({len(self.frames)}/{total} frames)"

    def run(self) -> tuple[bytes, Begin]:
        deadline = self.t0 + self.timeout
        last_rx = time.monotonic()
        read = self.c._read_chunk
        feed = self.decoder.feed
        frames = self.frames
        while self.begin is None or self.missing:
            now = time.monotonic()
            if now >= deadline:
                raise self.fail(f"timed out after {self.timeout:.1f} s")
            if self.stream is None and now - self.t0 >= self.start_timeout:
                said = self.chatter_text.strip().replace("\n", " | ")[-300:]
                raise self.fail(f"no dump record within {self.start_timeout:.1f} s after {self.cmd!r}; "
                                f"the console said: '{said}'")
            data = read(deadline, self._doing)
            request = False
            if data:
                last_rx = time.monotonic()
                events = feed(data)
            elif self.stream is not None and time.monotonic() - last_rx >= self.idle_timeout:
                events = self.decoder.flush()
                request = True  # silence: END lost or frames truncated; ask for what is missing
                last_rx = time.monotonic()
            else:
                continue
            for ev in events:
                kind = type(ev)
                if kind is Data:
                    b = self.begin
                    # The common case inline: a full-size, new, in-range frame of our stream.
                    if (b is not None and ev.stream == self.stream and ev.seq < b.frame_count - 1
                            and len(ev.payload) == b.frame_size and not ev.last and ev.seq not in frames):
                        frames[ev.seq] = ev.payload
                        self.missing.discard(ev.seq)
                        if self.on_frame is not None:
                            self.on_frame(len(frames), b.frame_count)
                    elif self._adopt(ev.stream, False):
                        self._accept(ev)
                elif kind is Skipped:
                    self._chatter(ev.data)
                elif kind is Corrupt:
                    continue  # counted by the decoder; the frame is asked for again after END
                elif kind is Begin:
                    if self._adopt(ev.stream, True):
                        self._on_begin(ev)
                elif kind is End:
                    if self._adopt(ev.stream, False):
                        if self.begin is not None and ev.frame_count != self.begin.frame_count:
                            raise self.fail(f"END says {ev.frame_count} frames, BEGIN implies {self.begin.frame_count}")
                        request = True
                elif kind is Abort:
                    if self.stream is None or ev.stream == self.stream:
                        raise self.fail(f"the board aborted: {ev.reason!r}")
                # RESEND/DONE from the board side are not part of this protocol: ignored.
            if request and not self._complete():
                self._request()
        assert self.begin is not None
        b = self.begin
        image = b"".join(self.frames[i] for i in range(b.frame_count))
        if len(image) != b.total_length:
            raise self.fail(f"assembled {len(image)} bytes, BEGIN announced {b.total_length}")
        digest = hashlib.sha256(image).digest()
        if digest != b.sha256:
            raise self.fail(f"sha256 mismatch: BEGIN announced {b.sha256.hex()}, the received image hashes to "
                            f"{digest.hex()}")
        return image, b


# --------------------------------------------------------------------------------------------
# The `serial` interface kind of a board (harness/interfaces/__init__.py OPENERS)

# Board-config settings beyond SerialConsole's own keys: how the boot log is captured at open.
BOOT_LOG_MODES = ("capture", "reboot", "off")
_OPEN_DEFAULTS: dict[str, Any] = {"boot_log": "capture", "boot_timeout": 5.0, "reboot_command": "reboot"}
_POSITIVE = ("timeout", "poll_interval", "write_timeout", "dump_timeout", "dump_start_timeout",
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
    console = {k: v for k, v in settings.items() if k in _DEFAULTS}
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
    "SerialConsole",
    "TextCleaner",
    "Transcript",
    "TRANSCRIPT_MEDIA_TYPE",
    "TRANSCRIPT_TEXT_MEDIA_TYPE",
    "clean_text",
    "escape_bytes",
    "unescape_text",
    "FrameError",
]
