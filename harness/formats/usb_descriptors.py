"""Decoder for the standard USB descriptors a device returns to GET_DESCRIPTOR.

    device          18 bytes, type 0x01                                    (USB 2.0 §9.6.1)
    configuration   9 bytes, type 0x02, then wTotalLength bytes in all: the interfaces, their
                    endpoints, interface associations (0x0B) and class-specific descriptors
                    (0x21 HID, 0x24 CS_INTERFACE, 0x25 CS_ENDPOINT, ...) in order     (§9.6.3)
    interface       9 bytes, type 0x04; endpoint 7 bytes (9 in an audio interface), type 0x05
    IAD             8 bytes, type 0x0B                                     (USB 2.0 ECN IAD)
    device qualifier 10 bytes, type 0x06; other-speed configuration: a configuration's layout
                    with type 0x07 (what a high-speed device is at full speed) (§9.6.2, §9.6.4)
    string          type 0x03: index 0 lists the LANGIDs, the others are UTF-16LE text (§9.6.7)
    BOS             5 bytes, type 0x0F, then bNumDeviceCaps device capabilities (type 0x10),
                    wTotalLength bytes in all                              (USB 3.2 §9.6.2)

Descriptors attach to what they follow, as libusb does: class-specific descriptors before the
first interface are the configuration's `extra`, those after an interface (before its first
endpoint) the interface's, those after an endpoint the endpoint's.

The bytes come from a device that may lie, and what the host enumerates is what it decides on,
so the decoder is strict and raises DescriptorError, naming the descriptor, its offset and why,
on anything a well-formed device would not send: a length that runs past the data or is under 2
(a naive walk would loop on 0), a total length that disagrees with the data, a fixed-size
descriptor of another size, an endpoint before any interface, a device or configuration
descriptor inside a configuration, interface numbers that are not 0..bNumInterfaces-1 (Linux
ignores the others: a function hidden from one host and seen by another), an alternate setting
given twice or without its alternate 0, endpoint counts that disagree with bNumEndpoints,
endpoint 0 or a repeated endpoint in one alternate setting, an association that covers
interfaces the configuration does not have, strings of odd length, invalid UTF-16, control
characters or invisible ones (bidirectional overrides, zero-width). Every step of every walk
advances by at least 2 bytes through at most 65535, so no walk can hang.
"""

from __future__ import annotations

import struct
import uuid
import unicodedata
from dataclasses import dataclass

__all__ = [
    "BosDescriptor", "CompatibleId", "ConfigurationDescriptor", "DescriptorError", "DeviceDescriptor",
    "DeviceQualifier",
    "EndpointDescriptor", "ExtendedCompatIds",
    "InterfaceAssociation", "InterfaceDescriptor", "NETWORK_FUNCTION_CLASSES", "PLATFORM_NAMES",
    "capability_name", "length_mismatch", "parse_extended_compat_ids", "parse_ms_os_string", "platform_uuid",
    "interface_class_name", "is_network_function", "parse_bos", "parse_configuration",
    "parse_device_descriptor", "parse_device_qualifier", "parse_langids", "parse_string",
]

# bDescriptorType values (USB 2.0 table 9-5, USB 3.2 table 9-6)
DEVICE = 0x01
CONFIGURATION = 0x02
STRING = 0x03
INTERFACE = 0x04
ENDPOINT = 0x05
DEVICE_QUALIFIER = 0x06
OTHER_SPEED_CONFIGURATION = 0x07
INTERFACE_ASSOCIATION = 0x0B
BOS = 0x0F
DEVICE_CAPABILITY = 0x10

DEVICE_SIZE = 18
DEVICE_QUALIFIER_SIZE = 10
CONFIGURATION_SIZE = 9
INTERFACE_SIZE = 9
ENDPOINT_SIZES = (7,)
AUDIO_ENDPOINT_SIZES = (7, 9)  # audio class 1.0 endpoints add bRefresh and bSynchAddress
IAD_SIZE = 8
BOS_SIZE = 5
CAPABILITY_HEADER = 3

AUDIO_CLASS = 0x01
MAX_ENDPOINTS_PER_ALTERNATE = 30  # 15 numbers, each in and out

_TRANSFER_TYPES = ("control", "isochronous", "bulk", "interrupt")
_DESCRIPTOR_NAMES = {
    DEVICE: "device", CONFIGURATION: "configuration", STRING: "string", INTERFACE: "interface",
    ENDPOINT: "endpoint", 0x06: "device qualifier", OTHER_SPEED_CONFIGURATION: "other-speed configuration",
    0x08: "interface power", 0x09: "OTG", 0x0A: "debug", INTERFACE_ASSOCIATION: "interface association",
    BOS: "BOS", DEVICE_CAPABILITY: "device capability", 0x21: "HID", 0x24: "class-specific interface",
    0x25: "class-specific endpoint", 0x30: "SuperSpeed endpoint companion",
    0x31: "SuperSpeedPlus isochronous endpoint companion",
}

