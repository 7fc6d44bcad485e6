"""Fail closed: however a step goes wrong, it is ERROR or FAIL with a reason, never PASS,
and evidence collected before the failure is kept."""

from __future__ import annotations

import dataclasses
import struct
import sys
import types
from pathlib import Path

import pytest

import probes
from harness.board import Board, BoardConfig, BoardError, load_board_config
from harness.evidence import EvidenceStore
from harness.plan import Requirement, Step
from harness.reference import Reference
from harness.runner import StepRunner, requirement_verdict
from harness.verdict import CheckResult, Observation, ProbeError, Verdict
from harness.yamlio import YamlError

from conftest import BOARDS, CAPTURE

REFERENCE = Reference(product="test", values={"pcie": {"identity": {"vendor_id": 0x10DE}}}, path="ref.yaml", sha256="0")


def board_on(tmp_path: Path, config: bytes | None = None, reference: Reference = REFERENCE) -> Board:
    device = tmp_path / "0000:00:06.0"
    device.mkdir(exist_ok=True)
    if config is not None:
        (device / "config").write_bytes(config)
    cfg = BoardConfig(name="t", description="", reference_path=Path("ref.yaml"), simulated=None, pins={},
                      interfaces={"pcie": {"sysfs": str(device)}}, path="t.yaml", sha256="0")
    return Board(cfg, reference)


@pytest.fixture
def fake_probe(monkeypatch):
    """Install a probe module `probes.fake` whose collect/check the test sets."""
    module = types.ModuleType("probes.fake")
    module.PARAMS = {}
    monkeypatch.setitem(sys.modules, "probes.fake", module)
    monkeypatch.setattr(probes, "PROBES", (*probes.PROBES, "fake"))
    return module


def run(board: Board, step: Step):
    return StepRunner(board, EvidenceStore()).run(Requirement("R", "t", "r", (step,)), step)


def test_probe_error_is_error_and_keeps_evidence_collected_before_it(tmp_path, fake_probe):
    def collect(board, params, evidence):
        evidence.add("console/partial-transcript", b"boot...\x00garbage")
        raise ProbeError("console went silent after 5 s")
    fake_probe.collect, fake_probe.CHECKS = collect, {"c": lambda o, e: CheckResult.passed()}
    result = run(board_on(tmp_path), Step("s", "fake", "c"))
    assert result.verdict is Verdict.ERROR
    assert result.reasons == ("console went silent after 5 s",)
    assert [e.name for e in result.evidence] == ["console/partial-transcript"]


def test_probe_crash_is_error_naming_where(tmp_path, fake_probe):
    fake_probe.collect = lambda b, p, e: {}["missing"]
    fake_probe.CHECKS = {"c": lambda o, e: CheckResult.passed()}
    result = run(board_on(tmp_path), Step("s", "fake", "c"))
    assert result.verdict is Verdict.ERROR and "crashed: KeyError" in result.reasons[0]


def test_check_that_returns_garbage_is_error(tmp_path, fake_probe):
    fake_probe.collect = lambda b, p, e: Observation("fake", {})
    fake_probe.CHECKS = {"c": lambda o, e: True}
    assert run(board_on(tmp_path), Step("s", "fake", "c")).verdict is Verdict.ERROR


def test_missing_reference_is_error_saying_no_reference(tmp_path):
    cfg = (CAPTURE / "sysfs" / "config").read_bytes()
    result = run(board_on(tmp_path, cfg), Step("s", "pcie_capabilities", "capabilities_within_allowed",
                                              reference="pcie.capabilities"))
    assert result.verdict is Verdict.ERROR
    assert result.reasons[0].startswith("no reference for 'pcie.capabilities' in ref.yaml")


def test_unknown_reference_field_is_error_not_pass(tmp_path):
    cfg = (CAPTURE / "sysfs" / "config").read_bytes()
    result = run(board_on(tmp_path, cfg), Step("s", "pcie_identity", "identity_matches_reference",
                                              expect={"vendor_id": 0x10DE, "vendr": 1}))
    assert result.verdict is Verdict.ERROR and "unknown field 'vendr'" in result.reasons[0]


