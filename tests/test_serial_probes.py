"""The serial probes (firmware_dump, console_audit) on the real pty path.

Every board here is a separate simulator process serving its console on a pty; the harness
opens the slave side with pyserial, exactly as it opens a USB-serial adapter. The zoo variants
(fixtures/boards/sim-*.yaml) are judged on their serial requirements as the zoo's signed
`attestlab run` of level1 recorded them (tests/conftest.py runs each once per session); the
fail-closed paths use a bench-style board (interfaces.serial: {url: /dev/pts/N, ...}) in front
of a console started here with a profile made for the case. The whole level1 plan on every
variant is tests/test_zoo_matrix.py.
"""

from __future__ import annotations

import copy
import hashlib
import json
import subprocess
import threading
import time
from pathlib import Path

import pytest

import probes
from fixtures.sim.__main__ import load_profile
from fixtures.sim.console import region_image
from harness.board import Board, BoardConfig
from harness.evidence import EvidenceStore
from harness.formats.fwversion import VersionError, compare_versions, parse_version
from harness.interfaces.serial import (
    TRANSCRIPT_MEDIA_TYPE,
    SerialSettingsError,
    Transcript,
    open_serial,
    serial_settings,
)
from harness.plan import Requirement, Step, load_plan
from harness.reference import Reference, load_reference
from harness.runner import StepRunner
from harness.verdict import CheckResult, Observation, Verdict
from probes.console_audit import help_names
from probes.firmware_dump import block_digests, digests_match_reference, version_not_below_minimum

from conftest import PLAN, ROOT, start_console_simulator, stop_processes

REFERENCE_PATH = ROOT / "fixtures" / "references" / "nvidia-h100-sxm5-80gb.yaml"
SERIAL_REQUIREMENTS = ("L1-FW-INTEGRITY", "L1-FW-ROLLBACK", "L1-CONSOLE-COMMANDS", "L1-CONSOLE-BOOTLOG")
LEVEL1 = load_plan(PLAN)
AUDIT_PARAMS = LEVEL1.requirement("L1-CONSOLE-COMMANDS").steps[0].params  # level1's probe list and patterns
# For tests about something other than which names are tried: two names (six spellings each)
# and a short final quiet keep a whole audit to about a second.
QUICK_AUDIT = {**AUDIT_PARAMS, "probe_commands": ["remote_disable", "debug_unlock"], "final_quiet_s": 0.2}
CLEAN_CONSOLE = load_profile("clean")["console"]


def jsonl_line(evidence: EvidenceStore, ref_name: str, results, line: int) -> dict:
    ref = next(e for r in results.values() for e in r.evidence if e.name == ref_name)
    return json.loads(evidence.get(ref.sha256).decode().splitlines()[line - 1])


def tx_text(record: dict) -> str:
    import base64
    assert record["dir"] == "tx", record
    return base64.b64decode(record["b64"]).decode()


# --- the zoo, serial requirements only ---

@pytest.fixture(scope="module")
def zoo(zoo_run):
    """variant -> (results, evidence): each sim board's serial requirements, {requirement: its
    firmware_dump or console_audit step}, from the zoo's own `attestlab run` of the standard plan
    (tests/conftest.py): the signed result and the evidence kept beside it, nothing run twice."""
    def get(variant: str):
        steps, evidence = zoo_run(f"sim-{variant}").step_results()
        results = {}
        for step in steps:
            if step.requirement in SERIAL_REQUIREMENTS and step.probe in ("firmware_dump", "console_audit"):
                assert step.requirement not in results, f"{variant}: two serial steps in {step.requirement}"
                results[step.requirement] = step
        assert set(results) == set(SERIAL_REQUIREMENTS), f"{variant}: serial steps of {sorted(results)}"
        return results, evidence
    return get


def verdicts(results) -> dict[str, str]:
    return {req: r.verdict.value for req, r in results.items()}


