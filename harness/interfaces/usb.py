"""The `usb` interface: a board's USB device (and its CMSIS-DAP debug probe) through pyusb.

Board config `interfaces.usb`::

    usb:
      vid: 0x0955              # required
      pid: 0xCF10              # required
      serial: "1752624021081"  # required: the iSerialNumber string, which of several boards
      path: "1-4.2"            # optional: bus-ports path (libusb); the device must be there
      usbip: "unix:/path/usbip.sock" | "tcp:HOST:PORT"   # optional: a USB/IP server, not the local bus
      busid: "1-1"             # optional with usbip: the exported device (default: by vid/pid)
      timeout_ms: 1000         # optional: per transfer
      debug_probe: {vid, pid, serial, path, usbip, busid}   # optional: the lab's own CMSIS-DAP probe
                               # (one naming the board's VID:PID and serial is the board's device)

Every transfer goes through pyusb's `usb.core.Device` (ctrl_transfer / read / write). The backend
is pyusb's libusb 1.0 on a bench, or `UsbipBackend` (harness/interfaces/usbip_backend.py) when
`usbip:` names a server (simulated boards): the code above the backend is the same.

Finding the device: every device with the VID:PID, then its serial string (read and parsed
strictly here, not by pyusb's lenient helper) and, if given, its path. None → `UsbUnavailable`
saying what was found; two → `UsbUnavailable` (ambiguous). A device descriptor, string or
configuration the strict parser (harness/formats/usb_descriptors.py) rejects makes the device
unusable with the parser's reason (`UsbUnavailable`), never a crash.

Every transfer ends by its timeout and fails as `UsbTransferError` with `.kind` "stall",
"timeout", "disconnected" or "error". Every transfer, answered or not, is recorded:
`UsbDevice.transfers_pcapng()` writes them as usbmon events that Wireshark and tshark decode.
"""

from __future__ import annotations

import errno
import io
import itertools
import re
import struct
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from harness.formats import usb_descriptors as descriptors
from harness.formats.pcap import PcapngWriter
from harness.verdict import ProbeError

__all__ = ["UsbUnavailable", "UsbTransferError", "UsbSettings", "UsbPort", "UsbDevice", "RawDescriptors",
           "EnumeratedInterface", "CmsisDapLink", "open_usb", "LINKTYPE_USB_LINUX_MMAPPED"]

LINKTYPE_USB_LINUX_MMAPPED = 220
DEFAULT_TIMEOUT_MS = 1000
MAX_TIMEOUT_MS = 600_000
GET_DESCRIPTOR = 0x06
GET_CONFIGURATION = 0x08
SET_CONFIGURATION = 0x09
STRING_ASK = 255  # bytes asked for a string descriptor, as the Linux kernel does
# The other wLengths hosts ask a descriptor with (Linux and Windows ask a device descriptor's first 64
# bytes, then 18; Linux a configuration's 9, then wTotalLength; Windows 255 first; others 0xFFFF):
# a device that answers one of them otherwise than the full read cut short shows each host its own.
DEVICE_ASKS = (8, 64)
CONFIGURATION_ASKS = (255, 0xFFFF)
VENDOR_IN_DEVICE = 0xC0
DAP_PACKET_SIZE = 512
_SETTING_KEYS = ("vid", "pid", "serial", "path", "usbip", "busid", "timeout_ms", "debug_probe")
_PROBE_KEYS = ("vid", "pid", "serial", "path", "usbip", "busid")
_PATH_RE = re.compile(r"^\d{1,3}-\d{1,3}(\.\d{1,3}){0,6}$")
_BUSID_RE = re.compile(r"^[\x21-\x7e]{1,31}$")


class UsbUnavailable(ProbeError):
    """The USB device cannot be used: not found (the message says what was), ambiguous, the backend
    is missing, the server is unreachable, or its descriptors are malformed."""


