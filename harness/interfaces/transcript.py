"""The console transcript: every byte both ways, one chunk per read or write, with timestamps.

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
import binascii
import json
import re
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable, Iterable, Iterator

TRANSCRIPT_FORMAT = "attestlab.transcript"
TRANSCRIPT_VERSION = 1
TRANSCRIPT_MEDIA_TYPE = "application/vnd.attestlab.transcript+jsonl"
TRANSCRIPT_TEXT_MEDIA_TYPE = "text/plain; charset=utf-8"
DIRECTIONS = ("rx", "tx", "note")
MAX_TRANSCRIPT_BYTES = 256 << 20  # the largest transcript file read back (a run's are a few MiB)


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


_MAX_WALL = 253402300799.0  # 9999-12-31T23:59:59Z, the last second a timestamp can be printed for
_MAX_ELAPSED = 1e9  # seconds since the transcript started: about 31 years
_NO_DEFAULT: Any = object()


def _json_object(line: str, number: int) -> dict[str, Any]:
    try:
        obj = json.loads(line)
    except (ValueError, RecursionError) as e:  # JSONDecodeError, an integer too long, nesting too deep
        raise ValueError(f"line {number}: not JSON: {type(e).__name__}: {str(e)[:200]}") from None
    if not isinstance(obj, dict):
        raise ValueError(f"line {number}: a JSON object expected, got {type(obj).__name__}")
    return obj


def _field(obj: dict[str, Any], key: str, kind: type, number: int, *, default: Any = _NO_DEFAULT) -> Any:
    """obj[key], of exactly `kind` (a bool is no int); a str must be valid Unicode."""
    if key not in obj:
        if default is _NO_DEFAULT:
            raise ValueError(f"line {number}: '{key}' is missing")
        return default
    value = obj[key]
    if type(value) is not kind:
        raise ValueError(f"line {number}: '{key}' must be {kind.__name__}, got {type(value).__name__} "
                         f"{str(value)[:80]!r}")
    if kind is str:
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError(f"line {number}: '{key}' holds a lone surrogate ({value[:80]!r})") from None
    return value


def _seconds(obj: dict[str, Any], key: str, number: int, most: float, *, default: Any = _NO_DEFAULT) -> float:
    """A time in seconds: a finite number from 0 to `most`."""
    if key not in obj and default is not _NO_DEFAULT:
        return default
    value = obj.get(key)
    if type(value) not in (int, float) or not 0 <= value <= most:  # (NaN fails the comparison)
        raise ValueError(f"line {number}: '{key}' must be seconds from 0 to {most:g}, got {str(value)[:80]}")
    return float(value)


def _jsonl_lines(blob: bytes | str) -> Iterator[str]:
    """The lines of a JSON Lines file, one at a time (a final newline ends the last line)."""
    newline = b"\n" if isinstance(blob, (bytes, bytearray)) else "\n"
    pos, number = 0, 1
    while pos < len(blob):
        end = blob.find(newline, pos)
        end = len(blob) if end < 0 else end
        line = blob[pos:end]
        if not isinstance(line, str):
            try:
                line = bytes(line).decode("utf-8")
            except UnicodeDecodeError as e:
                raise ValueError(f"line {number}: not UTF-8 (byte {pos + e.start} of the file)") from None
        yield line
        pos, number = end + 1, number + 1


def _chunk_of(line: str, number: int) -> Chunk:
    """One chunk line of a transcript file; ValueError naming the line and the field."""
    obj = _json_object(line, number)
    # The common case in one look (a million-record transcript spends its time here); anything
    # unusual takes the checks below, which say what is wrong.
    direction, b64, n, t, wall = obj.get("dir"), obj.get("b64"), obj.get("n"), obj.get("t"), obj.get("wall")
    if (direction in DIRECTIONS and type(b64) is str and b64.isascii() and type(n) is int
            and type(t) is float and 0 <= t <= _MAX_ELAPSED and type(wall) is float and 0 <= wall <= _MAX_WALL):
        try:
            data = binascii.a2b_base64(b64, strict_mode=True)
        except binascii.Error:
            pass
        else:
            if len(data) == n and (n or not b64):
                return Chunk(direction, t, wall, data)
    direction = _field(obj, "dir", str, number)
    if direction not in DIRECTIONS:
        raise ValueError(f"line {number}: 'dir' {direction!r} is not one of {DIRECTIONS}")
    b64 = _field(obj, "b64", str, number)
    try:
        data = base64.b64decode(b64, validate=True)
    except ValueError as e:  # binascii.Error
        raise ValueError(f"line {number}: 'b64' is not base64: {e}") from None
    if _field(obj, "n", int, number, default=len(data)) != len(data):
        raise ValueError(f"line {number}: 'n' is {obj['n']} but 'b64' holds {len(data)} bytes")
    return Chunk(direction, _seconds(obj, "t", number, _MAX_ELAPSED), _seconds(obj, "wall", number, _MAX_WALL), data)


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

    def index(self, direction: str, start: int = 0) -> int | None:
        """The index of the first chunk of `direction` at or after `start`; None when there is none."""
        return next((i for i in range(max(0, start), len(self._chunks)) if self._chunks[i].direction == direction),
                    None)

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
        """Parse `to_jsonl` output. Anything else raises ValueError naming the line (1 is the
        header) and the field: not UTF-8 or not JSON, a missing or mistyped field, a time that
        is not a finite number in range (``started_wall: 1e20``, NaN), base64 that is not, a
        byte count that disagrees. Extra fields are ignored."""
        t, chunks = cls.stream_jsonl(blob)
        for chunk in chunks:
            t._chunks.append(chunk)
            if chunk.direction == "rx":
                t.rx_bytes += len(chunk.data)
            elif chunk.direction == "tx":
                t.tx_bytes += len(chunk.data)
        return t

    @classmethod
    def stream_jsonl(cls, blob: bytes | str) -> tuple["Transcript", Iterator[Chunk]]:
        """`from_jsonl` a line at a time: the header as a transcript without chunks (at once),
        and its chunks, each parsed when it is taken (ValueError as `from_jsonl`, when that
        line is reached). Memory: one line, not every chunk."""
        lines = _jsonl_lines(blob)
        first = next(lines, None)
        if first is None:
            raise ValueError("empty transcript")
        head = _json_object(first, 1)
        if head.get("format") != TRANSCRIPT_FORMAT or _field(head, "version", int, 1) != TRANSCRIPT_VERSION:
            raise ValueError(f"line 1: not an {TRANSCRIPT_FORMAT} v{TRANSCRIPT_VERSION} header")
        t = cls(_field(head, "source", str, 1, default=""))
        t.started_wall = _seconds(head, "started_wall", 1, _MAX_WALL, default=0.0)
        span = head.get("chunks")
        if span is not None:
            if not (isinstance(span, list) and len(span) == 2 and all(type(x) is int for x in span)
                    and 0 <= span[0] <= span[1]):
                raise ValueError(f"line 1: 'chunks' must be [start, stop] with 0 <= start <= stop, got {span!r}")
            t.span = (span[0], span[1])
        return t, (_chunk_of(line, i) for i, line in enumerate(lines, start=2))

    def render_text(self, *, max_chunk_bytes: int | None = None, numbered: bool = False) -> str:
        """Readable, pure-ASCII rendering; chunks longer than `max_chunk_bytes` are shortened.

        `numbered`: each chunk starts with its line number in `to_jsonl` (the header is line 1),
        the numbers the probes' reasons cite ("evidence serial/...-transcript.jsonl line 8").
        """
        return "".join(render_lines(self, self._chunks, (self.rx_bytes, self.tx_bytes, len(self._chunks)),
                                    max_chunk_bytes=max_chunk_bytes, numbered=numbered))


def render_lines(head: Transcript, chunks: Iterable[Chunk], totals: tuple[int, int, int], *,
                 max_chunk_bytes: int | None = None, numbered: bool = False) -> Iterator[str]:
    """`Transcript.render_text` a line at a time (each ends in a newline): `head` gives the
    source and start, `totals` the rx bytes, tx bytes and chunk count its first lines state."""
    yield from _head_lines(head, totals)
    yield from _chunk_lines(chunks, max_chunk_bytes, numbered)


def _head_lines(head: Transcript, totals: tuple[int, int, int]) -> list[str]:
    started = datetime.fromtimestamp(head.started_wall, timezone.utc).isoformat(timespec="microseconds")
    rx, tx, count = totals
    return [f"# attestlab console transcript: {escape_bytes(head.source.encode())}, started {started}\n",
            f"# rx {rx} bytes, tx {tx} bytes, {count} chunks; escapes: \\r \\n \\t \\\\ \\xNN\n"]


def _chunk_lines(chunks: Iterable[Chunk], max_chunk_bytes: int | None, numbered: bool) -> Iterator[str]:
    number = (lambda i: f"L{i + 2:<6} ") if numbered else (lambda i: "")
    gutter = " " * (28 + len(number(0))) + "| "
    for i, c in enumerate(chunks):
        data = c.data
        suffix = ""
        if max_chunk_bytes is not None and len(data) > max_chunk_bytes:
            suffix = f" [... {len(data) - max_chunk_bytes} more bytes]"
            data = data[:max_chunk_bytes]
        if c.direction == "note":
            yield f"{number(i)}+{c.t:12.6f} --   note    # {escape_bytes(data) + suffix}\n"
            continue
        pieces = escape_bytes(data).split("\\n")
        lines = [p + "\\n" for p in pieces[:-1]] + ([pieces[-1]] if pieces[-1] else [])
        lines = lines or [""]
        lines[-1] += suffix
        yield f"{number(i)}+{c.t:12.6f} {c.direction} {len(c.data):8d} B | {lines[0]}\n"
        for line in lines[1:]:
            yield gutter + line + "\n"


def render_jsonl(blob: bytes | str, write: Callable[[str], Any], *, max_chunk_bytes: int | None = None,
                 numbered: bool = False) -> None:
    """`attestlab serial show`: read a transcript file once, a line at a time, and write its
    rendering (ValueError as `from_jsonl`, before anything is written). The first lines state
    totals only known at the end, so the rest waits in a temporary file (memory: a line, not a
    chunk object per record; a transcript of a million one-byte reads is ~100 MB of JSON)."""
    head, chunks = Transcript.stream_jsonl(blob)
    rx = tx = count = 0

    def counted() -> Iterator[Chunk]:
        nonlocal rx, tx, count
        for chunk in chunks:
            count += 1
            if chunk.direction == "rx":
                rx += len(chunk.data)
            elif chunk.direction == "tx":
                tx += len(chunk.data)
            yield chunk

    with tempfile.SpooledTemporaryFile(max_size=8 << 20, mode="w+", encoding="ascii") as rest:
        batch: list[str] = []
        for line in _chunk_lines(counted(), max_chunk_bytes, numbered):
            batch.append(line)
            if len(batch) >= 4096:
                rest.write("".join(batch))
                batch.clear()
        rest.write("".join(batch))
        write("".join(_head_lines(head, (rx, tx, count))))
        rest.seek(0)
        while piece := rest.read(1 << 20):
            write(piece)
