"""DSSE (Dead Simple Signing Envelope) v1 with Ed25519.

Spec: https://github.com/secure-systems-lab/dsse/blob/master/protocol.md — the signature
is over PAE(payloadType, payload) = "DSSEv1" SP LEN(type) SP type SP LEN(body) SP body,
lengths as ASCII decimal. The envelope is JSON: payload (base64), payloadType, signatures
[{keyid, sig (base64)}]. Any DSSE verifier given the public key can check it.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from harness.results.keys import keyid

INTOTO_PAYLOAD_TYPE = "application/vnd.in-toto+json"


class VerificationError(ValueError):
    """The envelope, its signature, or what it covers does not verify. The message says which."""


def pae(payload_type: str, payload: bytes) -> bytes:
    type_bytes = payload_type.encode("utf-8")
    return b"DSSEv1 %d %s %d %s" % (len(type_bytes), type_bytes, len(payload), payload)


def sign_envelope(payload: bytes, payload_type: str, private_key: Ed25519PrivateKey) -> dict[str, Any]:
    signature = private_key.sign(pae(payload_type, payload))
    return {
        "payload": base64.b64encode(payload).decode("ascii"),
        "payloadType": payload_type,
        "signatures": [{"keyid": keyid(private_key.public_key()),
                        "sig": base64.b64encode(signature).decode("ascii")}],
    }


def _b64(text: Any, what: str) -> bytes:
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


def verify_envelope(envelope: Any, public_key: Ed25519PublicKey,
                    payload_type: str = INTOTO_PAYLOAD_TYPE) -> bytes:
    """Return the payload if a signature by `public_key` verifies; else VerificationError."""
    if not isinstance(envelope, dict):
        raise VerificationError("envelope is not a JSON object")
    if envelope.get("payloadType") != payload_type:
        raise VerificationError(f"envelope payloadType is {envelope.get('payloadType')!r}, "
                                f"expected {payload_type!r}")
    payload = _b64(envelope.get("payload"), "payload")
    signatures = envelope.get("signatures")
    if not isinstance(signatures, list) or not signatures:
        raise VerificationError("envelope has no signatures")
    wanted = keyid(public_key)
    message = pae(payload_type, payload)
    tried = 0
    for entry in signatures:
        if not isinstance(entry, dict):
            continue
        if entry.get("keyid") not in (None, "", wanted):
            continue
        tried += 1
        try:
            public_key.verify(_b64(entry.get("sig"), "signature"), message)
            return payload
        except InvalidSignature:
            continue
    if not tried:
        raise VerificationError(f"no signature by key {wanted[:16]}… (the envelope is signed by "
                                f"{', '.join(str(s.get('keyid'))[:16] for s in signatures if isinstance(s, dict))})")
    raise VerificationError("signature does not verify: the envelope was changed after signing, "
                            "or signed by another key")
