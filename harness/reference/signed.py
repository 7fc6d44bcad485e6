"""Signed reference profiles: a profile's YAML bytes as the payload of a DSSE envelope.

    {"payloadType": "application/vnd.attestlab.reference-profile+yaml",
     "payload": base64(the profile's YAML, byte for byte),
     "signatures": [{"keyid": "<sha256 of the signer's SubjectPublicKeyInfo>", "sig": "<base64>",
                     "x509_chain": "<PEM, leaf first; only for a signer the lab pins by anchor>"}]}

Signed with Ed25519, ECDSA P-256 (SHA-256) or ECDSA P-384 (SHA-384), ECDSA signatures in DER
(harness/formats/dsse.py). A profile is trusted when one signature verifies with a signer of
the lab's trust file (harness/reference/trust.py) that allows its algorithm, is within its
`not_after`, and, for a signer pinned by an X.509 anchor, carries a chain to that anchor valid
now whose leaf is an end entity issued for code signing (not a CA, EKU id-kp-codeSigning): the
anchor's web-server or sub-CA certificates do not sign profiles. Anything else is `UntrustedProfile` with the reason, and every step that uses the profile
is ERROR with it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, ExtensionOID

from harness.formats.dsse import (Envelope, KeyFormatError, PrivateKey, Signature, VerificationError, algorithm_of,
                                  keyid, parse_envelope, sign_envelope, signature_verifies, strict_json)
from harness.formats.x509chain import ChainError, VerifiedChain, load_pem_certificates, verify_chain
from harness.reference.trust import Signer, TrustFile

PAYLOAD_TYPE = "application/vnd.attestlab.reference-profile+yaml"
_MAX_REASONS = 4  # why no signature was trusted: enough to act on, bounded for a hostile envelope


class UntrustedProfile(ValueError):
    """The profile is unsigned, badly signed, expired, or signed by nobody the lab trusts."""


@dataclass(frozen=True)
class SignedBy:
    """Who signed a trusted profile, as the run record names it."""

    signer: str                  # the signer's name in the trust file
    keyid: str
    algorithm: str
    trust: dict[str, Any]        # the trust file: name, path, sha256
    x509: dict[str, str] | None  # leaf subject and anchor subject, for a signer pinned by anchor

    def as_record(self) -> dict[str, Any]:
        record = {"name": self.signer, "keyid": self.keyid, "algorithm": self.algorithm, "trust_file": self.trust}
        if self.x509:
            record["x509"] = self.x509
        return record


def sign_profile(profile: bytes, private_key: PrivateKey, x509_chain_pem: str | None = None) -> dict[str, Any]:
    """The DSSE envelope of `profile` (its YAML bytes), with the signer's chain if given."""
    return sign_envelope(profile, PAYLOAD_TYPE, private_key, {"x509_chain": x509_chain_pem} if x509_chain_pem else None)


