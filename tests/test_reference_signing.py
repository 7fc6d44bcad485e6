"""Signed reference profiles and the lab's trust file (issue #16, part 1).

A board's reference profile is trusted only when a signer the lab's trust file names signed it:
anything else (unsigned, changed after signing, signed by a stranger, expired, a chain outside
its validity, the wrong payloadType) loads as a profile with no values and the reason, so every
step that uses it is ERROR. docs/firmware-integrity.md, "Signed reference profiles"."""

from __future__ import annotations

import base64
import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from harness.board import Board, load_board_config
from harness.formats.dsse import keyid, pae, sign_envelope
from harness.reference import (Reference, UntrustedReference, load_board_reference, load_reference,
                               profile_digest)
from harness.reference.components import parse_components
from harness.reference.signed import PAYLOAD_TYPE, UntrustedProfile, parse_profile_envelope, sign_profile, verify_profile
from harness.reference.trust import (DEFAULT_LOCATIONS, TRUST_ENV, TrustError, find_trust_file, load_trust_file,
                                     parse_trust_file)
from harness.verdict import MissingReference
from harness.yamlio import YamlError, load_yaml_text

from conftest import BOARDS, PCIE_PLAN, ROOT, TEST_KEY, TEST_TRUST, attestlab

REFERENCES = ROOT / "fixtures" / "references"
SOURCE = REFERENCES / "nvidia-h100-sxm5-80gb.yaml"
SIGNED = REFERENCES / "nvidia-h100-sxm5-80gb.dsse.json"
TAMPERED = REFERENCES / "nvidia-h100-sxm5-80gb-tampered.dsse.json"
SIGNER_KEY = ROOT / "fixtures" / "keys" / "test-reference-signer.key"
RESIGN = (f".venv/bin/attestlab reference sign {SOURCE.relative_to(ROOT)} --key {SIGNER_KEY.relative_to(ROOT)} "
          f"--out {SIGNED.relative_to(ROOT)}")
PROFILE = b"reference: {product: Test board}\npcie:\n  identity: {vendor_id: 0x10de}\n"
NOW = datetime(2026, 12, 1, tzinfo=timezone.utc)


def pem(public_key) -> str:
    return public_key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()


def indent(text: str, spaces: int = 6) -> str:
    return "".join(" " * spaces + line + "\n" for line in text.strip().splitlines())


def trust_text(*signers: str, name: str = "test-lab") -> str:
    return f"trust: {{name: {name}}}\nsigners:\n" + "".join(signers)


def signer(name: str, public_key=None, algorithms=("ed25519",), anchor: x509.Certificate | None = None,
           not_after: str | None = None) -> str:
    text = f"  - name: {name}\n    algorithms: [{', '.join(algorithms)}]\n"
    if public_key is not None:
        text += f"    public_key: |\n{indent(pem(public_key))}"
    if anchor is not None:
        text += f"    x509_anchor: |\n{indent(anchor.public_bytes(serialization.Encoding.PEM).decode())}"
    if not_after:
        text += f"    not_after: {not_after}\n"
    return text


def trust_of(text: str, tmp_path: Path):
    path = tmp_path / "trust.yaml"
    path.write_text(text)
    return load_trust_file(path)


def board_reference(tmp_path: Path, envelope: dict | bytes, trust, at: datetime = NOW) -> Reference:
    path = tmp_path / "profile.dsse.json"
    path.write_bytes(envelope if isinstance(envelope, bytes) else json.dumps(envelope).encode())
    return load_board_reference(path, trust, at)


def untrusted_reason(reference: Reference) -> str:
    assert reference.untrusted and reference.values == {} and reference.signed_by is None
    with pytest.raises(UntrustedReference, match="is not trusted") as caught:
        reference.lookup("pcie.identity")
    assert isinstance(caught.value, MissingReference)  # the runner turns it into ERROR, never PASS
    return reference.untrusted


KEYS = {"ed25519": Ed25519PrivateKey.generate(), "ecdsa-p256-sha256": ec.generate_private_key(ec.SECP256R1()),
        "ecdsa-p384-sha384": ec.generate_private_key(ec.SECP384R1())}


# --- chains for signers pinned by an X.509 anchor ---

