"""The egress probe (probes/egress.py), the `net` interface kind and what they add to the formats.

Offline captures are built by hand (tests/egress_samples.py) and judged through the probe, the
check and `attestlab run`; live captures use simulated boards in real network namespaces (root;
without it those tests skip, and the run as an unprivileged user must SKIP with the reason).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from egress_samples import (CAPTURE_MAC, CAPTURE_MAC_TEXT, BOARD, GATEWAY, NTP, clean_frames, eth, from_board,
                            pcapng, phone_home_frames, undecodable_frame)
from harness.board import Board
from harness.evidence import EvidenceStore
from harness.formats.egress_policy import judge, load_policy
from harness.formats.flows import analyze_bytes, flow_analysis_from_record, flow_analysis_record
from harness.formats.pcap import PcapngWriter, read_capture
from harness.interfaces import OPENERS, netcap
from harness.interfaces.netcap import CaptureUnavailable, NetSettingsError, NetworkPort, open_net
from harness.reference import load_reference
from harness.results.bundle import verify_result
from harness.results.canonical import canonical_json
from harness.results.keys import load_public_key
from harness.verdict import Observation, ProbeError, Verdict
from probes import egress, get_probe

from conftest import BOARDS, ROOT, TEST_KEY, TEST_PUB, attestlab, link_exists, namespaces
from test_flows_policy import dns_query, ipv4, udp

REFERENCE = ROOT / "fixtures" / "references" / "nvidia-h100-sxm5-80gb.dsse.json"
POLICY = load_reference(REFERENCE).lookup("egress.policy")
CAN_CAPTURE = netcap.privilege_problem() is None
live = pytest.mark.skipif(not CAN_CAPTURE, reason=f"live capture not possible here: {netcap.privilege_problem()}")


def _bench_board(tmp_path: Path) -> Board:
    """A bench board whose `net` port reads tap recordings; judging one never touches its NIC."""
    path = tmp_path / "bench-tap.yaml"
    path.write_text(f"board:\n  name: bench-tap\n  reference: {REFERENCE}\n"
                    f"interfaces:\n  net: {{interface: enp5s0, address: 192.0.2.1/24}}\n")
    return Board.from_file(path)


def _judge_file(tmp_path: Path, path: Path) -> Observation:
    with _bench_board(tmp_path) as board:
        return egress.collect(board, {**egress.PARAMS, "capture": str(path)}, EvidenceStore())


def _offline(tmp_path: Path, frames, name: str = "tap.pcapng", **kw) -> Observation:
    path = tmp_path / name
    path.write_bytes(pcapng(frames, **kw))
    return _judge_file(tmp_path, path)


def _assert_no_leftovers(capture_facts: dict) -> None:
    """The capture namespace, the simulated board's namespace and its veth are gone."""
    names = namespaces()
    assert capture_facts["namespace"] not in names, names
    sim_pid = capture_facts["interface"].removeprefix("asim")
    assert f"attestlab-sim-{sim_pid}" not in names, names
    deadline = time.monotonic() + 5
    while link_exists(capture_facts["interface"]) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not link_exists(capture_facts["interface"])


# -- formats: the capture side's MAC in the pcapng, the analysis as plain data ---------------------