class UsbTransferError(ProbeError):
    """A transfer failed. `kind`: "stall" | "timeout" | "disconnected" | "error"."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


# ---------------------------------------------------------------------------------------------
# Settings


@dataclass(frozen=True)
class UsbSettings:
    vid: int
    pid: int
    serial: str
    path: str | None = None
    usbip: str | None = None
    busid: str | None = None
    timeout_ms: int = DEFAULT_TIMEOUT_MS
    debug_probe: "UsbSettings | None" = None

    @classmethod
    def parse(cls, raw: Any, where: str = "interfaces.usb", timeout_ms: int | None = None) -> "UsbSettings":
        """Validated settings; ValueError naming the field otherwise."""
        if not isinstance(raw, dict):
            raise ValueError(f"{where} must be a mapping, got {type(raw).__name__}")
        keys = _SETTING_KEYS if timeout_ms is None else _PROBE_KEYS
        unknown = sorted(set(map(str, raw)) - set(keys))
        if unknown:
            raise ValueError(f"{where}: unknown setting {unknown[0]!r} (known: {', '.join(keys)})")
        vid = _u16(raw, "vid", where)
        pid = _u16(raw, "pid", where)
        serial = raw.get("serial")
        if not isinstance(serial, str) or not serial:
            raise ValueError(f"{where}.serial: give the device's iSerialNumber string (which of several "
                             f"boards), got {serial!r}")
        path = raw.get("path")
        if path is not None and (not isinstance(path, str) or not _PATH_RE.match(path)):
            raise ValueError(f"{where}.path {path!r}: give the bus-ports path, e.g. 1-4.2")
        server = raw.get("usbip")
        if server is not None:
            from harness.interfaces.usbip_backend import parse_server_address
            try:
                parse_server_address(server)
            except ValueError as exc:
                raise ValueError(f"{where}.usbip: {exc}") from None
        busid = raw.get("busid")
        if busid is not None and (server is None or not isinstance(busid, str) or not _BUSID_RE.match(busid)):
            raise ValueError(f"{where}.busid {busid!r}: a USB/IP busid (e.g. 1-1), only with usbip")
        if timeout_ms is None:
            timeout_ms = raw.get("timeout_ms", DEFAULT_TIMEOUT_MS)
            if isinstance(timeout_ms, bool) or not isinstance(timeout_ms, int) or not 1 <= timeout_ms <= MAX_TIMEOUT_MS:
                raise ValueError(f"{where}.timeout_ms {timeout_ms!r}: milliseconds per transfer, 1..{MAX_TIMEOUT_MS}")
        probe = raw.get("debug_probe")
        if probe is not None:
            probe = cls.parse(probe, f"{where}.debug_probe", timeout_ms)
        return cls(vid, pid, serial, path, server, busid, timeout_ms, probe)

    @property
    def wanted(self) -> str:
        where = f" at {self.path}" if self.path else ""
        return f"USB device {self.vid:04x}:{self.pid:04x} with serial {self.serial!r}{where}"


def _u16(raw: dict, key: str, where: str) -> int:
    value = raw.get(key)
    if isinstance(value, str):
        try:
            value = int(value, 16)
        except ValueError:
            pass
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 0xFFFF:
        raise ValueError(f"{where}.{key}: give a 16-bit id (e.g. 0x0955), got {raw.get(key)!r}")
    return value


def open_usb(settings: dict) -> "UsbPort":
    """The `usb` opener: validate the settings; the device is found on first use."""
    if isinstance(settings, dict) and "unavailable" in settings:
        raise UsbUnavailable(f"the board's USB port is unavailable: {settings['unavailable']}")
    return UsbPort(UsbSettings.parse(settings))


# ---------------------------------------------------------------------------------------------
# Records of transfers (usbmon events, as Linux's binary usbmon API gives them)

# struct usbmon_packet (Documentation/usb/usbmon.rst): id, type, xfer_type, epnum, devnum, busnum,
# flag_setup, flag_data, ts_sec, ts_usec, status, length, len_cap, setup[8], interval, start_frame,
# xfer_flags, ndesc: 64 bytes, host byte order (little-endian here).
_USBMON = struct.Struct("<QBBBBHccqiiII8siiII")
_XFER_TYPE = {"isochronous": 0, "interrupt": 1, "control": 2, "bulk": 3}
_EINPROGRESS = -115
_STATUS = {"stall": -errno.EPIPE, "timeout": -errno.ETIMEDOUT, "disconnected": -errno.ENODEV,
           "error": -errno.EPROTO}


@dataclass
class _Transfer:
    urb: int
    xfer_type: str
    endpoint: int  # with the direction bit (control: the data stage's direction)
    setup: bytes | None
    length: int  # asked (IN) or sent (OUT)
    out_data: bytes
    submitted_ns: int
    completed_ns: int = 0
    status: int = _EINPROGRESS
    in_data: bytes = b""
    sent: int = 0  # OUT: bytes the device took


def _usbmon_event(t: _Transfer, event: str, bus: int, address: int) -> tuple[int, bytes]:
    is_in = bool(t.endpoint & 0x80)
    if event == "S":
        ts, status = t.submitted_ns, _EINPROGRESS
        data = b"" if is_in else t.out_data
        length = t.length
        flag_data = b"<" if is_in else (b"\0" if data else b">")
    else:
        ts, status = t.completed_ns, t.status
        data = t.in_data if is_in else b""
        length = len(t.in_data) if is_in else t.sent
        flag_data = b"\0" if data else (b">" if is_in else b"<")
    setup = t.setup if (event == "S" and t.setup is not None) else bytes(8)
    flag_setup = b"\0" if (event == "S" and t.setup is not None) else b"-"
    header = _USBMON.pack(t.urb, ord(event), _XFER_TYPE[t.xfer_type], t.endpoint, address & 0xFF, bus & 0xFFFF,
                          flag_setup, flag_data, ts // 1_000_000_000, (ts // 1000) % 1_000_000, status, length,
                          len(data), setup, 0, 0, 0, 0)
    return ts, header + data


# ---------------------------------------------------------------------------------------------
# Devices


@dataclass(frozen=True)
class RawDescriptors:
    device: bytes
    configurations: tuple[bytes, ...]
    langids: bytes
    strings: dict[int, bytes] = field(default_factory=dict)
    bos: bytes | None = None
    qualifier: bytes | None = None  # None: not asked (bcdUSB < 2.0) or stalled (a full-speed-only device)
    other_speed: tuple[bytes, ...] = ()  # one per configuration the qualifier counts
    # (descriptor, wLength, bytes): the same descriptor read with the other wLengths hosts use;
    # descriptor is "device", "configuration-<n>" or "other-speed-configuration-<n>"
    by_length: tuple[tuple[str, int, bytes], ...] = ()
    ms_os_string: bytes | None = None  # string 0xEE (Microsoft OS 1.0); None: stalled
    ms_compat_ids: bytes | None = None  # the extended compat ID descriptor it leads to; None: not asked or stalled


@dataclass(frozen=True)
class EnumeratedInterface:
    configuration: int
    number: int
    alternate: int
    cls: int
    subclass: int
    protocol: int
    endpoints: tuple[tuple[int, int, int], ...]  # (bEndpointAddress, bmAttributes, wMaxPacketSize)


def _error_kind(exc: BaseException) -> str:
    import usb.core
    if isinstance(exc, usb.core.USBTimeoutError):
        return "timeout"
    code = getattr(exc, "errno", None)
    if code == errno.ETIMEDOUT:
        return "timeout"
    if code == errno.EPIPE:
        return "stall"
    if code in (errno.ENODEV, errno.ESHUTDOWN, errno.ECONNRESET, errno.ENOENT):
        return "disconnected"
    return "error"


class UsbDevice:
    """One USB device found through pyusb; every transfer recorded, every failure a ProbeError."""

    def __init__(self, device: Any, location: dict[str, Any], timeout_ms: int) -> None:
        self._dev = device
        self.location = location
        self.timeout_ms = timeout_ms
        self._records: list[_Transfer] = []
        self._urb_ids = itertools.count(1)
        self._lock = threading.RLock()
        self._configured = False
        # What a USB/IP server's host enumerated of the device (UsbipBackend.server_enumeration), or None
        self.server_enumeration: dict[str, Any] | None = None

    def __repr__(self) -> str:
        return f"UsbDevice({self.location['vid']:04x}:{self.location['pid']:04x} at {self.location['path']})"

    # -- transfers -------------------------------------------------------------------------

    def _run(self, xfer_type: str, endpoint: int, setup: bytes | None, length: int, out_data: bytes,
             what: str, call: Callable[[int], Any], timeout_ms: int | None) -> Any:
        """Record the transfer, do it through pyusb, record how it ended; errors become ProbeErrors."""
        import usb.core
        timeout = self.timeout_ms if timeout_ms is None else timeout_ms
        if isinstance(timeout, bool) or not isinstance(timeout, int) or not 1 <= timeout <= MAX_TIMEOUT_MS:
            raise ValueError(f"{what}: timeout_ms {timeout!r} must be 1..{MAX_TIMEOUT_MS}")
        with self._lock:
            record = _Transfer(next(self._urb_ids), xfer_type, endpoint, setup, length, bytes(out_data),
                               time.time_ns())
            self._records.append(record)
            try:
                result = call(timeout)
            except usb.core.USBError as exc:
                kind = _error_kind(exc)
                record.status, record.completed_ns = _STATUS[kind], time.time_ns()
                hint = (" (no permission to use the device: a udev rule gives it to the lab's user, see "
                        "docs/board-config.md)") if exc.errno == errno.EACCES else ""
                raise UsbTransferError(kind, f"{what} on {self}: {kind}: {exc.strerror or exc}{hint}") from None
            except descriptors.DescriptorError as exc:
                record.status, record.completed_ns = _STATUS["error"], time.time_ns()
                raise UsbUnavailable(f"{self} is unusable: its descriptors are malformed: {exc}") from None
            except NotImplementedError as exc:
                record.status, record.completed_ns = _STATUS["error"], time.time_ns()
                raise UsbTransferError("error", f"{what} on {self}: not supported by the backend ({exc})") from None
            except ValueError as exc:  # pyusb: no such endpoint in the active configuration
                record.status, record.completed_ns = _STATUS["error"], time.time_ns()
                raise UsbTransferError("error", f"{what} on {self}: {exc}") from None
            record.status, record.completed_ns = 0, time.time_ns()
            if isinstance(result, int):
                record.sent = result
            else:
                record.in_data = bytes(result)
            return result

    def control_in(self, request_type: int, request: int, value: int, index: int, length: int,
                   timeout_ms: int | None = None) -> bytes:
        if not request_type & 0x80:
            raise ValueError(f"control_in: bmRequestType 0x{request_type:02x} is not device-to-host")
        setup = struct.pack("<BBHHH", request_type, request, value, index, length)
        what = f"control IN {setup.hex()}"
        data = self._run("control", 0x80, setup, length, b"", what,
                         lambda t: self._dev.ctrl_transfer(request_type, request, value, index, length, t), timeout_ms)
        return bytes(data)

    def control_out(self, request_type: int, request: int, value: int, index: int, data: bytes = b"",
                    timeout_ms: int | None = None) -> int:
        if request_type & 0x80:
            raise ValueError(f"control_out: bmRequestType 0x{request_type:02x} is not host-to-device")
        data = bytes(data)
        setup = struct.pack("<BBHHH", request_type, request, value, index, len(data))
        return self._run("control", 0x00, setup, len(data), data, f"control OUT {setup.hex()}",
                         lambda t: self._dev.ctrl_transfer(request_type, request, value, index, data or None, t),
                         timeout_ms)

    def _endpoint(self, address: int, kind: str) -> None:
        """Configure the device if needed and check the endpoint exists with the transfer type asked."""
        self._ensure_configured()
        for interface in self.enumerated():
            for ep_address, attributes, _size in interface.endpoints:
                if ep_address == address:
                    actual = ("control", "isochronous", "bulk", "interrupt")[attributes & 3]
                    if actual != kind:
                        raise UsbTransferError("error", f"{self}: endpoint 0x{address:02x} is {actual}, not {kind}")
                    return
        raise UsbTransferError("error", f"{self}: no endpoint 0x{address:02x} in its configuration")

    def bulk_write(self, endpoint: int, data: bytes, timeout_ms: int | None = None) -> int:
        return self._write(endpoint, data, "bulk", timeout_ms)

    def bulk_read(self, endpoint: int, size: int, timeout_ms: int | None = None) -> bytes:
        return self._read(endpoint, size, "bulk", timeout_ms)

    def interrupt_read(self, endpoint: int, size: int, timeout_ms: int | None = None) -> bytes:
        return self._read(endpoint, size, "interrupt", timeout_ms)

    def _write(self, endpoint: int, data: bytes, kind: str, timeout_ms: int | None) -> int:
        if endpoint & 0x80:
            raise ValueError(f"{kind} write: endpoint 0x{endpoint:02x} is an IN endpoint")
        self._endpoint(endpoint, kind)
        data = bytes(data)
        return self._run(kind, endpoint, None, len(data), data, f"{kind} OUT 0x{endpoint:02x} ({len(data)} bytes)",
                         lambda t: self._dev.write(endpoint, data, t), timeout_ms)

    def _read(self, endpoint: int, size: int, kind: str, timeout_ms: int | None) -> bytes:
        if not endpoint & 0x80:
            raise ValueError(f"{kind} read: endpoint 0x{endpoint:02x} is an OUT endpoint")
        if not 0 < size <= 1 << 20:
            raise ValueError(f"{kind} read: size {size} must be 1..1 MiB")
        self._endpoint(endpoint, kind)
        data = self._run(kind, endpoint, None, size, b"", f"{kind} IN 0x{endpoint:02x} ({size} bytes asked)",
                         lambda t: self._dev.read(endpoint, size, t), timeout_ms)
        return bytes(data)

    def claim_interface(self, number: int) -> None:
        import usb.core
        import usb.util
        self._ensure_configured()
        try:
            usb.util.claim_interface(self._dev, number)
        except usb.core.USBError as exc:
            raise UsbTransferError(_error_kind(exc), f"{self}: cannot claim interface {number}: "
                                                     f"{exc.strerror or exc}") from None
        except descriptors.DescriptorError as exc:
            raise UsbUnavailable(f"{self} is unusable: its descriptors are malformed: {exc}") from None

    def _ensure_configured(self) -> None:
        """A device fresh from import (or reset) may be unconfigured: set its first configuration."""
        if self._configured:
            return
        current = self.control_in(0x80, GET_CONFIGURATION, 0, 0, 1)
        if len(current) != 1:
            raise UsbTransferError("error", f"{self}: GET_CONFIGURATION answered {current.hex() or 'nothing'}, "
                                            f"not one byte")
        if current[0]:
            # Configured already (a bench device the kernel set up): pyusb asks GET_CONFIGURATION
            # once more to learn which; that request is not recorded.
            self._pyusb(self._dev.get_active_configuration)
        else:
            value = self._configuration_value()
            setup = struct.pack("<BBHHH", 0x00, SET_CONFIGURATION, value, 0, 0)
            # Through pyusb, so that it knows the active configuration (it asks nothing more).
            self._run("control", 0x00, setup, 0, b"", f"SET_CONFIGURATION {value}",
                      lambda t: self._dev.set_configuration(value), None)
        self._configured = True

    def _configuration_value(self) -> int:
        return self._pyusb(lambda: self._dev[0].bConfigurationValue)

    def _pyusb(self, call: Callable[[], Any]) -> Any:
        """A pyusb descriptor walk: malformed descriptors and backend failures become ProbeErrors."""
        import usb.core
        try:
            return call()
        except descriptors.DescriptorError as exc:
            raise UsbUnavailable(f"{self} is unusable: its descriptors are malformed: {exc}") from None
        except usb.core.USBError as exc:
            raise UsbTransferError(_error_kind(exc), f"{self}: reading its descriptors: {exc.strerror or exc}") from None

    def enumerated(self) -> tuple[EnumeratedInterface, ...]:
        def walk() -> tuple[EnumeratedInterface, ...]:
            found = []
            for cfg in self._dev:
                interfaces = [EnumeratedInterface(cfg.bConfigurationValue, i.bInterfaceNumber, i.bAlternateSetting,
                                                  i.bInterfaceClass, i.bInterfaceSubClass, i.bInterfaceProtocol,
                                                  tuple((e.bEndpointAddress, e.bmAttributes, e.wMaxPacketSize)
                                                        for e in i))
                              for i in cfg]
                # pyusb's walk ends an interface's alternates quietly on any USBError: an interface
                # lost that way would hide a function from an audit. Count them.
                numbers = {i.number for i in interfaces}
                if len(numbers) != cfg.bNumInterfaces:
                    raise UsbUnavailable(f"{self}: configuration {cfg.bConfigurationValue} declares "
                                         f"{cfg.bNumInterfaces} interfaces, pyusb enumerated {len(numbers)}")
                found += interfaces
            return tuple(found)
        return self._pyusb(walk)

    # -- descriptors -----------------------------------------------------------------------

    def _get_descriptor(self, kind: int, index: int, length: int, langid: int = 0) -> bytes:
        return self.control_in(0x80, GET_DESCRIPTOR, kind << 8 | index, langid, length)

    def read_descriptors(self) -> RawDescriptors:
        """Fresh GET_DESCRIPTOR reads, in full, raw; parsing is the caller's.

        The structure-giving fields (how many configurations, which strings, bcdUSB) come from
        the strict parser; when it rejects a descriptor, what was read so far is returned as it
        came and the caller's parse of it says why.
        """
        device = self._get_descriptor(descriptors.DEVICE, 0, descriptors.DEVICE_SIZE)
        by_length = [("device", asked, self._get_descriptor(descriptors.DEVICE, 0, asked)) for asked in DEVICE_ASKS]
        try:
            parsed = descriptors.parse_device_descriptor(device)
        except descriptors.DescriptorError:
            return RawDescriptors(device, (), b"", {}, None, by_length=tuple(by_length))
        indices = set(parsed.string_indices)
        configurations = self._configurations(descriptors.CONFIGURATION, parsed.bNumConfigurations, indices,
                                              by_length)
        # What the device is at the other speed (a high-speed device behind a USB 1.1 hub): a function
        # only there is a function a host gets. A stall says the device is full-speed only.
        qualifier, other_speed = None, ()
        if parsed.bcdUSB >= 0x0200:
            try:
                qualifier = self._get_descriptor(descriptors.DEVICE_QUALIFIER, 0, descriptors.DEVICE_QUALIFIER_SIZE)
            except UsbTransferError as exc:
                if exc.kind != "stall":
                    raise
            if qualifier is not None:
                try:
                    count = descriptors.parse_device_qualifier(qualifier).bNumConfigurations
                except descriptors.DescriptorError:
                    count = 0  # the caller's parse says why
                other_speed = self._configurations(descriptors.OTHER_SPEED_CONFIGURATION, count, indices,
                                                   by_length)
        langids = self._get_descriptor(descriptors.STRING, 0, STRING_ASK)
        strings: dict[int, bytes] = {}
        try:
            first = descriptors.parse_langids(langids)[0]
        except (descriptors.DescriptorError, IndexError):
            first = None  # no language: the strings cannot be asked for; the caller's parse says why
        if first is not None:
            for index in sorted(indices):
                strings[index] = self._get_descriptor(descriptors.STRING, index, STRING_ASK, first)
        bos = None
        if parsed.bcdUSB >= 0x0201:
            head = self._get_descriptor(descriptors.BOS, 0, descriptors.BOS_SIZE)
            total = int.from_bytes(head[2:4], "little") if len(head) >= 4 else 0
            bos = self._get_descriptor(descriptors.BOS, 0, total) if total > len(head) else head
        ms_os_string, ms_compat_ids = self._ms_os_descriptors()
        return RawDescriptors(device, configurations, langids, strings, bos, qualifier, other_speed,
                              tuple(by_length), ms_os_string, ms_compat_ids)

    def _ms_os_descriptors(self) -> tuple[bytes | None, bytes | None]:
        """String 0xEE as Windows asks it (language 0, 18 bytes) and, when it is a Microsoft OS 1.0
        string, the extended compat ID descriptor (its vendor code, wIndex 4: header, then dwLength
        bytes). A stall of either is "none": Windows then binds nothing by them."""
        def stalled_is_none(call: Callable[[], bytes]) -> bytes | None:
            try:
                return call()
            except UsbTransferError as exc:
                if exc.kind != "stall":
                    raise
                return None
        string = stalled_is_none(lambda: self._get_descriptor(descriptors.STRING, descriptors.MS_OS_STRING_INDEX,
                                                              descriptors.MS_OS_STRING_SIZE))
        try:
            code = descriptors.parse_ms_os_string(string) if string is not None else None
        except descriptors.DescriptorError:
            return string, None  # the caller's parse says why
        if code is None:
            return string, None

        def compat(length: int) -> bytes:
            return self.control_in(VENDOR_IN_DEVICE, code, 0, descriptors.EXTENDED_COMPAT_ID_INDEX, length)
        head = stalled_is_none(lambda: compat(descriptors.EXTENDED_COMPAT_HEADER))
        total = int.from_bytes(head[:4], "little") if head is not None and len(head) >= 4 else 0
        if head is None or not len(head) < total <= 0xFFFF:
            return string, head
        return string, compat(total)

    def _configurations(self, kind: int, count: int, indices: set[int],
                        by_length: list[tuple[str, int, bytes]]) -> tuple[bytes, ...]:
        """`count` configurations of `kind` (configuration or other-speed), each read in full
        (its 9-byte head, then wTotalLength bytes) and with the other wLengths hosts ask (the head
        and those to `by_length`); the string indices they name added to `indices`."""
        found = []
        name = "other-speed-configuration" if kind == descriptors.OTHER_SPEED_CONFIGURATION else "configuration"
        for n in range(count):
            head = self._get_descriptor(kind, n, descriptors.CONFIGURATION_SIZE)
            total = int.from_bytes(head[2:4], "little") if len(head) >= 4 else 0
            full = self._get_descriptor(kind, n, total) if total > len(head) else head
            found.append(full)
            by_length.append((f"{name}-{n}", descriptors.CONFIGURATION_SIZE, head))
            by_length += [(f"{name}-{n}", asked, self._get_descriptor(kind, n, asked)) for asked in CONFIGURATION_ASKS]
            try:
                parsed = descriptors.parse_configuration(full, other_speed=kind == descriptors.OTHER_SPEED_CONFIGURATION)
                indices.update(parsed.string_indices)
            except descriptors.DescriptorError:
                pass  # the caller's parse says why; the strings it names cannot be known
        return tuple(found)

    @property
    def speed(self) -> int | None:
        """The speed the device runs at, as libusb codes it (1 low, 2 full, 3 high, 4 super, 5 super+)."""
        return getattr(self._dev, "speed", None)

    def string(self, index: int) -> str:
        """String descriptor `index` in the device's first language, strictly parsed."""
        langids = self._get_descriptor(descriptors.STRING, 0, STRING_ASK)
        try:
            languages = descriptors.parse_langids(langids)
            if not languages:
                raise descriptors.DescriptorError("string descriptor 0 lists no language")
            return descriptors.parse_string(self._get_descriptor(descriptors.STRING, index, STRING_ASK, languages[0]))
        except descriptors.DescriptorError as exc:
            raise UsbUnavailable(f"{self}: string {index} is malformed: {exc}") from None

    def interface_string(self, number: int, alternate: int = 0) -> str | None:
        """iInterface of interface `number` (alternate setting), or None when it names no string."""
        def find() -> int | None:
            for cfg in self._dev:
                for i in cfg:
                    if (i.bInterfaceNumber, i.bAlternateSetting) == (number, alternate):
                        return i.iInterface
            return None
        index = self._pyusb(find)
        return self.string(index) if index else None

    # -- evidence --------------------------------------------------------------------------

    def transfers_pcapng(self) -> bytes:
        """Every transfer so far (failed ones too) as usbmon 'S'/'C' events, LINKTYPE_USB_LINUX_MMAPPED."""
        out = io.BytesIO()
        writer = PcapngWriter(out, linktype=LINKTYPE_USB_LINUX_MMAPPED, if_name="usbmon")
        with self._lock:
            records = list(self._records)
        bus, address = self.location.get("bus") or 0, self.location.get("address") or 0
        for record in records:
            writer.write_packet(*_usbmon_event(record, "S", bus, address))
            if record.completed_ns:
                writer.write_packet(*_usbmon_event(record, "C", bus, address))
        return out.getvalue()

    def dispose(self) -> None:
        import usb.util
        try:
            usb.util.dispose_resources(self._dev)
        except Exception:  # noqa: BLE001 - closing a dead device must not hide why it died
            pass


