"""The PCI option ROM: read through sysfs `rom` (enabled, read, always disabled again), every
image of its chain parsed and digested, and judged against the reference's images: a changed
byte, an extra image, a chain that lies about its lengths or bytes no image covers FAIL; a
function without a ROM is SKIP, never PASS. The ROMs are the simulator's (fixtures/sim/pcie.py
builds them with its own code), so the parser is checked against an independent encoder."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import struct
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fixtures.sim.pcie import build_rom, rom_digests
from harness.board import Board
from harness.evidence import EvidenceStore
from harness.formats.option_rom import MAX_IMAGES, OptionRomError, parse_option_rom
from harness.interfaces.pcie import SYSFS_PCI_DEVICES, PcieFunction, RomReadError, RomUnavailable
from harness.plan import load_plan
from harness.verdict import Observation, Verdict
from probes import option_rom

from conftest import CAPTURE, PLAN, ROOT

REFERENCE = ROOT / "fixtures" / "references" / "nvidia-h100-sxm5-80gb.yaml"   # the signed profile's payload
SIGNED_REFERENCE = ROOT / "fixtures" / "references" / "nvidia-h100-sxm5-80gb.dsse.json"
CLEAN_ROM = {"seed": "h100-oprom-96.00.DA.00.0C", "legacy_size": 0x10000, "efi_size": 0x1A000}
H100 = (0x10DE, 0x2330)


def rom_of(**changes) -> bytes:
    return b"".join(image for _, image in build_rom({"rom": {**CLEAN_ROM, **changes}}, *H100))


def small_rom(**changes) -> bytes:
    """The clean layout at 1 KiB per image: quick to mutate."""
    return rom_of(legacy_size=0x400, efi_size=0x400, **changes)


CLEAN = rom_of()
EXPECTED = rom_digests(build_rom({"rom": CLEAN_ROM}, *H100))


# --- the parser ---


def test_the_simulated_rom_parses_as_an_nvidia_chain_of_x86_and_efi_images():
    rom = parse_option_rom(CLEAN)
    assert rom.anomalies == () and rom.unparsed == 0 and rom.size == len(CLEAN)
    x86, efi = rom.images
    assert (x86.code_type, x86.offset, x86.length, x86.checksum) == (0x00, 0, 0x10000, 0)
    assert (efi.code_type, efi.offset, efi.length, efi.checksum) == (0x03, 0x10000, 0x1A000, None)
    assert (x86.pcir.vendor_id, x86.pcir.device_id) == H100
    assert x86.pcir.class_code == 0x030200 and x86.pcir.revision == 3
    assert (efi.efi.signature, efi.efi.subsystem, efi.efi.machine_type, efi.efi.image_offset) == (0x0EF1, 11, 0x8664, 0x80)
    assert efi.pcir.last and efi.npde is not None and not efi.npde.last  # NVIDIA: more images beyond the extent
    assert any("NPDE says more images follow" in note for note in rom.notes)


def test_image_digests_agree_with_the_simulator_s_own():
    rom = parse_option_rom(CLEAN)
    assert [(i.index, i.code_type, i.length, i.sha256) for i in rom.images] == [
        (e["index"], e["code_type"], e["size"], e["sha256"]) for e in EXPECTED["images"]]
    assert rom.sha256 == EXPECTED["extent"]["sha256"] == hashlib.sha256(CLEAN).hexdigest()


def test_the_npde_length_and_last_flag_replace_the_pcir_s():
    rom = bytearray(small_rom())
    struct.pack_into("<H", rom, 0x40 + 0x10, 1)  # the x86 PCIR now says 512 bytes; its NPDE still 1 KiB
    parsed = parse_option_rom(bytes(rom))
    assert parsed.images[0].length == 0x400 and parsed.images[0].pcir.image_length == 0x200
    assert any("NPDE image length 1024 bytes replaces the PCIR's 512" in n for n in parsed.notes)


def test_a_rogue_third_image_is_parsed_as_one():
    rom = parse_option_rom(small_rom(extra_image={"size": 0x400, "seed": "rogue"}))
    assert [i.code_type for i in rom.images] == [0, 3, 3] and rom.images[2].last and rom.anomalies == ()


@pytest.mark.parametrize("data, why", [
    (b"", "empty"),
    (b"\x00" * 4096, "no option ROM signature (55 AA), found 00 00"),
    (b"\x55\xaa" + b"\x00" * 10, "too few for an image header"),
    (b"\x55\xaa" + b"\x00" * 0x16 + b"\xf0\xff" + b"\x00" * 64, "points outside the ROM"),
    (b"\x55\xaa" + b"\x00" * 0x16 + b"\x20\x00" + b"\x00" * 6 + b"XXXX" + b"\x00" * 64, "no PCI data structure"),
])
def test_data_that_holds_no_rom_at_all_is_a_clear_error(data, why):
    with pytest.raises(OptionRomError, match=re.escape(why)):
        parse_option_rom(data)


def test_a_zero_length_first_image_is_an_error_and_a_later_one_an_anomaly():
    rom = bytearray(small_rom())
    struct.pack_into("<H", rom, 0x40 + 0x10, 0)
    struct.pack_into("<H", rom, 0x60 + 0x08, 0)
    with pytest.raises(OptionRomError, match="zero-length image"):
        parse_option_rom(bytes(rom))
    rom = bytearray(small_rom())
    struct.pack_into("<H", rom, 0x400 + 0x20 + 0x10, 0)
    struct.pack_into("<H", rom, 0x400 + 0x40 + 0x08, 0)
    parsed = parse_option_rom(bytes(rom))
    assert len(parsed.images) == 1 and parsed.unparsed == 0x400
    assert any("zero-length image" in a for a in parsed.anomalies)


def test_an_image_longer_than_the_rom_is_cut_off_and_said_so():
    parsed = parse_option_rom(small_rom()[:0x600])
    assert parsed.images[1].truncated and parsed.images[1].length == 0x200
    assert any("claims 1024 bytes but only 512 remain" in a for a in parsed.anomalies)


def test_bytes_after_the_last_image_belong_to_no_image():
    parsed = parse_option_rom(small_rom(extra_image={"size": 0x400, "seed": "rogue"}) + b"\xcc" * 0x200)
    assert parsed.unparsed == 0x200
    assert any("512 bytes after the last image (0xc00-0xdff) belong to no image" in a for a in parsed.anomalies)
    # after an NVIDIA EFI image (PCIR: last, NPDE: more follow) such bytes are read as the next image
    parsed = parse_option_rom(small_rom() + b"\xcc" * 0x200)
    assert parsed.unparsed == 0x200
    assert any("image 2 at 0x800: no option ROM signature (55 AA), found cc cc" in a for a in parsed.anomalies)


def test_a_chain_that_never_ends_is_followed_at_most_max_images():
    image = bytearray(small_rom()[:0x400])
    struct.pack_into("<H", image, 0x40 + 0x10, 1)
    struct.pack_into("<H", image, 0x60 + 0x08, 1)  # 512 bytes, never last
    image = image[:0x200]
    image[-1] = 0
    image[-1] = -sum(image) & 0xFF
    parsed = parse_option_rom(bytes(image) * (MAX_IMAGES + 8))
    assert len(parsed.images) == MAX_IMAGES and parsed.unparsed == 8 * 0x200
    assert any(f"more than {MAX_IMAGES} images" in a for a in parsed.anomalies)


def test_a_broken_legacy_checksum_and_a_bad_efi_signature_are_anomalies():
    rom = bytearray(small_rom())
    rom[0x300] ^= 0x10  # x86 image: checksum no longer 0
    struct.pack_into("<I", rom, 0x400 + 0x04, 0x1234)
    parsed = parse_option_rom(bytes(rom))
    text = " ".join(parsed.anomalies)
    assert "x86 image bytes sum to 0xf0 mod 256, not 0 (legacy checksum)" in text and "without the EFI signature 0x0EF1" in text


def test_a_second_image_without_a_signature_ends_the_chain_as_an_anomaly():
    rom = bytearray(small_rom())
    rom[0x400:0x402] = b"\xde\xad"
    parsed = parse_option_rom(bytes(rom))
    assert len(parsed.images) == 1 and parsed.unparsed == 0x400
    assert any("image 1 at 0x400: no option ROM signature (55 AA), found de ad" in a for a in parsed.anomalies)


def _check_invariants(data: bytes) -> None:
    try:
        rom = parse_option_rom(data)
    except OptionRomError as exc:
        assert str(exc)
        return
    assert 1 <= len(rom.images) <= MAX_IMAGES
    offset = 0
    for i, image in enumerate(rom.images):  # contiguous from 0, each digest its own bytes
        assert image.index == i and image.offset == offset and image.length > 0
        assert image.sha256 == hashlib.sha256(data[offset:offset + image.length]).hexdigest()
        offset += image.length
    assert offset + rom.unparsed == len(data) == rom.size
    assert rom.unparsed == 0 or rom.anomalies  # bytes outside every image are never silent
    rom.to_facts()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=4096))
def test_arbitrary_bytes_parse_or_raise_a_clear_error(data):
    _check_invariants(data)


HEADER_BYTES = st.tuples(st.sampled_from([0x000, 0x400, 0x800]), st.integers(0, 0x6F))  # header, PCIR, NPDE


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(HEADER_BYTES, st.integers(0, 255)), min_size=1, max_size=6), st.integers(0, 0xC00))
def test_a_valid_rom_with_hostile_header_bytes_parses_or_raises_a_clear_error(patches, cut):
    rom = bytearray(small_rom(extra_image={"size": 0x400, "seed": "rogue"}))
    for (image, at), value in patches:
        rom[image + at] = value
    _check_invariants(bytes(rom[:cut or None]))


# --- reading sysfs `rom` ---


def test_a_function_without_a_rom_file_is_rom_unavailable():
    with pytest.raises(RomUnavailable, match="no 'rom' file"):
        PcieFunction(CAPTURE / "sysfs").read_rom()


NO_ROM = [d for d in sorted(SYSFS_PCI_DEVICES.glob("*")) if not (d / "rom").exists()] \
    if SYSFS_PCI_DEVICES.is_dir() else []


@pytest.mark.skipif(not NO_ROM, reason="every PCI function here has a rom file (or there are none)")
@pytest.mark.parametrize("device", NO_ROM[:3], ids=lambda p: p.name)
def test_real_functions_without_a_rom_say_so(device):
    with pytest.raises(RomUnavailable, match="no 'rom' file"):
        PcieFunction(device).read_rom()


@pytest.fixture
def function(tmp_path):
    device = tmp_path / "0000:00:06.0"
    shutil.copytree(CAPTURE / "sysfs", device)
    return PcieFunction(device)


def test_the_rom_is_enabled_before_the_read_and_disabled_after_it(function):
    """On a plain file the writes land in the data: the read sees the enable ("1\\n"), the file
    keeps the disable ("0\\n"), and nothing was truncated: enable, read, disable, in that order."""
    (function.path / "rom").write_bytes(CLEAN)
    data = function.read_rom(enable=True)
    assert data[:2] == b"1\n" and data[2:] == CLEAN[2:]
    after = (function.path / "rom").read_bytes()
    assert after[:2] == b"0\n" and len(after) == len(CLEAN)


def test_the_rom_is_disabled_again_when_the_read_fails(function):
    (function.path / "rom").write_bytes(CLEAN)
    with pytest.raises(RomReadError, match="longer than 4096 bytes") as caught:
        function.read_rom(max_size=4096, enable=True)
    assert (function.path / "rom").read_bytes()[:2] == b"0\n"
    assert len(caught.value.data) == 4096


def test_a_read_that_outlasts_its_deadline_stops_keeps_what_it_read_and_disables(function):
    (function.path / "rom").write_bytes(CLEAN)
    with pytest.raises(RomReadError, match="the read took too long: stopped after 65536 bytes") as caught:
        function.read_rom(enable=True, timeout_s=-1)
    assert caught.value.data[2:] == CLEAN[2:0x10000]
    assert (function.path / "rom").read_bytes()[:2] == b"0\n"


def test_outside_sysfs_nothing_is_written(function):
    (function.path / "rom").write_bytes(CLEAN)
    assert function.read_rom() == CLEAN == (function.path / "rom").read_bytes()


def test_an_empty_rom_is_an_error_naming_it(function):
    (function.path / "rom").write_bytes(b"")
    with pytest.raises(RomReadError, match="read 0 bytes"):
        function.read_rom()


@pytest.mark.parametrize("enable", [True, False])
def test_a_fifo_or_directory_in_place_of_rom_is_refused_without_hanging(function, enable):
    os.mkfifo(function.path / "rom")
    with pytest.raises(RomReadError, match="cannot enable|FIFO"):
        function.read_rom(enable=enable)
    (function.path / "rom").unlink()
    (function.path / "rom").mkdir()
    with pytest.raises(RomReadError, match="directory|cannot enable"):
        function.read_rom(enable=enable)


def test_the_simulated_board_serves_its_rom_in_sysfs_unless_absent(tmp_path):
    from fixtures.sim.pcie import start
    profile = {"pcie": {"capture": "h100-sxm5-80gb-passthrough/sysfs", "rom": CLEAN_ROM}}
    settings, _ = start(profile, tmp_path / "with")
    assert PcieFunction(settings["sysfs"]).read_rom() == CLEAN
    settings, _ = start({"pcie": {**profile["pcie"], "rom": {**CLEAN_ROM, "absent": True}}}, tmp_path / "without")
    with pytest.raises(RomUnavailable):
        PcieFunction(settings["sysfs"]).read_rom()


# --- the probe and its check ---


def test_level1_reads_the_rom_in_the_firmware_integrity_requirement():
    steps = [(r.id, s.id, s.check, s.reference) for r in load_plan(PLAN).requirements for s in r.steps
             if s.probe == "option_rom"]
    assert steps == [("L1-FW-INTEGRITY", "option-rom", "images_match_reference", "firmware.option_rom")]


def test_the_reference_profile_lists_the_simulated_clean_rom():
    """The product's reference holds what `python -m fixtures.sim.pcie --profile clean --rom-digests`
    prints: the images the clean board's ROM carries, and its extent."""
    values = yaml.safe_load(REFERENCE.read_text())
    assert values["firmware"]["option_rom"] == EXPECTED


