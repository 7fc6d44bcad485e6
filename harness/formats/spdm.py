"""SPDM 1.1 measurement exchange: the GET_MEASUREMENTS request and its MEASUREMENTS response.

DMTF DSP0274 (SPDM) 1.1, sections "GET_MEASUREMENTS request and MEASUREMENTS response". A device
that signs its measurements answers a request carrying the verifier's nonce with every
measurement block, its own nonce, opaque data and a signature over the whole transcript. This
module is pure: it takes bytes and returns frozen dataclasses, checking every length against
what is there; it verifies no signature (that needs the certificate chain: see
`harness.formats.nvidia_attestation`). Integers are little-endian.

GET_MEASUREMENTS (requester → responder)::

    offset  size  field
    0       1     SPDMVersion            0x11 for 1.1
    1       1     RequestResponseCode    0xE0
    2       1     Param1                 bit 0: a signature is requested
    3       1     Param2                 0: only the number of indices; 0xFF: all blocks;
                                         1..0xFE: that one index
    4       32    Nonce                  only when a signature is requested
    36      1     SlotIDParam            bits 3:0, only when a signature is requested

MEASUREMENTS (responder → requester)::

    0       1     SPDMVersion            the request's
    1       1     RequestResponseCode    0x60
    2       1     Param1                 when Param2 of the request was 0: the number of indices
    3       1     Param2                 bits 3:0: the slot of the chain that signed
    4       1     NumberOfBlocks
    5       3     MeasurementRecordLength   L1
    8       L1    MeasurementRecord      NumberOfBlocks measurement blocks, back to back
    8+L1    32    Nonce                  the responder's
    40+L1   2     OpaqueLength           L2 (at most 1024)
    42+L1   L2    OpaqueData
    42+L1+L2 S    Signature              S from the negotiated algorithm (96 for ECDSA P-384, r‖s)

A measurement block: Index (1), MeasurementSpecification (1; bit 0 = DMTF), MeasurementSize (2),
then the DMTF measurement: DMTFSpecMeasurementValueType (1; bit 7 = raw bit stream, bits 6:0 what
is measured), DMTFSpecMeasurementValueSize (2), the value.

Every field a device controls is checked: a length that points past the end, a block count that
disagrees with the record, a measurement whose inner size disagrees with its outer size, a
repeated index, a block the request did not ask for, or a byte after the signature is a
`SpdmError` naming the field and its offset. A lying device can make the parse fail; it cannot
make two parsers see different blocks.
"""

from __future__ import annotations

from dataclasses import dataclass

SPDM_VERSION_11 = 0x11
GET_MEASUREMENTS = 0xE0
MEASUREMENTS = 0x60
NONCE_SIZE = 32
MAX_OPAQUE = 1024        # DSP0274: OpaqueLength shall not exceed 1024
ALL_MEASUREMENTS = 0xFF  # request Param2: every block
COUNT_ONLY = 0x00        # request Param2: only the number of indices
DMTF_SPEC = 0x01         # MeasurementSpecification bit 0

# DMTFSpecMeasurementValueType bits 6:0 (DSP0274 1.1 table "DMTF measurement specification format";
# 5..7 were named in 1.2 and are reported by name when seen).
VALUE_TYPES = {
    0: "immutable ROM",
    1: "mutable firmware",
    2: "hardware configuration",
    3: "firmware configuration",
    4: "measurement manifest",
    5: "device mode",
    6: "version",
    7: "security version number",
}


class SpdmError(ValueError):
    """SPDM bytes that are not a well-formed measurement exchange; the message names the field."""


@dataclass(frozen=True)
class GetMeasurements:
    version: int
    signature_requested: bool
    operation: int             # request Param2: COUNT_ONLY, ALL_MEASUREMENTS or one index
    nonce: bytes | None        # the requester's, present when a signature is requested
    slot: int | None

    @property
    def size(self) -> int:
        return 4 + (NONCE_SIZE + 1 if self.signature_requested else 0)


