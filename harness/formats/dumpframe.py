"""The firmware-dump wire protocol ("dumpframe"): framed, checksummed, resumable.

A board streams a flash region over its debug console as a sequence of binary records. The
stream may be interleaved with console chatter (the echo of the command, log lines) and may
lose or damage bytes; the decoder resynchronises on the magic, checks every record, and the
host asks for the frames it is missing. This module is pure: encoders, a strict parser and an
incremental decoder. No I/O.

Record layout (all integers big-endian, "network order")
--------------------------------------------------------

Every record, in either direction, is one frame::

    offset  size  field
    0       4     magic     D7 44 4D 50  (b"\\xd7DMP")
    4       1     vertype   high nibble: format version (1); low nibble: record type
    5       1     flags     bit 0 LAST: final DATA frame of the image; other bits 0
    6       2     stream    transfer id chosen by the board for one dump; every record of
                            that dump (both directions) carries it
    8       4     seq       DATA: frame index; RESEND/others: 0
    12      2     length    payload length N in bytes, 0..16384 (MAX_PAYLOAD)
    14      2     hcheck    low 16 bits of CRC-32 over bytes 0..13 (the header check: a false
                            magic in chatter or a damaged length is rejected at once, without
                            waiting for a payload that will never come)
    16      N     payload   depends on the type (below)
    16+N    4     crc32     CRC-32 (IEEE 802.3, as zlib.crc32) over bytes 0..16+N-1

So a frame costs 20 bytes on top of its payload (FRAME_OVERHEAD): a 4096-byte DATA frame is
4116 bytes on the wire, 1.0049 wire bytes per payload byte (the whole image adds one BEGIN
and one END record). The magic has no self-overlap, so skipping it never skips a frame.

Record types and payloads
-------------------------

    1 BEGIN   board -> host  u64 total_length | 32 bytes sha256 of the image |
                             u32 frame_size | u16 name_len | name (UTF-8, <= 1024 bytes)
                             The image is cut into ceil(total_length / frame_size) DATA
                             frames; frame_size is 1..MAX_PAYLOAD.
    2 DATA    board -> host  seq = index i; payload = image[i*frame_size : (i+1)*frame_size].
                             Every frame but the last carries exactly frame_size bytes; the
                             last carries the rest (1..frame_size) and has flag LAST.
    3 END     board -> host  u32 frame_count. "I have sent everything queued"; sent after the
                             first pass and after answering each RESEND. The board then waits.
    4 RESEND  host -> board  n x u32 seq, 1 <= n <= MAX_RESEND_SEQS (4096). The board sends
                             those DATA frames again, then END. seq BEGIN_SEQ (0xFFFFFFFF)
                             asks for the BEGIN record again.
    5 DONE    host -> board  empty. The host has the whole image and its sha256 matches; the
                             board leaves dump mode and prints its prompt.
    6 ABORT   either way     UTF-8 reason (<= 1024 bytes). The sender gives up; the board
                             leaves dump mode and prints its prompt.

A dump: host sends the console command (e.g. ``dump vbios``); board answers BEGIN, DATA 0..n-1,
END. The host sends RESEND for what is missing or was damaged, until it has every frame or
runs out of rounds (then ABORT); it checks the total length and the sha256 announced by BEGIN
(which proves transport integrity only: the digest comes from the board itself, so whether
the image is the *expected* one is for the reference to decide) and sends DONE.

Decoder
-------

`FrameDecoder.feed(chunk)` takes arbitrary chunks and returns events in stream order:
records (`Begin`, `Data`, `End`, `Resend`, `Done`, `Abort`), `Skipped` (bytes between
records: chatter, garbage) and `Corrupt` (a damaged record: header check or CRC mismatch,
absurd length, unknown version or type, malformed payload, truncated frame). It never raises
except `FrameError` for being fed something that is not bytes; it buffers at most one frame
(HEADER_SIZE + max_payload + 4 bytes). `flush()` treats what is buffered as final: at end of
input, or after the line went quiet, a frame that will never be completed is reported as
truncated and scanning resumes after its magic.
"""

