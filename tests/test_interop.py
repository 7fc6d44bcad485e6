"""Interop details: what other tools read from attestlab (issue #20, part 4).

- JUnit reports name the board and the run (testsuite name and properties), and a step's
  classname is the same however the plan is invoked (attestlab run or pytest, relative or
  absolute path, any cwd or rootdir);
- ERROR reads as an error with its reason: JUnit's <error> message, pytest's report heading
  and short summary;
- `attestlab verify --json` prints a JSON verdict also when verification fails;
- the commands the README and docs show parse today; `hypothesis` is a test dependency only,
  and every runtime dependency is used; the project metadata needs no deprecated form.
"""

from __future__ import annotations

import ast
import json
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
import xml.etree.ElementTree as ET

import pytest

from conftest import BOARDS, ROOT, TEST_KEY, TEST_PUB
from harness.cli import build_parser, main

CAPABILITIES_MISSING = "reference must give 'allowed' capability IDs, got None"
IDENTITY_WRONG = "subsystem_id: expected 0x16c1, measured 0x16c2"
# Level 1's PCIe steps with their expectations in the plan (no reference profile involved): on a
# relabelled H100 the identity FAILs, and the inventory, given no expectation, is ERROR.
PLAN = """\
plan:
  id: attestlab-interop
  version: "1.0"
  title: JUnit and terminal wording of a run
  scheme: attestlab
requirements:
  - id: L1-PCIE-IDENTITY
    title: The board is the product it claims to be on the PCIe bus
    rationale: A relabelled board must be caught.
    steps:
      - id: identity
        probe: pcie_identity
        check: identity_matches_reference
        expect: {vendor_id: 0x10de, device_id: 0x2330, subsystem_id: 0x16c1}
  - id: L1-PCIE-CAPABILITIES
    title: The board exposes no PCIe capability the product does not declare
    rationale: An undeclared capability is an unreviewed path.
    steps:
      - id: inventory
        probe: pcie_capabilities
        check: capabilities_within_allowed
"""


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The plan run twice on a relabelled board with a JUnit report: by `attestlab run` with a
    relative plan path, and by plain pytest from another directory with the absolute path and
    another rootdir."""
    folder = tmp_path_factory.mktemp("interop")
    (folder / "plan.yaml").write_text(PLAN)
    board = BOARDS / "sim-wrong-identity.yaml"
    via_cli = subprocess.run([sys.executable, "-m", "harness.cli", "run", "--plan", "plan.yaml", "--board", str(board),
                              "--key", str(TEST_KEY), "--out", str(folder / "results"), "--run-id", "interop-cli",
                              "--junitxml", str(folder / "cli.xml")], capture_output=True, text=True, cwd=folder)
    (folder / "elsewhere").mkdir()
    via_pytest = subprocess.run([sys.executable, "-m", "pytest", str(folder / "plan.yaml"), f"--board={board}",
                                 "--attestlab-run-id=interop-pytest", f"--junitxml={folder / 'pytest.xml'}",
                                 f"--rootdir={folder.parent}", "-p", "no:cacheprovider", "-p", "no:hypothesispytest",
                                 "-rA"], capture_output=True, text=True, cwd=folder / "elsewhere")
    return folder, via_cli, via_pytest


def suite(path):
    (testsuite,) = ET.parse(path).getroot().iter("testsuite")
    return testsuite


def test_the_junit_suite_names_the_board_and_the_run(runs):
    folder, via_cli, via_pytest = runs
    assert via_cli.returncode == 1, via_cli.stdout + via_cli.stderr  # a finding outranks an ERROR
    for xml, run_id in ((folder / "cli.xml", "interop-cli"), (folder / "pytest.xml", "interop-pytest")):
        testsuite = suite(xml)
        assert testsuite.get("name") == f"sim-wrong-identity run {run_id}"
        props = {p.get("name"): p.get("value") for p in testsuite.find("properties")}
        assert props["board"] == "sim-wrong-identity" and props["run_id"] == run_id
        assert props["plan"] == "attestlab-interop 1.0" and props["verdict"] == "FAIL"
        assert re.fullmatch(r"[0-9a-f]{64}", props["plan_sha256"])
    signed = {p.get("name"): p.get("value") for p in suite(folder / "cli.xml").find("properties")}
    assert signed["signed_result"].endswith("interop-cli/result.dsse.json")


def test_a_step_has_the_same_junit_classname_however_the_plan_is_invoked(runs):
    folder, _, _ = runs
    names = [{(c.get("classname"), c.get("name")) for c in suite(folder / xml).iter("testcase")}
             for xml in ("cli.xml", "pytest.xml")]
    assert names[0] == names[1] == {("attestlab-interop.L1-PCIE-IDENTITY", "identity"),
                                    ("attestlab-interop.L1-PCIE-CAPABILITIES", "inventory")}


def test_a_pytest_session_without_a_board_keeps_pytest_s_own_report(tmp_path):
    (tmp_path / "test_plain.py").write_text("def test_x():\n    pass\n")
    subprocess.run([sys.executable, "-m", "pytest", "test_plain.py", "--junitxml=plain.xml", "-p", "no:cacheprovider",
                    "-p", "no:hypothesispytest", "-q"], capture_output=True, text=True, cwd=tmp_path)
    testsuite = suite(tmp_path / "plain.xml")
    assert testsuite.get("name") == "pytest" and testsuite.find("properties") is None


def test_an_error_reads_as_its_reason_in_junit_and_on_the_terminal(runs):
    folder, via_cli, via_pytest = runs
    for xml in ("cli.xml", "pytest.xml"):
        cases = {c.get("name"): c for c in suite(folder / xml).iter("testcase")}
        error = cases["inventory"].find("error")
        assert error.get("message").startswith(CAPABILITIES_MISSING)
        assert "failed on setup" not in error.get("message")
        assert error.text.startswith("ERROR: L1-PCIE-CAPABILITIES::inventory")
        assert cases["identity"].find("failure").get("message").startswith(IDENTITY_WRONG)
    for run in (via_cli, via_pytest):
        assert f"ERROR at setup of L1-PCIE-CAPABILITIES::inventory: {CAPABILITIES_MISSING}" in run.stdout
        assert "_ L1-PCIE-IDENTITY::identity: " + IDENTITY_WRONG in run.stdout
    summary = via_cli.stdout.split("short test summary info", 1)[1]
    assert "ERROR plan.yaml::L1-PCIE-CAPABILITIES::inventory - reference must give" in summary, summary


def test_a_run_whose_output_is_a_pipe_prints_no_progress_at_all(runs):
    """No carriage return, no escape: a log or a CI job gets lines, never a status line."""
    _, via_cli, via_pytest = runs
    for run in (via_cli, via_pytest):
        assert "\r" not in run.stdout + run.stderr and "\x1b" not in run.stdout + run.stderr


def test_verify_json_prints_a_verdict_also_when_verification_fails(runs, tmp_path, capsys, monkeypatch):
    folder, _, _ = runs
    monkeypatch.chdir(ROOT)

    def verify_json(*args: str) -> tuple[int, dict]:
        capsys.readouterr()
        status = main(["verify", *args, "--json"])
        return status, json.loads(capsys.readouterr().out)

    run_dir = folder / "results" / "interop-cli"
    status, ok = verify_json(str(run_dir / "result.dsse.json"), "--pubkey", str(TEST_PUB))
    assert status == 0 and ok["verified"] is True and ok["verdict"] == "FAIL"

    other = tmp_path / "other"
    assert main(["keys", "generate", "--out", str(other)]) == 0
    tampered = shutil.copytree(run_dir, tmp_path / "tampered")
    blob = next((tampered / "evidence").iterdir())
    blob.write_bytes(blob.read_bytes() + b"x")
    forged = shutil.copytree(run_dir, tmp_path / "forged")
    envelope = json.loads((forged / "result.dsse.json").read_text())
    envelope["payload"] = envelope["payload"][:-8] + ("A" * 8 if not envelope["payload"].endswith("A" * 8) else "B" * 8)
    (forged / "result.dsse.json").write_text(json.dumps(envelope))
    cases = {
        "wrong key": ((str(run_dir), "--pubkey", f"{other}.pub"), 1, False),
        "tampered evidence": ((str(tampered), "--pubkey", str(TEST_PUB)), 1, False),
        "bad signature": ((str(forged), "--pubkey", str(TEST_PUB)), 1, False),
        "unreadable file": ((str(tmp_path / "none.dsse.json"), "--pubkey", str(TEST_PUB)), 1, False),
        "plan mismatch": ((str(run_dir), "--pubkey", str(TEST_PUB), "--plan", "test_plans/level1.yaml"), 1, True),
        "unreadable plan": ((str(run_dir), "--pubkey", str(TEST_PUB), "--plan", str(tmp_path / "none")), 2, True),
    }
    for what, (args, exit_status, signature_ok) in cases.items():
        status, doc = verify_json(*args)
        assert status == exit_status, what
        assert doc["verified"] is False and doc["signature_verified"] is signature_ok, what
        assert isinstance(doc["reason"], str) and doc["reason"], what
    assert "blob" in verify_json(*cases["tampered evidence"][0])[1]["reason"]
    assert "plan digest differs" in verify_json(*cases["plan mismatch"][0])[1]["reason"]


def documented_commands() -> list[tuple[str, str]]:
    """(file, command) for every `attestlab …` command line the README and docs/ show."""
    found = []
    for doc in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        text = re.sub(r"\\\n\s*", " ", doc.read_text())  # join continued lines
        for line in text.splitlines():
            match = re.match(r"\s*(?:\$ )?(?:\.venv/bin/)?attestlab ((?:run|verify|pcie|serial|egress|keys)\s.*)", line)
            if match:
                found.append((doc.name, match.group(1).strip().rstrip("`")))
    return found


def test_every_command_the_docs_show_is_one_attestlab_takes():
    commands = documented_commands()
    assert len(commands) >= 8
    parser = build_parser()
    for doc, command in commands:
        try:
            parser.parse_args(shlex.split(re.sub(r"<[^>]*>", "PLACEHOLDER", command.split("  #")[0])))
        except SystemExit:
            pytest.fail(f"{doc}: `attestlab {command}` is not a command attestlab takes")


def test_every_test_the_docs_cite_exists():
    """The threat model and the other docs cite tests by name as proof: a renamed or deleted test
    must not leave a claim without its proof."""
    defined = {m for path in (ROOT / "tests").glob("*.py")
               for m in re.findall(r"^(?:async )?def (test_\w+)", path.read_text(), re.M)}
    cited = {(doc.name, name) for doc in [ROOT / "README.md", *(ROOT / "docs").glob("*.md")]
             for name in re.findall(r"`(test_\w+)`", doc.read_text())}
    assert len(cited) > 50
    assert sorted(c for c in cited if c[1] not in defined) == []


def imports_of(folder: str) -> set[str]:
    names = set()
    for path in (ROOT / folder).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                names.add(node.module.split(".")[0])
    return names


def test_hypothesis_is_a_test_dependency_and_every_runtime_dependency_is_used():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    runtime = {re.split(r"[<>=\[ ]", d)[0].lower() for d in project["dependencies"]}
    test = {re.split(r"[<>=\[ ]", d)[0].lower() for d in project["optional-dependencies"]["test"]}
    assert "hypothesis" in test and "hypothesis" not in runtime
    shipped = imports_of("harness") | imports_of("probes") | imports_of("fixtures")
    assert "hypothesis" not in shipped
    module_of = {"pyserial": "serial", "pyyaml": "yaml", "pyusb": "usb"}  # where the import name is not the package's
    unused = {d for d in runtime if module_of.get(d, d.replace("-", "_")) not in shipped}
    assert not unused, f"declared runtime dependencies nothing in harness/, probes/ or fixtures/ imports: {unused}"


def test_the_project_metadata_uses_no_deprecated_form():
    doc = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert doc["project"]["license"] == "Apache-2.0"  # an SPDX string, not the deprecated table
    (setuptools,) = [r for r in doc["build-system"]["requires"] if r.startswith("setuptools")]
    assert int(re.search(r">=(\d+)", setuptools).group(1)) >= 77  # the first to take an SPDX license
