"""vendor_attestation — does the GPU's own signed report say it runs the firmware the product released?

What: reads an NVIDIA GPU attestation report (what NVML's `nvmlDeviceGetConfComputeGpuAttestationReport`
returns: the SPDM GET_MEASUREMENTS request with the lab's nonce and the GPU's signed MEASUREMENTS
response, as NVIDIA's hex text or raw bytes) and the GPU's certificate chain (PEM, leaf first) from
the files the plan step names, verifies it (harness/formats/nvidia_attestation.py: well-formed
exchange, the nonce the lab asked with, the chain to the device root the reference pins, the P-384
signature, the firmware id the leaf was issued for) at the time given, and compares its
measurement blocks with golden values: NVIDIA RIMs the reference pins (each verified under the RIM
root the reference pins, harness/formats/rim.py) and the profile's own `firmware.components`
measured at an `spdm_measurement_index`.

Why: the board's processors run firmware the host never sees; its own signed measurements, under
a key NVIDIA's device CA certified, are the only evidence of it short of a dump. A report can be
replayed (an old nonce), forged (another root), altered (a flipped bit) or true but for other
firmware; only all of these checks together say "this GPU runs the released firmware now".

Params: `report` and `chain` (paths; relative to the working directory), `nonce` (the 32 bytes
the lab asked with: 64 hex digits, or the path of a file holding them, which the bench's collector
writes with the report; a fresh random one per run, or the report proves no freshness),
`at` (ISO 8601 time with zone at which certificates must be valid; default: now).

Reference (`firmware.vendor_attestation`; pinned files are {file, sha256}, file relative to the
profile, harness/reference/bundle.py):
    device_root: {file, sha256} or {pem: PEM}   NVIDIA's device identity root
    rim_root:    {file, sha256} or {pem: PEM}   the root of NVIDIA's RIM signers (with `rims`)
    rims:        [{file, sha256}, ...]           the driver's and VBIOS's RIMs for this product

Evidence: the report and the chain files as read (`vendor/nvidia-attestation-report`,
`vendor/nvidia-attestation-chain.pem`), stored by digest before anything is parsed.

Check report_verifies:
- PASS: the report verifies (every step above), naming the leaf, root, nonce, driver and VBIOS.
- FAIL: it does not (a wrong signature, nonce, chain, root, firmware id, or malformed bytes): the
  GPU's evidence is not authentic, which a lying board and a tampered report look like.
- ERROR: the chain file is missing or unreadable, the nonce or time are not given properly, or the
  reference's device root is missing, not pinned, not the pinned bytes or not valid at `at`.
- SKIP: no report file (none named, or none there: NVML collection is not built yet).
Check measurements_match_reference:
- FAIL for every block that is none of its golden alternatives, every block a reference marks
  active that the report lacks, each named with its index, the reference entry's name, the
  expected alternatives, the measured value and the reference (RIM tagId, version, signer).
- ERROR when nothing vouches for a reported block (no reference marks its index active: "no
  reference", never PASS, never FAIL by itself; named beside any FAIL), when a RIM does not verify
  or two references claim one index, or when the report did not verify (report_verifies FAILs).
- SKIP as report_verifies.
Caution: a matching report proves the GPU ran released firmware when it answered; it does not
prove the report came from the card in this slot (bind the leaf's identity to the board) or that
NVIDIA has not revoked the key since (no CRL/OCSP offline).
"""

from __future__ import annotations

import re
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from harness.board import display_path
from harness.evidence import EvidenceStore
from harness.files import read_capped
from harness.formats.golden import Golden, GoldenError, ReferenceSource, compare_measurements, merge_golden
from harness.formats.nvidia_attestation import MAX_REPORT, AttestationError, parse_report_hex, verify_report
from harness.formats.rim import RimError, verify_rim
from harness.formats.x509chain import ChainError, MAX_PEM, load_pem_anchor
from harness.reference.bundle import pin_problem, read_pinned
from harness.verdict import CheckResult, MissingReference, Observation, ProbeError

PARAMS: dict[str, Any] = {
    "report": None,   # path of the attestation report (NVIDIA's hex text, or raw bytes); none: SKIP
    "chain": None,    # path of the GPU's certificate chain, PEM, leaf first
    "nonce": None,    # the 32-byte nonce the lab asked with: 64 hex digits, or a file holding them
    "at": None,       # ISO 8601 time with zone at which to verify; none: now
}

