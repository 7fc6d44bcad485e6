"""ZMODEM receiver, sans-I/O: bytes from the sender in, bytes to send back out.

A Linux-based BMC shell sends a file with lrzsz (`sz FILE`); attestlab receives it. This module is
the protocol alone, written from Chuck Forsberg's ZMODEM description: no I/O, no clock. The
caller reads the console, calls `feed`, writes what `feed` returns, calls `on_timeout` when the
line has been quiet for a while, and gives up (sending `abort()`) at its own deadline. When
`done`, `result()` is the file, its name and size as the sender announced them (untrusted: the
caller checks the content, e.g. against the board's `sha256sum`), and `leftover` is what came
after the session (the shell's prompt). `take_noise` gives the bytes that were no part of the
file (skipped between frames, or in a frame that failed its check): console text a board printed
during the transfer is there, for the caller to judge like any other. `Receiver` holds what
harness/formats/ymodem.py shares.

Wire format, in short
---------------------
Frames are a header, optionally followed by data subpackets.

- Header: ``ZPAD [ZPAD] ZDLE fmt`` then type (1 byte), four argument bytes and a CRC.
  fmt ``B`` (ZHEX): lowercase hex digits, CRC-16, then CR LF (and XON); what a receiver sends.
  fmt ``A`` (ZBIN): ZDLE-escaped binary, CRC-16. fmt ``C`` (ZBIN32): escaped binary, CRC-32.
  Argument bytes are a position (ZP0 = least significant) or flags (ZF0 = the last byte).
- Subpacket: escaped data, then ZDLE + an end byte, then the CRC (escaped) of data + end byte,
  CRC-16 or CRC-32 as the header before it. ZCRCG: more follow; ZCRCQ: more follow, ack it;
  ZCRCW: ack it, a header follows; ZCRCE: a header follows.
- ZDLE escaping: ZDLE (0x18) + (byte ^ 0x40), or ZRUB0/ZRUB1 for 0x7f/0xff. Raw XON/XOFF on the
  line are flow control, never data, and are dropped.

A session, as this receiver runs it::

    receiver                      sender (sz)
    ZRINIT  ─────────────┐   ┌─── "rz\\r" ZRQINIT
                         └───┼──► (either may come first; ZRQINIT is answered with ZRINIT)
                             ◄─── ZFILE + subpacket "name NUL size mtime mode ... NUL"
    ZRPOS(0) ───────────────►
                             ◄─── ZDATA(0) + subpackets ... (ZCRCQ/ZCRCW answered with ZACK)
                             ◄─── ZEOF(n)      n == bytes received, and == the announced size
    ZRINIT ─────────────────►
                             ◄─── ZFIN
    ZFIN ───────────────────►     done
                             ◄─── "OO" (over and out: tolerated, not awaited)

Fail closed
-----------
Data is accepted only from a subpacket whose CRC checks, at the offset the receiver asked for.
A damaged header or subpacket, data at another offset, garbage where a header belongs (more than
GARBAGE_LIMIT bytes) or a timeout is an error: the receiver asks again (ZRPOS at the last good
offset; ZRINIT/ZNAK before the file) and `max_errors` errors in a row end the transfer
(TransferError). Data beyond the announced size or `max_size`, a file shorter than announced at
ZEOF, a second file (TransferError: one file per session, the one the host asked for), a remote
command (ZCOMMAND), the sender's abort (ZABORT, ZFERR, ZCAN, five CAN in a row) or more than
`max_input` bytes without finishing also end it. Work is linear in the input and the receiver
holds at most one subpacket (MAX_SUBPACKET bytes) besides the file. Errors count in a row: an
accepted subpacket resets the count, so a long transfer over a noisy line survives, while a
sender that makes no progress fails after `max_errors`. A sender that announces no size is
taken at its ZEOF: then only the caller's own check of the content stands between it and a
truncated file.
"""

from __future__ import annotations

import binascii
import enum
import zlib
from abc import ABC, abstractmethod
from dataclasses import dataclass, field

ZPAD = 0x2A          # '*'
ZDLE = 0x18          # ZMODEM's escape byte; also CAN
ZBIN = 0x41          # 'A'  binary header, CRC-16
ZHEX = 0x42          # 'B'  hex header, CRC-16
ZBIN32 = 0x43        # 'C'  binary header, CRC-32
ZCRCE, ZCRCG, ZCRCQ, ZCRCW = 0x68, 0x69, 0x6A, 0x6B   # subpacket ends 'h' 'i' 'j' 'k'
SUBPACKET_ENDS = frozenset((ZCRCE, ZCRCG, ZCRCQ, ZCRCW))
ZRUB0, ZRUB1 = 0x6C, 0x6D                              # escaped 0x7f and 0xff
CAN = 0x18
XON, XOFF = 0x11, 0x13
FLOW_CONTROL = bytes((XON, XOFF, XON | 0x80, XOFF | 0x80))   # never data: dropped wherever they appear
HEADER_EOL = frozenset((0x0D, 0x8D, 0x0A, 0x8A, XON))        # what may trail a hex header

