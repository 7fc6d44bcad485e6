"""YMODEM receiver (lrzsz `sz --ymodem`, `sb`), sans-I/O: bytes in, bytes to send back out.

The same shape as harness/formats/zmodem.py (the caller drives both alike): `start`, `feed`,
`on_timeout`, `done`, `result`, `abort`. Written from the YMODEM description (Forsberg's
ymodem.txt), CRC-16 mode only.

A session, as this receiver runs it::

    receiver          sender
    "C"  ───────────►
                 ◄─── block 0: SOH 00 FF + 128 bytes "name NUL size [mtime mode ...] NUL" + CRC
    ACK "C" ────────►
                 ◄─── block 1, 2, ... 255, 0, 1 ...: STX (1024 bytes) or SOH (128), n, 255-n, data, CRC
    ACK ────────────►     (each)
                 ◄─── EOT
    NAK ────────────►     (a lone 0x04 may be noise: the sender confirms by sending it again)
                 ◄─── EOT
    ACK "C" ────────►
                 ◄─── block 0 with an empty name: the batch ends
    ACK ────────────►     done

Each block carries a CRC-16 (big-endian) over its data. The last block is padded (with 0x1A by
lrzsz); the data is cut to the size block 0 announced, or kept whole, padding and all, when no
size was announced (stats["padding_kept"] = 1).

Fail closed
-----------
A block is accepted only if its number, the number's complement and its CRC check, and it is the
next in sequence. A damaged block or a timeout is answered with NAK ("C" before the file) and
counts as an error; a repeated block (our ACK was lost) is ACKed again, ignored and counts as an
error; `max_errors` errors in a row end the transfer (TransferError). So do: a block out of
sequence, data beyond the announced size or `max_size`, a file shorter than announced at EOT,
a second file, two CAN in a row where a block should start, an empty batch, or more than
`max_input` bytes without finishing. The receiver holds one block besides the file.
"""

from __future__ import annotations

import re

from harness.formats.zmodem import (
    Phase,
    Receiver,
    TransferError,
    check_announced,
    crc16,
    decode_name,
    parse_file_info,
)

SOH, STX, EOT, ACK, NAK, CAN = 0x01, 0x02, 0x04, 0x06, 0x15, 0x18
CRC_MODE = b"C"                  # "send blocks with CRC-16"
PAD = 0x1A                       # what lrzsz pads the last block with (CP/M end of file)
BLOCK_SIZES = {SOH: 128, STX: 1024}
BLOCK_OVERHEAD = 5               # header byte, number, complement, CRC-16
GARBAGE_LIMIT = 8192             # bytes where a block should start, before it counts as an error
_BLOCK_START = re.compile(b"[\x01\x02\x04\x18]")


def block(number: int, data: bytes, *, size: int | None = None, pad: int = PAD) -> bytes:
    """One block as a sender writes it (for tests and simulated senders)."""
    size = size or (128 if len(data) <= 128 else 1024)
    if len(data) > size:
        raise ValueError(f"{len(data)} bytes do not fit a {size}-byte block")
    body = data + bytes([pad]) * (size - len(data))
    head = STX if size == 1024 else SOH
    return bytes((head, number & 0xFF, 0xFF - (number & 0xFF))) + body + crc16(body).to_bytes(2, "big")


def header_block(name: bytes, size: int | None) -> bytes:
    """Block 0: "name NUL size NUL", NUL-padded; an empty name ends the batch."""
    info = name + b"\0" + (str(size).encode() if size is not None else b"") if name else b""
    return block(0, info, size=128 if len(info) < 128 else 1024, pad=0)


