"""The USB probes (usb_descriptors, debug_port, security_state): each check on hand-made
observations (every PASS, FAIL and ERROR path), the register-layout decoder on hostile input,
and collect() through pyusb and USB/IP against the simulator's USB component, one per profile:
the clean board, each zoo variant and the fault profiles (a malformed descriptor, a stall, a
hang), each of which must ERROR with its reason and its evidence kept."""

from __future__ import annotations

import hashlib
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from harness.evidence import EvidenceStore
from harness.formats.register_layout import (LayoutError, RegisterError, decode_registers, parse_layout)
from harness.reference import load_board_reference
from harness.reference.trust import load_lab_trust
from harness.verdict import Observation, ProbeError, Verdict
from probes import debug_port, security_state, usb_descriptors

from conftest import ROOT, TEST_TRUST

PROFILE = ROOT / "fixtures" / "references" / "nvidia-h100-sxm5-80gb.dsse.json"
REFERENCE = load_board_reference(PROFILE, load_lab_trust(TEST_TRUST))
USB = REFERENCE.lookup("usb")
SECURITY = REFERENCE.lookup("usb.security_state")
DEBUG = REFERENCE.lookup("usb.debug_port")
ROOT_KEY = hashlib.sha256(b"attestlab-sim-root-key-1").digest()
EVIDENCE = security_state.EvidenceRef("usb/security-state.bin", "0" * 64, 36)


def state(lifecycle=2, flags=0b11, key=ROOT_KEY, fmt=1, tail=b"") -> Observation:
    response = bytes([fmt, lifecycle, flags, 0]) + key + tail
    return Observation("security_state", {"response": response.hex(), "responses": [response.hex()] * 2,
                                          "length": len(response)}, (EVIDENCE,))


def judge(check, observation, expected=SECURITY):
    return security_state.CHECKS[check](observation, expected)


# --- the register layout ---


def test_the_reference_layout_decodes_the_clean_response():
    layout = parse_layout(SECURITY["length"], SECURITY["fields"])
    decoded = decode_registers(layout, bytes.fromhex(state().facts["response"]))
    assert decoded.get("lifecycle").name == "production" and decoded.get("lifecycle").value == 2
    assert decoded.get("secure_boot").value is True and decoded.get("debug_lock").value is True
    assert decoded.get("root_key_hash").value == ROOT_KEY.hex()
    assert decoded.to_facts()["debug_lock"] == {"offset": 2, "size": 1, "raw": "03", "value": True, "bit": 1}


@pytest.mark.parametrize("fields, why", [
    ({"a": {"offset": 0, "size": 2}}, "lie past the response's length 1"),
    ({"a": {"offset": 0, "bit": 8}}, "bit number 0..7"),
    ({"a": {"offset": 0, "size": 1, "bit": 0, "equals": 1}}, "at most one of bit, values, equals"),
    ({"a": {"offset": 0, "size": 1, "values": {1: "x", 2: "x"}}}, "two values have one name"),
    ({"a": {"offset": 0, "size": 1, "values": {256: "x"}}}, "is not an integer of 1 byte(s) and a name"),
    ({"a": {"offset": 0, "size": 1, "mask": 1}}, "unknown key 'mask'"),
    ({"a": {"offset": True, "size": 1}}, "offset: must be a byte offset"),
    ({}, "fields: must map field names"),
])
def test_a_malformed_layout_is_refused_naming_the_field(fields, why):
    with pytest.raises(LayoutError, match=None) as caught:
        parse_layout(1, fields)
    assert why in str(caught.value)


def test_a_response_of_another_length_or_format_is_not_the_layout():
    layout = parse_layout(SECURITY["length"], SECURITY["fields"])
    with pytest.raises(RegisterError, match="the response is 37 bytes, the layout is exactly 36"):
        decode_registers(layout, bytes.fromhex(state(tail=b"\0").facts["response"]))
    with pytest.raises(RegisterError, match="field 'format' at offset 0 .* is 0x2, the layout needs 0x1"):
        decode_registers(layout, bytes.fromhex(state(fmt=2).facts["response"]))


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=80))
def test_hostile_responses_decode_or_raise_a_register_error(data):
    layout = parse_layout(SECURITY["length"], SECURITY["fields"])
    try:
        decoded = decode_registers(layout, data)
    except RegisterError:
        return
    assert len(data) == 36 and data[0] == 1 and decoded.get("root_key_hash").value == data[4:36].hex()