def _cert(subject: str, key, issuer_name: str, issuer_key, *, ca: bool, start: datetime, days: int):
    builder = (x509.CertificateBuilder()
               .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
               .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer_name)]))
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(start).not_valid_after(start + timedelta(days=days))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
               .add_extension(x509.KeyUsage(digital_signature=not ca, content_commitment=False, key_encipherment=False,
                                            data_encipherment=False, key_agreement=False, key_cert_sign=ca,
                                            crl_sign=ca, encipher_only=False, decipher_only=False), critical=True))
    if not ca:  # a profile signer's leaf is issued for code signing (harness/reference/signed.py)
        builder = builder.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CODE_SIGNING]), critical=False)
    return builder.sign(issuer_key, hashes.SHA384())


@pytest.fixture(scope="module")
def pki():
    start = datetime(2025, 1, 1, tzinfo=timezone.utc)
    root_key = ec.generate_private_key(ec.SECP384R1())
    root = _cert("Lab Reference Root", root_key, "Lab Reference Root", root_key, ca=True, start=start, days=3650)
    leaf_key = ec.generate_private_key(ec.SECP256R1())
    leaf = _cert("firmware-review", leaf_key, "Lab Reference Root", root_key, ca=False, start=start, days=730)
    other_key = ec.generate_private_key(ec.SECP384R1())
    other = _cert("Someone Else's Root", other_key, "Someone Else's Root", other_key, ca=True, start=start, days=3650)
    chain = (leaf.public_bytes(serialization.Encoding.PEM) + root.public_bytes(serialization.Encoding.PEM)).decode()
    return {"root": root, "leaf_key": leaf_key, "chain": chain, "other": other}


# --- the round trip, per algorithm ---

@pytest.mark.parametrize("algorithm", sorted(KEYS))
def test_a_profile_signed_with_each_algorithm_is_trusted_and_names_its_signer(algorithm, tmp_path):
    key = KEYS[algorithm]
    trust = trust_of(trust_text(signer("review", key.public_key(), (algorithm,))), tmp_path)
    reference = board_reference(tmp_path, sign_profile(PROFILE, key), trust)
    assert not reference.untrusted and reference.lookup("pcie.identity") == {"vendor_id": 0x10DE}
    assert reference.product == "Test board"
    record = reference.as_record()
    assert record["signer"]["name"] == "review" and record["signer"]["algorithm"] == algorithm
    assert record["signer"]["keyid"] == keyid(key.public_key())
    assert record["signer"]["trust_file"]["name"] == "test-lab"
    assert record["sha256"] == profile_digest(tmp_path / "profile.dsse.json")  # of the YAML, as verify binds


def test_an_ecdsa_signature_is_der_and_raw_r_s_is_refused(tmp_path):
    key = KEYS["ecdsa-p256-sha256"]
    envelope = sign_profile(PROFILE, key)
    r, s = decode_dss_signature(base64.b64decode(envelope["signatures"][0]["sig"]))  # DER, or this raises
    envelope["signatures"][0]["sig"] = base64.b64encode(r.to_bytes(32, "big") + s.to_bytes(32, "big")).decode()
    trust = trust_of(trust_text(signer("review", key.public_key(), ("ecdsa-p256-sha256",))), tmp_path)
    assert "does not verify" in untrusted_reason(board_reference(tmp_path, envelope, trust))


# --- what is not trusted, and why ---

@pytest.fixture
def ed_trust(tmp_path):
    return trust_of(trust_text(signer("review", KEYS["ed25519"].public_key())), tmp_path)


def test_an_unsigned_yaml_profile_is_untrusted(tmp_path, ed_trust):
    reason = untrusted_reason(board_reference(tmp_path, PROFILE, ed_trust))
    assert "it is not signed" in reason and "attestlab reference sign" in reason


def test_a_profile_changed_after_signing_is_untrusted(tmp_path, ed_trust):
    envelope = sign_profile(PROFILE, KEYS["ed25519"])
    envelope["payload"] = base64.b64encode(PROFILE.replace(b"0x10de", b"0x10df")).decode()
    reason = untrusted_reason(board_reference(tmp_path, envelope, ed_trust))
    assert reason == ("the signature by signer 'review' does not verify: the profile was changed after signing, "
                      "or signed by another key")