# Device capability types (USB 3.2 table 9-14) and the size of those whose size is fixed.
CAPABILITY_NAMES = {
    0x01: "wireless USB", 0x02: "USB 2.0 extension", 0x03: "SuperSpeed USB", 0x04: "container ID",
    0x05: "platform", 0x06: "power delivery", 0x07: "battery info", 0x08: "PD consumer port",
    0x09: "PD provider port", 0x0A: "SuperSpeedPlus USB", 0x0B: "precision time measurement",
    0x0C: "wireless USB extension", 0x0D: "billboard", 0x0E: "authentication", 0x0F: "billboard extension",
    0x10: "configuration summary", 0x11: "firmware status",
}
USB2_EXTENSION = 0x02
SUPERSPEED_PLUS = 0x0A
_CAPABILITY_SIZES = {USB2_EXTENSION: 7, 0x03: 10, 0x04: 20, 0x0B: 4}
# Capabilities a device has at most once: a second one contradicts the first.
SINGLE_CAPABILITIES = frozenset({USB2_EXTENSION, 0x03, 0x04, SUPERSPEED_PLUS})
_PLATFORM_MIN_SIZE = 20  # 4 header bytes + a 16-byte UUID, then the platform's own data
PLATFORM = 0x05
# Platform capabilities a host acts on by itself: Windows asks a Microsoft OS 2.0 descriptor set
# (which can give a vendor interface the compatible ID RNDIS: Windows' network driver binds);
# Chrome offers a WebUSB device to web pages.
PLATFORM_NAMES = {
    "d8dd60df-4589-4cc7-9cd2-659d9e648a9f": "Microsoft OS 2.0 descriptors",
    "3408b638-09a9-47a0-8bfd-a0768815b665": "WebUSB",
}


def platform_uuid(raw: bytes) -> str:
    """The PlatformCapabilityUUID of a platform capability descriptor (bytes 4..19, a GUID as USB
    stores it: its first three fields little-endian), as lower-case text."""
    if len(raw) < _PLATFORM_MIN_SIZE or raw[2] != PLATFORM:
        raise DescriptorError(f"platform capability: {len(raw)} bytes of type {raw[2] if len(raw) > 2 else None}, "
                              f"not a platform capability with its UUID")
    return str(uuid.UUID(bytes_le=bytes(raw[4:20])))


_REFUSED_CATEGORIES = {"Cc": "control character", "Cf": "invisible format character"}


class DescriptorError(ValueError):
    """The descriptor bytes are not what a well-formed device sends; the message names the
    descriptor, its offset and why."""


def _descriptor_name(kind: int) -> str:
    return _DESCRIPTOR_NAMES.get(kind, f"type {kind:#04x}")


def capability_name(capability_type: int) -> str:
    return CAPABILITY_NAMES.get(capability_type, f"capability {capability_type:#04x}")


# --- interface classes (usb.org "Defined Class Codes") ---

_CDC_SUBCLASSES = {
    0x01: "CDC direct line", 0x02: "CDC-ACM serial", 0x03: "CDC telephone", 0x04: "CDC multi-channel",
    0x05: "CDC CAPI", 0x06: "CDC-ECM network", 0x07: "CDC-ATM network", 0x08: "CDC wireless handset",
    0x09: "CDC device management", 0x0A: "CDC mobile direct line", 0x0B: "CDC OBEX", 0x0C: "CDC-EEM network",
    0x0D: "CDC-NCM network", 0x0E: "CDC-MBIM network",
}
_CLASSES = {
    0x01: "audio", 0x02: "CDC control", 0x03: "HID", 0x05: "physical", 0x06: "still image", 0x07: "printer",
    0x08: "mass storage", 0x09: "hub", 0x0A: "CDC data", 0x0B: "smart card", 0x0D: "content security",
    0x0E: "video", 0x0F: "personal healthcare", 0x10: "audio/video", 0x11: "billboard", 0x12: "USB-C bridge",
    0x13: "bulk display", 0x14: "MCTP", 0x3C: "I3C", 0xDC: "diagnostic", 0xE0: "wireless controller",
    0xEF: "miscellaneous", 0xFE: "application-specific", 0xFF: "vendor-specific",
}
# (class, subclass, protocol) → name; None matches any value. The first match wins.
_FUNCTIONS: tuple[tuple[int, int | None, int | None, str], ...] = (
    (0x02, 0x02, 0xFF, "RNDIS network"),           # Microsoft's RNDIS: CDC-ACM with a vendor protocol
    (0xE0, 0x01, 0x03, "RNDIS network"),           # wireless RNDIS, as Linux's rndis_host binds it
    (0xEF, 0x04, None, "RNDIS network"),           # miscellaneous class: RNDIS over Ethernet, Wi-Fi, WWAN, ...
    (0xE0, 0x01, 0x01, "Bluetooth"),
    (0x03, 0x01, 0x01, "HID keyboard"),
    (0x03, 0x01, 0x02, "HID mouse"),
    (0xFE, 0x01, None, "DFU firmware update"),
    (0xFE, 0x03, None, "USBTMC test and measurement"),
)
# Functions that move network frames: undeclared, one is an egress path around the host's network.
NETWORK_FUNCTION_CLASSES: tuple[tuple[int, int | None, int | None], ...] = (
    (0x02, 0x06, None),   # CDC-ECM
    (0x02, 0x0D, None),   # CDC-NCM
    (0x02, 0x0C, None),   # CDC-EEM
    (0x02, 0x0E, None),   # CDC-MBIM
    (0x02, 0x07, None),   # CDC-ATM
    (0x02, 0x02, 0xFF),   # RNDIS
    (0x0A, None, None),   # CDC data: the data half of any of the above
    (0xE0, 0x01, 0x03),   # wireless RNDIS
    (0xEF, 0x04, None),   # RNDIS (miscellaneous class)
)


