"""The USB descriptor parser and the CMSIS-DAP codec take what a board sends, and a board may lie.

Valid descriptors and probe responses come from this file's own small encoder (written from the
USB 2.0 and CMSIS-DAP specifications, not from the parser), so a round trip checks the parser
against an independent writer; arbitrary bytes and mutations of a valid configuration check that
nothing but DescriptorError / DapError ever comes out, and nothing hangs; one test per strict
rule shows each lie a device could tell is refused, naming where."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from harness.formats import cmsis_dap as dap
from harness.formats.cmsis_dap import DapError, TransferRequest, TransferResult
from harness.formats.usb_descriptors import (
    BosDescriptor, ConfigurationDescriptor, DescriptorError, DeviceDescriptor, EndpointDescriptor,
    InterfaceAssociation, InterfaceDescriptor, interface_class_name, is_network_function, parse_bos,
    parse_configuration, parse_device_descriptor, parse_langids, parse_string,
)

# --- a small encoder, from the specification ---


def encode_device(d: DeviceDescriptor) -> bytes:
    return struct.pack("<BBHBBBBHHHBBBB", d.bLength, d.bDescriptorType, d.bcdUSB, d.bDeviceClass,
                       d.bDeviceSubClass, d.bDeviceProtocol, d.bMaxPacketSize0, d.idVendor, d.idProduct,
                       d.bcdDevice, d.iManufacturer, d.iProduct, d.iSerialNumber, d.bNumConfigurations)


def encode_endpoint(e: EndpointDescriptor) -> bytes:
    audio_tail = b"\x00\x00" if e.bLength == 9 else b""  # bRefresh, bSynchAddress
    return struct.pack("<BBBBHB", e.bLength, 5, e.bEndpointAddress, e.bmAttributes, e.wMaxPacketSize,
                       e.bInterval) + audio_tail + e.extra


def encode_interface(i: InterfaceDescriptor) -> bytes:
    return (struct.pack("<9B", 9, 4, i.bInterfaceNumber, i.bAlternateSetting, i.bNumEndpoints, i.bInterfaceClass,
                        i.bInterfaceSubClass, i.bInterfaceProtocol, i.iInterface)
            + i.extra + b"".join(encode_endpoint(e) for e in i.endpoints))


def encode_association(a: InterfaceAssociation) -> bytes:
    return struct.pack("<8B", 8, 0x0B, a.bFirstInterface, a.bInterfaceCount, a.bFunctionClass,
                       a.bFunctionSubClass, a.bFunctionProtocol, a.iFunction)


def config_body(interfaces, associations, extra=b"") -> bytes:
    """Everything after the 9-byte header; each association just before its first interface."""
    body = bytearray(extra)
    placed = set()
    for interface in interfaces:
        for a in associations:
            if a.bFirstInterface == interface.bInterfaceNumber and id(a) not in placed:
                body += encode_association(a)
                placed.add(id(a))
        body += encode_interface(interface)
    return bytes(body)


def make_config(interfaces, associations=(), extra=b"", value=1, attributes=0xC0, max_power=50,
                i_configuration=0, num_interfaces=None) -> ConfigurationDescriptor:
    body = config_body(interfaces, associations, extra)
    numbers = {i.bInterfaceNumber for i in interfaces}
    return ConfigurationDescriptor(
        bLength=9, bDescriptorType=2, wTotalLength=9 + len(body),
        bNumInterfaces=len(numbers) if num_interfaces is None else num_interfaces, bConfigurationValue=value,
        iConfiguration=i_configuration, bmAttributes=attributes, bMaxPower=max_power, interfaces=tuple(interfaces),
        associations=tuple(associations), extra=extra)


def encode_configuration(c: ConfigurationDescriptor) -> bytes:
    body = config_body(c.interfaces, c.associations, c.extra)
    return struct.pack("<BBHBBBBB", 9, 2, c.wTotalLength, c.bNumInterfaces, c.bConfigurationValue,
                       c.iConfiguration, c.bmAttributes, c.bMaxPower) + body


def endpoint(address, kind, size, interval=0, extra=b"", length=7) -> EndpointDescriptor:
    attributes = {"control": 0, "isochronous": 1, "bulk": 2, "interrupt": 3}[kind]
    return EndpointDescriptor(length, 5, address, attributes, size, interval, extra)


def interface(number, cls, sub, proto, endpoints=(), alternate=0, string=0, extra=b"") -> InterfaceDescriptor:
    return InterfaceDescriptor(9, 4, number, alternate, len(endpoints), cls, sub, proto, string, tuple(endpoints),
                               extra)


def string_descriptor(text: str) -> bytes:
    raw = text.encode("utf-16-le")
    return bytes([2 + len(raw), 3]) + raw


# The simulated product of the contract (USB_API.md): a management interface and a CMSIS-DAP v2 one.
SIM_DEVICE = DeviceDescriptor(18, 1, 0x0210, 0, 0, 0, 64, 0x0955, 0xCF10, 0x0100, 1, 2, 3, 1)
SIM_INTERFACES = (
    interface(0, 0xFF, 0x01, 0x01, [endpoint(0x83, "interrupt", 64, 8)], string=5),
    interface(1, 0xFF, 0x00, 0x00, [endpoint(0x01, "bulk", 512), endpoint(0x81, "bulk", 512)], string=6),
)
CDC_ECM_EXTRA = (bytes([5, 0x24, 0x00, 0x20, 0x01])            # header, CDC 1.2
                 + bytes([5, 0x24, 0x06, 2, 3])                 # union: control 2, data 3
                 + bytes([13, 0x24, 0x0F, 7, 0, 0, 0, 0, 0xEA, 0x05, 0, 0, 0]))  # ethernet, iMACAddress 7
HIDDEN_NETIF = SIM_INTERFACES + (
    interface(2, 0x02, 0x06, 0x00, [endpoint(0x84, "interrupt", 16, 8)], extra=CDC_ECM_EXTRA),
    interface(3, 0x0A, 0x00, 0x00),
    interface(3, 0x0A, 0x00, 0x00, [endpoint(0x85, "bulk", 512), endpoint(0x05, "bulk", 512)], alternate=1),
)
ECM_ASSOCIATION = InterfaceAssociation(2, 2, 0x02, 0x06, 0x00, 0)
SIM_CONFIG = make_config(SIM_INTERFACES, i_configuration=4)
SIM_CONFIG_BYTES = encode_configuration(SIM_CONFIG)


def config_bytes(interfaces, associations=(), **kw) -> bytes:
    return encode_configuration(make_config(interfaces, associations, **kw))


def with_total(body: bytes, num_interfaces: int = 1, value: int = 1) -> bytes:
    """A configuration header whose wTotalLength is right for `body`, whatever the body says."""
    return struct.pack("<BBHBBBBB", 9, 2, 9 + len(body), num_interfaces, value, 0, 0xC0, 50) + body


def refused(parse, data, *fragments):
    with pytest.raises(DescriptorError) as error:
        parse(data)
    for fragment in fragments:
        assert fragment in str(error.value), str(error.value)
    return str(error.value)


# --- the simulated product parses as declared ---


def test_the_simulated_device_descriptor_parses():
    d = parse_device_descriptor(encode_device(SIM_DEVICE))
    assert d == SIM_DEVICE and (d.idVendor, d.idProduct, d.bcdUSB) == (0x0955, 0xCF10, 0x0210)
    assert d.string_indices == (1, 2, 3)


def test_the_simulated_configuration_parses_with_its_endpoints():
    c = parse_configuration(SIM_CONFIG_BYTES)
    assert c == SIM_CONFIG and c.self_powered and not c.remote_wakeup and c.string_indices == (4, 5, 6)
    management, debug = c.interfaces
    (interrupt,) = management.endpoints
    assert (interrupt.number, interrupt.direction, interrupt.transfer_type, interrupt.max_packet_size) == \
        (3, "in", "interrupt", 64)
    assert [(e.bEndpointAddress, e.direction, e.transfer_type) for e in debug.endpoints] == \
        [(0x01, "out", "bulk"), (0x81, "in", "bulk")]
    assert management.class_name == "vendor-specific"


def test_a_hidden_cdc_ecm_function_parses_with_its_association_and_class_descriptors():
    c = parse_configuration(config_bytes(HIDDEN_NETIF, [ECM_ASSOCIATION]))
    assert c.bNumInterfaces == 4 and c.associations == (ECM_ASSOCIATION,)
    control = c.interfaces[2]
    assert control.extra == CDC_ECM_EXTRA and control.class_name == "CDC-ECM network"
    assert [(i.bInterfaceNumber, i.bAlternateSetting, len(i.endpoints)) for i in c.interfaces[3:]] == [(3, 0, 0),
                                                                                                   (3, 1, 2)]
    assert list(c.associations[0].interface_numbers) == [2, 3]
    assert is_network_function(2, 6, 0) and is_network_function(0x0A, 0, 0)


@pytest.mark.parametrize("profile, interfaces", [("clean", 2), ("hidden-netif", 4)])
def test_the_simulators_descriptors_parse(profile, interfaces):
    # fixtures/sim/usb.py writes its descriptors with its own code: a second, independent encoder
    from fixtures.sim.__main__ import load_profile
    from fixtures.sim.usb import Device

    device = Device(load_profile(profile)["usb"])
    assert parse_device_descriptor(device.device).idVendor == 0x0955
    config, *others = [parse_configuration(c.descriptor) for c in device.configurations]
    assert config.bNumInterfaces == interfaces and config.bConfigurationValue == 1
    assert parse_bos(device.bos).capability(0x02) is not None
    assert [parse_string(string_descriptor(s)) for s in device.strings] == device.strings
    names = [i.class_name for i in config.interfaces]
    assert ("CDC-ECM network" in names) is (profile == "hidden-netif")


def test_the_simulators_zero_length_descriptor_is_refused():
    from fixtures.sim.__main__ import load_profile
    from fixtures.sim.usb import Device

    refused(parse_configuration, Device(load_profile("usb-bad-descriptor")["usb"]).configurations[0].descriptor,
            "bLength 0", "offset 0x12", "cannot advance")


def test_descriptors_after_an_endpoint_are_the_endpoints_extra_and_before_interfaces_the_configurations():
    companion = bytes([6, 0x30, 0, 0, 0, 0])
    otg = bytes([3, 0x09, 0x03])
    c = parse_configuration(config_bytes([interface(0, 0xFF, 0, 0, [endpoint(0x81, "bulk", 1024, extra=companion)])],
                                         extra=otg))
    assert c.extra == otg and c.interfaces[0].endpoints[0].extra == companion and c.interfaces[0].extra == b""


def test_strings_and_langids_parse():
    assert parse_string(string_descriptor("CMSIS-DAP v2")) == "CMSIS-DAP v2"
    assert parse_string(string_descriptor("Grüße €𝄞")) == "Grüße €𝄞"  # a surrogate pair is fine
    assert parse_string(b"\x02\x03") == ""
    assert parse_langids(bytes([4, 3, 0x09, 0x04])) == (0x0409,)
    assert parse_langids(bytes([6, 3, 0x09, 0x04, 0x07, 0x04])) == (0x0409, 0x0407)


def test_a_bos_with_a_usb2_extension_parses():
    usb2 = bytes([7, 0x10, 0x02, 0x06, 0, 0, 0])
    container = bytes([20, 0x10, 0x04, 0]) + bytes(range(16))
    bos = parse_bos(bytes([5, 0x0F, 5 + 7 + 20, 0, 2]) + usb2 + container)
    assert bos == BosDescriptor(32, 2, ((2, usb2), (4, container)))
    assert bos.capability(0x02) == usb2 and bos.capability(0x03) is None


@pytest.mark.parametrize("triple, name", [
    ((0x02, 0x06, 0x00), "CDC-ECM network"),
    ((0x02, 0x0D, 0x00), "CDC-NCM network"),
    ((0x02, 0x0C, 0x07), "CDC-EEM network"),
    ((0x02, 0x02, 0xFF), "RNDIS network"),
    ((0xE0, 0x01, 0x03), "RNDIS network"),
    ((0xEF, 0x04, 0x01), "RNDIS network"),
    ((0x02, 0x02, 0x01), "CDC-ACM serial"),
    ((0x0A, 0x00, 0x00), "CDC data"),
    ((0x03, 0x01, 0x01), "HID keyboard"),
    ((0x03, 0x01, 0x02), "HID mouse"),
    ((0x03, 0x00, 0x00), "HID"),
    ((0x08, 0x06, 0x50), "mass storage"),
    ((0xFF, 0x01, 0x01), "vendor-specific"),
    ((0x01, 0x01, 0x00), "audio"),
    ((0xFE, 0x01, 0x02), "DFU firmware update"),
    ((0x42, 0x00, 0x00), "class 0x42"),
])
def test_interface_class_names(triple, name):
    assert interface_class_name(*triple) == name


@pytest.mark.parametrize("triple, network", [
    ((0x02, 0x06, 0x00), True), ((0x02, 0x0D, 0x00), True), ((0x02, 0x0C, 0x07), True), ((0x02, 0x02, 0xFF), True),
    ((0xE0, 0x01, 0x03), True), ((0x0A, 0x00, 0x00), True), ((0x02, 0x02, 0x01), False), ((0x03, 0x01, 0x01), False),
    ((0x08, 0x06, 0x50), False), ((0xFF, 0x00, 0x00), False), ((0xE0, 0x01, 0x01), False),
])
def test_network_functions(triple, network):
    assert is_network_function(*triple) is network


# --- each strict rule, one test ---


def test_a_device_descriptor_of_another_size_or_type_is_refused():
    good = encode_device(SIM_DEVICE)
    refused(parse_device_descriptor, good[:17], "cut off")
    refused(parse_device_descriptor, good + b"\x00", "exactly 18", "past its end")
    refused(parse_device_descriptor, bytes([17]) + good[1:], "bLength 17")
    refused(parse_device_descriptor, good[:1] + b"\x02" + good[2:], "bDescriptorType 0x02")
    refused(parse_device_descriptor, b"", "0 bytes")
    refused(parse_device_descriptor, good[:7] + bytes([63]) + good[8:], "bMaxPacketSize0 63")
    refused(parse_device_descriptor, good[:17] + b"\x00", "bNumConfigurations 0")


def test_wtotallength_must_equal_the_data():
    refused(parse_configuration, SIM_CONFIG_BYTES[:-1], "wTotalLength", f"{len(SIM_CONFIG_BYTES) - 1} bytes")
    refused(parse_configuration, SIM_CONFIG_BYTES + b"\x00", "wTotalLength")
    refused(parse_configuration, SIM_CONFIG_BYTES[:9], "wTotalLength")  # the 9-byte first read, parsed alone


def test_a_zero_length_descriptor_is_refused_not_looped_on():
    message = refused(parse_configuration, with_total(bytes([0, 0x24, 0, 0])), "bLength 0", "offset 0x9")
    assert "cannot advance" in message
    refused(parse_configuration, with_total(bytes([1, 0x24])), "bLength 1")
    refused(parse_configuration, with_total(bytes([9, 4, 0, 0, 0, 0xFF, 0, 0, 0, 0x00])), "1 byte left")


def test_a_descriptor_running_past_the_end_is_refused():
    body = encode_interface(SIM_INTERFACES[0])
    refused(parse_configuration, with_total(body + bytes([7, 5, 0x82])), "runs past the end", "offset 0x19",
            "3 bytes left")
    refused(parse_configuration, with_total(body + bytes([200, 0x24, 1])), "bLength 200", "runs past")


def test_fixed_size_descriptors_of_another_size_are_refused():
    refused(parse_configuration, bytes([10, 2, 10, 0, 0, 1, 0, 0xC0, 50, 0]), "bLength 10, expected 9")
    refused(parse_configuration, with_total(bytes([10, 4, 0, 0, 0, 0xFF, 0, 0, 0, 0])), "interface", "expected 9")
    refused(parse_configuration, with_total(bytes([9, 4, 0, 0, 1, 0xFF, 0, 0, 0]) + bytes([9, 5, 0x81, 2, 0, 2, 0, 0, 0])),
            "endpoint", "bLength 9, expected 7")
    refused(parse_configuration, with_total(bytes([7, 0x0B, 0, 1, 0xFF, 0, 0]) + encode_interface(SIM_INTERFACES[0])),
            "interface association", "expected 8")


def test_a_nine_byte_endpoint_is_accepted_in_an_audio_interface():
    audio = interface(0, 0x01, 0x02, 0x00, [endpoint(0x81, "isochronous", 192, 1, length=9)])
    assert parse_configuration(config_bytes([audio])).interfaces[0].endpoints[0].bLength == 9


def test_an_endpoint_before_any_interface_is_refused():
    refused(parse_configuration, with_total(encode_endpoint(endpoint(0x81, "bulk", 512)) + encode_interface(
        SIM_INTERFACES[1])), "endpoint", "before any interface", "offset 0x9")


@pytest.mark.parametrize("kind, name", [(1, "device"), (2, "configuration"), (7, "other-speed configuration")])
def test_a_device_or_configuration_descriptor_inside_a_configuration_is_refused(kind, name):
    inner = encode_device(SIM_DEVICE) if kind == 1 else bytes([9, kind, 9, 0, 0, 1, 0, 0xC0, 50])
    refused(parse_configuration, with_total(encode_interface(SIM_INTERFACES[0]) + inner),
            f"a {name} descriptor inside the configuration")


def test_interface_numbers_must_be_zero_to_bnuminterfaces_less_one():
    refused(parse_configuration, config_bytes(SIM_INTERFACES, num_interfaces=3), "bNumInterfaces 3", "[0, 1]")
    refused(parse_configuration, config_bytes(SIM_INTERFACES, num_interfaces=1), "bNumInterfaces 1")
    # two interfaces, declared two, but numbered 0 and 5: Linux would ignore interface 5
    gap = (SIM_INTERFACES[0], interface(5, 0x02, 0x0D, 0, [endpoint(0x82, "interrupt", 16, 8)]))
    refused(parse_configuration, config_bytes(gap), "bNumInterfaces 2", "[0, 5]")
    refused(parse_configuration, config_bytes([], num_interfaces=1), "bNumInterfaces 1", "none")


def test_the_endpoint_count_must_match_bnumendpoints():
    lying = InterfaceDescriptor(9, 4, 0, 0, 2, 0xFF, 0, 0, 0, (endpoint(0x81, "bulk", 512),), b"")
    refused(parse_configuration, config_bytes([lying]), "bNumEndpoints 2", "1 endpoint descriptors")
    lying = InterfaceDescriptor(9, 4, 0, 0, 0, 0xFF, 0, 0, 0, (endpoint(0x81, "bulk", 512),), b"")
    refused(parse_configuration, config_bytes([lying]), "bNumEndpoints 0")


def test_endpoint_zero_or_a_repeated_endpoint_in_one_alternate_is_refused():
    refused(parse_configuration, config_bytes([interface(0, 0xFF, 0, 0, [endpoint(0x80, "bulk", 64)])]),
            "endpoint 0")
    refused(parse_configuration, config_bytes([interface(0, 0xFF, 0, 0, [endpoint(0x81, "bulk", 64),
                                                                          endpoint(0x81, "bulk", 64)])]),
            "0x81 appears twice")
    refused(parse_configuration, config_bytes([interface(0, 0xFF, 0, 0, [endpoint(0x91, "bulk", 64)])]),
            "reserved bits")
    # the same endpoint in two alternates of one interface is how alternates work
    alternates = [interface(0, 0xFF, 0, 0, [endpoint(0x81, "bulk", 64)]),
                  interface(0, 0xFF, 0, 0, [endpoint(0x81, "bulk", 512)], alternate=1)]
    assert len(parse_configuration(config_bytes(alternates)).interfaces) == 2


def test_an_endpoint_shared_by_two_interfaces_is_refused():
    # Linux keeps the first interface's and silently drops the second's: two hosts, two devices
    sharing = [SIM_INTERFACES[0], interface(1, 0x0A, 0, 0, [endpoint(0x83, "bulk", 512)])]
    refused(parse_configuration, config_bytes(sharing), "endpoint 0x83 belongs to interface 0 and to interface 1")


def test_a_duplicate_interface_and_alternate_or_a_missing_alternate_zero_is_refused():
    twice = [SIM_INTERFACES[0], SIM_INTERFACES[0]]
    refused(parse_configuration, config_bytes(twice), "interface 0 alternate 0 is described twice")
    only_one = [interface(0, 0xFF, 0, 0, alternate=1)]
    refused(parse_configuration, config_bytes(only_one), "no alternate setting 0")


def test_an_association_covering_interfaces_that_do_not_exist_is_refused():
    beyond = InterfaceAssociation(1, 3, 0x02, 0x06, 0, 0)
    refused(parse_configuration, config_bytes(SIM_INTERFACES, [beyond]), "covers interfaces 1..3", "has 2")
    overlap = [InterfaceAssociation(0, 2, 0xFF, 0, 0, 0), InterfaceAssociation(1, 1, 0xFF, 0, 0, 0)]
    refused(parse_configuration, config_bytes(SIM_INTERFACES, overlap), "interface 1 is already")
    empty = InterfaceAssociation(0, 0, 0xFF, 0, 0, 0)
    refused(parse_configuration, config_bytes(SIM_INTERFACES, [empty]), "bInterfaceCount 0")


def test_configuration_value_zero_is_refused():
    refused(parse_configuration, config_bytes(SIM_INTERFACES, value=0), "bConfigurationValue 0")


@pytest.mark.parametrize("data, fragment", [
    (bytes([5, 3, 0x41, 0, 0x42]), "odd"),
    (bytes([4, 3, 0x00, 0xD8]), "not valid UTF-16LE"),                  # a lone high surrogate
    (bytes([6, 3, 0x00, 0xDC, 0x41, 0x00]), "not valid UTF-16LE"),      # a lone low surrogate
    (bytes([6, 3, 0x41, 0x00, 0x00, 0x00]), "U+0000"),                  # NUL padding
    (bytes([4, 3, 0x1B, 0x00]), "control character U+001B"),            # an escape sequence for a terminal
    (string_descriptor("HMC\u202emanagement"), "offset 0x8: invisible format character U+202E"),  # right-to-left override
    (bytes([8, 3, 0x41, 0x00]), "bLength 8, but 4 bytes came"),         # a short read
    (bytes([4, 3, 0x41, 0x00, 0x42, 0x00]), "bLength 4, but 6 bytes"),  # bytes past its end
    (bytes([4, 4, 0x41, 0x00]), "bDescriptorType 0x04"),
    (b"\x03", "too few"),
])
def test_a_malformed_string_is_refused(data, fragment):
    refused(parse_string, data, fragment)


@pytest.mark.parametrize("data, fragment", [
    (bytes([2, 3]), "no language ID"),
    (bytes([4, 3, 0, 0]), "0x0000 is zero"),
    (bytes([6, 3, 9, 4, 9, 4]), "0x0409 is repeated"),
    (bytes([5, 3, 9, 4, 0]), "odd"),
])
def test_malformed_langids_are_refused(data, fragment):
    refused(parse_langids, data, fragment)


@pytest.mark.parametrize("data, fragment", [
    (bytes([5, 0x0F, 12, 0, 1, 7, 0x10, 2, 0, 0, 0]), "wTotalLength 12"),
    (bytes([5, 0x0F, 12, 0, 2, 7, 0x10, 2, 0, 0, 0, 0]), "bNumDeviceCaps 2, but 1"),
    (bytes([5, 0x0F, 12, 0, 1, 8, 0x10, 2, 0, 0, 0, 0]), "runs past the end of the BOS"),
    (bytes([5, 0x0F, 12, 0, 1, 0, 0x10, 2, 0, 0, 0, 0]), "bLength 0"),
    (bytes([5, 0x0F, 12, 0, 1, 7, 0x04, 2, 0, 0, 0, 0]), "expected 0x10"),
    (bytes([5, 0x0F, 13, 0, 1, 8, 0x10, 2, 0, 0, 0, 0, 0]), "USB 2.0 extension): bLength 8, expected 7"),
    (bytes([5, 0x0F, 10, 0, 1, 5, 0x10, 5, 0, 0]), "(platform): bLength 5, under the 20"),
    (bytes([5, 0x0F, 7, 0, 1, 2, 0x10]), "2 bytes left"),
    (bytes([6, 0x0F, 6, 0, 0, 0]), "bLength 6, expected 5"),
    (bytes([5, 0x0F, 19, 0, 2]) + bytes([7, 0x10, 2, 2, 0, 0, 0]) * 2, "a second USB 2.0 extension"),
    (bytes([5, 0x0F, 21, 0, 1, 16, 0x10, 0x0A, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]),
     "SuperSpeedPlus USB): bLength 16, expected 20"),
])
def test_a_malformed_bos_is_refused(data, fragment):
    refused(parse_bos, data, fragment)


def test_non_bytes_are_refused():
    refused(parse_configuration, "not bytes", "expected bytes")
    with pytest.raises(DapError):
        dap.decode_connect("not bytes")


# --- hypothesis: round trip, arbitrary bytes, mutations ---


def _extras(types=(0x21, 0x24, 0x25, 0x30, 0x09, 0x03)):
    one = st.builds(lambda kind, body: bytes([2 + len(body), kind]) + body, st.sampled_from(types),
                    st.binary(max_size=8))
    return st.lists(one, max_size=2).map(b"".join)


ENDPOINT_ADDRESSES = [n | direction for n in range(1, 16) for direction in (0, 0x80)]


@st.composite
def endpoints_for(draw, cls, taken):
    """Endpoints of one alternate setting; `taken`: addresses other interfaces own."""
    addresses = draw(st.lists(st.sampled_from(ENDPOINT_ADDRESSES), unique=True, max_size=3))
    return tuple(EndpointDescriptor(draw(st.sampled_from((7, 9))) if cls == 0x01 else 7, 5, address,
                                    draw(st.integers(0, 0xFF)), draw(st.integers(0, 0xFFFF)),
                                    draw(st.integers(0, 0xFF)), draw(_extras((0x25, 0x30))))
                 for address in addresses if address not in taken)


@st.composite
def configurations(draw):
    count = draw(st.integers(0, 3))
    interfaces, taken = [], set()
    for number in range(count):
        owned = set()
        for alternate in range(draw(st.integers(1, 2))):
            cls = draw(st.sampled_from((0x01, 0x02, 0x03, 0x08, 0x0A, 0xE0, 0xFF)))
            eps = draw(endpoints_for(cls, taken))
            owned |= {e.bEndpointAddress for e in eps}
            interfaces.append(InterfaceDescriptor(9, 4, number, alternate, len(eps), cls, draw(st.integers(0, 0xFF)),
                                                  draw(st.integers(0, 0xFF)), draw(st.integers(0, 0xFF)), eps,
                                                  draw(_extras((0x21, 0x24)))))
        taken |= owned
    associations, first = [], 0
    while first < count and draw(st.booleans()):
        span = draw(st.integers(1, count - first))
        associations.append(InterfaceAssociation(first, span, *draw(st.tuples(*[st.integers(0, 0xFF)] * 4))))
        first += span + draw(st.integers(0, 1))
    return make_config(interfaces, associations, extra=draw(_extras()), value=draw(st.integers(1, 0xFF)),
                       attributes=draw(st.integers(0, 0xFF)), max_power=draw(st.integers(0, 0xFF)),
                       i_configuration=draw(st.integers(0, 0xFF)))


@settings(max_examples=60, deadline=None)
@given(configurations())
def test_round_trip_configuration(config):
    assert parse_configuration(encode_configuration(config)) == config


@settings(max_examples=60, deadline=None)
@given(st.text(st.characters(blacklist_categories=("Cc", "Cf", "Cs")), max_size=126))
def test_round_trip_string(text):
    raw = text.encode("utf-16-le")
    if len(raw) <= 253:
        assert parse_string(string_descriptor(text)) == text


@settings(max_examples=150, deadline=None)
@given(st.one_of(st.binary(max_size=300), st.binary(max_size=300).map(with_total),
                 st.binary(max_size=40).map(lambda b: bytes([len(b) + 2, 3]) + b)))
def test_arbitrary_bytes_raise_only_descriptor_error(data):
    for parse in (parse_configuration, parse_device_descriptor, parse_string, parse_langids, parse_bos):
        try:
            parse(data)
        except DescriptorError:
            pass
    framed_bos = bytes([5, 0x0F]) + struct.pack("<H", len(data) + 5) + bytes([data[0] if data else 0]) + data
    try:
        parse_bos(framed_bos)
    except DescriptorError:
        pass


_capabilities = st.one_of(
    st.builds(lambda attributes: bytes([7, 0x10, 0x02]) + struct.pack("<I", attributes), st.integers(0, 0xFFFFFFFF)),
    st.builds(lambda uuid: bytes([20, 0x10, 0x04, 0]) + uuid, st.binary(min_size=16, max_size=16)),
    st.builds(lambda body: bytes([4 + len(body), 0x10, 0x05, 0]) + body, st.binary(min_size=16, max_size=40)),
    st.builds(lambda kind, body: bytes([3 + len(body), 0x10, kind]) + body, st.integers(0x0C, 0xFF),
              st.binary(max_size=20)))


@settings(max_examples=60, deadline=None)
@given(st.lists(_capabilities, max_size=4))
def test_round_trip_bos(capabilities):
    kinds = [raw[2] for raw in capabilities]
    if len(set(kinds)) != len(kinds):  # a second capability of one kind is its own test
        return
    total = 5 + sum(map(len, capabilities))
    bos = BosDescriptor(total, len(capabilities), tuple((raw[2], raw) for raw in capabilities))
    assert parse_bos(struct.pack("<BBHB", 5, 0x0F, total, len(capabilities)) + b"".join(capabilities)) == bos


@settings(max_examples=30, deadline=None)
@given(st.lists(st.integers(1, 0xFFFF), unique=True, min_size=1, max_size=20))
def test_round_trip_langids(langids):
    assert parse_langids(bytes([2 + 2 * len(langids), 3]) + struct.pack(f"<{len(langids)}H", *langids)) == tuple(langids)


def _consistent(c: ConfigurationDescriptor, data: bytes) -> None:
    assert c.wTotalLength == len(data)
    assert sorted({i.bInterfaceNumber for i in c.interfaces}) == list(range(c.bNumInterfaces))
    for i in c.interfaces:
        assert len(i.endpoints) == i.bNumEndpoints
        assert len({e.bEndpointAddress for e in i.endpoints}) == len(i.endpoints)
        assert all(e.number != 0 for e in i.endpoints)
    assert len({(i.bInterfaceNumber, i.bAlternateSetting) for i in c.interfaces}) == len(c.interfaces)
    for a in c.associations:
        assert a.bInterfaceCount >= 1 and a.interface_numbers.stop <= c.bNumInterfaces


MUTABLE = encode_configuration(make_config(HIDDEN_NETIF, [ECM_ASSOCIATION]))


@settings(max_examples=150, deadline=None)
@given(st.integers(0, len(MUTABLE) - 1), st.integers(0, 0xFF), st.sampled_from(("truncate", "byte", "total")))
def test_mutations_of_a_valid_configuration_parse_consistently_or_raise(position, value, how):
    data = bytearray(MUTABLE)
    if how == "truncate":
        data = data[:position]
    elif how == "byte":
        data[position] = value
    else:
        data[2:4] = struct.pack("<H", position + value)
    try:
        config = parse_configuration(bytes(data))
    except DescriptorError:
        return
    _consistent(config, bytes(data))


# --- CMSIS-DAP: the codec ---


def info_response(data: bytes) -> bytes:
    return bytes([0x00, len(data)]) + data


SWD_IDCODE = 0x2BA01477
AHB_AP_IDR = 0x24770011


def test_commands_encode_as_the_reference_lays_them_out():
    assert dap.encode_info(dap.PACKET_SIZE) == b"\x00\xff"
    assert dap.encode_connect() == b"\x02\x01"
    assert dap.encode_swj_clock(1_000_000) == bytes([0x11, 0x40, 0x42, 0x0F, 0x00])
    assert dap.encode_transfer_configure(0, 100, 0) == bytes([0x04, 0, 100, 0, 0, 0])
    assert dap.encode_write_abort(dap.ABORT_CLEAR_ERRORS) == bytes([0x08, 0, 0x1E, 0, 0, 0])
    assert dap.encode_disconnect() == b"\x03"
    assert [dap.encode_swj_sequence(*s) for s in dap.LINE_RESET_AND_SWITCH] == [
        bytes([0x12, 51]) + b"\xff" * 7, bytes([0x12, 16, 0x9E, 0xE7]), bytes([0x12, 51]) + b"\xff" * 7,
        bytes([0x12, 8, 0x00])]
    assert dap.encode_swj_sequence(256, b"\xff" * 32)[:2] == b"\x12\x00"  # 0 means 256
    requests = [TransferRequest(ap=False, read=False, register=dap.DP_SELECT, value=dap.dp_select(0, dap.AP_IDR)),
                TransferRequest(ap=True, read=True, register=dap.AP_IDR & 0xC)]
    assert dap.encode_transfer(requests) == bytes([0x05, 0, 2, 0x08, 0xF0, 0, 0, 0, 0x0F])
    assert dap.encode_transfer_block(True, True, dap.AP_DRW, count=4) == bytes([0x06, 0, 4, 0, 0x0F])
    assert dap.encode_transfer_block(True, False, dap.AP_DRW, values=[1]) == bytes([0x06, 0, 1, 0, 0x0D, 1, 0, 0, 0])


def test_info_items_decode():
    assert dap.decode_info(dap.VENDOR, info_response(b"ARM\x00")) == "ARM"
    assert dap.decode_info(dap.PRODUCT, info_response(b"CMSIS-DAP")) == "CMSIS-DAP"  # no NUL: accepted
    assert dap.decode_info(dap.SERIAL, info_response(b"")) == ""
    assert dap.decode_info(dap.PACKET_SIZE, info_response(b"\x00\x02")) == 512
    assert dap.decode_info(dap.PACKET_COUNT, info_response(b"\x04")) == 4
    assert dap.decode_info(dap.CAPABILITIES, info_response(b"\x13")) == b"\x13"


@pytest.mark.parametrize("info_id, response, fragment", [
    (dap.VENDOR, info_response(b"AR\x00M\x00"), "a NUL at byte 2"),
    (dap.VENDOR, info_response(b"ARM\x00\x00"), "a NUL at byte 3"),
    (dap.VENDOR, info_response("Ärm".encode()), "not printable ASCII"),
    (dap.VENDOR, info_response(b"\x1b[2J\x00"), "not printable ASCII"),
    (dap.VENDOR, bytes([0, 5]) + b"ARM\x00", "short"),
    (dap.VENDOR, bytes([0, 3]) + b"ARM\x00", "1 bytes past its end"),
    (dap.VENDOR, b"\x00", "no length byte"),
    (dap.VENDOR, bytes([0x01, 3]) + b"ARM", "not the command id 0x00"),
    (dap.PACKET_SIZE, info_response(b"\x00\x02\x00"), "packet size.: 3 bytes, expected 2"),
    (dap.PACKET_SIZE, info_response(b""), "expected 2"),
    (dap.PACKET_SIZE, info_response(b"\x00\x00"), "packet size.: 0, outside 64..32768"),
    (dap.PACKET_COUNT, info_response(b"\x00"), "packet count.: 0, outside 1..255"),
    (dap.CAPABILITIES, info_response(b""), "expected 1 or 2"),
    (dap.VENDOR, b"\xff", "does not implement DAP_Info"),
    (dap.VENDOR, b"", "empty"),
])
def test_malformed_info_responses_are_refused(info_id, response, fragment):
    with pytest.raises(DapError, match=fragment.replace("[", r"\[")):
        dap.decode_info(info_id, response)


def test_status_and_connect_responses():
    dap.decode_status(dap.SWJ_CLOCK, b"\x11\x00")
    for response, fragment in [(b"\x11\xff", "DAP_ERROR"), (b"\x11\x01", "status 0x01"), (b"\x12\x00", "not the command"),
                               (b"\x11", "short"), (b"\x11\x00\x00", "past its end")]:
        with pytest.raises(DapError, match=fragment):
            dap.decode_status(dap.SWJ_CLOCK, response)
    assert dap.decode_connect(b"\x02\x01") == 1 and dap.decode_connect(b"\x02\x00") == 0
    for response in (b"\x02\x03", b"\x02", b"\x02\x01\x00", b"\x03\x01"):
        with pytest.raises(DapError):
            dap.decode_connect(response)


def transfer_response(count: int, ack: int, values=(), protocol_error=False) -> bytes:
    return bytes([0x05, count, ack | (0x08 if protocol_error else 0)]) + b"".join(struct.pack("<I", v) for v in values)


READ_IDCODE = TransferRequest(ap=False, read=True, register=dap.DP_IDCODE)
POWER_UP = TransferRequest(ap=False, read=False, register=dap.DP_CTRL_STAT, value=dap.CTRL_STAT_POWERUP_REQ)
READ_DRW = TransferRequest(ap=True, read=True, register=dap.AP_DRW)


def test_transfers_decode_with_one_value_per_completed_read():
    requests = [READ_IDCODE, POWER_UP, READ_DRW]
    result = dap.decode_transfer(transfer_response(3, dap.ACK_OK, [SWD_IDCODE, 0x12345678]), requests)
    assert result == TransferResult(3, dap.ACK_OK, False, (SWD_IDCODE, 0x12345678)) and result.ok
    fault = dap.decode_transfer(transfer_response(2, dap.ACK_FAULT, [SWD_IDCODE]), requests)
    assert (fault.count, fault.ack_name, fault.values, fault.ok) == (2, "FAULT", (SWD_IDCODE,), False)
    # a posted AP read whose closing RDBUFF read fails: counted, its value lost
    lost = dap.decode_transfer(transfer_response(1, dap.ACK_FAULT), [READ_DRW])
    assert (lost.count, lost.values) == (1, ())
    assert dap.ack_name(7) == "NO_ACK" and dap.ack_name(3) == "invalid ack 0b011"


@pytest.mark.parametrize("response, requests, fragment", [
    (transfer_response(2, dap.ACK_OK, [1, 2]), [READ_IDCODE], "2 transfers completed, but 1 were asked"),
    (transfer_response(1, dap.ACK_OK), [READ_IDCODE], "0 read values after 1 completed transfers, expected 1"),
    (transfer_response(1, dap.ACK_OK, [1, 2]), [READ_IDCODE], "2 read values"),
    (transfer_response(1, dap.ACK_OK, [1]) + b"\x00", [READ_IDCODE], "not whole 32-bit words"),
    (transfer_response(1, dap.ACK_OK, [1]), [READ_IDCODE, READ_IDCODE], "stopped without a reason"),
    (transfer_response(1, dap.ACK_FAULT, [1]), [READ_IDCODE], "all 1 transfers completed, yet the ack is FAULT"),
    (transfer_response(0, dap.ACK_FAULT, [1]), [READ_IDCODE], "1 read values after 0"),
    (bytes([0x05, 1, 0x11, 1, 0, 0, 0]), [READ_IDCODE], "value mismatch"),
    (bytes([0x05, 1, 0x41, 1, 0, 0, 0]), [READ_IDCODE], "reserved bits"),
    (bytes([0x05, 1]), [READ_IDCODE], "too few"),
    (bytes([0x06, 1, 1, 1, 0, 0, 0]), [READ_IDCODE], "not the command id 0x05"),
])
def test_malformed_transfer_responses_are_refused(response, requests, fragment):
    with pytest.raises(DapError, match=fragment):
        dap.decode_transfer(response, requests)


def test_transfer_blocks_decode():
    response = bytes([0x06, 2, 0, 1]) + struct.pack("<2I", 7, 8)
    assert dap.decode_transfer_block(response, read=True, count=2).values == (7, 8)
    assert dap.decode_transfer_block(bytes([0x06, 0, 0, 4]), read=True, count=2).ack == dap.ACK_FAULT
    for bad in (bytes([0x06, 3, 0, 1]) + bytes(12), bytes([0x06, 2, 0, 1]) + bytes(4), bytes([0x06, 1, 0, 1]) + bytes(4)):
        with pytest.raises(DapError):
            dap.decode_transfer_block(bad, read=True, count=2)


def test_invalid_transfer_requests_are_refused_before_they_are_sent():
    for kwargs in ({"register": 0x2}, {"read": True, "value": 1}, {"read": False}, {"read": False, "value": 1 << 32}):
        with pytest.raises(DapError):
            TransferRequest(**{"ap": False, "read": True, "register": 0, **kwargs})
    with pytest.raises(DapError):
        dap.encode_transfer([])
    with pytest.raises(DapError):
        dap.encode_swj_sequence(8, b"\x00\x00")


def test_adiv5_identification_registers_decode():
    idcode = dap.decode_idcode(SWD_IDCODE)
    assert (idcode.version, idcode.partno, idcode.designer, idcode.designer_name) == (2, 0xBA01, 0x23B, "Arm")
    idr = dap.decode_ap_idr(AHB_AP_IDR)
    assert (idr.revision, idr.designer, idr.ap_class, idr.variant, idr.ap_type) == (2, 0x23B, 0x8, 1, 1)
    assert idr.is_mem_ap and idr.present and idr.type_name == "AHB-AP"
    assert not dap.decode_ap_idr(0).present
    assert dap.dp_select(0, dap.AP_IDR) == 0xF0 and dap.dp_select(1, dap.AP_CSW) == 0x01000000
    for bad in (0, 0xFFFFFFFF, 1 << 32, -1):
        with pytest.raises(DapError):
            dap.decode_idcode(bad)
    with pytest.raises(DapError, match="reserved bits 12-8"):
        dap.decode_ap_idr(AHB_AP_IDR | 0x100)


def _sim_probe(profile: str):
    from fixtures.sim.__main__ import load_profile
    from fixtures.sim.usb import DapFirmware, SwdTarget

    usb = load_profile(profile)["usb"]
    target = SwdTarget(usb["swd"])
    return DapFirmware(usb["dap"], target), target


def _read_memory_through(firmware, address: int) -> tuple[int, dap.TransferResult]:
    """The debug_port sequence, through the codec alone: identify, power up, select AP 0, read a word."""
    assert dap.decode_info(dap.PACKET_SIZE, firmware.command(dap.encode_info(dap.PACKET_SIZE))) == 512
    assert dap.decode_connect(firmware.command(dap.encode_connect())) == dap.PORT_SWD
    for bits, data in dap.LINE_RESET_AND_SWITCH:
        dap.decode_status(dap.SWJ_SEQUENCE, firmware.command(dap.encode_swj_sequence(bits, data)))
    ident = [READ_IDCODE, TransferRequest(False, False, dap.DP_ABORT, dap.ABORT_CLEAR_ERRORS), POWER_UP,
             TransferRequest(False, True, dap.DP_CTRL_STAT),
             TransferRequest(False, False, dap.DP_SELECT, dap.dp_select(0, dap.AP_IDR)),
             TransferRequest(True, True, dap.AP_IDR & 0xC)]
    result = dap.decode_transfer(firmware.command(dap.encode_transfer(ident)), ident)
    idcode, ctrl_stat, idr = result.values
    assert result.ok and dap.decode_idcode(idcode).designer_name == "Arm"
    assert ctrl_stat & dap.CTRL_STAT_POWERUP_ACK == dap.CTRL_STAT_POWERUP_ACK
    assert dap.decode_ap_idr(idr).type_name == "AHB-AP"
    read = [TransferRequest(False, False, dap.DP_SELECT, dap.dp_select(0, dap.AP_CSW)),
            TransferRequest(True, True, dap.AP_CSW), TransferRequest(True, False, dap.AP_TAR, address), READ_DRW]
    result = dap.decode_transfer(firmware.command(dap.encode_transfer(read)), read)
    return result.values[0], result


def test_the_codec_reads_the_simulated_locked_probe_as_refused_and_the_unlocked_one_as_memory():
    # fixtures/sim/usb.py answers with its own CMSIS-DAP firmware model: an independent implementation
    locked, _ = _sim_probe("clean")
    csw, result = _read_memory_through(locked, 0x100)
    assert not csw & dap.CSW_DEVICE_EN and (result.count, result.ack_name, result.values) == (3, "FAULT", (csw,))
    unlocked, target = _sim_probe("debug-unlocked")
    csw, result = _read_memory_through(unlocked, 0x100)
    assert csw & dap.CSW_DEVICE_EN and result.ok
    assert result.values[1] == int.from_bytes(target.memory[0x100:0x104], "little")


# --- CMSIS-DAP: hypothesis ---


requests_strategy = st.lists(st.builds(
    lambda ap, read, register, value: TransferRequest(ap, read, register, None if read else value),
    st.booleans(), st.booleans(), st.sampled_from((0x0, 0x4, 0x8, 0xC)), st.integers(0, 0xFFFFFFFF)),
    min_size=1, max_size=12)


@st.composite
def transfer_outcomes(draw):
    """A probe's honest answer: the first `count` completed, then maybe a failure."""
    requests = draw(requests_strategy)
    count = draw(st.integers(0, len(requests)))
    ack = dap.ACK_OK if count == len(requests) else draw(st.sampled_from((2, 4, 7)))
    reads = sum(1 for r in requests[:count] if r.read)
    values = tuple(draw(st.lists(st.integers(0, 0xFFFFFFFF), min_size=reads, max_size=reads)))
    return requests, TransferResult(count, ack, False, values)


