"""Decoder for a PCI/PCIe function's configuration space, as read from sysfs `config`.

Decodes the header (IDs, class, revision, header layout, subsystem IDs, BARs), walks the
standard capability list (from the pointer at 0x34, or 0x14 on a CardBus bridge) and the
extended capability list (from 0x100, 4096-byte dumps only) the way `lspci` does, and reads
the Device Serial Number. Also writes and reads the text form of `lspci -xxxx`, which
`lspci -F <file>` accepts, so any dump can be checked against the real lspci.

The bytes come from a device that may lie. The decoder is pure and total: it raises
ConfigSpaceError only when the dump is unusable (not bytes, not 64/256/4096 bytes long);
everything else is decoded as far as it goes, and whatever a well-behaved device would not
do (list loops, pointers out of range or into the header, entries cut off by the end of the
dump, reserved bits, contradictory header fields) is recorded in `anomalies`, each naming
the offset. Every walk is bounded by a visited set and an entry cap, so it cannot hang.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from harness.formats.pci_names import extended_capability_name, standard_capability_name

__all__ = [
    "ACCEPTED_SIZES", "Bar", "Capability", "ConfigSpace", "ConfigSpaceError", "config_space_json",
    "decode_config_space", "format_dsn", "lspci_hex_dump", "parse_lspci_hex_dump",
]

ACCEPTED_SIZES = (64, 256, 4096)

# Header fields (PCI Local Bus Spec 3.0 §6.2, PCIe Base Spec §7.5.1).
_STATUS_CAP_LIST = 0x10  # Status bit 4: the standard capability list exists
_HEADER_LAYOUTS = {0: "endpoint", 1: "PCI-to-PCI bridge", 2: "CardBus bridge"}
_CAP_POINTER = {0: 0x34, 1: 0x34, 2: 0x14}  # CardBus keeps its list pointer at 0x14
_HEADER_END = {0: 0x40, 1: 0x40, 2: 0x48}  # capabilities may not sit inside the header
_BAR_COUNT = {0: 6, 1: 2, 2: 1}

_EXT_START = 0x100
# Bounds on the walks: one entry per dword after the header (the visited set already
# guarantees this; the caps make the bound explicit).
MAX_STANDARD_ENTRIES = (0x100 - 0x40) // 4  # 48
MAX_EXTENDED_ENTRIES = (0x1000 - 0x100) // 4  # 960

_CAP_ID_EXPRESS = 0x10
_CAP_ID_PCIX = 0x07
_CAP_ID_VENDOR = 0x09
_EXT_ID_DSN = 0x0003
_EXT_ID_VSEC = 0x000B
_EXT_ID_DVSEC = 0x0023

# Smallest size the spec allows for capabilities whose layout is fixed; an entry that runs
# past the end of the dump is cut off (lspci prints nothing for a cut-off DSN or Subsystem).
_STANDARD_MIN_LENGTH = {0x01: 8, 0x05: 10, 0x0D: 8, 0x11: 12}
_EXTENDED_MIN_LENGTH = {0x0001: 0x2C, 0x0003: 12, 0x000E: 8, 0x000F: 8, 0x0018: 8, 0x001B: 8}
# Capabilities a function may carry at most once (more than one is a device contradicting itself).
_STANDARD_SINGLETONS = {0x01, 0x05, 0x10, 0x11}
_EXTENDED_SINGLETONS = {0x0001, 0x0003, 0x000E, 0x000F, 0x0010, 0x0018, 0x001B}


class ConfigSpaceError(ValueError):
    """The dump cannot be decoded at all; the message names the field or offset."""


@dataclass(frozen=True)
class Capability:
    offset: int
    id: int
    version: int | None  # extended capabilities only; None on the standard list
    extended: bool
    name: str  # as lspci names it (see pci_names)


@dataclass(frozen=True)
class Bar:
    index: int  # BAR slot (0-5); a 64-bit BAR also uses slot index+1
    kind: str  # "memory" | "io"
    address: int  # as programmed in config space, flag bits masked off
    is_64bit: bool
    prefetchable: bool


@dataclass(frozen=True)
class ConfigSpace:
    size: int
    vendor_id: int
    device_id: int
    command: int
    status: int
    revision: int
    class_code: int  # base << 16 | sub << 8 | prog-if
    header_type: int  # layout, multifunction bit stripped
    multifunction: bool
    subsystem_vendor_id: int | None
    subsystem_id: int | None
    bars: tuple[Bar, ...]
    capabilities: tuple[Capability, ...]  # standard list then extended list, each in list order
    dsn: int | None
    anomalies: tuple[str, ...]

    def capability(self, id: int, extended: bool) -> Capability | None:  # noqa: A002 - API name
        """The first capability with this ID on the standard or the extended list."""
        for cap in self.capabilities:
            if cap.id == id and cap.extended == extended:
                return cap
        return None


def _u16(data: bytes, off: int) -> int:
    return int.from_bytes(data[off:off + 2], "little")


def _u32(data: bytes, off: int) -> int:
    return int.from_bytes(data[off:off + 4], "little")


def decode_config_space(data: bytes) -> ConfigSpace:
    """Decode a 64-, 256- or 4096-byte config-space dump; oddities go to `anomalies`."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise ConfigSpaceError(f"config space must be bytes, got {type(data).__name__}")
    try:
        data = bytes(data)
    except (TypeError, ValueError) as exc:  # e.g. a released memoryview
        raise ConfigSpaceError(f"config space buffer cannot be read: {exc}") from None
    if len(data) not in ACCEPTED_SIZES:
        raise ConfigSpaceError(
            f"config space dump is {len(data)} bytes; expected 64, 256 or 4096"
            + (" (the 64-byte header is incomplete)" if len(data) < 64 else ""))
    anomalies: list[str] = []

    vendor_id, device_id = _u16(data, 0x00), _u16(data, 0x02)
    command, status = _u16(data, 0x04), _u16(data, 0x06)
    revision = data[0x08]
    class_code = int.from_bytes(data[0x09:0x0C], "little")
    header_byte = data[0x0E]
    layout, multifunction = header_byte & 0x7F, bool(header_byte & 0x80)

    if vendor_id == 0xFFFF:
        anomalies.append("vendor ID at 0x00 is 0xffff: the read returned all ones (no device responded)")
    elif vendor_id == 0x0000:
        anomalies.append("vendor ID at 0x00 is 0x0000, which is not a valid vendor")

    subsystem_vendor_id = subsystem_id = None
    bars: tuple[Bar, ...] = ()
    capabilities: list[Capability] = []
    if layout not in _HEADER_LAYOUTS:
        # Neither Linux nor lspci interprets such a function; we don't guess a layout either.
        anomalies.append(f"header type at 0x0e is {layout:#04x}, a reserved layout; "
                         "BARs, subsystem IDs and capability lists not decoded")
    else:
        _check_class_for_layout(class_code, layout, anomalies)
        if layout == 0:
            subsystem_vendor_id, subsystem_id = _u16(data, 0x2C), _u16(data, 0x2E)
        elif layout == 2 and len(data) >= 0x44:
            subsystem_vendor_id, subsystem_id = _u16(data, 0x40), _u16(data, 0x42)
        bars = _decode_bars(data, _BAR_COUNT[layout], anomalies)
        capabilities += _walk_standard(data, status, layout, anomalies)
        extended = _walk_extended(data, anomalies)
        if extended and not any(c.id in (_CAP_ID_EXPRESS, _CAP_ID_PCIX) for c in capabilities):
            # lspci only shows the extended list of a PCIe or PCI-X function; we show it anyway.
            anomalies.append("extended capability list at 0x100 but no PCI Express or PCI-X "
                             "capability on the standard list")
        capabilities += extended

    _check_singletons(capabilities, anomalies)
    dsn = None
    dsn_cap = next((c for c in capabilities if c.extended and c.id == _EXT_ID_DSN), None)
    if dsn_cap is not None and dsn_cap.offset + 12 <= len(data):
        dsn = int.from_bytes(data[dsn_cap.offset + 4:dsn_cap.offset + 12], "little")

    return ConfigSpace(
        size=len(data), vendor_id=vendor_id, device_id=device_id, command=command,
        status=status, revision=revision, class_code=class_code, header_type=layout,
        multifunction=multifunction, subsystem_vendor_id=subsystem_vendor_id,
        subsystem_id=subsystem_id, bars=bars, capabilities=tuple(capabilities), dsn=dsn,
        anomalies=tuple(anomalies))