def _matches(pattern: tuple[int | None, ...], values: tuple[int, ...]) -> bool:
    return all(p is None or p == v for p, v in zip(pattern, values))


def interface_class_name(cls: int, subclass: int, protocol: int) -> str:
    """What an interface (or function) of this class triple is, in the field's words."""
    values = (cls, subclass, protocol)
    for *pattern, name in _FUNCTIONS:
        if _matches(tuple(pattern), values):
            return name
    if cls == 0x02 and subclass in _CDC_SUBCLASSES:
        return _CDC_SUBCLASSES[subclass]
    return _CLASSES.get(cls, f"class {cls:#04x}")


def is_network_function(cls: int, subclass: int, protocol: int) -> bool:
    return any(_matches(pattern, (cls, subclass, protocol)) for pattern in NETWORK_FUNCTION_CLASSES)


# --- descriptors ---


@dataclass(frozen=True)
class DeviceDescriptor:
    bLength: int
    bDescriptorType: int
    bcdUSB: int
    bDeviceClass: int
    bDeviceSubClass: int
    bDeviceProtocol: int
    bMaxPacketSize0: int
    idVendor: int
    idProduct: int
    bcdDevice: int
    iManufacturer: int
    iProduct: int
    iSerialNumber: int
    bNumConfigurations: int

    @property
    def string_indices(self) -> tuple[int, ...]:
        return tuple(i for i in (self.iManufacturer, self.iProduct, self.iSerialNumber) if i)


@dataclass(frozen=True)
class EndpointDescriptor:
    bLength: int
    bDescriptorType: int
    bEndpointAddress: int
    bmAttributes: int
    wMaxPacketSize: int
    bInterval: int
    extra: bytes  # descriptors after it (SuperSpeed companion, class-specific endpoint, ...)

    @property
    def number(self) -> int:
        return self.bEndpointAddress & 0x0F

    @property
    def direction(self) -> str:
        return "in" if self.bEndpointAddress & 0x80 else "out"

    @property
    def transfer_type(self) -> str:
        return _TRANSFER_TYPES[self.bmAttributes & 0x03]

    @property
    def max_packet_size(self) -> int:
        """Bytes per transaction (bits 0-10; bits 11-12 count extra high-bandwidth transactions)."""
        return self.wMaxPacketSize & 0x7FF


@dataclass(frozen=True)
class InterfaceDescriptor:
    bLength: int
    bDescriptorType: int
    bInterfaceNumber: int
    bAlternateSetting: int
    bNumEndpoints: int
    bInterfaceClass: int
    bInterfaceSubClass: int
    bInterfaceProtocol: int
    iInterface: int
    endpoints: tuple[EndpointDescriptor, ...]
    extra: bytes  # class-specific descriptors after it, before its first endpoint

    @property
    def class_name(self) -> str:
        return interface_class_name(self.bInterfaceClass, self.bInterfaceSubClass, self.bInterfaceProtocol)


@dataclass(frozen=True)
class InterfaceAssociation:
    bFirstInterface: int
    bInterfaceCount: int
    bFunctionClass: int
    bFunctionSubClass: int
    bFunctionProtocol: int
    iFunction: int

    @property
    def interface_numbers(self) -> range:
        return range(self.bFirstInterface, self.bFirstInterface + self.bInterfaceCount)


