"""Signed results: DSSE over an in-toto Statement; any changed byte fails verification, clearly."""

from __future__ import annotations

import base64
import copy
import json
import os
import shutil
import stat

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from harness.evidence import EvidenceStore
from harness.results.bundle import ENVELOPE_NAME, EVIDENCE_DIR, verify_result, write_signed_result
from harness.results.canonical import canonical_json
from harness.results.dsse import INTOTO_PAYLOAD_TYPE, VerificationError, pae, sign_envelope, verify_envelope
from harness.results.keys import KeyError_, generate_keypair, keyid, load_private_key, load_public_key
from harness.results.record import RECORD_TYPE, STATEMENT_TYPE, RequirementResult, RunRecord
from harness.verdict import StepResult, Verdict

from conftest import TEST_KEY, TEST_PUB


@pytest.fixture(scope="module")
def private_key():
    return load_private_key(TEST_KEY)


@pytest.fixture(scope="module")
def public_key():
    return load_public_key(TEST_PUB)


def make_result(tmp_path, private_key):
    store = EvidenceStore()
    config = store.add("pcie/0000:00:06.0/config", bytes(range(256)) * 16)
    transcript = store.add("console/transcript.jsonl", b'{"dir":"rx","data":"boot"}\n', "application/jsonl")
    step = StepResult("R1", "s1", "pcie_identity", "identity_matches_reference", Verdict.PASS,
                      ("identity matches",), (config, transcript), {"vendor_id": 0x10DE}, "t0", "t1")
    record = RunRecord(run_id="run-1", plan={"id": "p", "version": "1", "sha256": "0" * 64},
                       board={"name": "b1", "simulated": None}, verdict=Verdict.PASS,
                       requirements=(RequirementResult("R1", "title", Verdict.PASS, (step,)),),
                       evidence=store.refs, started="t0", finished="t1",
                       harness={"name": "attestlab", "version": "0"}, host={"hostname": "h"})
    return write_signed_result(tmp_path, record, store, private_key)


def test_pae_matches_the_dsse_spec_example():
    # protocol.md: PAE("http://example.com/HelloWorld", "hello world")
    assert pae("http://example.com/HelloWorld", b"hello world") == \
        b"DSSEv1 29 http://example.com/HelloWorld 11 hello world"


def test_signed_result_verifies_and_lists_every_blob(tmp_path, private_key, public_key):
    envelope = make_result(tmp_path, private_key)
    verified = verify_result(envelope, public_key)
    assert verified.blobs_checked == 2
    statement = verified.statement
    assert statement["_type"] == STATEMENT_TYPE and statement["predicateType"] == RECORD_TYPE
    names = [s["name"] for s in statement["subject"]]
    assert names[0] == "board:b1" and "pcie/0000:00:06.0/config" in names
    for subject in statement["subject"][1:]:
        assert (envelope.parent / EVIDENCE_DIR / subject["digest"]["sha256"]).is_file()


def test_envelope_verifies_with_securesystemslib(tmp_path, private_key):
    """An independent DSSE implementation accepts our envelope, given only the public key."""
    from securesystemslib.dsse import Envelope
    from securesystemslib.signer import SSlibKey

    envelope = json.loads(make_result(tmp_path, private_key).read_text())
    signer_keyid = envelope["signatures"][0]["keyid"]
    from cryptography.hazmat.primitives.serialization import load_pem_public_key
    public = load_pem_public_key(TEST_PUB.read_bytes())
    key = SSlibKey.from_crypto(public, keyid=signer_keyid, scheme="ed25519")
    tampered = copy.deepcopy(envelope)
    tampered["payload"] = base64.b64encode(base64.b64decode(envelope["payload"]) + b" ").decode()
    verified = Envelope.from_dict(envelope).verify([key], 1)  # from_dict consumes its argument
    assert list(verified) == [signer_keyid]
    # ...and rejects it once the payload changes
    from securesystemslib.exceptions import VerificationError as SslibVerificationError
    with pytest.raises(SslibVerificationError):
        Envelope.from_dict(tampered).verify([key], 1)


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_any_changed_byte_of_the_envelope_fails(data):
    import tempfile
    from pathlib import Path
    with tempfile.TemporaryDirectory() as tmp:
        priv, pub = load_private_key(TEST_KEY), load_public_key(TEST_PUB)
        envelope_path = make_result(Path(tmp), priv)
        raw = bytearray(envelope_path.read_bytes())
        index = data.draw(st.integers(0, len(raw) - 1))
        new = data.draw(st.integers(0, 255).filter(lambda b: b != raw[index]))
        original = bytes(raw)
        raw[index] = new
        envelope_path.write_bytes(bytes(raw))
        try:
            changed = json.loads(bytes(raw)) != json.loads(original)
        except ValueError:
            changed = True
        if changed:  # whitespace changes outside the JSON values change nothing signed
            with pytest.raises(VerificationError):
                verify_result(envelope_path, pub)


