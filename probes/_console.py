"""Shared by the serial probes (firmware_dump, console_audit): one probe's use of the board's console.

Not a probe itself (it is not in PROBES). A board opens its console once per run and every
serial probe shares it, transcript included; each probe stores the slice of the transcript
covering its own work as evidence (`serial/<probe>-transcript.jsonl`), in a `finally`, so the
bytes are kept also when the probe fails half way.
"""

from __future__ import annotations

from typing import Any

from harness.evidence import EvidenceStore
from harness.interfaces.serial import TRANSCRIPT_MEDIA_TYPE, ConsoleError, SerialConsole
from harness.verdict import EvidenceRef, ProbeError


class ConsoleSession:
    """The board's console as one probe uses it; `store()` keeps the probe's transcript slice."""

    def __init__(self, board: Any, evidence: EvidenceStore, probe: str) -> None:
        self.evidence = evidence
        self.probe = probe
        self.name = f"serial/{probe}-transcript.jsonl"
        try:
            console = board.interface("serial")
        except ConsoleError as exc:  # the port would not open, or gave no prompt: keep what it said
            if exc.transcript is None:
                raise
            ref = evidence.add(f"serial/{probe}-open-transcript.jsonl", exc.transcript.to_jsonl(),
                               TRANSCRIPT_MEDIA_TYPE)
            raise ProbeError(f"{exc} (transcript: evidence {ref.name})") from None
        if not isinstance(console, SerialConsole):
            raise ProbeError(f"{probe}: the board's serial interface is a {type(console).__name__}, "
                             f"not a SerialConsole")
        self.console: SerialConsole = console
        self.start = len(console.transcript)
        self.ref: EvidenceRef | None = None

    def line(self, chunk: int) -> int:
        """The JSON line of the stored transcript slice that holds chunk `chunk` of the whole."""
        return chunk - self.start + 2

    def where(self, chunk: int) -> str:
        return f"{self.name} line {self.line(chunk)}"

    def failed(self, exc: ConsoleError, doing: str) -> ProbeError:
        """A ProbeError for a console failure, saying where its transcript is."""
        return ProbeError(f"{self.probe}: {doing}: {exc} (transcript: evidence {self.name})")

    def store(self) -> EvidenceRef:
        self.ref = self.evidence.add(self.name, self.console.transcript.slice(self.start).to_jsonl(),
                                     TRANSCRIPT_MEDIA_TYPE)
        return self.ref
