"""The host side of a firmware dump over the console (the dumpframe protocol; docs/serial.md).

`dump_region(console, name)` sends the dump command at the prompt, collects DATA frames, asks
for missing or damaged ones, checks the length and sha256 against BEGIN, sends DONE and waits
for the prompt. It reads and writes only through the console (`SerialConsole`), so every byte
is in the console's transcript. What the board prints between the records and after DONE is
handed to the console as unread text after the dump command (`SerialConsole.take_unread`).
"""

from __future__ import annotations

import hashlib
import re
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

from harness import progress
from harness.formats.dumpframe import (
    BEGIN_SEQ,
    MAX_RESEND_SEQS,
    Abort,
    Begin,
    Corrupt,
    Data,
    Done,
    End,
    FrameDecoder,
    Resend,
    Skipped,
)
from harness.interfaces.textclean import TextCleaner
from harness.verdict import ProbeError

if TYPE_CHECKING:
    from harness.interfaces.serial import ConsoleError, SerialConsole


# How strongly an image shows what the board holds: read off the board by attestlab itself over
# its console (any transfer), or supplied as a file the lab read off with the vendor's tool.
READ_BY_HARNESS = "read-by-harness"
SUPPLIED_FILE = "supplied-file"


@dataclass(frozen=True)
class DumpResult:
    """A verified image of one region. With the dumpframe protocol: its length and sha256 match
    the BEGIN record and every frame's CRC passed. With another transfer (`method`; see
    harness/interfaces/serial_transfer.py) its checks passed; the dumpframe counts are 0 then
    and `stats` holds the transfer's own. `provenance` says where the bytes came from (the
    command typed, the path, the board's own digest; for a supplied file who read it with what)."""

    name: str
    data: bytes = field(repr=False)
    sha256: str
    size: int
    frame_size: int = 0
    frames: int = 0
    resend_rounds: int = 0
    frames_requested: int = 0
    corrupt_records: int = 0
    duplicate_frames: int = 0
    skipped_bytes: int = 0
    rx_bytes: int = 0
    tx_bytes: int = 0
    seconds: float = 0.0
    method: str = "dumpframe"
    strength: str = READ_BY_HARNESS
    provenance: dict[str, Any] = field(default_factory=dict)
    stats: dict[str, int] = field(default_factory=dict)

    @property
    def overhead(self) -> float:
        """Bytes read from the console per image byte (echo, chatter, retransmissions included)."""
        return self.rx_bytes / self.size if self.size else float("inf")

    @property
    def throughput(self) -> float:
        """Image bytes per second."""
        return self.size / self.seconds if self.seconds > 0 else float("inf")

    def to_facts(self) -> dict[str, Any]:
        """Plain data for a run record: integers and text only (signed records hold no floats)."""
        facts: dict[str, Any] = {"region": self.name, "size": self.size, "sha256": self.sha256,
                                 "method": self.method, "strength": self.strength,
                                 "provenance": dict(self.provenance)}
        if self.method == "dumpframe":
            facts.update({"frame_size": self.frame_size, "frames": self.frames, "resend_rounds": self.resend_rounds,
                          "frames_requested": self.frames_requested, "corrupt_records": self.corrupt_records,
                          "duplicate_frames": self.duplicate_frames, "skipped_bytes": self.skipped_bytes})
        else:
            facts["stats"] = dict(self.stats)
        facts.update({"rx_bytes": self.rx_bytes, "tx_bytes": self.tx_bytes,
                      "microseconds": int(round(self.seconds * 1e6))})
        return facts