@dataclass(frozen=True)
class MeasurementBlock:
    index: int
    value_type: int            # DMTFSpecMeasurementValueType, bit 7 included
    value: bytes

    @property
    def raw_bit_stream(self) -> bool:
        return bool(self.value_type & 0x80)

    @property
    def kind(self) -> str:
        return VALUE_TYPES.get(self.value_type & 0x7F, f"reserved type {self.value_type & 0x7F}")


@dataclass(frozen=True)
class Measurements:
    version: int
    param1: int
    slot: int
    blocks: tuple[MeasurementBlock, ...]
    nonce: bytes               # the responder's
    opaque_data: bytes
    signature: bytes

    def block(self, index: int) -> MeasurementBlock | None:
        return next((b for b in self.blocks if b.index == index), None)


@dataclass(frozen=True)
class MeasurementExchange:
    """A request and its response as they travelled, and the bytes the signature covers."""
    request: GetMeasurements
    response: Measurements
    signed: bytes              # request ‖ response without its signature


class _Reader:
    """Bounds-checked reads that name the field and offset of whatever is missing."""

    def __init__(self, data: bytes, what: str, base: int = 0):
        self.data, self.what, self.base, self.at = data, what, base, 0

    def take(self, size: int, field: str) -> bytes:
        if size < 0 or self.at + size > len(self.data):
            raise SpdmError(f"{self.what}: {field} at offset {self.base + self.at} needs {size} bytes, "
                            f"{len(self.data) - self.at} left")
        chunk = self.data[self.at:self.at + size]
        self.at += size
        return chunk

    def u8(self, field: str) -> int:
        return self.take(1, field)[0]

    def uint(self, size: int, field: str) -> int:
        return int.from_bytes(self.take(size, field), "little")

    def done(self) -> None:
        if self.at != len(self.data):
            raise SpdmError(f"{self.what}: {len(self.data) - self.at} unexpected bytes after the end, "
                            f"at offset {self.base + self.at}")


def _bytes(data: object, what: str) -> bytes:
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise SpdmError(f"{what} must be bytes, got {type(data).__name__}")
    return bytes(data)


def parse_get_measurements(data: bytes) -> GetMeasurements:
    """The GET_MEASUREMENTS request at the start of `data` (what follows is not looked at)."""
    data = _bytes(data, "GET_MEASUREMENTS")
    r = _Reader(data, "GET_MEASUREMENTS")
    version = r.u8("SPDMVersion")
    if version != SPDM_VERSION_11:
        raise SpdmError(f"GET_MEASUREMENTS: SPDMVersion 0x{version:02x} is not supported (only 1.1, 0x11)")
    code = r.u8("RequestResponseCode")
    if code != GET_MEASUREMENTS:
        raise SpdmError(f"GET_MEASUREMENTS: request code 0x{code:02x} is not GET_MEASUREMENTS (0xe0)")
    param1 = r.u8("Param1")
    if param1 & ~0x01:
        raise SpdmError(f"GET_MEASUREMENTS: Param1 0x{param1:02x} sets reserved bits")
    operation = r.u8("Param2")
    if not param1 & 0x01:
        return GetMeasurements(version, False, operation, None, None)
    nonce = r.take(NONCE_SIZE, "Nonce")
    slot_param = r.u8("SlotIDParam")
    if slot_param & 0xF0:
        raise SpdmError(f"GET_MEASUREMENTS: SlotIDParam 0x{slot_param:02x} sets reserved bits")
    return GetMeasurements(version, True, operation, nonce, slot_param)


