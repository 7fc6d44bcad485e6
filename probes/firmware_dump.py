"""firmware_dump — is the board running the product's released firmware, and not an older one?

What: over the board's debug console (the `serial` interface), asks the running firmware
version (`version`, parsed with `version_regex`) and reads each firmware region (`dump
<region>`, the dumpframe protocol of harness/formats/dumpframe.py): frames with CRCs, the
frames that arrive damaged or not at all asked for again (at most `dump_max_rounds` RESEND
rounds, a setting of the console), the image's length and sha256 checked against the board's
BEGIN record. A board config may choose another transfer its console already has
(`interfaces.serial.transfer`, harness/interfaces/serial_transfer.py): ZMODEM/YMODEM from the
shell's lrzsz `sz`, a strict hex dump (`md.b`, `hexdump -C`, `xxd`), or an image file the lab read
off the board with the vendor's tool — the last is lower-strength evidence, and every reason
about such an image says so. It hashes each image whole (sha256) and in `block_size` blocks.

Why: a board can carry a modified VBIOS or InfoROM (an implant, a debug build, a flipped
security bit) that still reports the released version string; only the bytes tell. A board
can also be rolled back to an older, genuinely signed image with known vulnerabilities; its
signature is valid, so only a minimum version (anti-rollback) catches it. The BEGIN record's
sha256 comes from the board itself and proves the transfer only: whether the image is one the
product released is decided against the reference profile's digests.

Evidence: each image as read (`firmware/<region>.bin`, stored by its sha256 the moment it is
verified) and the console transcript of the probe's work (`serial/firmware_dump-transcript.jsonl`,
every byte both ways with timestamps; stored also when a dump fails). Facts: the version
answer and the parsed version, and per region the size, sha256, per-block sha256 list and the
transfer statistics (frames, RESEND rounds, damaged records), or why its dump failed.

Checks (expected: the reference's `firmware` section, see docs/serial.md):
- digests_match_reference: every region the reference lists was read and its sha256 is one of
  the product's known images. Fails naming the region, the expected and measured sha256 and
  where the first differing byte lies (the first `block_size` block whose digest differs from
  the reference image of the version the console reports). Errors when a region could not be
  read (with the transcript kept) or has no reference.
- version_not_below_minimum: the version the console reports is not below the reference's
  `minimum_version`, compared component by component as (hex) numbers (96.00.DA.00.0C); and
  when the `version_region` image is a known release, that release is the reported version
  and not below the minimum either (a board that reports the new version while running an
  old image fails). Errors when the version cannot be read or compared.
Errors when (both): the console cannot be opened or lost, or the reference lacks `firmware`
("no reference for …").
"""

from __future__ import annotations

import re
from typing import Any

from harness.evidence import EvidenceStore
from harness.formats.digest import sha256_hex
from harness.formats.fwversion import VersionError, compare_versions, parse_version
from harness.interfaces.serial import ConsoleError
from harness.interfaces.serial_dump import SUPPLIED_FILE
from harness.interfaces.serial_transfer import TransferSettingsError, transfer_config
from harness.verdict import CheckResult, Observation, ProbeError
from probes._console import ConsoleSession

PARAMS: dict[str, Any] = {
    "regions": None,                 # region names to read; None: those the reference lists (firmware.regions)
    "version_command": "version",    # console command that prints the running firmware version
    "version_regex": r"(?i)\bversion\s*[:=]?\s*(?P<version>[0-9A-Za-z][0-9A-Za-z._-]*)",
    "block_size": 4096,              # bytes per block digest (must equal the reference's block_size)
}

_REGION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def _params(board: Any, params: dict[str, Any]) -> tuple[list[str], str, re.Pattern, int]:
    regions = params.get("regions")
    if regions is None:
        listed = board.reference.lookup("firmware.regions")  # MissingReference → ERROR "no reference for …"
        if not isinstance(listed, dict) or not listed:
            raise ProbeError(f"firmware_dump: the reference's firmware.regions must map region names to their "
                             f"known images, got {listed!r}")
        regions = list(listed)
    if isinstance(regions, str) or not isinstance(regions, list) or not regions:
        raise ProbeError(f"firmware_dump: regions must be a non-empty list of region names, got {regions!r}")
    for name in regions:
        if not isinstance(name, str) or not _REGION.match(name):
            raise ProbeError(f"firmware_dump: region name {name!r} is not a plain name (letters, digits, _ . -)")
    if len(set(regions)) != len(regions):
        raise ProbeError(f"firmware_dump: regions lists a region twice: {regions!r}")
    command = params.get("version_command")
    if not isinstance(command, str) or not command.strip() or "\n" in command or "\r" in command:
        raise ProbeError(f"firmware_dump: version_command must be one console command, got {command!r}")
    try:
        version_rx = re.compile(str(params.get("version_regex")))
    except re.error as exc:
        raise ProbeError(f"firmware_dump: version_regex {params.get('version_regex')!r} is not a regex: {exc}") from None
    if "version" not in version_rx.groupindex:
        raise ProbeError("firmware_dump: version_regex needs a named group (?P<version>...)")
    block = params.get("block_size")
    if isinstance(block, bool) or not isinstance(block, int) or not 1 <= block <= 1 << 24:
        raise ProbeError(f"firmware_dump: block_size must be a number of bytes (1..16 MiB), got {block!r}")
    return regions, command.strip(), version_rx, block


