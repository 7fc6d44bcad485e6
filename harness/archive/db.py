"""Every line of the archive's SQL, for SQLite. A second backend (PostgreSQL) is one more class
with these methods; nothing else in the archive speaks SQL.

Tables: `meta` (the archive id), `leaves` (idx, leaf hash, envelope sha256, appended time),
`nodes` (level, idx, hash: every complete subtree, harness/formats/merkle.py), `checkpoints`
(size, the signed envelope's bytes) and `entries` (the query index). An append is one
`BEGIN IMMEDIATE` transaction: appenders serialise on SQLite's write lock, and a crash leaves
the whole entry or none of it (WAL, synchronous=FULL: committed means on disk).
"""

from __future__ import annotations

import contextlib
import re
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ENTRY_FIELDS = ("run_id", "board_name", "board_serial", "product", "plan_id", "plan_sha256", "verdict",
                "keyid", "run_started")
BUSY_TIMEOUT_MS = 60_000  # how long an appender waits for another's transaction before it gives up
_SHA256 = re.compile(r"^[0-9a-f]{64}$")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS leaves (idx INTEGER PRIMARY KEY, leaf_hash BLOB NOT NULL,
    envelope_sha256 TEXT NOT NULL UNIQUE, appended TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS nodes (level INTEGER NOT NULL, idx INTEGER NOT NULL, hash BLOB NOT NULL,
    PRIMARY KEY (level, idx)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS checkpoints (size INTEGER PRIMARY KEY, envelope BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS entries (idx INTEGER PRIMARY KEY, run_id TEXT, board_name TEXT, board_serial TEXT,
    product TEXT, plan_id TEXT, plan_sha256 TEXT, verdict TEXT, keyid TEXT, run_started TEXT);
CREATE INDEX IF NOT EXISTS entries_serial ON entries (board_serial);
CREATE INDEX IF NOT EXISTS entries_plan ON entries (plan_id);
CREATE INDEX IF NOT EXISTS entries_started ON entries (run_started);
"""


class DamagedRow(ValueError):
    """A row whose values cannot be what the archive wrote (a hash that is not 32 bytes, a
    digest that is not hex): someone else wrote it. `entry` is the first entry it concerns."""

    def __init__(self, entry: int | None, message: str) -> None:
        super().__init__(message)
        self.entry = entry


def _hash(value: Any, entry: int | None, what: str) -> bytes:
    if not isinstance(value, bytes) or len(value) != 32:
        raise DamagedRow(entry, f"{what} is {type(value).__name__} {value!r:.40}, not a 32-byte hash")
    return value


def _count(value: Any, what: str, limit: int = 1 << 62) -> int:
    if type(value) is not int or not 0 <= value <= limit:
        raise DamagedRow(None, f"{what} is {value!r:.40}, not a count")
    return value


class SqliteLog:
    """The archive's database in `path` (created when missing)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.db = sqlite3.connect(path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None)
        self.db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        self.db.execute("PRAGMA journal_mode = WAL")
        self.db.execute("PRAGMA synchronous = FULL")
        with self.transaction():
            for statement in filter(str.strip, _SCHEMA.split(";")):
                self.db.execute(statement)

    def close(self) -> None:
        self.db.close()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        """One write transaction, taken before anything is read (BEGIN IMMEDIATE)."""
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    def meta(self, key: str) -> str | None:
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def set_meta_once(self, key: str, value: str) -> None:
        self.db.execute("INSERT OR IGNORE INTO meta (key, value) VALUES (?, ?)", (key, value))

    def size(self) -> int:
        return self.db.execute("SELECT COUNT(*) FROM leaves").fetchone()[0]

    def node(self, level: int, index: int) -> bytes | None:
        row = self.db.execute("SELECT hash FROM nodes WHERE level = ? AND idx = ?", (level, index)).fetchone()
        return row[0] if row and isinstance(row[0], bytes) else None   # merkle refuses one not 32 bytes

    def index_of(self, envelope_sha256: str) -> int | None:
        row = self.db.execute("SELECT idx FROM leaves WHERE envelope_sha256 = ?", (envelope_sha256,)).fetchone()
        return row[0] if row else None

    def append(self, index: int, leaf_hash: bytes, envelope_sha256: str, appended: str,
               nodes: list[tuple[int, int, bytes]], entry: dict[str, Any]) -> None:
        self.db.execute("INSERT INTO leaves (idx, leaf_hash, envelope_sha256, appended) VALUES (?, ?, ?, ?)",
                        (index, leaf_hash, envelope_sha256, appended))
        self.db.executemany("INSERT INTO nodes (level, idx, hash) VALUES (?, ?, ?)", nodes)
        self.db.execute(f"INSERT INTO entries (idx, {', '.join(ENTRY_FIELDS)}) VALUES "
                        f"(?{', ?' * len(ENTRY_FIELDS)})", (index, *(entry[f] for f in ENTRY_FIELDS)))

    def add_checkpoint(self, size: int, envelope: bytes) -> None:
        self.db.execute("INSERT INTO checkpoints (size, envelope) VALUES (?, ?)", (size, envelope))

    def leaves(self) -> Iterator[tuple[int, bytes, str, str]]:
        """(idx, leaf hash, envelope sha256, appended) in index order; DamagedRow for a row that
        cannot be the archive's."""
        for row in self.db.execute("SELECT idx, leaf_hash, envelope_sha256, appended FROM leaves ORDER BY idx"):
            yield self._leaf_row(row)

    @staticmethod
    def _leaf_row(row: tuple) -> tuple[int, bytes, str, str]:
        idx, leaf, sha, appended = row
        _count(idx, "a leaf index")
        if not isinstance(sha, str) or not _SHA256.match(sha):
            raise DamagedRow(idx, f"its envelope sha256 in the log is {sha!r:.80}, not 64 hex digits")
        return idx, _hash(leaf, idx, "its leaf hash in the log"), sha, str(appended)

    def leaf(self, index: int) -> tuple[int, bytes, str, str] | None:
        row = self.db.execute("SELECT idx, leaf_hash, envelope_sha256, appended FROM leaves WHERE idx = ?",
                              (index,)).fetchone()
        return self._leaf_row(row) if row else None

    def nodes(self) -> Iterator[tuple[int, int, bytes]]:
        for level, idx, value in self.db.execute("SELECT level, idx, hash FROM nodes ORDER BY level, idx"):
            _count(level, "a node's level", 62), _count(idx, "a node's index")
            yield level, idx, _hash(value, idx << level, f"node (level {level}, index {idx})")

    def checkpoints(self) -> Iterator[tuple[int, bytes]]:
        for size, envelope in self.db.execute("SELECT size, envelope FROM checkpoints ORDER BY size"):
            yield _count(size, "a checkpoint's size"), self._envelope(envelope, size)

    @staticmethod
    def _envelope(value: Any, size: int) -> bytes:
        if not isinstance(value, bytes):
            raise DamagedRow(max(size - 1, 0), f"the checkpoint of size {size} is {type(value).__name__}, not bytes")
        return value

    def checkpoint(self, size: int | None = None) -> tuple[int, bytes] | None:
        """The checkpoint of `size` entries, or the latest when `size` is None."""
        row = (self.db.execute("SELECT size, envelope FROM checkpoints ORDER BY size DESC LIMIT 1")
               if size is None else self.db.execute("SELECT size, envelope FROM checkpoints WHERE size = ?", (size,))
               ).fetchone()
        return (_count(row[0], "a checkpoint's size"), self._envelope(row[1], row[0])) if row else None

    def entry(self, index: int) -> dict[str, Any] | None:
        row = self.db.execute(f"SELECT idx, {', '.join(ENTRY_FIELDS)} FROM entries WHERE idx = ?", (index,)).fetchone()
        return dict(zip(("idx", *ENTRY_FIELDS), row)) if row else None

    def entries(self, board_serial: str | None = None, plan: str | None = None, verdict: str | None = None,
                since: str | None = None, until: str | None = None) -> Iterator[dict[str, Any]]:
        """Entries matching every filter given, in index order (`plan`: id or sha256; `since`/`until`
        compare ISO 8601 text, `until` inclusive of anything that starts with it)."""
        where, args = [], []
        if board_serial is not None:
            where.append("lower(board_serial) = lower(?)"); args.append(board_serial)
        if plan is not None:
            where.append("(plan_id = ? OR plan_sha256 = ?)"); args += [plan, plan]
        if verdict is not None:
            where.append("verdict = ?"); args.append(verdict.upper())
        if since is not None:
            where.append("run_started >= ?"); args.append(since)
        if until is not None:
            where.append("run_started < ?"); args.append(until + "\uffff")
        sql = f"SELECT idx, {', '.join(ENTRY_FIELDS)} FROM entries"
        sql += f" WHERE {' AND '.join(where)}" if where else ""
        for row in self.db.execute(sql + " ORDER BY idx", args):
            yield dict(zip(("idx", *ENTRY_FIELDS), row))
