"""A pyusb backend (`usb.backend.IBackend`) that reaches USB devices through a USB/IP server.

The harness talks to a simulated board's USB device exactly as to one on the local bus: through
pyusb's `usb.core.Device`. Only the backend differs: this one sends the URBs as USB/IP PDUs
(harness/formats/usbip.py) over a Unix stream socket (the simulator, `unix:/path/usbip.sock`) or
TCP (a `usbipd` on a bench host, `tcp:HOST:3240`).

What a device is: `enumerate_devices()` asks the server's devlist and yields only the exported
devices the caller asked for (a busid, or a VID:PID), so that a bench server's other devices are
never imported. The first use of one imports it on a connection of its own (the import is
exclusive) and reads its descriptors with GET_DESCRIPTOR over that connection; H1's strict parser
(harness/formats/usb_descriptors.py) turns them into the objects pyusb asks for. A descriptor it
rejects raises its `DescriptorError`: the device is unusable, with the parser's reason.

Errors are pyusb's, with libusb's errno conventions, so the code above maps both backends alike:
`USBTimeoutError` (ETIMEDOUT) when a URB was not answered in time, EPIPE for a stall, ENODEV when
the server closed the connection or the connection is dead, EPROTO for a protocol violation (a
reply to a URB never sent, more data than asked, garbage). A URB not answered by its timeout is
unlinked (CMD_UNLINK); a server that answers neither within a short grace has its connection
closed. Every read and write on the socket ends by a deadline: nothing here can hang.
"""

from __future__ import annotations

import errno
import socket
import threading
import time
from array import array
from dataclasses import dataclass
from typing import Any, Iterator

import usb.backend
from usb.core import USBError, USBTimeoutError

from harness.formats import usb_descriptors as descriptors
from harness.formats import usbip

__all__ = ["UsbipBackend", "parse_server_address", "DEFAULT_PORT"]

DEFAULT_PORT = 3240
GET_DESCRIPTOR = 0x06
GET_CONFIGURATION = 0x08
SET_CONFIGURATION = 0x09
SET_INTERFACE = 0x0B
CLEAR_FEATURE = 0x01
ENDPOINT_HALT = 0
DEFAULT_TIMEOUT_MS = 1000
# How long a server has to answer a CMD_UNLINK (or finish a reply it began) before its connection is
# given up: short, since a server that honours the protocol answers an unlink at once.
UNLINK_GRACE_S = 0.5
# The kernel's usb_device_speed (USB/IP) → libusb's speed codes (what pyusb's Device.speed holds).
_LIBUSB_SPEED = {1: 1, 2: 2, 3: 3, 5: 4, 6: 5}


def parse_server_address(text: str) -> tuple[str, Any]:
    """`unix:/abs/path` → ("unix", path); `tcp:HOST:PORT` (or `tcp:HOST`) → ("tcp", (host, port))."""
    if not isinstance(text, str):
        raise ValueError(f"{text!r} is not a USB/IP server address (unix:/path or tcp:HOST:PORT)")
    scheme, _, rest = text.partition(":")
    if scheme == "unix" and rest.startswith("/"):
        return "unix", rest
    if scheme == "tcp" and rest:
        host, _, port = rest.rpartition(":") if rest.count(":") == 1 or rest.startswith("[") else (rest, "", "")
        host = host.strip("[]")
        try:
            number = int(port) if port else DEFAULT_PORT
        except ValueError:
            number = -1
        if host and 0 < number < 65536:
            return "tcp", (host, number)
    raise ValueError(f"{text!r} is not a USB/IP server address: give unix:/absolute/path or tcp:HOST:PORT")


def _error(code: int, message: str) -> USBError:
    return USBError(message, None, code)