def dump_region(console: SerialConsole, name: str, *, timeout: float | None = None,
                start_timeout: float | None = None,
                idle_timeout: float | None = None, max_rounds: int | None = None, max_size: int | None = None,
                command: str | None = None, on_frame: Callable[[int, int], None] | None = None) -> DumpResult:
    """Dump flash region `name` with the dumpframe protocol; returns the verified image.

    Sends ``dump_command`` (``dump {name}``) at the prompt, collects DATA frames, asks for
    missing or damaged ones (at most `max_rounds` RESEND rounds), checks the length and the
    sha256 from BEGIN, sends DONE and waits for the prompt. Anything short of that raises
    ConsoleError (after telling the board ABORT where possible); partial data is never
    returned. `on_frame(have, total)` is called after each new frame (total 0 before BEGIN).
    """
    cfg = console.config
    console._prompt()
    console._require_open()
    timeout = float(cfg["dump_timeout"] if timeout is None else timeout)
    start_timeout = float(cfg["dump_start_timeout"] if start_timeout is None else start_timeout)
    idle_timeout = float(cfg["dump_idle_timeout"] if idle_timeout is None else idle_timeout)
    max_rounds = int(cfg["dump_max_rounds"] if max_rounds is None else max_rounds)
    max_size = int(cfg["dump_max_size"] if max_size is None else max_size)
    cmd = (command or cfg["dump_command"]).format(name=name)
    console._drain()
    console._reset_text()  # the dump's own records are not text; chatter is judged in _DumpState
    rx0, tx0 = console.transcript.rx_bytes, console.transcript.tx_bytes

    def report(have: int, total: int) -> None:
        if state.begin is not None:
            size = state.begin.total_length
            progress.update(f"dump {name}", done=min(size, have * state.begin.frame_size), total=size, unit="B")
        if on_frame is not None:
            on_frame(have, total)
    state = _DumpState(console, name, cmd, timeout, start_timeout, idle_timeout, max_rounds, max_size, report)
    console.transcript.note(f"dump {name!r}: sending {cmd!r}")
    console.last_command = cmd
    console.send_line(cmd)
    try:
        image, begin = state.run()
    except ProbeError as e:  # a ConsoleError
        progress.done(f"dump {name}", "failed")
        state.keep_said(flush=True)
        if state.stream is not None and console._ser is not None:
            try:
                console.write(Abort(state.stream, str(e)[:1000]).encode())
            except ProbeError:
                pass
        raise
    state.keep_said()
    seconds = time.monotonic() - state.t0
    progress.done(f"dump {name}", f"{len(image)} bytes in {seconds:.1f} s")
    console.write(Done(begin.stream).encode())
    try:
        state.back_at_prompt(max(1.0, min(10.0, console.timeout)))
    except ProbeError as e:  # a ConsoleError
        state.keep_said(flush=True)
        raise console._error(f"dump of {name!r}: the image arrived and verified (sha256 {begin.sha256_hex}) but "
                             f"the board did not return to its prompt after DONE: {e}",
                             details={"region": name, "sha256": begin.sha256_hex}) from e
    state.keep_said()
    console.transcript.note(f"dump {name!r}: {len(image)} bytes, sha256 {begin.sha256_hex}, "
                            f"{state.rounds} RESEND rounds, {state.requested} frames requested")
    return DumpResult(name=name, data=image, sha256=begin.sha256_hex, size=len(image), frame_size=begin.frame_size,
                      frames=begin.frame_count, resend_rounds=state.rounds, frames_requested=state.requested,
                      corrupt_records=state.decoder.corrupt, duplicate_frames=state.duplicates,
                      skipped_bytes=state.decoder.skipped_bytes,
                      rx_bytes=console.transcript.rx_bytes - rx0, tx_bytes=console.transcript.tx_bytes - tx0,
                      seconds=seconds, provenance={"command": cmd, "console": console.url})


