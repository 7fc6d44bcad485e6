"""SerialConsole against the simulated console, through a real pty in a separate process.

The simulator (fixtures/sim/console.py) runs as its own process, serving on a pty; the harness
side opens the slave path with pyserial exactly as it would a USB-serial adapter. A few unit
tests of the API use pyserial's loop:// instead.
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fixtures.sim.console import region_image
from harness.interfaces.serial import (
    TRANSCRIPT_MEDIA_TYPE,
    ConsoleError,
    SerialConsole,
    Transcript,
    escape_bytes,
    unescape_text,
)
from harness.verdict import ProbeError

from conftest import start_console_simulator, stop_processes

REPO = Path(__file__).resolve().parent.parent
PROMPT = "h100-bmc> "
VERSION = "96.00.DA.00.0C"

BASE = {
    "prompt": PROMPT,
    "banner": ["NVIDIA H100 SXM5 80GB - BMC debug console"],
    "boot_log": [f"firmware {VERSION}", "secure boot: signature check OK", "boot complete"],
    "version": VERSION,
    "identity": {"serial": "1650923012345", "board": "PG520 SKU 200"},
    "documented_commands": ["help", "version", "serial", "board", "dump"],
    "commands": {
        "status": ["fans: OK", "temp: 41C", "power: OK"],
        "bigline": {"repeat": "0123456789abcdef", "times": 65536},  # one 1 MiB line
        "logspam": {"flood": "kernel: eth0: link flap"},  # never stops
        "hang": {"hang": True},  # never answers
    },
    "hidden_commands": {"remote_disable": "remote disable armed"},
    "regions": {
        "vbios": {"size": 256 << 10, "seed": "h100-vbios", "version": VERSION},
        "inforom": {"size": 10_001, "seed": "h100-inforom"},
        "empty": {"size": 0},
    },
}


class Sim:
    def __init__(self, proc: subprocess.Popen, endpoint: dict, profile: dict) -> None:
        self.proc, self.endpoint, self.profile = proc, endpoint, profile

    def image(self, region: str) -> bytes:
        cfg = self.profile["console"]
        return region_image(region, cfg["regions"][region], cfg.get("version", ""))

    def console(self, **overrides) -> SerialConsole:
        return SerialConsole(self.endpoint, **overrides)


@pytest.fixture
def sim(tmp_path):
    """start(**console_overrides) -> Sim: the simulated console in its own process."""
    procs: list[subprocess.Popen] = []

    def start(**overrides) -> Sim:
        profile = {"console": {**BASE, **overrides}}
        proc, endpoint = start_console_simulator(profile, tmp_path)
        procs.append(proc)
        assert endpoint["url"].startswith("/dev/") and endpoint["prompt"] == PROMPT
        return Sim(proc, endpoint, profile)

    yield start
    stop_processes(procs)


# --- talking to the board ---


def test_boot_log_prompt_and_commands(sim):
    s = sim()
    with s.console() as c:
        boot = c.wait_prompt(timeout=5)
        assert boot.splitlines() == BASE["banner"] + BASE["boot_log"]
        assert c.command("version") == f"version: {VERSION}"
        assert c.command("serial") == "serial: 1650923012345"
        assert c.command("board") == "board: PG520 SKU 200"
        assert c.command("status") == "fans: OK\ntemp: 41C\npower: OK"
        assert c.command("frobnicate now") == "unknown command: frobnicate"
        assert c.command("") == ""


def test_help_lists_documented_commands_but_hidden_ones_still_answer(sim):
    s = sim()
    with s.console() as c:
        c.wait_prompt(timeout=5)
        listed = c.command("help").splitlines()
        assert listed[0] == "Available commands:"
        assert [x.strip() for x in listed[1:]] == BASE["documented_commands"]
        assert "remote_disable" not in c.command("help")
        assert c.command("remote_disable") == "remote disable armed"


def test_noisy_console_still_gives_clean_output(sim):
    quiet, noisy = sim(), sim(noise={"garbage_every_lines": 1, "garbage_bytes": 12, "ansi": True})
    outputs = {}
    for name, s in (("quiet", quiet), ("noisy", noisy)):
        with s.console() as c:
            boot = c.wait_prompt(timeout=5)
            outputs[name] = [boot] + [c.command(cmd) for cmd in ("help", "version", "status", "serial", "nope")]
            raw = c.transcript.data("rx")
        if name == "noisy":
            assert b"\x1b[" in raw and re.search(rb"[\x80-\xff]", raw)  # the noise is there, raw
    assert outputs["noisy"] == outputs["quiet"]
    assert "secure boot: signature check OK" in outputs["noisy"][0]


def test_transcript_records_both_directions_with_timestamps(sim):
    s = sim()
    before = time.time()
    with s.console() as c:
        c.wait_prompt(timeout=5)
        c.command("version")
    t = c.transcript  # readable after close
    assert any(ch.direction == "tx" and ch.data == b"version\r" for ch in t)
    rx = t.data("rx")
    assert b"secure boot: signature check OK\r\n" in rx and b"version\r\n" in rx  # echo, verbatim
    assert t.tx_bytes == len(b"version\r") and t.rx_bytes == len(rx)
    times = [ch.t for ch in t]
    assert times == sorted(times) and times[0] >= 0
    assert all(before - 1 <= ch.wall <= time.time() + 1 for ch in t)
    assert [ch.direction for ch in t][0] == "note" and "closed" in t.chunks[-1].data.decode()
    again = Transcript.from_jsonl(t.to_jsonl())
    assert again.chunks == t.chunks and again.source == s.endpoint["url"]
    text = t.render_text()
    assert "tx" in text and "version\\r" in text and "signature check OK\\r\\n" in text
    assert text.isascii()
    header = json.loads(t.to_jsonl().splitlines()[0])
    assert header["format"] == "attestlab.transcript" and TRANSCRIPT_MEDIA_TYPE.endswith("+jsonl")


def test_reconnecting_finds_the_board_still_there(sim):
    s = sim()
    with s.console() as c:
        c.wait_prompt(timeout=5)
    with s.console() as c:
        c.sync(timeout=5)
        assert c.command("version") == f"version: {VERSION}"


# --- firmware dumps ---


def test_dump_region_verifies(sim):
    s = sim()
    with s.console() as c:
        c.wait_prompt(timeout=5)
        for region in ("vbios", "inforom", "empty"):
            r = c.dump_region(region, timeout=30)
            image = s.image(region)
            assert r.data == image
            assert r.sha256 == hashlib.sha256(image).hexdigest() and r.size == len(image)
            assert (r.resend_rounds, r.frames_requested, r.corrupt_records) == (0, 0, 0)
            assert r.frames == -(-len(image) // 4096)
        assert r.to_facts()["region"] == "empty"
        big = c.dump_region("vbios")
        assert big.overhead < 1.03, big.to_facts()
        assert image_header(big.data)["version"] == VERSION
        assert c.command("version") == f"version: {VERSION}"  # back at the prompt
        # What each dump printed after DONE is kept; the records (an END after DONE too) are not text.
        assert {u.after: u.text.strip() for u in c.take_unread()} == {
            f"dump {region}": f"dump: {region} complete" for region in ("vbios", "inforom", "empty")}


def image_header(image: bytes) -> dict:
    head = image.split(b"\n\n", 1)[0].decode().splitlines()
    return dict(line.split("=", 1) for line in head[1:])


def test_dump_through_a_flaky_link_completes(sim):
    link = {"corrupt_every_frames": 7, "drop_every_frames": 11, "truncate_every_frames": 13,
            "chatter_every_frames": 5, "drop_records": ["begin", "end"]}
    s = sim(link=link)
    with s.console(dump_idle_timeout=0.3) as c:
        c.wait_prompt(timeout=5)
        r = c.dump_region("vbios", timeout=30)
        assert r.data == s.image("vbios")
        assert r.resend_rounds >= 2 and r.frames_requested > 0 and r.corrupt_records > 0
        assert r.skipped_bytes > 0  # the chatter between frames
        notes = [ch.data.decode() for ch in c.transcript if ch.direction == "note"]
        assert any("RESEND round 1" in n for n in notes)
        assert c.command("version") == f"version: {VERSION}"
        # What the board printed between the frames is kept for the probes to judge; only that.
        said = c.take_unread()
        assert said and {u.after for u in said} == {"dump vbios"}
        lines = [line for u in said for line in u.text.splitlines() if line.strip()]
        assert lines[-1] == "dump: vbios complete"
        assert len(lines) >= 5 and all(line.endswith("link retrained") for line in lines[:-1]), lines


def test_dump_that_cannot_complete_raises_and_keeps_the_transcript(sim):
    s = sim(link={"corrupt_every_frames": 1})
    with s.console(dump_idle_timeout=0.3) as c:
        c.wait_prompt(timeout=5)
        with pytest.raises(ConsoleError, match=r"64 frames .* still missing after 3 RESEND rounds") as info:
            c.dump_region("vbios", max_rounds=3, timeout=30)
        e = info.value
        assert isinstance(e, ProbeError) and e.transcript is c.transcript
        assert e.details["frames_have"] == 0 and e.details["frames_total"] == 64
        assert c.transcript.rx_bytes > 3 * (256 << 10)
        assert not hasattr(e, "data")
        # The board was told ABORT and went back to its prompt.
        assert c.command("version") == f"version: {VERSION}"


def test_dump_of_an_unknown_region_says_what_the_board_said(sim):
    s = sim()
    with s.console() as c:
        c.wait_prompt(timeout=5)
        with pytest.raises(ConsoleError, match=r"without starting a dump: .*unknown region 'bios'"):
            c.dump_region("bios")
        assert c.command("serial") == "serial: 1650923012345"


def test_board_killed_mid_dump_is_an_error_with_the_transcript(sim):
    s = sim(regions={"vbios": {"size": 4 << 20}}, link={"bytes_per_second": 2_000_000})
    seen = []

    def kill_after_a_few(have, total):
        seen.append(have)
        if have == 5:
            s.proc.kill()

    c = s.console()
    with c:
        c.wait_prompt(timeout=5)
        t0 = time.monotonic()
        with pytest.raises(ConsoleError, match=r"port failed while dumping 'vbios'") as info:
            c.dump_region("vbios", on_frame=kill_after_a_few, timeout=30)
        assert time.monotonic() - t0 < 10
    assert info.value.transcript is c.transcript
    assert 5 in seen and max(seen) < 1024
    assert c.transcript.rx_bytes > 5 * 4096
    assert "error:" in c.transcript.chunks[-2].data.decode() or any(
        "error:" in ch.data.decode() for ch in c.transcript if ch.direction == "note")


# --- hostile consoles ---


def test_console_that_never_stops_talking(sim):
    s = sim()
    with s.console() as c:
        c.wait_prompt(timeout=5)
        t0 = time.monotonic()
        with pytest.raises(ConsoleError, match=r"no prompt 'h100-bmc> ' after 'logspam' after \d+ bytes") as info:
            c.command("logspam", timeout=10, max_bytes=256 << 10)
        assert time.monotonic() - t0 < 10
        assert info.value.transcript.rx_bytes >= 256 << 10
        assert b"link flap" in c.transcript.data("rx")
        # Same console, byte budget large, time short: the deadline wins.
        t0 = time.monotonic()
        with pytest.raises(ConsoleError, match=r"timed out after"):
            c.wait_prompt(timeout=0.5, max_bytes=1 << 40)
        assert 0.5 <= time.monotonic() - t0 < 2
        with pytest.raises(ConsoleError, match="did not go quiet"):
            c.read_until_quiet(quiet=0.3, timeout=0.8, max_bytes=1 << 40)
        # Every failed read kept what it received as unread text (megabytes of spam here): the
        # caller takes it, as the probes do, before the console takes more commands.
        assert any("link flap" in u.text for u in c.take_unread())
        c.interrupt()  # Ctrl-C stops it
        c.sync(timeout=5)
        assert c.command("version") == f"version: {VERSION}"


def test_silent_console_times_out(sim):
    s = sim(silent=True)
    with s.console() as c:
        t0 = time.monotonic()
        with pytest.raises(ConsoleError, match=r"timed out after 0\.\d+ s waiting for prompt 'h100-bmc> ' \(0 bytes"):
            c.wait_prompt(timeout=0.5)
        assert 0.5 <= time.monotonic() - t0 < 1.5
        with pytest.raises(ConsoleError, match="echo of 'version'"):
            c.command("version", timeout=0.3)
        assert c.transcript.tx_bytes == len(b"version\r") and c.transcript.rx_bytes == 0


def test_command_that_hangs_times_out_then_ctrl_c_recovers(sim):
    s = sim()
    with s.console() as c:
        c.wait_prompt(timeout=5)
        with pytest.raises(ConsoleError, match=r"timed out .* prompt 'h100-bmc> ' after 'hang'"):
            c.command("hang", timeout=0.4)
        c.interrupt()
        c.sync(timeout=5)
        assert c.command("board") == "board: PG520 SKU 200"


def test_megabyte_line_is_capped_in_text_but_kept_in_the_transcript(sim):
    s = sim()
    with s.console(max_line=4096) as c:
        c.wait_prompt(timeout=5)
        out = c.command("bigline", timeout=20)
        assert len(out) < 4096 + 100
        assert out.startswith("0123456789abcdef" * 10)
        assert out.endswith("0123456789abcdef")
        assert re.search(r"\[\.\.\. \d+ characters elided \.\.\.\]", out)
        elided = int(re.search(r"(\d+) characters elided", out).group(1))
        assert c.elided_characters == elided > 0  # said, not hidden: a check can tell its text is not whole
        assert c.transcript.data("rx").count(b"0123456789abcdef") == 65536
        assert c.command("version") == f"version: {VERSION}"


# --- the API on loop:// (no board) ---


def test_loop_expect_read_bytes_and_budget():
    with SerialConsole({"url": "loop://", "prompt": "> ", "timeout": 1}) as c:
        c.write(b"\x1b[1mhello\x1b[0m world\r\nvalue=42\r\n> ")
        m = c.expect(r"value=(\d+)")
        assert m.group(1) == "42" and m.before == "hello world\n"
        assert c.wait_prompt() == "\n"
        c.write(b"RAW\x00\xffBYTES|rest of line\r\n")
        assert c.read_bytes(until=b"|") == b"RAW\x00\xffBYTES|"
        assert c.read_bytes(4) == b"rest"
        c.write(b"x" * 4000)  # loop:// holds 4 KiB
        with pytest.raises(ConsoleError, match=r"no /never/ after 4000 bytes .*byte budget 3000"):
            c.expect("never", max_bytes=3000, timeout=5)
        with pytest.raises(ConsoleError, match="got 0 bytes"):
            c.read_bytes(10, timeout=0.2)


def test_config_is_checked():
    with pytest.raises(ValueError, match="unknown console config key"):
        SerialConsole({"url": "loop://", "promt": "> "})
    with pytest.raises(ValueError, match="prompt_regex"):
        SerialConsole({"url": "loop://", "prompt_regex": "(unclosed"})
    with pytest.raises(ValueError, match="needs a 'url'"):
        SerialConsole({"prompt": "> "})
    c = SerialConsole({"url": "loop://"})
    with pytest.raises(ConsoleError, match="not open"):
        c.send_line("x")
    with pytest.raises(ConsoleError, match="cannot open console /nonexistent/tty"):
        SerialConsole({"url": "/nonexistent/tty"}).open()


@given(st.lists(st.tuples(st.sampled_from(["rx", "tx", "note"]), st.binary(max_size=300)), max_size=30))
@settings(max_examples=100)
def test_transcript_serialises_and_renders_any_bytes(chunks):
    ticks = iter(range(10_000))
    t = Transcript("/dev/pts/\x1b\xff", clock=lambda: next(ticks) / 1000, wall_clock=lambda: 1.7e9)
    for direction, data in chunks:
        t.record(direction, data)
    again = Transcript.from_jsonl(t.to_jsonl())
    assert again.chunks == t.chunks
    assert again.rx_bytes == t.rx_bytes == sum(len(d) for k, d in chunks if k == "rx")
    text = t.render_text()
    assert text.isascii() and "\x1b" not in text and "\r" not in text
    assert all(ch.isprintable() or ch == "\n" for ch in text)
    for _, data in chunks:
        assert unescape_text(escape_bytes(data)) == data


def test_transcript_rejects_garbage():
    with pytest.raises(ValueError, match="line 1"):
        Transcript.from_jsonl(b"not json\n")
    t = Transcript("x")
    t.record("rx", b"abc")
    lines = t.to_jsonl().decode().splitlines()
    lines[1] = lines[1].replace('"rx"', '"sideways"')
    with pytest.raises(ValueError, match="line 2"):
        Transcript.from_jsonl("\n".join(lines))


def test_loop_prompt_regex():
    with SerialConsole({"url": "loop://", "prompt_regex": r"[a-z0-9-]+> ", "timeout": 1}) as c:
        c.write(b"boot ok\r\nnot a prompt: x> \r\nbmc-7> ")
        assert c.wait_prompt() == "boot ok\nnot a prompt: x> \n"
