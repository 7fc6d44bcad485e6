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
from harness.results.bundle import (CLAIM_NAME, ENVELOPE_NAME, EVIDENCE_DIR, OutputError, RunDirTaken, claim_run_dir,
                                    verify_result, write_signed_result)
from harness.results.canonical import NotCanonical, canonical_json, loads_canonical
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
    (tmp_path / "ec.key").chmod(0o600)
    with pytest.raises(KeyError_, match="Ed25519"):
        load_private_key(tmp_path / "ec.key")


def test_envelope_file_name():
    assert ENVELOPE_NAME == "result.dsse.json"


# --- one canonical base64 text per value ---

def _alternatives(data: bytes) -> st.SearchStrategy[str]:
    """Texts that lenient decoders read as `data`, none of them as an encoder writes it."""
    std = base64.b64encode(data).decode()
    url = base64.urlsafe_b64encode(data).decode()
    options = [std.rstrip("="), std + "=", std + "==", " " + std, std + "\n", std[:4] + "\n" + std[4:],
               url.rstrip("=")]
    if std.endswith("="):  # set the unused low bits of the last character
        stem = std.rstrip("=")
        alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
        last = alphabet.index(stem[-1])
        unused = 0b1111 if std.endswith("==") else 0b11
        for bits in range(1, unused + 1):
            options.append(stem[:-1] + alphabet[last | bits] + std[len(stem):])
    if "+" in std and "/" in std:  # mixed alphabets
        options.append(std.replace("+", "-", 1))
    return st.sampled_from([o for o in options if o not in (std, url)])


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_only_the_canonical_base64_of_a_payload_is_accepted(data):
    from harness.results.dsse import _b64
    payload = data.draw(st.binary(min_size=1, max_size=40))
    assert _b64(base64.b64encode(payload).decode(), "payload") == payload
    assert _b64(base64.urlsafe_b64encode(payload).decode(), "payload") == payload  # DSSE allows URL-safe
    other = data.draw(_alternatives(payload))
    with pytest.raises(VerificationError, match="not canonical base64"):
        _b64(other, "payload")


def test_an_envelope_re_encoded_without_padding_is_refused(tmp_path, private_key, public_key):
    envelope_path = make_result(tmp_path, private_key)
    envelope = json.loads(envelope_path.read_text())
    verify_result(envelope_path, public_key)
    envelope["signatures"][0]["sig"] = envelope["signatures"][0]["sig"].rstrip("=")
    envelope_path.write_text(json.dumps(envelope))
    with pytest.raises(VerificationError, match="signature is not canonical base64"):
        verify_result(envelope_path, public_key)


def test_an_envelope_with_a_key_twice_is_refused(tmp_path, private_key, public_key):
    envelope_path = make_result(tmp_path, private_key)
    text = envelope_path.read_text()
    envelope_path.write_text(text.replace('"payloadType"', '"payload": "e30=",\n  "payloadType"', 1))
    with pytest.raises(VerificationError, match="duplicate key 'payload'"):
        verify_result(envelope_path, public_key)


# --- the record's verdicts follow from its parts ---

def re_signed(envelope_path, private_key, change) -> None:
    envelope = json.loads(envelope_path.read_text())
    statement = json.loads(base64.b64decode(envelope["payload"]))
    change(statement["predicate"])
    if isinstance(statement["predicate"].get("board"), dict):  # keep the board subject true to the record
        from harness.results.record import board_subject
        statement["subject"][0] = board_subject(statement["predicate"]["board"])
    envelope_path.write_text(json.dumps(sign_envelope(canonical_json(statement), INTOTO_PAYLOAD_TYPE, private_key)))


@pytest.mark.parametrize("change,message", [
    (lambda r: r["requirements"][0]["steps"][0].update(verdict="FAIL"), "requirement R1 says PASS, its steps say FAIL"),
    (lambda r: r.update(tests=[{"nodeid": "t.py::test_x", "outcome": "failed", "verdict": "FAIL", "evidence": []}]),
     "the run says PASS, its requirements and session tests say FAIL"),
    (lambda r: r.update(not_run=["R2::s"]), "the run says PASS, its requirements and session tests say ERROR"),
    (lambda r: r.update(verdict="GOOD"), "verdict 'GOOD'"),
    (lambda r: r["requirements"][0]["steps"][0].update(expectation=["x"]), "expectation is not an object"),
    (lambda r: r.update(not_run=[1]), "not_run is not a list of step names"),
    (lambda r: r.update(board=None), "the record's board is not an object"),
    (lambda r: r.update(tests=[{"nodeid": "t", "verdict": "PASS", "evidence": [{"sha256": "1" * 64}]}]),
     "test t points to evidence 1111"),
])
def test_a_signed_record_whose_verdict_does_not_follow_from_its_parts_is_refused(tmp_path, private_key, public_key,
                                                                                change, message):
    envelope_path = make_result(tmp_path, private_key)
    re_signed(envelope_path, private_key, change)
    with pytest.raises(VerificationError, match=message):
        verify_result(envelope_path, public_key)


