"""Red team of issue #16: a bad board, or someone who can write the lab's files (but not its trust
file or private keys), trying to get a PASS through the option ROM or the signed reference.

Each way that worked is a test that failed before its fix; each way that did not is a test too,
so that it keeps not working. docs/firmware-integrity.md says what each check proves."""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
import struct
from datetime import datetime, timedelta, timezone
from pathlib import Path
from types import SimpleNamespace

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fixtures.sim.pcie import build_rom, rom_digests
from harness.evidence import EvidenceStore
from harness.formats.dsse import keyid, sign_envelope
from harness.interfaces.pcie import PcieFunction, RomReadError
from harness.reference import load_board_reference
from harness.reference.signed import PAYLOAD_TYPE, sign_profile
from harness.reference.trust import TrustError, parse_trust_file
from harness.verdict import Verdict
from harness.yamlio import YamlError
from probes import option_rom

from conftest import CAPTURE

NOW = datetime(2026, 12, 1, tzinfo=timezone.utc)
PROFILE = b"reference: {product: Test board}\npcie:\n  identity: {vendor_id: 0x10de}\n"


def pem(thing) -> str:
    if isinstance(thing, x509.Certificate):
        return thing.public_bytes(serialization.Encoding.PEM).decode()
    return thing.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()


def block(text: str) -> str:
    return "".join(f"      {line}\n" for line in text.strip().splitlines())


def trust_with(*, public_key=None, anchor=None, algorithms="ed25519", extra: str = ""):
    text = f"trust: {{name: red-team-lab}}\nsigners:\n  - name: lab-review\n    algorithms: [{algorithms}]\n{extra}"
    if public_key is not None:
        text += f"    public_key: |\n{block(pem(public_key))}"
    if anchor is not None:
        text += f"    x509_anchor: |\n{block(pem(anchor))}"
    return parse_trust_file(text.encode(), "/lab/trust.yaml")


def judged(tmp_path: Path, envelope: dict | bytes, trust, at: datetime = NOW):
    path = tmp_path / "profile.dsse.json"
    path.write_bytes(envelope if isinstance(envelope, bytes) else json.dumps(envelope).encode())
    return load_board_reference(path, trust, at)


# --- X.509: which certificates under the lab's anchor may sign a profile ---

def _cert(subject: str, key, issuer: str, issuer_key, *, ca: bool, eku=None):
    start = datetime(2025, 1, 1, tzinfo=timezone.utc)
    builder = (x509.CertificateBuilder()
               .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
               .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(start).not_valid_after(start + timedelta(days=1000))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
               .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                            data_encipherment=False, key_agreement=False, key_cert_sign=ca,
                                            crl_sign=False, encipher_only=False, decipher_only=False), critical=True))
    if eku:
        builder = builder.add_extension(x509.ExtendedKeyUsage(eku), critical=False)
    return builder.sign(issuer_key, hashes.SHA384())


@pytest.fixture(scope="module")
def lab_pki():
    """The lab's anchor and a P-256 key that gets certificates of several kinds under it."""
    root_key = ec.generate_private_key(ec.SECP384R1())
    root = _cert("Lab Root", root_key, "Lab Root", root_key, ca=True)
    key = ec.generate_private_key(ec.SECP256R1())
    trust = trust_with(anchor=root, algorithms="ecdsa-p256-sha256")
    return SimpleNamespace(root=root, root_key=root_key, key=key, trust=trust)


def signed_with_leaf(pki, leaf: x509.Certificate, *below: x509.Certificate) -> dict:
    return sign_profile(PROFILE, pki.key, "".join(pem(c) for c in (leaf, *below)))


def test_a_code_signing_leaf_under_the_anchor_signs_profiles(tmp_path, lab_pki):
    leaf = _cert("firmware-review", lab_pki.key, "Lab Root", lab_pki.root_key, ca=False,
                 eku=[ExtendedKeyUsageOID.CODE_SIGNING])
    reference = judged(tmp_path, signed_with_leaf(lab_pki, leaf), lab_pki.trust)
    assert not reference.untrusted and reference.signed_by.x509["leaf"] == "CN=firmware-review"


@pytest.mark.parametrize("kind, ca, eku, why", [
    ("a web server's certificate", False, [ExtendedKeyUsageOID.SERVER_AUTH], "not issued for code signing"),
    ("a certificate for any purpose", False, None, "not issued for code signing (extendedKeyUsage none"),
    ("a sub-CA's certificate", True, [ExtendedKeyUsageOID.CODE_SIGNING], "is a CA certificate"),
])
def test_another_certificate_of_the_anchor_s_pki_does_not_sign_profiles(tmp_path, lab_pki, kind, ca, eku, why):
    """Worked before the fix: any certificate the anchor's PKI issued with digitalSignature (every
    TLS server of the lab's CA) could sign a profile the run then trusted."""
    leaf = _cert("www.lab.example", lab_pki.key, "Lab Root", lab_pki.root_key, ca=ca, eku=eku)
    reference = judged(tmp_path, signed_with_leaf(lab_pki, leaf), lab_pki.trust)
    assert reference.values == {} and reference.signed_by is None
    assert why in reference.untrusted, kind


