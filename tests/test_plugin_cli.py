"""Running plans: pytest outcomes, exit codes, the summary, JUnit, fixtures, verify.

These test the run machinery, so they use level1's PCIe requirements alone (fixtures/plans/
pcie-only.yaml); the whole standard plan is exercised by tests/test_zoo_matrix.py."""

from __future__ import annotations

import json
import subprocess
import sys
import xml.etree.ElementTree as ET

import pytest

from conftest import BOARDS, PCIE_PLAN as PLAN, ROOT, TEST_KEY, TEST_PUB, at_once, attestlab, signed_reference

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
    board.write_text(f"board:\n  name: no-cap-ref\n  simulated: clean\n  reference: {signed_reference(reference)}\n")
    return board


def test_run_exit_codes_are_0_pass_1_fail_2_error(tmp_path, board_missing_capability_reference):
    passed, failed, error = at_once(lambda: run_plan(tmp_path, BOARDS / "sim-clean.yaml"),
                                    lambda: run_plan(tmp_path, BOARDS / "sim-wrong-identity.yaml"),
                                    lambda: run_plan(tmp_path, board_missing_capability_reference))
    assert passed.returncode == 0
    assert failed.returncode == 1
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
    result, failing = at_once(
        lambda: subprocess.run([sys.executable, "-m", "pytest", str(PLAN), f"--board={board_missing_capability_reference}",
                                f"--junitxml={junit}", "-p", "no:cacheprovider"], capture_output=True, text=True, cwd=ROOT),
        lambda: subprocess.run([sys.executable, "-m", "pytest", str(PLAN), f"--board={BOARDS / 'sim-extra-capability.yaml'}",
                                "-p", "no:cacheprovider", "-rA"], capture_output=True, text=True, cwd=ROOT))
    assert result.returncode == 1
    assert "1 passed, 1 error" in result.stdout
    cases = {c.get("name"): c for c in ET.parse(junit).getroot().iter("testcase")}
    assert set(cases) == {"identity", "inventory"}
    assert cases["inventory"].find("error") is not None
    assert "no reference for" in cases["inventory"].find("error").get("message", "") + (cases["inventory"].find("error").text or "")

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
    with_board, without = at_once(
        lambda: subprocess.run([sys.executable, "-m", "pytest", str(test_file), f"--board={BOARDS / 'sim-clean.yaml'}",
                                "-p", "no:cacheprovider", "-q"], capture_output=True, text=True, cwd=tmp_path),
        lambda: subprocess.run([sys.executable, "-m", "pytest", str(test_file), "-p", "no:cacheprovider", "-q", "-rs"],
                               capture_output=True, text=True, cwd=tmp_path))
    assert "1 passed" in with_board.stdout, with_board.stdout
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


# --- the whole session counts (issue #19, 10) ---

def run_session(tmp_path, *test_files, board=BOARDS / "sim-clean.yaml"):
    """pytest on the PCIe plan plus hand-written test files, signed; (process, verify --json report)."""
    out = tmp_path / "results"
    result = subprocess.run([sys.executable, "-m", "pytest", str(PLAN), *map(str, test_files), f"--board={board}",
                             f"--attestlab-key={TEST_KEY}", f"--attestlab-out={out}", "-p", "no:cacheprovider",
                             "--rootdir", str(tmp_path)], capture_output=True, text=True, cwd=ROOT)
    verify = attestlab("verify", envelope_of(result), "--pubkey", str(TEST_PUB), "--json")
    assert verify.returncode == 0, verify.stderr
    return result, json.loads(verify.stdout), envelope_of(result)


def signed_record(envelope: str) -> dict:
    import base64
    return json.loads(base64.b64decode(json.loads(open(envelope).read())["payload"]))["predicate"]


def test_a_failing_hand_written_test_makes_the_signed_result_fail(tmp_path):
    test_file = tmp_path / "test_bench.py"
    test_file.write_text(
        "def test_vendor_is_not_what_we_need(board, evidence):\n"
        "    evidence.add('bench/config', board.pcie.config_space())\n"
        "    assert board.pcie.hex_attribute('vendor') == 0x1234\n")
    result, report, envelope = run_session(tmp_path, test_file)
    assert "1 failed, 2 passed" in result.stdout
    assert report["verdict"] == "FAIL"
    assert set(report["requirements"].values()) == {"PASS"}  # the plan itself passed
    hand = next(t for t in signed_record(envelope)["tests"] if t["nodeid"].endswith("test_vendor_is_not_what_we_need"))
    assert hand["outcome"] == "failed" and hand["verdict"] == "FAIL" and "0x1234" in hand["summary"] + "4660"
    assert [e["name"] for e in hand["evidence"]] == ["bench/config"]  # its evidence is cited, and signed
    assert "overall: FAIL" in result.stdout and "test_vendor_is_not_what_we_need" in result.stdout


