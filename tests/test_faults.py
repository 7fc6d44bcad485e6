"""Faults during a run (issue #21, items 2, 3, 5, 6): two runs with one run id, output that cannot
be written, keys others can read, signals at each phase.

For every fault: no PASS the fault could have caused, no traceback, the right exit code, nothing
left behind (no temporary file, no simulator process or work directory), and every result that
exists verifies and is what its own run decided. Runs use the PCIe plan (fast) on sim-clean; a
run is held at a chosen moment by tests/fault_pause.py (a pytest plugin loaded only here)."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import BOARDS, PCIE_PLAN, ROOT, TEST_KEY, TEST_PUB, attestlab, needs_root

TESTS = Path(__file__).resolve().parent


class HeldRun:
    """`attestlab run` of the PCIe plan in its own process, held at `phase` (tests/fault_pause.py)."""

    def __init__(self, tmp_path: Path, phase: str = "", *, board: str = "sim-clean", run_id: str = "r",
                 out: Path | None = None) -> None:
        self.out = out or tmp_path / "results"
        self.run_dir = self.out / run_id
        self.tmpdir = tmp_path / f"tmp-{run_id}-{board}"   # the simulator's work directory goes here
        self.tmpdir.mkdir()
        self.mark, self.go = tmp_path / f"mark-{board}", tmp_path / f"go-{board}"
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]),
               "PYTEST_PLUGINS": "fault_pause", "ATTESTLAB_FAULT_PHASE": phase, "TMPDIR": str(self.tmpdir),
               "ATTESTLAB_FAULT_MARK": str(self.mark), "ATTESTLAB_FAULT_GO": str(self.go)}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "harness.cli", "run", "--plan", str(PCIE_PLAN), "--board",
             str(BOARDS / f"{board}.yaml"), "--key", str(TEST_KEY), "--out", str(self.out), "--run-id", run_id,
             "-q"], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def reached(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not self.mark.exists():
            assert self.proc.poll() is None, f"the run ended before its phase: {self.proc.communicate()}"
            assert time.monotonic() < deadline, "the run never reached its phase"
            time.sleep(0.02)

    def release(self) -> None:
        self.go.write_text("go")

    def finish(self) -> tuple[int, str, str]:
        out, err = self.proc.communicate(timeout=120)
        assert "Traceback" not in out + err, out + err
        assert not [p for p in self.out.rglob("*") if p.name.endswith(".tmp")], "a temporary file was left"
        assert not list(self.tmpdir.iterdir()), f"left behind: {list(self.tmpdir.iterdir())}"
        assert not _processes_under(self.tmpdir), "a simulator outlived its run"
        return self.proc.returncode, out, err


def _processes_under(directory: Path) -> list[int]:
    pids = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if str(directory).encode() in cmdline.read_bytes():
                pids.append(int(cmdline.parent.name))
        except OSError:
            pass
    return pids


def verified(run_dir: Path) -> dict:
    result = attestlab("verify", str(run_dir / "result.dsse.json"), "--pubkey", str(TEST_PUB), "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def verify_says(run_dir: Path) -> str:
    result = attestlab("verify", str(run_dir), "--pubkey", str(TEST_PUB))
    assert result.returncode == 1 and "Traceback" not in result.stderr
    return result.stderr


def run_pcie(out: Path, *extra: str, key: Path = TEST_KEY, board: str = "sim-clean") -> subprocess.CompletedProcess:
    return attestlab("run", "--plan", str(PCIE_PLAN), "--board", str(BOARDS / f"{board}.yaml"), "--key", str(key),
                     "--out", str(out), "-q", *extra)


# --- 2. one run id, two runs ---

def test_a_second_claimant_of_a_run_id_stops_before_touching_the_board(tmp_path):
    first = HeldRun(tmp_path, "collected", board="sim-wrong-identity")
    first.reached()  # claimed, board untouched
    second = run_pcie(tmp_path / "results", "--run-id", "r")
    assert second.returncode == 2 and "another run has this run id" in second.stderr
    assert "attestlab-pcie-only on" not in second.stdout  # it ran no step
    assert "Traceback" not in second.stdout + second.stderr
    claim = json.loads((first.run_dir / "claim.json").read_text())
    assert claim["pid"] == first.proc.pid and claim["host"]
    said = verify_says(first.run_dir)  # a folder whose run is still going
    assert "incomplete result" in said and f"pid {first.proc.pid}" in said
    first.release()
    code, _, _ = first.finish()
    assert code == 1  # wrong identity: its own FAIL, not replaced by anyone
    report = verified(first.run_dir)
    assert report["verdict"] == "FAIL" and report["requirements"]["L1-PCIE-IDENTITY"] == "FAIL"


def test_two_concurrent_runs_of_one_run_id_exactly_one_runs_and_keeps_its_own_verdict(tmp_path):
    runs = [HeldRun(tmp_path, board=board) for board in ("sim-wrong-identity", "sim-clean")]
    results = [run.finish() for run in runs]
    codes = sorted(code for code, _, _ in results)
    assert codes in ([1, 2], [0, 2]), results
    loser = next(r for r in results if r[0] == 2)
    assert "another run has this run id" in loser[2]
    winner_code = next(code for code, _, _ in results if code != 2)
    report = verified(runs[0].run_dir)
    assert report["verdict"] == {0: "PASS", 1: "FAIL"}[winner_code]
    board = json.loads((runs[0].run_dir / "claim.json").read_text())["pid"]
    assert board == next(run.proc.pid for run in runs if run.proc.returncode == winner_code)


# --- 3. output that cannot be written ---

def test_out_naming_a_file_is_exit_2_before_the_board_is_touched(tmp_path):
    plain = tmp_path / "a-file"
    plain.write_text("")
    result = run_pcie(plain)
    assert result.returncode == 2 and f"output {plain} is not a directory" in result.stderr
    assert "attestlab-pcie-only on" not in result.stdout and "Traceback" not in result.stderr


@pytest.fixture
def small_tmpfs(tmp_path):
    """mount(tmpfs, size, options) -> its mount point; unmounted at the end."""
    mounts = []

    def mount(size: str, options: str = "") -> Path:
        point = tmp_path / f"mnt{len(mounts)}"
        point.mkdir()
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}{',' + options if options else ''}", "tmpfs",
                        str(point)], check=True)
        mounts.append(point)
        return point

    yield mount
    for point in reversed(mounts):
        subprocess.run(["umount", str(point)], check=False)


@needs_root
def test_read_only_output_is_exit_2_naming_why(small_tmpfs):
    out = small_tmpfs("1m", "ro")
    result = run_pcie(out)
    assert result.returncode == 2 and "Read-only file system (EROFS)" in result.stderr
    assert "attestlab-pcie-only on" not in result.stdout and "Traceback" not in result.stderr


@needs_root
def test_output_without_room_is_refused_before_the_board_is_touched(small_tmpfs):
    out = small_tmpfs("256k")
    result = run_pcie(out)
    assert result.returncode == 2 and "a run needs at least 32 MiB" in result.stderr
    assert list(out.iterdir()) == []  # the claim was given back


def _fill(directory: Path) -> None:
    fd = os.open(directory / "filler", os.O_WRONLY | os.O_CREAT)
    try:
        for size in (1 << 20, 4096, 1):
            try:
                while os.write(fd, b"\0" * size):
                    pass
            except OSError as exc:
                assert exc.errno == errno.ENOSPC
    finally:
        os.close(fd)


@needs_root
def test_disk_full_when_the_result_is_written_is_exit_2_and_leaves_nothing_that_verifies(tmp_path, small_tmpfs):
    out = small_tmpfs("40m")
    run = HeldRun(tmp_path, "signing", out=out)
    run.reached()
    _fill(out)
    run.release()
    code, out_text, err = run.finish()
    assert code == 2 and "result NOT written" in err and "No space left on device (ENOSPC)" in err
    assert len(err.strip().splitlines()) == 1
    assert not (run.run_dir / "result.dsse.json").exists()
    assert "interrupted run" in verify_says(run.run_dir)


# --- 5. keys ---

@pytest.mark.parametrize("mode", [0o644, 0o640])
def test_a_private_key_others_can_read_is_refused_with_the_fix(tmp_path, mode):
    key = tmp_path / "lab.key"
    key.write_bytes(TEST_KEY.read_bytes())
    key.chmod(mode)
    result = run_pcie(tmp_path / "results", key=key)
    assert result.returncode == 2
    assert f"permissions {mode:04o} for '{key}' are too open" in result.stderr
    assert f"run: chmod 600 {key}" in result.stderr
    assert not (tmp_path / "results").exists()


def test_a_key_that_is_a_directory_says_so(tmp_path):
    result = run_pcie(tmp_path / "results", key=tmp_path)
    assert result.returncode == 2 and "is a directory" in result.stderr and "no such file" not in result.stderr


# --- 6. signals ---

def interrupted_at(tmp_path: Path, phase: str, sig: signal.Signals) -> tuple[HeldRun, dict]:
    """A run stopped by `sig` at `phase`: it exits 2, saying so, signed ERROR and incomplete;
    (the run, the signed record's `<session>` test)."""
    run = HeldRun(tmp_path, phase)
    run.reached()
    run.proc.send_signal(sig)
    code, _, err = run.finish()
    assert code == 2 and f"interrupted by {sig.name}; signed as ERROR and incomplete" in err
    report = verified(run.run_dir)
    assert report["verdict"] == "ERROR" and report["complete"] is False
    session = next(t for t in _record(run.run_dir)["tests"] if t["nodeid"] == "<session>")
    assert session["verdict"] == "ERROR" and sig.name in session["summary"]
    return run, session


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])  # SIGINT: mid-probe and signing below
def test_a_signal_before_any_step_is_signed_as_error_and_incomplete(tmp_path, sig):
    interrupted_at(tmp_path, "collected", sig)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_mid_probe_keeps_and_signs_what_it_had_collected(tmp_path, sig):
    _, session = interrupted_at(tmp_path, "evidence:pcie/", sig)  # the config space stored, the probe not done
    assert "L1-PCIE-IDENTITY::identity" in session["summary"]
    assert any(e["name"].endswith("/config") for e in session["evidence"])  # cited, signed, on disk


def _record(run_dir: Path) -> dict:
    import base64
    envelope = json.loads((run_dir / "result.dsse.json").read_text())
    return json.loads(base64.b64decode(envelope["payload"]))["predicate"]


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_while_the_result_is_written_waits_for_it(tmp_path, sig):
    run = HeldRun(tmp_path, "signing")
    run.reached()
    run.proc.send_signal(sig)
    time.sleep(0.2)
    run.release()
    code, _, err = run.finish()
    assert code == 2 and f"interrupted by {sig.name} while the result was written; it was finished first" in err
    assert verified(run.run_dir)["verdict"] == "PASS"  # every step had run: what the run decided


def test_a_second_signal_while_the_result_is_written_leaves_an_interrupted_run(tmp_path):
    run = HeldRun(tmp_path, "signing")
    run.reached()
    run.proc.send_signal(signal.SIGTERM)
    time.sleep(0.2)
    run.proc.send_signal(signal.SIGINT)
    code, _, err = run.finish()
    assert code == 2 and "nothing was signed" in err
    assert not (run.run_dir / "result.dsse.json").exists()
    assert "interrupted run" in verify_says(run.run_dir)
