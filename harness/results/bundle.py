"""A signed result on disk, and its full verification.

Layout of one run's directory:
    <run_id>/result.dsse.json      DSSE envelope (in-toto Statement v1, RunRecord predicate)
    <run_id>/evidence/<sha256>     every evidence blob, named by its digest

`verify_result` checks the signature, the statement, that the subjects are exactly the
board identity and the record's evidence, and that every blob on disk has its digest.
Any change to any byte of any of them fails, with a message that says what changed.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from harness.evidence import EvidenceStore
from harness.results.canonical import canonical_json
from harness.results.dsse import INTOTO_PAYLOAD_TYPE, VerificationError, sign_envelope, verify_envelope
from harness.results.keys import keyid
from harness.results.record import (BOARD_SUBJECT_PREFIX, RECORD_TYPE, STATEMENT_TYPE, RunRecord,
                                    board_subject, make_statement)

ENVELOPE_NAME = "result.dsse.json"
EVIDENCE_DIR = "evidence"
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_MAX_ENVELOPE_BYTES = 256 * 1024 * 1024


def write_signed_result(out_root: str | Path, record: RunRecord, evidence: EvidenceStore,
                        private_key: Ed25519PrivateKey) -> Path:
    """Write evidence blobs and the signed envelope; return the envelope's path."""
    run_dir = Path(out_root) / record.run_id
    evidence.write_to(run_dir / EVIDENCE_DIR)
    statement = make_statement(record)
    envelope = sign_envelope(canonical_json(statement), INTOTO_PAYLOAD_TYPE, private_key)
    target = run_dir / ENVELOPE_NAME
    tmp = run_dir / f".{ENVELOPE_NAME}.tmp"
    tmp.write_text(json.dumps(envelope, indent=2) + "\n")
    os.replace(tmp, target)
    return target


@dataclass(frozen=True)
class VerifiedResult:
    envelope: Path
    keyid: str
    statement: dict[str, Any]
    record: dict[str, Any]
    blobs_checked: int


def _fail(message: str) -> VerificationError:
    return VerificationError(message)


def verify_result(envelope_path: str | Path, public_key: Ed25519PublicKey) -> VerifiedResult:
    envelope_path = Path(envelope_path)
    try:
        if envelope_path.stat().st_size > _MAX_ENVELOPE_BYTES:
            raise _fail(f"{envelope_path}: larger than {_MAX_ENVELOPE_BYTES} bytes; not a result envelope")
        envelope = json.loads(envelope_path.read_bytes())
    except OSError as exc:
        raise _fail(f"{envelope_path}: cannot read: {exc.strerror or exc}") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise _fail(f"{envelope_path}: not a JSON envelope ({exc})") from None
    payload = verify_envelope(envelope, public_key)
    try:
        statement = json.loads(payload)
    except (ValueError, UnicodeDecodeError):
        raise _fail("signed payload is not JSON") from None
    if not isinstance(statement, dict) or statement.get("_type") != STATEMENT_TYPE:
        raise _fail(f"signed payload is not an in-toto Statement v1 (_type {statement.get('_type') if isinstance(statement, dict) else None!r})")
    if statement.get("predicateType") != RECORD_TYPE:
        raise _fail(f"predicateType is {statement.get('predicateType')!r}, expected {RECORD_TYPE!r}")
    record = statement.get("predicate")
    subjects = statement.get("subject")
    if not isinstance(record, dict) or record.get("type") != RECORD_TYPE:
        raise _fail("the predicate is not an attestlab RunRecord")
    if not isinstance(subjects, list) or not subjects:
        raise _fail("the statement has no subjects")
    board_subjects = [s for s in subjects if isinstance(s, dict) and str(s.get("name", "")).startswith(BOARD_SUBJECT_PREFIX)]
    if len(board_subjects) != 1 or board_subjects[0] != board_subject(record.get("board", {})):
        raise _fail("the board-identity subject does not match the record's board")
    evidence_subjects: dict[str, str] = {}
    for subject in subjects:
        if subject is board_subjects[0]:
            continue
        digest = subject.get("digest", {}).get("sha256") if isinstance(subject, dict) else None
        if not isinstance(digest, str) or not _SHA256.match(digest):
            raise _fail(f"subject {subject!r} has no sha256 digest")
        evidence_subjects[digest] = str(subject.get("name"))
    recorded = {e.get("sha256") for e in record.get("evidence", []) if isinstance(e, dict)}
    if recorded != set(evidence_subjects):
        raise _fail("the statement's subjects and the record's evidence list differ")
    for req in record.get("requirements", []):
        for step in req.get("steps", []):
            for ref in step.get("evidence", []):
                if ref.get("sha256") not in recorded:
                    raise _fail(f"step {req.get('id')}::{step.get('step')} points to evidence "
                                f"{ref.get('sha256')} that is not a subject")
    blob_dir = envelope_path.parent / EVIDENCE_DIR
    for digest, name in sorted(evidence_subjects.items()):
        blob = blob_dir / digest
        try:
            data = blob.read_bytes()
        except OSError:
            raise _fail(f"evidence blob {name} ({digest}) is missing from {blob_dir}") from None
        actual = hashlib.sha256(data).hexdigest()
        if actual != digest:
            raise _fail(f"evidence blob {name} was changed: {blob} has sha256 {actual}, "
                        f"the signed statement says {digest}")
    return VerifiedResult(envelope=envelope_path, keyid=keyid(public_key), statement=statement,
                          record=record, blobs_checked=len(evidence_subjects))
