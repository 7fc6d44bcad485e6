"""Canonical JSON: sorted keys, no insignificant whitespace, UTF-8, no floats.

The same record always serialises to the same bytes, so its digest and signature are stable.
Floats are refused (their text form is not canonical across implementations): times are
ISO-8601 strings, durations integers. `plain_json` turns what probes and plans hold (floats,
dates, text with lone surrogates from board bytes) into values canonical JSON can encode.
"""

from __future__ import annotations

import json
from typing import Any


def _reject_floats(value: Any) -> None:
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, float):
            raise TypeError(f"canonical JSON holds no floats (got {item!r}); use a string or an integer")
        if isinstance(item, dict):
            for key in item:
                if not isinstance(key, str):
                    raise TypeError(f"canonical JSON keys are strings (got {key!r})")
            stack.extend(item.values())
        elif isinstance(item, (list, tuple)):
            stack.extend(item)


def _encode(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False).encode("utf-8")


def canonical_json(value: Any) -> bytes:
    _reject_floats(value)
    return _encode(value)


class NotCanonical(ValueError):
    """JSON, but not the canonical bytes of the value it holds."""


def _refuse_float(text: str) -> Any:
    raise ValueError(f"canonical JSON holds no floats (got {text[:40]})")


def loads_canonical(data: bytes) -> Any:
    """The value of signed JSON that must be canonical, parsed and proven canonical in one pass
    (verifying an archive of results is mostly this): floats and NaN are refused as they are
    parsed, and re-encoding must give back exactly `data`, which also proves sorted keys, no
    spaces and no key twice (a repeated key would shrink the re-encoding). ValueError when `data`
    is no JSON, NotCanonical when it is JSON written otherwise."""
    value = json.loads(data, parse_float=_refuse_float, parse_constant=_refuse_float)
    if _encode(value) != data:
        raise NotCanonical("not canonical JSON (sorted keys, no spaces, no floats, no key twice)")
    return value


def plain_json(value: Any) -> Any:
    """`value` as plain JSON the signed record can hold: floats and other scalars become text,
    and text UTF-8 cannot encode (lone surrogates from board bytes) is written with escapes."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
            return value
        except UnicodeEncodeError:
            return value.encode("utf-8", "backslashreplace").decode("utf-8")
    if value is None or isinstance(value, (bool, int)):
        return value
    if isinstance(value, dict):
        return {str(k): plain_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain_json(v) for v in value]
    return repr(value) if isinstance(value, float) else str(value)
