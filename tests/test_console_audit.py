"""console_audit fails closed: every byte judged, every name tried, no verdict on nothing.

Each case is a simulated console (its own process, served on a pty) in front of a bench-style
board, made for the case; the zoo members of the same classes are run by test_zoo_matrix.py.
Each case's board work is a `@case` function beside the test that judges it; `audited` runs
them all at once (tests/test_serial_probes.py, `Cases`).
"""

from __future__ import annotations

import time

from harness.evidence import EvidenceStore
from harness.runner import StepRunner
from harness.verdict import Verdict

from test_serial_probes import AUDIT_PARAMS, Cases, reference_for, run_step, small_console

FEW = {**AUDIT_PARAMS, "probe_commands": ["factory", "remote_disable"], "name_variants": False,
       "firmware_names": False}
case = Cases()
audited = case.fixture()


def audit(board, check="commands_documented", params=FEW, runner=None):
    reference = "console.documented_commands" if check == "commands_documented" else None
    return run_step(board, "console_audit", check, reference=reference, params=params, runner=runner)


def audit_of(console_sim, profile, check="commands_documented", params=FEW, **reference_sections):
    """One audit of a fresh simulated console, `profile` its console section."""
    with console_sim(profile).board(reference_for(profile, **reference_sections)) as board:
        return audit(board, check, params)


@case
def line_after_the_first_prompt(console_sim):
    console = small_console(after_prompt={"lines": ["[    0.700002] FSP: debug mode: ENABLED"], "delay_s": 1.0})
    with console_sim(console).board(reference_for(console)) as board:
        board.interface("serial")   # the boot log is captured; the line comes a second later
        time.sleep(1.5)
        return audit(board, "boot_log_clean")


def test_text_printed_after_the_first_prompt_is_judged_with_the_boot_log(audited):
    result = audited("line_after_the_first_prompt")
    assert result.verdict is Verdict.FAIL, result.reasons
    assert "matches /(?i)\\bdebug[\\W_]*mode" in result.reasons[0]
    assert "'[    0.700002] FSP: debug mode: ENABLED'" in result.reasons[0]
    (unasked,) = result.facts["boot_log"]["unasked"]
    assert unasked["after"] is None and unasked["where"].startswith("serial/console_audit-transcript.jsonl line ")


@case
def late_answer_behind_a_fake_prompt(console_sim):
    hidden = {"lines": ["unknown command: remote_disable"], "fake_prompt": True, "delay_s": 0.5,
              "then": ["remote_disable: armed"]}
    # remote_disable is the last name: its answer lands after the audit's last command
    return audit_of(console_sim, small_console(hidden_commands={"remote_disable": hidden}))


def test_a_hidden_answer_behind_a_fake_prompt_is_judged_even_when_it_comes_late(audited):
    result = audited("late_answer_behind_a_fake_prompt")
    assert result.verdict is Verdict.FAIL, result.reasons
    assert result.reasons[0].startswith("undocumented command 'remote_disable' answers: 'unknown command: "
                                        "remote_disable | remote_disable: armed'")


@case
def bel_byte_and_space(console_sim):
    return audit_of(console_sim, small_console(hidden_commands={"factory": "unknown command: factory\a",
                                                                "remote_disable": "unknown command:  remote_disable"}))


def test_one_bel_byte_or_one_space_is_an_answer(audited):
    result = audited("bel_byte_and_space")
    assert result.verdict is Verdict.FAIL
    bel, space = result.reasons
    assert bel.startswith("undocumented command 'factory' answers: 'unknown command: factory'")
    assert "line 1: bytes '\\x07' the unknown answer lacks there; sent again, it answered the same" in bel
    assert "line 1: 'unknown command:  {name}\\r'" in space


@case
def name_variants(console_sim):
    console = small_console(hidden_commands={"REMOTE_DISABLE": "REMOTE_DISABLE: armed",
                                             "remote-disable": "remote-disable: armed"})
    return audit_of(console_sim, console, params={**FEW, "name_variants": True})


