"""The telnet byte stream (RFC 854/855) as an RFC 2217 console server sends it: data and commands apart.

A console server that speaks RFC 2217 (ser2net ``telnet(rfc2217)``, a labgrid exporter) mixes
the board's bytes with telnet commands: ``IAC IAC`` is one data byte 0xFF; ``IAC DO|DONT|WILL|WONT
opt`` negotiates an option; ``IAC SB ... IAC SE`` carries an option's subnegotiation (the
COM-PORT-OPTION answers); any other ``IAC x`` is a command. `TelnetDecoder.feed` takes the
bytes as they come, in any split, and returns the data bytes in one piece and the telnet events
in order; runs of data between commands are copied at once, not byte by byte. Pure: no I/O.

A stream that breaks the protocol raises `TelnetError` (a ValueError) naming the offset and why,
and holding what the chunk gave before the break:
a subnegotiation longer than `SUBNEGOTIATION_MAX` (an RFC 2217 option is a few bytes; one that
never ends would fill memory), an ``IAC SE`` with no ``IAC SB``, an ``IAC SB`` inside another.
"""

from __future__ import annotations

from dataclasses import dataclass

IAC, DONT, DO, WONT, WILL, SB, SE = 255, 254, 253, 252, 251, 250, 240
NEGOTIATIONS = (DO, DONT, WILL, WONT)
SUBNEGOTIATION_MAX = 4096


class TelnetError(ValueError):
    """The stream broke the telnet protocol (the message says at which stream offset, and why).
    `data` and `events`: what the chunk held before the break (nothing is lost)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.data = b""
        self.events: list[Event] = []


@dataclass(frozen=True)
class Negotiation:
    command: int  # DO, DONT, WILL or WONT
    option: int


@dataclass(frozen=True)
class Subnegotiation:
    payload: bytes  # between IAC SB and IAC SE, doubled IACs undone (option number first)


@dataclass(frozen=True)
class Command:
    command: int  # any other byte after IAC (NOP, GA, BRK, ...)


Event = Negotiation | Subnegotiation | Command

_DATA, _IAC, _NEGOTIATE = 0, 1, 2


class TelnetDecoder:
    """Incremental: `feed(chunk)` -> (data bytes, events). State carries across chunks."""

    def __init__(self) -> None:
        self._state = _DATA
        self._command = 0
        self._sub: bytearray | None = None  # inside IAC SB ... IAC SE
        self._offset = 0  # stream offset of the next byte fed

    def feed(self, chunk: bytes) -> tuple[bytes, list[Event]]:
        data = bytearray()
        events: list[Event] = []
        try:
            self._feed(chunk, data, events)
        except TelnetError as e:
            e.data, e.events = bytes(data), events
            raise
        return bytes(data), events

    def _feed(self, chunk: bytes, data: bytearray, events: list[Event]) -> None:
        pos, end = 0, len(chunk)
        while pos < end:
            if self._state == _DATA:
                stop = chunk.find(IAC, pos)
                stop = end if stop < 0 else stop
                self._take(data, chunk[pos:stop], self._offset + pos)
                if stop < end:
                    self._state = _IAC
                pos = stop + 1
                continue
            byte, at = chunk[pos], self._offset + pos
            pos += 1
            if self._state == _NEGOTIATE:
                events.append(Negotiation(self._command, byte))
                self._state = _DATA
            elif byte == IAC:
                self._take(data, b"\xff", at)
                self._state = _DATA
            elif byte in NEGOTIATIONS:
                self._command, self._state = byte, _NEGOTIATE
            elif byte == SB:
                if self._sub is not None:
                    raise TelnetError(f"telnet stream offset {at}: IAC SB inside a subnegotiation")
                self._sub, self._state = bytearray(), _DATA
            elif byte == SE:
                if self._sub is None:
                    raise TelnetError(f"telnet stream offset {at}: IAC SE without IAC SB")
                events.append(Subnegotiation(bytes(self._sub)))
                self._sub, self._state = None, _DATA
            else:
                events.append(Command(byte))
                self._state = _DATA
        self._offset += end

    def _take(self, data: bytearray, run: bytes, at: int) -> None:
        if self._sub is None:
            data += run
            return
        self._sub += run
        if len(self._sub) > SUBNEGOTIATION_MAX:
            raise TelnetError(f"telnet stream offset {at}: a subnegotiation longer than {SUBNEGOTIATION_MAX} "
                              f"bytes without IAC SE")
