"""The archive: one directory a lab keeps for years.

    <dir>/archive.db                 the log, its checkpoints and the query index (db.py)
      or <dir>/database.json         instead: the PostgreSQL database that holds them, and its archive id
    <dir>/blobs/<sha256>             every archived envelope, by the sha256 of its file bytes
    <dir>/blobs/evidence/<sha256>    every evidence blob those envelopes name

Blobs are written (temporary name, fsync, rename, fsync of the directory) before the database
transaction that names them commits: a crash leaves at most a blob nobody names, which is
harmless. The leaf of entry i is the RFC 6962 leaf hash of envelope i's exact file bytes.
`verify` trusts nothing in the directory but what the lab's key signed.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import multiprocessing
import os
import secrets
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from harness import progress
from harness.archive.checkpoint import (Checkpoint, ProofFileError, open_checkpoint, proof_document,
                                        sign_checkpoint, verify_inclusion_file)
from harness.archive.db import ENTRY_FIELDS, DamagedRow, PostgresLog, SqliteLog, redacted
from harness.files import read_capped
from harness.formats import merkle
# the result directory's own durable write (tmp, fsync) and directory fsync: one way to put bytes on disk
from harness.results.bundle import ENVELOPE_NAME, EVIDENCE_DIR, MAX_BLOB_BYTES, verify_result
from harness.results.bundle import sync_dir, write_synced
from harness.results.dsse import VerificationError

DB_NAME = "archive.db"
# A PostgreSQL archive: the directory holds the blobs and names its database and archive id
# (never a password: libpq's PGPASSFILE or PGPASSWORD supplies it).
DB_POINTER = "database.json"
DB_POINTER_TYPE = "https://attestlab.dev/ArchiveDatabase/v1"
BLOB_DIR = "blobs"
MAX_ENVELOPE_BYTES = 256 * 1024 * 1024
# Test hooks (tests/test_archive.py): with ATTESTLAB_ARCHIVE_PAUSE=<stage> an append writes
# ATTESTLAB_ARCHIVE_MARK and waits at that stage (`blobs`: blobs written, no transaction yet;
# `transaction`: everything written inside the open transaction) so that a test can kill it there.
_PAUSE_LIMIT_S = 60


class ArchiveError(ValueError):
    """The archive cannot do what was asked (no archive there, a result that does not verify)."""


class AlreadyArchived(ArchiveError):
    """The envelope is in the archive already: appending it again is refused."""

    def __init__(self, index: int, sha256: str) -> None:
        super().__init__(f"envelope sha256 {sha256} is already archived as entry {index}; not appended again")
        self.index = index


class ArchiveCorrupt(ValueError):
    """`verify` found something the signed checkpoints and envelopes do not vouch for; `entry` is
    the first entry it concerns (None when it concerns the archive as a whole)."""

    def __init__(self, entry: int | None, message: str) -> None:
        super().__init__(f"entry {entry}: {message}" if entry is not None else message)
        self.entry = entry


@dataclass(frozen=True)
class Verified:
    size: int
    checkpoints: int
    blobs: int
    root: bytes


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat()


def entry_fields(record: dict[str, Any], keyid: str) -> dict[str, Any]:
    """The query index's row for a verified record: derived from signed data only."""
    board = record.get("board") if isinstance(record.get("board"), dict) else {}
    plan = record.get("plan") if isinstance(record.get("plan"), dict) else {}
    measured = board.get("measured") if isinstance(board.get("measured"), dict) else {}
    pins = board.get("pins") if isinstance(board.get("pins"), dict) else {}
    reference = board.get("reference") if isinstance(board.get("reference"), dict) else {}
    text = lambda v: v if isinstance(v, str) else ("" if v is None else str(v))  # noqa: E731
    return {"run_id": text(record.get("run_id")), "board_name": text(board.get("name")),
            "board_serial": text(measured.get("dsn") or pins.get("dsn")), "product": text(reference.get("product")),
            "plan_id": text(plan.get("id")), "plan_sha256": text(plan.get("sha256")),
            "verdict": text(record.get("verdict")), "keyid": keyid, "run_started": text(record.get("started"))}