@pytest.mark.parametrize("middle_eku, trusted", [
    ([ExtendedKeyUsageOID.SERVER_AUTH], False),          # a sub-CA for TLS only
    ([ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE], True),
    ([ExtendedKeyUsageOID.CODE_SIGNING], True),
    (None, True),
])
def test_a_sub_ca_restricted_to_another_purpose_issues_no_profile_signer(tmp_path, lab_pki, middle_eku, trusted):
    middle_key = ec.generate_private_key(ec.SECP384R1())
    middle = _cert("Sub CA", middle_key, "Lab Root", lab_pki.root_key, ca=True, eku=middle_eku)
    leaf = _cert("firmware-review", lab_pki.key, "Sub CA", middle_key, ca=False, eku=[ExtendedKeyUsageOID.CODE_SIGNING])
    reference = judged(tmp_path, signed_with_leaf(lab_pki, leaf, middle), lab_pki.trust)
    assert (not reference.untrusted) is trusted, reference.untrusted
    if not trusted:
        assert "certificate 1 CN=Sub CA is not issued for code signing (extendedKeyUsage serverAuth" in reference.untrusted


def test_a_leaf_under_an_intermediate_that_is_not_a_ca_is_refused(tmp_path, lab_pki):
    middle_key = ec.generate_private_key(ec.SECP384R1())
    middle = _cert("Not A CA", middle_key, "Lab Root", lab_pki.root_key, ca=False,
                   eku=[ExtendedKeyUsageOID.CODE_SIGNING])
    leaf = _cert("firmware-review", lab_pki.key, "Not A CA", middle_key, ca=False,
                 eku=[ExtendedKeyUsageOID.CODE_SIGNING])
    reference = judged(tmp_path, signed_with_leaf(lab_pki, leaf, middle), lab_pki.trust)
    assert "is not a CA" in reference.untrusted


# --- the envelope and what a run reads from it ---

@pytest.fixture(scope="module")
def lab_key():
    key = Ed25519PrivateKey.generate()
    return SimpleNamespace(key=key, trust=trust_with(public_key=key.public_key()))


def test_a_stranger_s_signature_beside_the_lab_s_is_ignored_and_the_record_names_the_lab(tmp_path, lab_key):
    """A second signature by a stranger who claims the lab's keyid and adds its own fields does
    not change who the record says signed: only the signature that verifies speaks."""
    envelope = sign_profile(PROFILE, lab_key.key)
    stranger = sign_envelope(PROFILE, PAYLOAD_TYPE, Ed25519PrivateKey.generate())["signatures"][0]
    stranger.update(keyid=envelope["signatures"][0]["keyid"], signer="nvidia-official", x509_chain="junk")
    envelope["signatures"].insert(0, stranger)
    reference = judged(tmp_path, envelope, lab_key.trust)
    record = reference.as_record()["signer"]
    assert record["name"] == "lab-review" and record["keyid"] == keyid(lab_key.key.public_key())
    assert "nvidia" not in json.dumps(reference.as_record())


@pytest.mark.parametrize("doctor, why", [
    (lambda e: {**e, "payloadType": e["payloadType"].upper()}, "payloadType"),
    (lambda e: {**e, "payload": e["payload"].rstrip("=")}, "canonical base64"),
    (lambda e: {**e, "payload": e["payload"].replace("/", "_").replace("+", "-") + "\n"}, "canonical base64"),
    (lambda e: json.dumps(e)[:-1].encode() + b', "pay\\u006coad": "' + base64.b64encode(b"reference: {}").decode().encode() + b'"}',
     "duplicate key"),
])
def test_a_doctored_envelope_is_untrusted(tmp_path, lab_key, doctor, why):
    reference = judged(tmp_path, doctor(sign_profile(PROFILE, lab_key.key)), lab_key.trust)
    assert why in reference.untrusted and reference.values == {}


