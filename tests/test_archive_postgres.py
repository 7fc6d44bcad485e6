"""The archive on PostgreSQL (issue #17 part 5): a lab's bench hosts append to one log kept by a
real server, the blobs in the shared directory. Append, list, show, proof and verify through the
command line with --archive-db; parallel appender processes; kill -9 inside an append; tampering
with the rows; a directory and another archive's database refused together.

The server is a throwaway cluster (`throwaway_cluster`: initdb and pg_ctl in a temporary directory,
a Unix socket there and no TCP, fsync off), started once for the module and removed at its end;
as root it runs as the `postgres` user (initdb refuses root). Each test has its own database."""

from __future__ import annotations

import contextlib
import glob
import hashlib
import itertools
import json
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.archive.checkpoint import verify_inclusion_file
from harness.archive.store import DB_POINTER, Archive, ArchiveCorrupt, ArchiveError
from harness.cli import archive_problem_before_run, archive_result, build_parser, main
from harness.formats import merkle

from conftest import ROOT, TEST_KEY, TEST_PUB, attestlab
from test_archive import KEY, PUB, VERDICTS, flip, make_result

psycopg = pytest.importorskip("psycopg", reason="psycopg 3 is not installed (pip install 'attestlab[postgres]')")


class ClusterUnavailable(RuntimeError):
    """No PostgreSQL server can be started here; the message says what is missing."""