def _check_class_for_layout(class_code: int, layout: int, anomalies: list[str]) -> None:
    # The same consistency rules lspci prints as "!!! Invalid class ... for header type".
    cls = class_code >> 8
    if (layout == 0 and cls == 0x0604) or (layout in (1, 2) and cls >> 8 != 0x06):
        anomalies.append(f"class {cls:04x} at 0x0a does not fit header type {layout:#04x} "
                         f"({_HEADER_LAYOUTS[layout]})")


def _decode_bars(data: bytes, count: int, anomalies: list[str]) -> tuple[Bar, ...]:
    bars: list[Bar] = []
    i = 0
    while i < count:
        off = 0x10 + 4 * i
        value = _u32(data, off)
        if value == 0:  # unimplemented (or an unassigned 32-bit memory BAR: indistinguishable)
            i += 1
            continue
        if value == 0xFFFFFFFF:
            anomalies.append(f"BAR{i} at {off:#04x} reads 0xffffffff (mid-sizing or no response)")
            i += 1
            continue
        if value & 0x1:
            if value & 0x2:
                anomalies.append(f"BAR{i} at {off:#04x}: reserved bit 1 of an I/O BAR is set")
            bars.append(Bar(i, "io", value & ~0x3, False, False))
            i += 1
            continue
        mem_type, prefetchable, address = (value >> 1) & 0x3, bool(value & 0x8), value & ~0xF
        if mem_type == 0b10:
            if i + 1 < count:
                address |= _u32(data, off + 4) << 32
                bars.append(Bar(i, "memory", address, True, prefetchable))
                i += 2
                continue
            anomalies.append(f"BAR{i} at {off:#04x} is marked 64-bit but is the last BAR slot")
            bars.append(Bar(i, "memory", address, True, prefetchable))
        else:
            if mem_type == 0b11:
                anomalies.append(f"BAR{i} at {off:#04x}: memory type 0b11 is reserved")
            bars.append(Bar(i, "memory", address, False, prefetchable))
        i += 1
    return tuple(bars)


