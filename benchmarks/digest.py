"""Digest speed: the harness's sha256 path against coreutils `sha256sum`, same image, same run.

(a) harness: `harness.formats.digest.sha256_hex` over the image in memory, as the option ROM
    and firmware probes hash what they read. Timed: the call.
(b) sha256sum: the same image as a file (read once before, so it comes from the page cache),
    hashed by `sha256sum` in its own process. Timed: the process from start to exit.

Runs alternate (harness, sha256sum, harness, ...) so background load hits both alike; medians
are compared and both digests must agree. The ratio is harness rate / sha256sum rate (the
issue's aim: at least 0.9). Usage: .venv/bin/python benchmarks/digest.py [--size 1GiB]
[--repeat 3] [--json] [--require RATIO]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from harness.formats.digest import sha256_hex  # noqa: E402

UNITS = {"KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30}


def parse_size(text: str) -> int:
    for unit, factor in UNITS.items():
        if text.endswith(unit):
            return int(float(text[: -len(unit)]) * factor)
    return int(text)


def make_image(size: int) -> bytes:
    chunk = 64 << 20
    out = bytearray()
    while len(out) < size:
        out += os.urandom(min(chunk, size - len(out)))
    return bytes(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", default="1GiB", help="image size (default 1GiB)")
    ap.add_argument("--repeat", type=int, default=3, help="runs of each (default 3)")
    ap.add_argument("--json", action="store_true", help="print the figures as JSON")
    ap.add_argument("--require", type=float, metavar="RATIO", help="exit 1 if the ratio is below RATIO")
    args = ap.parse_args(argv)
    if not shutil.which("sha256sum"):
        print("sha256sum (coreutils) not found", file=sys.stderr)
        return 2
    size = parse_size(args.size)
    image = make_image(size)
    where = "/dev/shm" if os.path.isdir("/dev/shm") and shutil.disk_usage("/dev/shm").free > 2 * size else None
    with tempfile.NamedTemporaryFile(dir=where, prefix="attestlab-digest-") as f:
        f.write(image)
        f.flush()
        subprocess.run(["cat", f.name], stdout=subprocess.DEVNULL, check=True)  # into the page cache
        ours, theirs, digests = [], [], set()
        for _ in range(args.repeat):
            start = time.perf_counter()
            digests.add(sha256_hex(image))
            ours.append(time.perf_counter() - start)
            start = time.perf_counter()
            out = subprocess.run(["sha256sum", f.name], capture_output=True, text=True, check=True).stdout
            theirs.append(time.perf_counter() - start)
            digests.add(out.split()[0])
    if len(digests) != 1:
        print(f"the digests disagree: {sorted(digests)}", file=sys.stderr)
        return 2
    mib = size / (1 << 20)
    harness_rate, sha256sum_rate = mib / statistics.median(ours), mib / statistics.median(theirs)
    ratio = harness_rate / sha256sum_rate
    figures = {"size_bytes": size, "repeat": args.repeat, "harness_MiB_s": round(harness_rate, 1),
               "sha256sum_MiB_s": round(sha256sum_rate, 1), "ratio": round(ratio, 3),
               "file": "tmpfs" if where else "disk (page cache)", "sha256": digests.pop()}
    if args.json:
        print(json.dumps(figures))
    else:
        print(f"image: {mib:.0f} MiB, {args.repeat} runs each, medians; sha256sum reads a {figures['file']} file")
        print(f"harness  sha256_hex : {harness_rate:8.1f} MiB/s")
        print(f"coreutils sha256sum : {sha256sum_rate:8.1f} MiB/s")
        print(f"ratio harness/sha256sum: {ratio:.3f} (aim: at least 0.9)")
    return 1 if args.require is not None and ratio < args.require else 0


if __name__ == "__main__":
    sys.exit(main())
