"""Probe vendor_attestation: NVIDIA's real sample report, judged against a signed reference.

The sample (fixtures/captures/nvidia-hopper-attestation/) is verified at AT, inside every
certificate's validity. It measures VBIOS 96.00.9F.00.01, the sample RIM describes 96.00.74.00.1A:
the honest outcome is a verified report whose measurements FAIL at 4 named indexes.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from datetime import datetime, timezone
from pathlib import Path
from types import SimpleNamespace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import ROOT, TEST_TRUST, signed_reference
from harness.evidence import EvidenceStore
from harness.formats.nvidia_attestation import parse_report_hex
from harness.reference import load_board_reference
from harness.reference.trust import load_trust_file
from harness.verdict import ProbeError, Verdict
from probes import get_probe, step_problem
from probes.vendor_attestation import measurements_match_reference, report_verifies
from x509_samples import hierarchy

SAMPLE = ROOT / "fixtures" / "captures" / "nvidia-hopper-attestation"
RIM = "1010_0200_882_960074001A_PROD.swidtag"
NONCE = "931d8dd0add203ac3d8b4fbde75e115278eefcdceac5b87671a748f32364dfcb"
AT = "2024-06-01T00:00:00Z"
WHEN = datetime(2024, 6, 1, tzinfo=timezone.utc)
REPORT = parse_report_hex((SAMPLE / "hopperAttestationReport.txt").read_text())
PROBE = get_probe("vendor_attestation")


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def pin(directory: Path, name: str) -> str:
    return f"{{file: nvidia/{name}, sha256: {sha(directory / 'nvidia' / name)}}}"


def write_profile(directory: Path, *, rims: bool = True, device_root: str | None = None, components: str = "") -> Path:
    """A signed profile in `directory` pinning the sample's roots (and RIM), beside copies of them."""
    (directory / "nvidia").mkdir(parents=True, exist_ok=True)
    for name in ("verifier_device_root.pem", "verifier_RIM_root.pem", RIM):
        shutil.copy(SAMPLE / name, directory / "nvidia" / name)
    section = f"    device_root: {device_root or pin(directory, 'verifier_device_root.pem')}\n"
    if rims:
        section += f"    rim_root: {pin(directory, 'verifier_RIM_root.pem')}\n    rims:\n      - {pin(directory, RIM)}\n"
    source = directory / "hopper.yaml"
    source.write_text("reference: {product: NVIDIA H100 (TEST profile)}\nfirmware:\n  vendor_attestation:\n"
                      + section + components)
    return signed_reference(source)


def board_of(profile: Path, at: datetime = WHEN) -> SimpleNamespace:
    return SimpleNamespace(reference=load_board_reference(profile, load_trust_file(TEST_TRUST), at))


def run(board, **params):
    """(report_verifies, measurements_match_reference) for the step's params, as the runner does."""
    params = {"report": str(SAMPLE / "hopperAttestationReport.txt"), "chain": str(SAMPLE / "hopperCertChain.txt"),
              "nonce": NONCE, "at": AT, **params}
    observation = PROBE.collect(board, {**PROBE.params, **params}, EvidenceStore())
    expected = board.reference.lookup("firmware.vendor_attestation")
    return report_verifies(observation, expected), measurements_match_reference(observation, expected)


@pytest.fixture(scope="module")
def sample_board(tmp_path_factory):
    return board_of(write_profile(tmp_path_factory.mktemp("hopper")))


def test_the_real_report_verifies_and_its_measurements_fail_at_four_named_indexes(sample_board):
    verifies, measurements = run(sample_board)
    assert verifies.verdict is Verdict.PASS, verifies.reasons
    assert "GH100 A01 GSP FMC LF" in verifies.reasons[0] and NONCE in verifies.reasons[0]
    assert "driver 550.90.07, VBIOS 96.00.9F.00.01" in verifies.reasons[1]
    assert {r.name for r in verifies.evidence} == {"vendor/nvidia-attestation-report",
                                                   "vendor/nvidia-attestation-chain.pem"}
    assert measurements.verdict is Verdict.FAIL
    named = [r for r in measurements.reasons if r.startswith("measurement index")]
    assert [r.split()[2] for r in named] == ["2", "3", "10", "12"]
    first = named[0]
    assert f"measured {REPORT_BLOCK_2}" in first and "HashedMeasurement_1_FSP (RIM index 1)" in first
    assert "NVIDIA RIM 1917d8f2" in first and "96.00.74.00.1A" in first and "HCC RIM L4 Signer" in first
    # The 52 blocks the driver's RIM (not in the sample set) would vouch for are named, not passed.
    unjudged = measurements.reasons[-1]
    assert unjudged.startswith("no reference for measurement index(es) 8, 14, 15")
    assert len(measurements.reasons) == 5


