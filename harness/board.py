"""Boards: a board config (where each interface is) → opened interfaces, closed always.

A board config says what the board is, which reference profile it must match, and how each
interface is reached (`pcie: {sysfs: ...}`, later `serial`, `usb`, `net`). With
`simulated: <variant>` the board is a simulated one: opening it starts the simulator as a
separate process, which announces where its interfaces are (a sysfs-shaped tree, a pty, a
network link); from then on the same interface code reads it as it would a bench board.
See docs/board-config.md.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from harness import interfaces
from harness.interfaces.netns import proc_starttime, process_alive, sweep_stale
from harness.reference import Reference, load_board_reference
from harness.reference.trust import load_lab_trust
from harness.verdict import ProbeError
from harness.yamlio import Section, YamlError, load_yaml_file_with_digest


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def display_path(path: str | Path) -> str:
    """A path as recorded in results: relative to the working directory when below it, else absolute."""
    resolved = Path(path).resolve()
    try:
        return str(resolved.relative_to(Path.cwd()))
    except ValueError:
        return str(resolved)


class BoardError(ProbeError):
    """The board or one of its interfaces could not be opened."""


@dataclass(frozen=True)
class BoardConfig:
    name: str
    description: str
    reference_path: Path
    simulated: str | None
    pins: dict[str, Any]                 # per-unit facts this board must show (e.g. its DSN)
    interfaces: dict[str, dict[str, Any]]
    path: str
    sha256: str


_BOARD_FIELDS = {"name", "description", "reference", "simulated", "pins"}
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_VARIANT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
_DSN = re.compile(r"^[0-9A-Fa-f]{2}(?:-[0-9A-Fa-f]{2}){7}$")  # as lspci prints it, most significant first


def _matching(section: Section, key: str, pattern: re.Pattern, what: str, required: bool = True) -> str | None:
    value = section.text(key, required=required)
    if value is not None and not pattern.match(value):
        raise section.error(key, f"{value!r} is not {what}")
    return value


def _resolve_supplied_files(serial: dict[str, Any] | None, base: Path) -> None:
    """A `file` transfer's image paths are relative to the board config, as `board.reference` is
    (not to wherever attestlab runs). Their shape is checked where the transfer is (serial_transfer)."""
    transfer = serial.get("transfer") if isinstance(serial, dict) else None
    regions = transfer.get("regions") if isinstance(transfer, dict) else None
    if not isinstance(regions, dict):
        return
    transfer = serial["transfer"] = {**transfer, "regions": dict(regions)}
    for name, spec in regions.items():
        if isinstance(spec, dict) and isinstance(spec.get("file"), str) and spec["file"] \
                and not Path(spec["file"]).is_absolute():
            transfer["regions"][name] = {**spec, "file": str(base / spec["file"])}


def load_board_config(path: str | Path) -> BoardConfig:
    """Read and validate a board config; every mistake is a YamlError `file:line: field: why`.

    Each field is checked here, before anything runs: a bad config gives no verdict at all."""
    path = Path(path)
    doc, digest = load_yaml_file_with_digest(path)
    top = Section(doc, str(path))
    top.reject_unknown({"board", "interfaces"})
    board = top.mapping("board")
    board.reject_unknown(_BOARD_FIELDS)
    name = _matching(board, "name", _NAME, "a board name (letters, digits, _ . -; at most 64)")
    reference = Path(board.text("reference"))
    if not reference.is_absolute():
        reference = path.parent / reference
    found: dict[str, dict[str, Any]] = {}
    ifaces = top.mapping("interfaces", required=False)
    if ifaces is not None:
        for kind in ifaces.data:
            if kind not in interfaces.OPENERS:
                raise ifaces.error(kind, f"unknown interface kind (known: {', '.join(sorted(interfaces.OPENERS))})")
            settings = ifaces.mapping(kind)
            for key in settings.data:
                if not isinstance(key, str):
                    raise settings.error(key, "setting names are strings")
            found[kind] = dict(settings.data)
    _resolve_supplied_files(found.get("serial"), path.parent)
    simulated = _matching(board, "simulated", _VARIANT, "a simulator profile name (letters, digits, _ -)",
                          required=False)
    if not found and not simulated:
        raise top.error("interfaces", "a bench board needs at least one interface")
    pins = board.mapping("pins", required=False)
    if pins is not None:
        pins.reject_unknown({"dsn"})
        _matching(pins, "dsn", _DSN, "a Device Serial Number as lspci prints it (8 hex bytes, "
                                     "dash-separated, e.g. a1-df-09-95-b8-2d-b0-48)")
    return BoardConfig(
        name=name,
        description=board.text("description", required=False, default="") or "",
        reference_path=reference,
        simulated=simulated,
        pins={k: str(v) for k, v in pins.data.items()} if pins else {},
        interfaces=found,
        path=str(path),
        sha256=digest,
    )


@dataclass(frozen=True)
class Life:
    """One look at whether the board is alive, and which of its lives it is in.

    `alive` is None when nothing the board config offers can show it (see docs/board-config.md,
    "Liveness"). `life` names the life: two looks at a live board with different `life` mean it
    rebooted (or its link dropped) in between."""

    at: str                                   # UTC time of the look
    how: str                                  # what was looked at
    alive: bool | None
    life: dict[str, Any] = field(default_factory=dict)
    problem: str = ""                         # why it is not alive

    def as_fact(self) -> dict[str, Any]:
        return {"at": self.at, "how": self.how, "alive": self.alive, "life": self.life, "problem": self.problem}


SIM_WORKDIR_PREFIX = "attestlab-sim-"
OWNER_FILE = "owner.json"       # in a simulator's workdir: the harness process that owns it
_WORKDIR_GRACE_S = 60.0         # a workdir without an owner file younger than this is being created


_PF_EXITING = 0x4  # include/linux/sched.h: the task has begun to exit


def _process_exiting(pid: int) -> bool:
    """The process has begun to exit or is a zombie: it already closed (or is closing) what it
    served, so a step that just saw its interfaces fail must not call it alive."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        fields = stat[stat.rindex(")") + 2:].split()
        return fields[0] in ("Z", "X", "x") or bool(int(fields[6]) & _PF_EXITING)
    except (OSError, ValueError, IndexError):
        return True


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def sweep_dead_simulators(tmp: str | Path | None = None) -> list[str]:
    """Remove what dead runs left: simulator workdirs whose owner and simulator are both gone, and
    ``attestlab-*`` network namespaces (with their veths) of dead owners. Returns what was removed.

    Called whenever a board is opened, so a run killed with SIGKILL is cleaned up by the next one.
    A live run's leftovers are never touched: its owner file names a live process."""
    removed = []
    for workdir in Path(tmp or tempfile.gettempdir()).glob(f"{SIM_WORKDIR_PREFIX}*"):
        try:
            if not workdir.is_dir() or workdir.is_symlink():
                continue
            owner = _read_json(workdir / OWNER_FILE)
            if owner:
                if process_alive(owner.get("pid"), owner.get("starttime")):
                    continue
            elif time.time() - workdir.stat().st_mtime < _WORKDIR_GRACE_S:
                continue
            if process_alive(_read_json(workdir / "ready.json").get("pid"), None):
                continue  # its simulator still runs (it exits by itself once its harness is gone)
        except OSError:
            continue
        shutil.rmtree(workdir, ignore_errors=True)
        removed.append(str(workdir))
    try:
        removed += sweep_stale()
    except (ProbeError, OSError):
        pass  # without the privileges to delete namespaces there are none of ours to delete
    return removed


