"""OCP S.A.F.E. short-form reports: the real signed review verifies with the provider's key;
alg none, other algorithms, other keys, altered payloads and ambiguous JSON do not."""

from __future__ import annotations

import base64
import json

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import ROOT
from harness.formats.ocp_sfr import SfrError, verify_sfr

SAMPLE = ROOT / "fixtures" / "captures" / "ocp-safe-sfr"
JWS = (SAMPLE / "nvidia-hopper-2025-08-04.jws").read_text().strip()
PROVIDER_KEY = (SAMPLE / "tetrel-ocp-sfr-signing-key.pub").read_bytes()
KID = "tetrel-ocp-sfr-signing-key"
HEADER, PAYLOAD, SIGNATURE = JWS.split(".")


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def sign(header: dict | str, payload: bytes, key: ec.EllipticCurvePrivateKey) -> str:
    head = header if isinstance(header, str) else b64(json.dumps(header).encode())
    body = b64(payload)
    r, s = decode_dss_signature(key.sign(f"{head}.{body}".encode(), ec.ECDSA(hashes.SHA512())))
    return f"{head}.{body}.{b64(r.to_bytes(66, 'big') + s.to_bytes(66, 'big'))}"


def public_pem(key) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


@pytest.fixture(scope="module")
def lab_key():
    return ec.generate_private_key(ec.SECP521R1())


def test_the_real_short_form_report_verifies_with_the_providers_key():
    report = verify_sfr(JWS, PROVIDER_KEY, kid=KID)
    assert report.fw_version == "580.65.06" and report.provider == "Tetrel Security Inc."
    assert report.fw_hash_sha2_384.hex().startswith("11baaa3599e7a7b7") and len(report.fw_hash_sha2_384) == 48
    assert report.fw_hash_sha2_512 is None and report.issues == () and report.issued_at == 1754594598
    signed = json.loads((SAMPLE / "nvidia-hopper-2025-08-04.json").read_text())
    assert report.document == {**signed, "iat": 1754594598}   # the .json beside it lacks only iat
    assert report.source.describe() == ("OCP S.A.F.E. SFR NVIDIA Corporation NVIDIA Hopper GPU (version 580.65.06, "
                                        "signed by Tetrel Security Inc. (kid tetrel-ocp-sfr-signing-key))")


def test_a_tampered_payload_is_rejected():
    doc = json.loads(unb64(PAYLOAD))
    doc["device"]["fw_version"] = "999.0.0"
    with pytest.raises(SfrError, match="does not verify with the provider's key"):
        verify_sfr(f"{HEADER}.{b64(json.dumps(doc).encode())}.{SIGNATURE}", PROVIDER_KEY)


def test_a_flipped_bit_in_the_signature_is_rejected():
    raw = bytearray(unb64(SIGNATURE))
    raw[10] ^= 1
    with pytest.raises(SfrError, match="does not verify"):
        verify_sfr(f"{HEADER}.{PAYLOAD}.{b64(bytes(raw))}", PROVIDER_KEY)


def test_another_key_is_rejected_and_verifies_only_under_its_own(lab_key):
    forged = sign({"alg": "ES512", "kid": KID}, unb64(PAYLOAD), lab_key)
    assert verify_sfr(forged, public_pem(lab_key)).fw_version == "580.65.06"
    with pytest.raises(SfrError, match="does not verify with the provider's key"):
        verify_sfr(forged, PROVIDER_KEY)


@pytest.mark.parametrize("alg", ["none", "HS512", "RS512", "ES256", "es512", None])
def test_any_algorithm_but_es512_is_refused(alg):
    header = b64(json.dumps({"alg": alg} if alg else {"kid": KID}).encode())
    with pytest.raises(SfrError, match=f"alg {alg!r} refused"):
        verify_sfr(f"{header}.{PAYLOAD}.", PROVIDER_KEY)
    with pytest.raises(SfrError, match="refused"):
        verify_sfr(f"{header}.{PAYLOAD}.{SIGNATURE}", PROVIDER_KEY)


