"""Reference profiles: what a product is expected to be (identity, allowed capabilities, later
firmware digests, documented console commands, egress policy).

A plan step names a dotted key (`reference: pcie.identity`); the board's reference profile
supplies the value. A missing value is an ERROR ("no reference for …"), never a PASS.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.verdict import MissingReference
from harness.yamlio import Section, YamlError, load_yaml_file_with_digest


@dataclass(frozen=True)
class Reference:
    product: str
    values: dict[str, Any]
    path: str
    sha256: str

    def lookup(self, dotted: str) -> Any:
        node: Any = self.values
        walked = []
        for part in dotted.split("."):
            walked.append(part)
            if not isinstance(node, dict) or part not in node or node[part] is None:
                raise MissingReference(f"no reference for {dotted!r} in {self.path} "
                                       f"(missing at {'.'.join(walked)!r})")
            node = node[part]
        return node


def load_reference(path: str | Path) -> Reference:
    path = Path(path)
    doc, digest = load_yaml_file_with_digest(path)
    top = Section(doc, str(path))
    meta = top.mapping("reference")
    meta.reject_unknown({"product", "description", "sources"})
    values = {k: v for k, v in doc.items() if k != "reference"}
    if not values:
        raise YamlError(f"{path}: a reference profile needs at least one section besides 'reference'")
    return Reference(product=meta.text("product"), values=values, path=str(path),
                     sha256=digest)
