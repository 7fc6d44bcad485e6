"""The zoo's matrix: the standard plan passes the clean board and fails each bad variant on
the right requirement, for the right reason (fixtures/boards/matrix.yaml), with a signed
result that verifies. Each board runs through `attestlab run` as a lab engineer would."""

from __future__ import annotations

import pytest
import yaml

from harness.results.bundle import verify_result
from harness.results.keys import load_public_key

from conftest import BOARDS, PLAN, TEST_KEY, TEST_PUB, attestlab

MATRIX = yaml.safe_load((BOARDS / "matrix.yaml").read_text())


@pytest.mark.parametrize("board", sorted(MATRIX))
def test_standard_plan_verdicts_match_the_matrix(board, tmp_path):
    run = attestlab("run", "--plan", str(PLAN), "--board", str(BOARDS / f"{board}.yaml"), "--key", str(TEST_KEY),
                    "--out", str(tmp_path), "-q", timeout=300)
    envelope = next(line.split(": ", 1)[1] for line in run.stdout.splitlines() if line.startswith("signed result: "))
    record = verify_result(envelope, load_public_key(TEST_PUB)).record
    expected = MATRIX[board] or {}
    verdicts = {req["id"]: req["verdict"] for req in record["requirements"]}
    for requirement, verdict in verdicts.items():
        want = expected.get(requirement, {}).get("verdict", "PASS")
        assert verdict == want, f"{board}: {requirement} is {verdict}, expected {want}\n{run.stdout[-3000:]}"
        if "reason" in expected.get(requirement, {}):
            reasons = [r for req in record["requirements"] if req["id"] == requirement
                       for step in req["steps"] for r in step["reasons"]]
            assert any(expected[requirement]["reason"] in r for r in reasons), reasons
    assert set(expected) <= set(verdicts)
    assert run.returncode == (0 if record["verdict"] == "PASS" else 1 if record["verdict"] == "FAIL" else 2)
    assert record["board"]["measured"]["device_id"] == 0x2330
