"""YAML loading that remembers where every value came from (file:line), for clear errors.

Plans, board configs, reference profiles and policies are written by hand; a mistake must be
reported as `level1.yaml:42: requirements[3].steps[0].probe: ...`, not as a stack trace.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any

import yaml

from harness.files import read_capped


class YamlError(ValueError):
    """A YAML file could not be read or has the wrong shape. The message names file, line, field."""


class LocatedDict(dict):
    """A mapping that knows its own line and each key's line (1-based)."""

    line: int = 0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.key_lines: dict[Any, int] = {}

    def line_of(self, key: Any) -> int:
        return self.key_lines.get(key, self.line)


class LocatedList(list):
    """A sequence that knows its own line and each item's line."""

    line: int = 0

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.item_lines: list[int] = []

    def line_of(self, index: int) -> int:
        return self.item_lines[index] if 0 <= index < len(self.item_lines) else self.line


class _LocatingLoader(yaml.SafeLoader):
    pass


def _construct_mapping(loader: _LocatingLoader, node: yaml.MappingNode) -> LocatedDict:
    loader.flatten_mapping(node)
    mapping = LocatedDict()
    mapping.line = node.start_mark.line + 1
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        try:
            hash(key)
        except TypeError:
            raise yaml.constructor.ConstructorError(
                None, None, f"unhashable key {key!r}", key_node.start_mark) from None
        if key in mapping:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark)
        mapping[key] = loader.construct_object(value_node, deep=True)
        mapping.key_lines[key] = key_node.start_mark.line + 1
    return mapping


def _construct_sequence(loader: _LocatingLoader, node: yaml.SequenceNode) -> LocatedList:
    seq = LocatedList(loader.construct_object(child, deep=True) for child in node.value)
    seq.line = node.start_mark.line + 1
    seq.item_lines = [child.start_mark.line + 1 for child in node.value]
    return seq


# YAML 1.1 reads `0000:41:00.0` (a PCI address) as the base-60 float 2460.0 and `12:30` as 750.
# Nobody writes base-60 numbers in a lab file: resolve ints and floats without it.
_INT, _FLOAT = "tag:yaml.org,2002:int", "tag:yaml.org,2002:float"
_LocatingLoader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag not in (_INT, _FLOAT)]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}
_LocatingLoader.add_implicit_resolver(_INT, re.compile(
    r"^(?:[-+]?0b[0-1_]+|[-+]?0[0-7_]+|[-+]?(?:0|[1-9][0-9_]*)|[-+]?0x[0-9a-fA-F_]+)$"), list("-+0123456789"))
_LocatingLoader.add_implicit_resolver(_FLOAT, re.compile(
    r"^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+][0-9]+)?|\.[0-9][0-9_]*(?:[eE][-+][0-9]+)?"
    r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"), list("-+0123456789."))

_LocatingLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)
_LocatingLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_SEQUENCE_TAG, _construct_sequence)

MAX_YAML_BYTES = 4 * 1024 * 1024  # hand-written files; anything larger is a mistake or an attack


def load_yaml_text(text: str, source: str) -> Any:
    """Parse YAML text into LocatedDict/LocatedList values; YamlError names `source` and line."""
    if len(text) > MAX_YAML_BYTES:
        raise YamlError(f"{source}: file too large ({len(text)} bytes; limit {MAX_YAML_BYTES})")
    try:
        return yaml.load(text, Loader=_LocatingLoader)  # noqa: S506 - SafeLoader subclass
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = f":{mark.line + 1}" if mark else ""
        raise YamlError(f"{source}{line}: not valid YAML: {exc.problem or exc}") from None
    except yaml.YAMLError as exc:
        raise YamlError(f"{source}: not valid YAML: {exc}") from None
    except RecursionError:
        raise YamlError(f"{source}: nested too deeply") from None


def load_yaml_file(path: str | Path) -> Any:
    return load_yaml_file_with_digest(path)[0]


