"""console_audit — does the debug console accept only the product's documented commands, and
did the board boot the way a production board must?

What: on the board's debug console (the `serial` interface) it enumerates the commands the
console accepts: the names `help` lists, and the answer to each name of `probe_commands` that
`help` does not list (remote-control, remote-disable, debug-unlock, factory and shell names
that vendors leave in). Each name is sent bare — no arguments — with a bounded wait
(`command_timeout_s`, at most `command_max_bytes` of output). To tell "accepted" from
"unknown" on any console (U-Boot, BusyBox, a BMC shell), it first sends a random name no board
has (`attestlab_nx_<hex>`) and keeps the answer: a probed name whose answer, with its own name
in place of the random one and asynchronous log lines (`async_line_regex`) left out, differs
from that is a command the board accepts. A name that does not return to the prompt in time,
or floods, is interrupted with Ctrl-C, the prompt is brought back with Enter, and probing goes
on; what it printed is its answer. If no prompt comes back, probing stops (the names left are
listed). It also scans the boot log — what the board printed up to its first
prompt, captured once when the console was opened (see docs/serial.md) — for the regexes of
`boot_log_forbidden` (debug mode enabled, signature check skipped, ...).

Why: an undocumented command that answers is an unreviewed control path: remote disable or
remote control of the GPU, a debug unlock that opens JTAG or reads secrets, a root shell. A
boot log that says the signature check was skipped or debug mode is on means the board is not
running in its production security state, whatever its firmware digests say.

Evidence: the console transcript of the audit (`serial/console_audit-transcript.jsonl`, every
byte both ways with timestamps), the boot log as clean text (`serial/boot-log.txt`) and the raw
bytes it came from (`serial/boot-transcript.jsonl`). Facts: the `help` answer and the names it
lists, the unknown-command answer, every probed name's answer (with its transcript line) and
the boot-log lines that match a forbidden pattern.

Caution: probing sends each name as a command. A board whose hidden command acts when given no
arguments will act on it (that is the finding); run the audit on boards that may be disturbed.

Checks:
- commands_documented (expected: the reference's `console.documented_commands`): FAILs for each
  name `help` lists that is not documented, and each undocumented probed name that answers,
  quoting the console lines of its answer and the transcript line. ERRORs when the console does
  not answer unknown names in a recognisable way (the made-up name hangs, or gets no answer at
  all), no names can be read from `help`, an undocumented name gave no answer and did not return
  to the prompt (undecided), names were left unprobed, or the documented list is missing.
- boot_log_clean (no expectation; the patterns are the step's `boot_log_forbidden`): FAILs for
  each boot-log line matching a pattern, with its line number in `serial/boot-log.txt`. ERRORs
  when no boot log was captured (the board was already up; see the `boot_log` setting) or the
  step lists no patterns.
Errors when (both): the console cannot be opened or is lost, or a parameter is malformed.
"""

from __future__ import annotations

import re
import secrets
from typing import Any

from harness.evidence import EvidenceStore
from harness.interfaces.serial import TRANSCRIPT_MEDIA_TYPE, ConsoleError
from harness.verdict import CheckResult, Observation, ProbeError
from probes._console import ConsoleSession

PARAMS: dict[str, Any] = {
    "help_command": "help",
    "probe_commands": [],          # bare names to try (never arguments)
    "boot_log_forbidden": [],      # regexes; a boot-log line matching one FAILs boot_log_clean
    "command_timeout_s": 3.0,      # per probed name, until the prompt is back
    "command_max_bytes": 256 << 10,  # per probed name: output beyond this is a flood; interrupted
    # Lines that are asynchronous log messages, not answers (printk-style "[  12.345678] ..."):
    # left out when answers are compared, so a log line arriving mid-answer is not a finding.
    "async_line_regex": r"^\s*\[\s*\d+\.\d+\]",
}

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_INDENTED_NAME = re.compile(r"^[ \t]+([A-Za-z0-9][A-Za-z0-9_.-]{0,63})(?:\s|$)")
_TABLE_NAME = re.compile(r"^([A-Za-z0-9][A-Za-z0-9_.-]{0,63})\s+-\s")  # U-Boot: "name    - what it does"
_QUOTE_LINES = 6


