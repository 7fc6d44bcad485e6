"""`Archive.append_many`: a batch is appended whole or not at all, checked as single appends are,
with a signed checkpoint per size; and benchmarks/archive.py runs end to end on a small archive.

Results are real signed envelopes (tests/test_archive.make_result, the lab's TEST key)."""

from __future__ import annotations

import hashlib
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness.archive.store import AlreadyArchived, Archive, ArchiveError
from test_archive import KEY, PUB, make_result
from conftest import ROOT


@pytest.fixture(scope="module")
def batch(tmp_path_factory) -> list[Path]:
    out = tmp_path_factory.mktemp("batch")
    return [make_result(out, 200 + n) for n in range(5)]


def test_a_batch_is_appended_in_order_with_a_checkpoint_per_size(tmp_path, batch):
    with Archive(tmp_path / "a", create=True) as archive:
        assert archive.append(batch[0], KEY) == 0
        assert archive.append_many(batch[1:], KEY) == [1, 2, 3, 4]
        verified = archive.verify(PUB)
        assert (verified.size, verified.checkpoints) == (5, 5)
        for index, path in enumerate(batch):
            assert archive.log.index_of(hashlib.sha256(path.read_bytes()).hexdigest()) == index
        document = archive.inclusion(3, PUB)
        assert document["tree_size"] == 5


@pytest.mark.parametrize("spoil", ["does not verify", "already archived", "twice in the batch"])
def test_a_batch_with_one_bad_result_appends_nothing(tmp_path, batch, spoil):
    items = list(batch[1:])
    with Archive(tmp_path / "a", create=True) as archive:
        archive.append(batch[0], KEY)
        if spoil == "does not verify":
            bad = tmp_path / "bad.dsse.json"
            bad.write_bytes(batch[2].read_bytes().replace(b'"sig": "', b'"sig": "AA', 1))
            (tmp_path / "evidence").symlink_to(batch[2].parent / "evidence")
            items.insert(2, bad)
            error = ArchiveError
        elif spoil == "already archived":
            items.append(batch[0])
            error = AlreadyArchived
        else:
            items.append(batch[1])
            error = ArchiveError
        with pytest.raises(error):
            archive.append_many(items, KEY)
        assert archive.verify(PUB).size == 1      # nothing of the batch, not even its first items
        assert archive.append_many(batch[1:], KEY) == [1, 2, 3, 4]


def test_kill_9_inside_a_batch_transaction_leaves_none_of_it(tmp_path, batch):
    archive_dir, mark = tmp_path / "a", tmp_path / "mark"
    with Archive(archive_dir, create=True) as archive:
        archive.append(batch[0], KEY)
    script = ("import sys\nfrom harness.archive.store import Archive\nfrom test_archive import KEY\n"
              "Archive(sys.argv[1]).append_many(sys.argv[2:], KEY)")
    proc = subprocess.Popen([sys.executable, "-c", script, str(archive_dir), *map(str, batch[1:])], cwd=ROOT / "tests",
                            env={"PYTHONPATH": f"{ROOT}:{ROOT / 'tests'}", "ATTESTLAB_ARCHIVE_PAUSE": "transaction",
                                 "ATTESTLAB_ARCHIVE_MARK": str(mark), "PATH": "/usr/bin:/bin"})
    deadline = time.monotonic() + 60
    while not mark.exists():
        assert proc.poll() is None, "the batch append ended before its transaction"
        assert time.monotonic() < deadline, "the batch append never reached its transaction"
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    with Archive(archive_dir) as archive:
        assert archive.verify(PUB).size == 1
        assert archive.append_many(batch[1:], KEY) == [1, 2, 3, 4]
        assert archive.verify(PUB).size == 5


def test_the_benchmark_runs_and_checks_its_proof_sizes():
    done = subprocess.run([sys.executable, "benchmarks/archive.py", "--count", "40", "--single", "5", "--batch", "16",
                           "--proofs", "20", "--json"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert '"ceil_log2_n": 6' in done.stdout and '"inclusion_sizes"' in done.stdout
