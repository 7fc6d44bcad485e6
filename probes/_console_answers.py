"""How console_audit compares answers, picks names and reads boot logs: pure functions, no I/O.

Not a probe (it is not in PROBES). Everything here takes bytes or text the board sent and is
fuzzed with arbitrary input (tests/test_console_answers.py): it returns a result or raises
ValueError, never anything else.

Answers are compared byte for byte. An answer is split into lines at LF (CR kept); each line
is its *text* (the characters with their bytes) and its *line noise*: runs of bytes that can
never be text (C0 controls but TAB, LF, CR and ESC; DEL; C1 controls; bytes that are not
UTF-8), each kept with its position in the text. Escape sequences are text here: a console
that colours its prompt does so for every answer alike. The command's own name is replaced by
``{name}`` (as a whole word) before comparing, nothing else is changed: no whitespace folded, no
log-like line dropped.
"""

from __future__ import annotations

import difflib
import re
import unicodedata
from collections import Counter
from dataclasses import dataclass

NAME_CHARS = "A-Za-z0-9_.-"
PLACEHOLDER = "{name}"
# Bytes that can never be text (decoded with surrogateescape: invalid UTF-8 becomes U+DC80..U+DCFF).
_NOISE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1a\x1c-\x1f\x7f-\x9f\udc80-\udcff]+")
# An unknown-command answer must say so: the name it did not know, or words that mean "unknown".
_SAYS_UNKNOWN = re.compile(r"(?i)\{name\}|\b(unknown|not found|invalid|unrecogni[sz]ed|not recogni[sz]ed|no such|"
                           r"error|bad command|illegal|unsupported|not supported|not a command)\b|\?")


@dataclass(frozen=True)
class Line:
    text: str                              # the line without its line noise (CR kept)
    noise: tuple[tuple[int, str], ...]     # (position in text, run) of each line-noise run

    @property
    def raw(self) -> str:
        """The line as it came (surrogate-escaped), noise back in place."""
        out, at = [], 0
        for pos, run in self.noise:
            out += [self.text[at:pos], run]
            at = pos
        return "".join(out) + self.text[at:]


def placeholder(data: bytes, name: str) -> bytes:
    """`data` with `name`, as a whole word, replaced by ``{name}``."""
    word = re.compile(rb"(?<![" + NAME_CHARS.encode() + rb"])" + re.escape(name.encode()) +
                      rb"(?![" + NAME_CHARS.encode() + rb"])")
    return word.sub(PLACEHOLDER.encode(), data)


def split_lines(data: bytes) -> tuple[Line, ...]:
    """An answer's bytes (the name already replaced) as lines of text and line noise."""
    if not isinstance(data, (bytes, bytearray)):
        raise ValueError(f"an answer is bytes, not {type(data).__name__}")
    lines = []
    parts = bytes(data).split(b"\n")
    if parts and parts[-1] == b"":
        parts.pop()
    for part in parts:
        s = part.decode("utf-8", "surrogateescape")
        text, noise, removed = [], [], 0
        at = 0
        for m in _NOISE.finditer(s):
            text.append(s[at:m.start()])
            noise.append((m.start() - removed, m.group()))
            removed += len(m.group())
            at = m.end()
        text.append(s[at:])
        lines.append(Line("".join(text), tuple(noise)))
    return tuple(lines)


def shown(s: str, limit: int = 200) -> str:
    """A line (surrogate-escaped) for a reason: printable ASCII, everything else as an escape."""
    out = []
    for ch in s:
        o = ord(ch)
        if 0xDC80 <= o <= 0xDCFF:
            out.append(f"\\x{o - 0xDC00:02x}")
        elif ch == "\\":
            out.append("\\\\")
        elif 0x20 <= o < 0x7F:
            out.append(ch)
        elif ch in "\r\n\t":
            out.append({"\r": "\\r", "\n": "\\n", "\t": "\\t"}[ch])
        elif o < 0x100:
            out.append(f"\\x{o:02x}")
        else:
            out.append(ch.encode("unicode_escape").decode())
    text = "".join(out)
    return text if len(text) <= limit else text[:limit] + f"... ({len(text) - limit} more)"


def baseline(canaries: list[tuple[Line, ...]]) -> tuple[str, ...]:
    """The unknown-command answer: the line texts most of the made-up names got (line noise
    aside); on a tie, the one with the fewest lines (an asynchronous line adds one)."""
    if not canaries:
        raise ValueError("no made-up name was asked: there is no unknown-command answer to compare with")
    shapes = Counter(tuple(line.text for line in answer) for answer in canaries)
    return min(shapes, key=lambda shape: (-shapes[shape], len(shape)))


def says_unknown(shape: tuple[str, ...]) -> bool:
    """Does the unknown-command answer say that the name is unknown?"""
    return bool(_SAYS_UNKNOWN.search("\n".join(shape)))


def names_it(text: str, name: str) -> bool:
    """Does `text` name the command (any case, any of _ - . or none between its words)?"""
    if PLACEHOLDER in text:
        return True
    words = [w for w in re.split(r"[_.\-]+", name) if w]
    if not words:
        return False
    rx = r"[_.\-\s]?".join(re.escape(w) for w in words)
    return re.search(r"(?i)(?<![A-Za-z0-9])" + rx + r"(?![A-Za-z0-9])", text) is not None