_SCALAR = st.none() | st.booleans() | st.integers(-5, 300) | st.text(max_size=4)
_ANY = _SCALAR | st.lists(_SCALAR, max_size=3) | st.dictionaries(st.integers(-1, 300) | st.text(max_size=3), _SCALAR,
                                                                  max_size=3)


@settings(max_examples=100, deadline=None)
@given(st.integers(-2, 40) | st.booleans(), st.dictionaries(st.sampled_from(["a", "b", 1]), st.dictionaries(
    st.sampled_from(["offset", "size", "bit", "values", "equals", "byteorder", "x"]), _ANY, max_size=4), max_size=3))
def test_hostile_layouts_parse_or_raise_a_layout_error(length, fields):
    try:
        layout = parse_layout(length, fields)
    except LayoutError:
        return
    decode_registers(layout, bytes(layout.length))  # every field of a parsed layout lies inside it


# --- security_state's checks ---


def test_the_clean_state_passes_every_check_saying_it_is_the_boards_own_claim():
    for check in security_state.CHECKS:
        result = judge(check, state())
        assert result.verdict is Verdict.PASS, (check, result.reasons)
        assert security_state.CLAIM in result.reasons[0] and result.evidence == (EVIDENCE,)


@pytest.mark.parametrize("check, observation, reason", [
    ("lifecycle_production", state(lifecycle=1), "lifecycle: expected production, measured development (offset 1"),
    ("lifecycle_production", state(lifecycle=3), "measured return"),
    ("lifecycle_production", state(lifecycle=5), "measured 0x5, a value the reference does not name"),
    ("secure_boot_enabled", state(flags=0b10), "secure boot: expected set, measured clear (bit 0 of offset 2"),
    ("debug_locked", state(flags=0b01), "debug lock: expected set, measured clear (bit 1 of offset 2"),
    ("root_key_matches", state(key=hashlib.sha256(b"attestlab-sim-root-key-rogue").digest()),
     f"root key hash: expected {ROOT_KEY.hex()}, measured "
     f"{hashlib.sha256(b'attestlab-sim-root-key-rogue').hexdigest()}"),
])
def test_a_state_other_than_production_fails_naming_expected_and_measured(check, observation, reason):
    result = judge(check, observation)
    assert result.verdict is Verdict.FAIL and reason in result.reasons[0], result.reasons


@pytest.mark.parametrize("check, observation, expected, reason", [
    ("secure_boot_enabled", state(tail=b"\0"), SECURITY, "is not the reference's format: the response is 37 bytes"),
    ("secure_boot_enabled", state(key=b""), SECURITY, "the response is 4 bytes"),
    ("debug_locked", state(fmt=0), SECURITY, "field 'format' at offset 0"),
    ("debug_locked", Observation("security_state", {}, (EVIDENCE,)), SECURITY, "no security-state response to judge"),
    ("root_key_matches", state(), None, "must be a mapping"),
    ("lifecycle_production", state(), {**SECURITY, "fields": {**SECURITY["fields"], "lifecycle": {"offset": 99, "size": 1}}},
     "past the response"),
    ("secure_boot_enabled", state(), {**SECURITY, "expect": {**SECURITY["expect"], "secure_boot": False}}, "must be true"),
    ("lifecycle_production", state(), {**SECURITY, "expect": {**SECURITY["expect"], "lifecycle": "prod"}},
     "must be one of the names"),
    ("root_key_matches", state(), {**SECURITY, "expect": {**SECURITY["expect"], "root_key_hash": "ab"}},
     "must be 64 hex digits"),
    ("secure_boot_enabled", state(), {k: v for k, v in SECURITY.items() if k != "expect"},
     "say its value (expect.secure_boot)"),
    ("lifecycle_production", state(), {**SECURITY, "fields": {**SECURITY["fields"], "lifecycle": {"offset": 1, "size": 1,
                                                                                                  "equals": 2}}},
     "not a constant"),
])
def test_a_response_or_reference_that_cannot_be_judged_is_error(check, observation, expected, reason):
    result = judge(check, observation, expected)
    assert result.verdict is Verdict.ERROR and any(reason in r for r in result.reasons), result.reasons