@dataclass(frozen=True)
class ConfigurationDescriptor:
    bLength: int
    bDescriptorType: int
    wTotalLength: int
    bNumInterfaces: int
    bConfigurationValue: int
    iConfiguration: int
    bmAttributes: int
    bMaxPower: int
    interfaces: tuple[InterfaceDescriptor, ...]  # every alternate setting, in the order sent
    associations: tuple[InterfaceAssociation, ...]
    extra: bytes  # class-specific descriptors before the first interface

    @property
    def self_powered(self) -> bool:
        return bool(self.bmAttributes & 0x40)

    @property
    def remote_wakeup(self) -> bool:
        return bool(self.bmAttributes & 0x20)

    @property
    def string_indices(self) -> tuple[int, ...]:
        """Every string index the configuration names: its own, its interfaces', its functions'."""
        indices = [self.iConfiguration, *(i.iInterface for i in self.interfaces),
                   *(a.iFunction for a in self.associations)]
        return tuple(sorted({i for i in indices if i}))


@dataclass(frozen=True)
class BosDescriptor:
    wTotalLength: int
    bNumDeviceCaps: int
    capabilities: tuple[tuple[int, bytes], ...]  # (bDevCapabilityType, the raw capability descriptor)

    def capability(self, capability_type: int) -> bytes | None:
        return next((raw for kind, raw in self.capabilities if kind == capability_type), None)


def _u16(data: bytes, at: int) -> int:
    return struct.unpack_from("<H", data, at)[0]


def _header(data: bytes, kind: int, name: str, size: int) -> None:
    """The descriptor at offset 0 is `size` bytes of type `kind`, and `data` holds all of it."""
    if len(data) < 2:
        raise DescriptorError(f"{name} descriptor at offset 0x0: {len(data)} bytes, too few for its header")
    if data[1] != kind:
        raise DescriptorError(f"{name} descriptor at offset 0x0: bDescriptorType {data[1]:#04x}, "
                              f"expected {kind:#04x} ({name})")
    if data[0] != size:
        raise DescriptorError(f"{name} descriptor at offset 0x0: bLength {data[0]}, expected {size}")
    if len(data) < size:
        raise DescriptorError(f"{name} descriptor at offset 0x0: {len(data)} bytes, bLength says {size}: "
                              f"cut off")


def _bytes(data: bytes | bytearray | memoryview, name: str) -> bytes:
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise DescriptorError(f"{name} descriptor: expected bytes, got {type(data).__name__}")
    return bytes(data)


def _whole(data: bytes | bytearray | memoryview, kind: int, name: str, size: int) -> bytes:
    """`data` is one fixed-size descriptor of type `kind`, exactly: no byte short, none past it."""
    data = _bytes(data, name)
    _header(data, kind, name, size)
    if len(data) != size:
        raise DescriptorError(f"{name} descriptor at offset 0x0: {len(data)} bytes, expected exactly "
                              f"{size}: {len(data) - size} bytes past its end")
    return data


def parse_device_descriptor(data: bytes) -> DeviceDescriptor:
    """The 18-byte device descriptor, exactly."""
    device = DeviceDescriptor(*struct.unpack("<BBHBBBBHHHBBBB", _whole(data, DEVICE, "device", DEVICE_SIZE)))
    # bMaxPacketSize0 is a byte count up to USB 2.x, an exponent (9: 512 bytes) from USB 3.0 on.
    allowed = (8, 16, 32, 64, 9) if device.bcdUSB >= 0x0300 else (8, 16, 32, 64)
    if device.bMaxPacketSize0 not in allowed:
        raise DescriptorError(f"device descriptor at offset 0x7: bMaxPacketSize0 {device.bMaxPacketSize0} is not "
                              f"one of {allowed} (bcdUSB {device.bcdUSB:#06x})")
    if device.bNumConfigurations == 0:
        raise DescriptorError("device descriptor at offset 0x11: bNumConfigurations 0: a device has at least one")
    return device


@dataclass(frozen=True)
class DeviceQualifier:
    """What a high-speed capable device would be at the other speed (USB 2.0 §9.6.2): its
    configurations there are read with GET_DESCRIPTOR(OTHER_SPEED_CONFIGURATION)."""

    bLength: int
    bDescriptorType: int
    bcdUSB: int
    bDeviceClass: int
    bDeviceSubClass: int
    bDeviceProtocol: int
    bMaxPacketSize0: int
    bNumConfigurations: int
    bReserved: int


def parse_device_qualifier(data: bytes) -> DeviceQualifier:
    """The 10-byte device qualifier, exactly."""
    data = _whole(data, DEVICE_QUALIFIER, "device qualifier", DEVICE_QUALIFIER_SIZE)
    qualifier = DeviceQualifier(*struct.unpack("<BBHBBBBBB", data))
    if qualifier.bMaxPacketSize0 not in (8, 16, 32, 64):
        raise DescriptorError(f"device qualifier descriptor at offset 0x6: bMaxPacketSize0 "
                              f"{qualifier.bMaxPacketSize0} is not one of (8, 16, 32, 64)")
    if qualifier.bNumConfigurations == 0:
        raise DescriptorError("device qualifier descriptor at offset 0x8: bNumConfigurations 0: a device has at "
                              "least one")
    if qualifier.bReserved:
        raise DescriptorError(f"device qualifier descriptor at offset 0x9: bReserved {qualifier.bReserved}, must "
                              f"be 0")
    return qualifier


