"""A PCIe function read through Linux sysfs.

The same code reads `/sys/bus/pci/devices/<bdf>/` on a bench host and any directory of that
shape: a simulated board's tree or a capture. Config space is read once and cached: on a
passthrough host every 4-byte access traps to the hypervisor (about 24 ms for 4096 bytes
measured on an H100 VM), and a board must not be able to answer two reads differently
within one run.

Reading `config` as a non-root user returns only the first 64 (sometimes 256) bytes; the
decoder then sees no extended capabilities, and `extended_config_readable` says so.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from harness.verdict import ProbeError

SYSFS_PCI_DEVICES = Path("/sys/bus/pci/devices")
_BDF = re.compile(r"^(?:[0-9a-fA-F]{4}:)?[0-9a-fA-F]{2}:[0-1][0-9a-fA-F]\.[0-7]$")
_MAX_ATTRIBUTE_BYTES = 64 * 1024


class PcieUnavailable(ProbeError):
    """The PCIe function cannot be read (missing, unplugged, permission)."""


@dataclass(frozen=True)
class BarResource:
    """One line of sysfs `resource`: where the kernel mapped a BAR (start, end, flags)."""

    index: int
    start: int
    end: int
    flags: int

    @property
    def size(self) -> int:
        return self.end - self.start + 1 if self.end else 0


def resolve_sysfs_path(target: str | Path) -> Path:
    """A BDF (`0000:41:00.0` or `41:00.0`) names a device under /sys/bus/pci/devices; else a path."""
    text = str(target)
    if _BDF.match(text):
        bdf = text if text.count(":") == 2 else f"0000:{text}"
        return SYSFS_PCI_DEVICES / bdf.lower()
    return Path(text)


class PcieFunction:
    """Narrow API the probes use: config space, identity attributes, BARs, link, driver."""

    kind = "pcie"

    def __init__(self, sysfs: str | Path) -> None:
        self.path = resolve_sysfs_path(sysfs)
        if not (self.path / "config").is_file():
            raise PcieUnavailable(
                f"{self.path}: not a PCIe function directory (no 'config' file); give a sysfs "
                f"device directory such as /sys/bus/pci/devices/0000:41:00.0")
        self._config: bytes | None = None

    @property
    def bdf(self) -> str:
        """The function's address: the directory name (or where its symlink points)."""
        return Path(os.path.realpath(self.path)).name if self.path.is_symlink() else self.path.name

    def config_space(self) -> bytes:
        """The raw config space, read once (a single read of the whole file) and cached."""
        if self._config is None:
            try:
                with open(self.path / "config", "rb", buffering=0) as f:
                    data = f.read(4096 + 1)
            except OSError as exc:
                raise PcieUnavailable(f"{self.path}/config: cannot read: {exc.strerror or exc}") from None
            if len(data) > 4096:
                raise PcieUnavailable(f"{self.path}/config: longer than 4096 bytes; not a config space")
            self._config = data
        return self._config

    @property
    def extended_config_readable(self) -> bool:
        return len(self.config_space()) >= 4096

    def attribute(self, name: str) -> str | None:
        """A sysfs attribute as text (stripped), or None where the file does not exist."""
        if "/" in name or name.startswith("."):
            raise ValueError(f"not a sysfs attribute name: {name!r}")
        try:
            with open(self.path / name, "rb") as f:
                raw = f.read(_MAX_ATTRIBUTE_BYTES)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise PcieUnavailable(f"{self.path}/{name}: cannot read: {exc.strerror or exc}") from None
        return raw.decode("ascii", errors="replace").strip()

    def hex_attribute(self, name: str) -> int | None:
        text = self.attribute(name)
        if text is None:
            return None
        try:
            return int(text, 16)
        except ValueError:
            raise PcieUnavailable(f"{self.path}/{name}: expected a hex number, read {text[:40]!r}") from None

    def resources(self) -> tuple[BarResource, ...]:
        text = self.attribute("resource")
        if text is None:
            return ()
        bars = []
        for index, line in enumerate(text.splitlines()):
            parts = line.split()
            try:
                start, end, flags = (int(p, 16) for p in parts)
            except ValueError:
                raise PcieUnavailable(f"{self.path}/resource line {index + 1}: "
                                      f"expected three hex numbers, read {line[:80]!r}") from None
            bars.append(BarResource(index, start, end, flags))
        return tuple(bars)

    def link(self) -> dict[str, str | None]:
        return {name: self.attribute(name) for name in
                ("current_link_speed", "current_link_width", "max_link_speed", "max_link_width")}

    def driver(self) -> str | None:
        link = self.path / "driver"
        return Path(os.readlink(link)).name if link.is_symlink() else None

    def close(self) -> None:
        """Nothing is held open between reads; present so every interface closes alike."""


def open_pcie(settings: dict) -> PcieFunction:
    """Board-config entry `pcie: {sysfs: <path or BDF>}` → a PcieFunction."""
    sysfs = settings.get("sysfs")
    if not sysfs:
        raise PcieUnavailable("pcie interface needs 'sysfs': a device directory or a BDF")
    return PcieFunction(sysfs)
