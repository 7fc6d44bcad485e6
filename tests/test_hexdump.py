"""Hex dumps read back strictly: md.b, hexdump -C and xxd, against the simulator's renderers,
the real tools, and a board that lies about what it prints."""

from __future__ import annotations

import shutil
import subprocess

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fixtures.sim.hexdump import MD_B_LAYOUTS, render_hexdump_c, render_md_b, render_xxd
from harness.formats.hexdump import (
    MAX_CHATTER_LINES,
    MAX_LINE,
    STYLES,
    HexDump,
    HexDumpError,
    HexDumpParser,
    parse_hexdump,
)

VARIANTS = {"md.b": tuple(MD_B_LAYOUTS), "hexdump-C": ("util-linux", "busybox"), "xxd": ("xxd",)}
FAST = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def render(style: str, data: bytes, start: int, variant: str) -> str:
    if style == "md.b":
        return render_md_b(data, start, layout=variant)
    if style == "hexdump-C":
        return render_hexdump_c(data, start=start, busybox=variant == "busybox")
    return render_xxd(data, start=start)


def renderings(style: str, data: bytes, start: int) -> set[str]:
    return {render(style, data, start, v) for v in VARIANTS[style]}


def dump_lines(text: str, result: HexDump) -> str:
    """The lines of `text` the parser took as the dump (not chatter), as the tool ended them."""
    chatter = {no for no, _ in result.chatter}
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()
    return "".join(line.removesuffix("\r") + "\n" for no, line in enumerate(lines, 1) if no not in chatter)


# Images like flash: random bytes, and runs that give hexdump -C's `*` and BusyBox's lone `*`.
runs = st.tuples(st.sampled_from([b"\x00", b"\xff", b"A", b" ", b"\x00\x01"]), st.integers(1, 70)).map(
    lambda t: t[0] * t[1])
images = st.one_of(
    st.binary(max_size=5000),
    st.lists(st.one_of(st.binary(max_size=40), runs), max_size=10).map(b"".join),
)
starts = st.one_of(st.just(0), st.integers(0, 1 << 20), st.integers(0, 1 << 40))
style_and_variant = st.sampled_from([(s, v) for s in STYLES for v in VARIANTS[s]])


def dump_text(style: str, data: bytes, start: int = 0, variant: str | None = None) -> str:
    return render(style, data, start, variant or VARIANTS[style][0])


# --- the three styles read back ---