class _Interface:
    """An interface descriptor (one alternate setting) being filled in by the walk."""

    def __init__(self, raw: bytes, offset: int, where: str, seen: set[tuple[int, int]]):
        if len(raw) != INTERFACE_SIZE:
            raise DescriptorError(f"{where}: bLength {len(raw)}, expected {INTERFACE_SIZE}")
        self.fields = struct.unpack("<9B", raw)
        self.number, self.alternate, self.count, self.cls = self.fields[2:6]
        if (self.number, self.alternate) in seen:
            raise DescriptorError(f"{where}: interface {self.number} alternate {self.alternate} is described twice")
        if self.count > MAX_ENDPOINTS_PER_ALTERNATE:
            raise DescriptorError(f"{where}: bNumEndpoints {self.count}, more than the "
                                  f"{MAX_ENDPOINTS_PER_ALTERNATE} endpoints a device can have")
        seen.add((self.number, self.alternate))
        self.offset = offset
        self.extra = bytearray()
        self.endpoints: list[tuple[tuple[int, ...], bytearray]] = []

    def add_endpoint(self, raw: bytes, where: str) -> None:
        sizes = AUDIO_ENDPOINT_SIZES if self.cls == AUDIO_CLASS else ENDPOINT_SIZES
        if len(raw) not in sizes:
            raise DescriptorError(f"{where}: bLength {len(raw)}, expected {' or '.join(map(str, sizes))}")
        address, attributes, packet, interval = struct.unpack_from("<BBHB", raw, 2)
        owner = f"interface {self.number} alternate {self.alternate}"
        if address & 0x0F == 0:
            raise DescriptorError(f"{where}: endpoint address {address:#04x} in {owner}: endpoint 0 is the "
                                  f"default control pipe, never an interface's")
        if address & 0x70:
            raise DescriptorError(f"{where}: endpoint address {address:#04x} in {owner} sets reserved bits 4-6")
        if any(fields[2] == address for fields, _ in self.endpoints):
            raise DescriptorError(f"{where}: endpoint {address:#04x} appears twice in {owner}")
        self.endpoints.append(((len(raw), ENDPOINT, address, attributes, packet, interval), bytearray()))

    def add_extra(self, raw: bytes) -> None:
        """A class-specific descriptor: the last endpoint's, or the interface's before any endpoint."""
        (self.endpoints[-1][1] if self.endpoints else self.extra).extend(raw)

    def finish(self) -> InterfaceDescriptor:
        if len(self.endpoints) != self.count:
            raise DescriptorError(f"interface descriptor at offset {self.offset:#x} (interface {self.number} "
                                  f"alternate {self.alternate}): bNumEndpoints {self.count}, but "
                                  f"{len(self.endpoints)} endpoint descriptors follow it")
        endpoints = tuple(EndpointDescriptor(*fields, extra=bytes(extra)) for fields, extra in self.endpoints)
        return InterfaceDescriptor(*self.fields, endpoints=endpoints, extra=bytes(self.extra))


