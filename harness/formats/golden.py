"""Golden measurements and how a measured device differs from them. Pure, no I/O.

A golden value comes from a signed reference (an NVIDIA RIM, later the lab's own profile) and
says, for one measurement index, which values are acceptable (a RIM may allow alternatives).
Comparing the blocks a device reported with them yields one `Mismatch` per problem, each naming
the index, the expected alternatives, the measured value and the reference it came from with
its signer: a FAIL a person can act on. Nothing is passed silently:

- ``differs``:      the block's value is none of the alternatives;
- ``missing``:      the reference marks the index active, the report has no such block;
- ``unreferenced``: the report has a block no reference marks active (nobody vouches for it).

An index that a reference lists as inactive is a statement that the vendor does not measure it;
a block reported there anyway is ``unreferenced``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Mapping


class GoldenError(ValueError):
    """References that cannot be combined (two of them claim the same index)."""


@dataclass(frozen=True)
class ReferenceSource:
    kind: str        # "NVIDIA RIM", "OCP S.A.F.E. SFR", "reference profile"
    ident: str       # the document's own id (a RIM's tagId, a file name)
    version: str     # the firmware version the document describes
    signer: str      # subject of the key that signed it

    def describe(self) -> str:
        return f"{self.kind} {self.ident} (version {self.version}, signed by {self.signer})"


@dataclass(frozen=True)
class Golden:
    index: int                       # the measurement block index in the device's report
    alternatives: tuple[bytes, ...]  # any one of them is acceptable
    active: bool
    name: str                        # the reference's own name for the entry
    source: ReferenceSource


@dataclass(frozen=True)
class Mismatch:
    kind: str                        # "differs", "missing", "unreferenced"
    index: int
    expected: tuple[str, ...]        # hex of each acceptable value
    measured: str | None             # hex, None when missing
    name: str
    source: ReferenceSource | None

    def explain(self) -> str:
        where = f"measurement index {self.index}" + (f" ({self.name})" if self.name else "")
        ref = self.source.describe() if self.source else "no reference"
        if self.kind == "missing":
            return f"{where}: {ref} expects one of {list(self.expected)}, the report has no such block"
        if self.kind == "unreferenced":
            return f"{where}: measured {self.measured}, but no reference marks this index active"
        return f"{where}: measured {self.measured}, {ref} expects one of {list(self.expected)}"


def merge_golden(*sets: Mapping[int, Golden]) -> dict[int, Golden]:
    """One table from several references; an index active in two of them is a GoldenError.

    (NVIDIA splits a GPU's measurements between the driver RIM and the VBIOS RIM, each marking
    the others' indexes inactive; two claiming one index means the wrong pair of RIMs.)
    """
    merged: dict[int, Golden] = {}
    for table in sets:
        for index, golden in table.items():
            have = merged.get(index)
            if have is not None and have.active and golden.active:
                raise GoldenError(f"measurement index {index} is active in both {have.source.describe()} and "
                                  f"{golden.source.describe()}")
            if have is None or golden.active:
                merged[index] = golden
    return merged


def compare_measurements(measured: Mapping[int, bytes], golden: Mapping[int, Golden]) -> list[Mismatch]:
    """Every difference between the measured blocks (index → value) and the golden table, by index."""
    found = []
    for index in sorted(set(measured) | {i for i, g in golden.items() if g.active}):
        g = golden.get(index)
        value = measured.get(index)
        if g is None or not g.active:
            found.append(Mismatch("unreferenced", index, (), value.hex(), g.name if g else "", g.source if g else None))
        elif value is None:
            found.append(Mismatch("missing", index, _hexes(g.alternatives), None, g.name, g.source))
        elif value not in g.alternatives:
            found.append(Mismatch("differs", index, _hexes(g.alternatives), value.hex(), g.name, g.source))
    return found


def _hexes(values: Iterable[bytes]) -> tuple[str, ...]:
    return tuple(v.hex() for v in values)
