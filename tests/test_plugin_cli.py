"""Running plans: pytest outcomes, exit codes, the summary, JUnit, fixtures, verify.

These test the run machinery, so they use level1's PCIe requirements alone (fixtures/plans/
pcie-only.yaml); the whole standard plan is exercised by tests/test_zoo_matrix.py."""

from __future__ import annotations

import json
import subprocess
import sys
import xml.etree.ElementTree as ET

import pytest

from conftest import BOARDS, PCIE_PLAN as PLAN, ROOT, TEST_KEY, TEST_PUB, attestlab

REFERENCE = BOARDS.parent / "references" / "nvidia-h100-sxm5-80gb.yaml"


def run_plan(tmp_path, board, *extra):
    return attestlab("run", "--plan", str(PLAN), "--board", str(board), "--key", str(TEST_KEY),
                     "--out", str(tmp_path / "results"), *extra)


def envelope_of(result) -> str:
    return next(line.split(": ", 1)[1] for line in result.stdout.splitlines() if line.startswith("signed result: "))


@pytest.fixture
def board_missing_capability_reference(tmp_path):
    reference = tmp_path / "ref.yaml"
    reference.write_text(REFERENCE.read_text().split("  capabilities:")[0])
    board = tmp_path / "board.yaml"
    board.write_text(f"board:\n  name: no-cap-ref\n  simulated: clean\n  reference: {reference}\n")
    return board


def test_run_exit_codes_are_0_pass_1_fail_2_error(tmp_path, board_missing_capability_reference):
    assert run_plan(tmp_path, BOARDS / "sim-clean.yaml").returncode == 0
    assert run_plan(tmp_path, BOARDS / "sim-wrong-identity.yaml").returncode == 1
    error = run_plan(tmp_path, board_missing_capability_reference)
    assert error.returncode == 2
    assert "ERROR  L1-PCIE-CAPABILITIES" in error.stdout
    assert "no reference for 'pcie.capabilities'" in error.stdout


def test_run_help_documents_exit_codes():
    assert "0 PASS, 1 FAIL" in attestlab("run", "--help").stdout


def test_bad_plan_is_exit_2_naming_file_and_line(tmp_path):
    plan = tmp_path / "bad.yaml"
    plan.write_text(PLAN.read_text().replace("probe: pcie_capabilities", "probe: pcie_capabilitys"))
    assert "pcie_capabilitys" in plan.read_text()
    result = attestlab("run", "--plan", str(plan), "--board", str(BOARDS / "sim-clean.yaml"),
                       "--key", str(TEST_KEY), "--out", str(tmp_path))
    assert result.returncode == 2
    assert "bad.yaml:" in result.stdout and "unknown probe 'pcie_capabilitys'" in result.stdout


def test_missing_key_is_exit_2_with_a_message(tmp_path):
    result = attestlab("run", "--plan", str(PLAN), "--board", str(BOARDS / "sim-clean.yaml"),
                       "--key", str(tmp_path / "none.key"))
    assert result.returncode == 2 and "no such file" in result.stderr


