"""Firmware version strings: parse and compare dotted / hex-dotted versions. Pure, no I/O.

Accelerator firmware is versioned in dotted components that are often hexadecimal: the H100's
VBIOS reports ``96.00.DA.00.0C``, its InfoROM ``G520.0200.00.05``. Compared as text,
``96.00.DA.00.0C`` and ``96.00.DA.00.C`` differ although they are the same version, and
decimal parsing cannot read ``DA`` at all. Here each component is an optional letter prefix
and a hexadecimal number:

    component := [A-Za-z]* [0-9A-Fa-f]+     (the prefix is the shortest that leaves hex digits:
                                              "G520" is G + 0x520, "DA" is 0xDA, "0C" is 0x0C)
    version   := component ("." component)*  (a leading "v" is ignored: "v1.2" is 1.2)

Reading every number as hexadecimal orders plain decimal versions correctly as well (for
digit strings, hexadecimal and decimal order agree: "1.10" > "1.9" either way).

Two versions compare only when they have the same shape: the same number of components and
the same prefixes (ignoring case). Anything else — text that is no version, ``96.00.DA`` against
``96.00.DA.00.0C``, ``G520.…`` against ``G510.…`` is fine but ``G520.…`` against ``96.…`` is
not — raises VersionError: a version that cannot be compared decides nothing (ERROR), it is
never taken as "not below".
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_COMPONENT = re.compile(r"^(?P<prefix>[A-Za-z]*?)(?P<number>[0-9A-Fa-f]+)$")
_MAX_LENGTH = 128


class VersionError(ValueError):
    """A version string cannot be parsed, or two versions cannot be compared."""


@dataclass(frozen=True)
class Version:
    text: str
    prefixes: tuple[str, ...]
    numbers: tuple[int, ...]

    def shape(self) -> tuple[int, tuple[str, ...]]:
        return len(self.numbers), self.prefixes

    def __str__(self) -> str:
        return self.text


def parse_version(text: object) -> Version:
    """A `Version`; VersionError says what is wrong with `text`."""
    if not isinstance(text, str):
        raise VersionError(f"a version must be text, got {text!r}")
    raw = text.strip()
    if not raw or len(raw) > _MAX_LENGTH:
        raise VersionError(f"{text!r} is not a version (empty or longer than {_MAX_LENGTH} characters)")
    body = raw[1:] if raw[0] in "vV" and len(raw) > 1 and raw[1].isdigit() else raw
    prefixes, numbers = [], []
    for i, part in enumerate(body.split(".")):
        m = _COMPONENT.match(part)
        if not m:
            raise VersionError(f"{raw!r} is not a dotted version: component {i + 1} {part!r} is not "
                               f"letters followed by hexadecimal digits")
        prefixes.append(m["prefix"].upper())
        numbers.append(int(m["number"], 16))
    return Version(raw, tuple(prefixes), tuple(numbers))


def compare_versions(a: object, b: object) -> int:
    """-1, 0 or 1 as version `a` is below, equal to or above `b`; VersionError when incomparable."""
    va = a if isinstance(a, Version) else parse_version(a)
    vb = b if isinstance(b, Version) else parse_version(b)
    if len(va.numbers) != len(vb.numbers):
        raise VersionError(f"cannot compare {va.text!r} ({len(va.numbers)} components) with {vb.text!r} "
                           f"({len(vb.numbers)} components)")
    if va.prefixes != vb.prefixes:
        raise VersionError(f"cannot compare {va.text!r} with {vb.text!r}: the components' letter prefixes differ "
                           f"({'.'.join(p or '-' for p in va.prefixes)} vs {'.'.join(p or '-' for p in vb.prefixes)})")
    return (va.numbers > vb.numbers) - (va.numbers < vb.numbers)