# ZRINIT flags (ZF0)
CANFDX, CANOVIO, CANBRK, CANCRY, CANLZW, CANFC32, ESCCTL, ESC8 = 0x01, 0x02, 0x04, 0x08, 0x10, 0x20, 0x40, 0x80
RECEIVER_FLAGS = CANFDX | CANOVIO | CANFC32

MAX_SUBPACKET = 8192         # lrzsz's largest (`sz -8`); a longer one is an error
MAX_NAME = 1024              # bytes of a file name
GARBAGE_LIMIT = 128 * 1024   # bytes where a header belongs, before it counts as an error
# After an error the sender may have this much in flight (pipe and socket buffers) before it
# sees our ZRPOS; those bytes are skipped as garbage, so the limit is generous.
CANCEL_RUN = 5               # this many CAN in a row: the sender cancelled
ABORT_SEQUENCE = bytes([CAN]) * 8 + b"\x08" * 10   # what lrzsz and rzsz send to cancel
LEFTOVER_LIMIT = 64 * 1024   # bytes after the session kept for the caller (the shell's prompt)
# Bytes that were no part of the file (skipped between frames, or in a frame that failed its
# check) may be console text a board printed mid-transfer: kept for the caller to judge, all
# of them where the input is bounded (`max_input`), else up to this many (`noise_lost` counts
# the rest). One error's data in flight alone can be GARBAGE_LIMIT and more.
NOISE_LIMIT = 1 << 20


class FrameType(enum.IntEnum):
    ZRQINIT = 0
    ZRINIT = 1
    ZSINIT = 2
    ZACK = 3
    ZFILE = 4
    ZSKIP = 5
    ZNAK = 6
    ZABORT = 7
    ZFIN = 8
    ZRPOS = 9
    ZDATA = 10
    ZEOF = 11
    ZFERR = 12
    ZCRC = 13
    ZCHALLENGE = 14
    ZCOMPL = 15
    ZCAN = 16
    ZFREECNT = 17
    ZCOMMAND = 18
    ZSTDERR = 19


def frame_name(frame_type: int) -> str:
    try:
        return FrameType(frame_type).name
    except ValueError:
        return f"frame type {frame_type}"


class TransferError(ValueError):
    """The sender broke the protocol or the limits; the transfer failed. Says why."""


@dataclass(frozen=True)
class ReceivedFile:
    name: str                 # as the sender named it (untrusted text, escaped for display by callers)
    size: int | None          # the size the sender announced (None if it did not)
    data: bytes
    protocol: str             # "zmodem" | "ymodem"
    stats: dict[str, int] = field(default_factory=dict)


def crc16(data: bytes, crc: int = 0) -> int:
    """CRC-16/XMODEM (poly 0x1021, init 0), as ZMODEM and YMODEM use it."""
    return binascii.crc_hqx(data, crc)


def decode_name(raw: bytes) -> str:
    """A file name from the wire as text; bytes that are not UTF-8 stay visible as \\xNN."""
    return raw.decode("utf-8", "backslashreplace")


def parse_file_info(info: bytes, where: str) -> tuple[bytes, int | None]:
    """Name and announced size from "name NUL [size [mtime mode ...]] NUL ...".

    The same layout serves ZMODEM's ZFILE subpacket and YMODEM's block 0. `where` names the
    record in errors.
    """
    nul = info.find(b"\0")
    if nul < 0:
        raise TransferError(f"{where}: file name not terminated by NUL")
    name = info[:nul]
    if len(name) > MAX_NAME:
        raise TransferError(f"{where}: file name of {len(name)} bytes is longer than {MAX_NAME}")
    if not name:
        raise TransferError(f"{where}: empty file name")
    fields = info[nul + 1:].split(b"\0", 1)[0].split()
    if not fields:
        return name, None
    if not fields[0].isdigit():
        raise TransferError(f"{where}: size {fields[0][:32]!r} is not a decimal number")
    if len(fields[0]) > 20:
        raise TransferError(f"{where}: size of more than 20 digits")
    return name, int(fields[0])


