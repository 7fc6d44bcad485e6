"""Verdicts and the plain-data results of a step: what every probe, check and report shares.

Order of severity (the worst one decides a requirement and a run):
PASS < SKIP < ERROR < FAIL. A FAIL is a definite finding against the board, so it outranks
an ERROR (undecided); an ERROR is never a PASS.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any, Iterable


class Verdict(str, enum.Enum):
    PASS = "PASS"
    SKIP = "SKIP"
    ERROR = "ERROR"
    FAIL = "FAIL"

    @property
    def severity(self) -> int:
        return _SEVERITY[self]

    @classmethod
    def worst(cls, verdicts: Iterable["Verdict"]) -> "Verdict":
        """The worst verdict; no verdicts at all cannot pass, so they are ERROR."""
        verdicts = list(verdicts)
        if not verdicts:
            return cls.ERROR
        return max(verdicts, key=lambda v: v.severity)


_SEVERITY = {Verdict.PASS: 0, Verdict.SKIP: 1, Verdict.ERROR: 2, Verdict.FAIL: 3}


@dataclass(frozen=True)
class EvidenceRef:
    """A pointer to one evidence blob, stored by its sha256."""

    name: str
    sha256: str
    size: int
    media_type: str = "application/octet-stream"

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "sha256": self.sha256, "size": self.size, "media_type": self.media_type}


@dataclass(frozen=True)
class Observation:
    """What a probe collected: facts (JSON-able plain data) and the raw evidence they came from."""

    probe: str
    facts: dict[str, Any]
    evidence: tuple[EvidenceRef, ...] = ()


@dataclass(frozen=True)
class CheckResult:
    """A check's decision: a verdict, the reasons for it, and the evidence it rests on."""

    verdict: Verdict
    reasons: tuple[str, ...] = ()
    evidence: tuple[EvidenceRef, ...] = ()

    @classmethod
    def passed(cls, *reasons: str, evidence: Iterable[EvidenceRef] = ()) -> "CheckResult":
        return cls(Verdict.PASS, tuple(reasons), tuple(evidence))

    @classmethod
    def failed(cls, *reasons: str, evidence: Iterable[EvidenceRef] = ()) -> "CheckResult":
        return cls(Verdict.FAIL, tuple(reasons), tuple(evidence))

    @classmethod
    def error(cls, *reasons: str, evidence: Iterable[EvidenceRef] = ()) -> "CheckResult":
        return cls(Verdict.ERROR, tuple(reasons), tuple(evidence))

    @classmethod
    def skipped(cls, *reasons: str, evidence: Iterable[EvidenceRef] = ()) -> "CheckResult":
        return cls(Verdict.SKIP, tuple(reasons), tuple(evidence))


@dataclass(frozen=True)
class StepResult:
    """One plan step as run: which probe and check, the verdict, why, and the evidence.

    `expectation` says what the check compared against and where that came from: the board's
    reference profile (`source: reference`, key, profile path and sha256) or the plan's own
    `expect:` (`source: plan`, line), with the value's sha256 and the value itself.
    """

    requirement: str
    step: str
    probe: str
    check: str
    verdict: Verdict
    reasons: tuple[str, ...]
    evidence: tuple[EvidenceRef, ...]
    facts: dict[str, Any] = field(default_factory=dict)
    started: str = ""
    finished: str = ""
    expectation: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "requirement": self.requirement,
            "step": self.step,
            "probe": self.probe,
            "check": self.check,
            "verdict": self.verdict.value,
            "reasons": list(self.reasons),
            "evidence": [e.to_json() for e in self.evidence],
            "facts": self.facts,
            "expectation": self.expectation,
            "started": self.started,
            "finished": self.finished,
        }


class ProbeError(Exception):
    """A probe could not collect what it needs (timeout, disconnect, malformed data): ERROR.

    Evidence already written to the EvidenceStore before the error stays there and is kept.
    """


class MissingReference(ProbeError):
    """The board's reference profile lacks a value a check needs: ERROR, never PASS."""