# ---------------------------------------------------------------------------------------------
# The port: finding devices


def _location_path(dev: Any) -> str:
    ports = getattr(dev, "port_numbers", None)
    return f"{dev.bus}-{'.'.join(map(str, ports))}" if ports else f"{dev.bus}-?"


class UsbPort:
    """The board's USB side: its device and (if elsewhere) its debug probe, found on first use."""

    def __init__(self, settings: UsbSettings) -> None:
        self.settings = settings
        self._devices: dict[str, UsbDevice] = {}
        self._backends: list[Any] = []
        self._lock = threading.Lock()

    def device(self) -> UsbDevice:
        return self._found("device", self.settings)

    def debug_probe(self) -> UsbDevice:
        """settings.debug_probe's device, else the board's. A debug_probe that names the board's own
        device (its VID:PID and serial) IS the board's device: the same object, never a second handle
        that could pass for an independent probe (probes/debug_port.py judges by that)."""
        probe = self.settings.debug_probe
        if probe is None or (probe.vid, probe.pid, probe.serial) == (self.settings.vid, self.settings.pid,
                                                                     self.settings.serial):
            return self.device()
        return self._found("debug_probe", probe)

    def close(self) -> None:
        with self._lock:
            for device in self._devices.values():
                device.dispose()
            self._devices.clear()
            for backend in self._backends:
                close = getattr(backend, "close", None)
                if close is not None:
                    close()
            self._backends.clear()

    def _found(self, role: str, settings: UsbSettings) -> UsbDevice:
        with self._lock:
            if role not in self._devices:
                self._devices[role] = self._find(settings)
            return self._devices[role]

    def _backend(self, settings: UsbSettings) -> tuple[Any, str]:
        try:
            import usb.core  # noqa: F401
        except ImportError:
            raise UsbUnavailable("pyusb is not installed: pip install pyusb") from None
        if settings.usbip is not None:
            from harness.interfaces.usbip_backend import UsbipBackend
            backend = UsbipBackend(settings.usbip, busid=settings.busid, vid=settings.vid, pid=settings.pid,
                                   timeout_ms=settings.timeout_ms)
            self._backends.append(backend)
            return backend, f"usbip {settings.usbip}"
        import usb.backend.libusb1
        backend = usb.backend.libusb1.get_backend()
        if backend is None:
            raise UsbUnavailable("libusb 1.0 is not available to pyusb: install Debian's libusb-1.0-0 "
                                 "(apt-get install libusb-1.0-0) or the libusb-package wheel "
                                 "(pip install libusb-package)")
        return backend, "libusb1"

    def _find(self, settings: UsbSettings) -> UsbDevice:
        backend, backend_name = self._backend(settings)
        try:
            return self._search(settings, backend, backend_name)
        except BaseException:
            if backend in self._backends:  # a USB/IP import held by a failed search would refuse the next
                self._backends.remove(backend)
                backend.close()
            raise

    def _search(self, settings: UsbSettings, backend: Any, backend_name: str) -> UsbDevice:
        import usb.core
        try:
            candidates = list(usb.core.find(find_all=True, idVendor=settings.vid, idProduct=settings.pid,
                                            backend=backend))
        except usb.core.USBError as exc:
            raise UsbUnavailable(f"cannot look for the {settings.wanted} through {backend_name}: "
                                 f"{exc.strerror or exc}") from None
        except descriptors.DescriptorError as exc:
            raise UsbUnavailable(f"the {settings.wanted} through {backend_name} is unusable: its device "
                                 f"descriptor is malformed: {exc}") from None
        found, seen = [], []
        for candidate in candidates:
            location = {"vid": settings.vid, "pid": settings.pid, "serial": None, "bus": candidate.bus,
                        "address": candidate.address, "path": _location_path(candidate), "backend": backend_name}
            device = UsbDevice(candidate, location, settings.timeout_ms)
            if not candidate.iSerialNumber:
                seen.append(f"{settings.vid:04x}:{settings.pid:04x} without a serial at {location['path']}")
                device.dispose()
                continue
            try:
                serial = device.string(candidate.iSerialNumber)
            except (UsbTransferError, UsbUnavailable) as exc:
                seen.append(f"{settings.vid:04x}:{settings.pid:04x} at {location['path']} (serial unreadable: {exc})")
                device.dispose()
                continue
            location["serial"] = serial
            listing = getattr(backend, "server_enumeration", None)
            if listing is not None:
                device.server_enumeration = listing(candidate.bus, candidate.address)
            seen.append(f"{settings.vid:04x}:{settings.pid:04x} serial {serial!r} at {location['path']}")
            if serial == settings.serial and (settings.path is None or location["path"] == settings.path):
                found.append(device)
            else:
                device.dispose()
        release = getattr(backend, "release_except", None)
        if release is not None:  # USB/IP imports are exclusive: free every device not chosen
            release({d.location["path"] for d in found[:1]} if len(found) == 1 else set())
        if len(found) > 1:
            for device in found:
                device.dispose()
            raise UsbUnavailable(f"{len(found)} devices match the {settings.wanted} through {backend_name} "
                                 f"(at {', '.join(d.location['path'] for d in found)}): ambiguous; give path")
        if not found:
            raise UsbUnavailable(f"no {settings.wanted} through {backend_name}; found: "
                                 f"{'; '.join(seen) if seen else self._others(backend, backend_name)}")
        return found[0]

    @staticmethod
    def _others(backend: Any, backend_name: str) -> str:
        """What the bus (or server) has instead, for the not-found message."""
        import usb.core
        try:
            if hasattr(backend, "devlist"):
                listed = [f"{d.idVendor:04x}:{d.idProduct:04x} at busid {d.busid}" for d in backend.devlist()]
            else:
                listed = [f"{d.idVendor:04x}:{d.idProduct:04x} at {_location_path(d)}"
                          for d in itertools.islice(usb.core.find(find_all=True, backend=backend), 20)]
        except (usb.core.USBError, ValueError) as exc:
            return f"nothing (listing failed: {exc})"
        return ", ".join(listed) if listed else f"no USB devices at all through {backend_name}"