def parse_configuration(data: bytes, other_speed: bool = False) -> ConfigurationDescriptor:
    """The full configuration (wTotalLength bytes): every interface, endpoint and association.
    `other_speed`: an other-speed configuration (type 0x07, the same layout: USB 2.0 §9.6.4)."""
    data = _bytes(data, "configuration")
    if other_speed:
        _header(data, OTHER_SPEED_CONFIGURATION, "other-speed configuration", CONFIGURATION_SIZE)
    else:
        _header(data, CONFIGURATION, "configuration", CONFIGURATION_SIZE)
    (b_length, b_type, total, num_interfaces, value, i_configuration, attributes,
     max_power) = struct.unpack_from("<BBHBBBBB", data)
    if total != len(data):
        raise DescriptorError(f"configuration descriptor at offset 0x2: wTotalLength {total}, but the data is "
                              f"{len(data)} bytes")
    if value == 0:
        raise DescriptorError("configuration descriptor at offset 0x5: bConfigurationValue 0 is reserved for "
                              "the unconfigured state")
    extra = bytearray()
    associations: list[tuple[InterfaceAssociation, int]] = []
    interfaces: list[InterfaceDescriptor] = []
    current: _Interface | None = None
    seen: set[tuple[int, int]] = set()
    offset = CONFIGURATION_SIZE
    index = 1
    while offset < len(data):
        left = len(data) - offset
        if left < 2:
            raise DescriptorError(f"descriptor {index} at offset {offset:#x}: {left} byte left, too few for a "
                                  f"descriptor header (wTotalLength {total})")
        length, kind = data[offset], data[offset + 1]
        where = f"{_descriptor_name(kind)} descriptor {index} at offset {offset:#x}"
        if length < 2:
            raise DescriptorError(f"{where}: bLength {length}, under the 2 bytes of its own header: the walk "
                                  f"cannot advance")
        if length > left:
            raise DescriptorError(f"{where}: bLength {length} runs past the end of the configuration ({left} "
                                  f"bytes left of wTotalLength {total})")
        raw = data[offset:offset + length]
        if kind in (DEVICE, CONFIGURATION, OTHER_SPEED_CONFIGURATION):
            raise DescriptorError(f"{where}: a {_descriptor_name(kind)} descriptor inside the configuration")
        if kind == INTERFACE:
            if current is not None:
                interfaces.append(current.finish())
            current = _Interface(raw, offset, where, seen)
        elif kind == ENDPOINT:
            if current is None:
                raise DescriptorError(f"{where}: an endpoint before any interface descriptor")
            current.add_endpoint(raw, where)
        elif kind == INTERFACE_ASSOCIATION:
            if length != IAD_SIZE:
                raise DescriptorError(f"{where}: bLength {length}, expected {IAD_SIZE}")
            association = InterfaceAssociation(*struct.unpack_from("<6B", raw, 2))
            if association.bInterfaceCount == 0:
                raise DescriptorError(f"{where}: bInterfaceCount 0: an association of no interface")
            associations.append((association, offset))
        elif current is None:
            extra += raw
        else:
            current.add_extra(raw)
        offset += length
        index += 1
    if current is not None:
        interfaces.append(current.finish())
    _check_interface_numbers(interfaces, num_interfaces)
    _check_shared_endpoints(interfaces)
    _check_associations(associations, num_interfaces)
    return ConfigurationDescriptor(
        bLength=b_length, bDescriptorType=b_type, wTotalLength=total, bNumInterfaces=num_interfaces,
        bConfigurationValue=value, iConfiguration=i_configuration, bmAttributes=attributes, bMaxPower=max_power,
        interfaces=tuple(interfaces), associations=tuple(a for a, _ in associations), extra=bytes(extra))


def _check_interface_numbers(interfaces: list[InterfaceDescriptor], declared: int) -> None:
    numbers = sorted({i.bInterfaceNumber for i in interfaces})
    if numbers != list(range(declared)):
        raise DescriptorError(f"configuration descriptor at offset 0x4: bNumInterfaces {declared}, but the "
                              f"interfaces described are numbered {numbers or 'none'} (expected 0.."
                              f"{declared - 1 if declared else 'none'})")
    alternates = {(i.bInterfaceNumber, i.bAlternateSetting) for i in interfaces}
    for number in numbers:
        if (number, 0) not in alternates:
            raise DescriptorError(f"configuration: interface {number} has no alternate setting 0")


def _check_shared_endpoints(interfaces: list[InterfaceDescriptor]) -> None:
    # Alternates of one interface reuse its endpoints; two interfaces never share one (Linux
    # keeps the first and drops the other's: config.c, config_endpoint_is_duplicate).
    owner: dict[int, int] = {}
    for i in interfaces:
        for e in i.endpoints:
            first = owner.setdefault(e.bEndpointAddress, i.bInterfaceNumber)
            if first != i.bInterfaceNumber:
                raise DescriptorError(f"configuration: endpoint {e.bEndpointAddress:#04x} belongs to interface "
                                      f"{first} and to interface {i.bInterfaceNumber}")


def _check_associations(associations: list[tuple[InterfaceAssociation, int]], declared: int) -> None:
    covered: dict[int, int] = {}
    for association, offset in associations:
        numbers = association.interface_numbers
        where = f"interface association descriptor at offset {offset:#x}"
        if numbers.stop > declared:
            raise DescriptorError(f"{where}: covers interfaces {numbers.start}..{numbers.stop - 1}, but the "
                                  f"configuration has {declared} (0..{declared - 1})")
        for number in numbers:
            if number in covered:
                raise DescriptorError(f"{where}: interface {number} is already in the association at offset "
                                      f"{covered[number]:#x}")
            covered[number] = offset


def _string_header(data: bytes, name: str) -> None:
    if len(data) < 2:
        raise DescriptorError(f"{name} at offset 0x0: {len(data)} bytes, too few for a descriptor header")
    if data[1] != STRING:
        raise DescriptorError(f"{name} at offset 0x0: bDescriptorType {data[1]:#04x}, expected 0x03 (string)")
    if data[0] != len(data):
        raise DescriptorError(f"{name} at offset 0x0: bLength {data[0]}, but {len(data)} bytes came")
    if len(data) % 2:
        raise DescriptorError(f"{name} at offset 0x0: bLength {data[0]} is odd: UTF-16 code units are 2 bytes")