from __future__ import annotations

import enum
import hashlib
import math
import struct
import zlib
from dataclasses import dataclass, field
from typing import ClassVar, Iterator, Union

MAGIC = b"\xd7DMP"
VERSION = 1
HEADER = struct.Struct(">4sBBHIHH")
HEADER_SIZE = HEADER.size  # 16
TRAILER = struct.Struct(">I")
TRAILER_SIZE = TRAILER.size  # 4
FRAME_OVERHEAD = HEADER_SIZE + TRAILER_SIZE  # 20
MAX_PAYLOAD = 16384
DEFAULT_FRAME_SIZE = 4096
MAX_FRAME = HEADER_SIZE + MAX_PAYLOAD + TRAILER_SIZE
BEGIN_SEQ = 0xFFFFFFFF
MAX_SEQ = 0xFFFFFFFE
MAX_RESEND_SEQS = MAX_PAYLOAD // 4
MAX_NAME = 1024
MAX_REASON = 1024
FLAG_LAST = 0x01

_BEGIN_FIXED = struct.Struct(">Q32sIH")
_U32 = struct.Struct(">I")


class FrameError(ValueError):
    """A record cannot be encoded or parsed, or the decoder was misused."""


class RecordType(enum.IntEnum):
    BEGIN = 1
    DATA = 2
    END = 3
    RESEND = 4
    DONE = 5
    ABORT = 6


def wire_overhead(frame_size: int = DEFAULT_FRAME_SIZE) -> float:
    """Wire bytes per payload byte of full DATA frames of `frame_size` bytes."""
    if not 1 <= frame_size <= MAX_PAYLOAD:
        raise FrameError(f"frame_size {frame_size} outside 1..{MAX_PAYLOAD}")
    return (frame_size + FRAME_OVERHEAD) / frame_size


def frame_count(total_length: int, frame_size: int) -> int:
    return math.ceil(total_length / frame_size) if total_length else 0


def image_wire_size(total_length: int, frame_size: int, name: str) -> int:
    """Exact bytes one clean pass puts on the wire: BEGIN, every DATA frame, END."""
    begin = FRAME_OVERHEAD + _BEGIN_FIXED.size + len(name.encode("utf-8"))
    end = FRAME_OVERHEAD + _U32.size
    return begin + total_length + frame_count(total_length, frame_size) * FRAME_OVERHEAD + end


def encode_frame(rtype: int, stream: int, seq: int, payload: bytes, flags: int = 0) -> bytes:
    """One frame: header, payload, CRC-32. The low-level encoder every record uses."""
    if not 0 <= stream <= 0xFFFF:
        raise FrameError(f"stream {stream} outside 0..65535")
    if not 0 <= seq <= 0xFFFFFFFF:
        raise FrameError(f"seq {seq} outside 0..2**32-1")
    if not 0 <= flags <= 0xFF:
        raise FrameError(f"flags {flags} outside 0..255")
    if not 1 <= rtype <= 15:
        raise FrameError(f"record type {rtype} outside 1..15")
    if len(payload) > MAX_PAYLOAD:
        raise FrameError(f"payload of {len(payload)} bytes exceeds MAX_PAYLOAD {MAX_PAYLOAD}")
    head = HEADER.pack(MAGIC, (VERSION << 4) | rtype, flags, stream, seq, len(payload), 0)[:14]
    head += struct.pack(">H", zlib.crc32(head) & 0xFFFF)
    crc = zlib.crc32(payload, zlib.crc32(head))
    return b"".join((head, payload, _U32.pack(crc)))


def _check_stream(stream: int) -> None:
    if not isinstance(stream, int) or not 0 <= stream <= 0xFFFF:
        raise FrameError(f"stream {stream!r} outside 0..65535")