def test_pcapng_names_the_capture_interface_mac_and_tshark_reads_it(tmp_path):
    data = pcapng(clean_frames())
    assert read_capture(data).interface_macs == (CAPTURE_MAC_TEXT,)
    assert analyze_bytes(data).capture_macs == (CAPTURE_MAC_TEXT,)
    assert read_capture(pcapng(clean_frames(), if_mac=None)).interface_macs == ()
    with pytest.raises(ValueError, match="6-byte"):
        PcapngWriter(open(os.devnull, "wb"), if_mac="02:00:5e")
    if shutil.which("tshark") is None:
        pytest.skip("tshark not installed")
    (tmp_path / "c.pcapng").write_bytes(data)
    proc = subprocess.run(["tshark", "-r", str(tmp_path / "c.pcapng"), "-T", "fields", "-e", "frame.number",
                           "-e", "eth.src"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    rows = [line.split("\t") for line in proc.stdout.splitlines()]
    assert len(rows) == len(clean_frames()) and CAPTURE_MAC_TEXT in {r[1] for r in rows}


def test_flow_analysis_record_is_float_free_and_round_trips_exactly():
    frames = [(f, i) for i, f in enumerate(phone_home_frames() + clean_frames())]
    # Three NTP contacts a second apart give the flow a periodicity (floats in the analysis).
    timed = [f for f, _ in frames] + [from_board(NTP, 17, udp(40000, 123, b"\x23" + bytes(47)))] * 2
    analysis = analyze_bytes(pcapng(timed, step=500_000_000))
    assert any(f.periodicity is not None for f in analysis.flows)
    record = flow_analysis_record(analysis)
    canonical_json(record)  # raises on a float
    assert flow_analysis_from_record(json.loads(json.dumps(record))) == analysis
    with pytest.raises(ValueError, match="not a flow analysis record"):
        flow_analysis_from_record({"flows": []})
    broken = dict(record, flows=[{"proto": "udp"}])
    with pytest.raises(ValueError, match="malformed"):
        flow_analysis_from_record(broken)


def test_judge_leaves_the_capture_hosts_flows_out_and_refuses_silence():
    policy = load_policy(POLICY)
    analysis = analyze_bytes(pcapng(clean_frames()))
    j = judge(policy, analysis)
    # excluded: the capture side's ARP reply (a flow of its own) and its ICMP port unreachable
    assert j.outcome == "PASS" and j.excluded_flows == 2 and j.allowed_flows == 1 and j.housekeeping_flows == 1
    everything = judge(policy, analysis, exclude_macs=())
    assert everything.outcome == "FAIL" and "ICMP type 3 code 3" in everything.violations[0].why
    only_harness = analyze_bytes(pcapng([clean_frames()[3]]))
    j = judge(policy, only_harness)
    assert j.outcome == "ERROR" and "nothing to judge" in j.errors[0] and "none from the board" in j.errors[0]
    assert judge(policy, analyze_bytes(pcapng([]))).errors[0].startswith("nothing to judge: the capture holds no frames")


def test_only_what_a_host_sends_unasked_is_left_out_for_the_capture_sides_mac():
    """A board forging the harness's MAC does not get its DNS query left out of the judgement."""
    forged_query = eth(ipv4(BOARD, GATEWAY, 17, udp(41000, 53, dns_query(9, "hidden.exfil.example"))),
                       CAPTURE_MAC, b"\xff" * 6)
    j = judge(load_policy(POLICY), analyze_bytes(pcapng(clean_frames() + [forged_query])))
    assert j.outcome == "FAIL" and j.excluded_flows == 2
    assert [v.why for v in j.violations] == ["DNS query for hidden.exfil.example (not in allowed names)"]


# -- the check on offline captures (the `capture:` parameter) ----------------------------------------

def test_clean_tap_recording_passes(tmp_path):
    obs = _offline(tmp_path, clean_frames())
    assert obs.facts["source"] == "offline" and obs.facts["capture"]["format"] == "pcapng"
    assert [e.name for e in obs.evidence] == ["egress/capture.pcapng", "egress/flows.json"]
    assert obs.evidence[0].media_type == "application/x-pcapng"
    result = egress.flows_within_policy(obs, POLICY)
    assert result.verdict is Verdict.PASS, result.reasons
    assert "2 flows judged" in result.reasons[0] and "2 flow(s) of the capture side not judged" in result.reasons[0]
    # The verdict says what it rests on: the recording, by path, digest and frame count.
    assert (f"every flow the board started in the recording {tmp_path / 'tap.pcapng'} "
            f"(sha256 {obs.evidence[0].sha256[:16]}..., 6 frames) is allowed") in result.reasons[0]
    canonical_json(obs.facts)


def test_violations_name_destination_names_bytes_and_times(tmp_path):
    obs = _offline(tmp_path, clean_frames() + phone_home_frames())
    result = egress.flows_within_policy(obs, POLICY)
    assert result.verdict is Verdict.FAIL
    dns, tls, basis = result.reasons
    assert basis.startswith("found in the recording ") and "frames)" in basis
    assert "DNS query for telemetry.acme.example" in dns and "2 packets" in dns
    assert "TCP to 192.0.2.1:443 (SNI telemetry.acme.example" in tls and "5 packets" in tls and " bytes, " in tls
    assert "2026-09-21T" in tls and " .. " in tls  # first .. last seen
    # An empty allow list allows nothing, not even the NTP the reference allows.
    nothing = egress.flows_within_policy(_offline(tmp_path, clean_frames(), "c.pcapng"), {"allow": []})
    assert nothing.verdict is Verdict.FAIL and f"UDP to {NTP}:123 matches no allow rule" in nothing.reasons[0]


def test_drops_and_undecoded_frames_are_errors_and_a_violation_stays_a_failure(tmp_path):
    dropped = egress.flows_within_policy(_offline(tmp_path, clean_frames(), "d.pcapng", stats=(9, 3)), POLICY)
    assert dropped.verdict is Verdict.ERROR and dropped.reasons[0] == "capture dropped 3 packets"
    assert dropped.reasons[1].startswith("undecided on the recording ") and len(dropped.reasons) == 2
    undecoded = egress.flows_within_policy(
        _offline(tmp_path, clean_frames() + [undecodable_frame()], "u.pcapng"), POLICY)
    assert undecoded.verdict is Verdict.ERROR and undecoded.reasons[:-1] == ("1 frame not decoded",)
    both = egress.flows_within_policy(
        _offline(tmp_path, phone_home_frames() + [undecodable_frame()], "b.pcapng"), POLICY)
    assert both.verdict is Verdict.FAIL and both.reasons[-2] == "also: 1 frame not decoded"


def test_check_is_pure_and_fails_closed_on_what_it_is_given(tmp_path):
    obs = _offline(tmp_path, clean_frames())
    assert egress.flows_within_policy(obs, POLICY) == egress.flows_within_policy(obs, POLICY)
    bad = egress.flows_within_policy(obs, {"allow": [{"dst": "0.0.0.0/0"}]})
    assert bad.verdict is Verdict.ERROR and "egress policy invalid" in bad.reasons[0] and "every address" in bad.reasons[0]
    assert egress.flows_within_policy(obs, ["udp"]).verdict is Verdict.ERROR
    garbled = Observation("egress", {**obs.facts, "analysis": {"format": "something else"}}, obs.evidence)
    assert egress.flows_within_policy(garbled, POLICY).verdict is Verdict.ERROR
    # A live capture that lost frames proves nothing about absence.
    live_facts = {**obs.facts, "source": "live",
                  "capture": {"complete": False, "dropped": 5, "kernel_dropped": 5, "not_written": 0,
                              "capture_mac": CAPTURE_MAC_TEXT, "duration_ms": 8000, "window_ms": 8000,
                              "interface": "enp5s0", "activity": "idle", "promiscuous": True, "packets_in": 5,
                              "started": "2026-09-21T10:00:00.000000Z", "ended": "2026-09-21T10:00:08.000000Z"}}
    lost = egress.flows_within_policy(Observation("egress", live_facts, obs.evidence), POLICY)
    assert lost.verdict is Verdict.ERROR and lost.reasons[0].startswith("capture incomplete: 5 frames lost")
    assert lost.reasons[-1] == ("undecided on the 8.0 s window 2026-09-21T10:00:00.000000Z to "
                                "2026-09-21T10:00:08.000000Z (promiscuous capture on enp5s0, 6 frames, 5 from the board's side, "
                                "activity idle)")
    complete = {**live_facts["capture"], "complete": True, "dropped": 0, "kernel_dropped": 0}
    assert egress.flows_within_policy(Observation("egress", {**live_facts, "capture": complete}, obs.evidence),
                                      POLICY).verdict is Verdict.PASS
    # A capture that was not promiscuous (it saw only what was addressed to it), or that lasted less
    # than the step's window, decides nothing.
    for changed, text in (({"promiscuous": False}, "was not confirmed promiscuous"),
                          ({"promiscuous": None}, "was not confirmed promiscuous"),
                          ({"duration_ms": 1200}, "lasted 1200 ms, less than the 8000 ms window"),
                          ({"duration_ms": None}, "lasted None ms"),
                          ({"packets_in": 0}, "no frame arrived from the board's side during the window")):
        facts = {**live_facts, "capture": {**complete, **changed}}
        undecided = egress.flows_within_policy(Observation("egress", facts, obs.evidence), POLICY)
        assert undecided.verdict is Verdict.ERROR and any(text in r for r in undecided.reasons), undecided.reasons
    failed_workload = {**live_facts, "capture": {**live_facts["capture"], "complete": True,
                                                 "workload": {"command": ["run-job"], "status": "failed: exit status 3",
                                                              "failed": True}}}
    wl = egress.flows_within_policy(Observation("egress", failed_workload, obs.evidence), POLICY)
    assert wl.verdict is Verdict.ERROR and "the workload ['run-job'] failed: exit status 3" in wl.reasons[0]
    skipped = egress.flows_within_policy(Observation("egress", {"source": "live", "skipped": "needs root"}), POLICY)
    assert skipped.verdict is Verdict.SKIP and skipped.reasons == ("egress not captured: needs root",)


def test_bad_params_and_missing_capture_file_are_probe_errors(tmp_path):
    for bad in ({"window_s": 0}, {"window_s": True}, {"activity": "busy"}, {"sinkhole": "yes"}, {"capture": ""}):
        with pytest.raises(ProbeError):
            egress.collect(None, {**egress.PARAMS, **bad}, EvidenceStore())
    for window in (float("inf"), float("nan"), -1, netcap.MAX_WINDOW_S + 1, "8"):
        with pytest.raises(ProbeError, match=r"window_s must be a number of seconds in \(0, 604800\] \(at most 7 days\)"):
            egress.collect(None, {**egress.PARAMS, "window_s": window}, EvidenceStore())
    assert egress._params({**egress.PARAMS, "window_s": 4 * 3600})[0] == 14400.0
    assert egress._params({**egress.PARAMS, "window_s": netcap.MAX_WINDOW_S})[0] == 604800.0
    with pytest.raises(CaptureUnavailable, match="no capture file"):
        _judge_file(tmp_path, tmp_path / "none.pcapng")
    (tmp_path / "junk.pcap").write_bytes(b"not a capture at all")
    with pytest.raises(ProbeError, match="not a usable pcap/pcapng"):
        _judge_file(tmp_path, tmp_path / "junk.pcap")
    assert set(get_probe("egress").params) == {"window_s", "activity", "sinkhole", "capture"}
    assert "Fails when" in get_probe("egress").doc and "Skips when" in get_probe("egress").doc


def test_capture_param_reads_only_a_bounded_regular_file_through_the_net_port(tmp_path):
    fifo = tmp_path / "tap.fifo"
    os.mkfifo(fifo)
    for path, kind in ((fifo, "a FIFO"), (Path("/dev/zero"), "a character device")):
        with pytest.raises(CaptureUnavailable, match=f"refused: {kind}, not a regular file"):
            _judge_file(tmp_path, path)
    # Judging a recording needs the board's `net` port: that is where recordings are read.
    bare = tmp_path / "bare.yaml"
    bare.write_text(f"board:\n  name: bare\n  reference: {REFERENCE}\n"
                    f"interfaces:\n  pcie: {{sysfs: {tmp_path}}}\n")
    (tmp_path / "tap.pcapng").write_bytes(pcapng(clean_frames()))
    with Board.from_file(bare) as board, pytest.raises(ProbeError, match="has no 'net' interface"):
        egress.collect(board, {**egress.PARAMS, "capture": str(tmp_path / "tap.pcapng")}, EvidenceStore())


def test_probe_reads_the_board_only_through_its_interfaces():
    import ast
    tree = ast.parse((ROOT / "probes" / "egress.py").read_text())
    imported = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert not imported & {"subprocess", "tempfile", "os", "pathlib", "socket", "shutil"}, imported
    calls = {n.func.id for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)}
    assert "open" not in calls


def test_the_window_reports_frames_losses_and_capture_size_as_progress():
    detail = egress.progress_detail({"frames": 1234, "dropped": 0, "bytes": 3 << 20,
                                     "max_bytes": 512 << 20, "elapsed_ns": 3600 * 10**9})
    assert detail == "1234 frames, 0 lost; capture 3.0 of 512 MiB"


def test_soak_plan_is_the_egress_step_with_a_four_hour_window():
    from harness.plan import load_plan
    plan = load_plan(ROOT / "test_plans" / "level1-soak.yaml")
    (req,) = plan.requirements
    (step,) = req.steps
    assert (step.probe, step.check, step.reference) == ("egress", "flows_within_policy", "egress.policy")
    assert step.params == {"window_s": 14400, "activity": "workload", "sinkhole": True}
    assert egress._params({**egress.PARAMS, **step.params}) == (14400.0, "workload", True, None)


_CAPTURE_VALUES = st.one_of(st.none(), st.booleans(), st.integers(-10, 20000), st.floats(allow_nan=True),
                            st.text(max_size=8), st.lists(st.integers(), max_size=2))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(changes=st.dictionaries(st.sampled_from(["promiscuous", "complete", "duration_ms", "window_ms", "dropped",
                                                 "interface", "started", "ended", "activity", "packets_in",
                                                 "forged_in", "workload", "capture_mac"]),
                               _CAPTURE_VALUES, max_size=6))
def test_hostile_capture_facts_never_pass_without_a_full_promiscuous_window(tmp_path, changes):
    if "obs" not in _CLEAN_OBS:
        _CLEAN_OBS["obs"] = _offline(tmp_path, clean_frames())
    obs = _CLEAN_OBS["obs"]
    capture = {"complete": True, "dropped": 0, "kernel_dropped": 0, "not_written": 0, "capture_mac": CAPTURE_MAC_TEXT,
               "duration_ms": 8000, "window_ms": 8000, "interface": "enp5s0", "activity": "idle",
               "promiscuous": True, "packets_in": 5, "started": "2026-09-21T10:00:00.000000Z",
               "ended": "2026-09-21T10:00:08.000000Z", **changes}
    facts = {**obs.facts, "source": "live", "capture": capture}
    try:
        result = egress.flows_within_policy(Observation("egress", facts, obs.evidence), POLICY)
    except (TypeError, ValueError, AttributeError):
        return  # a crash is ERROR in the runner; what matters is that it is never a PASS
    if result.verdict is Verdict.PASS:
        assert capture["promiscuous"] is True and capture["complete"] is True
        assert type(capture["duration_ms"]) is int and type(capture["window_ms"]) is int
        assert capture["duration_ms"] >= capture["window_ms"] >= 0
        assert not capture.get("forged_in")
        assert type(capture["packets_in"]) is int and capture["packets_in"] > 0


_CLEAN_OBS: dict = {}


def test_offline_capture_parameter_through_attestlab_run(tmp_path):
    clean, bad, lost = tmp_path / "clean.pcapng", tmp_path / "bad.pcapng", tmp_path / "lost.pcapng"
    clean.write_bytes(pcapng(clean_frames()))
    bad.write_bytes(pcapng(clean_frames() + phone_home_frames()))
    lost.write_bytes(pcapng(clean_frames() + [undecodable_frame()], stats=(8, 1)))
    plan = tmp_path / "tap.yaml"
    steps = "".join(
        f"  - id: TAP-{n}\n    title: tap recording {n}\n    rationale: judged offline\n    steps:\n      - id: judge\n        probe: egress\n"
        f"        check: flows_within_policy\n        reference: egress.policy\n        params: {{capture: {path}}}\n"
        for n, path in (("CLEAN", clean), ("BAD", bad), ("LOST", lost)))
    plan.write_text("plan:\n  id: tap\n  version: '1'\n  title: tap recordings\n  scheme: attestlab\nrequirements:\n" + steps)
    board = tmp_path / "bench.yaml"  # a bench board; judging recordings never touches its port
    board.write_text(f"board:\n  name: bench-tap\n  reference: {REFERENCE}\n"
                     f"interfaces:\n  net: {{interface: enp5s0, address: 192.0.2.1/24}}\n")
    run = attestlab("run", "--plan", str(plan), "--board", str(board), "--key", str(TEST_KEY), "--out",
                    str(tmp_path / "out"), "-q")
    envelope = next(line.split(": ", 1)[1] for line in run.stdout.splitlines() if line.startswith("signed result: "))
    record = verify_result(envelope, load_public_key(TEST_PUB)).record
    steps = {req["id"]: req["steps"][0] for req in record["requirements"]}
    assert {k: s["verdict"] for k, s in steps.items()} == {"TAP-CLEAN": "PASS", "TAP-BAD": "FAIL", "TAP-LOST": "ERROR"}
    assert run.returncode == 1
    assert any("telemetry.acme.example" in r for r in steps["TAP-BAD"]["reasons"])
    assert steps["TAP-LOST"]["reasons"][:2] == ["1 frame not decoded", "capture dropped 1 packets"]
    assert steps["TAP-LOST"]["reasons"][2].startswith(f"undecided on the recording {lost} (sha256 ")
    evidence = {e["name"]: e for e in steps["TAP-CLEAN"]["evidence"]}
    assert evidence["egress/capture.pcapng"]["media_type"] == "application/x-pcapng"
    stored = Path(envelope).parent / "evidence" / evidence["egress/capture.pcapng"]["sha256"]
    assert stored.read_bytes() == clean.read_bytes()


# -- the `net` interface kind ------------------------------------------------------------------------

def test_open_net_validates_settings_with_clear_errors(tmp_path):
    assert OPENERS["net"] == "harness.interfaces.netcap:open_net"
    port = open_net({"interface": "enp5s0", "address": "192.0.2.1/24", "extra_addresses": ["192.0.2.123"],
                     "workload": {"command": ["run-job", "--seconds", 30]}})
    assert port == NetworkPort("enp5s0", "192.0.2.1/24", ("192.0.2.123/32",), None, ("run-job", "--seconds", "30"))
    assert port.has_workload and port.close() is None
    assert not open_net({"interface": "enp5s0", "address": "192.0.2.1/24"}).has_workload
    with pytest.raises(CaptureUnavailable, match="network port is unavailable: needs root"):
        open_net({"unavailable": "needs root"})
    for settings, text in (
            ({"address": "192.0.2.1/24"}, "interfaces.net.interface None: give the host NIC"),
            ({"interface": "lo", "address": "192.0.2.1/24"}, "not lo"),
            ({"interface": "enp5s0", "address": "192.0.2.1"}, "with its prefix length"),
            ({"interface": "enp5s0", "address": "fd00::1/64"}, "IPv4 address"),
            ({"interface": "enp5s0", "address": "192.0.2.0/24"}, "not a usable host address"),
            ({"interface": "enp5s0", "address": "192.0.2.1/24", "extra_addresses": "192.0.2.123"}, "must be a list"),
            ({"interface": "enp5s0", "address": "192.0.2.1/24", "workload": {"command": "make load"}},
             "non-empty list of strings"),
            ({"interface": "enp5s0", "address": "192.0.2.1/24", "workload": ["x"]}, "workload must be"),
            ({"interface": "enp5s0", "address": "192.0.2.1/24", "workload_trigger": "rel/path"}, "absolute"),
            ({"interface": "enp5s0", "address": "192.0.2.1/24", "sinkhole": True}, "unknown setting 'sinkhole'")):
        with pytest.raises(NetSettingsError, match=text.replace("(", r"\(").replace(")", r"\)")):
            open_net(settings)


@pytest.mark.skipif(not CAN_CAPTURE, reason="without capture privileges the probe SKIPs before it looks at the port")
def test_activity_workload_without_a_workload_is_an_error_before_any_capture(tmp_path):
    path = tmp_path / "bench.yaml"
    path.write_text(f"board:\n  name: bench-x\n  reference: {REFERENCE}\n"
                    f"interfaces:\n  net: {{interface: nosuchnic0, address: 192.0.2.1/24}}\n")
    with Board.from_file(path) as board:
        with pytest.raises(ProbeError, match="names no workload: add interfaces.net.workload"):
            egress.collect(board, {**egress.PARAMS, "activity": "workload"}, EvidenceStore())
        with pytest.raises(CaptureUnavailable, match="nosuchnic0 does not exist"):
            egress.collect(board, {**egress.PARAMS, "window_s": 1}, EvidenceStore())


# -- live captures on simulated boards -----------------------------------------------------------------

@live
def test_late_beacon_stays_silent_while_idle(tmp_path):
    """The beacon the matrix catches with `activity: workload` is invisible to an idle window."""
    evidence = EvidenceStore()
    with Board.from_file(BOARDS / "sim-late-beacon.yaml") as board:
        obs = egress.collect(board, {**egress.PARAMS, "window_s": 2.5, "activity": "idle"}, evidence)
    result = egress.flows_within_policy(obs, POLICY)
    assert result.verdict is Verdict.PASS, result.reasons
    cap = obs.facts["capture"]
    assert cap["complete"] and cap["packets_in"] > 0 and cap["workload"] is None and 2400 <= cap["duration_ms"] < 6000
    assert cap["promiscuous"] is True
    # The PASS says the window it rests on: length, start and end, promiscuous, frames, activity.
    frames = obs.facts["analysis"]["packets"]
    assert (f"in the {cap['duration_ms'] / 1000:.1f} s window {cap['started']} to {cap['ended']} (promiscuous "
            f"capture on {cap['interface']}, {frames} frames, {cap['packets_in']} from the board's side, "
            f"activity idle) is allowed") in result.reasons[0]
    names = [e.name for e in obs.evidence]
    assert names == ["egress/capture.pcapng", "egress/capture-stats.json", "egress/flows.json"]
    stats = json.loads(evidence.get(obs.evidence[1].sha256))
    assert stats["capture_mac"] == cap["capture_mac"] and stats["dropped"] == 0
    assert read_capture(evidence.get(cap["sha256"])).interface_macs == (cap["capture_mac"],)
    _assert_no_leftovers(cap)


@live
def test_failing_bench_workload_is_an_error_with_its_output_as_evidence(tmp_path):
    path = tmp_path / "board.yaml"
    path.write_text(f"board:\n  name: sim-ntp-with-job\n  simulated: clean-ntp\n  reference: {REFERENCE}\n"
                    "interfaces:\n  net: {workload: {command: [sh, -c, 'echo job starting; exit 3']}}\n")
    evidence = EvidenceStore()
    with Board.from_file(path) as board:
        obs = egress.collect(board, {**egress.PARAMS, "window_s": 2.5, "activity": "workload"}, evidence)
    result = egress.flows_within_policy(obs, POLICY)
    assert result.verdict is Verdict.ERROR
    assert result.reasons[0] == ("the workload ['sh', '-c', 'echo job starting; exit 3'] failed: exit status 3: the "
                                 "board was not exercised as the step asks (see egress/workload.log)")
    assert len(result.reasons) == 2 and "activity workload)" in result.reasons[1]
    log = next(e for e in obs.evidence if e.name == "egress/workload.log")
    assert evidence.get(log.sha256) == b"job starting\n" and log.media_type.startswith("text/plain")
    # The NTP it sent meanwhile was seen and allowed: only the workload makes it undecided.
    analysis = flow_analysis_from_record(obs.facts["analysis"])
    assert any(f.dst == NTP and f.dport == 123 and f.src == BOARD for f in analysis.flows)
    _assert_no_leftovers(obs.facts["capture"])


@live
def test_board_forging_the_capture_sides_mac_is_caught_live(tmp_path):
    from harness.interfaces.netcap import CapturePoint, run_in_netns
    from test_netcap import Sim

    def forge(capture_mac: bytes) -> None:  # inside the board's namespace
        import socket
        frame = eth(ipv4(BOARD, GATEWAY, 17, udp(41000, 5353, b"not even dns")), capture_mac, b"\xff" * 6)
        with socket.socket(socket.AF_PACKET, socket.SOCK_RAW) as s:
            s.bind(("eth0", 0))
            s.send(frame)

    board = Sim({"behaviour": "quiet", "ipv6": False}, tmp_path / "board")
    try:
        with CapturePoint(board.interface, board.address, f"t{os.getpid()}-forge", sinkhole=True) as cp:
            cp.run_for(0.5)
            run_in_netns(board.namespace, forge, bytes.fromhex(cp._mac.replace(":", "")))
            cp.run_for(0.3)
            res = cp.stop()
    finally:
        board.stop()
    assert res.forged_in == 1 and res.complete
    facts = {"source": "live", "capture": egress._capture_stats(res, 0.8, "idle", True, None),
             "analysis": flow_analysis_record(analyze_bytes(res.pcapng))}
    canonical_json(facts)
    result = egress.flows_within_policy(Observation("egress", facts), POLICY)
    assert result.verdict is Verdict.FAIL
    assert result.reasons[0] == (f"1 frame from the board's side carried the capture interface's own MAC "
                                 f"{res.capture_mac} as source: the board impersonates the harness side "
                                 f"(forged source address)")
    assert any("UDP to 192.0.2.1:5353" in r for r in result.reasons[1:])


# -- without privileges ------------------------------------------------------------------------------

EGRESS_ONLY_PLAN = """plan:
  id: egress-only
  version: '1'
  title: the PCIe identity and the egress requirement
  scheme: attestlab
requirements:
  - id: L1-PCIE-IDENTITY
    title: identity
    rationale: the rest of the board works without root
    steps:
      - {id: identity, probe: pcie_identity, check: identity_matches_reference, reference: pcie.identity}
  - id: L1-EGRESS
    title: egress
    rationale: needs root to capture
    steps:
      - id: window
        probe: egress
        check: flows_within_policy
        reference: egress.policy
        params: {window_s: 8, activity: workload, sinkhole: true}
"""


def _unprivileged_prefix() -> list[str]:
    """How to run a command without the privileges a capture needs: as is when we are not root;
    as root, with every capability dropped (uid 0 keeps its files readable: the interpreter may
    live under /root, where nobody cannot run it)."""
    if os.geteuid() != 0:
        return []
    if shutil.which("setpriv") is None:
        pytest.skip("running as root without setpriv: cannot drop privileges for this test")
    return ["setpriv", "--inh-caps=-all", "--bounding-set=-all"]


def test_without_privileges_egress_is_skip_with_the_reason_and_the_rest_of_the_board_works():
    prefix = _unprivileged_prefix()
    work = Path(tempfile.mkdtemp(prefix="attestlab-noroot-"))
    try:
        os.chmod(work, 0o777)
        (work / "plan.yaml").write_text(EGRESS_ONLY_PLAN)
        key = work / "lab.key"
        shutil.copy(TEST_KEY, key)
        # The simulated board alone, unprivileged: its network port is announced as unavailable,
        # its PCIe tree is there (the simulator is not taken down whole).
        sim = subprocess.run([*prefix, sys.executable, "-c", (
            "import json, subprocess, sys, time, pathlib\n"
            f"w = pathlib.Path({str(work / 'sim')!r})\n"
            "p = subprocess.Popen([sys.executable, '-m', 'fixtures.sim', '--profile', 'phone-home', '--workdir', str(w)])\n"
            "t = time.monotonic() + 30\n"
            "while not (w / 'ready.json').exists() and p.poll() is None and time.monotonic() < t: time.sleep(0.05)\n"
            "print((w / 'ready.json').read_text() if (w / 'ready.json').exists() else 'NOT READY')\n"
            "p.terminate(); p.wait(10)\n")], capture_output=True, text=True, timeout=60, cwd=ROOT)
        assert sim.returncode == 0 and sim.stdout.strip(), sim.stdout + sim.stderr
        announced = json.loads(sim.stdout.strip().splitlines()[-1])["interfaces"]
        assert "pcie" in announced, sim.stdout + sim.stderr
        assert set(announced["net"]) == {"unavailable"}
        assert announced["net"]["unavailable"].startswith("the simulated network port "), announced
        run = subprocess.run([*prefix, sys.executable, "-m", "harness.cli", "run", "--plan", str(work / "plan.yaml"),
                              "--board", str(BOARDS / "sim-phone-home.yaml"), "--key", str(key),
                              "--out", str(work / "out"), "-q"], capture_output=True, text=True, timeout=120, cwd=ROOT)
        envelope = next((line.split(": ", 1)[1] for line in run.stdout.splitlines()
                         if line.startswith("signed result: ")), None)
        assert envelope, run.stdout + run.stderr
        record = verify_result(envelope, load_public_key(TEST_PUB)).record
        verdicts = {req["id"]: req for req in record["requirements"]}
        assert verdicts["L1-PCIE-IDENTITY"]["verdict"] == "PASS"
        egress_step = verdicts["L1-EGRESS"]["steps"][0]
        assert egress_step["verdict"] == "SKIP", egress_step
        (reason,) = egress_step["reasons"]
        assert reason.startswith("egress not captured: capturing the board's network needs CAP_SYS_ADMIN and "
                                 "CAP_NET_ADMIN") and "run the harness as root" in reason
        assert record["verdict"] == "SKIP" and run.returncode == 2
        assert "SKIP   L1-EGRESS" in run.stdout
    finally:
        shutil.rmtree(work, ignore_errors=True)
