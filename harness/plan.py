"""Test plans: a YAML file → a validated, immutable Plan.

A plan says *what* must hold for a product class (requirements) and *how* each is checked
(steps: a probe collects evidence, a named check decides against an expectation). It knows
nothing about boards or interfaces: the same plan runs on a bench board or a simulated one.
See docs/plan-format.md for the format, with a worked example.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.files import read_capped
from harness.yamlio import MAX_YAML_BYTES, Section, YamlError, load_yaml_text

PlanError = YamlError  # a bad plan is reported like any other bad YAML file: file:line: field: why

_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


@dataclass(frozen=True)
class Step:
    id: str
    probe: str
    check: str
    params: dict[str, Any] = field(default_factory=dict)
    expect: Any = None          # an inline expectation, or
    reference: str | None = None  # a dotted key into the board's reference profile
    title: str = ""
    line: int = 0


@dataclass(frozen=True)
class Requirement:
    id: str
    title: str
    rationale: str
    steps: tuple[Step, ...]
    line: int = 0


@dataclass(frozen=True)
class Plan:
    id: str
    version: str
    title: str
    scheme: str
    requirements: tuple[Requirement, ...]
    path: str
    sha256: str

    def requirement(self, requirement_id: str) -> Requirement:
        for req in self.requirements:
            if req.id == requirement_id:
                return req
        raise KeyError(requirement_id)


def _checked_id(section: Section, key: str) -> str:
    value = section.text(key)
    if not _ID.match(value):
        raise section.error(key, f"{value!r} is not a valid id (letters, digits, _ . -; at most 64)")
    return value


def _step(data: Any, source: str, path: str, line: int) -> Step:
    sec = Section(data, source, path, line)
    sec.reject_unknown({"id", "title", "probe", "check", "params", "expect", "reference"})
    params = sec.mapping("params", required=False)
    if sec.has("expect") and sec.has("reference"):
        raise sec.error("reference", "give either 'expect' (inline) or 'reference' (a key of the "
                                     "board's reference profile), not both")
    reference = sec.text("reference", required=False)
    if reference is not None and not re.match(r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$", reference):
        raise sec.error("reference", f"{reference!r} is not a dotted key such as 'pcie.identity'")
    return Step(
        id=_checked_id(sec, "id"),
        title=sec.text("title", required=False, default="") or "",
        probe=sec.text("probe"),
        check=sec.text("check"),
        params=dict(params.data) if params else {},
        expect=sec.raw("expect"),
        reference=reference,
        line=sec.line,
    )


def _requirement(data: Any, source: str, path: str, line: int) -> Requirement:
    sec = Section(data, source, path, line)
    sec.reject_unknown({"id", "title", "rationale", "steps"})
    steps = tuple(_step(item, source, p, ln) for item, p, ln in sec.sequence("steps"))
    if not steps:
        raise sec.error("steps", "a requirement needs at least one step")
    seen: set[str] = set()
    for step, (_, p, ln) in zip(steps, sec.sequence("steps")):
        if step.id in seen:
            raise YamlError(f"{source}:{ln}: {p}.id: duplicate step id {step.id!r}")
        seen.add(step.id)
    return Requirement(
        id=_checked_id(sec, "id"),
        title=sec.text("title"),
        rationale=sec.text("rationale"),
        steps=steps,
        line=sec.line,
    )


def parse_plan(text: str, source: str) -> Plan:
    """Validate plan text; raises PlanError naming file, line and field.

    The digest is over the text's UTF-8 bytes: for a file, exactly its bytes (UTF-8 decoding
    round-trips). Results bind it, and `attestlab verify --plan` compares it."""
    doc = load_yaml_text(text, source)
    if doc is None:
        raise YamlError(f"{source}: the plan is empty")
    top = Section(doc, source)
    top.reject_unknown({"plan", "requirements"})
    meta = top.mapping("plan")
    meta.reject_unknown({"id", "version", "title", "scheme", "description"})
    requirements = tuple(_requirement(item, source, p, ln) for item, p, ln in top.sequence("requirements"))
    if not requirements:
        raise top.error("requirements", "a plan needs at least one requirement")
    seen: set[str] = set()
    for req in requirements:
        if req.id in seen:
            raise YamlError(f"{source}:{req.line}: requirements: duplicate requirement id {req.id!r}")
        seen.add(req.id)
    return Plan(
        id=_checked_id(meta, "id"),
        version=meta.text("version"),
        title=meta.text("title"),
        scheme=meta.text("scheme"),
        requirements=requirements,
        path=source,
        sha256=hashlib.sha256(text.encode("utf-8")).hexdigest(),
    )


def load_plan(path: str | Path) -> Plan:
    path = Path(path)
    try:
        text = read_capped(path, MAX_YAML_BYTES).decode("utf-8")
    except OSError as exc:
        raise YamlError(f"{path}: cannot read plan: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise YamlError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    return parse_plan(text, str(path))