def test_unreadable_board_is_error(tmp_path):
    result = run(board_on(tmp_path), Step("s", "pcie_identity", "identity_matches_reference", reference="pcie.identity"))
    assert result.verdict is Verdict.ERROR and "not a PCIe function directory" in result.reasons[0]


def test_garbage_config_space_is_error(tmp_path):
    result = run(board_on(tmp_path, b"\x12" * 10), Step("s", "pcie_identity", "identity_matches_reference",
                                                        reference="pcie.identity"))
    assert result.verdict is Verdict.ERROR and "unusable" in result.reasons[0]
    assert result.evidence and result.evidence[0].size == 10  # the bytes read are kept


def test_capability_list_loop_fails_as_malformed(tmp_path):
    cfg = bytearray((CAPTURE / "sysfs" / "config").read_bytes())
    header = struct.unpack_from("<I", cfg, 0x2F0)[0]
    struct.pack_into("<I", cfg, 0x2F0, (header & 0xFFFFF) | (0x1B8 << 20))  # DSN → back to AER: a loop
    allowed = {"allowed": {"standard": [1, 5, 0x10, 0x11], "extended": [0, 1, 3, 4, 0xB, 0x18]}}
    result = run(board_on(tmp_path, bytes(cfg)), Step("s", "pcie_capabilities", "capabilities_within_allowed",
                                                      expect=allowed))
    assert result.verdict is Verdict.FAIL
    assert any("malformed" in r for r in result.reasons)


def test_truncated_config_space_of_an_express_device_is_error_not_pass(tmp_path):
    cfg = (CAPTURE / "sysfs" / "config").read_bytes()[:256]  # what some non-root reads return
    allowed = {"allowed": {"standard": [1, 5, 0x10, 0x11], "extended": []}}
    result = run(board_on(tmp_path, cfg), Step("s", "pcie_capabilities", "capabilities_within_allowed", expect=allowed))
    assert result.verdict is Verdict.ERROR and "truncated: got 256 bytes" in result.reasons[0]


def test_sysfs_that_disagrees_with_config_space_fails(tmp_path):
    board = board_on(tmp_path, (CAPTURE / "sysfs" / "config").read_bytes())
    (tmp_path / "0000:00:06.0" / "subsystem_device").write_text("0x16c1\n")
    (tmp_path / "0000:00:06.0" / "device").write_text("0x2331\n")
    result = run(board, Step("s", "pcie_identity", "identity_matches_reference", expect={"device_id": 0x2330}))
    assert result.verdict is Verdict.FAIL
    assert "sysfs device says 0x2331 but the config space says 0x2330" in result.reasons[0]


def test_requirement_with_no_steps_run_is_not_a_pass():
    assert requirement_verdict([]) is Verdict.ERROR
    assert Verdict.worst([Verdict.PASS, Verdict.ERROR, Verdict.FAIL]) is Verdict.FAIL
    assert Verdict.worst([Verdict.PASS, Verdict.SKIP]) is Verdict.SKIP


def test_board_config_errors_name_file_and_line(tmp_path):
    path = tmp_path / "b.yaml"
    path.write_text("board:\n  name: x\n  reference: r.yaml\ninterfaces:\n  pcei: {sysfs: /x}\n")
    with pytest.raises(YamlError, match=r"b.yaml:5: interfaces.pcei: unknown interface kind"):
        load_board_config(path)


def test_simulated_board_process_starts_and_is_gone_after_close():
    board = Board.from_file(BOARDS / "sim-clean.yaml")
    board.open()
    simulator = board._simulator
    assert board.pcie.hex_attribute("device") == 0x2330
    workdir = simulator.workdir
    board.close()
    assert simulator.process.poll() is not None
    assert not workdir.exists()


def test_unknown_simulated_variant_is_a_board_error_with_the_simulators_words(tmp_path):
    path = tmp_path / "b.yaml"
    path.write_text(f"board:\n  name: x\n  simulated: no-such-variant\n  reference: {BOARDS.parent}/references/nvidia-h100-sxm5-80gb.yaml\n")
    board = Board.from_file(path)
    with pytest.raises(BoardError, match="no profile 'no-such-variant'"):
        board.open()
    board.close()