def test_a_flipped_signature_bit_is_untrusted(tmp_path, ed_trust):
    envelope = sign_profile(PROFILE, KEYS["ed25519"])
    sig = bytearray(base64.b64decode(envelope["signatures"][0]["sig"]))
    sig[5] ^= 1
    envelope["signatures"][0]["sig"] = base64.b64encode(bytes(sig)).decode()
    assert "does not verify" in untrusted_reason(board_reference(tmp_path, envelope, ed_trust))


def test_a_profile_signed_by_a_key_the_trust_file_does_not_name_is_untrusted(tmp_path, ed_trust):
    stranger = Ed25519PrivateKey.generate()
    reason = untrusted_reason(board_reference(tmp_path, sign_profile(PROFILE, stranger), ed_trust))
    assert f"signed by {keyid(stranger.public_key())[:16]}…, which the trust file" in reason and "test-lab" in reason


def test_a_stranger_claiming_a_trusted_keyid_is_untrusted(tmp_path, ed_trust):
    envelope = sign_profile(PROFILE, Ed25519PrivateKey.generate())
    envelope["signatures"][0]["keyid"] = keyid(KEYS["ed25519"].public_key())  # the hint is not authenticated
    assert "does not verify" in untrusted_reason(board_reference(tmp_path, envelope, ed_trust))


def test_a_signer_past_its_not_after_is_untrusted(tmp_path):
    trust = trust_of(trust_text(signer("review", KEYS["ed25519"].public_key(), not_after="2026-06-30T00:00:00Z")),
                     tmp_path)
    envelope = sign_profile(PROFILE, KEYS["ed25519"])
    assert not board_reference(tmp_path, envelope, trust, at=datetime(2026, 6, 1, tzinfo=timezone.utc)).untrusted
    reason = untrusted_reason(board_reference(tmp_path, envelope, trust, at=NOW))
    assert "trusted until 2026-06-30T00:00:00+00:00" in reason and "expired" in reason


def test_a_signature_with_an_algorithm_the_signer_may_not_use_is_untrusted(tmp_path, pki):
    trust = trust_of(trust_text(signer("review", anchor=pki["root"], algorithms=("ecdsa-p384-sha384",))), tmp_path)
    envelope = sign_profile(PROFILE, pki["leaf_key"], pki["chain"])
    assert "may sign with ecdsa-p384-sha384; this signature is ecdsa-p256-sha256" in \
        untrusted_reason(board_reference(tmp_path, envelope, trust))


def test_the_wrong_payload_type_is_untrusted(tmp_path, ed_trust):
    envelope = sign_envelope(PROFILE, "application/vnd.in-toto+json", KEYS["ed25519"])
    reason = untrusted_reason(board_reference(tmp_path, envelope, ed_trust))
    assert "payloadType is 'application/vnd.in-toto+json'" in reason and PAYLOAD_TYPE in reason


def test_an_envelope_with_a_key_twice_is_untrusted(tmp_path, ed_trust):
    text = json.dumps(sign_profile(PROFILE, KEYS["ed25519"]))
    text = text.replace('"payloadType"', '"payload": "e30=", "payloadType"', 1)
    assert "duplicate key 'payload'" in untrusted_reason(board_reference(tmp_path, text.encode(), ed_trust))


def test_without_a_trust_file_nothing_is_trusted(tmp_path):
    reason = untrusted_reason(board_reference(tmp_path, sign_profile(PROFILE, KEYS["ed25519"]), None))
    assert "no trust file" in reason and TRUST_ENV in reason


# --- X.509: a signer pinned by its anchor ---

def test_a_signer_pinned_by_an_x509_anchor_trusts_a_chain_to_it(tmp_path, pki):
    trust = trust_of(trust_text(signer("review", anchor=pki["root"], algorithms=("ecdsa-p256-sha256",))), tmp_path)
    reference = board_reference(tmp_path, sign_profile(PROFILE, pki["leaf_key"], pki["chain"]), trust)
    assert not reference.untrusted
    assert reference.as_record()["signer"]["x509"] == {"leaf": "CN=firmware-review", "anchor": "CN=Lab Reference Root"}