def test_changed_evidence_blob_fails_naming_it(tmp_path, private_key, public_key):
    envelope = make_result(tmp_path, private_key)
    blob = next((envelope.parent / EVIDENCE_DIR).iterdir())
    os.chmod(blob, stat.S_IRUSR | stat.S_IWUSR)
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0x01
    blob.write_bytes(bytes(data))
    with pytest.raises(VerificationError, match=r"evidence blob .* was changed"):
        verify_result(envelope, public_key)


def test_missing_evidence_blob_fails_naming_it(tmp_path, private_key, public_key):
    envelope = make_result(tmp_path, private_key)
    shutil.rmtree(envelope.parent / EVIDENCE_DIR)
    with pytest.raises(VerificationError, match="is missing"):
        verify_result(envelope, public_key)


def test_another_key_does_not_verify(tmp_path, private_key):
    envelope = make_result(tmp_path, private_key)
    _, other_pub = generate_keypair(tmp_path / "other")
    with pytest.raises(VerificationError, match="no signature by key"):
        verify_result(envelope, load_public_key(other_pub))


def test_re_signed_statement_with_dropped_subject_fails(tmp_path, private_key, public_key):
    """Even a validly signed statement must list every evidence blob the record names."""
    envelope_path = make_result(tmp_path, private_key)
    envelope = json.loads(envelope_path.read_text())
    statement = json.loads(base64.b64decode(envelope["payload"]))
    statement["subject"].pop()
    envelope_path.write_text(json.dumps(sign_envelope(canonical_json(statement), INTOTO_PAYLOAD_TYPE, private_key)))
    with pytest.raises(VerificationError, match="subjects and the record's evidence list differ"):
        verify_result(envelope_path, public_key)


def test_wrong_payload_type_is_refused(public_key, private_key):
    envelope = sign_envelope(b"{}", "text/plain", private_key)
    with pytest.raises(VerificationError, match="payloadType"):
        verify_envelope(envelope, public_key)


@settings(max_examples=200, deadline=None)
@given(st.recursive(st.one_of(st.none(), st.text(), st.integers(), st.booleans()),
                    lambda inner: st.one_of(st.lists(inner), st.dictionaries(st.text(), inner)), max_leaves=20))
def test_verify_envelope_takes_any_json_without_crashing(value):
    with pytest.raises(VerificationError):
        verify_envelope(value, load_public_key(TEST_PUB))


def test_canonical_json_is_sorted_compact_utf8_and_refuses_floats():
    assert canonical_json({"b": 1, "a": ["é", None]}) == '{"a":["é",null],"b":1}'.encode()
    with pytest.raises(TypeError):
        canonical_json({"t": 1.5})


def test_generated_private_key_is_owner_only_and_not_overwritten(tmp_path):
    private_path, public_path = generate_keypair(tmp_path / "lab")
    assert stat.S_IMODE(private_path.stat().st_mode) == 0o600
    assert keyid(load_private_key(private_path).public_key()) == keyid(load_public_key(public_path))
    with pytest.raises(KeyError_, match="not overwriting"):
        generate_keypair(tmp_path / "lab")


def test_non_ed25519_key_is_refused_with_a_clear_message(tmp_path):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    pem = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    (tmp_path / "ec.key").write_bytes(pem)
    with pytest.raises(KeyError_, match="Ed25519"):
        load_private_key(tmp_path / "ec.key")


def test_envelope_file_name():
    assert ENVELOPE_NAME == "result.dsse.json"