def _walk_standard(data: bytes, status: int, layout: int, anomalies: list[str]) -> list[Capability]:
    src = _CAP_POINTER[layout]
    raw = data[src]
    if not status & _STATUS_CAP_LIST:
        if raw:
            anomalies.append(f"standard capability list: pointer at {src:#04x} is {raw:#04x} but "
                             "Status bit 4 (Capabilities List) is clear; list not followed")
        return []
    header_end, size = _HEADER_END[layout], len(data)
    caps: list[Capability] = []
    visited: set[int] = set()
    where = raw & 0xFC  # the low two bits are reserved; lspci and Linux mask them off
    if raw & 0x3:
        anomalies.append(f"standard capability list: pointer at {src:#04x} ({raw:#04x}) has "
                         f"reserved bits set; using {where:#04x}")
    while where:
        where_s = f"pointer at {src:#04x} to {where:#04x}"
        if where < header_end:
            anomalies.append(f"standard capability list: {where_s} points into the header "
                             f"(below {header_end:#04x}); list stopped")
            break
        if where + 4 > size:
            anomalies.append(f"standard capability list: {where_s} is beyond the end of the "
                             f"{size}-byte dump; list stopped")
            break
        if where in visited:
            anomalies.append(f"standard capability list: loop, {where_s} revisits an entry; "
                             "list stopped")
            break
        if len(caps) >= MAX_STANDARD_ENTRIES:
            anomalies.append(f"standard capability list: more than {MAX_STANDARD_ENTRIES} entries; "
                             f"stopped at {where_s}")
            break
        visited.add(where)
        cap_id, nxt = data[where], data[where + 1]
        if cap_id == 0xFF:
            anomalies.append(f"standard capability list: entry at {where:#04x} has ID 0xff "
                             "(chain broken); list stopped")
            break
        cap = Capability(where, cap_id, None, False, standard_capability_name(cap_id))
        caps.append(cap)
        _check_length(cap, data, anomalies)
        if nxt & 0x3:
            anomalies.append(f"standard capability list: next pointer at {where + 1:#04x} "
                             f"({nxt:#04x}) has reserved bits set; using {nxt & 0xFC:#04x}")
        src, where = where + 1, nxt & 0xFC
    return caps


