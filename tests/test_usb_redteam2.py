"""Second red team of the USB capability: a hostile board tries to make L1-USB-FUNCTIONS, L1-DEBUG-LOCKED
or L1-SECURITY-STATE PASS through its interfaces alone (its USB/IP side, descriptors that depend on how
they are asked for, the debug port's answers). Each way found is a simulator profile or a crafted
input here, a test that showed the false PASS before the harness was fixed, and the verdict now:
FAIL naming what the board hid, or ERROR, never PASS."""

from __future__ import annotations

import pytest


from harness.formats import usb_descriptors as descriptors
from harness.verdict import Verdict
from probes import debug_port, usb_descriptors

from test_usb_probes import sim  # noqa: F401 - the module-scoped simulated device per profile, shared
from test_usb_redteam import REFERENCE, debug_port_judge, judged


# --- L1-DEBUG-LOCKED: a lock of one address, or of one access, is not the port's ---


def test_a_port_that_refuses_only_the_harness_s_address_fails(sim):
    # Before: only the reference's 4 words at 0x0 were read; FAULT there was a PASS, while the rest
    # of the boot ROM read out.
    observation, result = judged(sim, "usb-guarded-address", debug_port, "usb.debug_port")
    assert result.verdict is Verdict.FAIL, result.reasons
    assert "debug memory access is open: 1 of 1 word(s) read at AP 0, address 0x00001000" in result.reasons[0]
    assert observation.facts["memory"]["refused"] is True
    assert observation.facts["memory"]["further"][0]["address"] == 0  # the reference's address again: FAULT
    assert observation.facts["memory"]["further"][0]["refused"] is True


def test_a_port_that_refuses_only_its_first_read_fails(sim):
    # Before: the first DRW answered FAULT, so the read counted as refused: PASS.
    observation, result = judged(sim, "usb-fault-once", debug_port, "usb.debug_port")
    assert result.verdict is Verdict.FAIL, result.reasons
    assert "debug memory access is open: 1 of 1 word(s) read at AP 0, address 0x00000000" in result.reasons[0]


def test_the_clean_board_refuses_at_every_further_address(sim):
    observation, result = judged(sim, "clean", debug_port, "usb.debug_port")
    assert result.verdict is Verdict.PASS, result.reasons
    further = observation.facts["memory"]["further"]
    assert [m["address"] for m in further][:2] == [0, 0x1000] and all(m["refused"] for m in further)
    assert set(debug_port.REGION_BASES) <= {m["address"] for m in further}
    assert f"at the reference's address and {len(further)} further one(s)" in result.reasons[0]


def test_further_addresses_start_with_the_same_one_and_never_repeat():
    for address in (0, 0x1000, 0xFFFFFFFC, 0x20000000):
        found = debug_port.further_addresses(address)
        assert found[0] == address and len(found) == len(set(found)) and all(a % 4 == 0 for a in found)


# --- L1-USB-FUNCTIONS: a function a host acts on without an interface to show for it ---


def test_a_microsoft_os_20_platform_capability_in_the_bos_fails(sim):
    # Before: the BOS was stored and listed as a fact, never judged: PASS, while Windows asks the
    # device's MS OS 2.0 descriptor set by itself and binds the driver it names (RNDIS network too).
    observation, result = judged(sim, "usb-ms-os-20", usb_descriptors, "usb")
    assert result.verdict is Verdict.FAIL, result.reasons
    assert list(result.reasons) == ["BOS platform capability d8dd60df-4589-4cc7-9cd2-659d9e648a9f (Microsoft OS 2.0 "
                              "descriptors) is not declared: a host acts on it by itself (usb/bos.bin)"]
    assert [c["type"] for c in observation.facts["bos"]] == [2, 5]


def test_a_declared_platform_capability_passes_and_a_malformed_declaration_is_error(sim):
    observation, _ = judged(sim, "usb-ms-os-20", usb_descriptors, "usb")
    usb = REFERENCE.lookup("usb")
    declared = {**usb, "platform_capabilities": ["D8DD60DF-4589-4CC7-9CD2-659D9E648A9F"]}
    assert usb_descriptors.declared_functions(observation, declared).verdict is Verdict.PASS
    wrong = usb_descriptors.declared_functions(observation, {**usb, "platform_capabilities": "all"})
    assert wrong.verdict is Verdict.FAIL and "must list UUIDs" in wrong.reasons[0]


def test_platform_uuids_decode_as_usb_stores_them():
    raw = bytes([28, 0x10, 0x05, 0]) + bytes.fromhex("38b60834a909a0478bfda0768815b665") + bytes(8)
    assert descriptors.platform_uuid(raw) == "3408b638-09a9-47a0-8bfd-a0768815b665"
    assert descriptors.PLATFORM_NAMES[descriptors.platform_uuid(raw)] == "WebUSB"
    with pytest.raises(descriptors.DescriptorError, match="not a platform capability"):
        descriptors.platform_uuid(raw[:19])


# --- L1-DEBUG-LOCKED: the board's USB/IP server exports a device that says it is the lab's probe ---


@pytest.fixture(scope="module")
def impersonated(tmp_path_factory):
    judge, stop = debug_port_judge("usb-impersonated-probe", tmp_path_factory.mktemp("impersonated"))
    yield judge
    stop()


def test_a_lab_probe_served_by_the_boards_own_usbip_server_is_not_independent(impersonated):
    # Before: the device at the board's server's busid 1-2 had the lab probe's VID:PID and serial and
    # another bus address, so it counted as the lab's probe; it and the bridge both answered FAULT: PASS.
    observation, result = impersonated(
        lambda s: {**s, "debug_probe": {**s["debug_probe"], "usbip": s["usbip"]}})
    assert result.verdict is Verdict.ERROR, result.reasons
    assert "is reached through the board's own USB/IP server" in result.reasons[0]
    assert debug_port.CLAIM_NOT_MEASUREMENT in result.reasons[0]
    assert observation.facts["probe_device"]["vid"] == 0x0D28 and observation.facts["independent_probe"] is False


def test_the_lab_probe_on_its_own_server_reads_the_open_port(impersonated):
    observation, result = impersonated(lambda s: s)
    assert result.verdict is Verdict.FAIL, result.reasons
    assert observation.facts["independent_probe"] is True
    assert any(r.startswith("the board's debug bridge lies") for r in result.reasons), result.reasons


def test_one_server_named_two_ways_is_still_one_server():
    assert debug_port._server("unix:/tmp/x/../x/usbip.sock") == debug_port._server("unix:/tmp/x/usbip.sock")
    assert debug_port._server("tcp:Bench:3240") == debug_port._server("tcp:bench")
    assert debug_port._server("tcp:bench:3241") != debug_port._server("tcp:bench")