@pytest.mark.parametrize("payload, why", [
    # one key written twice, the second spelling YAML reads as the same number
    (b"reference: {product: T}\npcie:\n  identity: {vendor_id: 0x10de, 4318: 1}\n"
     b"firmware: {minimum_version: '1', minimum_version: '0'}\n", "duplicate key"),
    (b"reference: {product: T}\npcie: {identity: {0x10: a, 16: b}}\n", "duplicate key"),
    # a merge key whose explicit value would quietly replace the merged one
    (b"base: &b {minimum_version: '96'}\nreference: {product: T}\nfirmware: {<<: *b, minimum_version: '0'}\n",
     "duplicate key"),
    # a second document after the one a reviewer reads
    (b"reference: {product: T}\npcie: {identity: {}}\n---\nreference: {product: U}\n", "found another document"),
    # a tag PyYAML's safe loader does not construct
    (b"reference: {product: T}\npcie: !!python/object:os.system {}\n", "could not determine a constructor"),
])
def test_a_signed_payload_yaml_reads_two_ways_stops_the_run(tmp_path, lab_key, payload, why):
    """The signer signed the bytes; a payload that YAML could read otherwise than its author
    meant is refused outright (exit 2 at board load), never read one way and trusted."""
    with pytest.raises(YamlError, match=why):
        judged(tmp_path, sign_profile(payload, lab_key.key), lab_key.trust)


def test_a_signer_s_not_after_is_read_in_its_own_zone(tmp_path, lab_key):
    """10:00 on 1 December at +14:00 is 20:00 UTC on 30 November: by NOW (midnight UTC) expired."""
    key = lab_key.key
    for not_after, trusted in (("2026-12-01T10:00:00+14:00", False), ("2026-11-30T20:00:01-04:00", True),
                               ("'2026-12-01T00:00:00Z'", True)):
        trust = trust_with(public_key=key.public_key(), extra=f"    not_after: {not_after}\n")
        reference = judged(tmp_path, sign_profile(PROFILE, key), trust)
        assert (not reference.untrusted) is trusted, (not_after, reference.untrusted)


def test_a_superseded_profile_put_back_after_its_own_not_after_is_untrusted(tmp_path, lab_key):
    """Someone who can write the references directory puts back last year's profile (a lower
    anti-rollback floor, an image since revoked): its signature still verifies. A profile that
    ends its own validity, inside what is signed, is not used after it."""
    old = b"reference: {product: T, not_after: 2026-06-30T00:00:00Z}\nfirmware: {minimum_version: '90'}\n"
    reference = judged(tmp_path, sign_profile(old, lab_key.key), lab_key.trust)
    assert "its reference.not_after" in reference.untrusted and "expired" in reference.untrusted
    assert reference.values == {} and reference.as_record()["untrusted"]
    current = old.replace(b"2026-06-30", b"2027-06-30")
    assert judged(tmp_path, sign_profile(current, lab_key.key), lab_key.trust).lookup("firmware.minimum_version") == "90"
    with pytest.raises(YamlError, match="without a zone"):
        judged(tmp_path, sign_profile(old.replace(b"00:00:00Z", b"00:00:00"), lab_key.key), lab_key.trust)


@pytest.mark.parametrize("extra", ["    public_key: ''\n", "    public_key_file: ''\n", "    x509_anchor_file: ''\n",
                                   "    not_after: 2027-06-30\n", "    not_after: 2027-06-30 00:00:00\n"])
def test_a_trust_entry_with_an_empty_key_or_a_zoneless_time_is_refused(extra):
    with pytest.raises(TrustError):
        parse_trust_file(f"trust: {{name: t}}\nsigners:\n  - name: s\n    algorithms: [ed25519]\n{extra}".encode(),
                         "/lab/trust.yaml")


# --- the option ROM: a board that shows each reader what it likes ---

SMALL = {"seed": "red-team", "legacy_size": 0x400, "efi_size": 0x600}
RELEASED = build_rom({"rom": SMALL}, 0x10DE, 0x2330)
RELEASED_ROM = b"".join(image for _, image in RELEASED)
DIGESTS = rom_digests(RELEASED)


class SwappingFunction(PcieFunction):
    """A real sysfs-shaped function whose board puts other bytes behind `rom` after each read."""

    def __init__(self, sysfs: Path, roms: list[bytes]) -> None:
        super().__init__(sysfs)
        self.roms = roms

    def read_rom(self, *args, **kwargs) -> bytes:
        data = super().read_rom(*args, **kwargs)
        if self.roms:
            (self.path / "rom").write_bytes(self.roms.pop(0))
        return data


@pytest.fixture(scope="module")
def device(tmp_path_factory) -> Path:
    device = tmp_path_factory.mktemp("redteam") / "0000:00:06.0"
    shutil.copytree(CAPTURE / "sysfs", device)
    return device