def test_clean_board_passes_with_images_and_transcripts_as_evidence(zoo):
    results, evidence = zoo("clean")
    assert verdicts(results) == dict.fromkeys(SERIAL_REQUIREMENTS, "PASS"), {k: r.reasons for k, r in results.items()}
    reference = load_reference(REFERENCE_PATH)
    fw = results["L1-FW-INTEGRITY"]
    names = {e.name: e for e in fw.evidence}
    assert names["firmware/vbios.bin"].sha256 == reference.lookup("firmware.regions.vbios.images")[0]["sha256"]
    assert names["firmware/inforom.bin"].size == 256 << 10
    assert names["serial/firmware_dump-transcript.jsonl"].media_type == TRANSCRIPT_MEDIA_TYPE
    # The image evidence is the bytes themselves; the transcript holds every byte of the dump.
    image = evidence.get(names["firmware/vbios.bin"].sha256)
    assert hashlib.sha256(image).hexdigest() == names["firmware/vbios.bin"].sha256
    transcript = Transcript.from_jsonl(evidence.get(names["serial/firmware_dump-transcript.jsonl"].sha256))
    assert transcript.rx_bytes > len(image) and transcript.span[0] > 0  # a slice of the shared console's
    # "evidence serial/firmware_dump-transcript.jsonl line N" points at the line that sent `version`.
    rollback = results["L1-FW-ROLLBACK"].reasons[0]
    line = int(rollback.split("firmware_dump-transcript.jsonl line ")[1].split(")")[0])
    assert tx_text(jsonl_line(evidence, "serial/firmware_dump-transcript.jsonl", results, line)) == "version\r"
    audit = results["L1-CONSOLE-COMMANDS"]
    assert {e.name for e in audit.evidence} >= {"serial/console_audit-transcript.jsonl", "serial/boot-log.txt",
                                                "serial/boot-transcript.jsonl"}
    boot = evidence.get(next(e.sha256 for e in audit.evidence if e.name == "serial/boot-log.txt")).decode()
    assert "signature check OK" in boot and "h100-hmc>" not in boot
    assert audit.facts["help"]["listed"] == CLEAN_CONSOLE["documented_commands"]
    # Every plan name in each case and separator, and the firmware's command table entry.
    sources = [t["source"] for t in audit.facts["probed"]]
    assert sources.count("plan") == len(AUDIT_PARAMS["probe_commands"]) and len(sources) == 118
    assert sources[-1] == "firmware vbios offset 0x202e" and audit.facts["probed"][-1]["name"] == "gpu_kill"


def test_tampered_firmware_fails_integrity_naming_where_the_bytes_differ(zoo):
    results, evidence = zoo("tampered-firmware")
    # anti-rollback cannot be corroborated from an image that is no known release: ERROR, not PASS
    assert verdicts(results) == {"L1-FW-INTEGRITY": "FAIL", "L1-FW-ROLLBACK": "ERROR",
                                 "L1-CONSOLE-COMMANDS": "PASS", "L1-CONSOLE-BOOTLOG": "PASS"}
    assert "cannot corroborate the reported version" in results["L1-FW-ROLLBACK"].reasons[0]
    (reason,) = results["L1-FW-INTEGRITY"].reasons
    clean_sha = load_reference(REFERENCE_PATH).lookup("firmware.regions.vbios.images")[0]["sha256"]
    ref = next(e for e in results["L1-FW-INTEGRITY"].evidence if e.name == "firmware/vbios.bin")
    assert reason.startswith(f"vbios: sha256 mismatch: expected {clean_sha} (release 96.00.DA.00.0C, the version "
                             f"the console reports), measured {ref.sha256} (1048576 bytes, evidence firmware/vbios.bin)")
    assert "the first differing byte lies in 0x3a000-0x3afff (4 KiB block 58" in reason
    assert reason.endswith("no other block differs")
    # The claim holds for the bytes kept as evidence: they differ from the released image in one
    # byte, inside the named range.
    measured = evidence.get(ref.sha256)
    released = region_image("vbios", CLEAN_CONSOLE["regions"]["vbios"])
    diff = [i for i in range(len(released)) if released[i] != measured[i]]
    assert diff == [0x3A7F1]
    assert "the vbios image is no known release" in results["L1-FW-ROLLBACK"].reasons[0]


def test_rollback_is_a_known_image_below_the_minimum(zoo):
    results, _ = zoo("rollback")
    assert verdicts(results) == {"L1-FW-INTEGRITY": "PASS", "L1-FW-ROLLBACK": "FAIL",
                                 "L1-CONSOLE-COMMANDS": "PASS", "L1-CONSOLE-BOOTLOG": "PASS"}
    assert "is the known image 96.00.89.00.01" in results["L1-FW-INTEGRITY"].reasons[0]
    reasons = results["L1-FW-ROLLBACK"].reasons
    assert reasons[0].startswith("running version 96.00.89.00.01 is below the minimum 96.00.DA.00.0C (anti-rollback): "
                                 "'version' answered 'version: 96.00.89.00.01'")
    assert reasons[1].startswith("the vbios image is release 96.00.89.00.01, below the minimum")


def test_hidden_command_fails_quoting_its_answer_and_the_line_that_sent_it(zoo):
    results, evidence = zoo("hidden-command")
    assert verdicts(results) == {"L1-FW-INTEGRITY": "PASS", "L1-FW-ROLLBACK": "PASS",
                                 "L1-CONSOLE-COMMANDS": "FAIL", "L1-CONSOLE-BOOTLOG": "PASS"}
    (reason,) = results["L1-CONSOLE-COMMANDS"].reasons
    assert reason.startswith("undocumented command 'remote_disable' answers: 'remote_disable: armed | GPU will be "
                             "disabled on the next signed RD token from the management network' (evidence "
                             "serial/console_audit-transcript.jsonl line ")
    assert "an unknown command answers 'unknown command: {name}'); it differs from that in line 1: '{name}: armed" \
        in reason and reason.endswith("; sent again, it answered the same")
    line = int(reason.split("console_audit-transcript.jsonl line ")[1].split(";")[0])
    assert tx_text(jsonl_line(evidence, "serial/console_audit-transcript.jsonl", results, line)) == "remote_disable\r"
    # help does not list it; every other probed name answered like an unknown one.
    facts = results["L1-CONSOLE-COMMANDS"].facts
    assert "remote_disable" not in facts["help"]["listed"]


