"""The `usb` interface: pyusb over USB/IP to the simulated board, and the ways a server can misbehave.

The simulator (fixtures/sim/usb.py, an independent USB/IP implementation) serves the clean board in
one module-scoped instance. Protocol edge cases a well-behaved simulator never shows (a reply to a
URB never sent, garbage, a connection closed mid-URB, a server that answers nothing, not even the
unlink) come from a small fake server here, which speaks USB/IP through harness/formats/usbip.py.
"""

from __future__ import annotations

import hashlib
import shutil
import socket
import struct
import subprocess
import threading
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from fixtures.sim import usb as sim_usb
from fixtures.sim.__main__ import load_profile
from harness.formats import usb_descriptors as descriptors
from harness.formats import usbip
from harness.formats.pcap import read_capture
from harness.interfaces import opener
from harness.interfaces import usbip_backend
from harness.interfaces.usb import (CmsisDapLink, UsbTransferError, UsbUnavailable, open_usb)

VID, PID, SERIAL = 0x0955, 0xCF10, "1752624021081"
SECURITY_STATE = (0xC1, 0x5A, 0, 0, 64)


@pytest.fixture(autouse=True)
def short_unlink_grace(monkeypatch):
    monkeypatch.setattr(usbip_backend, "UNLINK_GRACE_S", 0.2)


def start_sim(name: str, workdir: Path):
    return sim_usb.start(load_profile(name), workdir)


@pytest.fixture(scope="module")
def clean(tmp_path_factory):
    settings_, stop = start_sim("clean", tmp_path_factory.mktemp("usb-clean"))
    port = open_usb({k: v for k, v in settings_.items() if k != "debug_probe"})  # the board's own device
    try:
        yield settings_, port
    finally:
        port.close()
        stop()


# ---------------------------------------------------------------------------------------------
# The simulated board through pyusb


def test_opener_is_registered_and_finds_the_board_by_vid_pid_serial(clean):
    settings_, port = clean
    assert opener("usb") is open_usb
    device = port.device()
    assert device.location == {"vid": VID, "pid": PID, "serial": SERIAL, "bus": 1, "address": 2, "path": "1-1",
                               "backend": f"usbip {settings_['usbip']}"}
    assert port.debug_probe() is device  # no debug_probe settings: the board's own device


def test_wrong_serial_says_what_was_found(tmp_path):
    settings_, stop = start_sim("clean", tmp_path)
    port = open_usb({**settings_, "serial": "000000000000"})
    try:
        with pytest.raises(UsbUnavailable, match=r"no USB device 0955:cf10 with serial '000000000000'.*"
                                                 r"found: 0955:cf10 serial '1752624021081' at 1-1"):
            port.device()
        with pytest.raises(UsbUnavailable, match=r"no USB device 0955:1234 .*found: 0955:cf10 at busid 1-1"):
            open_usb({**settings_, "pid": 0x1234, "busid": None}).device()
        assert open_usb(settings_).device().location["serial"] == SERIAL  # nothing held by the misses
    finally:
        port.close()
        stop()


def test_read_descriptors_in_full_match_the_profile(clean):
    _, port = clean
    profile = load_profile("clean")["usb"]
    raw = port.device().read_descriptors()
    device = descriptors.parse_device_descriptor(raw.device)
    assert (device.idVendor, device.idProduct, device.bcdDevice, device.bcdUSB) == (VID, PID, 0x0100, 0x0210)
    strings = {i: descriptors.parse_string(b) for i, b in raw.strings.items()}
    assert strings[device.iManufacturer] == profile["manufacturer"]
    assert strings[device.iProduct] == profile["product"]
    assert strings[device.iSerialNumber] == SERIAL
    assert descriptors.parse_langids(raw.langids) == (0x0409,)
    (config,) = [descriptors.parse_configuration(c) for c in raw.configurations]
    assert len(raw.configurations[0]) == config.wTotalLength
    assert strings[config.iConfiguration] == "production"
    declared = [(i["number"], i["class"], i["subclass"], i["protocol"], i["name"],
                 tuple(e["address"] for e in i["endpoints"])) for i in profile["interfaces"]]
    seen = [(i.bInterfaceNumber, i.bInterfaceClass, i.bInterfaceSubClass, i.bInterfaceProtocol,
             strings[i.iInterface], tuple(e.bEndpointAddress for e in i.endpoints)) for i in config.interfaces]
    assert seen == declared
    bos = descriptors.parse_bos(raw.bos)
    assert bos.capability(descriptors.USB2_EXTENSION) is not None


