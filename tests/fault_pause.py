"""A pytest plugin for tests/test_faults.py: hold a run at a chosen moment so that a test can
send it a signal, fill its disk or start a rival run exactly there.

Loaded only into `attestlab run` processes the tests start, through PYTEST_PLUGINS=fault_pause
with tests/ on PYTHONPATH; nothing in harness/ knows of it. The run writes the file named by
ATTESTLAB_FAULT_MARK when it reaches ATTESTLAB_FAULT_PHASE, then waits until the file named by
ATTESTLAB_FAULT_GO exists (a signal ends the wait as it ends any wait of a run). Phases:

  collected          the plan is collected and the run directory claimed; the board is untouched
  evidence:<prefix>  a probe has just stored a blob whose name starts with <prefix>, mid-collect
  signing            every step has run; the result is about to be signed and written
"""

from __future__ import annotations

import os
import time
from pathlib import Path

PHASE = os.environ.get("ATTESTLAB_FAULT_PHASE", "")
MARK = os.environ.get("ATTESTLAB_FAULT_MARK", "")
GO = os.environ.get("ATTESTLAB_FAULT_GO", "")
_WAIT_S = 60


def _hold(phase: str) -> None:
    if phase != PHASE or not MARK:
        return
    Path(MARK).write_text(str(os.getpid()))
    deadline = time.monotonic() + _WAIT_S
    while not (GO and Path(GO).exists()) and time.monotonic() < deadline:
        time.sleep(0.02)


def pytest_collection_finish(session) -> None:
    _hold("collected")


def pytest_configure(config) -> None:
    if PHASE.startswith("evidence:"):
        from harness.evidence import EvidenceStore
        add = EvidenceStore.add

        def add_then_hold(self, name, data, media_type="application/octet-stream"):
            ref = add(self, name, data, media_type)
            _hold(f"evidence:{name}"[:len(PHASE)])
            return ref

        EvidenceStore.add = add_then_hold
    elif PHASE == "signing":
        import harness.plugin
        write = harness.plugin.write_signed_result

        def hold_then_write(*args, **kwargs):
            _hold("signing")
            return write(*args, **kwargs)

        harness.plugin.write_signed_result = hold_then_write
