"""Running plan steps: probe.collect → check → StepResult. Fail closed at every edge.

Used by the pytest plugin (one test item per step) and by anything else that runs a plan.
Whatever goes wrong — a probe error, a crash, a missing reference, a check that raises —
becomes an ERROR that says why; evidence the probe stored before failing is kept.

The board must be alive for the whole of what a step judges: silence from a dead board proves
nothing. The runner looks at the board's life (`Board.liveness()`) before and after every step.
A board that was not alive, or whose life changed (a reboot, another process), makes the step
ERROR whatever its check said — except FAIL, a finding made on what the board did send, which
stays FAIL — and every later step ERROR without touching the board.

With ATTESTLAB_STEP_TRACE=<file> in the environment, each step's `<requirement>::<step>` is
appended to that file as the step begins (after the first look at the board): fault-injection
tests use it to act at a known phase.
"""

from __future__ import annotations

import hashlib
import json
import os
import traceback
from typing import Any

import probes
from harness.board import Board, Life, display_path, utc_now
from harness.evidence import EvidenceStore
from harness.plan import Plan, Requirement, Step
from harness.results.canonical import canonical_json, plain_json
from harness.results.record import declared_expectation
from harness.verdict import CheckResult, EvidenceRef, Observation, ProbeError, StepResult, Verdict
from harness.yamlio import YamlError


INLINE_EXPECTATION_BYTES = 4096  # larger expected values are stored as an evidence blob


def validate_plan_steps(plan: Plan) -> None:
    """Every step names a known probe, one of its checks, and only parameters it takes."""
    for req in plan.requirements:
        for step in req.steps:
            problem = probes.step_problem(step.probe, step.check, step.params)
            if problem:
                raise YamlError(f"{plan.path}:{step.line}: requirements.{req.id}.steps.{step.id}: {problem}")


