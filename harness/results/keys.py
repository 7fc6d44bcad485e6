"""Lab signing keys: Ed25519, PEM (PKCS#8 private, SubjectPublicKeyInfo public).

The key id (`keyid`, harness/formats/dsse.py) is the SHA-256 of the public key's DER
SubjectPublicKeyInfo, in hex: any verifier can recompute it from the public key alone.
"""

from __future__ import annotations

import os
import shlex
import stat
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from harness.files import read_capped
from harness.formats.dsse import KeyFormatError, PrivateKey, keyid, private_key_from_pem, public_key_from_pem

_MAX_KEY_BYTES = 64 * 1024  # a PEM key is a few hundred bytes


class KeyError_(ValueError):
    """A key file is missing, unreadable, or not an Ed25519 key."""


def public_pem(public_key: Ed25519PublicKey) -> bytes:
    return public_key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def generate_keypair(prefix: str | Path, overwrite: bool = False) -> tuple[Path, Path]:
    """Write PREFIX.key (mode 0600) and PREFIX.pub; refuse to overwrite unless asked."""
    prefix = Path(prefix)
    private_path, public_path = prefix.with_name(prefix.name + ".key"), prefix.with_name(prefix.name + ".pub")
    for path in (private_path, public_path):
        if path.exists() and not overwrite:
            raise KeyError_(f"{path} exists; not overwriting a key (remove it or choose another --out)")
    private_key = Ed25519PrivateKey.generate()
    pem = private_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())
    private_path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    public_path.write_bytes(public_pem(private_key.public_key()))
    return private_path, public_path


def _read(path: str | Path, what: str) -> bytes:
    try:
        return read_capped(path, _MAX_KEY_BYTES)
    except OSError as exc:
        raise KeyError_(f"{path}: cannot read {what}: {exc.strerror or exc}") from None


def _check_private(path: str | Path) -> None:
    """A private key others can read is refused, as ssh refuses one: whoever read it can sign
    results in the lab's name."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return  # _read says why it cannot be read
    if stat.S_ISREG(mode) and mode & 0o077:
        raise KeyError_(f"permissions {stat.S_IMODE(mode):04o} for '{path}' are too open: a private key must "
                        f"not be accessible by others; run: chmod 600 {shlex.quote(str(path))}")


def load_private_key(path: str | Path, kinds: tuple[type, ...] = (Ed25519PrivateKey,)) -> PrivateKey:
    """The private key in `path`, refused when others can read it or it is not one of `kinds`
    (results are signed with Ed25519; reference profiles may also be signed with ECDSA)."""
    _check_private(path)
    data = _read(path, "private key")
    try:
        key = private_key_from_pem(data, str(path))
    except KeyFormatError as exc:
        raise KeyError_(str(exc)) from None
    if not isinstance(key, kinds):
        raise KeyError_(f"{path}: a {type(key).__name__.lstrip('_')}; attestlab signs results with Ed25519 keys "
                        f"('attestlab keys generate' makes one)")
    return key


def load_public_key(path: str | Path) -> Ed25519PublicKey:
    data = _read(path, "public key")
    try:
        key = public_key_from_pem(data, str(path))
    except KeyFormatError as exc:
        raise KeyError_(str(exc)) from None
    if not isinstance(key, Ed25519PublicKey):
        raise KeyError_(f"{path}: a {type(key).__name__.lstrip('_')}, not an Ed25519 public key")
    return key