REPORT_BLOCK_2 = REPORT[37 + 8 + 55 + 7:37 + 8 + 55 + 7 + 48].hex()


def test_a_flipped_bit_in_the_report_fails(sample_board, tmp_path):
    altered = bytearray(REPORT)
    altered[-1] ^= 1
    (tmp_path / "report.bin").write_bytes(bytes(altered))  # raw bytes are read as well as NVIDIA's hex
    verifies, measurements = run(sample_board, report=str(tmp_path / "report.bin"))
    assert verifies.verdict is Verdict.FAIL and "signature does not verify" in verifies.reasons[0]
    assert measurements.verdict is Verdict.ERROR and "not judged" in measurements.reasons[0]


def test_a_replayed_report_fails_and_the_nonce_may_come_from_a_file(sample_board, tmp_path):
    verifies, _ = run(sample_board, nonce="00" * 32)
    assert verifies.verdict is Verdict.FAIL and "replayed" in verifies.reasons[0]
    (tmp_path / "nonce").write_text(NONCE + "\n")
    assert run(sample_board, nonce=str(tmp_path / "nonce"))[0].verdict is Verdict.PASS


def test_a_report_under_a_root_the_reference_does_not_pin_fails(tmp_path):
    foreign = hierarchy("Foreign")
    root = "{pem: '" + foreign.root_pem.decode().replace("\n", "\\n") + "'}"
    profile = write_profile(tmp_path, device_root=root.replace("'", '"'))
    verifies, _ = run(board_of(profile))
    assert verifies.verdict is Verdict.FAIL and "Foreign Root" in verifies.reasons[0]


def test_golden_values_from_the_profile_can_pass_and_one_wrong_digest_fails_naming_the_component(tmp_path):
    """The check is not a constant FAIL: with every block vouched for it passes; one byte off, it fails."""
    blocks = _blocks()

    def components(wrong: int | None) -> str:
        text = "  components:\n"
        for i, value in blocks.items():
            digest = ("00" * 48) if i == wrong else value
            text += (f"    - {{name: block-{i}, version: '1', digest: {{algorithm: sha384, value: '{digest}'}}, "
                     f"measured_at: {{spdm_measurement_index: {i}}}}}\n")
        return text
    passing = run(board_of(write_profile(tmp_path / "a", rims=False, components=components(None))))
    assert [r.verdict for r in passing] == [Verdict.PASS, Verdict.PASS], passing[1].reasons
    assert "64 measurement block(s)" in passing[1].reasons[0]
    failing = run(board_of(write_profile(tmp_path / "b", rims=False, components=components(7))))[1]
    assert failing.verdict is Verdict.FAIL and len(failing.reasons) == 1
    assert failing.reasons[0].startswith("measurement index 7 (component block-7): measured ")
    assert "reference profile" in failing.reasons[0] and "signed by test-reference-signer" in failing.reasons[0]


def _blocks() -> dict[int, str]:
    from harness.formats import spdm
    exchange = spdm.parse_exchange(REPORT, signature_size=96)
    return {b.index: b.value.hex() for b in exchange.response.blocks}


def test_a_rim_changed_beside_the_signed_profile_is_not_used(tmp_path):
    board = board_of(write_profile(tmp_path))
    rim = tmp_path / "nvidia" / RIM
    rim.write_bytes(rim.read_bytes().replace(b"96.00.74.00.1A", b"96.00.9F.00.01"))
    verifies, measurements = run(board)
    assert verifies.verdict is Verdict.PASS
    assert measurements.verdict is Verdict.ERROR
    assert "changed since the profile was signed" in measurements.reasons[0] and RIM in measurements.reasons[0]


def test_a_rim_whose_signer_expired_is_error_not_pass_or_fail(sample_board):
    _, measurements = run(sample_board, at="2026-01-01T00:00:00Z")
    # The device chain is valid until 9999; the RIM signer's certificate expired in 2025.
    assert measurements.verdict is Verdict.ERROR and "does not verify at 2026-01-01" in measurements.reasons[0]


def test_no_report_is_skip_with_the_reason(sample_board, tmp_path):
    for params, why in (({"report": None}, "no attestation report given"),
                        ({"report": str(tmp_path / "absent.txt")}, "no attestation report at")):
        results = run(sample_board, **params)
        assert [r.verdict for r in results] == [Verdict.SKIP, Verdict.SKIP] and why in results[0].reasons[0]


