"""Appends per second to an archive shared by bench hosts (issue #17 part 5): 1 and 4 appender
processes at once against PostgreSQL, and the same against the default SQLite for comparison.

Each appender is a process that opens the archive once and appends its share of N real signed
results one at a time (`Archive.append`: the result verified twice, its blobs written and
fsynced, one transaction under the archive's append lock, a signed checkpoint). All start
together; the figure is N over the time until the last is done. The archive is then verified in
full: N entries, N checkpoints, nothing lost to the concurrency.

The server is a throwaway cluster (tests/test_archive_postgres.throwaway_cluster, durable: fsync
on, as a lab's server) unless --db names a server where this may create and drop a database.

Usage: .venv/bin/python benchmarks/archive_postgres.py [--count 400] [--procs 1,4] [--db URL] [--json]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "tests"), str(REPO / "benchmarks")]

import psycopg  # noqa: E402
from cryptography.hazmat.primitives import serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey  # noqa: E402

from archive import make_results  # noqa: E402  (benchmarks/archive.py)
from harness.archive.store import Archive  # noqa: E402
from test_archive_postgres import throwaway_cluster  # noqa: E402

# One appender: open the archive, say so, wait for the start, append its share, exit.
_APPENDER = """
import sys
from harness.archive.store import Archive
from harness.results.keys import load_private_key
directory, db, key = sys.argv[1], sys.argv[2] or None, load_private_key(sys.argv[3])
with Archive(directory, db=db) as archive:
    print("ready", flush=True)
    sys.stdin.readline()
    for path in sys.argv[4:]:
        archive.append(path, key)
"""


@contextlib.contextmanager
def scratch_database(server: str):
    """A new database on `server` (a libpq URL), dropped afterwards; its URL."""
    name = f"attestlab_bench_{secrets.token_hex(4)}"
    with psycopg.connect(server, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield psycopg.conninfo.make_conninfo(server, dbname=name)
    finally:
        with psycopg.connect(server, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


def appends_per_s(directory: Path, db: str | None, key_file: Path, paths: list[Path], procs: int) -> float:
    with Archive(directory, create=True, db=db):
        pass   # made (and paired) once, before the appenders race
    workers = [subprocess.Popen([sys.executable, "-c", _APPENDER, str(directory), db or "", str(key_file),
                                 *map(str, paths[w::procs])], cwd=REPO, stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, text=True) for w in range(procs)]
    for worker in workers:
        assert worker.stdout.readline().strip() == "ready", "an appender did not start"
    start = time.perf_counter()
    for worker in workers:
        worker.stdin.write("go\n")
        worker.stdin.flush()
    for worker in workers:
        worker.stdin.close()
        if worker.wait(timeout=3600):
            raise SystemExit(f"an appender failed (exit {worker.returncode})")
    return len(paths) / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--count", type=int, default=400, help="results appended per measurement (default 400)")
    ap.add_argument("--procs", default="1,4", help="appender process counts to measure (default 1,4)")
    ap.add_argument("--db", help="a PostgreSQL server URL to use (a scratch database is made and dropped there) "
                                 "in place of a throwaway cluster")
    ap.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = ap.parse_args(argv)
    counts = [int(p) for p in args.procs.split(",")]
    say = (lambda *a: None) if args.json else (lambda *a: print(*a, flush=True))
    key = Ed25519PrivateKey.generate()
    figures: dict[str, object] = {"count": args.count}
    with tempfile.TemporaryDirectory(prefix="attestlab-bench-pg-") as work, \
            (contextlib.nullcontext(args.db) if args.db else throwaway_cluster(durable=True)) as server:
        work = Path(work)
        key_file = work / "bench.key"
        key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
        key_file.chmod(0o600)
        paths = make_results(work / "results", args.count, key)
        for backend in ("postgresql", "sqlite"):
            for procs in counts:
                directory = work / f"{backend}-{procs}"
                with (scratch_database(server) if backend == "postgresql" else contextlib.nullcontext()) as db:
                    rate = appends_per_s(directory, db, key_file, paths, procs)
                    with Archive(directory, db=db) as archive:
                        verified = archive.verify(key.public_key())
                    assert (verified.size, verified.checkpoints) == (args.count, args.count), verified
                figures[f"{backend}_{procs}_appends_per_s"] = rate
                say(f"{backend:10} {procs} appender process(es): {rate:6.0f} appends/s ({args.count} entries; "
                    f"verified: {verified.size} entries, {verified.checkpoints} checkpoints)")
    if args.json:
        print(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