# --- usb_descriptors' check ---


def function(interface, alternate, cls, subclass, protocol, name, *endpoints, class_name="vendor-specific",
             network=False):
    return {"interface": interface, "alternate": alternate, "class": cls, "subclass": subclass, "protocol": protocol,
            "class_name": class_name, "network": network, "name": name, "endpoints": list(endpoints)}


CLEAN_FUNCTIONS = [function(0, 0, 0xFF, 1, 1, "HMC management", "0x83 interrupt in"),
                   function(1, 0, 0xFF, 0, 0, "CMSIS-DAP v2", "0x01 bulk out", "0x81 bulk in")]
ECM = [function(2, 0, 0x02, 0x06, 0x00, "CDC-ECM", "0x84 interrupt in", class_name="CDC-ECM network", network=True),
       function(3, 0, 0x0A, 0, 0, None, class_name="CDC data", network=True),
       function(3, 1, 0x0A, 0, 0, None, "0x85 bulk in", "0x05 bulk out", class_name="CDC data", network=True)]
DESCRIPTOR_EVIDENCE = (security_state.EvidenceRef("usb/device-descriptor.bin", "1" * 64, 18),)


def descriptors(functions=CLEAN_FUNCTIONS, vid=0x0955, pid=0xCF10, disagreements=(), configs=(1,),
                associations=()) -> Observation:
    facts = {"descriptor": {"vid": vid, "pid": pid, "product": "HGX H100 HMC USB (simulated)"},
             "configurations": [{"value": v, "functions": list(functions), "associations": list(associations)}
                                for v in configs],
             "enumeration_disagreements": list(disagreements), "length_disagreements": [], "ms_os_10": None}
    return Observation("usb_descriptors", facts, DESCRIPTOR_EVIDENCE)


def audit(observation, expected=USB):
    return usb_descriptors.declared_functions(observation, expected)


def test_the_declared_functions_pass():
    result = audit(descriptors())
    assert result.verdict is Verdict.PASS and "every interface of 1 configuration(s) is declared" in result.reasons[0]
    assert result.evidence == DESCRIPTOR_EVIDENCE


def test_an_undeclared_network_interface_fails_naming_it():
    result = audit(descriptors(CLEAN_FUNCTIONS + ECM))
    assert result.verdict is Verdict.FAIL
    assert any("interface 2: CDC-ECM network (class 0x02/0x06/0x00) is not declared" in r for r in result.reasons)
    assert any(r.startswith("interface 3 alternate 1: CDC data (class 0x0a/0x00/0x00) is not declared")
               and "0x85 bulk in" in r and "egress path" in r for r in result.reasons), result.reasons