def test_enumerated_is_what_pyusb_built_from_the_parsed_descriptors(clean):
    _, port = clean
    assert [(i.configuration, i.number, i.alternate, i.cls, i.subclass, i.protocol, i.endpoints)
            for i in port.device().enumerated()] == [
        (1, 0, 0, 0xFF, 0x01, 0x01, ((0x83, 3, 64),)),
        (1, 1, 0, 0xFF, 0x00, 0x00, ((0x01, 2, 512), (0x81, 2, 512))),
    ]


def test_an_interface_pyusb_would_skip_quietly_makes_enumeration_fail(clean, monkeypatch):
    import usb.core
    real = usbip_backend.UsbipBackend.get_interface_descriptor

    def losing(self, dev, intf, alt, config):  # pyusb's walk swallows a USBError as "no more alternates"
        if intf == 1:
            raise usb.core.USBError("lost", None, 5)
        return real(self, dev, intf, alt, config)

    monkeypatch.setattr(usbip_backend.UsbipBackend, "get_interface_descriptor", losing)
    with pytest.raises(UsbUnavailable, match="declares 2 interfaces, pyusb enumerated 1"):
        clean[1].device().enumerated()


def test_vendor_security_state_request_reads_the_fused_state(clean):
    _, port = clean
    state = port.device().control_in(*SECURITY_STATE)
    assert len(state) == 36 and state[:4] == bytes([1, 2, 3, 0])
    assert state[4:] == hashlib.sha256(b"attestlab-sim-root-key-1").digest()


def test_cmsis_dap_link_bulk_write_and_read(clean):
    _, port = clean
    link = CmsisDapLink(port.debug_probe())
    assert (link.interface_number, link.out_endpoint, link.in_endpoint) == (1, 0x01, 0x81)
    answer = link.command(bytes([0x00, 0x04]))  # DAP_Info: protocol version
    assert answer[:2] == bytes([0x00, 6]) and answer[2:8] == b"2.1.1\0"


def test_unanswered_interrupt_read_times_out_is_unlinked_and_the_link_stays_usable(clean):
    _, port = clean
    device = port.device()
    started = time.monotonic()
    with pytest.raises(UsbTransferError, match="interrupt IN 0x83.*no answer within 300 ms") as caught:
        device.interrupt_read(0x83, 64, timeout_ms=300)
    assert caught.value.kind == "timeout"
    assert time.monotonic() - started < 0.3 + 5  # ended by its timeout, not by a hang
    assert len(device.control_in(*SECURITY_STATE)) == 36


def test_unknown_request_stalls_and_the_next_transfer_works(clean):
    _, port = clean
    device = port.device()
    with pytest.raises(UsbTransferError, match="stall") as caught:
        device.control_in(0xC1, 0x77, 0, 0, 64)
    assert caught.value.kind == "stall"
    assert len(device.control_in(*SECURITY_STATE)) == 36


def test_wrong_endpoint_or_transfer_type_is_refused_before_any_transfer(clean):
    _, port = clean
    with pytest.raises(UsbTransferError, match="no endpoint 0x82"):
        port.device().bulk_read(0x82, 64)
    with pytest.raises(UsbTransferError, match="0x83 is interrupt, not bulk"):
        port.device().bulk_read(0x83, 64)