class _Dead(Exception):
    """The connection can no longer carry URBs; `code` is the errno the transfer reports."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


class _Connection:
    """One stream socket; every read and write ends by the deadline it is given."""

    def __init__(self, address: tuple[str, Any], deadline: float, label: str) -> None:
        self.label = label
        try:
            if address[0] == "tcp":
                self.sock = socket.create_connection(address[1], timeout=max(deadline - time.monotonic(), 0.001))
            else:
                self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                try:
                    self.sock.settimeout(max(deadline - time.monotonic(), 0.001))
                    self.sock.connect(address[1])
                except OSError:
                    self.sock.close()
                    raise
        except OSError as exc:
            raise _error(exc.errno or errno.ECONNREFUSED,
                         f"cannot reach the USB/IP server {label}: {exc.strerror or exc}") from None

    def send(self, data: bytes, deadline: float) -> None:
        try:
            self.sock.settimeout(max(deadline - time.monotonic(), 0.001))
            self.sock.sendall(data)
        except socket.timeout:
            raise _Dead(errno.ETIMEDOUT, f"the USB/IP server {self.label} stopped reading (send timed out)") from None
        except OSError as exc:
            raise _Dead(errno.ENODEV, f"the USB/IP server {self.label} closed the connection ({exc})") from None

    def recv_exact(self, size: int, deadline: float) -> bytes:
        """Exactly `size` bytes. socket.timeout at the deadline (with the bytes read so far lost:
        the caller must then treat the stream as out of step), _Dead on EOF."""
        chunks = bytearray()
        while len(chunks) < size:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise socket.timeout(f"{len(chunks)} of {size} bytes by the deadline")
            self.sock.settimeout(remaining)
            try:
                chunk = self.sock.recv(size - len(chunks))
            except socket.timeout:
                raise socket.timeout(f"{len(chunks)} of {size} bytes by the deadline") from None
            except OSError as exc:
                raise _Dead(errno.ENODEV, f"the USB/IP server {self.label} closed the connection ({exc})") from None
            if not chunk:
                raise _Dead(errno.ENODEV, f"the USB/IP server {self.label} closed the connection "
                                          f"({len(chunks)} of {size} bytes read)")
            chunks += chunk
        return bytes(chunks)

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


@dataclass(frozen=True)
class _Exported:
    """What enumerate_devices yields: one exported device, named by its busid."""

    busid: str
    listed: usbip.ExportedDevice


class _Descriptor:
    """The attribute bag pyusb reads descriptor fields from (as libusb1's ctypes structures)."""

    def __init__(self, **fields: Any) -> None:
        self.__dict__.update(fields)


def _fields(parsed: Any, names: tuple[str, ...]) -> dict[str, Any]:
    return {name: getattr(parsed, name) for name in names}


_DEVICE_FIELDS = ("bLength", "bDescriptorType", "bcdUSB", "bDeviceClass", "bDeviceSubClass", "bDeviceProtocol",
                  "bMaxPacketSize0", "idVendor", "idProduct", "bcdDevice", "iManufacturer", "iProduct",
                  "iSerialNumber", "bNumConfigurations")
_CONFIG_FIELDS = ("bLength", "bDescriptorType", "wTotalLength", "bNumInterfaces", "bConfigurationValue",
                  "iConfiguration", "bmAttributes", "bMaxPower")
_INTERFACE_FIELDS = ("bLength", "bDescriptorType", "bInterfaceNumber", "bAlternateSetting", "bNumEndpoints",
                     "bInterfaceClass", "bInterfaceSubClass", "bInterfaceProtocol", "iInterface")
_ENDPOINT_FIELDS = ("bLength", "bDescriptorType", "bEndpointAddress", "bmAttributes", "wMaxPacketSize",
                    "bInterval")


class _Imported:
    """An imported device: its URB connection and the descriptors pyusb enumerates from."""

    def __init__(self, backend: "UsbipBackend", exported: _Exported) -> None:
        self.backend = backend
        self.busid = exported.busid
        self.listed = exported.listed  # the devlist entry: the server's host's own enumeration
        self.lock = threading.RLock()
        self.dead: str | None = None
        self.seqnum = 0
        self.device: descriptors.DeviceDescriptor | None = None
        self.configurations: dict[int, descriptors.ConfigurationDescriptor] = {}
        deadline = time.monotonic() + backend.op_timeout_s
        self.conn = _Connection(backend.address, deadline, backend.label)
        try:
            self.conn.send(usbip.pack_req_import(self.busid), deadline)
            header = usbip.unpack_op_header(self.conn.recv_exact(usbip.OP_HEADER_SIZE, deadline),
                                            usbip.OP_REP_IMPORT)
            if header.status != 0:
                raise _error(errno.EBUSY, f"the USB/IP server {backend.label} refused to import {self.busid} "
                                          f"(status {header.status}: not exported, or imported by someone else)")
            self.remote = usbip.unpack_device(self.conn.recv_exact(usbip.DEVICE_SIZE, deadline), "OP_REP_IMPORT device")
            if self.remote.busid != self.busid:
                raise usbip.UsbipError(f"OP_REP_IMPORT: asked for {self.busid}, the server imported {self.remote.busid}")
        except socket.timeout as exc:
            self.conn.close()
            raise USBTimeoutError(f"USB/IP import of {self.busid} from {backend.label} timed out ({exc})",
                                  None, errno.ETIMEDOUT) from None
        except _Dead as exc:
            self.conn.close()
            raise _error(exc.code, str(exc)) from None
        except usbip.UsbipError as exc:
            self.conn.close()
            raise _error(errno.EPROTO, f"USB/IP protocol error from {backend.label}: {exc}") from None
        except BaseException:
            self.conn.close()
            raise
        self.devid = self.remote.devid

    # -- URBs ------------------------------------------------------------------------------

    def _kill(self, why: str) -> None:
        if self.dead is None:
            self.dead = why
        self.conn.close()

    def _next_seqnum(self) -> int:
        self.seqnum = self.seqnum % 0xFFFFFFFF + 1
        return self.seqnum

    def submit(self, direction: int, endpoint: int, length: int, setup: bytes, data: bytes, timeout_ms: int,
               what: str) -> bytes | int:
        """One URB: the IN data, or for OUT the count the device took. Raises USBError."""
        with self.lock:
            if self.dead is not None:
                raise _error(errno.ENODEV, f"{what}: the USB/IP connection to {self.busid} is closed ({self.dead})")
            timeout_ms = timeout_ms if timeout_ms and timeout_ms > 0 else DEFAULT_TIMEOUT_MS
            deadline = time.monotonic() + timeout_ms / 1000
            seqnum = self._next_seqnum()
            try:
                self.conn.send(usbip.pack_cmd_submit(seqnum, self.devid, direction, endpoint & 0x0F, length, setup,
                                                     data), deadline)
                try:
                    reply = self._read_reply(deadline)
                except socket.timeout:
                    self._unlink(seqnum, direction, endpoint, length)
                    raise USBTimeoutError(f"{what}: no answer within {timeout_ms} ms (URB unlinked)",
                                          None, errno.ETIMEDOUT) from None
                return self._complete(seqnum, direction, length, reply, deadline, what)
            except _Dead as exc:
                self._kill(str(exc))
                raise _error(exc.code, f"{what}: {exc}") from None
            except usbip.UsbipError as exc:
                self._kill(f"protocol error: {exc}")
                raise _error(errno.EPROTO, f"{what}: USB/IP protocol error: {exc} (connection closed)") from None

    def _read_reply(self, deadline: float) -> usbip.RetSubmit | usbip.RetUnlink | usbip.CmdSubmit | usbip.CmdUnlink:
        first = self.conn.recv_exact(1, deadline)  # socket.timeout: no answer (yet)
        # Once a header has begun, the rest must follow promptly or the stream is out of step.
        try:
            rest = self.conn.recv_exact(usbip.URB_HEADER_SIZE - 1, max(deadline, time.monotonic()) + self.backend.grace_s)
        except socket.timeout as exc:
            raise _Dead(errno.ETIMEDOUT, f"a URB header stopped half way ({exc})") from None
        return usbip.unpack_urb_header(first + rest)

    def _read_data(self, reply: usbip.RetSubmit, deadline: float) -> bytes:
        try:
            return self.conn.recv_exact(reply.actual_length, max(deadline, time.monotonic()) + self.backend.grace_s)
        except socket.timeout as exc:
            raise _Dead(errno.ETIMEDOUT, f"RET_SUBMIT seqnum {reply.seqnum}: its data stopped half way ({exc})") from None

    def _complete(self, seqnum: int, direction: int, length: int, reply: Any, deadline: float,
                  what: str) -> bytes | int:
        if not isinstance(reply, usbip.RetSubmit):
            raise usbip.UsbipError(f"expected USBIP_RET_SUBMIT for seqnum {seqnum}, got {type(reply).__name__} "
                                   f"seqnum {reply.seqnum}")
        if reply.seqnum != seqnum:
            raise usbip.UsbipError(f"USBIP_RET_SUBMIT for seqnum {reply.seqnum}, a URB never sent "
                                   f"(waiting for {seqnum})")
        if reply.actual_length > length:
            raise usbip.UsbipError(f"USBIP_RET_SUBMIT seqnum {seqnum}: actual_length {reply.actual_length} is more "
                                   f"than the {length} bytes asked")
        payload = self._read_data(reply, deadline) if direction == usbip.DIR_IN else b""
        if reply.status == -errno.EPIPE:
            raise _error(errno.EPIPE, f"{what}: stalled (EPIPE)")
        if reply.status == -errno.ENODEV or reply.status == -errno.ESHUTDOWN:
            raise _error(errno.ENODEV, f"{what}: the device is gone (status {reply.status})")
        if reply.status < 0:
            code = -reply.status
            raise _error(code, f"{what}: failed with status {reply.status} ({errno.errorcode.get(code, '?')})")
        return payload if direction == usbip.DIR_IN else reply.actual_length

    def _unlink(self, seqnum: int, direction: int, endpoint: int, length: int) -> None:
        """Withdraw an unanswered URB; a server that answers nothing within the grace is dropped."""
        unlink_seq = self._next_seqnum()
        deadline = time.monotonic() + self.backend.grace_s
        try:
            self.conn.send(usbip.pack_cmd_unlink(unlink_seq, self.devid, direction, endpoint & 0x0F, seqnum), deadline)
            while True:
                reply = self._read_reply(deadline)
                if isinstance(reply, usbip.RetSubmit) and reply.seqnum == seqnum:
                    # It completed as we gave up: its data is read past, the transfer stays timed out.
                    if reply.actual_length > length:
                        raise usbip.UsbipError(f"late USBIP_RET_SUBMIT seqnum {seqnum}: actual_length "
                                               f"{reply.actual_length} is more than the {length} bytes asked")
                    if direction == usbip.DIR_IN:
                        self._read_data(reply, deadline)
                    continue
                if isinstance(reply, usbip.RetUnlink) and reply.seqnum == unlink_seq:
                    return
                raise usbip.UsbipError(f"while unlinking seqnum {seqnum}: unexpected {type(reply).__name__} "
                                       f"seqnum {reply.seqnum}")
        except socket.timeout:
            self._kill(f"the server answered neither URB {seqnum} nor its unlink within "
                       f"{self.backend.grace_s:.1f} s")
        except _Dead as exc:
            self._kill(str(exc))
        except usbip.UsbipError as exc:
            self._kill(f"protocol error: {exc}")

    def control(self, request_type: int, request: int, value: int, index: int, length: int, data: bytes,
                timeout_ms: int) -> bytes | int:
        direction = usbip.DIR_IN if request_type & 0x80 else usbip.DIR_OUT
        setup = usbip.setup_packet(request_type, request, value, index, length)
        what = f"control {'IN' if direction else 'OUT'} {request_type:02x} {request:02x} value 0x{value:04x}"
        return self.submit(direction, 0, length, setup, data, timeout_ms, what)

    # -- descriptors -----------------------------------------------------------------------

    def _get_descriptor(self, kind: int, index: int, length: int) -> bytes:
        data = self.control(0x80, GET_DESCRIPTOR, kind << 8 | index, 0, length, b"", self.backend.timeout_ms)
        assert isinstance(data, bytes)
        return data

    def device_descriptor(self) -> descriptors.DeviceDescriptor:
        if self.device is None:
            self.device = descriptors.parse_device_descriptor(self._get_descriptor(descriptors.DEVICE, 0, 18))
        return self.device

    def configuration(self, index: int) -> descriptors.ConfigurationDescriptor:
        if index not in self.configurations:
            if not 0 <= index < self.device_descriptor().bNumConfigurations:
                raise IndexError(f"invalid configuration index {index}")
            head = self._get_descriptor(descriptors.CONFIGURATION, index, 9)
            total = int.from_bytes(head[2:4], "little") if len(head) >= 4 else len(head)
            full = self._get_descriptor(descriptors.CONFIGURATION, index, total) if total > len(head) else head
            self.configurations[index] = descriptors.parse_configuration(full)
        return self.configurations[index]

    def interface_alternates(self, config: int, intf: int) -> list[descriptors.InterfaceDescriptor]:
        """The alternate settings of the intf-th interface (libusb's grouping: by number, in order)."""
        numbers: list[int] = []
        groups: dict[int, list[descriptors.InterfaceDescriptor]] = {}
        for interface in self.configuration(config).interfaces:
            if interface.bInterfaceNumber not in groups:
                numbers.append(interface.bInterfaceNumber)
                groups[interface.bInterfaceNumber] = []
            groups[interface.bInterfaceNumber].append(interface)
        if not 0 <= intf < len(numbers):
            raise IndexError(f"invalid interface index {intf}")
        return groups[numbers[intf]]

    def close(self) -> None:
        self._kill("closed by the harness")


class UsbipBackend(usb.backend.IBackend):
    """pyusb backend over one USB/IP server. `busid`, or `vid`/`pid`, choose what it imports."""

    def __init__(self, server: str, busid: str | None = None, vid: int | None = None, pid: int | None = None,
                 timeout_ms: int = DEFAULT_TIMEOUT_MS, op_timeout_s: float = 5.0, grace_s: float | None = None) -> None:
        self.address = parse_server_address(server)
        self.label = server
        self.busid = busid
        self.vid = vid
        self.pid = pid
        self.timeout_ms = timeout_ms
        self.op_timeout_s = op_timeout_s
        self.grace_s = UNLINK_GRACE_S if grace_s is None else grace_s
        self._imported: dict[str, _Imported] = {}
        self._lock = threading.Lock()

    def devlist(self) -> tuple[usbip.ExportedDevice, ...]:
        """The server's exported devices (OP_REQ_DEVLIST on a connection of its own)."""
        deadline = time.monotonic() + self.op_timeout_s
        conn = _Connection(self.address, deadline, self.label)
        try:
            conn.send(usbip.pack_req_devlist(), deadline)
            head = conn.recv_exact(usbip.OP_HEADER_SIZE, deadline)
            if usbip.unpack_op_header(head, usbip.OP_REP_DEVLIST).status != 0:
                raise usbip.UsbipError("OP_REP_DEVLIST: the server refused the list (status not 0)")
            raw_count = conn.recv_exact(4, deadline)
            count = usbip.unpack_devlist_count(raw_count)
            parts = [head, raw_count]
            for _ in range(count):
                raw = conn.recv_exact(usbip.DEVICE_SIZE, deadline)
                listed = usbip.unpack_device(raw, "OP_REP_DEVLIST device")
                parts += [raw, conn.recv_exact(listed.bNumInterfaces * usbip.INTERFACE_SIZE, deadline)]
            return usbip.parse_rep_devlist(b"".join(parts))
        except socket.timeout as exc:
            raise USBTimeoutError(f"USB/IP devlist from {self.label} timed out ({exc})", None, errno.ETIMEDOUT) from None
        except _Dead as exc:
            raise _error(exc.code, str(exc)) from None
        except usbip.UsbipError as exc:
            raise _error(errno.EPROTO, f"USB/IP protocol error from {self.label}: {exc}") from None
        finally:
            conn.close()

    def wanted(self, listed: usbip.ExportedDevice) -> bool:
        if self.busid is not None:
            return listed.busid == self.busid
        return ((self.vid is None or listed.idVendor == self.vid)
                and (self.pid is None or listed.idProduct == self.pid))

    def _device(self, dev: _Exported) -> _Imported:
        with self._lock:
            imported = self._imported.get(dev.busid)
            if imported is None:
                imported = self._imported[dev.busid] = _Imported(self, dev)
            return imported

    def server_enumeration(self, bus: int, address: int) -> dict[str, Any] | None:
        """What the server's host enumerated of the imported device at bus/address (its devlist entry
        and import reply: the active configuration, its interfaces' class triples), or None. On a
        bench that is the exporting kernel's copy from the device's first enumeration: a device that
        answers later GET_DESCRIPTORs otherwise shows two descriptor sets."""
        with self._lock:
            for imported in self._imported.values():
                remote, listed = imported.remote, imported.listed
                if (remote.busnum, remote.devnum) == (bus, address):
                    return {"busid": imported.busid, "configuration": listed.bConfigurationValue,
                            "configurations": listed.bNumConfigurations, "interface_count": listed.bNumInterfaces,
                            "interfaces": [list(t) for t in listed.interfaces],
                            "import": {"configuration": remote.bConfigurationValue,
                                       "configurations": remote.bNumConfigurations,
                                       "interface_count": remote.bNumInterfaces},
                            "vid": listed.idVendor, "pid": listed.idProduct, "bcdDevice": listed.bcdDevice}
        return None

    def release_except(self, busids: set[str]) -> None:
        """End the imports of the devices not kept (a device found but not chosen stays free)."""
        with self._lock:
            for busid in [b for b in self._imported if b not in busids]:
                self._imported.pop(busid).close()

    def close(self) -> None:
        with self._lock:
            for imported in self._imported.values():
                imported.close()
            self._imported.clear()

    # -- IBackend: enumeration and descriptors ---------------------------------------------

    def enumerate_devices(self) -> Iterator[_Exported]:
        return iter([_Exported(listed.busid, listed) for listed in self.devlist() if self.wanted(listed)])

    def get_parent(self, dev: _Exported) -> None:
        return None

    def get_device_descriptor(self, dev: _Exported) -> _Descriptor:
        imported = self._device(dev)
        parsed = imported.device_descriptor()
        remote = imported.remote
        if (parsed.idVendor, parsed.idProduct) != (remote.idVendor, remote.idProduct):
            raise _error(errno.EPROTO, f"USB/IP server {self.label}: {dev.busid} is listed as "
                                       f"{remote.idVendor:04x}:{remote.idProduct:04x} but its device descriptor says "
                                       f"{parsed.idVendor:04x}:{parsed.idProduct:04x}")
        bus, _, ports = dev.busid.partition("-")
        port_numbers = tuple(int(p) for p in ports.split(".") if p.isdigit()) or None
        return _Descriptor(**_fields(parsed, _DEVICE_FIELDS), bus=remote.busnum, address=remote.devnum,
                           speed=_LIBUSB_SPEED.get(remote.speed), port_numbers=port_numbers,
                           port_number=port_numbers[-1] if port_numbers else None)

    def get_configuration_descriptor(self, dev: _Exported, config: int) -> _Descriptor:
        parsed = self._device(dev).configuration(config)
        return _Descriptor(**_fields(parsed, _CONFIG_FIELDS), extra_descriptors=list(parsed.extra))

    def get_interface_descriptor(self, dev: _Exported, intf: int, alt: int, config: int) -> _Descriptor:
        alternates = self._device(dev).interface_alternates(config, intf)
        if not 0 <= alt < len(alternates):
            raise IndexError(f"invalid alternate setting index {alt}")
        parsed = alternates[alt]
        return _Descriptor(**_fields(parsed, _INTERFACE_FIELDS), extra_descriptors=list(parsed.extra))

    def get_endpoint_descriptor(self, dev: _Exported, ep: int, intf: int, alt: int, config: int) -> _Descriptor:
        alternates = self._device(dev).interface_alternates(config, intf)
        if not 0 <= alt < len(alternates) or not 0 <= ep < len(alternates[alt].endpoints):
            raise IndexError(f"invalid endpoint index {ep}")
        parsed = alternates[alt].endpoints[ep]
        # bRefresh/bSynchAddress: only audio 1.0 endpoints have them (9 bytes); zero otherwise, as libusb.
        return _Descriptor(**_fields(parsed, _ENDPOINT_FIELDS), bRefresh=0, bSynchAddress=0,
                           extra_descriptors=list(parsed.extra))

    # -- IBackend: handles and transfers ---------------------------------------------------

    def open_device(self, dev: _Exported) -> _Imported:
        return self._device(dev)

    def close_device(self, dev_handle: _Imported) -> None:
        # The import stays until close(): another import could be refused (it is exclusive).
        pass

    def set_configuration(self, dev_handle: _Imported, config_value: int) -> None:
        dev_handle.control(0x00, SET_CONFIGURATION, config_value, 0, 0, b"", self.timeout_ms)

    def get_configuration(self, dev_handle: _Imported) -> int:
        data = dev_handle.control(0x80, GET_CONFIGURATION, 0, 0, 1, b"", self.timeout_ms)
        if not isinstance(data, bytes) or len(data) != 1:
            raise _error(errno.EPROTO, f"GET_CONFIGURATION answered {data!r}, not one byte")
        return data[0]

    def set_interface_altsetting(self, dev_handle: _Imported, intf: int, altsetting: int) -> None:
        dev_handle.control(0x01, SET_INTERFACE, altsetting, intf, 0, b"", self.timeout_ms)

    def claim_interface(self, dev_handle: _Imported, intf: int) -> None:
        pass  # the import already gives this host the whole device

    def release_interface(self, dev_handle: _Imported, intf: int) -> None:
        pass

    def _out(self, dev_handle: _Imported, ep: int, data: array, timeout: int, kind: str) -> int:
        payload = bytes(data)
        result = dev_handle.submit(usbip.DIR_OUT, ep, len(payload), bytes(8), payload, timeout,
                                   f"{kind} OUT 0x{ep:02x} ({len(payload)} bytes)")
        assert isinstance(result, int)
        return result

    def _in(self, dev_handle: _Imported, ep: int, buff: array, timeout: int, kind: str) -> int:
        size = len(buff) * buff.itemsize
        result = dev_handle.submit(usbip.DIR_IN, ep, size, bytes(8), b"", timeout,
                                   f"{kind} IN 0x{ep:02x} ({size} bytes asked)")
        assert isinstance(result, bytes)
        memoryview(buff).cast("B")[:len(result)] = result
        return len(result)

    def bulk_write(self, dev_handle: _Imported, ep: int, intf: int, data: array, timeout: int) -> int:
        return self._out(dev_handle, ep, data, timeout, "bulk")

    def bulk_read(self, dev_handle: _Imported, ep: int, intf: int, buff: array, timeout: int) -> int:
        return self._in(dev_handle, ep, buff, timeout, "bulk")

    def intr_write(self, dev_handle: _Imported, ep: int, intf: int, data: array, timeout: int) -> int:
        return self._out(dev_handle, ep, data, timeout, "interrupt")

    def intr_read(self, dev_handle: _Imported, ep: int, intf: int, buff: array, timeout: int) -> int:
        return self._in(dev_handle, ep, buff, timeout, "interrupt")

    def ctrl_transfer(self, dev_handle: _Imported, bmRequestType: int, bRequest: int, wValue: int, wIndex: int,
                      data: array, timeout: int) -> int:
        size = len(data) * data.itemsize
        if bmRequestType & 0x80:
            result = dev_handle.control(bmRequestType, bRequest, wValue, wIndex, size, b"", timeout)
            assert isinstance(result, bytes)
            memoryview(data).cast("B")[:len(result)] = result
            return len(result)
        result = dev_handle.control(bmRequestType, bRequest, wValue, wIndex, size, bytes(data), timeout)
        assert isinstance(result, int)
        return result

    def clear_halt(self, dev_handle: _Imported, ep: int) -> None:
        dev_handle.control(0x02, CLEAR_FEATURE, ENDPOINT_HALT, ep, 0, b"", self.timeout_ms)

    def reset_device(self, dev_handle: _Imported) -> None:
        raise NotImplementedError("USB/IP carries no port reset")

    def is_kernel_driver_active(self, dev_handle: _Imported, intf: int) -> bool:
        return False

    def detach_kernel_driver(self, dev_handle: _Imported, intf: int) -> None:
        pass

    def attach_kernel_driver(self, dev_handle: _Imported, intf: int) -> None:
        pass