@pytest.mark.parametrize("observation, reason", [
    (descriptors(CLEAN_FUNCTIONS[:1]),
     "interface 1: declared vendor-specific (class 0xff/0x00/0x00) 'CMSIS-DAP v2' is missing"),
    (descriptors([CLEAN_FUNCTIONS[0], function(1, 0, 0xFF, 0, 0, "CMSIS-DAP v2", "0x01 bulk out", "0x82 bulk in")]),
     "interface 1: endpoints differ: declared ['0x01 bulk out', '0x81 bulk in'], measured ['0x01 bulk out', "
     "'0x82 bulk in']; not declared: ['0x82 bulk in']; missing: ['0x81 bulk in']"),
    (descriptors([CLEAN_FUNCTIONS[0], function(1, 0, 0x03, 1, 1, "CMSIS-DAP v2", "0x01 bulk out", "0x81 bulk in",
                                               class_name="HID keyboard")]),
     "interface 1: declared vendor-specific (class 0xff/0x00/0x00), measured HID keyboard (class 0x03/0x01/0x01)"),
    (descriptors([CLEAN_FUNCTIONS[0], {**CLEAN_FUNCTIONS[1], "name": "DAP"}]),
     "interface 1: declared name 'CMSIS-DAP v2', measured 'DAP'"),
    (descriptors(vid=0x10DE), "device: expected 0955:cf10, measured 10de:cf10"),
    (descriptors(disagreements=["the backend enumerated configuration 1 interface 2 ..."]),
     "two descriptor sets: the backend enumerated configuration 1 interface 2"),
    (descriptors(functions=[]), "interface 0: declared vendor-specific"),
    (descriptors(associations=[{"first_interface": 0, "count": 2, "class": 0x02, "subclass": 0x06, "protocol": 0,
                                "class_name": "CDC-ECM network"}]),
     "association of interfaces 0-1: CDC-ECM network (class 0x02/0x06/0x00) is not declared"),
])
def test_a_device_other_than_declared_fails_naming_the_difference(observation, reason):
    result = audit(observation)
    assert result.verdict is Verdict.FAIL and any(reason in r for r in result.reasons), result.reasons


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=24), st.lists(st.binary(max_size=40), max_size=2), st.binary(max_size=8),
       st.dictionaries(st.integers(1, 9), st.binary(max_size=12), max_size=3), st.none() | st.binary(max_size=16))
def test_hostile_descriptor_sets_decode_or_raise_a_descriptor_error(device, configurations, langids, strings, bos):
    from harness.formats.usb_descriptors import DescriptorError
    from harness.interfaces.usb import RawDescriptors
    raw = RawDescriptors(device=device, configurations=tuple(configurations), langids=langids, strings=strings, bos=bos)
    try:
        facts, configs = usb_descriptors._decode(raw)
    except DescriptorError:
        return
    assert len(configs) == facts["descriptor"]["configurations"] == len(configurations)


def test_every_configuration_is_judged_a_second_one_hiding_a_function_too():
    two = descriptors(configs=(1, 2))
    assert audit(two).verdict is Verdict.PASS
    two.facts["configurations"][1]["functions"] += ECM[:1]  # one SET_CONFIGURATION away
    result = audit(two)
    assert result.verdict is Verdict.FAIL
    assert result.reasons[0].startswith("configuration 2: interface 2: CDC-ECM network"), result.reasons


@pytest.mark.parametrize("observation, expected, reason", [
    (descriptors(), None, "reference 'usb' must be a mapping"),
    (descriptors(), {**USB, "device": {"vid": "0955"}}, "reference usb.device must be {vid, pid}"),
    (descriptors(), {**USB, "functions": []}, "reference usb.functions must list every interface"),
    (descriptors(), {**USB, "functions": [{**USB["functions"][0], "endpoints": ["ep 3 in"]}]}, "as '0x83 interrupt in'"),
    (descriptors(), {**USB, "functions": USB["functions"] + USB["functions"][:1]}, "interface 0 is declared twice"),
    (descriptors(), {**USB, "associations": [{"first_interface": 0}]}, "reference usb.associations must list"),
    (Observation("usb_descriptors", {"descriptor": {}}, ()), USB, "no USB descriptors to judge"),
])
def test_a_reference_or_observation_that_cannot_be_judged_is_error(observation, expected, reason):
    result = audit(observation, expected)
    assert result.verdict is Verdict.ERROR and any(reason in r for r in result.reasons), result.reasons


# --- debug_port's check ---

TRANSCRIPT = (security_state.EvidenceRef(debug_port.TRANSCRIPT_NAME, "2" * 64, 100, "application/json"),)