def _walk_extended(data: bytes, anomalies: list[str]) -> list[Capability]:
    if len(data) < 4096:
        return []
    first = _u32(data, _EXT_START)
    if first in (0, 0xFFFFFFFF):  # no extended capabilities (or extended space not readable)
        return []
    caps: list[Capability] = []
    visited: set[int] = set()
    src, where = None, _EXT_START
    while where:
        where_s = (f"pointer at {src:#05x} to {where:#05x}" if src is not None
                   else f"entry at {where:#05x}")
        if where < _EXT_START:
            anomalies.append(f"extended capability list: {where_s} points below 0x100 "
                             "(into standard config space); list stopped")
            break
        if where + 4 > len(data):  # cannot happen for a 12-bit pointer into 4096 bytes; kept for safety
            anomalies.append(f"extended capability list: {where_s} is beyond the end of the dump; "
                             "list stopped")
            break
        if where in visited:
            anomalies.append(f"extended capability list: loop, {where_s} revisits an entry; "
                             "list stopped")
            break
        if len(caps) >= MAX_EXTENDED_ENTRIES:
            anomalies.append(f"extended capability list: more than {MAX_EXTENDED_ENTRIES} entries; "
                             f"stopped at {where_s}")
            break
        visited.add(where)
        header = _u32(data, where)
        if header == 0:
            anomalies.append(f"extended capability list: {where_s} finds an empty header "
                             "(0x00000000); list stopped")
            break
        if header == 0xFFFFFFFF:
            anomalies.append(f"extended capability list: {where_s} finds 0xffffffff "
                             "(unreadable or absent); list stopped")
            break
        cap_id, version, nxt = header & 0xFFFF, (header >> 16) & 0xF, header >> 20
        cap = Capability(where, cap_id, version, True, extended_capability_name(cap_id))
        caps.append(cap)
        _check_length(cap, data, anomalies)
        if nxt & 0x3:
            anomalies.append(f"extended capability list: next pointer of entry at {where:#05x} "
                             f"({nxt:#05x}) has reserved bits set; using {nxt & 0xFFC:#05x}")
        src, where = where, nxt & 0xFFC
    return caps


def _check_length(cap: Capability, data: bytes, anomalies: list[str]) -> None:
    """Record a capability whose fixed or self-declared length runs past the end of the dump."""
    if cap.extended:
        need = _EXTENDED_MIN_LENGTH.get(cap.id)
        if cap.id in (_EXT_ID_VSEC, _EXT_ID_DVSEC) and cap.offset + 8 <= len(data):
            need = _u32(data, cap.offset + 4) >> 20  # VSEC/DVSEC length field, header included
        where, end = f"extended capability at {cap.offset:#05x}", len(data)
        limit = f"the {len(data)}-byte dump"
    else:
        need = _STANDARD_MIN_LENGTH.get(cap.id)
        if cap.id == _CAP_ID_VENDOR:
            need = data[cap.offset + 2]  # vendor-specific length byte, header included
        # a standard capability must also stay out of extended space, even in a 4096-byte dump
        where, end = f"standard capability at {cap.offset:#04x}", 0x100
        limit = "standard config space (0x100)"
    if need and cap.offset + need > end:
        anomalies.append(f"{where} ({cap.name}) is {need} bytes long and runs past the end of {limit}")


def _check_singletons(caps: list[Capability], anomalies: list[str]) -> None:
    seen: dict[tuple[bool, int], int] = {}
    for cap in caps:
        key = (cap.extended, cap.id)
        single = _EXTENDED_SINGLETONS if cap.extended else _STANDARD_SINGLETONS
        if cap.id not in single:
            continue
        if key in seen:
            anomalies.append(f"{cap.name} capability appears more than once "
                             f"(at {seen[key]:#x} and {cap.offset:#x}); the first is used")
        else:
            seen[key] = cap.offset


def format_dsn(dsn: int) -> str:
    """A 64-bit Device Serial Number as lspci prints it: most significant byte first, dashed."""
    if isinstance(dsn, bool) or not isinstance(dsn, int) or not 0 <= dsn < 1 << 64:
        raise ConfigSpaceError(f"DSN must be an integer in [0, 2**64), got {dsn!r}")
    return "-".join(f"{b:02x}" for b in dsn.to_bytes(8, "big"))


def config_space_json(cs: ConfigSpace) -> dict:
    """The object `attestlab pcie show --json` prints; every value is JSON-native."""
    return {
        "vendor_id": cs.vendor_id,
        "device_id": cs.device_id,
        "class_code": cs.class_code,
        "revision": cs.revision,
        "subsystem_vendor_id": cs.subsystem_vendor_id,
        "subsystem_id": cs.subsystem_id,
        "header_type": cs.header_type,
        "dsn": format_dsn(cs.dsn) if cs.dsn is not None else None,
        "capabilities": [
            {"offset": c.offset, "id": c.id, "version": c.version, "extended": c.extended,
             "name": c.name}
            for c in cs.capabilities
        ],
        "anomalies": list(cs.anomalies),
    }


