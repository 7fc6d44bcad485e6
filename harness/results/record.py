"""The RunRecord (plain data of one run) and its in-toto Statement v1.

One run → one Statement: subjects are the board identity and every evidence blob (sha256);
the predicate is the RunRecord. See docs/results-format.md.
"""

from __future__ import annotations

import hashlib
import platform
import socket
import sys
from dataclasses import dataclass
from typing import Any

from harness import __version__
from harness.plan import Plan, Step
from harness.results.canonical import canonical_json, plain_json
from harness.verdict import EvidenceRef, StepResult, Verdict

RECORD_TYPE = "https://attestlab.dev/RunRecord/v1"
STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
BOARD_SUBJECT_PREFIX = "board:"


@dataclass(frozen=True)
class RequirementResult:
    id: str
    title: str
    verdict: Verdict
    steps: tuple[StepResult, ...]

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "title": self.title, "verdict": self.verdict.value,
                "steps": [s.to_json() for s in self.steps]}


@dataclass(frozen=True)
class SessionTest:
    """One test item of the signed pytest session, as pytest reported it: a plan step, a
    hand-written test, or a collection error. Every one counts in the run's verdict."""

    nodeid: str
    outcome: str                      # passed, failed, error, skipped, xfailed, xpassed
    verdict: Verdict
    summary: str = ""                 # the end of pytest's report for anything but passed
    evidence: tuple[EvidenceRef, ...] = ()   # blobs added while it ran (fixture `evidence`)
    step: str = ""                    # `REQ::step` for a plan step (its result is under requirements)

    def to_json(self) -> dict[str, Any]:
        return {"nodeid": self.nodeid, "outcome": self.outcome, "verdict": self.verdict.value,
                "summary": self.summary, "evidence": [e.to_json() for e in self.evidence], "step": self.step}


@dataclass(frozen=True)
class RunRecord:
    run_id: str
    plan: dict[str, Any]
    board: dict[str, Any]
    verdict: Verdict
    requirements: tuple[RequirementResult, ...]
    evidence: tuple[EvidenceRef, ...]
    started: str
    finished: str
    harness: dict[str, Any]
    host: dict[str, Any]
    not_run: tuple[str, ...] = ()   # plan steps that did not run (deselected, interrupted)
    tests: tuple[SessionTest, ...] = ()  # every test item of the session, plan steps included

    def to_json(self) -> dict[str, Any]:
        return {
            "type": RECORD_TYPE,
            "run_id": self.run_id,
            "plan": self.plan,
            "board": self.board,
            "verdict": self.verdict.value,
            "requirements": [r.to_json() for r in self.requirements],
            "evidence": [e.to_json() for e in self.evidence],
            "started": self.started,
            "finished": self.finished,
            "harness": self.harness,
            "host": self.host,
            "complete": not self.not_run,
            "not_run": list(self.not_run),
            "tests": [t.to_json() for t in self.tests],
        }


def declared_expectation(step: Step) -> dict[str, Any]:
    """Where a plan step says its expectation comes from (the record's steps repeat it): the
    board's reference profile, the plan's own `expect:`, or none (the check needs only params)."""
    if step.reference is not None:
        return {"source": "reference", "key": step.reference}
    return {"source": "plan" if step.expect is not None else "none", "line": step.line}


def plan_summary(plan: Plan, path: str) -> dict[str, Any]:
    """The plan as the record binds it: its digest and every requirement and step it holds."""
    return {"id": plan.id, "version": plan.version, "title": plan.title, "scheme": plan.scheme,
            "path": path, "sha256": plan.sha256,
            "requirements": [{"id": req.id, "steps": [{"id": step.id, "probe": step.probe, "check": step.check,
                                                       "params": plain_json(step.params),
                                                       "expectation": declared_expectation(step)}
                                                      for step in req.steps]}
                             for req in plan.requirements]}


def harness_info() -> dict[str, Any]:
    return {"name": "attestlab", "version": __version__}


def host_info() -> dict[str, Any]:
    return {"hostname": socket.gethostname(), "platform": platform.platform(),
            "python": sys.version.split()[0]}


def board_subject(board_identity: dict[str, Any]) -> dict[str, Any]:
    return {"name": f"{BOARD_SUBJECT_PREFIX}{board_identity.get('name', '')}",
            "digest": {"sha256": hashlib.sha256(canonical_json(board_identity)).hexdigest()}}


def make_statement(record: RunRecord) -> dict[str, Any]:
    subjects = [board_subject(record.board)]
    seen = set()
    for ref in record.evidence:
        if ref.sha256 in seen:
            continue
        seen.add(ref.sha256)
        subjects.append({"name": ref.name, "digest": {"sha256": ref.sha256}})
    return {"_type": STATEMENT_TYPE, "subject": subjects, "predicateType": RECORD_TYPE,
            "predicate": record.to_json()}