def test_transfers_pcapng_decodes_in_tshark_failed_transfers_included(clean, tmp_path):
    _, port = clean
    device = port.device()
    device.control_in(*SECURITY_STATE)
    with pytest.raises(UsbTransferError):
        device.control_in(0xC1, 0x77, 0, 0, 64)
    data = device.transfers_pcapng()
    capture = read_capture(data)
    assert {p.linktype for p in capture.packets} == {220} and not capture.anomalies
    tshark = shutil.which("tshark")
    if tshark is None:
        pytest.skip("tshark is not installed (apt-get install tshark)")
    path = tmp_path / "usb.pcapng"
    path.write_bytes(data)
    out = subprocess.run([tshark, "-r", str(path), "-T", "fields", "-e", "usb.urb_type", "-e", "usb.setup.bRequest",
                          "-e", "usb.idVendor", "-e", "usb.urb_status"],
                         capture_output=True, text=True, timeout=60, check=True).stdout
    rows = [line.split("\t") for line in out.splitlines()]
    assert any(r[1] == "90" for r in rows)  # the vendor request 0x5A
    assert any(r[2] == "0x0955" for r in rows)  # the device descriptor's idVendor
    assert any(r[3] == "-32" for r in rows)  # the stall, recorded
    assert len(rows) == len(capture.packets)


def test_malformed_configuration_makes_the_device_unusable_with_the_parsers_reason(tmp_path):
    settings_, stop = start_sim("usb-bad-descriptor", tmp_path)
    port = open_usb({k: v for k, v in settings_.items() if k != "debug_probe"})  # the board's own device
    try:
        device = port.device()
        raw = device.read_descriptors()  # raw evidence still comes back whole
        with pytest.raises(descriptors.DescriptorError) as parsed:
            descriptors.parse_configuration(raw.configurations[0])
        with pytest.raises(UsbUnavailable, match="descriptors are malformed") as caught:
            device.enumerated()
        assert str(parsed.value) in str(caught.value)
        with pytest.raises(UsbUnavailable):
            CmsisDapLink(device)
    finally:
        port.close()
        stop()


def test_hanging_dap_response_times_out_and_a_stopped_server_is_a_disconnect(tmp_path):
    settings_, stop = start_sim("usb-hang", tmp_path)
    port = open_usb({**settings_, "timeout_ms": 300})
    try:
        link = CmsisDapLink(port.device())
        with pytest.raises(UsbTransferError) as caught:
            link.command(bytes([0x00, 0x04]))
        assert caught.value.kind == "timeout"
    finally:
        stop()
    try:
        with pytest.raises(UsbTransferError) as gone:
            port.device().control_in(*SECURITY_STATE)
        assert gone.value.kind == "disconnected"
    finally:
        port.close()


# ---------------------------------------------------------------------------------------------
# Settings, bench backend


@pytest.mark.parametrize("settings_, field", [
    ({"pid": PID, "serial": SERIAL}, "vid"),
    ({"vid": VID, "pid": 0x10000, "serial": SERIAL}, "pid"),
    ({"vid": VID, "pid": PID}, "serial"),
    ({"vid": VID, "pid": PID, "serial": SERIAL, "path": "usb1"}, "path"),
    ({"vid": VID, "pid": PID, "serial": SERIAL, "usbip": "http://x"}, "usbip"),
    ({"vid": VID, "pid": PID, "serial": SERIAL, "busid": "1-1"}, "busid"),
    ({"vid": VID, "pid": PID, "serial": SERIAL, "timeout_ms": 0}, "timeout_ms"),
    ({"vid": VID, "pid": PID, "serial": SERIAL, "speed": 3}, "unknown setting 'speed'"),
    ({"vid": VID, "pid": PID, "serial": SERIAL, "debug_probe": {"vid": VID, "pid": PID}}, "debug_probe.serial"),
])
def test_settings_errors_name_the_field(settings_, field):
    with pytest.raises(ValueError, match=field.replace(".", r"\.")):
        open_usb(settings_)


