"""The console through the URLs labs use: a local pty, ser2net's rfc2217:// and socket://, pyserial's
own RFC 2217 server, and plain TCP servers that misbehave on purpose.

The zoo's serial requirements through ser2net are compared with fixtures/boards/matrix.yaml,
whose verdicts tests/test_zoo_matrix.py asserts on the pty: the same verdicts (and the same
reason texts) through each console server URL. Each variant and URL gets its own simulator and
ser2net, all at once (an audit mostly waits on its board). One URL of each variant captures the
boot log the simulator printed at start, the other asks for it again (``boot_log: reboot``):
rfc2217:// captures for half the variants, socket:// for the other half.
"""

from __future__ import annotations

import os
import socket
import threading
import time
import tty
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from fixtures.consoleserver import PyserialRfc2217Server, Ser2net, ser2net_path
from harness.board import Board, SimulatedBoardProcess
from harness.evidence import EvidenceStore
from harness.formats.telnet import IAC, SB, SE, WILL, Command, Negotiation, Subnegotiation, TelnetDecoder, TelnetError
from harness.interfaces.serial import ConsoleError, SerialConsole, Transcript
from harness.interfaces.serial_transport import PortFailed, _Rfc2217Serial
from harness.plan import load_plan
from harness.runner import StepRunner, requirement_verdict
from harness.verdict import StepResult

from conftest import BOARDS, PLAN

needs_ser2net = pytest.mark.skipif(ser2net_path() is None,
                                   reason="ser2net is not installed (Debian package ser2net; scripts/setup.sh "
                                          "installs it when run as root)")

PROMPT = "bench> "
BOOT_LOG = ["U-Boot 2024.01 (simulated)", "secure boot: ENABLED", "Starting kernel ..."]


# --- the zoo's serial requirements through ser2net ---

ZOO = ("clean", "tampered-firmware", "rollback", "hidden-command")
SOCKET_CAPTURES = ("tampered-firmware", "hidden-command")  # the boot log at start; rfc2217:// reboots


LEVEL1 = load_plan(PLAN)
SERIAL_REQUIREMENTS = ("L1-FW-INTEGRITY", "L1-FW-ROLLBACK", "L1-CONSOLE-COMMANDS", "L1-CONSOLE-BOOTLOG")
SERIAL_PROBES = ("firmware_dump", "console_audit")


def run_serial_steps(board: Board) -> tuple[dict[str, list[StepResult]], EvidenceStore]:
    """level1's serial requirements on `board`, their console steps only: ({requirement: step
    results}, evidence). (A requirement's other steps, the PCIe option ROM say, need no console.)"""
    evidence = EvidenceStore()
    runner = StepRunner(board, evidence)
    results = {}
    for req_id in SERIAL_REQUIREMENTS:
        req = LEVEL1.requirement(req_id)
        results[req_id] = [runner.run(req, step) for step in req.steps if step.probe in SERIAL_PROBES]
    return results, evidence


def expected_from_matrix(variant: str) -> dict[str, tuple[str, str | None]]:
    """{requirement: (verdict, a text its reasons contain)} of the serial requirements, as
    fixtures/boards/matrix.yaml states them for the pty (unlisted: PASS)."""
    rows = yaml.safe_load((BOARDS / "matrix.yaml").read_text()).get(f"sim-{variant}") or {}
    return {req: (rows[req]["verdict"], rows[req].get("reason")) if req in rows else ("PASS", None)
            for req in SERIAL_REQUIREMENTS}


