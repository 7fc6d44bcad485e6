"""console_audit — does the debug console accept only the product's documented commands, and
did the board boot the way a production board must?

What: on the board's debug console (the `serial` interface) it enumerates the commands the
console accepts: the names `help` lists, and the answer to every name it tries that `help` does
not list. The names tried are the step's `probe_commands` (remote-control, remote-disable,
debug-unlock, factory and shell names that vendors leave in), each also in lower case, UPPER
case and Capitalised words with ``_``, ``-``, ``.`` or nothing between its words
(`name_variants`), and the command-like strings of the firmware images already read on this
console (`firmware_names`: NUL-terminated strings of 3-32 letters, digits and ``_ . -``, the
shape of a console's command table; the board's own firmware is the best list of what its
console might accept). Each name is sent bare — no arguments — with a bounded wait
(`command_timeout_s`, at most `command_max_bytes` of output). To tell "accepted" from
"unknown" on any console (U-Boot, BusyBox, a BMC shell), it first sends two random names no
board has (`attestlab_nx_<hex>`); their answer, with each one's own name replaced by
``{name}``, is the unknown-command answer, and it must say that the name is unknown (quote the
name, or say unknown / not found / invalid / error / ``?``). Answers are compared byte for byte
(probes/_console_answers.py): only the echoed name is replaced, nothing is folded or dropped.
A name whose answer differs in any byte is a command the board accepts, unless the difference
is proven unrelated: the name is then sent again after a fresh random name, and a line that a
random name's answer also had, an asynchronous log line (`async_line_regex`) that does not name
the command and does not come back, or line noise that does not come back, is not the name's
doing. A name that does not return to the prompt in time, or floods, is interrupted with
Ctrl-C, the prompt is brought back with Enter, and probing goes on; what it printed is its
answer. If no prompt comes back, probing stops (the names left are listed). Nothing the board
prints goes unjudged: text that arrives after a command has returned (before the next is sent)
is part of that command's answer, and text that arrives after the boot log's prompt, or after
another probe's command, is judged with the boot log.

It also scans the boot log — what the board printed up to its first settled prompt, captured
once when the console was opened (see docs/serial.md) — and that unasked text for the regexes
of `boot_log_forbidden` (debug mode enabled, signature check skipped, ...); each line is
matched as written and with its runs of whitespace folded into one space.

Why: an undocumented command that answers is an unreviewed control path: remote disable or
remote control of the GPU, a debug unlock that opens JTAG or reads secrets, a root shell. A
boot log that says the signature check was skipped or debug mode is on means the board is not
running in its production security state, whatever its firmware digests say.

Evidence: the console transcript of the audit (`serial/console_audit-transcript.jsonl`, every
byte both ways with timestamps), the boot log as clean text (`serial/boot-log.txt`, the unasked
text appended after a marker line) and the raw bytes it came from
(`serial/boot-transcript.jsonl`; `serial/unasked-<first>-<last>-transcript.jsonl` for unasked
text outside the audit's transcript). Facts: the `help` answer and the names it lists, every
answer to a random name, every name tried with where it came from (plan, variant, firmware
region and offset) and each of its answers (the exact bytes, escaped, with its transcript
line), and the boot-log lines that match a forbidden pattern.

Caution: probing sends each name as a command. A board whose hidden command acts when given no
arguments will act on it (that is the finding); run the audit on boards that may be disturbed.
With level1's 21 names the audit sends about 130 names (a few tenths of a second each, the
console's settle time).

Names from firmware: taken only from images a firmware_dump step already read on this console
(level1 reads them first). When none was read the audit still decides on the other names, and
its PASS says "no firmware image was read: names from firmware not tried": the plan's names
are a complete test on their own, the firmware's names an extra source. More command-like
strings than `firmware_names_max` is ERROR (names left untried), never a silent cut.

Checks:
- commands_documented (expected: the reference's `console.documented_commands`): FAILs for each
  name `help` lists that is not documented, and each undocumented name whose answer differs
  from the unknown-command answer, quoting its answer, the differing bytes (escaped) and the
  transcript line. ERRORs (only when nothing FAILs: a finding is never hidden behind an ERROR)
  when the console does not answer unknown names in a recognisable way (a random name hangs,
  gets no answer, or an answer that does not say the name is unknown, like ``OK``), no names
  can be read from `help`, an undocumented name gave no answer and did not return to the prompt
  (undecided), names were left untried, no undocumented name was tried, or the documented list
  is missing.
- boot_log_clean (no expectation; the patterns are the step's `boot_log_forbidden`): FAILs for
  each boot-log or unasked line matching a pattern, with its line number in
  `serial/boot-log.txt`. ERRORs when no boot log was captured (the board was already up; see
  the `boot_log` setting), the boot log has no line with text, or the step lists no patterns.
Errors when (both): the console cannot be opened or is lost, or a parameter is malformed.
"""

