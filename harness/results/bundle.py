"""A signed result on disk, and its full verification.

Layout of one run's directory:
    <run_id>/claim.json            who claimed the directory (pid, host, start), written first
    <run_id>/result.dsse.json      DSSE envelope (in-toto Statement v1, RunRecord predicate)
    <run_id>/evidence/<sha256>     every evidence blob, named by its digest

`claim_run_dir` takes the directory before the board is touched: `os.mkdir` fails when it
exists, so of two runs with one run id exactly one goes on, and a run writes only into the
directory it made. It also checks that the output can be written (a probe file written and
fsynced) and has room. `write_signed_result` writes the blobs, then the envelope under a
temporary name, fsynced, renamed last: a directory without `result.dsse.json` holds nothing
that verifies, and `verify_result` calls it an interrupted run or an incomplete result.

`verify_result` checks the signature, the statement, that the subjects are exactly the
board identity and the record's evidence, that the record's verdicts follow from its parts
(a requirement is its worst step, the run its worst requirement and session test), and that
every blob on disk has its digest. Any change to any byte of any of them fails, with a
message that says what changed. `plan_mismatches` and `reference_mismatches` say whether a
verified record came from exactly a given plan file and reference profile.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import secrets
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from harness.evidence import EvidenceStore
from harness.files import read_capped
from harness.plan import Plan
from harness.results.canonical import NotCanonical, canonical_json, loads_canonical
from harness.formats.dsse import strict_json as _strict_json  # no key twice: two readers, two values
from harness.results.dsse import INTOTO_PAYLOAD_TYPE, VerificationError, sign_envelope, verify_envelope
from harness.results.keys import keyid
from harness.results.record import (BOARD_SUBJECT_PREFIX, RECORD_TYPE, STATEMENT_TYPE, RunRecord,
                                    board_subject, declared_expectation, make_statement)
from harness.verdict import Verdict

ENVELOPE_NAME = "result.dsse.json"
EVIDENCE_DIR = "evidence"
CLAIM_NAME = "claim.json"
# Free space a run needs before the board is touched: a level-1 result is about 3.5 MB (mostly
# the firmware dump), so 32 MiB is room for it several times over, a long capture included. A
# run that writes more still fails cleanly at the end (exit 2, nothing that verifies).
MIN_FREE_BYTES = 32 * 1024 * 1024
_SHA256 = re.compile(r"[0-9a-f]{64}\Z")   # \Z, not $: "$" also matches before a final newline
_MAX_ENVELOPE_BYTES = 256 * 1024 * 1024
MAX_BLOB_BYTES = 1 << 30  # no probe stores more; a bigger "blob" is not ours


class OutputError(Exception):
    """The result cannot be written where it should go; the message says where and why."""


class RunDirTaken(OutputError):
    """Another run has claimed (or finished in) the run's directory."""


@dataclass(frozen=True)
class RunClaim:
    """A run directory this process made; `token` tells its claim marker from anyone else's."""
    path: Path
    token: str


def _why(exc: OSError) -> str:
    name = errno.errorcode.get(exc.errno or 0)
    return f"{exc.strerror or exc}{f' ({name})' if name else ''}"


