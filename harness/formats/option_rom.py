"""Decoder for a PCI expansion ROM (the "option ROM"), as the kernel exposes it in sysfs `rom`.

An option ROM is a chain of images, one after the other, each a multiple of 512 bytes:

    image header  +0x00  55 AA                (NVIDIA's own images: 77 BB or "VN", nouveau accepts them)
                  +0x02  initialization size, 512-byte units (legacy x86 images)
                  +0x18  u16: offset of the PCI data structure, from the image's start
    EFI header    +0x04  u32 0x0EF1, +0x08 subsystem, +0x0A machine type, +0x0C compression type,
                  +0x16  offset of the PE/COFF image                        (UEFI spec §14.4.2)
    PCIR          +0x00  "PCIR", +0x04 vendor, +0x06 device, +0x08 device list pointer, +0x0A length,
                  +0x0C  structure revision, +0x0D class code (3 bytes, prog-if first), +0x10 image
                  length in 512-byte units, +0x12 code revision, +0x14 code type (0 x86, 1 Open
                  Firmware, 2 PA-RISC, 3 EFI), +0x15 indicator (bit 7: last image)  (PCI Firmware 3.x §5.1)
    NPDE          NVIDIA's PCI data extension, after the PCIR rounded up to 16 bytes: "NPDE",
                  +0x04 revision, +0x06 length, +0x08 image length in 512-byte units, +0x0A flags
                  (bit 7: last image). Where present, its length and last flag replace the PCIR's
                  (nouveau: nvkm/subdev/bios/image.c), except for code type 0x70, which ends the chain.

NVIDIA ROMs mark the EFI image last in its PCIR (so host firmware stops there) and not last in
its NPDE (NVIDIA's own images follow). The kernel sizes `rom` by the PCIR flags (drivers/pci/
rom.c: pci_get_rom_size), so a chain that ends with the data where only the NPDE says more
follows is what the kernel shows, noted and not an anomaly.

The bytes come from a board that may lie. The decoder is pure and total: it raises
OptionRomError only when not even the first image can be delimited. Everything else (a chain
cut off by the end of the data, a zero length, a pointer out of range, a bad signature further
down, a legacy checksum that does not sum to 0, bytes that belong to no image, more than
MAX_IMAGES images) is recorded in `anomalies`, each naming the image and the offset, and the
walk stops where it cannot go on. Every image advances the walk by at least 512 bytes and the
image count is capped, so it cannot loop or hang.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any

from harness.formats.digest import sha256_hex

__all__ = [
    "EfiHeader", "IMAGE_UNIT", "MAX_IMAGES", "Npde", "OptionRom", "OptionRomError", "Pcir", "RomImage",
    "code_type_name", "parse_option_rom",
]

IMAGE_UNIT = 512  # image lengths are counted in 512-byte units
MAX_IMAGES = 32   # real ROMs carry 2-8; more is a board playing games
HEADER_SIZE = 0x1A  # through the PCIR pointer
PCIR_MIN_SIZE = 0x18
NPDE_SIZE = 0x0B
MAX_DEVICE_LIST = 256

ROM_SIGNATURES = {0xAA55: "55 AA", 0xBB77: "77 BB (NVIDIA)", 0x4E56: "VN (NVIDIA)"}
PCIR_SIGNATURES = (b"PCIR", b"NPDS", b"RGIS")  # the last two: NVIDIA's, as nouveau accepts them
NPDE_SIGNATURE = b"NPDE"
EFI_SIGNATURE = 0x0EF1
LAST_IMAGE = 0x80
CODE_TYPE_X86 = 0x00
CODE_TYPE_EFI = 0x03
CODE_TYPE_NVIDIA_LAST = 0x70  # nouveau: ends the chain whatever the flags say

CODE_TYPES = {0x00: "x86", 0x01: "open-firmware", 0x02: "pa-risc", 0x03: "efi"}
EFI_SUBSYSTEMS = {10: "application", 11: "boot service driver", 12: "runtime driver"}
EFI_MACHINES = {0x014C: "IA32", 0x0200: "IA64", 0x0EBC: "EBC", 0x8664: "x64", 0xAA64: "AArch64",
                0x01C2: "ARM", 0x5064: "RISC-V 64"}
EFI_COMPRESSION = {0: "none", 1: "EFI compressed"}


class OptionRomError(ValueError):
    """The data holds no option ROM at all; the message names the offset and what was found."""


def code_type_name(code_type: int) -> str:
    return CODE_TYPES.get(code_type, f"type {code_type:#04x}")


@dataclass(frozen=True)
class Pcir:
    """The PCI data structure of one image; offsets are from the image's start."""

    offset: int
    signature: str
    vendor_id: int
    device_id: int
    device_list: tuple[int, ...]  # PCIR revision 3: further device ids the image supports
    length: int
    revision: int
    class_code: int  # base class << 16 | subclass << 8 | programming interface
    image_length: int  # bytes (the 512-byte count times 512)
    code_revision: int
    code_type: int
    indicator: int

    @property
    def last(self) -> bool:
        return bool(self.indicator & LAST_IMAGE)


