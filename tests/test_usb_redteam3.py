"""Third red team of the USB capability: a hostile board tries to make L1-USB-FUNCTIONS or
L1-SECURITY-STATE (or L1-DEBUG-LOCKED) PASS by answering each asker its own way (descriptors that depend on wLength, a
readout that changes between reads) or by making Windows bind a driver through descriptors the audit
did not read (Microsoft OS 1.0). Each way is a simulator profile, a test that showed the false PASS
before the harness was fixed, and the verdict now: FAIL naming what the board hid, or ERROR."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from harness.evidence import EvidenceStore
from harness.formats import cmsis_dap as dap
from harness.formats import usb_descriptors as descriptors
from harness.formats.cmsis_dap import DapError
from harness.verdict import ProbeError, Verdict
from probes import debug_port, security_state, usb_descriptors

from test_usb_probes import ScriptedProbe, converse, sim  # noqa: F401 - sim: the module-scoped simulated device
from test_usb_redteam import REFERENCE, judged


# --- L1-USB-FUNCTIONS: descriptors that depend on wLength (each host asks its own) ---


def test_a_configuration_that_shows_a_network_function_to_a_255_byte_read_fails(sim):
    # Before: the audit read 9 bytes, then wTotalLength (as Linux does) and PASSed; asked 255 bytes,
    # as Windows asks first, the configuration carries a CDC-ECM network function.
    observation, result = judged(sim, "usb-wlength-netif", usb_descriptors, "usb")
    assert result.verdict is Verdict.FAIL, result.reasons
    (reason,) = result.reasons
    assert reason.startswith("the device shows other descriptors to other hosts: configuration 0 read with wLength "
                             "255 answers "), reason
    assert reason.endswith("(usb/configuration-0-wlength-255.bin)")
    names = {ref.name for ref in observation.evidence}
    assert {f"usb/configuration-0-wlength-{n}.bin" for n in (9, 255, 65535)} <= names


def test_a_device_descriptor_that_depends_on_wlength_fails(sim):
    # Before: only the 18-byte read was made: PASS, while the 64-byte read hosts make first said class 0x02.
    observation, result = judged(sim, "usb-wlength-device", usb_descriptors, "usb")
    assert result.verdict is Verdict.FAIL, result.reasons
    assert result.reasons == ("the device shows other descriptors to other hosts: device read with wLength 64 "
                              "answers 18 bytes where the full read cut to wLength 64 is 18; they differ from "
                              "offset 0x4: 02000040550910cf instead of 00000040550910cf "
                              "(usb/device-descriptor-wlength-64.bin)",)


def test_the_clean_board_answers_every_wlength_alike_and_passes(sim):
    observation, result = judged(sim, "clean", usb_descriptors, "usb")
    assert result.verdict is Verdict.PASS, result.reasons
    reads = observation.facts["wlength_reads"]
    assert [(r["descriptor"], r["wLength"]) for r in reads] == [
        ("device", 8), ("device", 64), ("configuration-0", 9), ("configuration-0", 255), ("configuration-0", 65535),
        ("other-speed-configuration-0", 9), ("other-speed-configuration-0", 255),
        ("other-speed-configuration-0", 65535)]
    assert observation.facts["length_disagreements"] == [] and "(8 reads) is the full one cut short" in result.reasons[0]
    assert observation.facts["ms_os_10"] is None  # string 0xEE stalls: no Microsoft OS 1.0 descriptors


@settings(max_examples=100, deadline=None)
@given(full=st.binary(max_size=300), asked=st.integers(0, 0xFFFF), other=st.binary(max_size=300))
def test_only_the_full_descriptor_cut_to_wlength_agrees(full, asked, other):
    assert descriptors.length_mismatch(full, asked, full[:asked]) is None
    problem = descriptors.length_mismatch(full, asked, other)
    assert (problem is None) == (other == full[:asked])
    if problem:
        assert f"wLength {asked}" in problem


# --- L1-USB-FUNCTIONS: Microsoft OS 1.0 descriptors (string 0xEE, extended compat ID) ---


def test_a_microsoft_os_10_rndis_compatible_id_fails(sim):
    # Before: string 0xEE was never asked; every interface was declared: PASS, while Windows reads the
    # extended compat ID descriptor by itself and binds its RNDIS network driver to interface 0.
    observation, result = judged(sim, "usb-ms-os-10", usb_descriptors, "usb")
    assert result.verdict is Verdict.FAIL, result.reasons
    assert list(result.reasons) == [
        "Microsoft OS 1.0 compatible ID 'RNDIS' (sub-compatible ID '5162001') for interface 0 is not declared: "
        "Windows binds a driver by it (a network adapter: an egress path around the host) "
        "(usb/ms-os-extended-compat-id.bin, vendor code 0x21)"]
    assert {"usb/string-238.bin", "usb/ms-os-extended-compat-id.bin"} <= {ref.name for ref in observation.evidence}


def test_a_declared_compatible_id_passes_and_a_malformed_declaration_is_error(sim):
    observation, _ = judged(sim, "usb-ms-os-10", usb_descriptors, "usb")
    usb = REFERENCE.lookup("usb")
    rndis = {"interface": 0, "compatible_id": "RNDIS", "sub_compatible_id": "5162001"}
    assert usb_descriptors.declared_functions(observation, {**usb, "ms_os_compat_ids": [rndis]}).verdict is Verdict.PASS
    other = {**rndis, "sub_compatible_id": ""}
    assert usb_descriptors.declared_functions(observation, {**usb, "ms_os_compat_ids": [other]}).verdict is Verdict.FAIL
    wrong = usb_descriptors.declared_functions(observation, {**usb, "ms_os_compat_ids": ["RNDIS"]})
    assert wrong.verdict is Verdict.ERROR and "usb.ms_os_compat_ids must list" in wrong.reasons[0]


def test_a_malformed_extended_compat_id_descriptor_is_error_with_the_evidence_kept(sim):
    evidence = EvidenceStore()
    with pytest.raises(ProbeError, match="extended compat ID descriptor at offset 0x8: bCount 2 needs 64 bytes, "
                                         "dwLength says 40"):
        usb_descriptors.collect(sim("usb-ms-os-10-malformed"), {}, evidence)
    assert {"usb/ms-os-extended-compat-id.bin", "usb/transfers.pcapng"} <= {ref.name for ref in evidence.refs}


def _compat(*functions: tuple[int, bytes, bytes], count: int | None = None, version: int = 0x0100) -> bytes:
    body = b"".join(struct.pack("<BB8s8s6x", first, 1, cid, sub) for first, cid, sub in functions)
    return struct.pack("<IHHB7x", 16 + len(body), version, 4, len(functions) if count is None else count) + body


def test_the_microsoft_os_10_parsers_are_strict():
    string = struct.pack("<BB14sBB", 0x12, 3, "MSFT100".encode("utf-16-le"), 0x21, 0)
    assert descriptors.parse_ms_os_string(string) == 0x21
    assert descriptors.parse_ms_os_string(b"\x08\x03" + "abc".encode("utf-16-le")) is None  # an ordinary string
    with pytest.raises(descriptors.DescriptorError, match="bLength 20, expected 18"):
        descriptors.parse_ms_os_string(b"\x14\x03" + string[2:] + b"\x00\x00")
    parsed = descriptors.parse_extended_compat_ids(_compat((0, b"WINUSB", b""), (2, b"RNDIS", b"5162001")))
    assert [(f.bFirstInterfaceNumber, f.compatible_id, f.sub_compatible_id) for f in parsed.functions] == [
        (0, "WINUSB", ""), (2, "RNDIS", "5162001")]
    for data, reason in [(_compat((0, b"RNDIS", b""), count=2), "bCount 2 needs 64 bytes"),
                         (_compat((0, b"RNDIS", b""), version=0x0200), "bcdVersion 0x0200"),
                         (_compat((0, b"RND\x00IS", b"")), "is not an ID"),
                         (_compat((0, b"RNDIS", b""), (0, b"WINUSB", b"")), "interface 0 is named twice"),
                         (_compat()[:15], "too few for its 16-byte header"),
                         (_compat((0, b"RNDIS", b"")) + b"\x00", "dwLength 40, but the data is 41 bytes")]:
        with pytest.raises(descriptors.DescriptorError, match=reason):
            descriptors.parse_extended_compat_ids(data)


@settings(max_examples=150, deadline=None)
@given(st.one_of(st.binary(max_size=120),
                 st.builds(lambda n, tail: _compat(*[(i, b"RNDIS", b"") for i in range(n)])[:-1] + tail,
                           st.integers(0, 3), st.binary(max_size=30))))
def test_hostile_microsoft_os_10_descriptors_raise_a_descriptor_error_or_parse(data):
    for parse in (descriptors.parse_extended_compat_ids, descriptors.parse_ms_os_string):
        try:
            parse(data)
        except descriptors.DescriptorError:
            pass


# --- L1-SECURITY-STATE: a readout that answers a second read otherwise ---


def test_a_security_readout_that_changes_at_the_second_read_fails_with_both_reads_kept(sim):
    # Before: one read, production, secure boot on: PASS; the readout answers every later read as the
    # development board it is.
    evidence = EvidenceStore()
    observation = security_state.collect(sim("usb-security-second-read"), {}, evidence)
    assert {security_state.EVIDENCE_NAME, security_state.SECOND_EVIDENCE_NAME} <= {r.name for r in observation.evidence}
    for check in security_state.CHECKS.values():
        result = check(observation, REFERENCE.lookup("usb.security_state"))
        assert result.verdict is Verdict.FAIL, result.reasons
        assert result.reasons[0].startswith("the security-state readout answers differently to a second read: 36 bytes "
                                            "then 36, first differing at offset 1 (020300f3 then 010200f3;")


def test_a_stall_of_the_second_security_read_is_error_with_the_first_kept(sim):
    evidence = EvidenceStore()
    with pytest.raises(ProbeError, match=r"got no answer \(its second read; the first is kept as "
                                         r"usb/security-state.bin\): .*stall"):
        security_state.collect(sim("usb-security-second-stall"), {}, evidence)
    assert {security_state.EVIDENCE_NAME, "usb/transfers.pcapng"} <= {ref.name for ref in evidence.refs}


def test_the_clean_readout_answers_both_reads_alike(sim):
    observation = security_state.collect(sim("clean"), {}, EvidenceStore())
    first, second = observation.facts["responses"]
    assert first == second == observation.facts["response"]
    assert security_state.lifecycle_production(observation, REFERENCE.lookup("usb.security_state")).verdict \
        is Verdict.PASS


# --- L1-DEBUG-LOCKED: the port is an SW-DP, and an AP that is no MEM-AP is only read ---


def test_a_port_answering_a_jtag_dps_idcode_over_swd_is_error(sim):
    # Before: 0x4ba00477 (a JTAG-DP's IDCODE, DPIDR version 0: no SW-DP has it) passed as the port's
    # identity and its FAULTs as a lock: PASS.
    with pytest.raises(ProbeError, match=r"DP IDCODE 0x4ba00477 is not what an ADIv5 debug port answers: .*DPIDR "
                                         r"version 0 is no SW-DP's"):
        debug_port.collect(sim("usb-jtag-dp-idcode"), {}, EvidenceStore())
    with pytest.raises(DapError, match="bits 19-17 are reserved"):
        dap.decode_idcode(0x2BA21477)
    assert dap.decode_idcode(0x2BA01477).dp_version == 1 and dap.decode_idcode(0x6BA02477).dp_version == 2


def test_an_access_port_whose_idr_is_no_mem_ap_is_never_written():
    # AP 0 is the reference's MEM-AP (locked); every other APSEL answers a JTAG-AP's IDR (class 0)
    apsel, written = [0], []

    def answer(requests):
        values = []
        for ap, read, register, value in requests:
            if not ap and not read and register == 0x8:
                apsel[0] = value
            elif ap and not read:
                written.append(apsel[0] >> 24)
            elif ap and read and register == 0x0C and apsel[0] & 0xF0 == 0:
                return len(values), 4, values  # DRW: FAULT
            elif read:
                idr = 0x24770011 if apsel[0] >> 24 == 0 else 0x24760010
                values.append(0x2BA01477 if not ap and register == 0 else 0xF0000000 if not ap and register == 4
                              else idr if ap and register == 0x0C else 0x23000002)
        return len(requests), 1, values

    facts = converse(ScriptedProbe(answer))
    assert [p["type"] for p in facts["access_ports"]][:2] == ["AHB-AP", "JTAG-AP"] and len(facts["access_ports"]) == 256
    assert written and set(written) == {0} and facts["other_aps"] == []