def _pause(stage: str) -> None:
    if os.environ.get("ATTESTLAB_ARCHIVE_PAUSE") != stage:
        return
    Path(os.environ["ATTESTLAB_ARCHIVE_MARK"]).write_text(stage)
    time.sleep(_PAUSE_LIMIT_S)


def _stage_blob(directory: Path, digest: str, data: bytes, synced: bool) -> tuple[Path, Path] | None:
    """`data` written under a temporary name in `directory` (fsynced when `synced`), with the name
    it is to be renamed to; None when a good copy is there already (kept)."""
    path = directory / digest
    with contextlib.suppress(OSError):
        if hashlib.sha256(read_capped(path, MAX_BLOB_BYTES)).hexdigest() == digest:
            return None
    tmp = directory / f".{digest}.{os.getpid()}.{secrets.token_hex(4)}.tmp"  # parallel appenders: one each
    try:
        if synced:
            write_synced(tmp, data)
        else:  # a batch: one os.sync() for all its blobs before any is renamed (_store_blobs)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o644)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
            finally:
                os.close(fd)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp, path


def _store_blobs(blobs: list[tuple[Path, str, bytes]], batch: bool) -> None:
    """Each (directory, digest, data) at directory/digest, whole or not at all, and on disk with
    its directory entry before this returns. One append: each written and fsynced, renamed. A
    batch: all written, then ONE os.sync() (an fsync per file costs a disk flush each), renamed."""
    synced = not batch
    staged: list[tuple[Path, Path]] = []
    try:
        for directory, digest, data in blobs:
            if (pair := _stage_blob(directory, digest, data, synced)) is not None:
                staged.append(pair)
        if staged and not synced:
            os.sync()
        for tmp, path in staged:
            os.replace(tmp, path)
    finally:
        for tmp, _ in staged:
            tmp.unlink(missing_ok=True)
    for directory in dict.fromkeys(directory for directory, _, _ in blobs):
        sync_dir(directory)


@dataclass(frozen=True)
class _Envelope:
    """What entry i's envelope blob vouches for on its own: its leaf hash, the evidence it cites
    and the index row its signed record makes."""
    leaf: bytes
    evidence: tuple[Any, ...]
    fields: dict[str, Any]


def check_envelope(blobs: Path, sha: str, public_key: Ed25519PublicKey) -> _Envelope | str:
    """The checks of one entry that need no other entry (its blob's digest, its result's signature,
    record and evidence); a str: why it is corrupt, as `verify` says it. Failures are data, so that
    a worker process hands them back like any other result."""
    try:
        data = read_capped(blobs / sha, MAX_ENVELOPE_BYTES)
    except OSError as exc:
        return f"its envelope blob {sha}: {exc.strerror or exc}"
    actual = hashlib.sha256(data).hexdigest()
    if actual != sha:
        return f"its envelope blob {sha} was changed (it has sha256 {actual})"
    try:
        result = verify_result(blobs / sha, public_key, data)
    except VerificationError as exc:
        return f"its result does not verify: {exc}"
    evidence = tuple(e.get("sha256") for e in result.record.get("evidence", []) if isinstance(e, dict))
    return _Envelope(merkle.leaf_hash(data), evidence, entry_fields(result.record, result.keyid))


def open_stored_checkpoint(size: int, envelope: bytes, public_key: Ed25519PublicKey) -> Checkpoint | str:
    """The checkpoint stored as `size`, if the lab's key signed it; a str: why not."""
    try:
        return open_checkpoint(envelope, public_key, f"checkpoint of size {size}")
    except ProofFileError as exc:
        return str(exc)


# verify on several processes: the work a worker does on one chunk. The key travels as raw bytes.
VERIFY_CHUNK = 256          # entries (or checkpoints) a worker takes at once
PARALLEL_FROM = 2000        # jobs=None: this many entries before a pool pays for its start (~0.5 s)


def _check_envelopes(blobs: str, public_key: bytes, shas: list[str]) -> list[_Envelope | str]:
    key, directory = Ed25519PublicKey.from_public_bytes(public_key), Path(blobs)
    return [check_envelope(directory, sha, key) for sha in shas]


