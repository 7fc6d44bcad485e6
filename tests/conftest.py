"""Shared helpers for the test suite."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PLAN = ROOT / "test_plans" / "level1.yaml"
PCIE_PLAN = ROOT / "fixtures" / "plans" / "pcie-only.yaml"   # level1's PCIe requirements alone: fast
BOARDS = ROOT / "fixtures" / "boards"
CAPTURE = ROOT / "fixtures" / "captures" / "h100-sxm5-80gb-passthrough"
TEST_KEY = ROOT / "fixtures" / "keys" / "test-lab.key"   # a TEST key, committed on purpose
TEST_PUB = ROOT / "fixtures" / "keys" / "test-lab.pub"
# git keeps no file mode but the executable bit: a fresh clone has the key 0644, and attestlab
# refuses a private key others can read (as ssh does). scripts/setup.sh does the same.
os.chmod(TEST_KEY, 0o600)
TEST_REFERENCE_KEY = ROOT / "fixtures" / "keys" / "test-reference-signer.key"   # signs the fixture profiles
os.chmod(TEST_REFERENCE_KEY, 0o600)
# attestlab trusts no signer by default; the suite (and every `attestlab` it starts) trusts the TEST
# reference signer through this file, named explicitly. Set, not defaulted: a developer's own
# $ATTESTLAB_TRUST must not change what the tests decide.
TEST_TRUST = ROOT / "fixtures" / "trust" / "test-trust.yaml"
os.environ["ATTESTLAB_TRUST"] = str(TEST_TRUST)

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (network namespaces / full sysfs config space)")


def signed_reference(source: Path) -> Path:
    """`source`, a reference profile's YAML, signed by the TEST reference signer into
    `<source>.dsse.json` beside it. A board config a test writes names this: attestlab uses only
    a profile a trusted signer signed (an unsigned one makes every reference step ERROR)."""
    from harness.reference.signed import envelope_json, sign_profile
    from harness.results.keys import load_private_key

    target = source.with_name(source.name + ".dsse.json")
    target.write_bytes(envelope_json(sign_profile(source.read_bytes(), load_private_key(TEST_REFERENCE_KEY))))
    return target


def attestlab(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run the attestlab command line as a user would, in a separate process."""
    return subprocess.run([sys.executable, "-m", "harness.cli", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT)


def at_once(*calls):
    """Each of `calls` (no arguments) in its own thread, all started together; their results in
    order. For independent commands a test runs: each is a process that mostly starts Python or
    waits on its board, so two cores run them side by side."""
    from concurrent.futures import ThreadPoolExecutor
    with ThreadPoolExecutor(max_workers=len(calls)) as pool:
        futures = [pool.submit(call) for call in calls]
        return [future.result() for future in futures]


def namespaces() -> set[str]:
    """The named network namespaces now (`ip netns list`): leftovers of a run show up here."""
    listing = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return {line.split()[0] for line in listing.splitlines() if line.strip()}


def link_exists(name: str) -> bool:
    """A network interface of that name exists in the namespace the tests run in."""
    return subprocess.run(["ip", "link", "show", "dev", name], capture_output=True).returncode == 0


def lspci_available() -> bool:
    return shutil.which("lspci") is not None


# --- egress: the zoo's standard-plan runs, one per board and session ---

# A run waits on its board most of the time (about 3 s of CPU in 18 s): 17 at a time (two waves
# of the zoo) keep 2 cores busy. ATTESTLAB_ZOO_PARALLEL lowers it on a slower machine.
ZOO_PARALLEL = int(os.environ.get("ATTESTLAB_ZOO_PARALLEL", "17"))

class ZooRun:
    """One `attestlab run` of the standard plan on fixtures/boards/<board>.yaml."""

    def __init__(self, board: str, proc: subprocess.CompletedProcess) -> None:
        self.board = board
        self.proc = proc
        self.envelope = next((line.split(": ", 1)[1] for line in proc.stdout.splitlines()
                              if line.startswith("signed result: ")), None)

    def step_results(self):
        """(step results, evidence) as the signed result holds them: the record verified with the
        TEST key, each step a StepResult again, each blob read back from the run's evidence folder.
        Tests of one probe judge these rather than run the board a second time."""
        from harness.evidence import EvidenceStore
        from harness.results.bundle import verify_result
        from harness.results.keys import load_public_key
        from harness.verdict import EvidenceRef, StepResult, Verdict

        assert self.envelope, f"{self.board}: no signed result (exit {self.proc.returncode})\n{self.proc.stdout[-3000:]}"
        record = verify_result(self.envelope, load_public_key(TEST_PUB)).record
        evidence = EvidenceStore()
        folder = Path(self.envelope).parent / "evidence"
        steps = []
        for step in (s for req in record["requirements"] for s in req["steps"]):
            refs = tuple(EvidenceRef(**ref) for ref in step["evidence"])
            for ref in refs:
                evidence.add(ref.name, (folder / ref.sha256).read_bytes(), ref.media_type)
            steps.append(StepResult(requirement=step["requirement"], step=step["step"], probe=step["probe"],
                                    check=step["check"], verdict=Verdict(step["verdict"]),
                                    reasons=tuple(step["reasons"]), evidence=refs, facts=step["facts"],
                                    started=step["started"], finished=step["finished"],
                                    expectation=step["expectation"]))
        return steps, evidence


@pytest.fixture(scope="session")
def zoo_run(tmp_path_factory):
    """zoo_run(board) -> ZooRun, for every board of fixtures/boards/matrix.yaml.

    tests/test_zoo_matrix.py and tests/test_egress_cli.py judge the same runs, so each board runs
    once per session. Every run costs its egress window (~8 s) and its console audit (~8 s), both
    mostly waiting for the board (a run uses about a quarter of a core), so the first use runs all
    the matrix's boards, ZOO_PARALLEL at a time, and waits for all of them: nothing keeps running
    behind later tests (timing-sensitive capture tests among them)."""
    from concurrent.futures import ThreadPoolExecutor, wait

    import yaml

    boards = list(yaml.safe_load((BOARDS / "matrix.yaml").read_text()))
    pool = ThreadPoolExecutor(max_workers=ZOO_PARALLEL, thread_name_prefix="zoo")
    futures: dict = {}

    def one(board: str, out: Path) -> ZooRun:
        return ZooRun(board, attestlab("run", "--plan", str(PLAN), "--board", str(BOARDS / f"{board}.yaml"),
                                       "--key", str(TEST_KEY), "--out", str(out), "-q", timeout=300))

    def run(board: str) -> ZooRun:
        if not futures:
            # (folders made here, one thread: pytest's tmp_path_factory is not thread-safe)
            futures.update({b: pool.submit(one, b, tmp_path_factory.mktemp(f"zoo-{b}")) for b in boards})
            wait(list(futures.values()))
        if board not in futures:
            futures[board] = pool.submit(one, board, tmp_path_factory.mktemp(f"zoo-{board}"))
        return futures[board].result()

    yield run
    pool.shutdown(wait=True, cancel_futures=True)


def start_console_simulator(profile: dict, workdir: Path) -> tuple[subprocess.Popen, dict]:
    """The simulated console (`python -m fixtures.sim.console`) in its own process, and the
    endpoint it announces (url of its pty, prompt, ...)."""
    import json
    import select
    proc = subprocess.Popen([sys.executable, "-m", "fixtures.sim.console", "--profile-json", json.dumps(profile),
                             "--workdir", str(workdir)], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    ready, _, _ = select.select([proc.stdout], [], [], 20)
    line = proc.stdout.readline() if ready else b""
    if not line:
        proc.kill()
        raise RuntimeError(f"console simulator did not announce its endpoint: {proc.stderr.read().decode()}")
    return proc, json.loads(line)


def stop_processes(procs: list[subprocess.Popen]) -> None:
    """SIGTERM, then SIGKILL after 5 s: simulators never outlive the test that started them."""
    import signal
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
