"""Interfaces: bytes to and from a board. They know nothing about plans or verdicts.

Each interface kind has an opener: a function that takes the board config's settings for it
(a dict) and returns an object with `close()`. A board opens them lazily, by kind name.
New kinds (serial, usb, net, nvml) register here; nothing else changes.
"""

from __future__ import annotations

import importlib
from typing import Any, Callable

# kind → "module:function"; imported on first use so a bench without pyusb can still read PCIe.
OPENERS: dict[str, str] = {
    "pcie": "harness.interfaces.pcie:open_pcie",
    "serial": "harness.interfaces.serial:open_serial",
    "net": "harness.interfaces.netcap:open_net",
    "usb": "harness.interfaces.usb:open_usb",
}


def opener(kind: str) -> Callable[[dict], Any]:
    try:
        target = OPENERS[kind]
    except KeyError:
        raise KeyError(f"unknown interface kind {kind!r} (known: {', '.join(sorted(OPENERS))})") from None
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)
