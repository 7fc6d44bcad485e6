"""Reference profiles: what a product is expected to be (identity, allowed capabilities, firmware
digests and components, documented console commands, egress policy).

A plan step names a dotted key (`reference: pcie.identity`); the board's reference profile
supplies the value. A missing value is an ERROR ("no reference for …"), never a PASS.

A profile may end its own validity (`reference.not_after`, inside what is signed), so that a
superseded profile cannot be put back in place of its successor after that time.

A board's profile is a signed document (harness/reference/signed.py): its YAML inside a DSSE
envelope, trusted only when a signer of the lab's trust file (harness/reference/trust.py) signed
it. An unsigned, badly signed, expired or untrusted profile still loads, as a `Reference` that
holds no values, only the reason: every lookup raises `UntrustedReference` with it, so every step
that uses the profile is ERROR and the steps that do not still run.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from harness.files import read_capped
from harness.reference.components import Component, parse_components
from harness.reference.signed import (PAYLOAD_TYPE, SignedBy, UntrustedProfile, parse_profile_envelope,
                                      payload_text, verify_profile)
from harness.reference.trust import TrustFile, no_trust_file_reason, zoned_time
from harness.verdict import MissingReference
from harness.yamlio import MAX_YAML_BYTES, Section, YamlError, load_yaml_text

MAX_ENVELOPE_BYTES = 2 * MAX_YAML_BYTES  # base64 of the largest profile, with room for its chain


class UntrustedReference(MissingReference):
    """The board's reference profile is not trusted: no value of it may be used."""


@dataclass(frozen=True)
class Reference:
    product: str | None
    values: dict[str, Any]
    path: str
    sha256: str                            # of the profile's YAML bytes (the envelope's payload)
    signed_by: SignedBy | None = None      # who signed it, when it was verified
    untrusted: str = ""                    # why it is not trusted; "" when trusted
    envelope_sha256: str | None = None     # of the envelope file, when the profile came signed
    components: tuple[Component, ...] = ()

    def lookup(self, dotted: str) -> Any:
        if self.untrusted:
            raise UntrustedReference(f"reference profile {self.path} is not trusted: {self.untrusted} "
                                     f"(needed for {dotted!r})")
        node: Any = self.values
        walked = []
        for part in dotted.split("."):
            walked.append(part)
            if not isinstance(node, dict) or part not in node or node[part] is None:
                raise MissingReference(f"no reference for {dotted!r} in {self.path} "
                                       f"(missing at {'.'.join(walked)!r})")
            node = node[part]
        return node

    def as_record(self) -> dict[str, Any]:
        """The profile and its signer, as the run record's board.reference says them."""
        record: dict[str, Any] = {"product": self.product, "sha256": self.sha256}
        if self.envelope_sha256 is not None:
            record["envelope_sha256"] = self.envelope_sha256
        record["signer"] = self.signed_by.as_record() if self.signed_by else None
        if self.untrusted:
            record["untrusted"] = self.untrusted
        return record


@dataclass(frozen=True)
class _Profile:
    product: str
    values: dict[str, Any]
    components: tuple[Component, ...]
    not_after: datetime | None    # the signer's own end to this profile: superseded values stop here


def _profile(doc: Any, source: str) -> _Profile:
    top = Section(doc, source)
    meta = top.mapping("reference")
    meta.reject_unknown({"product", "description", "sources", "not_after"})
    values = {k: v for k, v in doc.items() if k != "reference"}
    if not values:
        raise YamlError(f"{source}: a reference profile needs at least one section besides 'reference'")
    return _Profile(meta.text("product"), values, parse_components(values.get("firmware"), source),
                    zoned_time(meta, "not_after"))


def load_reference(path: str | Path) -> Reference:
    """A profile as it is written, its signature NOT checked: the YAML source, or the payload of its
    signed envelope. For the signing tools and tests, which trust the file themselves; a board's
    profile is read with `load_board_reference`, which trusts only a signature the lab trusts."""
    path = Path(path)
    try:
        raw = read_capped(path, MAX_ENVELOPE_BYTES)
    except OSError as exc:
        raise YamlError(f"{path}: cannot read: {exc.strerror or exc}") from None
    try:
        raw, source = parse_profile_envelope(raw).payload, f"{path} (payload)"
    except UntrustedProfile:
        source = str(path)  # not an envelope: the YAML itself
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise YamlError(f"{source}: not UTF-8 text (byte {exc.start})") from None
    profile = _profile(load_yaml_text(text, source), source)
    return Reference(product=profile.product, values=profile.values, path=str(path),
                     sha256=hashlib.sha256(raw).hexdigest(), components=profile.components)


def load_board_reference(path: str | Path, trust: TrustFile | None, at: datetime | None = None) -> Reference:
    """The profile a board config names, trusted only if one of `trust`'s signers signed it and
    the signature holds at `at` (now). YamlError only when the file cannot be read, or a trusted
    profile is malformed; anything else about it makes an untrusted Reference with the reason."""
    path = Path(path)
    try:
        raw = read_capped(path, MAX_ENVELOPE_BYTES)
    except OSError as exc:
        raise YamlError(f"{path}: cannot read: {exc.strerror or exc}") from None
    file_sha256 = hashlib.sha256(raw).hexdigest()

    def untrusted(reason: str, sha256: str = file_sha256, envelope: str | None = None) -> Reference:
        return Reference(product=None, values={}, path=str(path), sha256=sha256, untrusted=reason,
                         envelope_sha256=envelope)

    try:
        envelope = parse_profile_envelope(raw)
    except UntrustedProfile as exc:
        return untrusted(str(exc))
    payload_sha256 = hashlib.sha256(envelope.payload).hexdigest()
    if trust is None:
        return untrusted(no_trust_file_reason(), payload_sha256, file_sha256)
    at = at or datetime.now(timezone.utc)
    try:
        signed_by = verify_profile(envelope, trust, at)
        text = payload_text(envelope)
    except UntrustedProfile as exc:
        return untrusted(str(exc), payload_sha256, file_sha256)
    source = f"{path} (signed payload)"
    profile = _profile(load_yaml_text(text, source), source)
    if profile.not_after is not None and at > profile.not_after:
        # A signature never expires by itself: without this, every profile a signer ever signed,
        # superseded values included, stays good for a board to be judged against.
        return untrusted(f"signed by {signed_by.signer!r}, valid until {profile.not_after.isoformat()} "
                         f"(its reference.not_after), and it is now {at.isoformat(timespec='seconds')}: expired, "
                         f"superseded values are not used", payload_sha256, file_sha256)
    return Reference(product=profile.product, values=profile.values, path=str(path), sha256=payload_sha256,
                     signed_by=signed_by, envelope_sha256=file_sha256, components=profile.components)


def profile_digest(path: str | Path) -> str:
    """The sha256 a run record binds for this profile file: of the YAML bytes, whether the file is
    the YAML source or its signed envelope (the payload), signature not checked. OSError if unreadable."""
    raw = read_capped(path, MAX_ENVELOPE_BYTES)
    try:
        return hashlib.sha256(parse_profile_envelope(raw).payload).hexdigest()
    except UntrustedProfile:
        return hashlib.sha256(raw).hexdigest()


__all__ = ["PAYLOAD_TYPE", "Reference", "UntrustedReference", "load_board_reference", "load_reference",
           "profile_digest"]
