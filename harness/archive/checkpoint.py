"""Signed checkpoints and the inclusion-proof file: what an auditor checks without the archive.

A checkpoint is canonical JSON {type, archive, size, root (hex), time} in a DSSE envelope signed
by the lab's Ed25519 key. A proof file is {leaf_index, tree_size, leaf (sha256 of the envelope
file's bytes), audit_path (hex), checkpoint (envelope)}; `verify_inclusion_file` checks one
against the envelope's bytes and the lab's public key alone.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from harness.formats import merkle
from harness.formats.dsse import VerificationError, sign_envelope, strict_json, verify_envelope
from harness.results.canonical import NotCanonical, canonical_json, loads_canonical

CHECKPOINT_PAYLOAD_TYPE = "application/vnd.attestlab.checkpoint+json"
CHECKPOINT_TYPE = "https://attestlab.dev/Checkpoint/v1"
PROOF_TYPE = "https://attestlab.dev/InclusionProof/v1"
MAX_TREE_SIZE = 1 << 62            # no archive holds more; bounds what a hostile file can ask
MAX_PROOF_HASHES = 64              # an audit path of any real tree is shorter (log2 of the size)
_HEX32 = re.compile(r"[0-9a-f]{64}\Z")   # \Z, not $: "$" also matches before a final newline
_TIME = re.compile(r"[0-9]{4}-[0-9][0-9]-[0-9][0-9]T[0-9][0-9]:[0-9][0-9]:[0-9][0-9](\.[0-9]{1,6})?\+00:00\Z")


class ProofFileError(VerificationError):
    """An inclusion proof or checkpoint that does not hold; the message says which part and why."""


@dataclass(frozen=True)
class Checkpoint:
    archive: str
    size: int
    root: bytes
    time: str


def sign_checkpoint(checkpoint: Checkpoint, private_key: Ed25519PrivateKey) -> bytes:
    """The checkpoint's DSSE envelope, as the bytes the archive stores."""
    payload = canonical_json({"type": CHECKPOINT_TYPE, "archive": checkpoint.archive, "size": checkpoint.size,
                              "root": checkpoint.root.hex(), "time": checkpoint.time})
    return canonical_json(sign_envelope(payload, CHECKPOINT_PAYLOAD_TYPE, private_key))


def open_checkpoint(envelope: Any, public_key: Ed25519PublicKey, what: str = "checkpoint") -> Checkpoint:
    """The checkpoint an envelope (bytes or parsed JSON) carries, if the lab's key signed it;
    ProofFileError naming the field otherwise."""
    try:
        if isinstance(envelope, (bytes, bytearray)):
            envelope = strict_json(bytes(envelope))
        payload = verify_envelope(envelope, public_key, CHECKPOINT_PAYLOAD_TYPE)
        body = loads_canonical(payload)
    except NotCanonical:
        raise ProofFileError(f"{what}: the signed payload is not canonical JSON") from None
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise ProofFileError(f"{what}: {exc}") from None
    if not isinstance(body, dict):
        raise ProofFileError(f"{what}: the signed payload is not canonical JSON")
    if body.get("type") != CHECKPOINT_TYPE or set(body) != {"type", "archive", "size", "root", "time"}:
        raise ProofFileError(f"{what}: not an attestlab checkpoint (fields {sorted(body)[:8]})")
    size, root, archive, when = body["size"], body["root"], body["archive"], body["time"]
    if type(size) is not int or not 0 <= size <= MAX_TREE_SIZE:
        raise ProofFileError(f"{what}: size {size!r:.40} is not a tree size")
    if not isinstance(root, str) or not _HEX32.match(root):
        raise ProofFileError(f"{what}: root {root!r:.80} is not 64 lower-case hex digits")
    if not isinstance(archive, str) or not _HEX32.match(archive):
        raise ProofFileError(f"{what}: archive id {archive!r:.80} is not 64 lower-case hex digits")
    if not isinstance(when, str) or not _TIME.match(when):
        raise ProofFileError(f"{what}: time {when!r:.60} is not an ISO 8601 UTC time")
    return Checkpoint(archive, size, bytes.fromhex(root), when)


def proof_document(leaf_index: int, envelope_sha256: str, audit_path: list[bytes],
                   checkpoint_envelope: bytes, tree_size: int) -> dict[str, Any]:
    return {"type": PROOF_TYPE, "leaf_index": leaf_index, "tree_size": tree_size, "leaf": envelope_sha256,
            "audit_path": [h.hex() for h in audit_path], "checkpoint": json.loads(checkpoint_envelope)}


def _index(value: Any, what: str) -> int:
    if type(value) is not int or not 0 <= value <= MAX_TREE_SIZE:
        raise ProofFileError(f"proof {what} {value!r:.40} is not a non-negative integer")
    return value


def verify_inclusion_file(envelope_bytes: bytes, proof: Any, public_key: Ed25519PublicKey) -> Checkpoint:
    """The signed checkpoint under which `envelope_bytes` is entry `proof.leaf_index`; else
    ProofFileError saying which part does not hold."""
    if not isinstance(proof, dict) or proof.get("type") != PROOF_TYPE:
        shown = proof.get("type") if isinstance(proof, dict) else type(proof).__name__
        raise ProofFileError(f"not an attestlab inclusion proof (type {shown!r:.80})")
    index, size = _index(proof.get("leaf_index"), "leaf_index"), _index(proof.get("tree_size"), "tree_size")
    leaf, path = proof.get("leaf"), proof.get("audit_path")
    digest = hashlib.sha256(envelope_bytes).hexdigest()
    if leaf != digest:
        raise ProofFileError(f"the proof is for envelope sha256 {leaf!r:.80}, this envelope has sha256 {digest}")
    if not isinstance(path, list) or len(path) > MAX_PROOF_HASHES or not all(
            isinstance(h, str) and _HEX32.match(h) for h in path):
        raise ProofFileError(f"proof audit_path is not a list of at most {MAX_PROOF_HASHES} hashes (64 hex digits)")
    checkpoint = open_checkpoint(proof.get("checkpoint"), public_key, "proof checkpoint")
    if checkpoint.size != size:
        raise ProofFileError(f"the proof is for a tree of {size} entries, its signed checkpoint covers {checkpoint.size}")
    try:
        merkle.verify_inclusion(merkle.leaf_hash(envelope_bytes), index, size, [bytes.fromhex(h) for h in path],
                                checkpoint.root)
    except merkle.ProofError as exc:
        raise ProofFileError(f"the envelope is not entry {index} of the checkpointed tree of {size}: {exc}") from None
    return checkpoint
