"""egress — does the board send anything on its management network that it should not?

What: takes the board's management link (the `net` interface: the host NIC cabled to the
board's port, or a switch mirror port / tap) into a private network namespace that routes
nowhere, answers the board there with a sinkhole (DNS answering every name, TCP listeners that
read and close) and records every frame for `window_s` seconds (up to 7 days; on an operator's
terminal the window counts down with the frames seen so far, harness.progress) as pcapng, the interface confirmed promiscuous, optionally while
the board's workload runs (`activity: workload`). The capture is grouped into flows (who
started it, destination, ports, the DNS names, TLS SNI and HTTP Host that name it, packets,
bytes, first and last seen) and judged against the product's egress policy, an allow list.
With `capture: PATH` it judges a pcap/pcapng recorded elsewhere (a lab tap) instead. Everything
goes through the `net` interface (harness.interfaces.netcap.NetworkPort: the capture window, the
workload, reading a recording); this module only calls it and stores evidence.

Why: an accelerator board with its own management controller can phone home, beacon only once
a job runs, tunnel data out through DNS or ICMP payloads. Nothing the board sends during the
window may leave the lab, and anything it tries to reach that the product does not declare is
a finding. The sinkhole makes the board reveal names and payloads instead of a lone SYN.

Evidence: the capture as pcapng (`egress/capture.pcapng`, readable by tshark/Wireshark; its
interface block names the capture side's MAC), stored as soon as the window closes (also the
partial capture when the window failed), the capture statistics and sinkhole log
(`egress/capture-stats.json`), the flow table (`egress/flows.json`) and, for a bench
workload, its output (`egress/workload.log`). The facts hold the flow analysis as plain data;
the check judges only that. Every verdict ends with the window it rests on: its length, start
and end, the interface and that it was promiscuous, the frames, the activity (or, offline, the
recording's path, sha256 and frames).

Fails when: any flow the board started is not allowed by the policy, each one named with its
destination, the names that point at it, packets, bytes and first/last seen; DNS queries for
names the policy does not allow; a suspected DNS tunnel; a frame from the board's side that
carries the capture side's own MAC (a board impersonating the harness to hide its flows).
What the capture side sends on its own (ARP, ICMP errors from its MAC) is not judged.
Errors when: frames could not be decoded, the kernel dropped frames or the capture is
damaged ("N frames not decoded", "capture dropped N packets"); the window saw nothing from the
board at all (silence cannot be told from an unplugged cable); the capture could not be set up,
was not confirmed promiscuous (it would see only frames addressed to it and broadcasts), lasted
less than `window_s`, hit its size cap (frames beyond it are lost), or failed during the window;
a recording that is not a regular file within the size cap (a FIFO, /dev/zero); the workload
failed; the policy is missing or invalid.
Skips when: the harness lacks the privileges to take the interface into a namespace (not
root); the reason says what is missing.
"""

from __future__ import annotations

import json
import math
import time
from typing import Any

from harness import progress
from harness.evidence import EvidenceStore
from harness.formats.egress_policy import PolicyError, judge, load_policy
from harness.formats.flows import analyze_bytes, flow_analysis_from_record, flow_analysis_json, flow_analysis_record
from harness.formats.pcap import CaptureFormatError
from harness.interfaces.netcap import MAX_WINDOW_S, CaptureUnavailable, privilege_problem, tool_problem
from harness.verdict import CheckResult, Observation, ProbeError

PARAMS: dict[str, Any] = {
    "window_s": 8,          # how long to capture (seconds, at most 7 days)
    "activity": "idle",     # idle | workload (start the workload the board config names)
    "sinkhole": True,       # answer the board (DNS, TCP listeners, off-link addresses)
    "capture": None,        # path of a pcap/pcapng recorded by a lab tap: judge it, capture nothing
}

ACTIVITIES = ("idle", "workload")
PCAPNG_MEDIA_TYPE = "application/x-pcapng"
PCAP_MEDIA_TYPE = "application/vnd.tcpdump.pcap"
# How often the window reports how it stands (harness.progress: a terminal shows it, a log never).
_PROGRESS_EVERY_S = 1.0
_MAX_REASONS = 50


