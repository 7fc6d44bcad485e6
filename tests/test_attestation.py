"""NVIDIA GPU attestation reports: the real sample verifies; every way to alter or replay it does not.

The sample is nvtrust's public Hopper report (fixtures/captures/nvidia-hopper-attestation/). Its
device chain is valid until 9999, so it is verified at a fixed time (AT), never "now".
"""

from __future__ import annotations

from datetime import datetime, timezone

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import ROOT
from harness.formats import spdm
from harness.formats.golden import Golden, GoldenError, ReferenceSource, compare_measurements, merge_golden
from harness.formats.nvidia_attestation import (AttestationError, compare_with_golden, parse_opaque_data,
                                                parse_report_hex, verify_report)
from harness.formats.rim import verify_rim
from x509_samples import hierarchy

SAMPLE = ROOT / "fixtures" / "captures" / "nvidia-hopper-attestation"
REPORT = parse_report_hex((SAMPLE / "hopperAttestationReport.txt").read_text())
CHAIN = (SAMPLE / "hopperCertChain.txt").read_bytes()
DEVICE_ROOT = (SAMPLE / "verifier_device_root.pem").read_bytes()
NONCE = bytes.fromhex("931d8dd0add203ac3d8b4fbde75e115278eefcdceac5b87671a748f32364dfcb")  # in the request
AT = datetime(2024, 6, 1, tzinfo=timezone.utc)
SIGNED_END = len(REPORT) - 96
NONCE_AT = 4                      # the request's nonce: bytes 4..35
BLOCK_2_VALUE_AT = 37 + 8 + 55 + 7  # request, response header, block 1, block 2's header


def verify(report=REPORT, *, chain=CHAIN, nonce=NONCE, root=DEVICE_ROOT, at=AT):
    return verify_report(report, chain, nonce=nonce, device_root_pem=root, at=at)


def flip(data: bytes, at: int, mask: int = 0x01) -> bytes:
    return data[:at] + bytes([data[at] ^ mask]) + data[at + 1:]


def resign(report: bytes, key: ec.EllipticCurvePrivateKey) -> bytes:
    """The report's signed part, signed again with `key` (what a forger with its own key does)."""
    r, s = decode_dss_signature(key.sign(report[:SIGNED_END], ec.ECDSA(hashes.SHA384())))
    return report[:SIGNED_END] + r.to_bytes(48, "big") + s.to_bytes(48, "big")


# --- the real sample -------------------------------------------------------------------------

def test_real_report_verifies_against_the_pinned_device_root():
    report = verify()
    assert report.driver_version == "550.90.07"
    assert report.vbios_version == "96.00.9F.00.01"
    assert report.opaque.text("project") == "1010" and report.opaque.text("chip_sku") == "882"
    assert len(report.measurements) == 64 and set(report.measurements) == set(range(1, 65))
    assert report.chain.leaf_subject.startswith("CN=GH100 A01 GSP FMC LF")
    assert report.exchange.request.operation == spdm.ALL_MEASUREMENTS
    assert report.measurements[4].hex().startswith("73bbf358")


def test_flipped_bit_in_the_signature_is_rejected():
    with pytest.raises(AttestationError, match="signature: the report's signature does not verify"):
        verify(flip(REPORT, len(REPORT) - 1))


def test_flipped_bit_in_a_measurement_is_rejected():
    assert REPORT[BLOCK_2_VALUE_AT:BLOCK_2_VALUE_AT + 4].hex() == "8048dfd1"
    with pytest.raises(AttestationError, match="signature"):
        verify(flip(REPORT, BLOCK_2_VALUE_AT))


def test_flipped_bit_in_the_request_nonce_is_rejected_even_when_that_nonce_was_asked_for():
    altered = flip(REPORT, NONCE_AT)
    with pytest.raises(AttestationError, match="nonce"):
        verify(altered)
    # The signature covers the request too: a report cannot be re-pointed at another nonce.
    with pytest.raises(AttestationError, match="signature"):
        verify(altered, nonce=altered[NONCE_AT:NONCE_AT + 32])


def test_a_report_for_another_nonce_is_rejected_as_a_replay():
    with pytest.raises(AttestationError, match="not the one asked for.*replayed"):
        verify(nonce=bytes(32))


def test_a_foreign_root_is_rejected():
    foreign = hierarchy("Foreign")
    with pytest.raises(AttestationError, match="device certificate chain: .*Foreign Root"):
        verify(root=foreign.root_pem)


