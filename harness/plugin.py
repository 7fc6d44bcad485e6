"""pytest plugin: test plans run as pytest sessions.

    pytest test_plans/level1.yaml --board fixtures/boards/sim-clean.yaml \
        [--attestlab-key lab.key] [--attestlab-out results/] [--junitxml report.xml]

A plan file is collected as requirements, each with one test item per step
(`level1.yaml::<requirement>::<step>`). Verdicts map onto pytest outcomes: PASS → passed,
FAIL → failed, ERROR → error (raised during setup), SKIP → skipped, each with its reasons
(pytest's headings, short summary and JUnit messages quote them: `VerdictRepr`). A JUnit report
names the board and run, and a step's classname is `<plan id>.<requirement id>` however the
plan was given (`JunitNames`). At the end: a summary table by requirement and, with a key, a
signed result directory. Fixtures `board` and `evidence` serve hand-written tests on the same
board and record.

With --board and without -q, a run on a terminal shows a status line: the step under way and
what long work reports through harness.progress (`_show_progress`); a log or a pipe gets none.

Every test item of the session counts, not only plan steps: a hand-written test that fails,
errors or is skipped, a collection error, or an interrupted session makes the signed verdict
FAIL, ERROR or SKIP accordingly (the record's `tests` list says which). The signed result
never says PASS while pytest reports a failure.

With a key, the run's directory is claimed when the session starts, before the board is
touched (`claim_run_dir`): a second run with the same run id, or an output that cannot take a
result, stops there. SIGTERM and SIGHUP stop a run as Ctrl-C does: the steps not run make it
ERROR and incomplete, and what was collected is signed. A signal while the result is written
waits for the write (a second one does not).
"""

from __future__ import annotations

import re
import secrets
import signal
import threading
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

try:  # pytest's JUnit writer, to name a run's report (JunitNames)
    from _pytest import junitxml as _junitxml
except ImportError:  # pragma: no cover - a pytest without it writes no JUnit at all
    _junitxml = None

from harness import progress
from harness.progress import terminal_safe
from harness.board import Board, display_path
from harness.evidence import EvidenceStore
from harness.files import read_head
from harness.plan import Plan, Requirement, Step, load_plan
from harness.reference.trust import TrustError
from harness.results.bundle import OutputError, RunClaim, claim_run_dir, release_run_dir, write_signed_result
from harness.results.canonical import plain_json
from harness.results.keys import KeyError_, load_private_key
from harness.results.record import (RequirementResult, RunRecord, SessionTest, harness_info, host_info,
                                    plan_summary)
from harness.runner import StepRunner, requirement_verdict, utc_now, validate_plan_steps
from harness.verdict import StepResult, Verdict
from harness.yamlio import YamlError

_PLAN_MARK = re.compile(rb"^plan\s*:", re.M)
_RUN_ID = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
# pytest's outcome of a test item → what it means for the signed verdict. An expected failure
# (xfail) did not pass; an unexpected pass of a non-strict xfail did.
OUTCOME_VERDICT = {"passed": Verdict.PASS, "xpassed": Verdict.PASS, "skipped": Verdict.SKIP,
                   "xfailed": Verdict.SKIP, "error": Verdict.ERROR, "failed": Verdict.FAIL}
_SUMMARY_LINES, _SUMMARY_CHARS = 20, 2000
# pytest exit statuses that say the session itself did not complete (interrupted, internal or
# usage error, nothing collected): the run cannot pass.
_SESSION_BROKEN = {2: "interrupted", 3: "internal error", 4: "usage error", 5: "no tests collected"}
_INTERRUPTED = 2
# Signals that stop a run the way Ctrl-C does (KeyboardInterrupt), so that it is signed as interrupted.
_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("attestlab", "attestlab: run test plans against a board")
    group.addoption("--board", metavar="BOARD.yaml", help="board config to run plans against")
    group.addoption("--attestlab-key", metavar="LAB.key",
                    help="Ed25519 private key (PEM) that signs the result; without it nothing is signed or written")
    group.addoption("--attestlab-out", metavar="DIR", default="results",
                    help="where signed results go, one directory per run (default: results/)")
    group.addoption("--attestlab-run-id", metavar="ID", help="name of the run's directory (default: time-board-random)")
    group.addoption("--attestlab-trust", metavar="TRUST.yaml",
                    help="the lab's trust file, who may sign reference profiles (default: $ATTESTLAB_TRUST, "
                         "~/.config/attestlab/trust.yaml, /etc/attestlab/trust.yaml)")


