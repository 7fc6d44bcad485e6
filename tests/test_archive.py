"""The archive of signed results (issue #17, parts 1-3): append, query, verify, proofs, export,
and integrity under faults: every changed stored byte, a removed, reordered or re-signed entry,
a swapped checkpoint, kill -9 inside an append, parallel appenders, `run --archive` end to end.

Results are real signed envelopes (write_signed_result, the lab's TEST key); one archive of six
entries is built once per module and copied for each test that damages it."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from harness.archive.checkpoint import ProofFileError, open_checkpoint, verify_inclusion_file
from harness.archive import store
from harness.archive.db import SqliteLog
from harness.archive.store import AlreadyArchived, Archive, ArchiveCorrupt, ArchiveError
from harness.evidence import EvidenceStore
from harness.formats import merkle
from harness.results.bundle import ENVELOPE_NAME, EVIDENCE_DIR, write_signed_result
from harness.results.keys import load_private_key, load_public_key
from harness.results.record import RequirementResult, RunRecord
from harness.verdict import StepResult, Verdict

from conftest import BOARDS, PCIE_PLAN, ROOT, TEST_KEY, TEST_PUB, attestlab

KEY, PUB = load_private_key(TEST_KEY), load_public_key(TEST_PUB)
VERDICTS = (Verdict.PASS, Verdict.FAIL, Verdict.PASS, Verdict.ERROR, Verdict.PASS, Verdict.FAIL)


def make_result(out: Path, n: int, verdict: Verdict = Verdict.PASS, dsn: str | None = None) -> Path:
    """A real signed result: one blob of its own, one shared by every result."""
    store = EvidenceStore()
    own = store.add(f"pcie/config-{n}", bytes([n % 256]) * 4096)
    shared = store.add("console/boot-log.txt", b"U-Boot 2024.01\n")
    step = StepResult("R1", "s1", "pcie_identity", "identity_matches_reference", verdict, ("why",), (own, shared),
                      {}, "t0", "t1")
    dsn = dsn or f"a1-df-09-95-b8-2d-b0-{n % 256:02x}"
    record = RunRecord(run_id=f"run-{n}", plan={"id": "level1" if n % 2 else "pcie-only", "version": "1",
                                                "sha256": f"{n % 2:064x}"},
                       board={"name": f"board-{n}", "simulated": None, "pins": {},
                              "measured": {"dsn": dsn}, "reference": {"product": "H100"}},
                       verdict=verdict, requirements=(RequirementResult("R1", "t", verdict, (step,)),),
                       evidence=store.refs, started=f"2026-11-{1 + n % 28:02d}T10:00:00Z", finished="t1",
                       harness={"name": "attestlab", "version": "0"}, host={"hostname": "h"})
    return write_signed_result(out, record, store, KEY)


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> list[Path]:
    out = tmp_path_factory.mktemp("results")
    return [make_result(out, n, VERDICTS[n]) for n in range(6)]


@pytest.fixture(scope="module")
def pristine(tmp_path_factory, results) -> Path:
    directory = tmp_path_factory.mktemp("archives") / "pristine"
    with Archive(directory, create=True) as archive:
        assert [archive.append(r, KEY) for r in results] == list(range(6))
    return directory


@pytest.fixture
def archive_dir(tmp_path, pristine) -> Path:
    shutil.copytree(pristine, tmp_path / "archive")
    return tmp_path / "archive"


def sql(directory: Path, statement: str, *args) -> None:
    db = sqlite3.connect(directory / "archive.db", isolation_level=None)
    db.execute(statement, args)
    db.close()


def failure(directory: Path, held=(), jobs: int | None = None) -> ArchiveCorrupt:
    with Archive(directory) as archive, pytest.raises(ArchiveCorrupt) as caught:
        archive.verify(PUB, held, jobs=jobs)
    return caught.value


def flip(path: Path, offset: int = 5) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 1
    os.chmod(path, 0o644)
    path.write_bytes(bytes(data))


def test_append_verify_query(archive_dir, results):
    with Archive(archive_dir) as archive:
        verified = archive.verify(PUB)
        assert (verified.size, verified.checkpoints) == (6, 6)
        assert verified.root == merkle.root_of([r.read_bytes() for r in results])  # the leaf is the file's bytes
        log = archive.log
        assert [e["idx"] for e in log.entries(verdict="fail")] == [1, 5]
        assert [e["idx"] for e in log.entries(board_serial="A1-DF-09-95-B8-2D-B0-03")] == [3]
        assert [e["idx"] for e in log.entries(plan="level1")] == [1, 3, 5]
        assert [e["idx"] for e in log.entries(plan=f"{1:064x}", verdict="PASS")] == []
        assert [e["idx"] for e in log.entries(since="2026-11-03", until="2026-11-05")] == [2, 3, 4]
    listing = attestlab("archive", "list", str(archive_dir), "--verdict", "FAIL")
    assert listing.returncode == 0 and "2 of 6 entries" in listing.stdout and "board-5" in listing.stdout
    shown = attestlab("archive", "show", str(archive_dir), "3")
    assert shown.returncode == 0 and "verdict: ERROR" in shown.stdout and "run_id: run-3" in shown.stdout
    cli = attestlab("archive", "verify", str(archive_dir), "--pubkey", str(TEST_PUB))
    assert cli.returncode == 0 and "6 entries, 6 signed checkpoints, 13 blobs" in cli.stdout, cli.stderr


def test_the_same_envelope_twice_is_refused_and_a_bad_result_is_not_archived(archive_dir, results, tmp_path):
    with Archive(archive_dir) as archive:
        with pytest.raises(AlreadyArchived, match="already archived as entry 2") as caught:
            archive.append(results[2], KEY)
        assert caught.value.index == 2
        bad = make_result(tmp_path / "bad", 7)
        flip(next((bad.parent / EVIDENCE_DIR).iterdir()))
        with pytest.raises(ArchiveError, match="does not verify"):
            archive.append(bad, KEY)
        assert archive.size() == 6
        archive.verify(PUB)
    added = attestlab("archive", "add", str(archive_dir), str(results[0]), "--key", str(TEST_KEY))
    assert added.returncode == 2 and "already archived as entry 0" in added.stderr


def _rewrite_nodes(directory: Path) -> None:
    """What a forger without the key does after changing leaves: recompute every node."""
    db = sqlite3.connect(directory / "archive.db", isolation_level=None)
    leaves = [bytes(h) for (h,) in db.execute("SELECT leaf_hash FROM leaves ORDER BY idx")]
    nodes: dict = {}
    for size, leaf in enumerate(leaves):
        for level, idx, value in merkle.nodes_completed_by_append(size, leaf, lambda lv, i: nodes[(lv, i)]):
            nodes[(level, idx)] = value
    db.execute("DELETE FROM nodes")
    db.executemany("INSERT INTO nodes VALUES (?, ?, ?)", [(lv, i, h) for (lv, i), h in nodes.items()])
    db.close()


def _swap_leaves(directory: Path, a: int, b: int) -> None:
    db = sqlite3.connect(directory / "archive.db", isolation_level=None)
    rows = {i: db.execute("SELECT leaf_hash, envelope_sha256 FROM leaves WHERE idx = ?", (i,)).fetchone() for i in (a, b)}
    db.execute("UPDATE leaves SET envelope_sha256 = 'x' WHERE idx = ?", (a,))
    for i, j in ((b, a), (a, b)):
        db.execute("UPDATE leaves SET leaf_hash = ?, envelope_sha256 = ? WHERE idx = ?", (*rows[j], i))
    db.execute("UPDATE entries SET idx = -1 WHERE idx = ?", (a,))
    db.execute("UPDATE entries SET idx = ? WHERE idx = ?", (a, b))
    db.execute("UPDATE entries SET idx = ? WHERE idx = -1", (b,))
    db.close()


def _blob_of(directory: Path, n: int) -> Path:
    with Archive(directory) as archive:
        return archive.envelope_path(n)


def _own_evidence(directory: Path, n: int) -> Path:
    import hashlib
    return directory / "blobs" / EVIDENCE_DIR / hashlib.sha256(bytes([n]) * 4096).hexdigest()


def _swap_checkpoints(directory: Path, a: int, b: int) -> None:
    db = sqlite3.connect(directory / "archive.db", isolation_level=None)
    ea, eb = (db.execute("SELECT envelope FROM checkpoints WHERE size = ?", (s,)).fetchone()[0] for s in (a, b))
    db.execute("UPDATE checkpoints SET envelope = ? WHERE size = ?", (eb, a))
    db.execute("UPDATE checkpoints SET envelope = ? WHERE size = ?", (ea, b))
    db.close()


def _flip_checkpoint_signature(directory: Path, size: int) -> None:
    db = sqlite3.connect(directory / "archive.db", isolation_level=None)
    envelope = json.loads(db.execute("SELECT envelope FROM checkpoints WHERE size = ?", (size,)).fetchone()[0])
    sig = envelope["signatures"][0]["sig"]
    envelope["signatures"][0]["sig"] = ("B" if sig[0] == "A" else "A") + sig[1:]
    db.execute("UPDATE checkpoints SET envelope = ? WHERE size = ?", (json.dumps(envelope).encode(), size))
    db.close()


TAMPERS = {
    # name: (damage, the entry verify must name, words in its message)
    "envelope blob byte": (lambda d: flip(_blob_of(d, 3)), 3, "was changed"),
    "envelope blob removed": (lambda d: _blob_of(d, 4).unlink(), 4, "No such file"),
    "evidence blob byte": (lambda d: flip(_own_evidence(d, 2)), 2, "evidence blob"),
    "leaf hash row": (lambda d: sql(d, "UPDATE leaves SET leaf_hash = zeroblob(32) WHERE idx = 4"), 4, "leaf hash"),
    "level-0 node": (lambda d: sql(d, "UPDATE nodes SET hash = zeroblob(32) WHERE level = 0 AND idx = 1"), 1, "leaf hash"),
    "interior node": (lambda d: sql(d, "UPDATE nodes SET hash = zeroblob(32) WHERE level = 1 AND idx = 1"), 2,
                      "not the hash of its children"),
    "node removed": (lambda d: sql(d, "DELETE FROM nodes WHERE level = 2 AND idx = 0"), 0, "lacks node"),
    "index row verdict": (lambda d: sql(d, "UPDATE entries SET verdict = 'PASS' WHERE idx = 5"), 5, "verdict"),
    "checkpoint signature": (lambda d: _flip_checkpoint_signature(d, 5), 4, "signature does not verify"),
    "checkpoints swapped": (lambda d: _swap_checkpoints(d, 3, 4), 2, "swapped"),
    "checkpoint removed": (lambda d: sql(d, "DELETE FROM checkpoints WHERE size = 3"), 2, "is missing"),
    "middle entry removed": (lambda d: sql(d, "DELETE FROM leaves WHERE idx = 2"), 2, "missing"),
    "last entry removed": (lambda d: (sql(d, "DELETE FROM leaves WHERE idx = 5"), sql(d, "DELETE FROM entries WHERE idx = 5"),
                                      sql(d, "DELETE FROM nodes WHERE level = 0 AND idx = 5"),
                                      sql(d, "DELETE FROM nodes WHERE level = 1 AND idx = 2")), 5, "missing"),
    "entries reordered, nodes recomputed": (lambda d: (_swap_leaves(d, 1, 2), _rewrite_nodes(d)), 1,
                                            "changed, removed or reordered"),
}


@pytest.mark.parametrize("name", TAMPERS)
def test_any_tampering_is_found_naming_the_first_entry(archive_dir, name):
    damage, entry, words = TAMPERS[name]
    damage(archive_dir)
    found = failure(archive_dir)
    assert found.entry == entry and words in str(found), str(found)


def _damage_several(directory: Path) -> None:
    """Entry 2's evidence, entry 3's envelope and entry 5's leaf row (a row verify cannot even read):
    the first is still entry 2, however far ahead a pool reads."""
    flip(_own_evidence(directory, 2))
    flip(_blob_of(directory, 3))
    sql(directory, "UPDATE leaves SET envelope_sha256 = 'not a digest' WHERE idx = 5")


def _die_in_a_worker(*args):
    os._exit(3)


def test_verify_on_two_processes_finds_what_one_finds(archive_dir, tmp_path, monkeypatch):
    """jobs=2, two entries a chunk (several chunks in flight, answered out of order): the same
    result as jobs=1, and for each tampering (checked in a worker or in the parent) the same first
    entry and the same message."""
    monkeypatch.setattr(store, "VERIFY_CHUNK", 2)
    with Archive(archive_dir) as archive:
        assert archive.verify(PUB, jobs=2) == archive.verify(PUB, jobs=1)
    cases = {name: TAMPERS[name] for name in ("envelope blob removed", "checkpoint signature", "index row verdict")}
    cases["several, a damaged row after them"] = (_damage_several, 2, "evidence blob")
    for name, (damage, entry, words) in cases.items():
        directory = tmp_path / name.replace(" ", "-").replace(",", "")
        shutil.copytree(archive_dir, directory)
        damage(directory)
        one, two = failure(directory, jobs=1), failure(directory, jobs=2)
        assert one.entry == entry and words in str(one), (name, str(one))
        assert (two.entry, str(two)) == (one.entry, str(one)), name


def test_a_verify_worker_that_dies_is_an_error_never_a_pass(archive_dir, monkeypatch):
    monkeypatch.setattr(store, "VERIFY_CHUNK", 1)
    monkeypatch.setattr(store, "_check_envelopes", _die_in_a_worker)
    with Archive(archive_dir) as archive, pytest.raises(ArchiveError, match="worker process died"):
        archive.verify(PUB, jobs=2)


def test_cli_verify_names_the_entry_and_exits_1(archive_dir):
    flip(_blob_of(archive_dir, 3))
    cli = attestlab("archive", "verify", str(archive_dir), "--pubkey", str(TEST_PUB), "--jobs", "2")
    assert cli.returncode == 1 and "NOT VERIFIED" in cli.stderr and "entry 3:" in cli.stderr, cli.stderr


def test_a_history_rewritten_with_the_lab_key_is_caught_only_by_a_held_checkpoint(archive_dir, results, tmp_path):
    with Archive(archive_dir) as archive:
        held = open_checkpoint(archive.latest_checkpoint()[1], PUB)
        archive_id = archive.id
    forged = tmp_path / "forged"   # the same archive id, entry 3 left out, everything re-signed
    forged.mkdir()
    log = SqliteLog(forged / "archive.db")
    with log.transaction():
        log.set_meta_once("archive_id", archive_id)
    log.close()
    with Archive(forged) as archive:
        for n in (0, 1, 2, 4, 5):
            archive.append(results[n], KEY)
        archive.verify(PUB)   # self-consistent: without an outside checkpoint, nothing to see
    found = failure(forged, (held,))
    assert found.entry == 5 and "entries were removed" in str(found)
    with Archive(archive_dir) as archive:
        early = open_checkpoint(archive.log.checkpoint(4)[1], PUB)
    found = failure(forged, (early,))
    assert found.entry == 3 and "history rewritten" in str(found)


def test_inclusion_proof_checked_offline_and_a_tampered_one_refused(archive_dir, tmp_path, results):
    proof_file = tmp_path / "proof.json"
    made = attestlab("archive", "proof", str(archive_dir), "3", "--pubkey", str(TEST_PUB), "--out", str(proof_file))
    assert made.returncode == 0, made.stderr
    ok = attestlab("verify", str(results[3]), "--pubkey", str(TEST_PUB), "--proof", str(proof_file))
    assert ok.returncode == 0 and "archived: entry 3" in ok.stdout and "tree of 6 entries" in ok.stdout, ok.stderr
    wrong = attestlab("verify", str(results[2]), "--pubkey", str(TEST_PUB), "--proof", str(proof_file))
    assert wrong.returncode == 1 and "the proof is for envelope sha256" in wrong.stderr
    proof = json.loads(proof_file.read_text())
    data = results[3].read_bytes()
    verify_inclusion_file(data, proof, PUB)
    for change in (lambda p: p.update(leaf_index=2), lambda p: p.update(tree_size=5),
                   lambda p: p["audit_path"].__setitem__(0, "0" * 64), lambda p: p["audit_path"].pop(),
                   lambda p: p["checkpoint"].update(payload=p["checkpoint"]["payload"][:-4] + "AAA="),
                   lambda p: p.update(leaf_index=True)):
        bad = json.loads(json.dumps(proof))
        change(bad)
        with pytest.raises(ProofFileError):
            verify_inclusion_file(data, bad, PUB)
    (tmp_path / "bad.json").write_text(json.dumps({**proof, "leaf_index": 4}))
    refused = attestlab("verify", str(results[3]), "--pubkey", str(TEST_PUB), "--proof", str(tmp_path / "bad.json"))
    assert refused.returncode == 1 and "not entry 4" in refused.stderr, refused.stderr


_JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=70),
                     lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
                     max_leaves=12)


@settings(max_examples=150, deadline=None)
@given(field=st.sampled_from(["type", "leaf_index", "tree_size", "leaf", "audit_path", "checkpoint", "extra"]),
       value=_JSON)
def test_any_proof_file_is_refused_clearly_or_holds(field, value):
    envelope = b'{"payload": "e30=", "payloadType": "x", "signatures": []}'
    proof = {"type": "https://attestlab.dev/InclusionProof/v1", "leaf_index": 0, "tree_size": 1,
             "leaf": __import__("hashlib").sha256(envelope).hexdigest(), "audit_path": [], "checkpoint": {}}
    proof[field] = value
    with pytest.raises(ProofFileError):   # no checkpoint signed by the key: never accepted, never a crash
        verify_inclusion_file(envelope, proof, PUB)


def test_consistency_between_two_checkpoints(archive_dir, tmp_path):
    with Archive(archive_dir) as archive:
        document = archive.consistency(2, 6, PUB)
        old, new = (open_checkpoint(document[k], PUB) for k in ("old_checkpoint", "new_checkpoint"))
        merkle.verify_consistency(2, 6, old.root, new.root, [bytes.fromhex(h) for h in document["proof"]])
        with pytest.raises(ArchiveError):
            archive.consistency(4, 3, PUB)
    out = tmp_path / "c.json"
    cli = attestlab("archive", "consistency", str(archive_dir), "1", "5", "--pubkey", str(TEST_PUB), "--out", str(out))
    assert cli.returncode == 0 and json.loads(out.read_text())["new_size"] == 5, cli.stderr
    held = attestlab("archive", "verify", str(archive_dir), "--pubkey", str(TEST_PUB), "--held", str(out))
    assert held.returncode == 0 and "consistent with 1 held checkpoint" in held.stdout, held.stderr


def test_export_is_a_bundle_an_auditor_verifies_alone(archive_dir, tmp_path):
    bundle = tmp_path / "bundle"
    made = attestlab("archive", "export", str(archive_dir), "4", "--pubkey", str(TEST_PUB), "--out", str(bundle))
    assert made.returncode == 0, made.stderr
    auditor = tmp_path / "auditor"
    shutil.copytree(bundle, auditor)
    shutil.rmtree(archive_dir)   # nothing of the archive is needed any more
    ok = attestlab("verify", str(auditor / ENVELOPE_NAME), "--pubkey", str(TEST_PUB), "--proof",
                   str(auditor / "proof.json"))
    assert ok.returncode == 0 and "archived: entry 4" in ok.stdout and "2 evidence blobs" in ok.stdout, ok.stderr
    flip(next((auditor / EVIDENCE_DIR).iterdir()))
    assert attestlab("verify", str(auditor / ENVELOPE_NAME), "--pubkey", str(TEST_PUB), "--proof",
                     str(auditor / "proof.json")).returncode == 1


def _add(archive: Path, envelope: Path, env: dict) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "harness.cli", "archive", "add", str(archive), str(envelope),
                             "--key", str(TEST_KEY)], cwd=ROOT, env={**os.environ, **env},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.parametrize("stage", ["blobs", "transaction"])
def test_kill_9_inside_an_append_leaves_a_verifiable_archive(archive_dir, tmp_path, stage):
    mark = tmp_path / "mark"
    new = make_result(tmp_path / "new", 9)
    proc = _add(archive_dir, new, {"ATTESTLAB_ARCHIVE_PAUSE": stage, "ATTESTLAB_ARCHIVE_MARK": str(mark)})
    deadline = time.monotonic() + 60
    while not mark.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the append never reached its stage"
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=30)
    with Archive(archive_dir) as archive:
        assert archive.verify(PUB).size == 6   # the entry is wholly absent
        assert archive.log.index_of(__import__("hashlib").sha256(new.read_bytes()).hexdigest()) is None
        assert archive.append(new, KEY) == 6     # the lock died with the process
        assert archive.verify(PUB).size == 7


def test_four_processes_appending_at_once_lose_and_corrupt_nothing(tmp_path):
    envelopes = [make_result(tmp_path / "r", 100 + n, VERDICTS[n % 6]) for n in range(40)]
    archive = tmp_path / "archive"
    script = ("import sys\nfrom harness.cli import main\n"
              "sys.exit(max(main(['archive', 'add', sys.argv[1], e, '--key', sys.argv[2]]) for e in sys.argv[3:]))")
    procs = [subprocess.Popen([sys.executable, "-c", script, str(archive), str(TEST_KEY),
                               *(str(e) for e in envelopes[w::4])], cwd=ROOT, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for w in range(4)]
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
    with Archive(archive) as opened:
        verified = opened.verify(PUB)
        assert (verified.size, verified.checkpoints) == (40, 40)
        assert sorted(e["run_id"] for e in opened.log.entries()) == sorted(f"run-{100 + n}" for n in range(40))


def test_run_with_archive_end_to_end(tmp_path):
    archive = tmp_path / "archive"
    run = attestlab("run", "--plan", str(PCIE_PLAN), "--board", str(BOARDS / "sim-clean.yaml"), "--key",
                    str(TEST_KEY), "--out", str(tmp_path / "results"), "--run-id", "r1", "--archive", str(archive), "-q")
    assert run.returncode == 0 and "archived as entry 0" in run.stdout, run.stdout + run.stderr
    with Archive(archive) as opened:
        assert opened.verify(PUB).size == 1
        row = opened.log.entry(0)
        assert (row["run_id"], row["board_name"], row["verdict"]) == ("r1", "sim-clean", "PASS")
        assert opened.envelope_path(0).read_bytes() == (tmp_path / "results" / "r1" / ENVELOPE_NAME).read_bytes()
    bad = attestlab("run", "--plan", str(PCIE_PLAN), "--board", str(BOARDS / "sim-clean.yaml"), "--key",
                    str(TEST_KEY), "--out", str(tmp_path / "results"), "--archive", str(PCIE_PLAN), "-q")
    assert bad.returncode == 2 and "--archive" in bad.stderr


COLUMNS = [("leaves", "leaf_hash", "idx"), ("leaves", "envelope_sha256", "idx"), ("nodes", "hash", "idx"),
           ("nodes", "level", "idx"), ("nodes", "idx", "level"), ("checkpoints", "envelope", "size"),
           ("checkpoints", "size", "size"), ("entries", "board_serial", "idx"), ("meta", "value", "key")]


@settings(max_examples=60, deadline=None)
@given(column=st.sampled_from(COLUMNS), row=st.integers(0, 6),
       value=st.one_of(st.integers(-3, 70), st.text(max_size=70), st.binary(max_size=40),
                       st.just("../../../../etc/passwd"), st.just(b"\x00" * 32)))
def test_any_value_in_any_column_is_found_never_a_crash(pristine, tmp_path_factory, column, row, value):
    directory = tmp_path_factory.mktemp("fuzz") / "archive"
    shutil.copytree(pristine, directory)
    table, name, key = column
    db = sqlite3.connect(directory / "archive.db", isolation_level=None)
    keys = [k for (k,) in db.execute(f"SELECT {key} FROM {table} ORDER BY {key}")]
    before = db.execute(f"SELECT {name} FROM {table} WHERE {key} = ?", (keys[row % len(keys)],)).fetchone()[0]
    try:
        db.execute(f"UPDATE {table} SET {name} = ? WHERE {key} = ?", (value, keys[row % len(keys)]))
    except sqlite3.IntegrityError:
        return   # the schema refuses it (a second row with that key)
    after = db.execute(f"SELECT {name} FROM {table} WHERE {key} = ?", (keys[row % len(keys)],)).fetchone()
    db.close()
    with Archive(directory) as archive:
        if after is not None and after[0] == before and type(after[0]) is type(before):
            archive.verify(PUB)   # nothing changed
        else:
            with pytest.raises(ArchiveCorrupt):
                archive.verify(PUB)


@contextlib.contextmanager
def read_only_mount(source: Path, mount: Path):
    """`source` seen read-only at `mount` (a read-only bind mount: root ignores file modes)."""
    mount.mkdir()
    made = subprocess.run(["mount", "--bind", str(source), str(mount)], capture_output=True, text=True)
    if made.returncode:
        pytest.skip(f"cannot bind-mount here ({made.stderr.strip()[:80]}): needs root with CAP_SYS_ADMIN")
    try:
        remount = subprocess.run(["mount", "-o", "remount,ro,bind", str(mount)], capture_output=True, text=True)
        if remount.returncode:
            pytest.skip(f"cannot remount read-only here ({remount.stderr.strip()[:80]})")
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], capture_output=True)


def test_an_archive_on_read_only_media_lists_shows_verifies_and_proves(archive_dir, tmp_path):
    """An auditor's copy on read-only media: every command but `add` reads only (SQLite opened
    read-only, as immutable where the file system refuses even its lock file)."""
    with read_only_mount(archive_dir, tmp_path / "ro") as mount:
        before = sorted(p.name for p in archive_dir.iterdir())
        verified = attestlab("archive", "verify", str(mount), "--pubkey", str(TEST_PUB))
        assert verified.returncode == 0 and "6 entries, 6 signed checkpoints" in verified.stdout, verified.stderr
        assert attestlab("archive", "list", str(mount)).returncode == 0
        proof = attestlab("archive", "proof", str(mount), "2", "--pubkey", str(TEST_PUB), "--out", str(tmp_path / "p.json"))
        assert proof.returncode == 0, proof.stderr
        added = attestlab("archive", "add", str(mount), str(archive_dir / "blobs"), "--key", str(TEST_KEY))
        assert added.returncode == 2 and "Traceback" not in added.stderr  # writing is refused, clearly
        assert sorted(p.name for p in archive_dir.iterdir()) == before


def test_a_read_only_copy_with_changes_still_in_its_write_ahead_log_is_refused(archive_dir, tmp_path):
    """A copy taken while an appender held the database open has entries only in archive.db-wal:
    read with its -shm it verifies whole; without, an immutable read would show an older archive
    as verified, so it is refused, saying why."""
    copy = tmp_path / "copy"
    writer = sqlite3.connect(archive_dir / "archive.db", isolation_level=None)
    try:
        writer.execute("PRAGMA wal_autocheckpoint = 0")
        writer.execute("INSERT INTO meta (key, value) VALUES ('note', 'written, not checkpointed')")
        shutil.copytree(archive_dir, copy)
    finally:
        writer.close()
    assert (copy / "archive.db-wal").stat().st_size > 0
    with read_only_mount(copy, tmp_path / "ro") as mount:   # with its -shm, SQLite reads the log itself
        verified = attestlab("archive", "verify", str(mount), "--pubkey", str(TEST_PUB))
    assert verified.returncode == 0, verified.stderr
    (copy / "archive.db-shm").unlink()                      # without it, only an immutable read is left
    with read_only_mount(copy, tmp_path / "ro2") as mount:
        verified = attestlab("archive", "verify", str(mount), "--pubkey", str(TEST_PUB))
    assert verified.returncode == 2 and "archive.db-wal holds changes" in verified.stderr, verified.stderr