def test_a_forger_with_its_own_chain_and_self_signed_root_is_rejected():
    """The supplied root is replaced by the pinned one, so a complete forged hierarchy fails."""
    forger = hierarchy("NVIDIA Device Identity CA")
    with pytest.raises(AttestationError, match="device certificate chain"):
        verify(resign(REPORT, forger.leaf_key), chain=forger.chain_pem)


def test_a_lab_chain_pinned_by_the_lab_verifies_so_the_rejections_above_are_not_vacuous():
    lab = hierarchy("Lab")
    report = verify(resign(REPORT, lab.leaf_key), chain=lab.chain_pem, root=lab.root_pem)
    assert report.chain.leaf_subject == "CN=Lab Leaf"


def test_a_time_outside_the_chain_validity_is_rejected():
    with pytest.raises(AttestationError, match="not valid at 2019"):
        verify(at=datetime(2019, 1, 1, tzinfo=timezone.utc))
    short = hierarchy("Short", leaf_days=30)
    with pytest.raises(AttestationError, match="the leaf CN=Short Leaf is not valid at"):
        verify(resign(REPORT, short.leaf_key), chain=short.chain_pem, root=short.root_pem)


@pytest.mark.parametrize("kwargs, message", [
    (dict(leaf_usage="key_cert_sign"), "may not sign"),
    (dict(ca_usage="digital_signature"), "lacks keyCertSign"),
    (dict(ca_is_ca=False), "is not a CA"),
])
def test_chain_key_usage_and_basic_constraints_are_enforced(kwargs, message):
    bad = hierarchy("Bad", **kwargs)
    with pytest.raises(AttestationError, match=message):
        verify(resign(REPORT, bad.leaf_key), chain=bad.chain_pem, root=bad.root_pem)


def test_a_leaf_certified_for_other_firmware_is_rejected():
    """The leaf's DICE TcbInfo names the firmware it was issued to; the report's FWID must match."""
    tcb = bytes.fromhex("3041") + bytes.fromhex("3039") + bytes.fromhex("0609608648016503040202") + b"\x04\x30" + b"\x11" * 48
    other = hierarchy("Fw", leaf_extra=[x509.UnrecognizedExtension(x509.ObjectIdentifier("2.23.133.5.4.1"), tcb)])
    with pytest.raises(AttestationError, match="fwid: the report names firmware f5c384ae.*issued for 1111"):
        verify(resign(REPORT, other.leaf_key), chain=other.chain_pem, root=other.root_pem)


def test_the_wrong_nonce_size_and_non_bytes_are_refused_clearly():
    with pytest.raises(AttestationError, match="32 bytes"):
        verify(nonce=NONCE[:16])
    with pytest.raises(AttestationError, match="must be bytes"):
        verify("not bytes")


# --- the SPDM parser -------------------------------------------------------------------------

@pytest.mark.parametrize("mutate, message", [
    (lambda r: r[:-1], "Signature at offset .* needs 96 bytes"),
    (lambda r: r + b"\0", "1 unexpected bytes after the end"),
    (lambda r: r[:41] + bytes([r[41] + 1]) + r[42:], "MeasurementRecord"),          # NumberOfBlocks
    (lambda r: r[:45] + bytes([0x02]) + r[46:], "index 2 appears twice"),           # block 1's index → 2
    (lambda r: r[:46] + bytes([0x02]) + r[47:], "not DMTF"),                        # MeasurementSpecification
    (lambda r: r[:50] + bytes([0x31]) + r[51:], "DMTFSpecMeasurementValue"),       # inner size > outer
    (lambda r: r[:1] + b"\xe1" + r[2:], "not GET_MEASUREMENTS"),
    (lambda r: b"\x12" + r[1:], "SPDMVersion 0x12 is not supported"),
    (lambda r: r[:38] + b"\x7f" + r[39:], "SPDM ERROR response"),
    (lambda r: r[:36] + b"\x01" + r[37:], "slot 0, the request asked for slot 1"),
])
def test_malformed_exchanges_name_the_field(mutate, message):
    with pytest.raises(AttestationError, match=message):
        verify(mutate(REPORT))


