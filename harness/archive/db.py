"""Every line of the archive's SQL, for its two databases: SQLite (`SqliteLog`, DIR/archive.db,
the default, nothing to set up) and PostgreSQL (`PostgresLog`, psycopg 3: one archive shared by
a lab's bench hosts). Both run the same statements (`_SqlLog`); each says only how it connects,
its schema's types and how an append takes the archive for itself. Nothing else speaks SQL.

Tables: `meta` (the archive id), `leaves` (idx, leaf hash, envelope sha256, appended time),
`nodes` (level, idx, hash: every complete subtree, harness/formats/merkle.py), `checkpoints`
(size, the signed envelope's bytes) and `entries` (the query index). An append is one
transaction taken before anything is read: SQLite's `BEGIN IMMEDIATE` (appenders serialise on
its write lock; WAL, synchronous=FULL: committed means on disk), PostgreSQL's transaction-scoped
advisory lock (appenders on every host serialise on the server). A crash leaves the whole entry
or none of it.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
import sqlite3
import urllib.parse
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ENTRY_FIELDS = ("run_id", "board_name", "board_serial", "product", "plan_id", "plan_sha256", "verdict",
                "keyid", "run_started")
TABLES = ("meta", "leaves", "nodes", "checkpoints", "entries")
BUSY_TIMEOUT_MS = 60_000  # how long an appender waits for another's transaction before it gives up
_SHA256 = re.compile(r"[0-9a-f]{64}\Z")   # \Z, not $: "$" also matches before a final newline


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


def database_errors() -> tuple[type[BaseException], ...]:
    """What a database can raise for a broken connection or store: sqlite3's, and psycopg's once
    it is loaded (it is imported only for a PostgreSQL archive)."""
    psycopg = sys.modules.get("psycopg")
    return (sqlite3.Error,) + ((psycopg.Error,) if psycopg else ())


class _SqlLog:
    """The statements both databases run, written with `?` parameters."""

    db: Any
    _PARAMETER = "?"   # how the driver writes a parameter

    def _query(self, sql: str, args: tuple | list = ()) -> Any:
        return self.db.execute(sql.replace("?", self._PARAMETER), args)

    def _query_many(self, sql: str, rows: list[tuple]) -> None:
        self.db.cursor().executemany(sql.replace("?", self._PARAMETER), rows)

    def close(self) -> None:
        self.db.close()

    def meta(self, key: str) -> str | None:
        row = self._query("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def set_meta_once(self, key: str, value: str) -> None:
        self._query("INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT DO NOTHING", (key, value))

    def size(self) -> int:
        """The next entry's index: one past the highest (an index lookup; COUNT(*) is a scan of
        every row in PostgreSQL, on each append)."""
        return self._query("SELECT COALESCE(MAX(idx) + 1, 0) FROM leaves").fetchone()[0]

    def node(self, level: int, index: int) -> bytes | None:
        row = self._query("SELECT hash FROM nodes WHERE level = ? AND idx = ?", (level, index)).fetchone()
        return row[0] if row and isinstance(row[0], bytes) else None   # merkle refuses one not 32 bytes

    def nodes_at(self, keys: list[tuple[int, int]]) -> dict[tuple[int, int], bytes]:
        """Those of the (level, idx) `keys` the log holds, in one query (at most 63 keys)."""
        if not keys:
            return {}
        where = " OR ".join(["(level = ? AND idx = ?)"] * len(keys))
        rows = self._query(f"SELECT level, idx, hash FROM nodes WHERE {where}", [v for key in keys for v in key])
        return {(level, idx): value for level, idx, value in rows if isinstance(value, bytes)}

    def index_of(self, envelope_sha256: str) -> int | None:
        row = self._query("SELECT idx FROM leaves WHERE envelope_sha256 = ?", (envelope_sha256,)).fetchone()
        return row[0] if row else None

    def append(self, index: int, leaf_hash: bytes, envelope_sha256: str, appended: str,
               nodes: list[tuple[int, int, bytes]], entry: dict[str, Any]) -> None:
        self._query("INSERT INTO leaves (idx, leaf_hash, envelope_sha256, appended) VALUES (?, ?, ?, ?)",
                    (index, leaf_hash, envelope_sha256, appended))
        self._query_many("INSERT INTO nodes (level, idx, hash) VALUES (?, ?, ?)", nodes)
        self._query(f"INSERT INTO entries (idx, {', '.join(ENTRY_FIELDS)}) VALUES "
                    f"(?{', ?' * len(ENTRY_FIELDS)})", (index, *(entry[f] for f in ENTRY_FIELDS)))

    def add_checkpoint(self, size: int, envelope: bytes) -> None:
        self._query("INSERT INTO checkpoints (size, envelope) VALUES (?, ?)", (size, envelope))

    def leaves(self) -> Iterator[tuple[int, bytes, str, str]]:
        """(idx, leaf hash, envelope sha256, appended) in index order; DamagedRow for a row that
        cannot be the archive's."""
        for row in self._query("SELECT idx, leaf_hash, envelope_sha256, appended FROM leaves ORDER BY idx"):
            yield self._leaf_row(row)

    @staticmethod
    def _leaf_row(row: tuple) -> tuple[int, bytes, str, str]:
        idx, leaf, sha, appended = row
        _count(idx, "a leaf index")
        if not isinstance(sha, str) or not _SHA256.match(sha):
            raise DamagedRow(idx, f"its envelope sha256 in the log is {sha!r:.80}, not 64 hex digits")
        return idx, _hash(leaf, idx, "its leaf hash in the log"), sha, str(appended)

    def leaf(self, index: int) -> tuple[int, bytes, str, str] | None:
        row = self._query("SELECT idx, leaf_hash, envelope_sha256, appended FROM leaves WHERE idx = ?",
                          (index,)).fetchone()
        return self._leaf_row(row) if row else None

    def nodes(self) -> Iterator[tuple[int, int, bytes]]:
        for level, idx, value in self._query("SELECT level, idx, hash FROM nodes ORDER BY level, idx"):
            _count(level, "a node's level", 62), _count(idx, "a node's index")
            yield level, idx, _hash(value, idx << level, f"node (level {level}, index {idx})")

    def checkpoints(self) -> Iterator[tuple[int, bytes]]:
        for size, envelope in self._query("SELECT size, envelope FROM checkpoints ORDER BY size"):
            yield _count(size, "a checkpoint's size"), self._envelope(envelope, size)

    @staticmethod
    def _envelope(value: Any, size: int) -> bytes:
        if not isinstance(value, bytes):
            raise DamagedRow(max(size - 1, 0), f"the checkpoint of size {size} is {type(value).__name__}, not bytes")
        return value

    def checkpoint(self, size: int | None = None) -> tuple[int, bytes] | None:
        """The checkpoint of `size` entries, or the latest when `size` is None."""
        row = (self._query("SELECT size, envelope FROM checkpoints ORDER BY size DESC LIMIT 1")
               if size is None else self._query("SELECT size, envelope FROM checkpoints WHERE size = ?", (size,))
               ).fetchone()
        return (_count(row[0], "a checkpoint's size"), self._envelope(row[1], row[0])) if row else None

    def entry(self, index: int) -> dict[str, Any] | None:
        row = self._query(f"SELECT idx, {', '.join(ENTRY_FIELDS)} FROM entries WHERE idx = ?", (index,)).fetchone()
        return dict(zip(("idx", *ENTRY_FIELDS), row)) if row else None

    def entries(self, board_serial: str | None = None, plan: str | None = None, verdict: str | None = None,
                since: str | None = None, until: str | None = None) -> Iterator[dict[str, Any]]:
        """Entries matching every filter given, in index order (`plan`: id or sha256; `since`/`until`
        compare ISO 8601 text, `until` inclusive of anything that starts with it).

        Filtered here, over the very rows `verify` reads (one scan in index order), never by a
        WHERE: a query the planner answers from a secondary index reads that index's b-tree,
        which verify does not check, and a forged one (or forged planner statistics) hides rows."""
        wanted = {"board_serial": board_serial and _ascii_lower(board_serial), "plan": plan,
                  "verdict": verdict and verdict.upper(), "since": since,
                  "until": until + "\uffff" if until is not None else None}
        for row in self._query(f"SELECT idx, {', '.join(ENTRY_FIELDS)} FROM entries ORDER BY idx"):
            entry = dict(zip(("idx", *ENTRY_FIELDS), row))
            if _matches(entry, **wanted):
                yield entry


