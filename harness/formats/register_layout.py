"""A vendor register layout: the fields of a fixed-size response, as a reference profile describes them.

A product's reference profile says where each field of a vendor readout lies (the USB
security-state response of probes/security_state.py is one), so that the harness needs no code
per product:

    length: 36                     # the response must be exactly this long
    fields:
      format: {offset: 0, size: 1, equals: 1}          # an integer that must have this value
      lifecycle: {offset: 1, size: 1, values: {1: development, 2: production, 3: return}}
      secure_boot: {offset: 2, bit: 0}                 # one bit of the byte at offset (size 1)
      root_key_hash: {offset: 4, size: 32}             # bytes, read as lower-case hex

A field has `offset` and either `bit` (0 .. 8*size-1 of the `size`-byte integer at offset, size 1
unless given) or `size` with at most one of `values` (an integer named by the table) and `equals`
(an integer that must have that value: a format or version byte); a plain `size` is bytes, read
as hex. Integers are little-endian unless `byteorder: big`.

`parse_layout` validates the layout strictly (`LayoutError`: unknown keys, a field past `length`,
a bit outside its integer, a name table that is not int → text); `decode_registers` decodes a
response against it and raises `RegisterError` when the response is not that layout: another
length, or an `equals` field with another value. A value the `values` table does not name is
decoded, not refused (`name` None): that a board reports an undocumented state is a finding for
the check to judge, not a reason to stop reading. No I/O; frozen data out.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

MAX_LENGTH = 4096      # a control transfer's response at most; a layout longer than this is a typo
_FIELD_KEYS = {"offset", "size", "bit", "values", "equals", "byteorder"}


class LayoutError(ValueError):
    """The layout itself is malformed (a reference profile's error): names the field and why."""


class RegisterError(ValueError):
    """A response that does not have the layout: names the field, its offset and why."""


@dataclass(frozen=True)
class FieldSpec:
    name: str
    offset: int
    size: int
    bit: int | None = None
    values: tuple[tuple[int, str], ...] | None = None
    equals: int | None = None
    byteorder: str = "little"

    @property
    def kind(self) -> str:
        if self.bit is not None:
            return "bit"
        if self.values is not None:
            return "enum"
        if self.equals is not None:
            return "constant"
        return "bytes"


@dataclass(frozen=True)
class Layout:
    length: int
    fields: tuple[FieldSpec, ...]

    def field(self, name: str) -> FieldSpec | None:
        return next((f for f in self.fields if f.name == name), None)


@dataclass(frozen=True)
class DecodedField:
    spec: FieldSpec
    raw: bytes                 # the field's bytes as the response holds them
    value: bool | int | str    # bit: bool; enum/constant: the integer; bytes: lower-case hex
    name: str | None = None    # enum: the table's name for the value, None when it names none

    def to_fact(self) -> dict[str, Any]:
        fact: dict[str, Any] = {"offset": self.spec.offset, "size": self.spec.size, "raw": self.raw.hex(),
                                "value": self.value}
        if self.spec.bit is not None:
            fact["bit"] = self.spec.bit
        if self.spec.values is not None:
            fact["name"] = self.name
        return fact


@dataclass(frozen=True)
class DecodedRegisters:
    length: int
    fields: tuple[DecodedField, ...]

    def get(self, name: str) -> DecodedField | None:
        return next((f for f in self.fields if f.spec.name == name), None)

    def to_facts(self) -> dict[str, Any]:
        return {f.spec.name: f.to_fact() for f in self.fields}


def _int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _field(name: Any, spec: Any, length: int) -> FieldSpec:
    at = f"fields.{name}"
    if not isinstance(name, str) or not name:
        raise LayoutError(f"field names must be text, got {name!r}")
    if not isinstance(spec, Mapping):
        raise LayoutError(f"{at}: must be a mapping (offset, size, bit, values, equals), got {spec!r}")
    unknown = sorted(str(k) for k in set(spec) - _FIELD_KEYS)
    if unknown:
        raise LayoutError(f"{at}: unknown key {unknown[0]!r} (known: {', '.join(sorted(_FIELD_KEYS))})")
    offset, size, bit = spec.get("offset"), spec.get("size", 1 if "bit" in spec else None), spec.get("bit")
    if not _int(offset) or offset < 0:
        raise LayoutError(f"{at}.offset: must be a byte offset (0 or more), got {offset!r}")
    if not _int(size) or not 1 <= size <= MAX_LENGTH:
        raise LayoutError(f"{at}.size: must be a number of bytes (1..{MAX_LENGTH}), got {size!r}")
    if offset + size > length:
        raise LayoutError(f"{at}: bytes {offset}..{offset + size - 1} lie past the response's length {length}")
    byteorder = spec.get("byteorder", "little")
    if byteorder not in ("little", "big"):
        raise LayoutError(f"{at}.byteorder: must be little or big, got {byteorder!r}")
    kinds = [k for k in ("bit", "values", "equals") if k in spec]
    if len(kinds) > 1:
        raise LayoutError(f"{at}: give at most one of bit, values, equals (got {', '.join(kinds)})")
    if bit is not None and (not _int(bit) or not 0 <= bit < 8 * size):
        raise LayoutError(f"{at}.bit: must be a bit number 0..{8 * size - 1}, got {bit!r}")
    if (kinds and kinds[0] != "bit") and size > 8:
        raise LayoutError(f"{at}: an integer field is at most 8 bytes, got size {size}")
    values = None
    if "values" in spec:
        table = spec["values"]
        if not isinstance(table, Mapping) or not table:
            raise LayoutError(f"{at}.values: must map integers to names, got {table!r}")
        for key, label in table.items():
            if not _int(key) or not 0 <= key < 1 << (8 * size) or not isinstance(label, str) or not label:
                raise LayoutError(f"{at}.values: {key!r}: {label!r} is not an integer of {size} byte(s) and a name")
        if len(set(table.values())) != len(table):
            raise LayoutError(f"{at}.values: two values have one name: {sorted(table.values())}")
        values = tuple(sorted(table.items()))
    equals = spec.get("equals")
    if "equals" in spec and (not _int(equals) or not 0 <= equals < 1 << (8 * size)):
        raise LayoutError(f"{at}.equals: must be an integer of {size} byte(s), got {equals!r}")
    return FieldSpec(name, offset, size, bit, values, equals, byteorder)


def parse_layout(length: Any, fields: Any) -> Layout:
    """The layout a reference describes: `length` (bytes) and `fields` (name → spec), validated."""
    if not _int(length) or not 1 <= length <= MAX_LENGTH:
        raise LayoutError(f"length: must be the response's size in bytes (1..{MAX_LENGTH}), got {length!r}")
    if not isinstance(fields, Mapping) or not fields:
        raise LayoutError(f"fields: must map field names to their place, got {fields!r}")
    return Layout(length, tuple(_field(name, spec, length) for name, spec in fields.items()))


def decode_registers(layout: Layout, data: bytes) -> DecodedRegisters:
    """Every field of `data` as `layout` places it; RegisterError when `data` is not that layout."""
    data = bytes(data)
    if len(data) != layout.length:
        raise RegisterError(f"the response is {len(data)} bytes, the layout is exactly {layout.length}")
    decoded = []
    for spec in layout.fields:
        raw = data[spec.offset:spec.offset + spec.size]
        number = int.from_bytes(raw, spec.byteorder)  # type: ignore[arg-type]
        if spec.bit is not None:
            decoded.append(DecodedField(spec, raw, bool(number >> spec.bit & 1)))
        elif spec.values is not None:
            decoded.append(DecodedField(spec, raw, number, dict(spec.values).get(number)))
        elif spec.equals is not None:
            if number != spec.equals:
                raise RegisterError(f"field {spec.name!r} at offset {spec.offset} ({spec.size} byte(s)) is "
                                    f"{number:#x}, the layout needs {spec.equals:#x}: not this response format")
            decoded.append(DecodedField(spec, raw, number))
        else:
            decoded.append(DecodedField(spec, raw, raw.hex()))
    return DecodedRegisters(layout.length, tuple(decoded))