def test_opaque_data_fields_are_checked():
    with pytest.raises(AttestationError, match="claims 9 bytes"):
        parse_opaque_data(b"\x03\x00\x09\x00550.90")
    with pytest.raises(AttestationError, match="driver_version appears twice"):
        parse_opaque_data(b"\x03\x00\x01\x005" * 2)
    with pytest.raises(AttestationError, match="vbios_version is 4 bytes"):
        parse_opaque_data(b"\x06\x00\x04\x00abcd")
    with pytest.raises(AttestationError, match="printable ASCII"):
        parse_opaque_data(b"\x03\x00\x02\x00\x1b[")
    assert parse_opaque_data(b"\x03\x00\x04\x00550\x00").driver_version == "550"


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=600))
def test_arbitrary_bytes_never_escape_as_anything_but_a_clear_error(data):
    for candidate in (data, REPORT[:37] + data):
        try:
            spdm.parse_exchange(candidate, signature_size=96)
        except spdm.SpdmError:
            pass
        with pytest.raises(AttestationError):
            verify(candidate)
        try:
            parse_opaque_data(data)
        except AttestationError:
            pass


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_every_mutation_of_the_real_report_is_rejected(data):
    at = data.draw(st.integers(0, len(REPORT) - 1))
    how = data.draw(st.sampled_from(["flip", "insert", "delete", "truncate"]))
    if how == "flip":
        mutated = flip(REPORT, at, data.draw(st.integers(1, 255)))
    elif how == "insert":
        mutated = REPORT[:at] + data.draw(st.binary(min_size=1, max_size=8)) + REPORT[at:]
    elif how == "delete":
        mutated = REPORT[:at] + REPORT[at + data.draw(st.integers(1, 8)):]
    else:
        mutated = REPORT[:at]
    with pytest.raises(AttestationError):
        verify(mutated)


# --- measurements against golden values ------------------------------------------------------

RIM_ROOT = (SAMPLE / "verifier_RIM_root.pem").read_bytes()


@pytest.fixture(scope="module")
def vbios_rim():
    """The RIM whose file id names this report's project/SKU (1010_0200_882)."""
    return verify_rim((SAMPLE / "1010_0200_882_960074001A_PROD.swidtag").read_bytes(), rim_root_pem=RIM_ROOT, at=AT)


def test_the_sample_report_against_the_sample_vbios_rim_explains_every_difference(vbios_rim):
    """The sample report (VBIOS 96.00.9F.00.01) and RIM (96.00.74.00.1A) are different releases:
    8 of the RIM's 12 active indexes match, 4 differ, and the 52 blocks the VBIOS RIM leaves to
    the driver RIM (not in the sample set) are named as unreferenced, not passed."""
    report = verify()
    assert vbios_rim.colloquial_version != report.vbios_version
    mismatches = compare_with_golden(report, vbios_rim.golden)
    differs = [m for m in mismatches if m.kind == "differs"]
    assert [m.index for m in differs] == [2, 3, 10, 12]
    assert [m for m in mismatches if m.kind == "missing"] == []
    assert len([m for m in mismatches if m.kind == "unreferenced"]) == 52
    first = differs[0]
    assert first.measured == report.measurements[2].hex() and first.expected == (vbios_rim.golden[2].alternatives[0].hex(),)
    text = first.explain()
    assert "measurement index 2 (HashedMeasurement_1_FSP (RIM index 1))" in text
    assert "NVIDIA RIM 1917d8f2" in text and "96.00.74.00.1A" in text and "HCC RIM L4 Signer" in text


SOURCE = ReferenceSource("NVIDIA RIM", "t", "1", "CN=x")


def test_missing_and_alternative_values_are_judged_per_index():
    golden = {1: Golden(1, (b"\1", b"\2"), True, "a", SOURCE), 2: Golden(2, (b"\3",), True, "b", SOURCE),
              3: Golden(3, (b"\4",), False, "c", SOURCE)}
    found = compare_measurements({1: b"\2", 3: b"\x09"}, golden)
    assert [(m.kind, m.index) for m in found] == [("missing", 2), ("unreferenced", 3)]
    assert compare_measurements({1: b"\1", 2: b"\3"}, golden) == []


def test_two_references_claiming_one_index_cannot_be_merged():
    other = ReferenceSource("NVIDIA RIM", "u", "2", "CN=y")
    a = {1: Golden(1, (b"\1",), True, "a", SOURCE), 2: Golden(2, (b"\2",), False, "b", SOURCE)}
    b = {2: Golden(2, (b"\2",), True, "b", other)}
    assert merge_golden(a, b)[2].source == other
    with pytest.raises(GoldenError, match="index 1 is active in both"):
        merge_golden(a, {1: Golden(1, (b"\1",), True, "a", other)})