def _params(params: dict[str, Any]) -> tuple[float, str, bool, str | None]:
    window = params.get("window_s")
    if (isinstance(window, bool) or not isinstance(window, (int, float)) or not math.isfinite(window)
            or not 0 < window <= MAX_WINDOW_S):
        raise ProbeError(f"egress: window_s must be a number of seconds in (0, {MAX_WINDOW_S}] "
                         f"(at most 7 days), got {window!r}")
    activity = params.get("activity")
    if activity not in ACTIVITIES:
        raise ProbeError(f"egress: activity must be one of {', '.join(ACTIVITIES)}, got {activity!r}")
    sinkhole = params.get("sinkhole")
    if not isinstance(sinkhole, bool):
        raise ProbeError(f"egress: sinkhole must be true or false, got {sinkhole!r}")
    capture = params.get("capture")
    if capture is not None and (not isinstance(capture, str) or not capture.strip()):
        raise ProbeError(f"egress: capture must be the path of a pcap/pcapng file, got {capture!r}")
    return float(window), activity, sinkhole, capture


def _store_analysis(evidence: EvidenceStore, data: bytes, where: str) -> tuple[dict[str, Any], Any]:
    try:
        analysis = analyze_bytes(data)
    except CaptureFormatError as exc:
        raise ProbeError(f"egress: {where} is not a usable pcap/pcapng capture: {exc}") from None
    ref = evidence.add("egress/flows.json", json.dumps(flow_analysis_json(analysis), indent=1).encode(),
                       "application/json")
    return flow_analysis_record(analysis), ref


def _collect_offline(board: Any, path: str, evidence: EvidenceStore) -> Observation:
    # CaptureUnavailable (a ProbeError) when missing, empty, too large or not a regular file
    data = board.interface("net").read_capture(path)
    is_pcapng = data[:4] == b"\x0a\x0d\x0d\x0a"
    cap_ref = evidence.add("egress/capture.pcapng" if is_pcapng else "egress/capture.pcap", data,
                           PCAPNG_MEDIA_TYPE if is_pcapng else PCAP_MEDIA_TYPE)
    record, flows_ref = _store_analysis(evidence, data, f"capture file {path}")
    facts = {
        "source": "offline",
        "capture": {"path": path, "sha256": cap_ref.sha256, "size": cap_ref.size,
                    "format": record["capture_format"]},
        "analysis": record,
    }
    return Observation("egress", facts, (cap_ref, flows_ref))


def _capture_stats(result: Any, window: float, activity: str, sinkhole: bool,
                   workload: dict[str, Any] | None) -> dict[str, Any]:
    return {
        "interface": result.interface, "namespace": result.namespace, "address": result.address,
        "capture_mac": result.capture_mac, "started": result.started, "ended": result.ended,
        "duration_ms": (result.ended_ns - result.started_ns) // 1_000_000, "window_ms": int(window * 1000),
        "activity": activity, "sinkhole": sinkhole, "promiscuous": result.promiscuous, "packets": result.packets,
        "packets_in": result.packets_in, "packets_out": result.packets_out, "received": result.received,
        "dropped": result.dropped, "kernel_dropped": result.kernel_dropped, "not_written": result.not_written,
        "interface_dropped": result.interface_dropped,
        "complete": result.complete, "forged_in": result.forged_in,
        "sinkhole_events": len(result.sinkhole_events), "workload": workload,
    }


def _keep_partial(evidence: EvidenceStore, partial: Any, why: str, window: float, activity: str,
                  sinkhole: bool, workload_info: dict[str, Any] | None) -> None:
    """Store what a window that failed or was cut short captured before it ended."""
    if partial is None:
        return
    evidence.add("egress/capture.partial.pcapng", partial.pcapng, PCAPNG_MEDIA_TYPE)
    evidence.add("egress/capture-stats.partial.json", json.dumps(
        {**_capture_stats(partial, window, activity, sinkhole, workload_info), "error": why},
        indent=1, default=str).encode(), "application/json")


