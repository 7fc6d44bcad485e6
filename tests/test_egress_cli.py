"""`attestlab egress analyze`: judging a recording offline, and agreeing with the live runs.

Every simulated egress variant's own pcapng, taken from the evidence directory of its signed
result (the zoo run tests/test_zoo_matrix.py judges too, made once per session), must get the
same verdict from the command as L1-EGRESS got live.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from egress_samples import CAPTURE_MAC_TEXT, clean_frames, pcapng, phone_home_frames, undecodable_frame
from harness.interfaces.netcap import privilege_problem
from harness.results.bundle import verify_result
from harness.results.keys import load_public_key

from conftest import BOARDS, ROOT, TEST_PUB, at_once, attestlab

REFERENCE = ROOT / "fixtures" / "references" / "nvidia-h100-sxm5-80gb.yaml"
MATRIX = yaml.safe_load((BOARDS / "matrix.yaml").read_text())
EGRESS_BOARDS = ["sim-clean", "sim-clean-ntp", "sim-phone-home", "sim-dns-tunnel", "sim-late-beacon",
                 "sim-icmp-covert", "sim-forged-ntp", "sim-icmp-echo-reply", "sim-nd-abuse", "sim-name-flood",
                 "sim-hidden-bytes", "sim-mld-exfil", "sim-jumbo-exfil"]
EXIT = {"PASS": 0, "FAIL": 1, "ERROR": 2}


def _write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def _policy_file(tmp_path: Path, doc, name: str = "policy.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(doc))
    return path


# -- live: each variant's own evidence, judged again offline -----------------------------------------

@pytest.mark.skipif(privilege_problem() is not None, reason=f"live capture not possible here: {privilege_problem()}")
@pytest.mark.parametrize("board", EGRESS_BOARDS)
def test_analyze_on_a_variants_own_evidence_agrees_with_the_live_run(board, zoo_run, tmp_path):
    zoo = zoo_run(board)
    assert zoo.envelope, zoo.proc.stdout[-3000:] + zoo.proc.stderr[-2000:]
    record = verify_result(zoo.envelope, load_public_key(TEST_PUB)).record
    (step,) = [s for req in record["requirements"] if req["id"] == "L1-EGRESS" for s in req["steps"]]
    live = step["verdict"]
    assert live == (MATRIX[board] or {}).get("L1-EGRESS", {}).get("verdict", "PASS"), step["reasons"]
    evidence = {e["name"]: e for e in step["evidence"]}
    assert evidence["egress/capture.pcapng"]["media_type"] == "application/x-pcapng"
    assert {"egress/capture-stats.json", "egress/flows.json"} <= set(evidence)
    pcap = Path(zoo.envelope).parent / "evidence" / evidence["egress/capture.pcapng"]["sha256"]
    capture = step["facts"]["capture"]
    assert capture["complete"] and capture["dropped"] == 0 and capture["packets_in"] > 0

    human, report = at_once(lambda: attestlab("egress", "analyze", str(pcap), "--policy", str(REFERENCE)),
                            lambda: attestlab("egress", "analyze", str(pcap), "--policy", str(REFERENCE), "--json"))
    assert human.returncode == EXIT[live], human.stdout + human.stderr
    assert f"verdict: {live}" in human.stdout
    doc = json.loads(report.stdout)
    assert report.returncode == EXIT[live] and doc["verdict"] == live
    assert doc["packets"] == capture["packets"] and doc["capture_macs"] == [capture["capture_mac"]]
    if live == "FAIL":
        reason = MATRIX[board]["L1-EGRESS"]["reason"]
        assert any(reason in v["why"] for v in doc["violations"]), doc["violations"]
        # The same findings, flow for flow, as the live check listed (it lists 50 at most).
        listed = [r for r in step["reasons"] if r.startswith("egress not allowed: ")]
        assert len(listed) == min(len(doc["violations"]), 50)
        assert all(v["why"] in r for v, r in zip(doc["violations"], listed))
    else:
        assert doc["violations"] == [] and doc["errors"] == []

    if shutil.which("tshark"):
        (tmp_path / "c.pcapng").write_bytes(pcap.read_bytes())
        shark = subprocess.run(["tshark", "-r", str(tmp_path / "c.pcapng")], capture_output=True, text=True,
                               timeout=60)
        assert shark.returncode == 0, shark.stderr
        assert len(shark.stdout.splitlines()) == capture["packets"]

    # Nothing left behind: the capture namespace, the board's namespace and its veth are gone.
    namespaces = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    sim_pid = capture["interface"].removeprefix("asim")
    assert capture["namespace"] not in namespaces and f"attestlab-sim-{sim_pid} " not in namespaces + " "
    assert subprocess.run(["ip", "link", "show", "dev", capture["interface"]], capture_output=True).returncode != 0


# -- offline, on hand-built recordings -----------------------------------------------------------------

def test_exit_0_and_a_summary_when_every_flow_is_allowed(tmp_path):
    cap = _write(tmp_path, "clean.pcapng", pcapng(clean_frames()))
    run = attestlab("egress", "analyze", str(cap), "--policy", str(REFERENCE))
    assert run.returncode == 0, run.stdout + run.stderr
    assert "6 frames, 4 flows; policy: egress.policy of reference profile" in run.stdout
    assert "judged 2 flow(s) the board started: 1 allowed by a rule, 1 link-local housekeeping, 0 violation(s)" \
        in run.stdout
    assert f"not judged: 2 flow(s) the capturing host ({CAPTURE_MAC_TEXT}, the pcapng's if_MACaddr) started on " \
        f"its own: ARP, ICMP errors" in run.stdout
    assert run.stdout.rstrip().endswith("verdict: PASS (every flow the board started is allowed)")


def test_exit_1_with_a_violation_table_naming_destination_names_bytes_and_times(tmp_path):
    cap = _write(tmp_path, "bad.pcapng", pcapng(clean_frames() + phone_home_frames()))
    run = attestlab("egress", "analyze", str(cap), "--policy", str(REFERENCE))
    assert run.returncode == 1, run.stdout + run.stderr
    lines = run.stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.strip().startswith("PROTO"))
    assert lines[header].split() == ["PROTO", "SOURCE", "DESTINATION", "NAMES", "PKTS", "BYTES", "FIRST", "SEEN",
                                     "LAST", "SEEN"]
    assert lines[header + 1].split()[:6] == ["udp", "192.0.2.2", "192.0.2.1:53", "telemetry.acme.example", "2", "180"]
    assert "why: DNS query for telemetry.acme.example (not in allowed names)" in lines[header + 2]
    assert lines[header + 3].split()[:4] == ["tcp", "192.0.2.2", "192.0.2.1:443", "telemetry.acme.example"]
    assert "2026-09-21T14:13:" in lines[header + 3]
    assert "verdict: FAIL (2 egress violations" in run.stdout

    doc = json.loads(attestlab("egress", "analyze", str(cap), "--policy", str(REFERENCE), "--json").stdout)
    assert {"packets", "flows", "violations", "anomalies", "verdict"} <= set(doc)
    assert doc["verdict"] == "FAIL" and doc["packets"] == 13
    v = doc["violations"][1]
    assert set(v) == {"proto", "src", "dst", "sport", "dport", "names", "packets", "bytes", "first_seen", "last_seen",
                      "why"}
    assert (v["proto"], v["dst"], v["dport"], v["names"], v["packets"]) == \
        ("tcp", "192.0.2.1", 443, ["telemetry.acme.example"], 5)
    assert v["first_seen"] < v["last_seen"]


def test_exit_2_when_the_recording_cannot_be_judged(tmp_path):
    undecoded = _write(tmp_path, "u.pcapng", pcapng(clean_frames() + [undecodable_frame()]))
    dropped = _write(tmp_path, "d.pcapng", pcapng(clean_frames(), stats=(10, 4)))
    silent = _write(tmp_path, "s.pcapng", pcapng([clean_frames()[3]]))
    # A violation is a finding even when other frames could not be decoded.
    both = _write(tmp_path, "b.pcapng", pcapng(phone_home_frames() + [undecodable_frame()]))
    bad_files = ((tmp_path / "missing.pcapng", "no capture file"),
                 (_write(tmp_path, "empty.pcap", b""), "is empty"),
                 (_write(tmp_path, "junk.pcap", b"GIF89a..."), "unknown capture magic"))

    def analyze(capture: Path, *more: str):
        return lambda: attestlab("egress", "analyze", str(capture), "--policy", str(REFERENCE), *more)
    run, dropped_run, silent_run, both_run, *bad_runs = at_once(
        analyze(undecoded), analyze(dropped, "--json"), analyze(silent), analyze(both),
        *(analyze(bad_file) for bad_file, _ in bad_files))
    assert run.returncode == 2 and "cannot be fully judged:\n  - 1 frame not decoded" in run.stdout
    assert "anomaly: frame 7:" in run.stdout
    doc = json.loads(dropped_run.stdout)
    assert doc["verdict"] == "ERROR" and doc["errors"] == ["capture dropped 4 packets"]
    assert "capture dropped 4 packets" in doc["anomalies"]
    assert silent_run.returncode == 2 and \
        "nothing to judge: every frame in the capture came from the capturing host" in silent_run.stdout
    assert both_run.returncode == 1
    for (_, text), bad in zip(bad_files, bad_runs):
        assert bad.returncode == 2 and text in bad.stderr, bad.stderr


def test_policy_is_a_policy_file_or_a_reference_profile(tmp_path):
    cap = _write(tmp_path, "clean.pcapng", pcapng(clean_frames()))
    ntp_only = _policy_file(tmp_path, {"allow": [{"proto": "udp", "dst": "192.0.2.123", "dport": 123}]})
    nothing = _policy_file(tmp_path, {"allow": []}, "nothing.yaml")
    invalid = _policy_file(tmp_path, {"allow": [{"dns": "*"}]}, "invalid.yaml")
    reference = tmp_path / "ref.yaml"
    reference.write_text(REFERENCE.read_text().split("# --- egress policy ---")[0])

    def analyze(*args: str):
        return lambda: attestlab("egress", "analyze", *args)
    ntp_run, nothing_run, invalid_run, reference_run, missing_run, helped = at_once(
        analyze(str(cap), "--policy", str(ntp_only)), analyze(str(cap), "--policy", str(nothing)),
        analyze(str(cap), "--policy", str(invalid)), analyze(str(cap), "--policy", str(reference)),
        analyze(str(cap), "--policy", str(tmp_path / "none.yaml")), analyze("--help"))
    assert ntp_run.returncode == 0 and f"policy: policy file {ntp_only}" in ntp_run.stdout
    assert nothing_run.returncode == 1
    assert invalid_run.returncode == 2 and "matches every name" in invalid_run.stderr
    assert reference_run.returncode == 2 and "reference profile without egress.policy" in reference_run.stderr
    assert missing_run.returncode == 2 and "none.yaml" in missing_run.stderr
    assert "reference profile" in helped.stdout and "exit status: 0 every flow allowed, 1" in helped.stdout


def test_all_flows_judges_the_capturing_hosts_own_frames_too(tmp_path):
    cap = _write(tmp_path, "clean.pcapng", pcapng(clean_frames()))
    run = attestlab("egress", "analyze", str(cap), "--policy", str(REFERENCE), "--all-flows", "--json")
    doc = json.loads(run.stdout)
    assert run.returncode == 1 and doc["capture_macs"] == []
    assert [v["why"] for v in doc["violations"]] == ["ICMP type 3 code 3 to 192.0.2.2 matches no allow rule"]
    # A recording without if_MACaddr (a plain tap) names no capturing host: every flow is judged.
    tap = _write(tmp_path, "tap.pcapng", pcapng(clean_frames(), if_mac=None))
    assert attestlab("egress", "analyze", str(tap), "--policy", str(REFERENCE)).returncode == 1
