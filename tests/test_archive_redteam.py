"""Red team of the archive (issue #17): someone who can write the archive directory and its
database, but not the lab's key, tries to make `archive verify` pass an archive that shows
(`archive list|show`) something the lab did not sign. Each way found is a test here; the fix
is in harness/archive/store.py (verify checks it).

One archive of three real signed results is built once per module (`pristine`) and copied for
each test (test_archive.py's `archive_dir`)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from harness.archive.checkpoint import ProofFileError, verify_inclusion_file
from harness.archive.store import Archive, ArchiveCorrupt

from test_archive import KEY, PUB, archive_dir, failure, make_result, sql  # noqa: F401 - archive_dir: a fixture
from conftest import attestlab


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("redteam-results")
    directory = tmp_path_factory.mktemp("redteam") / "pristine"
    with Archive(directory, create=True) as archive:
        archive.append_many([make_result(out, n) for n in range(3)], KEY)
    return directory


def _copy_row(directory: Path, to: int) -> None:
    sql(directory, "INSERT INTO entries SELECT ?, run_id, 'forged-board', board_serial, product, plan_id, "
                   "plan_sha256, 'PASS', keyid, run_started FROM entries WHERE idx = 0", to)


@pytest.mark.parametrize("to, entry", [(3, 3), (1000, 3), (-1, 0)])
def test_an_index_row_for_no_entry_is_found_not_listed_as_verified(archive_dir, to, entry):
    """`archive list` shows every row of the index: one for no entry (past the log's end, or a
    negative index the merge of rows and leaves used to skip) was listed by a verified archive."""
    _copy_row(archive_dir, to)
    listed = attestlab("archive", "list", str(archive_dir))
    assert "forged-board" in listed.stdout      # what the forgery would show
    caught = failure(archive_dir)
    assert caught.entry == entry and f"row for entry {to}," in str(caught)


def test_an_index_row_for_no_entry_is_found_on_two_processes(archive_dir):
    _copy_row(archive_dir, 7)
    assert str(failure(archive_dir, jobs=2)) == str(failure(archive_dir, jobs=1))


@pytest.mark.parametrize("appended", ["2020-01-01T00:00:00+00:00", "\x1b[2Jyesterday"])
def test_a_back_dated_append_time_is_found(archive_dir, appended):
    """`archive show` prints each leaf's `appended` time: it is the time the lab's key signed in
    the checkpoint its append made, and verify holds it to that."""
    sql(archive_dir, "UPDATE leaves SET appended = ? WHERE idx = 1", appended)
    caught = failure(archive_dir)
    assert caught.entry == 1 and "append time" in str(caught)
    assert str(failure(archive_dir, jobs=2)) == str(caught)


def test_the_pristine_archive_verifies_and_its_append_times_are_its_checkpoints(archive_dir):
    with Archive(archive_dir) as archive:
        assert archive.verify(PUB, jobs=1).size == 3


@pytest.mark.parametrize("field, damage", [("audit_path", lambda p: [p[0] + "\n", *p[1:]]),
                                           ("audit_path", lambda p: [" " + p[0], *p[1:]]),
                                           ("leaf", lambda sha: sha + "\n")])
def test_a_proof_is_refused_unless_written_exactly_as_attestlab_writes_it(archive_dir, field, damage):
    """A hash with a final newline passed `^…$` and bytes.fromhex skips blanks: `verify --proof`
    took text attestlab never writes. Hashes are 64 lower-case hex digits and nothing else."""
    with Archive(archive_dir) as archive:
        proof = archive.inclusion(1, PUB)
        envelope = archive.envelope_path(1).read_bytes()
    verify_inclusion_file(envelope, proof, PUB)
    proof[field] = damage(proof[field])
    with pytest.raises(ProofFileError):
        verify_inclusion_file(envelope, proof, PUB)


def _forge_secondary_index(directory: Path, hidden: int) -> None:
    """A b-tree of index entries_started without entry `hidden`, declared in the schema as the
    whole index, and planner statistics that make SQLite answer a date range from it."""
    db = sqlite3.connect(directory / "archive.db", isolation_level=None)
    db.execute("DROP INDEX entries_started")
    db.execute(f"CREATE INDEX entries_started ON entries (run_started) WHERE idx != {hidden}")
    db.execute("PRAGMA writable_schema = ON")
    db.execute("UPDATE sqlite_master SET sql = 'CREATE INDEX entries_started ON entries (run_started)' "
               "WHERE name = 'entries_started'")
    db.execute("ANALYZE")
    db.execute("DELETE FROM sqlite_stat1")
    db.execute("INSERT INTO sqlite_stat1 VALUES ('entries', 'entries_started', '1000000 1'), "
               "('entries', NULL, '1000000')")
    db.close()


def test_a_forged_secondary_index_cannot_hide_an_entry_from_list(archive_dir):
    """verify reads every table in index order and never a secondary index; `list --since/--until`
    answered from a forged index hid entry 1 of an archive that verified. The filters now run
    over the rows verify reads."""
    _forge_secondary_index(archive_dir, hidden=1)
    with Archive(archive_dir) as archive:
        archive.verify(PUB, jobs=1)   # the tables themselves are untouched
        assert [e["idx"] for e in archive.log.entries(since="2026-11-01", until="2026-11-02")] == [0, 1]
    listed = attestlab("archive", "list", str(archive_dir), "--since", "2026-11-02", "--until", "2026-11-02")
    assert "board-1" in listed.stdout and "1 of 3 entries" in listed.stdout, listed.stdout


def test_a_view_in_place_of_a_table_is_refused(archive_dir):
    """A view answers as its SQL pleases (random(), the time of day), so `list` could read other
    rows than `verify` did: verify reads the archive's names only as plain tables."""
    sql(archive_dir, "ALTER TABLE entries RENAME TO entries_kept")
    sql(archive_dir, "CREATE VIEW entries AS SELECT * FROM entries_kept WHERE idx <> 1 OR "
                     "strftime('%Y', 'now') < '2100'")   # all rows, until 2100
    with Archive(archive_dir, read_only=True) as archive, pytest.raises(ArchiveCorrupt) as caught:
        archive.verify(PUB, jobs=1)
    caught = caught.value
    assert caught.entry is None and "entries is view" in str(caught)