def test_pinned_dsn_of_another_unit_fails(tmp_path):
    board = board_on(tmp_path, (CAPTURE / "sysfs" / "config").read_bytes())
    board.config = dataclasses.replace(board.config, pins={"dsn": "00-00-00-00-00-00-00-01"})
    result = run(board, Step("s", "pcie_identity", "identity_matches_reference", expect={"vendor_id": 0x10DE}))
    assert result.verdict is Verdict.FAIL
    assert "pinned to 00-00-00-00-00-00-00-01, measured a1-df-09-95-b8-2d-b0-48" in result.reasons[0]
    board.config = dataclasses.replace(board.config, pins={"dsn": "A1-DF-09-95-B8-2D-B0-48"})
    assert run(board, Step("s", "pcie_identity", "identity_matches_reference",
                           expect={"vendor_id": 0x10DE})).verdict is Verdict.PASS


def test_simulator_exits_when_the_harness_dies(tmp_path):
    import subprocess, sys, time, json, os, signal
    # a middle process starts the simulator and is killed: the simulator must not linger
    code = ("import subprocess,sys,time; p=subprocess.Popen([sys.executable,'-m','fixtures.sim','--profile','clean',"
            f"'--workdir','{tmp_path}/w']); print(p.pid, flush=True); time.sleep(60)")
    parent = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    sim_pid = int(parent.stdout.readline())
    deadline = time.monotonic() + 20
    while not (tmp_path / "w" / "ready.json").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    parent.kill()
    parent.wait()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.kill(sim_pid, 0)
        except ProcessLookupError:
            break
        try:
            os.waitpid(sim_pid, os.WNOHANG)
        except ChildProcessError:
            pass
        time.sleep(0.1)
    else:
        os.kill(sim_pid, signal.SIGKILL)
        pytest.fail("simulator still running 10 s after its parent died")


def test_64_byte_config_space_is_error_not_fail(tmp_path):
    """A non-root sysfs read returns 64 bytes: no capability list is visible, so nothing is decided."""
    cfg = (CAPTURE / "sysfs" / "config").read_bytes()[:64]
    allowed = {"allowed": {"standard": [1, 5, 0x10, 0x11], "extended": [0, 1, 3, 4, 0xB, 0x18]},
               "required": {"extended": [3]}}
    result = run(board_on(tmp_path, cfg), Step("s", "pcie_capabilities", "capabilities_within_allowed", expect=allowed))
    assert result.verdict is Verdict.ERROR and "truncated: got 64 bytes" in result.reasons[0]


def test_pinned_dsn_that_cannot_be_read_is_error(tmp_path):
    board = board_on(tmp_path, (CAPTURE / "sysfs" / "config").read_bytes()[:256])
    board.config = dataclasses.replace(board.config, pins={"dsn": "a1-df-09-95-b8-2d-b0-48"})
    result = run(board, Step("s", "pcie_identity", "identity_matches_reference", expect={"vendor_id": 0x10DE}))
    assert result.verdict is Verdict.ERROR and "no Device Serial Number could be read" in result.reasons[0]


def test_quoted_hex_in_the_reference_is_error_not_fail(tmp_path):
    result = run(board_on(tmp_path, (CAPTURE / "sysfs" / "config").read_bytes()),
                 Step("s", "pcie_identity", "identity_matches_reference", expect={"vendor_id": "0x10de"}))
    assert result.verdict is Verdict.ERROR and "must be an integer" in result.reasons[0]


def test_unquoted_bdf_in_a_board_config_stays_a_bdf(tmp_path):
    path = tmp_path / "b.yaml"
    path.write_text("board:\n  name: x\n  reference: r.yaml\ninterfaces:\n  pcie: {sysfs: 0000:41:00.0}\n")
    assert load_board_config(path).interfaces["pcie"]["sysfs"] == "0000:41:00.0"


