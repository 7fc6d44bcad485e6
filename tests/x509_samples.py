"""A lab-made certificate hierarchy for the vendor-evidence tests: a root, a CA and a leaf, all
ECDSA P-384, with the extensions each test wants to get wrong. Generated fresh (no keys kept)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

EPOCH = datetime(2024, 1, 1, tzinfo=timezone.utc)


def name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP384R1())


def certificate(subject: str, subject_key, issuer: str, issuer_key, *, ca: bool | None, path_length=None,
                key_usage: str | None, days: int = 3650, extra: list[x509.ExtensionType] = (),
                start: datetime = EPOCH) -> x509.Certificate:
    builder = (x509.CertificateBuilder().subject_name(name(subject)).issuer_name(name(issuer))
               .public_key(subject_key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(start).not_valid_after(start + timedelta(days=days)))
    if ca is not None:
        builder = builder.add_extension(x509.BasicConstraints(ca=ca, path_length=path_length), critical=True)
    if key_usage is not None:
        flags = dict.fromkeys(["digital_signature", "content_commitment", "key_encipherment", "data_encipherment",
                               "key_agreement", "key_cert_sign", "crl_sign", "encipher_only", "decipher_only"], False)
        flags[key_usage] = True
        builder = builder.add_extension(x509.KeyUsage(**flags), critical=True)
    for ext in extra:
        builder = builder.add_extension(ext, critical=False)
    return builder.sign(issuer_key, hashes.SHA384())


def pem(*certs: x509.Certificate) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)


@dataclass
class Hierarchy:
    root: x509.Certificate
    ca: x509.Certificate
    leaf: x509.Certificate
    leaf_key: ec.EllipticCurvePrivateKey

    @property
    def chain_pem(self) -> bytes:   # as a device supplies it: leaf first, its own root last
        return pem(self.leaf, self.ca, self.root)

    @property
    def root_pem(self) -> bytes:
        return pem(self.root)


def hierarchy(prefix: str = "Test Lab", *, leaf_extra: list[x509.ExtensionType] = (), ca_path_length=None,
              leaf_usage: str = "digital_signature", ca_usage: str = "key_cert_sign", ca_is_ca: bool = True,
              leaf_days: int = 3650) -> Hierarchy:
    root_key, ca_key, leaf_key = key(), key(), key()
    root = certificate(f"{prefix} Root", root_key, f"{prefix} Root", root_key, ca=True, key_usage="key_cert_sign")
    ca = certificate(f"{prefix} CA", ca_key, f"{prefix} Root", root_key, ca=ca_is_ca, path_length=ca_path_length,
                     key_usage=ca_usage)
    leaf = certificate(f"{prefix} Leaf", leaf_key, f"{prefix} CA", ca_key, ca=False, key_usage=leaf_usage,
                       extra=leaf_extra, days=leaf_days)
    return Hierarchy(root, ca, leaf, leaf_key)