def board_with_rom(tmp_path: Path, rom: bytes | None) -> Path:
    """A board config whose PCIe function is the H100 capture plus `rom` (None: no rom file)."""
    device = tmp_path / "sys" / "0000:00:06.0"
    shutil.copytree(CAPTURE / "sysfs", device)
    if rom is not None:
        (device / "rom").write_bytes(rom)
    config = tmp_path / "board.yaml"
    config.write_text(f"board: {{name: rom-test, reference: {SIGNED_REFERENCE}}}\ninterfaces:\n  pcie: {{sysfs: {device}}}\n")
    return config


def judge(tmp_path: Path, rom: bytes | None, expected=EXPECTED):
    """The probe on a board whose PCIe function carries `rom`, then its check."""
    evidence = EvidenceStore()
    with Board.from_file(board_with_rom(tmp_path, rom)) as board:
        observation = option_rom.collect(board, {}, evidence)
    return option_rom.images_match_reference(observation, expected), evidence


def test_the_clean_rom_passes_with_the_rom_as_evidence(tmp_path):
    result, evidence = judge(tmp_path, CLEAN)
    assert result.verdict is Verdict.PASS, result.reasons
    (ref,) = [e for e in result.evidence if e.name == "pcie/option-rom.bin"]
    assert evidence.get(ref.sha256) == CLEAN
    assert "the whole ROM's sha256" in result.reasons[0]


