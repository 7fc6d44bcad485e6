"""NVIDIA RIMs: the real signed SWID tags verify offline under the pinned RIM root; altered,
re-signed, wrapped, entity-laden or expired ones do not."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest
from cryptography.hazmat.primitives import serialization
from hypothesis import given, settings
from hypothesis import strategies as st
from lxml import etree
from signxml import DigestAlgorithm, SignatureMethod, XMLSigner

from conftest import ROOT
from harness.formats.rim import RimError, verify_rim
from x509_samples import hierarchy

SAMPLE = ROOT / "fixtures" / "captures" / "nvidia-hopper-attestation"
RIM_ROOT = (SAMPLE / "verifier_RIM_root.pem").read_bytes()
VBIOS_1010 = (SAMPLE / "1010_0200_882_960074001A_PROD.swidtag").read_bytes()
VBIOS_G520 = (SAMPLE / "g520_0200_885_9600740001_PROD.swidtag").read_bytes()
AT = datetime(2024, 6, 1, tzinfo=timezone.utc)   # inside every signer certificate's validity
SWID = "{http://standards.iso.org/iso/19770/-2/2015/schema.xsd}"


def verify(document, *, root=RIM_ROOT, at=AT):
    return verify_rim(document, rim_root_pem=root, at=at)


@pytest.mark.parametrize("document, version, tag", [
    (VBIOS_1010, "96.00.74.00.1A", "1917d8f2"),
    (VBIOS_G520, "96.00.74.00.01", "2f81e56b"),
])
def test_real_rims_verify_under_the_pinned_rim_root(document, version, tag):
    rim = verify(document)
    assert rim.colloquial_version == version and rim.tag_id.startswith(tag) and rim.product == "GH100"
    assert rim.signer.startswith("CN=HCC RIM L4 Signer")
    assert [i for i, g in rim.golden.items() if g.active] == [1, 2, 3, 4, 5, 6, 7, 9, 10, 11, 12, 13]
    assert len(rim.golden) == 64                        # RIM indexes 0..63 → report blocks 1..64
    assert len(rim.golden[13].alternatives) == 4         # RIM index 12 allows four values
    assert rim.golden[4].alternatives[0].hex().startswith("73bbf358")
    assert rim.source.describe().startswith(f"NVIDIA RIM {rim.tag_id} (version {version}, signed by CN=HCC")


def test_a_rim_whose_signer_has_expired_is_rejected_at_that_time():
    """The sample signer certificates expired in 2025: verified today they are refused."""
    with pytest.raises(RimError, match="RIM signer chain: the leaf CN=HCC RIM L4 Signer.* is not valid at 2026"):
        verify(VBIOS_1010, at=datetime(2026, 1, 1, tzinfo=timezone.utc))


@pytest.mark.parametrize("old, new", [
    (b'ns2:Hash0="b558fdac', b'ns2:Hash0="b558fdad'),              # a golden value
    (b'colloquialVersion="96.00.74.00.1A"', b'colloquialVersion="96.00.9F.00.01"'),  # the release
    (b'index="7" active="False"', b'index="7" active="True"'),      # switch on an unchecked index
])
def test_a_tampered_rim_is_rejected(old, new):
    assert VBIOS_1010.count(old) == 1
    with pytest.raises(RimError, match="RIM signature: Digest mismatch"):
        verify(VBIOS_1010.replace(old, new))


def test_a_foreign_rim_root_is_rejected():
    with pytest.raises(RimError, match="RIM signer chain: .*Foreign Root"):
        verify(VBIOS_1010, root=hierarchy("Foreign").root_pem)


def _resigned(document: bytes, lab) -> bytes:
    """The RIM stripped of NVIDIA's signature and signed with the lab's key, as a forger would."""
    tree = etree.fromstring(document)
    tree.remove(tree.find("{http://www.w3.org/2000/09/xmldsig#}Signature"))
    key = lab.leaf_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                     serialization.NoEncryption())
    signer = XMLSigner(signature_algorithm=SignatureMethod.ECDSA_SHA384, digest_algorithm=DigestAlgorithm.SHA384)
    signed = signer.sign(tree, key=key, cert=[lab.leaf, lab.ca, lab.root])
    return etree.tostring(signed)


def test_a_rim_re_signed_with_another_key_is_rejected_though_it_verifies_under_that_keys_root():
    lab = hierarchy("Lab RIM")
    forged = _resigned(VBIOS_1010.replace(b'ns2:Hash0="b558fdac', b'ns2:Hash0="b558fdad'), lab)
    assert verify(forged, root=lab.root_pem).golden[2].alternatives[0].hex().startswith("b558fdad")
    with pytest.raises(RimError, match="RIM signer chain"):
        verify(forged)


def test_a_wrapped_signature_is_rejected():
    """Signature wrapping: the signed tag moved inside a forged one that carries other values."""
    original = etree.fromstring(VBIOS_1010)
    forged = etree.fromstring(VBIOS_1010.replace(b'ns2:Hash0="b558fdac', b'ns2:Hash0="b558fdad'))
    forged.remove(forged.find("{http://www.w3.org/2000/09/xmldsig#}Signature"))
    forged.append(original)
    with pytest.raises(RimError, match="0 ds:Signature elements under the root"):
        verify(etree.tostring(forged))


def test_a_doctype_or_entity_is_refused_before_anything_is_resolved():
    xxe = b'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY x SYSTEM "file:///etc/passwd">]>' + VBIOS_1010
    with pytest.raises(RimError, match="DOCTYPE"):
        verify(xxe)
    with pytest.raises(RimError, match="not well-formed"):
        verify(b"<a>&undefined;</a>")


def test_not_a_swid_tag_or_not_bytes_is_refused():
    with pytest.raises(RimError, match="not a SWID SoftwareIdentity"):
        verify(b"<SoftwareIdentity/>")
    with pytest.raises(RimError, match="must be bytes"):
        verify(VBIOS_1010.decode())


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_a_mutated_rim_is_rejected_or_means_exactly_the_same(data):
    """One changed byte anywhere: an error, or (a change that canonicalizes away, or unused base64
    bits in a certificate) the very same golden values and version. Never other values."""
    at = data.draw(st.integers(0, len(VBIOS_1010) - 1))
    mutated = VBIOS_1010[:at] + bytes([VBIOS_1010[at] ^ data.draw(st.integers(1, 255))]) + VBIOS_1010[at + 1:]
    try:
        rim = verify(mutated)
    except RimError:
        return
    reference = verify(VBIOS_1010)
    assert (rim.golden, rim.colloquial_version, rim.tag_id) == (reference.golden, reference.colloquial_version,
                                                                reference.tag_id)


@settings(max_examples=100, deadline=None)
@given(st.one_of(st.binary(max_size=400), st.builds(lambda t: f"<{t}/>".encode(), st.text(max_size=50))))
def test_arbitrary_input_is_a_clear_error(data):
    with pytest.raises(RimError):
        verify(data)
