"""Evidence blobs, stored by sha256 as they are collected.

A probe adds raw bytes (a config-space dump, a console transcript, a pcapng file) the moment it
has them, so nothing collected is lost if the probe later fails. Blobs live in memory during a
run; `harness/results/bundle.py` writes them into the run's claimed folder as
`evidence/<sha256>`, the layout `attestlab verify` checks.
"""

from __future__ import annotations

import hashlib

from harness.verdict import EvidenceRef


class EvidenceStore:
    def __init__(self) -> None:
        self._blobs: dict[str, bytes] = {}
        self._refs: list[EvidenceRef] = []

    def add(self, name: str, data: bytes, media_type: str = "application/octet-stream") -> EvidenceRef:
        """Store `data` under its sha256 and return a reference naming it."""
        data = bytes(data)
        digest = hashlib.sha256(data).hexdigest()
        self._blobs.setdefault(digest, data)
        ref = EvidenceRef(name=name, sha256=digest, size=len(data), media_type=media_type)
        if ref not in self._refs:
            self._refs.append(ref)
        return ref

    def get(self, sha256: str) -> bytes:
        return self._blobs[sha256]

    @property
    def refs(self) -> tuple[EvidenceRef, ...]:
        return tuple(self._refs)
