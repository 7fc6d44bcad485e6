"""The layers of docs/architecture.md hold: every arrow goes one way.

Each rule of the layer table is checked on every import of every module: absolute and
relative (`from . import x`, `from ..verdict import ProbeError`, resolved to the module they
name), at the top of a file or inside a function. Layers are named by module prefix, so a
module added to a package (a split of serial.py or netcap.py) is covered without a change here.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from conftest import ROOT

# Module prefix → layer. The longest matching prefix decides.
LAYERS = {
    "harness.interfaces": "interfaces",
    "harness.formats": "formats",
    "harness.board": "board",
    "harness.reference": "board",
    "probes": "probes",
    "harness.plan": "plan",
    "harness.runner": "run",
    "harness.plugin": "run",
    "harness.cli": "run",
    "harness.results": "results",
    "harness.archive": "archive",
    "fixtures.sim": "simulation",
    # Shared by every layer: plain data (verdict.py, evidence.py), reading files with a cap
    # (files.py), located YAML for every hand-written file (yamlio.py: plans, board configs,
    # reference profiles; it knows nothing of any of them), the package's version.
    "harness.verdict": "shared",
    "harness.evidence": "shared",
    "harness.files": "shared",
    "harness.yamlio": "shared",
    "harness.progress": "shared",  # what long work is doing, for a terminal (stdlib only)
    "harness": "shared",
}

# A lower layer never imports a higher one: a module imports only its own layer and lower ranks.
# board and plan know nothing of each other (equal rank, different layers); so do probes and plan.
RANK = {"shared": 0, "formats": 1, "interfaces": 2, "board": 3, "plan": 3, "probes": 4, "results": 5, "archive": 6, "run": 7}

# "Knows nothing of" of the layer table, beyond what the ranks already forbid.
KNOWS_NOTHING_OF = {
    "interfaces": ("harness.plan", "probes", "harness.runner", "harness.results"),
    "formats": ("harness.interfaces", "harness.board", "harness.reference", "harness.verdict", "harness.evidence",
                "harness.files",
                # pure decoders do no I/O
                "os", "pathlib", "io", "subprocess", "shutil", "select", "fcntl", "tempfile", "serial", "mmap"),
    "board": ("probes", "harness.plan"),
    "probes": ("harness.plan", "pytest", "harness.results", "harness.plugin", "harness.runner", "harness.cli"),
    "plan": ("harness.board", "harness.reference", "harness.interfaces", "probes"),
    "results": ("harness.interfaces", "probes"),
    "archive": ("harness.interfaces", "probes", "harness.board", "harness.reference", "harness.plan"),
    "simulation": ("harness", "probes"),
}
# An interface knows of harness/verdict.py only the errors it raises.
INTERFACES_MAY_TAKE_FROM_VERDICT = {"ProbeError"}
PACKAGES = ("harness", "probes", "fixtures/sim")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer_of(module: str) -> str | None:
    best = max((p for p in LAYERS if module == p or module.startswith(p + ".")), key=len, default=None)
    return LAYERS[best] if best else None


def imports(tree: ast.AST, module: str, is_package: bool) -> list[tuple[str, str | None, int]]:
    """(module, imported name or None, line) for every import in the tree, relative ones resolved."""
    package = module.split(".") if is_package else module.split(".")[:-1]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, None, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[:len(package) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            for alias in node.names:
                found.append((module, alias.name, node.lineno))
                # `from . import serial` imports the module harness.interfaces.serial
                found.append((f"{module}.{alias.name}", None, node.lineno))
    return found


def source_files() -> list[Path]:
    return sorted(p for folder in PACKAGES for p in (ROOT / folder).rglob("*.py"))


def crossings(path: Path, text: str | None = None) -> list[str]:
    """Every import of `path` (its text, or `text` as if it were there) that breaks a rule."""
    tree = ast.parse(path.read_text() if text is None else text, str(path))
    me = layer_of(module_name(path))
    where = path.relative_to(ROOT)
    found = []
    flagged: set[tuple[int, str]] = set()
    for module, name, line in imports(tree, module_name(path), path.name == "__init__.py"):
        if (line, module.rsplit(".", 1)[0]) in flagged:  # `from x import y` flagged once, as x
            continue
        before = len(found)
        target = layer_of(module)
        forbidden = KNOWS_NOTHING_OF.get(me, ())
        if any(module == f or module.startswith(f + ".") for f in forbidden):
            found.append(f"{where}:{line} ({me}) imports {module}: {me} knows nothing of it")
        elif target and me in RANK and target != me and RANK[target] >= RANK[me]:
            found.append(f"{where}:{line} ({me}) imports {module} ({target}): not a lower layer")
        if me == "interfaces" and module == "harness.verdict" and name and name not in INTERFACES_MAY_TAKE_FROM_VERDICT:
            found.append(f"{where}:{line} interfaces imports verdict value {name} (only errors: "
                         f"{', '.join(sorted(INTERFACES_MAY_TAKE_FROM_VERDICT))})")
        if me == "run" and target == "formats" and name and name.startswith("_"):
            found.append(f"{where}:{line} run imports {module}.{name}: an internal of formats")
        if len(found) > before:
            flagged.add((line, module))
    if me == "formats":  # no I/O: not even the builtin open()
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "open":
                found.append(f"{where}:{node.lineno} formats calls open(): pure decoders do no I/O")
    return found


def test_every_module_belongs_to_a_layer():
    assert [str(p.relative_to(ROOT)) for p in source_files() if layer_of(module_name(p)) is None] == []


@pytest.mark.parametrize("layer", sorted({*RANK, "simulation"}))
def test_layer_imports_only_what_it_may(layer):
    files = [p for p in source_files() if layer_of(module_name(p)) == layer]
    assert files
    assert [c for p in files for c in crossings(p)] == []


def test_relative_imports_and_imports_in_functions_are_checked():
    """The checker sees through `from .. import` and into function bodies."""
    interface = ROOT / "harness" / "interfaces" / "new_kind.py"  # a module that may not exist yet
    found = crossings(interface, "def f():\n    from ..plan import Plan\n    from ..verdict import Verdict\n"
                                 "    from . import pcie\n    from .. import runner\n")
    assert any("imports harness.plan" in c for c in found)
    assert any("verdict value Verdict" in c for c in found)
    assert any("imports harness.runner" in c for c in found)
    assert not any("pcie" in c for c in found)
    decoder = ROOT / "harness" / "formats" / "new_format.py"
    found = crossings(decoder, "import os\nfrom ..board import Board\ndef f(p):\n    return open(p).read()\n")
    assert len(found) == 3
    sim = ROOT / "fixtures" / "sim" / "new_part.py"
    assert crossings(sim, "from harness.formats import pcap\n")