@dataclass(frozen=True)
class Npde:
    """NVIDIA's PCI data extension; its offset is from the image's start."""

    offset: int
    revision: int
    length: int
    image_length: int  # bytes
    flags: int

    @property
    def last(self) -> bool:
        return bool(self.flags & LAST_IMAGE)


@dataclass(frozen=True)
class EfiHeader:
    signature: int  # 0x0EF1 in a well-formed EFI image
    initialization_size: int  # bytes
    subsystem: int
    machine_type: int
    compression_type: int
    image_offset: int  # of the PE/COFF image, from the ROM image's start


@dataclass(frozen=True)
class RomImage:
    index: int
    offset: int  # in the ROM
    length: int  # bytes this image spans (cut at the end of the data when `truncated`)
    signature: int
    pcir: Pcir
    npde: Npde | None
    efi: EfiHeader | None  # code type 3 only
    checksum: int | None  # x86 images: the sum of their bytes mod 256 (0 when well-formed)
    sha256: str
    truncated: bool

    @property
    def code_type(self) -> int:
        return self.pcir.code_type

    @property
    def last(self) -> bool:
        """Last in the chain: by the NPDE where present (NVIDIA), else by the PCIR."""
        if self.pcir.code_type == CODE_TYPE_NVIDIA_LAST:
            return True
        return self.npde.last if self.npde is not None else self.pcir.last

    def to_facts(self) -> dict[str, Any]:
        p = self.pcir
        facts: dict[str, Any] = {
            "index": self.index, "offset": self.offset, "size": self.length, "sha256": self.sha256,
            "code_type": p.code_type, "code_type_name": code_type_name(p.code_type),
            "signature": f"{self.signature:#06x}", "last": self.last, "truncated": self.truncated,
            "pcir": {"offset": p.offset, "signature": p.signature, "vendor_id": p.vendor_id,
                     "device_id": p.device_id, "device_list": list(p.device_list), "revision": p.revision,
                     "class_code": p.class_code, "image_length": p.image_length,
                     "code_revision": p.code_revision, "indicator": p.indicator, "last": p.last},
        }
        if self.npde is not None:
            n = self.npde
            facts["npde"] = {"offset": n.offset, "revision": n.revision, "length": n.length,
                             "image_length": n.image_length, "flags": n.flags, "last": n.last}
        if self.efi is not None:
            e = self.efi
            facts["efi"] = {"signature": f"{e.signature:#06x}", "initialization_size": e.initialization_size,
                            "subsystem": e.subsystem,
                            "subsystem_name": EFI_SUBSYSTEMS.get(e.subsystem, f"{e.subsystem}"),
                            "machine_type": f"{e.machine_type:#06x}",
                            "machine_name": EFI_MACHINES.get(e.machine_type, "unknown"),
                            "compression_type": e.compression_type,
                            "compression_name": EFI_COMPRESSION.get(e.compression_type, "unknown"),
                            "image_offset": e.image_offset}
        if self.checksum is not None:
            facts["checksum"] = self.checksum
        return facts


@dataclass(frozen=True)
class OptionRom:
    """The ROM as read: its whole extent, the images of its chain, and what is wrong with it."""

    size: int
    sha256: str  # of the whole extent, as the kernel exposed it
    images: tuple[RomImage, ...]
    unparsed: int  # bytes after the chain ended (or broke) that belong to no image
    anomalies: tuple[str, ...]
    notes: tuple[str, ...]  # true of well-formed ROMs too (an NVIDIA chain that continues past the extent)

    def to_facts(self) -> dict[str, Any]:
        return {"size": self.size, "sha256": self.sha256, "images": [i.to_facts() for i in self.images],
                "unparsed": self.unparsed, "anomalies": list(self.anomalies), "notes": list(self.notes)}


