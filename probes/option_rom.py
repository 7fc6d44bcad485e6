"""option_rom — is the option ROM the host would run from this board one the product released?

What: reads the board's PCI expansion ROM through sysfs (the `pcie` interface's `read_rom`:
"1" written to `rom`, the ROM read, "0" written back, always), parses its chain of images
(harness/formats/option_rom.py: the 55 AA header, the PCI data structure with vendor, device,
class, code type, length and last-image flag, the EFI header, NVIDIA's NPDE extension, the legacy
x86 checksum) and takes the sha256 of each image and of the whole extent the kernel exposed.

The ROM is read twice: read-only memory that reads differently the second time is a board
showing each reader what it likes (FAIL, both reads kept as evidence).

Why: the host's UEFI firmware loads and runs the board's EFI driver from this ROM before any
operating system, with the firmware's privileges; a legacy BIOS runs the x86 image likewise. A
ROM changed by one byte, or carrying an extra image, runs code on the host that the product
never shipped, survives OS reinstalls and is invisible to the driver. Only the bytes tell.

Evidence: the ROM as read (`pcie/option-rom.bin`), stored by its sha256 the moment it is read:
also when it does not parse, and what was read when disabling the ROM failed. Facts: the
function (bdf, vendor and device from its config space), the ROM's size and sha256, per image
its offset, size, code type, sha256, PCIR, NPDE, EFI header and checksum, the anomalies of the
chain (and any image whose PCIR names another device than the function), notes that hold for
well-formed NVIDIA ROMs too; or why no ROM could be read, or why it does not parse.

Check images_match_reference (expected: the reference's `firmware.option_rom`: `images`, a list
of {index, code_type, size, sha256}, and optionally `extent`: {size, sha256} of the whole ROM):
- FAIL when the two reads differ, whatever either holds.
- FAIL for each listed image the ROM lacks or carries with another code type or sha256, for each
  image the reference does not list, for an extent whose sha256 differs, and for each anomaly of
  the chain (a chain that does not parse at all is one); unless the extent's sha256 is the
  reference's, anomalies FAIL, so bytes that no image digest covers cannot pass. Every FAIL names
  the image index, code type, expected and measured sha256, the evidence, the reference file and
  its signer.
- SKIP when the function has no `rom` file (the H100 passthrough capture: the hypervisor hides
  the ROM BAR), with the reason. A SKIP is not a pass: the requirement is reported SKIP.
- ERROR when `rom` exists but cannot be read, or cannot be disabled again (EIO, EINVAL, empty, over
  `max_size`, slower than `timeout_s`), or the reference lacks `firmware.option_rom` or gives it
  another shape.
Caution: a ROM that matches proves the host would run the released images; it does not prove
what the board's own processors run (the console firmware dump and SPDM measurements do that).
"""

from __future__ import annotations

import re
from typing import Any

from harness.board import display_path
from harness.evidence import EvidenceStore
from harness.formats.digest import sha256_hex
from harness.formats.option_rom import OptionRomError, code_type_name, parse_option_rom
from harness.interfaces.pcie import MAX_ROM_BYTES, ROM_READ_TIMEOUT_S, RomReadError, RomUnavailable
from harness.verdict import CheckResult, Observation, ProbeError

PARAMS: dict[str, Any] = {
    "max_size": MAX_ROM_BYTES,         # bytes of `rom` read at most; a longer ROM is ERROR
    "timeout_s": ROM_READ_TIMEOUT_S,   # the read stops (ERROR) once it has taken longer
}

EVIDENCE_NAME = "pcie/option-rom.bin"
REREAD_EVIDENCE_NAME = "pcie/option-rom-reread.bin"  # only when the second read differs from the first
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def _params(params: dict[str, Any]) -> tuple[int, float]:
    size = params.get("max_size", MAX_ROM_BYTES)
    if isinstance(size, bool) or not isinstance(size, int) or not 512 <= size <= 1 << 28:
        raise ProbeError(f"option_rom: max_size must be a number of bytes (512..256 MiB), got {size!r}")
    timeout = params.get("timeout_s", ROM_READ_TIMEOUT_S)
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not 0 < timeout <= 3600:
        raise ProbeError(f"option_rom: timeout_s must be seconds (0..3600), got {timeout!r}")
    return size, float(timeout)


