"""The simulated USB device (fixtures/sim/usb.py), driven with raw USB/IP bytes written here.

The expected bytes are spelled out from USB 2.0 chapter 9, the kernel's USB/IP protocol page and the
CMSIS-DAP / ADIv5 references, not computed with the simulator's own encoders: the simulator is the
independent device the harness is tested against, and these tests pin what it puts on the wire.
"""

from __future__ import annotations

import hashlib
import json
import signal
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fixtures.sim import usb as sim_usb
from fixtures.sim.__main__ import load_profile

ROOT = Path(__file__).resolve().parent.parent
VERSION = 0x0111
DEVID = (1 << 16) | 2

# --- a minimal USB/IP client, written from the protocol page ---


def _recv_exactly(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise EOFError(f"server closed after {len(data)} of {n} bytes")
        data += chunk
    return data


def _connect(path: str) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(2.0)
    sock.connect(path)
    return sock


def _closed_by_server(sock: socket.socket) -> bool:
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True


class Client:
    """One imported device: submit URBs, read their returns."""

    def __init__(self, path: str, busid: bytes = b"1-1"):
        self.sock = _connect(path)
        self.sock.sendall(struct.pack(">HHI32s", VERSION, 0x8003, 0, busid))
        self.reply = _recv_exactly(self.sock, 8)
        self.status = struct.unpack(">I", self.reply[4:])[0]
        self.device = _recv_exactly(self.sock, 312) if self.status == 0 else b""
        self.seqnum = 0
        self.directions: dict[int, int] = {}

    def close(self) -> None:
        self.sock.close()

    def submit(self, direction: int, ep: int, length: int, setup: bytes = bytes(8), data: bytes = b"") -> int:
        self.seqnum += 1
        self.directions[self.seqnum] = direction
        self.sock.sendall(struct.pack(">IIIIIIiiii", 1, self.seqnum, DEVID, direction, ep, 0, length, 0, -1, 0)
                          + setup + data)
        return self.seqnum

    def ret(self) -> tuple[int, int, int, bytes]:
        """(command, seqnum, status, data) of the next return."""
        header = _recv_exactly(self.sock, 48)
        command, seqnum, devid, direction, ep, status, actual = struct.unpack_from(">IIIIIii", header)
        assert (devid, direction, ep) == (0, 0, 0)
        if command == 4:
            return command, seqnum, status, b""
        assert command == 3
        came_in = self.directions.pop(seqnum) == 1  # IN data follows RET_SUBMIT; OUT data went with the URB
        return command, seqnum, status, _recv_exactly(self.sock, actual) if came_in else b""

    def control_in(self, request_type: int, request: int, value: int, index: int, length: int) -> tuple[int, bytes]:
        seqnum = self.submit(1, 0, length, struct.pack("<BBHHH", request_type, request, value, index, length))
        command, got, status, data = self.ret()
        assert (command, got) == (3, seqnum)
        return status, data

    def control_out(self, request_type: int, request: int, value: int, index: int) -> int:
        seqnum = self.submit(0, 0, 0, struct.pack("<BBHHH", request_type, request, value, index, 0))
        command, got, status, _ = self.ret()
        assert (command, got) == (3, seqnum)
        return status

    def descriptor(self, kind: int, index: int = 0, length: int = 255, langid: int = 0) -> tuple[int, bytes]:
        return self.control_in(0x80, 6, kind << 8 | index, langid, length)

    def dap(self, request: bytes) -> bytes:
        out = self.submit(0, 1, len(request), data=request)
        assert self.ret()[:3] == (3, out, 0)
        into = self.submit(1, 1, 512)
        command, seqnum, status, data = self.ret()
        assert (command, seqnum, status) == (3, into, 0)
        return data


class _Servers:
    """One simulated device per profile, started on first use and stopped at the end of the module."""

    def __init__(self, tmp_path_factory):
        self.tmp_path_factory = tmp_path_factory
        self.started: dict[str, tuple[dict, object]] = {}

    def __call__(self, profile: str) -> str:
        if profile not in self.started:
            self.started[profile] = sim_usb.start(load_profile(profile), self.tmp_path_factory.mktemp(profile))
        settings_, _ = self.started[profile]
        assert settings_["usbip"].startswith("unix:")
        return settings_["usbip"][len("unix:"):]

    def errors(self, profile: str) -> list[str]:
        return self.started[profile][1].server.internal_errors

    def stop(self) -> None:
        for _, stop in self.started.values():
            stop()


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    started = _Servers(tmp_path_factory)
    yield started
    assert all(not started.errors(profile) for profile in started.started)
    started.stop()


@pytest.fixture
def clean(servers):
    client = Client(servers("clean"))
    yield client
    client.close()


# --- the wire bytes, spelled out ---

DEVICE = bytes.fromhex("12 01 1002 00 00 00 40 5509 10cf 0001 01 02 03 01")
CONFIG_CLEAN = bytes.fromhex(
    "09 02 3000 02 01 04 c0 32"
    "09 04 00 00 01 ff 01 01 05" "07 05 83 03 4000 08"
    "09 04 01 00 02 ff 00 00 06" "07 05 01 02 0002 00" "07 05 81 02 0002 00")
CDC_ECM = bytes.fromhex(
    "08 0b 02 02 02 06 00 07"                 # IAD: interfaces 2-3, CDC-ECM, "CDC Ethernet"
    "09 04 02 00 01 02 06 00 09"              # ECM control interface
    "05 24 00 2001"                           # header, bcdCDC 1.20
    "05 24 06 02 03"                          # union: control 2, data 3
    "0d 24 0f 08 00000000 ea05 0000 00"       # ethernet networking: iMACAddress 8, 1514-byte segments
    "07 05 84 03 1000 08"                     # interrupt IN 0x84
    "09 04 03 00 00 0a 00 00 0a"              # data interface, alt 0: no endpoints
    "09 04 03 01 02 0a 00 00 0a"              # alt 1: bulk IN 0x85, bulk OUT 0x05
    "07 05 85 02 0002 00" "07 05 05 02 0002 00")
BOS = bytes.fromhex("05 0f 0c00 01" "07 10 02 02000000")
STRINGS_CLEAN = ["NVIDIA Corporation", "HGX H100 HMC USB (simulated)", "1752624021081", "production",
                 "HMC management", "CMSIS-DAP v2"]
SEED_CLEAN = "attestlab-sim-root-key-1"


def _string(text: str) -> bytes:
    encoded = text.encode("utf-16-le")
    return bytes([len(encoded) + 2, 3]) + encoded


def _probe_socket(path: str) -> str:
    return str(Path(path).with_name(sim_usb.PROBE_SOCKET))


def _devlist(path: str) -> bytes:
    sock = _connect(path)
    sock.sendall(struct.pack(">HHI", VERSION, 0x8005, 0))
    data = b""
    while chunk := sock.recv(4096):
        data += chunk
    sock.close()
    return data


# --- OP_REQ_DEVLIST / OP_REQ_IMPORT ---


def test_devlist_announces_the_board_and_the_labs_debug_probe(servers):
    data = _devlist(servers("clean"))
    assert data[:12] == struct.pack(">HHII", VERSION, 0x0005, 0, 1)  # the board's socket: the board alone
    path, busid, busnum, devnum, speed, vid, pid, bcd, cls, sub, proto, config, nconfigs, ninterfaces = \
        struct.unpack_from(">256s32sIIIHHHBBBBBB", data, 12)
    assert path.rstrip(b"\0") == b"/sys/devices/platform/sim-usb/usb1/1-1" and busid.rstrip(b"\0") == b"1-1"
    assert (busnum, devnum, speed, vid, pid, bcd) == (1, 2, 3, 0x0955, 0xCF10, 0x0100)
    assert (cls, sub, proto, config, nconfigs, ninterfaces) == (0, 0, 0, 1, 1, 2)
    assert data[12 + 312:] == bytes.fromhex("ff010100" "ff000000")  # then the server hangs up
    # The lab's own CMSIS-DAP probe (DAPLink's VID:PID, one vendor interface), on a socket of its own
    data = _devlist(_probe_socket(servers("clean")))
    assert data[:12] == struct.pack(">HHII", VERSION, 0x0005, 0, 1)
    probe = 12
    path, busid, busnum, devnum, speed, vid, pid = struct.unpack_from(">256s32sIIIHH", data, probe)
    assert path.rstrip(b"\0") == b"/sys/devices/platform/sim-usb/usb1/1-2" and busid.rstrip(b"\0") == b"1-2"
    assert (busnum, devnum, speed, vid, pid) == (1, 3, 3, 0x0D28, 0x0204)
    assert data[probe + 312:] == bytes.fromhex("ff000000")  # then the server hangs up


def test_devlist_of_hidden_netif_names_the_network_interfaces(servers):
    data = _devlist(servers("hidden-netif"))
    assert data[12 + 311] == 4
    assert data[12 + 312:12 + 328] == bytes.fromhex("ff010100" "ff000000" "02060000" "0a000000")


def test_import_answers_the_device_and_refuses_a_second_importer(servers):
    path = servers("clean")
    first = Client(path)
    assert first.reply == struct.pack(">HHI", VERSION, 0x0003, 0)
    assert first.device == _devlist(path)[12:12 + 312]
    second = Client(path)
    assert second.status == 1 and _closed_by_server(second.sock)
    unknown = Client(path, busid=b"2-7")
    assert unknown.status == 1
    first.close()
    again = _wait_for_import(path)  # the device is free again once its importer hangs up
    assert again.descriptor(1)[1] == DEVICE
    again.close()


def _wait_for_import(path: str) -> Client:
    for _ in range(200):  # the server notices a closed importer on its next loop turn
        client = Client(path)
        if client.status == 0:
            return client
        client.close()
        time.sleep(0.005)
    raise AssertionError("the device stayed imported after its importer closed")


# --- ep 0: standard requests ---


def test_device_configuration_and_bos_descriptors_are_the_products(clean):
    assert clean.descriptor(1, length=64) == (0, DEVICE)
    assert clean.descriptor(2, length=9) == (0, CONFIG_CLEAN[:9])  # the host asks 9 bytes, then wTotalLength
    assert clean.descriptor(2, length=255) == (0, CONFIG_CLEAN)
    assert clean.descriptor(0x0F, length=5) == (0, BOS[:5])
    assert clean.descriptor(0x0F, length=12) == (0, BOS)
    assert clean.descriptor(2, index=1)[0] == -32  # one configuration only
    # what it is at full speed: the device qualifier and its configuration as type 7, bulk at 64 bytes
    assert clean.descriptor(6) == (0, struct.pack("<BBHBBBBBB", 10, 6, 0x0210, 0, 0, 0, 64, 1, 0))
    status, other_speed = clean.descriptor(7, length=255)
    assert status == 0 and other_speed[0:2] == b"\x09\x07" and other_speed[2:] != CONFIG_CLEAN[2:]
    assert clean.descriptor(0x0A)[0] == -32  # anything else stalls


def test_string_descriptors_name_the_product(clean):
    assert clean.descriptor(3, 0) == (0, bytes.fromhex("04 03 0904"))
    for index, text in enumerate(STRINGS_CLEAN, start=1):
        assert clean.descriptor(3, index, langid=0x0409) == (0, _string(text))
    assert clean.descriptor(3, len(STRINGS_CLEAN) + 1)[0] == -32
    assert clean.descriptor(3, 2, length=4) == (0, _string(STRINGS_CLEAN[1])[:4])


def test_hidden_netif_configuration_carries_a_cdc_ecm_function(servers):
    client = Client(servers("hidden-netif"))
    status, config = client.descriptor(2, length=1024)
    expected = bytes.fromhex("09 02 7f00 04 01 04 c0 32") + CONFIG_CLEAN[9:] + CDC_ECM
    assert (status, config) == (0, expected)
    assert client.descriptor(3, 8) == (0, _string("0242AC11A002"))
    assert client.descriptor(3, 9) == (0, _string("CDC Ethernet Control Model"))
    assert client.control_out(0x01, 11, 1, 3) == 0  # SET_INTERFACE data alt 1 exists here
    client.close()


def test_extra_configuration_hides_the_network_function_in_configuration_2(tmp_path):
    profile = load_profile("clean")
    profile["usb"]["extra_configuration"] = "cdc-ecm"
    settings_, stop = sim_usb.start(profile, tmp_path)
    try:
        client = Client(settings_["usbip"][len("unix:"):])
        assert client.device[309:] == bytes([1, 2, 2])  # configuration 1 active, 2 of them, 2 interfaces
        assert client.descriptor(1)[1][17] == 2
        assert client.descriptor(2, 0) == (0, CONFIG_CLEAN)
        # Configuration 2 ("network", string 7): only the ECM function, from interface 0 (strings 8-11).
        assert client.descriptor(2, 1) == (0, bytes.fromhex(
            "09 02 5800 02 02 07 c0 32" "08 0b 00 02 02 06 00 08" "09 04 00 00 01 02 06 00 0a" "05 24 00 2001"
            "05 24 06 00 01" "0d 24 0f 09 00000000 ea05 0000 00" "07 05 84 03 1000 08"
            "09 04 01 00 00 0a 00 00 0b" "09 04 01 01 02 0a 00 00 0b" "07 05 85 02 0002 00" "07 05 05 02 0002 00"))
        assert client.descriptor(3, 7) == (0, _string("network"))
        assert client.descriptor(2, 2)[0] == -32
        assert client.control_out(0x00, 9, 2, 0) == 0
        assert client.control_in(0x80, 8, 0, 0, 1) == (0, b"\x02")
        out = client.submit(0, 1, 2, data=b"\x00\x01")  # no CMSIS-DAP in configuration 2
        assert client.ret()[:3] == (3, out, -32)
        client.close()
    finally:
        stop()


def test_standard_requests_answer_as_chapter_9_says(clean):
    assert clean.control_out(0x00, 9, 1, 0) == 0           # SET_CONFIGURATION 1
    assert clean.control_in(0x80, 8, 0, 0, 1) == (0, b"\x01")
    assert clean.control_out(0x00, 9, 2, 0) == -32          # no configuration 2
    assert clean.control_in(0x80, 0, 0, 0, 2) == (0, b"\x01\x00")  # self-powered
    assert clean.control_in(0x81, 0, 0, 1, 2) == (0, b"\x00\x00")
    assert clean.control_in(0x82, 0, 0, 0x81, 2) == (0, b"\x00\x00")
    assert clean.control_out(0x01, 11, 0, 1) == 0           # SET_INTERFACE 1 alt 0
    assert clean.control_out(0x01, 11, 1, 1) == -32         # no alt 1
    assert clean.control_out(0x02, 1, 0, 0x81) == 0         # CLEAR_FEATURE ENDPOINT_HALT
    assert clean.control_out(0x40, 0x77, 0, 0) == -32       # an unknown vendor request stalls
    assert clean.control_in(0xC1, 0x5A, 1, 0, 64)[0] == -32  # the security request with another wValue


# --- the vendor security-state request ---


@pytest.mark.parametrize("profile, lifecycle, flags, seed", [
    ("clean", 2, 0x03, SEED_CLEAN),
    ("debug-unlocked", 2, 0x03, SEED_CLEAN),  # claims the debug-lock fuse although SWD reads memory
    ("dev-lifecycle", 1, 0x02, SEED_CLEAN),
    ("wrong-root-key", 2, 0x03, "attestlab-sim-root-key-rogue"),
])
def test_security_state_reports_lifecycle_fuses_and_root_key(servers, profile, lifecycle, flags, seed):
    client = Client(servers(profile))
    status, data = client.control_in(0xC1, 0x5A, 0, 0, 64)
    assert status == 0
    assert data == bytes([1, lifecycle, flags, 0]) + hashlib.sha256(seed.encode()).digest()
    client.close()


# --- CMSIS-DAP v2 and the SWD target ---

LINE_RESET = bytes([0x12, 56]) + b"\xff" * 7
SWITCH = bytes([0x12, 16]) + struct.pack("<H", 0xE79E)
IDLE = bytes([0x12, 8, 0x00])


def _transfer(*requests: tuple[int, int | None]) -> bytes:
    body = b"".join(bytes([request]) + (b"" if value is None else struct.pack("<I", value))
                    for request, value in requests)
    return bytes([0x05, 0, len(requests)]) + body


def _words(*values: int) -> bytes:
    return b"".join(struct.pack("<I", v) for v in values)


def _swd_up(client: Client) -> None:
    """Connect, switch the port to SWD, read IDCODE, power up the debug domain."""
    assert client.dap(bytes([0x02, 1])) == bytes([0x02, 1])
    assert client.dap(bytes([0x04, 0]) + struct.pack("<HH", 100, 0)) == b"\x04\x00"
    for sequence in (LINE_RESET, SWITCH, LINE_RESET, IDLE):
        assert client.dap(sequence) == b"\x12\x00"
    assert client.dap(_transfer((0x02, None))) == b"\x05\x01\x01" + _words(0x2BA01477)
    assert client.dap(_transfer((0x04, 0x50000000), (0x06, None))) == b"\x05\x02\x01" + _words(0xF0000000)


def test_dap_info_identifies_the_probe(clean):
    assert clean.dap(b"\x00\x01") == b"\x00\x13" + b"NVIDIA Corporation\x00"
    assert clean.dap(b"\x00\x02") == b"\x00\x23" + b"HGX H100 HMC CMSIS-DAP (simulated)\x00"
    assert clean.dap(b"\x00\x03") == b"\x00\x0e" + b"1752624021081\x00"
    assert clean.dap(b"\x00\x04") == b"\x00\x06" + b"2.1.1\x00"
    assert clean.dap(b"\x00\xf0") == b"\x00\x01\x01"          # capabilities: SWD
    assert clean.dap(b"\x00\xfe") == b"\x00\x01\x04"          # packet count
    assert clean.dap(b"\x00\xff") == b"\x00\x02\x00\x02"      # packet size 512
    assert clean.dap(b"\x00\x07") == b"\x00\x00"              # nothing to say
    assert clean.dap(b"\x01\x00\x01") == b"\x01\x00"          # HostStatus
    assert clean.dap(b"\x11" + struct.pack("<I", 1_000_000)) == b"\x11\x00"
    assert clean.dap(b"\x99") == b"\xff"                       # unknown command
    assert clean.dap(b"\x02\x02") == b"\x02\x00"               # JTAG: not this probe
    assert clean.dap(b"\x05\x00\x01\x02") == b"\x05\x00\x00"   # no transfer while disconnected


def test_locked_board_refuses_memory_access(clean):
    _swd_up(clean)
    # AP 0 IDR (bank 0xF, register 0xC), then back to bank 0: CSW reads with DeviceEn 0.
    assert clean.dap(_transfer((0x08, 0xF0), (0x0F, None), (0x08, 0), (0x03, None))) == \
        b"\x05\x04\x01" + _words(0x24770011, 0x23000002)
    # TAR, then DRW: FAULT; the sticky error then faults every AP access, while DP accesses answer.
    assert clean.dap(_transfer((0x05, 0), (0x0F, None))) == b"\x05\x01\x04"
    assert clean.dap(_transfer((0x03, None))) == b"\x05\x00\x04"
    assert clean.dap(_transfer((0x06, None))) == b"\x05\x01\x01" + _words(0xF0000020)  # STICKYERR
    assert clean.dap(b"\x06\x00\x04\x00\x0f") == b"\x06\x00\x00\x04"  # TransferBlock DRW: FAULT
    assert clean.dap(b"\x08\x00" + _words(0x04)) == b"\x08\x00"       # WriteABORT STKERRCLR
    assert clean.dap(_transfer((0x03, None))) == b"\x05\x01\x01" + _words(0x23000002)


def test_unlocked_board_reads_its_boot_rom(servers):
    client = Client(servers("debug-unlocked"))
    _swd_up(client)
    h1 = hashlib.sha256(b"attestlab-sim-boot-rom").digest()
    rom = h1 + hashlib.sha256(h1).digest()
    word = [struct.unpack_from("<I", rom, i)[0] for i in range(0, len(rom), 4)]
    # CSW DeviceEn 1 with single auto-increment; TAR 0; four DRW reads (each WAITs once, retried).
    assert client.dap(_transfer((0x01, 0x23000012), (0x03, None))) == b"\x05\x02\x01" + _words(0x23000052)
    assert client.dap(_transfer((0x05, 0), (0x0F, None), (0x0F, None))) == b"\x05\x03\x01" + _words(*word[:2])
    assert client.dap(_transfer((0x0E, None))) == b"\x05\x01\x01" + _words(word[1])  # RDBUFF: the last AP read
    assert client.dap(b"\x06\x00\x06\x00\x0f") == b"\x06\x06\x00\x01" + _words(*word[2:8])
    # With no WAIT retries the host sees the target's WAIT.
    assert client.dap(bytes([0x04, 0]) + struct.pack("<HH", 0, 0)) == b"\x04\x00"
    assert client.dap(_transfer((0x0F, None))) == b"\x05\x00\x02"
    client.close()


def test_swd_answers_only_after_the_switch_and_an_idcode_read(clean):
    assert clean.dap(bytes([0x02, 1])) == b"\x02\x01"
    assert clean.dap(_transfer((0x02, None))) == b"\x05\x00\x07"  # still JTAG: no ACK
    for sequence in (LINE_RESET, SWITCH, LINE_RESET, IDLE):
        clean.dap(sequence)
    assert clean.dap(_transfer((0x06, None))) == b"\x05\x00\x07"  # after a line reset: IDCODE first
    assert clean.dap(_transfer((0x02, None), (0x06, None))) == b"\x05\x02\x01" + _words(0x2BA01477, 0)
    assert clean.dap(_transfer((0x0F, None))) == b"\x05\x00\x04"  # AP before power-up: FAULT


def test_dap_in_submitted_first_waits_for_the_command(clean):
    into = clean.submit(1, 1, 512)
    out = clean.submit(0, 1, 2, data=b"\x00\xfe")
    assert clean.ret()[:3] == (3, out, 0)
    assert clean.ret() == (3, into, 0, b"\x00\x01\x04")
    short = clean.submit(0, 1, 2, data=b"\x00\x01")
    assert clean.ret()[:3] == (3, short, 0)
    into = clean.submit(1, 1, 4)  # a buffer too small for the answer: babble
    assert clean.ret() == (3, into, -75, b"\x00\x13NV")


# --- fault profiles ---


def test_bad_descriptor_profile_hides_a_zero_length_descriptor(servers):
    client = Client(servers("usb-bad-descriptor"))
    status, config = client.descriptor(2, length=255)
    # wTotalLength 50 counts the two bytes of a descriptor with bLength 0 after interface 0's descriptor.
    assert status == 0
    assert config == CONFIG_CLEAN[:2] + b"\x32\x00" + CONFIG_CLEAN[4:18] + b"\x00\x24" + CONFIG_CLEAN[18:]
    assert client.descriptor(1) == (0, DEVICE)
    client.close()


def test_stall_profile_stalls_the_security_request_only(servers):
    client = Client(servers("usb-stall"))
    assert client.control_in(0xC1, 0x5A, 0, 0, 64) == (-32, b"")
    assert client.descriptor(1) == (0, DEVICE)
    client.close()


def test_hang_profile_never_answers_and_honours_unlink(servers):
    client = Client(servers("usb-hang"))
    out = client.submit(0, 1, 2, data=b"\x00\x01")
    assert client.ret()[:3] == (3, out, 0)  # the command is taken...
    into = client.submit(1, 1, 512)
    client.sock.settimeout(0.3)
    with pytest.raises(TimeoutError):  # ...and never answered
        client.sock.recv(1)
    client.sock.settimeout(2.0)
    client.seqnum += 1
    client.sock.sendall(struct.pack(">IIIII", 2, client.seqnum, DEVID, 0, 1) + struct.pack(">I", into) + bytes(24))
    assert client.ret() == (4, client.seqnum, -104, b"")
    client.seqnum += 1  # unlinking a URB that already completed: status 0
    client.sock.sendall(struct.pack(">IIIII", 2, client.seqnum, DEVID, 0, 1) + struct.pack(">I", out) + bytes(24))
    assert client.ret() == (4, client.seqnum, 0, b"")
    assert client.descriptor(1) == (0, DEVICE)  # the device still answers ep 0; no late RET_SUBMIT came
    client.close()


def test_interrupt_endpoint_with_nothing_to_say_waits_until_unlinked(clean):
    pending = clean.submit(1, 3, 64)
    assert clean.descriptor(1) == (0, DEVICE)
    clean.seqnum += 1
    clean.sock.sendall(struct.pack(">IIIII", 2, clean.seqnum, DEVID, 0, 3) + struct.pack(">I", pending) + bytes(24))
    assert clean.ret() == (4, clean.seqnum, -104, b"")
    assert clean.submit(1, 7, 64) and clean.ret()[2] == -32  # no such endpoint: stall


def _clean_with(tmp_path, faults: dict):
    profile = load_profile("clean")
    profile["usb"]["faults"] = faults
    settings_, stop = sim_usb.start(profile, tmp_path)
    return settings_["usbip"][len("unix:"):], stop


def test_disconnect_fault_drops_the_device_at_the_security_request(tmp_path):
    path, stop = _clean_with(tmp_path, {"disconnect": ["security_state"]})
    try:
        client = Client(path)
        assert client.descriptor(1) == (0, DEVICE)
        client.submit(1, 0, 64, struct.pack("<BBHHH", 0xC1, 0x5A, 0, 0, 64))
        assert _closed_by_server(client.sock)
        client.close()
        assert _wait_for_import(path).descriptor(1) == (0, DEVICE)  # and comes back for the next importer
    finally:
        stop()


@pytest.mark.parametrize("kind, answer", [("wrong-id", b"\x80\x01\x04"), ("truncated", b"\x00\x01")])
def test_dap_reply_faults_answer_lies(tmp_path, kind, answer):
    path, stop = _clean_with(tmp_path, {"dap_reply": kind})
    try:
        client = Client(path)
        assert client.dap(b"\x00\xfe") == answer
        client.close()
    finally:
        stop()


def test_usbip_reply_faults_break_the_protocol(tmp_path):
    path, stop = _clean_with(tmp_path, {"usbip_reply": "oversize"})
    try:
        client = Client(path)
        client.submit(1, 0, 18, struct.pack("<BBHHH", 0x80, 6, 0x100, 0, 18))
        header = _recv_exactly(client.sock, 48)
        assert struct.unpack_from(">Ii", header, 20) == (0, 34)  # 34 bytes for an 18-byte buffer
        client.close()
    finally:
        stop()
    path, stop = _clean_with(tmp_path / "seq", {"usbip_reply": "wrong-seqnum"})
    try:
        client = Client(path)
        sent = client.submit(1, 0, 18, struct.pack("<BBHHH", 0x80, 6, 0x100, 0, 18))
        assert struct.unpack_from(">I", _recv_exactly(client.sock, 48), 4)[0] == sent ^ 0x8000
        client.close()
    finally:
        stop()


def test_unknown_fault_names_are_refused(tmp_path):
    for faults in ({"stall": ["everything"]}, {"descriptor": "loop"}, {"dap_reply": "silly"},
                   {"usbip_reply": "x"}):
        profile = load_profile("clean")
        profile["usb"]["faults"] = faults
        with pytest.raises(ValueError, match="usb.faults"):
            sim_usb.start(profile, tmp_path)


# --- hostile clients ---


def test_a_client_that_submits_without_end_is_cut_off(clean):
    urbs = b"".join(struct.pack(">IIIIIIiiii", 1, seqnum, DEVID, 1, 3, 0, 64, 0, -1, 0) + bytes(8)
                    for seqnum in range(1, 301))  # interrupt INs the device never completes
    try:
        clean.sock.sendall(urbs)
    except (BrokenPipeError, ConnectionResetError):
        pass  # cut off while still sending
    assert _closed_by_server(clean.sock)


@pytest.mark.parametrize("garbage", [
    struct.pack(">HHI", 0x0106, 0x8005, 0),                         # another protocol version
    struct.pack(">HHI", VERSION, 0x1234, 0),                         # no such operation
])
def test_garbage_before_import_ends_that_connection_only(servers, garbage):
    path = servers("clean")
    sock = _connect(path)
    sock.sendall(garbage)
    assert _closed_by_server(sock)
    sock.close()
    assert _devlist(path)[:8] == struct.pack(">HHI", VERSION, 0x0005, 0)


@pytest.mark.parametrize("garbage", [
    struct.pack(">IIIII", 9, 1, DEVID, 0, 0) + bytes(28),                       # no such command
    struct.pack(">IIIIIIiiii", 1, 1, DEVID, 0, 1, 0, 1 << 30, 0, -1, 0) + bytes(8),  # absurd OUT length
    struct.pack(">IIIIIIiiii", 1, 1, DEVID, 0, 1, 0, 100, 0, -1, 0) + bytes(8) + b"\x00" * 10,  # cut mid-URB
])
def test_garbage_or_disconnect_after_import_frees_the_device(servers, garbage):
    path = servers("clean")
    client = Client(path)
    assert client.status == 0
    client.sock.sendall(garbage)
    client.sock.shutdown(socket.SHUT_WR)  # a client that goes away mid-URB, or after garbage
    assert _closed_by_server(client.sock)
    client.close()
    again = _wait_for_import(path)
    assert again.descriptor(1) == (0, DEVICE)
    again.close()


def _urb(command: int, direction: int, ep: int, length: int, setup: bytes, data: bytes) -> bytes:
    return struct.pack(">IIIIIIiiii", command, 7, DEVID, direction, ep, 0, length, 0, -1, 0) + setup + data


URBS = st.builds(_urb, st.sampled_from([1, 1, 1, 2, 3]), st.integers(0, 2), st.integers(0, 16),
                 st.integers(-2, 600), st.binary(min_size=8, max_size=8), st.binary(max_size=64))
SETUPS = st.builds(lambda t, r, v, i, n: struct.pack("<BBHHH", t, r, v, i, n),
                   st.sampled_from([0x00, 0x01, 0x02, 0x80, 0x81, 0x82, 0xC1, 0x41]),
                   st.integers(0, 12) | st.just(0x5A),
                   st.integers(0, 0xFFFF), st.integers(0, 0xFFFF), st.integers(0, 0xFFFF))
CONTROL = st.builds(lambda d, setup: _urb(1, d, 0, 64, setup, b"" if d else bytes(0)), st.integers(0, 1), SETUPS)
DAP = st.builds(lambda data: _urb(1, 0, 1, len(data), bytes(8), data) + _urb(1, 1, 1, 512, bytes(8), b""),
                st.binary(min_size=1, max_size=40))


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(noise=st.lists(st.binary(min_size=1, max_size=200) | URBS | CONTROL | DAP, min_size=1, max_size=6))
def test_any_bytes_from_an_importer_leave_the_device_serving(servers, noise):
    path = servers("debug-unlocked")
    client = _wait_for_import(path)
    client.sock.sendall(b"".join(noise))
    client.sock.shutdown(socket.SHUT_WR)
    try:
        while client.sock.recv(4096):  # whatever it answers, it then hangs up on a half-closed client
            pass
    except ConnectionResetError:
        pass
    client.close()
    again = _wait_for_import(path)
    assert again.descriptor(1) == (0, DEVICE)
    again.close()
    assert servers.errors("debug-unlocked") == []  # handled as a device would, not by the catch-all


def test_stop_closes_the_socket_and_joins(tmp_path):
    settings_, stop = sim_usb.start(load_profile("clean"), tmp_path)
    client = Client(settings_["usbip"][len("unix:"):])
    pending = client.submit(1, 3, 64)
    assert pending
    stop()
    assert _closed_by_server(client.sock)
    assert not (tmp_path / "usb" / "usbip.sock").exists()


def test_a_deep_workdir_gets_a_short_socket_path(tmp_path):
    deep = tmp_path / ("d" * 100)
    settings_, stop = sim_usb.start(load_profile("clean"), deep)
    path = settings_["usbip"][len("unix:"):]
    assert len(path) <= 107 and _devlist(path)[:8] == struct.pack(">HHI", VERSION, 0x0005, 0)
    stop()
    assert not Path(path).parent.exists()


def test_simulator_announces_usb_and_stops_on_sigterm(tmp_path):
    workdir = tmp_path / "board"
    proc = subprocess.Popen([sys.executable, "-m", "fixtures.sim", "--profile", "clean", "--workdir", str(workdir)],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        ready = workdir / "ready.json"
        deadline = time.monotonic() + 20
        while not ready.exists():
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read().decode()
            time.sleep(0.02)
        socket_path = (workdir / "usb" / "usbip.sock").resolve()
        usbip = f"unix:{socket_path}"
        assert json.loads(ready.read_text())["interfaces"]["usb"] == {
            "vid": 0x0955, "pid": 0xCF10, "serial": "1752624021081", "usbip": usbip, "busid": "1-1",
            "debug_probe": {"vid": 0x0D28, "pid": 0x0204, "serial": sim_usb.LAB_PROBE["serial"],
                            "usbip": f"unix:{_probe_socket(str(socket_path))}", "busid": "1-2"}}
        assert _devlist(str(socket_path))[:12] == struct.pack(">HHII", VERSION, 0x0005, 0, 1)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
        assert not socket_path.exists()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@settings(max_examples=150, deadline=None)
@given(commands=st.lists(st.binary(max_size=80), max_size=12), locked=st.booleans())
def test_probe_firmware_answers_any_command_bytes(commands, locked):
    firmware = sim_usb.DapFirmware({}, sim_usb.SwdTarget({"locked": locked, "memory_size": 0x100}))
    for request in [bytes([0x02, 1]), LINE_RESET[:], SWITCH, LINE_RESET, IDLE] + commands:
        answer = firmware.command(request)
        assert answer[:1] == request[:1] or answer == b"\xff"


# --- the lab's own debug probe (busid 1-2) beside the board's bridge, one SWD target behind both ---


def test_the_board_and_the_labs_probe_import_independently_and_share_one_swd_target(servers):
    path = servers("lying-debug-bridge")
    board, probe = Client(path, busid=b"1-1"), Client(_probe_socket(path), busid=b"1-2")
    assert (board.status, probe.status) == (0, 0)  # each device is imported on its own
    assert Client(path, busid=b"1-2").status == 1  # the board's server does not serve the lab's probe
    assert probe.device[256:256 + 3] == b"1-2" and struct.unpack_from(">IIIHH", probe.device, 288) == \
        (1, 3, 3, 0x0D28, 0x0204)
    again = Client(_probe_socket(path), busid=b"1-2")
    assert again.status == 1 and _closed_by_server(again.sock)  # busy per device
    status, device = probe.descriptor(1)
    assert status == 0 and struct.unpack_from("<HH", device, 8) == (0x0D28, 0x0204)
    assert probe.control_in(0xC1, 0x5A, 0, 0, 64)[0] == -32  # no security-state request: the lab's probe
    assert probe.dap(b"\x00\x02") == b"\x00\x1e" + b"DAPLink CMSIS-DAP (simulated)\x00"
    for client in (board, probe):
        _swd_up(client)
    h1 = hashlib.sha256(b"attestlab-sim-boot-rom").digest()
    # The board's bridge: CSW DeviceEn 0 and DRW FAULT, as a locked port answers ...
    assert board.dap(_transfer((0x01, 0x23000012), (0x03, None))) == b"\x05\x02\x01" + _words(0x23000012)
    assert board.dap(_transfer((0x05, 0), (0x0F, None))) == b"\x05\x01\x04"
    assert board.dap(b"\x08\x00" + _words(0x04)) == b"\x08\x00"  # STKERRCLR
    # ... while the lab's probe, on the same target, reads the boot ROM.
    assert probe.dap(_transfer((0x01, 0x23000012), (0x03, None))) == b"\x05\x02\x01" + _words(0x23000052)
    assert probe.dap(_transfer((0x05, 0), (0x0F, None))) == b"\x05\x02\x01" + _words(struct.unpack_from("<I", h1)[0])
    board.close()
    probe.close()
    assert servers.errors("lying-debug-bridge") == []