# ---------------------------------------------------------------------------------------------
# CMSIS-DAP v2


class CmsisDapLink:
    """The CMSIS-DAP v2 interface of a device: the one whose iInterface string contains "CMSIS-DAP"
    (the convention hosts use to find it), its bulk OUT and IN endpoints, claimed."""

    def __init__(self, device: UsbDevice) -> None:
        self.device = device
        named = [i for i in device.enumerated()
                 if i.alternate == 0 and "CMSIS-DAP" in (device.interface_string(i.number) or "")]
        if len(named) > 1:
            # A decoy that refuses next to a real one that reads: refuse to choose, never PASS on a guess.
            raise UsbUnavailable(f"{device}: interfaces {', '.join(str(i.number) for i in named)} all claim "
                                 f"CMSIS-DAP: ambiguous")
        outs = [e for e in named[0].endpoints if e[1] & 3 == 2 and not e[0] & 0x80] if named else []
        ins = [e for e in named[0].endpoints if e[1] & 3 == 2 and e[0] & 0x80] if named else []
        if not outs or not ins:
            raise UsbUnavailable(f"{device} has no CMSIS-DAP v2 interface (no interface whose string contains "
                                 f"'CMSIS-DAP' with a bulk OUT and a bulk IN endpoint)")
        chosen = (named[0].number, outs[0], ins[0])
        self.interface_number = chosen[0]
        self.out_endpoint = chosen[1][0]
        self.in_endpoint = chosen[2][0]
        self.packet_size = max(chosen[2][2] & 0x7FF, DAP_PACKET_SIZE)
        device.claim_interface(self.interface_number)

    def command(self, request: bytes, timeout_ms: int | None = None) -> bytes:
        """One DAP command: a bulk write, then one bulk read (up to the packet size)."""
        self.device.bulk_write(self.out_endpoint, request, timeout_ms)
        return self.device.bulk_read(self.in_endpoint, self.packet_size, timeout_ms)