def test_one_changed_byte_fails_naming_image_code_type_digests_and_reference(tmp_path):
    tampered = rom_of(tampered={"image": 0, "offset": 0x1234, "xor": 0x01})
    assert parse_option_rom(tampered).anomalies == ()  # checksum fixed up: only the digest tells
    result, _ = judge(tmp_path, tampered)
    assert result.verdict is Verdict.FAIL
    first = result.reasons[0]
    assert first.startswith("image 0 (x86, code type 0x00): sha256 mismatch: expected sha256 "
                            f"{EXPECTED['images'][0]['sha256']}, measured {hashlib.sha256(tampered[:0x10000]).hexdigest()}")
    assert "evidence pcie/option-rom.bin" in first and "nvidia-h100-sxm5-80gb.dsse.json" in first


def test_the_plan_step_with_the_signed_reference_fails_a_tampered_rom_naming_profile_and_signer(tmp_path):
    """level1's step as shipped, through the step runner, against the signed fixture profile
    (trusted through the suite's test trust file)."""
    from harness.runner import StepRunner
    config = board_with_rom(tmp_path, rom_of(tampered={"offset": 0x1234}))
    requirement, step = next((r, s) for r in load_plan(PLAN).requirements for s in r.steps if s.probe == "option_rom")
    with Board.from_file(config) as board:
        result = StepRunner(board, EvidenceStore()).run(requirement, step)
    assert result.verdict is Verdict.FAIL, result.reasons
    assert "nvidia-h100-sxm5-80gb.dsse.json, signed by " in result.reasons[0]
    assert result.expectation["source"] == "reference" and result.expectation["value"] == EXPECTED