def test_noisy_console_still_passes(zoo):
    results, evidence = zoo("noisy-console")
    assert verdicts(results) == dict.fromkeys(SERIAL_REQUIREMENTS, "PASS"), {k: r.reasons for k, r in results.items()}
    # The noise was there: escape sequences and line-noise bytes in the raw transcript, none in the text.
    audit = results["L1-CONSOLE-COMMANDS"]
    raw = Transcript.from_jsonl(evidence.get(next(e.sha256 for e in audit.evidence
                                                  if e.name == "serial/boot-transcript.jsonl"))).data("rx")
    assert b"\x1b[1;32mOK\x1b[0m" in raw and any(b >= 0xF5 or b < 0x09 for b in raw)
    boot = evidence.get(next(e.sha256 for e in audit.evidence if e.name == "serial/boot-log.txt")).decode()
    assert "\x1b" not in boot and "signature check OK (RSA-3072, key slot 0)" in boot


def test_flaky_link_dump_completes_after_resend_rounds(zoo):
    results, _ = zoo("flaky-link")
    assert verdicts(results) == dict.fromkeys(SERIAL_REQUIREMENTS, "PASS"), {k: r.reasons for k, r in results.items()}
    for region in ("vbios", "inforom"):
        dump = results["L1-FW-INTEGRITY"].facts["dumps"][region]
        assert dump["resend_rounds"] >= 2 and dump["corrupt_records"] > 0 and dump["frames_requested"] > 0, dump
        assert dump["skipped_bytes"] > 0  # the chatter between frames


def test_debug_boot_fails_the_boot_log_naming_lines(zoo):
    results, _ = zoo("debug-boot")
    assert verdicts(results) == {"L1-FW-INTEGRITY": "PASS", "L1-FW-ROLLBACK": "PASS",
                                 "L1-CONSOLE-COMMANDS": "PASS", "L1-CONSOLE-BOOTLOG": "FAIL"}
    reasons = results["L1-CONSOLE-BOOTLOG"].reasons
    assert ("boot log line 5 matches /(?i)\\b(signature|sig)[\\W_]*(check|verification|verify)[\\W_]*(?:is[\\W_]+)?"
            "(skipp?e?d?|disabled|bypass(ed)?|fail(ed)?|off|0)\\b/: "
            "'[    0.004512] FSP: VBIOS 96.00.DA.00.0C: signature check SKIPPED (debug fuse)' "
            "(evidence serial/boot-log.txt line 5)") in reasons
    assert any("line 8 matches /(?i)\\bdebug[\\W_]*mode" in r for r in reasons)


# --- bench-style boards in front of a console started here ---

def small_console(**overrides) -> dict:
    """The clean board's console with small regions (fast), plus overrides."""
    console = copy.deepcopy(CLEAN_CONSOLE)
    console["regions"] = {"vbios": {"size": 64 << 10, "seed": "t-vbios", "version": "96.00.DA.00.0C"},
                          "inforom": {"size": 10_001, "seed": "t-inforom", "version": "G520.0200.00.05"}}
    for key, value in overrides.items():
        console[key] = value
    return console


def reference_for(profile: dict, **sections) -> Reference:
    """A reference whose firmware section lists the console `profile`'s images (as a product release
    would); `sections` replace or (None) remove sections."""
    regions = {}
    for name, spec in profile["regions"].items():
        clean = {k: v for k, v in spec.items() if k != "patch"}
        image = region_image(name, clean, profile.get("version", ""))
        regions[name] = {"images": [{"version": spec["version"], "size": len(image),
                                     "sha256": hashlib.sha256(image).hexdigest(), "blocks": block_digests(image, 4096)}]}
    values = {"firmware": {"minimum_version": "96.00.DA.00.0C", "version_region": "vbios", "block_size": 4096,
                           "regions": regions},
              "console": {"documented_commands": list(profile["documented_commands"])}}
    values.update(sections)
    return Reference(product="test", values={k: v for k, v in values.items() if v is not None}, path="ref.yaml",
                     sha256="0")


class ConsoleProcess:
    def __init__(self, proc: subprocess.Popen, endpoint: dict) -> None:
        self.proc, self.endpoint = proc, endpoint

    def board(self, reference: Reference, **settings) -> Board:
        cfg = BoardConfig(name="bench", description="", reference_path=Path("ref.yaml"), simulated=None, pins={},
                          interfaces={"serial": {**self.endpoint, **settings}}, path="bench.yaml", sha256="0")
        return Board(cfg, reference)


@pytest.fixture
def console_sim(tmp_path):
    """console_sim(console_section) -> ConsoleProcess: a simulated console in its own process."""
    procs: list[subprocess.Popen] = []

    def start(console: dict) -> ConsoleProcess:
        proc, endpoint = start_console_simulator({"console": console}, tmp_path)
        procs.append(proc)
        return ConsoleProcess(proc, endpoint)

    yield start
    stop_processes(procs)


