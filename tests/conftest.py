"""Shared helpers for the test suite."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PLAN = ROOT / "test_plans" / "level1.yaml"
PCIE_PLAN = ROOT / "fixtures" / "plans" / "pcie-only.yaml"   # level1's PCIe requirements alone: fast
BOARDS = ROOT / "fixtures" / "boards"
CAPTURE = ROOT / "fixtures" / "captures" / "h100-sxm5-80gb-passthrough"
TEST_KEY = ROOT / "fixtures" / "keys" / "test-lab.key"   # a TEST key, committed on purpose
TEST_PUB = ROOT / "fixtures" / "keys" / "test-lab.pub"

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (network namespaces / full sysfs config space)")


def attestlab(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run the attestlab command line as a user would, in a separate process."""
    return subprocess.run([sys.executable, "-m", "harness.cli", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT)


def lspci_available() -> bool:
    return shutil.which("lspci") is not None
