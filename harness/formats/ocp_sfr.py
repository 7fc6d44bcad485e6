"""OCP S.A.F.E. short-form reports (SFR): a third party's signed review of a firmware release.

An OCP Security Appraisal Framework and Enablement (S.A.F.E.) review provider audits a vendor's
firmware and publishes a short-form report: JSON naming the device, the firmware version and its
digests (``fw_hash_sha2_384``, ``fw_hash_sha2_512``), the provider, the method and the issues
found, signed as a JWS in compact serialization (RFC 7515) with ES512 (ECDSA P-521, SHA-512; the
signature is r‖s, 66 bytes each, RFC 7518 §3.4). The review provider's public key is the trust
anchor; the lab obtains it out of band and pins it.

`verify_sfr` checks, and raises `SfrError` naming the first failure:

- three base64url parts, each in canonical unpadded form (one signed text, one reading);
- a protected header that is a JSON object with ``alg`` exactly ES512 (``none``, HS*, RS* and
  everything else refused: the algorithm is the verifier's choice, never the token's), no
  ``crit`` extension it would have to understand, and the ``kid`` asked for when one is given;
- the signature verifies over ``header.payload`` with the pinned P-521 key;
- only then the payload: a JSON object (duplicate keys refused: two readers must not see two
  different documents) with ``device.fw_version`` and a well-formed ``fw_hash_sha2_384``.

What it proves: this review provider signed these reference values for this firmware version.
It does not prove the firmware on a board is that firmware: compare the digest with what the
board's evidence measures (the SFR digest is over the release image, not an SPDM block).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from harness.formats.golden import ReferenceSource

ALGORITHM = "ES512"
COORDINATE = 66          # P-521 coordinates are 66 bytes
MAX_JWS = 256 * 1024
_B64URL = re.compile(r"^[A-Za-z0-9_-]*$")
_HEX = re.compile(r"^[0-9a-fA-F]*$")


class SfrError(ValueError):
    """A short-form report that is malformed, badly signed or signed by another key."""


@dataclass(frozen=True)
class ShortFormReport:
    kid: str | None
    vendor: str
    product: str
    fw_version: str
    fw_hash_sha2_384: bytes
    fw_hash_sha2_512: bytes | None
    provider: str            # audit.srp: the security review provider
    completion_date: str
    issues: tuple[Any, ...]
    issued_at: int | None    # the JWT "iat" claim: when the provider signed (seconds since 1970)
    document: dict           # the whole signed payload

    @property
    def source(self) -> ReferenceSource:
        return ReferenceSource("OCP S.A.F.E. SFR", f"{self.vendor} {self.product}", self.fw_version,
                               f"{self.provider} (kid {self.kid})")


def _b64url(part: str, what: str) -> bytes:
    if not _B64URL.match(part) or len(part) % 4 == 1:
        raise SfrError(f"JWS {what}: not unpadded base64url")
    data = base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))
    if base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii") != part:
        raise SfrError(f"JWS {what}: non-canonical base64url (stray bits in the last character)")
    return data


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict:
    keys = [k for k, _ in pairs]
    repeated = sorted({k for k in keys if keys.count(k) > 1})
    if repeated:
        raise SfrError(f"JSON: key {repeated[0]!r} appears more than once")
    return dict(pairs)


def _not_json(constant: str) -> None:
    raise SfrError(f"JSON: {constant} is not JSON (Python's json module would accept it)")


def _json_object(data: bytes, what: str) -> dict:
    try:
        value = json.loads(data.decode("utf-8"), object_pairs_hook=_no_duplicates, parse_constant=_not_json)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise SfrError(f"{what}: not JSON ({e})") from None
    if not isinstance(value, dict):
        raise SfrError(f"{what}: a JSON {type(value).__name__}, not an object")
    return value


def load_provider_key(pem: bytes | str) -> ec.EllipticCurvePublicKey:
    """The review provider's public key (PEM SubjectPublicKeyInfo), which must be ECDSA P-521."""
    if isinstance(pem, str):
        pem = pem.encode("ascii", "replace")
    try:
        key = serialization.load_pem_public_key(pem)
    except (ValueError, TypeError) as e:
        raise SfrError(f"provider key: not a PEM public key ({e})") from None
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP521R1):
        raise SfrError("provider key: not an ECDSA P-521 key, which ES512 requires")
    return key