def parse_profile_envelope(raw: bytes) -> Envelope:
    """The envelope in a file's bytes, its signatures not yet verified; UntrustedProfile saying
    why it is not a signed profile at all (a plain YAML profile is unsigned)."""
    try:
        document = strict_json(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        hint = " (a plain YAML profile? sign it: attestlab reference sign)" if not raw.lstrip()[:1] == b"{" else ""
        raise UntrustedProfile(f"it is not signed: not a DSSE envelope ({exc}){hint}") from None
    try:
        return parse_envelope(document, PAYLOAD_TYPE)
    except VerificationError as exc:
        raise UntrustedProfile(f"it is not a signed reference profile: {exc}") from None


_EKU_NAMES = {ExtendedKeyUsageOID.SERVER_AUTH: "serverAuth", ExtendedKeyUsageOID.CLIENT_AUTH: "clientAuth",
              ExtendedKeyUsageOID.CODE_SIGNING: "codeSigning", ExtendedKeyUsageOID.EMAIL_PROTECTION: "emailProtection",
              ExtendedKeyUsageOID.TIME_STAMPING: "timeStamping", ExtendedKeyUsageOID.OCSP_SIGNING: "OCSPSigning",
              ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE: "anyExtendedKeyUsage"}


def _extension(cert: x509.Certificate, oid: x509.ObjectIdentifier) -> Any:
    try:
        return cert.extensions.get_extension_for_oid(oid).value
    except x509.ExtensionNotFound:
        return None


def _not_a_profile_signer(chain: VerifiedChain) -> str:
    """Why a chain that leads to the anchor still does not make a profile signer; "" when it does.
    An anchor vouches for every certificate its PKI issues (web servers, sub-CAs, mail): only an
    end entity issued for code signing (EKU id-kp-codeSigning), under sub-CAs not restricted to
    other purposes, speaks for the lab's signer. (verify_chain has read every extension.)"""
    constraints = _extension(chain.leaf, ExtensionOID.BASIC_CONSTRAINTS)
    if constraints is not None and constraints.ca:
        return (f"the chain's leaf {chain.leaf_subject} is a CA certificate (basicConstraints cA): a CA issues "
                f"signers, it does not sign profiles")
    for n, cert in enumerate(chain.path):
        usages = _extension(cert, ExtensionOID.EXTENDED_KEY_USAGE)
        if n == 0 and usages is None:
            usages = ()  # an end entity with no extendedKeyUsage is for any purpose: not issued for this one
        if usages is None or ExtendedKeyUsageOID.CODE_SIGNING in usages or (
                n and ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE in usages):
            continue
        what = f"the chain's leaf {chain.leaf_subject}" if n == 0 else f"certificate {n} {cert.subject.rfc4514_string()}"
        shown = ", ".join(_EKU_NAMES.get(u, u.dotted_string) for u in usages) or "none"
        return (f"{what} is not issued for code signing (extendedKeyUsage {shown}; codeSigning needed): a "
                f"certificate of the anchor's PKI for another purpose does not vouch for profiles")
    return ""


def _by_signer(envelope: Envelope, sig: Signature, signer: Signer, at: datetime) -> tuple[str, str, dict | None]:
    """(keyid, algorithm, x509 names) when `sig` is `signer`'s valid signature at `at`; UntrustedProfile why not."""
    who = f"signer {signer.name!r}"
    key, names = signer.public_key, None
    if signer.anchor is not None:
        chain_pem = sig.extra.get("x509_chain")
        if not isinstance(chain_pem, str):
            raise UntrustedProfile(f"{who} is pinned by an X.509 anchor, and the signature carries no x509_chain")
        try:
            chain = verify_chain(load_pem_certificates(chain_pem, "the signature's x509_chain"), signer.anchor, at=at)
        except ChainError as exc:
            raise UntrustedProfile(f"{who}: the signature's X.509 chain does not lead to its anchor: {exc}") from None
        refused = _not_a_profile_signer(chain)
        if refused:
            raise UntrustedProfile(f"{who}: {refused}")
        leaf_key = chain.leaf.public_key()
        try:
            algorithm_of(leaf_key)
        except KeyFormatError as exc:
            raise UntrustedProfile(f"{who}: the chain's leaf holds {exc}") from None
        if key is not None and keyid(leaf_key) != signer.keyid:
            raise UntrustedProfile(f"{who}: the chain's leaf {chain.leaf_subject} holds another key than the one "
                                   f"the trust file pins")
        key = leaf_key
        names = {"leaf": chain.leaf_subject, "anchor": chain.anchor.subject.rfc4514_string()}
    algorithm = algorithm_of(key)
    if algorithm not in signer.algorithms:
        raise UntrustedProfile(f"{who} may sign with {', '.join(signer.algorithms)}; this signature is {algorithm}")
    if not signature_verifies(key, sig.sig, envelope.message()):
        raise UntrustedProfile(f"the signature by {who} does not verify: the profile was changed after signing, "
                               f"or signed by another key")
    if signer.not_after is not None and at > signer.not_after:
        raise UntrustedProfile(f"{who} is trusted until {signer.not_after.isoformat()}, and it is now "
                               f"{at.isoformat(timespec='seconds')}: expired")
    return keyid(key), algorithm, names


def verify_profile(envelope: Envelope, trust: TrustFile, at: datetime) -> SignedBy:
    """Who of `trust` signed `envelope`, checked at time `at`; UntrustedProfile naming every reason."""
    reasons: list[str] = []
    for signer in trust.signers:
        for sig in envelope.signatures:
            if signer.anchor is None and sig.keyid not in (None, signer.keyid):
                continue  # another key's signature: not this signer's to judge
            if signer.anchor is not None and "x509_chain" not in sig.extra and sig.keyid != signer.keyid:
                continue
            try:
                found, algorithm, names = _by_signer(envelope, sig, signer, at)
            except UntrustedProfile as exc:
                reasons.append(str(exc))
                continue
            return SignedBy(signer.name, found, algorithm, trust.as_record(), names)
    if not reasons:
        ids = ", ".join(f"{s.keyid[:16]}…" if s.keyid else "(no keyid)" for s in envelope.signatures)
        reasons.append(f"signed by {ids}, which the trust file {trust.path} ({trust.name}) does not name")
    reasons = list(dict.fromkeys(reasons))
    more = f"; and {len(reasons) - _MAX_REASONS} more" if len(reasons) > _MAX_REASONS else ""
    raise UntrustedProfile("; ".join(reasons[:_MAX_REASONS]) + more)


def payload_text(envelope: Envelope) -> str:
    try:
        return envelope.payload.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UntrustedProfile(f"its payload is not UTF-8 text (byte {exc.start})") from None


def envelope_json(envelope: dict[str, Any]) -> bytes:
    """An envelope as written to a file: one line per field, the payload as one base64 line."""
    return (json.dumps(envelope, indent=2) + "\n").encode("ascii")