class _DumpState:
    """The host side of one dump (see SerialConsole.dump_region)."""

    CHATTER_KEEP = 64 << 10

    def __init__(self, console: SerialConsole, name: str, cmd: str, timeout: float, start_timeout: float,
                 idle_timeout: float, max_rounds: int, max_size: int, on_frame: Callable[[int, int], None] | None) -> None:
        self.c = console
        self.name, self.cmd = name, cmd
        self.timeout, self.start_timeout, self.idle_timeout = timeout, start_timeout, idle_timeout
        self.max_rounds, self.max_size, self.on_frame = max_rounds, max_size, on_frame
        self.t0 = time.monotonic()
        self.decoder = FrameDecoder()
        self.stream: int | None = None
        self.begin: Begin | None = None
        self.frames: dict[int, bytes] = {}
        self.missing: set[int] = set()
        self.buffered = 0  # payload bytes held before BEGIN
        self.rounds = 0
        self.requested = 0
        self.duplicates = 0
        self.stale = 0
        self.chatter = bytearray()
        self.chatter_cleaner = TextCleaner()
        self.chatter_text = ""
        # Everything the board printed between records, as text: kept as unread text after the
        # dump command (SerialConsole.take_unread), so what a board says mid-dump is judged too.
        self.sent_at = len(console.transcript)
        self.said = TextCleaner()
        self.said_text: list[str] = []
        self.said_len = 0

    def fail(self, message: str) -> ConsoleError:
        have = len(self.frames)
        total = self.begin.frame_count if self.begin else None
        details = {"region": self.name, "frames_have": have, "frames_total": total, "resend_rounds": self.rounds,
                   "corrupt_records": self.decoder.corrupt, "seconds": time.monotonic() - self.t0}
        progress = f"{have}/{total if total is not None else '?'} frames"
        return self.c._error(f"dump of {self.name!r} failed ({progress}, {self.rounds} RESEND rounds): {message}",
                             details=details)

    def _frame_ok(self, d: Data) -> str | None:
        b = self.begin
        assert b is not None
        count = b.frame_count
        if d.seq >= count:
            return f"seq {d.seq} beyond the {count} frames BEGIN announced"
        expect = b.frame_size if d.seq < count - 1 else b.total_length - (count - 1) * b.frame_size
        if len(d.payload) != expect:
            return f"frame {d.seq} carries {len(d.payload)} bytes, expected {expect}"
        if d.last != (d.seq == count - 1):
            return f"frame {d.seq} has the LAST flag {'set' if d.last else 'clear'} wrongly"
        return None

    def _accept(self, d: Data) -> None:
        if d.seq in self.frames:
            self.duplicates += 1
            return
        if self.begin is not None:
            problem = self._frame_ok(d)
            if problem:
                self.c.transcript.note(f"dump {self.name!r}: dropped a frame: {problem}")
                return
            self.missing.discard(d.seq)
        else:
            self.buffered += len(d.payload)
            if self.buffered > self.max_size:
                raise self.fail(f"more than {self.max_size} bytes of frames without a BEGIN record")
        self.frames[d.seq] = d.payload
        if self.on_frame is not None:
            self.on_frame(len(self.frames), self.begin.frame_count if self.begin else 0)

    def _on_begin(self, b: Begin) -> None:
        if self.begin is not None:
            if b != self.begin:
                raise self.fail(f"BEGIN changed during the dump: {self.begin} then {b}")
            return
        if b.name != self.name:
            raise self.fail(f"board announced region {b.name!r}, asked for {self.name!r}")
        if b.total_length > self.max_size:
            raise self.fail(f"region is {b.total_length} bytes, more than the {self.max_size}-byte limit")
        self.begin = b
        early = dict(self.frames)
        self.frames.clear()  # (cleared in place: run() holds a reference)
        self.missing = set(range(b.frame_count))
        for seq, payload in early.items():
            self._accept(Data(b.stream, seq, payload, seq == b.frame_count - 1))

    def _adopt(self, stream: int, is_begin: bool) -> bool:
        """Is this record part of our dump? The first record names the stream."""
        if self.stream is None or (is_begin and self.begin is None and stream != self.stream):
            if self.stream is not None:
                self.c.transcript.note(f"dump {self.name!r}: switching from stream {self.stream} to {stream}")
                self.frames.clear()
                self.buffered = 0
            self.stream = stream
            return True
        if stream != self.stream:
            self.stale += 1
            return False
        return True

    def _said(self, data: bytes) -> None:
        text = self.said.feed(data)
        self.said_text.append(text)
        self.said_len += len(text)
        if self.said_len > self.c.max_bytes:
            raise self.fail(f"the board printed more than {self.c.max_bytes} characters of text during the dump")

    def keep_said(self, *, flush: bool = False) -> None:
        """Hand what the board printed between records to the console as unread text (the echo
        of the command left out). `flush`: the dump is over (failed): what the decoder still
        holds is read as text too (a record still arriving, after success, is not)."""
        if flush:
            self.said_text += [self.said.feed(ev.data) for ev in self.decoder.flush() if type(ev) is Skipped]
        self.said_text.append(self.said.feed(b"", final=True))
        text = "".join(self.said_text)
        if self.c.echo:
            text = re.sub(r"\A\s*" + re.escape(self.cmd) + r"[ \t]*\n", "", text, count=1)
        self.c._keep_unread(text, self.c.transcript.index("rx", self.sent_at), self.cmd)
        self.said_text, self.said_len = [], 0

    def back_at_prompt(self, seconds: float) -> None:
        """After DONE: read until the prompt, through the decoder (records still in flight, an END,
        are not text). The text before the prompt is said text; what follows it is the console's."""
        c = self.c
        deadline = time.monotonic() + seconds
        start = len(self.said_text)
        while True:
            text = "".join(self.said_text[start:])
            m = c._prompt().search(text)
            if m:
                self.said_text[start:] = [text[: m.start()]]
                if m.end() < len(text):  # after the prompt: the console's text view, as if it had read it
                    c._pending.add(text[m.end() :])
                    c._unread_from = c._last_rx
                return
            if time.monotonic() >= deadline:
                raise c._error(f"timed out after {seconds:.2f} s waiting for prompt {c.prompt_description}; "
                               f"last output: '{text[-200:]}'")
            data = c._read_chunk(deadline, f"waiting for the prompt after the dump of {self.name!r}")
            for ev in self.decoder.feed(data) if data else ():
                if type(ev) is Skipped:
                    self._said(ev.data)

    def _chatter(self, data: bytes) -> None:
        if self.stream is not None or len(self.chatter) >= self.CHATTER_KEEP:
            return
        data = data[: self.CHATTER_KEEP - len(self.chatter)]
        self.chatter += data
        self.chatter_text += self.chatter_cleaner.feed(data)
        text = self.chatter_text
        if self.c.echo:
            # Only a prompt after the echo of the command is the board's answer to it; one before
            # is stale (e.g. a second prompt from an Enter that followed an ABORT).
            echo = re.search(re.escape(self.cmd) + r"[ \t]*\n", text)
            if echo is None:
                return
            text = text[echo.end() - 1 :]
        if self.c._prompt().search(text):
            said = text.strip().replace("\n", " | ")
            raise self.fail(f"the board answered {self.cmd!r} without starting a dump: '{said}'")

    def _request(self) -> bool:
        """Ask for what is missing; False when nothing is."""
        if self.begin is None:
            seqs = [BEGIN_SEQ]
        else:
            seqs = sorted(self.missing)
            if not seqs:
                return False
        if self.rounds >= self.max_rounds:
            first = ", ".join(str(s) for s in seqs[:8]) + (" ..." if len(seqs) > 8 else "")
            what = "the BEGIN record" if self.begin is None else f"{len(seqs)} frames ({first})"
            raise self.fail(f"{what} still missing after {self.max_rounds} RESEND rounds")
        self.rounds += 1
        self.c.transcript.note(f"dump {self.name!r}: RESEND round {self.rounds}: {len(seqs)} "
                               + ("record (BEGIN)" if self.begin is None else "frames"))
        assert self.stream is not None
        for i in range(0, len(seqs), MAX_RESEND_SEQS):
            self.c.write(Resend(self.stream, tuple(seqs[i : i + MAX_RESEND_SEQS])).encode())
        self.requested += len(seqs)
        return True

    def _complete(self) -> bool:
        return self.begin is not None and not self.missing

    def _doing(self) -> str:
        total = self.begin.frame_count if self.begin else "?"
        return f"dumping {self.name!r} ({len(self.frames)}/{total} frames)"

    def run(self) -> tuple[bytes, Begin]:
        deadline = self.t0 + self.timeout
        last_rx = time.monotonic()
        read = self.c._read_chunk
        feed = self.decoder.feed
        frames = self.frames
        while self.begin is None or self.missing:
            now = time.monotonic()
            if now >= deadline:
                raise self.fail(f"timed out after {self.timeout:.1f} s")
            if self.stream is None and now - self.t0 >= self.start_timeout:
                said = self.chatter_text.strip().replace("\n", " | ")[-300:]
                raise self.fail(f"no dump record within {self.start_timeout:.1f} s after {self.cmd!r}; "
                                f"the console said: '{said}'")
            data = read(deadline, self._doing)
            request = False
            if data:
                last_rx = time.monotonic()
                events = feed(data)
            elif self.stream is not None and time.monotonic() - last_rx >= self.idle_timeout:
                events = self.decoder.flush()
                request = True  # silence: END lost or frames truncated; ask for what is missing
                last_rx = time.monotonic()
            else:
                continue
            for ev in events:
                kind = type(ev)
                if kind is Data:
                    b = self.begin
                    # The common case inline: a full-size, new, in-range frame of our stream.
                    if (b is not None and ev.stream == self.stream and ev.seq < b.frame_count - 1
                            and len(ev.payload) == b.frame_size and not ev.last and ev.seq not in frames):
                        frames[ev.seq] = ev.payload
                        self.missing.discard(ev.seq)
                        if self.on_frame is not None:
                            self.on_frame(len(frames), b.frame_count)
                    elif self._adopt(ev.stream, False):
                        self._accept(ev)
                elif kind is Skipped:
                    self._said(ev.data)
                    self._chatter(ev.data)
                elif kind is Corrupt:
                    continue  # counted by the decoder; the frame is asked for again after END
                elif kind is Begin:
                    if self._adopt(ev.stream, True):
                        self._on_begin(ev)
                elif kind is End:
                    if self._adopt(ev.stream, False):
                        if self.begin is not None and ev.frame_count != self.begin.frame_count:
                            raise self.fail(f"END says {ev.frame_count} frames, BEGIN implies {self.begin.frame_count}")
                        request = True
                elif kind is Abort:
                    if self.stream is None or ev.stream == self.stream:
                        raise self.fail(f"the board aborted: {ev.reason!r}")
                # RESEND/DONE from the board side are not part of this protocol: ignored.
            if request and not self._complete():
                self._request()
        assert self.begin is not None
        b = self.begin
        image = b"".join(self.frames[i] for i in range(b.frame_count))
        if len(image) != b.total_length:
            raise self.fail(f"assembled {len(image)} bytes, BEGIN announced {b.total_length}")
        digest = hashlib.sha256(image).digest()
        if digest != b.sha256:
            raise self.fail(f"sha256 mismatch: BEGIN announced {b.sha256.hex()}, the received image hashes to "
                            f"{digest.hex()}")
        return image, b