# --- `lspci -xxxx` text -------------------------------------------------------------------
# pciutils lib/dump.c reads a device line "bb:dd.f " (optionally with a 4- or 5-digit domain)
# followed by hex lines "off: xx xx ..."; a blank line ends the device.

_BDF_LINE = re.compile(r"^((?:[0-9a-fA-F]{4,5}:)?[0-9a-fA-F]{2}:[0-9a-fA-F]{2}\.[0-9]) ")
_BDF = re.compile(r"^(?:[0-9a-fA-F]{4,5}:)?[0-9a-fA-F]{2}:[0-9a-fA-F]{2}\.[0-9]$")
_HEX_LINE = re.compile(r"^([0-9a-fA-F]{2,8}): ")
_HEX_BYTES = re.compile(r"^(?:[0-9a-fA-F]{2}(?: |$))*$")
_DUMP_MAX = 4096  # lspci refuses offsets beyond this


def lspci_hex_dump(data: bytes, bdf: str = "00:00.0") -> str:
    """`data` as `lspci -n -xxxx` prints it (a device line, 16 bytes a line, a blank line)."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise ConfigSpaceError(f"dump data must be bytes, got {type(data).__name__}")
    data = bytes(data)
    if not 1 <= len(data) <= _DUMP_MAX:
        raise ConfigSpaceError(f"dump data is {len(data)} bytes; lspci reads 1 to {_DUMP_MAX}")
    if not isinstance(bdf, str) or not _BDF.match(bdf):
        raise ConfigSpaceError(f"bdf {bdf!r} is not of the form [dddd:]bb:dd.f")
    if len(data) >= 12:
        title = f"{bdf} {_u16(data, 0x0A):04x}: {_u16(data, 0):04x}:{_u16(data, 2):04x}"
        title += f" (rev {data[8]:02x})" if data[8] else ""
    else:
        title = f"{bdf} Device"
    lines = [title]
    for off in range(0, len(data), 16):
        lines.append(f"{off:02x}: " + " ".join(f"{b:02x}" for b in data[off:off + 16]))
    return "\n".join(lines) + "\n\n"


def parse_lspci_hex_dump(text: str) -> dict[str, bytes]:
    """Config bytes per device from `lspci -x`/`-xxx`/`-xxxx` text (read as lspci -F does).

    Bytes the text does not give read 0xff and the length is the highest offset given + 1,
    as in pciutils (a device line with no hex lines gives b""); other lines (names, `-v`
    details) are ignored. Malformed hex lines and offsets past 4096 raise ConfigSpaceError.
    """
    if not isinstance(text, str):
        raise ConfigSpaceError(f"dump text must be str, got {type(text).__name__}")
    devices: dict[str, bytearray] = {}
    lengths: dict[str, int] = {}
    current: str | None = None
    for lineno, line in enumerate(text.split("\n"), 1):
        line = line[:-1] if line.endswith("\r") else line  # as pciutils: one "\r" is dropped
        device = _BDF_LINE.match(line)
        if device:
            current = device.group(1)
            if current in devices:
                raise ConfigSpaceError(f"line {lineno}: device {current} appears twice")
            devices[current], lengths[current] = bytearray(b"\xff" * _DUMP_MAX), 0
            continue
        if not line:  # only an empty line ends a device, as in pciutils
            current = None
            continue
        hex_line = _HEX_LINE.match(line)
        if current is None or not hex_line:
            continue
        body = line[hex_line.end():]
        if not _HEX_BYTES.match(body):
            raise ConfigSpaceError(f"line {lineno}: malformed hex dump line {line[:60]!r}")
        off = int(hex_line.group(1), 16)
        values = bytes.fromhex(body)
        if values and off + len(values) > _DUMP_MAX:
            raise ConfigSpaceError(f"line {lineno}: offset {off:#x}+{len(values)} is beyond "
                                   f"{_DUMP_MAX} bytes of config space")
        devices[current][off:off + len(values)] = values
        lengths[current] = max(lengths[current], off + len(values))
    return {bdf: bytes(buf[:lengths[bdf]]) for bdf, buf in devices.items()}