def swd(values=(), ack="FAULT", target=None, protocol_error=False, count=0, independent=True) -> Observation:
    target = target or {"address": 0, "words": 4, "ap": 0}
    data = b"".join(v.to_bytes(4, "little") for v in values)
    memory = {"address": target["address"], "words": target["words"], "ack": ack, "count": count,
              "protocol_error": protocol_error, "values": [f"{v:#010x}" for v in values], "bytes": data.hex(),
              "refused": not values and ack == "FAULT" and not protocol_error}
    if memory["refused"]:  # a refusal is tried again elsewhere (probes/debug_port.further_addresses)
        memory["further"] = [{"ap": target["ap"], "address": at, "words": 1, "ack": "FAULT", "count": 3,
                              "protocol_error": False, "values": [], "bytes": "", "refused": True}
                             for at in debug_port.further_addresses(target["address"])]
    facts = {"target": target, "idcode": {"raw": "0x2ba01477"}, "csw": {"raw": "0x03000040", "device_enabled": False},
             "memory": memory, "independent_probe": independent}
    return Observation("debug_port", facts, TRANSCRIPT)


def test_a_read_refused_with_fault_passes():
    assert DEBUG["independent_probe"] == "required"
    result = debug_port.memory_access_refused(swd(), DEBUG)
    assert result.verdict is Verdict.PASS and "DP IDCODE 0x2ba01477 answers" in result.reasons[0]
    assert "answered ACK FAULT with no data" in result.reasons[0] and result.evidence == TRANSCRIPT
    assert "read through an independent CMSIS-DAP probe (usb.debug_probe)" in result.reasons[0]
    # A reference that does not require the lab's probe: the board's own bridge may decide, and says so.
    optional = {**DEBUG, "independent_probe": "optional"}
    result = debug_port.memory_access_refused(swd(independent=False), optional)
    assert result.verdict is Verdict.PASS and "the board's own CMSIS-DAP interface" in result.reasons[0]


def test_a_refusal_through_the_boards_own_bridge_is_error_where_the_reference_requires_the_labs_probe():
    result = debug_port.memory_access_refused(swd(independent=False), DEBUG)
    assert result.verdict is Verdict.ERROR, result.reasons
    assert "answered ACK FAULT with no data, but no independent probe read it: a refusal through the board's own " \
           "firmware is its claim, not a measurement: name the lab's probe as interfaces.usb.debug_probe" \
           in result.reasons[0]
    # a read that returns data is a finding whichever probe read it
    opened = swd(values=(1,), ack="OK", count=1, independent=False)
    assert debug_port.memory_access_refused(opened, DEBUG).verdict is Verdict.FAIL


def test_a_read_that_returns_data_fails_showing_address_and_bytes():
    result = debug_port.memory_access_refused(swd(values=(0x11223344, 0xAABBCCDD), ack="OK", count=2), DEBUG)
    assert result.verdict is Verdict.FAIL
    assert ("2 of 4 word(s) read at AP 0, address 0x00000000 through the SWD port (DP IDCODE 0x2ba01477): "
            "0x11223344 0xaabbccdd (bytes 44332211ddccbbaa)") in result.reasons[0]
    # data read before a FAULT is data read
    assert debug_port.memory_access_refused(swd(values=(1,), ack="FAULT", count=2), DEBUG).verdict is Verdict.FAIL


@pytest.mark.parametrize("observation, expected, reason", [
    (swd(ack="NO_ACK"), DEBUG, "ended with ACK NO_ACK after 0 transfer(s): neither data nor a FAULT, undecided"),
    (swd(ack="WAIT"), DEBUG, "ended with ACK WAIT"),
    (swd(ack="FAULT", protocol_error=True), DEBUG, "and an SWD protocol error"),
    (swd(target={"address": 0x1000, "words": 4, "ap": 0}), DEBUG, "the read was tried at"),
    (Observation("debug_port", {"target": {}}, TRANSCRIPT), DEBUG, "no memory read to judge"),
    (swd(), {**DEBUG, "address": 2}, "must be a word-aligned 32-bit address"),
    (swd(), None, "reference usb.debug_port must be {address, words, ap[, independent_probe]}"),
    (swd(), {**DEBUG, "independent_probe": "yes"}, "independent_probe must be one of required, optional"),
])
def test_a_memory_read_neither_refused_nor_answered_is_error(observation, expected, reason):
    result = debug_port.memory_access_refused(observation, expected)
    assert result.verdict is Verdict.ERROR and reason in result.reasons[0], result.reasons