@dataclass(frozen=True)
class Begin:
    """BEGIN: the board announces the region, its length, its sha256 and the frame size."""

    stream: int
    name: str
    total_length: int
    sha256: bytes
    frame_size: int
    type: ClassVar[RecordType] = RecordType.BEGIN

    def __post_init__(self) -> None:
        _check_stream(self.stream)
        if not 0 <= self.total_length < 2**64:
            raise FrameError(f"total_length {self.total_length} outside 0..2**64-1")
        if not isinstance(self.sha256, bytes) or len(self.sha256) != 32:
            raise FrameError("sha256 must be 32 bytes")
        if not 1 <= self.frame_size <= MAX_PAYLOAD:
            raise FrameError(f"frame_size {self.frame_size} outside 1..{MAX_PAYLOAD}")
        if len(self.name.encode("utf-8")) > MAX_NAME:
            raise FrameError(f"region name longer than {MAX_NAME} bytes")
        if frame_count(self.total_length, self.frame_size) > MAX_SEQ + 1:
            raise FrameError("image needs more frames than seq can number")

    @property
    def frame_count(self) -> int:
        return frame_count(self.total_length, self.frame_size)

    @property
    def sha256_hex(self) -> str:
        return self.sha256.hex()

    def payload(self) -> bytes:
        name = self.name.encode("utf-8")
        return _BEGIN_FIXED.pack(self.total_length, self.sha256, self.frame_size, len(name)) + name

    def encode(self) -> bytes:
        return encode_frame(RecordType.BEGIN, self.stream, 0, self.payload())

    @classmethod
    def for_image(cls, stream: int, name: str, image: bytes, frame_size: int = DEFAULT_FRAME_SIZE) -> "Begin":
        return cls(stream, name, len(image), hashlib.sha256(image).digest(), frame_size)


@dataclass(frozen=True)
class Data:
    """DATA: frame `seq` of the image."""

    stream: int
    seq: int
    payload: bytes = field(repr=False)
    last: bool = False
    type: ClassVar[RecordType] = RecordType.DATA

    def __post_init__(self) -> None:
        _check_stream(self.stream)
        if not 0 <= self.seq <= MAX_SEQ:
            raise FrameError(f"DATA seq {self.seq} outside 0..{MAX_SEQ}")
        if len(self.payload) > MAX_PAYLOAD:
            raise FrameError(f"DATA payload of {len(self.payload)} bytes exceeds {MAX_PAYLOAD}")

    def encode(self) -> bytes:
        return encode_frame(RecordType.DATA, self.stream, self.seq, self.payload, FLAG_LAST if self.last else 0)


@dataclass(frozen=True)
class End:
    """END: the board has sent everything queued and waits for RESEND, DONE or ABORT."""

    stream: int
    frame_count: int
    type: ClassVar[RecordType] = RecordType.END

    def __post_init__(self) -> None:
        _check_stream(self.stream)
        if not 0 <= self.frame_count <= 0xFFFFFFFF:
            raise FrameError(f"END frame_count {self.frame_count} outside u32")

    def encode(self) -> bytes:
        return encode_frame(RecordType.END, self.stream, 0, _U32.pack(self.frame_count))


@dataclass(frozen=True)
class Resend:
    """RESEND: the host asks for these DATA frames again (BEGIN_SEQ: the BEGIN record)."""

    stream: int
    seqs: tuple[int, ...]
    type: ClassVar[RecordType] = RecordType.RESEND

    def __post_init__(self) -> None:
        _check_stream(self.stream)
        if not 1 <= len(self.seqs) <= MAX_RESEND_SEQS:
            raise FrameError(f"RESEND must name 1..{MAX_RESEND_SEQS} frames, not {len(self.seqs)}")
        for s in self.seqs:
            if not 0 <= s <= 0xFFFFFFFF:
                raise FrameError(f"RESEND seq {s} outside u32")

    def encode(self) -> bytes:
        return encode_frame(RecordType.RESEND, self.stream, 0, struct.pack(f">{len(self.seqs)}I", *self.seqs))