def _u8(data: bytes, at: int) -> int:
    return data[at]


def _u16(data: bytes, at: int) -> int:
    return struct.unpack_from("<H", data, at)[0]


def _u32(data: bytes, at: int) -> int:
    return struct.unpack_from("<I", data, at)[0]


def _pcir(data: bytes, base: int, index: int, anomalies: list[str]) -> Pcir | str:
    """The image's PCIR, or why the chain cannot go on (anomalies get what is odd but usable)."""
    where = f"image {index} at {base:#x}"
    pointer = _u16(data, base + 0x18)
    at = base + pointer
    if pointer == 0 or at + PCIR_MIN_SIZE > len(data):
        return (f"{where}: its PCI data structure pointer {pointer:#x} points outside the ROM "
                f"({len(data)} bytes)")
    signature = bytes(data[at:at + 4])
    if signature not in PCIR_SIGNATURES:
        return f"{where}: no PCI data structure at +{pointer:#x} (signature {signature!r}, expected b'PCIR')"
    if pointer < HEADER_SIZE:
        anomalies.append(f"{where}: its PCI data structure at +{pointer:#x} overlaps the image header")
    length = _u16(data, at + 0x0A)
    if length < PCIR_MIN_SIZE:
        anomalies.append(f"{where}: its PCI data structure says it is {length} bytes long, less than "
                         f"the {PCIR_MIN_SIZE} it has")
    revision = _u8(data, at + 0x0C)
    class_code = _u8(data, at + 0x0D) | _u8(data, at + 0x0E) << 8 | _u8(data, at + 0x0F) << 16
    device_list: tuple[int, ...] = ()
    list_pointer = _u16(data, at + 0x08)
    if revision >= 3 and list_pointer:
        device_list = _device_list(data, at + list_pointer, where, anomalies)
    return Pcir(offset=pointer, signature=signature.decode("ascii"), vendor_id=_u16(data, at + 0x04),
                device_id=_u16(data, at + 0x06), device_list=device_list, length=length, revision=revision,
                class_code=class_code, image_length=_u16(data, at + 0x10) * IMAGE_UNIT,
                code_revision=_u16(data, at + 0x12), code_type=_u8(data, at + 0x14),
                indicator=_u8(data, at + 0x15))


def _device_list(data: bytes, at: int, where: str, anomalies: list[str]) -> tuple[int, ...]:
    ids = []
    for entry in range(MAX_DEVICE_LIST):
        pos = at + 2 * entry
        if pos + 2 > len(data):
            anomalies.append(f"{where}: its device list at {at:#x} runs past the end of the ROM")
            return tuple(ids)
        device = _u16(data, pos)
        if device == 0:
            return tuple(ids)
        ids.append(device)
    anomalies.append(f"{where}: its device list at {at:#x} has no end within {MAX_DEVICE_LIST} entries")
    return tuple(ids)


def _npde(data: bytes, base: int, pcir: Pcir) -> Npde | None:
    at = base + ((pcir.offset + pcir.length + 0x0F) & ~0x0F)
    if at + NPDE_SIZE > len(data) or bytes(data[at:at + 4]) != NPDE_SIGNATURE:
        return None
    return Npde(offset=at - base, revision=_u16(data, at + 0x04), length=_u16(data, at + 0x06),
                image_length=_u16(data, at + 0x08) * IMAGE_UNIT, flags=_u8(data, at + 0x0A))


def _efi(data: bytes, base: int, length: int, where: str, anomalies: list[str]) -> EfiHeader:
    efi = EfiHeader(signature=_u32(data, base + 0x04), initialization_size=_u16(data, base + 0x02) * IMAGE_UNIT,
                    subsystem=_u16(data, base + 0x08), machine_type=_u16(data, base + 0x0A),
                    compression_type=_u16(data, base + 0x0C), image_offset=_u16(data, base + 0x16))
    if efi.signature != EFI_SIGNATURE:
        anomalies.append(f"{where}: an EFI image (code type 3) without the EFI signature 0x0EF1 "
                         f"(found {efi.signature:#010x})")
    if not HEADER_SIZE <= efi.image_offset < length:
        anomalies.append(f"{where}: its EFI image offset {efi.image_offset:#x} lies outside the image "
                         f"({length} bytes)")
    return efi