# --- collect() through pyusb and USB/IP, against the simulator's USB component ---


class SimBoard:
    """What the probes use of a Board: its reference profile and its `usb` interface, here the
    simulator's USB component (started in this process: its own thread and socket, no harness code)."""

    def __init__(self, settings: dict, timeout_ms: int) -> None:
        from harness.interfaces import opener
        self.reference = REFERENCE
        self.port = opener("usb")({**settings, "timeout_ms": timeout_ms})

    def interface(self, kind: str):
        assert kind == "usb"
        return self.port


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    """sim(profile) -> a SimBoard on that simulated USB device; each profile started once per module."""
    from fixtures.sim import usb as sim_usb
    from fixtures.sim.__main__ import load_profile
    boards, stops = {}, []

    def board(profile: str) -> SimBoard:
        if profile not in boards:
            settings, stop = sim_usb.start(load_profile(profile), tmp_path_factory.mktemp(profile))
            stops.append(stop)
            boards[profile] = SimBoard(settings, timeout_ms=300 if profile == "usb-hang" else 1000)
        return boards[profile]

    yield board
    for b in boards.values():
        b.port.close()
    for stop in stops:
        stop()


def collected(sim, profile, probe):
    evidence = EvidenceStore()
    return probe.collect(sim(profile), {}, evidence), evidence


def verdicts(probe, observation, expected):
    return {name: check(observation, expected).verdict for name, check in probe.CHECKS.items()}


def test_the_clean_board_passes_every_usb_check_through_pyusb(sim):
    observation, evidence = collected(sim, "clean", usb_descriptors)
    result = audit(observation)
    assert result.verdict is Verdict.PASS, result.reasons
    names = {ref.name for ref in observation.evidence}
    assert {"usb/device-descriptor.bin", "usb/configuration-0.bin", "usb/string-0.bin", "usb/bos.bin",
            "usb/transfers.pcapng"} <= names
    facts = observation.facts
    assert facts["descriptor"]["serial"] == "1752624021081" and facts["enumeration_disagreements"] == []
    assert [f["endpoints"] for f in facts["configurations"][0]["functions"]] == [
        ["0x83 interrupt in"], ["0x01 bulk out", "0x81 bulk in"]]
    assert evidence.get(observation.evidence[0].sha256)[:2] == b"\x12\x01"  # the device descriptor, as read

    state_observation, _ = collected(sim, "clean", security_state)
    assert set(verdicts(security_state, state_observation, SECURITY).values()) == {Verdict.PASS}
    assert state_observation.facts["fields"]["lifecycle"]["name"] == "production"
    assert state_observation.evidence[0].name == "usb/security-state.bin" and state_observation.evidence[0].size == 36

    swd_observation, evidence = collected(sim, "clean", debug_port)
    result = debug_port.memory_access_refused(swd_observation, DEBUG)
    assert result.verdict is Verdict.PASS, result.reasons
    assert swd_observation.facts["idcode"]["raw"] == "0x2ba01477" and swd_observation.facts["ap_idr"]["type"] == "AHB-AP"
    assert swd_observation.facts["csw"]["device_enabled"] is False and swd_observation.facts["independent_probe"] is True
    assert swd_observation.facts["probe_device"]["vid"] == 0x0D28  # the lab's probe the simulator announces
    assert swd_observation.facts["bridge"]["memory"]["refused"] is True  # the board's own bridge agrees
    transcript = json.loads(evidence.get(swd_observation.evidence[0].sha256))
    assert transcript[0]["step"] == "DAP_Info vendor" and any(e["step"].startswith("read 4 word(s)") for e in transcript)