def test_the_kid_crit_and_key_type_are_checked(lab_key):
    with pytest.raises(SfrError, match="kid 'tetrel-ocp-sfr-signing-key', expected 'other'"):
        verify_sfr(JWS, PROVIDER_KEY, kid="other")
    with pytest.raises(SfrError, match="critical extensions"):
        verify_sfr(sign({"alg": "ES512", "crit": ["exp"]}, unb64(PAYLOAD), lab_key), public_pem(lab_key))
    p256 = ec.generate_private_key(ec.SECP256R1())
    with pytest.raises(SfrError, match="not an ECDSA P-521 key"):
        verify_sfr(JWS, public_pem(p256))


def test_duplicate_keys_in_a_validly_signed_payload_are_refused(lab_key):
    """Two fw_version keys: one reader would see the first, another the last."""
    payload = unb64(PAYLOAD).replace(b'"fw_version": "580.65.06"', b'"fw_version": "1.0", "fw_version": "580.65.06"')
    with pytest.raises(SfrError, match="'fw_version' appears more than once"):
        verify_sfr(sign({"alg": "ES512"}, payload, lab_key), public_pem(lab_key))


@pytest.mark.parametrize("jws, message", [
    (f"{HEADER}.{PAYLOAD}", "2 dot-separated parts"),
    (f"{HEADER}=.{PAYLOAD}.{SIGNATURE}", "not unpadded base64url"),
    (f"{HEADER}.{PAYLOAD}.{SIGNATURE[:-4]}", "129 bytes, ES512 signatures are 132"),
    (f"{b64(b'[1]')}.{PAYLOAD}.{SIGNATURE}", "a JSON list, not an object"),
    (f"{b64(b'{bad')}.{PAYLOAD}.{SIGNATURE}", "not JSON"),
])
def test_malformed_tokens_name_the_problem(jws, message):
    with pytest.raises(SfrError, match=message):
        verify_sfr(jws, PROVIDER_KEY)


def test_a_non_canonical_base64_character_is_refused():
    """The header ends in a character with unused low bits: set one, the bytes decode the same."""
    last = HEADER[-1]
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    stray = alphabet[alphabet.index(last) | 1] if alphabet.index(last) % 2 == 0 else alphabet[alphabet.index(last) - 1]
    twin = HEADER[:-1] + stray
    if unb64(twin) == unb64(HEADER):
        with pytest.raises(SfrError, match="non-canonical"):
            verify_sfr(f"{twin}.{PAYLOAD}.{SIGNATURE}", PROVIDER_KEY)
    else:
        pytest.skip("the sample header has no unused bits")


@pytest.mark.parametrize("mutate, message", [
    (lambda d: d["device"].pop("fw_hash_sha2_384"), "gives no reference digest"),
    (lambda d: d["device"].update(fw_hash_sha2_384="zz" * 48), "not 48 bytes of hex"),
    (lambda d: d["device"].update(fw_version=3), "fw_version is missing or not text"),
    (lambda d: d.pop("audit"), "needs objects 'device' and 'audit'"),
])
def test_a_signed_payload_without_usable_reference_values_is_refused(lab_key, mutate, message):
    doc = json.loads(unb64(PAYLOAD))
    mutate(doc)
    with pytest.raises(SfrError, match=message):
        verify_sfr(sign({"alg": "ES512"}, json.dumps(doc).encode(), lab_key), public_pem(lab_key))


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_every_mutation_of_the_real_token_is_rejected(data):
    at = data.draw(st.integers(0, len(JWS) - 1))
    replacement = data.draw(st.sampled_from("AQgw_-.=+/ \x00é"))
    if replacement == JWS[at]:
        return
    with pytest.raises(SfrError):
        verify_sfr(JWS[:at] + replacement + JWS[at + 1:], PROVIDER_KEY)


@settings(max_examples=100, deadline=None)
@given(st.one_of(st.binary(max_size=300), st.text(max_size=300)))
def test_arbitrary_input_is_a_clear_error(data):
    with pytest.raises(SfrError):
        verify_sfr(data, PROVIDER_KEY)