def _method(console: Any) -> str:
    """The transfer the board config chose (a bad setting is the region's error, said there)."""
    try:
        return transfer_config(console.config.get("transfer")).method
    except TransferSettingsError:
        return "unusable"


def strength_note(dump: dict[str, Any]) -> str:
    """How a region's image reads in a reason: nothing for an image attestlab read off the board
    itself; a label for an image file the lab supplied (as good as the lab's chain of custody)."""
    if dump.get("strength") != SUPPLIED_FILE:
        return ""
    tool = (dump.get("provenance") or {}).get("tool") or "an unnamed tool"
    return (f" (an image file the lab supplied, read off the board by {tool}; not read by attestlab: "
            f"lower-strength evidence)")


def block_digests(data: bytes, block_size: int) -> list[str]:
    """sha256 of each `block_size` block of `data` (the last one may be shorter)."""
    view = memoryview(data)
    return [sha256_hex(view[i : i + block_size]) for i in range(0, len(data), block_size)]


def collect(board: Any, params: dict[str, Any], evidence: EvidenceStore) -> Observation:
    regions, version_command, version_rx, block_size = _params(board, params)
    session = ConsoleSession(board, evidence, "firmware_dump")
    console = session.console
    images = []
    dumps: dict[str, dict[str, Any]] = {}
    try:
        try:
            console.sync()
            chunk = len(console.transcript)
            answer = console.command(version_command)
        except ConsoleError as exc:
            raise session.failed(exc, f"asking the firmware version with {version_command!r}") from None
        m = version_rx.search(answer)
        version = {"command": version_command, "output": answer, "regex": version_rx.pattern,
                   "version": m.group("version") if m else None, "where": session.where(chunk)}
        for name in regions:
            chunk = len(console.transcript)
            try:
                result = console.dump_region(name)
            except ConsoleError as exc:
                # This region stays unread (its check is ERROR); the board is told ABORT and the
                # next region is tried once the prompt is back. A console that is gone ends the probe.
                dumps[name] = {"region": name, "method": _method(console), "error": str(exc),
                               "where": session.where(chunk)}
                try:
                    console.sync()
                except ConsoleError as lost:
                    raise session.failed(lost, f"the console did not come back after the failed dump of "
                                               f"{name!r} ({exc})") from None
                continue
            ref = evidence.add(f"firmware/{name}.bin", result.data)
            images.append(ref)
            dumps[name] = {**result.to_facts(), "blocks": block_digests(result.data, block_size),
                           "evidence": ref.name, "where": session.where(chunk)}
    finally:
        transcript = session.store()
    facts = {"console": console.url, "version": version, "block_size": block_size, "regions": regions,
             "dumps": dumps, "transcript": transcript.name}
    return Observation("firmware_dump", facts, (*images, transcript))


# --- the reference's `firmware` section ---


def _reference(expected: Any) -> tuple[dict[str, Any], list[str]]:
    """The usable parts of the `firmware` reference and what is wrong with it."""
    if not isinstance(expected, dict):
        return {}, [f"reference 'firmware' must be a mapping (regions, minimum_version, ...), got {expected!r}"]
    problems = []
    regions = expected.get("regions")
    if not isinstance(regions, dict) or not regions:
        return expected, ["no reference for 'firmware.regions': the product's known images per region"]
    block = expected.get("block_size", 4096)
    if isinstance(block, bool) or not isinstance(block, int) or block <= 0:
        problems.append(f"reference firmware.block_size must be a positive integer, got {block!r}")
    for name, spec in regions.items():
        where = f"firmware.regions.{name}"
        images = spec.get("images") if isinstance(spec, dict) else None
        if not isinstance(images, list) or not images:
            problems.append(f"reference {where}.images must list the region's known images, got {images!r}")
            continue
        for i, image in enumerate(images):
            at = f"{where}.images[{i}]"
            if not isinstance(image, dict):
                problems.append(f"reference {at} must be a mapping (version, size, sha256, blocks)")
                continue
            if not isinstance(image.get("sha256"), str) or not _SHA256.match(image["sha256"]):
                problems.append(f"reference {at}.sha256 must be 64 lower-case hex digits, got {image.get('sha256')!r}")
            if not isinstance(image.get("version"), str) or not image["version"].strip():
                problems.append(f"reference {at}.version must be the image's version string, got {image.get('version')!r}")
            size = image.get("size")
            if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 0):
                problems.append(f"reference {at}.size must be a number of bytes, got {size!r}")
            blocks = image.get("blocks")
            if blocks is not None and (not isinstance(blocks, list)
                                       or not all(isinstance(b, str) and _SHA256.match(b) for b in blocks)):
                problems.append(f"reference {at}.blocks must be a list of sha256 digests (64 hex digits each)")
    return expected, problems


