"""Reference bundles: a signed profile and every file it pins, in one file an air-gapped lab verifies.

A bundle is read wherever a signed profile is; its pinned files come from it alone, each checked
against the sha256 the signed profile gives, so neither the bundle's unsigned member nor the disk
beside it can change a verdict.
"""

from __future__ import annotations

import base64
import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import CAPTURE, TEST_KEY, TEST_TRUST, attestlab
from harness.cli import main
from harness.evidence import EvidenceStore
from harness.reference import load_board_reference
from harness.reference.bundle import (BUNDLE_KEY, BundleError, bundle_contents, make_bundle, pinned_files,
                                     pinned_problems, read_pinned)
from harness.reference.trust import load_trust_file
from harness.verdict import MissingReference, ProbeError, Verdict
from test_vendor_attestation import AT, NONCE, RIM, SAMPLE, WHEN, run, write_profile

PLAN_STEPS = Path(__file__).resolve().parent.parent / "test_plans" / "vendor-attestation.yaml"


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """(envelope beside its pinned files, a bundle of it copied alone into an empty directory)."""
    envelope = write_profile(tmp_path_factory.mktemp("profile"))
    assert main(["reference", "bundle", str(envelope)]) == 0
    made = envelope.with_name("hopper.yaml.bundle.json")
    alone = tmp_path_factory.mktemp("airgap") / "hopper.bundle.json"
    shutil.copy(made, alone)
    return envelope, alone


def board(path: Path) -> SimpleNamespace:
    return SimpleNamespace(reference=load_board_reference(path, load_trust_file(TEST_TRUST), WHEN))


def rewrite(source: Path, target: Path, change) -> Path:
    document = json.loads(source.read_text())
    change(document[BUNDLE_KEY]["files"])
    target.write_text(json.dumps(document))
    return target


def test_a_bundle_carries_every_pinned_file_and_is_itself_a_trusted_signed_profile(built):
    envelope, alone = built
    files = bundle_contents(alone)
    assert sorted(files) == sorted(f"nvidia/{n}" for n in ("verifier_device_root.pem", "verifier_RIM_root.pem", RIM))
    assert files[f"nvidia/{RIM}"] == (SAMPLE / RIM).read_bytes()
    reference = board(alone).reference
    assert not reference.untrusted and reference.signed_by.signer == "test-reference-signer"
    assert reference.sha256 == board(envelope).reference.sha256  # the same signed payload
    assert main(["reference", "verify", str(alone), "--trust", str(TEST_TRUST), "--at", AT]) == 0
    assert bundle_contents(envelope) is None


def test_an_air_gapped_bundle_gives_the_same_verdicts_with_nothing_beside_it(built):
    envelope, alone = built
    assert sorted(p.name for p in alone.parent.iterdir()) == ["hopper.bundle.json"]
    loose, packed = run(board(envelope)), run(board(alone))
    assert [r.verdict for r in packed] == [Verdict.PASS, Verdict.FAIL]
    assert [r.reasons for r in packed] == [r.reasons for r in loose]


def test_a_file_the_bundle_lacks_is_error_naming_it_even_when_it_lies_beside_the_bundle(built, tmp_path):
    _, alone = built
    lacking = rewrite(alone, tmp_path / "b.json", lambda files: files.pop(f"nvidia/{RIM}"))
    (tmp_path / "nvidia").mkdir()
    shutil.copy(SAMPLE / RIM, tmp_path / "nvidia" / RIM)  # the disk is never consulted for a bundle
    verifies, measurements = run(board(lacking))
    assert verifies.verdict is Verdict.PASS and measurements.verdict is Verdict.ERROR
    assert f"carries no file 'nvidia/{RIM}'" in measurements.reasons[0]
    assert "firmware.vendor_attestation.rims[0]" in measurements.reasons[0]
    no_root = rewrite(alone, tmp_path / "c.json", lambda files: files.pop("nvidia/verifier_device_root.pem"))
    with pytest.raises(MissingReference, match="no reference for firmware.vendor_attestation.device_root"):
        run(board(no_root))


def test_a_consistently_swapped_file_is_refused_by_the_signed_pin(built, tmp_path):
    """Another RIM with its own correct sha256 in the bundle: the unsigned member cannot change a verdict."""
    _, alone = built
    other = (SAMPLE / "g520_0200_885_9600740001_PROD.swidtag").read_bytes()
    import hashlib

    def swap(files):
        files[f"nvidia/{RIM}"] = {"sha256": hashlib.sha256(other).hexdigest(),
                                  "base64": base64.b64encode(other).decode()}
    _, measurements = run(board(rewrite(alone, tmp_path / "b.json", swap)))
    assert measurements.verdict is Verdict.ERROR and "changed since the profile was signed" in measurements.reasons[0]


