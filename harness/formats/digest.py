"""The one digest of the harness: sha256 over bytes already read, as lower-case hex.

Firmware images (the console dump, the option ROM) are judged by these digests against the
reference profile. One function, so the benchmark (benchmarks/digest.py) measures the very
path the probes use; hashlib hashes a bytes or memoryview argument without copying it.
"""

from __future__ import annotations

import hashlib


def sha256_hex(data: bytes | bytearray | memoryview) -> str:
    """sha256 of `data`, 64 lower-case hex digits."""
    return hashlib.sha256(data).hexdigest()