def _params(params: dict[str, Any]) -> tuple[str, list[str], list[tuple[str, re.Pattern]], float, int, str]:
    help_command = params.get("help_command")
    if not isinstance(help_command, str) or not _NAME.match(help_command):
        raise ProbeError(f"console_audit: help_command must be a bare command name, got {help_command!r}")
    names = params.get("probe_commands")
    if isinstance(names, str) or not isinstance(names, list):
        raise ProbeError(f"console_audit: probe_commands must be a list of command names, got {names!r}")
    for name in names:
        if not isinstance(name, str) or not _NAME.match(name):
            raise ProbeError(f"console_audit: probe_commands: {name!r} is not a bare command name (letters, digits, "
                             f"_ . -; no spaces or arguments: probing sends names only)")
    patterns = params.get("boot_log_forbidden")
    if isinstance(patterns, str) or not isinstance(patterns, list):
        raise ProbeError(f"console_audit: boot_log_forbidden must be a list of regexes, got {patterns!r}")
    compiled = []
    for i, pattern in enumerate(patterns):
        try:
            compiled.append((str(pattern), re.compile(str(pattern))))
        except re.error as exc:
            raise ProbeError(f"console_audit: boot_log_forbidden[{i}] {pattern!r} is not a regex: {exc}") from None
    timeout = params.get("command_timeout_s")
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not 0 < timeout <= 600:
        raise ProbeError(f"console_audit: command_timeout_s must be seconds in (0, 600], got {timeout!r}")
    budget = params.get("command_max_bytes")
    if isinstance(budget, bool) or not isinstance(budget, int) or budget <= 0:
        raise ProbeError(f"console_audit: command_max_bytes must be a positive number of bytes, got {budget!r}")
    async_lines = params.get("async_line_regex")
    try:
        re.compile(str(async_lines))
    except re.error as exc:
        raise ProbeError(f"console_audit: async_line_regex {async_lines!r} is not a regex: {exc}") from None
    return help_command, list(dict.fromkeys(names)), compiled, float(timeout), budget, str(async_lines)


def help_names(text: str) -> list[str]:
    """Command names in a `help` answer.

    A name is the first word of an indented line (``Available commands:`` then ``  name`` or
    ``  name  what it does``), the word before `` - `` of a U-Boot-style line
    (``base    - print or set address offset``), or each item of an indented comma-separated
    list (BusyBox). Headings (lines ending in ``:``) and prose (unindented lines) are not names.
    """
    names: list[str] = []
    for line in text.splitlines():
        body = line.strip()
        if not body or body.endswith(":"):
            continue
        if line[:1] in " \t" and "," in body:
            candidates = [part.strip() for part in body.split(",")]
        else:
            m = _INDENTED_NAME.match(line) or _TABLE_NAME.match(line)
            candidates = [m.group(1)] if m else []
        names += [c for c in candidates if _NAME.match(c) and c not in names]
    return names


def _ask(session: ConsoleSession, name: str, timeout: float, budget: int) -> dict[str, Any]:
    """Send one bare name; its answer, or what it said before it was interrupted."""
    console = session.console
    chunk = len(console.transcript)
    entry: dict[str, Any] = {"name": name, "where": session.where(chunk)}
    try:
        entry["output"] = console.command(name, timeout=timeout, max_bytes=budget)
        entry["returned"] = True
        return entry
    except ConsoleError as exc:
        if exc.details.get("reason") not in ("timeout", "budget"):
            raise
        entry["returned"] = False
        entry["stopped"] = ("did not return to the prompt within "
                            f"{timeout:g} s" if exc.details["reason"] == "timeout"
                            else f"printed more than {budget} bytes without returning to the prompt")
        text = str(exc.details.get("text") or "")
        # The echo of the name is part of what arrived; it is not the board's answer.
        entry["output"] = re.sub(r"^\s*" + re.escape(name) + r"[ \t]*\n", "", text, count=1)
    console.interrupt()
    try:
        console.sync(timeout=max(timeout, 2.0))
    except ConsoleError as lost:
        # What the name did is the finding; the console is of no further use for probing.
        entry["lost"] = f"no prompt after Ctrl-C and Enter: {lost}"
    return entry