def test_bench_backend_loads_libusb_and_says_what_the_bus_holds():
    port = open_usb({"vid": VID, "pid": PID, "serial": SERIAL, "path": "1-4.2"})
    try:
        with pytest.raises(UsbUnavailable, match=r"no USB device 0955:cf10 with serial '1752624021081' at 1-4\.2 "
                                                 r"through libusb1; found: "):
            port.device()
    finally:
        port.close()


def test_missing_libusb_names_the_package_to_install(monkeypatch):
    import usb.backend.libusb1
    monkeypatch.setattr(usb.backend.libusb1, "get_backend", lambda *a, **k: None)
    port = open_usb({"vid": VID, "pid": PID, "serial": SERIAL})
    with pytest.raises(UsbUnavailable, match="libusb-1.0-0.*libusb-package"):
        port.device()


def test_unreachable_server_is_unavailable_naming_it(tmp_path):
    port = open_usb({"vid": VID, "pid": PID, "serial": SERIAL, "usbip": f"unix:{tmp_path}/none.sock"})
    with pytest.raises(UsbUnavailable, match=f"cannot reach the USB/IP server unix:{tmp_path}/none.sock"):
        port.device()


# ---------------------------------------------------------------------------------------------
# A fake USB/IP server for what a well-behaved simulator never does


def _device_descriptor(vid: int = VID, pid: int = PID) -> bytes:
    return struct.pack("<BBHBBBBHHHBBBB", 18, 1, 0x0200, 0, 0, 0, 64, vid, pid, 0x0100, 0, 0, 3, 1)


def _string(text: str) -> bytes:
    raw = text.encode("utf-16-le")
    return bytes([2 + len(raw), 3]) + raw


_CONFIG = (struct.pack("<BBHBBBBB", 9, 2, 32, 1, 1, 0, 0xC0, 50)
           + bytes([9, 4, 0, 0, 2, 0xFF, 0, 0, 0])
           + bytes([7, 5, 0x01, 2, 0x00, 0x02, 0]) + bytes([7, 5, 0x81, 2, 0x00, 0x02, 0]))


class FakeServer:
    """USB/IP on a Unix socket: a minimal device (serial `serial`) on ep 0; `misbehave(cmd, data, conn)`
    decides every other URB (vendor requests, bulk). `answer_unlink`: whether CMD_UNLINK is answered."""

    def __init__(self, path: Path, misbehave, answer_unlink: bool = True, busids=("1-1",),
                 listed_pid: int = PID, config: bytes = _CONFIG, strings: dict[int, str] | None = None) -> None:
        self.path, self.misbehave, self.answer_unlink = path, misbehave, answer_unlink
        self.descriptors = {0x0100: _device_descriptor(), 0x0200: config, 0x0300: bytes([4, 3, 0x09, 0x04]),
                            **{0x0300 | i: _string(text) for i, text in {3: SERIAL, **(strings or {})}.items()}}
        self.busids, self.listed_pid = busids, listed_pid
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(str(path))
        self.sock.listen(8)
        self.conns: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def settings(self) -> dict:
        return {"vid": VID, "pid": PID, "serial": SERIAL, "usbip": f"unix:{self.path}", "timeout_ms": 300}

    def exported(self, busid: str) -> usbip.ExportedDevice:
        return usbip.ExportedDevice(f"/sys/devices/fake/{busid}", busid, 1, 2 + self.busids.index(busid), 3, VID,
                                    self.listed_pid, 0x0100, 0, 0, 0, 1, 1, 1, ((0xFF, 0, 0),))

    def close(self) -> None:
        for conn in [self.sock, *self.conns]:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            conn.close()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    @staticmethod
    def _recv(conn: socket.socket, size: int) -> bytes:
        data = b""
        while len(data) < size:
            chunk = conn.recv(size - len(data))
            if not chunk:
                raise EOFError
            data += chunk
        return data

    def _serve(self, conn: socket.socket) -> None:
        try:
            _version, code, _status = struct.unpack(">HHI", self._recv(conn, 8))
            if code == usbip.OP_REQ_DEVLIST:
                conn.sendall(usbip.pack_rep_devlist([self.exported(b) for b in self.busids]))
                return
            busid = usbip.unpack_req_import(self._recv(conn, 32))
            conn.sendall(usbip.pack_op_header(usbip.OP_REP_IMPORT) + usbip.pack_device(self.exported(busid)))
            while True:
                cmd = usbip.unpack_urb_header(self._recv(conn, 48))
                if isinstance(cmd, usbip.CmdUnlink):
                    if self.answer_unlink:
                        conn.sendall(usbip.pack_ret_unlink(cmd.seqnum, -104))
                    continue
                data = self._recv(conn, cmd.transfer_buffer_length) if cmd.direction == usbip.DIR_OUT else b""
                answer = self._standard(cmd)
                if answer is not None:
                    answer = answer[:cmd.transfer_buffer_length]
                    conn.sendall(usbip.pack_ret_submit(cmd.seqnum, 0, len(answer), answer))
                else:
                    self.misbehave(cmd, data, conn)
        except (EOFError, OSError):
            pass

    def _standard(self, cmd: usbip.CmdSubmit) -> bytes | None:
        if cmd.ep != 0:
            return None
        request_type, request, value, _index, _length = usbip.unpack_setup(cmd.setup)
        if (request_type, request) == (0x80, 0x08):
            return b"\x01"
        if (request_type, request) != (0x80, 0x06):
            return None
        return self.descriptors.get(value)