def check_announced(size: int | None, max_size: int, where: str) -> None:
    if size is not None and size > max_size:
        raise TransferError(f"{where}: announced size {size} exceeds the limit of {max_size} bytes")


# --- encoders: what a receiver sends, and (for tests and simulated senders) what a sender sends ---

def position(offset: int) -> bytes:
    """Header argument bytes for a file offset (ZP0 is the least significant byte)."""
    return offset.to_bytes(4, "little")


def hex_header(frame_type: int, arg: bytes = b"\0\0\0\0") -> bytes:
    """A ZHEX header; XON follows except after ZACK and ZFIN, as the spec has it."""
    body = bytes([frame_type]) + arg
    text = (body + crc16(body).to_bytes(2, "big")).hex().encode("ascii")
    tail = b"\r\x8a" if frame_type in (FrameType.ZACK, FrameType.ZFIN) else b"\r\x8a\x11"
    return b"**\x18B" + text + tail



# The sender's ZFIN again after the session ended (ours crossed it), as lrzsz sends it: a hex header.
_ZFIN_AGAIN = hex_header(FrameType.ZFIN)[:-2]

def escape(data: bytes, *, controls: bool = False) -> bytes:
    """ZDLE-escape as a sender does: ZDLE, DLE, XON, XOFF (and high-bit forms), CR after '@';
    every control byte too when `controls`."""
    out = bytearray()
    prev = 0
    for b in data:
        low = b & 0x7F
        if (low in (ZDLE, 0x10, XON, XOFF) or (low == 0x0D and (prev & 0x7F) == 0x40)
                or (controls and low < 0x20)):
            out += bytes((ZDLE, b ^ 0x40))
        else:
            out.append(b)
        prev = b
    return bytes(out)


def binary_header(frame_type: int, arg: bytes = b"\0\0\0\0", *, crc32: bool = True) -> bytes:
    body = bytes([frame_type]) + arg
    if crc32:
        return b"*\x18C" + escape(body + zlib.crc32(body).to_bytes(4, "little"))
    return b"*\x18A" + escape(body + crc16(body).to_bytes(2, "big"))


def subpacket(data: bytes, end: int, *, crc32: bool = True, controls: bool = False) -> bytes:
    tail = bytes([end])
    crc = (zlib.crc32(tail, zlib.crc32(data)).to_bytes(4, "little") if crc32
           else crc16(tail, crc16(data)).to_bytes(2, "big"))
    return escape(data, controls=controls) + bytes((ZDLE, end)) + escape(crc, controls=controls)


_PENDING, _BAD = -1, -2   # what _escaped says when a byte completes no value


def _unescape(b: int) -> int | None:
    """The byte a ZDLE escape stands for; None for a subpacket end or an invalid escape."""
    if b == ZRUB0:
        return 0x7F
    if b == ZRUB1:
        return 0xFF
    if b & 0x60 == 0x40:
        return b ^ 0x40
    return None


def cancel_run_end(data: bytes, carried: int, run: int) -> int | None:
    """Index in `data` just past the `run`-th CAN in a row (counting `carried` CANs that ended
    the previous input), or None."""
    lead = len(data) - len(data.lstrip(b"\x18"))
    if carried and carried + lead >= run:
        return run - carried
    i = data.find(bytes([CAN]) * run)
    return None if i < 0 else i + run


def trailing_cans(data: bytes, carried: int) -> int:
    tail = len(data) - len(data.rstrip(b"\x18"))
    return carried + tail if tail == len(data) else tail


class _Lex(enum.Enum):
    HUNT = "hunt"            # between frames: skipping to ZPAD ZDLE
    FORMAT = "format"        # after ZPAD ZDLE: the header's format byte
    HEADER = "header"        # the header's bytes
    SUBPACKET = "subpacket"  # a data subpacket after a header


class Phase(enum.Enum):
    """Where a session stands; the same four for ZMODEM and YMODEM."""

    WAITING = "waiting"      # before the file is announced (ZFILE, YMODEM block 0)
    FILE = "file"            # the file's data, until its end (ZEOF, EOT)
    END = "end"              # the end of the file accepted: waiting for the session's end
    DONE = "done"            # the session ended (ZFIN exchanged, the empty block 0 acknowledged)