def parse_measurements(data: bytes, *, signature_size: int, base: int = 0) -> Measurements:
    """A whole MEASUREMENTS response; `signature_size` is 0 when no signature was requested.

    `base` is where the response starts in a larger buffer, only for offsets in messages.
    """
    data = _bytes(data, "MEASUREMENTS")
    r = _Reader(data, "MEASUREMENTS", base)
    version = r.u8("SPDMVersion")
    if version != SPDM_VERSION_11:
        raise SpdmError(f"MEASUREMENTS: SPDMVersion 0x{version:02x} is not supported (only 1.1, 0x11)")
    code = r.u8("RequestResponseCode")
    if code != MEASUREMENTS:
        hint = " (an SPDM ERROR response)" if code == 0x7F else ""
        raise SpdmError(f"MEASUREMENTS: response code 0x{code:02x} is not MEASUREMENTS (0x60){hint}")
    param1 = r.u8("Param1")
    param2 = r.u8("Param2")
    if param2 & 0xF0:
        raise SpdmError(f"MEASUREMENTS: Param2 0x{param2:02x} sets reserved bits")
    count = r.u8("NumberOfBlocks")
    record_length = r.uint(3, "MeasurementRecordLength")
    record_at = base + r.at
    blocks = _parse_record(r.take(record_length, "MeasurementRecord"), count, record_at)
    nonce = r.take(NONCE_SIZE, "Nonce")
    opaque_length = r.uint(2, "OpaqueLength")
    if opaque_length > MAX_OPAQUE:
        raise SpdmError(f"MEASUREMENTS: OpaqueLength {opaque_length} exceeds the {MAX_OPAQUE} bytes SPDM allows")
    opaque = r.take(opaque_length, "OpaqueData")
    signature = r.take(signature_size, "Signature")
    r.done()
    return Measurements(version, param1, param2 & 0x0F, blocks, nonce, opaque, signature)


def _parse_record(record: bytes, count: int, base: int) -> tuple[MeasurementBlock, ...]:
    r = _Reader(record, "MeasurementRecord", base)
    blocks: list[MeasurementBlock] = []
    seen: set[int] = set()
    for n in range(count):
        at = base + r.at
        index = r.u8(f"block {n} Index")
        if index in (0, 0xFF):
            raise SpdmError(f"MeasurementRecord: block {n} at offset {at} has reserved index {index}")
        if index in seen:
            raise SpdmError(f"MeasurementRecord: index {index} appears twice (block {n}, offset {at})")
        seen.add(index)
        spec = r.u8(f"block {index} MeasurementSpecification")
        if spec != DMTF_SPEC:
            raise SpdmError(f"MeasurementRecord: block {index} at offset {at} has MeasurementSpecification "
                            f"0x{spec:02x}, not DMTF (0x01)")
        size = r.uint(2, f"block {index} MeasurementSize")
        inner = _Reader(r.take(size, f"block {index} Measurement"), f"measurement block {index}", base + r.at - size)
        value_type = inner.u8("DMTFSpecMeasurementValueType")
        value_size = inner.uint(2, "DMTFSpecMeasurementValueSize")
        value = inner.take(value_size, "DMTFSpecMeasurementValue")
        inner.done()
        blocks.append(MeasurementBlock(index, value_type, value))
    r.done()
    return tuple(blocks)


def parse_exchange(data: bytes, *, signature_size: int) -> MeasurementExchange:
    """A GET_MEASUREMENTS request followed by its MEASUREMENTS response, checked against each other.

    The response must answer this request: same version, a signature exactly when one was asked
    for (of `signature_size` bytes), the slot asked for, the blocks asked for (all, none, or the
    one index).
    """
    data = _bytes(data, "measurement exchange")
    request = parse_get_measurements(data)
    if not request.signature_requested:
        raise SpdmError("GET_MEASUREMENTS: no signature was requested, so nothing in the response is signed")
    response_bytes = data[request.size:]
    response = parse_measurements(response_bytes, signature_size=signature_size, base=request.size)
    if response.version != request.version:
        raise SpdmError(f"MEASUREMENTS: version 0x{response.version:02x} answers a 0x{request.version:02x} request")
    if response.slot != request.slot:
        raise SpdmError(f"MEASUREMENTS: signed with the chain in slot {response.slot}, "
                        f"the request asked for slot {request.slot}")
    indexes = [b.index for b in response.blocks]
    if request.operation == COUNT_ONLY and indexes:
        raise SpdmError(f"MEASUREMENTS: {len(indexes)} blocks returned for a request that asked only for the count")
    if request.operation not in (COUNT_ONLY, ALL_MEASUREMENTS) and indexes != [request.operation]:
        raise SpdmError(f"MEASUREMENTS: blocks {indexes} returned for a request of index {request.operation}")
    signed = data[:len(data) - signature_size]
    return MeasurementExchange(request, response, signed)