def parse_string(data: bytes) -> str:
    """A string descriptor's text: strict UTF-16LE, no lone surrogates, no control characters."""
    data = _bytes(data, "string")
    _string_header(data, "string descriptor")
    try:
        text = data[2:].decode("utf-16-le")
    except UnicodeDecodeError as exc:
        raise DescriptorError(f"string descriptor at offset {2 + exc.start:#x}: not valid UTF-16LE "
                              f"({exc.reason})") from None
    for position, char in enumerate(text):
        category = unicodedata.category(char)
        if category in _REFUSED_CATEGORIES:
            # NUL padding, a terminal escape, or an invisible character that reorders or hides text
            # in a name a report will show
            at = 2 + len(text[:position].encode("utf-16-le"))
            raise DescriptorError(f"string descriptor at offset {at:#x}: {_REFUSED_CATEGORIES[category]} "
                                  f"U+{ord(char):04X}")
    return text


def parse_langids(data: bytes) -> tuple[int, ...]:
    """String descriptor 0: the language IDs the device's strings come in (at least one)."""
    data = _bytes(data, "string 0 (LANGID)")
    _string_header(data, "string descriptor 0 (LANGIDs)")
    langids = struct.unpack_from(f"<{(len(data) - 2) // 2}H", data, 2)
    if not langids:
        raise DescriptorError("string descriptor 0 (LANGIDs) at offset 0x0: no language ID")
    for position, langid in enumerate(langids):
        if langid == 0 or langid in langids[:position]:
            problem = "zero" if langid == 0 else "repeated"
            raise DescriptorError(f"string descriptor 0 (LANGIDs) at offset {2 + 2 * position:#x}: language ID "
                                  f"{langid:#06x} is {problem}")
    return langids


def parse_bos(data: bytes) -> BosDescriptor:
    """The BOS descriptor and its device capabilities (wTotalLength bytes, exactly)."""
    data = _bytes(data, "BOS")
    _header(data, BOS, "BOS", BOS_SIZE)
    total, count = struct.unpack_from("<HB", data, 2)
    if total != len(data):
        raise DescriptorError(f"BOS descriptor at offset 0x2: wTotalLength {total}, but the data is "
                              f"{len(data)} bytes")
    capabilities: list[tuple[int, bytes]] = []
    offset = BOS_SIZE
    while offset < len(data):
        index = len(capabilities)
        left = len(data) - offset
        where = f"BOS device capability {index} at offset {offset:#x}"
        if left < CAPABILITY_HEADER:
            raise DescriptorError(f"{where}: {left} bytes left, too few for a capability header")
        length, kind, capability_type = data[offset], data[offset + 1], data[offset + 2]
        if length < CAPABILITY_HEADER:
            raise DescriptorError(f"{where}: bLength {length}, under the {CAPABILITY_HEADER} bytes of its header")
        if length > left:
            raise DescriptorError(f"{where}: bLength {length} runs past the end of the BOS ({left} bytes left)")
        if kind != DEVICE_CAPABILITY:
            raise DescriptorError(f"{where}: bDescriptorType {kind:#04x}, expected 0x10 (device capability)")
        raw = data[offset:offset + length]
        _check_capability(raw, capability_type, where)
        if capability_type in SINGLE_CAPABILITIES and any(kind == capability_type for kind, _ in capabilities):
            raise DescriptorError(f"{where}: a second {capability_name(capability_type)} capability")
        capabilities.append((capability_type, raw))
        offset += length
    if len(capabilities) != count:
        raise DescriptorError(f"BOS descriptor at offset 0x4: bNumDeviceCaps {count}, but "
                              f"{len(capabilities)} capabilities follow it")
    return BosDescriptor(wTotalLength=total, bNumDeviceCaps=count, capabilities=tuple(capabilities))


def _check_capability(raw: bytes, capability_type: int, where: str) -> None:
    name = capability_name(capability_type)
    if capability_type in _CAPABILITY_SIZES:
        expected = _CAPABILITY_SIZES[capability_type]
    elif capability_type == SUPERSPEED_PLUS:
        if len(raw) < 8:
            raise DescriptorError(f"{where} ({name}): bLength {len(raw)}, too few for its attributes")
        # bmAttributes bits 0-4: the number of sublink speed attributes, less one
        expected = 12 + 4 * ((struct.unpack_from("<I", raw, 4)[0] & 0x1F) + 1)
    elif capability_type == 0x05:
        if len(raw) < _PLATFORM_MIN_SIZE:
            raise DescriptorError(f"{where} ({name}): bLength {len(raw)}, under the {_PLATFORM_MIN_SIZE} of its "
                                  f"header and UUID")
        return
    else:
        return
    if len(raw) != expected:
        raise DescriptorError(f"{where} ({name}): bLength {len(raw)}, expected {expected}")


# --- one descriptor read with several wLengths (USB 2.0 §9.3.5: a shorter wLength only truncates) ---


