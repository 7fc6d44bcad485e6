"""USB/IP protocol data units (the Linux kernel's protocol, version 0x0111), packed and unpacked.

Spec: https://docs.kernel.org/usb/usbip_protocol.html. Every field is big-endian; the setup packet
is the 8 raw USB bytes (wValue etc. little-endian inside it).

Two phases on one connection:

* operations: OP_REQ_DEVLIST / OP_REP_DEVLIST (the exported devices, each followed by its
  interfaces' class triples) and OP_REQ_IMPORT / OP_REP_IMPORT (status, then the device);
* after a successful import, URBs: USBIP_CMD_SUBMIT / USBIP_RET_SUBMIT and USBIP_CMD_UNLINK /
  USBIP_RET_UNLINK, each a 48-byte header; OUT data follows CMD_SUBMIT, IN data (actual_length
  bytes) follows RET_SUBMIT.

A stream reader needs to know how many bytes to read before it can decode them, so the decoders
here take exactly one fixed-size part (`OP_HEADER_SIZE`, `DEVICE_SIZE`, `URB_HEADER_SIZE`, ...) and
say what follows. The server is hostile input: every decoder is strict (exact sizes, known codes,
the version, lengths that fit what was asked) and raises `UsbipError` naming the PDU, the field and
why. No I/O here: the socket lives in harness/interfaces/usbip_backend.py.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, replace

__all__ = [
    "UsbipError", "USBIP_VERSION", "OP_REQ_DEVLIST", "OP_REP_DEVLIST", "OP_REQ_IMPORT", "OP_REP_IMPORT",
    "CMD_SUBMIT", "RET_SUBMIT", "CMD_UNLINK", "RET_UNLINK", "DIR_OUT", "DIR_IN",
    "OP_HEADER_SIZE", "DEVICE_SIZE", "INTERFACE_SIZE", "URB_HEADER_SIZE", "BUSID_SIZE", "PATH_SIZE",
    "MAX_DEVLIST_DEVICES", "NON_ISO_PACKETS",
    "OpHeader", "ExportedDevice", "CmdSubmit", "RetSubmit", "CmdUnlink", "RetUnlink",
    "setup_packet", "unpack_setup",
    "pack_op_header", "unpack_op_header", "pack_req_devlist", "pack_req_import", "unpack_req_import",
    "pack_device", "unpack_device", "pack_interfaces", "unpack_interfaces", "pack_devlist_count",
    "unpack_devlist_count", "pack_rep_devlist", "parse_rep_devlist",
    "pack_cmd_submit", "pack_ret_submit", "pack_cmd_unlink", "pack_ret_unlink",
    "unpack_urb_header", "devid",
]

USBIP_VERSION = 0x0111
OP_REQ_DEVLIST = 0x8005
OP_REP_DEVLIST = 0x0005
OP_REQ_IMPORT = 0x8003
OP_REP_IMPORT = 0x0003
CMD_SUBMIT = 0x1
CMD_UNLINK = 0x2
RET_SUBMIT = 0x3
RET_UNLINK = 0x4
DIR_OUT = 0
DIR_IN = 1
# number_of_packets of a non-isochronous URB (the kernel's stub answers 0 for them too).
NON_ISO_PACKETS = 0xFFFFFFFF

OP_HEADER_SIZE = 8
PATH_SIZE = 256
BUSID_SIZE = 32
DEVICE_SIZE = 312
INTERFACE_SIZE = 4
URB_HEADER_SIZE = 48
# A devlist claiming more devices than a USB host can address is garbage, not a long list.
MAX_DEVLIST_DEVICES = 128
# The kernel caps one URB's buffer well below this; a larger length is a corrupt or hostile header.
MAX_TRANSFER_LENGTH = 16 * 1024 * 1024

_OP = struct.Struct(">HHI")
_DEVICE_TAIL = struct.Struct(">IIIHHHBBBBBB")  # busnum .. bNumInterfaces, after path and busid
_BASIC = struct.Struct(">IIIII")  # command, seqnum, devid, direction, ep
_SUBMIT = struct.Struct(">IiiiI8s")  # transfer_flags, buffer length, start_frame, packets, interval, setup
_RET = struct.Struct(">iiiIi8s")  # status, actual_length, start_frame, packets, error_count, padding
_UNLINK = struct.Struct(">I24s")  # unlink_seqnum, padding
_RET_UNLINK = struct.Struct(">i24s")  # status, padding
_SETUP = struct.Struct("<BBHHH")

_OP_NAMES = {OP_REQ_DEVLIST: "OP_REQ_DEVLIST", OP_REP_DEVLIST: "OP_REP_DEVLIST",
             OP_REQ_IMPORT: "OP_REQ_IMPORT", OP_REP_IMPORT: "OP_REP_IMPORT"}
_URB_NAMES = {CMD_SUBMIT: "USBIP_CMD_SUBMIT", CMD_UNLINK: "USBIP_CMD_UNLINK",
              RET_SUBMIT: "USBIP_RET_SUBMIT", RET_UNLINK: "USBIP_RET_UNLINK"}


class UsbipError(ValueError):
    """A USB/IP PDU that cannot be used. The message names the PDU, the field and why."""


def _need(data: bytes, size: int, what: str) -> bytes:
    data = bytes(data)
    if len(data) != size:
        raise UsbipError(f"{what}: {len(data)} bytes, expected exactly {size}")
    return data


def _text_field(raw: bytes, what: str) -> str:
    """A NUL-padded C string field: printable ASCII up to the first NUL, zeros after it."""
    text, _, rest = raw.partition(b"\0")
    if rest.strip(b"\0"):
        raise UsbipError(f"{what}: bytes after the terminating NUL ({raw.hex()})")
    if not text or any(b < 0x21 or b > 0x7E for b in text):
        raise UsbipError(f"{what}: {text!r} is not a non-empty printable ASCII name")
    return text.decode("ascii")


def _pack_text(text: str, size: int, what: str) -> bytes:
    raw = text.encode("ascii")
    if not raw or len(raw) >= size or any(b < 0x21 or b > 0x7E for b in raw):
        raise UsbipError(f"{what} {text!r}: must be 1..{size - 1} printable ASCII characters")
    return raw.ljust(size, b"\0")


def devid(busnum: int, devnum: int) -> int:
    """The URB header's devid of an imported device."""
    return (busnum & 0xFFFF) << 16 | (devnum & 0xFFFF)