@dataclass
class RunOutcome:
    verdict: Verdict
    envelope: Path | None
    requirements: tuple[RequirementResult, ...]
    write_error: str | None = None   # the result could not be written (a full disk): nothing verifies


class AttestlabSession:
    """State of one run: the board (opened on first use), the evidence, the step results."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.board_path = config.getoption("--board")
        self.key_path = config.getoption("--attestlab-key")
        self.out = Path(config.getoption("--attestlab-out"))
        self.run_id_option = config.getoption("--attestlab-run-id")
        if self.run_id_option and not _RUN_ID.match(self.run_id_option):
            raise pytest.UsageError(f"--attestlab-run-id {self.run_id_option!r}: use letters, digits, "
                                    f"'_', '.', '-' (it names a directory under {self.out})")
        self.evidence = EvidenceStore()
        self.plan: Plan | None = None
        self.results: list[StepResult] = []
        self.tests: dict[str, dict[str, Any]] = {}   # nodeid → outcome, summary, evidence, in run order
        self.exitstatus = 0
        self.outcome: RunOutcome | None = None
        self.started = utc_now()
        self._board: Board | None = None
        self._runner: StepRunner | None = None
        self._private_key = None
        self.claim: RunClaim | None = None
        self.stop_signal: str | None = None      # the signal that stopped the run, if one did
        self.current_item: str | None = None     # the test item running now (the one a signal stops)
        self.deferred_signal: str | None = None  # a signal that came while the result was written
        self._writing = False
        self._prev_handlers: dict[int, Any] = {}
        if self.key_path:
            try:
                self._private_key = load_private_key(self.key_path)
            except KeyError_ as exc:
                raise pytest.UsageError(f"--attestlab-key: {exc}") from None
        if self.board_path:
            try:
                self._board = Board.from_file(self.board_path, trust=config.getoption("--attestlab-trust"))
            except TrustError as exc:
                raise pytest.UsageError(f"trust file: {exc}") from None
            except YamlError as exc:
                raise pytest.UsageError(f"--board: {exc}") from None
        # Every run has an id (it names the JUnit report's suite); only a signed run writes anything.
        self.run_id = self.run_id_option or "{}-{}-{}".format(
            datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ"),
            re.sub(r"[^A-Za-z0-9_.-]", "_", self._board.name if self._board else "board"),
            secrets.token_hex(3))
        if self._private_key is not None:
            try:
                self.claim = claim_run_dir(self.out, self.run_id, self.started)
            except OutputError as exc:
                raise pytest.UsageError(str(exc)) from None

    def install_signal_handlers(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return  # only the main thread may set handlers (pytest.main called from a thread)
        for sig in _STOP_SIGNALS:
            self._prev_handlers[sig] = signal.signal(sig, self._on_stop_signal)

    def restore_signal_handlers(self) -> None:
        for sig, prev in self._prev_handlers.items():
            if signal.getsignal(sig) == self._on_stop_signal:
                signal.signal(sig, prev if prev is not None else signal.SIG_DFL)
        self._prev_handlers.clear()

    def _on_stop_signal(self, signum: int, frame: Any) -> None:
        name = signal.Signals(signum).name
        if self._writing and self.deferred_signal is None:
            self.deferred_signal = name  # a result half written is lost; this one finishes first
            return
        self.stop_signal = self.stop_signal or name
        raise KeyboardInterrupt(name)

    @property
    def board(self) -> Board:
        if self._board is None:
            raise pytest.UsageError("no board: give --board BOARD.yaml")
        return self._board

    def run_step(self, requirement: Requirement, step: Step) -> StepResult:
        if self._runner is None:
            self._runner = StepRunner(self.board, self.evidence)
        result = self._runner.run(requirement, step)
        self.results.append(result)
        return result

    def set_plan(self, plan: Plan) -> None:
        if self.plan is not None and self.plan.sha256 != plan.sha256:
            raise pytest.UsageError(f"one plan per run: got {self.plan.path} and {plan.path}")
        self.plan = plan

    def requirement_results(self) -> tuple[RequirementResult, ...]:
        if self.plan is None:
            return ()
        out = []
        for req in self.plan.requirements:
            steps = tuple(r for r in self.results if r.requirement == req.id)
            if steps:
                out.append(RequirementResult(req.id, req.title, requirement_verdict(list(steps)), steps))
        return tuple(out)

    def not_run(self) -> tuple[str, ...]:
        done = {(r.requirement, r.step) for r in self.results}
        return tuple(f"{req.id}::{step.id}" for req in self.plan.requirements for step in req.steps
                     if (req.id, step.id) not in done) if self.plan else ()

    def record_report(self, nodeid: str, outcome: str | None, summary: str = "") -> None:
        """Fold one pytest report (a phase of a test item, or a collector) into the session tests."""
        entry = self.tests.setdefault(nodeid, {"outcome": None, "summary": "", "evidence": (), "step": ""})
        if outcome is None:
            return
        if entry["outcome"] is None or OUTCOME_VERDICT[outcome].severity > OUTCOME_VERDICT[entry["outcome"]].severity:
            entry["outcome"] = outcome
            entry["summary"] = summary
        elif summary and OUTCOME_VERDICT[outcome] is not Verdict.PASS and not entry["summary"]:
            entry["summary"] = summary

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        self.record_report(report.nodeid, _report_outcome(report), _report_summary(report))

    def pytest_collectreport(self, report: pytest.CollectReport) -> None:
        # A test file that cannot be collected, or skips itself whole, ran nothing it should have.
        if report.failed or report.skipped:
            self.record_report(report.nodeid or "<collection>", "error" if report.failed else "skipped",
                               _report_summary(report))

    def session_tests(self) -> tuple[SessionTest, ...]:
        tests = [SessionTest(nodeid, e["outcome"], OUTCOME_VERDICT[e["outcome"]], e["summary"], e["evidence"], e["step"])
                 for nodeid, e in self.tests.items() if e["outcome"] is not None]
        broken = _SESSION_BROKEN.get(int(self.exitstatus))
        if broken:
            summary = f"pytest exit status {int(self.exitstatus)} ({broken})"
            if int(self.exitstatus) == _INTERRUPTED:
                summary += (f" by {self.stop_signal or 'an interrupt'}"
                            f"{f' during {self.current_item}' if self.current_item else ''}")
            cited = {e for r in self.results for e in r.evidence} | {e for t in tests for e in t.evidence}
            # what a step stored before it was stopped is evidence of the run, cited here
            orphans = tuple(e for e in self.evidence.refs if e not in cited and not e.name.startswith("expectation/"))
            tests.append(SessionTest("<session>", "error", Verdict.ERROR, summary, orphans))
        return tuple(tests)

    def overall(self, requirements: tuple[RequirementResult, ...]) -> Verdict:
        """The worst requirement and the worst test of the session; a run that left plan steps
        out cannot PASS the plan."""
        incomplete = [Verdict.ERROR] if self.not_run() else []
        return Verdict.worst([*(r.verdict for r in requirements), *(t.verdict for t in self.session_tests()),
                              *incomplete])

    def finish(self) -> None:
        board_identity = None
        if self._board is not None:
            board_identity = self._board.identity()
            try:
                self._board.close()
            except Exception as exc:  # closing must not hide the verdicts; record why
                board_identity["close_error"] = str(exc)
        interrupted = int(self.exitstatus) == _INTERRUPTED
        if self.plan is None or not (self.results or interrupted):
            if self.claim is not None:
                release_run_dir(self.claim)  # nothing to sign: the run id is free again
            return
        requirements = self.requirement_results()
        verdict = self.overall(requirements)
        envelope = write_error = None
        if self._private_key is not None:
            measured = next((r.facts for r in self.results if r.probe == "pcie_identity" and r.facts), None)
            if measured:
                board_identity["measured"] = {k: measured.get(k) for k in (
                    "bdf", "vendor_id", "device_id", "subsystem_vendor_id", "subsystem_id", "dsn")}
            record = RunRecord(run_id=self.run_id, plan=plan_summary(self.plan, display_path(self.plan.path)),
                               board=board_identity or {}, verdict=verdict, requirements=requirements,
                               evidence=self.evidence.refs, started=self.started, finished=utc_now(),
                               harness=harness_info(), host=host_info(), not_run=self.not_run(),
                               tests=self.session_tests())
            try:
                envelope = write_signed_result(self.out, record, self.evidence, self._private_key, self.claim)
            except OutputError as exc:
                write_error = str(exc)
        self.outcome = RunOutcome(verdict, envelope, requirements, write_error)


_SESSION = pytest.StashKey[AttestlabSession]()


def attestlab_session(config: pytest.Config) -> AttestlabSession:
    return config.stash[_SESSION]


def pytest_configure(config: pytest.Config) -> None:
    state = AttestlabSession(config)
    config.stash[_SESSION] = state
    config.pluginmanager.register(state, "attestlab-session")  # its report hooks see every test
    state.install_signal_handlers()
    _show_progress(config)


_PROGRESS_REPORTER = pytest.StashKey[progress.TerminalReporter]()


def _show_progress(config: pytest.Config) -> None:
    """A run against a board shows what it is doing (the step, a dump's rate, the egress window)
    on the terminal, unless -q. Capture is suspended while pytest configures, so fd 2 is still the
    real stderr here; its dup stays the terminal while pytest captures fd 2 during each step."""
    if not config.getoption("--board") or config.get_verbosity() < 0:
        return
    stream = progress.terminal_stream()
    if stream is not None:
        reporter = progress.TerminalReporter(stream)
        config.stash[_PROGRESS_REPORTER] = reporter
        progress.install(reporter)


def pytest_collect_file(file_path: Path, parent: pytest.Collector):
    if file_path.suffix in (".yaml", ".yml"):
        try:
            head = read_head(file_path, 65536)  # a FIFO or a huge file named *.yaml is not read
        except OSError:
            return None
        if _PLAN_MARK.search(head):
            return PlanFile.from_parent(parent, path=file_path)
    return None


class StepVerdict(Exception):
    """Carries a non-passing StepResult out of setup (ERROR) or the call (FAIL)."""

    def __init__(self, result: StepResult) -> None:
        super().__init__(result.verdict.value)
        self.result = result

    def describe(self) -> str:
        r = self.result
        lines = [f"{r.verdict.value}: {r.requirement}::{r.step} ({r.probe}/{r.check})"]
        lines += [f"  - {terminal_safe(reason)}" for reason in r.reasons]
        lines += [f"  evidence {e.name} sha256:{e.sha256}" for e in r.evidence]
        return "\n".join(lines)

    def reason(self) -> str:
        """The verdict's reasons on one line: what a summary line or a JUnit message says."""
        return "; ".join(terminal_safe(reason) for reason in self.result.reasons) or self.result.verdict.value


@dataclass(frozen=True)
class _Crash:
    path: str
    lineno: int
    message: str


class VerdictRepr:
    """How pytest shows a step that did not pass: the verdict and its reasons, not a traceback.
    Its `reprcrash.message` is the reason, so pytest's short summary reads `ERROR <step> - <reason>`
    and a JUnit <failure> carries the reason as its message."""

    def __init__(self, verdict: StepVerdict, path: str, lineno: int) -> None:
        self.text = verdict.describe()
        self.reprcrash = _Crash(path, lineno, verdict.reason())

    def toterminal(self, tw) -> None:
        for line in self.text.splitlines():
            tw.line(line)

    def __str__(self) -> str:
        return self.text


class PlanFile(pytest.File):
    def collect(self):
        try:
            plan = load_plan(self.path)
            validate_plan_steps(plan)
        except YamlError as exc:
            raise self.CollectError(str(exc)) from None
        attestlab_session(self.config).set_plan(plan)
        for req in plan.requirements:
            yield RequirementNode.from_parent(self, name=req.id, requirement=req)


class RequirementNode(pytest.Collector):
    def __init__(self, *, requirement: Requirement, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.requirement = requirement

    def collect(self):
        for step in self.requirement.steps:
            yield StepItem.from_parent(self, name=step.id, requirement=self.requirement, step=step)


class StepItem(pytest.Item):
    def __init__(self, *, requirement: Requirement, step: Step, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.requirement = requirement
        self.step = step
        self.result: StepResult | None = None

    def setup(self) -> None:
        with progress.activity(f"{self.requirement.id}::{self.step.id}"):
            self.result = attestlab_session(self.config).run_step(self.requirement, self.step)
        if self.result.verdict is Verdict.ERROR:
            raise StepVerdict(self.result)

    def runtest(self) -> None:
        assert self.result is not None
        for reason in self.result.reasons:
            self.user_properties.append(("reason", reason))
        if self.result.verdict is Verdict.FAIL:
            raise StepVerdict(self.result)
        if self.result.verdict is Verdict.SKIP:
            pytest.skip("; ".join(self.result.reasons))

    def reportinfo(self):
        return self.path, self.step.line - 1 if self.step.line else None, \
            f"{self.requirement.id}::{self.step.id} [{self.step.probe}/{self.step.check}]"


def _report_outcome(report: pytest.TestReport) -> str | None:
    """A phase's outcome; None for a passing setup or teardown (they say nothing on their own)."""
    if hasattr(report, "wasxfail"):
        return "xfailed" if report.skipped else "xpassed"
    if report.skipped:
        return "skipped"
    if report.passed:
        return "passed" if report.when == "call" else None
    return "failed" if report.when == "call" else "error"


def _report_summary(report) -> str:
    """The end of pytest's report, as text the signed record can hold (board bytes quoted in an
    assertion may hold lone surrogates, which UTF-8 cannot)."""
    if report.passed:
        return ""
    if isinstance(report.longrepr, tuple) and len(report.longrepr) == 3:  # a skip: (file, line, reason)
        text = str(report.longrepr[2])
    else:
        text = "\n".join(report.longreprtext.rstrip().splitlines()[-_SUMMARY_LINES:])
    return plain_json(text[-_SUMMARY_CHARS:])


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem):
    """Evidence a hand-written test adds while it runs is cited by its entry in `tests`."""
    state = attestlab_session(item.config)
    before = len(state.evidence.refs)
    state.current_item = item.nodeid
    outcome = yield
    if not isinstance(outcome.exception, KeyboardInterrupt):
        state.current_item = None  # still set when a signal stopped the item
    entry = state.tests.get(item.nodeid)
    if entry is None:
        return
    if isinstance(item, StepItem):  # its evidence is in its StepResult
        entry["step"] = f"{item.requirement.id}::{item.step.id}"
    else:
        entry["evidence"] = state.evidence.refs[before:]


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    outcome = yield
    report = outcome.get_result()
    if call.excinfo is not None and isinstance(call.excinfo.value, StepVerdict):
        path, lineno, domain = item.location
        report.longrepr = VerdictRepr(call.excinfo.value, path, (lineno or 0) + 1)
        # pytest heads the report with this: `ERROR at setup of L1-X::step: <reason>`, so an ERROR
        # (the step could not decide) reads as its reason, not as a broken test setup
        reason = report.longrepr.reprcrash.message
        report.location = (path, lineno, f"{domain.split(' [')[0]}: "
                                         f"{reason if len(reason) <= 160 else reason[:159] + '…'}")


def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list) -> None:
    if any(isinstance(i, StepItem) for i in items) and not config.getoption("--board"):
        raise pytest.UsageError("a test plan runs against a board: give --board BOARD.yaml")


class JunitNames:
    """pytest's JUnit report of a run (`--junitxml`, also through `attestlab run`) says which run it is.

    The testsuite is named after the board and the run id, and carries them as properties with
    the plan, its sha256 and the overall verdict (and the signed result, if any). A step's
    classname is `<plan id>.<requirement id>`, the same however the plan was given (pytest's own
    would be the plan's path from the rootdir, which changes with the cwd). An ERROR step's
    <error> message is its reason, not pytest's 'failed on setup with …'. pytest has no public
    handle on its JUnit writer: this takes the one it keeps in the config's stash."""

    def __init__(self, xml: Any, state: AttestlabSession) -> None:
        self.xml, self.state = xml, state

    @classmethod
    def attach(cls, config: pytest.Config, state: AttestlabSession) -> None:
        xml = config.stash.get(_junitxml.xml_key, None) if _junitxml is not None else None
        if xml is not None:
            config.pluginmanager.register(cls(xml, state), "attestlab-junit")

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_setup(self, item: pytest.Item) -> None:
        if isinstance(item, StepItem) and self.state.plan is not None:
            classname = f"{self.state.plan.id}.{item.requirement.id}"
            self.xml.node_reporter(item.nodeid).add_attribute("classname", classname)

    @pytest.hookimpl(trylast=True)  # after pytest's JUnit writer has added the <error>
    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.when == "setup" and report.failed and isinstance(report.longrepr, VerdictRepr):
            message = report.longrepr.reprcrash.message
            shorten = getattr(_junitxml, "shorten_message", None)  # pytest >= 9 keeps messages short
            message = _junitxml.bin_xml_escape(shorten(message) if shorten else message)
            for node in self.xml.node_reporter(report).nodes:
                if node.tag == "error":
                    node.set("message", message)

    @pytest.hookimpl(tryfirst=True)  # before pytest's JUnit writer writes the file
    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        state = self.state
        board = state._board.name if state._board is not None else None
        self.xml.suite_name = f"{board or 'no board'} run {state.run_id}"
        outcome = state.outcome
        verdict = outcome.verdict if outcome else state.overall(state.requirement_results())
        properties = {"board": board, "run_id": state.run_id,
                      "plan": f"{state.plan.id} {state.plan.version}" if state.plan else None,
                      "plan_sha256": state.plan.sha256 if state.plan else None, "verdict": verdict.value,
                      "signed_result": str(outcome.envelope) if outcome and outcome.envelope else None}
        for name, value in properties.items():
            if value is not None:
                self.xml.add_global_property(name, value)


def pytest_sessionstart(session: pytest.Session) -> None:
    state = attestlab_session(session.config)
    if state.board_path:  # a run against a board; any other pytest session keeps pytest's report
        JunitNames.attach(session.config, state)


@pytest.hookimpl(hookwrapper=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int):
    """Close the board and write the result before anything else ends the session; a signal in
    the meantime waits for it (see `_on_stop_signal`)."""
    state = attestlab_session(session.config)
    state.exitstatus = exitstatus
    state._writing = True
    try:
        state.finish()
        if state.outcome and state.outcome.write_error:
            session.exitstatus = pytest.ExitCode.INTERNAL_ERROR  # the run's verdict was not kept
        yield
    finally:
        state._writing = False


def pytest_unconfigure(config: pytest.Config) -> None:
    state = config.stash.get(_SESSION, None)
    if state is not None:
        state.restore_signal_handlers()
    reporter = config.stash.get(_PROGRESS_REPORTER, None)
    if reporter is not None:
        if progress.current() is reporter:
            progress.uninstall()
        reporter.close()
        reporter.stream.close()


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    state = attestlab_session(config)
    requirements = state.requirement_results()
    if not requirements:
        return
    tr = terminalreporter
    tr.section(f"attestlab: {state.plan.id} on {state.board.name}")
    width = max(len(r.id) for r in requirements)
    for req in requirements:
        tr.write_line(f"{req.verdict.value:<6} {req.id:<{width}}  {req.title}")
        if req.verdict is not Verdict.PASS:
            for step in req.steps:
                if step.verdict is not Verdict.PASS:
                    for reason in step.reasons[:5]:
                        tr.write_line(f"{'':<6} {'':<{width}}    {step.step}: {terminal_safe(reason)}")
    for test in state.session_tests():
        if test.verdict is not Verdict.PASS and not test.step:  # steps are listed above
            last = test.summary.strip().splitlines()[-1:] or [""]
            tr.write_line(f"{test.verdict.value:<6} {test.nodeid} (pytest: {test.outcome}; it ran in this "
                          f"session, so it counts) {terminal_safe(last[0][:160])}")
    not_run = state.not_run()
    if not_run:
        tr.write_line(f"incomplete: {len(not_run)} plan step(s) not run ({', '.join(not_run[:5])}"
                      f"{', ...' if len(not_run) > 5 else ''}): the run cannot PASS the plan")
    tr.write_line(f"overall: {state.overall(requirements).value}")
    if state.outcome and state.outcome.envelope:
        tr.write_line(f"signed result: {state.outcome.envelope}")
    elif state.outcome and state.outcome.write_error:
        tr.write_line(f"result NOT written: {state.outcome.write_error}; nothing in it verifies")
    elif not state.key_path:
        tr.write_line("result not signed (no --attestlab-key given)")


@pytest.fixture(scope="session")
def board(pytestconfig: pytest.Config) -> Board:
    """The board under test (from --board), opened for the session, closed at its end."""
    state = attestlab_session(pytestconfig)
    if not state.board_path:
        pytest.skip("no board: this test needs --board BOARD.yaml")
    return state.board.open()


@pytest.fixture(scope="session")
def evidence(pytestconfig: pytest.Config) -> EvidenceStore:
    """The run's evidence store: blobs added here are signed into the result with the plan's."""
    return attestlab_session(pytestconfig).evidence