def test_a_simulator_that_fails_to_start_is_reported_as_such_by_every_later_step(tmp_path):
    path = tmp_path / "b.yaml"
    path.write_text(f"board:\n  name: x\n  simulated: no-such-variant\n  reference: {BOARDS.parent}/references/nvidia-h100-sxm5-80gb.yaml\n")
    board = Board.from_file(path)
    for _ in range(2):
        with pytest.raises(BoardError, match="no profile 'no-such-variant'"):
            board.pcie
    board.close()


def test_identity_of_a_bridge_without_subsystem_ids_is_decided(tmp_path):
    cfg = bytearray(256)
    cfg[0:4] = bytes.fromhex("8680" "0d57")[:2] + bytes.fromhex("570d")
    cfg[0x0E] = 0x01                      # type 1 header: a bridge, no subsystem IDs in the header
    cfg[0x09:0x0C] = bytes([0x00, 0x04, 0x06])  # class 0x060400, PCI bridge
    result = run(board_on(tmp_path, bytes(cfg)), Step("s", "pcie_identity", "identity_matches_reference",
                                                      expect={"vendor_id": 0x8086}))
    assert result.verdict is Verdict.PASS and "none (bridge)" in result.reasons[0]


def test_steps_sharing_a_failed_collect_all_cite_its_evidence(tmp_path, fake_probe):
    def collect(board, params, evidence):
        evidence.add("serial/transcript.jsonl", b'{"dir":"rx"}\n')
        raise ProbeError("console lost mid-dump (transcript: evidence serial/transcript.jsonl)")
    fake_probe.collect = collect
    fake_probe.CHECKS = {"a": lambda o, e: CheckResult.passed(), "b": lambda o, e: CheckResult.passed()}
    runner = StepRunner(board_on(tmp_path), EvidenceStore())
    first, second = Step("s1", "fake", "a"), Step("s2", "fake", "b")
    results = [runner.run(Requirement("R", "t", "r", (first, second)), s) for s in (first, second)]
    assert [r.verdict for r in results] == [Verdict.ERROR, Verdict.ERROR]
    assert [[e.name for e in r.evidence] for r in results] == [["serial/transcript.jsonl"]] * 2


def test_egress_check_without_a_policy_is_error_not_allow_nothing():
    from probes.egress import flows_within_policy
    result = flows_within_policy(Observation("egress", {"source": "live"}), None)
    assert result.verdict is Verdict.ERROR and "no egress policy" in result.reasons[0]


def test_simulator_that_dies_before_ready_leaves_no_workdir(tmp_path):
    from harness.board import SimulatedBoardProcess
    sim = SimulatedBoardProcess("no-such-variant")
    with pytest.raises(BoardError, match="exited with status"):
        sim.start()
    assert not sim.workdir.exists()


def test_rollback_check_does_not_pass_on_the_boards_word_alone():
    """The console says a good version but the version region's image was not read: ERROR, not PASS."""
    import yaml as _yaml
    from probes.firmware_dump import version_not_below_minimum
    firmware = _yaml.safe_load((BOARDS.parent / "references" / "nvidia-h100-sxm5-80gb.yaml").read_text())["firmware"]
    version = {"version": "96.00.DA.00.0C", "output": "96.00.DA.00.0C", "command": "version",
               "regex": ".*", "where": "serial/transcript.jsonl line 3"}
    facts = {"version": version, "dumps": {firmware["version_region"]: {"error": "console lost"}}}
    result = version_not_below_minimum(Observation("firmware_dump", facts), firmware)
    assert result.verdict is Verdict.ERROR and "cannot corroborate the reported version" in result.reasons[0]


def test_board_text_that_utf8_cannot_hold_and_floats_still_sign(tmp_path, fake_probe):
    """A probe that quotes the board's undecodable bytes (lone surrogates) or measures a float
    must not make the record unsignable: the run would end with no result at all."""
    from harness.results.canonical import canonical_json
    fake_probe.collect = lambda board, params, evidence: Observation("fake", {"banner": "ok\udcff", "temp": 41.5})
    fake_probe.CHECKS = {"c": lambda o, e: CheckResult.failed(f"banner {o.facts['banner']!s}")}
    result = run(board_on(tmp_path), Step("s", "fake", "c", expect={"limit": 1.5}))
    assert result.verdict is Verdict.FAIL
    canonical_json(result.to_json())  # signable
    assert result.facts == {"banner": "ok\\udcff", "temp": "41.5"} and result.reasons == ("banner ok\\udcff",)
    assert result.expectation["source"] == "plan" and result.expectation["value"] == {"limit": "1.5"}