class Cases:
    """A module's board work, run at once: a step on a simulated console mostly waits on the
    board (settle, quiet periods, timeouts), so a test's board work is a function
    `run(console_sim)` registered with `@cases` beside the test, and the module fixture made by
    `cases.fixture()` runs every registered one side by side on its first use. The test judges
    what its case returned; a case's exception is raised in its own test."""

    AT_ONCE = 6  # more would only queue on two cores while their simulators start

    def __init__(self) -> None:
        self.runs: dict = {}

    def __call__(self, run):
        self.runs[run.__name__] = run
        return run

    def fixture(self):
        runs = self.runs

        @pytest.fixture(scope="module")
        def ran(tmp_path_factory):
            """ran(case) -> what that case returned; every case's simulators stopped before."""
            from concurrent.futures import ThreadPoolExecutor, wait

            folders = {name: tmp_path_factory.mktemp(name) for name in runs}  # (here: mktemp is not thread-safe)
            procs: list[subprocess.Popen] = []

            def console_sim_in(folder: Path):
                def start(console: dict) -> ConsoleProcess:
                    proc, endpoint = start_console_simulator({"console": console}, folder)
                    procs.append(proc)
                    return ConsoleProcess(proc, endpoint)
                return start

            with ThreadPoolExecutor(max_workers=self.AT_ONCE) as pool:
                futures = {name: pool.submit(run, console_sim_in(folders[name])) for name, run in runs.items()}
                wait(list(futures.values()))
            stop_processes(procs)
            return lambda name: futures[name].result()
        return ran


case = Cases()
ran = case.fixture()


def run_step(board: Board, probe: str, check: str, *, reference: str | None = None, params=None,
             runner: StepRunner | None = None):
    runner = runner or StepRunner(board, EvidenceStore())
    step = Step("s", probe, check, params=dict(params or {}), reference=reference)
    return runner.run(Requirement("R", "t", "r", (step,)), step)


def test_bench_board_passes_against_a_matching_reference(console_sim):
    console = small_console()
    with console_sim(console).board(reference_for(console)) as board:
        runner = StepRunner(board, EvidenceStore())
        for check in ("digests_match_reference", "version_not_below_minimum"):
            result = run_step(board, "firmware_dump", check, reference="firmware", runner=runner)
            assert result.verdict is Verdict.PASS, result.reasons
        result = run_step(board, "console_audit", "commands_documented", reference="console.documented_commands",
                          params=QUICK_AUDIT, runner=runner)
        assert result.verdict is Verdict.PASS, result.reasons


def test_missing_reference_is_error_never_pass(console_sim):
    console = small_console()
    sim = console_sim(console)
    with sim.board(reference_for(console, firmware=None, console=None, pcie={"identity": {}})) as board:
        runner = StepRunner(board, EvidenceStore())
        result = run_step(board, "firmware_dump", "digests_match_reference", reference="firmware", runner=runner)
        assert result.verdict is Verdict.ERROR
        assert result.reasons[0].startswith("no reference for 'firmware.regions' in ref.yaml")
        # With the regions named in the step, the dump happens and the check still has nothing to judge by.
        result = run_step(board, "firmware_dump", "digests_match_reference", reference="firmware",
                          params={"regions": ["vbios"]}, runner=runner)
        assert result.verdict is Verdict.ERROR and result.reasons[0].startswith("no reference for 'firmware'")
        assert "firmware/vbios.bin" in {e.name for e in result.evidence}
        result = run_step(board, "console_audit", "commands_documented", reference="console.documented_commands",
                          params=QUICK_AUDIT, runner=runner)
        assert result.verdict is Verdict.ERROR
        assert result.reasons[0].startswith("no reference for 'console.documented_commands'")
    # A reference section present but without the value a check needs is ERROR too.
    firmware = reference_for(console).values["firmware"]
    partial = {"regions": firmware["regions"]}
    with console_sim(console).board(reference_for(console, firmware=partial)) as board:
        result = run_step(board, "firmware_dump", "version_not_below_minimum", reference="firmware")
        assert result.verdict is Verdict.ERROR
        assert result.reasons == ("no reference for 'firmware.minimum_version': the product's anti-rollback floor",)
    # A region the step reads but the reference does not list.
    with console_sim(console).board(reference_for(console)) as board:
        result = run_step(board, "firmware_dump", "digests_match_reference", reference="firmware",
                          params={"regions": ["vbios", "inforom", "gsp"]})
        assert result.verdict is Verdict.ERROR


def test_dump_that_cannot_complete_is_error_with_the_transcript_kept(console_sim):
    console = small_console(link={"drop_every_frames": 1})  # no DATA frame ever arrives
    with console_sim(console).board(reference_for(console), dump_max_rounds=3) as board:
        t0 = time.monotonic()
        result = run_step(board, "firmware_dump", "digests_match_reference", reference="firmware")
        assert time.monotonic() - t0 < 20
    assert result.verdict is Verdict.ERROR
    vbios = next(r for r in result.reasons if r.startswith("vbios:"))
    assert "the dump could not be completed" in vbios and "still missing after 3 RESEND rounds" in vbios
    assert "(transcript: evidence serial/firmware_dump-transcript.jsonl, from serial/firmware_dump-transcript.jsonl line" in vbios
    (transcript,) = [e for e in result.evidence if e.name == "serial/firmware_dump-transcript.jsonl"]
    assert transcript.media_type == TRANSCRIPT_MEDIA_TYPE and transcript.size > 0
    assert not any(e.name.startswith("firmware/") for e in result.evidence)  # nothing unverified is kept as an image


