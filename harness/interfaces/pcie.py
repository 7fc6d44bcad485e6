"""A PCIe function read through Linux sysfs.

The same code reads `/sys/bus/pci/devices/<bdf>/` on a bench host and any directory of that
shape: a simulated board's tree or a capture. Config space is read once and cached: on a
passthrough host every 4-byte access traps to the hypervisor (about 24 ms for 4096 bytes
measured on an H100 VM), and a board must not be able to answer two reads differently
within one run.

Reading `config` as a non-root user returns only the first 64 (sometimes 256) bytes; the
decoder then sees no extended capabilities, and `extended_config_readable` says so.

`read_rom` reads the option ROM from `rom` (root only), switching it on and, always, off again
around the read (docs/firmware-integrity.md).
"""

from __future__ import annotations

import errno
import os
import re
import stat
import time
from dataclasses import dataclass
from pathlib import Path

from harness.verdict import ProbeError

SYSFS_PCI_DEVICES = Path("/sys/bus/pci/devices")
_BDF = re.compile(r"^(?:[0-9a-fA-F]{4}:)?[0-9a-fA-F]{2}:[0-1][0-9a-fA-F]\.[0-7]$")
_MAX_ATTRIBUTE_BYTES = 64 * 1024
MAX_ROM_BYTES = 16 << 20  # a ROM BAR decodes at most 16 MiB on every board we know of
ROM_READ_TIMEOUT_S = 60.0  # a ROM reads at a few MB/s at worst: 16 MiB well within it
_ROM_CHUNK = 64 * 1024


class PcieUnavailable(ProbeError):
    """The PCIe function cannot be read (missing, unplugged, permission)."""


class RomUnavailable(PcieUnavailable):
    """The function has no `rom` file: it exposes no option ROM (no ROM BAR, or a hypervisor hides it)."""


class RomReadError(PcieUnavailable):
    """The `rom` file exists but could not be read, or not restored; `data` holds what was read."""

    def __init__(self, message: str, data: bytes = b"") -> None:
        super().__init__(message)
        self.data = data


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

    def read_rom(self, max_size: int = MAX_ROM_BYTES, enable: bool | None = None,
                 timeout_s: float = ROM_READ_TIMEOUT_S) -> bytes:
        """The option ROM as the kernel exposes it in `rom`: at most `max_size` bytes, within `timeout_s`.

        The kernel shows the ROM only while it is enabled: "1" is written before the read and
        "0" after it, always, also when the read fails (a ROM BAR left decoding can shadow the
        function's MMIO on some boards). Both are written with their newline: kernels before
        6.x disable only on exactly "0\n" and take any other write, a bare "0" too, as enable.
        `enable` None writes only where the file lies in sysfs: in a capture or a simulated
        tree `rom` is a plain file, which a write would overwrite, and which reads without it.
        A `rom` that is a symbolic link is refused unread and unwritten: the kernel's never is one,
        and a planted one would aim the enable write (as root) at whatever file it names.
        The read goes in 64 KiB pieces (the kernel maps the ROM for each); a board that answers
        so slowly that the pieces outlast `timeout_s` is stopped between two of them.
        """
        path = self.path / "rom"
        if not os.path.lexists(path):
            raise RomUnavailable(f"{self.path}: no 'rom' file: the function exposes no option ROM (no ROM "
                                 f"BAR, or a hypervisor that passes the function through hides it)")
        if path.is_symlink():  # sysfs `rom` never is one; a planted one would aim the "1\n" write elsewhere
            raise RomReadError(f"{path}: a symbolic link (to {os.readlink(path)}), not a function's rom: refused, "
                               f"neither read nor written")
        if enable is None:
            enable = os.path.realpath(path).startswith("/sys/")
        if enable:
            self._write_rom_switch(path, b"1\n", "enable")
        chunks: list[bytes] = []
        failure = None
        try:
            failure = _read_rom_file(path, max_size + 1, time.monotonic() + timeout_s, chunks)
        finally:
            if enable:
                try:
                    self._write_rom_switch(path, b"0\n", "disable")
                except RomReadError as exc:
                    why = f"{failure}; then " if failure else ""
                    raise RomReadError(f"{why}{exc} (the ROM may stay enabled: echo 0 > {path})",
                                       b"".join(chunks)[:max_size]) from None
        data = b"".join(chunks)
        if failure:
            raise RomReadError(failure, data[:max_size])
        if not data:
            raise RomReadError(f"{path}: read 0 bytes: the kernel shows an empty ROM")
        if len(data) > max_size:
            raise RomReadError(f"{path}: longer than {max_size} bytes: not read further (raise max_size "
                               f"if the product's ROM is larger)", data[:max_size])
        return data

    @staticmethod
    def _write_rom_switch(path: Path, value: bytes, what: str) -> None:
        try:
            # O_NONBLOCK: a FIFO planted in place of `rom` must not hang the open; never O_TRUNC;
            # O_NOFOLLOW: a link planted after read_rom looked is refused too.
            fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0))
        except OSError as exc:
            raise RomReadError(f"{path}: cannot {what} the ROM (write {value.strip().decode()}): "
                               f"{exc.strerror or exc}") from None
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise RomReadError(f"{path}: not a regular file: refused to {what} the ROM through it")
            written = os.write(fd, value)
            if written != len(value):
                raise RomReadError(f"{path}: cannot {what} the ROM: wrote {written} of {len(value)} bytes")
        except OSError as exc:
            raise RomReadError(f"{path}: cannot {what} the ROM (write {value.strip().decode()}): "
                               f"{exc.strerror or exc}") from None
        finally:
            os.close(fd)

    def close(self) -> None:
        """Nothing is held open between reads; present so every interface closes alike."""


def _read_rom_file(path: Path, limit: int, deadline: float, chunks: list[bytes]) -> str | None:
    """Read `path` into `chunks` (at most `limit` bytes, until `deadline`); why it failed, or None.
    What was read before a failure stays in `chunks`."""
    try:
        # O_NONBLOCK: a FIFO planted in place of `rom` must not hang the open before fstat refuses it.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        return _rom_read_failure(path, exc)
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            kind = "a directory" if stat.S_ISDIR(mode) else "a FIFO" if stat.S_ISFIFO(mode) else "a special file"
            return f"{path}: cannot read: {kind}, not a regular file: refused unread"
        total = 0
        while total < limit:
            try:
                chunk = os.read(fd, min(_ROM_CHUNK, limit - total))
            except OSError as exc:
                return _rom_read_failure(path, exc) + (f" after {total} bytes" if total else "")
            if not chunk:
                return None
            chunks.append(chunk)
            total += len(chunk)
            if time.monotonic() > deadline:
                return f"{path}: the read took too long: stopped after {total} bytes"
        return None
    finally:
        os.close(fd)


def _rom_read_failure(path: Path, exc: OSError) -> str:
    """What a failed read of `rom` means, in the kernel's terms (drivers/pci/pci-sysfs.c, rom.c)."""
    why = {errno.EIO: "the kernel could not map the ROM (EIO): its first image has no 55 AA signature, "
                      "or the ROM BAR is not assigned",
           errno.EINVAL: "the kernel refused the read (EINVAL): the ROM was not enabled"}.get(exc.errno)
    return f"{path}: cannot read: {why or exc.strerror or exc}"


def open_pcie(settings: dict) -> PcieFunction:
    """Board-config entry `pcie: {sysfs: <path or BDF>}` → a PcieFunction."""
    sysfs = settings.get("sysfs")
    if not sysfs:
        raise PcieUnavailable("pcie interface needs 'sysfs': a device directory or a BDF")
    return PcieFunction(sysfs)