@FAST
@given(style_and_variant, images, starts)
def test_every_style_reads_back_what_it_printed(sv, data, start):
    style, variant = sv
    result = parse_hexdump(render(style, data, start, variant), style, start=start, length=len(data))
    assert result.data == data
    assert result.chatter == ()
    lines = -(-len(data) // 16)
    if style == "hexdump-C":
        assert result.lines <= lines  # a `*` stands for the lines it repeats
    else:
        assert (result.lines, result.repeats) == (lines, 0)


def test_a_dump_of_nothing_is_empty():
    for style in STYLES:
        assert parse_hexdump("", style, start=0x100, length=0).data == b""
        with pytest.raises(HexDumpError, match="beyond"):
            parse_hexdump(dump_text(style, b"x", 0x100), style, start=0x100, length=0)


def test_star_lines_are_expanded_and_counted():
    data = bytes(range(16)) + b"\xff" * 64 + b"tail"
    text = render_hexdump_c(data)
    assert text.count("*\n") == 1
    result = parse_hexdump(text, "hexdump-C", start=0, length=len(data))
    assert (result.data, result.repeats, result.lines) == (data, 1, 3)  # 0x00, 0x10, `*`, 0x50


# --- agreement with the real tools ---

TOOLS = {
    "hexdump -C": (["hexdump", "-C"], "hexdump-C", "util-linux"),
    "busybox hexdump -C": (["busybox", "hexdump", "-C"], "hexdump-C", "busybox"),
    "xxd": (["xxd"], "xxd", "xxd"),
    "busybox xxd": (["busybox", "xxd"], "xxd", "xxd"),
}


@pytest.mark.parametrize("tool", TOOLS)
def test_renderers_print_what_the_real_tool_prints(tool, tmp_path):
    argv, style, variant = TOOLS[tool]
    if shutil.which(argv[0]) is None:
        pytest.skip(f"{argv[0]} is not installed (apt: bsdextrautils / xxd / busybox)")
    image = tmp_path / "image.bin"

    @settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(images, st.integers(0, 40), st.booleans())
    def check(data, skip, whole):
        image.write_bytes(data)
        skip = min(skip, len(data))
        length = len(data) - skip
        if whole:
            skip, length, opts = 0, len(data), []
        elif style == "xxd":
            opts = ["-s", str(skip), "-l", str(length)]
        else:
            opts = ["-s", str(skip), "-n", str(length)]
        printed = subprocess.run(argv + opts + [str(image)], capture_output=True, text=True, check=True).stdout
        if length == 0:  # the tools print nothing, or only the offset, for nothing
            return
        assert printed == render(style, data[skip:skip + length], skip, variant)
        assert parse_hexdump(printed, style, start=skip, length=length).data == data[skip:skip + length]

    check()


def test_md_b_prints_as_u_boot_print_buffer():
    data = b"Hello\x00\x01\x02abc~\x7f\x80 z"
    assert render_md_b(data + b"!", 0x80000000) == (
        "80000000: 48 65 6c 6c 6f 00 01 02 61 62 63 7e 7f 80 20 7a  Hello...abc~.. z\n"
        "80000010: 21                                               !\n")
    assert render_md_b(b"!", 0x10, layout="older") == "00000010: 21" + " " * 45 + "    !\n"
    assert render_md_b(b"!", 0x10, layout="oldest") == "00000010: 21    !\n"
    assert render_md_b(b"", 0) == ""


# --- chatter: kept with its line number, never data ---

CHATTER = ["md.b 80000000 40", "", "[   12.345678] usb 1-1: new high-speed USB device", "=> ",
           "~ # ", "Bad CRC, using default environment", "xdeadbeef: 00", "*hello", "   "]


@FAST
@given(style_and_variant, images, starts, st.lists(st.tuples(st.integers(0, 400), st.sampled_from(CHATTER)),
                                                   max_size=6))
def test_chatter_between_dump_lines_is_kept_and_is_not_data(sv, data, start, inserts):
    style, variant = sv
    lines = render(style, data, start, variant).splitlines()
    expected = []
    for at, text in sorted(inserts, reverse=True):
        lines.insert(min(at, len(lines)), text)
    for no, line in enumerate(lines, 1):
        if line in CHATTER:
            expected.append((no, line))
    text = "".join(line + "\n" for line in lines)
    if any(a == "*" and b in CHATTER or b == "*" and a in CHATTER for a, b in zip(lines, lines[1:])):
        with pytest.raises(HexDumpError, match="not the dump"):  # it could hide a line: see below
            parse_hexdump(text, style, start=start, length=len(data))
        return
    result = parse_hexdump(text, style, start=start, length=len(data))
    assert result.data == data
    assert list(result.chatter) == expected


def test_a_dump_line_behind_other_text_is_chatter_and_leaves_a_gap():
    text = render_xxd(bytes(range(48)))
    lines = text.splitlines()
    lines[1] = "log: " + lines[1]
    with pytest.raises(HexDumpError, match="gap: expected address 00000010, found 00000020") as err:
        parse_hexdump("\n".join(lines) + "\n", "xxd", start=0, length=48)
    assert err.value.line == 3


# --- feeding as the console delivers ---


@FAST
@given(style_and_variant, images, starts, st.lists(st.integers(0, 10**6), max_size=20))
def test_feeding_in_pieces_gives_the_same_result(sv, data, start, cuts):
    style, variant = sv
    text = "boot noise\n" + render(style, data, start, variant) + "=> "
    whole = parse_hexdump(text, style, start=start, length=len(data))
    parser = HexDumpParser(style, start=start, length=len(data))
    edges = sorted({c % (len(text) + 1) for c in cuts} | {0, len(text)})
    for a, b in zip(edges, edges[1:]):
        parser.feed(text[a:b])
        assert 0 <= parser.received <= len(data)
    assert parser.complete
    assert parser.finish() == whole


def test_progress_and_completion_as_lines_arrive():
    data = bytes(range(40))
    parser = HexDumpParser("hexdump-C", start=0, length=40)
    lines = render_hexdump_c(data).splitlines(keepends=True)
    seen = []
    for line in lines:
        parser.feed(line)
        seen.append((parser.received, parser.complete))
    assert seen == [(16, False), (32, False), (40, False), (40, True)]  # complete at the total line


def test_a_trailing_cr_is_accepted():
    data = b"console text\x00\x01" * 5
    for style in STYLES:
        text = dump_text(style, data, 0x40).replace("\n", "\r\n")
        assert parse_hexdump(text, style, start=0x40, length=len(data)).data == data


# --- a board that lies: hostile edits of a real dump ---

MUTATIONS = ("digit", "address", "drop", "duplicate", "swap", "ascii", "insert", "delete", "cr", "star",
             "upper", "space")
MEANING_KEPT = {"drop", "duplicate", "swap", "insert", "cr", "star", "space"}  # never a different image


def mutate(lines: list[str], kind: str, i: int, j: int, char: str) -> list[str]:
    lines = list(lines)
    k = i % len(lines)
    line = lines[k]
    at = j % (len(line) + 1)
    if kind == "digit":
        digits = [p for p, c in enumerate(line) if c in "0123456789abcdef"]
        if digits:
            p = digits[j % len(digits)]
            lines[k] = line[:p] + "0123456789abcdef"[(int(line[p], 16) + 1 + i) % 16] + line[p + 1:]
    elif kind == "address":
        lines[k] = f"{(int(line[:8], 16) + (i % 5 + 1) * 16) % (1 << 32):08x}" + line[8:] if line[:8].isalnum() else line
    elif kind == "drop":
        del lines[k]
    elif kind == "duplicate":
        lines.insert(k, line)
    elif kind == "swap" and k + 1 < len(lines):
        lines[k], lines[k + 1] = lines[k + 1], line
    elif kind == "ascii" and line:
        p = len(line) - 1 - j % min(len(line), 17)
        lines[k] = line[:p] + chr(0x20 + (ord(line[p]) + 1 + i) % 95) + line[p + 1:]
    elif kind == "insert":
        lines[k] = line[:at] + char + line[at:]
    elif kind == "delete" and line:
        lines[k] = line[:at % len(line)] + line[at % len(line) + 1:]
    elif kind == "cr":
        lines[k] = line[:at] + "\r" + line[at:]
    elif kind == "star":
        lines.insert(k + 1, "*")
    elif kind == "upper":
        lines[k] = line.upper()
    elif kind == "space":
        lines[k] = " " + line
    return lines


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(style_and_variant, images.filter(len), starts, st.sampled_from(MUTATIONS), st.integers(0, 10**6),
       st.integers(0, 10**6), st.sampled_from([" ", "0", "a", "f", "|", ".", ":", "00 ", "\t", "*"]))
def test_a_mangled_dump_is_an_error_or_exactly_what_it_says(sv, data, start, kind, i, j, char):
    style, variant = sv
    original = render(style, data, start, variant).splitlines()
    lines = mutate(original, kind, i, j, char)
    text = "".join(line + "\n" for line in lines)
    try:
        result = parse_hexdump(text, style, start=start, length=len(data))
    except HexDumpError as e:
        assert e.line is None or 1 <= e.line <= len(lines) + 1
        return
    # Accepted: the dump lines are exactly what a real tool prints for the returned image.
    assert dump_lines(text, result) in renderings(style, result.data, start)
    k = i % len(original)
    lost_by_star = kind == "drop" and "*" in original[max(k - 1, 0):k + 2]  # see the test below
    if kind in MEANING_KEPT and not lost_by_star:
        assert result.data == data


def test_a_line_lost_next_to_a_star_reads_as_a_longer_repeat():
    # hexdump -C's own meaning: `*` repeats the line before it up to the next address shown. A
    # whole line lost just before or after it cannot be told from a longer repeat; the board's
    # sha256sum of the file (checked by the host where the board has one) is what turns that
    # loss into a transfer error.
    data = bytes(32) + b"\x01" * 16 + b"\x02" * 16
    lines = render_hexdump_c(data).splitlines()
    assert lines[1:3] == ["*", "00000020  " + "01 " * 8 + " " + "01 " * 8 + " |" + "." * 16 + "|"]
    del lines[2]
    result = parse_hexdump("\n".join(lines) + "\n", "hexdump-C", start=0, length=64)
    assert result.data == bytes(48) + b"\x02" * 16
    # A line mangled into chatter next to a `*` is an error, not a lost line.
    dump = render_hexdump_c(data).splitlines()
    for mangled in (dump[:2] + ["0 0000020  01 01"] + dump[3:],  # the line after `*`, mangled
                    dump[:2] + [""] + dump[2:],                  # a blank line after `*`
                    dump[:1] + ["0000010 log"] + dump[1:]):       # text just before `*`
        with pytest.raises(HexDumpError, match="text that is not the dump"):
            parse_hexdump("\n".join(mangled) + "\n", "hexdump-C", start=0, length=64)
    # Where the next line equals the repeated one, the tool would have gone on repeating: an error.
    lines = render_hexdump_c(bytes(32) + b"\x01" * 16 + bytes(16)).splitlines()
    del lines[2]
    with pytest.raises(HexDumpError, match="repeats the line before"):
        parse_hexdump("\n".join(lines) + "\n", "hexdump-C", start=0, length=64)
    lines = render_hexdump_c(b"\x01" * 16 + bytes(32)).splitlines()  # 01.., 00.., *, total
    del lines[1]
    result = parse_hexdump("\n".join(lines) + "\n", "hexdump-C", start=0, length=48)
    assert result.data == b"\x01" * 48


@settings(max_examples=150, deadline=None)
@given(st.sampled_from(STYLES), st.text(alphabet="0123456789abcdefABCDEF x:|*.\r\n\t", max_size=400),
       st.integers(0, 64), st.integers(0, 300))
def test_random_text_is_an_error_or_chatter(style, text, start, length):
    try:
        result = parse_hexdump(text, style, start=start, length=length)
    except HexDumpError:
        return
    assert len(result.data) == length
    assert dump_lines(text, result) in renderings(style, result.data, start)


@settings(max_examples=60, deadline=None)
@given(st.sampled_from(STYLES), st.text(max_size=300), st.integers(0, 400))
def test_random_text_inside_a_dump_never_becomes_data(style, noise, at):
    data = bytes(range(256))[::3] * 2
    text = dump_text(style, data, 0x2000)
    text = text[:at] + noise + text[at:]
    try:
        result = parse_hexdump(text, style, start=0x2000, length=len(data))
    except HexDumpError:
        return
    assert dump_lines(text, result) in renderings(style, result.data, 0x2000)


# --- each way a board could try to pass a different image, one by one ---

DATA = b"firmware image v1 " * 5  # 90 bytes: 5 full lines and a short one


def one_line_changed(style: str, index: int, new: str, data: bytes = DATA, start: int = 0x1000) -> str:
    lines = dump_text(style, data, start).splitlines()
    lines[index] = new
    return "".join(line + "\n" for line in lines)


def line_of(style: str, index: int, data: bytes = DATA, start: int = 0x1000) -> str:
    return dump_text(style, data, start).splitlines()[index]


@pytest.mark.parametrize("style", STYLES)
@pytest.mark.parametrize("change, why", [
    (lambda line: "0" + line, "not written as"),                    # an address with more digits
    (lambda line: "0x" + line, "0x prefix"),
    (lambda line: line[:6] + "1A" + line[8:], "not written as"),   # upper-case address digits
    (lambda line: "  " + line, "whitespace before the address"),
    (lambda line: line.replace("6d", "6D", 1), "upper-case"),       # upper-case data digits
    (lambda line: line.replace("6d", "6g", 1), "not a hex digit"),
    (lambda line: line + " ", "extra text"),
    (lambda line: line + " 00", "extra text"),
])
def test_a_line_written_other_than_the_tool_writes_it_is_an_error(style, change, why):
    original = line_of(style, 2)
    changed = change(original)
    assert changed != original
    with pytest.raises(HexDumpError) as err:
        parse_hexdump(one_line_changed(style, 2, changed), style, start=0x1000, length=len(DATA))
    assert err.value.line == 3
    assert why in err.value.why


@pytest.mark.parametrize("style, column", [("md.b", 55), ("hexdump-C", 56), ("xxd", 45)])
def test_a_tab_for_a_space_is_an_error(style, column):
    line = line_of(style, 2)
    assert line[column - 1] == " "
    with pytest.raises(HexDumpError, match=f"not written as {style} writes 16 bytes at 00001020; column {column}:") as err:
        parse_hexdump(one_line_changed(style, 2, line[:column - 1] + "\t" + line[column:]), style, start=0x1000,
                      length=len(DATA))
    assert err.value.line == 3


@pytest.mark.parametrize("style", STYLES)
def test_an_ascii_column_that_disagrees_with_the_hex_is_an_error(style):
    line = line_of(style, 1)
    flipped = line.rstrip("|")[:-1] + "X" + ("|" if style == "hexdump-C" else "")
    with pytest.raises(HexDumpError, match="ASCII column disagrees") as err:
        parse_hexdump(one_line_changed(style, 1, flipped), style, start=0x1000, length=len(DATA))
    assert err.value.line == 2


@pytest.mark.parametrize("style", STYLES)
@pytest.mark.parametrize("edit, line, why", [
    ("drop", 3, "gap: expected address 00001020, found 00001030 (16 bytes missing)"),
    ("duplicate", 4, "overlap: expected address 00001030, found 00001020 (goes back 16 bytes)"),
    ("swap", 3, "gap: expected address 00001020, found 00001030"),
])
def test_every_address_accounted_for(style, edit, line, why):
    lines = mutate(dump_text(style, DATA, 0x1000).splitlines(), edit, 2, 0, "")
    with pytest.raises(HexDumpError) as err:
        parse_hexdump("\n".join(lines) + "\n", style, start=0x1000, length=len(DATA))
    assert (err.value.line, err.value.why) == (line, why) or why in err.value.why and err.value.line == line


@pytest.mark.parametrize("style", STYLES)
def test_a_full_line_short_of_a_byte_mid_dump_is_an_error(style):
    short = dump_text(style, DATA[32:47], 0x1020).splitlines()[0]
    with pytest.raises(HexDumpError, match="shows 15 bytes at 00001020 where .* prints 16") as err:
        parse_hexdump(one_line_changed(style, 2, short), style, start=0x1000, length=len(DATA))
    assert err.value.line == 3


@pytest.mark.parametrize("style", STYLES)
def test_data_beyond_the_requested_length_is_an_error(style):
    longer = dump_text(style, DATA + b"!", 0x1000)  # one byte more on the last line
    with pytest.raises(HexDumpError, match="prints 10 bytes") as err:
        parse_hexdump(longer, style, start=0x1000, length=len(DATA))
    assert err.value.line == 6
    more = dump_text(style, DATA[:64] + b"?" * 16, 0x1000)  # a whole line more
    with pytest.raises(HexDumpError, match="beyond") as err:
        parse_hexdump(more, style, start=0x1000, length=64)
    assert err.value.line == 5


@pytest.mark.parametrize("style", STYLES)
def test_a_dump_that_stops_early_is_an_error_at_the_end(style):
    text = dump_text(style, DATA[:64], 0x1000)
    if style == "hexdump-C":
        text = text.rsplit("\n", 2)[0] + "\n"  # no total line: the dump was cut
    parser = HexDumpParser(style, start=0x1000, length=len(DATA))
    parser.feed(text)
    assert (parser.received, parser.complete) == (64, False)
    with pytest.raises(HexDumpError, match="stops at 00001040: 64 of 90 bytes") as err:
        parser.finish()
    assert err.value.line is None


def test_hexdump_c_total_line_must_agree():
    text = render_hexdump_c(DATA)
    with pytest.raises(HexDumpError, match="missing"):
        parse_hexdump(text.removesuffix("0000005a\n"), "hexdump-C", start=0, length=len(DATA))
    with pytest.raises(HexDumpError, match="says the dump ends at 0000005b"):
        parse_hexdump(text.replace("0000005a", "0000005b"), "hexdump-C", start=0, length=len(DATA))
    early = render_hexdump_c(DATA[:64])
    with pytest.raises(HexDumpError, match=r"ends at 00000040 \(total line\): 64 of 90"):
        parse_hexdump(early, "hexdump-C", start=0, length=len(DATA))


ZEROS = bytes(range(16)) + bytes(64) + b"end!"  # a line, then 0x10..0x4f zeros (`*`), then "end!"
ZEROS_DUMP = render_hexdump_c(ZEROS)
ZERO_LINE = "00 " * 8 + " " + "00 " * 8 + " |" + "." * 16 + "|"
COUNTING = render_hexdump_c(bytes(range(16))).splitlines()[0]


@pytest.mark.parametrize("text, length, why", [
    ("*\n" + ZEROS_DUMP, len(ZEROS), "no full line before it"),
    (ZEROS_DUMP.replace("*\n", "*\n*\n"), len(ZEROS), "a second `*`"),
    (ZEROS_DUMP.replace("00000050  65", "00000048  65"), len(ZEROS), "not a whole number of 16-byte lines"),
    (ZEROS_DUMP.replace("*\n", " *\n"), len(ZEROS), "other text"),
    (ZEROS_DUMP.replace("*\n", "*\n00000020  " + ZERO_LINE + "\n"), len(ZEROS), "repeats the line before"),
    (f"{COUNTING}\n{COUNTING.replace('00000000', '00000010', 1)}\n00000020\n", 32, "repeats the line before"),
    (ZEROS_DUMP.replace("00000050  65", "00000060  65"), len(ZEROS), "past the last requested byte"),
    (render_hexdump_c(bytes(range(32))).replace("00000020\n", "*\n00000020\n"), 32, "after the last requested byte"),
])
def test_hexdump_c_star_is_read_strictly(text, length, why):
    with pytest.raises(HexDumpError, match=why):
        parse_hexdump(text, "hexdump-C", start=0, length=length)


def test_a_star_that_repeats_nothing_only_before_a_busybox_short_line():
    like = b"A" * 16 + b"A" * 5
    busybox = render_hexdump_c(like, busybox=True)
    assert "*\n00000010" in busybox
    assert parse_hexdump(busybox, "hexdump-C", start=0, length=21).data == like
    unlike = b"A" * 16 + b"B" * 5
    forged = render_hexdump_c(unlike).replace("00000010", "*\n00000010", 1)
    with pytest.raises(HexDumpError, match="repeats nothing"):
        parse_hexdump(forged, "hexdump-C", start=0, length=21)
    two = render_hexdump_c(b"A" * 16 + b"B" * 16).replace("00000010", "*\n00000010", 1)
    with pytest.raises(HexDumpError, match="repeats nothing"):
        parse_hexdump(two, "hexdump-C", start=0, length=32)


def test_a_star_means_what_hexdump_means_by_it():
    # A board may claim with `*` that a region repeats; the image is then that claim, in full
    # (and its sha256 against the reference decides). The parser never reads it any other way.
    lines = render_hexdump_c(bytes(range(16)) + b"different bytes!" + b"tail").splitlines()
    claimed = "\n".join([lines[0], "*", lines[2], lines[3]]) + "\n"
    result = parse_hexdump(claimed, "hexdump-C", start=0, length=36)
    assert (result.data, result.repeats) == (bytes(range(16)) * 2 + b"tail", 1)


@pytest.mark.parametrize("style", ["md.b", "xxd"])
def test_only_hexdump_c_prints_stars(style):
    text = dump_text(style, bytes(48), 0)
    lines = text.splitlines()
    lines[1] = "*"
    with pytest.raises(HexDumpError, match="does not print `\\*`"):
        parse_hexdump("\n".join(lines) + "\n", style, start=0, length=48)


def test_md_b_keeps_one_layout_through_a_dump():
    current = render_md_b(DATA, 0x1000, layout="current").splitlines()
    older = render_md_b(DATA, 0x1000, layout="older").splitlines()
    mixed = "\n".join(current[:3] + older[3:]) + "\n"
    with pytest.raises(HexDumpError, match="line 4"):
        parse_hexdump(mixed, "md.b", start=0x1000, length=len(DATA))


# --- bounds ---


def test_a_line_too_long_is_an_error_even_before_it_ends():
    parser = HexDumpParser("xxd", start=0, length=16)
    with pytest.raises(HexDumpError, match=f"longer than {MAX_LINE}") as err:
        for _ in range(100):
            parser.feed("x" * 64)  # a board that never ends its line
    assert err.value.line == 1
    with pytest.raises(HexDumpError, match=f"longer than {MAX_LINE}"):
        parse_hexdump("ok\n" + "y" * (MAX_LINE + 1) + "\n", "md.b", start=0, length=0)


def test_endless_chatter_is_bounded():
    parser = HexDumpParser("md.b", start=0, length=16)
    with pytest.raises(HexDumpError, match="too much text that is not the dump") as err:
        for _ in range(MAX_CHATTER_LINES + 10):
            parser.feed("[    1.000] spam\n")
    assert err.value.line == MAX_CHATTER_LINES + 1
    with pytest.raises(HexDumpError, match="too much text"):
        parse_hexdump(("z" * 500 + "\n") * 200, "xxd", start=0, length=16)


def test_an_error_is_final_and_feeding_after_it_raises_it_again():
    parser = HexDumpParser("xxd", start=0, length=32)
    bad = render_xxd(bytes(32)).replace("00000010", "00000020")
    with pytest.raises(HexDumpError) as first:
        parser.feed(bad)
    with pytest.raises(HexDumpError) as again:
        parser.feed(render_xxd(bytes(32)))
    assert again.value is first.value
    with pytest.raises(HexDumpError):
        parser.finish()


def test_requests_out_of_bounds():
    with pytest.raises(HexDumpError, match="more than the 4096 allowed"):
        HexDumpParser("xxd", start=0, length=4097, max_length=4096)
    with pytest.raises(ValueError, match="unknown hex dump style"):
        HexDumpParser("od", start=0, length=1)
    with pytest.raises(ValueError):
        HexDumpParser("xxd", start=-1, length=1)
    assert issubclass(HexDumpError, ValueError)