SECTION = "firmware.vendor_attestation"
REPORT_EVIDENCE = "vendor/nvidia-attestation-report"
CHAIN_EVIDENCE = "vendor/nvidia-attestation-chain.pem"
_NONCE = re.compile(r"^[0-9a-fA-F]{64}$")
_RAW_REQUEST = b"\x11\xe0"  # SPDM 1.1 GET_MEASUREMENTS: a raw report begins with it, hex text never does
_MAX_REPORT_FILE = 4 * MAX_REPORT  # hex text with line breaks


# --- the reference section ---------------------------------------------------------------------

def _anchor_problem(node: Any, where: str) -> str | None:
    if isinstance(node, dict) and set(node) == {"pem"}:
        return None if isinstance(node["pem"], str) else f"reference {where}.pem must be PEM text"
    return pin_problem(node, where)


def section_problems(section: Any) -> list[str]:
    """What is wrong with a `firmware.vendor_attestation` section ([] when usable)."""
    if not isinstance(section, dict):
        return [f"reference {SECTION} must be a mapping (device_root, rim_root, rims), got {section!r}"]
    unknown = sorted(set(section) - {"device_root", "rim_root", "rims", "comment"})
    problems = [f"reference {SECTION} has no field {k!r} (known: device_root, rim_root, rims)" for k in unknown]
    if "device_root" not in section:
        problems.append(f"no reference for {SECTION}.device_root: the NVIDIA device identity root that the GPU's "
                        f"chain must lead to")
    else:
        problems.append(_anchor_problem(section["device_root"], f"{SECTION}.device_root"))
    rims = section.get("rims")
    if rims is not None:
        if not isinstance(rims, list):
            problems.append(f"reference {SECTION}.rims must be a list of pinned files, got {rims!r}")
        else:
            problems += [pin_problem(rim, f"{SECTION}.rims[{n}]") for n, rim in enumerate(rims)]
            if rims and "rim_root" not in section:
                problems.append(f"no reference for {SECTION}.rim_root: the root the RIMs' signers must lead to")
    if "rim_root" in section:
        problems.append(_anchor_problem(section["rim_root"], f"{SECTION}.rim_root"))
    return [p for p in problems if p]


def _anchor_pem(reference: Any, node: dict[str, Any], where: str) -> bytes:
    if "pem" in node:
        return node["pem"].encode("ascii", "replace")
    return read_pinned(reference, node, where, MAX_PEM)


def _golden(reference: Any, section: dict[str, Any], at: datetime) -> tuple[dict[int, Golden], list[str]]:
    """The golden table from the pinned RIMs and the profile's SPDM components, and each reason
    it could not be built (a RIM that does not verify is the reference's fault: ERROR)."""
    tables, problems = [], []
    rims = section.get("rims") or []
    try:
        root = _anchor_pem(reference, section["rim_root"], f"{SECTION}.rim_root") if rims else b""
    except MissingReference as exc:
        return {}, [str(exc)]
    for n, pin in enumerate(rims):
        where = f"{SECTION}.rims[{n}] ({pin['file']})"
        try:
            tables.append(verify_rim(read_pinned(reference, pin, where), rim_root_pem=root, at=at).golden)
        except MissingReference as exc:
            problems.append(str(exc))
        except RimError as exc:
            problems.append(f"{where} does not verify at {at.isoformat()}: {exc}")
    signer = getattr(getattr(reference, "signed_by", None), "signer", None) or "nobody"
    own: dict[int, Golden] = {}
    for c in getattr(reference, "components", ()):
        if c.measured_at[0] != "spdm_measurement_index":
            continue
        if c.digest_algorithm != "sha384":
            problems.append(f"firmware.components {c.name}: a {c.digest_algorithm} digest cannot be compared with "
                            f"the report's SHA-384 measurement blocks; give it as sha384")
            continue
        source = ReferenceSource("reference profile", display_path(reference.path), c.version, signer)
        own[c.measured_at[1]] = Golden(c.measured_at[1], (bytes.fromhex(c.digest),), True, f"component {c.name}",
                                       source)
    try:
        merged = merge_golden(*tables, own)
    except GoldenError as exc:
        problems.append(str(exc))
        merged = {}
    return merged, problems


# --- collect -----------------------------------------------------------------------------------