@pytest.fixture
def fake(tmp_path):
    servers = []

    def make(misbehave, **kw) -> FakeServer:
        server = FakeServer(tmp_path / f"fake{len(servers)}.sock", misbehave, **kw)
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.close()


def _vendor_read(settings_: dict, timeout_ms: int | None = None):
    port = open_usb({k: v for k, v in settings_.items() if k != "debug_probe"})  # the board's own device
    device = port.device()
    return port, device, lambda: device.control_in(*SECURITY_STATE, timeout_ms=timeout_ms)


def _kind_of(call) -> str:
    with pytest.raises(UsbTransferError) as caught:
        call()
    return caught.value.kind


def test_reply_to_a_urb_never_sent_is_a_protocol_error_and_the_connection_is_dead(fake):
    server = fake(lambda cmd, data, conn: conn.sendall(usbip.pack_ret_submit(cmd.seqnum + 100, 0, 0)))
    port, _, read = _vendor_read(server.settings)
    with pytest.raises(UsbTransferError, match="a URB never sent") as caught:
        read()
    assert caught.value.kind == "error"
    assert _kind_of(read) == "disconnected"
    port.close()


def test_garbage_instead_of_a_reply_is_a_protocol_error(fake):
    server = fake(lambda cmd, data, conn: conn.sendall(b"\xde\xad\xbe\xef" * 12))
    port, _, read = _vendor_read(server.settings)
    with pytest.raises(UsbTransferError, match="protocol error.*command 0xdeadbeef") as caught:
        read()
    assert caught.value.kind == "error"
    port.close()


def test_more_data_than_asked_is_a_protocol_error(fake):
    server = fake(lambda cmd, data, conn: conn.sendall(usbip.pack_ret_submit(cmd.seqnum, 0, 65, bytes(65))))
    port, _, read = _vendor_read(server.settings)
    with pytest.raises(UsbTransferError, match="actual_length 65 is more than the 64 bytes asked"):
        read()
    port.close()


def test_connection_closed_mid_urb_is_a_disconnect(fake):
    server = fake(lambda cmd, data, conn: conn.shutdown(socket.SHUT_RDWR))
    port, _, read = _vendor_read(server.settings)
    assert _kind_of(read) == "disconnected"
    assert _kind_of(read) == "disconnected"
    port.close()


def test_stall_status_is_a_stall(fake):
    server = fake(lambda cmd, data, conn: conn.sendall(usbip.pack_ret_submit(cmd.seqnum, -32, 0)))
    port, device, read = _vendor_read(server.settings)
    assert _kind_of(read) == "stall"
    assert device.control_in(0x80, 0x08, 0, 0, 1) == b"\x01"  # still in step
    port.close()


