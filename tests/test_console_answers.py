"""How console_audit compares answers, names what to try and reads boot logs (probes/_console_answers.py).

Pure functions on the bytes a board sent: each behaviour by example, then fuzzed with arbitrary
bytes (they return a result or raise ValueError, nothing else).
"""

from __future__ import annotations

import re

from hypothesis import assume, given, settings
from hypothesis import strategies as st

from harness.plan import load_plan
from probes._console_answers import (
    baseline,
    boot_log_lines,
    compare,
    firmware_names,
    name_variants,
    placeholder,
    says_unknown,
    split_lines,
)

from conftest import PLAN

ASYNC = re.compile(r"^\s*\[\s*\d+\.\d+\]")
FORBIDDEN = [re.compile(p) for p in
             load_plan(PLAN).requirement("L1-CONSOLE-BOOTLOG").steps[0].params["boot_log_forbidden"]]


def answer(name: str, data: bytes):
    return split_lines(placeholder(data, name))


def unknown(name: str, extra: bytes = b"") -> bytes:
    return extra + f"unknown command: {name}\r\n".encode()


CANARIES = [answer(n, unknown(n)) for n in ("attestlab_nx_0a0b0c0d", "attestlab_nx_11223344")]


def counted(asks, name, canaries=CANARIES):
    return [d for d in compare(asks, canaries, name, ASYNC) if d.unrelated is None]


# --- byte-exact comparison ---

def test_an_answer_like_the_unknown_one_has_no_difference():
    assert compare([answer("rc", unknown("rc"))], CANARIES, "rc", ASYNC) == []


def test_one_bel_byte_or_one_space_is_a_difference():
    bel = counted([answer("rc", b"unknown command: rc\x07\r\n")] * 2, "rc")
    assert [(d.kind, d.shown) for d in bel] == [("noise", "\\x07"), ("noise", "\\x07")]
    space = counted([answer("rc", b"unknown command:  rc\r\n")] * 2, "rc")
    assert {d.kind for d in space} == {"line", "missing"}


def test_a_log_like_line_that_comes_back_or_names_the_command_is_an_answer():
    line = b"[  123.456789] RD: remote_disable armed\r\n"
    twice = [answer("remote_disable", unknown("remote_disable") + line)] * 2
    assert [d.shown for d in counted(twice, "remote_disable") if d.ask == 0] == ["[  123.456789] RD: {name} armed\\r"]
    # Once only, but it names the command (in another case and separator): still its answer.
    named = [answer("REMOTE_DISABLE", unknown("REMOTE_DISABLE") + line), answer("REMOTE_DISABLE", unknown("REMOTE_DISABLE"))]
    assert counted(named, "REMOTE_DISABLE")


def test_asynchronous_noise_that_does_not_come_back_is_proven_unrelated():
    first = answer("rc", b"[   12.000001] pcie: link retrained #3\r\n" + unknown("rc", b"\x93\x01\xfe"))
    second = answer("rc", unknown("rc", b"\xf7\x02\x85"))
    found = compare([first, second], CANARIES, "rc", ASYNC)
    assert found and all(d.unrelated for d in found), found
    # Asked once, nothing can be proven: every difference counts.
    assert counted([first], "rc")


def test_a_line_a_made_up_name_also_got_is_unrelated_and_noise_the_canary_had_is_no_difference():
    canaries = [answer("attestlab_nx_1", b"h100-hmc> \r\n" + unknown("attestlab_nx_1")),
                *CANARIES, answer("attestlab_nx_2", unknown("attestlab_nx_2", b"\x07"))]
    asks = [answer("rc", b"h100-hmc> \r\n" + unknown("rc", b"\x07"))]
    found = compare(asks, canaries, "rc", ASYNC)
    assert [(d.kind, d.unrelated is not None) for d in found] == [("line", True)]


def test_a_missing_line_and_a_prose_line_are_never_unrelated():
    asks = [answer("rc", b"rc: remote control session open\r\n"), answer("rc", unknown("rc"))]
    kinds = {d.kind for d in counted(asks, "rc")}
    assert kinds == {"line", "missing"}


def test_the_unknown_answer_is_what_most_made_up_names_got_and_must_say_unknown():
    noisy = answer("x", b"[ 1.0] log\r\n" + unknown("x"))
    assert baseline([noisy, *CANARIES]) == ("unknown command: {name}\r",)
    assert says_unknown(baseline(CANARIES))
    assert not says_unknown(baseline([answer("x", b"OK\r\n")]))
    assert not says_unknown(baseline([answer("x", b"")]))
    assert says_unknown(("Unknown command '{name}' - try 'help'",)) and says_unknown(("{name}: not found",))