def setup_packet(request_type: int, request: int, value: int, index: int, length: int) -> bytes:
    """The 8-byte USB setup packet (little-endian inside, as on the wire)."""
    return _SETUP.pack(request_type, request, value, index, length)


def unpack_setup(setup: bytes) -> tuple[int, int, int, int, int]:
    """(bmRequestType, bRequest, wValue, wIndex, wLength) of an 8-byte setup packet."""
    return _SETUP.unpack(_need(setup, 8, "setup packet"))


# ---------------------------------------------------------------------------------------------
# Operations


@dataclass(frozen=True, slots=True)
class OpHeader:
    version: int
    code: int
    status: int


def pack_op_header(code: int, status: int = 0) -> bytes:
    return _OP.pack(USBIP_VERSION, code, status)


def unpack_op_header(data: bytes, expected_code: int) -> OpHeader:
    """The 8-byte operation header, which must carry version 0x0111 and `expected_code`."""
    version, code, status = _OP.unpack(_need(data, OP_HEADER_SIZE, "USB/IP operation header"))
    name = _OP_NAMES.get(expected_code, f"0x{expected_code:04x}")
    if version != USBIP_VERSION:
        raise UsbipError(f"{name} header: version 0x{version:04x}, expected 0x{USBIP_VERSION:04x} "
                         f"(header {bytes(data).hex()})")
    if code != expected_code:
        raise UsbipError(f"{name} header: code 0x{code:04x} "
                         f"({_OP_NAMES.get(code, 'unknown')}), expected 0x{expected_code:04x}")
    return OpHeader(version, code, status)