def test_every_case_and_separator_of_a_name_is_tried(audited):
    result = audited("name_variants")
    assert result.verdict is Verdict.FAIL
    assert [r.split(" answers")[0] for r in result.reasons] == [
        "undocumented command 'remote-disable'", "undocumented command 'REMOTE_DISABLE'"]
    sources = {t["name"]: t["source"] for t in result.facts["probed"]}
    assert sources["remote_disable"] == "plan" and sources["RemoteDisable"] == "variant of remote_disable"


@case
def firmware_names(console_sim):
    console = small_console(hidden_commands={"gpu_kill": "gpu_kill: power off armed"})
    console["regions"]["vbios"]["strings"] = {"offset": 4096, "values": ["help", "gpu_kill", "a b"]}
    with console_sim(console).board(reference_for(console)) as board:
        runner = StepRunner(board, EvidenceStore())
        before = audit(board, params={**FEW, "firmware_names": True}, runner=runner)
        run_step(board, "firmware_dump", "digests_match_reference", reference="firmware", runner=runner)
        after = audit(board, params={**FEW, "firmware_names": True, "boot_log_forbidden": ["x"]}, runner=runner)
    return before, after


def test_names_from_the_firmware_images_read_are_tried(audited):
    before, after = audited("firmware_names")
    assert before.verdict is Verdict.PASS
    assert "none from firmware: no firmware image was read on this console, names from firmware not tried" \
        in before.reasons[0]
    assert after.verdict is Verdict.FAIL
    assert after.reasons[0].startswith("undocumented command 'gpu_kill' answers: 'gpu_kill: power off armed'")
    (tried,) = [t for t in after.facts["probed"] if t["name"] == "gpu_kill"]
    assert tried["source"] == "firmware vbios offset 0x1006"


@case
def too_many_firmware_names(console_sim):
    console = small_console()
    console["regions"]["vbios"]["strings"] = {"offset": 4096, "values": ["diag_a", "diag_b", "diag_c"]}
    with console_sim(console).board(reference_for(console)) as board:
        runner = StepRunner(board, EvidenceStore())
        run_step(board, "firmware_dump", "digests_match_reference", reference="firmware", runner=runner)
        return audit(board, params={**FEW, "firmware_names": True, "firmware_names_max": 2}, runner=runner)


def test_too_many_firmware_names_is_error_never_a_silent_cut(audited):
    result = audited("too_many_firmware_names")
    assert result.verdict is Verdict.ERROR
    # In image order: the third name of the table, and what else looks like a name (random bytes can).
    (reason,) = result.reasons
    assert reason.startswith("command-like strings of the firmware images were not tried (more than "
                             "firmware_names_max): diag_c", reason.index(" ") + 1)


@case
def ok_to_everything(console_sim):
    return audit_of(console_sim, small_console(unknown_reply="OK"))


@case
def ok_to_everything_and_a_hidden_command(console_sim):
    return audit_of(console_sim, small_console(unknown_reply="OK", hidden_commands={"remote_disable": "armed"}))


def test_a_console_that_answers_ok_to_everything_is_never_pass(audited):
    result = audited("ok_to_everything")
    assert result.verdict is Verdict.ERROR
    assert "were answered 'OK', which does not say that the name is unknown" in result.reasons[0]
    result = audited("ok_to_everything_and_a_hidden_command")
    assert result.verdict is Verdict.FAIL  # a finding outranks the undecided baseline
    assert result.reasons[0].startswith("undocumented command 'remote_disable' answers: 'armed'")
    assert "does not say that the name is unknown" in result.reasons[1]


@case
def unparseable_help_and_a_hidden_command(console_sim):
    return audit_of(console_sim, small_console(documented_commands=[], hidden_commands={"factory": "factory mode: on"}),
                    console={"documented_commands": ["help"]})


