"""The console's text view: the same text however the bytes are split, and nothing hidden."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from harness.interfaces.textclean import MAX_SEQUENCE, TextCleaner, clean_text

# Pieces that matter at a split: every kind of sequence, its terminators, lone ESC, CR/LF,
# multibyte UTF-8 and its fragments, CAN/SUB and C1 ST.
PIECES = [b"\r\n", b"\r", b"\n", b"\t", b"\x1b", b"\x1b[", b"\x1b[1;31m", b"\x1b[0m", b"\x1b[K", b"\x1b[?25h",
          b"\x1b]0;title\x07", b"\x1b]2;x\x1b\\", b"\x1b]", b"\x07", b"\x1b\\", b"\\", b"\x1bP1$r\x1b\\", b"\x1bX",
          b"\x1b^pm", b"\x1b_apc", b"\x1b(B", b"\x1b7", b"\x1b#8", b"\x18", b"\x1a", "\u009c".encode(),
          "\u00e9\u4e2d\U0001f600".encode(), b"\xe4\xb8", b"\xad", b"\xf0\x9f", b"\xff", b"\xc0",
          b"prompt> ", b"debug mode: ENABLED", b"0123456789"]
streams = st.lists(st.one_of(st.binary(max_size=6), st.sampled_from(PIECES)), max_size=40).map(b"".join)


def fed(data: bytes, cuts: list[int]) -> str:
    """`data` fed in pieces ending at the sorted positions `cuts`, then the end."""
    cleaner = TextCleaner()
    out, pos = [], 0
    for cut in sorted(set(cuts)):
        out.append(cleaner.feed(data[pos:cut]))
        pos = cut
    out.append(cleaner.feed(data[pos:], final=True))
    return "".join(out)


@given(streams)
@settings(max_examples=300)
def test_every_split_in_two_gives_the_one_shot_text(data):
    whole = clean_text(data)
    for cut in range(len(data) + 1):
        assert fed(data, [cut]) == whole, cut


@given(streams, st.data())
@settings(max_examples=300)
def test_any_split_gives_the_one_shot_text(data, draw):
    cuts = draw.draw(st.lists(st.integers(0, len(data)), max_size=len(data) + 1))
    assert fed(data, cuts) == clean_text(data)


@given(streams)
def test_byte_at_a_time_gives_the_one_shot_text(data):
    assert fed(data, list(range(len(data)))) == clean_text(data)


@given(st.binary(max_size=2000))
def test_the_text_has_no_escapes_or_controls(data):
    text = clean_text(data)
    assert "\x1b" not in text and "\r" not in text and "\ufffd" not in text
    assert all(c in "\t\n" or not (ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F) for c in text)


def test_osc_ended_by_st_across_reads_leaves_no_residue():
    # The case: an OSC title ended by ESC \, the ESC at the end of one read.
    data = b"ok\x1b]2;x\x1b\\ after\r\n"
    assert clean_text(data) == "ok after\n"
    for cut in range(len(data) + 1):
        assert fed(data, [cut]) == "ok after\n"


def test_examples():
    assert clean_text(b"a\r\nb\rc\n") == "a\nb\nc\n"
    assert clean_text(b"\x1b[1;32mOK\x1b[0m\x1b[K \x1b]0;title\x07done") == "OK done"
    assert clean_text(b"\x00\xff\xc0\xf5garbage-free\x7f") == "garbage-free"
    assert clean_text("caf\u00e9".encode()) == "caf\u00e9"
    assert clean_text(b"\x1bP1$r0m\x1b\\dcs\x1b_apc\x1b\\ done") == "dcs done"
    assert clean_text(b"\x1b]0;a\x1b[1mb") == "b"  # an ESC ends the string and begins the next sequence
    assert clean_text(b"\x1b[12\x18x") == "x"  # CAN cancels


def test_a_sequence_cannot_hide_text_past_a_line_end():
    assert clean_text(b"\x1b]0;debug mode: ENABLED\r\nnext\r\n") == "]0;debug mode: ENABLED\nnext\n"
    assert clean_text(b"\x1b[12;\r\nx") == "[12;\nx"
    assert clean_text(b"\x1b]0;unterminated") == "]0;unterminated"  # the end of the data releases it too


def test_a_never_ending_sequence_is_held_back_only_so_far():
    cleaner = TextCleaner()
    shown = [cleaner.feed(b"\x1b]0;")]
    for _ in range(256):
        shown.append(cleaner.feed(b"secret " * 100))
        assert cleaner._held_len < MAX_SEQUENCE
    text = "".join(shown)
    assert text.startswith("]0;secret secret") and len(text) > 256 * 700 - MAX_SEQUENCE
    assert text == clean_text(b"\x1b]0;" + b"secret " * 100 * 256)[: len(text)]
    for intro in (b"\x1b[", b"\x1bP", b"\x1b(("):
        assert clean_text(intro + b"1" * (3 * MAX_SEQUENCE)).count("1") >= 2 * MAX_SEQUENCE
