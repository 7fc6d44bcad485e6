"""The lab's trust file: the signers of reference profiles the lab trusts, in one place.

    trust:
      name: acme-lab                      # recorded with every run that used it
      description: who keeps this file, and why these signers
    signers:
      - name: acme-firmware-review        # recorded as the signer of each profile it signed
        public_key: |                     # PEM inline, or public_key_file: (relative to this file)
          -----BEGIN PUBLIC KEY-----
          ...
        algorithms: [ecdsa-p256-sha256]   # what this signer may sign with (ed25519,
                                          # ecdsa-p256-sha256, ecdsa-p384-sha384)
        x509_anchor_file: acme-root.pem   # optional: the signature must also carry a chain to it
        not_after: 2027-06-30T00:00:00Z   # optional: trusted until then, not after

A signer names a public key, an X.509 trust anchor, or both. With a key alone, a signature by
that key is trusted. With an anchor, the signature's `x509_chain` (leaf first) must lead to the
anchor, valid now, the leaf allowed to sign; with both, the leaf must also hold that key.

Which file (docs/firmware-integrity.md, "Signed reference profiles"): `--trust FILE` (the pytest
option `--attestlab-trust`), else `$ATTESTLAB_TRUST`, else `~/.config/attestlab/trust.yaml`,
else `/etc/attestlab/trust.yaml`. Without one no profile is trusted: every step that uses the
reference is ERROR. The committed test trust file is never found by default.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any

from cryptography import x509

from harness.files import read_capped
from harness.formats.dsse import ALGORITHMS, KeyFormatError, PublicKey, algorithm_of, keyid, public_key_from_pem
from harness.formats.x509chain import ChainError, load_pem_anchor
from harness.yamlio import Section, YamlError, load_yaml_text

TRUST_ENV = "ATTESTLAB_TRUST"
DEFAULT_LOCATIONS = (Path("~/.config/attestlab/trust.yaml"), Path("/etc/attestlab/trust.yaml"))
MAX_TRUST_BYTES = 1024 * 1024
MAX_SIGNERS = 256
_PEM_BYTES = 64 * 1024
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@:-]{0,127}$")


class TrustError(YamlError):
    """A trust file that cannot be read or has the wrong shape: `file:line: field: why`."""


@dataclass(frozen=True)
class Signer:
    name: str
    public_key: PublicKey | None
    keyid: str | None                      # of public_key
    anchor: x509.Certificate | None
    algorithms: tuple[str, ...]
    not_after: datetime | None


@dataclass(frozen=True)
class TrustFile:
    name: str
    path: str
    sha256: str
    signers: tuple[Signer, ...]

    def as_record(self) -> dict[str, Any]:
        return {"name": self.name, "path": self.path, "sha256": self.sha256}


def no_trust_file_reason() -> str:
    where = ", ".join(str(p) for p in DEFAULT_LOCATIONS)
    return (f"no trust file names the signers this lab trusts: give `attestlab run --trust FILE`, set "
            f"${TRUST_ENV}, or create one of {where} (docs/firmware-integrity.md)")


def find_trust_file(explicit: str | Path | None = None) -> Path | None:
    """The trust file to use: `explicit`, else $ATTESTLAB_TRUST, else the first default location
    that exists; None when there is none. A file named explicitly or by the variable must exist
    (TrustError): a typo there must not quietly mean "trust nothing" or "trust another file"."""
    for named, what in ((explicit, "--trust"), (os.environ.get(TRUST_ENV) or None, f"${TRUST_ENV}")):
        if named:
            path = Path(named).expanduser()
            if not path.is_file():
                raise TrustError(f"{what} {named}: {'no such file' if not path.exists() else 'not a regular file'}")
            return path
    for candidate in DEFAULT_LOCATIONS:
        path = candidate.expanduser()
        if path.is_file():
            return path
    return None


def _pem(section: Section, key: str, base: Path) -> tuple[bytes | None, str]:
    """The PEM given inline as `key` or in a file as `key_file`, and where it came from."""
    inline, named = section.has(key), section.has(f"{key}_file")
    if inline and named:
        raise section.error(f"{key}_file", f"give {key} or {key}_file, not both")
    if inline:
        return section.text(key).encode("ascii", "replace"), f"{section.source}: {section.path}.{key}"
    if named:
        path = base / section.text(f"{key}_file")
        try:
            return read_capped(path, _PEM_BYTES), str(path)
        except OSError as exc:
            raise section.error(f"{key}_file", f"{path}: cannot read: {exc.strerror or exc}") from None
    return None, ""


def zoned_time(section: Section, key: str) -> datetime | None:
    """`key` as a time with its zone, in UTC; None when absent. A date alone or a time without a
    zone is refused: "until 2027-06-30" would mean another instant in every lab."""
    value = section.raw(key)
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise section.error(key, f"{value!r} is not an ISO 8601 time (e.g. 2027-06-30T00:00:00Z)") from None
    if not isinstance(value, datetime) or isinstance(value, bool):
        kind = "a date without a time" if isinstance(value, date) else type(value).__name__
        raise section.error(key, f"{kind}: give a time with its zone, e.g. 2027-06-30T00:00:00Z")
    if value.tzinfo is None:
        raise section.error(key, "a time without a zone: end it with Z or +HH:MM")
    return value.astimezone(timezone.utc)


def _signer(item: Any, source: str, path: str, line: int, base: Path) -> Signer:
    section = Section(item, source, path, line)
    section.reject_unknown({"name", "description", "public_key", "public_key_file", "x509_anchor",
                            "x509_anchor_file", "algorithms", "not_after"})
    name = section.text("name")
    if not _NAME.match(name):
        raise section.error("name", f"{name!r} is not a signer name (letters, digits, _ . @ : -)")
    algorithms = []
    for value, where, at in section.sequence("algorithms"):
        if value not in ALGORITHMS:
            raise YamlError(f"{source}:{at}: {where}: {value!r} is not one of {', '.join(ALGORITHMS)}")
        algorithms.append(value)
    if not algorithms:
        raise section.error("algorithms", f"name at least one of {', '.join(ALGORITHMS)}")
    pem, origin = _pem(section, "public_key", base)
    public_key = None
    if pem is not None:
        try:
            public_key = public_key_from_pem(pem, origin)
        except KeyFormatError as exc:
            raise section.error("public_key", str(exc)) from None
        if algorithm_of(public_key) not in algorithms:
            raise section.error("algorithms", f"its public key signs with {algorithm_of(public_key)}, which "
                                              f"[{', '.join(algorithms)}] does not allow")
    pem, origin = _pem(section, "x509_anchor", base)
    anchor = None
    if pem is not None:
        try:
            anchor = load_pem_anchor(pem, origin)
        except ChainError as exc:
            raise section.error("x509_anchor", str(exc)) from None
    if public_key is None and anchor is None:
        raise section.error(None, "a signer needs public_key (or public_key_file), x509_anchor "
                                  "(or x509_anchor_file), or both")
    return Signer(name, public_key, keyid(public_key) if public_key else None, anchor, tuple(algorithms),
                  zoned_time(section, "not_after"))


def parse_trust_file(raw: bytes, path: str | Path) -> TrustFile:
    source = str(path)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise TrustError(f"{source}: not UTF-8 text (byte {exc.start})") from None
    try:
        doc = load_yaml_text(text, source)
        top = Section(doc, source)
        top.reject_unknown({"trust", "signers"})
        meta = top.mapping("trust")
        meta.reject_unknown({"name", "description"})
        name = meta.text("name")
        items = top.sequence("signers")
        if not items:
            raise top.error("signers", "list at least one signer (a trust file that trusts nobody is a mistake)")
        if len(items) > MAX_SIGNERS:
            raise top.error("signers", f"{len(items)} signers, more than the {MAX_SIGNERS} accepted")
        signers, seen = [], {}
        for item, where, line in items:
            signer = _signer(item, source, where, line, Path(path).parent)
            if signer.name in seen:
                raise YamlError(f"{source}:{line}: {where}.name: {signer.name!r} is listed twice "
                                f"(also at line {seen[signer.name]})")
            seen[signer.name] = line
            signers.append(signer)
    except TrustError:
        raise
    except YamlError as exc:
        raise TrustError(str(exc)) from None
    return TrustFile(name, source, hashlib.sha256(raw).hexdigest(), tuple(signers))


def load_trust_file(path: str | Path) -> TrustFile:
    try:
        raw = read_capped(path, MAX_TRUST_BYTES)
    except OSError as exc:
        raise TrustError(f"{path}: cannot read: {exc.strerror or exc}") from None
    return parse_trust_file(raw, path)


def load_lab_trust(explicit: str | Path | None = None) -> TrustFile | None:
    """The lab's trust file (see `find_trust_file`), loaded; None when there is none."""
    path = find_trust_file(explicit)
    return load_trust_file(path) if path is not None else None


__all__ = ["DEFAULT_LOCATIONS", "TRUST_ENV", "Signer", "TrustError", "TrustFile", "find_trust_file",
           "load_lab_trust", "load_trust_file", "no_trust_file_reason", "parse_trust_file", "zoned_time"]
