"""security_state — does the board say it is in its production security state?

What: one vendor-defined control transfer to the board's USB device (the `usb` interface: the
board's management controller), exactly as the product's reference profile describes it
(`usb.security_state.request`: bmRequestType, bRequest, wValue, wIndex, wLength). The response
is decoded with the reference's field layout (harness/formats/register_layout.py: offset, size,
bit, a table of named values, a format byte that must have its value): the lifecycle state
(development / production / return), the secure-boot enable, the debug-lock fuse and the fused
root-of-trust key hash.

Why: a production board has left development (lifecycle production), verifies what it boots
(secure boot on), has its debug access fused shut (debug lock) and trusts only the vendor's
root key (its hash fused). A board still in development lifecycle, with secure boot off or a
foreign root key runs whatever its owner signed.

Caution: this readout is the board's own claim, answered by the firmware being judged. A board
whose firmware lies reports production, secure boot on and debug locked whatever its fuses say.
It is weaker evidence than a measurement: the `debug-unlocked` simulated board claims its debug
lock is set while probes/debug_port.py reads its memory over SWD; that real read is what
decides L1-DEBUG-LOCKED. Each PASS here says it rests on the board's own report.

The request is made twice (two transfers): a readout of fuses answers both alike; one that answers
a second read otherwise FAILs every check, both answers kept.

Evidence: the responses as received (`usb/security-state.bin` and `usb/security-state-2.bin`,
each stored the moment it arrives) and every USB transfer of the device so far (`usb/transfers.pcapng`, also when the request
fails). Facts: the device's location, the request, the response (hex, length) and its fields
as the reference's layout decodes them (or why it does not).

Checks (each expected: the reference's `usb.security_state`: request, length, fields, expect):
- lifecycle_production: the `lifecycle` field's name equals `expect.lifecycle`; FAIL naming
  both (e.g. `lifecycle: expected production, measured development (0x01, …)`), also for a
  value the layout's table does not name.
- secure_boot_enabled, debug_locked: the `secure_boot` / `debug_lock` bit is set (the
  reference's `expect` must say true); FAIL naming the byte and bit.
- root_key_matches: the `root_key_hash` field's hex equals `expect.root_key_hash`; FAIL naming
  expected and measured.
- each FAILs when the second read's bytes differ from the first's ("answers differently to a
  second read").
Errors when: the reference lacks `usb.security_state` or gives it another shape (a layout that
does not parse, an expectation of the wrong type), the board has no `usb` interface, the
request (either read) stalls, times out or the device is gone, or the response is not the layout (another
length, a format byte with another value). Never a PASS without the response as evidence.
"""

from __future__ import annotations

import re
from typing import Any

from harness.evidence import EvidenceStore
from harness.formats.register_layout import (DecodedField, LayoutError, RegisterError, decode_registers,
                                             parse_layout)
from harness.verdict import CheckResult, EvidenceRef, Observation, ProbeError

PARAMS: dict[str, Any] = {}

SECTION = "usb.security_state"
EVIDENCE_NAME = "usb/security-state.bin"
SECOND_EVIDENCE_NAME = "usb/security-state-2.bin"
TRANSFERS_NAME = "usb/transfers.pcapng"
_REQUEST_FIELDS = ("request_type", "request", "value", "index", "length")
_HEX = re.compile(r"^[0-9a-fA-F]+$")
CLAIM = "as the board reports it itself (its own claim, not a measurement)"


def _request(section: Any) -> dict[str, int]:
    """The control request the reference describes, validated: an IN request of vendor or class type."""
    request = section.get("request") if isinstance(section, dict) else None
    if not isinstance(request, dict) or set(request) != set(_REQUEST_FIELDS):
        raise ProbeError(f"reference {SECTION}.request must be {{{', '.join(_REQUEST_FIELDS)}}}, got {request!r}")
    limits = {"request_type": 0xFF, "request": 0xFF, "value": 0xFFFF, "index": 0xFFFF, "length": 4096}
    for name, top in limits.items():
        value = request[name]
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= top:
            raise ProbeError(f"reference {SECTION}.request.{name} must be an integer 0..{top:#x}, got {value!r}")
    kind = request["request_type"] & 0x60
    if not request["request_type"] & 0x80 or kind not in (0x20, 0x40) or not request["length"]:
        raise ProbeError(f"reference {SECTION}.request must read (device to host, bmRequestType bit 7) a class "
                         f"or vendor request of at least one byte, got bmRequestType "
                         f"{request['request_type']:#04x}, wLength {request['length']}")
    return dict(request)


