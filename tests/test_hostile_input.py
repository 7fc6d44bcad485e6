"""Files the harness is handed are hostile input: FIFOs, devices, huge files, wrong types and
binary that looks like text give a clear bad-input error, never a traceback, a hang or a verdict."""

from __future__ import annotations

import os
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from harness.board import load_board_config
from harness.cli import config_space_from_file
from harness.files import FileRefused, read_capped, read_head
from harness.formats.pci_config import lspci_hex_dump
from harness.yamlio import YamlError

from conftest import BOARDS, CAPTURE, PCIE_PLAN, TEST_KEY, TEST_PUB, attestlab

REFERENCE = BOARDS.parent / "references" / "nvidia-h100-sxm5-80gb.yaml"


@pytest.fixture
def fifo(tmp_path):
    path = tmp_path / "fifo"
    os.mkfifo(path)
    return path


def test_read_capped_refuses_devices_fifos_and_symlinks_to_them(tmp_path, fifo):
    link = tmp_path / "zero-link"
    link.symlink_to("/dev/zero")
    for path, kind in (("/dev/zero", "a character device"), (fifo, "a FIFO"), (link, "a character device"),
                       (tmp_path, "a directory")):
        with pytest.raises(FileRefused, match=kind):
            read_capped(path, 1024)


def test_read_capped_refuses_a_file_over_the_cap_and_reads_one_at_it(tmp_path):
    path = tmp_path / "f"
    path.write_bytes(b"x" * 100)
    assert read_capped(path, 100) == b"x" * 100
    with pytest.raises(FileRefused, match="100 bytes, more than the 99 allowed"):
        read_capped(path, 99)
    regular_link = tmp_path / "link"
    regular_link.symlink_to(path)  # a symlink to a regular file is just that file
    assert read_capped(regular_link, 100) == b"x" * 100


def test_read_head_reads_only_the_start_of_a_long_file(tmp_path, fifo):
    path = tmp_path / "long.yaml"
    path.write_bytes(b"plan:\n" + b"#" * 100_000)
    assert read_head(path, 6) == b"plan:\n"
    assert read_head(path, 10**6) == path.read_bytes()
    with pytest.raises(FileRefused, match="a FIFO"):
        read_head(fifo, 65536)


@pytest.mark.parametrize("target", ["/dev/zero", "fifo", "zero-link"])
def test_pcie_show_refuses_devices_and_fifos_without_a_traceback(tmp_path, fifo, target):
    (tmp_path / "zero-link").symlink_to("/dev/zero")
    result = attestlab("pcie", "show", target if target.startswith("/") else str(tmp_path / target), timeout=30)
    assert result.returncode == 2 and "not a regular file" in result.stderr
    assert "Traceback" not in result.stderr


def test_verify_refuses_an_evidence_blob_symlinked_to_dev_zero(tmp_path):
    run = attestlab("run", "--plan", str(PCIE_PLAN), "--board", str(BOARDS / "sim-clean.yaml"), "--key", str(TEST_KEY),
                    "--out", str(tmp_path), "--run-id", "r", "-q")
    assert run.returncode == 0, run.stdout + run.stderr
    blob = next((tmp_path / "r" / "evidence").iterdir())
    blob.unlink()
    blob.symlink_to("/dev/zero")
    result = attestlab("verify", str(tmp_path / "r" / "result.dsse.json"), "--pubkey", str(TEST_PUB), timeout=30)
    assert result.returncode == 1 and "a character device, not a regular file" in result.stderr
    assert "Traceback" not in result.stderr
    envelope = tmp_path / "r" / "result.dsse.json"
    envelope.unlink()
    os.mkfifo(envelope)
    result = attestlab("verify", str(envelope), "--pubkey", str(TEST_PUB), timeout=30)
    assert result.returncode == 1 and "a FIFO, not a regular file" in result.stderr


@pytest.mark.parametrize("option", ["--plan", "--board", "--key"])
def test_run_refuses_a_fifo_for_any_input_file(tmp_path, fifo, option):
    args = {"--plan": str(PCIE_PLAN), "--board": str(BOARDS / "sim-clean.yaml"), "--key": str(TEST_KEY)}
    args[option] = str(fifo)
    result = attestlab("run", *[x for kv in args.items() for x in kv], "--out", str(tmp_path / "out"), timeout=60)
    assert result.returncode == 2 and "Traceback" not in result.stdout + result.stderr
    assert not (tmp_path / "out").exists()  # nothing signed


# --- board configs: every field checked at load ---