def test_a_chain_outside_its_validity_is_untrusted(tmp_path, pki):
    trust = trust_of(trust_text(signer("review", anchor=pki["root"], algorithms=("ecdsa-p256-sha256",))), tmp_path)
    envelope = sign_profile(PROFILE, pki["leaf_key"], pki["chain"])
    reason = untrusted_reason(board_reference(tmp_path, envelope, trust, at=datetime(2028, 1, 1, tzinfo=timezone.utc)))
    assert "does not lead to its anchor" in reason and "is not valid at 2028-01-01" in reason


def test_a_chain_to_another_anchor_or_no_chain_is_untrusted(tmp_path, pki):
    trust = trust_of(trust_text(signer("review", anchor=pki["other"], algorithms=("ecdsa-p256-sha256",))), tmp_path)
    envelope = sign_profile(PROFILE, pki["leaf_key"], pki["chain"])
    assert "does not lead to its anchor" in untrusted_reason(board_reference(tmp_path, envelope, trust))
    pinned = trust_of(trust_text(signer("review", pki["leaf_key"].public_key(), ("ecdsa-p256-sha256",),
                                        anchor=pki["root"])), tmp_path)
    bare = sign_profile(PROFILE, pki["leaf_key"])
    assert "carries no x509_chain" in untrusted_reason(board_reference(tmp_path, bare, pinned))


# --- the trust file ---

@pytest.mark.parametrize("body, message", [
    ("trust: {name: t}\nsigners: []\n", "list at least one signer"),
    ("trust: {name: t}\nsigners:\n  - {name: a, algorithms: [rsa]}\n", "'rsa' is not one of"),
    ("trust: {name: t}\nsigners:\n  - {name: a, algorithms: [ed25519]}\n", "a signer needs public_key"),
    ("trust: {name: t}\nsigners:\n  - {name: a, algorithms: [ed25519], public_key: nope}\n", "not a PEM public key"),
    ("trust: {name: t}\nsigners:\n  - {name: a, algorithms: [ed25519], public_key_file: missing.pub}\n", "cannot read"),
    ("trust: {name: t}\nsigners:\n  - {name: a, algorithms: [ed25519], pubkey: x}\n", "unknown field"),
    ("trust: {name: t}\nsigners: {a: 1}\n", "expected a list"),
])
def test_a_bad_trust_file_is_refused_with_file_line_and_field(body, message, tmp_path):
    path = tmp_path / "trust.yaml"
    path.write_text(body)
    with pytest.raises(TrustError, match=message) as caught:
        load_trust_file(path)
    assert str(caught.value).startswith(str(path))


def test_a_trust_file_checks_keys_algorithms_times_and_names(tmp_path):
    key = KEYS["ed25519"].public_key()
    with pytest.raises(TrustError, match=r":4: signers\[0\]\.algorithms: its public key signs with ed25519"):
        trust_of(trust_text(signer("a", key, ("ecdsa-p256-sha256",))), tmp_path)
    with pytest.raises(TrustError, match="a time without a zone"):
        trust_of(trust_text(signer("a", key, not_after="2027-01-01 00:00:00")), tmp_path)
    with pytest.raises(TrustError, match="a date without a time"):
        trust_of(trust_text(signer("a", key, not_after="2027-01-01")), tmp_path)
    with pytest.raises(TrustError, match="'a' is listed twice"):
        trust_of(trust_text(signer("a", key), signer("a", key)), tmp_path)