def _time(value: Any) -> datetime:
    if value is None:
        return datetime.now(timezone.utc)
    if isinstance(value, datetime):
        when = value
    else:
        try:
            when = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
        except ValueError:
            raise ProbeError(f"vendor_attestation: at {value!r} is not an ISO 8601 time") from None
    if when.tzinfo is None:
        raise ProbeError(f"vendor_attestation: at {value!r} has no zone: end it with Z or +HH:MM")
    return when.astimezone(timezone.utc)


def _params(params: dict[str, Any]) -> tuple[str | None, str | None, bytes | None, datetime]:
    for key in ("report", "chain", "nonce"):
        if params.get(key) is not None and (not isinstance(params[key], str) or not params[key].strip()):
            raise ProbeError(f"vendor_attestation: {key} must be text, got {params[key]!r}")
    nonce = params.get("nonce")
    if nonce is not None and not _NONCE.match(nonce):  # the path of a file holding it, as the collector wrote it
        try:
            text = read_capped(nonce, 1024).decode("ascii", "replace").strip()
        except OSError as exc:
            raise ProbeError(f"vendor_attestation: nonce must be the 32 bytes asked with, as 64 hex digits or a file "
                             f"holding them; {nonce!r}: cannot read: {exc.strerror or exc}") from None
        if not _NONCE.match(text):
            raise ProbeError(f"vendor_attestation: nonce file {nonce} must hold the 32 bytes asked with, as 64 hex "
                             f"digits, got {text[:80]!r}")
        nonce = text
    return params.get("report"), params.get("chain"), bytes.fromhex(nonce) if nonce else None, _time(params.get("at"))


def _report_bytes(data: bytes) -> bytes:
    return data if data.startswith(_RAW_REQUEST) else parse_report_hex(data)


def collect(board: Any, params: dict[str, Any], evidence: EvidenceStore) -> Observation:
    report_path, chain_path, nonce, at = _params(params)
    reference = getattr(board, "reference", None)
    facts: dict[str, Any] = {"report_file": report_path, "chain_file": chain_path, "at": at.isoformat(),
                             "reference_profile": display_path(reference.path) if reference else None,
                             "reference_signer": getattr(getattr(reference, "signed_by", None), "signer", None)}
    if report_path is None:
        return Observation("vendor_attestation", {**facts, "unavailable": "no attestation report given (the step's "
                           "`report` param; reading it from NVML is not built yet)"})
    try:
        data = read_capped(report_path, _MAX_REPORT_FILE)
    except FileNotFoundError:
        return Observation("vendor_attestation", {**facts, "unavailable": f"no attestation report at {report_path}"})
    except OSError as exc:
        raise ProbeError(f"vendor_attestation: report {report_path}: cannot read: {exc.strerror or exc}") from None
    refs = [evidence.add(REPORT_EVIDENCE, data)]
    facts["evidence"] = {"report": refs[0].sha256}
    if not data.strip():
        raise ProbeError(f"vendor_attestation: report {report_path} is empty: nothing was captured")
    if chain_path is None:
        raise ProbeError("vendor_attestation: a report without its certificate chain cannot be verified: give `chain`")
    try:
        chain = read_capped(chain_path, MAX_PEM)
    except OSError as exc:
        raise ProbeError(f"vendor_attestation: chain {chain_path}: cannot read: {exc.strerror or exc}") from None
    refs.append(evidence.add(CHAIN_EVIDENCE, chain, "application/x-pem-file"))
    facts["evidence"]["chain"] = refs[1].sha256
    if nonce is None:
        raise ProbeError("vendor_attestation: the nonce the lab asked with is needed to tell a fresh report from "
                         "a replayed one: give `nonce`")
    facts["nonce"] = nonce.hex()
    if reference is None:
        raise MissingReference(f"no reference for {SECTION}: the board has no reference profile")
    section = reference.lookup(SECTION)
    problems = section_problems(section)
    if problems:
        raise MissingReference("; ".join(problems))
    root = _anchor_pem(reference, section["device_root"], f"{SECTION}.device_root")
    try:
        anchor = load_pem_anchor(root, f"{SECTION}.device_root")
    except ChainError as exc:
        raise MissingReference(f"no usable reference for {SECTION}.device_root: {exc}") from None
    if not anchor.not_valid_before_utc <= at <= anchor.not_valid_after_utc:
        raise MissingReference(f"{SECTION}.device_root {anchor.subject.rfc4514_string()} is not valid at "
                               f"{at.isoformat()}: the lab's pinned root cannot vouch for anything then")
    observation = Observation("vendor_attestation", facts, tuple(refs))
    try:
        report = verify_report(_report_bytes(data), chain, nonce=nonce, device_root_pem=root, at=at)
    except AttestationError as exc:
        facts.update(verified=False, not_verified=str(exc))
        return observation
    facts.update(verified=True, report={
        "leaf": report.chain.leaf_subject, "anchor": report.chain.anchor.subject.rfc4514_string(),
        "driver_version": report.driver_version, "vbios_version": report.vbios_version,
        "project": report.opaque.text("project"), "chip_sku": report.opaque.text("chip_sku"),
        "blocks": {str(i): v.hex() for i, v in sorted(report.measurements.items())}})
    golden, problems = _golden(reference, section, at)
    mismatches = compare_measurements(report.measurements, golden)
    facts.update(reference_problems=problems,
                 references=sorted({g.source.describe() for g in golden.values() if g.active}),
                 matched=sorted(i for i, g in golden.items() if g.active and report.measurements.get(i) in g.alternatives),
                 mismatches=[{"kind": m.kind, "index": m.index, "name": m.name, "expected": list(m.expected),
                              "measured": m.measured, "reference": m.source.describe() if m.source else None,
                              "explain": m.explain()} for m in mismatches])
    return observation