@pytest.mark.parametrize("change, message", [
    (lambda files: files[f"nvidia/{RIM}"].update(sha256="0" * 64), "damaged or altered"),
    (lambda files: files[f"nvidia/{RIM}"].update(base64="not base64!"), "not canonical base64"),
    (lambda files: files.__setitem__(f"nvidia/{RIM}", []), "must be {sha256, base64}"),
])
def test_a_damaged_bundle_is_error_for_every_file_it_carries(built, tmp_path, change, message):
    _, alone = built
    with pytest.raises(MissingReference, match=f"device_root: .*{message}"):  # ERROR: the step cannot decide
        run(board(rewrite(alone, tmp_path / "b.json", change)))


def test_a_bundle_whose_profile_was_changed_is_untrusted(built, tmp_path):
    _, alone = built
    document = json.loads(alone.read_text())
    payload = base64.b64decode(document["payload"]).replace(b"TEST profile", b"TEST profi1e")
    document["payload"] = base64.b64encode(payload).decode()
    (tmp_path / "b.json").write_text(json.dumps(document))
    assert main(["reference", "verify", str(tmp_path / "b.json"), "--trust", str(TEST_TRUST), "--at", AT]) == 1
    with pytest.raises(ProbeError, match="not trusted"):
        run(board(tmp_path / "b.json"))


def test_bundling_refuses_a_file_changed_since_signing_an_unsigned_profile_and_a_bundle(built, tmp_path):
    envelope = write_profile(tmp_path)
    (tmp_path / "nvidia" / RIM).write_bytes(b"<other/>")
    with pytest.raises(BundleError, match=f"rims\\[0\\]: nvidia/{RIM} has sha256 .* not the file the profile was built"):
        make_bundle(envelope)
    (tmp_path / "nvidia" / RIM).unlink()
    with pytest.raises(BundleError, match="cannot read"):
        make_bundle(envelope)
    with pytest.raises(BundleError, match="only a signed profile is bundled"):
        make_bundle(tmp_path / "hopper.yaml")
    with pytest.raises(BundleError, match="is a bundle already"):
        make_bundle(built[1])
    assert main(["reference", "bundle", str(tmp_path / "hopper.yaml")]) == 2


def test_pinned_files_are_found_anywhere_in_a_profile():
    values = {"a": {"file": "x", "sha256": "0" * 64}, "b": [{"c": {"file": "y", "sha256": "1" * 64}}]}
    assert [w for w, _ in pinned_files(values)] == ["a", "b[0].c"]


def test_the_run_accepts_a_bundle_on_a_bench_and_signs_the_honest_outcome(built, tmp_path):
    """attestlab run, a bench board whose reference is the air-gapped bundle: report PASS, measurements FAIL."""
    _, alone = built
    config = tmp_path / "bench.yaml"
    config.write_text(f"board: {{name: bench-hopper, reference: {alone}}}\n"
                      f"interfaces:\n  pcie: {{sysfs: {CAPTURE / 'sysfs'}}}\n")
    plan = PLAN_STEPS.read_text()
    plan = plan.replace("/var/lib/attestlab/nvidia/attestation-report.hex", str(SAMPLE / "hopperAttestationReport.txt"))
    plan = plan.replace("/var/lib/attestlab/nvidia/attestation-chain.pem", str(SAMPLE / "hopperCertChain.txt"))
    plan = plan.replace("nonce: /var/lib/attestlab/nvidia/nonce.hex", f"nonce: '{NONCE}'\n          at: '{AT}'")
    (tmp_path / "plan.yaml").write_text(plan)
    done = attestlab("run", "--plan", str(tmp_path / "plan.yaml"), "--board", str(config), "--key", str(TEST_KEY),
                     "--out", str(tmp_path / "results"), "--trust", str(TEST_TRUST), "-q")
    assert done.returncode == 1, done.stdout + done.stderr
    envelope = json.loads(next((tmp_path / "results").rglob("result.dsse.json")).read_text())
    record = json.loads(base64.b64decode(envelope["payload"]))["predicate"]
    assert record["board"]["reference"]["path"] == str(alone)
    steps = {s["step"]: s for r in record["requirements"] for s in r["steps"]}
    assert steps["report"]["verdict"] == "PASS" and steps["measurements"]["verdict"] == "FAIL"
    assert steps["measurements"]["reasons"][0].startswith("measurement index 2 ")


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=20),
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=10), inner, max_size=3),
                    max_leaves=10))
def test_a_hostile_bundle_member_is_a_clear_error_never_a_file(built, tmp_path, member):
    _, alone = built
    document = json.loads(alone.read_text())
    document[BUNDLE_KEY] = member
    path = tmp_path / "hostile.json"
    path.write_text(json.dumps(document))
    reference = board(path).reference
    with pytest.raises(MissingReference, match="no reference for"):
        read_pinned(reference, {"file": "nvidia/verifier_device_root.pem",
                                "sha256": "0" * 64}, "device root")


def test_every_pinned_file_can_be_checked_before_a_run(built, tmp_path):
    envelope, alone = built
    assert pinned_problems(board(alone).reference) == [] and pinned_problems(board(envelope).reference) == []
    lacking = rewrite(alone, tmp_path / "b.json", lambda files: files.pop(f"nvidia/{RIM}"))
    assert [p.split(":")[0] for p in pinned_problems(board(lacking).reference)] == [
        "no reference for firmware.vendor_attestation.rims[0]"]