class StepRunner:
    """Runs steps against one board, sharing observations between steps with the same probe+params."""

    def __init__(self, board: Board, evidence: EvidenceStore) -> None:
        self.board = board
        self.evidence = evidence
        self._observations: dict[str, Observation | ProbeError] = {}
        # evidence a failed collect stored before failing: every step sharing that collect cites it
        self._failed_evidence: dict[str, tuple[EvidenceRef, ...]] = {}
        self._last_life: Life | None = None   # the latest look at the board
        self.death: str | None = None         # how the board was lost: every later step is ERROR with it

    def _look(self) -> Life | None:
        """The board's life now; None when the board cannot be opened (the step itself says why)."""
        try:
            return self.board.liveness()
        except ProbeError:
            return None
        except Exception as exc:  # a look that crashes shows nothing alive: fail closed
            return Life(utc_now(), "the board's liveness look", False, problem=f"{type(exc).__name__}: {exc}")

    @staticmethod
    def _lost(earlier: Life | None, now: Life | None) -> str | None:
        """How the board stopped being the live board of `earlier`, seen at `now`; None if it did not."""
        if now is None or now.alive is None:
            return None
        if now.alive is False:
            return f"died ({now.problem})"
        if earlier is not None and earlier.alive and earlier.life != now.life:
            return f"rebooted (its life was {earlier.life}, is now {now.life})"
        return None

    def _untouched(self, requirement: Requirement, step: Step, started: str, reason: str,
                   facts: dict[str, Any] | None = None) -> StepResult:
        """ERROR for a step the runner does not run: the board is gone."""
        return StepResult(requirement=requirement.id, step=step.id, probe=step.probe, check=step.check,
                          verdict=Verdict.ERROR, reasons=(reason,), evidence=(), facts=facts or {},
                          started=started, finished=utc_now(), expectation=declared_expectation(step))

    def _key(self, step: Step) -> str:
        return json.dumps([step.probe, step.params], sort_keys=True, default=str)

    def _observe(self, step: Step) -> Observation:
        key = self._key(step)
        if key not in self._observations:
            spec = probes.get_probe(step.probe)
            params = {**spec.params, **step.params}
            before = len(self.evidence.refs)
            try:
                self._observations[key] = spec.collect(self.board, params, self.evidence)
            except ProbeError as exc:
                self._observations[key] = exc
                self._failed_evidence[key] = self.evidence.refs[before:]
        cached = self._observations[key]
        if isinstance(cached, ProbeError):
            raise cached
        return cached

    def _expectation_source(self, step: Step) -> dict[str, Any]:
        """Where the step's expectation comes from, known before (and even if) the value is found."""
        source = declared_expectation(step)
        if step.reference is not None:
            reference = self.board.reference
            source.update(profile=display_path(reference.path), profile_sha256=reference.sha256)
        return source

    def _expected(self, step: Step, expectation: dict[str, Any]) -> Any:
        """The value the check compares against; its digest (and value, or blob) go into `expectation`."""
        value = step.expect if step.reference is None else self.board.reference.lookup(step.reference)
        plain = plain_json(value)
        encoded = canonical_json(plain)
        expectation["sha256"] = hashlib.sha256(encoded).hexdigest()
        if len(encoded) <= INLINE_EXPECTATION_BYTES:
            expectation["value"] = plain
        else:  # a large value (firmware digests) is a blob of the run, cited by digest
            name = f"expectation/{step.reference or f'plan-line-{step.line}'}.json"
            expectation["evidence"] = self.evidence.add(name, encoded, "application/json").name
        return value

    def run(self, requirement: Requirement, step: Step) -> StepResult:
        started = utc_now()
        where = f"{requirement.id}::{step.id}"
        if self.death is not None:
            return self._untouched(requirement, step, started, f"not run: {self.death}")
        life_before = self._look()
        lost = self._lost(self._last_life, life_before)
        self._last_life = life_before or self._last_life
        if lost:
            self.death = (f"the board {lost} before {where} began: noticed at {life_before.at} "
                          f"by {life_before.how}")
            return self._untouched(requirement, step, started, self.death,
                                   {"board_life": {"before": life_before.as_fact()}})
        trace = os.environ.get("ATTESTLAB_STEP_TRACE")
        if trace:
            try:
                with open(trace, "a") as f:
                    f.write(where + "\n")
            except OSError:
                pass  # a test hook that cannot write decides nothing about the board
        before = len(self.evidence.refs)
        facts: dict[str, Any] = {}
        expectation: dict[str, Any] = {}
        try:
            expectation = self._expectation_source(step)
            observation = self._observe(step)
            facts = observation.facts
            expected = self._expected(step, expectation)
            result = probes.get_probe(step.probe).checks[step.check](observation, expected)
            if not isinstance(result, CheckResult):
                result = CheckResult.error(f"check {step.check!r} returned {type(result).__name__}, not a CheckResult")
            evidence = result.evidence or observation.evidence
        except ProbeError as exc:
            result = CheckResult.error(str(exc) or type(exc).__name__)
            evidence = self._failed_evidence.get(self._key(step), ())
        except Exception as exc:  # a crash in a probe or check decides nothing: ERROR, with where
            where = traceback.extract_tb(exc.__traceback__)[-1]
            result = CheckResult.error(f"{step.probe}/{step.check} crashed: {type(exc).__name__}: {exc} "
                                       f"({where.filename}:{where.lineno})")
            evidence = ()
        # Evidence stored during this step belongs to it, also when the probe failed half way;
        # the expectation's own blob is what it was compared against, not evidence of the board.
        collected = [r for r in self.evidence.refs[before:] if r.name != expectation.get("evidence")]
        evidence = tuple(dict.fromkeys((*evidence, *collected)))
        life_after = self._look()
        lost = self._lost(life_before, life_after)
        self._last_life = life_after or self._last_life
        looks = {name: look.as_fact() for name, look in (("before", life_before), ("after", life_after))
                 if look is not None and look.alive is not None}
        if looks:  # the board was seen alive throughout (or not): part of what the verdict stands on
            facts = {**facts, "board_life": looks}
        if lost:
            noticed = f"noticed at {life_after.at} by {life_after.how}"
            self.death = f"the board {lost} during {where}: {noticed}"
            since = life_before.at if life_before else started
            note = f"the board {lost} during this step, between {since} and {life_after.at}: {noticed}"
            if result.verdict is Verdict.FAIL:  # what the board sent before it died is still a finding
                result = CheckResult.failed(*result.reasons, note, evidence=result.evidence)
            else:  # silence or a half-read from a board that died decides nothing
                result = CheckResult.error(note, *(f"before that, {step.check} said: {r}" for r in result.reasons))
        if result.verdict is Verdict.PASS and not evidence:  # a PASS nobody can re-check decides nothing
            result = CheckResult.error(f"{step.probe}/{step.check} passed but cites no evidence: a PASS must "
                                       f"point to the raw data it was decided on", *result.reasons)
        reasons = result.reasons or (f"{step.check}: {result.verdict.value}",)
        # What a probe measured may quote the board's bytes: make it text the record can sign.
        return StepResult(requirement=requirement.id, step=step.id, probe=step.probe, check=step.check,
                          verdict=result.verdict, reasons=tuple(plain_json(list(reasons))), evidence=evidence,
                          facts=plain_json(facts), started=started, finished=utc_now(), expectation=expectation)


def requirement_verdict(results: list[StepResult]) -> Verdict:
    """A requirement passes only if all its steps pass; otherwise the worst step decides."""
    return Verdict.worst(r.verdict for r in results)
