"""The activity a board config names for its `net` port: what makes the board work while its
management link is captured (`activity: workload` in the egress probe).

Two kinds, from `interfaces.net` of a board config:

* ``workload: {command: [program, args...]}`` -- a bench command (no shell), run in its own
  session; its stdout and stderr go to a temporary file; still running at the end of the
  window, it is stopped (SIGTERM, then SIGKILL); a non-zero exit is a failed workload.
* ``workload_trigger: /abs/path`` -- a simulated board starts its workload when this file
  appears (fixtures/sim/network.py watches it).

`NetworkPort.start_workload()` returns a started `Workload`; `finish()` says what happened,
`output()` is the command's output (the last 256 KiB), `cleanup()` always runs.
"""

from __future__ import annotations

import datetime as _dt
import os
import signal
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from harness.verdict import ProbeError

OUTPUT_TAIL_BYTES = 256 * 1024


def _utc() -> str:
    now = _dt.datetime.now(_dt.timezone.utc)
    return now.isoformat(timespec="milliseconds").replace("+00:00", "Z")


class Workload:
    """One run of the board's workload: a bench command, or a simulated board's trigger file."""

    def __init__(self, command: tuple[str, ...] | None, trigger: str | None) -> None:
        if (command is None) == (trigger is None):
            raise ValueError("a workload is a command or a trigger file, exactly one")
        self.command = command
        self.trigger = trigger
        self.proc: subprocess.Popen | None = None
        self.started = ""
        self.log_path: Path | None = None

    def start(self) -> None:
        """Start it; raises ProbeError (an ERROR verdict) when it cannot be started."""
        self.started = _utc()
        if self.command is not None:
            fd, name = tempfile.mkstemp(prefix="attestlab-workload-", suffix=".log")
            self.log_path = Path(name)
            try:
                self.proc = subprocess.Popen(list(self.command), stdin=subprocess.DEVNULL, stdout=fd,
                                             stderr=subprocess.STDOUT, start_new_session=True)
            except OSError as exc:
                raise ProbeError(f"cannot start the workload {list(self.command)}: "
                                 f"{exc.strerror or exc} (interfaces.net.workload.command)") from None
            finally:
                os.close(fd)
        else:
            try:
                Path(self.trigger).write_text(f"started {self.started}\n")
            except OSError as exc:
                raise ProbeError(f"cannot start the workload: writing {self.trigger} "
                                 f"failed: {exc.strerror or exc}") from None

    def finish(self) -> dict[str, Any]:
        """Stop a command still running at the end of the window; say what happened."""
        info: dict[str, Any] = {"started": self.started}
        if self.proc is None:
            info["trigger"] = self.trigger
            info["status"] = "triggered"
            return info
        info["command"] = list(self.command or ())
        code = self.proc.poll()
        if code is None:
            info["status"] = "running at the end of the window (stopped)"
            self._kill()
        elif code == 0:
            info["status"] = "exited 0"
        else:
            info["status"] = f"failed: exit status {code}"
            info["failed"] = True
        info["exit_status"] = self.proc.returncode
        return info

    def _kill(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(5)
        except (OSError, subprocess.TimeoutExpired):
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except OSError:
                pass
            self.proc.wait(5)

    def output(self) -> bytes:
        """The command's output so far (its last OUTPUT_TAIL_BYTES); empty for a trigger."""
        if self.log_path is None:
            return b""
        try:
            with self.log_path.open("rb") as f:
                f.seek(max(0, f.seek(0, os.SEEK_END) - OUTPUT_TAIL_BYTES))
                return f.read(OUTPUT_TAIL_BYTES)
        except OSError:
            return b""

    def cleanup(self) -> None:
        self._kill()
        if self.log_path is not None:
            self.log_path.unlink(missing_ok=True)
