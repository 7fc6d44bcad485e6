"""X.509 certificate chains verified up to a pinned trust anchor, at a given time. Pure, no I/O.

Vendor evidence (a GPU's attestation report, a RIM's XML signature) arrives with the chain of the
key that signed it. The chain itself proves nothing: whoever forged the evidence can forge a chain
too. What proves something is that the chain ends in a root the lab pinned beforehand. So:

- the chain is given leaf first, as the device or document supplies it;
- a self-signed certificate at its end is the supplier's copy of its root: it is dropped and the
  pinned anchor takes its place (NVIDIA's verifier does the same), so a supplied root never
  vouches for anything, however it is made;
- every certificate is issued by the next (names match and the signature verifies with the next
  one's key), the last by the anchor;
- every certificate, the anchor included, is valid at `at`, a time the caller passes in (never
  "now" read here: a verdict must be reproducible, and old evidence is judged at its own time);
- the leaf may sign (keyUsage digitalSignature); every issuer is a CA (basicConstraints cA, with
  its pathLenConstraint respected) that may sign certificates (keyUsage keyCertSign);
- a certificate carrying a critical extension this module does not understand is refused.

Revocation (CRL/OCSP) is not checked: it needs the network, and this project verifies offline.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.x509.oid import ExtensionOID

MAX_CHAIN = 8             # longer than any real vendor chain; bounds the work a hostile chain causes
MAX_PEM = 64 * 1024

# Critical extensions whose meaning is checked (or harmless to a chain check) here.
_UNDERSTOOD = {ExtensionOID.BASIC_CONSTRAINTS, ExtensionOID.KEY_USAGE, ExtensionOID.SUBJECT_KEY_IDENTIFIER,
               ExtensionOID.AUTHORITY_KEY_IDENTIFIER, ExtensionOID.EXTENDED_KEY_USAGE,
               ExtensionOID.SUBJECT_ALTERNATIVE_NAME}


class ChainError(ValueError):
    """A certificate chain that does not lead to the pinned anchor; the message says which link."""


@dataclass(frozen=True)
class VerifiedChain:
    leaf: x509.Certificate
    path: tuple[x509.Certificate, ...]   # leaf … last issuer below the anchor (supplied root dropped)
    anchor: x509.Certificate

    @property
    def leaf_subject(self) -> str:
        return self.leaf.subject.rfc4514_string()


def load_pem_certificates(pem: bytes | str, what: str = "certificate chain") -> list[x509.Certificate]:
    """Every certificate of a PEM text, in order; ChainError when there is none or one is bad."""
    if isinstance(pem, str):
        pem = pem.encode("ascii", "replace")
    if not isinstance(pem, (bytes, bytearray)):
        raise ChainError(f"{what}: PEM must be bytes or text, got {type(pem).__name__}")
    if len(pem) > MAX_PEM:
        raise ChainError(f"{what}: {len(pem)} bytes of PEM, more than the {MAX_PEM} accepted")
    try:
        certs = x509.load_pem_x509_certificates(bytes(pem))
    except ValueError as e:
        raise ChainError(f"{what}: not a PEM certificate list ({e})") from None
    if len(certs) > MAX_CHAIN:
        raise ChainError(f"{what}: {len(certs)} certificates, more than the {MAX_CHAIN} accepted")
    return certs


def load_pem_anchor(pem: bytes | str, what: str = "trust anchor") -> x509.Certificate:
    certs = load_pem_certificates(pem, what)
    if len(certs) != 1:
        raise ChainError(f"{what}: expected exactly one certificate, found {len(certs)}")
    return certs[0]


def _name(cert: x509.Certificate) -> str:
    return cert.subject.rfc4514_string() or "(empty subject)"


def _self_signed(cert: x509.Certificate) -> bool:
    if cert.issuer != cert.subject:
        return False
    try:
        cert.verify_directly_issued_by(cert)
    except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
        return False
    return True


def _extension(cert: x509.Certificate, oid: x509.ObjectIdentifier):
    try:
        return cert.extensions.get_extension_for_oid(oid).value
    except x509.ExtensionNotFound:
        return None
    except ValueError as e:  # a duplicated or malformed extension
        raise ChainError(f"{_name(cert)}: unreadable extensions ({e})") from None


def _check_time(cert: x509.Certificate, at: datetime, role: str) -> None:
    if not cert.not_valid_before_utc <= at <= cert.not_valid_after_utc:
        raise ChainError(f"{role} {_name(cert)} is not valid at {at.isoformat()} (valid "
                         f"{cert.not_valid_before_utc.isoformat()} to {cert.not_valid_after_utc.isoformat()})")


def _check_critical(cert: x509.Certificate, role: str) -> None:
    try:
        extensions = list(cert.extensions)
    except ValueError as e:
        raise ChainError(f"{role} {_name(cert)}: unreadable extensions ({e})") from None
    for ext in extensions:
        if ext.critical and ext.oid not in _UNDERSTOOD:
            raise ChainError(f"{role} {_name(cert)} carries critical extension {ext.oid.dotted_string}, "
                             f"which this verifier does not understand")


def _check_issuer(cert: x509.Certificate, below: int, role: str) -> None:
    """`cert` may issue certificates, with `below` CA certificates under it on this path."""
    bc = _extension(cert, ExtensionOID.BASIC_CONSTRAINTS)
    if bc is None or not bc.ca:
        raise ChainError(f"{role} {_name(cert)} issues a certificate but is not a CA (basicConstraints cA)")
    if bc.path_length is not None and below > bc.path_length:
        raise ChainError(f"{role} {_name(cert)} allows {bc.path_length} CA certificates below it, "
                         f"the chain has {below}")
    ku = _extension(cert, ExtensionOID.KEY_USAGE)
    if ku is None or not ku.key_cert_sign:
        raise ChainError(f"{role} {_name(cert)} issues a certificate but its keyUsage lacks keyCertSign")


def verify_chain(chain: list[x509.Certificate], anchor: x509.Certificate, *, at: datetime) -> VerifiedChain:
    """Check `chain` (leaf first) up to `anchor` at time `at` (timezone-aware); ChainError if not."""
    if at.tzinfo is None:
        raise ChainError("the verification time must be timezone-aware")
    if not chain:
        raise ChainError("the certificate chain is empty")
    if len(chain) > MAX_CHAIN:
        raise ChainError(f"{len(chain)} certificates, more than the {MAX_CHAIN} accepted")
    path = list(chain)
    if len(path) > 1 and _self_signed(path[-1]):
        path.pop()  # the supplier's own root: the pinned anchor stands in its place
    if len(path) == 1 and _self_signed(path[0]) and path[0] != anchor:
        raise ChainError(f"the leaf {_name(path[0])} is self-signed and is not the pinned anchor")
    _check_time(anchor, at, "the anchor")
    issuers = path[1:] + [anchor]
    for n, (cert, issuer) in enumerate(zip(path, issuers)):
        role = "the leaf" if n == 0 else f"certificate {n}"
        issuer_role = "the anchor" if issuer is anchor else f"certificate {n + 1}"
        _check_time(cert, at, role)
        _check_critical(cert, role)
        try:
            cert.verify_directly_issued_by(issuer)
        except ValueError:
            raise ChainError(f"{role} {_name(cert)} names issuer {cert.issuer.rfc4514_string()}, but "
                             f"{issuer_role} is {_name(issuer)}") from None
        except InvalidSignature:
            raise ChainError(f"{role} {_name(cert)}: its signature does not verify with the key of "
                             f"{issuer_role} {_name(issuer)}") from None
        except (TypeError, UnsupportedAlgorithm) as e:
            raise ChainError(f"{role} {_name(cert)}: signature cannot be checked ({e})") from None
        _check_issuer(issuer, n, issuer_role)  # CA certificates below `issuer`: path[1..n]
    ku = _extension(path[0], ExtensionOID.KEY_USAGE)
    if ku is None or not ku.digital_signature:
        raise ChainError(f"the leaf {_name(path[0])} may not sign (keyUsage lacks digitalSignature)")
    return VerifiedChain(path[0], tuple(path), anchor)