def _collect_live(board: Any, window: float, activity: str, sinkhole: bool,
                  evidence: EvidenceStore) -> Observation:
    port = board.interface("net")  # NetworkPort; CaptureUnavailable when a simulator could not make it
    if activity == "workload" and not port.has_workload:
        raise ProbeError(
            f"egress: activity: workload, but board {board.name!r} names no workload: add "
            f"interfaces.net.workload: {{command: [program, args...]}} to {board.config.path} "
            f"(a command that makes the board work during the window), or use activity: idle")
    point = port.capture_point(sinkhole)
    workload = None
    workload_info = None
    workload_refs = []
    try:
        try:
            with point:
                if activity == "workload":
                    workload = port.start_workload()
                _run_window(point, window)
                if workload is not None:
                    workload_info = workload.finish()
                result = point.stop()
        except CaptureUnavailable as exc:
            _keep_partial(evidence, exc.partial, str(exc), window, activity, sinkhole, workload_info)
            raise
        except BaseException as exc:  # interrupted (Ctrl-C, SIGTERM): the frames so far are evidence too
            _keep_partial(evidence, point.interrupted_result, f"window interrupted: {type(exc).__name__}",
                          window, activity, sinkhole, workload_info)
            raise
        finally:
            if workload is not None:
                out = workload.output()
                if out:
                    workload_refs.append(evidence.add("egress/workload.log", out, "text/plain; charset=utf-8"))
    finally:
        if workload is not None:
            workload.cleanup()
    cap_ref = evidence.add("egress/capture.pcapng", result.pcapng, PCAPNG_MEDIA_TYPE)
    stats = _capture_stats(result, window, activity, sinkhole, workload_info)
    stats_doc = {**stats, "sinkhole_log": list(result.sinkhole_events)}
    stats_ref = evidence.add("egress/capture-stats.json",
                             json.dumps(stats_doc, indent=1, default=str).encode(), "application/json")
    record, flows_ref = _store_analysis(evidence, result.pcapng, "the live capture")
    facts = {"source": "live", "capture": {**stats, "sha256": cap_ref.sha256}, "analysis": record}
    return Observation("egress", facts, (cap_ref, stats_ref, flows_ref, *workload_refs))


def progress_detail(stats: dict[str, int]) -> str:
    """How an open window stands, after its time: frames and losses so far, pcapng size and cap."""
    return (f"{stats['frames']} frames, {stats['dropped']} lost; capture {stats['bytes'] / (1 << 20):.1f} of "
            f"{stats['max_bytes'] / (1 << 20):.0f} MiB")


def _run_window(point: Any, window: float) -> None:
    activity = f"egress window on {point.interface}"
    end = time.monotonic() + window
    try:
        while (left := end - time.monotonic()) > 0:
            point.run_for(min(_PROGRESS_EVERY_S, left))
            stats = point.progress()
            progress.update(activity, done=min(window, stats["elapsed_ns"] / 1e9), total=window, unit="s",
                            detail=progress_detail(stats))
    finally:
        progress.done(activity)


def collect(board: Any, params: dict[str, Any], evidence: EvidenceStore) -> Observation:
    window, activity, sinkhole, capture = _params(params)
    if capture is not None:
        return _collect_offline(board, capture, evidence)
    problem = privilege_problem()
    if problem:  # only a lack of privilege is "not applicable here"; anything else is ERROR
        return Observation("egress", {"source": "live", "skipped": problem})
    missing_tool = tool_problem()
    if missing_tool:
        raise ProbeError(f"egress capture cannot run: {missing_tool}")
    return _collect_live(board, window, activity, sinkhole, evidence)


# ---------------------------------------------------------------------------------------------
# The check


def _when(v: Any) -> str:
    return v.first_seen if v.first_seen == v.last_seen else f"{v.first_seen} .. {v.last_seen}"


def _violation_reason(v: Any) -> str:
    unnamed = [n for n in v.names if n not in v.why]  # names the why does not already give
    names = f" names: {', '.join(unnamed[:5])}{' ...' if len(unnamed) > 5 else ''};" if unnamed else ""
    return (f"egress not allowed: {v.why};{names} {v.packets} packet{'s' if v.packets != 1 else ''}, "
            f"{v.bytes} bytes, {_when(v)}")


def _count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def coverage(facts: dict[str, Any], frames: int) -> str:
    """What a verdict rests on, in words: the live window (length, start and end, interface,
    promiscuous or not, frames, activity) or the recording (path, sha256, frames)."""
    capture = facts.get("capture") or {}
    if facts.get("source") != "live":
        return (f"the recording {capture.get('path')} (sha256 {str(capture.get('sha256'))[:16]}..., "
                f"{frames} frame{'s' if frames != 1 else ''})")
    mode = "promiscuous" if capture.get("promiscuous") is True else "NOT promiscuous"
    duration = capture.get("duration_ms")
    length = f"{duration / 1000:.1f} s" if _count(duration) else "unknown-length"
    return (f"the {length} window {capture.get('started')} to {capture.get('ended')} "
            f"({mode} capture on {capture.get('interface')}, {frames} frame{'s' if frames != 1 else ''}, "
            f"{capture.get('packets_in')} from the board's side, activity {capture.get('activity')})")