def _ascii_lower(text: str) -> str:
    """SQL's lower() (SQLite's, PostgreSQL's under COLLATE "C"): A-Z only."""
    return text.translate(_ASCII_LOWER)


_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def _matches(entry: dict[str, Any], board_serial: str | None, plan: str | None, verdict: str | None,
             since: str | None, until: str | None) -> bool:
    """An index row against `entries`' filters; text compared by code point (= UTF-8 bytes, as
    SQLite and COLLATE "C" compare); a value that is not text (a damaged row) matches no filter."""
    text = {field: value for field, value in entry.items() if isinstance(value, str)}
    started = text.get("run_started")
    return ((board_serial is None or _ascii_lower(text.get("board_serial", "\0")) == board_serial)
            and (plan is None or plan in (text.get("plan_id"), text.get("plan_sha256")))
            and (verdict is None or text.get("verdict") == verdict)
            and (since is None or (started is not None and started >= since))
            and (until is None or (started is not None and started < until)))


_SQLITE_SCHEMA = """
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


class SqliteLog(_SqlLog):
    """The archive's database in `path` (created when missing). `read_only`: opened for reading
    only, so that an auditor's copy on read-only media (or a read-only mount) verifies; on a
    read-only file system where SQLite cannot take its shared-memory lock, as immutable."""

    def __init__(self, path: Path, read_only: bool = False) -> None:
        self.path = path
        if read_only:
            self.db = self._open_read_only(path)
            return
        self.db = sqlite3.connect(path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None)
        self.db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        self.db.execute("PRAGMA journal_mode = WAL")
        self.db.execute("PRAGMA synchronous = FULL")
        with self.transaction():
            for statement in filter(str.strip, _SQLITE_SCHEMA.split(";")):
                self.db.execute(statement)

    @staticmethod
    def _open_read_only(path: Path) -> sqlite3.Connection:
        uri = f"file:{urllib.parse.quote(str(path.resolve()))}"
        last: sqlite3.Error | None = None
        for mode in ("mode=ro", "mode=ro&immutable=1"):
            wal = path.with_name(path.name + "-wal")
            if "immutable" in mode and wal.exists() and wal.stat().st_size:
                # Immutable reads ignore the write-ahead log: they would show an older archive.
                raise sqlite3.OperationalError(
                    f"{path}: cannot open for reading: {last}; and {wal.name} holds changes that a read-only "
                    f"open cannot see: verify a copy on writable storage")
            try:
                db = sqlite3.connect(f"{uri}?{mode}", uri=True, timeout=BUSY_TIMEOUT_MS / 1000,
                                     isolation_level=None)
                db.execute("SELECT count(*) FROM meta").fetchone()  # opens the file for real
                return db
            except sqlite3.OperationalError as exc:  # a WAL database on a read-only file system
                last = exc
        raise sqlite3.OperationalError(f"{path}: cannot open for reading: {last}")

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

    @contextlib.contextmanager
    def snapshot(self) -> Iterator[None]:
        """Reads that see one state of the log, whatever appenders commit meanwhile (WAL)."""
        self.db.execute("BEGIN")
        try:
            yield
        finally:
            self.db.execute("ROLLBACK")

    def catalog_problem(self) -> str | None:
        """Why the names the archive reads might not be its plain tables (a view answers as its
        SQL pleases, and not always alike); None when all five are tables."""
        kinds = dict(self._query(f"SELECT name, type FROM sqlite_master WHERE name IN ({', '.join('?' * len(TABLES))})",
                                 TABLES).fetchall())
        odd = [f"{name} is {kinds.get(name) or 'missing'}" for name in TABLES if kinds.get(name) != "table"]
        return f"not the archive's own tables ({', '.join(odd)})" if odd else None


# Text compares byte by byte (COLLATE "C"), as in SQLite, whatever the server's locale: the
# order of `ORDER BY` text is the order `list` filters by. BIGINT: an index can pass 2**31.
_POSTGRES_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS leaves (idx BIGINT PRIMARY KEY, leaf_hash BYTEA NOT NULL,
    envelope_sha256 TEXT NOT NULL UNIQUE, appended TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS nodes (level INTEGER NOT NULL, idx BIGINT NOT NULL, hash BYTEA NOT NULL,
    PRIMARY KEY (level, idx));
CREATE TABLE IF NOT EXISTS checkpoints (size BIGINT PRIMARY KEY, envelope BYTEA NOT NULL);
CREATE TABLE IF NOT EXISTS entries (idx BIGINT PRIMARY KEY, run_id TEXT COLLATE "C", board_name TEXT COLLATE "C",
    board_serial TEXT COLLATE "C", product TEXT COLLATE "C", plan_id TEXT COLLATE "C", plan_sha256 TEXT COLLATE "C",
    verdict TEXT COLLATE "C", keyid TEXT COLLATE "C", run_started TEXT COLLATE "C");
CREATE INDEX IF NOT EXISTS entries_serial ON entries (lower(board_serial));
CREATE INDEX IF NOT EXISTS entries_plan ON entries (plan_id);
CREATE INDEX IF NOT EXISTS entries_started ON entries (run_started);
"""
# Every appender, on every host, takes this transaction-scoped lock first: one append at a time
# per database, released by the server at COMMIT, ROLLBACK or when the appender's connection dies.
_APPEND_LOCK = int.from_bytes(hashlib.sha256(b"attestlab archive append").digest()[:8], "big", signed=True)
CONNECT_TIMEOUT_S = 10