def pack_req_devlist() -> bytes:
    return pack_op_header(OP_REQ_DEVLIST)


def pack_req_import(busid: str) -> bytes:
    return pack_op_header(OP_REQ_IMPORT) + _pack_text(busid, BUSID_SIZE, "busid")


def unpack_req_import(data: bytes) -> str:
    """The busid of an OP_REQ_IMPORT body (32 bytes after the header)."""
    return _text_field(_need(data, BUSID_SIZE, "OP_REQ_IMPORT busid"), "OP_REQ_IMPORT busid")


@dataclass(frozen=True, slots=True)
class ExportedDevice:
    """struct usbip_usb_device, plus the devlist's interface triples when it came from one."""

    path: str
    busid: str
    busnum: int
    devnum: int
    speed: int  # the kernel's enum usb_device_speed: 1 low, 2 full, 3 high, 5 super, 6 super+
    idVendor: int
    idProduct: int
    bcdDevice: int
    bDeviceClass: int
    bDeviceSubClass: int
    bDeviceProtocol: int
    bConfigurationValue: int
    bNumConfigurations: int
    bNumInterfaces: int
    interfaces: tuple[tuple[int, int, int], ...] = ()  # (class, subclass, protocol)

    @property
    def devid(self) -> int:
        return devid(self.busnum, self.devnum)


def pack_device(device: ExportedDevice) -> bytes:
    return (_pack_text(device.path, PATH_SIZE, "path") + _pack_text(device.busid, BUSID_SIZE, "busid")
            + _DEVICE_TAIL.pack(device.busnum, device.devnum, device.speed, device.idVendor,
                                device.idProduct, device.bcdDevice, device.bDeviceClass,
                                device.bDeviceSubClass, device.bDeviceProtocol,
                                device.bConfigurationValue, device.bNumConfigurations,
                                device.bNumInterfaces))


def unpack_device(data: bytes, what: str = "usbip_usb_device") -> ExportedDevice:
    """A 312-byte usbip_usb_device (interfaces, if any follow, are read with unpack_interfaces)."""
    data = _need(data, DEVICE_SIZE, what)
    path = _text_field(data[:PATH_SIZE], f"{what} path")
    busid = _text_field(data[PATH_SIZE:PATH_SIZE + BUSID_SIZE], f"{what} busid")
    fields = _DEVICE_TAIL.unpack_from(data, PATH_SIZE + BUSID_SIZE)
    busnum, devnum, speed = fields[:3]
    if not 1 <= busnum <= 0xFFFF or not 1 <= devnum <= 127:
        raise UsbipError(f"{what} {busid}: busnum {busnum} / devnum {devnum} out of range "
                         f"(bus 1..65535, device address 1..127)")
    if speed > 6:
        raise UsbipError(f"{what} {busid}: speed {speed} is not a USB speed (0..6)")
    return ExportedDevice(path, busid, *fields)


def pack_interfaces(interfaces: tuple[tuple[int, int, int], ...]) -> bytes:
    return b"".join(bytes((c, s, p, 0)) for c, s, p in interfaces)


def unpack_interfaces(data: bytes, count: int, what: str = "devlist interfaces") -> tuple[tuple[int, int, int], ...]:
    """`count` 4-byte (class, subclass, protocol, padding) entries."""
    data = _need(data, count * INTERFACE_SIZE, what)
    return tuple((data[i], data[i + 1], data[i + 2]) for i in range(0, len(data), INTERFACE_SIZE))


def pack_devlist_count(count: int) -> bytes:
    return struct.pack(">I", count)


def unpack_devlist_count(data: bytes) -> int:
    (count,) = struct.unpack(">I", _need(data, 4, "OP_REP_DEVLIST device count"))
    if count > MAX_DEVLIST_DEVICES:
        raise UsbipError(f"OP_REP_DEVLIST device count {count} is absurd (at most {MAX_DEVLIST_DEVICES})")
    return count


def pack_rep_devlist(devices: tuple[ExportedDevice, ...] | list[ExportedDevice]) -> bytes:
    out = [pack_op_header(OP_REP_DEVLIST), pack_devlist_count(len(devices))]
    for device in devices:
        out += [pack_device(device), pack_interfaces(device.interfaces)]
    return b"".join(out)