@dataclass(frozen=True)
class Difference:
    ask: int           # which answer of the name (0: the first)
    line: int          # line of that answer (1-based; for "missing": where it should be)
    kind: str          # "line": a line the unknown answer lacks; "missing": a line of it that is lacking;
                       # "noise": line-noise bytes the unknown answer lacks on that line
    shown: str         # the bytes, escaped
    unrelated: str | None  # why the name is proven not to cause it; None: it counts as an answer


def compare(asks: list[tuple[Line, ...]], canaries: list[tuple[Line, ...]], name: str,
            async_line: re.Pattern) -> list[Difference]:
    """Every way the name's answers differ from the unknown-command answer, and which of those
    are proven unrelated to the name:

    - a line that a made-up name's answer also had (the console prints it whatever is sent);
    - a line that looks like an asynchronous log line (`async_line`), does not name the
      command, and was not in another answer to the same name (sent again, it did not recur);
    - line noise that a made-up name's answer also had at that place, or that was not at that
      place in another answer to the same name.

    A line of the unknown answer that is missing is never unrelated, nor is anything when the
    name was asked only once (nothing could have recurred).
    """
    shape = baseline(canaries)
    canary_extra: set[str] = set()
    canary_noise: set[tuple[str, int, str]] = set()
    for answer in canaries:
        texts = [line.text for line in answer]
        for op, _, _, j1, j2 in difflib.SequenceMatcher(None, shape, texts, autojunk=False).get_opcodes():
            if op in ("insert", "replace"):
                canary_extra.update(texts[j1:j2])
        canary_noise.update((line.text, pos, run) for line in answer for pos, run in line.noise)
    found: list[Difference] = []
    again = len(asks) > 1
    for i, answer in enumerate(asks):
        others = [a for k, a in enumerate(asks) if k != i]
        other_texts = {line.text for a in others for line in a}
        other_noise = {(line.text, pos, run) for a in others for line in a for pos, run in line.noise}
        texts = [line.text for line in answer]
        for op, i1, i2, j1, j2 in difflib.SequenceMatcher(None, shape, texts, autojunk=False).get_opcodes():
            if op == "equal":
                for line_no in range(j1, j2):
                    line = answer[line_no]
                    for pos, run in line.noise:
                        if (line.text, pos, run) in canary_noise:
                            continue
                        why = None
                        if again and (line.text, pos, run) not in other_noise:
                            why = "line noise: not there when the name was sent again"
                        found.append(Difference(i, line_no + 1, "noise", shown(run), why))
                continue
            for line_no in range(j1, j2):
                line = answer[line_no]
                why = None
                if line.text in canary_extra:
                    why = "a made-up name's answer had this line too"
                elif (again and async_line.search(line.text) and not names_it(line.text, name)
                      and line.text not in other_texts):
                    why = "an asynchronous log line: not there when the name was sent again"
                found.append(Difference(i, line_no + 1, "line", shown(line.raw), why))
            for k in range(i1, i2):
                found.append(Difference(i, j1 + 1, "missing", shown(shape[k]), None))
    return found


# --- names to try ---

def name_variants(name: str) -> list[str]:
    """`name` as written, then in lower case, UPPER case and Capitalised words, with each of
    ``_``, ``-``, ``.`` or nothing between its words; no repeats."""
    words = [w for w in re.split(r"[_.\-]+|(?<=[a-z0-9])(?=[A-Z])", name) if w]
    if not words:
        return [name]
    out = [name]
    for case in (str.lower, str.upper, str.capitalize):
        for sep in ("_", "-", ".", ""):
            out.append(sep.join(case(w) for w in words))
    return list(dict.fromkeys(out))


# NUL-terminated strings of a firmware image that look like command names.
_CSTRING = re.compile(rb"(?:(?<=\x00)|\A)([A-Za-z][A-Za-z0-9_.-]{2,31})(?=\x00)")


def firmware_names(images: dict[str, bytes]) -> list[dict]:
    """Strings of the firmware images that could be console commands: NUL-terminated, preceded
    by a NUL (or the image start), 3 to 32 characters of letters, digits and ``_ . -``,
    starting with a letter (a console's command table holds its names as C strings). Each with
    the region and offset of its first occurrence, in image order."""
    found: dict[str, dict] = {}
    for region, data in images.items():
        if not isinstance(data, (bytes, bytearray)):
            raise ValueError(f"image {region!r} is {type(data).__name__}, not bytes")
        for m in _CSTRING.finditer(bytes(data)):
            found.setdefault(m.group(1).decode("ascii"), {"name": m.group(1).decode("ascii"), "region": region,
                                                           "offset": m.start(1)})
    return list(found.values())


# --- boot log ---

def boot_log_lines(text: str) -> list[tuple[str, str]]:
    """Each boot-log line as written and as matched: compatibility forms folded (NFKC: a
    full-width ``ＥＮＡＢＬＥＤ`` is ``ENABLED``), runs of whitespace and control characters
    folded into one space, the ends stripped. A pattern matching either is a match."""
    return [(line, " ".join(re.sub(r"[\x00-\x1f\x7f]", " ", unicodedata.normalize("NFKC", line)).split()))
            for line in text.splitlines()]