class Receiver(ABC):
    """What every receiver here shares: limits, error counting, the API around the protocol.

    A subclass parses in `_consume`, says what to send when asking again in `_ask_again`, and
    appends its replies to `self._out`. Failures stick: once a TransferError is raised, `feed`
    and `on_timeout` raise it again.
    """

    protocol = ""
    garbage_limit = 0          # bytes where a frame should start, before they count as an error

    def __init__(self, *, max_size: int, max_errors: int, max_input: int | None) -> None:
        if max_size < 0:
            raise ValueError("max_size must be >= 0")
        if max_errors < 1:
            raise ValueError("max_errors must be at least 1")
        if max_input is not None and max_input < 0:
            raise ValueError("max_input must be >= 0")
        self.max_size = max_size
        self.max_errors = max_errors
        self.max_input = max_input
        self._phase = Phase.WAITING
        self._data = bytearray()
        self._name = b""
        self._size: int | None = None
        self._errors = 0                 # errors in a row
        self._garbage = 0                # bytes skipped since the last progress or error
        self._leftover = bytearray()
        self._noise = bytearray()
        self.noise_lost = 0              # bytes of noise beyond NOISE_LIMIT, not kept
        self._failed: str | None = None
        self._out = bytearray()
        self._stats = {"bytes_in": 0, "crc_errors": 0, "retries": 0, "errors": 0, "timeouts": 0,
                       "garbage": 0, "leftover": 0}

    # --- the API ---

    def feed(self, data: bytes) -> bytes:
        """Bytes from the sender; returns the bytes to send back (maybe none)."""
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"feed takes bytes, not {type(data).__name__}")
        data = bytes(data)
        if self.done:
            self._after_done(data)
            return b""
        self._check_failed()
        self._out = bytearray()
        end = len(data)
        over = self.max_input is not None and self._stats["bytes_in"] + end > self.max_input
        if over:
            end = self.max_input - self._stats["bytes_in"]
        try:
            pos = self._consume(data, end)
            self._stats["bytes_in"] += pos
            if self.done:
                self._after_done(data[pos:])
            elif over:
                raise TransferError(f"more than max_input={self.max_input} bytes without finishing "
                                    f"({self._progress()})")
        except TransferError as exc:
            self._failed = str(exc)
            raise
        return bytes(self._out)

    def on_timeout(self) -> bytes:
        """The line was quiet: drop any partial frame and ask again. Counts as an error."""
        if self.done:
            return b""
        self._check_failed()
        self._out = bytearray()
        self._stats["timeouts"] += 1
        self._drop_partial()
        try:
            self._error("timeout: the sender went quiet", self._ask_again())
        except TransferError as exc:
            self._failed = str(exc)
            raise
        return bytes(self._out)

    @property
    def done(self) -> bool:
        return self._phase is Phase.DONE

    @property
    def received(self) -> int:
        """Bytes of file data accepted so far."""
        return len(self._data) if self._size is None else min(len(self._data), self._size)

    @property
    def expected(self) -> int | None:
        """The size the sender announced, once it has."""
        return self._size

    @property
    def leftover(self) -> bytes:
        """What the sender's side wrote after the session (e.g. the shell's prompt), for the console."""
        return bytes(self._leftover)

    @property
    def stats(self) -> dict[str, int]:
        return dict(self._stats)

    def result(self) -> ReceivedFile:
        if not self.done:
            raise TransferError(f"the transfer has not finished ({self._progress()})")
        return ReceivedFile(decode_name(self._name), self._size, bytes(self._data), self.protocol,
                            dict(self._stats))

    def abort(self) -> bytes:
        """What to send when the host gives up."""
        return ABORT_SEQUENCE

    def take_noise(self) -> bytes:
        """The bytes received that were no part of the file, since the last call (console text a
        board printed around or inside the transfer, line noise); the caller judges them as text."""
        noise, self._noise = bytes(self._noise), bytearray()
        return noise

    # --- for subclasses ---

    @abstractmethod
    def _consume(self, data: bytes, end: int) -> int:
        """Parse data[:end]; return how far (less than `end` only once the session is done)."""

    @abstractmethod
    def _ask_again(self) -> bytes:
        """The request that makes the sender repeat what we lack."""

    def _drop_partial(self) -> None:
        """Forget a frame that will never be completed (the line went quiet)."""

    def _after_done(self, rest: bytes) -> None:
        self._keep(rest)

    # --- bookkeeping ---

    def _check_failed(self) -> None:
        if self._failed:
            raise TransferError(self._failed)

    def _error(self, reason: str, reply: bytes) -> None:
        """One more error in a row: answer `reply`, or fail at max_errors."""
        self._errors += 1
        self._stats["errors"] += 1
        self._garbage = 0
        if self._errors >= self.max_errors:
            raise TransferError(f"{reason}; {self._errors} errors in a row (max_errors={self.max_errors}), "
                                f"{self._progress()}")
        self._out += reply
        self._stats["retries"] += 1

    def _progressed(self) -> None:
        self._errors = 0
        self._garbage = 0

    def _progress(self) -> str:
        of = f" of {self._size}" if self._size is not None else ""
        return f"{len(self._data)}{of} bytes received"

    def _skip(self, count: int, skipped: bytes = b"") -> None:
        """`count` bytes that belong to no frame (`skipped`, where they can be text); too many in
        a row count as an error."""
        self._keep_noise(skipped)
        self._stats["garbage"] += count
        self._garbage += count
        if self._garbage > self.garbage_limit:
            self._error(f"no valid frame in {self.garbage_limit} bytes", self._ask_again())

    def _keep_noise(self, data: bytes) -> None:
        room = (NOISE_LIMIT if self.max_input is None else self.max_input) - len(self._noise)
        self._noise += data[:room]
        self.noise_lost += max(0, len(data) - room)

    def _keep(self, rest: bytes) -> None:
        self._leftover += rest[:LEFTOVER_LIMIT - len(self._leftover)]
        self._stats["leftover"] += len(rest)