def test_the_trust_file_is_found_explicitly_then_by_variable_then_default_and_never_the_test_one(tmp_path, monkeypatch):
    monkeypatch.delenv(TRUST_ENV, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    if any(p.expanduser().exists() for p in DEFAULT_LOCATIONS):
        pytest.skip(f"this machine has a trust file at a default location ({DEFAULT_LOCATIONS})")
    assert find_trust_file() is None  # the committed test trust file is never found by default
    home = tmp_path / ".config" / "attestlab" / "trust.yaml"
    home.parent.mkdir(parents=True)
    home.write_text("x")
    assert find_trust_file() == home
    monkeypatch.setenv(TRUST_ENV, str(TEST_TRUST))
    assert find_trust_file() == TEST_TRUST
    assert find_trust_file(home) == home
    monkeypatch.setenv(TRUST_ENV, str(tmp_path / "typo.yaml"))
    with pytest.raises(TrustError, match=r"\$ATTESTLAB_TRUST .*typo.yaml: no such file"):
        find_trust_file()


# --- firmware.components ---

FIRMWARE = """firmware:
  regions:
    vbios:
      images:
        - {version: "1.0", size: 4, sha256: %s}
  option_rom:
    images:
      - {index: 0, code_type: 0, size: 512, sha256: %s}
  components:
""" % ("a" * 64, "b" * 64)


def components(text: str):
    doc = load_yaml_text(FIRMWARE + text, "p.yaml")
    return parse_components(doc["firmware"], "p.yaml")


def test_components_carry_version_svn_digest_and_where_they_are_measured():
    found = components(f"""    - {{name: vbios, version: "1.0", svn: 3, digest: {{algorithm: sha256, value: {"a" * 64}}},
       measured_at: {{dump_region: vbios}}}}
    - {{name: rom0, version: "1.0", digest: {{algorithm: sha256, value: {"b" * 64}}}, measured_at: {{option_rom_image: 0}}}}
    - {{name: fmc, version: "2", digest: {{algorithm: sha384, value: {"c" * 96}}}, measured_at: {{spdm_measurement_index: 2}}}}
    - {{name: driver, version: "550.54", measured_at: {{vendor_reported: nvml.driver_version}}}}
""")
    assert [(c.name, c.svn, c.digest_algorithm, c.measured_at) for c in found] == [
        ("vbios", 3, "sha256", ("dump_region", "vbios")), ("rom0", None, "sha256", ("option_rom_image", 0)),
        ("fmc", None, "sha384", ("spdm_measurement_index", 2)), ("driver", None, None, ("vendor_reported", "nvml.driver_version"))]


@pytest.mark.parametrize("component, message", [
    (f'{{name: v, version: "1.0", digest: {{algorithm: sha256, value: {"c" * 64}}}, measured_at: {{dump_region: vbios}}}}',
     "disagrees with firmware.regions.vbios.images"),
    (f'{{name: v, version: "9.9", digest: {{algorithm: sha256, value: {"a" * 64}}}, measured_at: {{dump_region: vbios}}}}',
     "'9.9' is not among firmware.regions.vbios.images"),
    (f'{{name: v, version: "1", digest: {{algorithm: sha256, value: {"a" * 64}}}, measured_at: {{dump_region: inforom}}}}',
     "which firmware.regions does not list"),
    (f'{{name: r, version: "1", digest: {{algorithm: sha256, value: {"a" * 64}}}, measured_at: {{option_rom_image: 0}}}}',
     "disagrees with firmware.option_rom.images index 0"),
    (f'{{name: r, version: "1", digest: {{algorithm: sha256, value: {"a" * 64}}}, measured_at: {{spdm_measurement_index: 255}}}}',
     "must be 1 to 254"),
    (f'{{name: r, version: "1", digest: {{algorithm: md5, value: {"a" * 32}}}, measured_at: {{spdm_measurement_index: 1}}}}',
     "'md5': one of sha256"),
    ('{name: r, version: "1", measured_at: {spdm_measurement_index: 1}}', "digest: required"),
    ('{name: r, version: "1", svn: -1, measured_at: {vendor_reported: x}}', "0 or more"),
    ('{name: r, version: "1", measured_at: {dump_region: vbios, option_rom_image: 0}}', "exactly one of"),
])
def test_a_component_that_disagrees_or_is_malformed_is_refused_at_load(component, message):
    with pytest.raises(YamlError, match=message) as caught:
        components(f"    - {component}\n")
    assert str(caught.value).startswith("p.yaml:")


def test_a_component_listed_twice_is_refused():
    with pytest.raises(YamlError, match="'x' is listed twice"):
        components("    - {name: x, version: '1', measured_at: {vendor_reported: a}}\n"
                   "    - {name: x, version: '2', measured_at: {vendor_reported: b}}\n")


# --- the fixtures ---

def test_the_signed_fixture_profile_is_its_yaml_source_byte_for_byte():
    payload = parse_profile_envelope(SIGNED.read_bytes()).payload
    assert payload == SOURCE.read_bytes(), (f"{SIGNED.relative_to(ROOT)} does not hold {SOURCE.relative_to(ROOT)} as "
                                            f"it is now (edited without re-signing). Re-sign it:\n  {RESIGN}")


def test_every_board_config_names_a_signed_profile_the_test_trust_file_trusts():
    trust = load_trust_file(TEST_TRUST)
    judged: dict[Path, Reference] = {}  # the boards share a profile: judge each file once
    for path in sorted(BOARDS.glob("*.yaml")):
        if path.name == "matrix.yaml":
            continue
        named = load_board_config(path).reference_path.resolve()
        reference = judged.get(named) or judged.setdefault(named, load_board_reference(named, trust))
        if path.name == "sim-unsigned-manifest.yaml":
            assert "does not verify" in reference.untrusted
        else:
            assert not reference.untrusted, f"{path.name}: {reference.untrusted}"
            assert reference.signed_by.signer == "test-reference-signer"


def test_the_tampered_fixture_differs_from_the_signed_one_only_in_its_payload():
    signed, tampered = json.loads(SIGNED.read_text()), json.loads(TAMPERED.read_text())
    assert signed["signatures"] == tampered["signatures"] and signed["payload"] != tampered["payload"]
    assert load_reference(TAMPERED).lookup("firmware.minimum_version") != load_reference(SIGNED).lookup(
        "firmware.minimum_version")


def test_a_board_records_its_profile_and_signer(monkeypatch):
    board = Board.from_file(BOARDS / "sim-clean.yaml", trust=TEST_TRUST)
    reference = board.identity()["reference"]
    assert reference["signer"]["name"] == "test-reference-signer" and reference["signer"]["algorithm"] == "ed25519"
    assert reference["signer"]["trust_file"]["name"] == "attestlab-test-trust"
    assert reference["sha256"] == profile_digest(SOURCE) == profile_digest(SIGNED)
    bad = Board.from_file(BOARDS / "sim-unsigned-manifest.yaml", trust=TEST_TRUST).identity()["reference"]
    assert bad["signer"] is None and "does not verify" in bad["untrusted"]


# --- the command line ---

def test_reference_sign_verify_show_round_trip(tmp_path):
    source = tmp_path / "p.yaml"
    source.write_bytes(PROFILE)
    signed = attestlab("reference", "sign", str(source), "--key", str(SIGNER_KEY))
    assert signed.returncode == 0, signed.stderr
    envelope = tmp_path / "p.dsse.json"
    assert parse_profile_envelope(envelope.read_bytes()).payload == PROFILE
    verified = attestlab("reference", "verify", str(envelope), "--trust", str(TEST_TRUST))
    assert verified.returncode == 0 and "signed by test-reference-signer (ed25519" in verified.stdout
    shown = attestlab("reference", "show", str(envelope), "--trust", str(TEST_TRUST))
    assert shown.returncode == 0 and "# trusted: signed by test-reference-signer" in shown.stdout
    assert "product: Test board" in shown.stdout
    source.write_bytes(PROFILE + b"#\n")  # edited and not re-signed: the envelope is re-encoded by hand
    envelope.write_text(envelope.read_text().replace(json.loads(envelope.read_text())["payload"],
                                                     base64.b64encode(PROFILE + b"#\n").decode()))
    refused = attestlab("reference", "verify", str(envelope), "--trust", str(TEST_TRUST))
    assert refused.returncode == 1 and "NOT TRUSTED" in refused.stderr and "does not verify" in refused.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text("reference: {}\npcie: {}\n")
    refused = attestlab("reference", "sign", str(bad), "--key", str(SIGNER_KEY))
    assert refused.returncode == 2 and "reference.product: required" in refused.stderr


def test_run_with_a_missing_trust_file_stops_before_the_board(tmp_path):
    run = attestlab("run", "--plan", str(PCIE_PLAN), "--board", str(BOARDS / "sim-clean.yaml"), "--key",
                    str(TEST_KEY), "--out", str(tmp_path), "--trust", str(tmp_path / "nope.yaml"), "-q")
    assert run.returncode == 2 and "attestlab run: trust file: --trust" in run.stderr and "no such file" in run.stderr
    assert not any(tmp_path.iterdir())


def test_an_untrusted_profile_errors_every_reference_step_and_the_run_says_who_signed(tmp_path):
    run = attestlab("run", "--plan", str(PCIE_PLAN), "--board", str(BOARDS / "sim-unsigned-manifest.yaml"),
                    "--key", str(TEST_KEY), "--out", str(tmp_path), "--trust", str(TEST_TRUST), "-q")
    assert run.returncode == 2, run.stdout[-2000:] + run.stderr
    envelope = next(line.split(": ", 1)[1] for line in run.stdout.splitlines() if line.startswith("signed result: "))
    verified = attestlab("verify", envelope, "--pubkey", str(ROOT / "fixtures" / "keys" / "test-lab.pub"),
                         "--reference", str(TAMPERED))
    assert verified.returncode == 0 and "profile NOT TRUSTED in this run" in verified.stdout
    statement = json.loads(base64.b64decode(json.loads(Path(envelope).read_text())["payload"]))
    record = statement["predicate"]
    assert {r["id"]: r["verdict"] for r in record["requirements"]} == {
        "L1-PCIE-IDENTITY": "ERROR", "L1-PCIE-CAPABILITIES": "ERROR"}
    for req in record["requirements"]:
        assert all("is not trusted: the signature by signer 'test-reference-signer' does not verify" in r
                   for step in req["steps"] for r in step["reasons"])


# --- hostile input: only ValueError subclasses, never a crash or a trusted profile ---

_JSONISH = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=20),
                        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
                            st.sampled_from(["payload", "payloadType", "signatures", "keyid", "sig", "x509_chain"]),
                            inner, max_size=5), max_leaves=20)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.one_of(st.binary(max_size=300), _JSONISH.map(lambda v: json.dumps(v).encode())),
       mutate=st.booleans())