class YmodemReceiver(Receiver):
    """Receives exactly one file from a YMODEM sender; see the module docstring."""

    protocol = "ymodem"
    garbage_limit = GARBAGE_LIMIT

    def __init__(self, *, max_size: int = 1 << 30, max_errors: int = 10, max_input: int | None = None) -> None:
        super().__init__(max_size=max_size, max_errors=max_errors, max_input=max_input)
        self._blk = bytearray()          # the block being read, header byte first
        self._need = 0                   # its length on the wire; 0: between blocks
        self._can = False                # the last byte between blocks was a CAN
        self._eot = False                # one EOT seen and NAKed
        self._expect = 1                 # the next block number (mod 256)
        self._stats.update(blocks=0, bad_blocks=0, duplicates=0, padding=0, padding_kept=0)

    def start(self) -> bytes:
        return CRC_MODE

    def _consume(self, data: bytes, end: int) -> int:
        pos = 0
        while pos < end and not self.done:
            pos = self._read_block(data, pos, end) if self._need else self._between(data, pos, end)
        return pos

    def _ask_again(self) -> bytes:
        return bytes([NAK]) if self._phase is Phase.FILE else CRC_MODE

    def _drop_partial(self) -> None:
        self._keep_noise(bytes(self._blk))
        self._need = 0
        self._blk.clear()

    # --- the lexer ---

    def _between(self, data: bytes, pos: int, end: int) -> int:
        """Between blocks: skip to a block's first byte, EOT, or a CAN."""
        m = _BLOCK_START.search(data, pos, end)
        stop = m.start() if m else end
        if stop > pos:
            self._can = False
            self._skip(stop - pos, data[pos:stop])
        if not m:
            return end
        b = data[stop]
        if b == CAN:
            if self._can:
                raise TransferError(f"the sender cancelled the transfer (CAN CAN, {self._progress()})")
            self._can = True
            self._skip(1)
        elif b == EOT:
            self._can = False
            self._on_eot()
        else:
            self._can = False
            self._need = BLOCK_SIZES[b] + BLOCK_OVERHEAD
            self._blk = bytearray((b,))
        return stop + 1

    def _read_block(self, data: bytes, pos: int, end: int) -> int:
        take = min(end - pos, self._need - len(self._blk))
        self._blk += data[pos:pos + take]
        if len(self._blk) == self._need:
            self._need = 0
            self._on_block(bytes(self._blk))
            self._blk.clear()
        return pos + take

    # --- the protocol ---

    def _on_block(self, raw: bytes) -> None:
        number, complement, body = raw[1], raw[2], raw[3:-2]
        if number + complement != 0xFF:
            self._keep_noise(raw)
            self._stats["bad_blocks"] += 1
            self._error(f"block number {number} and complement {complement} disagree", self._ask_again())
            return
        if int.from_bytes(raw[-2:], "big") != crc16(body):
            self._keep_noise(raw)  # (a console line printed into a block is here)
            self._stats["crc_errors"] += 1
            self._error(f"block {number}: CRC mismatch at offset {len(self._data)}", self._ask_again())
            return
        self._stats["blocks"] += 1
        if self._phase is Phase.WAITING:
            self._on_header_block(number, body)
        elif self._phase is Phase.END:
            self._on_end_block(number, body)
        else:
            self._on_data_block(number, body)

    def _on_header_block(self, number: int, body: bytes) -> None:
        if number != 0:
            raise TransferError(f"block {number} before block 0 (the file name and size): not a YMODEM sender")
        if body[0] == 0:
            raise TransferError("the sender's batch is empty: no file was sent")
        self._name, self._size = parse_file_info(body, "YMODEM block 0")
        check_announced(self._size, self.max_size, "YMODEM block 0")
        self._phase = Phase.FILE
        self._progressed()
        self._out += bytes([ACK]) + CRC_MODE

    def _on_data_block(self, number: int, body: bytes) -> None:
        self._eot = False       # a block after a lone EOT: that EOT was noise
        last = (self._expect - 1) & 0xFF
        if number == self._expect:
            self._accept(body)
            self._expect = (self._expect + 1) & 0xFF
            self._progressed()
            self._out.append(ACK)
        elif number == last:
            self._stats["duplicates"] += 1
            again = bytes([ACK]) + (CRC_MODE if number == 0 and not self._data else b"")
            self._error(f"block {number} again: our ACK was lost", again)
        else:
            raise TransferError(f"block {number} out of sequence: expected {self._expect} "
                                f"({self._progress()})")

    def _accept(self, body: bytes) -> None:
        have = len(self._data)
        if self._size is not None and have >= self._size:
            raise TransferError(f"data beyond the announced size: a block after {have} bytes, "
                                f"{self._size} announced")
        if self._size is None and have + len(body) > self.max_size:
            raise TransferError(f"data beyond the limit: {have + len(body)} > max_size={self.max_size} bytes")
        self._data += body

    def _on_eot(self) -> None:
        if self._phase is Phase.WAITING:
            self._skip(1)                 # nothing to end: noise
        elif self._phase is Phase.END:
            self._error("EOT again: our ACK was lost", bytes([ACK]) + CRC_MODE)
        elif not self._eot:
            self._eot = True
            self._out.append(NAK)         # a lone EOT may be noise: the sender confirms it
        else:
            self._end_of_file()

    def _end_of_file(self) -> None:
        if self._size is None:
            self._stats["padding_kept"] = 1
        elif len(self._data) < self._size:
            raise TransferError(f"EOT after {len(self._data)} bytes: the file is shorter than the "
                                f"{self._size} bytes announced")
        else:
            self._stats["padding"] = len(self._data) - self._size
            del self._data[self._size:]
        self._phase = Phase.END
        self._progressed()
        self._out += bytes([ACK]) + CRC_MODE

    def _on_end_block(self, number: int, body: bytes) -> None:
        if number != 0:
            raise TransferError(f"block {number} after the end of the file (EOT)")
        if body[0] != 0:
            name, _ = parse_file_info(body, "YMODEM block 0")
            raise TransferError(f"the sender offered a second file {decode_name(name)!r} after "
                                f"{decode_name(self._name)!r}; one file per session")
        self._out.append(ACK)
        self._phase = Phase.DONE