def board_file(tmp_path, board_lines: str) -> str:
    path = tmp_path / "board.yaml"
    path.write_text(f"board:\n  name: b1\n  simulated: clean\n  reference: {REFERENCE}\n{board_lines}")
    return str(path)


@pytest.mark.parametrize("lines,message", [
    ("  pins: {dsn: [1, 2]}\n", "board.pins.dsn: expected a string, got a list"),
    ("  pins: {dsn: {a: 1}}\n", "board.pins.dsn: expected a string, got a mapping"),
    ("  pins: {dsn: 12}\n", "board.pins.dsn: '12' is not a Device Serial Number"),
    ("  pins: {dsn: a1df0995b82db048}\n", "is not a Device Serial Number"),
    ("  pins: [dsn]\n", "board.pins: expected a mapping, got a list"),
    ("  description: [x]\n", "board.description: expected a string, got a list"),
])
def test_wrong_board_fields_are_errors_at_load_naming_file_line_field(tmp_path, lines, message):
    path = board_file(tmp_path, lines)
    with pytest.raises(YamlError, match=message.replace("[", r"\[").replace("{", r"\{")) as err:
        load_board_config(path)
    assert str(err.value).startswith(f"{path}:5: ")


@pytest.mark.parametrize("field,value", [("name", "'my board'"), ("name", "'../x'"), ("simulated", "'../../etc'")])
def test_board_names_and_variants_must_be_plain_names(tmp_path, field, value):
    path = tmp_path / "board.yaml"
    fields = {"name": "b1", "simulated": "clean", field: value}
    path.write_text(f"board:\n  name: {fields['name']}\n  simulated: {fields['simulated']}\n  reference: {REFERENCE}\n")
    with pytest.raises(YamlError, match=f"board.{field}: .* is not a"):
        load_board_config(path)


def test_a_board_with_bad_pins_is_exit_2_and_nothing_is_signed(tmp_path):
    board = board_file(tmp_path, "  pins: {dsn: [1, 2]}\n")
    result = attestlab("run", "--plan", str(PCIE_PLAN), "--board", board, "--key", str(TEST_KEY),
                       "--out", str(tmp_path / "out"))
    assert result.returncode == 2
    assert "board.pins.dsn: expected a string, got a list" in result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    assert not (tmp_path / "out").exists()


def test_the_record_binds_the_digest_of_the_bytes_that_were_parsed(tmp_path):
    import hashlib
    path = board_file(tmp_path, "  pins: {dsn: A1-DF-09-95-B8-2D-B0-48}\n")
    config = load_board_config(path)
    assert config.sha256 == hashlib.sha256(open(path, "rb").read()).hexdigest()
    assert config.pins == {"dsn": "A1-DF-09-95-B8-2D-B0-48"}


# --- `pcie show`: text or binary ---

H100_CONFIG = (CAPTURE / "sysfs" / "config").read_bytes() if (CAPTURE / "sysfs" / "config").is_file() else None


def test_lspci_text_and_its_binary_give_the_same_bytes():
    text = (CAPTURE / "lspci-xxxx.txt").read_bytes()
    raw = config_space_from_file(text)
    assert len(raw) == 4096
    assert config_space_from_file(raw) == raw
    assert config_space_from_file(lspci_hex_dump(raw, "41:00.0").encode()) == raw


@settings(max_examples=300, deadline=None)
@given(size=st.sampled_from([64, 256, 4096]), head=st.sampled_from([b"ab:", b"41:00.0 ", b"00: 10 de", b"0000:41:00.0 3D"]),
       data=st.data())
def test_binary_config_spaces_that_start_like_lspci_text_are_binary(size, head, data):
    body = data.draw(st.binary(min_size=size - len(head), max_size=size - len(head)))
    # at least one byte no text file holds
    where = data.draw(st.integers(len(head), size - 1))
    raw = bytearray(head + body)
    raw[where] = data.draw(st.sampled_from([0x00, 0x01, 0x7F, 0x80, 0xDE, 0xFF]))
    assert config_space_from_file(bytes(raw)) == bytes(raw)


def test_a_binary_dump_starting_with_a_bdf_is_decoded_as_binary_by_the_command(tmp_path):
    raw = bytearray(4096)
    raw[0:8] = b"41:00.0 "  # vendor 0x3134, device 0x303a ... and then binary
    raw[8:12] = struct.pack("<I", 0x03020000 | 0xA1)
    path = tmp_path / "config"
    path.write_bytes(bytes(raw))
    result = attestlab("pcie", "show", str(path))
    assert result.returncode == 0, result.stderr
    assert "3134:303a" in result.stdout and "4096 bytes" in result.stdout