def collect(board: Any, params: dict[str, Any], evidence: EvidenceStore) -> Observation:
    help_command, names, patterns, timeout, budget, async_lines = _params(params)
    session = ConsoleSession(board, evidence, "console_audit")
    console = session.console
    refs = []
    # The boot log, captured once when the board's console was opened.
    boot: dict[str, Any] = {"captured": console.boot_log is not None, "mode": console.boot_log_mode,
                            "problem": console.boot_log_problem}
    start, stop = console.boot_span
    if stop > start:
        refs.append(evidence.add("serial/boot-transcript.jsonl", console.transcript.slice(start, stop).to_jsonl(),
                                 TRANSCRIPT_MEDIA_TYPE))
        boot["transcript"] = refs[-1].name
    if console.boot_log is not None:
        text = console.boot_log
        refs.append(evidence.add("serial/boot-log.txt", text.encode("utf-8"), "text/plain; charset=utf-8"))
        lines = text.splitlines()
        boot.update(evidence=refs[-1].name, lines=len(lines), sha256=refs[-1].sha256, matches=[
            {"line": i, "pattern": source, "text": line.strip()}
            for i, line in enumerate(lines, start=1) for source, rx in patterns if rx.search(line)])
    try:
        try:
            console.sync()
            chunk = len(console.transcript)
            help_text = console.command(help_command)
            help_where = session.where(chunk)
            listed = help_names(help_text)
            canary = _ask(session, f"attestlab_nx_{secrets.token_hex(4)}", timeout, budget)
            if "lost" in canary:
                raise session.failed(ConsoleError(canary["lost"]), f"sending the made-up name {canary['name']!r}")
            probed: list[dict[str, Any]] = []
            not_probed = [name for name in names if name not in listed]
            while not_probed:
                probed.append(_ask(session, not_probed.pop(0), timeout, budget))
                if "lost" in probed[-1]:
                    break
        except ConsoleError as exc:
            raise session.failed(exc, "auditing the console's commands") from None
    finally:
        transcript = session.store()
    facts = {
        "console": console.url,
        "help": {"command": help_command, "output": help_text, "listed": listed, "where": help_where},
        "unknown": canary,
        "probed": probed,
        "not_probed": not_probed,  # left when a probed name took the console away
        "skipped": [name for name in names if name in listed],  # listed by help: judged from the listing
        "async_line_regex": async_lines,
        "boot_log": boot,
        "boot_log_forbidden": [source for source, _ in patterns],
        "transcript": transcript.name,
    }
    return Observation("console_audit", facts, (transcript, *refs))


# --- checks ---


def _normal(text: str, name: str, async_lines: str) -> str:
    """An answer for comparison: asynchronous log lines dropped, the command's own name (as a
    whole word) replaced by ``{name}``, whitespace folded."""
    skip = re.compile(async_lines)
    kept = [line for line in text.splitlines() if not skip.search(line)]
    word = re.compile(r"(?<![A-Za-z0-9_.-])" + re.escape(name) + r"(?![A-Za-z0-9_.-])")
    return " ".join(word.sub("{name}", "\n".join(kept)).split())