def keep_transfers(device: Any, evidence: EvidenceStore) -> EvidenceRef | None:
    """Every transfer of `device` so far as evidence; None when even that cannot be had (the cause
    of the step's ERROR is then already in its reason)."""
    try:
        return evidence.add(TRANSFERS_NAME, device.transfers_pcapng(), "application/vnd.tcpdump.pcapng")
    except Exception:  # noqa: BLE001 - what failed the step is the reason; this must not replace it
        return None


def collect(board: Any, params: dict[str, Any], evidence: EvidenceStore) -> Observation:
    section = board.reference.lookup(SECTION)  # MissingReference / UntrustedReference → ERROR
    request = _request(section)
    device = board.interface("usb").device()
    facts: dict[str, Any] = {"device": dict(device.location), "request": request}
    answers = []
    # Asked twice: a readout is the state of fuses, not of a conversation; one that changes between two
    # reads answers whatever it likes (what it said first, or to whoever asks first, is not the state).
    for name in (EVIDENCE_NAME, SECOND_EVIDENCE_NAME):
        try:
            data = device.control_in(request["request_type"], request["request"], request["value"],
                                     request["index"], request["length"])
        except ProbeError as exc:
            keep_transfers(device, evidence)
            which = "" if name == EVIDENCE_NAME else f" (its second read; the first is kept as {EVIDENCE_NAME})"
            raise ProbeError(f"the security-state request (bmRequestType {request['request_type']:#04x}, bRequest "
                             f"{request['request']:#04x}) got no answer{which}: {exc}") from None
        answers.append(evidence.add(name, data))
        facts.setdefault("responses", []).append(bytes(data).hex())
    response = answers[0]
    refs = tuple(r for r in (*answers, keep_transfers(device, evidence)) if r is not None)
    data = bytes.fromhex(facts["responses"][0])
    facts.update(response=facts["responses"][0], length=len(data), evidence=response.name)
    try:
        facts["fields"] = decode_registers(parse_layout(section.get("length"), section.get("fields")), data).to_facts()
    except (LayoutError, RegisterError) as exc:  # the checks say so, with the reference beside it
        facts["format_error"] = str(exc)
    return Observation("security_state", facts, refs)


# --- the checks: one field each, decoded again from the response with the reference's layout ---


def _field(observation: Observation, expected: Any, name: str) -> tuple[DecodedField | None, Any, str | None]:
    """The decoded field, what the reference expects of it, or why neither can be had."""
    if not isinstance(expected, dict):
        return None, None, f"reference {SECTION} must be a mapping (request, length, fields, expect), got {expected!r}"
    try:
        layout = parse_layout(expected.get("length"), expected.get("fields"))
    except LayoutError as exc:
        return None, None, f"reference {SECTION}: {exc}"
    spec = layout.field(name)
    expect = expected.get("expect")
    if spec is None or not isinstance(expect, dict) or name not in expect:
        return None, None, (f"reference {SECTION} must place field {name!r} (fields.{name}) and say its value "
                            f"(expect.{name})")
    response = observation.facts.get("response")
    responses = observation.facts.get("responses")
    if not isinstance(response, str) or (response and not _HEX.match(response)) or not isinstance(responses, list) \
            or len(responses) != 2 or responses[0] != response:
        return None, None, (f"no security-state response to judge (two reads of it; facts: "
                            f"{sorted(observation.facts)})")
    try:
        decoded = decode_registers(layout, bytes.fromhex(response))
    except RegisterError as exc:
        return None, None, (f"the security-state response ({len(response) // 2} bytes, evidence {EVIDENCE_NAME}) "
                            f"is not the reference's format: {exc}")
    return decoded.get(name), expect[name], None