from __future__ import annotations

import bisect
import re
import secrets
from typing import Any

from harness.evidence import EvidenceStore
from harness.interfaces.serial import (
    TRANSCRIPT_MEDIA_TYPE,
    ConsoleError,
    UnreadText,
    clean_text,
    escape_bytes,
    unescape_text,
)
from harness.verdict import CheckResult, Observation, ProbeError
from probes._console import ConsoleSession
from probes._console_answers import (
    Line,
    baseline,
    boot_log_lines,
    compare,
    firmware_names,
    name_variants,
    placeholder,
    says_unknown,
    split_lines,
)

PARAMS: dict[str, Any] = {
    "help_command": "help",
    "probe_commands": [],          # bare names to try (never arguments)
    "name_variants": True,         # also each name in lower, UPPER, Capitalised case, with _ - . or nothing
    "firmware_names": True,        # also the command-like strings of firmware images read on this console
    "firmware_names_max": 64,      # more than this many firmware names: ERROR (names left untried)
    "boot_log_forbidden": [],      # regexes; a boot-log line matching one FAILs boot_log_clean
    "command_timeout_s": 3.0,      # per probed name, until the prompt is back
    "command_max_bytes": 256 << 10,  # per probed name: output beyond this is a flood; interrupted
    "final_quiet_s": 1.0,          # the console must stay silent this long before the audit ends
    # Lines that are asynchronous log messages (printk-style "[  12.345678] ..."): a differing line
    # of this shape that does not name the command and does not come back when the name is sent
    # again is not the name's answer (it is never simply dropped).
    "async_line_regex": r"^\s*\[\s*\d+\.\d+\]",
}

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_INDENTED_NAME = re.compile(r"^[ \t]+([A-Za-z0-9][A-Za-z0-9_.-]{0,63})(?:\s|$)")
_TABLE_NAME = re.compile(r"^([A-Za-z0-9][A-Za-z0-9_.-]{0,63})\s+-\s")  # U-Boot: "name    - what it does"
_QUOTE_LINES = 6
_MAX_NAMES = 512        # the plan's names with their variants
_CANARIES = 2           # random names asked first: their agreement is the unknown-command answer
_LATE_MARK = "--- printed unasked after {after} (console transcript chunks {first}-{last}) ---"


