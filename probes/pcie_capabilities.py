"""pcie_capabilities — does the function expose only the capabilities the product declares?

What: walks the standard and extended capability lists of the configuration space (as lspci
does, following the linked lists) and inventories every capability: ID, name, version, offset.

Why: a capability the product is not declared to have is a hidden function: a Data Object
Exchange mailbox (DOE, PCIe 6.0 §6.30) or a vendor-specific capability can carry a debug or
management channel (e.g. SPDM, vendor commands) that nobody reviewed. A malformed list
(loops, pointers into the header) is how a device hides entries from naive walkers.

Evidence: the raw config-space bytes, stored by digest; the inventory in the facts.

Fails when: a capability is not in the reference's allowed set (named with ID, name and
offset), a required one is missing, or the capability lists are malformed.
Errors when: the configuration space is truncated (non-root reads of sysfs return only
64 or 256 bytes), or the reference profile has no allowed set.
"""

from __future__ import annotations

from typing import Any

from harness.evidence import EvidenceStore
from harness.verdict import CheckResult, Observation
from probes.pcie_identity import read_config_space

PARAMS: dict[str, Any] = {}

_EXPRESS = 0x10


def collect(board: Any, params: dict[str, Any], evidence: EvidenceStore) -> Observation:
    function, _, config_ref, cs = read_config_space(board, evidence)
    is_express = cs.capability(_EXPRESS, False) is not None
    facts = {
        "bdf": function.bdf,
        "config_size": cs.size,
        "express": is_express,
        "extended_readable": cs.size >= 4096,
        "capabilities": [
            {"offset": c.offset, "id": c.id, "version": c.version, "extended": c.extended, "name": c.name}
            for c in cs.capabilities
        ],
        "anomalies": list(cs.anomalies),
    }
    return Observation("pcie_capabilities", facts, (config_ref,))


def _id_set(expected: dict, key: str) -> set[int] | str:
    values = expected.get(key, [])
    if not isinstance(values, list) or not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        return f"reference {key!r} must be a list of capability IDs (integers), got {values!r}"
    return set(values)


def _describe(cap: dict) -> str:
    kind = f"extended {cap['id']:#06x}" if cap["extended"] else f"standard {cap['id']:#04x}"
    version = f" v{cap['version']}" if cap["version"] is not None else ""
    return f"{cap['name']} ({kind}{version}) at offset {cap['offset']:#x}"


def capabilities_within_allowed(observation: Observation, expected: Any) -> CheckResult:
    """Every capability on the lists is allowed; every required one is present; lists well formed.

    expected: {"allowed": {"standard": [ids], "extended": [ids]},
               "required": {"standard": [ids], "extended": [ids]}}  (required is optional)
    """
    ev = observation.evidence
    if not isinstance(expected, dict) or not isinstance(expected.get("allowed"), dict):
        return CheckResult.error(f"reference must give 'allowed' capability IDs, got {expected!r}", evidence=ev)
    facts = observation.facts
    # 64 bytes hold no capability list at all; 256 hold no extended list for a PCIe device.
    # Non-root sysfs reads return 64 (sometimes 256) bytes: an inventory from them decides nothing.
    if facts["config_size"] < 256 or (facts["express"] and not facts["extended_readable"]):
        return CheckResult.error(
            f"configuration space truncated: got {facts['config_size']} bytes of {facts['bdf']}'s "
            f"config space, the capability lists need {'256' if facts['config_size'] < 256 else '4096'} "
            f"(reading all of it through sysfs needs root)", evidence=ev)
    sets = {}
    for section in ("allowed", "required"):
        part = expected.get(section) or {}
        for kind in ("standard", "extended"):
            ids = _id_set(part, kind)
            if isinstance(ids, str):
                return CheckResult.error(f"{section}: {ids}", evidence=ev)
            sets[section, kind] = ids
    reasons = []
    present = {("extended" if c["extended"] else "standard", c["id"]) for c in facts["capabilities"]}
    for cap in facts["capabilities"]:
        kind = "extended" if cap["extended"] else "standard"
        if cap["id"] not in sets["allowed", kind]:
            reasons.append(f"unexpected capability {_describe(cap)}: the product is not declared to have it")
    for kind in ("standard", "extended"):
        for cap_id in sorted(sets["required", kind] - {i for k, i in present if k == kind}):
            reasons.append(f"required {kind} capability {cap_id:#x} is missing")
    reasons += [f"capability list malformed: {a}" for a in facts["anomalies"]]
    if reasons:
        return CheckResult.failed(*reasons, evidence=ev)
    names = ", ".join(sorted({c["name"] for c in facts["capabilities"]}))
    return CheckResult.passed(f"{len(facts['capabilities'])} capabilities, all allowed: {names}", evidence=ev)


CHECKS = {"capabilities_within_allowed": capabilities_within_allowed}