@dataclass(frozen=True)
class Done:
    """DONE: the host has the verified image; the board leaves dump mode."""

    stream: int
    type: ClassVar[RecordType] = RecordType.DONE

    def __post_init__(self) -> None:
        _check_stream(self.stream)

    def encode(self) -> bytes:
        return encode_frame(RecordType.DONE, self.stream, 0, b"")


@dataclass(frozen=True)
class Abort:
    """ABORT: the sender gives up on this dump, with a reason."""

    stream: int
    reason: str
    type: ClassVar[RecordType] = RecordType.ABORT

    def __post_init__(self) -> None:
        _check_stream(self.stream)
        if len(self.reason.encode("utf-8")) > MAX_REASON:
            raise FrameError(f"ABORT reason longer than {MAX_REASON} bytes")

    def encode(self) -> bytes:
        return encode_frame(RecordType.ABORT, self.stream, 0, self.reason.encode("utf-8"))


Record = Union[Begin, Data, End, Resend, Done, Abort]


@dataclass(frozen=True)
class Corrupt:
    """A damaged or implausible record at stream `offset`; `size` bytes were dropped.

    `type`, `stream` and `seq` are filled in when the header check passed (so they are
    probably right, e.g. a DATA frame whose payload CRC failed), else None.
    """

    reason: str
    offset: int
    size: int
    type: RecordType | None = None
    stream: int | None = None
    seq: int | None = None


@dataclass(frozen=True)
class Skipped:
    """Bytes between records (console chatter, garbage) at stream `offset`."""

    offset: int
    data: bytes = field(repr=False)


Event = Union[Begin, Data, End, Resend, Done, Abort, Corrupt, Skipped]


def _record_from(rtype: int, flags: int, stream: int, seq: int, payload: bytes) -> Record:
    """Build a record from a frame whose header and CRC are good; FrameError if malformed."""
    if rtype == RecordType.DATA:
        return Data(stream, seq, payload, bool(flags & FLAG_LAST))
    if rtype == RecordType.BEGIN:
        if len(payload) < _BEGIN_FIXED.size:
            raise FrameError(f"BEGIN payload of {len(payload)} bytes, need at least {_BEGIN_FIXED.size}")
        total, digest, frame_size, name_len = _BEGIN_FIXED.unpack_from(payload)
        if len(payload) != _BEGIN_FIXED.size + name_len:
            raise FrameError(f"BEGIN name length {name_len} disagrees with payload length {len(payload)}")
        try:
            name = payload[_BEGIN_FIXED.size :].decode("utf-8")
        except UnicodeDecodeError as e:
            raise FrameError(f"BEGIN region name is not UTF-8: {e}") from None
        return Begin(stream, name, total, digest, frame_size)
    if rtype == RecordType.END:
        if len(payload) != 4:
            raise FrameError(f"END payload of {len(payload)} bytes, expected 4")
        return End(stream, _U32.unpack(payload)[0])
    if rtype == RecordType.RESEND:
        if not payload or len(payload) % 4:
            raise FrameError(f"RESEND payload of {len(payload)} bytes is not a non-empty multiple of 4")
        return Resend(stream, struct.unpack(f">{len(payload) // 4}I", payload))
    if rtype == RecordType.DONE:
        if payload:
            raise FrameError(f"DONE payload of {len(payload)} bytes, expected none")
        return Done(stream)
    if rtype == RecordType.ABORT:
        try:
            return Abort(stream, payload.decode("utf-8"))
        except UnicodeDecodeError as e:
            raise FrameError(f"ABORT reason is not UTF-8: {e}") from None
    raise FrameError(f"unknown record type {rtype}")