def test_errors_and_skips_of_tests_that_never_touch_the_board_count_too(tmp_path):
    erroring = tmp_path / "test_erroring.py"
    erroring.write_text("import pytest\n\n@pytest.fixture\ndef broken():\n    raise RuntimeError('bench not ready')\n\n"
                        "def test_uses_broken(broken):\n    pass\n")
    skipping = tmp_path / "test_skipping.py"
    skipping.write_text("import pytest\n\ndef test_not_here():\n    pytest.skip('no scope attached')\n")
    (_, report, _), (_, skipped, envelope) = at_once(lambda: run_session(tmp_path, erroring),
                                                     lambda: run_session(tmp_path, skipping))
    assert report["verdict"] == "ERROR"
    assert skipped["verdict"] == "SKIP"
    assert {t["outcome"] for t in signed_record(envelope)["tests"]} == {"passed", "skipped"}


def test_a_test_file_that_cannot_be_collected_makes_the_run_error(tmp_path):
    broken = tmp_path / "test_broken.py"
    broken.write_text("def test_x(:\n")
    ok = tmp_path / "test_ok.py"
    ok.write_text("def test_ok():\n    pass\n")
    result = subprocess.run([sys.executable, "-m", "pytest", str(PLAN), str(broken), str(ok),
                             f"--board={BOARDS / 'sim-clean.yaml'}", f"--attestlab-key={TEST_KEY}",
                             f"--attestlab-out={tmp_path / 'results'}", "-p", "no:cacheprovider",
                             "--continue-on-collection-errors"], capture_output=True, text=True, cwd=ROOT)
    assert "1 error" in result.stdout
    assert "overall: ERROR" in result.stdout
    verify = attestlab("verify", envelope_of(result), "--pubkey", str(TEST_PUB), "--json")
    assert json.loads(verify.stdout)["verdict"] == "ERROR"


def test_passing_hand_written_tests_keep_a_pass(tmp_path):
    ok = tmp_path / "test_ok.py"
    ok.write_text("def test_reads_vendor(board):\n    assert board.pcie.hex_attribute('vendor') == 0x10de\n")
    result, report, envelope = run_session(tmp_path, ok)
    assert "3 passed" in result.stdout and report["verdict"] == "PASS"
    assert [t["step"] for t in signed_record(envelope)["tests"]] == [
        "L1-PCIE-IDENTITY::identity", "L1-PCIE-CAPABILITIES::inventory", ""]


# --- what the signature covers (issue #19, 9) ---

LEVEL1 = ROOT / "test_plans" / "level1.yaml"


def test_the_record_binds_the_plan_its_steps_and_each_expectation_source(tmp_path):
    run = run_plan(tmp_path, BOARDS / "sim-clean.yaml")
    record = signed_record(envelope_of(run))
    import hashlib
    assert record["plan"]["sha256"] == hashlib.sha256(PLAN.read_bytes()).hexdigest()
    assert [(r["id"], [s["id"] for s in r["steps"]]) for r in record["plan"]["requirements"]] == [
        ("L1-PCIE-IDENTITY", ["identity"]), ("L1-PCIE-CAPABILITIES", ["inventory"])]
    step = record["requirements"][0]["steps"][0]
    assert step["expectation"]["source"] == "reference" and step["expectation"]["key"] == "pcie.identity"
    assert step["expectation"]["profile_sha256"] == hashlib.sha256(REFERENCE.read_bytes()).hexdigest()
    assert step["expectation"]["value"]["vendor_id"] == 0x10DE