def test_pytest_maps_verdicts_to_outcomes_and_writes_junit(tmp_path, board_missing_capability_reference):
    junit = tmp_path / "report.xml"
    result = subprocess.run([sys.executable, "-m", "pytest", str(PLAN), f"--board={board_missing_capability_reference}",
                             f"--junitxml={junit}", "-p", "no:cacheprovider"], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 1
    assert "1 passed, 1 error" in result.stdout
    cases = {c.get("name"): c for c in ET.parse(junit).getroot().iter("testcase")}
    assert set(cases) == {"identity", "inventory"}
    assert cases["inventory"].find("error") is not None
    assert "no reference for" in cases["inventory"].find("error").get("message", "") + (cases["inventory"].find("error").text or "")

    failing = subprocess.run([sys.executable, "-m", "pytest", str(PLAN), f"--board={BOARDS / 'sim-extra-capability.yaml'}",
                              "-p", "no:cacheprovider", "-rA"], capture_output=True, text=True, cwd=ROOT)
    assert "1 failed, 1 passed" in failing.stdout
    assert f"{PLAN.name}::L1-PCIE-CAPABILITIES::inventory" in failing.stdout
    assert "FAIL   L1-PCIE-CAPABILITIES" in failing.stdout and "overall: FAIL" in failing.stdout
    assert "result not signed" in failing.stdout


def test_plan_without_board_is_a_usage_error():
    result = subprocess.run([sys.executable, "-m", "pytest", str(PLAN), "-p", "no:cacheprovider"],
                            capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 4 and "give --board" in result.stderr


def test_hand_written_tests_get_board_and_evidence_fixtures(tmp_path):
    test_file = tmp_path / "test_bench.py"
    test_file.write_text(
        "def test_reads_the_board(board, evidence):\n"
        "    ref = evidence.add('extra/config', board.pcie.config_space())\n"
        "    assert board.pcie.hex_attribute('vendor') == 0x10de and ref.size == 4096\n")
    with_board = subprocess.run([sys.executable, "-m", "pytest", str(test_file), f"--board={BOARDS / 'sim-clean.yaml'}",
                                 "-p", "no:cacheprovider", "-q"], capture_output=True, text=True, cwd=tmp_path)
    assert "1 passed" in with_board.stdout, with_board.stdout
    without = subprocess.run([sys.executable, "-m", "pytest", str(test_file), "-p", "no:cacheprovider", "-q", "-rs"],
                             capture_output=True, text=True, cwd=tmp_path)
    assert "1 skipped" in without.stdout and "needs --board" in without.stdout


def test_verify_command_accepts_a_result_and_rejects_a_changed_one(tmp_path):
    run = run_plan(tmp_path, BOARDS / "sim-clean.yaml")
    envelope = envelope_of(run)
    ok = attestlab("verify", envelope, "--pubkey", str(TEST_PUB), "--json")
    assert ok.returncode == 0 and json.loads(ok.stdout)["verdict"] == "PASS"
    doc = json.loads(open(envelope).read())
    doc["payload"] = doc["payload"][:-8] + ("A" * 8 if not doc["payload"].endswith("A" * 8) else "B" * 8)
    open(envelope, "w").write(json.dumps(doc))
    bad = attestlab("verify", envelope, "--pubkey", str(TEST_PUB))
    assert bad.returncode == 1 and bad.stderr.startswith("NOT VERIFIED:")


def test_keys_generate_writes_a_pair_and_refuses_to_overwrite(tmp_path):
    assert attestlab("keys", "generate", "--out", str(tmp_path / "lab")).returncode == 0
    assert (tmp_path / "lab.key").is_file() and (tmp_path / "lab.pub").is_file()
    again = attestlab("keys", "generate", "--out", str(tmp_path / "lab"))
    assert again.returncode == 2 and "not overwriting" in again.stderr


def test_partial_run_is_signed_as_incomplete_and_cannot_pass(tmp_path):
    result = subprocess.run([sys.executable, "-m", "pytest", str(PLAN), f"--board={BOARDS / 'sim-clean.yaml'}",
                             f"--attestlab-key={TEST_KEY}", f"--attestlab-out={tmp_path}", "-k", "IDENTITY",
                             "-p", "no:cacheprovider"], capture_output=True, text=True, cwd=ROOT)
    assert "incomplete: 1 plan step(s) not run (L1-PCIE-CAPABILITIES::inventory)" in result.stdout
    assert "overall: ERROR" in result.stdout
    verify = attestlab("verify", envelope_of(result), "--pubkey", str(TEST_PUB), "--json")
    report = json.loads(verify.stdout)
    assert report["verdict"] == "ERROR" and report["complete"] is False


def test_run_id_is_checked_and_never_overwrites(tmp_path):
    bad = attestlab("run", "--plan", str(PLAN), "--board", str(BOARDS / "sim-clean.yaml"), "--key", str(TEST_KEY),
                    "--out", str(tmp_path), "--run-id", "../escape")
    assert bad.returncode == 2 and "use letters, digits" in bad.stdout + bad.stderr
    first = run_plan(tmp_path, BOARDS / "sim-clean.yaml", "--run-id", "r1")
    assert first.returncode == 0
    again = run_plan(tmp_path, BOARDS / "sim-clean.yaml", "--run-id", "r1")
    assert again.returncode == 2 and "never overwritten" in again.stdout + again.stderr
