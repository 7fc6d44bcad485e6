"""Firmware off a real console without a custom agent: the transfers a board config chooses.

Each zoo board is one simulator process; every transfer opens a fresh SerialConsole on its pty
with `interfaces.serial.transfer` set (so regions are read again), and level1's firmware
requirements run through Board + StepRunner exactly as in a run. The simulated shell's `sz` is
the real lrzsz; `md.b`, `hexdump -C` and `xxd` print what the real tools print
(fixtures/sim/hexdump.py). The verdicts must be the matrix's (fixtures/boards/matrix.yaml)
whichever way the bytes came; the failure paths must end ERROR, never PASS.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import yaml

from fixtures.sim.__main__ import load_profile
from fixtures.sim.console import region_image
from harness.board import Board
from harness.evidence import EvidenceStore
from harness.interfaces.serial import ConsoleError, SerialConsole, SerialSettingsError, serial_settings
from harness.plan import load_plan
from harness.reference import load_reference
from harness.runner import StepRunner

from conftest import BOARDS, PLAN, ROOT, start_console_simulator, stop_processes

pytestmark = pytest.mark.skipif(not Path("/usr/bin/sz").exists() and not any(
    (Path(d) / "sz").exists() for d in os.environ.get("PATH", "").split(":")), reason="lrzsz's sz is not installed")

LEVEL1 = load_plan(PLAN)
FW_REQUIREMENTS = ("L1-FW-INTEGRITY", "L1-FW-ROLLBACK")
MATRIX = yaml.safe_load((BOARDS / "matrix.yaml").read_text())
REFERENCE = load_reference(ROOT / "fixtures" / "references" / "nvidia-h100-sxm5-80gb.yaml")
SIZES = {"vbios": 1 << 20, "inforom": 256 << 10}
PATHS = {name: {"path": f"/flash/{name}.bin"} for name in SIZES}
SIZED = {name: {"path": f"/flash/{name}.bin", "size": size} for name, size in SIZES.items()}
# The simulator maps regions at 0x08000000 + index * 0x1000000 (profile order: vbios, inforom).
ADDRESSES = {"vbios": {"address": 0x08000000, "size": SIZES["vbios"]},
             "inforom": {"address": 0x09000000, "size": SIZES["inforom"]}}
TRANSFERS: dict[str, Any] = {
    "dumpframe": None,
    "zmodem": {"method": "zmodem", "sha256_command": "sha256sum {path}", "regions": PATHS},
    "ymodem": {"method": "ymodem", "regions": PATHS},
    "md.b": {"method": "hexdump", "command": "md.b {address:#x} {size:#x}", "regions": ADDRESSES},
    "hexdump -C": {"method": "hexdump", "style": "hexdump-C", "sha256_command": "sha256sum {path}", "regions": SIZED},
    "xxd": {"method": "hexdump", "command": "xxd {path}", "regions": SIZED},
    "file": "file",
}
# Each board through ZMODEM and a supplied file, each hex-dump style on one board, YMODEM on
# clean (a hex dump of 1.25 MiB costs 3-6 s of rendering and strict parsing, YMODEM's 1280
# acknowledged blocks 2-8 s): every transfer is shown to pass the clean images exactly and to
# carry a changed byte or an old release through to FAIL. dumpframe on every board is the zoo's.
VARIANTS = {"clean": ("dumpframe", "zmodem", "ymodem", "md.b", "file"),
            "tampered-firmware": ("zmodem", "hexdump -C", "file"),
            "rollback": ("zmodem", "xxd", "file"),
            "hidden-command": ("zmodem", "file")}


def expected_verdicts(variant: str) -> dict[str, tuple[str, str | None]]:
    row = MATRIX[f"sim-{variant}"] or {}
    return {req: (row[req]["verdict"], row[req]["reason"]) if req in row else ("PASS", None)
            for req in FW_REQUIREMENTS}


class WithConsole:
    """The board, its `serial` interface replaced by a console opened here (with a transfer)."""

    def __init__(self, board: Board, console: SerialConsole) -> None:
        self._board, self._console = board, console

    def interface(self, kind: str) -> Any:
        return self._console if kind == "serial" else self._board.interface(kind)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._board, name)


def supplied_files(variant: str, directory: Path) -> dict[str, Any]:
    """What a lab would have read off the board with the vendor's tool: the board's own images."""
    console = load_profile(variant)["console"]
    regions = {}
    for name, spec in console["regions"].items():
        path = directory / f"{variant}-{name}.rom"
        image = region_image(name, spec, str(console.get("version", "0.0.0")))
        path.write_bytes(image)
        regions[name] = {"file": str(path), "tool": "nvflash 5.x --save", "read_by": "J. Doe",
                         "read_at": "2026-11-30", "sha256": hashlib.sha256(image).hexdigest()}
    return {"method": "file", "regions": regions}


def firmware_requirements(board: Any) -> dict[str, Any]:
    evidence = EvidenceStore()
    runner = StepRunner(board, evidence)
    results = {}
    for req_id in FW_REQUIREMENTS:
        req = LEVEL1.requirement(req_id)
        (step,) = [s for s in req.steps if s.probe == "firmware_dump"]
        results[req_id] = runner.run(req, step)
    return results


def _through_each_transfer(variant: str, directory: Path) -> dict[str, dict[str, Any]]:
    out = {}
    with Board.from_file(BOARDS / f"sim-{variant}.yaml") as board:
        settings = board.interface_settings("serial")
        for label in VARIANTS[variant]:
            transfer = TRANSFERS[label]
            if transfer == "file":
                transfer = supplied_files(variant, directory)
            config, _ = serial_settings({**settings, "transfer": transfer})
            with SerialConsole(config) as console:
                out[label] = firmware_requirements(WithConsole(board, console))
    return out


@pytest.fixture(scope="module")
def through_transfers(tmp_path_factory):
    """variant -> transfer -> level1's firmware results; every variant's simulator at once."""
    directory = tmp_path_factory.mktemp("supplied")
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = {v: pool.submit(_through_each_transfer, v, directory) for v in VARIANTS}
        return {v: f.result() for v, f in futures.items()}


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_the_zoo_firmware_verdicts_are_the_same_through_each_transfer(through_transfers, variant):
    expected = expected_verdicts(variant)
    for label, results in through_transfers[variant].items():
        for req, (verdict, reason) in expected.items():
            got = results[req]
            assert got.verdict.value == verdict, (variant, label, req, got.reasons)
            if reason is not None:
                assert any(reason in r for r in got.reasons), (variant, label, req, got.reasons)


def test_each_transfer_records_its_method_strength_and_provenance(through_transfers):
    clean = through_transfers["clean"]
    for label, results in clean.items():
        dumps = results["L1-FW-INTEGRITY"].facts["dumps"]
        method = "hexdump" if label in ("md.b", "hexdump -C", "xxd") else label
        assert {d["method"] for d in dumps.values()} == {method}, (label, dumps)
        strength = "supplied-file" if label == "file" else "read-by-harness"
        assert {d["strength"] for d in dumps.values()} == {strength}
    zmodem = clean["zmodem"]["L1-FW-INTEGRITY"].facts["dumps"]["vbios"]
    assert zmodem["provenance"]["command"] == "sz --binary /flash/vbios.bin"
    assert zmodem["provenance"]["board_sha256"] == zmodem["sha256"]  # the board's own sha256sum agreed
    assert zmodem["stats"]["crc_errors"] == 0 and zmodem["provenance"]["sent_name"] == "vbios.bin"
    md = clean["md.b"]["L1-FW-INTEGRITY"].facts["dumps"]["vbios"]
    assert md["provenance"]["command"] == "md.b 0x8000000 0x100000" and md["stats"]["lines"] == 65536
    supplied = clean["file"]["L1-FW-INTEGRITY"].facts["dumps"]["vbios"]["provenance"]
    assert supplied["tool"] == "nvflash 5.x --save" and supplied["read_by"] == "J. Doe"


def test_a_supplied_file_is_labelled_lower_strength_in_every_verdict(through_transfers):
    label = ("(an image file the lab supplied, read off the board by nvflash 5.x --save; not read by "
             "attestlab: lower-strength evidence)")
    for variant in ("clean", "tampered-firmware", "rollback"):
        results = through_transfers[variant]["file"]
        integrity = results["L1-FW-INTEGRITY"].reasons
        assert integrity and all(label in r for r in integrity if r.startswith("vbios")), integrity
        rollback = results["L1-FW-ROLLBACK"]
        if rollback.verdict.value != "ERROR":
            assert any(label in r for r in rollback.reasons), rollback.reasons
    # read by attestlab itself: no label, the same reasons as dumpframe's
    clean = through_transfers["clean"]
    for transfer in ("zmodem", "md.b"):
        assert clean[transfer]["L1-FW-INTEGRITY"].reasons == clean["dumpframe"]["L1-FW-INTEGRITY"].reasons


# --- failure paths: a console started here with a profile made for the case ---


@pytest.fixture(scope="module")
def shell(tmp_path_factory):
    """start(shell_options) -> endpoint of a clean console whose shell behaves as told."""
    procs = []

    def start(**options: Any) -> dict[str, Any]:
        profile = load_profile("clean")
        profile["console"]["shell"] = options
        proc, endpoint = start_console_simulator(profile, tmp_path_factory.mktemp("sim"))
        procs.append(proc)
        return endpoint
    yield start
    stop_processes(procs)


def open_with(endpoint: dict[str, Any], transfer: Any, **more: Any) -> SerialConsole:
    config, _ = serial_settings({**endpoint, "transfer": transfer, **more})
    console = SerialConsole(config).open()
    console.sync()
    return console


def probe_verdicts(endpoint: dict[str, Any], transfer: Any) -> dict[str, Any]:
    class Bench:
        reference = REFERENCE

        def __init__(self, console: SerialConsole) -> None:
            self.console = console

        def interface(self, kind: str) -> Any:
            return self.console

        def liveness(self) -> Any:
            from harness.board import Life, utc_now
            return Life(utc_now(), "nothing", None)
    with open_with(endpoint, transfer) as console:
        return firmware_requirements(Bench(console))


def test_sz_killed_mid_transfer_is_an_error_and_the_next_region_is_still_read(shell):
    endpoint = shell(sz_kill_after_bytes=300_000)  # vbios (1 MiB) dies; inforom (~270 kB on the wire) fits
    results = probe_verdicts(endpoint, TRANSFERS["zmodem"])
    integrity = results["L1-FW-INTEGRITY"]
    assert integrity.verdict.value == "ERROR", integrity.reasons
    (vbios,) = [r for r in integrity.reasons if r.startswith("vbios")]
    assert "vbios: the dump could not be completed: " in vbios and "zmodem transfer of 'vbios'" in vbios
    dumps = integrity.facts["dumps"]
    assert dumps["vbios"]["method"] == "zmodem" and "sha256" not in dumps["vbios"]  # nothing partial kept
    assert dumps["inforom"]["sha256"] == REFERENCE.lookup("firmware.regions.inforom.images")[0]["sha256"]
    assert not any(e.name == "firmware/vbios.bin" for e in integrity.evidence)


def test_a_board_whose_sha256sum_disagrees_with_what_it_sent_is_an_error(shell):
    endpoint = shell(sha256sum_lies=True)
    results = probe_verdicts(endpoint, TRANSFERS["zmodem"])
    integrity = results["L1-FW-INTEGRITY"]
    assert integrity.verdict.value == "ERROR"
    assert "the board's own 'sha256sum /flash/vbios.bin' says" in integrity.reasons[0]
    assert results["L1-FW-ROLLBACK"].verdict.value == "ERROR"


def test_a_hex_dump_with_a_gap_is_an_error(shell):
    endpoint = shell(hexdump_drop_line=1000)
    for transfer in ("md.b", "xxd"):
        with open_with(endpoint, TRANSFERS[transfer]) as console:
            with pytest.raises(ConsoleError, match=r"hexdump of 'inforom': the answer to .* is no complete"):
                console.dump_region("inforom")
            assert console.command("version") == "version: 96.00.DA.00.0C"  # back at the prompt


def test_a_shell_without_sz_says_so_at_once(shell):
    endpoint = shell(sz=None)
    with open_with(endpoint, TRANSFERS["ymodem"]) as console:
        with pytest.raises(ConsoleError, match="answered 'sz --ymodem -k /flash/vbios.bin' without starting a transfer: "
                                               "'-sh: sz: command not found'"):
            console.dump_region("vbios")
        console.sync()
        assert console.command("version") == "version: 96.00.DA.00.0C"


def test_sha256sum_for_another_file_is_an_error(shell):
    endpoint = shell()
    transfer = {**TRANSFERS["zmodem"], "sha256_command": "sha256sum /flash/inforom.bin {path}"}
    with open_with(endpoint, transfer) as console:
        with pytest.raises(ConsoleError, match="answered 2 sha256 lines"):
            console.dump_region("vbios")
    transfer = {**TRANSFERS["zmodem"], "regions": {"vbios": {"path": "/flash/inforom.bin"}},
                "sha256_command": "sha256sum /flash/inforom.bin", "command": "sz --binary /flash/vbios.bin {path}"}
    # (a board config cannot make that mistake: the command must name {path} once; this one names two files)
    with pytest.raises(SerialSettingsError):
        serial_settings({**endpoint, "transfer": {**transfer, "command": "sz"}})


def test_a_region_sent_short_of_its_configured_size_is_an_error(shell):
    endpoint = shell()
    transfer = {"method": "zmodem", "regions": {"vbios": {"path": "/flash/inforom.bin", "size": 1 << 20}}}
    with open_with(endpoint, transfer) as console:
        with pytest.raises(ConsoleError, match=r"more than the|received 262144 bytes, the board config says"):
            console.dump_region("vbios")
        assert console.command("version") == "version: 96.00.DA.00.0C"


@pytest.mark.parametrize("case", ["missing", "oversized", "fifo", "changed"])
def test_a_supplied_file_that_cannot_be_trusted_is_an_error(shell, tmp_path, case):
    endpoint = shell()
    path = tmp_path / "vbios.rom"
    spec: dict[str, Any] = {"file": str(path), "tool": "nvflash"}
    if case == "oversized":
        path.write_bytes(b"\xff" * 4096)
    elif case == "fifo":
        os.mkfifo(path)
    elif case == "changed":
        path.write_bytes(b"\xff" * 64)
        spec["sha256"] = hashlib.sha256(b"\x00" * 64).hexdigest()
    expect = {"missing": "cannot be read: No such file", "oversized": "more than the 1024 allowed",
              "fifo": "a FIFO, not a regular file", "changed": "not the file that was read"}[case]
    with open_with(endpoint, {"method": "file", "regions": {"vbios": spec}}, dump_max_size=1024) as console:
        with pytest.raises(ConsoleError, match=expect):
            console.dump_region("vbios")


def test_a_region_the_transfer_does_not_place_is_an_error(shell):
    endpoint = shell()
    results = probe_verdicts(endpoint, {"method": "zmodem", "regions": {"vbios": PATHS["vbios"]}})
    integrity = results["L1-FW-INTEGRITY"]
    assert integrity.verdict.value == "ERROR"
    assert any("region 'inforom' has no place in interfaces.serial.transfer.regions" in r for r in integrity.reasons)


# --- settings ---


@pytest.mark.parametrize("transfer, key", [
    ("zmodem", "transfer"),
    ({"method": "kermit"}, "transfer.method"),
    ({"method": "zmodem"}, "transfer.regions"),
    ({"method": "dumpframe", "command": "dump {name}"}, "transfer.command"),
    ({"method": "zmodem", "regions": {"vbios": {}}}, "transfer.regions.vbios.path"),
    ({"method": "zmodem", "regions": {"vbios": {"path": "/flash/v.bin; reboot"}}}, "transfer.regions.vbios.path"),
    ({"method": "zmodem", "regions": {"vbios": {"path": "/f", "address": 1}}}, "transfer.regions.vbios.address"),
    ({"method": "zmodem", "command": "sz /flash/vbios.bin", "regions": PATHS}, "transfer.command"),
    ({"method": "zmodem", "command": "sz {file}", "regions": PATHS}, "transfer.command"),
    ({"method": "zmodem", "command": "sz {path}\nreboot", "regions": PATHS}, "transfer.command"),
    ({"method": "hexdump", "regions": SIZED}, "transfer.style"),
    ({"method": "hexdump", "style": "od", "regions": SIZED}, "transfer.style"),
    ({"method": "hexdump", "style": "xxd", "regions": PATHS}, "transfer.regions.vbios.size"),
    ({"method": "hexdump", "style": "md.b", "regions": {"vbios": {"address": -1, "size": 1}}},
     "transfer.regions.vbios.address"),
    ({"method": "hexdump", "style": "md.b", "sha256_command": "sha256sum {path}", "regions": ADDRESSES},
     "transfer.sha256_command"),
    ({"method": "hexdump", "style": "md.b", "command": "md.b {address}", "regions": ADDRESSES}, "transfer.command"),
    ({"method": "file", "regions": {"vbios": {"file": "/x.rom"}}}, "transfer.regions.vbios.tool"),
    ({"method": "file", "regions": {"vbios": {"file": "/x.rom", "tool": "t", "sha256": "abc"}}},
     "transfer.regions.vbios.sha256"),
    ({"method": "ymodem", "sha256_command": "sha256sum", "regions": PATHS}, "transfer.sha256_command"),
])
def test_every_transfer_setting_mistake_names_the_setting(transfer, key):
    with pytest.raises(SerialSettingsError, match=rf"^interfaces\.serial\.{key.replace('.', chr(92) + '.')}: "):
        serial_settings({"url": "/dev/null", "prompt": "> ", "transfer": transfer})


def test_a_bench_config_with_a_transfer_runs_end_to_end(tmp_path):
    """`attestlab run` of level1 on a simulated board whose config chooses ZMODEM."""
    config = tmp_path / "sim-clean-zmodem.yaml"
    config.write_text(yaml.safe_dump({
        "board": {"name": "sim-clean-zmodem", "simulated": "clean",
                  "reference": str(ROOT / "fixtures" / "references" / "nvidia-h100-sxm5-80gb.dsse.json")},
        "interfaces": {"serial": {"transfer": {"method": "zmodem", "sha256_command": "sha256sum {path}",
                                               "regions": PATHS}}}}))
    plan = yaml.safe_load(PLAN.read_text())  # level1's firmware requirements only
    plan["requirements"] = [{**r, "steps": [s for s in r["steps"] if s["probe"] == "firmware_dump"]}
                            for r in plan["requirements"] if r["id"] in FW_REQUIREMENTS]
    (tmp_path / "fw.yaml").write_text(yaml.safe_dump(plan, sort_keys=False))
    run = subprocess.run([sys.executable, "-m", "harness.cli", "run", "--plan", str(tmp_path / "fw.yaml"),
                          "--board", str(config), "--key", str(ROOT / "fixtures" / "keys" / "test-lab.key"),
                          "--out", str(tmp_path / "results"), "-q"],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "L1-FW-INTEGRITY" in run.stdout and "PASS" in run.stdout, run.stdout