def test_verify_with_the_plan_accepts_exactly_that_plan(tmp_path):
    envelope = envelope_of(run_plan(tmp_path, BOARDS / "sim-clean.yaml"))
    edited = tmp_path / "pcie-only.yaml"
    edited.write_bytes(PLAN.read_bytes() + b"\n")  # one byte more: another plan
    same, other, level1, not_a_plan = at_once(
        lambda: attestlab("verify", envelope, "--pubkey", str(TEST_PUB), "--plan", str(PLAN), "--reference", str(REFERENCE)),
        lambda: attestlab("verify", envelope, "--pubkey", str(TEST_PUB), "--plan", str(edited)),
        lambda: attestlab("verify", envelope, "--pubkey", str(TEST_PUB), "--plan", str(LEVEL1)),
        lambda: attestlab("verify", envelope, "--pubkey", str(TEST_PUB), "--plan", "/dev/zero"))
    assert same.returncode == 0 and "came from exactly this plan" in same.stdout
    assert other.returncode == 1 and "plan digest differs" in other.stderr
    assert level1.returncode == 1 and "holds 2 step(s)" in level1.stderr
    assert not_a_plan.returncode == 2 and "not a regular file" in not_a_plan.stderr


def test_a_plan_that_keeps_the_level1_id_but_replaces_the_reference_is_exposed(tmp_path):
    """The review's case: id 'attestlab-level1 1.0', 2 of 7 requirements, an `expect:` in place
    of the reference. It verifies (it is a genuine signed run), but not as level 1."""
    import yaml
    forged = yaml.safe_load(LEVEL1.read_text())
    forged["requirements"] = forged["requirements"][:2]
    identity = forged["requirements"][0]["steps"][0]
    del identity["reference"]
    identity["expect"] = {"vendor_id": 0x10DE}  # what any NVIDIA board passes
    plan = tmp_path / "level1.yaml"
    plan.write_text(yaml.safe_dump(forged, sort_keys=False))
    run = attestlab("run", "--plan", str(plan), "--board", str(BOARDS / "sim-wrong-identity.yaml"),
                    "--key", str(TEST_KEY), "--out", str(tmp_path / "results"))
    assert run.returncode == 0  # the forged plan passes a wrong board...
    envelope = envelope_of(run)
    shown, as_json, against = at_once(
        lambda: attestlab("verify", envelope, "--pubkey", str(TEST_PUB)),
        lambda: attestlab("verify", envelope, "--pubkey", str(TEST_PUB), "--json"),
        lambda: attestlab("verify", envelope, "--pubkey", str(TEST_PUB), "--plan", str(LEVEL1)))
    assert shown.returncode == 0
    assert "2 requirement(s), 2 step(s)" in shown.stdout
    assert "FROM THE PLAN (expect: at line" in shown.stdout and "NOTE: 1 step(s)" in shown.stdout
    report = json.loads(as_json.stdout)
    assert report["expectations_from_plan"] == ["L1-PCIE-IDENTITY::identity"]
    assert against.returncode == 1  # ...but is not a level-1 result
    assert "plan digest differs" in against.stderr and "L1-PCIE-IDENTITY::identity took its expectation" in against.stderr


def test_the_published_level1_digest_is_the_plan_s():
    import hashlib
    import re
    published = re.search(r"`test_plans/level1.yaml` sha256: `([0-9a-f]{64})`",
                          (ROOT / "docs" / "plan-format.md").read_text())
    assert published, "docs/plan-format.md publishes the level-1 plan's sha256"
    assert published.group(1) == hashlib.sha256(LEVEL1.read_bytes()).hexdigest(), \
        "test_plans/level1.yaml changed: publish its new sha256 in docs/plan-format.md"


def test_reasons_quoting_the_board_cannot_rewrite_the_operators_screen():
    """A board that puts ESC sequences or newlines into what a reason quotes must not make a
    FAIL look like a PASS in the terminal: control characters are shown escaped, on one line."""
    from harness.plugin import StepVerdict, terminal_safe
    from harness.verdict import StepResult, Verdict
    hostile = "banner 'ok\x1b[1A\x1b[2K\rPASS   L1-PCIE-IDENTITY\nPASS\u202e'"
    result = StepResult("R", "s", "p", "c", Verdict.FAIL, (hostile,), ())
    shown = StepVerdict(result).describe()
    assert "\x1b" not in shown and "\r" not in shown and "\u202e" not in shown
    assert shown.count("\n") == 1  # the header line and one reason line
    assert terminal_safe(hostile).startswith("banner 'ok\\x1b[1A\\x1b[2K\\x0dPASS")