def _known(spec: dict[str, Any], sha256: str) -> dict[str, Any] | None:
    return next((img for img in spec["images"] if img["sha256"] == sha256), None)


def _same_version(a: str | None, b: str) -> bool:
    if a is None:
        return False
    try:
        return compare_versions(a, b) == 0
    except VersionError:
        return a.strip() == b.strip()


def _size(n: int) -> str:
    return f"{n >> 10} KiB" if n % 1024 == 0 and n >= 1024 else f"{n}-byte"


def _first_difference(name: str, dump: dict[str, Any], facts_block: int, image: dict[str, Any],
                      ref_block: int) -> str:
    """Where the first differing byte lies, from the block digests."""
    ref_blocks = image.get("blocks")
    if not ref_blocks:
        return (f"the reference lists no block digests for {name} {image['version']}, so the first differing "
                f"byte cannot be located")
    if facts_block != ref_block:
        return (f"cannot locate the first differing byte: the reference's blocks are {ref_block} bytes, the step "
                f"hashed {facts_block}-byte blocks (set the step's params.block_size: {ref_block})")
    mine = dump["blocks"]
    size, ref_size = dump["size"], image.get("size")
    differing = [i for i in range(min(len(mine), len(ref_blocks))) if mine[i] != ref_blocks[i]]
    unit = _size(ref_block)
    if differing:
        i = differing[0]
        start, end = i * ref_block, min((i + 1) * ref_block, size) - 1
        more = (f"; {len(differing)} of {min(len(mine), len(ref_blocks))} blocks differ" if len(differing) > 1
                else "; no other block differs" if len(mine) == len(ref_blocks) else "")
        return (f"the first differing byte lies in {start:#x}-{end:#x} ({unit} block {i}, the first whose sha256 "
                f"differs: expected {ref_blocks[i]}, measured {mine[i]}){more}")
    if len(mine) != len(ref_blocks) or (ref_size is not None and ref_size != size):
        common = min(size, ref_size if ref_size is not None else len(ref_blocks) * ref_block)
        return (f"the first differing byte is at offset {common:#x}: every block agrees up to there, then the "
                f"lengths differ ({size} bytes measured, {ref_size} expected)")
    return "every block digest matches, yet the whole-image sha256 differs: the reference's blocks are wrong"


def digests_match_reference(observation: Observation, expected: Any) -> CheckResult:
    """Every region the reference lists was read, and its sha256 is a known image of the product."""
    ev = observation.evidence
    ref, problems = _reference(expected)
    if problems:
        return CheckResult.error(*problems, evidence=ev)
    facts = observation.facts
    reported = facts["version"]["version"]
    dumps = facts["dumps"]
    ref_block = ref.get("block_size", 4096)
    findings, errors, passed = [], [], []
    for name in facts["regions"]:
        if name not in ref["regions"]:
            errors.append(f"no reference for region {name!r} (firmware.regions.{name}): its image cannot be judged")
    for name, spec in ref["regions"].items():
        dump = dumps.get(name)
        if dump is None:
            errors.append(f"{name}: the reference lists this region but it was not read (the step's regions: "
                          f"{', '.join(facts['regions'])})")
            continue
        if "error" in dump:
            errors.append(f"{name}: the dump could not be completed: {dump['error']} (transcript: evidence "
                          f"{facts['transcript']}, from {dump['where']})")
            continue
        known = _known(spec, dump["sha256"])
        if known is not None:
            passed.append(f"{name}: sha256 {dump['sha256']} is the known image {known['version']} "
                          f"({dump['size']} bytes, evidence {dump['evidence']}){strength_note(dump)}")
            continue
        images = spec["images"]
        target = next((img for img in images if _same_version(reported, img["version"])), None)
        why = "the version the console reports" if target is not None else "the reference's first image"
        target = target or images[0]
        others = len(images) - 1
        also = f"; none of the {others} other known image(s) of {name} matches either" if others else ""
        size_note = (f", expected {target['size']} bytes"
                     if target.get("size") is not None and target["size"] != dump["size"] else "")
        findings.append(
            f"{name}: sha256 mismatch: expected {target['sha256']} (release {target['version']}, {why}), "
            f"measured {dump['sha256']} ({dump['size']} bytes{size_note}, evidence {dump['evidence']}){also}; "
            f"{_first_difference(name, dump, facts['block_size'], target, ref_block)}{strength_note(dump)}")
    if findings:
        return CheckResult.failed(*findings, *errors, evidence=ev)
    if errors:
        return CheckResult.error(*errors, *passed, evidence=ev)
    return CheckResult.passed(*passed, evidence=ev)