def pcie_life(sysfs: Any) -> Life:
    """A bench board's PCIe function is alive while its config header reads as a device: not
    all ones (what a function that dropped off the bus or lost power answers), and the same
    vendor and device as before (another id is another life)."""
    at = utc_now()
    how = f"a read of the PCIe config header at {sysfs}"
    try:
        with open(Path(str(sysfs)) / "config", "rb", buffering=0) as f:
            header = f.read(4)
    except (OSError, ValueError) as exc:
        return Life(at, how, False, problem=f"cannot read it: {getattr(exc, 'strerror', None) or exc}")
    if len(header) < 4 or header == b"\xff\xff\xff\xff":
        return Life(at, how, False, problem=f"no device answers (header {header.hex() or 'empty'})")
    return Life(at, how, True, life={"vendor_device": header.hex()})


class SimulatedBoardProcess:
    """Runs `python -m fixtures.sim` for one variant and learns its interfaces from ready.json."""

    START_TIMEOUT_S = 30.0

    def __init__(self, variant: str) -> None:
        self.variant = variant
        self.workdir = Path(tempfile.mkdtemp(prefix=f"{SIM_WORKDIR_PREFIX}{variant}-"))
        # Who owns the workdir, so that a sweep removes it only once this process is dead.
        (self.workdir / OWNER_FILE).write_text(json.dumps({"pid": os.getpid(),
                                                           "starttime": proc_starttime(os.getpid())}))
        self.process: subprocess.Popen | None = None
        self.starttime: int | None = None
        self.announced: dict[str, Any] = {}

    def start(self) -> dict[str, dict[str, Any]]:
        ready = self.workdir / "ready.json"
        log = open(self.workdir / "simulator.log", "wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "fixtures.sim", "--profile", self.variant,
             "--workdir", str(self.workdir), "--ready", str(ready)],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        self.starttime = proc_starttime(self.process.pid)
        deadline = time.monotonic() + self.START_TIMEOUT_S
        while not ready.exists():
            if self.process.poll() is not None:
                tail = self.log_tail()
                self.stop()
                raise BoardError(f"simulated board {self.variant!r} exited with status "
                                 f"{self.process.returncode} before it was ready: {tail}")
            if time.monotonic() > deadline:
                tail = self.log_tail()
                self.stop()
                raise BoardError(f"simulated board {self.variant!r} not ready after "
                                 f"{self.START_TIMEOUT_S:.0f} s: {tail}")
            time.sleep(0.02)
        try:
            self.announced = json.loads(ready.read_text())
            interfaces = self.announced["interfaces"]
            if not isinstance(interfaces, dict) or not all(isinstance(v, dict) for v in interfaces.values()):
                raise ValueError("interfaces is not a mapping of mappings")
        except (OSError, ValueError, KeyError, TypeError) as exc:
            tail = self.log_tail()
            self.stop()
            raise BoardError(f"simulated board {self.variant!r} announced its interfaces unreadably "
                             f"({type(exc).__name__}: {exc}): {tail}") from None
        return interfaces

    def life(self) -> Life:
        """The simulator process is this board's life: alive while it runs, the same life while its
        pid, start time and announced boot id stay the same. A dead one cannot come back, so a look
        before and after a step covers all of the step."""
        at = utc_now()
        pid = self.process.pid if self.process is not None else None
        how = f"simulated board process {pid} ({self.variant})"
        code = self.process.poll() if self.process is not None else None
        if self.process is None or code is not None:
            status = f"killed by signal {-code}" if code is not None and code < 0 else f"exit status {code}"
            return Life(at, how, False, problem=f"the simulator exited ({status})")
        if _process_exiting(pid):
            return Life(at, how, False, problem="the simulator is exiting")
        start = proc_starttime(pid)
        if start is None or start != self.starttime:
            return Life(at, how, False, problem="the simulator's pid no longer names the process that was started")
        boot_id = _read_json(self.workdir / "ready.json").get("boot_id")
        if not isinstance(boot_id, str):
            return Life(at, how, False, problem="the simulator withdrew its boot id from ready.json "
                                                "(it is shutting down)")
        return Life(at, how, True, life={"pid": pid, "starttime": start, "boot_id": boot_id})

    def log_tail(self, limit: int = 2000) -> str:
        try:
            return (self.workdir / "simulator.log").read_text(errors="replace")[-limit:].strip() or "(no output)"
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        if self.process is not None:
            # The simulator leads its own process group: signal the group, so helpers it started go too.
            try:
                os.killpg(self.process.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.process.wait(timeout=10)
            if self.process.returncode != 0:  # killed: it could not delete its namespace and veth
                try:
                    sweep_stale()
                except (ProbeError, OSError):
                    pass
        shutil.rmtree(self.workdir, ignore_errors=True)


class Board:
    """A board under test: its config, its reference profile, and its interfaces opened lazily."""

    def __init__(self, config: BoardConfig, reference: Reference) -> None:
        self.config = config
        self.reference = reference
        self._settings: dict[str, dict[str, Any]] = dict(config.interfaces)
        self._open: dict[str, Any] = {}
        self._simulator: SimulatedBoardProcess | None = None
        self._started = False
        self._open_error: BoardError | None = None
        self._pcie_answered = False   # a bench board's PCIe function has shown it alive in this run

    @classmethod
    def from_file(cls, path: str | Path, trust: str | Path | None = None) -> "Board":
        """The board of a config file, with its reference profile judged by the lab's trust file
        (`trust`, else the default locations of harness/reference/trust.py)."""
        config = load_board_config(path)
        lab_trust = load_lab_trust(trust)  # a bad trust file: TrustError (a YamlError), no verdict
        try:
            reference = load_board_reference(config.reference_path, lab_trust)
        except YamlError as exc:
            raise YamlError(f"{config.path}: board.reference: {exc}") from None
        return cls(config, reference)

    @property
    def name(self) -> str:
        return self.config.name

    def open(self) -> "Board":
        """Start the simulated board if there is one. Interfaces themselves open on first use."""
        if self._open_error is not None:  # every later step reports the same cause, not a symptom
            raise self._open_error
        if self._started:
            return self
        self._started = True
        sweep_dead_simulators()  # what killed runs left behind, before this run adds its own
        if self.config.simulated:
            self._simulator = SimulatedBoardProcess(self.config.simulated)
            try:
                announced = self._simulator.start()
            except BoardError as exc:
                self._open_error = exc
                raise
            for kind, settings in announced.items():
                # What the config says wins over what the simulator announces (e.g. a baudrate).
                self._settings[kind] = {**settings, **self._settings.get(kind, {})}
        return self

    def liveness(self) -> Life:
        """Look whether the board is alive now, and which life it is in (docs/board-config.md, "Liveness").

        A simulated board: its simulator process. A bench board: its PCIe function answering a
        fresh read of its config header (a function that is gone or powered off reads as all
        ones). Nothing else is touched: a look must not disturb what the steps judge."""
        self.open()
        if self._simulator is not None:
            return self._simulator.life()
        if "pcie" in self._settings:
            look = pcie_life(self._settings["pcie"].get("sysfs"))
            self._pcie_answered = self._pcie_answered or bool(look.alive)
            if not self._pcie_answered:  # a function that never answered is no sign of this board's life
                return Life(look.at, look.how, None, problem=f"never answered: {look.problem}")
            return look
        return Life(utc_now(), "nothing (the board config offers no sign of life: no pcie interface)", None)

    def has_interface(self, kind: str) -> bool:
        self.open()
        return kind in self._settings

    def interface(self, kind: str) -> Any:
        self.open()
        if kind in self._open:
            return self._open[kind]
        if kind not in self._settings:
            raise BoardError(f"board {self.name!r} has no {kind!r} interface "
                             f"(add interfaces.{kind} to {self.config.path})")
        try:
            handle = interfaces.opener(kind)(self._settings[kind])
        except ProbeError:
            raise
        except Exception as exc:  # an opener's own failure is an unusable interface, not a crash
            raise BoardError(f"board {self.name!r}: cannot open {kind} interface: "
                             f"{type(exc).__name__}: {exc}") from exc
        self._open[kind] = handle
        return handle

    @property
    def pcie(self):  # -> harness.interfaces.pcie.PcieFunction
        return self.interface("pcie")

    def interface_settings(self, kind: str) -> dict[str, Any]:
        self.open()
        return dict(self._settings.get(kind, {}))

    def identity(self) -> dict[str, Any]:
        """Who the board claims to be, for the run record (pins from the config, never probed)."""
        return {
            "name": self.config.name,
            "config": {"path": display_path(self.config.path), "sha256": self.config.sha256},
            "simulated": self.config.simulated,
            "pins": self.config.pins,
            "reference": {"path": display_path(self.reference.path), **self.reference.as_record()},
        }

    def close(self) -> None:
        errors = []
        for kind in reversed(list(self._open)):
            try:
                self._open.pop(kind).close()
            except Exception as exc:  # keep closing the rest
                errors.append(f"{kind}: {exc}")
        if self._simulator is not None:
            self._simulator.stop()
            self._simulator = None
        self._started = False
        if errors:
            raise BoardError(f"board {self.name!r}: errors while closing: {'; '.join(errors)}")

    def __enter__(self) -> "Board":
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()
