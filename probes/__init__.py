"""Probes: one module per kind of evidence.

A probe module has a docstring (what it checks, why, what it reads, when it fails) and:
- `collect(board, params, evidence) -> Observation`: reads the board through its interfaces
  only, adds raw evidence to the EvidenceStore as soon as it has it, and raises ProbeError
  (→ ERROR) when it cannot collect;
- `PARAMS`: the parameters a plan step may give, with their defaults;
- `CHECKS`: named checks `check(observation, expected) -> CheckResult`, pure functions of
  the observation and the expectation (inline in the plan or from the reference profile).
Probes know nothing of plans, signing or archives.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Callable, Mapping

from harness.verdict import CheckResult, Observation

# Every probe module, by plan name. A capability adds its probes here.
PROBES: tuple[str, ...] = (
    "pcie_identity",
    "pcie_capabilities",
    "firmware_dump",
    "option_rom",
    "vendor_attestation",
    "console_audit",
    "egress",
    "usb_descriptors",
    "debug_port",
    "security_state",
)

Check = Callable[[Observation, Any], CheckResult]


@dataclass(frozen=True)
class Probe:
    name: str
    collect: Callable[..., Observation]
    checks: Mapping[str, Check]
    params: Mapping[str, Any]
    doc: str


def get_probe(name: str) -> Probe:
    if name not in PROBES:
        raise KeyError(f"unknown probe {name!r} (known: {', '.join(PROBES)})")
    module = importlib.import_module(f"probes.{name}")
    return Probe(name=name, collect=module.collect, checks=MappingProxyType(dict(module.CHECKS)),
                 params=MappingProxyType(dict(getattr(module, "PARAMS", {}))),
                 doc=(module.__doc__ or "").strip())


def step_problem(probe: str, check: str, params: Mapping[str, Any]) -> str | None:
    """Why a step's probe/check/params cannot run, or None. Used to validate plans on load."""
    try:
        spec = get_probe(probe)
    except KeyError as exc:
        return str(exc.args[0])
    if check not in spec.checks:
        return f"probe {probe!r} has no check {check!r} (known: {', '.join(spec.checks)})"
    unknown = sorted(set(params) - set(spec.params))
    if unknown:
        known = ", ".join(spec.params) or "none"
        return f"probe {probe!r} takes no parameter {unknown[0]!r} (known: {known})"
    return None