def _open_checkpoints(public_key: bytes, stored: list[tuple[int, bytes]]) -> list[Checkpoint | str]:
    key = Ed25519PublicKey.from_public_bytes(public_key)
    return [open_stored_checkpoint(size, envelope, key) for size, envelope in stored]


def _row_for_no_entry(idx: Any, size: int) -> str:
    return f"the index holds a row for entry {idx!r:.40}, which the log of {size} entries does not hold"


def _verify_pool(jobs: int) -> ProcessPoolExecutor:
    """Worker processes started fresh (forkserver, else spawn), never forked from this one: it
    holds a database connection and maybe threads."""
    method = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
    context = multiprocessing.get_context(method)
    if method == "forkserver":  # the server imports the checks once; each worker forks from it
        context.set_forkserver_preload(["harness.archive.store"])
    return ProcessPoolExecutor(max_workers=jobs, mp_context=context)


def _worker_failed(exc: BaseException) -> ArchiveError:
    if isinstance(exc, BrokenProcessPool):
        return ArchiveError(f"a verify worker process died ({exc}): not verified")
    return ArchiveError(f"a verify worker process failed: {exc!r}: not verified")


def _in_order(pool: ProcessPoolExecutor, jobs: int, work: Callable[[list[Any]], list[Any]], rows: Iterator[Any],
              key: Callable[[Any], Any]) -> Iterator[tuple[Any, Any]]:
    """(row, work's outcome for key(row)) for each of `rows`, in their order, the work done by
    `pool` (of `jobs` processes) a chunk at a time, two chunks a process ahead. An error reading
    `rows` (a damaged row) is raised only after every row before it has been yielded, as a
    sequential reader would raise it."""
    pending: deque[tuple[list[Any], Future]] = deque()
    state: dict[str, Any] = {"more": True, "error": None}

    def fill() -> None:
        while state["more"] and len(pending) < 2 * jobs:
            chunk: list[Any] = []
            try:
                for row in rows:
                    chunk.append(row)
                    if len(chunk) == VERIFY_CHUNK:
                        break
                else:
                    state["more"] = False
            except Exception as exc:  # noqa: BLE001 - raised in its turn, below
                state["more"], state["error"] = False, exc
            if chunk:
                try:
                    pending.append((chunk, pool.submit(work, [key(row) for row in chunk])))
                except (BrokenProcessPool, RuntimeError, OSError) as exc:
                    raise _worker_failed(exc) from None

    def results() -> Iterator[tuple[Any, Any]]:
        while pending:
            chunk, future = pending.popleft()
            try:
                outcomes = future.result()
            except Exception as exc:  # noqa: BLE001 - a worker's own failure is never a pass
                raise _worker_failed(exc) from None
            if len(outcomes) != len(chunk):
                raise ArchiveError(f"a verify worker answered {len(outcomes)} of {len(chunk)} items: not verified")
            fill()
            yield from zip(chunk, outcomes)
        if state["error"] is not None:
            raise state["error"]

    fill()
    return results()