def judge_rom(device: Path, first: bytes, then: list[bytes], expected=DIGESTS):
    (device / "rom").write_bytes(first)
    board = SimpleNamespace(pcie=SwappingFunction(device, list(then)), reference=None)
    evidence = EvidenceStore()
    observation = option_rom.collect(board, {}, evidence)
    return option_rom.images_match_reference(observation, expected), evidence


def test_a_rom_that_changes_between_reads_fails_with_both_reads_as_evidence(device):
    """Worked before the fix: one read was judged, so a board that shows the released ROM now and
    another later passed. Read-only memory reads the same twice."""
    rogue = bytearray(RELEASED_ROM)
    rogue[0x300] ^= 1
    result, evidence = judge_rom(device, RELEASED_ROM, [bytes(rogue)])
    assert result.verdict is Verdict.FAIL
    assert "changed between two reads" in result.reasons[0] and "first different at byte 0x300" in result.reasons[0]
    kept = {ref.name: evidence.get(ref.sha256) for ref in evidence.refs}
    assert kept == {option_rom.EVIDENCE_NAME: RELEASED_ROM, option_rom.REREAD_EVIDENCE_NAME: bytes(rogue)}


@pytest.mark.parametrize("enable", [True, False])
def test_a_rom_that_is_a_symbolic_link_is_neither_read_nor_written_through(tmp_path, enable):
    """Worked before the fix: a `rom` link in the function's directory aimed the enable write at
    any file it named (as root: another device's `remove` or `reset` in sysfs), and the read at
    another device's ROM, a genuine one."""
    victim = tmp_path / "remove"
    victim.write_bytes(RELEASED_ROM)
    function = tmp_path / "0000:00:06.0"
    shutil.copytree(CAPTURE / "sysfs", function)
    (function / "rom").symlink_to(victim)
    with pytest.raises(RomReadError, match="a symbolic link .*refused, neither read nor written"):
        PcieFunction(function).read_rom(enable=enable)
    assert victim.read_bytes() == RELEASED_ROM


def test_a_rom_that_reads_the_same_twice_passes(device):
    result, _ = judge_rom(device, RELEASED_ROM, [RELEASED_ROM])
    assert result.verdict is Verdict.PASS, result.reasons




def _fields(base: int) -> list[int]:
    """The header bytes a board would play with in the image at `base`: its signature, PCIR
    pointer, the PCIR's image length, code type and indicator, the NPDE's image length and flags."""
    pcir = base + struct.unpack_from("<H", RELEASED_ROM, base + 0x18)[0]
    npde = base + ((pcir - base + struct.unpack_from("<H", RELEASED_ROM, pcir + 0x0A)[0] + 0x0F) & ~0x0F)
    assert RELEASED_ROM[pcir:pcir + 4] == b"PCIR" and RELEASED_ROM[npde:npde + 4] == b"NPDE"
    return [base, base + 1, base + 0x18, base + 0x19, pcir + 0x10, pcir + 0x11, pcir + 0x14, pcir + 0x15,
            npde + 0x08, npde + 0x09, npde + 0x0A]


_FIELDS = _fields(0) + _fields(SMALL["legacy_size"])


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(patches=st.lists(st.tuples(st.sampled_from(_FIELDS), st.integers(0, 255)), max_size=4),
       tail=st.sampled_from([b"", bytes(512), RELEASED[1][1], RELEASED_ROM[:0x400]]),
       extent=st.booleans())
def test_a_pass_means_the_released_bytes_exactly(device, patches, tail, extent):
    """Whatever a board does to lengths, last flags and pointers, or appends, the check passes
    only the ROM the reference's digests came from, byte for byte."""
    rom = bytearray(RELEASED_ROM)
    for at, value in patches:
        rom[at] = value
    rom = bytes(rom) + tail
    expected = DIGESTS if extent else {"images": DIGESTS["images"]}
    (device / "rom").write_bytes(rom)
    observation = option_rom.collect(SimpleNamespace(pcie=PcieFunction(device), reference=None), {}, EvidenceStore())
    result = option_rom.images_match_reference(observation, expected)
    assert result.verdict in (Verdict.PASS, Verdict.FAIL)
    if result.verdict is Verdict.PASS:
        assert hashlib.sha256(rom).digest() == hashlib.sha256(RELEASED_ROM).digest()


def test_the_small_released_rom_is_an_nvidia_chain_like_the_product_s():
    """The property above holds for the layout the product ships: x86, then EFI last in its PCIR
    and not in its NPDE."""
    efi = RELEASED[1][1]
    pcir = struct.unpack_from("<H", efi, 0x18)[0]
    assert efi[pcir + 0x15] & 0x80 and [i["code_type"] for i in DIGESTS["images"]] == [0, 3]
