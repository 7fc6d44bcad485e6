"""Canonical JSON: sorted keys, no insignificant whitespace, UTF-8, no floats.

The same record always serialises to the same bytes, so its digest and signature are stable.
Floats are refused (their text form is not canonical across implementations): times are
ISO-8601 strings, durations integers.
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


def canonical_json(value: Any) -> bytes:
    _reject_floats(value)
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False).encode("utf-8")