def length_mismatch(full: bytes, asked: int, answer: bytes) -> str | None:
    """Why `answer`, the reply to a GET_DESCRIPTOR with wLength `asked`, is not the full descriptor
    cut to `asked` bytes (the only change a wLength may make); None when it is exactly that."""
    full, answer = _bytes(full, "full"), _bytes(answer, f"wLength {asked}")
    expected = full[:asked]
    if answer == expected:
        return None
    at = next((i for i, (a, b) in enumerate(zip(answer, expected)) if a != b), min(len(answer), len(expected)))
    return (f"{len(answer)} bytes where the full read cut to wLength {asked} is {len(expected)}; they differ from "
            f"offset {at:#x}: {answer[at:at + 8].hex() or 'nothing'} instead of {expected[at:at + 8].hex() or 'nothing'}")


# --- Microsoft OS 1.0 descriptors (Microsoft OS Descriptors 1.0: string 0xEE, extended compat ID) ---

MS_OS_STRING_INDEX = 0xEE
MS_OS_STRING_SIZE = 0x12
MS_OS_SIGNATURE = "MSFT100".encode("utf-16-le")
EXTENDED_COMPAT_ID_INDEX = 0x0004  # wIndex of the vendor request that returns it
EXTENDED_COMPAT_HEADER = 16
_COMPAT_FUNCTION_SIZE = 24
_COMPAT_ID_CHARS = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_")


def parse_ms_os_string(data: bytes) -> int | None:
    """String descriptor 0xEE: the vendor code of a Microsoft OS 1.0 string ("MSFT100"), or None for
    a string that is not one (Windows then asks nothing more). One with the signature is strict."""
    data = _bytes(data, "string 0xEE")
    if len(data) < 2 + len(MS_OS_SIGNATURE) or data[2:2 + len(MS_OS_SIGNATURE)] != MS_OS_SIGNATURE:
        return None
    _string_header(data, "Microsoft OS string descriptor (0xEE)")
    if len(data) != MS_OS_STRING_SIZE:
        raise DescriptorError(f"Microsoft OS string descriptor (0xEE) at offset 0x0: bLength {data[0]}, "
                              f"expected {MS_OS_STRING_SIZE}")
    return data[16]


@dataclass(frozen=True)
class CompatibleId:
    """One function section: the compatible ID Windows binds a driver by (e.g. RNDIS, WINUSB)."""
    bFirstInterfaceNumber: int
    compatible_id: str
    sub_compatible_id: str


@dataclass(frozen=True)
class ExtendedCompatIds:
    dwLength: int
    bcdVersion: int
    functions: tuple[CompatibleId, ...]


def _compat_id(raw: bytes, where: str) -> str:
    """An 8-byte ID: letters, digits and underscores, then NUL padding only."""
    text = raw.rstrip(b"\x00")
    if not set(text) <= _COMPAT_ID_CHARS:
        raise DescriptorError(f"{where}: {raw.hex()} is not an ID (letters, digits, '_', NUL-padded)")
    return text.decode("ascii")


def parse_extended_compat_ids(data: bytes) -> ExtendedCompatIds:
    """The extended compat ID OS feature descriptor: a 16-byte header (dwLength, bcdVersion 0x0100,
    wIndex 4, bCount) and bCount 24-byte function sections, dwLength bytes exactly."""
    data = _bytes(data, "extended compat ID")
    name = "extended compat ID descriptor"
    if len(data) < EXTENDED_COMPAT_HEADER:
        raise DescriptorError(f"{name} at offset 0x0: {len(data)} bytes, too few for its 16-byte header")
    length, version, index, count = struct.unpack_from("<IHHB", data)
    if length != len(data):
        raise DescriptorError(f"{name} at offset 0x0: dwLength {length}, but the data is {len(data)} bytes")
    if version != 0x0100:
        raise DescriptorError(f"{name} at offset 0x4: bcdVersion {version:#06x}, expected 0x0100")
    if index != EXTENDED_COMPAT_ID_INDEX:
        raise DescriptorError(f"{name} at offset 0x6: wIndex {index:#06x}, expected 0x0004")
    if length != EXTENDED_COMPAT_HEADER + _COMPAT_FUNCTION_SIZE * count:
        raise DescriptorError(f"{name} at offset 0x8: bCount {count} needs {EXTENDED_COMPAT_HEADER + 24 * count} "
                              f"bytes, dwLength says {length}")
    functions: list[CompatibleId] = []
    for n in range(count):
        at = EXTENDED_COMPAT_HEADER + _COMPAT_FUNCTION_SIZE * n
        first, _, compatible, sub = struct.unpack_from("<BB8s8s", data, at)
        where = f"{name} function {n} at offset {at:#x}"
        if any(f.bFirstInterfaceNumber == first for f in functions):
            raise DescriptorError(f"{where}: interface {first} is named twice")
        functions.append(CompatibleId(first, _compat_id(compatible, f"{where} compatibleID"),
                                      _compat_id(sub, f"{where} subCompatibleID")))
    return ExtendedCompatIds(dwLength=length, bcdVersion=version, functions=tuple(functions))