def test_board_killed_mid_dump_is_error_with_the_partial_transcript(console_sim):
    console = small_console(regions={"vbios": {"size": 1 << 20, "seed": "t", "version": "96.00.DA.00.0C"}},
                            link={"bytes_per_second": 400_000})
    sim = console_sim(console)
    with sim.board(reference_for(console)) as board:
        serial = board.interface("serial")

        def kill_when_dumping():
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and serial.transcript.rx_bytes < 100_000:
                time.sleep(0.01)
            sim.proc.kill()
        killer = threading.Thread(target=kill_when_dumping)
        killer.start()
        evidence = EvidenceStore()
        result = run_step(board, "firmware_dump", "digests_match_reference", reference="firmware",
                          runner=StepRunner(board, evidence))
        killer.join()
    assert result.verdict is Verdict.ERROR
    (reason,) = result.reasons
    assert reason.startswith("firmware_dump: the console did not come back after the failed dump of 'vbios'")
    assert reason.endswith("(transcript: evidence serial/firmware_dump-transcript.jsonl)")
    (ref,) = [e for e in result.evidence if e.name == "serial/firmware_dump-transcript.jsonl"]
    kept = Transcript.from_jsonl(evidence.get(ref.sha256))
    assert kept.rx_bytes >= 100_000 and any(b"port failed" in c.data for c in kept if c.direction == "note")


UNREADABLE_VERSIONS = {
    "garbled": ({"version": "unknown-build"}, "cannot compare the running version with the minimum"),
    "absent": ({"commands": {"version": "firmware revision not available"}},
               "could not read the running version: 'version' answered 'firmware revision not available'"),
    "other scheme": ({"version": "G520.0200.00.05.01"}, "the components' letter prefixes differ"),
}


@case
def unreadable_versions(console_sim):
    results = {}
    for name, (overrides, _) in UNREADABLE_VERSIONS.items():
        console = small_console(**overrides)
        with console_sim(console).board(reference_for(console)) as board:
            results[name] = run_step(board, "firmware_dump", "version_not_below_minimum", reference="firmware")
    return results


def test_unreadable_or_unparseable_version_is_error(ran):
    results = ran("unreadable_versions")
    for name, (_, message) in UNREADABLE_VERSIONS.items():
        result = results[name]
        assert result.verdict is Verdict.ERROR, (name, result.reasons)
        assert message in result.reasons[0], (name, result.reasons)


@case
def hanging_and_flooding_commands(console_sim):
    console = small_console(hidden_commands={"debug_unlock": {"hang": True},
                                             "shell": {"flood": "root@hmc:~#"},
                                             "remote_disable": "remote_disable: armed"})
    params = {**AUDIT_PARAMS, "command_timeout_s": 0.5, "command_max_bytes": 64 << 10, "name_variants": False}
    with console_sim(console).board(reference_for(console)) as board:
        t0 = time.monotonic()
        result = run_step(board, "console_audit", "commands_documented", reference="console.documented_commands",
                          params=params)
        assert time.monotonic() - t0 < 15
    return result


def test_hanging_and_flooding_commands_are_interrupted_and_probing_goes_on(ran):
    result = ran("hanging_and_flooding_commands")
    assert result.verdict is Verdict.FAIL
    reasons = "\n".join(result.reasons)
    assert "undocumented command 'remote_disable' answers: 'remote_disable: armed'" in reasons
    assert ("undocumented command 'shell' answers: 'root@hmc:~# #1 | root@hmc:~# #2" in reasons
            and "printed more than 65536 bytes without returning to the prompt (interrupted with Ctrl-C)" in reasons)
    assert ("undocumented name 'debug_unlock' gave no answer and did not return to the prompt within 0.5 s "
            "(interrupted with Ctrl-C): whether the board accepts it is undecided") in reasons
    probed = [p["name"] for p in result.facts["probed"]]
    assert probed.index("debug_unlock") < probed.index("shell") < len(probed) - 1  # probing went on after both


@case
def a_hang_alone(console_sim):
    console = small_console(hidden_commands={"diag": {"hang": True}})
    with console_sim(console).board(reference_for(console)) as board:
        return run_step(board, "console_audit", "commands_documented", reference="console.documented_commands",
                        params={"probe_commands": ["diag", "factory"], "boot_log_forbidden": ["x"],
                                "command_timeout_s": 0.3})


def test_a_hang_alone_is_error_not_pass(ran):
    result = ran("a_hang_alone")
    assert result.verdict is Verdict.ERROR
    assert result.reasons[0].startswith("undocumented name 'diag' gave no answer and did not return to the prompt")