def parse_frame(frame: bytes) -> Record:
    """Parse exactly one frame, strictly; FrameError says what is wrong."""
    frame = bytes(frame)
    if len(frame) < FRAME_OVERHEAD:
        raise FrameError(f"frame of {len(frame)} bytes is shorter than the {FRAME_OVERHEAD}-byte minimum")
    magic, vt, flags, stream, seq, length, hcheck = HEADER.unpack_from(frame)
    if magic != MAGIC:
        raise FrameError(f"bad magic {magic.hex()} (expected {MAGIC.hex()})")
    if zlib.crc32(frame[:14]) & 0xFFFF != hcheck:
        raise FrameError("header check mismatch")
    if vt >> 4 != VERSION:
        raise FrameError(f"format version {vt >> 4}, expected {VERSION}")
    if length > MAX_PAYLOAD:
        raise FrameError(f"payload length {length} exceeds {MAX_PAYLOAD}")
    if len(frame) != FRAME_OVERHEAD + length:
        raise FrameError(f"frame of {len(frame)} bytes, header says {FRAME_OVERHEAD + length}")
    (crc,) = TRAILER.unpack_from(frame, HEADER_SIZE + length)
    if zlib.crc32(frame[: HEADER_SIZE + length]) != crc:
        raise FrameError("CRC-32 mismatch")
    return _record_from(vt & 0x0F, flags, stream, seq, frame[HEADER_SIZE : HEADER_SIZE + length])


def encode_image(image: bytes, *, name: str, stream: int, frame_size: int = DEFAULT_FRAME_SIZE) -> Iterator[bytes]:
    """One clean pass of a dump: BEGIN, every DATA frame, END."""
    begin = Begin.for_image(stream, name, image, frame_size)
    yield begin.encode()
    count = begin.frame_count
    view = memoryview(image)
    for i in range(count):
        yield encode_frame(RecordType.DATA, stream, i, view[i * frame_size : (i + 1) * frame_size].tobytes(),
                           FLAG_LAST if i == count - 1 else 0)
    yield End(stream, count).encode()


def _magic_prefix_at_end(buf: bytearray, start: int) -> int:
    """Length of the longest proper prefix of MAGIC that ends `buf` (not before `start`)."""
    for k in range(len(MAGIC) - 1, 0, -1):
        if len(buf) - start >= k and buf.endswith(MAGIC[:k]):
            return k
    return 0


_TYPE_NAMES = {t.value: t for t in RecordType}