# --- checks ------------------------------------------------------------------------------------

def _precheck(observation: Observation, expected: Any) -> CheckResult | None:
    """The verdict that comes before any comparison (a bad reference, no report), or None."""
    problems = section_problems(expected)
    if problems:
        return CheckResult.error(*problems, evidence=observation.evidence)
    if "unavailable" in observation.facts:
        return CheckResult.skipped(f"no vendor attestation to judge: {observation.facts['unavailable']}",
                                   evidence=observation.evidence)
    return None


def report_verifies(observation: Observation, expected: Any) -> CheckResult:
    """The report is the GPU's, signed under the pinned device root, in answer to this run's nonce."""
    early = _precheck(observation, expected)
    if early:
        return early
    facts, ev = observation.facts, observation.evidence
    source = f"report {facts['report_file']} (evidence sha256 {facts['evidence']['report']})"
    if not facts.get("verified"):
        return CheckResult.failed(f"the attestation report does not verify: {facts['not_verified']} ({source}; "
                                  f"chain {facts['chain_file']}; verified at {facts['at']})", evidence=ev)
    r = facts["report"]
    return CheckResult.passed(
        f"the attestation report verifies: signed by {r['leaf']}, chained to the pinned device root {r['anchor']} "
        f"at {facts['at']}, answering nonce {facts['nonce']} ({source})",
        f"the GPU reports driver {r['driver_version']}, VBIOS {r['vbios_version']}, project {r['project']}, "
        f"chip SKU {r['chip_sku']}", evidence=ev)


def measurements_match_reference(observation: Observation, expected: Any) -> CheckResult:
    """Every measurement block is one a signed reference names for its index, and none is missing."""
    early = _precheck(observation, expected)
    if early:
        return early
    facts, ev = observation.facts, observation.evidence
    if not facts.get("verified"):
        return CheckResult.error(f"the measurements of a report that does not verify are not judged: "
                                 f"{facts['not_verified']}", evidence=ev)
    if facts["reference_problems"]:
        return CheckResult.error(*(f"the golden values cannot be trusted: {p}" for p in facts["reference_problems"]),
                                 evidence=ev)
    mismatches = facts["mismatches"]
    findings = [m["explain"] for m in mismatches if m["kind"] != "unreferenced"]
    unjudged = [m["index"] for m in mismatches if m["kind"] == "unreferenced"]
    where = f" (evidence sha256 {facts['evidence']['report']})"
    if unjudged:
        unjudged_text = (f"no reference for measurement index(es) {', '.join(map(str, unjudged))}: no golden value "
                         f"marks them active, so they are not judged (measured values in this step's facts)")
    if findings:
        return CheckResult.failed(*(f + where for f in findings), *([unjudged_text] if unjudged else []),
                                  evidence=ev)
    if unjudged:
        return CheckResult.error(unjudged_text + where, evidence=ev)
    if not facts["matched"]:
        return CheckResult.error(f"no reference for the report's measurements: {SECTION} names no RIM and "
                                 f"firmware.components no spdm_measurement_index", evidence=ev)
    return CheckResult.passed(f"{len(facts['matched'])} measurement block(s), each one of its golden values"
                              f"{where}", *(f"from {s}" for s in facts["references"]), evidence=ev)


CHECKS = {"report_verifies": report_verifies, "measurements_match_reference": measurements_match_reference}