def parse_rep_devlist(data: bytes) -> tuple[ExportedDevice, ...]:
    """A whole OP_REP_DEVLIST held in memory (exactly its bytes): the exported devices."""
    data = bytes(data)
    if len(data) < OP_HEADER_SIZE + 4:
        raise UsbipError(f"OP_REP_DEVLIST: {len(data)} bytes, too short for its header and count")
    header = unpack_op_header(data[:OP_HEADER_SIZE], OP_REP_DEVLIST)
    if header.status != 0:
        raise UsbipError(f"OP_REP_DEVLIST: status {header.status} (the server refused the list)")
    count = unpack_devlist_count(data[OP_HEADER_SIZE:OP_HEADER_SIZE + 4])
    off = OP_HEADER_SIZE + 4
    devices = []
    for n in range(count):
        what = f"OP_REP_DEVLIST device {n} at offset {off}"
        device = unpack_device(data[off:off + DEVICE_SIZE], what)
        off += DEVICE_SIZE
        size = device.bNumInterfaces * INTERFACE_SIZE
        interfaces = unpack_interfaces(data[off:off + size], device.bNumInterfaces, f"{what} interfaces")
        off += size
        devices.append(replace(device, interfaces=interfaces))
    if off != len(data):
        raise UsbipError(f"OP_REP_DEVLIST: {len(data) - off} bytes after the last of {count} devices")
    return tuple(devices)


# ---------------------------------------------------------------------------------------------
# URBs


@dataclass(frozen=True, slots=True)
class CmdSubmit:
    seqnum: int
    devid: int
    direction: int
    ep: int
    transfer_flags: int
    transfer_buffer_length: int
    start_frame: int
    number_of_packets: int
    interval: int
    setup: bytes


@dataclass(frozen=True, slots=True)
class RetSubmit:
    seqnum: int
    devid: int
    direction: int
    ep: int
    status: int
    actual_length: int
    start_frame: int
    number_of_packets: int
    error_count: int


@dataclass(frozen=True, slots=True)
class CmdUnlink:
    seqnum: int
    devid: int
    direction: int
    ep: int
    unlink_seqnum: int


@dataclass(frozen=True, slots=True)
class RetUnlink:
    seqnum: int
    devid: int
    direction: int
    ep: int
    status: int


def _basic(command: int, seqnum: int, dev: int, direction: int, ep: int) -> bytes:
    if direction not in (DIR_OUT, DIR_IN):
        raise UsbipError(f"{_URB_NAMES[command]}: direction {direction} is neither 0 (out) nor 1 (in)")
    if not 0 <= ep <= 15:
        raise UsbipError(f"{_URB_NAMES[command]}: endpoint number {ep} is not 0..15")
    return _BASIC.pack(command, seqnum, dev, direction, ep)


def pack_cmd_submit(seqnum: int, dev: int, direction: int, ep: int, length: int, setup: bytes = bytes(8),
                    data: bytes = b"", transfer_flags: int = 0, interval: int = 0) -> bytes:
    """A CMD_SUBMIT header followed by its OUT data (`length` must equal len(data) for OUT)."""
    if direction == DIR_OUT and length != len(data):
        raise UsbipError(f"USBIP_CMD_SUBMIT: OUT length {length} != {len(data)} data bytes")
    if direction == DIR_IN and data:
        raise UsbipError("USBIP_CMD_SUBMIT: an IN transfer carries no data")
    if not 0 <= length <= MAX_TRANSFER_LENGTH:
        raise UsbipError(f"USBIP_CMD_SUBMIT: transfer length {length} out of range")
    return (_basic(CMD_SUBMIT, seqnum, dev, direction, ep)
            + _SUBMIT.pack(transfer_flags, length, 0, -1, interval, _need(setup, 8, "setup packet"))
            + bytes(data))