def verify_sfr(jws: bytes | str, provider_key_pem: bytes | str, *, kid: str | None = None) -> ShortFormReport:
    """The short-form report, verified (module docstring); SfrError names what failed."""
    if isinstance(jws, (bytes, bytearray)):
        try:
            jws = bytes(jws).decode("ascii")
        except UnicodeDecodeError:
            raise SfrError("JWS: not ASCII text") from None
    if not isinstance(jws, str):
        raise SfrError(f"JWS must be text, got {type(jws).__name__}")
    if len(jws) > MAX_JWS:
        raise SfrError(f"JWS is {len(jws)} characters, more than the {MAX_JWS} accepted")
    if not jws.isascii():
        raise SfrError("JWS: not ASCII text")
    parts = jws.strip().split(".")
    if len(parts) != 3:
        raise SfrError(f"JWS: {len(parts)} dot-separated parts, compact serialization has 3")
    raw_header, payload, signature = (_b64url(p, what) for p, what in zip(parts, ("header", "payload", "signature")))
    header = _json_object(raw_header, "JWS header")
    alg = header.get("alg")
    if alg != ALGORITHM:
        raise SfrError(f"JWS header: alg {alg!r} refused, only {ALGORITHM} is accepted")
    if "crit" in header:
        raise SfrError(f"JWS header: critical extensions {header['crit']!r} are not understood")
    if kid is not None and header.get("kid") != kid:
        raise SfrError(f"JWS header: kid {header.get('kid')!r}, expected {kid!r}")
    key = load_provider_key(provider_key_pem)
    if len(signature) != 2 * COORDINATE:
        raise SfrError(f"JWS signature: {len(signature)} bytes, ES512 signatures are {2 * COORDINATE}")
    r = int.from_bytes(signature[:COORDINATE], "big")
    s = int.from_bytes(signature[COORDINATE:], "big")
    try:
        key.verify(encode_dss_signature(r, s), f"{parts[0]}.{parts[1]}".encode("ascii"), ec.ECDSA(hashes.SHA512()))
    except InvalidSignature:
        raise SfrError("JWS signature: does not verify with the provider's key (altered, or signed "
                       "by another key)") from None
    return _report(_json_object(payload, "SFR payload"), header.get("kid"))  # read only once authenticated


def _text(node: dict, key: str, where: str, *, required: bool = True) -> str:
    value = node.get(key)
    if value is None and not required:
        return ""
    if not isinstance(value, str) or (required and not value.strip()):
        raise SfrError(f"SFR: {where}.{key} is missing or not text")
    return value


def _digest(node: dict, key: str, size: int) -> bytes | None:
    text = _text(node, key, "device", required=False)
    if not text:
        return None
    if len(text) != 2 * size or not _HEX.match(text):
        raise SfrError(f"SFR: device.{key} is not {size} bytes of hex")
    return binascii.unhexlify(text)


def _report(doc: dict, kid: str | None) -> ShortFormReport:
    device, audit = doc.get("device"), doc.get("audit")
    if not isinstance(device, dict) or not isinstance(audit, dict):
        raise SfrError("SFR: the payload needs objects 'device' and 'audit'")
    sha384 = _digest(device, "fw_hash_sha2_384", 48)
    if sha384 is None:
        raise SfrError("SFR: device.fw_hash_sha2_384 is missing: the report gives no reference digest")
    iat = doc.get("iat")
    if iat is not None and (not isinstance(iat, int) or isinstance(iat, bool) or iat < 0):
        raise SfrError(f"SFR: iat {iat!r} is not a time in seconds")
    issues = audit.get("issues", [])
    if not isinstance(issues, list):
        raise SfrError("SFR: audit.issues is not a list")
    return ShortFormReport(kid=kid, vendor=_text(device, "vendor", "device"), product=_text(device, "product", "device"),
                           fw_version=_text(device, "fw_version", "device"), fw_hash_sha2_384=sha384,
                           fw_hash_sha2_512=_digest(device, "fw_hash_sha2_512", 64),
                           provider=_text(audit, "srp", "audit"),
                           completion_date=_text(audit, "completion_date", "audit", required=False),
                           issues=tuple(issues), issued_at=iat, document=doc)
