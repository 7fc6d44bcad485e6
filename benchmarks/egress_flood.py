"""Benchmark: what a name flood costs the harness (issue #19, class 11).

A board that resolves N generated names and connects after each used to make judging take
quadratic time and memory (4,000 names: 23 s and a 1.17 GB record). This generates that capture
for N, 2N and 4N names (the frames of tests/test_egress_flood.py), then times analyze + judge +
the signed record's flow analysis, and prints each figure beside the one for half as many names:
a ratio near 2 is linear work, near 4 quadratic. The record's size must stay flat.

Usage: .venv/bin/python benchmarks/egress_flood.py [--names N]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from harness.formats.egress_policy import judge, load_policy  # noqa: E402
from harness.formats.flows import analyze_bytes, flow_analysis_record  # noqa: E402
from harness.results.canonical import canonical_json  # noqa: E402
from test_egress_flood import _name_flood  # noqa: E402  (the same frames the tests judge)
from test_flows_policy import POLICY, pcapng  # noqa: E402


def one(names: int) -> tuple[float, int, str]:
    capture = pcapng(_name_flood(names))
    started = time.perf_counter()
    judgement = judge(load_policy(POLICY), analyze_bytes(capture))
    record = canonical_json(flow_analysis_record(analyze_bytes(capture)))
    return time.perf_counter() - started, len(record), judgement.outcome


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--names", type=int, default=4000, help="the smallest flood (default 4000)")
    args = parser.parse_args()
    previous = None
    print(f"{'names':>8} {'seconds':>8} {'x prev':>7} {'record bytes':>13} verdict")
    for names in (args.names, 2 * args.names, 4 * args.names):
        seconds, size, outcome = one(names)
        ratio = f"{seconds / previous:7.2f}" if previous else "      -"
        print(f"{names:>8} {seconds:>8.2f} {ratio} {size:>13} {outcome}")
        previous = seconds
    return 0


if __name__ == "__main__":
    sys.exit(main())