def _identity_anomalies(images: list[dict[str, Any]], vendor: int | None, device: int | None) -> list[str]:
    """Images whose PCIR names another device than the function the ROM was read from."""
    if vendor is None or device is None:
        return []
    found = []
    for image in images:
        pcir = image["pcir"]
        if pcir["vendor_id"] != vendor or (pcir["device_id"] != device and device not in pcir["device_list"]):
            found.append(f"image {image['index']} at {image['offset']:#x}: its PCIR names "
                         f"{pcir['vendor_id']:04x}:{pcir['device_id']:04x}, the function is {vendor:04x}:{device:04x}")
    return found


def collect(board: Any, params: dict[str, Any], evidence: EvidenceStore) -> Observation:
    max_size, timeout_s = _params(params)
    function = board.pcie
    reference = getattr(board, "reference", None)
    signed_by = getattr(reference, "signed_by", None)
    facts: dict[str, Any] = {"bdf": function.bdf,
                             "reference_profile": display_path(reference.path) if reference else None,
                             "reference_signer": getattr(signed_by, "signer", None)}
    try:
        data = function.read_rom(max_size=max_size, timeout_s=timeout_s)
    except RomUnavailable as exc:
        return Observation("option_rom", {**facts, "unavailable": str(exc)})
    except RomReadError as exc:
        if exc.data:  # what was read before the ROM could not be disabled again is kept
            evidence.add(EVIDENCE_NAME, exc.data)
        raise
    ref = evidence.add(EVIDENCE_NAME, data)
    changed = _read_again(function, data, max_size, timeout_s, evidence)
    config = function.config_space()
    vendor, device = (int.from_bytes(config[0:2], "little"), int.from_bytes(config[2:4], "little")) \
        if len(config) >= 4 else (None, None)
    facts.update(function={"vendor_id": vendor, "device_id": device}, evidence=ref.name)
    if changed:
        facts["changed"] = changed
    try:
        rom = parse_option_rom(data)
    except OptionRomError as exc:
        return Observation("option_rom", {**facts, "size": len(data), "sha256": ref.sha256, "error": str(exc)},
                           (ref,))
    parsed = rom.to_facts()
    parsed["anomalies"] += _identity_anomalies(parsed["images"], vendor, device)
    return Observation("option_rom", {**facts, **parsed}, (ref,))


def _read_again(function: Any, first: bytes, max_size: int, timeout_s: float, evidence: EvidenceStore) -> str | None:
    """Why the ROM is not what it was a moment ago, or None. Read-only memory reads the same every
    time: a board that shows the ROM differently on two reads shows each reader what it likes,
    and the first read proves nothing about what the host firmware runs."""
    try:
        again = function.read_rom(max_size=max_size, timeout_s=timeout_s)
    except RomUnavailable as exc:
        raise RomReadError(f"the option ROM was read once, then not again: {exc}") from None
    except RomReadError as exc:
        if exc.data:
            evidence.add(REREAD_EVIDENCE_NAME, exc.data)
        raise
    if again == first:
        return None
    ref = evidence.add(REREAD_EVIDENCE_NAME, again)
    at = next((n for n, (a, b) in enumerate(zip(first, again)) if a != b), min(len(first), len(again)))
    return (f"the option ROM changed between two reads: first {len(first)} bytes, sha256 "
            f"{sha256_hex(first)} (evidence {EVIDENCE_NAME}), then {len(again)} bytes, sha256 {ref.sha256} "
            f"(evidence {ref.name}), first different at byte {at:#x}")


# --- the reference's `firmware.option_rom` section ---


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _reference(expected: Any) -> tuple[dict[str, Any], list[str]]:
    """The usable reference and what is wrong with it."""
    if not isinstance(expected, dict):
        return {}, [f"reference 'firmware.option_rom' must be a mapping (images, extent), got {expected!r}"]
    images = expected.get("images")
    if not isinstance(images, list) or not images:
        return {}, ["no reference for 'firmware.option_rom.images': the product's ROM images "
                    "(index, code_type, size, sha256)"]
    problems, seen = [], set()
    for k, image in enumerate(images):
        at = f"firmware.option_rom.images[{k}]"
        if not isinstance(image, dict):
            problems.append(f"reference {at} must be a mapping (index, code_type, size, sha256), got {image!r}")
            continue
        if not _is_count(image.get("index")) or image["index"] in seen:
            problems.append(f"reference {at}.index must be the image's place in the chain, once, got "
                            f"{image.get('index')!r}")
        else:
            seen.add(image["index"])
        if not _is_count(image.get("code_type")) or image["code_type"] > 0xFF:
            problems.append(f"reference {at}.code_type must be the PCIR code type (0 x86, 3 EFI, ...), got "
                            f"{image.get('code_type')!r}")
        if not isinstance(image.get("sha256"), str) or not _SHA256.match(image["sha256"]):
            problems.append(f"reference {at}.sha256 must be 64 lower-case hex digits, got {image.get('sha256')!r}")
        if not _is_count(image.get("size")):
            problems.append(f"reference {at}.size must be a number of bytes, got {image.get('size')!r}")
    extent = expected.get("extent")
    if extent is not None and (not isinstance(extent, dict) or not _is_count(extent.get("size"))
                               or not isinstance(extent.get("sha256"), str) or not _SHA256.match(extent["sha256"])):
        problems.append(f"reference firmware.option_rom.extent must be {{size, sha256}} of the whole ROM, got {extent!r}")
    return expected, problems