def _params(params: dict[str, Any]) -> dict[str, Any]:
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
    for key in ("name_variants", "firmware_names"):
        if not isinstance(params.get(key), bool):
            raise ProbeError(f"console_audit: {key} must be true or false, got {params.get(key)!r}")
    fw_max = params.get("firmware_names_max")
    if isinstance(fw_max, bool) or not isinstance(fw_max, int) or fw_max < 0:
        raise ProbeError(f"console_audit: firmware_names_max must be a number of names >= 0, got {fw_max!r}")
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
    final_quiet = params.get("final_quiet_s")
    if isinstance(final_quiet, bool) or not isinstance(final_quiet, (int, float)) or not 0 < final_quiet <= 60:
        raise ProbeError(f"console_audit: final_quiet_s must be seconds in (0, 60], got {final_quiet!r}")
    async_lines = params.get("async_line_regex")
    try:
        re.compile(str(async_lines))
    except re.error as exc:
        raise ProbeError(f"console_audit: async_line_regex {async_lines!r} is not a regex: {exc}") from None
    tried: dict[str, str] = {}
    for name in names:
        tried.setdefault(name, "plan")
        for variant in name_variants(name) if params["name_variants"] else []:
            tried.setdefault(variant, f"variant of {name}")
    if len(tried) > _MAX_NAMES:
        raise ProbeError(f"console_audit: probe_commands and their variants make {len(tried)} names, more than "
                         f"{_MAX_NAMES}: give fewer names")
    return {"help_command": help_command, "names": tried, "patterns": compiled, "timeout": float(timeout),
            "budget": budget, "final_quiet": float(final_quiet), "async_lines": str(async_lines), "firmware_names": params["firmware_names"],
            "firmware_names_max": fw_max}


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


class _Audit:
    """The asking: every name sent, its exact answer bytes, and the text that came after it."""

    def __init__(self, session: ConsoleSession, timeout: float, budget: int, async_lines: str) -> None:
        self.session = session
        self.console = session.console
        self.timeout, self.budget = timeout, budget
        self.async_line = re.compile(async_lines)
        prompt = self.console.config.get("prompt")
        self.prompt = re.compile(re.escape(str(prompt)) if prompt is not None
                                 else f"(?:{self.console.config.get('prompt_regex') or '(?!)'})")
        self.asks: list[dict[str, Any]] = []       # in the order sent
        self.starts: list[int] = []                # transcript index before each ask was typed
        self.ends: list[int] = []                  # transcript index after each ask's answer
        self.canaries: list[dict[str, Any]] = []
        self.unasked: list[UnreadText] = []        # unread text that followed no ask of the audit
        self.unread: list[UnreadText] = []         # every piece of unread text: the boot-log check scans it all

    def _is_prompt(self, raw: bytes) -> bool:
        text = clean_text(raw)
        m = self.prompt.match(text)
        return m is not None and not text[m.end():].strip()

    def ask(self, name: str, role: str) -> dict[str, Any]:
        """Send one bare name; its answer, or what it said before it was interrupted."""
        console = self.console
        sent = len(console.transcript)
        entry: dict[str, Any] = {"name": name, "role": role, "where": self.session.where(sent), "late": []}
        try:
            entry["output"] = console.command(name, timeout=self.timeout, max_bytes=self.budget)
            entry["returned"] = True
        except ConsoleError as exc:
            if exc.details.get("reason") not in ("timeout", "budget"):
                raise
            entry["returned"] = False
            entry["stopped"] = (f"did not return to the prompt within {self.timeout:g} s"
                                if exc.details["reason"] == "timeout"
                                else f"printed more than {self.budget} bytes without returning to the prompt")
            text = str(exc.details.get("text") or "")
            # The echo of the name is part of what arrived; it is not the board's answer.
            entry["output"] = re.sub(r"^\s*" + re.escape(name) + r"[ \t]*\n", "", text, count=1)
        end = len(console.transcript)
        rx = b"".join(c.data for c in console.transcript.chunks[sent:end] if c.direction == "rx")
        echo = re.search(rb"(?:^|\n)[ \t]*" + re.escape(name.encode()) + rb"[ \t]*\r?\n", rx)
        answer = rx[echo.end():] if echo else rx
        cut = answer.rfind(b"\n") + 1
        if entry["returned"] and self._is_prompt(answer[cut:]):
            answer = answer[:cut]
        entry["raw"] = escape_bytes(answer)
        self.asks.append(entry)
        self.starts.append(sent)
        self.ends.append(end)
        if not entry["returned"]:
            console.interrupt()
            try:
                console.sync(timeout=max(self.timeout, 2.0))
            except ConsoleError as lost:
                # What the name did is the finding; the console is of no further use for probing.
                entry["lost"] = f"no prompt after Ctrl-C and Enter: {lost}"
        self.take_late()
        return entry

    def canary(self) -> dict[str, Any]:
        entry = self.ask(f"attestlab_nx_{secrets.token_hex(4)}", "unknown")
        self.canaries.append(entry)
        if "lost" in entry:
            raise self.session.failed(ConsoleError(entry["lost"]), f"sending the made-up name {entry['name']!r}")
        return entry

    def take_late(self) -> None:
        """Text that arrived while nobody was reading: the answer of the ask it followed."""
        for piece in self.console.take_unread():
            k = bisect.bisect_right(self.ends, piece.first_chunk) - 1
            j = k + 1  # the ask whose own span may hold the piece (text a failed or cut-short answer left)
            if j < len(self.asks) and self.starts[j] <= piece.first_chunk < self.ends[j] \
                    and piece.after == self.asks[j]["name"]:
                continue  # its bytes are in that ask's raw answer already (judged there, by both checks)
            self.unread.append(piece)
            if k < 0:
                self.unasked.append(piece)
                continue
            # A prompt or an empty line on its own says nothing; every other line is compared.
            lines = [line for line in piece.text.split("\n") if line.strip() and not self._is_prompt(line.encode())
                     and not (line.strip() == "^C" and not self.asks[k]["returned"])]  # the echo of our Ctrl-C
            self.asks[k]["late"].append({"text": "\n".join(lines), "after": piece.after,
                                         "where": self.session.where(piece.first_chunk)})

    def finish(self, quiet: float) -> None:
        """Wait for the console to stay silent `quiet` s, then for a fresh prompt, and take what
        it printed after the last answer (a line timed to come after the last name is judged too)."""
        self.console.wait_quiet(quiet, timeout=max(self.timeout, 4 * quiet))  # (kept as unread text)
        self.console.sync()  # what came before its prompt is kept as unread text too
        self.take_late()