@case
def help_listing_an_undocumented_command(console_sim):
    console = small_console(documented_commands=[*CLEAN_CONSOLE["documented_commands"], "fuse_blow"],
                            commands={"fuse_blow": "usage: fuse_blow <bank>"})
    ref = reference_for(console, console={"documented_commands": CLEAN_CONSOLE["documented_commands"]})
    with console_sim(console).board(ref) as board:
        return run_step(board, "console_audit", "commands_documented", reference="console.documented_commands",
                        params=QUICK_AUDIT)


def test_help_listing_an_undocumented_command_fails(ran):
    result = ran("help_listing_an_undocumented_command")
    assert result.verdict is Verdict.FAIL
    assert result.reasons[0].startswith("undocumented command 'fuse_blow' is listed by 'help' (evidence "
                                        "serial/console_audit-transcript.jsonl line ")


@case
def boot_log_modes(console_sim):
    """{mode: (step result, seconds it took, the boot log the reboot printed)}, one board after the other."""
    console = small_console()
    sim = console_sim(console)
    params = {"probe_commands": [], "boot_log_forbidden": AUDIT_PARAMS["boot_log_forbidden"], "final_quiet_s": 0.2}
    modes = {"capture": ({}, params), "capture again": ({"boot_timeout": 0.5}, params),
             "reboot": ({"boot_log": "reboot"}, params), "off": ({"boot_log": "off"}, params),
             "no patterns": ({"boot_log": "reboot"}, {"boot_log_forbidden": []})}
    out = {}
    for mode, (settings, step_params) in modes.items():
        with sim.board(reference_for(console), **settings) as board:
            t0 = time.monotonic()
            result = run_step(board, "console_audit", "boot_log_clean", params=step_params)
            seconds = time.monotonic() - t0
            out[mode] = (result, seconds, board.interface("serial").boot_log if mode == "reboot" else None)
    return out


def test_boot_log_modes(ran):
    modes = ran("boot_log_modes")
    # capture: the boot log buffered on the tty while nobody was attached.
    result, _, _ = modes["capture"]
    assert result.verdict is Verdict.PASS and "(12 lines, evidence serial/boot-log.txt)" in result.reasons[0]
    # capture on a board already up (its boot log was read above): no boot log → ERROR, never PASS.
    result, seconds, _ = modes["capture again"]
    assert seconds < 5
    assert result.verdict is Verdict.ERROR
    assert result.reasons[0].startswith("no boot log: no prompt 'h100-hmc> ' within 0.5 s of opening")
    assert "set interfaces.serial.boot_log: reboot" in result.reasons[0]
    assert "serial/boot-log.txt" not in {e.name for e in result.evidence}
    assert "serial/boot-transcript.jsonl" in {e.name for e in result.evidence}
    # reboot: the harness reboots the board and keeps what it prints.
    result, _, boot_log = modes["reboot"]
    assert result.verdict is Verdict.PASS, result.reasons
    assert boot_log.startswith("rebooting...\nNVIDIA HGX H100")
    result, _, _ = modes["off"]
    assert result.verdict is Verdict.ERROR and result.reasons == (
        "no boot log: capture is off (interfaces.serial.boot_log: off)",)
    # No patterns: nothing to scan for is not a pass.
    result, _, _ = modes["no patterns"]
    assert result.verdict is Verdict.ERROR and "nothing to scan the boot log for" in result.reasons[0]


@case
def a_console_that_gives_no_prompt(console_sim):
    console = small_console(silent=True)
    with console_sim(console).board(reference_for(console), boot_timeout=0.3, timeout=0.5) as board:
        return run_step(board, "firmware_dump", "digests_match_reference", reference="firmware")


def test_console_that_gives_no_prompt_is_error_for_serial_steps(ran):
    result = ran("a_console_that_gives_no_prompt")
    assert result.verdict is Verdict.ERROR
    assert "timed out" in result.reasons[0] and "after Enter" in result.reasons[0]
    assert result.reasons[0].endswith("(transcript: evidence serial/firmware_dump-open-transcript.jsonl)")
    assert "serial/firmware_dump-open-transcript.jsonl" in {e.name for e in result.evidence}


def test_serial_settings_are_checked_with_clear_errors(tmp_path):
    good = {"url": "/dev/ttyUSB0", "prompt": "bmc> "}
    bad = {
        "interfaces.serial.baudrat: unknown setting (known: url, baudrate,": {**good, "baudrat": 9600},
        "interfaces.serial.url: give the console's port": {"prompt": "bmc> "},
        "interfaces.serial.prompt: give the console's prompt": {"url": "/dev/ttyUSB0"},
        "interfaces.serial.baudrate: must be a positive integer such as 115200, got '115200'":
            {**good, "baudrate": "115200"},
        "interfaces.serial.boot_log: must be one of capture, reboot, off, got 'always'": {**good, "boot_log": "always"},
        "interfaces.serial.timeout: must be a positive number of seconds, got 0": {**good, "timeout": 0},
        "interfaces.serial: must be a mapping": "/dev/ttyUSB0",
    }
    for message, settings in bad.items():
        with pytest.raises(SerialSettingsError) as info:
            open_serial(settings)
        assert str(info.value).startswith(message), str(info.value)
    with pytest.raises(SerialSettingsError, match=r"prompt_regex '\[' is not a regex"):
        open_serial({"url": "loop://", "prompt_regex": "["})
    console, opening = serial_settings({**good, "baudrate": 921600, "boot_log": "reboot"})
    assert console == {**good, "baudrate": 921600} and opening["boot_log"] == "reboot"
    # A port that is not there: ERROR for the step, saying which.
    board = ConsoleProcess(None, {"url": str(tmp_path / "ttyNONE"), "prompt": "x> "}).board(
        Reference("t", {"console": {"documented_commands": ["help"]}}, "ref.yaml", "0"))
    result = run_step(board, "console_audit", "commands_documented", reference="console.documented_commands")
    assert result.verdict is Verdict.ERROR and "cannot open console" in result.reasons[0]
    board.close()


