"""Hex dumps a console prints, read back strictly: U-Boot ``md.b``, ``hexdump -C``, ``xxd``.

A management controller with no transfer protocol can still show its flash as text. This
module turns that text back into bytes, and accepts a line as data only if it is exactly what
the tool prints for the bytes it shows. Pure: no I/O. The host side (the command, the console)
is harness/interfaces/serial_transfer.py's business.

The three styles, 16 bytes a line (``STYLES``)
----------------------------------------------

``md.b`` (U-Boot ``md.b ADDR LEN``, ``print_buffer``; addresses absolute, start = ADDR)::

    00001000: 48 65 6c 6c 6f 00 01 02 03 04 05 06 07 08 09 0a  Hello...........
    00001010: 41 42 43                                         ABC

  Current U-Boot puts two spaces before the ASCII column and pads a short last line; older
  versions put four, and the oldest do not pad. The first line fixes two or four for the dump.

``hexdump-C`` (util-linux and BusyBox ``hexdump -C FILE``; offsets from the file start)::

    00000000  48 65 6c 6c 6f 00 01 02  03 04 05 06 07 08 09 0a  |Hello...........|
    00000010  00 00 00 00 00 00 00 00  00 00 00 00 00 00 00 00  |................|
    *
    00000040  41 42 43                                          |ABC|
    00000043

  ``*`` stands for "the line before repeats until the next address"; the tools print it
  instead of any full line equal to the one before, so such a line printed again is an error.
  BusyBox also prints a ``*`` that repeats nothing before a short last line that begins like
  the line before: accepted there only. The last line is the total: the end address alone.

``xxd`` (``xxd FILE``; offsets from the file start)::

    00000000: 4865 6c6c 6f00 0102 0304 0506 0708 090a  Hello...........
    00000010: 4142 43                                  ABC

In each, the ASCII column shows bytes 0x20..0x7e as themselves and others as ``.``.

What is accepted
----------------

- Every dump line's address is the next one expected, written as the tool writes it (``%08x``:
  lower case, eight digits or more when needed, no ``0x``, nothing before it). A gap, an
  overlap, a repeat or a step back is an error naming the line, the address expected and the
  address found. The lines cover [start, start + length) exactly; only the last is short.
- The line is then rendered again from the bytes it shows; if the text differs anywhere (a bad
  or upper-case hex digit, one byte too many or too few, an ASCII column that disagrees, a tab,
  trailing text) it is an error. Rendering is one-to-one, so an accepted line means one thing.
- A line that does not begin like a dump line (optional whitespace, an optional ``0x``, hex
  digits, then ``:`` for md.b and xxd, two spaces or the end of the line for hexdump-C) is
  chatter: the echoed command, a kernel log line, a blank line. It is returned with its line
  number in `HexDump.chatter`, never read as data; a dump line it displaced leaves a gap, and a
  gap is an error. A line that begins like a dump line and is not exactly one is an error.
- Bounded: `length` <= `max_length`; a line over `MAX_LINE` characters is an error; at most
  `MAX_CHATTER_LINES` lines / `MAX_CHATTER_CHARS` characters of chatter; the parser holds one
  partial line and the image. Linear in the text.

A dump shows what the board printed, nothing more: the ASCII column and the ``*`` are checked
for consistency, not for truth. Whether the image is the firmware it should be is for the
reference (its sha256) to decide. ``*`` makes one loss invisible: a line lost right before or
after it reads as a longer repeat. So no chatter may stand between a ``*`` and its neighbours
(a line mangled into chatter there is an error), and a line after ``*`` equal to the repeated
one is an error (the tool would have gone on squeezing); a whole line lost cleanly, newline
and all, still cannot be seen. Where the board can hash the file (``sha256sum``), the host
compares that too.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

STYLES = ("md.b", "hexdump-C", "xxd")
LINE_BYTES = 16
MAX_LINE = 512  # characters in one line (a dump line is at most ~80)
MAX_CHATTER_LINES = 1000
MAX_CHATTER_CHARS = 64 * 1024

# What the ASCII column shows for each byte value.
_SHOWN = bytes(b if 0x20 <= b <= 0x7E else 0x2E for b in range(256))

# "Begins like a dump line": anything that does is held to the exact layout, so that a line
# the board mangled is an error, not chatter.
_ADDRESS_COLON = re.compile(r"\s*(0[xX])?([0-9a-fA-F]+):")
_BEGINS_LIKE = {
    "md.b": _ADDRESS_COLON,
    "xxd": _ADDRESS_COLON,
    "hexdump-C": re.compile(r"\s*(0[xX])?([0-9a-fA-F]+)(?:  |\s*$)"),
}
_AFTER_ADDRESS = {"md.b": ":", "xxd": ":", "hexdump-C": "  "}
_MD_B_GAPS = (2, 4)  # spaces before the ASCII column: current U-Boot, older U-Boot


class HexDumpError(ValueError):
    """A transfer error: says which line (1-based, of the text given) and why."""

    def __init__(self, why: str, line: int | None = None) -> None:
        super().__init__(f"hex dump line {line}: {why}" if line is not None else f"hex dump: {why}")
        self.line = line
        self.why = why


@dataclass(frozen=True)
class HexDump:
    data: bytes  # exactly `length` bytes from `start`
    lines: int  # data lines parsed
    repeats: int  # hexdump -C `*` lines expanded
    chatter: tuple[tuple[int, str], ...]  # (line number, text) of lines that are not dump lines


def ascii_column(chunk: bytes) -> str:
    """The ASCII column all three tools print for `chunk`."""
    return chunk.translate(_SHOWN).decode("ascii")


def _md_b_lines(address: int, chunk: bytes, gap: int) -> tuple[str, ...]:
    """md.b's line for `chunk` with `gap` spaces before the ASCII column (short lines: padded,
    and with four spaces also unpadded, as the oldest U-Boot prints them)."""
    head = f"{address:08x}: {chunk.hex(' ')}"
    tail = " " * gap + ascii_column(chunk)
    pad = " " * (3 * (LINE_BYTES - len(chunk)))
    if gap == 4 and pad:
        return (head + pad + tail, head + tail)
    return (head + pad + tail,)


def _hexdump_c_line(address: int, chunk: bytes) -> str:
    return f"{address:08x}  {chunk[:8].hex(' '):<23}  {chunk[8:].hex(' '):<23}  |{ascii_column(chunk)}|"


def _xxd_line(address: int, chunk: bytes) -> str:
    return f"{address:08x}: {chunk.hex(' ', -2):<39}  {ascii_column(chunk)}"


def _hex_span(style: str, digits: int, n: int) -> tuple[int, int]:
    """Where the hex of an `n`-byte line lies, after an address of `digits` characters."""
    if style == "md.b":
        return digits + 1, digits + 1 + 3 * n
    if style == "hexdump-C":
        return digits + 2, digits + 2 + 3 * n - 1 + (n > 8)
    return digits + 2, digits + 2 + 2 * n + (n - 1) // 2


def _first_difference(found: str, wanted: str) -> int:
    for i, (a, b) in enumerate(zip(found, wanted)):
        if a != b:
            return i
    return min(len(found), len(wanted))


class HexDumpParser:
    """Reads one hex dump as its text arrives (`feed`), then `finish` gives the image.

    The first bad line raises `HexDumpError`, and so does every later call: a dump that went
    wrong once is not resumed.
    """

    def __init__(self, style: str, *, start: int, length: int, max_length: int = 1 << 30) -> None:
        if style not in STYLES:
            raise ValueError(f"unknown hex dump style {style!r}; one of {', '.join(STYLES)}")
        if start < 0 or length < 0:
            raise ValueError(f"start ({start}) and length ({length}) must not be negative")
        if length > max_length:
            raise HexDumpError(f"{length} bytes requested, more than the {max_length} allowed")
        self._style = style
        self._begins_like = _BEGINS_LIKE[style]
        self._after_address = _AFTER_ADDRESS[style]
        self._start = start
        self._end = start + length
        self._next = start  # the address the next dump line must show
        self._data = bytearray()
        self._partial = ""
        self._line_no = 0
        self._lines = 0
        self._repeats = 0
        self._chatter: list[tuple[int, str]] = []
        self._chatter_chars = 0
        self._gap: int | None = None  # md.b: fixed by the first line
        self._last_full: bytes | None = None  # hexdump -C: the last full line, shown or repeated
        self._star_line: int | None = None  # hexdump -C: a `*` waiting for the next address
        self._total_seen = False  # hexdump -C: the final total line
        self._error: HexDumpError | None = None
        self._result: HexDump | None = None

    @property
    def received(self) -> int:
        """Bytes accounted for so far (a `*` counts once the address after it arrived)."""
        return len(self._data)

    @property
    def complete(self) -> bool:
        """Every requested byte arrived (and, for hexdump -C, the total line that ends it)."""
        if self._next != self._end or self._star_line is not None:
            return False
        return self._style != "hexdump-C" or self._total_seen or self._end == self._start

    def feed(self, text: str) -> None:
        if self._error is not None:
            raise self._error
        if self._result is not None:
            raise ValueError("feed() after finish()")
        lines = (self._partial + text).split("\n")
        self._partial = lines.pop()
        try:
            for line in lines:
                self._take(line)
            if len(self._partial) > MAX_LINE:
                raise HexDumpError(f"a line longer than {MAX_LINE} characters", self._line_no + 1)
        except HexDumpError as e:
            self._error = e
            raise

    def finish(self) -> HexDump:
        if self._error is not None:
            raise self._error
        if self._result is not None:
            return self._result
        try:
            if self._partial:
                line, self._partial = self._partial, ""
                self._take(line)
            if self._star_line is not None:
                raise HexDumpError("`*` is not followed by an address", self._star_line)
            if self._next != self._end:
                raise HexDumpError(f"the dump stops at {self._next:08x}: {self.received} of "
                                   f"{self._end - self._start} bytes (up to {self._end:08x})")
            if not self.complete:
                raise HexDumpError(f"the final total line ({self._end:08x}) is missing")
        except HexDumpError as e:
            self._error = e
            raise
        self._result = HexDump(bytes(self._data), self._lines, self._repeats, tuple(self._chatter))
        return self._result

    # --- one line ---

    def _take(self, line: str) -> None:
        self._line_no += 1
        no = self._line_no
        if line.endswith("\r"):
            line = line[:-1]
        if len(line) > MAX_LINE:
            raise HexDumpError(f"a line longer than {MAX_LINE} characters", no)
        expected = f"{self._next:08x}"
        if (line.startswith(expected + self._after_address) and self._next < self._end
                and self._star_line is None):  # the common case, as the checks below would find it
            self._take_bytes(line, self._next, len(expected), None, no)
            return
        if line.strip() == "*":
            self._star(line, no)
            return
        m = self._begins_like.match(line)
        if m is None:
            self._keep_chatter(line, no)
            return
        if self.complete:
            raise HexDumpError(f"a dump line after the last requested byte ({self._end:08x}): data beyond "
                               f"the {self._end - self._start} bytes asked for", no)
        address = self._address(line, m, no)
        repeated = None
        if self._star_line is not None:
            repeated = self._expand_star(address, no)
        if self._style == "hexdump-C" and line == m.group(2):
            self._total(address, repeated, no)
            return
        if address != self._next:
            raise HexDumpError(self._misplaced(address), no)
        if address >= self._end:
            raise HexDumpError(f"a dump line at {address:08x}, past the last requested byte: data beyond "
                               f"the {self._end - self._start} bytes asked for", no)
        self._take_bytes(line, address, len(m.group(2)), repeated, no)

    def _take_bytes(self, line: str, address: int, digits: int, repeated: bool | None, no: int) -> None:
        """Take the data line at `address`, the next one expected and before the end."""
        n = min(LINE_BYTES, self._end - address)
        chunk = self._read_line(line, address, digits, n, no)
        if self._style == "hexdump-C":
            self._check_squeeze(chunk, repeated, no)
        self._data += chunk
        self._next += n
        self._lines += 1

    def _keep_chatter(self, line: str, no: int) -> None:
        if self._star_line is not None:  # a mangled line there would read as a longer repeat
            raise HexDumpError(f"text that is not the dump between the `*` of line {self._star_line} and the "
                               f"address that ends it: {line[:40]!r}", no)
        self._chatter.append((no, line))
        self._chatter_chars += len(line)
        if len(self._chatter) > MAX_CHATTER_LINES or self._chatter_chars > MAX_CHATTER_CHARS:
            raise HexDumpError(f"too much text that is not the dump (more than {MAX_CHATTER_LINES} lines "
                               f"or {MAX_CHATTER_CHARS} characters)", no)

    def _address(self, line: str, m: re.Match, no: int) -> int:
        """The address a dump line shows, written exactly as the tool writes it."""
        digits = m.group(2)
        value = int(digits, 16)
        if line[:1].isspace():
            raise HexDumpError(f"whitespace before the address {digits!r}", no)
        if m.group(1):
            raise HexDumpError(f"address {m.group(0).strip()!r} has a 0x prefix; {self._style} prints {value:08x}", no)
        if digits != f"{value:08x}":
            raise HexDumpError(f"address {digits!r} is not written as {self._style} writes it ({value:08x})", no)
        return value

    def _misplaced(self, address: int) -> str:
        expected = self._next
        if address > expected:
            return (f"gap: expected address {expected:08x}, found {address:08x} "
                    f"({address - expected} bytes missing)")
        return (f"overlap: expected address {expected:08x}, found {address:08x} "
                f"(goes back {expected - address} bytes)")

    def _read_line(self, line: str, address: int, digits: int, n: int, no: int) -> bytes:
        """The `n` bytes of a dump line at `address`; the line must be exactly the tool's."""
        begin, end = _hex_span(self._style, digits, n)
        span = line[begin:end]
        try:
            chunk = bytes.fromhex(span)
        except ValueError:
            bad = next((i for i, c in enumerate(span) if c not in "0123456789abcdefABCDEF "), None)
            why = (f"{span[bad]!r} at column {begin + bad + 1} is not a hex digit" if bad is not None
                   else f"the hex digits are not in pairs: {span!r}")
            raise HexDumpError(f"{why} (expected {n} bytes at {address:08x})", no) from None
        if len(chunk) != n:
            raise HexDumpError(f"the line shows {len(chunk)} bytes at {address:08x} where {self._style} "
                               f"prints {n}", no)
        if self._style == "md.b":
            gaps = (self._gap,) if self._gap is not None else _MD_B_GAPS
            wanted = tuple(w for gap in gaps for w in _md_b_lines(address, chunk, gap))
        elif self._style == "hexdump-C":
            wanted = (_hexdump_c_line(address, chunk),)
        else:
            wanted = (_xxd_line(address, chunk),)
        if line in wanted:
            if self._style == "md.b" and self._gap is None:
                self._gap = next(gap for gap in _MD_B_GAPS if line in _md_b_lines(address, chunk, gap))
            return chunk
        raise HexDumpError(self._departure(line, wanted, begin, end, n, address), no)

    def _departure(self, line: str, wanted: tuple[str, ...], begin: int, end: int, n: int, address: int) -> str:
        """Why a line that begins like a dump line is not one: where it departs from the tool's."""
        closest = max(wanted, key=lambda w: _first_difference(line, w))
        at = _first_difference(line, closest)
        ascii_begins = len(closest) - n - (self._style == "hexdump-C")  # hexdump -C closes it with |
        if at < end:
            what = f"the hex is not written as {self._style} writes {n} bytes"
            if any(c in "ABCDEF" for c in line[begin:end]):
                what += " (upper-case hex digits)"
        elif at >= len(closest):
            what = "extra text after the line"
        elif at >= ascii_begins:
            what = "the ASCII column disagrees with the hex bytes"
        else:
            what = f"the line is not laid out as {self._style} prints {n} bytes (a byte too many, or spacing)"
        return (f"{what} at {address:08x}; column {at + 1}: {line[at:at + 16]!r} where "
                f"{self._style} prints {closest[at:at + 16]!r}")

    # --- hexdump -C: `*` and the total line ---

    def _star(self, line: str, no: int) -> None:
        if self._style != "hexdump-C":
            raise HexDumpError(f"{self._style} does not print `*` lines", no)
        if line != "*":
            raise HexDumpError(f"a `*` line with other text: {line!r}", no)
        if self._star_line is not None:
            raise HexDumpError(f"a second `*` (the first is line {self._star_line})", no)
        if self._last_full is None:
            raise HexDumpError("`*` with no full line before it to repeat", no)
        if self._chatter and self._chatter[-1][0] == no - 1:  # as above: a line lost to chatter
            raise HexDumpError(f"`*` right after text that is not the dump (line {no - 1})", no)
        if self._next >= self._end:
            raise HexDumpError("`*` after the last requested byte", no)
        self._star_line = no
        self._repeats += 1

    def _expand_star(self, address: int, no: int) -> bool:
        """Fill the lines a `*` stands for, up to `address`; False if it repeats nothing."""
        star, self._star_line = self._star_line, None
        count, rest = divmod(address - self._next, LINE_BYTES)
        if address < self._next or rest:
            raise HexDumpError(f"after the `*` of line {star}, address {address:08x} is not a whole number of "
                               f"16-byte lines beyond {self._next:08x}", no)
        if address > self._end:
            raise HexDumpError(f"the `*` of line {star} repeats up to {address:08x}, past the last requested "
                               f"byte ({self._end:08x})", no)
        self._data += self._last_full * count
        self._next = address
        return count > 0

    def _check_squeeze(self, chunk: bytes, repeated: bool | None, no: int) -> None:
        """hexdump -C prints `*` for a full line equal to the one before, never the line again;
        BusyBox's `*` that repeats nothing comes only before a short last line like the last."""
        last = self._last_full
        if len(chunk) == LINE_BYTES and chunk == last:
            raise HexDumpError("this line repeats the line before it, where hexdump -C prints `*`", no)
        if repeated is False and not (len(chunk) < LINE_BYTES and last is not None and last.startswith(chunk)):
            raise HexDumpError("the `*` before this line repeats nothing", no)
        self._last_full = chunk if len(chunk) == LINE_BYTES else None

    def _total(self, address: int, repeated: bool | None, no: int) -> None:
        if repeated is False:
            raise HexDumpError("the `*` before the total line repeats nothing", no)
        if address != self._next:
            raise HexDumpError(f"the total line says the dump ends at {address:08x}, but its lines end at "
                               f"{self._next:08x}", no)
        if address != self._end:
            raise HexDumpError(f"the dump ends at {address:08x} (total line): {address - self._start} of "
                               f"{self._end - self._start} bytes (up to {self._end:08x})", no)
        self._total_seen = True


def parse_hexdump(text: str, style: str, *, start: int, length: int, max_length: int = 1 << 30) -> HexDump:
    """The image in a whole hex dump `text` (see the module docstring): one `HexDumpParser`."""
    parser = HexDumpParser(style, start=start, length=length, max_length=max_length)
    parser.feed(text)
    return parser.finish()