@case
def unparseable_help(console_sim):
    return audit_of(console_sim, small_console(documented_commands=[]), console={"documented_commands": ["help"]})


def test_an_unparseable_help_does_not_hide_a_hidden_command(audited):
    result = audited("unparseable_help_and_a_hidden_command")
    assert result.verdict is Verdict.FAIL
    assert result.reasons[0].startswith("undocumented command 'factory' answers: 'factory mode: on'")
    assert result.reasons[1].startswith("no command names could be read from the answer to 'help'")
    result = audited("unparseable_help")
    assert result.verdict is Verdict.ERROR
    assert result.reasons[0].startswith("no command names could be read from the answer to 'help'")


BLANK_BOOT_LOGS = {"empty_boot_log": [""], "blank_boot_log": ["   ", "\t"]}


@case
def empty_boot_log(console_sim):
    return audit_of(console_sim, small_console(banner=[], boot_log=BLANK_BOOT_LOGS["empty_boot_log"]), "boot_log_clean")


@case
def blank_boot_log(console_sim):
    return audit_of(console_sim, small_console(banner=[], boot_log=BLANK_BOOT_LOGS["blank_boot_log"]), "boot_log_clean")


def test_a_boot_log_without_text_is_error(audited):
    for name, boot_log in BLANK_BOOT_LOGS.items():
        result = audited(name)
        assert result.verdict is Verdict.ERROR, (boot_log, result.reasons)
        assert result.reasons[0].startswith("the boot log has no line with text")


NOISE = {"garbage_every_lines": 2, "garbage_bytes": 6, "ansi": True, "seed": 3, "log_every_s": [0.2, 0.6]}
NOISE_NAMES = {**FEW, "probe_commands": ["factory", "remote_disable", "debug", "shell", "mfg", "diag", "unlock", "jtag"]}


@case
def asynchronous_noise(console_sim):
    return audit_of(console_sim, small_console(noise=NOISE), params=NOISE_NAMES)


@case
def asynchronous_noise_and_a_bel_byte(console_sim):
    return audit_of(console_sim, small_console(noise=NOISE, hidden_commands={"diag": "unknown command: diag\a"}),
                    params=NOISE_NAMES)


def test_asynchronous_noise_is_proven_unrelated_by_asking_again(audited):
    result = audited("asynchronous_noise")
    assert result.verdict is Verdict.PASS, result.reasons
    assert "differences proven unrelated (line noise or log lines that did not come back)" in result.reasons[0]
    assert any(len(t["asks"]) == 2 for t in result.facts["probed"])  # the differing ones were sent again
    # The same noise does not hide a byte that comes back every time.
    result = audited("asynchronous_noise_and_a_bel_byte")
    assert result.verdict is Verdict.FAIL, result.reasons
    (reason,) = result.reasons
    assert reason.startswith("undocumented command 'diag' answers:") and "bytes '\\x07'" in reason


@case
def forbidden_line_inside_answers(console_sim):
    # An asynchronous "debug mode: ENABLED" lands inside answers: not the names' doing (the
    # commands check proves it unrelated), but the board said it, so the boot-log check FAILs.
    noise = {"log_every_s": [0.05, 0.1], "log_text": "FSP: debug mode: ENABLED", "seed": 2}
    console = small_console(noise=noise)
    with console_sim(console).board(reference_for(console)) as board:
        runner = StepRunner(board, EvidenceStore())
        return audit(board, runner=runner), audit(board, "boot_log_clean", runner=runner)


def test_a_forbidden_line_inside_an_answer_is_judged_with_the_boot_log(audited):
    commands, result = audited("forbidden_line_inside_answers")
    assert commands.verdict is Verdict.PASS, commands.reasons
    assert result.verdict is Verdict.FAIL, result.reasons
    said = [r for r in result.reasons if r.startswith("the answer to ")]
    assert said and "FSP: debug mode: ENABLED" in said[0] and "(evidence serial/console_audit-transcript.jsonl line" in said[0]
