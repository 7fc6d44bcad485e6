"""The layers of docs/architecture.md hold: every arrow goes one way.

The simulator is the independent device the harness is tested against, so it imports nothing
from `harness`; interfaces know nothing of probes, plans or results; probes know nothing of
signing or the pytest plugin; formats do no I/O-layer imports."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from conftest import ROOT

RULES = [
    ("fixtures/sim", ("harness", "probes")),
    ("harness/interfaces", ("probes", "harness.plan", "harness.results", "harness.plugin", "harness.runner", "harness.board")),
    ("harness/formats", ("probes", "harness.interfaces", "harness.plan", "harness.results", "harness.board")),
    ("probes", ("harness.results", "harness.plugin", "harness.cli", "harness.runner")),
]


def imported_modules(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


@pytest.mark.parametrize("folder,forbidden", RULES, ids=[r[0] for r in RULES])
def test_layer_imports_only_what_it_may(folder, forbidden):
    files = sorted((ROOT / folder).rglob("*.py"))
    assert files
    crossings = [f"{path.relative_to(ROOT)} imports {name}" for path in files for name in imported_modules(path)
                 if any(name == f or name.startswith(f + ".") for f in forbidden)]
    assert crossings == []