def _quote(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    shown = " | ".join(lines[:_QUOTE_LINES])
    if len(lines) > _QUOTE_LINES:
        shown += f" | ... ({len(lines) - _QUOTE_LINES} more lines)"
    return f"'{shown[:600]}'" if shown else "(nothing)"


def commands_documented(observation: Observation, expected: Any) -> CheckResult:
    """No undocumented command is listed by help or answers when probed."""
    ev = observation.evidence
    if (isinstance(expected, str) or not isinstance(expected, list) or not expected
            or not all(isinstance(c, str) and c for c in expected)):
        return CheckResult.error(f"reference console.documented_commands must be a non-empty list of command "
                                 f"names, got {expected!r}", evidence=ev)
    documented = set(expected)
    facts = observation.facts
    findings, undecided = [], []
    helped = facts["help"]
    for name in helped["listed"]:
        if name not in documented:
            findings.append(f"undocumented command {name!r} is listed by {helped['command']!r} (evidence "
                            f"{helped['where']})")
    if not helped["listed"]:
        return CheckResult.error(
            *findings, f"no command names could be read from the answer to {helped['command']!r}: "
            f"{_quote(helped['output'])} (evidence {helped['where']})", evidence=ev)
    unknown = facts["unknown"]
    if not unknown["returned"]:
        return CheckResult.error(
            *findings,
            f"cannot tell accepted from unknown commands: the made-up name {unknown['name']!r} {unknown['stopped']} "
            f"(it said {_quote(unknown['output'])}; evidence {unknown['where']})", evidence=ev)
    async_lines = facts["async_line_regex"]
    baseline = _normal(unknown["output"], unknown["name"], async_lines)
    quiet = []
    for entry in facts["probed"]:
        name = entry["name"]
        said = _normal(entry["output"], name, async_lines)
        if name in documented:
            continue  # the plan probed a documented name: nothing to judge
        if entry["returned"] and said == baseline:
            quiet.append(name)
            continue
        if not entry["returned"] and not said:
            undecided.append(f"undocumented name {name!r} gave no answer and {entry['stopped']} (interrupted with "
                             f"Ctrl-C): whether the board accepts it is undecided (evidence {entry['where']})")
            continue
        tail = "" if entry["returned"] else f", and {entry['stopped']} (interrupted with Ctrl-C)"
        if "lost" in entry:
            tail += "; the console gave no prompt after that, so probing stopped"
        findings.append(f"undocumented command {name!r} answers: {_quote(entry['output'])}{tail} (evidence "
                        f"{entry['where']}; an unknown command answers {_quote(unknown['output'])})")
    if facts["not_probed"]:
        undecided.append(f"{len(facts['not_probed'])} names were not probed because the console was lost after "
                         f"{facts['probed'][-1]['name']!r}: {', '.join(facts['not_probed'])}")
    if findings:
        return CheckResult.failed(*findings, *undecided, evidence=ev)
    if undecided:
        return CheckResult.error(*undecided, evidence=ev)
    if not facts["probed"]:  # nothing undocumented was tried: the board's own help text decides nothing
        return CheckResult.error(
            "no undocumented command name was probed (the step's probe_commands is empty or all of its names "
            "are listed by help); give probe_commands names the product does not document", evidence=ev)
    if facts["probed"] and not baseline:
        return CheckResult.error(
            f"cannot tell accepted from unknown commands: the console answers an unknown name with nothing "
            f"(evidence {unknown['where']}), so a probed command that acts silently would go unseen", evidence=ev)
    skipped = f"; {len(facts['skipped'])} probe names are listed by help and judged from the listing" \
        if facts["skipped"] else ""
    return CheckResult.passed(
        f"{helped['command']!r} lists {len(helped['listed'])} commands, all documented "
        f"({', '.join(helped['listed']) or 'none'}); {len(quiet)} undocumented names probed, each answered like "
        f"an unknown command ({_quote(unknown['output'])}){skipped}", evidence=ev)


def boot_log_clean(observation: Observation, expected: Any) -> CheckResult:
    """The boot log has no line matching a forbidden pattern of the step."""
    ev = observation.evidence
    if expected is not None:
        return CheckResult.error("boot_log_clean takes its patterns from the step's params.boot_log_forbidden, not "
                                 f"from an expectation (got {expected!r})", evidence=ev)
    facts = observation.facts
    patterns = facts["boot_log_forbidden"]
    if not patterns:
        return CheckResult.error("no boot_log_forbidden patterns in the step's params: nothing to scan the boot log "
                                 "for", evidence=ev)
    boot = facts["boot_log"]
    if not boot["captured"]:
        return CheckResult.error(boot["problem"] or "no boot log was captured", evidence=ev)
    if boot["matches"]:
        return CheckResult.failed(*[f"boot log line {m['line']} matches /{m['pattern']}/: '{m['text'][:300]}' "
                                    f"(evidence {boot['evidence']} line {m['line']})" for m in boot["matches"]],
                                  evidence=ev)
    if boot["lines"] == 0:
        return CheckResult.error(f"the boot log is empty (the board printed nothing before its first prompt; "
                                 f"evidence {boot.get('transcript', boot['evidence'])}): there is nothing to judge",
                                 evidence=ev)
    return CheckResult.passed(f"boot log ({boot['lines']} lines, evidence {boot['evidence']}) matches none of the "
                              f"{len(patterns)} forbidden patterns", evidence=ev)


CHECKS = {
    "commands_documented": commands_documented,
    "boot_log_clean": boot_log_clean,
}