def answer_bytes(entry: dict[str, Any]) -> bytes:
    """An answer's exact bytes, then the text that arrived after it (one line each)."""
    data = unescape_text(entry["raw"])
    for late in entry["late"]:
        if late["text"].strip():
            data += (b"" if not data or data.endswith(b"\n") else b"\n") + late["text"].encode("utf-8") + b"\n"
    return data


def after_prompt_text(data: bytes, prompt: re.Pattern) -> bytes:
    """`data` with the prompt taken off each line that has text after the prompt: what a board
    prints after its prompt (a late log line, the answer behind a fake prompt) is compared as
    the line it is (the raw bytes stay as they came)."""
    lines = data.split(b"\n")
    for k, line in enumerate(lines):
        text = clean_text(line)
        m = prompt.match(text)
        if not m or not text[m.end():].strip():
            continue
        head = text[:m.end()]
        cut = next((i for i in range(1, min(len(line), 4096) + 1) if clean_text(line[:i]) == head), None)
        if cut is not None:
            lines[k] = line[cut:]
    return b"\n".join(lines)


def answer_lines(entry: dict[str, Any], prompt: re.Pattern) -> tuple[Line, ...]:
    return split_lines(placeholder(after_prompt_text(answer_bytes(entry), prompt), entry["name"]))


def _unexplained(audit: _Audit, tried: dict[str, Any]) -> bool:
    asks = [answer_lines(a, audit.prompt) for a in tried["asks"]]
    canaries = [answer_lines(c, audit.prompt) for c in audit.canaries]
    return any(d.unrelated is None for d in compare(asks, canaries, tried["name"], audit.async_line))


def _review(audit: _Audit, tried_names: list[dict[str, Any]], *, finished: bool = False) -> None:
    """Send again, after a fresh random name, each name whose first answer differed (once its
    late text is in: another name has been sent since, or the audit's `finish` took it)."""
    for tried in tried_names:
        first = tried["asks"][0]
        if (tried.get("reviewed") or (first is audit.asks[-1] and not finished) or not first["returned"]
                or "lost" in first):
            continue
        tried["reviewed"] = True
        if _unexplained(audit, tried):
            audit.canary()
            tried["asks"].append(audit.ask(tried["name"], "again"))
            if "lost" in tried["asks"][-1]:
                return