def test_a_server_that_answers_neither_urb_nor_unlink_is_dropped_by_a_deadline(fake):
    server = fake(lambda cmd, data, conn: None, answer_unlink=False)
    port, _, read = _vendor_read(server.settings)
    started = time.monotonic()
    assert _kind_of(read) == "timeout"
    assert time.monotonic() - started < 0.3 + 5
    with pytest.raises(UsbTransferError, match="answered neither URB .* nor its unlink") as caught:
        read()
    assert caught.value.kind == "disconnected"
    port.close()


def test_a_reply_arriving_with_the_unlink_keeps_the_stream_in_step(fake):
    def late(cmd, data, conn):  # answers only once the unlink is there, as a URB completing just then
        conn.recv(48, socket.MSG_PEEK)
        conn.sendall(usbip.pack_ret_submit(cmd.seqnum, 0, 36, bytes(36)))

    server = fake(late)
    port, device, read = _vendor_read(server.settings)
    assert _kind_of(read) == "timeout"
    assert device.control_in(0x80, 0x08, 0, 0, 1) == b"\x01"
    port.close()


def test_half_a_header_then_silence_ends_by_the_deadline(fake):
    server = fake(lambda cmd, data, conn: conn.sendall(usbip.pack_ret_submit(cmd.seqnum, 0, 0)[:20]))
    port, _, read = _vendor_read(server.settings)
    started = time.monotonic()
    assert _kind_of(read) in ("timeout", "error")
    assert _kind_of(read) == "disconnected"
    assert time.monotonic() - started < 0.3 + 5
    port.close()


def test_a_malformed_device_descriptor_or_serial_is_unusable_with_the_parsers_reason(fake):
    server = fake(lambda cmd, data, conn: None)
    server.descriptors[0x0100] = _device_descriptor()[:17]
    with pytest.raises(UsbUnavailable, match="device descriptor is malformed: .*17"):
        open_usb(server.settings).device()
    server.descriptors[0x0100] = _device_descriptor()
    server.descriptors[0x0303] = _string(SERIAL)[:-1]  # half a UTF-16 code unit at the end
    with pytest.raises(UsbUnavailable, match="serial unreadable: .*string 3 is malformed"):
        open_usb(server.settings).device()


def test_two_matching_devices_are_ambiguous(fake):
    server = fake(lambda cmd, data, conn: None, busids=("1-1", "1-2"))
    port = open_usb(server.settings)
    with pytest.raises(UsbUnavailable, match="2 devices match.*ambiguous"):
        port.device()
    port.close()
    chosen = open_usb({**server.settings, "busid": "1-2"})
    assert chosen.device().location["path"] == "1-2"
    chosen.close()


def test_a_devlist_that_disagrees_with_the_device_descriptor_is_refused(fake):
    server = fake(lambda cmd, data, conn: None, listed_pid=0x1234)
    port = open_usb({**server.settings, "pid": 0x1234})
    with pytest.raises(UsbUnavailable, match="listed as 0955:1234 but its device descriptor says 0955:cf10"):
        port.device()
    port.close()


def test_a_failed_search_holds_no_import(tmp_path):
    settings_, stop = start_sim("clean", tmp_path)
    port = open_usb({**settings_, "serial": "other"})
    try:
        for _ in range(2):  # the same answer again: the first search released its import
            with pytest.raises(UsbUnavailable, match="no USB device .* found: 0955:cf10 serial '1752624021081'"):
                port.device()
    finally:
        port.close()
        stop()