def test_an_image_the_reference_does_not_list_fails(tmp_path):
    result, _ = judge(tmp_path, rom_of(extra_image={"size": 0x4000, "seed": "rogue-efi-driver"}))
    assert result.verdict is Verdict.FAIL
    assert any(r.startswith("image 2 (efi, code type 0x03): not listed in the reference") for r in result.reasons)


def test_a_missing_image_fails(tmp_path):
    only_x86 = bytearray(CLEAN[:0x10000])
    struct.pack_into("<B", only_x86, 0x60 + 0x0A, 0x80)  # NPDE: last
    only_x86[-1] = 0
    only_x86[-1] = -sum(only_x86) & 0xFF
    result, _ = judge(tmp_path, bytes(only_x86))
    assert result.verdict is Verdict.FAIL
    assert any(r.startswith("image 1 (efi, code type 0x03): missing") for r in result.reasons)


def test_without_the_extent_in_the_reference_bytes_outside_every_image_still_fail(tmp_path):
    result, _ = judge(tmp_path, CLEAN + b"\x00" * 512, {"images": EXPECTED["images"]})
    assert result.verdict is Verdict.FAIL
    assert any(r.startswith("malformed option ROM: image 2 at 0x2a000") for r in result.reasons)


def test_a_board_without_a_rom_is_skip_with_the_reason(tmp_path):
    result, _ = judge(tmp_path, None)
    assert result.verdict is Verdict.SKIP and "no 'rom' file" in result.reasons[0]