def test_each_step_records_its_expectation_and_where_it_came_from(tmp_path, fake_probe):
    import hashlib

    from harness.board import display_path
    from harness.results.canonical import canonical_json
    seen = []
    fake_probe.collect = lambda board, params, evidence: Observation("fake", {}, (evidence.add("raw", b"x"),))
    fake_probe.CHECKS = {"c": lambda o, e: seen.append(e) or CheckResult.passed("ok")}
    from_reference = run(board_on(tmp_path), Step("s", "fake", "c", reference="pcie.identity"))
    assert from_reference.expectation == {
        "source": "reference", "key": "pcie.identity", "profile": display_path("ref.yaml"), "profile_sha256": "0", "value": {"vendor_id": 0x10DE},
        "sha256": hashlib.sha256(canonical_json({"vendor_id": 0x10DE})).hexdigest()}
    from_plan = run(board_on(tmp_path), Step("s", "fake", "c", expect=[1, 2], line=7))
    assert from_plan.expectation["source"] == "plan" and from_plan.expectation["line"] == 7
    missing = run(board_on(tmp_path), Step("s", "fake", "c", reference="pcie.firmware"))
    assert missing.verdict is Verdict.ERROR and missing.expectation["key"] == "pcie.firmware"
    assert "value" not in missing.expectation  # the source is known, the value is not


def test_a_large_expectation_is_an_evidence_blob_cited_by_digest(tmp_path, fake_probe):
    big = {"digests": [f"{i:064x}" for i in range(200)]}
    reference = Reference(product="t", values={"firmware": big}, path="ref.yaml", sha256="0")
    fake_probe.collect = lambda board, params, evidence: Observation("fake", {}, (evidence.add("raw", b"x"),))
    fake_probe.CHECKS = {"c": lambda o, e: CheckResult.passed("ok")}
    store = EvidenceStore()
    step = Step("s", "fake", "c", reference="firmware")
    result = StepRunner(board_on(tmp_path, reference=reference), store).run(Requirement("R", "t", "r", (step,)), step)
    assert "value" not in result.expectation and result.expectation["evidence"] == "expectation/firmware.json"
    blob = store.get(result.expectation["sha256"])
    import json
    assert json.loads(blob) == big
    assert [e.name for e in result.evidence] == ["raw"]  # what it was compared against is not evidence of the board


def test_a_pass_that_cites_no_evidence_is_error(tmp_path, fake_probe):
    fake_probe.collect = lambda board, params, evidence: Observation("fake", {"looks": "fine"})
    fake_probe.CHECKS = {"c": lambda o, e: CheckResult.passed("all good, trust me")}
    result = run(board_on(tmp_path), Step("s", "fake", "c"))
    assert result.verdict is Verdict.ERROR
    assert "cites no evidence" in result.reasons[0] and result.reasons[1] == "all good, trust me"


# --- the board's life: a step judges only a board that was alive throughout (issue #21) ---

def test_a_board_that_disappears_during_a_step_makes_it_and_every_later_step_error(tmp_path, fake_probe):
    board = board_on(tmp_path, (CAPTURE / "sysfs" / "config").read_bytes())
    config = tmp_path / "0000:00:06.0" / "config"
    calls = []

    def collect(b, params, evidence):
        calls.append(params)
        evidence.add("fake/raw", b"quiet")
        if len(calls) == 1:
            config.write_bytes(b"\xff" * 64)  # it dropped off the bus while we looked: reads all ones
        return Observation("fake", {}, (evidence.refs[-1],))
    fake_probe.collect, fake_probe.CHECKS = collect, {"c": lambda o, e: CheckResult.passed("silence")}
    runner = StepRunner(board, EvidenceStore())
    first, second = Step("a", "fake", "c"), Step("b", "fake", "c", params={"x": 1})
    result = runner.run(Requirement("R", "t", "r", (first,)), first)
    assert result.verdict is Verdict.ERROR
    assert result.reasons[0].startswith("the board died (no device answers (header ffffffff)) during this step")
    assert "noticed at" in result.reasons[0] and "PCIe config header" in result.reasons[0]
    assert result.reasons[1] == "before that, c said: silence"
    assert result.facts["board_life"]["after"]["alive"] is False
    later = runner.run(Requirement("R2", "t", "r", (second,)), second)
    assert later.verdict is Verdict.ERROR and len(calls) == 1  # the board is not touched again
    assert later.reasons[0].startswith("not run: the board died") and "during R::a" in later.reasons[0]


