"""NVIDIA Reference Integrity Manifests (RIMs): signed golden measurements, verified offline.

A RIM is an ISO/IEC 19770-2 SWID tag (TCG RIM information model) that NVIDIA publishes per VBIOS
and per driver release. Its ``Meta`` names the release (``colloquialVersion``, e.g. 96.00.74.00.1A)
and its ``Payload`` lists one ``Resource type="Measurement"`` per measurement index: ``active``,
the number of ``alternatives`` and that many acceptable SHA-384 values (``Hash0``, ``Hash1``, …).
An enveloped XML-DSig signature (ECDSA P-384, SHA-384, C14N 1.1) covers the whole tag; its
``KeyInfo`` carries the signer's chain, which must lead to NVIDIA's RIM root that the lab pins.

`verify_rim` checks, and raises `RimError` naming the first failure:

1. the document is plain XML (no DTD, no entities, nothing fetched: lxml with entity resolution
   and network off; a DOCTYPE is refused outright);
2. the signer's chain (from KeyInfo, leaf first) leads to the pinned RIM root at the time given
   (`harness.formats.x509chain`);
3. the signature verifies with that leaf's key, by `signxml` (a library made for XML-DSig: it
   handles canonicalization, the enveloped-signature transform and the reference rules that
   hand-written verifiers get wrong): exactly one reference, to the whole document (URI ""),
   ECDSA-SHA384 and SHA-384 only, the Signature a child of the root;
4. the golden values are read from what the signature covers (signxml's ``signed_xml``), never
   from the document as received: an element wrapped in beside the signed one is never read.

Index numbering: NVIDIA numbers RIM entries from 0, the SPDM report numbers blocks from 1; RIM
entry n describes report block n + 1 (as NVIDIA's verifier maps them). `Golden.index` is the
report's number; `Golden.name` keeps the RIM's entry name and index.

What a verified RIM proves: NVIDIA's RIM signing key vouched for these values for this release.
It does not say which board SKU it is for (the SKU is in NVIDIA's file id, not in the signed
tag) nor that it is the newest release: the lab chooses the RIM it trusts for its product.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from datetime import datetime

from cryptography import x509
from lxml import etree
from signxml import DigestAlgorithm, SignatureConfiguration, SignatureMethod, XMLVerifier
from signxml.exceptions import InvalidInput, InvalidSignature

from harness.formats.golden import Golden, ReferenceSource
from harness.formats.x509chain import ChainError, VerifiedChain, load_pem_anchor, verify_chain

SWID = "http://standards.iso.org/iso/19770/-2/2015/schema.xsd"
DSIG = "http://www.w3.org/2000/09/xmldsig#"
SHA384_NS = "http://www.w3.org/2001/04/xmlenc#sha384"
MAX_RIM = 1024 * 1024
MAX_ALTERNATIVES = 64
MAX_ENTRIES = 255


class RimError(ValueError):
    """A RIM that is malformed, unsigned, badly signed or signed by a key not under the RIM root."""


@dataclass(frozen=True)
class Rim:
    tag_id: str
    product: str
    colloquial_version: str
    signer: str                  # the signing certificate's subject
    chain: VerifiedChain
    golden: dict[int, Golden]    # by report block index (RIM index + 1)

    @property
    def source(self) -> ReferenceSource:
        return ReferenceSource("NVIDIA RIM", self.tag_id, self.colloquial_version, self.signer)


def _parser() -> etree.XMLParser:
    return etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, dtd_validation=False,
                           huge_tree=False, remove_blank_text=False)


def _signer_chain(root: etree._Element) -> list[x509.Certificate]:
    signatures = root.findall(f"{{{DSIG}}}Signature")
    if len(signatures) != 1:
        raise RimError(f"RIM: {len(signatures)} ds:Signature elements under the root, expected exactly 1")
    certs = []
    for element in signatures[0].iterfind(f"{{{DSIG}}}KeyInfo/{{{DSIG}}}X509Data/{{{DSIG}}}X509Certificate"):
        try:
            certs.append(x509.load_der_x509_certificate(base64.b64decode("".join((element.text or "").split()),
                                                                         validate=True)))
        except (ValueError, binascii.Error) as e:
            raise RimError(f"RIM: an X509Certificate in KeyInfo is not a certificate ({e})") from None
    if not certs:
        raise RimError("RIM: the signature's KeyInfo carries no X509Certificate to verify it with")
    return certs


def verify_rim(document: bytes, *, rim_root_pem: bytes | str, at: datetime) -> Rim:
    """The RIM, verified (module docstring, steps 1–4); RimError names what failed."""
    if not isinstance(document, (bytes, bytearray)):
        raise RimError(f"RIM must be bytes, got {type(document).__name__}")
    if len(document) > MAX_RIM:
        raise RimError(f"RIM is {len(document)} bytes, more than the {MAX_RIM} accepted")
    document = bytes(document)
    try:
        root = etree.fromstring(document, _parser())
    except etree.XMLSyntaxError as e:
        raise RimError(f"RIM: not well-formed XML ({e})") from None
    if root.getroottree().docinfo.doctype:
        raise RimError("RIM: a DOCTYPE is not accepted (no DTDs or entities in a signed manifest)")
    if root.tag != f"{{{SWID}}}SoftwareIdentity":
        raise RimError(f"RIM: the root element is {root.tag}, not a SWID SoftwareIdentity")
    try:
        chain = verify_chain(_signer_chain(root), load_pem_anchor(rim_root_pem, "RIM root"), at=at)
    except ChainError as e:
        raise RimError(f"RIM signer chain: {e}") from None
    config = SignatureConfiguration(location="./", expect_references=1,
                                    signature_methods=frozenset({SignatureMethod.ECDSA_SHA384}),
                                    digest_algorithms=frozenset({DigestAlgorithm.SHA384}),
                                    verification_time=at)
    try:
        result = XMLVerifier().verify(document, x509_cert=chain.leaf, parser=_parser(), expect_config=config)
    except (InvalidSignature, InvalidInput) as e:
        raise RimError(f"RIM signature: {e}") from None
    except (ValueError, TypeError, etree.LxmlError) as e:
        raise RimError(f"RIM signature: cannot be verified ({type(e).__name__}: {e})") from None
    signed = result.signed_xml
    if not isinstance(signed, etree._Element) or signed.tag != f"{{{SWID}}}SoftwareIdentity":
        raise RimError("RIM signature: what is signed is not the SoftwareIdentity document")
    return _read_signed(signed, chain)


def _read_signed(signed: etree._Element, chain: VerifiedChain) -> Rim:
    metas = signed.findall(f"{{{SWID}}}Meta")
    payloads = signed.findall(f"{{{SWID}}}Payload")
    if len(metas) != 1 or len(payloads) != 1:
        raise RimError(f"RIM: {len(metas)} Meta and {len(payloads)} Payload elements, expected one of each")
    tag_id = _attribute(signed, "tagId")
    version = _attribute(metas[0], "colloquialVersion")
    product = signed.get("name") or metas[0].get("product") or ""
    source = ReferenceSource("NVIDIA RIM", tag_id, version, chain.leaf_subject)
    golden: dict[int, Golden] = {}
    resources = payloads[0].findall(f"{{{SWID}}}Resource")
    if len(resources) > MAX_ENTRIES:
        raise RimError(f"RIM: {len(resources)} Resource entries, more than the {MAX_ENTRIES} accepted")
    for resource in resources:
        if resource.get("type") != "Measurement":
            continue
        entry = _measurement(resource, source)
        if entry.index in golden:
            raise RimError(f"RIM: measurement index {entry.index - 1} is listed twice")
        golden[entry.index] = entry
    if not golden:
        raise RimError("RIM: the Payload lists no Measurement resources")
    return Rim(tag_id, product, version, chain.leaf_subject, chain, golden)


def _attribute(element: etree._Element, name: str) -> str:
    value = element.get(name)
    if not value:
        raise RimError(f"RIM: {etree.QName(element).localname} has no {name}")
    return value


def _integer(resource: etree._Element, name: str, low: int, high: int) -> int:
    text = _attribute(resource, name)
    if not text.isascii() or not text.isdigit() or not low <= int(text) <= high:
        raise RimError(f"RIM: Resource {name}={text!r} is not an integer in {low}..{high}")
    return int(text)


def _measurement(resource: etree._Element, source: ReferenceSource) -> Golden:
    index = _integer(resource, "index", 0, 0xFD)  # report block index + 1 must stay below 0xFF
    where = f"RIM measurement index {index}"
    active = resource.get("active")
    if active not in ("True", "False"):
        raise RimError(f"{where}: active={active!r}, expected True or False")
    count = _integer(resource, "alternatives", 1, MAX_ALTERNATIVES)
    size = _integer(resource, "size", 1, 64)
    hashes = {k: v for k, v in resource.attrib.items() if etree.QName(k).namespace == SHA384_NS}
    expected_names = {f"{{{SHA384_NS}}}Hash{n}" for n in range(count)}
    if set(hashes) != expected_names:
        raise RimError(f"{where}: {len(hashes)} Hash attributes for {count} alternatives")
    values = []
    for n in range(count):
        text = hashes[f"{{{SHA384_NS}}}Hash{n}"]
        try:
            value = bytes.fromhex(text)
        except ValueError:
            raise RimError(f"{where}: Hash{n} is not hexadecimal") from None
        if len(value) != size:
            raise RimError(f"{where}: Hash{n} is {len(value)} bytes, the entry says {size}")
        values.append(value)
    name = f"{resource.get('name') or 'Measurement'} (RIM index {index})"
    return Golden(index + 1, tuple(values), active == "True", name, source)