class FrameDecoder:
    """Incremental decoder: feed arbitrary chunks, get records, chatter and damage reports.

    Never raises on content; buffers at most one frame (HEADER_SIZE + max_payload + 4 bytes)
    plus up to 3 bytes that may start a magic. Offsets count bytes fed since creation.
    """

    def __init__(self, *, max_payload: int = MAX_PAYLOAD) -> None:
        if not 0 <= max_payload <= 0xFFFF:
            raise FrameError(f"max_payload {max_payload} outside 0..65535")
        self._max_payload = max_payload
        self._buf = bytearray()
        self._offset = 0  # stream offset of _buf[0]
        self._need = 0  # bytes _buf must hold before a scan can make progress
        self.bytes_fed = 0
        self.records = 0
        self.corrupt = 0
        self.skipped_bytes = 0

    @property
    def buffered(self) -> int:
        """Bytes held back waiting for the rest of a frame (or of a magic)."""
        return len(self._buf)

    @property
    def max_buffer(self) -> int:
        return HEADER_SIZE + self._max_payload + TRAILER_SIZE

    def feed(self, data: bytes | bytearray | memoryview) -> list[Event]:
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise FrameError(f"FrameDecoder.feed takes bytes, not {type(data).__name__}")
        self.bytes_fed += len(data)
        self._buf += data
        if len(self._buf) < self._need:
            return []  # still waiting for the rest of a frame whose header checked out
        return self._scan(final=False)

    def flush(self) -> list[Event]:
        """Treat what is buffered as all there is: truncated frames are reported, the rest skipped."""
        return self._scan(final=True)

    def _scan(self, final: bool) -> list[Event]:
        events: list[Event] = []
        buf = self._buf
        n = len(buf)
        base = self._offset
        pos = 0  # next byte to examine
        skip = 0  # start of a run of skipped bytes not yet reported
        maxp = self._max_payload

        def flush_skip(upto: int) -> None:
            nonlocal skip
            if upto > skip:
                events.append(Skipped(base + skip, bytes(buf[skip:upto])))
                self.skipped_bytes += upto - skip
            skip = upto

        def corrupt(at: int, size: int, reason: str, rtype=None, stream=None, seq=None) -> None:
            nonlocal skip
            flush_skip(at)
            events.append(Corrupt(reason, base + at, size, rtype, stream, seq))
            self.corrupt += 1
            skip = at + size

        need = 0
        with memoryview(buf) as mv:
            while pos < n:
                i = buf.find(MAGIC, pos)
                if i < 0:
                    pos = n if final else max(pos, n - _magic_prefix_at_end(buf, pos))
                    break
                pos = i
                if n - pos < HEADER_SIZE:
                    if not final:
                        need = HEADER_SIZE
                        break
                    corrupt(pos, n - pos, f"truncated header: {n - pos} of {HEADER_SIZE} bytes at end of input")
                    pos = n
                    break
                _, vt, flags, stream, seq, length, hcheck = HEADER.unpack_from(buf, pos)
                if zlib.crc32(mv[pos : pos + 14]) & 0xFFFF != hcheck:
                    corrupt(pos, len(MAGIC), "header check mismatch after magic")
                    pos += len(MAGIC)
                    continue
                version, rtype = vt >> 4, vt & 0x0F
                if version != VERSION or rtype not in _TYPE_NAMES:
                    corrupt(pos, len(MAGIC), f"unknown format version {version} / record type {rtype}")
                    pos += len(MAGIC)
                    continue
                kind = _TYPE_NAMES[rtype]
                if length > maxp:
                    corrupt(pos, len(MAGIC), f"absurd payload length {length} (limit {maxp}) in {kind.name} header",
                            kind, stream, seq)
                    pos += len(MAGIC)
                    continue
                end = pos + HEADER_SIZE + length + TRAILER_SIZE
                if end > n:
                    if not final:
                        need = end - pos
                        break
                    j = buf.find(MAGIC, pos + len(MAGIC))
                    stop = j if j >= 0 else n
                    corrupt(pos, stop - pos,
                            f"truncated {kind.name} frame seq {seq}: {n - pos} of {end - pos} bytes before "
                            + ("the next magic" if j >= 0 else "end of input"), kind, stream, seq)
                    pos = stop
                    continue
                (crc,) = TRAILER.unpack_from(buf, end - TRAILER_SIZE)
                if zlib.crc32(mv[pos : end - TRAILER_SIZE]) != crc:
                    # A byte lost inside the payload makes the frame "swallow" the start of the
                    # next one: resynchronise on any magic inside (or straddling the end).
                    j = buf.find(MAGIC, pos + len(MAGIC), min(n, end + len(MAGIC) - 1))
                    stop = j if j >= 0 else end
                    if j < 0 and n < end + len(MAGIC) - 1:
                        # A magic may start in the last bytes of the claimed frame with its
                        # rest not yet here: resume there, so it is not skipped.
                        for p in range(max(pos + len(MAGIC), end - len(MAGIC) + 1), end):
                            if buf[p:n] == MAGIC[: n - p]:
                                stop = p
                                break
                    corrupt(pos, stop - pos, f"CRC-32 mismatch in {kind.name} frame seq {seq}", kind, stream, seq)
                    pos = stop
                    continue
                try:
                    record = _record_from(rtype, flags, stream, seq, bytes(mv[pos + HEADER_SIZE : end - TRAILER_SIZE]))
                except FrameError as e:
                    corrupt(pos, end - pos, f"malformed {kind.name} record: {e}", kind, stream, seq)
                    pos = end
                    continue
                if pos > skip:
                    flush_skip(pos)
                events.append(record)
                self.records += 1
                pos = end
                skip = end
            flush_skip(pos)
        del buf[:pos]
        self._offset = base + pos
        self._need = need
        return events