def _through_ser2net(variant: str, scheme: str) -> tuple:
    """(results, evidence) of the serial requirements through a ser2net URL of `scheme` in front
    of the simulated board's pty; the URL that does not capture asks for a reboot."""
    template = Board.from_file(BOARDS / f"sim-{variant}.yaml")  # (its config and reference; starts nothing)
    capturing = "socket" if variant in SOCKET_CAPTURES else "rfc2217"
    sim = SimulatedBoardProcess(variant)
    try:
        announced = sim.start()["serial"]
        with Ser2net(announced["url"]) as server:
            url = server.rfc2217_url if scheme == "rfc2217" else server.socket_url
            serial = {**announced, "url": url, **({} if scheme == capturing else {"boot_log": "reboot"})}
            board = Board(replace(template.config, simulated=None, interfaces={"serial": serial}), template.reference)
            with board:
                return run_serial_steps(board)
    finally:
        sim.stop()


@pytest.fixture(scope="module")
def via_ser2net():
    """variant -> scheme -> (results, evidence); every variant and scheme at once."""
    if ser2net_path() is None:
        pytest.skip("ser2net is not installed (Debian package ser2net)")
    schemes = ("rfc2217", "socket")
    with ThreadPoolExecutor(max_workers=len(ZOO) * len(schemes)) as pool:
        futures = {(variant, scheme): pool.submit(_through_ser2net, variant, scheme)
                   for variant in ZOO for scheme in schemes}
        return {variant: {scheme: futures[variant, scheme].result() for scheme in schemes} for variant in ZOO}


@needs_ser2net
@pytest.mark.parametrize("scheme", ["rfc2217", "socket"])
@pytest.mark.parametrize("variant", ZOO)
def test_serial_requirements_through_ser2net_match_the_pty(via_ser2net, variant, scheme):
    results, _ = via_ser2net[variant][scheme]
    got = {req: requirement_verdict(steps).value for req, steps in results.items()}
    reasons = {req: [text for step in steps for text in step.reasons] for req, steps in results.items()}
    expected = expected_from_matrix(variant)
    assert got == {req: verdict for req, (verdict, _) in expected.items()}, reasons
    for req, (_, reason) in expected.items():
        if reason is not None:
            assert any(reason in text for text in reasons[req]), reasons[req]


@needs_ser2net
@pytest.mark.parametrize("scheme", ["rfc2217", "socket"])
def test_a_dump_through_ser2net_is_recorded_in_bursts_not_bytes(via_ser2net, scheme):
    results, evidence = via_ser2net["clean"][scheme]
    ref = next(e for step in results["L1-FW-INTEGRITY"] for e in step.evidence
               if e.name == "serial/firmware_dump-transcript.jsonl")
    transcript = Transcript.from_jsonl(evidence.get(ref.sha256))
    rx = [c for c in transcript if c.direction == "rx"]
    assert transcript.rx_bytes > (1 << 20) + (256 << 10)  # vbios and inforom, every byte
    assert len(rx) < 5000, f"{len(rx)} rx records for {transcript.rx_bytes} bytes"


# --- what a console prints as the connection opens is kept ---