def test_an_undeclared_cdc_ecm_function_fails_naming_it(sim):
    observation, _ = collected(sim, "hidden-netif", usb_descriptors)
    result = audit(observation)
    assert result.verdict is Verdict.FAIL
    assert any("interface 2: CDC-ECM network (class 0x02/0x06/0x00) is not declared" in r for r in result.reasons)
    assert any("interface 3 alternate 1: CDC data" in r for r in result.reasons), result.reasons
    assert any("association of interfaces 2-3: CDC-ECM network" in r for r in result.reasons), result.reasons


def test_a_development_lifecycle_and_a_foreign_root_key_fail_their_checks(sim):
    dev, _ = collected(sim, "dev-lifecycle", security_state)
    assert verdicts(security_state, dev, SECURITY) == {
        "lifecycle_production": Verdict.FAIL, "secure_boot_enabled": Verdict.FAIL,
        "debug_locked": Verdict.PASS, "root_key_matches": Verdict.PASS}
    assert "lifecycle: expected production, measured development" in \
        security_state.lifecycle_production(dev, SECURITY).reasons[0]
    rogue, _ = collected(sim, "wrong-root-key", security_state)
    result = security_state.root_key_matches(rogue, SECURITY)
    assert result.verdict is Verdict.FAIL
    assert f"measured {hashlib.sha256(b'attestlab-sim-root-key-rogue').hexdigest()}" in result.reasons[0]


def test_an_unlocked_debug_port_fails_with_the_bytes_read_though_the_board_claims_it_locked(sim):
    observation, _ = collected(sim, "debug-unlocked", debug_port)
    result = debug_port.memory_access_refused(observation, DEBUG)
    assert result.verdict is Verdict.FAIL, result.reasons
    boot_rom = hashlib.sha256(b"attestlab-sim-boot-rom").digest()[:16]
    assert "read at AP 0, address 0x00000000" in result.reasons[0] and f"(bytes {boot_rom.hex()})" in result.reasons[0]
    claim, _ = collected(sim, "debug-unlocked", security_state)
    assert security_state.debug_locked(claim, SECURITY).verdict is Verdict.PASS  # only the real read tells


@pytest.mark.parametrize("profile, probe, reason, kept", [
    ("usb-bad-descriptor", usb_descriptors, "malformed usb descriptor from 0955:cf10: class-specific interface "
                                            "descriptor 2 at offset 0x12: blength 0", "usb/configuration-0.bin"),
    ("usb-stall", security_state, "stall", "usb/transfers.pcapng"),
    ("usb-hang", debug_port, "timeout", debug_port.TRANSCRIPT_NAME),
])
def test_a_malformed_descriptor_a_stall_and_a_hang_are_error_with_the_evidence_kept(sim, profile, probe, reason, kept):
    evidence = EvidenceStore()
    with pytest.raises(ProbeError) as caught:
        probe.collect(sim(profile), {}, evidence)
    assert reason in str(caught.value).lower(), caught.value
    assert kept in {ref.name for ref in evidence.refs}


# --- debug_port's conversation with a probe that lies or breaks (no USB: the link's answers scripted) ---


class ScriptedProbe:
    """A CMSIS-DAP link whose DAP_Transfer answers come from `answer(requests) -> (count, ack, values)`,
    `requests` being (ap, read, register, value) per transfer; everything else answers as a good probe."""

    def __init__(self, answer, connect_port=1, garbage=b""):
        self.answer, self.connect_port, self.garbage = answer, connect_port, garbage

    def command(self, request: bytes, timeout_ms=None) -> bytes:
        from harness.formats import cmsis_dap as dap
        command = request[0]
        if command == dap.INFO:
            if request[1] == dap.PACKET_SIZE:
                return bytes([0, 2]) + (512).to_bytes(2, "little")
            if request[1] == dap.CAPABILITIES:
                return bytes([0, 1, 0x01])
            return bytes([0, 5]) + b"test\0"
        if command == dap.CONNECT:
            return bytes([command, self.connect_port])
        if command != dap.TRANSFER:
            return bytes([command, 0])
        requests, at = [], 3
        for _ in range(request[2]):
            byte = request[at]
            at += 1
            value = None
            if not byte & 0x02:
                value = int.from_bytes(request[at:at + 4], "little")
                at += 4
            requests.append((bool(byte & 1), bool(byte & 2), byte & 0x0C, value))
        count, ack, values = self.answer(requests)
        return bytes([command, count, ack]) + b"".join(v.to_bytes(4, "little") for v in values) + self.garbage


