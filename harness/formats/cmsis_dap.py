"""CMSIS-DAP v2 commands and responses (the debug probe's protocol over its bulk endpoints), and
the Arm ADIv5 debug-port and access-port registers the harness reads through it.

A command is one packet: its id, then its parameters, little-endian. The probe answers with one
packet that starts with the same id (Arm, CMSIS-DAP "Commands" reference, v2.1):

    DAP_Info            00 id                    → 00 len data[len]   (strings end with one NUL)
    DAP_HostStatus      01 type status           → 01 status
    DAP_Connect         02 port (1 SWD, 2 JTAG)  → 02 port (0: failed)
    DAP_Disconnect      03                       → 03 status
    DAP_TransferConfigure 04 idle u16-wait u16-match → 04 status
    DAP_Transfer        05 index count {request [u32 write data]}*count
                                                 → 05 count response {u32 read data}*
    DAP_TransferBlock   06 index u16-count request {u32}* → 06 u16-count response {u32}*
    DAP_WriteABORT      08 index u32             → 08 status
    DAP_SWJ_Clock       11 u32-hz                → 11 status
    DAP_SWJ_Sequence    12 bits (0: 256) data    → 12 status
    status: 00 DAP_OK, FF DAP_ERROR; a probe answers FF alone to a command it does not know.

The responses come from a device that may lie. Every decoder is strict and raises DapError,
naming the command and why, on a response that does not start with its command's id, is short,
carries bytes past its end, counts more transfers than were asked, carries read data that does
not match the reads completed, or an info string with a NUL inside or a byte outside printable
ASCII.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Sequence

__all__ = [
    "ACK_FAULT", "ACK_NO_ACK", "ACK_OK", "ACK_WAIT", "ApIdr", "DapError", "IdCode", "LINE_RESET_AND_SWITCH",
    "TransferRequest", "TransferResult", "ack_name", "decode_ap_idr", "decode_connect", "decode_idcode",
    "decode_info", "decode_status", "decode_transfer", "decode_transfer_block", "dp_select", "encode_connect",
    "encode_disconnect", "encode_info", "encode_swj_clock", "encode_swj_sequence", "encode_transfer",
    "encode_transfer_block", "encode_transfer_configure", "encode_write_abort",
]

# Command ids
INFO = 0x00
HOST_STATUS = 0x01
CONNECT = 0x02
DISCONNECT = 0x03
TRANSFER_CONFIGURE = 0x04
TRANSFER = 0x05
TRANSFER_BLOCK = 0x06
WRITE_ABORT = 0x08
SWJ_CLOCK = 0x11
SWJ_SEQUENCE = 0x12
INVALID_COMMAND = 0xFF  # the whole answer of a probe to a command it does not implement

COMMAND_NAMES = {
    INFO: "DAP_Info", HOST_STATUS: "DAP_HostStatus", CONNECT: "DAP_Connect", DISCONNECT: "DAP_Disconnect",
    TRANSFER_CONFIGURE: "DAP_TransferConfigure", TRANSFER: "DAP_Transfer", TRANSFER_BLOCK: "DAP_TransferBlock",
    WRITE_ABORT: "DAP_WriteABORT", SWJ_CLOCK: "DAP_SWJ_Clock", SWJ_SEQUENCE: "DAP_SWJ_Sequence",
}

DAP_OK = 0x00
DAP_ERROR = 0xFF

# DAP_Info ids
VENDOR = 0x01
PRODUCT = 0x02
SERIAL = 0x03
PROTOCOL_VERSION = 0x04
TARGET_DEVICE_VENDOR = 0x05
TARGET_DEVICE_NAME = 0x06
TARGET_BOARD_VENDOR = 0x07
TARGET_BOARD_NAME = 0x08
FIRMWARE = 0x09
CAPABILITIES = 0xF0
TEST_DOMAIN_TIMER = 0xF1
UART_RX_BUFFER_SIZE = 0xFB
UART_TX_BUFFER_SIZE = 0xFC
SWO_BUFFER_SIZE = 0xFD
PACKET_COUNT = 0xFE
PACKET_SIZE = 0xFF

STRING_INFO = {VENDOR: "vendor", PRODUCT: "product", SERIAL: "serial number",
               PROTOCOL_VERSION: "protocol version", TARGET_DEVICE_VENDOR: "target device vendor",
               TARGET_DEVICE_NAME: "target device name", TARGET_BOARD_VENDOR: "target board vendor",
               TARGET_BOARD_NAME: "target board name", FIRMWARE: "firmware version"}
INTEGER_INFO = {TEST_DOMAIN_TIMER: ("test domain timer", 4), UART_RX_BUFFER_SIZE: ("UART receive buffer size", 4),
                UART_TX_BUFFER_SIZE: ("UART transmit buffer size", 4), SWO_BUFFER_SIZE: ("SWO buffer size", 4),
                PACKET_COUNT: ("packet count", 1), PACKET_SIZE: ("packet size", 2)}
# The reference firmware refuses to build outside these; a probe claiming 0 would stall the link.
INTEGER_LIMITS = {PACKET_COUNT: (1, 255), PACKET_SIZE: (64, 32768)}
CAPABILITY_SIZES = (1, 2)  # Info0, and from v2.1 on an optional Info1

# DAP_Connect ports
PORT_FAILED = 0
PORT_SWD = 1
PORT_JTAG = 2
PORTS = {PORT_FAILED: "failed", PORT_SWD: "SWD", PORT_JTAG: "JTAG"}

# Transfer request bits
_AP = 0x01
_READ = 0x02
# Transfer response bits: an ack (bits 0-2), SWD protocol error (bit 3), value mismatch (bit 4)
ACK_OK = 1
ACK_WAIT = 2
ACK_FAULT = 4
ACK_NO_ACK = 7
_ACK_MASK = 0x07
_PROTOCOL_ERROR = 0x08
_MISMATCH = 0x10
ACK_NAMES = {ACK_OK: "OK", ACK_WAIT: "WAIT", ACK_FAULT: "FAULT", ACK_NO_ACK: "NO_ACK"}
MAX_TRANSFERS = 255
MAX_BLOCK_TRANSFERS = 0xFFFF

# SWJ sequences: a line reset (at least 50 clocks with SWDIO high), the JTAG-to-SWD select
# sequence 0xE79E (sent LSB first), another line reset, then idle clocks with SWDIO low
# (ADIv5.2 §B4.3.2, as pyOCD and OpenOCD send them).
LINE_RESET = (51, b"\xff" * 7)
JTAG_TO_SWD = (16, struct.pack("<H", 0xE79E))
IDLE = (8, b"\x00")
LINE_RESET_AND_SWITCH: tuple[tuple[int, bytes], ...] = (LINE_RESET, JTAG_TO_SWD, LINE_RESET, IDLE)

# ADIv5 debug port registers (A[3:2] of a DP access)
DP_IDCODE = 0x0      # read (DPIDR)
DP_ABORT = 0x0       # write
DP_CTRL_STAT = 0x4
DP_SELECT = 0x8
DP_RDBUFF = 0xC
CTRL_STAT_POWERUP_REQ = 0x50000000   # CSYSPWRUPREQ | CDBGPWRUPREQ
CTRL_STAT_POWERUP_ACK = 0xA0000000   # CSYSPWRUPACK | CDBGPWRUPACK
CTRL_STAT_STICKYERR = 0x00000020
ABORT_CLEAR_ERRORS = 0x1E            # ORUNERRCLR | WDERRCLR | STKERRCLR | STKCMPCLR
# MEM-AP registers (full addresses: bank in bits 7-4 goes to DP SELECT, bits 3-2 to the access)
AP_CSW = 0x00
AP_TAR = 0x04
AP_DRW = 0x0C
AP_IDR = 0xFC
CSW_SIZE_32 = 0x02
CSW_ADDRINC_SINGLE = 0x10
CSW_DEVICE_EN = 1 << 6               # the MEM-AP may access the bus: 0 on a locked part

ARM_DESIGNER = 0x23B                  # JEP106 bank 4 (continuation code count), identity 0x3B
AP_CLASS_MEM = 0x8
AP_TYPES = {0x0: "JTAG-AP", 0x1: "AHB-AP", 0x2: "APB-AP", 0x4: "AXI-AP", 0x5: "AHB5-AP", 0x6: "APB4-AP",
            0x7: "AXI5-AP", 0x8: "AHB5-AP (enhanced HPROT)"}


class DapError(ValueError):
    """A CMSIS-DAP response (or value) is not what a well-behaved probe sends; the message names
    the command and why."""


def _name(command: int) -> str:
    return COMMAND_NAMES.get(command, f"command {command:#04x}")


def _bytes(response: bytes | bytearray | memoryview, command: int) -> bytes:
    if not isinstance(response, (bytes, bytearray, memoryview)):
        raise DapError(f"{_name(command)} response: expected bytes, got {type(response).__name__}")
    return bytes(response)


def _body(command: int, response: bytes, size: int | None = None) -> bytes:
    """The response after its command id, checked to start with that id (and to be `size` long)."""
    response = _bytes(response, command)
    name = _name(command)
    if not response:
        raise DapError(f"{name} response: empty")
    if response[0] != command:
        if response == bytes([INVALID_COMMAND]):
            raise DapError(f"{name} response: 0xFF alone: the probe does not implement {name}")
        raise DapError(f"{name} response: starts with {response[0]:#04x}, not the command id {command:#04x}")
    if size is not None and len(response) != size:
        problem = "short" if len(response) < size else f"{len(response) - size} bytes past its end"
        raise DapError(f"{name} response: {len(response)} bytes, expected {size} ({problem}): "
                       f"{response[:16].hex(' ')}")
    return response[1:]


def _u8(value: int, what: str) -> int:
    if not isinstance(value, int) or not 0 <= value <= 0xFF:
        raise DapError(f"{what} {value!r} is not a byte (0..255)")
    return value


def _u16(value: int, what: str) -> int:
    if not isinstance(value, int) or not 0 <= value <= 0xFFFF:
        raise DapError(f"{what} {value!r} is not a 16-bit value")
    return value


def _u32(value: int, what: str) -> int:
    if not isinstance(value, int) or not 0 <= value <= 0xFFFFFFFF:
        raise DapError(f"{what} {value!r} is not a 32-bit value")
    return value


# --- status, info, connect ---


def decode_status(command: int, response: bytes) -> None:
    """A response that is the command id and one status byte: DAP_OK, else DapError."""
    (status,) = _body(command, response, 2)
    if status == DAP_ERROR:
        raise DapError(f"{_name(command)} response: DAP_ERROR (0xFF): the probe refused the command")
    if status != DAP_OK:
        raise DapError(f"{_name(command)} response: status {status:#04x}, neither DAP_OK (0x00) nor DAP_ERROR")


def encode_info(info_id: int) -> bytes:
    return bytes([INFO, _u8(info_id, "DAP_Info id")])


def decode_info(info_id: int, response: bytes) -> str | int | bytes:
    """The value of one DAP_Info item: a string (without its NUL), an integer, or the capability bytes.

    A string item the probe does not have comes back empty (length 0): "". An integer item it does
    not have, a length that disagrees with the response, or any other NUL: DapError.
    """
    body = _body(INFO, response)
    where = f"DAP_Info {info_id:#04x} response"
    if not body:
        raise DapError(f"{where}: no length byte")
    length, data = body[0], body[1:]
    if length != len(data):
        problem = "short" if len(data) < length else f"{len(data) - length} bytes past its end"
        raise DapError(f"{where}: length byte {length}, but {len(data)} bytes follow ({problem})")
    if info_id in STRING_INFO:
        return _info_string(data, f"{where} ({STRING_INFO[info_id]})")
    if info_id in INTEGER_INFO:
        name, size = INTEGER_INFO[info_id]
        if length != size:
            raise DapError(f"{where} ({name}): {length} bytes, expected {size}")
        value = int.from_bytes(data, "little")
        low, high = INTEGER_LIMITS.get(info_id, (0, value))
        if not low <= value <= high:
            raise DapError(f"{where} ({name}): {value}, outside {low}..{high}")
        return value
    if info_id == CAPABILITIES:
        if length not in CAPABILITY_SIZES:
            raise DapError(f"{where} (capabilities): {length} bytes, expected 1 or 2")
        return data
    return data


def _info_string(data: bytes, where: str) -> str:
    # The probe counts the NUL terminator in the length; one at the end is accepted (its
    # absence too), any other NUL is a string that says two things.
    text = data[:-1] if data.endswith(b"\x00") else data
    for position, byte in enumerate(text):
        if byte == 0:
            raise DapError(f"{where}: a NUL at byte {position} inside the string")
        if not 0x20 <= byte <= 0x7E:
            raise DapError(f"{where}: byte {byte:#04x} at {position} is not printable ASCII")
    return text.decode("ascii")


def encode_connect(port: int = PORT_SWD) -> bytes:
    if port not in (0, PORT_SWD, PORT_JTAG):
        raise DapError(f"DAP_Connect port {port!r}: expected 0 (default), 1 (SWD) or 2 (JTAG)")
    return bytes([CONNECT, port])


def decode_connect(response: bytes) -> int:
    """The port the probe connected (1 SWD, 2 JTAG), or 0: it failed."""
    (port,) = _body(CONNECT, response, 2)
    if port not in PORTS:
        raise DapError(f"DAP_Connect response: port {port:#04x}, not 0 (failed), 1 (SWD) or 2 (JTAG)")
    return port


def encode_disconnect() -> bytes:
    return bytes([DISCONNECT])


def encode_swj_clock(hz: int) -> bytes:
    if not isinstance(hz, int) or hz <= 0:
        raise DapError(f"DAP_SWJ_Clock frequency {hz!r}: expected a positive number of Hz")
    return struct.pack("<BI", SWJ_CLOCK, _u32(hz, "DAP_SWJ_Clock frequency"))


def encode_swj_sequence(bit_count: int, data: bytes) -> bytes:
    """Clock out `bit_count` bits (1..256) of `data`, least significant bit of each byte first."""
    if not isinstance(bit_count, int) or not 1 <= bit_count <= 256:
        raise DapError(f"DAP_SWJ_Sequence bit count {bit_count!r}: expected 1..256")
    if len(data) != (bit_count + 7) // 8:
        raise DapError(f"DAP_SWJ_Sequence: {bit_count} bits need {(bit_count + 7) // 8} bytes, got {len(data)}")
    return bytes([SWJ_SEQUENCE, bit_count % 256]) + bytes(data)


def encode_transfer_configure(idle_cycles: int, wait_retry: int, match_retry: int) -> bytes:
    return struct.pack("<BBHH", TRANSFER_CONFIGURE, _u8(idle_cycles, "idle cycles"),
                       _u16(wait_retry, "WAIT retry count"), _u16(match_retry, "match retry count"))


def encode_write_abort(value: int, dap_index: int = 0) -> bytes:
    return struct.pack("<BBI", WRITE_ABORT, _u8(dap_index, "DAP index"), _u32(value, "ABORT value"))


# --- transfers ---


@dataclass(frozen=True)
class TransferRequest:
    """One DP or AP register access. `register` is A[3:2] (0x0, 0x4, 0x8 or 0xC); the AP bank
    comes from DP SELECT. A write carries its value; a read has none."""

    ap: bool
    read: bool
    register: int
    value: int | None = None

    def __post_init__(self) -> None:
        if self.register not in (0x0, 0x4, 0x8, 0xC):
            raise DapError(f"transfer register {self.register!r}: expected 0x0, 0x4, 0x8 or 0xC")
        if self.read and self.value is not None:
            raise DapError(f"a read of register {self.register:#x} carries a value ({self.value!r})")
        if not self.read:
            if self.value is None:
                raise DapError(f"a write of register {self.register:#x} without a value")
            _u32(self.value, f"the value written to register {self.register:#x}")

    @property
    def request_byte(self) -> int:
        return (_AP if self.ap else 0) | (_READ if self.read else 0) | self.register

    def __str__(self) -> str:
        port = "AP" if self.ap else "DP"
        return f"{port} {'read' if self.read else 'write'} {self.register:#x}"


@dataclass(frozen=True)
class TransferResult:
    count: int             # transfers the probe completed (the first `count` of those asked)
    ack: int               # the last acknowledge: 1 OK, 2 WAIT, 4 FAULT, 7 NO_ACK
    protocol_error: bool   # an SWD parity or framing error
    values: tuple[int, ...]  # one u32 per completed read, in the order of the reads

    @property
    def ok(self) -> bool:
        return self.ack == ACK_OK and not self.protocol_error

    @property
    def ack_name(self) -> str:
        return ack_name(self.ack)


def ack_name(ack: int) -> str:
    return ACK_NAMES.get(ack, f"invalid ack {ack:#05b}")


def encode_transfer(requests: Sequence[TransferRequest], dap_index: int = 0) -> bytes:
    if not 1 <= len(requests) <= MAX_TRANSFERS:
        raise DapError(f"DAP_Transfer: {len(requests)} requests, expected 1..{MAX_TRANSFERS}")
    out = bytearray([TRANSFER, _u8(dap_index, "DAP index"), len(requests)])
    for request in requests:
        out.append(request.request_byte)
        if not request.read:
            out += struct.pack("<I", request.value)
    return bytes(out)


def _response_byte(response: int, where: str) -> tuple[int, bool]:
    if response & _MISMATCH:
        raise DapError(f"{where}: a value mismatch (bit 4) for a transfer that asked no value match")
    if response & ~(_ACK_MASK | _PROTOCOL_ERROR):
        raise DapError(f"{where}: response byte {response:#04x} sets reserved bits 5-7")
    return response & _ACK_MASK, bool(response & _PROTOCOL_ERROR)


def _expected_reads(requests: Sequence[TransferRequest], count: int, ok: bool) -> set[int]:
    """How many read values a probe that completed `count` requests may return.

    The reference firmware posts AP reads: an AP read's value arrives with the next access (or
    a closing RDBUFF read), so when a transfer fails right after an AP read, that read counts
    as completed while its value may be lost.
    """
    reads = sum(1 for r in requests[:count] if r.read)
    if ok:
        return {reads}
    pending = count > 0 and requests[count - 1].read and requests[count - 1].ap
    return {reads, reads - 1} if pending else {reads}


def decode_transfer(response: bytes, requests: Sequence[TransferRequest]) -> TransferResult:
    """The outcome of a DAP_Transfer of `requests`: how many completed, the last ack, the reads."""
    body = _body(TRANSFER, response)
    where = "DAP_Transfer response"
    if len(body) < 2:
        raise DapError(f"{where}: {len(response)} bytes, too few for its count and response byte")
    count, response_byte = body[0], body[1]
    ack, protocol_error = _response_byte(response_byte, where)
    if count > len(requests):
        raise DapError(f"{where}: {count} transfers completed, but {len(requests)} were asked")
    ok = ack == ACK_OK and not protocol_error
    if ok and count != len(requests):
        raise DapError(f"{where}: ack OK after {count} of {len(requests)} transfers: the probe stopped "
                       f"without a reason")
    if not ok and count == len(requests):
        last = requests[-1] if requests else None
        # only the closing RDBUFF of a posted AP read or the check of the last write can fail now
        if last is None or (last.read and not last.ap):
            raise DapError(f"{where}: all {count} transfers completed, yet the ack is {ack_name(ack)}")
    data = body[2:]
    if len(data) % 4:
        raise DapError(f"{where}: {len(data)} bytes of read data, not whole 32-bit words")
    values = struct.unpack(f"<{len(data) // 4}I", data)
    allowed = _expected_reads(requests, count, ok)
    if len(values) not in allowed:
        raise DapError(f"{where}: {len(values)} read values after {count} completed transfers, expected "
                       f"{' or '.join(map(str, sorted(allowed)))}")
    return TransferResult(count=count, ack=ack, protocol_error=protocol_error, values=values)


def encode_transfer_block(ap: bool, read: bool, register: int, count: int | None = None,
                          values: Sequence[int] = (), dap_index: int = 0) -> bytes:
    """`count` reads, or one write per value, of one register (typically AP DRW with TAR auto-increment)."""
    TransferRequest(ap=ap, read=True, register=register)  # validates the register
    if read:
        if values:
            raise DapError("DAP_TransferBlock: a block read carries no values")
        n = count
    else:
        if count is not None and count != len(values):
            raise DapError(f"DAP_TransferBlock: count {count} but {len(values)} values to write")
        n = len(values)
    if not isinstance(n, int) or not 1 <= n <= MAX_BLOCK_TRANSFERS:
        raise DapError(f"DAP_TransferBlock: {n!r} transfers, expected 1..{MAX_BLOCK_TRANSFERS}")
    request = (_AP if ap else 0) | (_READ if read else 0) | register
    out = struct.pack("<BBHB", TRANSFER_BLOCK, _u8(dap_index, "DAP index"), n, request)
    return out + b"".join(struct.pack("<I", _u32(v, "block write value")) for v in values)


def decode_transfer_block(response: bytes, read: bool, count: int) -> TransferResult:
    """The outcome of a DAP_TransferBlock of `count` transfers: one value per completed read."""
    body = _body(TRANSFER_BLOCK, response)
    where = "DAP_TransferBlock response"
    if len(body) < 3:
        raise DapError(f"{where}: {len(response)} bytes, too few for its count and response byte")
    done, response_byte = struct.unpack_from("<HB", body)
    ack, protocol_error = _response_byte(response_byte, where)
    if done > count:
        raise DapError(f"{where}: {done} transfers completed, but {count} were asked")
    ok = ack == ACK_OK and not protocol_error
    if ok and done != count:
        raise DapError(f"{where}: ack OK after {done} of {count} transfers: the probe stopped without a reason")
    data = body[3:]
    expected = 4 * done if read else 0
    if len(data) != expected:
        raise DapError(f"{where}: {len(data)} bytes of data after {done} completed {'reads' if read else 'writes'}, "
                       f"expected {expected}")
    values = struct.unpack(f"<{len(data) // 4}I", data)
    return TransferResult(count=done, ack=ack, protocol_error=protocol_error, values=values)


# --- ADIv5 registers ---


def dp_select(ap: int, address: int) -> int:
    """The DP SELECT value that reaches AP register `address` (its bank) on access port `ap`."""
    _u8(ap, "access port number")
    if not isinstance(address, int) or not 0 <= address <= 0xFC or address % 4:
        raise DapError(f"AP register address {address!r}: expected a word address 0x00..0xFC")
    return ap << 24 | (address & 0xF0)


@dataclass(frozen=True)
class IdCode:
    version: int    # bits 31-28
    partno: int     # bits 27-12
    designer: int   # bits 11-1: JEP106 continuation count (4 bits) and identity code (7 bits)
    raw: int
    dp_version: int = 1  # DPIDR bits 15-12: the DP architecture version (1 DPv1, 2 DPv2, 3 DPv3)

    @property
    def designer_name(self) -> str:
        return "Arm" if self.designer == ARM_DESIGNER else f"JEP106 {self.designer:#05x}"


def _jep106(designer: int, what: str, raw: int) -> None:
    if designer & 0x7F == 0x7F:
        raise DapError(f"{what} {raw:#010x}: designer identity 0x7F is JEP106's continuation code, no maker")


def decode_idcode(value: int) -> IdCode:
    """DP IDCODE (DPIDR). Bit 0 reads as 1 on every debug port; 0 or a floating bus is DapError."""
    _u32(value, "DP IDCODE")
    if not value & 1:
        raise DapError(f"DP IDCODE {value:#010x}: bit 0 is 0 (it reads as one on every debug port)")
    designer = (value >> 1) & 0x7FF
    _jep106(designer, "DP IDCODE", value)
    # Read over SWD it is an SW-DP's DPIDR (ADIv5.2 §2.3.5): VERSION (bits 15-12) DPv1 or later, as
    # DPv0 is JTAG-DP only; bits 19-17 RES0. A JTAG-DP's IDCODE (e.g. 0x4ba00477) is no SW-DP's answer.
    dp_version = (value >> 12) & 0xF
    if dp_version not in (1, 2, 3):
        raise DapError(f"DP IDCODE {value:#010x}: DPIDR version {dp_version} is no SW-DP's (DPv1, DPv2 or DPv3; "
                       f"DPv0 is JTAG-DP only)")
    if value & 0xE0000:
        raise DapError(f"DP IDCODE {value:#010x}: DPIDR bits 19-17 are reserved (RES0) and set")
    return IdCode(version=value >> 28, partno=(value >> 12) & 0xFFFF, designer=designer, raw=value,
                  dp_version=dp_version)


@dataclass(frozen=True)
class ApIdr:
    revision: int   # bits 31-28
    designer: int   # bits 27-17 (JEP106)
    ap_class: int   # bits 16-13 (0x8: MEM-AP)
    variant: int    # bits 7-4
    ap_type: int    # bits 3-0 (MEM-AP: 1 AHB, 2 APB, 4 AXI, ...)
    raw: int

    @property
    def present(self) -> bool:
        """An IDR of 0 means no access port at that number."""
        return self.raw != 0

    @property
    def is_mem_ap(self) -> bool:
        return self.ap_class == AP_CLASS_MEM

    @property
    def type_name(self) -> str:
        if not self.present:
            return "no AP"
        if not self.is_mem_ap:
            return "JTAG-AP" if self.ap_type == 0 and self.ap_class == 0 else f"class {self.ap_class:#x} AP"
        return AP_TYPES.get(self.ap_type, f"MEM-AP type {self.ap_type:#x}")


def decode_ap_idr(value: int) -> ApIdr:
    """AP IDR (register 0xFC). 0 is "no AP here" (ApIdr.present False); reserved bits 12-8 set is DapError."""
    _u32(value, "AP IDR")
    if value & 0x1F00:
        raise DapError(f"AP IDR {value:#010x}: reserved bits 12-8 are set")
    designer = (value >> 17) & 0x7FF
    if value:
        _jep106(designer, "AP IDR", value)
    return ApIdr(revision=value >> 28, designer=designer, ap_class=(value >> 13) & 0xF, variant=(value >> 4) & 0xF,
                 ap_type=value & 0xF, raw=value)