def test_hostile_envelopes_are_untrusted_never_a_crash(data, mutate):
    trust = parse_trust_file(trust_text(signer("review", KEYS["ed25519"].public_key())).encode(), "t.yaml")
    if mutate:  # a real envelope with one byte changed
        real = json.dumps(sign_profile(PROFILE, KEYS["ed25519"])).encode()
        spot = len(data) % len(real)
        data = real[:spot] + bytes([(real[spot] + 1 + (data[:1] or b"\0")[0]) % 256]) + real[spot + 1:]
    try:
        envelope = parse_profile_envelope(data)
        signed_by = verify_profile(envelope, trust, NOW)
    except UntrustedProfile:
        return
    assert envelope.payload == PROFILE and signed_by.signer == "review"  # only the genuine profile verifies


@settings(max_examples=80, deadline=None)
@given(st.one_of(st.binary(max_size=200), _JSONISH.map(lambda v: json.dumps({"trust": {"name": "t"}, "signers": v}).encode()),
                 st.dictionaries(st.sampled_from(["name", "algorithms", "public_key", "public_key_file",
                                                  "x509_anchor", "not_after"]), _JSONISH, max_size=5).map(
                     lambda v: json.dumps({"trust": {"name": "t"}, "signers": [v]}).encode())))
def test_hostile_trust_files_are_refused_with_a_trust_error(data):
    try:
        parse_trust_file(data, "/nonexistent/t.yaml")
    except TrustError:
        pass


_FIELD = st.one_of(st.none(), st.integers(-2, 300), st.sampled_from(["1", "vbios", "sha256", "a" * 64, "x"]),
                   st.dictionaries(st.sampled_from(["algorithm", "value", "dump_region", "option_rom_image",
                                                    "spdm_measurement_index", "vendor_reported"]),
                                   st.one_of(st.integers(-1, 300), st.sampled_from(["sha256", "a" * 64, "vbios", "1"])),
                                   max_size=3))


@settings(max_examples=100, deadline=None)
@given(st.lists(st.dictionaries(st.sampled_from(["name", "version", "svn", "digest", "measured_at"]),
                                _FIELD, max_size=5), max_size=3))
def test_hostile_components_are_refused_with_a_yaml_error(items):
    try:
        parse_components({"regions": {"vbios": {"images": [{"version": "1", "sha256": "a" * 64}]}},
                          "components": items}, "p.yaml")
    except YamlError:
        pass


def test_the_dsse_core_is_one_place():
    """Results and references sign with the same PAE (harness/formats/dsse.py)."""
    from harness.results import dsse as results_dsse
    assert results_dsse.pae is pae and results_dsse.sign_envelope is sign_envelope