def target_answers(idcode=0x2BA01477, idr=0x24770011, drw=None, tar_ack=1):
    """A target's answers: `drw(n)` answers a read of n DRW words (default: FAULT at once), a TAR
    write answers `tar_ack`; every other access is OK. SELECT's bank decides what AP 0xC is."""
    bank = [0]

    def answer(requests):
        values = []
        for done, (ap, read, register, value) in enumerate(requests):
            if not ap and not read and register == 0x8:
                bank[0] = value & 0xF0
            elif ap and read and register == 0x0C and bank[0] == 0:
                return drw(len(requests)) if drw else (0, 4, [])
            elif ap and not read and register == 0x04 and tar_ack != 1:
                return done, tar_ack, values
            elif read:
                values.append(idcode if not ap and register == 0 else 0xF0000000 if not ap and register == 4 else
                              idr if ap and register == 0x0C else 0x23000002)
        return len(requests), 1, values
    return answer


def converse(probe):
    return debug_port._converse(debug_port._Session(probe, []), dict(DEBUG), 1_000_000, 100)


def test_a_target_that_answers_like_a_locked_one_is_refused_and_one_that_reads_shows_its_words():
    assert converse(ScriptedProbe(target_answers()))["memory"]["refused"] is True
    # the reference firmware's way: the posted first read counts, the FAULT comes on the second, no value
    assert converse(ScriptedProbe(target_answers(drw=lambda n: (1, 4, []))))["memory"]["refused"] is True
    opened = converse(ScriptedProbe(target_answers(drw=lambda n: (n, 1, list(range(1, n + 1))))))["memory"]
    assert opened["values"] == ["0x00000001", "0x00000002", "0x00000003", "0x00000004"] and not opened["refused"]


@pytest.mark.parametrize("probe, reason", [
    (ScriptedProbe(lambda requests: (0, 7, [])), "read DP IDCODE: ACK NO_ACK after 0 of 1 transfer(s) (nothing answers"),
    (ScriptedProbe(lambda requests: (0, 2, [])), "ACK WAIT after 0 of 1 transfer(s) (the target kept answering WAIT"),
    (ScriptedProbe(lambda requests: (0, 4, [])), "read DP IDCODE: ACK FAULT"),
    (ScriptedProbe(lambda requests: (0, 9, [])), "SWD protocol error"),
    (ScriptedProbe(target_answers(idcode=0xFFFFFFFF)), "DP IDCODE 0xffffffff is not what an ADIv5 debug port answers"),
    (ScriptedProbe(target_answers(idcode=0x2BA01476)), "is not what an ADIv5 debug port answers"),
    (ScriptedProbe(target_answers(idr=0)), "AP 0 is no MEM-AP (IDR 0x00000000)"),
    (ScriptedProbe(target_answers(tar_ack=4)), "the memory read was never tried"),
    (ScriptedProbe(target_answers(), connect_port=0), "DAP_Connect SWD failed: the probe answered port 0"),
    (ScriptedProbe(target_answers(), connect_port=2), "port 2 (not SWD)"),
    (ScriptedProbe(target_answers(), garbage=b"\0"), "CMSIS-DAP read DP IDCODE"),
])
def test_a_probe_or_target_that_does_not_answer_as_an_adiv5_port_is_error(probe, reason):
    with pytest.raises(ProbeError) as caught:
        converse(probe)
    assert reason in str(caught.value), caught.value


def test_a_memory_read_that_ends_in_wait_or_no_ack_decides_nothing():
    for ack in (2, 7):
        facts = converse(ScriptedProbe(target_answers(drw=lambda n, a=ack: (0, a, []))))
        observation = Observation("debug_port", {**facts, "target": dict(DEBUG)}, TRANSCRIPT)
        assert debug_port.memory_access_refused(observation, DEBUG).verdict is Verdict.ERROR
