"""Faults of the board during a run (issue #21): a simulated board killed at each phase never
leaves a PASS the fault could have caused, the run exits 2 without a traceback, nothing of the dead
board is left behind, and the signed result verifies and says what the run decided.

Each run uses level1's requirements for one phase plus L1-EGRESS (with a short window), on
sim-late-beacon: a board that must FAIL egress, and whose silence before its beacon is exactly
what a dead board looks like. The runner's ATTESTLAB_STEP_TRACE names the step that has begun, so
the kill lands in a known phase.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest
import yaml

from harness.board import OWNER_FILE, SIM_WORKDIR_PREFIX, Board, sweep_dead_simulators
from harness.results.bundle import verify_result
from harness.results.keys import load_public_key

from conftest import BOARDS, PLAN, ROOT, TEST_KEY, TEST_PUB, link_exists, namespaces, needs_root

EGRESS_WINDOW_S = 3


def plan_of(tmp_path: Path, requirement_ids: list[str]) -> Path:
    """level1 with only `requirement_ids` and L1-EGRESS, the egress window shortened."""
    doc = yaml.safe_load(PLAN.read_text())
    doc["requirements"] = [r for r in doc["requirements"] if r["id"] in (*requirement_ids, "L1-EGRESS")]
    for req in doc["requirements"]:
        for step in req["steps"]:
            if step["probe"] == "egress":
                step["params"]["window_s"] = EGRESS_WINDOW_S
    path = tmp_path / "plan.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def simulator_of(harness_pid: int) -> tuple[int, Path]:
    """The pid and workdir of the simulator the harness process `harness_pid` started."""
    for workdir in Path(tempfile.gettempdir()).glob(f"{SIM_WORKDIR_PREFIX}*"):
        try:
            if json.loads((workdir / OWNER_FILE).read_text())["pid"] == harness_pid:
                return json.loads((workdir / "ready.json").read_text())["pid"], workdir
        except (OSError, ValueError, KeyError):
            continue
    raise AssertionError(f"no simulator workdir owned by {harness_pid}")


def process_running(pid: int) -> bool:
    """Not gone and not a zombie (a zombie waits only for its parent, the harness, to reap it)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"


def parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def run_killing_board(tmp_path: Path, requirement_ids: list[str], at_step: str, sig: int = signal.SIGKILL,
                      in_window: bool = False):
    """Run the plan on sim-late-beacon; once `at_step` begins (and, with `in_window`, once the
    capture point has taken the board's link, plus a second), send `sig` to the simulator."""
    trace, out = tmp_path / "trace", tmp_path / "out"
    proc = subprocess.Popen(
        [sys.executable, "-m", "harness.cli", "run", "--plan", str(plan_of(tmp_path, requirement_ids)),
         "--board", str(BOARDS / "sim-late-beacon.yaml"), "--key", str(TEST_KEY), "--out", str(out), "-q"],
        cwd=ROOT, env={**os.environ, "ATTESTLAB_STEP_TRACE": str(trace)},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not (trace.exists() and at_step in trace.read_text().split()):
            assert proc.poll() is None and time.monotonic() < deadline, f"{at_step} never began"
            time.sleep(0.02)
        sim_pid, workdir = simulator_of(proc.pid)
        if in_window:  # the capture point moves the host end of the board's link into its namespace
            while link_exists(f"asim{sim_pid}"):
                assert proc.poll() is None and time.monotonic() < deadline, "the window never began"
                time.sleep(0.05)
            time.sleep(1.0)
        os.kill(sim_pid, sig)
        while process_running(sim_pid):  # from now on any look at the board must see it dead
            assert time.monotonic() < deadline, "the simulator outlived its signal"
            time.sleep(0.005)
        killed_at = datetime.now(timezone.utc)
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    envelopes = list(out.glob("*/result.dsse.json"))
    return proc.returncode, stdout, stderr, envelopes, sim_pid, workdir, killed_at


def assert_fault_handled(tmp_path, requirement_ids, at_step, sig=signal.SIGKILL, in_window=False):
    rc, stdout, stderr, envelopes, sim_pid, workdir, killed_at = run_killing_board(
        tmp_path, requirement_ids, at_step, sig, in_window)
    assert rc == 2, (stdout, stderr)
    assert "Traceback" not in stdout + stderr
    # nothing of the dead board is left behind
    assert not workdir.exists()
    assert f"attestlab-sim-{sim_pid}" not in namespaces()
    assert not link_exists(f"asim{sim_pid}")
    # the result verifies, and it is what this run decided
    assert len(envelopes) == 1
    record = verify_result(envelopes[0], load_public_key(TEST_PUB)).record
    assert record["verdict"] == "ERROR"
    steps = {f"{s['requirement']}::{s['step']}": s for r in record["requirements"] for s in r["steps"]}
    for where, step in steps.items():  # a PASS only where the board was seen alive after the step, before it died
        if step["verdict"] == "PASS":
            after = step["facts"]["board_life"]["after"]
            assert after["alive"] is True and parse_time(after["at"]) < killed_at, (where, step["reasons"])
    killed_step = steps[at_step]
    egress = steps["L1-EGRESS::window"]
    assert egress["verdict"] == "ERROR", egress["reasons"]
    text = " ".join(egress["reasons"])
    assert "the board died" in text and "noticed at" in text and f"simulated board process {sim_pid}" in text
    return steps, killed_step


@needs_root
def test_board_killed_during_the_egress_window_is_error_never_pass(tmp_path):
    steps, window = assert_fault_handled(tmp_path, [], "L1-EGRESS::window", in_window=True)
    reasons = " ".join(window["reasons"])
    assert "during this step" in reasons and ("killed by signal 9" in reasons or "is exiting" in reasons)
    assert window["facts"]["board_life"]["after"]["alive"] is False


@needs_root
def test_board_stopped_with_sigterm_during_the_egress_window_is_error(tmp_path):
    steps, window = assert_fault_handled(tmp_path, [], "L1-EGRESS::window", sig=signal.SIGTERM, in_window=True)
    reasons = " ".join(window["reasons"])  # seen while it shut down (it withdraws its boot id first) or after
    assert "it is shutting down" in reasons or "the simulator exited (exit status 0)" in reasons


@needs_root
def test_board_killed_during_the_firmware_dump_errors_it_and_every_later_step(tmp_path):
    steps, digests = assert_fault_handled(tmp_path, ["L1-FW-INTEGRITY", "L1-FW-ROLLBACK"], "L1-FW-INTEGRITY::digests")
    assert digests["verdict"] == "ERROR" and "during this step" in " ".join(digests["reasons"])
    later = steps["L1-FW-ROLLBACK::version"]
    assert later["verdict"] == "ERROR" and later["reasons"][0].startswith("not run: the board died")
    assert "during L1-FW-INTEGRITY::digests" in later["reasons"][0]


@needs_root
def test_board_killed_during_the_console_audit_errors_it_and_every_later_step(tmp_path):
    steps, commands = assert_fault_handled(tmp_path, ["L1-CONSOLE-COMMANDS", "L1-CONSOLE-BOOTLOG"],
                                           "L1-CONSOLE-COMMANDS::commands")
    assert commands["verdict"] in ("ERROR", "FAIL")  # FAIL only for what the board printed while alive
    assert steps["L1-CONSOLE-BOOTLOG::boot-log"]["verdict"] in ("ERROR", "FAIL")


@needs_root
def test_board_killed_during_the_pcie_steps_leaves_no_later_pass(tmp_path):
    # The sysfs tree outlives the simulator (files on disk): only the liveness look can tell.
    # The PCIe steps take milliseconds, so the kill may land after the capabilities step too:
    # that step may PASS only if its own look after it saw the board alive before the kill
    # (assert_fault_handled checks it); every step after the death is ERROR.
    steps, _ = assert_fault_handled(tmp_path, ["L1-PCIE-IDENTITY", "L1-PCIE-CAPABILITIES"],
                                    "L1-PCIE-IDENTITY::identity")
    inventory = steps["L1-PCIE-CAPABILITIES::inventory"]
    assert inventory["verdict"] == "ERROR" or inventory["facts"]["board_life"]["after"]["alive"] is True


# --- left-over state of dead runs ---

def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", ""])
    proc.wait()
    return proc.pid


def workdir_owned_by(pid: int | None, starttime=None, age_s: float = 0) -> Path:
    workdir = Path(tempfile.mkdtemp(prefix=f"{SIM_WORKDIR_PREFIX}f2test-"))
    if pid is not None:
        (workdir / OWNER_FILE).write_text(json.dumps({"pid": pid, "starttime": starttime}))
    (workdir / "ready.json").write_text(json.dumps({"pid": dead_pid()}))
    if age_s:
        old = time.time() - age_s
        os.utime(workdir, (old, old))
    return workdir


def test_opening_a_board_sweeps_workdirs_of_dead_runs_only(tmp_path):
    from harness.interfaces.netns import proc_starttime
    dead = workdir_owned_by(dead_pid())
    reused_pid = workdir_owned_by(os.getpid(), starttime=12345)            # our pid, another process's start
    live = workdir_owned_by(os.getpid(), starttime=proc_starttime(os.getpid()))
    unowned_new = workdir_owned_by(None)
    unowned_old = workdir_owned_by(None, age_s=3600)
    try:
        device = tmp_path / "0000:00:06.0"
        device.mkdir()
        (device / "config").write_bytes(b"\xde\x10\x30\x23" + bytes(60))
        board_file = tmp_path / "b.yaml"
        board_file.write_text(f"board:\n  name: t\n  reference: {BOARDS.parent}/references/nvidia-h100-sxm5-80gb.yaml\n"
                              f"interfaces:\n  pcie: {{sysfs: '{device}'}}\n")
        with Board.from_file(board_file):
            pass
        assert not dead.exists() and not reused_pid.exists() and not unowned_old.exists()
        assert live.exists() and unowned_new.exists()
    finally:
        for d in (live, unowned_new):
            (d / OWNER_FILE).unlink(missing_ok=True)
        sweep_dead_simulators()
        for d in (live, unowned_new):
            shutil.rmtree(d, ignore_errors=True)


def test_a_simulator_whose_harness_dies_removes_its_workdir(tmp_path):
    # A middle process stands in for the harness: it makes the workdir (with an owner file, as
    # Board does), starts the simulator and is killed.
    workdir = Path(tempfile.mkdtemp(prefix=f"{SIM_WORKDIR_PREFIX}f2test-"))
    code = ("import json,os,subprocess,sys,time; w=sys.argv[1]; "
            "open(w+'/owner.json','w').write(json.dumps({'pid': os.getpid()})); "
            "p=subprocess.Popen([sys.executable,'-m','fixtures.sim','--profile','clean','--workdir',w]); "
            "print(p.pid, flush=True); time.sleep(60)")
    parent = subprocess.Popen([sys.executable, "-c", code, str(workdir)], stdout=subprocess.PIPE, text=True, cwd=ROOT)
    sim_pid = int(parent.stdout.readline())
    deadline = time.monotonic() + 30
    while not (workdir / "ready.json").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    parent.kill()
    parent.wait()
    deadline = time.monotonic() + 15
    while workdir.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    try:
        assert not workdir.exists(), "the orphaned simulator left its workdir"
        assert f"attestlab-sim-{sim_pid}" not in namespaces()
    finally:
        try:
            os.kill(sim_pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        shutil.rmtree(workdir, ignore_errors=True)


@needs_root
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_run_interrupted_in_the_egress_window_keeps_the_partial_capture(tmp_path, sig):
    """Ctrl-C or SIGTERM of the harness mid-window: the frames captured so far are signed as
    egress/capture.partial.pcapng, the run is ERROR and incomplete, and nothing is left behind."""
    trace, out = tmp_path / "trace", tmp_path / "out"
    proc = subprocess.Popen(
        [sys.executable, "-m", "harness.cli", "run", "--plan", str(plan_of(tmp_path, [])),
         "--board", str(BOARDS / "sim-clean.yaml"), "--key", str(TEST_KEY), "--out", str(out), "-q"],
        cwd=ROOT, env={**os.environ, "ATTESTLAB_STEP_TRACE": str(trace)},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not (trace.exists() and "L1-EGRESS::window" in trace.read_text().split()):
            assert proc.poll() is None and time.monotonic() < deadline, "the egress step never began"
            time.sleep(0.02)
        sim_pid, workdir = simulator_of(proc.pid)
        while link_exists(f"asim{sim_pid}"):  # the capture point has taken the link
            assert proc.poll() is None and time.monotonic() < deadline, "the window never began"
            time.sleep(0.05)
        time.sleep(1.0)
        proc.send_signal(sig)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 2, (stdout, stderr)
    assert "Traceback" not in stdout + stderr
    (envelope,) = out.glob("*/result.dsse.json")
    record = verify_result(envelope, load_public_key(TEST_PUB)).record
    assert record["verdict"] == "ERROR" and record["complete"] is False
    partial = [e for e in record["evidence"] if e["name"] == "egress/capture.partial.pcapng"]
    assert partial and partial[0]["size"] > 0, [e["name"] for e in record["evidence"]]
    stats = [e for e in record["evidence"] if e["name"] == "egress/capture-stats.partial.json"]
    blob = json.loads((envelope.parent / "evidence" / stats[0]["sha256"]).read_bytes())
    assert blob["error"].startswith("window interrupted")
    assert not workdir.exists() and f"attestlab-sim-{sim_pid}" not in namespaces()
    assert not link_exists(f"asim{sim_pid}")