class ZmodemReceiver(Receiver):
    """Receives exactly one file from a ZMODEM sender; see the module docstring."""

    protocol = "zmodem"
    garbage_limit = GARBAGE_LIMIT

    def __init__(self, *, max_size: int = 1 << 30, max_errors: int = 10, max_input: int | None = None,
                 escape_controls: bool = False) -> None:
        if max_size > 0xFFFFFFFF:
            raise ValueError(f"max_size {max_size} above 2**32-1 (ZMODEM offsets are 32-bit)")
        super().__init__(max_size=max_size, max_errors=max_errors, max_input=max_input)
        # ZRINIT's ESCCTL asks the sender to escape every control byte (for consoles that eat some)
        self._flags = RECEIVER_FLAGS | (ESCCTL if escape_controls else 0)
        self._lex = _Lex.HUNT
        self._last = -1                  # the byte before the current position (for ZPAD ZDLE)
        self._fmt = 0
        self._hdr = bytearray()          # header bytes decoded so far
        self._esc = False                # a ZDLE was read; its escape byte is next
        self._sub = bytearray()          # subpacket data decoded so far
        self._sub_for = FrameType.ZDATA  # the header the subpacket belongs to
        self._sub_crc32 = False
        self._sub_end: int | None = None
        self._sub_crc = bytearray()
        self._skip_eol = False
        self._nak_pending = False        # asked again; no valid header since
        self._rqinit_answered = False
        self._sinit_acked = False
        self._stale_eof_free = True      # one ZEOF at a stale offset may cross our ZRPOS
        self._cans = 0                   # CAN bytes that ended the input so far
        self._trail = 2                  # after ZFIN: up to two 'O' of "OO" still swallowed
        self._stats.update(headers=0, subpackets=0, bad_headers=0)

    def start(self) -> bytes:
        """ZRINIT: the receiver may speak first; lrzsz's sz also takes an early ZRINIT."""
        return self._zrinit()

    def _consume(self, data: bytes, end: int) -> int:
        cancel = cancel_run_end(data[:end], self._cans, CANCEL_RUN)
        if cancel is not None:
            end = min(end, max(0, cancel - CANCEL_RUN))   # parse up to the run, then stop
        pos = self._parse(data, 0, end)
        if cancel is not None and not self.done:
            raise TransferError(f"the sender cancelled the transfer ({CANCEL_RUN} CAN in a row, "
                                f"{self._progress()})")
        self._cans = trailing_cans(data[:end], self._cans)
        return pos

    def _drop_partial(self) -> None:
        if self._lex is _Lex.SUBPACKET:
            self._keep_noise(bytes(self._sub))
            self._sub.clear()
        self._lex = _Lex.HUNT
        self._esc = False

    # --- replies ---

    def _zrinit(self) -> bytes:
        return hex_header(FrameType.ZRINIT, bytes((0, 0, 0, self._flags)))   # buffer size 0: stream

    def _send(self, frame_type: int, arg: bytes = b"\0\0\0\0") -> None:
        self._out += hex_header(frame_type, arg)

    def _ask_again(self, frame_type: int | None = None) -> bytes:
        """Where we are, in the terms of the phase (or `frame_type`)."""
        self._nak_pending = True
        self._stale_eof_free = True
        if frame_type is not None:
            return hex_header(frame_type)
        if self._phase is Phase.FILE:
            return hex_header(FrameType.ZRPOS, position(len(self._data)))
        return self._zrinit()

    # --- the lexer: frames out of bytes ---

    def _parse(self, data: bytes, pos: int, end: int) -> int:
        while pos < end and not self.done:
            if self._lex is _Lex.HUNT:
                pos = self._hunt(data, pos, end)
            elif self._lex is _Lex.FORMAT:
                pos = self._format(data, pos)
            elif self._lex is _Lex.HEADER:
                pos = self._header(data, pos, end)
            else:
                pos = self._subpacket(data, pos, end)
        return pos

    def _hunt(self, data: bytes, pos: int, end: int) -> int:
        i = data.find(ZDLE, pos, end)
        if i < 0:
            self._last = data[end - 1]
            self._skip(end - pos, data[pos:end])
            return end
        before = data[i - 1] if i > pos else self._last
        self._last = ZDLE
        if before & 0x7F == ZPAD:
            self._skip(i - pos, data[pos:i])
            self._lex = _Lex.FORMAT
        else:
            self._skip(i + 1 - pos, data[pos:i])
        return i + 1

    def _format(self, data: bytes, pos: int) -> int:
        fmt = data[pos] & 0x7F
        if fmt not in (ZBIN, ZHEX, ZBIN32):
            self._lex = _Lex.HUNT      # not a header: hunt on from this byte
            return pos
        self._fmt = fmt
        self._hdr.clear()
        self._esc = False
        self._lex = _Lex.HEADER
        self._last = fmt
        return pos + 1

    def _header(self, data: bytes, pos: int, end: int) -> int:
        if self._fmt == ZHEX:
            while pos < end and len(self._hdr) < 14:
                b = data[pos] & 0x7F
                if b in (XON, XOFF):
                    pos += 1
                    continue
                if not (0x30 <= b <= 0x39 or 0x61 <= b <= 0x66 or 0x41 <= b <= 0x46):
                    self._bad_header(f"hex header: {bytes([data[pos]])!r} is not a hex digit")
                    return pos    # hunt on from this byte: it may start the next header
                self._hdr.append(b)
                pos += 1
            if len(self._hdr) == 14:
                raw = bytes.fromhex(self._hdr.decode("ascii"))
                self._header_done(raw[:5], int.from_bytes(raw[5:], "big") == crc16(raw[:5]))
            return pos
        need = 9 if self._fmt == ZBIN32 else 7
        while pos < end and len(self._hdr) < need:
            b = data[pos]
            pos += 1
            value = self._escaped(b, ends=False)
            if value == _BAD:
                self._bad_header(f"binary header: invalid escape ZDLE {bytes([b])!r}")
                return pos
            if value != _PENDING:
                self._hdr.append(value)
        if len(self._hdr) == need:
            body = bytes(self._hdr[:5])
            if self._fmt == ZBIN32:
                ok = int.from_bytes(self._hdr[5:], "little") == zlib.crc32(body)
            else:
                ok = int.from_bytes(self._hdr[5:], "big") == crc16(body)
            self._header_done(body, ok)
        return pos

    def _escaped(self, b: int, *, ends: bool) -> int:
        """One byte of ZDLE-escaped input: the value it completes, _PENDING (a ZDLE, flow
        control) or _BAD (an invalid escape); with `ends`, a subpacket end as 0x100 | end."""
        if self._esc:
            if b in FLOW_CONTROL:
                return _PENDING
            self._esc = False
            if ends and b in SUBPACKET_ENDS:
                return 0x100 | b
            value = _unescape(b)
            return _BAD if value is None else value
        if b == ZDLE:
            self._esc = True
            return _PENDING
        return _PENDING if b in FLOW_CONTROL else b

    def _bad_header(self, reason: str) -> None:
        self._stats["bad_headers"] += 1
        self._lex = _Lex.HUNT
        self._last = -1
        if self._nak_pending:
            # Already asked again: what arrives until the answer (data in flight) is garbage.
            self._skip(len(self._hdr) + 3)
        else:
            self._error(reason, self._ask_again())

    def _header_done(self, body: bytes, crc_ok: bool) -> None:
        if not crc_ok:
            self._stats["crc_errors"] += 1
            self._bad_header(f"header CRC mismatch (type byte {body[0]})")
            return
        self._stats["headers"] += 1
        self._lex = _Lex.HUNT
        self._last = -1
        self._nak_pending = False
        self._on_header(body[0], body[1:5])

    def _expect_subpacket(self, for_type: FrameType) -> None:
        self._lex = _Lex.SUBPACKET
        self._sub_for = for_type
        self._sub_crc32 = self._fmt == ZBIN32
        self._skip_eol = self._fmt == ZHEX
        self._sub.clear()
        self._sub_crc.clear()
        self._sub_end = None
        self._esc = False

    def _subpacket(self, data: bytes, pos: int, end: int) -> int:
        if self._skip_eol:
            while pos < end and data[pos] in HEADER_EOL:
                pos += 1
            if pos == end:
                return pos
            self._skip_eol = False
        while pos < end:
            if self._sub_end is not None or self._esc:
                b = data[pos]
                pos += 1
                value = self._escaped(b, ends=self._sub_end is None)
                if value == _PENDING:
                    continue
                if value == _BAD:
                    self._bad_subpacket(f"invalid escape ZDLE {bytes([b])!r}")
                    return pos
                if value > 0xFF:
                    self._sub_end = value & 0xFF
                elif self._sub_end is None:
                    if len(self._sub) == MAX_SUBPACKET:
                        self._bad_subpacket(f"subpacket longer than {MAX_SUBPACKET} bytes")
                        return pos
                    self._sub.append(value)
                else:
                    self._sub_crc.append(value)
                    if len(self._sub_crc) == (4 if self._sub_crc32 else 2):
                        self._subpacket_done()
                        return pos
                continue
            # The bulk: literal bytes up to the next ZDLE, in one slice.
            i = data.find(ZDLE, pos, end)
            stop = end if i < 0 else i
            chunk = data[pos:stop].translate(None, FLOW_CONTROL)
            if len(self._sub) + len(chunk) > MAX_SUBPACKET:
                self._bad_subpacket(f"subpacket longer than {MAX_SUBPACKET} bytes")
                return pos
            self._sub += chunk
            if i < 0:
                return end
            if i + 1 < end and data[i + 1] & 0x60 == 0x40 and len(self._sub) < MAX_SUBPACKET:
                self._sub.append(data[i + 1] ^ 0x40)     # the common escape, inline
                pos = i + 2
                continue
            self._esc = True
            pos = i + 1
        return pos

    def _bad_subpacket(self, reason: str) -> None:
        self._keep_noise(bytes(self._sub))  # (empty after a CRC mismatch: kept there)
        self._sub.clear()
        self._lex = _Lex.HUNT
        self._last = -1
        self._esc = False
        self._stats["crc_errors"] += reason.startswith("CRC")
        nak = FrameType.ZNAK if self._sub_for in (FrameType.ZFILE, FrameType.ZSINIT) else None
        self._error(f"{self._sub_for.name} subpacket: {reason}", self._ask_again(nak))

    def _subpacket_done(self) -> None:
        data, end = bytes(self._sub), self._sub_end
        tail = bytes([end])
        if self._sub_crc32:
            ok = int.from_bytes(self._sub_crc, "little") == zlib.crc32(tail, zlib.crc32(data))
        else:
            ok = int.from_bytes(self._sub_crc, "big") == crc16(tail, crc16(data))
        self._sub.clear()
        if not ok:
            self._keep_noise(data)  # (a console line printed into a subpacket is here)
            self._bad_subpacket(f"CRC mismatch at offset {len(self._data)}")
            return
        self._stats["subpackets"] += 1
        self._lex = _Lex.HUNT
        self._last = -1
        self._on_subpacket(data, end)

    # --- the protocol: what each header and subpacket means here ---

    def _on_header(self, frame_type: int, arg: bytes) -> None:
        offset = int.from_bytes(arg, "little")
        phase = self._phase
        if frame_type == FrameType.ZRQINIT and phase is Phase.WAITING:
            if self._rqinit_answered:
                self._error("ZRQINIT again: our ZRINIT was lost", self._ask_again())
            else:
                self._rqinit_answered = True
                self._progressed()
                self._out += self._zrinit()
        elif frame_type == FrameType.ZRINIT and phase is Phase.WAITING:
            self._skip(16)     # our own ZRINIT echoed by the shell before sz set the tty raw
        elif frame_type == FrameType.ZSINIT and phase is Phase.WAITING:
            self._expect_subpacket(FrameType.ZSINIT)
        elif frame_type == FrameType.ZFILE and (phase is Phase.WAITING
                                                or (phase is Phase.FILE and not self._data)):
            self._expect_subpacket(FrameType.ZFILE)   # again in FILE: our ZRPOS(0) was lost
        elif frame_type == FrameType.ZFILE:
            raise TransferError(f"the sender offered a second file after {decode_name(self._name)!r} "
                                f"({self._progress()}); one file per session")
        elif frame_type == FrameType.ZDATA and phase is Phase.FILE:
            if offset == len(self._data):
                self._expect_subpacket(FrameType.ZDATA)
            else:
                self._error(f"ZDATA at offset {offset}, expected {len(self._data)}", self._ask_again())
        elif frame_type == FrameType.ZEOF and phase is Phase.FILE:
            self._on_eof(offset)
        elif frame_type == FrameType.ZEOF and phase is Phase.END and offset == len(self._data):
            self._error("ZEOF again: our ZRINIT was lost", self._ask_again())
        elif frame_type == FrameType.ZFIN and phase is Phase.END:
            self._send(FrameType.ZFIN)
            self._phase = Phase.DONE
        elif frame_type == FrameType.ZFIN:
            if phase is Phase.WAITING:
                raise TransferError("the sender ended the session before sending a file")
            raise TransferError(f"the sender ended the session before the end of the file ({self._progress()})")
        elif frame_type in (FrameType.ZABORT, FrameType.ZFERR, FrameType.ZCAN):
            raise TransferError(f"the sender aborted the transfer ({frame_name(frame_type)}, {self._progress()})")
        elif frame_type == FrameType.ZCOMMAND:
            raise TransferError("the sender asked the receiver to run a command (ZCOMMAND); refused")
        else:
            self._error(f"unexpected header {frame_name(frame_type)} in phase {phase.value}", self._ask_again())

    def _on_eof(self, offset: int) -> None:
        if offset != len(self._data):
            # A ZEOF sent before our ZRPOS reached the sender: ignore it, as the spec says; the
            # sender resends from our offset. A second one without a ZRPOS between is garbage.
            if not self._stale_eof_free:
                self._skip(32)
            self._stale_eof_free = False
            return
        if self._size is not None and offset != self._size:
            raise TransferError(f"ZEOF at {offset}: the file is shorter than the {self._size} bytes announced")
        self._phase = Phase.END
        self._progressed()
        self._out += self._zrinit()

    def _on_subpacket(self, data: bytes, end: int) -> None:
        if self._sub_for is FrameType.ZDATA:
            self._on_data(data, end)
        elif self._sub_for is FrameType.ZFILE:
            self._on_file_info(data)
        else:   # ZSINIT: the attention string, which a receiver that never interrupts does not need
            if self._sinit_acked:
                self._error("ZSINIT again: our ZACK was lost", self._ask_again(FrameType.ZACK))
            else:
                self._sinit_acked = True
                self._progressed()
                self._send(FrameType.ZACK, position(1))

    def _on_file_info(self, info: bytes) -> None:
        name, size = parse_file_info(info, "ZFILE")
        check_announced(size, self.max_size, "ZFILE")
        if self._phase is Phase.FILE:
            if (name, size) != (self._name, self._size):
                raise TransferError(f"the sender offered a second file {decode_name(name)!r} "
                                    f"before sending {decode_name(self._name)!r}; one file per session")
            self._error("ZFILE again: our ZRPOS was lost", self._ask_again())
            return
        self._name, self._size = name, size
        self._phase = Phase.FILE
        self._progressed()
        self._send(FrameType.ZRPOS, position(0))

    def _on_data(self, data: bytes, end: int) -> None:
        total = len(self._data) + len(data)
        if self._size is not None and total > self._size:
            raise TransferError(f"data beyond the announced size: {total} > {self._size} bytes")
        if total > self.max_size:
            raise TransferError(f"data beyond the limit: {total} > max_size={self.max_size} bytes")
        self._data += data
        self._progressed()
        self._stale_eof_free = True
        if end in (ZCRCQ, ZCRCW):
            self._send(FrameType.ZACK, position(len(self._data)))
        if end in (ZCRCG, ZCRCQ):
            self._expect_subpacket(FrameType.ZDATA)

    # --- after the session ---

    def _after_done(self, rest: bytes) -> None:
        """Swallow what ends the session (the header's CR LF, "OO"); keep the rest for the caller."""
        pos = 0
        while pos < len(rest) and self._trail:
            b = rest[pos]
            if self._trail == 2 and rest.startswith(_ZFIN_AGAIN, pos):
                pos += len(_ZFIN_AGAIN)  # the sender's ZFIN again (ours crossed it): the session is over
                self._stats["retries"] += 1
                continue
            if b == 0x4F:
                self._trail -= 1
            elif not (b in HEADER_EOL and self._trail == 2):
                self._trail = 0
                break
            pos += 1
        self._keep(rest[pos:])