class Archive:
    """An archive directory. `Archive(dir, create=True)` makes one where none is. `db`: a
    PostgreSQL URL (the lab's shared archive) in place of DIR/archive.db; once paired, the
    directory remembers it (DIR/database.json, without a password) and `db` may be left out.
    `read_only`: nothing is written (list, show, verify, proofs, export): an auditor's copy on
    read-only media works."""

    def __init__(self, directory: str | Path, *, create: bool = False, db: str | None = None,
                 read_only: bool = False) -> None:
        self.dir = Path(directory)
        self.blobs = self.dir / BLOB_DIR
        self.evidence = self.blobs / EVIDENCE_DIR
        paired = self._paired_database()
        sqlite = (self.dir / DB_NAME).is_file()
        if sqlite and (db or paired):
            raise ArchiveError(f"{self.dir}: a SQLite archive ({DB_NAME}); it is not used with a PostgreSQL "
                               f"database ({redacted(db) if db else DB_POINTER})")
        if not sqlite and not paired:
            if not create:
                raise ArchiveError(f"{self.dir}: no archive here (no {DB_NAME}{f', no {DB_POINTER}' if db else ''})")
            try:
                self.evidence.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise ArchiveError(f"{self.dir}: cannot create an archive: {exc.strerror or exc}") from None
        if not (db or paired):
            self.log: SqliteLog | PostgresLog = SqliteLog(self.dir / DB_NAME, read_only=read_only and sqlite)
            if not (read_only and sqlite):
                with self.log.transaction():
                    self.log.set_meta_once("archive_id", secrets.token_hex(32))
            found = self.log.meta("archive_id")
            if found is None:
                self.log.close()
                raise ArchiveError(f"{self.dir / DB_NAME}: no archive id: not an attestlab archive")
            self.id = found
            return
        self.log = PostgresLog(db or paired[1], create=create and not paired)
        try:
            self.id = self._pair(paired)
        except BaseException:
            self.log.close()
            raise

    def _paired_database(self) -> tuple[str, str] | None:
        """(archive id, database URL) from DIR/database.json: the PostgreSQL archive this directory
        holds the blobs of; None for none (a SQLite archive, or no archive yet)."""
        path = self.dir / DB_POINTER
        try:
            data = read_capped(path, 64 * 1024)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise ArchiveError(f"{path}: cannot read: {exc.strerror or exc}") from None
        try:
            pointer = json.loads(data)
            archive_id, url = pointer["archive_id"], pointer["database"]
            if pointer.get("type") != DB_POINTER_TYPE or not all(isinstance(v, str) for v in (archive_id, url)):
                raise ValueError("not an attestlab database pointer")
        except (ValueError, KeyError, TypeError) as exc:
            raise ArchiveError(f"{path}: damaged ({exc}): it should name the archive's database") from None
        return archive_id, url

    def _pair(self, paired: tuple[str, str] | None) -> str:
        """The archive id that this directory and the database share; ArchiveError when they are
        of different archives. A new directory is paired with a new (or still empty) archive."""
        log = self.log
        found = log.meta("archive_id") if log.has_tables() else None
        entries = log.size() if found else 0
        # Looked at again: another host may have paired a new directory since (it does before its first append).
        paired = paired or self._paired_database()
        if paired is not None:
            if found != paired[0]:
                raise ArchiveError(f"{self.dir} holds the blobs of archive {paired[0][:16]}…, but the database "
                                   f"{log.url} holds {f'archive {found[:16]}…' if found else 'no archive'}: "
                                   f"a directory and a database of different archives are never used together")
            return found
        if found is None:
            with log.transaction():
                log.set_meta_once("archive_id", secrets.token_hex(32))
            found = log.meta("archive_id")
        elif entries:
            raise ArchiveError(f"the database {log.url} holds archive {found[:16]}… with {entries} entries, whose "
                               f"blobs are not in {self.dir} (it has no {DB_POINTER}): not paired with it")
        document = {"type": DB_POINTER_TYPE, "archive_id": found, "database": log.url}
        tmp = self.dir / f".{DB_POINTER}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
        try:
            write_synced(tmp, (json.dumps(document, indent=2) + "\n").encode())
            os.replace(tmp, self.dir / DB_POINTER)
            sync_dir(self.dir)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise ArchiveError(f"{self.dir}: cannot record its database: {exc.strerror or exc}") from None
        return found

    def close(self) -> None:
        self.log.close()

    def __enter__(self) -> Archive:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- appending ----

    def append(self, envelope_path: str | Path, private_key: Ed25519PrivateKey) -> int:
        """Archive a signed result (its result.dsse.json, or its run directory) with its evidence;
        return its entry number. The result must verify with the lab's key, which also signs the
        new checkpoint. AlreadyArchived when the same envelope bytes are in the archive."""
        return self.append_many([envelope_path], private_key)[0]

    def append_many(self, envelope_paths: list[str | Path], private_key: Ed25519PrivateKey) -> list[int]:
        """Archive several signed results at once, in order; return their entry numbers. Each is
        checked as `append` checks one, and one signed checkpoint per new size is written, all in
        ONE transaction: a crash leaves the whole batch or none of it. Nothing is appended when
        any of them does not verify or is archived already (or twice in the batch)."""
        public_key = private_key.public_key()
        loaded: list[tuple[Path, bytes, str, Any]] = []
        for envelope_path in map(Path, envelope_paths):
            if envelope_path.is_dir():
                envelope_path = envelope_path / ENVELOPE_NAME
            try:
                data = read_capped(envelope_path, MAX_ENVELOPE_BYTES)
                source = verify_result(envelope_path, public_key)
            except OSError as exc:
                raise ArchiveError(f"{envelope_path}: cannot read: {exc.strerror or exc}") from None
            except VerificationError as exc:
                raise ArchiveError(f"{envelope_path}: not archived, it does not verify: {exc}") from None
            loaded.append((envelope_path, data, hashlib.sha256(data).hexdigest(), source))
        seen: dict[str, int] = {}
        for position, (envelope_path, _, digest, _) in enumerate(loaded):
            if digest in seen:
                raise ArchiveError(f"{envelope_path}: the same envelope (sha256 {digest}) is item {seen[digest]} of "
                                   f"this batch too: nothing appended")
            seen[digest] = position
        blobs: list[tuple[Path, str, bytes]] = []
        try:
            self.evidence.mkdir(parents=True, exist_ok=True)
            cited: dict[str, Path] = {}  # each evidence blob once, however many results of the batch cite it
            for envelope_path, _, _, source in loaded:
                # the digests verify_result checked: each is a subject, 64 hex digits, its blob matches
                for ref in source.record.get("evidence", []):
                    if isinstance(ref, dict):
                        cited.setdefault(ref.get("sha256"), envelope_path.parent / EVIDENCE_DIR)
            blobs += [(self.evidence, blob_digest, read_capped(source_dir / blob_digest, MAX_BLOB_BYTES))
                      for blob_digest, source_dir in sorted(cited.items())]
            blobs += [(self.blobs, digest, data) for _, data, digest, _ in loaded]  # after the evidence they cite
            _store_blobs(blobs, batch=len(loaded) > 1)
        except OSError as exc:
            raise ArchiveError(f"{self.dir}: cannot store the blobs: {exc.strerror or exc}") from None
        del blobs
        entries = []
        for envelope_path, _, digest, _ in loaded:
            try:  # what is archived is the stored copy: verified as stored, not as it was read
                stored = verify_result(self.blobs / digest, public_key)
            except VerificationError as exc:
                raise ArchiveError(f"{envelope_path}: the archived copy does not verify: {exc}") from None
            entries.append(entry_fields(stored.record, stored.keyid))
        _pause("blobs")
        with self.log.transaction():
            size, now = self.log.size(), utc_now()
            latest = self.log.checkpoint()
            if latest and datetime.fromisoformat(now) < datetime.fromisoformat(
                    self._checkpoint(*latest, public_key).time):  # verify would call the next one back-dated
                raise ArchiveError(f"this host's clock ({now}) is before the archive's latest checkpoint: not appended")
            # The nodes this batch reads: the tree's frontier, in one query (a round trip each to a
            # server, with every host waiting on the lock), then those the batch writes.
            written: dict[tuple[int, int], bytes] = self.log.nodes_at(merkle.frontier(size))
            get = lambda level, index: written.get((level, index)) or self._get(level, index)  # noqa: E731
            first = size
            for (_, data, digest, _), entry in zip(loaded, entries):
                existing = self.log.index_of(digest)
                if existing is not None:
                    raise AlreadyArchived(existing, digest)
                leaf = merkle.leaf_hash(data)
                nodes = merkle.nodes_completed_by_append(size, leaf, get)
                written.update(((level, index), value) for level, index, value in nodes)
                self.log.append(size, leaf, digest, now, nodes, entry)
                size += 1
                self.log.add_checkpoint(size, sign_checkpoint(Checkpoint(self.id, size, merkle.root(size, get), now),
                                                              private_key))
            _pause("transaction")
        return list(range(first, size))

    def _get(self, level: int, index: int) -> bytes:
        value = self.log.node(level, index)
        if value is None:
            raise ArchiveCorrupt(index << level, f"the log has no node (level {level}, index {index})")
        return value

    # ---- reading ----

    def size(self) -> int:
        return self.log.size()

    def envelope_path(self, index: int) -> Path:
        leaf = self.log.leaf(index)
        if leaf is None:
            raise ArchiveError(f"{self.dir}: no entry {index} (the archive holds {self.size()})")
        return self.blobs / leaf[2]

    def latest_checkpoint(self, public_key: Ed25519PublicKey | None = None) -> tuple[int, bytes]:
        found = self.log.checkpoint()
        if found is None:
            raise ArchiveError(f"{self.dir}: the archive is empty: no checkpoint yet")
        if public_key is not None:
            self._checkpoint(found[0], found[1], public_key)
        return found

    def _checkpoint(self, size: int, envelope: bytes, public_key: Ed25519PublicKey) -> Checkpoint:
        return self._own_checkpoint(size, open_stored_checkpoint(size, envelope, public_key))

    def _own_checkpoint(self, size: int, checkpoint: Checkpoint | str) -> Checkpoint:
        """The opened checkpoint stored as `size`, if it is this archive's checkpoint of that size."""
        if isinstance(checkpoint, str):
            raise ArchiveCorrupt(max(size - 1, 0), checkpoint)
        if checkpoint.size != size or checkpoint.archive != self.id:
            raise ArchiveCorrupt(max(size - 1, 0), f"the checkpoint stored as size {size} is the signed checkpoint "
                                 f"of size {checkpoint.size} of archive {checkpoint.archive[:16]}…: swapped")
        return checkpoint

    def inclusion(self, index: int, public_key: Ed25519PublicKey) -> dict[str, Any]:
        """The proof file of entry `index` under the latest checkpoint (checked before it is given)."""
        size, envelope = self.latest_checkpoint(public_key)
        leaf = self.log.leaf(index)
        if leaf is None or index >= size:
            raise ArchiveError(f"{self.dir}: no entry {index} (the latest checkpoint covers {size})")
        path = merkle.inclusion_proof(index, size, self._get)
        document = proof_document(index, leaf[2], path, envelope, size)
        try:
            verify_inclusion_file(read_capped(self.blobs / leaf[2], MAX_ENVELOPE_BYTES), document, public_key)
        except (OSError, ProofFileError) as exc:
            raise ArchiveCorrupt(index, f"its proof does not hold: {getattr(exc, 'strerror', None) or exc}") from None
        return document

    def consistency(self, old: int, new: int, public_key: Ed25519PublicKey) -> dict[str, Any]:
        """The RFC 6962 consistency proof between the checkpoints of `old` and `new` entries."""
        if not 0 < old <= new:
            raise ArchiveError(f"a consistency proof needs 0 < OLD <= NEW (got {old}, {new})")
        ends = []
        for size in (old, new):
            found = self.log.checkpoint(size)
            if found is None:
                raise ArchiveError(f"{self.dir}: no checkpoint of size {size}")
            ends.append((self._checkpoint(size, found[1], public_key), found[1]))
        proof = merkle.consistency_proof(old, new, self._get)
        try:
            merkle.verify_consistency(old, new, ends[0][0].root, ends[1][0].root, proof)
        except merkle.ProofError as exc:
            raise ArchiveCorrupt(old, f"checkpoint {old} is not a prefix of checkpoint {new}: {exc}") from None
        return {"old_size": old, "new_size": new, "proof": [h.hex() for h in proof],
                "old_checkpoint": json.loads(ends[0][1]), "new_checkpoint": json.loads(ends[1][1])}

    # ---- verifying ----

    def verify(self, public_key: Ed25519PublicKey, held: tuple[Checkpoint, ...] = (),
               jobs: int | None = None) -> Verified:
        """`jobs`: processes that check the envelopes and the checkpoints' signatures (the work of
        each entry alone); this one checks all that spans entries, in order, and names the same first
        entry, with the same message, whatever `jobs` is. None: every core from PARALLEL_FROM
        entries on, else 1 (no pool)."""
        if jobs is not None and jobs < 1:
            raise ArchiveError(f"--jobs must be at least 1 (got {jobs})")
        pool = None
        try:
            with self.log.snapshot():   # one state of the log, whatever appenders commit meanwhile
                if (odd := self.log.catalog_problem()) is not None:   # list and show must read what verify reads
                    raise ArchiveCorrupt(None, f"the database: {odd}")
                if jobs is None:
                    jobs = (os.cpu_count() or 1) if self.log.size() >= PARALLEL_FROM else 1
                if jobs > 1:
                    pool = _verify_pool(jobs)
                return self._verify(public_key, held, pool, jobs)
        except DamagedRow as exc:
            raise ArchiveCorrupt(exc.entry, str(exc)) from None
        except merkle.ProofError as exc:  # a stored node the tree needs is missing or not a hash
            raise ArchiveCorrupt(None, f"the log's nodes are damaged: {exc}") from None
        finally:
            if pool is not None:
                pool.shutdown(wait=True, cancel_futures=True)

    def _verify(self, public_key: Ed25519PublicKey, held: tuple[Checkpoint, ...],
                pool: ProcessPoolExecutor | None = None, jobs: int = 1) -> Verified:
        """Check everything against what the lab's key signed; ArchiveCorrupt naming the first
        entry that fails: every envelope's signature and evidence, every blob's digest, every leaf
        and node, every checkpoint's signature and root, each consistent with the next. `held`:
        checkpoints kept outside the archive (an auditor's), each must be a prefix of this log:
        the only defence against a history rewritten by someone holding the lab's key."""
        nodes = {(level, idx): value for level, idx, value in self.log.nodes()}
        size, evidence, total = 0, set(), self.log.size()
        rows = self.log.entries()   # read beside the leaves, in index order: no query per entry
        row: dict[str, Any] | None = next(rows, None)
        appended: list[str] = []    # each entry's append time, held to its checkpoint's signed time
        if pool is None:
            envelopes: Iterator[tuple[Any, _Envelope | str]] = (
                (leaf_row, check_envelope(self.blobs, leaf_row[2], public_key)) for leaf_row in self.log.leaves())
        else:
            key_bytes = public_key.public_bytes(Encoding.Raw, PublicFormat.Raw)
            envelopes = _in_order(pool, jobs, functools.partial(_check_envelopes, str(self.blobs), key_bytes),
                                  self.log.leaves(), lambda leaf_row: leaf_row[2])
        for (idx, leaf, sha, leaf_row_appended), envelope in envelopes:
            if idx != size:
                raise ArchiveCorrupt(size, f"missing: the log goes from entry {size - 1} to entry {idx}")
            progress.update("archive verify", done=idx, total=total, unit="entries")
            if isinstance(envelope, str):
                raise ArchiveCorrupt(idx, envelope)
            evidence.update(envelope.evidence)
            if envelope.leaf != leaf or nodes.get((0, idx)) != leaf:
                raise ArchiveCorrupt(idx, "its leaf hash in the log is not the leaf hash of its envelope")
            # One index row per entry, merged strictly: a row for no entry (a negative index, one
            # between entries) would be listed by `archive list` as if the archive held it.
            if row is not None and row["idx"] != idx and not (type(row["idx"]) is int and row["idx"] > idx):
                raise ArchiveCorrupt(idx, _row_for_no_entry(row["idx"], total))
            found = row if row is not None and row["idx"] == idx else None
            expected = envelope.fields
            if found is None or any(found[f] != expected[f] for f in ENTRY_FIELDS):
                wrong = [f for f in ENTRY_FIELDS if found is None or found[f] != expected[f]]
                raise ArchiveCorrupt(idx, f"its index row says other than its signed record ({', '.join(wrong)})")
            row = next(rows, None)
            appended.append(leaf_row_appended)
            size += 1
        # the checkpoints' signatures are checked (by the pool, meanwhile) in the order they are read
        if pool is None:
            opened: Iterator[tuple[Any, Checkpoint | str]] = (
                (stored, open_stored_checkpoint(*stored, public_key)) for stored in self.log.checkpoints())
        else:
            opened = _in_order(pool, jobs, functools.partial(_open_checkpoints, key_bytes), self.log.checkpoints(),
                               lambda stored: stored)
        for (level, idx), value in sorted(nodes.items()):
            first = idx << level
            if first + (1 << level) > size:
                raise ArchiveCorrupt(first, f"the log holds node (level {level}, index {idx}) beyond its "
                                            f"{size} entries")
            if level and value != merkle.node_hash(nodes.get((level - 1, 2 * idx), b""),
                                                   nodes.get((level - 1, 2 * idx + 1), b"")):
                raise ArchiveCorrupt(first, f"node (level {level}, index {idx}) over entries {first}.."
                                            f"{first + (1 << level) - 1} is not the hash of its children")
        get = lambda level, idx: nodes.get((level, idx))  # noqa: E731
        for level in range(1, size.bit_length()):
            for idx in range(size >> level):
                if (level, idx) not in nodes:
                    raise ArchiveCorrupt(idx << level, f"the log lacks node (level {level}, index {idx})")
        previous: Checkpoint | None = None
        count = 0
        for (cp_size, _), outcome in opened:
            checkpoint = self._own_checkpoint(cp_size, outcome)
            if cp_size > size:
                raise ArchiveCorrupt(size, f"missing: the signed checkpoint of size {cp_size} covers entries the "
                                           f"log does not hold (it holds {size})")
            if merkle.root(cp_size, get) != checkpoint.root:
                raise ArchiveCorrupt(cp_size - 1, f"the log's first {cp_size} entries are not those the signed "
                                                  f"checkpoint of size {cp_size} covers: changed, removed or reordered")
            if cp_size != (previous.size if previous else 0) + 1:
                gap = (previous.size if previous else 0) + 1
                raise ArchiveCorrupt(gap - 1, f"the signed checkpoint of size {gap} is missing (the next is {cp_size})")
            if appended[cp_size - 1] != checkpoint.time:   # `archive show` prints it: never back-dated
                raise ArchiveCorrupt(cp_size - 1, f"its append time in the log ({appended[cp_size - 1]!r:.60}) is not "
                                                  f"the time of the checkpoint its append signed ({checkpoint.time})")
            # No consistency proof between neighbours is needed: every checkpoint's root was just
            # found to be the root of a prefix of the one leaf sequence, whose nodes were all checked
            # against their children, so each checkpoint is a prefix of the next by construction.
            if previous is not None and datetime.fromisoformat(checkpoint.time) < datetime.fromisoformat(previous.time):
                raise ArchiveCorrupt(cp_size - 1, f"checkpoint {cp_size} is dated {checkpoint.time}, before "
                                                  f"checkpoint {previous.size} ({previous.time})")
            previous, count = checkpoint, count + 1
        if size and (previous is None or previous.size != size):
            covered = previous.size if previous else 0
            raise ArchiveCorrupt(covered, f"entries {covered}..{size - 1} are in no signed checkpoint")
        if row is not None:
            raise ArchiveCorrupt(size, _row_for_no_entry(row["idx"], size))
        for kept in held:
            if kept.archive != self.id:
                raise ArchiveCorrupt(None, f"the held checkpoint of size {kept.size} is of archive {kept.archive}, "
                                           f"this is archive {self.id}")
            if kept.size > size:
                raise ArchiveCorrupt(size, f"missing: a held checkpoint signed at {kept.time} covers {kept.size} "
                                           f"entries, the archive holds {size}: entries were removed")
            if merkle.root(kept.size, get) != kept.root:
                raise ArchiveCorrupt(max(kept.size - 1, 0), f"history rewritten: the first {kept.size} entries are not "
                                     f"those of the checkpoint held since {kept.time} (one of entries 0..{kept.size - 1} "
                                     f"was changed, removed or reordered, and re-signed with the lab's key)")
        progress.done("archive verify", f"{size} entries")
        return Verified(size=size, checkpoints=count, blobs=size + len(evidence), root=merkle.root(size, get))
