"""Red team of the USB capability: a hostile board tries to make L1-USB-FUNCTIONS, L1-DEBUG-LOCKED or
L1-SECURITY-STATE PASS through its interfaces alone. Each way found is a simulator profile here (the
board's behaviour), a test that showed the false PASS before the harness was fixed, and the fix's
verdict now: FAIL naming what the board hid, or ERROR, never PASS."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from harness.evidence import EvidenceStore
from harness.formats import usb_descriptors as descriptors
from harness.reference import load_board_reference
from harness.reference.trust import load_lab_trust
from harness.verdict import Verdict
from probes import debug_port, usb_descriptors

from conftest import ROOT, TEST_TRUST
from test_usb_probes import sim  # noqa: F401 - the module-scoped simulated device per profile, shared

REFERENCE = load_board_reference(ROOT / "fixtures" / "references" / "nvidia-h100-sxm5-80gb.dsse.json",
                                 load_lab_trust(TEST_TRUST))


def judged(sim, profile: str, probe, section: str):
    evidence = EvidenceStore()
    observation = probe.collect(sim(profile), {}, evidence)
    (check,) = probe.CHECKS.values()
    return observation, check(observation, REFERENCE.lookup(section))


# --- L1-USB-FUNCTIONS ---


def test_a_network_function_hidden_in_the_full_speed_configuration_fails(sim):
    # Before: the audit read only the high-speed configuration and PASSed; at full speed (a USB 1.1
    # hub) the device is a network adapter too, as its own other-speed descriptor says.
    observation, result = judged(sim, "usb-other-speed-netif", usb_descriptors, "usb")
    assert result.verdict is Verdict.FAIL, result.reasons
    assert any(r.startswith("other-speed configuration 1: interface 2: CDC-ECM network (class 0x02/0x06/0x00) "
                            "is not declared") for r in result.reasons), result.reasons
    names = {ref.name for ref in observation.evidence}
    assert {"usb/device-qualifier.bin", "usb/other-speed-configuration-0.bin"} <= names


def test_a_function_shown_only_to_the_host_that_enumerated_the_device_first_fails(sim):
    # Before: the backend's own GET_DESCRIPTOR reads agreed with the fresh read, so the audit PASSed,
    # while the exporting host's kernel (USB/IP devlist and import) holds a network function.
    observation, result = judged(sim, "usb-first-enumeration-netif", usb_descriptors, "usb")
    assert result.verdict is Verdict.FAIL, result.reasons
    assert any("the USB/IP server's host enumerated configuration 1 with 4 interface(s)" in r
               for r in result.reasons), result.reasons
    assert observation.facts["server_enumeration"]["interfaces"][2] == [2, 6, 0]


def test_the_clean_board_still_passes_with_its_full_speed_configuration_and_the_servers_listing_judged(sim):
    observation, result = judged(sim, "clean", usb_descriptors, "usb")
    assert result.verdict is Verdict.PASS, result.reasons
    facts = observation.facts
    assert facts["qualifier"]["configurations"] == 1 and len(facts["other_speed_configurations"]) == 1
    assert facts["server_enumeration"]["interfaces"] == [[0xFF, 1, 1], [0xFF, 0, 0]]
    assert "other-speed" in result.reasons[0] and "USB/IP server" in result.reasons[0]


# --- L1-DEBUG-LOCKED ---


def test_an_open_second_access_port_fails_although_the_named_one_is_locked(sim):
    # Before: only the reference's AP 0 was tried (FAULT): PASS, while AP 1 read the boot ROM.
    observation, result = judged(sim, "usb-open-second-ap", debug_port, "usb.debug_port")
    assert result.verdict is Verdict.FAIL, result.reasons
    assert "debug memory access is open: 4 of 4 word(s) read at AP 1, address 0x00000000" in result.reasons[0]
    assert [ap["ap"] for ap in observation.facts["access_ports"]] == [0, 1]


def test_the_clean_board_scans_every_access_port_and_still_passes(sim):
    observation, result = judged(sim, "clean", debug_port, "usb.debug_port")
    assert result.verdict is Verdict.PASS, result.reasons
    assert [ap["ap"] for ap in observation.facts["access_ports"]] == [0]
    assert "1 MEM-AP(s) of 256 access port numbers" in result.reasons[0]
    assert result.reasons[0].endswith("read through an independent CMSIS-DAP probe (usb.debug_probe); the board's own "
                                      "CMSIS-DAP bridge answered the same (evidence usb/cmsis-dap-bridge.json)")


# --- L1-DEBUG-LOCKED: a board whose own debug bridge lies (the lab's probe is another USB device) ---


def debug_port_judge(profile: str, workdir):
    """(judge, stop) for a simulated board started on `profile`: judge(settings_change) -> (observation,
    result) runs debug_port through a `usb` interface opened on the simulator's announced settings
    changed by `settings_change`."""
    from fixtures.sim import usb as sim_usb
    from fixtures.sim.__main__ import load_profile
    from harness.interfaces import opener
    announced, stop = sim_usb.start(load_profile(profile), workdir)

    class Board:
        reference = REFERENCE

        def __init__(self, settings):
            self.port = opener("usb")(settings)

        def interface(self, kind):
            return self.port

    def judge(change):
        board = Board(change(dict(announced)))
        try:
            observation = debug_port.collect(board, {}, EvidenceStore())
        finally:
            board.port.close()  # USB/IP imports are exclusive: the next port imports afresh
        return observation, debug_port.memory_access_refused(observation, REFERENCE.lookup("usb.debug_port"))
    return judge, stop


@pytest.fixture(scope="module")
def lying_bridge(tmp_path_factory):
    judge, stop = debug_port_judge("lying-debug-bridge", tmp_path_factory.mktemp("lying"))
    yield judge
    stop()


def test_a_debug_bridge_that_lies_fails_through_the_labs_probe(lying_bridge):
    # Before: the board's own CMSIS-DAP bridge answered FAULT for its open port and the check PASSed.
    observation, result = lying_bridge(lambda settings: settings)
    assert result.verdict is Verdict.FAIL, result.reasons
    assert observation.facts["independent_probe"] is True and observation.facts["probe_device"]["vid"] == 0x0D28
    assert "debug memory access is open: 4 of 4 word(s) read at AP 0, address 0x00000000" in result.reasons[0]
    assert any(r.startswith("the board's debug bridge lies: through the board's own CMSIS-DAP interface every read "
                            "was answered ACK FAULT (CSW 0x23000012, DeviceEn 0)") for r in result.reasons), result.reasons
    assert {debug_port.TRANSCRIPT_NAME, debug_port.BRIDGE_TRANSCRIPT_NAME} <= {ref.name for ref in observation.evidence}


@pytest.mark.parametrize("change, why", [
    (lambda settings: {k: v for k, v in settings.items() if k != "debug_probe"},
     "no interfaces.usb.debug_probe: the read went through the board's own device"),
    (lambda settings: {**settings, "debug_probe": {k: settings[k] for k in ("vid", "pid", "serial", "usbip", "busid")}},
     "interfaces.usb.debug_probe names the board's own device (0955:cf10 serial '1752624021081')"),
])
def test_the_lying_bridge_without_the_labs_probe_is_error_never_pass(lying_bridge, change, why):
    observation, result = lying_bridge(change)
    assert result.verdict is Verdict.ERROR, result.reasons
    assert why in result.reasons[0] and debug_port.CLAIM_NOT_MEASUREMENT in result.reasons[0]
    assert observation.facts["independent_probe"] is False and observation.facts["csw"]["device_enabled"] is False


def test_a_probe_found_at_the_boards_own_bus_address_is_not_independent():
    # A second handle on the board's device (libusb on a bench, another VID:PID string read off it)
    # is still the board's firmware answering.
    from types import SimpleNamespace
    from harness.interfaces.usb import UsbSettings
    settings = UsbSettings.parse({"vid": 0x0955, "pid": 0xCF10, "serial": "1",
                                  "debug_probe": {"vid": 0x0D28, "pid": 0x0204, "serial": "2"}})
    board = SimpleNamespace(location={"vid": 0x0955, "pid": 0xCF10, "serial": "1", "backend": "libusb1", "bus": 3,
                                      "address": 7})
    same_place = SimpleNamespace(location={**board.location, "vid": 0x0D28, "pid": 0x0204, "serial": "2"})
    elsewhere = SimpleNamespace(location={**same_place.location, "address": 8})
    port = SimpleNamespace(settings=settings)
    assert "found the board's own device (bus 3 address 7" in debug_port.independence(port, same_place, board)
    assert debug_port.independence(port, elsewhere, board) is None


# --- the decoder of what the device is at full speed ---


def test_the_device_qualifier_and_an_other_speed_configuration_decode():
    qualifier = descriptors.parse_device_qualifier(struct.pack("<BBHBBBBBB", 10, 6, 0x0200, 0, 0, 0, 64, 1, 0))
    assert (qualifier.bcdUSB, qualifier.bMaxPacketSize0, qualifier.bNumConfigurations) == (0x0200, 64, 1)
    config = bytes([9, 7, 18, 0, 1, 1, 0, 0x80, 50]) + bytes([9, 4, 0, 0, 0, 0xFF, 0, 0, 0])
    assert descriptors.parse_configuration(config, other_speed=True).bDescriptorType == 7
    with pytest.raises(descriptors.DescriptorError, match="expected 0x07"):
        descriptors.parse_configuration(bytes([9, 2]) + config[2:], other_speed=True)
    with pytest.raises(descriptors.DescriptorError, match="bReserved"):
        descriptors.parse_device_qualifier(struct.pack("<BBHBBBBBB", 10, 6, 0x0200, 0, 0, 0, 64, 1, 1))


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=16))
def test_hostile_device_qualifiers_decode_or_raise_a_descriptor_error(data):
    try:
        qualifier = descriptors.parse_device_qualifier(data)
    except descriptors.DescriptorError as exc:
        assert "device qualifier" in str(exc)
    else:
        assert len(data) == 10 and qualifier.bNumConfigurations >= 1