@pytest.mark.parametrize("params, message", [
    ({"chain": None}, "without its certificate chain"),
    ({"nonce": None}, "give `nonce`"),
    ({"nonce": "abc"}, "64 hex digits or a file"),
    ({"nonce": str(SAMPLE / "verifier_RIM_root.pem")}, "must hold the 32 bytes"),
    ({"at": "2024-06-01"}, "has no zone"),
    ({"at": "yesterday"}, "not an ISO 8601 time"),
])
def test_missing_or_malformed_inputs_are_error(sample_board, params, message):
    with pytest.raises(ProbeError, match=message):
        run(sample_board, **params)


def test_a_fifo_or_directory_in_place_of_the_report_is_error_without_waiting(sample_board, tmp_path):
    os.mkfifo(tmp_path / "fifo")  # no writer: a plain open() would block forever
    for path in (tmp_path / "fifo", tmp_path):
        with pytest.raises(ProbeError, match="cannot read: .*(FIFO|directory)"):
            run(sample_board, report=str(path))


def test_an_empty_report_file_is_error_and_is_kept_as_evidence(sample_board, tmp_path):
    (tmp_path / "empty").write_bytes(b"")
    evidence = EvidenceStore()
    with pytest.raises(ProbeError, match="empty"):
        PROBE.collect(sample_board, {**PROBE.params, "report": str(tmp_path / "empty")}, evidence)
    assert [r.name for r in evidence.refs] == ["vendor/nvidia-attestation-report"]


def test_an_untrusted_profile_or_a_missing_section_is_error(tmp_path):
    profile = write_profile(tmp_path)
    untrusted = SimpleNamespace(reference=load_board_reference(profile, None, WHEN))
    with pytest.raises(ProbeError, match="not trusted"):
        run(untrusted)
    (tmp_path / "other.yaml").write_text("reference: {product: x}\npcie: {identity: {vendor_id: 1}}\n")
    with pytest.raises(ProbeError, match="no reference for 'firmware.vendor_attestation'"):
        run(board_of(signed_reference(tmp_path / "other.yaml")))


@pytest.mark.parametrize("section, message", [
    ({}, "no reference for firmware.vendor_attestation.device_root"),
    ({"device_root": {"file": "x.pem"}}, "must be a pinned file"),
    ({"device_root": {"pem": "x"}, "rims": [{"file": "r", "sha256": "0" * 64}]}, "rim_root"),
    ({"device_root": {"pem": "x"}, "extra": 1}, "no field 'extra'"),
])
def test_a_malformed_reference_section_is_error(sample_board, section, message):
    observation = PROBE.collect(sample_board, {**PROBE.params, "report": None}, EvidenceStore())
    for check in (report_verifies, measurements_match_reference):
        result = check(observation, section)
        assert result.verdict is Verdict.ERROR and any(message in r for r in result.reasons)


def test_the_probe_is_registered_with_its_checks_and_params():
    assert step_problem("vendor_attestation", "report_verifies", {"report": "r", "chain": "c", "nonce": NONCE}) is None
    assert step_problem("vendor_attestation", "measurements_match_reference", {}) is None
    assert "takes no parameter" in step_problem("vendor_attestation", "report_verifies", {"path": "x"})


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.one_of(
    st.binary(max_size=300).map(lambda b: b"\x11\xe0" + b),
    st.tuples(st.integers(0, len(REPORT) - 1), st.integers(1, 255)).map(
        lambda t: REPORT[:t[0]] + bytes([REPORT[t[0]] ^ t[1]]) + REPORT[t[0] + 1:]),
    st.integers(0, len(REPORT) - 1).map(lambda n: REPORT[:n]),
    st.text(max_size=200).map(str.encode),
))
def test_a_hostile_report_never_passes(sample_board, tmp_path, data):
    path = tmp_path / "hostile"
    path.write_bytes(data)
    try:
        verifies, measurements = run(sample_board, report=str(path))
    except ProbeError as exc:  # an empty file
        assert "empty" in str(exc)
        return
    assert verifies.verdict is not Verdict.PASS
    assert measurements.verdict in (Verdict.ERROR, Verdict.SKIP)


JSONISH = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=12),
                       lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
                           st.sampled_from(["device_root", "rim_root", "rims", "file", "sha256", "pem", "x"]),
                           inner, max_size=4), max_leaves=12)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(JSONISH)
def test_a_hostile_reference_section_is_an_error_never_a_pass(sample_board, section):
    observation = PROBE.collect(sample_board, {**PROBE.params, "report": None}, EvidenceStore())
    for check in (report_verifies, measurements_match_reference):
        assert check(observation, section).verdict in (Verdict.ERROR, Verdict.SKIP)