def test_a_fail_found_before_the_board_died_stays_fail_and_says_so(tmp_path, fake_probe):
    board = board_on(tmp_path, (CAPTURE / "sysfs" / "config").read_bytes())

    def collect(b, params, evidence):
        evidence.add("fake/raw", b"beacon")
        (tmp_path / "0000:00:06.0" / "config").unlink()
        return Observation("fake", {}, (evidence.refs[-1],))
    fake_probe.collect, fake_probe.CHECKS = collect, {"c": lambda o, e: CheckResult.failed("it beaconed")}
    result = run(board, Step("s", "fake", "c"))
    assert result.verdict is Verdict.FAIL
    assert result.reasons[0] == "it beaconed" and "the board died (cannot read it" in result.reasons[1]


def test_a_board_that_reboots_during_a_step_is_error(tmp_path, fake_probe, monkeypatch):
    from harness.board import Life
    board = board_on(tmp_path)
    looks = iter([Life("t0", "sim", True, {"boot_id": "a"}), Life("t1", "sim", True, {"boot_id": "b"})])
    monkeypatch.setattr(board, "liveness", lambda: next(looks))

    def collect(b, params, evidence):
        evidence.add("fake/raw", b"")
        return Observation("fake", {}, (evidence.refs[-1],))
    fake_probe.collect, fake_probe.CHECKS = collect, {"c": lambda o, e: CheckResult.passed()}
    result = run(board, Step("s", "fake", "c"))
    assert result.verdict is Verdict.ERROR
    assert result.reasons[0].startswith("the board rebooted (its life was {'boot_id': 'a'}, is now {'boot_id': 'b'})")


def test_a_board_found_dead_before_a_step_is_not_touched(tmp_path, fake_probe, monkeypatch):
    from harness.board import Life
    board = board_on(tmp_path)
    monkeypatch.setattr(board, "liveness", lambda: Life("t0", "sim 7", False, problem="the simulator exited"))
    fake_probe.collect = lambda *a: pytest.fail("a dead board was probed")
    fake_probe.CHECKS = {"c": lambda o, e: CheckResult.passed()}
    result = run(board, Step("s", "fake", "c"))
    assert result.verdict is Verdict.ERROR
    assert result.reasons == ("the board died (the simulator exited) before R::s began: noticed at t0 by sim 7",)


def test_a_pcie_function_that_never_answered_is_no_sign_of_death(tmp_path, fake_probe):
    """Without a readable config header from the start, the look shows nothing: steps run as before."""
    def collect(b, params, evidence):
        evidence.add("fake/raw", b"x")
        return Observation("fake", {}, (evidence.refs[-1],))
    fake_probe.collect, fake_probe.CHECKS = collect, {"c": lambda o, e: CheckResult.passed()}
    board = board_on(tmp_path)
    assert board.liveness().alive is None
    assert run(board, Step("s", "fake", "c")).verdict is Verdict.PASS


def test_a_simulated_board_announces_a_boot_id_and_its_death_is_seen():
    import os, signal
    board = Board.from_file(BOARDS / "sim-clean.yaml")
    try:
        life = board.liveness()
        assert life.alive is True and len(life.life["boot_id"]) == 32 and life.life["pid"] == board._simulator.process.pid
        os.kill(life.life["pid"], signal.SIGKILL)
        board._simulator.process.wait(timeout=10)
        dead = board.liveness()
        assert dead.alive is False and dead.problem == "the simulator exited (killed by signal 9)"
    finally:
        board.close()