def collect(board: Any, params: dict[str, Any], evidence: EvidenceStore) -> Observation:
    p = _params(params)
    session = ConsoleSession(board, evidence, "console_audit")
    console = session.console
    audit = _Audit(session, p["timeout"], p["budget"], p["async_lines"])
    refs = []
    tried_names: list[dict[str, Any]] = []
    not_probed: list[str] = []
    from_firmware: dict[str, Any] = {"read": None, "candidates": [], "untried": []}
    try:
        try:
            console.sync()
            audit.take_late()
            help_entry = audit.ask(p["help_command"], "help")
            if "lost" in help_entry or not help_entry["returned"]:
                raise session.failed(ConsoleError(help_entry.get("lost") or help_entry["stopped"]),
                                     f"asking {p['help_command']!r}")
            listed = help_names("\n".join([help_entry["output"], *(x["text"] for x in help_entry["late"])]))
            for _ in range(_CANARIES):
                audit.canary()
            queue = [(name, source) for name, source in p["names"].items() if name not in listed]
            if p["firmware_names"]:
                images = console.dumped_images()
                from_firmware["read"] = sorted(images)
                candidates = [c for c in firmware_names(images) if c["name"] not in listed
                              and c["name"] not in p["names"] and c["name"] != p["help_command"]]
                from_firmware["candidates"] = candidates[: p["firmware_names_max"]]
                from_firmware["untried"] = [c["name"] for c in candidates[p["firmware_names_max"]:]]
                queue += [(c["name"], f"firmware {c['region']} offset {c['offset']:#x}")
                          for c in from_firmware["candidates"]]
            lost = False
            for i, (name, source) in enumerate(queue):
                tried_names.append({"name": name, "source": source, "asks": [audit.ask(name, "probe")]})
                lost = "lost" in tried_names[-1]["asks"][-1]
                if not lost:
                    _review(audit, tried_names)
                    lost = "lost" in audit.asks[-1]
                if lost:
                    not_probed = [n for n, _ in queue[i + 1:]]
                    break
            while not lost:
                audit.finish(p["final_quiet"])
                count = len(audit.asks)
                _review(audit, tried_names, finished=True)
                if len(audit.asks) == count:
                    break
                lost = "lost" in audit.asks[-1]
        except ConsoleError as exc:
            raise session.failed(exc, "auditing the console's commands") from None
    finally:
        transcript = session.store()
        # The boot log and the unasked text are evidence also when the audit failed half way.
        boot = _boot_facts(console, session, audit.unread, p["patterns"], evidence, refs)
        boot["answer_matches"] = _answer_matches(audit.asks, p["patterns"])
    facts = {
        "console": console.url,
        "help": {"command": p["help_command"], "output": help_entry["output"], "late": help_entry["late"],
                 "listed": listed, "where": help_entry["where"]},
        "unknown": audit.canaries,
        "probed": tried_names,
        "not_probed": not_probed,  # left when a probed name took the console away
        "skipped": [name for name in p["names"] if name in listed],  # listed by help: judged from the listing
        "firmware_names": from_firmware,
        "async_line_regex": p["async_lines"],
        "prompt": audit.prompt.pattern,  # (clean text; taken off a line with text after it)
        "boot_log": boot,
        "boot_log_forbidden": [source for source, _ in p["patterns"]],
        "transcript": transcript.name,
    }
    return Observation("console_audit", facts, (transcript, *refs))


def _answer_matches(asks: list[dict[str, Any]], patterns: list) -> list[dict[str, Any]]:
    """Lines of the answers (late text included) that match a forbidden pattern, the name asked
    replaced by ``{name}``: a board's state is judged by all it prints, not only before its prompt
    (an asynchronous "debug mode: ENABLED" inside an answer is not the name's doing, but it is said)."""
    found = []
    for entry in asks:
        text = clean_text(placeholder(answer_bytes(entry), entry["name"]))
        for k, (line, folded) in enumerate(boot_log_lines(text), start=1):
            found += [{"name": entry["name"], "line": k, "pattern": source, "text": line.strip(), "where": entry["where"]}
                      for source, rx in patterns if rx.search(line) or rx.search(folded)]
    return found


