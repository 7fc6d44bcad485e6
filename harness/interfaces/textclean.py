"""The console's text view: bytes to clean text, and lines capped in length.

Text view. Bytes are decoded as UTF-8 (invalid bytes dropped), ANSI/VT escape sequences are
removed, CRLF and lone CR become LF, other control characters are dropped. Patterns given to
`expect` are matched against that text; a match may span at most ``max_match`` characters of
text that arrived before the current read. The prompt (``prompt`` literal or ``prompt_regex``)
is matched at the start of a line.

Escape sequences are parsed by a small state machine (after the VT500 parser), so the text is
the same however the bytes are split into reads:

- ``ESC [`` CSI: parameter and intermediate bytes (0x20-0x3F), ended by a final byte 0x40-0x7E;
- ``ESC ]`` OSC: ended by BEL, by ST (``ESC \\`` or U+009C) or by any other ESC (which begins
  the next sequence); ``ESC P``/``X``/``^``/``_`` (DCS, SOS, PM, APC) likewise, BEL excepted;
- ``ESC`` then intermediates (0x20-0x2F) and a final byte 0x30-0x7E (``ESC ( B``, ``ESC 7``);
- CAN or SUB cancels a sequence (both are dropped).

A sequence cannot hide text: one that is cut by a line end (CR or LF), by a character it may
not contain, or that grows past ``MAX_SEQUENCE`` characters without its end is no sequence,
and its characters after the ESC are text (``ESC ]0;debug on`` + LF reads ``]0;debug on``
then a line end). The text view therefore holds back at most ``MAX_SEQUENCE`` characters.
"""

from __future__ import annotations

import codecs
import re

MAX_SEQUENCE = 4096  # characters of one escape sequence held back before it counts as text

_GROUND, _ESC, _ESC_INTER, _CSI, _STRING, _STRING_ESC = range(6)
# Text as it is: all but C0 controls (TAB excepted), DEL, C1 controls and U+FFFD (invalid UTF-8).
_PLAIN_RE = re.compile("[^\x00-\x08\x0a-\x1f\x7f-\x9f\ufffd]+")
_STRING_BODY_RE = re.compile("[^\x00-\x1f\x7f-\x9f]+")  # what a string sequence holds (not ended yet)
_CSI_BODY_RE = re.compile("[\x20-\x3f]+")
_STRINGS = {"]": "osc", "P": "dcs", "X": "sos", "^": "pm", "_": "apc"}


class TextCleaner:
    """Incremental bytes -> clean text (see the module docstring). The split of the bytes into
    `feed` calls does not change the text."""

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")
        self._state = _GROUND
        self._held: list[str] = []  # the sequence after its ESC (introducer included)
        self._held_len = 0
        self._osc = False  # the string sequence may end with BEL
        self._after_cr = False  # a CR gave a line end; an LF right after it is the same line end

    @property
    def holding(self) -> bool:
        """Bytes fed but not yet given out as text (an unfinished escape sequence or UTF-8 character)."""
        return self._state != _GROUND or bool(self._decoder.getstate()[0])

    def feed(self, data: bytes, final: bool = False) -> str:
        s = self._decoder.decode(bytes(data), final)
        out: list[str] = []
        i, n = 0, len(s)
        while i < n:
            state = self._state
            if state == _GROUND:
                m = _PLAIN_RE.match(s, i)
                if m:
                    out.append(m.group())
                    self._after_cr = False
                    i = m.end()
                    continue
                self._ground_control(s[i], out)
                i += 1
                continue
            if state in (_STRING, _CSI):
                m = (_STRING_BODY_RE if state == _STRING else _CSI_BODY_RE).match(s, i)
                if m:
                    room = MAX_SEQUENCE - self._held_len
                    take = m.group()[:room]
                    self._hold(take)
                    i += len(take)
                    if self._held_len >= MAX_SEQUENCE:
                        self._release(out)
                    continue
            c = s[i]
            i += 1
            self._sequence_char(c, out)
        if final and self._state != _GROUND:
            self._release(out)
        return "".join(out)

    def _ground_control(self, c: str, out: list[str]) -> None:
        if c == "\x1b":
            self._begin()
        elif c == "\r":
            out.append("\n")
            self._after_cr = True
        elif c == "\n":
            if not self._after_cr:
                out.append("\n")
            self._after_cr = False
        # other control characters, U+FFFD (invalid UTF-8) and C1 controls: dropped

    def _begin(self) -> None:
        self._state, self._held, self._held_len = _ESC, [], 0

    def _hold(self, text: str) -> None:
        self._held.append(text)
        self._held_len += len(text)

    def _release(self, out: list[str]) -> None:
        """No sequence after all: what it held is text."""
        if self._held:
            # (what ground state drops, U+FFFD of invalid UTF-8 among it, is dropped here too)
            text = "".join(_PLAIN_RE.findall("".join(self._held)))
            if text:
                out.append(text)
                self._after_cr = False
        self._state, self._held, self._held_len = _GROUND, [], 0

    def _sequence_char(self, c: str, out: list[str]) -> None:
        """One character inside an escape sequence (the bulk of CSI and string bodies is taken in feed)."""
        state = self._state
        if c in "\x18\x1a":  # CAN, SUB: the sequence is cancelled
            self._state, self._held, self._held_len = _GROUND, [], 0
            return
        if c in "\r\n":  # a line end cuts any sequence: what it held is text
            self._release(out)
            self._ground_control(c, out)
            return
        if state == _ESC:
            if c == "\x1b":
                self._begin()
            elif c == "[":
                self._state = _CSI
                self._hold(c)
            elif c in _STRINGS:
                self._state, self._osc = _STRING, c == "]"
                self._hold(c)
            elif "\x20" <= c <= "\x2f":
                self._state = _ESC_INTER
                self._hold(c)
            elif "\x30" <= c <= "\x7e":
                self._state, self._held, self._held_len = _GROUND, [], 0  # a two-character escape: done
            else:  # not an escape sequence: the ESC is dropped, the character is read as text
                self._state = _GROUND
                self._ground(c, out)
        elif state == _ESC_INTER:
            if "\x20" <= c <= "\x2f" and self._held_len < MAX_SEQUENCE:
                self._hold(c)
            elif "\x30" <= c <= "\x7e":
                self._state, self._held, self._held_len = _GROUND, [], 0
            else:
                self._release(out)
                self._ground(c, out)
        elif state == _CSI:
            if "\x40" <= c <= "\x7e":
                self._state, self._held, self._held_len = _GROUND, [], 0
            else:  # (parameter bytes are taken in feed) anything else: no CSI
                self._release(out)
                self._ground(c, out)
        elif state == _STRING:
            if c == "\x1b":
                self._state = _STRING_ESC
            elif c == "\x9c" or (c == "\x07" and self._osc):
                self._state, self._held, self._held_len = _GROUND, [], 0
            # other control characters inside a string are ignored, as terminals do
        elif state == _STRING_ESC:
            # ESC \ is ST; any other ESC also ends the string and begins the next sequence.
            self._begin()
            if c != "\\":
                self._sequence_char(c, out)
            else:
                self._state = _GROUND

    def _ground(self, c: str, out: list[str]) -> None:
        if _PLAIN_RE.match(c):
            out.append(c)
            self._after_cr = False
        else:
            self._ground_control(c, out)


def clean_text(data: bytes) -> str:
    """The text view of `data`: UTF-8, no escape sequences or control characters, LF line ends."""
    return TextCleaner().feed(data, final=True)


class LineCapper:
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