@settings(max_examples=100, deadline=None)
@given(transfer_outcomes())
def test_round_trip_transfer(outcome):
    requests, result = outcome
    response = transfer_response(result.count, result.ack, result.values)
    assert dap.decode_transfer(response, requests) == result
    assert dap.encode_transfer(requests)[2] == len(requests)


@settings(max_examples=60, deadline=None)
@given(st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=60), st.booleans())
def test_round_trip_info_string(text, nul):
    assert dap.decode_info(dap.FIRMWARE, info_response(text.encode() + (b"\x00" if nul else b""))) == text


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=80), requests_strategy, st.integers(0, 0xFF))
def test_arbitrary_responses_raise_only_dap_error(data, requests, info_id):
    for decode in (lambda r: dap.decode_info(info_id, r), dap.decode_connect,
                   lambda r: dap.decode_status(r[0] if r else 0, r),
                   lambda r: dap.decode_transfer(r, requests), lambda r: dap.decode_transfer_block(r, True, 4),
                   lambda r: dap.decode_transfer_block(r, False, 4)):
        try:
            decode(data)
        except DapError:
            pass
    # the same bytes behind the right command id reach the body checks
    for command, decode in ((0x00, lambda r: dap.decode_info(info_id, r)),
                            (0x05, lambda r: dap.decode_transfer(r, requests))):
        try:
            decode(bytes([command]) + data)
        except DapError:
            pass
    value = int.from_bytes(data[:4].ljust(4, b"\x00"), "little")
    for decode in (dap.decode_idcode, dap.decode_ap_idr):
        try:
            decode(value)
        except DapError:
            pass