def test_two_interfaces_claiming_cmsis_dap_are_refused_not_guessed(fake):
    dap = lambda number, string, ep: (bytes([9, 4, number, 0, 2, 0xFF, 0, 0, string])  # noqa: E731
                                       + bytes([7, 5, ep, 2, 0x00, 0x02, 0]) + bytes([7, 5, 0x80 | ep, 2, 0x00, 0x02, 0]))
    config = struct.pack("<BBHBBBBB", 9, 2, 9 + 23 * 2, 2, 1, 0, 0xC0, 50) + dap(0, 4, 1) + dap(1, 5, 2)
    server = fake(lambda cmd, data, conn: None, config=config,
                  strings={4: "CMSIS-DAP v2 (locked)", 5: "CMSIS-DAP v2"})
    port = open_usb(server.settings)
    with pytest.raises(UsbUnavailable, match="interfaces 0, 1 all claim CMSIS-DAP: ambiguous"):
        CmsisDapLink(port.device())
    port.close()


def test_a_second_import_is_refused_and_said_so(clean):
    settings_, port = clean
    port.device()  # holds the import
    other = open_usb(settings_)
    with pytest.raises(UsbUnavailable, match="refused to import 1-1"):
        other.device()
    other.close()


_reply_fields = st.fixed_dictionaries({
    "command": st.sampled_from([usbip.RET_SUBMIT, usbip.RET_UNLINK, usbip.CMD_SUBMIT, 0, 0xFFFFFFFF]),
    "seqnum_offset": st.sampled_from([0, 0, 1, -1, 1 << 31]),
    "status": st.sampled_from([0, 0, -32, -19, -71, 1, -(1 << 31)]),
    "actual_length": st.sampled_from([0, 1, 36, 64, 65, 0x7FFFFFFF, -1]),
    "packets": st.sampled_from([0xFFFFFFFF, 0, 1]),
    "tail": st.binary(max_size=80),
})


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(fields=_reply_fields)
def test_any_reply_ends_in_data_or_a_transfer_error_never_a_hang(fake, fields):
    def reply(cmd, data, conn):
        header = struct.pack(">IIIIIiiiIi8s", fields["command"], (cmd.seqnum + fields["seqnum_offset"]) & 0xFFFFFFFF,
                             0, 0, 0, fields["status"], fields["actual_length"], 0, fields["packets"], 0, bytes(8))
        conn.sendall(header + fields["tail"])

    usbip_backend.UNLINK_GRACE_S = 0.05
    server = fake(reply)
    port, _, read = _vendor_read({**server.settings, "timeout_ms": 100})
    try:
        started = time.monotonic()
        try:
            assert len(read()) <= 64
        except UsbTransferError as exc:
            assert exc.kind in ("timeout", "error", "disconnected", "stall")
        assert time.monotonic() - started < 0.1 + 5
    finally:
        port.close()
        server.close()


# ---------------------------------------------------------------------------------------------
# The codec


_u32 = st.integers(0, 0xFFFFFFFF)
_name = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=31)


@settings(max_examples=100, deadline=None)
@given(seq=_u32, dev=_u32, direction=st.sampled_from([0, 1]), ep=st.integers(0, 15),
       length=st.integers(0, 4096), setup=st.binary(min_size=8, max_size=8), status=st.integers(-200, 0))
def test_urb_headers_round_trip(seq, dev, direction, ep, length, setup, status):
    data = bytes(length) if direction == usbip.DIR_OUT else b""
    raw = usbip.pack_cmd_submit(seq, dev, direction, ep, length, setup, data)
    assert usbip.unpack_urb_header(raw[:48]) == usbip.CmdSubmit(seq, dev, direction, ep, 0, length, 0, -1, 0, setup)
    ret = usbip.unpack_urb_header(usbip.pack_ret_submit(seq, status, length)[:48])
    assert (ret.seqnum, ret.status, ret.actual_length) == (seq, status, length)
    unlink = usbip.unpack_urb_header(usbip.pack_cmd_unlink(seq, dev, direction, ep, dev))
    assert isinstance(unlink, usbip.CmdUnlink) and unlink.unlink_seqnum == dev
    assert usbip.unpack_urb_header(usbip.pack_ret_unlink(seq, status)) == usbip.RetUnlink(seq, 0, 0, 0, status)


@settings(max_examples=100, deadline=None)
@given(busid=_name, path=_name, busnum=st.integers(1, 0xFFFF), devnum=st.integers(1, 127),
       interfaces=st.lists(st.tuples(*[st.integers(0, 255)] * 3), max_size=8))