def parse_option_rom(data: bytes | bytearray | memoryview, *, max_images: int = MAX_IMAGES) -> OptionRom:
    """Every image of the chain in `data`, each with its headers and sha256, and the anomalies."""
    data = bytes(data)
    if not data:
        raise OptionRomError("the option ROM is empty: no image at offset 0")
    first = _u16(data, 0) if len(data) >= 2 else None
    if first not in ROM_SIGNATURES:
        found = data[:2].hex(" ") or "nothing"
        raise OptionRomError(f"offset 0x0: no option ROM signature (55 AA), found {found}")
    if len(data) < HEADER_SIZE:
        raise OptionRomError(f"offset 0x0: {len(data)} bytes, too few for an image header ({HEADER_SIZE})")
    anomalies: list[str] = []
    notes: list[str] = []
    images: list[RomImage] = []
    offset = 0
    while offset < len(data):
        index = len(images)
        where = f"image {index} at {offset:#x}"
        if index == max_images:
            anomalies.append(f"more than {max_images} images: the chain is not followed past {offset:#x}")
            break
        remaining = len(data) - offset
        signature = _u16(data, offset) if remaining >= 2 else None
        if signature not in ROM_SIGNATURES:
            found = data[offset:offset + 2].hex(" ")
            anomalies.append(f"{where}: no option ROM signature (55 AA), found {found}, although image "
                             f"{index - 1} is not marked last")
            break
        if remaining < HEADER_SIZE:
            anomalies.append(f"{where}: only {remaining} bytes remain, too few for an image header")
            break
        pcir = _pcir(data, offset, index, anomalies)
        if isinstance(pcir, str):
            if index == 0:
                raise OptionRomError(pcir)
            anomalies.append(pcir + ": the chain cannot be followed further")
            break
        npde = _npde(data, offset, pcir) if pcir.code_type != CODE_TYPE_NVIDIA_LAST else None
        length = npde.image_length if npde is not None else pcir.image_length
        if length == 0:
            message = f"{where}: a zero-length image ({'NPDE' if npde else 'PCIR'} image length 0): the chain cannot advance"
            if index == 0:
                raise OptionRomError(message)
            anomalies.append(message)
            break
        if npde is not None and npde.image_length != pcir.image_length:
            notes.append(f"{where}: NPDE image length {npde.image_length} bytes replaces the PCIR's "
                         f"{pcir.image_length}")
        if pcir.offset >= length:
            anomalies.append(f"{where}: its PCI data structure at +{pcir.offset:#x} lies outside the image "
                             f"({length} bytes)")
        truncated = length > remaining
        if truncated:
            anomalies.append(f"{where}: claims {length} bytes but only {remaining} remain: cut off by the end "
                             f"of the ROM")
            length = remaining
        body = data[offset:offset + length]
        checksum = None
        if pcir.code_type == CODE_TYPE_X86:
            checksum = sum(body) & 0xFF
            if checksum and not truncated:
                anomalies.append(f"{where}: x86 image bytes sum to {checksum:#04x} mod 256, not 0 (legacy checksum)")
        efi = _efi(data, offset, length, where, anomalies) if pcir.code_type == CODE_TYPE_EFI else None
        image = RomImage(index=index, offset=offset, length=length, signature=signature, pcir=pcir, npde=npde,
                         efi=efi, checksum=checksum, sha256=sha256_hex(body), truncated=truncated)
        images.append(image)
        offset += length
        if image.last or truncated:
            break
        if offset >= len(data):
            if npde is not None and not npde.last and pcir.last:
                notes.append(f"{where}: its NPDE says more images follow; the PCIR marks it last, where the "
                             f"kernel ends the ROM it shows")
            else:
                anomalies.append(f"{where}: not marked last, but the ROM ends at {offset:#x}")
    end = images[-1].offset + images[-1].length
    unparsed = len(data) - end
    if unparsed and images[-1].last and not images[-1].truncated:
        anomalies.append(f"{unparsed} bytes after the last image ({end:#x}-{len(data) - 1:#x}) belong to no image")
    return OptionRom(size=len(data), sha256=sha256_hex(data), images=tuple(images), unparsed=unparsed,
                     anomalies=tuple(anomalies), notes=tuple(notes))