def version_not_below_minimum(observation: Observation, expected: Any) -> CheckResult:
    """The reported version (and the version-region image's known release) is not below the minimum."""
    ev = observation.evidence
    if not isinstance(expected, dict):
        return CheckResult.error(f"reference 'firmware' must be a mapping with minimum_version, got {expected!r}",
                                 evidence=ev)
    minimum = expected.get("minimum_version")
    if minimum is None:
        return CheckResult.error("no reference for 'firmware.minimum_version': the product's anti-rollback floor",
                                 evidence=ev)
    facts = observation.facts
    v = facts["version"]
    answer = v["output"].strip().replace("\n", " | ")[:300]
    if v["version"] is None:
        return CheckResult.error(
            f"could not read the running version: {v['command']!r} answered '{answer}', which has no match for "
            f"/{v['regex']}/ (evidence {v['where']})", evidence=ev)
    try:
        minimum_v = parse_version(str(minimum))
    except VersionError as exc:
        return CheckResult.error(f"reference firmware.minimum_version is unusable: {exc}", evidence=ev)
    try:
        order = compare_versions(v["version"], minimum_v)
    except VersionError as exc:
        return CheckResult.error(f"cannot compare the running version with the minimum {minimum}: {exc} "
                                 f"({v['command']!r} answered '{answer}', evidence {v['where']})", evidence=ev)
    findings = []
    if order < 0:
        findings.append(f"running version {v['version']} is below the minimum {minimum} (anti-rollback): "
                        f"{v['command']!r} answered '{answer}' (evidence {v['where']})")
    # Corroborate with the image itself: a known release's version is known from the reference.
    region = expected.get("version_region")
    image_note = "no firmware.version_region in the reference, so only the console's report was compared"
    # (a reference without version_region opts out of corroboration explicitly; level1's has one)
    if region is not None:
        _, problems = _reference(expected)
        spec = (expected.get("regions") or {}).get(region)
        dump = facts["dumps"].get(region)
        if problems or not isinstance(spec, dict):
            return CheckResult.error(*(problems or [f"no reference for 'firmware.regions.{region}' (the version_region)"]),
                                     evidence=ev)
        known = _known(spec, dump["sha256"]) if dump and "sha256" in dump else None
        if known is None:
            state = ("was not read" if dump is None else "could not be read" if "error" in dump
                     else "is no known release")
            if not findings:  # the console's word alone never passes anti-rollback
                return CheckResult.error(
                    f"cannot corroborate the reported version {v['version']}: the {region} image {state} "
                    f"(L1-FW-INTEGRITY judges the image); a board's own report is not enough to pass", evidence=ev)
        else:
            note = strength_note(dump)
            image_note = (f"the {region} image is the known release {known['version']} (evidence "
                          f"{dump['evidence']}){note}")
            if not _same_version(v["version"], known["version"]):
                findings.append(f"the console reports version {v['version']} but the {region} image is the known "
                                f"release {known['version']} (sha256 {dump['sha256']}, evidence {dump['evidence']})"
                                f"{note}")
            try:
                if compare_versions(known["version"], minimum_v) < 0:
                    findings.append(f"the {region} image is release {known['version']}, below the minimum {minimum} "
                                    f"(anti-rollback; evidence {dump['evidence']}){note}")
            except VersionError as exc:
                return CheckResult.error(f"cannot compare the {region} image's release with the minimum: {exc}",
                                         evidence=ev)
    if findings:
        return CheckResult.failed(*findings, evidence=ev)
    return CheckResult.passed(f"running version {v['version']} is not below the minimum {minimum} "
                              f"(evidence {v['where']}); {image_note}", evidence=ev)


CHECKS = {
    "digests_match_reference": digests_match_reference,
    "version_not_below_minimum": version_not_below_minimum,
}
