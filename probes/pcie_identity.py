"""pcie_identity — is this the product it claims to be, as seen on the PCIe bus?

What: reads the function's configuration space (once, through sysfs) and the kernel's view
of it (`vendor`, `device`, `class`, `subsystem_*`, `revision`, link speed/width, driver),
decodes vendor/device/class/subsystem/revision and the Device Serial Number.

Why: a relabelled or counterfeit board (a different SKU, a re-flashed subsystem ID, a board
from another vendor's channel) is the first thing a buyer must rule out; the subsystem IDs
identify the board maker and SKU, the DSN the unit (PCIe Base Spec §7.9.3).

Evidence: the raw config-space bytes and the sysfs attribute texts, stored by digest.

Fails when: any field of the reference identity differs from what was measured (each
mismatch named with expected and measured values and the config-space offset), a per-unit
pin of the board config (`pins: {dsn: ...}`) differs, or the kernel's sysfs attributes
disagree with the config space the device returns.
Errors when: the function cannot be read, the config space is unusable, or the reference
profile has no identity.
"""

from __future__ import annotations

import json
from typing import Any

from harness.evidence import EvidenceStore
from harness.formats.pci_config import ConfigSpaceError, decode_config_space, format_dsn
from harness.verdict import CheckResult, Observation, ProbeError

PARAMS: dict[str, Any] = {}

# field → (config-space offset, width in bytes), for pointing at the evidence
CONFIG_FIELDS = {
    "vendor_id": (0x00, 2), "device_id": (0x02, 2), "revision": (0x08, 1),
    "class_code": (0x09, 3), "subsystem_vendor_id": (0x2C, 2), "subsystem_id": (0x2E, 2),
}
# sysfs attribute → decoded field it must agree with
SYSFS_FIELDS = {
    "vendor": "vendor_id", "device": "device_id", "revision": "revision", "class": "class_code",
    "subsystem_vendor": "subsystem_vendor_id", "subsystem_device": "subsystem_id",
}
LINK_FIELDS = ("max_link_speed", "max_link_width", "current_link_speed", "current_link_width")


def read_config_space(board: Any, evidence: EvidenceStore):
    """Config space as evidence plus its decoding; shared by the PCIe probes."""
    function = board.pcie
    raw = function.config_space()
    ref = evidence.add(f"pcie/{function.bdf}/config", raw)
    try:
        decoded = decode_config_space(raw)
    except ConfigSpaceError as exc:
        raise ProbeError(f"config space of {function.bdf} is unusable: {exc}") from None
    return function, raw, ref, decoded


def collect(board: Any, params: dict[str, Any], evidence: EvidenceStore) -> Observation:
    function, _, config_ref, cs = read_config_space(board, evidence)
    sysfs_text = {name: function.attribute(name) for name in (*SYSFS_FIELDS, *LINK_FIELDS)}
    sysfs_ref = evidence.add(f"pcie/{function.bdf}/sysfs-attributes.json",
                             json.dumps(sysfs_text, sort_keys=True).encode(), "application/json")
    measured = {f: getattr(cs, f) for f in CONFIG_FIELDS}
    disagreements = []
    for attr, field in SYSFS_FIELDS.items():
        text = sysfs_text[attr]
        if text is None:
            continue
        try:
            value = int(text, 16)
        except ValueError:
            disagreements.append(f"sysfs {attr} is not a hex number: {text[:40]!r}")
            continue
        if value != measured[field]:
            disagreements.append(f"sysfs {attr} says {value:#x} but the config space says {measured[field]:#x}")
    link = {name: sysfs_text[name] for name in LINK_FIELDS}
    facts = {
        "bdf": function.bdf,
        **measured,
        "dsn": format_dsn(cs.dsn) if cs.dsn is not None else None,
        "link": link,
        "driver": function.driver(),
        "config_size": cs.size,
        "sysfs_disagreements": disagreements,
        "pins": dict(board.config.pins),  # per-unit facts the board config says this unit has
    }
    return Observation("pcie_identity", facts, (config_ref, sysfs_ref))


def identity_matches_reference(observation: Observation, expected: Any) -> CheckResult:
    """Every field the reference names equals what was measured."""
    if not isinstance(expected, dict) or not expected:
        return CheckResult.error(f"reference identity must be a non-empty mapping, got {expected!r}")
    facts = observation.facts
    config = observation.evidence[0].name if observation.evidence else "config space"
    mismatches, errors, matched = [], [], []
    for field, want in expected.items():
        if field in CONFIG_FIELDS:
            if isinstance(want, bool) or not isinstance(want, int):
                errors.append(f"reference {field} must be an integer (e.g. 0x10de, unquoted), got {want!r}")
                continue
            got = facts[field]
            offset, width = CONFIG_FIELDS[field]
            if got != want:
                mismatches.append(f"{field}: expected {_hex(want, width)}, measured {_hex(got, width)} "
                                  f"({config} offset {offset:#04x})")
            else:
                matched.append(field)
        elif field in LINK_FIELDS:
            got = facts["link"].get(field)
            if got is None or str(got) != str(want):
                mismatches.append(f"{field}: expected {want!r}, measured {got!r} (sysfs {field})")
            else:
                matched.append(field)
        else:
            errors.append(f"reference identity names unknown field {field!r} "
                          f"(known: {', '.join([*CONFIG_FIELDS, *LINK_FIELDS])})")
    for pin, want in facts.get("pins", {}).items():
        if pin == "dsn":
            if facts["dsn"] is None:
                errors.append(f"this unit is pinned to DSN {want}, but no Device Serial Number could be "
                              f"read ({facts['config_size']}-byte config space; the DSN needs all 4096 bytes)")
            elif str(want).lower() != str(facts["dsn"]).lower():
                mismatches.append(f"dsn: this unit is pinned to {want}, measured {facts['dsn']} "
                                  f"(Device Serial Number capability)")
            else:
                matched.append("pinned dsn")
        else:
            errors.append(f"board config pins unknown field {pin!r} (known: dsn)")
    if errors:
        return CheckResult.error(*errors, evidence=observation.evidence)
    reasons = mismatches + [f"sysfs and config space disagree: {d}" for d in facts["sysfs_disagreements"]]
    if reasons:
        return CheckResult.failed(*reasons, evidence=observation.evidence)
    subsystem = (f"{facts['subsystem_vendor_id']:04x}:{facts['subsystem_id']:04x}"
                 if facts["subsystem_vendor_id"] is not None else "none (bridge)")
    return CheckResult.passed(
        f"identity {facts['vendor_id']:04x}:{facts['device_id']:04x} subsystem {subsystem} matches "
        f"the reference ({', '.join(matched)}); DSN {facts['dsn']}", evidence=observation.evidence)


def _hex(value: Any, width: int) -> str:
    return f"{value:#0{2 + 2 * width}x}" if isinstance(value, int) and not isinstance(value, bool) else repr(value)


CHECKS = {"identity_matches_reference": identity_matches_reference}