# --- names ---

def test_every_name_is_tried_in_each_case_and_separator():
    variants = name_variants("remote_disable")
    for v in ("remote_disable", "remote-disable", "remote.disable", "remotedisable", "REMOTE_DISABLE",
              "REMOTE-DISABLE", "REMOTEDISABLE", "Remote_Disable", "RemoteDisable"):
        assert v in variants
    assert len(variants) == len(set(variants)) == 12
    assert name_variants("rc") == ["rc", "RC", "Rc"]
    assert "remote_disable" in name_variants("RemoteDisable")


def test_firmware_names_are_c_strings_shaped_like_commands():
    image = (b"\x00\x01garbage\x00gpu_kill\x00help\x00NVIDIA Corporation\x00ab\x00x" * 2 + b"\x00fsp.dbg-mode\x00")
    found = firmware_names({"vbios": image, "inforom": b"rd_arm\x00"})
    # "garbage" follows a 0x01, not a NUL; "ab" is too short; "NVIDIA Corporation" has a space.
    assert [f["name"] for f in found] == ["gpu_kill", "help", "fsp.dbg-mode", "rd_arm"]
    assert found[0] == {"name": "gpu_kill", "region": "vbios", "offset": 10}


# --- boot log ---

def test_level1_patterns_read_real_world_spellings():
    def hits(line: str) -> bool:
        return any(rx.search(raw) or rx.search(folded) for raw, folded in boot_log_lines(line) for rx in FORBIDDEN)
    for bad in ("BL1:   SECURE   boot :DISABLED", "Secure Boot: Disabled", "SECURE_BOOT=0", "secureboot disabled",
                "Debug Mode .... ON", "DEBUG_MODE=1", "JTAG: Unlocked", "jtag=1", "secure\tboot\t:\tdisabled",
                "debug fuse set", "sig_verify=0", "Signature verification: FAILED", "ANTI_ROLLBACK=OFF",
                "signed with development keys", "debug mode: ENABLED", "Debug\u3000Mode\uff1a \uff25\uff2e\uff21\uff22\uff2c\uff25\uff24"):
        assert hits(bad), bad
    for fine in ("[    0.001204] FSP: secure boot: ENABLED, production keys", "FSP: debug mode: disabled; JTAG: locked",
                 "FSP: VBIOS 96.00.DA.00.0C: signature check OK (RSA-3072, key slot 0)", "secure boot: not disabled",
                 "[    0.007010] FSP: anti-rollback: fuse revision 12, image revision 12: OK", "dump: vbios complete"):
        assert not hits(fine), fine


def test_boot_log_lines_fold_whitespace_and_controls():
    assert boot_log_lines("BL1:   SECURE \t boot\x07:DISABLED\n\n") == [
        ("BL1:   SECURE \t boot\x07:DISABLED", "BL1: SECURE boot :DISABLED"), ("", "")]


# --- hostile input ---

@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=200), min_size=1, max_size=4), st.lists(st.binary(max_size=200), min_size=1,
                                                                               max_size=3),
       st.from_regex(r"[A-Za-z][A-Za-z0-9_.-]{0,10}", fullmatch=True))
def test_arbitrary_answers_are_compared_without_crashing(asks, canaries, name):
    found = compare([answer(name, a) for a in asks], [answer("attestlab_nx_0", c) for c in canaries], name, ASYNC)
    for d in found:
        assert d.kind in ("line", "missing", "noise") and d.shown.isascii()
    # An answer identical to the made-up name's (its name in the name's place) has no missing line.
    assume(name.encode() not in canaries[0] and b"{name}" not in canaries[0])
    same = [answer(name, placeholder(canaries[0], "attestlab_nx_0").replace(b"{name}", name.encode()))]
    assert not [d for d in compare(same, [answer("attestlab_nx_0", canaries[0])], name, ASYNC)
                if d.kind == "missing"]


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.sampled_from(["vbios", "inforom"]), st.binary(max_size=2000)), st.text(max_size=300))
def test_arbitrary_images_and_boot_logs_are_read_without_crashing(images, text):
    for found in firmware_names(images):
        assert 3 <= len(found["name"]) <= 32 and found["region"] in images
    assert len(boot_log_lines(text)) == len(text.splitlines())