def _where(field: DecodedField) -> str:
    spec = field.spec
    place = f"bit {spec.bit} of " if spec.bit is not None else ""
    raw = f" {field.raw.hex()}" if spec.kind != "bytes" else ""  # a digest is already the measured value
    return f"{place}offset {spec.offset}, {spec.size} byte(s){raw} of {EVIDENCE_NAME}"


def _judge(observation: Observation, expected: Any, name: str, label: str) -> CheckResult:
    ev = observation.evidence
    field, want, problem = _field(observation, expected, name)
    if problem:
        return CheckResult.error(problem, evidence=ev)
    assert field is not None
    first, second = observation.facts["responses"]
    if first != second:
        at = next(i for i in range(min(len(first), len(second)) // 2 + 1)
                  if first[2 * i:2 * i + 2] != second[2 * i:2 * i + 2])
        return CheckResult.failed(
            f"the security-state readout answers differently to a second read: {len(first) // 2} bytes then "
            f"{len(second) // 2}, first differing at offset {at} ({first[2 * at:2 * at + 8] or 'nothing'} then "
            f"{second[2 * at:2 * at + 8] or 'nothing'}; {EVIDENCE_NAME}, {SECOND_EVIDENCE_NAME}): a state that changes "
            f"between two reads is not the board's state", evidence=ev)
    kind = field.spec.kind
    if kind == "enum":
        table = dict(field.spec.values or ())
        if not isinstance(want, str) or want not in table.values():
            return CheckResult.error(f"reference {SECTION}.expect.{name} must be one of the names of "
                                     f"fields.{name}.values ({', '.join(table.values())}), got {want!r}", evidence=ev)
        measured = field.name or f"{field.value:#x}, a value the reference does not name"
        ok = field.name == want
        said = f"{label}: expected {want}, measured {measured} ({_where(field)})"
    elif kind == "bit":
        if want is not True:
            return CheckResult.error(f"reference {SECTION}.expect.{name} must be true: this check passes only a "
                                     f"set {label} bit, got {want!r}", evidence=ev)
        ok = field.value is True
        said = f"{label}: expected set, measured {'set' if ok else 'clear'} ({_where(field)})"
    elif kind == "bytes":
        if not isinstance(want, str) or not _HEX.match(want) or len(want) != 2 * field.spec.size:
            return CheckResult.error(f"reference {SECTION}.expect.{name} must be {2 * field.spec.size} hex digits "
                                     f"(fields.{name} is {field.spec.size} bytes), got {want!r}", evidence=ev)
        ok = field.value == want.lower()
        said = f"{label}: expected {want.lower()}, measured {field.value} ({_where(field)})"
    else:
        return CheckResult.error(f"reference {SECTION}.fields.{name} must be a bit, a named value or bytes, "
                                 f"not a constant", evidence=ev)
    if not ok:
        return CheckResult.failed(said, evidence=ev)
    return CheckResult.passed(f"{said}, {CLAIM}", evidence=ev)


def lifecycle_production(observation: Observation, expected: Any) -> CheckResult:
    """The lifecycle state the board reports is the reference's (production)."""
    return _judge(observation, expected, "lifecycle", "lifecycle")


def secure_boot_enabled(observation: Observation, expected: Any) -> CheckResult:
    """The board reports secure boot enabled."""
    return _judge(observation, expected, "secure_boot", "secure boot")


def debug_locked(observation: Observation, expected: Any) -> CheckResult:
    """The board reports its debug-lock fuse set."""
    return _judge(observation, expected, "debug_lock", "debug lock")


def root_key_matches(observation: Observation, expected: Any) -> CheckResult:
    """The root-of-trust key hash the board reports is the reference's."""
    return _judge(observation, expected, "root_key_hash", "root key hash")


CHECKS = {
    "lifecycle_production": lifecycle_production,
    "secure_boot_enabled": secure_boot_enabled,
    "debug_locked": debug_locked,
    "root_key_matches": root_key_matches,
}
