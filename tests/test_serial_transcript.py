"""Reading a transcript back: every hostile file is a ValueError naming its line and field, and
`attestlab serial show` reads only a regular file of bounded size."""

from __future__ import annotations

import json
import math
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from harness.cli import main
from harness.interfaces.serial import Transcript

GOOD_HEAD = {"format": "attestlab.transcript", "version": 1, "source": "/dev/pts/3", "started_wall": 1.7e9,
             "clock": "monotonic seconds since start"}
GOOD_RECORD = {"dir": "rx", "t": 0.5, "wall": 1.7e9, "n": 3, "b64": "YWJj"}

hostile_values = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(), st.sampled_from([1e20, -1.0, math.nan, math.inf, 10**400]),
    st.text(max_size=8), st.sampled_from(["\ud800", "rx", "tx", "note", "YWJj", "!!", "attestlab.transcript"]),
    st.lists(st.integers(-3, 3), max_size=3), st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)


def jsonl(head, *records) -> bytes:
    dump = lambda obj: json.dumps(obj, allow_nan=True)  # noqa: E731 (NaN and Infinity, as a hostile writer may)
    return ("\n".join([dump(head), *(dump(r) for r in records)]) + "\n").encode("utf-8", "surrogatepass")


def parses_or_names_the_line(blob: bytes) -> None:
    try:
        t = Transcript.from_jsonl(blob)
    except ValueError as e:
        assert str(e).startswith("line ") or str(e) == "empty transcript", e
        return
    t.render_text(numbered=True)  # what `serial show` does with it: must not raise either


@given(st.binary(max_size=400))
def test_any_bytes_parse_or_raise_value_error(blob):
    parses_or_names_the_line(blob)


@given(st.dictionaries(st.sampled_from(sorted(GOOD_HEAD) + ["chunks"]), hostile_values))
@settings(max_examples=400)
def test_hostile_header_fields(changes):
    parses_or_names_the_line(jsonl({**GOOD_HEAD, **changes}, GOOD_RECORD))


@given(st.dictionaries(st.sampled_from(sorted(GOOD_RECORD)), hostile_values),
       st.sets(st.sampled_from(sorted(GOOD_RECORD))))
@settings(max_examples=400)
def test_hostile_record_fields(changes, dropped):
    record = {k: v for k, v in {**GOOD_RECORD, **changes}.items() if k not in dropped}
    parses_or_names_the_line(jsonl(GOOD_HEAD, GOOD_RECORD, record))


@pytest.mark.parametrize("field, value, message", [
    ("started_wall", 1e20, "line 1: 'started_wall' must be seconds from 0 to"),
    ("started_wall", math.nan, "line 1: 'started_wall' must be seconds"),
    ("started_wall", "1.7e9", "line 1: 'started_wall' must be seconds"),
    ("version", True, "line 1: 'version' must be int"),
    ("source", 7, "line 1: 'source' must be str"),
    ("source", "\ud800", "line 1: 'source' holds a lone surrogate"),
    ("chunks", [5, 2], "line 1: 'chunks' must be [start, stop]"),
])
def test_hostile_header_names_the_field(field, value, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        Transcript.from_jsonl(jsonl({**GOOD_HEAD, field: value}))


@pytest.mark.parametrize("field, value, message", [
    ("t", math.inf, "line 3: 't' must be seconds"),
    ("wall", -5, "line 3: 'wall' must be seconds"),
    ("n", 4, "line 3: 'n' is 4 but 'b64' holds 3 bytes"),
    ("n", True, "line 3: 'n' must be int"),
    ("b64", "YW=j", "line 3: 'b64' is not base64"),
    ("dir", "sideways", "line 3: 'dir' 'sideways' is not one of"),
    ("dir", None, "line 3: 'dir' must be str"),
])
def test_hostile_record_names_the_line_and_field(field, value, message):
    with pytest.raises(ValueError, match=message):
        Transcript.from_jsonl(jsonl(GOOD_HEAD, GOOD_RECORD, {**GOOD_RECORD, field: value}))


def test_structural_garbage_names_the_line():
    for blob, message in [(b"", "empty transcript"), (b"[" * 100_000, "line 1: not JSON"),
                          (jsonl(GOOD_HEAD) + b"\xff\n", "line 2: not UTF-8"),
                          (jsonl(GOOD_HEAD) + b"[1]\n", "line 2: a JSON object expected"),
                          (jsonl(GOOD_HEAD) + b"\n" + jsonl(GOOD_RECORD), "line 2: not JSON")]:
        with pytest.raises(ValueError, match=message.replace("[", r"\[")):
            Transcript.from_jsonl(blob)


def test_serial_show_refuses_what_is_not_a_bounded_regular_file(tmp_path, capsys):
    good = Transcript("x")
    good.record("rx", b"ok\r\n")
    (tmp_path / "good.jsonl").write_bytes(good.to_jsonl())
    assert main(["serial", "show", str(tmp_path / "good.jsonl")]) == 0
    assert "ok\\r\\n" in capsys.readouterr().out

    (tmp_path / "wall.jsonl").write_bytes(jsonl({**GOOD_HEAD, "started_wall": 1e20}))
    assert main(["serial", "show", str(tmp_path / "wall.jsonl")]) == 2
    assert "line 1: 'started_wall'" in capsys.readouterr().err

    assert main(["serial", "show", "/dev/zero"]) == 2
    assert "a character device, not a regular file" in capsys.readouterr().err

    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    assert main(["serial", "show", str(fifo)]) == 2  # (no writer: it must not wait for one)
    assert "a FIFO, not a regular file" in capsys.readouterr().err

    big = tmp_path / "big.jsonl"
    with open(big, "wb") as f:
        f.truncate((256 << 20) + 1)  # sparse: no disk used
    assert main(["serial", "show", str(big)]) == 2
    assert "more than the" in capsys.readouterr().err
