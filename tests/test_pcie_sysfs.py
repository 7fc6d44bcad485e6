"""The PCIe interface reads real sysfs and sysfs-shaped trees the same way; `pcie show` agrees with lspci."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest

from harness.interfaces.pcie import SYSFS_PCI_DEVICES, PcieFunction, PcieUnavailable, resolve_sysfs_path

from conftest import CAPTURE, attestlab, lspci_available

REAL_DEVICES = sorted(SYSFS_PCI_DEVICES.glob("*")) if SYSFS_PCI_DEVICES.is_dir() else []
needs_pci = pytest.mark.skipif(not REAL_DEVICES, reason="this machine shows no PCI devices in /sys/bus/pci/devices")
needs_lspci = pytest.mark.skipif(not lspci_available(), reason="lspci (Debian pciutils) not installed; make test installs it")


@needs_pci
@pytest.mark.parametrize("device", REAL_DEVICES, ids=lambda p: p.name)
def test_real_sysfs_function_reads_ids_that_match_the_kernel(device):
    function = PcieFunction(device)
    raw = function.config_space()
    assert len(raw) in (64, 256, 4096)
    assert int.from_bytes(raw[0:2], "little") == function.hex_attribute("vendor")
    assert int.from_bytes(raw[2:4], "little") == function.hex_attribute("device")
    assert function.bdf == device.name


@needs_pci
def test_bdf_forms_resolve_to_sysfs():
    bdf = REAL_DEVICES[0].name
    assert resolve_sysfs_path(bdf) == REAL_DEVICES[0]
    assert resolve_sysfs_path(bdf[5:]) == REAL_DEVICES[0]


def test_config_space_is_read_once_and_cached(tmp_path):
    device = tmp_path / "0000:00:06.0"
    device.mkdir()
    (device / "config").write_bytes((CAPTURE / "sysfs" / "config").read_bytes())
    function = PcieFunction(device)
    first = function.config_space()
    (device / "config").write_bytes(b"\xff" * 4096)  # a board that answers differently later
    assert function.config_space() == first


def test_capture_directory_reads_like_a_device():
    function = PcieFunction(CAPTURE / "sysfs")
    assert function.hex_attribute("subsystem_device") == 0x16C1
    assert function.link()["max_link_width"] == "16"
    assert function.resources()[0].start == 0x102002000000
    assert function.resources()[0].size == 0x1000000


def test_missing_function_says_what_to_give(tmp_path):
    with pytest.raises(PcieUnavailable, match="not a PCIe function directory"):
        PcieFunction(tmp_path / "nope")


def test_unreadable_config_is_a_clear_error(tmp_path):
    (tmp_path / "config").mkdir()  # exists, but reading it fails
    with pytest.raises(PcieUnavailable):
        PcieFunction(tmp_path).config_space()


def test_garbage_resource_file_is_a_clear_error(tmp_path):
    (tmp_path / "config").write_bytes(bytes(64))
    (tmp_path / "resource").write_text("0x0 zz 0x0\n")
    with pytest.raises(PcieUnavailable, match="resource line 1"):
        PcieFunction(tmp_path).resources()


def _lspci_caps(text: str) -> list[tuple[int, str | None, str]]:
    caps = []
    for m in re.finditer(r"^\s*Capabilities: \[([0-9a-f]+)(?: v(\d+))?\] ([^:\n<]+)", text, re.M):
        caps.append((int(m.group(1), 16), m.group(2), m.group(3).strip()))
    return caps


def _ours(target: str) -> dict:
    run = attestlab("pcie", "show", target, "--json")
    assert run.returncode == 0, run.stderr
    return json.loads(run.stdout)


def _compare(ours: dict, lspci_text: str) -> None:
    theirs = _lspci_caps(lspci_text)
    mine = [(c["offset"], None if c["version"] is None else str(c["version"]), c["name"]) for c in ours["capabilities"]]
    assert [(o, v) for o, v, _ in mine] == [(o, v) for o, v, _ in theirs]
    for (_, _, name), (_, _, lspci_name) in zip(mine, theirs):
        assert lspci_name.startswith(name), (name, lspci_name)


@needs_pci
@needs_lspci
@pytest.mark.skipif(os.geteuid() != 0, reason="lspci shows extended capabilities only to root")
@pytest.mark.parametrize("device", REAL_DEVICES, ids=lambda p: p.name)
def test_pcie_show_agrees_with_lspci_on_every_real_device(device):
    lspci = subprocess.run(["lspci", "-vvv", "-s", device.name], capture_output=True, text=True, check=True)
    ours = _ours(device.name)
    _compare(ours, lspci.stdout)
    assert f"{ours['vendor_id']:04x}:{ours['device_id']:04x}" in subprocess.run(
        ["lspci", "-n", "-s", device.name], capture_output=True, text=True).stdout


@needs_lspci
def test_pcie_show_agrees_with_lspci_on_the_h100_capture():
    ours = _ours(str(CAPTURE / "sysfs" / "config"))
    _compare(ours, (CAPTURE / "lspci-vvv.txt").read_text())
    assert ours["dsn"] == "a1-df-09-95-b8-2d-b0-48"
    assert (ours["vendor_id"], ours["device_id"], ours["subsystem_id"]) == (0x10DE, 0x2330, 0x16C1)
    assert set(ours) == {"vendor_id", "device_id", "class_code", "revision", "subsystem_vendor_id",
                         "subsystem_id", "header_type", "dsn", "capabilities", "anomalies"}


def test_pcie_show_reads_an_lspci_text_dump_like_the_binary():
    assert _ours(str(CAPTURE / "lspci-xxxx.txt")) == _ours(str(CAPTURE / "sysfs" / "config"))


def test_pcie_show_on_garbage_is_an_error_not_a_crash(tmp_path):
    (tmp_path / "junk.bin").write_bytes(b"\x00" * 10)
    run = attestlab("pcie", "show", str(tmp_path / "junk.bin"), "--json")
    assert run.returncode == 2 and "Traceback" not in run.stderr and run.stderr.strip()
