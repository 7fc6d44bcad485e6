"""`firmware.components` of a reference profile: each firmware component the product ships, with
its version, security version number, digest and where it is measured (docs/firmware-integrity.md).

The checks of today read `firmware.regions` (the console dump) and `firmware.option_rom` (the
host's view of the ROM); the component list names the same firmware once, in the vendors' terms,
for the evidence sources that speak of components (SPDM measurement indices, vendor-reported
versions). Where a component and one of those sections name the same thing they must agree, or the
profile is refused at load: two values for one image would let a check pass on the one nobody
reviewed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from harness.yamlio import Section, YamlError

DIGEST_HEX = {"sha256": 64, "sha384": 96, "sha512": 128}
# Where a component is measured → the kind of value that names the place.
MEASURED_AT = {
    "dump_region": "the name of a region the console dumps (firmware.regions)",
    "option_rom_image": "the image's place in the option ROM chain, from 0 (firmware.option_rom.images)",
    "spdm_measurement_index": "the SPDM measurement block index, 1 to 254",
    "vendor_reported": "the vendor's own report of the version (e.g. nvml.vbios_version)",
}
_FIELDS = {"name", "version", "svn", "digest", "measured_at", "comment"}
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$")
_HEX = re.compile(r"^[0-9a-f]+$")


@dataclass(frozen=True)
class Component:
    name: str
    version: str
    svn: int | None                 # security version number: None when the vendor publishes none
    digest_algorithm: str | None    # None only for a vendor-reported version
    digest: str | None
    measured_at: tuple[str, Any]    # (kind, place): ("dump_region", "vbios"), ("spdm_measurement_index", 2)
    line: int


def _component(item: Any, source: str, path: str, line: int) -> Component:
    section = Section(item, source, path, line)
    section.reject_unknown(_FIELDS)
    name = section.text("name")
    if not _NAME.match(name):
        raise section.error("name", f"{name!r} is not a component name (letters, digits, _ . : -)")
    version = section.text("version")
    svn = section.integer("svn", required=False)
    if svn is not None and svn < 0:
        raise section.error("svn", f"a security version number is 0 or more, got {svn}")
    where = section.mapping("measured_at")
    if len(where.data) != 1 or next(iter(where.data)) not in MEASURED_AT:
        raise where.error(None, "exactly one of " + "; ".join(f"{k} ({v})" for k, v in MEASURED_AT.items()))
    kind = next(iter(where.data))
    if kind in ("option_rom_image", "spdm_measurement_index"):
        place: Any = where.integer(kind)
        low, high = (0, 255) if kind == "option_rom_image" else (1, 254)
        if not low <= place <= high:
            raise where.error(kind, f"must be {low} to {high}, got {place}")
    else:
        place = where.text(kind)
    digest = section.mapping("digest", required=kind != "vendor_reported")
    algorithm = value = None
    if digest is not None:
        digest.reject_unknown({"algorithm", "value"})
        algorithm = digest.text("algorithm")
        if algorithm not in DIGEST_HEX:
            raise digest.error("algorithm", f"{algorithm!r}: one of {', '.join(DIGEST_HEX)}")
        value = digest.text("value")
        if len(value) != DIGEST_HEX[algorithm] or not _HEX.match(value):
            raise digest.error("value", f"a {algorithm} digest is {DIGEST_HEX[algorithm]} lower-case hex digits")
    return Component(name, version, svn, algorithm, value, (kind, place), section.line)


def _agree_with_regions(c: Component, firmware: dict, where: str) -> None:
    regions = firmware.get("regions")
    if not isinstance(regions, dict):
        return
    region = c.measured_at[1]
    spec = regions.get(region)
    images = spec.get("images") if isinstance(spec, dict) else None
    if not isinstance(images, list):
        raise YamlError(f"{where}: measured at dump region {region!r}, which firmware.regions does not list "
                        f"with images: the firmware dump would never read it")
    if c.digest_algorithm != "sha256":
        raise YamlError(f"{where}: firmware.regions.{region} holds sha256 digests; give this component's as sha256 "
                        f"so that the two can be compared")
    same = [i for i in images if isinstance(i, dict) and str(i.get("version")) == c.version]
    if not same:
        raise YamlError(f"{where}: version {c.version!r} is not among firmware.regions.{region}.images")
    if all(i.get("sha256") != c.digest for i in same):
        raise YamlError(f"{where}: sha256 {c.digest} disagrees with firmware.regions.{region}.images "
                        f"version {c.version!r} (sha256 {same[0].get('sha256')})")


def _agree_with_option_rom(c: Component, firmware: dict, where: str) -> None:
    rom = firmware.get("option_rom")
    images = rom.get("images") if isinstance(rom, dict) else None
    if not isinstance(images, list):
        return
    index = c.measured_at[1]
    listed = [i for i in images if isinstance(i, dict) and i.get("index") == index]
    if not listed:
        raise YamlError(f"{where}: measured at option ROM image {index}, which firmware.option_rom.images does "
                        f"not list")
    if c.digest_algorithm != "sha256" or listed[0].get("sha256") != c.digest:
        raise YamlError(f"{where}: {c.digest_algorithm} {c.digest} disagrees with firmware.option_rom.images "
                        f"index {index} (sha256 {listed[0].get('sha256')})")


def parse_components(firmware: Any, source: str) -> tuple[Component, ...]:
    """The `firmware.components` of a profile's `firmware` mapping, checked against its other
    sections; () when there is none. YamlError `file:line: firmware.components[i].field: why`."""
    if not isinstance(firmware, dict) or firmware.get("components") is None:
        return ()
    section = Section(firmware, source, "firmware")
    components, seen = [], {}
    for item, path, line in section.sequence("components"):
        c = _component(item, source, path, line)
        where = f"{source}:{c.line}: {path}"
        if c.name in seen:
            raise YamlError(f"{where}.name: {c.name!r} is listed twice (also at line {seen[c.name]})")
        seen[c.name] = c.line
        if c.measured_at[0] == "dump_region":
            _agree_with_regions(c, firmware, where)
        elif c.measured_at[0] == "option_rom_image":
            _agree_with_option_rom(c, firmware, where)
        components.append(c)
    return tuple(components)