def test_a_non_canonical_signed_payload_is_refused(tmp_path, private_key, public_key):
    envelope_path = make_result(tmp_path, private_key)
    statement = json.loads(base64.b64decode(json.loads(envelope_path.read_text())["payload"]))
    envelope_path.write_text(json.dumps(sign_envelope(json.dumps(statement, indent=1).encode(), INTOTO_PAYLOAD_TYPE,
                                                      private_key)))
    with pytest.raises(VerificationError, match="not canonical JSON"):
        verify_result(envelope_path, public_key)


def test_plan_mismatches_name_what_differs():
    from harness.plan import parse_plan
    from harness.results.bundle import plan_mismatches
    from harness.results.record import plan_summary

    from conftest import PCIE_PLAN
    plan = parse_plan(PCIE_PLAN.read_text(), str(PCIE_PLAN))
    step = {"step": "identity", "expectation": {"source": "reference", "key": "pcie.identity"}}
    record = {"plan": plan_summary(plan, "p"), "requirements": [{"id": "L1-PCIE-IDENTITY", "steps": [step]}]}
    assert plan_mismatches(record, plan) == []
    swapped = parse_plan(PCIE_PLAN.read_text().replace("reference: pcie.identity", "expect: {vendor_id: 4318}"), "x.yaml")
    problems = plan_mismatches(record, swapped)
    assert any("plan digest differs" in p for p in problems)
    assert any("took its expectation from" in p for p in problems)


_JSON = st.recursive(st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=8),
                               st.sampled_from(["PASS", "FAIL", "ERROR", "SKIP", "plan", "reference"])),
                     lambda inner: st.one_of(st.lists(inner, max_size=3),
                                             st.dictionaries(st.sampled_from(
                                                 ["id", "step", "steps", "verdict", "evidence", "expectation", "sha256",
                                                  "source", "nodeid", "requirements", "tests", "not_run", "plan",
                                                  "board", "reference"]), inner, max_size=4)),
                     max_leaves=12)


@settings(max_examples=150, deadline=None)
@given(change=st.dictionaries(st.sampled_from(["plan", "board", "requirements", "tests", "not_run", "verdict"]),
                              _JSON, max_size=3))
def test_verify_takes_any_signed_record_without_crashing(change):
    """Even a record signed by the lab's key is read as hostile: a clear answer, never a traceback."""
    import tempfile
    from pathlib import Path

    import contextlib
    import io

    from harness.cli import main
    with tempfile.TemporaryDirectory() as tmp, contextlib.redirect_stdout(io.StringIO()), \
            contextlib.redirect_stderr(io.StringIO()):
        priv = load_private_key(TEST_KEY)
        envelope_path = make_result(Path(tmp), priv)
        re_signed(envelope_path, priv, lambda record: record.update(change))
        code = main(["verify", str(envelope_path), "--pubkey", str(TEST_PUB)])
        assert code in (0, 1)
        main(["verify", str(envelope_path), "--pubkey", str(TEST_PUB), "--json"])
        from conftest import PCIE_PLAN
        assert main(["verify", str(envelope_path), "--pubkey", str(TEST_PUB), "--plan", str(PCIE_PLAN)]) == 1


def test_verify_with_a_reference_of_the_wrong_shape_answers_clearly(tmp_path, private_key):
    import contextlib
    import io

    from harness.cli import main
    envelope_path = make_result(tmp_path, private_key)
    re_signed(envelope_path, private_key, lambda r: r["board"].update(reference=["x"]))
    (tmp_path / "ref.yaml").write_text("reference: {product: x}\npcie: {}\n")
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()) as err:
        assert main(["verify", str(envelope_path), "--pubkey", str(TEST_PUB), "--reference",
                     str(tmp_path / "ref.yaml")]) == 1
    assert "reference profile differs" in err.getvalue()


# --- the run directory: claimed once, written whole or not at all (issue #21) ---