def test_plan_and_reference_name_the_serial_probes():
    assert {"firmware_dump", "console_audit"} <= set(probes.PROBES)
    reference = load_reference(REFERENCE_PATH)
    vbios = reference.lookup("firmware.regions.vbios.images")[0]
    assert vbios["version"] == "96.00.DA.00.0C" and len(vbios["blocks"]) == vbios["size"] // 4096
    # The reference's digests are what the clean simulated board serves.
    for name, spec in CLEAN_CONSOLE["regions"].items():
        image = region_image(name, spec)
        known = reference.lookup(f"firmware.regions.{name}.images")[0]
        assert known["sha256"] == hashlib.sha256(image).hexdigest()
        assert known["blocks"] == block_digests(image, 4096)
    # Both console steps share one audit: same probe, same params.
    steps = [LEVEL1.requirement(r).steps[0] for r in ("L1-CONSOLE-COMMANDS", "L1-CONSOLE-BOOTLOG")]
    assert steps[0].params == steps[1].params and steps[0].params["probe_commands"]


# --- pure parts ---

def test_versions_compare_as_hex_dotted_components():
    assert compare_versions("96.00.89.00.01", "96.00.DA.00.0C") == -1
    assert compare_versions("96.00.DA.00.0C", "96.00.da.00.c") == 0
    assert compare_versions("96.00.DA.00.10", "96.00.DA.00.0F") == 1  # text order would say the same; 0x10 > 0x0F
    assert compare_versions("96.00.A5.00.01", "96.00.9F.00.01") == 1  # text order: "A" > "9" agrees; numbers decide
    assert compare_versions("1.10", "1.9") == 1                       # decimal-looking versions too
    assert compare_versions("G520.0200.00.05", "G520.0200.00.04") == 1
    assert compare_versions("v2.1", "2.0") == 1
    assert parse_version("G520.0200.00.05").prefixes == ("G", "", "", "")
    for a, b in (("96.00.DA", "96.00.DA.00.0C"), ("G520.0200.00.05", "96.00.DA.00.0C"), ("unknown-build", "1.0"),
                 ("", "1"), ("96..DA", "96.0.DA"), ("1.2-rc1", "1.2.0")):
        with pytest.raises(VersionError):
            compare_versions(a, b)


def test_help_names_reads_common_console_help_formats():
    assert help_names("Available commands:\n  help\n  version\n  dump\n") == ["help", "version", "dump"]
    uboot = "base      - print or set address offset\nbdinfo    - print Board Info structure\n"
    assert help_names(uboot) == ["base", "bdinfo"]
    busybox = "Currently defined functions:\n\t[, [[, ash, cat, sh\n"
    assert help_names(busybox) == ["ash", "cat", "sh"]  # "[" and "[[" are no plain names
    assert help_names("Type 'help <command>' for more.\n  status   GPU status\n") == ["status"]


def _observation(dumps: dict, version: str | None = "96.00.DA.00.0C", block_size: int = 4) -> Observation:
    return Observation("firmware_dump", {
        "version": {"command": "version", "output": f"version: {version}", "regex": "x", "version": version,
                    "where": "t line 4"},
        "block_size": block_size, "regions": list(dumps), "dumps": dumps, "transcript": "t"})


def _dump(data: bytes, block_size: int = 4) -> dict:
    return {"region": "r", "size": len(data), "sha256": hashlib.sha256(data).hexdigest(),
            "blocks": block_digests(data, block_size), "evidence": "firmware/r.bin", "where": "t line 9"}


def _ref(*images: bytes, block_size: int = 4, versions=("96.00.DA.00.0C", "96.00.89.00.01")) -> dict:
    return {"minimum_version": "96.00.DA.00.0C", "version_region": "r", "block_size": block_size, "regions": {"r": {
        "images": [{"version": v, "size": len(img), "sha256": hashlib.sha256(img).hexdigest(),
                    "blocks": block_digests(img, block_size)} for v, img in zip(versions, images)]}}}


