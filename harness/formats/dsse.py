"""DSSE (Dead Simple Signing Envelope) v1: the one signing core of attestlab. Pure, no I/O.

Spec: https://github.com/secure-systems-lab/dsse/blob/master/protocol.md — the signature is over
PAE(payloadType, payload) = "DSSEv1" SP LEN(type) SP type SP LEN(body) SP body, lengths as ASCII
decimal. The envelope is JSON: payload (base64), payloadType, signatures [{keyid, sig (base64)}].
Any DSSE verifier given the public key can check it.

Two kinds of document use it: signed results (Ed25519, harness/results/) and signed reference
profiles (harness/reference/), which may also be signed with ECDSA. Three algorithms, named by
the key that signs:

  ed25519            Ed25519 (RFC 8032), the 64-byte signature
  ecdsa-p256-sha256  ECDSA on P-256 over SHA-256 of PAE
  ecdsa-p384-sha384  ECDSA on P-384 over SHA-384 of PAE

An ECDSA signature is the ASN.1 DER `Ecdsa-Sig-Value` SEQUENCE {r, s}, as OpenSSL, sigstore and
securesystemslib write it (not the raw r||s of JOSE); OpenSSL refuses any other encoding.

The key id is the SHA-256 of the public key's DER SubjectPublicKeyInfo, in hex: any verifier can
recompute it from the public key alone. It is an unauthenticated hint: a signature is accepted
only because it verifies with a key the verifier already holds.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from dataclasses import dataclass
from typing import Any, Union

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

INTOTO_PAYLOAD_TYPE = "application/vnd.in-toto+json"

ED25519, ECDSA_P256, ECDSA_P384 = "ed25519", "ecdsa-p256-sha256", "ecdsa-p384-sha384"
ALGORITHMS = (ED25519, ECDSA_P256, ECDSA_P384)
_CURVES = {"secp256r1": (ECDSA_P256, hashes.SHA256), "secp384r1": (ECDSA_P384, hashes.SHA384)}

MAX_SIGNATURES = 16      # an envelope with more is not one anybody signed; bounds the work it causes
MAX_ENVELOPE_DEPTH = 64  # JSON nesting a DSSE envelope never needs

PublicKey = Union[Ed25519PublicKey, ec.EllipticCurvePublicKey]
PrivateKey = Union[Ed25519PrivateKey, ec.EllipticCurvePrivateKey]


class VerificationError(ValueError):
    """The envelope, its signature, or what it covers does not verify. The message says which."""


class KeyFormatError(ValueError):
    """Bytes that are not a PEM key of a kind attestlab signs or verifies with."""


def pae(payload_type: str, payload: bytes) -> bytes:
    type_bytes = payload_type.encode("utf-8")
    return b"DSSEv1 %d %s %d %s" % (len(type_bytes), type_bytes, len(payload), payload)


# keyid by key object: verifying an archive asks it three times per entry of one key. The cache
# holds the key itself, so an id() is never reused for another key while it is cached.
_KEYIDS: dict[int, tuple[PublicKey, str]] = {}


def keyid(public_key: PublicKey) -> str:
    cached = _KEYIDS.get(id(public_key))
    if cached is not None and cached[0] is public_key:
        return cached[1]
    der = public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    value = hashlib.sha256(der).hexdigest()
    if len(_KEYIDS) < 64:
        _KEYIDS[id(public_key)] = (public_key, value)
    return value


def algorithm_of(key: PublicKey | PrivateKey) -> str:
    """The algorithm a key signs with; KeyFormatError for a key of another kind (RSA, P-521, Ed448)."""
    if isinstance(key, (Ed25519PublicKey, Ed25519PrivateKey)):
        return ED25519
    if isinstance(key, (ec.EllipticCurvePublicKey, ec.EllipticCurvePrivateKey)) and key.curve.name in _CURVES:
        return _CURVES[key.curve.name][0]
    curve = getattr(getattr(key, "curve", None), "name", None)
    raise KeyFormatError(f"a {type(key).__name__.lstrip('_')}{f' on {curve}' if curve else ''} key: attestlab "
                         f"signs with {', '.join(ALGORITHMS)} only")


def _key_from_pem(load, data: bytes, what: str, kind: str):
    try:
        key = load(bytes(data))
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise KeyFormatError(f"{what}: not {kind} ({exc})") from None
    try:
        algorithm_of(key)
    except KeyFormatError as exc:
        raise KeyFormatError(f"{what}: {exc}") from None
    return key


def public_key_from_pem(data: bytes, what: str) -> PublicKey:
    return _key_from_pem(serialization.load_pem_public_key, data, what, "a PEM public key")


def private_key_from_pem(data: bytes, what: str) -> PrivateKey:
    return _key_from_pem(lambda pem: serialization.load_pem_private_key(pem, password=None), data, what,
                         "an unencrypted PEM private key")


def sign(private_key: PrivateKey, message: bytes) -> bytes:
    if isinstance(private_key, Ed25519PrivateKey):
        return private_key.sign(message)
    algorithm_of(private_key)  # KeyFormatError for a curve attestlab does not sign with
    return private_key.sign(message, ec.ECDSA(_CURVES[private_key.curve.name][1]()))


def signature_verifies(public_key: PublicKey, signature: bytes, message: bytes) -> bool:
    try:
        if isinstance(public_key, Ed25519PublicKey):
            public_key.verify(signature, message)
        else:
            algorithm_of(public_key)
            public_key.verify(signature, message, ec.ECDSA(_CURVES[public_key.curve.name][1]()))
    except (InvalidSignature, ValueError):
        return False
    return True


def sign_envelope(payload: bytes, payload_type: str, private_key: PrivateKey,
                  extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """One signature by `private_key`; `extra` adds unsigned fields to it (an X.509 chain)."""
    signature = sign(private_key, pae(payload_type, payload))
    return {
        "payload": base64.b64encode(payload).decode("ascii"),
        "payloadType": payload_type,
        "signatures": [{"keyid": keyid(private_key.public_key()),
                        "sig": base64.b64encode(signature).decode("ascii"), **(extra or {})}],
    }


def b64_canonical(text: Any, what: str) -> bytes:
    """Decode base64 written exactly as an encoder writes it, in the standard or the URL-safe
    alphabet (DSSE allows either), padded. Any other spelling of the same bytes — missing or
    extra padding, set trailing bits, whitespace, mixed alphabets — is refused: one value, one
    text, so no two verifiers can read an envelope differently."""
    if isinstance(text, str) and text.isascii():
        for encode, altchars in ((base64.b64encode, None), (base64.urlsafe_b64encode, b"-_")):
            try:
                data = base64.b64decode(text.encode("ascii"), altchars=altchars, validate=True)
            except (binascii.Error, ValueError):
                continue
            if encode(data).decode("ascii") == text:
                return data
    raise VerificationError(f"envelope {what} is not canonical base64 (the standard or URL-safe "
                            f"alphabet, padded, nothing else)")


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """JSON objects with a key twice are refused: two readers could see two different values."""
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"duplicate key {key!r}")
        out[key] = value
    return out


def strict_json(data: bytes) -> Any:
    """JSON as signed documents are read: UTF-8, no key twice in an object. ValueError if not."""
    try:
        return json.loads(data, object_pairs_hook=_unique_keys)
    except RecursionError:
        raise ValueError("nested too deeply") from None


@dataclass(frozen=True)
class Signature:
    keyid: str | None            # the signer's hint; None when absent or empty
    sig: bytes
    extra: dict[str, Any]        # unsigned fields beside keyid and sig (e.g. x509_chain)


@dataclass(frozen=True)
class Envelope:
    payload_type: str
    payload: bytes
    signatures: tuple[Signature, ...]

    def message(self) -> bytes:
        """What every signature signs: PAE(payloadType, payload)."""
        return pae(self.payload_type, self.payload)


def parse_envelope(envelope: Any, payload_type: str) -> Envelope:
    """An envelope (parsed JSON) checked for shape and canonical encoding, signatures unverified.
    VerificationError naming the field when it is not a DSSE envelope of `payload_type`."""
    if not isinstance(envelope, dict):
        raise VerificationError("envelope is not a JSON object")
    if envelope.get("payloadType") != payload_type:
        shown = envelope.get("payloadType")
        raise VerificationError(f"envelope payloadType is {shown if not isinstance(shown, str) else shown[:120]!r}, "
                                f"expected {payload_type!r}")
    payload = b64_canonical(envelope.get("payload"), "payload")
    entries = envelope.get("signatures")
    if not isinstance(entries, list) or not entries:
        raise VerificationError("envelope has no signatures")
    if len(entries) > MAX_SIGNATURES:
        raise VerificationError(f"envelope has {len(entries)} signatures, more than the {MAX_SIGNATURES} accepted")
    signatures = []
    for n, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise VerificationError(f"envelope signatures[{n}] is not a JSON object")
        hint = entry.get("keyid")
        if hint is not None and not isinstance(hint, str):
            raise VerificationError(f"envelope signatures[{n}].keyid is not a string")
        sig = b64_canonical(entry.get("sig"), "signature")
        extra = {k: v for k, v in entry.items() if k not in ("keyid", "sig")}
        signatures.append(Signature(hint or None, sig, extra))
    return Envelope(payload_type, payload, tuple(signatures))


def verify_envelope(envelope: Any, public_key: PublicKey, payload_type: str = INTOTO_PAYLOAD_TYPE) -> bytes:
    """Return the payload if a signature by `public_key` verifies; else VerificationError."""
    parsed = parse_envelope(envelope, payload_type)
    wanted = keyid(public_key)
    message = parsed.message()
    tried = [s for s in parsed.signatures if s.keyid in (None, wanted)]
    if not tried:
        raise VerificationError(f"no signature by key {wanted[:16]}… (the envelope is signed by "
                                f"{', '.join(str(s.keyid)[:16] for s in parsed.signatures)})")
    if any(signature_verifies(public_key, s.sig, message) for s in tried):
        return parsed.payload
    raise VerificationError("signature does not verify: the envelope was changed after signing, "
                            "or signed by another key")