class BootOnAccept:
    """A TCP console that prints its boot log and prompt the moment it accepts, then holds the
    connection (and reads nothing)."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.clients: list[socket.socket] = []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            client.sendall(("\r\n".join(BOOT_LOG) + "\r\n" + PROMPT).encode())
            self.clients.append(client)

    def close(self) -> None:
        self.listener.close()
        for client in self.clients:
            client.close()


def captured_boot_log(url: str) -> str | None:
    console = SerialConsole({"url": url, "prompt": PROMPT, "settle_s": 0.05})
    with console:
        console.capture_boot_log("capture", timeout=5.0)
    return console.boot_log


def test_socket_console_printing_as_it_opens_keeps_its_boot_log():
    server = BootOnAccept()
    try:
        for _ in range(3):  # pyserial's open drained the socket: it lost the text 2 times in 3
            assert captured_boot_log(f"socket://127.0.0.1:{server.port}") == "\n".join(BOOT_LOG) + "\n"
    finally:
        server.close()


@pytest.fixture
def board_pty():
    """A pty whose master is the board's side: what is written there before a console server
    opens the slave waits in the tty, like a board that printed its boot log before anyone attached."""
    master, slave = os.openpty()
    tty.setraw(slave)
    try:
        yield master, os.ttyname(slave)
    finally:
        os.close(master)
        os.close(slave)


def print_boot_log(master: int) -> None:
    os.write(master, ("\r\n".join(BOOT_LOG) + "\r\n" + PROMPT).encode())


@needs_ser2net
@pytest.mark.parametrize("scheme", ["rfc2217", "socket"])
def test_ser2net_console_keeps_the_boot_log_waiting_at_open(board_pty, scheme):
    master, device = board_pty
    print_boot_log(master)
    with Ser2net(device) as server:
        # pyserial's RFC 2217 open() had the server PURGE its buffers: the boot log was gone every time
        assert captured_boot_log(server.rfc2217_url if scheme == "rfc2217" else server.socket_url) \
            == "\n".join(BOOT_LOG) + "\n"


def test_pyserial_rfc2217_server_console_keeps_the_boot_log_and_answers(board_pty):
    master, device = board_pty
    print_boot_log(master)
    with PyserialRfc2217Server(device) as server:
        console = SerialConsole({"url": server.rfc2217_url, "prompt": PROMPT, "settle_s": 0.05, "echo": False})
        with console:
            console.capture_boot_log("capture", timeout=5.0)
            assert console.boot_log == "\n".join(BOOT_LOG) + "\n"
            console.write(b"version\r")
            deadline = time.monotonic() + 5
            typed = b""
            while not typed.endswith(b"version\r") and time.monotonic() < deadline:
                typed += os.read(master, 64) if _readable(master) else b""
            assert typed == b"version\r"
            os.write(master, b"\xffversion: 1.0\r\n" + PROMPT.encode())  # 0xFF: escaped as IAC IAC on the wire
            assert console.read_bytes(until=PROMPT.encode(), timeout=5) == b"\xffversion: 1.0\r\n" + PROMPT.encode()
        notes = [c.data.decode() for c in console.transcript if c.direction == "note"]
        assert any("(rfc2217)" in n for n in notes) and any("DTR not set at open" in n for n in notes)


def _readable(fd: int) -> bool:
    import select
    return bool(select.select([fd], [], [], 0.05)[0])


# --- every write ends by its deadline ---

WRITE_TIMEOUT = 0.5
SLACK = 10.0  # a hang check, not a timing: the write must end, and soon after its deadline


def assert_write_times_out(url: str) -> None:
    console = SerialConsole({"url": url, "prompt": PROMPT, "write_timeout": WRITE_TIMEOUT}).open()
    try:
        started = time.monotonic()
        with pytest.raises(ConsoleError, match="timed out after 0.5 s"):
            console.write(b"x" * (64 << 20))  # more than any socket and tty buffer between us and the board
        assert time.monotonic() - started < WRITE_TIMEOUT + SLACK
    finally:
        console.close()


def test_socket_write_to_a_server_that_never_reads_ends_by_the_deadline():
    listener = socket.create_server(("127.0.0.1", 0))
    accepted: list[socket.socket] = []
    thread = threading.Thread(target=lambda: accepted.append(listener.accept()[0]), daemon=True)
    thread.start()
    try:
        assert_write_times_out(f"socket://127.0.0.1:{listener.getsockname()[1]}")
    finally:
        thread.join(5)
        for s in [*accepted, listener]:
            s.close()


@needs_ser2net
@pytest.mark.parametrize("scheme", ["rfc2217", "socket"])
def test_write_through_ser2net_to_a_board_that_stops_reading_ends_by_the_deadline(board_pty, scheme):
    master, device = board_pty  # nobody reads the master: the tty, ser2net and TCP buffers fill up
    with Ser2net(device) as server:
        assert_write_times_out(server.rfc2217_url if scheme == "rfc2217" else server.socket_url)


# --- the RFC 2217 stream: data in blocks, hostile servers end the connection with the reason ---


def telnet_reference(stream: bytes) -> tuple[bytes, list, bool]:
    """Byte by byte, as pyserial's reader did: the data and the events of a whole stream (up to
    a break of the protocol), and whether it broke."""
    data, events = bytearray(), []
    try:
        _telnet_bytewise(stream, data, events)
    except TelnetError:
        return bytes(data), events, True
    return bytes(data), events, False


def _telnet_bytewise(stream: bytes, data: bytearray, events: list) -> None:
    sub, state, command = None, "data", 0
    for b in stream:
        if state == "neg":
            events.append(Negotiation(command, b))
            state = "data"
        elif state == "iac":
            state = "data"
            if b == IAC:
                (data if sub is None else sub).append(b)
            elif b in (251, 252, 253, 254):
                command, state = b, "neg"
            elif b == SB:
                if sub is not None:
                    raise TelnetError("SB in SB")
                sub = bytearray()
            elif b == SE:
                if sub is None:
                    raise TelnetError("SE without SB")
                events.append(Subnegotiation(bytes(sub)))
                sub = None
            else:
                events.append(Command(b))
        elif b == IAC:
            state = "iac"
        else:
            (data if sub is None else sub).append(b)
            if sub is not None and len(sub) > 4096:
                raise TelnetError("too long")


telnet_bytes = st.lists(st.one_of(st.binary(max_size=40), st.sampled_from(
    [bytes([IAC, IAC]), bytes([IAC, SB, 44, 1]), bytes([IAC, SE]), bytes([IAC, WILL, 0]), bytes([IAC, 241]),
     bytes([IAC])])), max_size=30).map(b"".join)


@settings(max_examples=200, deadline=None)
@given(stream=telnet_bytes, cuts=st.lists(st.integers(min_value=0, max_value=2000), max_size=8))
def test_telnet_decoder_in_any_split_equals_a_byte_by_byte_reading(stream, cuts):
    want_data, want_events, broke = telnet_reference(stream)
    decoder, data, events = TelnetDecoder(), b"", []
    points = sorted({0, len(stream), *(c for c in cuts if c < len(stream))})
    try:
        for a, b in zip(points, points[1:]):
            d, e = decoder.feed(stream[a:b])
            data, events = data + d, events + e
    except TelnetError as e:
        assert broke and "telnet stream offset" in str(e)
        data, events = data + e.data, events + e.events  # what came before the break is not lost
    else:
        assert not broke
    assert (data, events) == (want_data, want_events)


def test_telnet_decoder_refuses_an_endless_subnegotiation():
    decoder = TelnetDecoder()
    decoder.feed(bytes([IAC, SB, 44]))
    with pytest.raises(TelnetError, match="longer than 4096 bytes"):
        for _ in range(100):
            decoder.feed(b"\x00" * 1000)


def _reader_on(stream: bytes) -> _Rfc2217Serial:
    """pyserial's RFC 2217 client's reader thread (ours) on a socket that delivers `stream`, then closes."""
    ours, theirs = socket.socketpair()
    ser = _Rfc2217Serial(None)
    ser._socket, ser.is_open = ours, True
    ser._telnet_options, ser._rfc2217_options, ser._write_lock = [], {}, threading.Lock()
    theirs.sendall(stream)
    theirs.close()
    ser._thread = threading.Thread(target=ser._telnet_read_loop, daemon=True)
    ser._thread.start()
    return ser


def test_rfc2217_reader_hands_over_data_and_the_reason_a_server_broke_the_protocol():
    ser = _reader_on(b"boot log\r\n" + bytes([IAC, IAC]) + b"!" + bytes([IAC, SE]) + b"never seen")
    ser._thread.join(5)
    assert ser.read_block(1.0) == b"boot log\r\n\xff!"  # what came before the break is kept
    with pytest.raises(PortFailed, match="broke the telnet protocol: TelnetError: telnet stream offset 14: IAC SE"):
        ser.read_block(1.0)
    ser._socket.close()


def test_rfc2217_reader_says_when_the_server_closed_the_connection():
    ser = _reader_on(b"bye\r\n")
    ser._thread.join(5)
    assert ser.read_block(1.0) == b"bye\r\n"
    with pytest.raises(PortFailed, match="closed the connection"):
        ser.read_block(0.1)
    ser._socket.close()


# --- waiting for text read in small pieces ---


class ScriptedPort:
    """A transport that hands over fixed pieces, one per read, then nothing (the board is silent)."""

    kind = "scripted"

    def __init__(self, pieces: list[bytes]) -> None:
        self.pieces = list(pieces)
        self.notes: list[str] = []

    def read(self, timeout: float) -> bytes:
        if self.pieces:
            return self.pieces.pop(0)
        time.sleep(timeout)
        return b""

    def write(self, data: bytes, deadline: float) -> None:
        pass

    def close(self) -> None:
        pass


@settings(max_examples=60, deadline=None)
@given(before=st.text(alphabet="ab \n", max_size=600), length=st.integers(min_value=1, max_value=9000),
       cuts=st.lists(st.integers(min_value=0, max_value=12000), max_size=40))
def test_a_match_longer_than_the_searched_tail_is_found_however_the_text_was_split(before, length, cuts):
    text = (before + "BEGIN" + "x" * length + "END\nh100> ").encode()
    points = sorted({0, len(text), *(c for c in cuts if c < len(text))})
    console = SerialConsole({"url": "loop://", "prompt": "h100> ", "timeout": 5, "settle_s": 0.01})
    console._ser = ScriptedPort([text[a:b] for a, b in zip(points, points[1:])])
    match = console.expect(r"BEGINx+END")
    assert (match.before, match.text) == (before, "BEGIN" + "x" * length + "END")
    assert console.wait_prompt(timeout=5) == "\n"


def test_a_console_that_arrives_a_byte_at_a_time_is_searched_in_its_tail():
    lines = b"".join(b"[%6d] a log line the board prints while booting\r\n" % i for i in range(500))
    console = SerialConsole({"url": "loop://", "prompt": "h100> ", "timeout": 60, "settle_s": 0.01})
    console._ser = ScriptedPort([lines[i : i + 1] for i in range(len(lines))] + [b"h100> "])
    searched = []
    real = console._pending.window

    def window(start: int):
        w = real(start)
        searched.append(len(w[0]) - w[2])
        return w

    console._pending.window = window
    assert console.wait_prompt().endswith("booting\n")
    # 26 KB byte by byte: a read searched about its tail (256 characters), and the whole 64 KiB
    # window only every 4096 characters; before, every read searched the whole window.
    assert sum(searched) < 1000 * len(searched), (len(searched), sum(searched))


# --- `attestlab serial show` reads a transcript a line at a time ---


def test_serial_show_streams_what_render_text_prints_and_checks_the_whole_file_first():
    from harness.interfaces.transcript import render_jsonl

    t = Transcript("socket://127.0.0.1:4000")
    for i in range(2000):  # a console read a byte at a time, as pyserial's socket:// did
        t.record("rx", b"boot line\r\n"[i % 11 : i % 11 + 1])
    t.record("tx", b"version\r")
    t.note("closed")
    blob = t.to_jsonl()
    written: list[str] = []
    render_jsonl(blob, written.append, max_chunk_bytes=256, numbered=True)
    assert "".join(written) == t.render_text(max_chunk_bytes=256, numbered=True)
    written.clear()
    with pytest.raises(ValueError, match="line 2002: 'n' is 9 but 'b64' holds 8 bytes"):
        render_jsonl(blob.replace(b'"n": 8', b'"n": 9'), written.append)
    assert written == []  # nothing printed from a file that does not check out