def _name(code_type: int) -> str:
    return f"{code_type_name(code_type)}, code type {code_type:#04x}"


def images_match_reference(observation: Observation, expected: Any) -> CheckResult:
    """Every image of the ROM is one the reference lists, at its place, with its sha256."""
    ev = observation.evidence
    ref, problems = _reference(expected)
    if problems:
        return CheckResult.error(*problems, evidence=ev)
    facts = observation.facts
    if "unavailable" in facts:
        return CheckResult.skipped(f"no option ROM to judge: {facts['unavailable']}", evidence=ev)
    signer = facts.get("reference_signer")
    source = f"reference {facts.get('reference_profile')}" + (f", signed by {signer}" if signer else "")
    listed = sorted(ref["images"], key=lambda image: image["index"])
    if "changed" in facts:  # whatever either read holds, the host may be shown a third
        return CheckResult.failed(f"{facts['changed']}; {source}", evidence=ev)
    if "error" in facts:
        wanted = "; ".join(f"image {w['index']} ({_name(w['code_type'])}) sha256 {w['sha256']}" for w in listed)
        return CheckResult.failed(
            f"the option ROM is no valid image chain: {facts['error']}; measured {facts['size']} bytes, sha256 "
            f"{facts['sha256']} (evidence {facts['evidence']}); {source} lists {wanted}", evidence=ev)
    images = facts["images"]
    findings, passed = [], []
    for want in listed:
        i = want["index"]
        label = f"image {i} ({_name(want['code_type'])})"
        got = images[i] if i < len(images) else None
        if got is None:
            findings.append(f"{label}: missing: expected sha256 {want['sha256']} ({want['size']} bytes), the ROM has "
                            f"{len(images)} image(s) (evidence {facts['evidence']}; {source})")
        elif got["code_type"] != want["code_type"] or got["sha256"] != want["sha256"]:
            what = "code type and sha256 differ" if got["code_type"] != want["code_type"] else "sha256 mismatch"
            size = f", expected {want['size']} bytes" if got["size"] != want["size"] else ""
            findings.append(f"{label}: {what}: expected sha256 {want['sha256']}, measured {got['sha256']} "
                            f"({_name(got['code_type'])}, {got['size']} bytes at {got['offset']:#x}{size}; evidence "
                            f"{facts['evidence']}; {source})")
        else:
            passed.append(f"{label}: sha256 {got['sha256']} ({got['size']} bytes at {got['offset']:#x})")
    indices = {w["index"] for w in listed}
    for got in images:
        if got["index"] not in indices:
            findings.append(f"image {got['index']} ({_name(got['code_type'])}): not listed in the reference: "
                            f"measured sha256 {got['sha256']}, {got['size']} bytes at {got['offset']:#x} (evidence "
                            f"{facts['evidence']}; {source} lists images {sorted(indices)})")
    extent = ref.get("extent")
    extent_matches = extent is not None and extent["sha256"] == facts["sha256"] and extent["size"] == facts["size"]
    if extent is not None and not extent_matches:
        findings.append(f"the whole ROM ({facts['size']} bytes as the kernel exposes it): sha256 mismatch: expected "
                        f"{extent['sha256']} ({extent['size']} bytes), measured {facts['sha256']} (evidence "
                        f"{facts['evidence']}; {source})")
    anomalies = facts["anomalies"]
    if anomalies and not extent_matches:  # bytes no reference digest vouches for decide nothing in favour
        findings.extend(f"malformed option ROM: {a}" for a in anomalies)
    if findings:
        return CheckResult.failed(*findings, evidence=ev)
    also = [f"as released, with its anomalies: {a}" for a in anomalies]
    whole = f"; the whole ROM's sha256 {facts['sha256']} is the reference's" if extent_matches else ""
    return CheckResult.passed(f"{len(images)} option ROM image(s), each the reference's{whole} ({source})",
                              *passed, *also, evidence=ev)


CHECKS = {"images_match_reference": images_match_reference}