def test_digest_check_locates_the_difference_in_every_shape():
    released = bytes(range(32))
    changed = released[:13] + b"\xff" + released[14:]
    result = digests_match_reference(_observation({"r": _dump(changed)}), _ref(released))
    assert result.verdict is Verdict.FAIL
    assert "the first differing byte lies in 0xc-0xf (4-byte block 3," in result.reasons[0]
    longer = digests_match_reference(_observation({"r": _dump(released + b"xx")}), _ref(released))
    assert "the first differing byte is at offset 0x20: every block agrees up to there" in longer.reasons[0]
    assert "expected 32 bytes" in longer.reasons[0]
    other_blocks = digests_match_reference(_observation({"r": _dump(changed, 8)}, block_size=8), _ref(released))
    assert "set the step's params.block_size: 4" in other_blocks.reasons[0]
    assert digests_match_reference(_observation({"r": _dump(released)}), _ref(released)).verdict is Verdict.PASS
    for broken in ({"regions": {"r": {"images": [{"version": "1", "sha256": "abc"}]}}}, {"regions": {}}, "firmware"):
        assert digests_match_reference(_observation({"r": _dump(released)}), broken).verdict is Verdict.ERROR
    failed = {"r": {"region": "r", "error": "console x: dump of 'r' failed", "where": "t line 9"}}
    assert digests_match_reference(_observation(failed), _ref(released)).verdict is Verdict.ERROR


def test_version_check_catches_a_board_that_reports_a_newer_version_than_it_runs():
    new, old = bytes(16), bytes(range(16))
    lying = version_not_below_minimum(_observation({"r": _dump(old)}), _ref(new, old))
    assert lying.verdict is Verdict.FAIL
    assert lying.reasons[0].startswith("the console reports version 96.00.DA.00.0C but the r image is the known "
                                       "release 96.00.89.00.01")
    honest = version_not_below_minimum(_observation({"r": _dump(new)}), _ref(new, old))
    assert honest.verdict is Verdict.PASS and "the r image is the known release 96.00.DA.00.0C" in honest.reasons[0]
    newer = version_not_below_minimum(_observation({"r": _dump(new)}, version="96.00.DB.00.01"), _ref(new, old))
    assert newer.verdict is Verdict.FAIL  # reports a version the image is not
    assert version_not_below_minimum(_observation({"r": _dump(new)}, version=None), _ref(new, old)).verdict \
        is Verdict.ERROR
    assert isinstance(version_not_below_minimum(_observation({}), {}), CheckResult)


def test_transcript_slices_say_which_chunks_they_hold():
    whole = Transcript("/dev/ttyUSB0")
    for i in range(6):
        whole.record("tx" if i % 2 else "rx", f"chunk {i}\r\n".encode())
    part = whole.slice(2, 5)
    assert part.span == (2, 5) and [c.data for c in part] == [c.data for c in whole.chunks[2:5]]
    assert part.rx_bytes == len(b"chunk 2\r\nchunk 4\r\n") and part.tx_bytes == len(b"chunk 3\r\n")
    again = Transcript.from_jsonl(part.to_jsonl())
    assert again.span == (2, 5) and again.chunks == part.chunks and again.started_wall == whole.started_wall
    assert part.slice(1).span == (3, 5)  # a slice of a slice counts in the whole's chunks
    # Chunk i of the whole is line i - start + 2 of the slice's JSONL.
    line = part.to_jsonl().decode().splitlines()[3 - 2 + 1]
    assert json.loads(line)["b64"] == "Y2h1bmsgMw0K"  # "chunk 3\r\n"
    assert "L3 " in part.render_text(numbered=True).splitlines()[3]
    with pytest.raises(ValueError, match="'chunks' must be"):
        Transcript.from_jsonl(part.to_jsonl().replace(b'"chunks": [2, 5]', b'"chunks": "2-5"'))


def test_serial_show_prints_a_transcript_with_line_numbers(tmp_path):
    from conftest import attestlab

    t = Transcript("/dev/pts/9")
    t.note("opened")
    t.record("tx", b"remote_disable\r")
    t.record("rx", b"remote_disable\r\n\x1b[32marmed\x1b[0m\r\nh100-hmc> ")
    path = tmp_path / "t.jsonl"
    path.write_bytes(t.to_jsonl())
    shown = attestlab("serial", "show", str(path))
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert lines[0].startswith("# attestlab console transcript: /dev/pts/9")
    assert lines[3].startswith("L3 ") and "tx       15 B | remote_disable\\r" in lines[3]
    assert "\\x1b[32marmed\\x1b[0m\\r\\n" in shown.stdout
    (tmp_path / "not.jsonl").write_text("hello\n")
    bad = attestlab("serial", "show", str(tmp_path / "not.jsonl"))
    assert bad.returncode == 2 and "line 1: not JSON" in bad.stderr


@case
def an_audit_that_probes_no_name(console_sim):
    console = small_console()
    with console_sim(console).board(reference_for(console)) as board:
        params = {**AUDIT_PARAMS, "probe_commands": []}
        return run_step(board, "console_audit", "commands_documented",
                        reference="console.documented_commands", params=params)


def test_an_audit_that_probes_no_undocumented_name_is_error_not_pass(ran):
    """With nothing probed, only the board's own help text would speak for it: undecided."""
    result = ran("an_audit_that_probes_no_name")
    assert result.verdict is Verdict.ERROR and "no undocumented command name was probed" in result.reasons[0]