def _boot_facts(console: Any, session: ConsoleSession, unasked: list[UnreadText], patterns: list,
                evidence: EvidenceStore, refs: list) -> dict[str, Any]:
    """The boot log and the text the board printed unasked, as evidence, with the forbidden lines."""
    boot: dict[str, Any] = {"captured": console.boot_log is not None, "mode": console.boot_log_mode,
                            "problem": console.boot_log_problem, "unasked": []}
    start, stop = console.boot_span
    if stop > start:
        refs.append(evidence.add("serial/boot-transcript.jsonl", console.transcript.slice(start, stop).to_jsonl(),
                                 TRANSCRIPT_MEDIA_TYPE))
        boot["transcript"] = refs[-1].name
    parts = [console.boot_log] if console.boot_log is not None else []
    lines_before = len((console.boot_log or "").splitlines())
    for piece in unasked:
        if not piece.text.strip():
            continue
        after = "the first prompt" if piece.after is None else f"{piece.after!r}"
        mark = _LATE_MARK.format(after=after, first=piece.first_chunk, last=piece.last_chunk)
        if piece.first_chunk >= session.start:
            where = session.where(piece.first_chunk)
        else:
            raw = console.transcript.slice(piece.first_chunk, piece.last_chunk + 1).to_jsonl()
            refs.append(evidence.add(f"serial/unasked-{piece.first_chunk}-{piece.last_chunk}-transcript.jsonl", raw,
                                     TRANSCRIPT_MEDIA_TYPE))
            where = refs[-1].name
        boot["unasked"].append({"after": piece.after, "text": piece.text, "where": where,
                                "line": lines_before + 2})
        parts.append(mark + "\n" + piece.text)
        lines_before += 1 + len(piece.text.splitlines())
    if parts:
        text = "\n".join(p.rstrip("\n") for p in parts) + "\n"
        refs.append(evidence.add("serial/boot-log.txt", text.encode("utf-8"), "text/plain; charset=utf-8"))
        lines = boot_log_lines(text)
        boot.update(evidence=refs[-1].name, lines=len(lines), sha256=refs[-1].sha256,
                    text_lines=sum(1 for line in (console.boot_log or "").splitlines() if line.strip()),
                    matches=[{"line": i, "pattern": source, "text": line.strip()}
                             for i, (line, folded) in enumerate(lines, start=1) for source, rx in patterns
                             if rx.search(line) or rx.search(folded)])
    else:
        boot.update(lines=0, text_lines=0, matches=[])
    return boot


# --- checks ---