def load_yaml_file_with_digest(path: str | Path) -> tuple[Any, str]:
    """The parsed file and the sha256 of the very bytes parsed (a record binds what was read)."""
    path = Path(path)
    try:
        raw = read_capped(path, MAX_YAML_BYTES)
    except OSError as exc:
        raise YamlError(f"{path}: cannot read: {exc.strerror or exc}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise YamlError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    return load_yaml_text(text, str(path)), hashlib.sha256(raw).hexdigest()


def line_of(container: Any, key: Any) -> int:
    """The line of `container[key]` if known, else the container's own line, else 0."""
    if isinstance(container, (LocatedDict, LocatedList)):
        return container.line_of(key)
    return 0


class Section:
    """One mapping of a hand-written file, read field by field with located errors.

    `Section(data, "plan.yaml", "requirements[2]")` → `.text("id")` returns the string or raises
    `YamlError("plan.yaml:17: requirements[2].id: required, a string")`.
    """

    def __init__(self, data: Any, source: str, path: str = "", line: int = 0) -> None:
        self.source = source
        self.path = path
        self.line = line or (data.line if isinstance(data, LocatedDict) else 0)
        if not isinstance(data, dict):
            raise YamlError(f"{self._where(None)}: expected a mapping, got {_kind(data)}")
        self.data = data

    def _field(self, key: Any) -> str:
        return f"{self.path}.{key}" if self.path else str(key)

    def _where(self, key: Any) -> str:
        line = line_of(self.data, key) if key is not None and hasattr(self, "data") else self.line
        loc = f"{self.source}:{line}" if line else self.source
        field = self._field(key) if key is not None else self.path
        return f"{loc}: {field}" if field else loc

    def error(self, key: Any, message: str) -> YamlError:
        return YamlError(f"{self._where(key)}: {message}")

    def has(self, key: str) -> bool:
        return key in self.data

    def raw(self, key: str, default: Any = None) -> Any:
        return self.data.get(key, default)

    def text(self, key: str, required: bool = True, default: str | None = None) -> str | None:
        if key not in self.data:
            if required:
                raise self.error(key, "required, a string")
            return default
        value = self.data[key]
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise self.error(key, f"expected a string, got {_kind(value)}")
        value = str(value)
        if required and not value.strip():
            raise self.error(key, "must not be empty")
        return value

    def integer(self, key: str, required: bool = True, default: int | None = None) -> int | None:
        if key not in self.data:
            if required:
                raise self.error(key, "required, an integer")
            return default
        value = self.data[key]
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.error(key, f"expected an integer, got {_kind(value)}")
        return value

    def mapping(self, key: str, required: bool = True) -> "Section | None":
        if key not in self.data or self.data[key] is None:
            if required:
                raise self.error(key, "required, a mapping")
            return None
        value = self.data[key]
        if not isinstance(value, dict):
            raise self.error(key, f"expected a mapping, got {_kind(value)}")
        return Section(value, self.source, self._field(key), line_of(self.data, key))

    def sequence(self, key: str, required: bool = True) -> list[tuple[Any, str, int]]:
        """Items of a list field as (value, path, line)."""
        if key not in self.data or self.data[key] is None:
            if required:
                raise self.error(key, "required, a list")
            return []
        value = self.data[key]
        if not isinstance(value, list):
            raise self.error(key, f"expected a list, got {_kind(value)}")
        return [(item, f"{self._field(key)}[{i}]", line_of(value, i) or line_of(self.data, key))
                for i, item in enumerate(value)]

    def reject_unknown(self, allowed: set[str] | frozenset[str]) -> None:
        for key in self.data:
            if key not in allowed:
                known = ", ".join(sorted(allowed))
                raise self.error(key, f"unknown field (known: {known})")


def _kind(value: Any) -> str:
    if value is None:
        return "nothing"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return f"{type(value).__name__} {value!r}"[:80]