def test_devlist_round_trips(busid, path, busnum, devnum, interfaces):
    device = usbip.ExportedDevice("/" + path, busid, busnum, devnum, 3, VID, PID, 0x100, 0, 0, 0, 1, 1,
                                  len(interfaces), tuple(interfaces))
    assert usbip.parse_rep_devlist(usbip.pack_rep_devlist([device, device])) == (device, device)
    assert usbip.unpack_device(usbip.pack_device(device)) == usbip.ExportedDevice(*[
        getattr(device, f) for f in ("path", "busid", "busnum", "devnum", "speed", "idVendor", "idProduct",
                                     "bcdDevice", "bDeviceClass", "bDeviceSubClass", "bDeviceProtocol",
                                     "bConfigurationValue", "bNumConfigurations", "bNumInterfaces")])


@settings(max_examples=150, deadline=None)
@given(st.binary(min_size=48, max_size=48))
def test_any_urb_header_decodes_or_is_refused_with_a_reason(data):
    try:
        header = usbip.unpack_urb_header(data)
    except usbip.UsbipError as exc:
        assert "URB header" in str(exc) or "seqnum" in str(exc)
    else:
        assert header.seqnum == int.from_bytes(data[4:8], "big")


@settings(max_examples=150, deadline=None)
@given(st.one_of(st.binary(max_size=400),
                 st.builds(lambda tail: usbip.pack_op_header(usbip.OP_REP_DEVLIST) + b"\0\0\0\x01" + tail,
                           st.binary(max_size=400))))
def test_any_devlist_bytes_parse_or_are_refused_with_a_reason(data):
    try:
        usbip.parse_rep_devlist(data)
    except usbip.UsbipError as exc:
        assert "OP_REP_DEVLIST" in str(exc) or "usbip" in str(exc).lower()


def test_codec_refuses_what_a_reader_could_not_frame():
    with pytest.raises(usbip.UsbipError, match="version 0x0110"):
        usbip.unpack_op_header(struct.pack(">HHI", 0x0110, usbip.OP_REP_IMPORT, 0), usbip.OP_REP_IMPORT)
    with pytest.raises(usbip.UsbipError, match="device count 4096 is absurd"):
        usbip.unpack_devlist_count(struct.pack(">I", 4096))
    with pytest.raises(usbip.UsbipError, match="number_of_packets 3 on a non-isochronous URB"):
        usbip.unpack_urb_header(usbip.pack_ret_submit(1, 0, 0, number_of_packets=3))
    with pytest.raises(usbip.UsbipError, match="bytes after the terminating NUL"):
        usbip.unpack_req_import(b"1-1\0x" + bytes(27))
    assert usbip.setup_packet(0x80, 6, 0x0100, 0, 18) == bytes.fromhex("8006000100001200")


def test_an_operation_the_backend_does_not_carry_is_a_transfer_error_kept_in_the_evidence():
    """pyusb raises NotImplementedError for what a backend lacks (USB/IP carries no port reset):
    that is a transfer that did not happen, ERROR with the reason, never a silent success."""
    from harness.interfaces.usb import UsbDevice, UsbTransferError

    class NoControl:
        def ctrl_transfer(self, *args):
            raise NotImplementedError("this backend carries no control transfers")

    device = UsbDevice(NoControl(), {"vid": 0x0955, "pid": 0xCF10, "path": "1-1"}, 300)
    with pytest.raises(UsbTransferError) as failed:
        device.control_in(0xC1, 0x5A, 0, 0, 64)
    assert failed.value.kind == "error" and "not supported by the backend" in str(failed.value)
    assert read_capture(device.transfers_pcapng()).packets  # the failed transfer is in the evidence


def test_the_usbip_backend_refuses_a_port_reset_it_cannot_carry():
    with pytest.raises(NotImplementedError, match="no port reset"):
        usbip_backend.UsbipBackend("unix:/nonexistent/usbip.sock").reset_device(None)