def pack_ret_submit(seqnum: int, status: int, actual_length: int, data: bytes = b"", dev: int = 0,
                    direction: int = 0, ep: int = 0, number_of_packets: int = NON_ISO_PACKETS) -> bytes:
    """A RET_SUBMIT header followed by its IN data (the simulator's and test servers' side)."""
    return (_basic(RET_SUBMIT, seqnum, dev, direction, ep)
            + _RET.pack(status, actual_length, 0, number_of_packets, 0, bytes(8)) + bytes(data))


def pack_cmd_unlink(seqnum: int, dev: int, direction: int, ep: int, unlink_seqnum: int) -> bytes:
    return _basic(CMD_UNLINK, seqnum, dev, direction, ep) + _UNLINK.pack(unlink_seqnum, bytes(24))


def pack_ret_unlink(seqnum: int, status: int, dev: int = 0, direction: int = 0, ep: int = 0) -> bytes:
    return _basic(RET_UNLINK, seqnum, dev, direction, ep) + _RET_UNLINK.pack(status, bytes(24))


def unpack_urb_header(data: bytes) -> CmdSubmit | RetSubmit | CmdUnlink | RetUnlink:
    """One 48-byte URB header. Only the header: a caller reads the data that follows.

    Strict about what decides how many bytes follow (command, lengths, packet count) and about the
    fields a reply must echo; a RET_* header's devid/direction/ep are 0 on the kernel's side and
    not checked (the seqnum names the URB).
    """
    data = _need(data, URB_HEADER_SIZE, "USB/IP URB header")
    command, seqnum, dev, direction, ep = _BASIC.unpack_from(data, 0)
    name = _URB_NAMES.get(command)
    if name is None:
        raise UsbipError(f"USB/IP URB header: command 0x{command:08x} is none of CMD_SUBMIT, RET_SUBMIT, "
                         f"CMD_UNLINK, RET_UNLINK (header {data[:20].hex()})")
    if command in (CMD_SUBMIT, CMD_UNLINK):
        if direction not in (DIR_OUT, DIR_IN):
            raise UsbipError(f"{name} seqnum {seqnum}: direction {direction} is neither 0 nor 1")
        if ep > 15:
            raise UsbipError(f"{name} seqnum {seqnum}: endpoint number {ep} is not 0..15")
    if command == CMD_SUBMIT:
        flags, length, start_frame, packets, interval, setup = _SUBMIT.unpack_from(data, 20)
        if not 0 <= length <= MAX_TRANSFER_LENGTH:
            raise UsbipError(f"{name} seqnum {seqnum}: transfer_buffer_length {length} out of range")
        if packets not in (-1, 0):
            raise UsbipError(f"{name} seqnum {seqnum}: {packets} isochronous packets (not supported)")
        return CmdSubmit(seqnum, dev, direction, ep, flags, length, start_frame, packets, interval, setup)
    if command == RET_SUBMIT:
        status, actual, start_frame, packets, errors, _pad = _RET.unpack_from(data, 20)
        if not 0 <= actual <= MAX_TRANSFER_LENGTH:
            raise UsbipError(f"{name} seqnum {seqnum}: actual_length {actual} out of range")
        if packets not in (0, NON_ISO_PACKETS):
            # Isochronous packet descriptors would follow the data: a non-iso URB has none.
            raise UsbipError(f"{name} seqnum {seqnum}: number_of_packets {packets} on a non-isochronous URB")
        if status > 0:
            raise UsbipError(f"{name} seqnum {seqnum}: status {status} is not 0 or a negative errno")
        return RetSubmit(seqnum, dev, direction, ep, status, actual, start_frame, packets, errors)
    if command == CMD_UNLINK:
        (unlink_seqnum, _pad) = _UNLINK.unpack_from(data, 20)
        return CmdUnlink(seqnum, dev, direction, ep, unlink_seqnum)
    (status, _pad) = _RET_UNLINK.unpack_from(data, 20)
    if status > 0:
        raise UsbipError(f"{name} seqnum {seqnum}: status {status} is not 0 or a negative errno")
    return RetUnlink(seqnum, dev, direction, ep, status)