@pytest.mark.parametrize("rom, why", [
    (hashlib.sha256(b"garbage").digest() * 64, "the option ROM is no valid image chain"),
    (CLEAN + b"\x00" * 512, "malformed option ROM: image 2 at 0x2a000: no option ROM signature"),
    (CLEAN[:0x20000], "cut off by the end of the ROM"),
])
def test_hostile_roms_fail_and_keep_their_bytes_as_evidence(tmp_path, rom, why):
    result, evidence = judge(tmp_path, rom)
    assert result.verdict is Verdict.FAIL and any(why in r for r in result.reasons), result.reasons
    (ref,) = [e for e in result.evidence if e.name == "pcie/option-rom.bin"]
    assert evidence.get(ref.sha256) == rom


def test_a_rom_naming_another_device_fails_even_with_every_image_listed(tmp_path):
    rom = bytearray(CLEAN)
    struct.pack_into("<H", rom, 0x40 + 0x06, 0x2331)
    rom[0xFFFF] = 0
    rom[0xFFFF] = -sum(rom[:0x10000]) & 0xFF
    image0 = hashlib.sha256(rom[:0x10000]).hexdigest()
    reference = {"images": [{**EXPECTED["images"][0], "sha256": image0}, EXPECTED["images"][1]]}
    result, _ = judge(tmp_path, bytes(rom), reference)
    assert result.verdict is Verdict.FAIL
    assert any("its PCIR names 10de:2331, the function is 10de:2330" in r for r in result.reasons)


@pytest.mark.parametrize("reference, why", [
    ({}, "no reference for 'firmware.option_rom.images'"),
    ({"images": [{"index": 0, "code_type": 0, "size": 1, "sha256": "ab"}]}, "64 lower-case hex digits"),
    ({"images": [{"index": True, "code_type": 0, "size": 1, "sha256": "0" * 64}]}, "place in the chain"),
    ({"images": EXPECTED["images"], "extent": {"sha256": "0" * 64}}, "extent must be"),
])
def test_a_reference_of_the_wrong_shape_is_error(reference, why):
    decided = option_rom.images_match_reference(Observation("option_rom", {}), reference)
    assert decided.verdict is Verdict.ERROR and any(why in r for r in decided.reasons)