def flows_within_policy(observation: Observation, expected: Any) -> CheckResult:
    """Every flow the board started during the window is allowed by the egress policy.

    expected: the policy mapping (reference `egress.policy`): {allow: [rules], ...}; see
    harness.formats.egress_policy. An empty or missing allow list allows nothing.
    """
    ev = observation.evidence
    facts = observation.facts
    if facts.get("skipped"):
        return CheckResult.skipped(f"egress not captured: {facts['skipped']}", evidence=ev)
    if expected is None:  # an absent policy is not "allow nothing": the step names none, so it decides nothing
        return CheckResult.error("no egress policy: give the step `reference: egress.policy` (or an inline "
                                 "`expect: {allow: [...]}`; an empty allow list allows nothing)", evidence=ev)
    if not isinstance(expected, dict):
        return CheckResult.error(f"the egress policy must be a mapping ({{allow: [...]}}), got {expected!r}",
                                 evidence=ev)
    try:
        policy = load_policy(expected)
    except PolicyError as exc:
        return CheckResult.error(f"egress policy invalid: {exc}", evidence=ev)
    try:
        analysis = flow_analysis_from_record(facts["analysis"])
    except (KeyError, ValueError) as exc:
        return CheckResult.error(f"no usable flow analysis in the observation: {exc}", evidence=ev)
    capture = facts.get("capture") or {}
    macs = set(analysis.capture_macs)
    if capture.get("capture_mac"):
        macs.add(capture["capture_mac"])
    forged = capture.get("forged_in", 0)
    # A board that forged the capture side's MAC gets nothing left out of the judgement.
    judgement = judge(policy, analysis, exclude_macs=() if forged else tuple(sorted(macs)))
    errors = list(judgement.errors)
    if facts.get("source") == "live":
        if capture.get("complete") is not True:
            iface = capture.get("interface_dropped")
            by_iface = ("its receive counters unreadable" if iface == -1 else
                        f"{iface} dropped by the interface before any socket saw them")
            errors.insert(0, f"capture incomplete: {capture.get('dropped')} frames lost "
                             f"({capture.get('kernel_dropped')} dropped by the kernel, "
                             f"{capture.get('not_written')} beyond the size cap, {by_iface}); "
                             f"absence of a flow proves nothing")
        if capture.get("promiscuous") is not True:
            errors.append(f"the capture on {capture.get('interface')} was not confirmed promiscuous: it saw "
                          f"only frames addressed to the capture interface and broadcasts, not what the "
                          f"board sends to other hosts")
        if not (_count(capture.get("packets_in")) and capture["packets_in"] > 0):
            errors.append(f"no frame arrived from the board's side during the window "
                          f"({capture.get('packets_in')!r}): silence cannot be told from an unplugged cable")
        duration, asked = capture.get("duration_ms"), capture.get("window_ms")
        if not (_count(duration) and _count(asked) and duration >= asked):
            errors.append(f"the capture lasted {capture.get('duration_ms')} ms, less than the "
                          f"{capture.get('window_ms')} ms window the step asks for")
        workload = capture.get("workload") or {}
        if workload.get("failed"):
            errors.append(f"the workload {workload.get('command')} {workload.get('status')}: the board "
                          f"was not exercised as the step asks (see egress/workload.log)")
    errors = list(dict.fromkeys(errors))
    basis = coverage(facts, analysis.packets)
    findings = []
    if forged:
        findings.append(f"{forged} frame{'s' if forged != 1 else ''} from the board's side carried the capture "
                        f"interface's own MAC {capture.get('capture_mac')} as source: the board impersonates "
                        f"the harness side (forged source address)")
    if judgement.violations or findings:
        reasons = findings + [_violation_reason(v) for v in judgement.violations[:_MAX_REASONS]]
        if len(judgement.violations) > _MAX_REASONS:
            reasons.append(f"... and {len(judgement.violations) - _MAX_REASONS} more violations "
                           f"(see egress/flows.json)")
        reasons += [f"also: {e}" for e in errors]
        return CheckResult.failed(*reasons, f"found in {basis}", evidence=ev)
    if errors:
        return CheckResult.error(*errors, f"undecided on {basis}", evidence=ev)
    return CheckResult.passed(
        f"every flow the board started in {basis} is allowed by the egress policy: "
        f"{judgement.judged_flows} flow{'s' if judgement.judged_flows != 1 else ''} judged, "
        f"{judgement.allowed_flows} allowed by a rule, {judgement.housekeeping_flows} link-local housekeeping; "
        f"none lost or undecoded; {judgement.excluded_flows} flow(s) of the capture side not judged", evidence=ev)


CHECKS = {"flows_within_policy": flows_within_policy}