def test_a_private_key_others_can_read_is_refused_as_ssh_does(tmp_path):
    key = tmp_path / "lab.key"
    key.write_bytes(TEST_KEY.read_bytes())
    for mode in (0o644, 0o640, 0o604, 0o660):
        key.chmod(mode)
        with pytest.raises(KeyError_, match=rf"permissions {mode:04o} for '{key}' are too open.*chmod 600 {key}$"):
            load_private_key(key)
    key.chmod(0o600)
    assert keyid(load_private_key(key).public_key()) == keyid(load_public_key(TEST_PUB))
    with pytest.raises(KeyError_, match="a directory, not a regular file"):
        load_private_key(tmp_path)


def test_a_run_directory_is_claimed_once(tmp_path, private_key):
    claim = claim_run_dir(tmp_path, "run-1", "t0")
    assert json.loads((claim.path / CLAIM_NAME).read_text())["pid"] == os.getpid()
    with pytest.raises(RunDirTaken, match="another run has this run id"):
        claim_run_dir(tmp_path, "run-1")
    with pytest.raises(RunDirTaken):  # make_result claims run-1 itself: it is taken
        make_result(tmp_path, private_key)


def test_a_run_directory_whose_claim_changed_is_not_written(tmp_path, private_key):
    claim = claim_run_dir(tmp_path, "run-1")
    (claim.path / CLAIM_NAME).write_text(json.dumps({"token": "someone else"}))
    store = EvidenceStore()
    record = RunRecord(run_id="run-1", plan={"id": "p", "version": "1", "sha256": "0" * 64},
                       board={"name": "b1", "simulated": None}, verdict=Verdict.ERROR, requirements=(),
                       evidence=(), started="t0", finished="t1", harness={}, host={}, not_run=("R::s",))
    with pytest.raises(RunDirTaken, match="no longer this run's"):
        write_signed_result(tmp_path, record, store, private_key, claim)
    assert sorted(p.name for p in claim.path.iterdir()) == [CLAIM_NAME]


def test_a_failed_write_leaves_no_envelope_and_no_temporary_file(tmp_path, private_key, public_key, monkeypatch):
    import harness.results.bundle as bundle
    real = bundle.write_synced

    def full_disk_at_the_envelope(path, data):
        if ENVELOPE_NAME in path.name:
            real(path, data[:len(data) // 2])  # half of it reached the disk
            raise OSError(28, "No space left on device")
        real(path, data)

    monkeypatch.setattr(bundle, "write_synced", full_disk_at_the_envelope)
    with pytest.raises(OutputError, match=r"cannot write the result to .*run-1: No space left on device \(ENOSPC\)"):
        make_result(tmp_path, private_key)
    run_dir = tmp_path / "run-1"
    assert sorted(p.name for p in run_dir.iterdir()) == [CLAIM_NAME, EVIDENCE_DIR]
    with pytest.raises(VerificationError, match=rf"incomplete result \(run started t0 by pid {os.getpid()} on .*\): no result.dsse.json yet"):
        verify_result(run_dir / ENVELOPE_NAME, public_key)
    with pytest.raises(VerificationError, match="cannot read: no such file"):  # not a run directory at all
        verify_result(tmp_path / "elsewhere" / ENVELOPE_NAME, public_key)


_JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner, max_size=4),
    max_leaves=12)


@settings(max_examples=150, deadline=None)
@given(value=_JSON_VALUES, noise=st.binary(max_size=40))
def test_canonical_json_is_parsed_and_proven_canonical_in_one_pass(value, noise):
    """verify reads every archived payload through loads_canonical: it must accept exactly the
    canonical bytes of a value, and refuse anything else (a key twice, a float, a space)."""
    try:
        data = canonical_json(value)
    except UnicodeEncodeError:  # a lone surrogate: no UTF-8 payload holds it
        return
    assert loads_canonical(data) == value
    for other in (noise, data + b" ", b" " + data, data.replace(b":", b": ", 1)):
        if other == data:
            continue
        try:
            parsed = loads_canonical(other)
        except ValueError:
            continue
        assert canonical_json(parsed) == other  # whatever it accepts re-encodes to the same bytes


def test_a_key_twice_a_float_or_nan_is_never_canonical():
    with pytest.raises(NotCanonical):
        loads_canonical(b'{"a":1,"a":1}')
    with pytest.raises(NotCanonical):
        loads_canonical(b'{"b":1,"a":2}')
    for refused in (b'{"a":1.0}', b'{"a":1e3}', b'[NaN]', b'[Infinity]', b"[1,]"):
        with pytest.raises(ValueError):
            loads_canonical(refused)