def _server_binaries() -> Path | None:
    """The newest installed PostgreSQL's bin directory (Debian: /usr/lib/postgresql/N/bin), else
    the one on PATH."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    initdb = found[-1] if found else shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def _server_user() -> list[str]:
    """The command prefix that runs the server unprivileged: none unless we are root."""
    if os.geteuid() != 0:
        return []
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        raise ClusterUnavailable("running as root, and there is no `postgres` user to run the server as "
                                 "(initdb refuses root)") from None
    if not shutil.which("runuser"):
        raise ClusterUnavailable("running as root, and there is no `runuser` to start the server as `postgres`")
    return ["runuser", "-u", "postgres", "--"]


@contextlib.contextmanager
def throwaway_cluster(durable: bool = False) -> Iterator[str]:
    """A PostgreSQL server of our own for as long as the block runs: a new cluster in a temporary
    directory, listening only on a Unix socket in it; the libpq URL of its `postgres` database.
    Stopped (immediate) and removed afterwards, whatever happened. Not `durable` (tests): no
    fsync, a commit is not flushed; `durable` (benchmarks/archive_postgres.py): as a lab's server."""
    binaries = _server_binaries()
    if binaries is None:
        raise ClusterUnavailable("no PostgreSQL server binaries (initdb, pg_ctl): install Debian's `postgresql` "
                                 "package (scripts/setup.sh does)")
    as_user = _server_user()
    home = Path(tempfile.mkdtemp(prefix="attestlab-pg-"))   # short: a socket path has ~100 bytes at most
    data = home / "data"
    try:
        if as_user:
            owner = pwd.getpwnam("postgres")
            os.chown(home, owner.pw_uid, owner.pw_gid)
        subprocess.run([*as_user, str(binaries / "initdb"), "-D", str(data), "-U", "attestlab", "--auth=trust",
                        "--no-sync", "--no-locale", "-E", "UTF8"], check=True, capture_output=True, timeout=120)
        settings = f"-c listen_addresses='' -c unix_socket_directories={home} -c max_connections=40"
        settings += "" if durable else " -c fsync=off -c full_page_writes=off -c synchronous_commit=off"
        started = subprocess.run([*as_user, str(binaries / "pg_ctl"), "-D", str(data), "-l", str(home / "log"),
                                  "-w", "-t", "60", "-o", settings, "start"], capture_output=True, text=True,
                                 timeout=90)
        if started.returncode:
            log = (home / "log").read_text(errors="replace") if (home / "log").exists() else ""
            raise RuntimeError(f"pg_ctl start failed: {started.stderr}{log[-2000:]}")
        try:
            yield f"postgresql://attestlab@/postgres?host={home}"
        finally:
            subprocess.run([*as_user, str(binaries / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
                           capture_output=True, timeout=60)
    finally:
        shutil.rmtree(home, ignore_errors=True)


def _unavailable() -> str | None:
    try:
        if _server_binaries() is None:
            raise ClusterUnavailable("no PostgreSQL server binaries (initdb, pg_ctl): install Debian's "
                                     "`postgresql` package (scripts/setup.sh does)")
        _server_user()
    except ClusterUnavailable as exc:
        return str(exc)
    return None


pytestmark = pytest.mark.skipif(_unavailable() is not None, reason=f"no PostgreSQL server: {_unavailable()}")
_NAMES = itertools.count()


@pytest.fixture(scope="module")
def cluster() -> Iterator[str]:
    with throwaway_cluster() as url:
        yield url


def sql(url: str, statement: str, *args) -> list[tuple]:
    with psycopg.connect(url, autocommit=True) as db:
        cursor = db.execute(statement, args)
        return cursor.fetchall() if cursor.description else []


def new_database(cluster: str, template: str | None = None) -> str:
    """A new database of the cluster (a copy of `template`'s when given); its URL."""
    name = f"archive_{next(_NAMES)}"
    sql(cluster, f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{template}"' if template else ""))
    return cluster.replace("/postgres?", f"/{name}?")


def database_name(url: str) -> str:
    return url.split("?")[0].rsplit("/", 1)[1]


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> list[Path]:
    out = tmp_path_factory.mktemp("pg-results")
    return [make_result(out, n, VERDICTS[n]) for n in range(6)]


@pytest.fixture(scope="module")
def pristine(tmp_path_factory, cluster, results) -> tuple[Path, str]:
    """An archive of six entries: its directory and its database (copied for each test that damages it)."""
    url = new_database(cluster)
    directory = tmp_path_factory.mktemp("pg-archives") / "pristine"
    with Archive(directory, create=True, db=url) as archive:
        assert [archive.append(r, KEY) for r in results] == list(range(6))
    return directory, url


@pytest.fixture
def copied(pristine, cluster, tmp_path) -> tuple[Path, str]:
    """A copy of the pristine archive: directory and database."""
    directory, url = pristine
    shutil.copytree(directory, tmp_path / "archive")
    return tmp_path / "archive", new_database(cluster, template=database_name(url))


def cli(capsys, *args: str) -> tuple[int, str, str]:
    """The command line in this process (psycopg is loaded already): exit status, stdout, stderr."""
    status = main(list(args))
    out, err = capsys.readouterr()
    return status, out, err


def test_cli_append_list_show_proof_verify_with_archive_db(cluster, results, tmp_path, capsys, monkeypatch):
    url = new_database(cluster)
    with_password = url.replace("attestlab@", "attestlab:not-for-the-directory@")  # the server trusts the socket
    archive = str(tmp_path / "archive")
    added = attestlab("archive", "add", archive, str(results[0]), "--key", str(TEST_KEY), "--archive-db", with_password)
    assert added.returncode == 0 and "as entry 0" in added.stdout, added.stderr
    pointer = (tmp_path / "archive" / DB_POINTER).read_text()
    assert "not-for-the-directory" not in pointer and json.loads(pointer)["archive_id"] == sql(
        url, "SELECT value FROM meta WHERE key = 'archive_id'")[0][0]
    assert not (tmp_path / "archive" / "archive.db").exists()   # the log is in the server, not beside the blobs
    monkeypatch.setenv("ATTESTLAB_ARCHIVE_DB", url)
    status, out, err = cli(capsys, "archive", "add", archive, *(str(r) for r in results[1:5]), "--key", str(TEST_KEY))
    assert status == 0 and "entries 1..4" in out, err
    monkeypatch.delenv("ATTESTLAB_ARCHIVE_DB")
    # the run's own path: opened before the board is touched, appended at the end
    args = build_parser().parse_args(["run", "--plan", "p", "--board", "b", "--key", str(TEST_KEY), "--archive",
                                      archive, "--archive-db", url])
    assert archive_problem_before_run(args.archive, args.archive_db) is None
    assert archive_result(args.archive, results[5], str(TEST_KEY), args.archive_db) is None
    status, out, err = cli(capsys, "archive", "list", archive, "--verdict", "FAIL", "--until", "2026-11-02",
                           "--archive-db", url)
    assert status == 0 and "1 of 6 entries" in out and "board-1" in out, err
    status, out, err = cli(capsys, "archive", "show", archive, "3")   # the directory remembers its database
    assert status == 0 and "verdict: ERROR" in out and "run_id: run-3" in out, err
    proof = tmp_path / "proof.json"
    assert cli(capsys, "archive", "proof", archive, "4", "--pubkey", str(TEST_PUB), "--out", str(proof))[0] == 0
    status, out, err = cli(capsys, "verify", str(results[4]), "--pubkey", str(TEST_PUB), "--proof", str(proof))
    assert status == 0 and "archived: entry 4" in out and "tree of 6" in out, err
    status, out, err = cli(capsys, "archive", "verify", archive, "--pubkey", str(TEST_PUB), "--archive-db", url,
                           "--held", str(proof))
    assert status == 0 and "6 entries, 6 signed checkpoints, 13 blobs" in out, err
    with Archive(archive) as opened:
        assert opened.verify(PUB).root == merkle.root_of([r.read_bytes() for r in results])  # as SQLite's would be


def _swap_checkpoints(url: str, a: int, b: int) -> None:
    sql(url, "UPDATE checkpoints SET envelope = CASE size WHEN %s THEN (SELECT envelope FROM checkpoints WHERE "
             "size = %s) ELSE (SELECT envelope FROM checkpoints WHERE size = %s) END WHERE size IN (%s, %s)",
        a, b, a, a, b)


_ZERO = "decode(repeat('00', 32), 'hex')"
TAMPERS = {
    # name: (damage to (directory, url), the entry verify must name, words in its message)
    "leaf hash row": (lambda d, u: sql(u, f"UPDATE leaves SET leaf_hash = {_ZERO} WHERE idx = 4"), 4, "leaf hash"),
    "interior node": (lambda d, u: sql(u, f"UPDATE nodes SET hash = {_ZERO} WHERE level = 1 AND idx = 1"), 2,
                      "not the hash of its children"),
    "index row verdict": (lambda d, u: sql(u, "UPDATE entries SET verdict = 'PASS' WHERE idx = 5"), 5, "verdict"),
    "middle entry removed": (lambda d, u: sql(u, "DELETE FROM leaves WHERE idx = 2"), 2, "missing"),
    "checkpoints swapped": (lambda d, u: _swap_checkpoints(u, 3, 4), 2, "swapped"),
    "checkpoint removed": (lambda d, u: sql(u, "DELETE FROM checkpoints WHERE size = 3"), 2, "is missing"),
    # red team (tests/test_archive_redteam.py): what `archive list|show` print, held to what was signed
    "index row for no entry": (lambda d, u: sql(u, "INSERT INTO entries SELECT -1, run_id, 'forged', board_serial, "
                                                   "product, plan_id, plan_sha256, 'PASS', keyid, run_started FROM "
                                                   "entries WHERE idx = 0"), 0, "row for entry -1,"),
    "append time back-dated": (lambda d, u: sql(u, "UPDATE leaves SET appended = '2020-01-01T00:00:00+00:00' "
                                                   "WHERE idx = 2"), 2, "append time"),
    "envelope blob byte": (lambda d, u: flip(d / "blobs" / sql(u, "SELECT envelope_sha256 FROM leaves WHERE idx = 3")
                                             [0][0]), 3, "was changed"),
}


@pytest.mark.parametrize("name", TAMPERS)
def test_tampering_with_the_database_is_found_naming_the_first_entry(copied, name, capsys):
    directory, url = copied
    damage, entry, words = TAMPERS[name]
    damage(directory, url)
    with Archive(directory, db=url) as archive, pytest.raises(ArchiveCorrupt) as caught:
        archive.verify(PUB)
    assert caught.value.entry == entry and words in str(caught.value), str(caught.value)
    if name == "leaf hash row":
        status, _, err = cli(capsys, "archive", "verify", str(directory), "--pubkey", str(TEST_PUB),
                             "--archive-db", url)
        assert status == 1 and "NOT VERIFIED" in err and "entry 4:" in err, err


def test_four_appender_processes_lose_nothing_and_take_no_index_twice(cluster, tmp_path):
    envelopes = [make_result(tmp_path / "r", 300 + n, VERDICTS[n % 6]) for n in range(40)]
    url, archive = new_database(cluster), tmp_path / "archive"
    script = ("import sys\nfrom harness.cli import main\n"
              "sys.exit(max(main(['archive', 'add', sys.argv[1], e, '--key', sys.argv[2], '--archive-db', sys.argv[3]])"
              " for e in sys.argv[4:]))")
    procs = [subprocess.Popen([sys.executable, "-c", script, str(archive), str(TEST_KEY), url,
                               *(str(e) for e in envelopes[w::4])], cwd=ROOT, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for w in range(4)]
    for proc in procs:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
    assert sql(url, "SELECT idx FROM leaves ORDER BY idx") == [(i,) for i in range(40)]
    with Archive(archive, db=url) as opened:
        verified = opened.verify(PUB)
        assert (verified.size, verified.checkpoints) == (40, 40)
        assert sorted(e["run_id"] for e in opened.log.entries()) == sorted(f"run-{300 + n}" for n in range(40))
        for index in range(40):
            document = opened.inclusion(index, PUB)   # checked before it is given, and again here
            verify_inclusion_file(opened.envelope_path(index).read_bytes(), document, PUB)


def test_kill_9_inside_an_append_transaction_leaves_a_verifiable_archive(copied, tmp_path):
    directory, url = copied
    mark, new = tmp_path / "mark", make_result(tmp_path / "new", 9)
    proc = subprocess.Popen([sys.executable, "-m", "harness.cli", "archive", "add", str(directory), str(new),
                             "--key", str(TEST_KEY), "--archive-db", url], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "ATTESTLAB_ARCHIVE_PAUSE": "transaction",
                                 "ATTESTLAB_ARCHIVE_MARK": str(mark)})
    deadline = time.monotonic() + 60
    while not mark.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the append never reached its transaction"
        time.sleep(0.02)
    assert sql(url, "SELECT COUNT(*) FROM leaves") == [(6,)]   # uncommitted: no other session sees it
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=30)
    with Archive(directory, db=url) as archive:
        assert archive.verify(PUB).size == 6   # the entry is wholly absent
        assert archive.log.index_of(hashlib.sha256(new.read_bytes()).hexdigest()) is None
        assert archive.append(new, KEY) == 6   # the server released the lock when the appender died
        assert archive.verify(PUB).size == 7


def test_a_directory_and_another_archives_database_are_refused(cluster, pristine, results, tmp_path, capsys):
    directory, url = pristine
    other = new_database(cluster)
    with Archive(tmp_path / "other", create=True, db=other) as archive:
        archive.append(results[0], KEY)
    for first, second in ((directory, other), (tmp_path / "other", url)):
        with pytest.raises(ArchiveError, match="different archives are never used together"):
            Archive(first, db=second)
        status, _, err = cli(capsys, "archive", "list", str(first), "--archive-db", second)
        assert status == 2 and "different archives" in err, err
    with pytest.raises(ArchiveError, match="with 6 entries, whose blobs are not in"):
        Archive(tmp_path / "new", create=True, db=url)   # a new directory: only for a new (or empty) archive
    assert not (tmp_path / "new" / DB_POINTER).exists()
    with Archive(tmp_path / "sqlite", create=True):
        pass
    with pytest.raises(ArchiveError, match="a SQLite archive"):
        Archive(tmp_path / "sqlite", db=url)
    with pytest.raises(ArchiveError, match="no archive here"):
        Archive(tmp_path / "nothing", db=url)
    sql(other, "UPDATE meta SET value = %s WHERE key = 'archive_id'", "0" * 64)   # the database's id rewritten
    with pytest.raises(ArchiveError, match="holds archive 0000000000000000"):
        Archive(tmp_path / "other")
    (tmp_path / "other" / DB_POINTER).write_text('{"type": "https://attestlab.dev/ArchiveDatabase/v1"}')
    with pytest.raises(ArchiveError, match="damaged"):
        Archive(tmp_path / "other")


def test_an_append_only_role_appends_and_a_select_only_role_verifies(copied, tmp_path):
    directory, url = copied
    for role, grant in (("bench", "SELECT, INSERT"), ("auditor", "SELECT")):
        sql(url, f"CREATE ROLE {role} LOGIN")
        sql(url, f"GRANT {grant} ON meta, leaves, nodes, checkpoints, entries TO {role}")
    bench, auditor = (url.replace("attestlab@", f"{role}@") for role in ("bench", "auditor"))
    new = make_result(tmp_path / "new", 9)
    with Archive(directory, create=True, db=bench) as archive:   # a bench host: no DDL once paired
        assert archive.append(new, KEY) == 6
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        sql(bench, "DELETE FROM leaves WHERE idx = 6")   # what an append-only role cannot do
    with Archive(directory, db=auditor) as archive:
        assert archive.verify(PUB).size == 7
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            archive.append(make_result(tmp_path / "other", 10), KEY)
    assert sql(url, "SELECT COUNT(*) FROM leaves") == [(7,)]


def _row_policy(url: str) -> str:
    """Entry 3 hidden from every read but verify's (REPEATABLE READ): a policy; the reader's URL."""
    role = f"reader_{next(_NAMES)}"
    sql(url, f"CREATE ROLE {role} LOGIN")
    sql(url, f"GRANT SELECT ON meta, leaves, nodes, checkpoints, entries TO {role}")
    sql(url, "ALTER TABLE entries ENABLE ROW LEVEL SECURITY")
    sql(url, "CREATE POLICY hide ON entries USING (idx <> 3 OR current_setting('transaction_isolation') = "
             "'repeatable read')")
    return url.replace("attestlab@", f"{role}@")


def _shadowing_view(url: str) -> str:
    """The same, by a view of that name in a schema the database's search_path reads first."""
    sql(url, "CREATE SCHEMA shadow")
    sql(url, "CREATE VIEW shadow.entries AS SELECT * FROM public.entries WHERE idx <> 3 OR "
             "current_setting('transaction_isolation') = 'repeatable read'")
    sql(url, f'ALTER DATABASE "{database_name(url)}" SET search_path = pg_catalog, shadow, public')
    return url


@pytest.mark.parametrize("trick", [_row_policy, _shadowing_view])
def test_a_policy_or_a_view_cannot_make_list_read_other_rows_than_verify(copied, trick):
    """Red team: whoever owns the tables can make `list` and `show` see rows other than `verify`'s
    snapshot does. verify now refuses a database where the archive's names are not plain tables
    read without a policy or a rule, or where a schema comes before pg_catalog."""
    directory, url = copied
    reader = trick(url)
    with Archive(directory, db=reader) as archive:
        assert 3 not in [e["idx"] for e in archive.log.entries()]   # what `archive list` would show
        with pytest.raises(ArchiveCorrupt, match="not the archive's own tables"):
            archive.verify(PUB)
    sql(url, "CREATE SCHEMA IF NOT EXISTS shadow")
    sql(url, f'ALTER DATABASE "{database_name(url)}" SET search_path = shadow, pg_catalog, public')
    with Archive(directory, db=url) as archive, pytest.raises(ArchiveCorrupt, match="ahead of pg_catalog"):
        archive.verify(PUB)