def write_synced(path: Path, data: bytes) -> None:
    """`data` in a new file at `path`, on disk before this returns (O_EXCL: never someone else's)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)


def sync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def claim_run_dir(out_root: str | Path, run_id: str, started: str = "") -> RunClaim:
    """Make `<out_root>/<run_id>` for this process alone, before the board is touched.

    Raises RunDirTaken when the directory exists (another run has it: a signed result is never
    overwritten), OutputError when `out_root` cannot hold a result: not a directory, not
    writable, a read-only file system, or less than MIN_FREE_BYTES free."""
    out_root = Path(out_root)
    run_dir = out_root / run_id
    try:
        out_root.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise OutputError(f"output {out_root} is not a directory") from None
    except OSError as exc:
        raise OutputError(f"output {out_root} cannot be created: {_why(exc)}") from None
    if not out_root.is_dir():
        raise OutputError(f"output {out_root} is not a directory")
    try:
        os.mkdir(run_dir)
    except FileExistsError:
        raise RunDirTaken(f"{run_dir} exists: another run has this run id, and a signed result is "
                          f"never overwritten") from None
    except OSError as exc:
        raise OutputError(f"output {out_root} is not writable: {_why(exc)}") from None
    claim = RunClaim(run_dir, secrets.token_hex(8))
    marker = {"pid": os.getpid(), "host": socket.gethostname(), "started": started, "token": claim.token}
    try:
        # The marker is the write probe: written and fsynced, it shows the output really takes data.
        write_synced(run_dir / CLAIM_NAME, (json.dumps(marker) + "\n").encode())
        fs = os.statvfs(run_dir)
    except OSError as exc:
        release_run_dir(claim)
        raise OutputError(f"output {out_root} is not writable: {_why(exc)}") from None
    free = fs.f_bavail * fs.f_frsize
    if free < MIN_FREE_BYTES or fs.f_favail == 0:
        release_run_dir(claim)
        raise OutputError(f"output {out_root} has {free // 1024} KiB free, {fs.f_favail} inode(s); a run needs "
                          f"at least {MIN_FREE_BYTES // 1024 // 1024} MiB to write its result")
    return claim


def release_run_dir(claim: RunClaim) -> None:
    """Undo a claim that wrote nothing else (the marker alone): the run id is free again."""
    try:
        (claim.path / CLAIM_NAME).unlink(missing_ok=True)
        claim.path.rmdir()
    except OSError:
        pass  # it holds more than the marker: it stays, and verify calls it incomplete


def _owns(claim: RunClaim) -> bool:
    try:
        marker = json.loads(read_capped(claim.path / CLAIM_NAME, 4096))
    except (OSError, ValueError):
        return False
    return isinstance(marker, dict) and marker.get("token") == claim.token


def write_signed_result(out_root: str | Path, record: RunRecord, evidence: EvidenceStore,
                        private_key: Ed25519PrivateKey, claim: RunClaim | None = None) -> Path:
    """Write evidence blobs and the signed envelope into the run's claimed directory (claimed
    now when `claim` is None); return the envelope's path.

    OutputError when the directory is not this run's, or a write fails (a full disk): then the
    directory holds no envelope, and no temporary file of this run is left."""
    if claim is None:
        claim = claim_run_dir(out_root, record.run_id, record.started)
    if claim.path != Path(out_root) / record.run_id or not _owns(claim):
        raise RunDirTaken(f"{claim.path} is no longer this run's (its claim marker changed): nothing written")
    statement = make_statement(record)
    envelope = sign_envelope(canonical_json(statement), INTOTO_PAYLOAD_TYPE, private_key)
    target = claim.path / ENVELOPE_NAME
    blob_dir = claim.path / EVIDENCE_DIR
    try:
        blob_dir.mkdir(exist_ok=True)
        for digest in dict.fromkeys(ref.sha256 for ref in evidence.refs):
            _write_file(blob_dir / digest, evidence.get(digest), claim.token)
        sync_dir(blob_dir)  # every blob on disk before the envelope that cites them
        _write_file(target, (json.dumps(envelope, indent=2) + "\n").encode(), claim.token)
        sync_dir(claim.path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            target.unlink(missing_ok=True)  # not known to be on disk: it must not verify later
        raise OutputError(f"cannot write the result to {claim.path}: {_why(exc)}") from None
    return target


def _write_file(path: Path, data: bytes, token: str) -> None:
    """`data` at `path`, whole or not at all: written and fsynced under this run's temporary
    name, then renamed; the temporary file never outlives a failure or an interrupt."""
    tmp = path.with_name(f".{path.name}.{token}.tmp")
    try:
        write_synced(tmp, data)
        os.rename(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def unsigned_run_dir(run_dir: Path) -> str | None:
    """Why `run_dir` holds no signed result (an interrupted run, or one that could not finish
    writing), or None when it is not a run directory at all."""
    try:
        marker = json.loads(read_capped(run_dir / CLAIM_NAME, 4096))
    except (OSError, ValueError):
        marker = None
    blobs = run_dir / EVIDENCE_DIR
    if not isinstance(marker, dict) and not blobs.is_dir():
        return None
    who = ""
    if isinstance(marker, dict):
        who = f" (run started {marker.get('started') or '?'} by pid {marker.get('pid')} on {marker.get('host')})"
        if marker.get("host") == socket.gethostname() and isinstance(marker.get("pid"), int) and _alive(marker["pid"]):
            return (f"{run_dir}: incomplete result{who}: no {ENVELOPE_NAME} yet and that process is still "
                    f"running; nothing in it is signed")
    return (f"{run_dir}: interrupted run{who}: no {ENVELOPE_NAME}, the run was interrupted or could "
            f"not write its result; nothing in it is signed, nothing in it verifies")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


@dataclass(frozen=True)
class VerifiedResult:
    envelope: Path
    keyid: str
    statement: dict[str, Any]
    record: dict[str, Any]
    blobs_checked: int


def _fail(message: str) -> VerificationError:
    return VerificationError(message)


def _strict_json_or_fail(payload: bytes) -> None:
    try:
        _strict_json(payload)
    except (ValueError, UnicodeDecodeError, TypeError, RecursionError):
        raise _fail("signed payload is not JSON") from None


def verify_result(envelope_path: str | Path, public_key: Ed25519PublicKey,
                  data: bytes | None = None) -> VerifiedResult:
    """Verify a result: `envelope_path` is its result.dsse.json, or the run directory. `data`:
    the envelope's bytes when the caller has read them already (the archive's verify)."""
    envelope_path = Path(envelope_path)
    if data is None and envelope_path.is_dir():
        envelope_path = envelope_path / ENVELOPE_NAME
    try:
        envelope = _strict_json(read_capped(envelope_path, _MAX_ENVELOPE_BYTES) if data is None else data)
    except FileNotFoundError:
        unsigned = unsigned_run_dir(envelope_path.parent) if envelope_path.name == ENVELOPE_NAME else None
        raise _fail(unsigned or f"{envelope_path}: cannot read: no such file") from None
    except OSError as exc:
        raise _fail(f"{envelope_path}: cannot read: {exc.strerror or exc}") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise _fail(f"{envelope_path}: not a JSON envelope ({exc})") from None
    payload = verify_envelope(envelope, public_key)
    try:
        statement = loads_canonical(payload)
    except NotCanonical:  # we sign canonical JSON only; anything else was not made by attestlab
        _strict_json_or_fail(payload)  # a key twice is "not JSON", as signed documents are read
        raise _fail("signed payload is not canonical JSON (sorted keys, no spaces, no floats)") from None
    except (ValueError, UnicodeDecodeError, TypeError, RecursionError):
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
    for key in ("plan", "board"):
        if not isinstance(record.get(key), dict):
            raise _fail(f"the record's {key} is not an object")
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
    _check_record(record, recorded)
    sizes = {e.get("sha256"): e.get("size") for e in record.get("evidence", []) if isinstance(e, dict)}
    blob_dir = envelope_path.parent / EVIDENCE_DIR
    for digest, name in sorted(evidence_subjects.items()):
        blob = blob_dir / digest
        size = sizes.get(digest)
        try:
            data = read_capped(blob, size if isinstance(size, int) and 0 <= size <= MAX_BLOB_BYTES else MAX_BLOB_BYTES)
        except FileNotFoundError:
            raise _fail(f"evidence blob {name} ({digest}) is missing from {blob_dir}") from None
        except OSError as exc:
            raise _fail(f"evidence blob {name} ({digest}): {blob}: {exc.strerror or exc}") from None
        actual = hashlib.sha256(data).hexdigest()
        if actual != digest:
            raise _fail(f"evidence blob {name} was changed: {blob} has sha256 {actual}, "
                        f"the signed statement says {digest}")
    return VerifiedResult(envelope=envelope_path, keyid=keyid(public_key), statement=statement,
                          record=record, blobs_checked=len(evidence_subjects))


def _verdict(value: Any, what: str) -> Verdict:
    try:
        return Verdict(value)
    except ValueError:
        raise _fail(f"{what} has verdict {value!r}, not one of PASS, SKIP, ERROR, FAIL") from None


def _check_record(record: dict[str, Any], recorded: set[Any]) -> None:
    """Every pointer names a subject, and every verdict is the worst of its parts."""
    def cites(refs: Any, what: str) -> None:
        for ref in refs if isinstance(refs, list) else [refs]:
            if not isinstance(ref, dict) or ref.get("sha256") not in recorded:
                shown = ref.get("sha256") if isinstance(ref, dict) else repr(ref)
                raise _fail(f"{what} points to evidence {shown} that is not a subject")

    declared = record["plan"].get("requirements", [])
    if not isinstance(declared, list) or not all(
            isinstance(r, dict) and isinstance(r.get("steps", []), list) and
            all(isinstance(s, dict) for s in r.get("steps", [])) for r in declared):
        raise _fail("the record's plan.requirements is not a list of requirements with steps")
    not_run = record.get("not_run", [])
    if not isinstance(not_run, list) or not all(isinstance(n, str) for n in not_run):
        raise _fail("the record's not_run is not a list of step names")
    requirements, tests = record.get("requirements", []), record.get("tests", [])
    if not isinstance(requirements, list) or not isinstance(tests, list):
        raise _fail("the record's requirements and tests are not lists")
    parts = []
    for req in requirements:
        steps = req.get("steps") if isinstance(req, dict) else None
        if not isinstance(steps, list):
            raise _fail(f"requirement {req!r:.80} has no list of steps")
        step_verdicts = []
        for step in steps:
            if not isinstance(step, dict):
                raise _fail(f"requirement {req.get('id')} has a step that is not an object")
            where = f"step {req.get('id')}::{step.get('step')}"
            cites(step.get("evidence", []), where)
            expectation = step.get("expectation", {})
            if not isinstance(expectation, dict):
                raise _fail(f"{where}'s expectation is not an object")
            if "evidence" in expectation:
                cites({"sha256": expectation.get("sha256")}, f"{where}'s expectation")
            step_verdicts.append(_verdict(step.get("verdict"), where))
        claimed = _verdict(req.get("verdict"), f"requirement {req.get('id')}")
        if claimed is not Verdict.worst(step_verdicts):
            raise _fail(f"requirement {req.get('id')} says {claimed.value}, its steps say "
                        f"{Verdict.worst(step_verdicts).value}")
        parts.append(claimed)
    for test in tests:
        if not isinstance(test, dict):
            raise _fail("a session test is not an object")
        cites(test.get("evidence", []), f"test {test.get('nodeid')}")
        parts.append(_verdict(test.get("verdict"), f"test {test.get('nodeid')}"))
    if record.get("not_run"):
        parts.append(Verdict.ERROR)
    claimed = _verdict(record.get("verdict"), "the run")
    if claimed is not Verdict.worst(parts):
        raise _fail(f"the run says {claimed.value}, its requirements and session tests say "
                    f"{Verdict.worst(parts).value}")


def plan_mismatches(record: dict[str, Any], plan: Plan) -> list[str]:
    """Why a verified record did not come from exactly this plan (empty: it did). `plan.sha256`
    is the digest of the plan file's exact bytes."""
    summary = record.get("plan") if isinstance(record.get("plan"), dict) else {}
    problems = []
    if summary.get("sha256") != plan.sha256:
        problems.append(f"plan digest differs: the record binds sha256 {summary.get('sha256')}, "
                        f"{plan.path} has sha256 {plan.sha256}")
    declared = [(req.id, step.id, declared_expectation(step)) for req in plan.requirements for step in req.steps]
    bound = [(req.get("id"), step.get("id"), step.get("expectation"))
             for req in summary.get("requirements") or [] if isinstance(req, dict)
             for step in req.get("steps") or [] if isinstance(step, dict)]
    if bound != declared:
        problems.append(f"the record's plan holds {len(bound)} step(s) "
                        f"({', '.join(f'{r}::{s}' for r, s, _ in bound[:6])}), {plan.path} holds "
                        f"{len(declared)} ({', '.join(f'{r}::{s}' for r, s, _ in declared[:6])}), "
                        f"or their expectations come from elsewhere")
    by_step = {(r, s): e for r, s, e in declared}
    for req in record.get("requirements", []):
        for step in req.get("steps", []):
            key = (req.get("id"), step.get("step"))
            source = {k: v for k, v in (step.get("expectation") or {}).items() if k in ("source", "key", "line")}
            if key not in by_step:
                problems.append(f"step {key[0]}::{key[1]} is not in {plan.path}")
            elif source != by_step[key]:
                problems.append(f"step {key[0]}::{key[1]} took its expectation from {source}, "
                                f"{plan.path} says {by_step[key]}")
    return problems


def reference_mismatches(record: dict[str, Any], digest: str, path: str) -> list[str]:
    """Why a verified record's expectations did not come from exactly this reference profile
    (`digest`: the sha256 of its bytes)."""
    reference = record["board"].get("reference")
    bound = reference.get("sha256") if isinstance(reference, dict) else None
    problems = [] if bound == digest else [
        f"reference profile differs: the record binds sha256 {bound}, {path} has sha256 {digest}"]
    for req in record.get("requirements", []):
        for step in req.get("steps", []):
            expectation = step.get("expectation") or {}
            if expectation.get("source") == "reference" and expectation.get("profile_sha256") != digest:
                problems.append(f"step {req.get('id')}::{step.get('step')} compared against profile sha256 "
                                f"{expectation.get('profile_sha256')}, not {path}")
    return problems
