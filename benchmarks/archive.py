"""Archive scale and speed: append N signed results, then time proofs and a full `verify`.

Each result is a real signed envelope (a throwaway Ed25519 key; the run id varies, so every
envelope differs) citing one small evidence blob. Timed, in this order:

  single   the first --single entries appended one at a time (`Archive.append`: a transaction,
           its fsyncs and a signed checkpoint each)
  batch    the rest with `Archive.append_many`, --batch at a time (one transaction and one
           os.sync() per batch, still a signed checkpoint per size)
  proof    --proofs inclusion proofs of random entries: the bare audit path (O(log n) node
           reads, counted) and `Archive.inclusion` (the proof file, checked before it is given)
  consist  consistency proofs between random checkpoints and the latest
  verify   `Archive.verify`: every envelope, evidence blob, leaf, node and checkpoint, first with
           one process (jobs=1), then with --jobs processes (default: every core)
  raw      `cryptography`'s Ed25519 verify rate on ONE core, same key, same run (before and after
           verify; the better is the limit)

Verify's ratio is (signatures it checks / raw rate) / its time: the share of its time that the
signatures themselves need (it checks one per envelope and one per checkpoint). The raw rate is
one core's, so with N processes the ratio can pass 1; divide by N for the share per core. Proof sizes are
asserted: RFC 6962's length for each index, ceil(log2 n) at most, and exactly that for entry 0.

Usage: .venv/bin/python benchmarks/archive.py [--count 100000] [--single 1000] [--batch 1000]
[--proofs 1000] [--jobs N] [--dir DIR] [--json]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey  # noqa: E402

from harness.archive.store import Archive  # noqa: E402
from harness.evidence import EvidenceStore  # noqa: E402
from harness.formats import merkle  # noqa: E402
from harness.results.bundle import EVIDENCE_DIR  # noqa: E402
from harness.results.canonical import canonical_json  # noqa: E402
from harness.results.dsse import INTOTO_PAYLOAD_TYPE, sign_envelope  # noqa: E402
from harness.results.record import RequirementResult, RunRecord, make_statement  # noqa: E402
from harness.verdict import StepResult, Verdict  # noqa: E402


def make_results(out: Path, count: int, key: Ed25519PrivateKey) -> list[Path]:
    """`count` signed envelopes in `out` (env-<i>.dsse.json), all citing out/evidence/<one blob>."""
    store = EvidenceStore()
    ref = store.add("console/boot-log.txt", b"U-Boot 2024.01\nDRAM: 16 GiB\n")
    (out / EVIDENCE_DIR).mkdir(parents=True)
    (out / EVIDENCE_DIR / ref.sha256).write_bytes(store.get(ref.sha256))
    paths = []
    for n in range(count):
        step = StepResult("R1", "s1", "pcie_identity", "identity_matches_reference", Verdict.PASS, ("why",),
                          (ref,), {}, "t0", "t1")
        record = RunRecord(run_id=f"bench-{n}", plan={"id": "level1", "version": "1", "sha256": "0" * 64},
                           board={"name": f"board-{n % 97}", "simulated": None, "pins": {},
                                  "measured": {"dsn": f"a1-df-09-95-b8-2d-{n >> 8 & 255:02x}-{n & 255:02x}"},
                                  "reference": {"product": "H100"}},
                           verdict=Verdict.PASS, requirements=(RequirementResult("R1", "t", Verdict.PASS, (step,)),),
                           evidence=store.refs, started=f"2026-11-{1 + n % 28:02d}T10:00:00Z", finished="t1",
                           harness={"name": "attestlab", "version": "0"}, host={"hostname": "bench"})
        envelope = sign_envelope(canonical_json(make_statement(record)), INTOTO_PAYLOAD_TYPE, key)
        path = out / f"env-{n}.dsse.json"
        path.write_bytes((json.dumps(envelope, indent=2) + "\n").encode())
        paths.append(path)
    return paths


def raw_verify_rate(key: Ed25519PrivateKey, seconds: float = 2.0) -> float:
    public, message = key.public_key(), b"x" * 600
    signature = key.sign(message)
    done, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        for _ in range(200):
            public.verify(signature, message)
        done += 200
    return done / elapsed


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--count", type=int, default=100_000, help="entries to append (default 100000)")
    ap.add_argument("--single", type=int, default=1000, help="of which appended one at a time (default 1000)")
    ap.add_argument("--batch", type=int, default=1000, help="append_many batch size (default 1000)")
    ap.add_argument("--proofs", type=int, default=1000, help="random inclusion proofs timed (default 1000)")
    ap.add_argument("--jobs", type=int, help="processes for the second verify (default: every core)")
    ap.add_argument("--dir", type=Path, help="work here (default: a temporary directory, removed)")
    ap.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = ap.parse_args(argv)
    if args.count < 2 or not 0 <= args.single <= args.count or args.batch < 1:
        ap.error("need --count >= 2, 0 <= --single <= --count, --batch >= 1")
    with tempfile.TemporaryDirectory(prefix="attestlab-bench-", dir=args.dir) as work:
        return run(Path(work), args)


def run(work: Path, args: argparse.Namespace) -> int:
    key, rng, n = Ed25519PrivateKey.generate(), random.Random(20), args.count
    public = key.public_key()
    figures: dict[str, object] = {"count": n}
    say = (lambda *a: None) if args.json else (lambda *a: print(*a, flush=True))

    start = time.perf_counter()
    paths = make_results(work / "results", n, key)
    say(f"made {n} signed results in {time.perf_counter() - start:.1f} s")
    archive = Archive(work / "archive", create=True)

    start = time.perf_counter()
    for path in paths[:args.single]:
        archive.append(path, key)
    if args.single:
        figures["single_appends_per_s"] = args.single / (time.perf_counter() - start)
        say(f"single appends: {figures['single_appends_per_s']:.0f}/s ({args.single} entries)")
    start = time.perf_counter()
    for first in range(args.single, n, args.batch):
        archive.append_many(paths[first:first + args.batch], key)
    if n > args.single:
        figures["batch_appends_per_s"] = (n - args.single) / (time.perf_counter() - start)
        say(f"batch appends:  {figures['batch_appends_per_s']:.0f}/s ({n - args.single} entries, "
            f"{args.batch} a batch)")
    assert archive.size() == n

    bound = math.ceil(math.log2(n))
    reads = 0

    def get(level: int, index: int) -> bytes:
        nonlocal reads
        reads += 1
        return archive._get(level, index)

    picks = [rng.randrange(n) for _ in range(args.proofs)] + [0]
    lengths, start = [], time.perf_counter()
    for index in picks:
        lengths.append(len(merkle.inclusion_proof(index, n, get)))
    bare = (time.perf_counter() - start) / len(picks)
    assert all(got == merkle.inclusion_proof_length(i, n) <= bound for i, got in zip(picks, lengths)), lengths
    assert lengths[-1] == bound, (lengths[-1], bound)  # entry 0 of a tree of n: exactly ceil(log2 n)
    start = time.perf_counter()
    for index in picks:
        archive.inclusion(index, public)
    full = (time.perf_counter() - start) / len(picks)
    figures.update(inclusion_path_ms=bare * 1e3, inclusion_reads=reads / len(picks), inclusion_file_ms=full * 1e3,
                   inclusion_sizes=sorted(set(lengths)), ceil_log2_n=bound)
    say(f"inclusion proof: {bare * 1e3:.3f} ms (audit path, {reads / len(picks):.1f} node reads), "
        f"{full * 1e3:.3f} ms (checked proof file); sizes {sorted(set(lengths))}, ceil(log2 {n}) = {bound}")

    olds = [rng.randrange(1, n) for _ in range(100)]
    start = time.perf_counter()
    sizes = [len(archive.consistency(old, n, public)["proof"]) for old in olds]
    consist = (time.perf_counter() - start) / len(olds)
    assert all(got == merkle.consistency_proof_length(old, n) <= bound + 1 for old, got in zip(olds, sizes)), sizes
    figures.update(consistency_ms=consist * 1e3, consistency_sizes=[min(sizes), max(sizes)])
    say(f"consistency proof: {consist * 1e3:.3f} ms (checked, both checkpoints verified); sizes "
        f"{min(sizes)}..{max(sizes)}")

    raw_before = raw_verify_rate(key)
    took: dict[int, float] = {}
    results = set()
    for jobs in dict.fromkeys((1, args.jobs or os.cpu_count() or 1)):
        start = time.perf_counter()
        verified = archive.verify(public, jobs=jobs)
        took[jobs] = time.perf_counter() - start
        results.add(verified)
    assert len(results) == 1, results  # one process or several: the same verdict on the same archive
    raw = max(raw_before, raw_verify_rate(key))
    signatures = verified.size + verified.checkpoints
    figures.update(raw_ed25519_verify_per_s=raw, verify_signatures=signatures, verify=[
        {"jobs": jobs, "s": s, "entries_per_s": n / s, "ratio": signatures / raw / s} for jobs, s in took.items()])
    for jobs, s in took.items():
        say(f"verify, {jobs} process{'es' if jobs > 1 else ''}: {s:.1f} s, {n / s:.0f} entries/s, {signatures} "
            f"signatures ({signatures / s:.0f}/s); ratio {signatures / raw / s:.2f}")
    say(f"raw Ed25519 verify {raw:.0f}/s (ONE core: every ratio is against one core's rate)")
    archive.close()
    if args.json:
        print(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