def _psycopg() -> Any:
    try:
        import psycopg
    except ImportError:
        raise ValueError("a PostgreSQL archive needs psycopg 3: pip install 'attestlab[postgres]'") from None
    return psycopg


def redacted(url: str) -> str:
    """`url` (a libpq URL or key=value string) without its password: what may be written down or
    shown. ValueError when libpq cannot parse it."""
    conninfo = _psycopg().conninfo
    try:
        params = conninfo.conninfo_to_dict(url)
    except Exception as exc:   # psycopg.ProgrammingError: libpq's own message, less the URL it quotes
        reason = re.sub(r'"[^"]*://[^"]*"', '"…"', str(exc).strip())
        raise ValueError(f"not a PostgreSQL URL or conninfo string: {reason}") from None
    params.pop("password", None)
    return conninfo.make_conninfo(**params)


class PostgresLog(_SqlLog):
    """The archive's database on a PostgreSQL server (`url`: libpq's, its password from
    PGPASSFILE or the environment). `create`: make the tables when missing."""

    def __init__(self, url: str, create: bool = False) -> None:
        psycopg = _psycopg()
        self.url = redacted(url)
        try:
            self.db = psycopg.connect(url, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S,
                                      options=f"-c lock_timeout={BUSY_TIMEOUT_MS} "
                                              f"-c idle_in_transaction_session_timeout={BUSY_TIMEOUT_MS}")
        except psycopg.Error as exc:
            raise ConnectionError(f"PostgreSQL {self.url}: cannot connect: {str(exc).strip()}") from None
        if create:
            with self.transaction():   # under the lock: two hosts creating at once do not collide
                for statement in filter(str.strip, _POSTGRES_SCHEMA.split(";")):
                    self.db.execute(statement)

    _PARAMETER = "%s"

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        """One write transaction holding the archive's append lock before anything is read."""
        with self.db.transaction():
            self.db.execute("SELECT pg_advisory_xact_lock(%s)", (_APPEND_LOCK,))
            yield

    @contextlib.contextmanager
    def snapshot(self) -> Iterator[None]:
        """Reads that see one state of the log, whatever other hosts commit meanwhile."""
        with self.db.transaction():
            self.db.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            yield

    def catalog_problem(self) -> str | None:
        """Why the names the archive reads might not answer alike for `verify` and for `list` or
        `show`: a view, row-level security or a rule can answer by transaction, role or time, a
        schema ahead of pg_catalog can redefine `=` or max(). None when all five are plain tables
        read without a policy or a rule. Every name here is pg_catalog's, spelt out for that reason."""
        first = self.db.execute("SELECT (pg_catalog.current_schemas(true))[1]").fetchone()[0]
        if first != "pg_catalog":
            return f"the search_path puts schema {first!r:.60} ahead of pg_catalog"
        odd = []
        for name, kind, secured, rules in self.db.execute(
                "SELECT t.name, c.relkind, c.relrowsecurity, EXISTS (SELECT 1 FROM pg_catalog.pg_rewrite r "
                "WHERE r.ev_class OPERATOR(pg_catalog.=) c.oid) FROM pg_catalog.unnest(%s::pg_catalog.text[]) "
                "AS t(name) LEFT JOIN pg_catalog.pg_class c ON c.oid OPERATOR(pg_catalog.=) "
                "pg_catalog.to_regclass(t.name)", (list(TABLES),)):
            if kind != "r":
                odd.append(f"{name} is {'missing' if kind is None else f'of relkind {kind!r}'}")
            elif secured or rules:
                odd.append(f"{name} has {'row-level security' if secured else 'a rule'}")
        return f"not the archive's own tables ({', '.join(odd)})" if odd else None

    def has_tables(self) -> bool:
        return self.db.execute("SELECT to_regclass('meta') IS NOT NULL").fetchone()[0]