def _quote(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    shown = " | ".join(lines[:_QUOTE_LINES])
    if len(lines) > _QUOTE_LINES:
        shown += f" | ... ({len(lines) - _QUOTE_LINES} more lines)"
    return f"'{shown[:600]}'" if shown else "(nothing)"


def _said(entry: dict[str, Any]) -> str:
    """What an ask printed, as clean text (the late text included)."""
    return "\n".join([entry["output"], *(late["text"] for late in entry["late"])])


def _judge_name(tried: dict[str, Any], canaries: list[tuple[Line, ...]], unknown_quote: str,
                async_line: re.Pattern, prompt: re.Pattern) -> tuple[str | None, str | None, int]:
    """(finding, undecided, differences proven unrelated) for one undocumented name."""
    name, asks = tried["name"], tried["asks"]
    first = asks[0]
    if not first["returned"]:
        tail = f", and {first['stopped']} (interrupted with Ctrl-C)"
        if "lost" in first:
            tail += "; the console gave no prompt after that, so probing stopped"
        if not _said(first).strip():
            if "lost" in first:
                return (f"undocumented name {name!r} gave no answer and the console gave no prompt after it "
                        f"(evidence {first['where']})"), None, 0
            return None, (f"undocumented name {name!r} gave no answer and {first['stopped']} (interrupted with "
                          f"Ctrl-C): whether the board accepts it is undecided (evidence {first['where']})"), 0
        return (f"undocumented command {name!r} answers: {_quote(_said(first))}{tail} (evidence "
                f"{first['where']}; an unknown command answers {unknown_quote})"), None, 0
    answered = [a for a in asks if a["returned"]]
    differences = compare([answer_lines(a, prompt) for a in answered], canaries, name, async_line)
    counted = [d for d in differences if d.unrelated is None]
    if not counted:
        return None, None, len(differences)
    by_ask = [[d for d in counted if d.ask == k] for k in range(len(answered))]
    shown_ask = next(k for k, ds in enumerate(by_ask) if ds)
    wording = {"line": "line {line}: '{shown}'", "missing": "line {line}: the unknown answer's line '{shown}' is missing",
               "noise": "line {line}: bytes '{shown}' the unknown answer lacks there"}
    shown = "; ".join(wording[d.kind].format(line=d.line, shown=d.shown) for d in by_ask[shown_ask][:4])
    if len(by_ask[shown_ask]) > 4:
        shown += f" (and {len(by_ask[shown_ask]) - 4} more)"
    key = [[(d.kind, d.line, d.shown) for d in ds] for ds in by_ask]
    again = ""
    if len(answered) > 1:
        again = ("; sent again, it answered the same" if all(k == key[0] for k in key)
                 else f"; sent {len(answered)} times ({', '.join(a['where'] for a in answered[1:])})")
    return (f"undocumented command {name!r} answers: {_quote(_said(answered[shown_ask]))} (evidence "
            f"{answered[shown_ask]['where']}; an unknown command answers {unknown_quote}); it differs from that "
            f"in {shown}{again}"), None, len(differences) - len(counted)


def commands_documented(observation: Observation, expected: Any) -> CheckResult:
    """No undocumented command is listed by help or answers when probed."""
    ev = observation.evidence
    if (isinstance(expected, str) or not isinstance(expected, list) or not expected
            or not all(isinstance(c, str) and c for c in expected)):
        return CheckResult.error(f"reference console.documented_commands must be a non-empty list of command "
                                 f"names, got {expected!r}", evidence=ev)
    documented = set(expected)
    facts = observation.facts
    findings: list[str] = []
    undecided: list[str] = []
    helped = facts["help"]
    for name in helped["listed"]:
        if name not in documented:
            findings.append(f"undocumented command {name!r} is listed by {helped['command']!r} (evidence "
                            f"{helped['where']})")
    if not helped["listed"]:
        undecided.append(f"no command names could be read from the answer to {helped['command']!r}: "
                         f"{_quote(helped['output'])} (evidence {helped['where']})")
    async_line = re.compile(facts["async_line_regex"])
    unknowns = facts["unknown"]
    hung = [u for u in unknowns if not u["returned"]]
    prompt = re.compile(facts["prompt"])
    canaries = [answer_lines(u, prompt) for u in unknowns if u["returned"]]
    shape = baseline(canaries) if canaries else ()
    unknown_quote = _quote(clean_text("\n".join(shape).encode("utf-8", "surrogateescape"))) if canaries \
        else "(no answer)"
    if hung:
        u = hung[0]
        undecided.append(f"cannot tell accepted from unknown commands: the made-up name {u['name']!r} {u['stopped']} "
                         f"(it said {_quote(_said(u))}; evidence {u['where']})")
    elif not says_unknown(shape):
        u = unknowns[0]
        undecided.append(f"cannot tell accepted from unknown commands: the made-up names ({', '.join(x['name'] for x in unknowns)}) "
                         f"were answered {unknown_quote}, which does not say that the name is unknown (evidence "
                         f"{u['where']}), so a command that answers the same way would go unseen")
    quiet, noise = [], 0
    for tried in facts["probed"]:
        if tried["name"] in documented:
            continue  # the plan probed a documented name: nothing to judge
        if not canaries:
            break
        finding, unsure, unrelated = _judge_name(tried, canaries, unknown_quote, async_line, prompt)
        noise += unrelated
        if finding:
            findings.append(finding)
        elif unsure:
            undecided.append(unsure)
        else:
            quiet.append(tried)
    if facts["not_probed"]:
        undecided.append(f"{len(facts['not_probed'])} names were not probed because the console was lost after "
                         f"{facts['probed'][-1]['name']!r}: {', '.join(facts['not_probed'][:20])}"
                         f"{' ...' if len(facts['not_probed']) > 20 else ''}")
    firmware = facts["firmware_names"]
    if firmware["untried"]:
        undecided.append(f"{len(firmware['untried'])} command-like strings of the firmware images were not tried "
                         f"(more than firmware_names_max): {', '.join(firmware['untried'][:10])}"
                         f"{' ...' if len(firmware['untried']) > 10 else ''}")
    if findings:
        return CheckResult.failed(*findings, *undecided, evidence=ev)
    if undecided:
        return CheckResult.error(*undecided, evidence=ev)
    if not quiet:  # nothing undocumented was tried: the board's own help text decides nothing
        return CheckResult.error(
            "no undocumented command name was probed (the step's probe_commands is empty or all of its names "
            "are listed by help); give probe_commands names the product does not document", evidence=ev)
    sources: dict[str, int] = {}
    for tried in quiet:
        kind = tried["source"].split(" ")[0]
        sources[kind] = sources.get(kind, 0) + 1
    fw = [t["name"] for t in quiet if t["source"].startswith("firmware")]
    parts = [f"{sources.get('plan', 0)} from the plan", f"{sources.get('variant', 0)} case and separator variants",
             f"{len(fw)} from the firmware images ({', '.join(fw[:8]) or 'none'}{' ...' if len(fw) > 8 else ''})"
             if firmware["read"] else "none from firmware: no firmware image was read on this console, names from "
             "firmware not tried"]
    skipped = f"; {len(facts['skipped'])} probe names are listed by help and judged from the listing" \
        if facts["skipped"] else ""
    noted = f"; {noise} differences proven unrelated (line noise or log lines that did not come back)" if noise else ""
    return CheckResult.passed(
        f"{helped['command']!r} lists {len(helped['listed'])} commands, all documented "
        f"({', '.join(helped['listed'])}); {len(quiet)} undocumented names probed ({', '.join(parts)}), each "
        f"answered like an unknown command ({unknown_quote}){noted}{skipped}", evidence=ev)


def boot_log_clean(observation: Observation, expected: Any) -> CheckResult:
    """The boot log, and what the board printed unasked, have no line matching a forbidden pattern."""
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
    problems = []
    if not boot["captured"]:
        problems.append(boot["problem"] or "no boot log was captured")
    elif boot["text_lines"] == 0:
        problems.append(f"the boot log has no line with text (the board printed only blank lines before its first "
                        f"prompt; evidence {boot.get('transcript', boot.get('evidence'))}): there is nothing to judge")
    said = [f"the answer to {m['name']!r}, line {m['line']}, matches /{m['pattern']}/: '{m['text'][:300]}' "
            f"(evidence {m['where']})" for m in boot.get("answer_matches", [])]
    if boot["matches"] or said:
        return CheckResult.failed(*[f"boot log line {m['line']} matches /{m['pattern']}/: '{m['text'][:300]}' "
                                    f"(evidence {boot['evidence']} line {m['line']})" for m in boot["matches"]],
                                  *said, *problems, evidence=ev)
    if problems:
        return CheckResult.error(*problems, evidence=ev)
    unasked = f", and {len(boot['unasked'])} pieces of text printed unasked" if boot["unasked"] else ""
    return CheckResult.passed(f"boot log ({boot['lines']} lines{unasked}, evidence {boot['evidence']}) matches none "
                              f"of the {len(patterns)} forbidden patterns", evidence=ev)


CHECKS = {
    "commands_documented": commands_documented,
    "boot_log_clean": boot_log_clean,
}
