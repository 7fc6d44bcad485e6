"""Firmware transfers a real console already has (docs/serial.md#firmware-transfers-what-a-real-bench-needs).

`dump_region` (serial_dump.py) needs a board that speaks attestlab's own dumpframe protocol; no
real management controller does. A board config chooses, per board, a transfer its console
already offers (`interfaces.serial.transfer`, checked by `transfer_config`):

- ``zmodem`` / ``ymodem``: the BMC shell sends the file with lrzsz (``sz --binary PATH``,
  ``sz --ymodem -k PATH``); attestlab receives it with the pure receivers of
  harness/formats/zmodem.py and ymodem.py, whose CRCs are the protocol's;
- ``hexdump``: the console prints the region as hex (U-Boot ``md.b ADDR LEN``, BusyBox
  ``hexdump -C PATH``, ``xxd PATH``), parsed strictly by harness/formats/hexdump.py;
- ``file``: an image file the lab read off the board with the vendor's tool, with where it came
  from; lower-strength evidence (`SUPPLIED_FILE`), labelled so wherever it is judged.

Each ends in the same `DumpResult` as a dumpframe dump (with `method`, `strength`, `provenance`
and the transfer's own `stats`), or raises ConsoleError: partial data is never returned. Where
the board config names a ``sha256_command`` the board's own digest of the file (``sha256sum
PATH``) must equal that of the bytes received. Every byte is read and written through the
console, so it is in the transcript; every step ends by a deadline (``dump_timeout`` for the
whole, ``dump_start_timeout`` until the transfer starts, ``dump_idle_timeout`` of silence makes
the receiver ask again). A failed transfer is cancelled (the receiver's abort, then Ctrl-C)
and the console brought back to its prompt where it can be, so the next region can be tried.
What the board prints that is not the transfer is kept as unread text after the command
(`SerialConsole.take_unread`), so it is judged like all console text.
"""

from __future__ import annotations

import re
import string
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

from harness import progress
from harness.files import read_capped
from harness.formats.digest import sha256_hex
from harness.interfaces.serial_dump import READ_BY_HARNESS, SUPPLIED_FILE, DumpResult
from harness.interfaces.textclean import TextCleaner
from harness.verdict import ProbeError

if TYPE_CHECKING:
    from harness.interfaces.serial import ConsoleError, SerialConsole

METHODS = ("dumpframe", "zmodem", "ymodem", "hexdump", "file")
HEXDUMP_STYLES = ("md.b", "hexdump-C", "xxd")
# What is typed at the prompt, per method (hexdump: per style). Fields: {path}, {address}, {size}, {name}.
DEFAULT_COMMANDS = {"zmodem": "sz --binary {path}", "ymodem": "sz --ymodem -k {path}",
                    "md.b": "md.b {address:#x} {size:#x}", "hexdump-C": "hexdump -C {path}", "xxd": "xxd {path}"}
_STYLE_OF_COMMAND = {"md.b": "md.b", "hexdump": "hexdump-C", "xxd": "xxd"}
_FIELDS = ("path", "address", "size", "name")
# A path is typed into the board's shell: plain characters only, so it cannot be two commands.
_PATH = re.compile(r"^[A-Za-z0-9_./+@:,-]{1,1024}$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
# sha256sum's line: the digest, two spaces (or " *" in binary mode), the file name as given.
_SHA256SUM_LINE = re.compile(r"^\s*([0-9A-Fa-f]{64}) [ *](.*?)\s*$")
_CHATTER_KEEP = 64 << 10  # characters of text kept while waiting for a transfer to start


class TransferSettingsError(ValueError):
    """`interfaces.serial.transfer` is unusable; `key` names the setting (``regions.vbios.path``)."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"{key}: {message}" if key else message)
        self.key = key
        self.message = message


@dataclass(frozen=True)
class RegionPlace:
    """Where the board holds one region, for the configured transfer."""

    path: str | None = None      # zmodem, ymodem, hexdump -C, xxd: the file on the board
    address: int | None = None   # md.b: where it is mapped
    size: int | None = None      # bytes; required for hex dumps, checked when given
    file: str | None = None      # file: the image the lab read off the board
    tool: str | None = None      # file: what read it (vendor tool and version)
    read_by: str | None = None   # file: who, as the lab says
    read_at: str | None = None   # file: when, as the lab says
    sha256: str | None = None    # file: the digest the lab recorded when it was read


@dataclass(frozen=True)
class TransferConfig:
    method: str = "dumpframe"
    command: str | None = None          # what is typed; None: DEFAULT_COMMANDS
    style: str | None = None            # hexdump only
    sha256_command: str | None = None   # the board's own digest of what it sends ("sha256sum {path}")
    regions: Mapping[str, RegionPlace] = field(default_factory=dict)

    @property
    def typed(self) -> str:
        """The command template typed at the prompt for a region."""
        return self.command or DEFAULT_COMMANDS[self.style or self.method]


_KEYS = {
    "dumpframe": {"method"},
    "zmodem": {"method", "command", "sha256_command", "regions"},
    "ymodem": {"method", "command", "sha256_command", "regions"},
    "hexdump": {"method", "command", "style", "sha256_command", "regions"},
    "file": {"method", "regions"},
}
_REGION_KEYS = {
    "zmodem": ({"path"}, {"size"}), "ymodem": ({"path"}, {"size"}),
    "md.b": ({"address", "size"}, set()), "hexdump-C": ({"path", "size"}, set()), "xxd": ({"path", "size"}, set()),
    "file": ({"file", "tool"}, {"read_by", "read_at", "sha256", "size"}),
}
_EXAMPLES = {"zmodem": "{path: /flash/vbios.bin}", "ymodem": "{path: /flash/vbios.bin}",
             "md.b": "{address: 0x08000000, size: 1048576}", "hexdump-C": "{path: /flash/vbios.bin, size: 1048576}",
             "xxd": "{path: /flash/vbios.bin, size: 1048576}",
             "file": "{file: /lab/images/vbios.rom, tool: \"nvflash 5.x --save\", read_by: J. Doe, read_at: 2026-11-30}"}


def _template(key: str, value: Any, needs: set[str]) -> str:
    """A command template: one line, only the known fields, the ones a region is found by present."""
    if not isinstance(value, str) or not value.strip() or "\n" in value or "\r" in value:
        raise TransferSettingsError(key, f"must be one console command line, got {value!r}")
    try:
        names = {f for _, f, _, _ in string.Formatter().parse(value) if f is not None}
        value.format(path="/p", address=0, size=1, name="r")
    except (ValueError, KeyError, IndexError, AttributeError) as e:
        raise TransferSettingsError(key, f"{value!r} is not a usable template ({e}); fields: "
                                         f"{', '.join('{' + f + '}' for f in _FIELDS)}") from None
    unknown = sorted(n for n in names if n not in _FIELDS)
    if unknown:
        raise TransferSettingsError(key, f"unknown field {{{unknown[0]}}} in {value!r} (known: "
                                         f"{', '.join('{' + f + '}' for f in _FIELDS)})")
    missing = sorted(needs - names)
    if missing:
        raise TransferSettingsError(key, f"{value!r} must name the region by {{{missing[0]}}}: otherwise every "
                                         f"region would be read from the same place")
    return value


def _count(key: str, value: Any, *, positive: bool) -> int:
    if isinstance(value, str):
        try:
            value = int(value, 0)
        except ValueError:
            pass
    if isinstance(value, bool) or not isinstance(value, int) or value < (1 if positive else 0):
        raise TransferSettingsError(key, f"must be {'a positive' if positive else 'a non-negative'} integer "
                                         f"(0x hex allowed), got {value!r}")
    return value


def _text(key: str, value: Any) -> str:
    if not isinstance(value, str) or not value.strip() or len(value) > 1024:
        raise TransferSettingsError(key, f"must be a non-empty string (at most 1024 characters), got {value!r}")
    return value


def _region(method: str, name: Any, spec: Any) -> RegionPlace:
    key = f"regions.{name}"
    if not isinstance(name, str) or not name:
        raise TransferSettingsError(key, "a region name must be text")
    required, optional = _REGION_KEYS[method]
    if not isinstance(spec, Mapping):
        raise TransferSettingsError(key, f"must be a mapping such as {_EXAMPLES[method]}, got {spec!r}")
    for k in spec:
        if k not in required | optional:
            raise TransferSettingsError(f"{key}.{k}", f"not a setting of a {method} region (known: "
                                                      f"{', '.join(sorted(required | optional))})")
    for k in sorted(required):
        if spec.get(k) is None:
            raise TransferSettingsError(f"{key}.{k}", f"required for {method}, e.g. {name}: {_EXAMPLES[method]}")
    place: dict[str, Any] = {}
    if spec.get("path") is not None:
        if not isinstance(spec["path"], str) or not _PATH.match(spec["path"]):
            raise TransferSettingsError(f"{key}.path", f"must be a path on the board of plain characters "
                                                       f"(letters, digits, _ . / + @ : , -), got {spec['path']!r}")
        place["path"] = spec["path"]
    if spec.get("address") is not None:
        place["address"] = _count(f"{key}.address", spec["address"], positive=False)
    if spec.get("size") is not None:
        place["size"] = _count(f"{key}.size", spec["size"], positive=True)
    for k in ("file", "tool", "read_by", "read_at"):
        if spec.get(k) is not None:
            place[k] = _text(f"{key}.{k}", spec[k])
    if spec.get("sha256") is not None:
        if not isinstance(spec["sha256"], str) or not _SHA256.match(spec["sha256"].lower()):
            raise TransferSettingsError(f"{key}.sha256", f"must be 64 hex digits, got {spec['sha256']!r}")
        place["sha256"] = spec["sha256"].lower()
    return RegionPlace(**place)


def transfer_config(value: Any) -> TransferConfig:
    """Check `interfaces.serial.transfer` (None: dumpframe); raises TransferSettingsError naming the setting."""
    if value is None or isinstance(value, TransferConfig):
        return value or TransferConfig()
    if not isinstance(value, Mapping):
        raise TransferSettingsError("", f"must be a mapping such as {{method: zmodem, regions: {{vbios: "
                                        f"{{path: /flash/vbios.bin}}}}}}, got {value!r}")
    method = value.get("method", "dumpframe")
    if method not in METHODS:
        raise TransferSettingsError("method", f"must be one of {', '.join(METHODS)}, got {method!r}")
    for k in value:
        if k not in _KEYS[method]:
            hint = " (the dumpframe command is interfaces.serial.dump_command)" if method == "dumpframe" else ""
            raise TransferSettingsError(str(k), f"not a setting of method {method} (known: "
                                                f"{', '.join(sorted(_KEYS[method]))}){hint}")
    if method == "dumpframe":
        return TransferConfig()
    style = value.get("style")
    command = value.get("command")
    if method == "hexdump":
        if style is None and command is not None:
            style = _STYLE_OF_COMMAND.get(str(command).split(" ", 1)[0])
        if style not in HEXDUMP_STYLES:
            raise TransferSettingsError("style", f"must be one of {', '.join(HEXDUMP_STYLES)} (the dump's shape), "
                                                 f"got {style!r}")
    kind = style or method
    needs = {"address", "size"} if kind == "md.b" else {"path"}
    if command is not None:
        command = _template("command", command, needs)
    sha256_command = value.get("sha256_command")
    if sha256_command is not None:
        if kind == "md.b":
            raise TransferSettingsError("sha256_command", "needs regions placed by path (sha256sum PATH); an md.b "
                                                          "region has an address")
        sha256_command = _template("sha256_command", sha256_command, {"path"})
    regions = value.get("regions")
    if not isinstance(regions, Mapping) or not regions:
        raise TransferSettingsError("regions", f"must map each region to where the board has it, e.g. "
                                               f"{{vbios: {_EXAMPLES[kind]}}}, got {regions!r}")
    places = {str(name): _region(kind, name, spec) for name, spec in regions.items()}
    return TransferConfig(method=method, command=command, style=style, sha256_command=sha256_command,
                          regions=places)


# --------------------------------------------------------------------------------------------
# The transfers


@dataclass(frozen=True)
class _Limits:
    timeout: float
    start_timeout: float
    idle_timeout: float
    max_size: int


def transfer_region(console: SerialConsole, name: str, transfer: TransferConfig, *, timeout: float,
                    start_timeout: float, idle_timeout: float, max_size: int) -> DumpResult:
    """Read region `name` with `transfer` (not dumpframe); the verified image or ConsoleError."""
    place = transfer.regions.get(name)
    if place is None:
        raise console._error(f"region {name!r} has no place in interfaces.serial.transfer.regions (method "
                             f"{transfer.method}; placed: {', '.join(transfer.regions)}): say where the board "
                             f"has it", details={"region": name})
    if place.size is not None and place.size > max_size:
        raise console._error(f"region {name!r}: {place.size} bytes, more than dump_max_size {max_size}",
                             details={"region": name})
    lim = _Limits(timeout, start_timeout, idle_timeout, max_size)
    if transfer.method == "file":
        return _supplied_file(console, name, place, max_size)
    console._prompt()
    console._require_open()
    if transfer.method == "hexdump":
        return _hexdump(console, name, transfer, place, lim)
    return _receive(console, name, transfer, place, lim)


def _command(template: str, name: str, place: RegionPlace) -> str:
    return template.format(path=place.path, address=place.address, size=place.size, name=name)


def _supplied_file(console: SerialConsole, name: str, place: RegionPlace, max_size: int) -> DumpResult:
    """An image the lab read off the board with the vendor's tool: lower-strength evidence."""
    assert place.file is not None
    path = Path(place.file)
    t0 = time.monotonic()
    try:
        data = read_capped(path, max_size)
    except OSError as e:
        raise console._error(f"region {name!r}: the image file {place.file!r} the lab supplied cannot be read: "
                             f"{e.strerror or e}", details={"region": name}) from None
    digest = sha256_hex(data)
    if place.sha256 is not None and place.sha256 != digest:
        raise console._error(f"region {name!r}: the image file {place.file!r} hashes to {digest}, but the lab "
                             f"recorded {place.sha256} when it was read off the board: not the file that was read",
                             details={"region": name})
    if place.size is not None and place.size != len(data):
        raise console._error(f"region {name!r}: the image file {place.file!r} has {len(data)} bytes, the board "
                             f"config says the region has {place.size}", details={"region": name})
    provenance = {"file": place.file, "resolved": str(path.resolve()), "sha256": digest, "size": len(data),
                  "tool": place.tool, "read_by": place.read_by, "read_at": place.read_at}
    console.transcript.note(f"region {name!r}: image file {place.file} supplied by the lab (read off the board by "
                            f"{place.tool}; not read by attestlab), {len(data)} bytes, sha256 {digest}")
    return DumpResult(name=name, data=data, sha256=digest, size=len(data), seconds=time.monotonic() - t0,
                      method="file", strength=SUPPLIED_FILE, provenance=provenance)


def _board_digest(console: SerialConsole, name: str, transfer: TransferConfig, place: RegionPlace,
                  lim: _Limits) -> dict[str, str]:
    """The board's own sha256 of the region's file (`sha256_command`); exactly one line naming it."""
    assert transfer.sha256_command is not None
    cmd = _command(transfer.sha256_command, name, place)
    sent = len(console.transcript)
    answer = console.command(cmd, timeout=max(console.timeout, lim.start_timeout))
    digests, others = [], []
    for line in answer.split("\n"):
        m = _SHA256SUM_LINE.match(line)
        if m:
            digests.append((m.group(1).lower(), m.group(2)))
        elif line.strip():
            others.append(line)
    said = answer.strip().replace("\n", " | ")[:300]
    named = [d for d, f in digests if f == place.path]
    if len(digests) != 1 or len(named) != 1:
        why = ("no sha256 line" if not digests else
               f"{len(digests)} sha256 lines" if len(digests) > 1 else
               f"a sha256 line for {digests[0][1]!r}, not {place.path!r}")
        raise console._error(f"region {name!r}: the board's {cmd!r} answered {why}: '{said}'",
                             details={"region": name})
    if others:  # e.g. a log line inside the answer: text like any other, judged with the rest
        console._keep_unread("\n".join(others), console.transcript.index("rx", sent), cmd)
    return {"sha256_command": cmd, "board_sha256": named[0]}


def _check_received(console: SerialConsole, name: str, data: bytes, place: RegionPlace,
                    board: dict[str, str] | None) -> str:
    digest = sha256_hex(data)
    if place.size is not None and len(data) != place.size:
        raise console._error(f"region {name!r}: received {len(data)} bytes, the board config says the region has "
                             f"{place.size}", details={"region": name, "sha256": digest})
    if board is not None and board["board_sha256"] != digest:
        raise console._error(f"region {name!r}: the board's own {board['sha256_command']!r} says "
                             f"{board['board_sha256']}, the bytes received hash to {digest} ({len(data)} bytes)",
                             details={"region": name, "sha256": digest})
    return digest


def _keep_text(console: SerialConsole, data: bytes, first_chunk: int, after: str) -> None:
    console._keep_unread(TextCleaner().feed(bytes(data), final=True), first_chunk, after)


def _back_at_prompt(console: SerialConsole, cmd: str, seconds: float, *, strip: str = "") -> None:
    """Read (as text) until the board's settled prompt; what came before it is unread text after `cmd`.

    The text view starts afresh at a line start: the transfer's bytes were no text, and a shell
    prints its prompt right after them (lrzsz's "OO" has no line end)."""
    console._reset_text()
    console._pending.context = "\n"
    sent = len(console.transcript)
    text = console.wait_prompt(timeout=seconds)
    if strip and text.startswith(strip):
        text = text[len(strip):]
    console._keep_unread(text, console.transcript.index("rx", sent), cmd)


def _recover(console: SerialConsole, cmd: str, stops: tuple[bytes, ...], seconds: float) -> None:
    """After a failed transfer: send each of `stops` (the protocol's cancel, then Ctrl-C) until
    the prompt is back. What arrives meanwhile is text like any other (kept as unread text); a
    board that does not come back is left to the caller's next sync, which fails."""
    console.last_command = cmd
    for stop in stops:
        try:
            if stop:
                console.write(stop)
            _back_at_prompt(console, cmd, seconds)
            return
        except ProbeError:  # (a ConsoleError: what it received is kept as unread text)
            continue


def _hexdump(console: SerialConsole, name: str, transfer: TransferConfig, place: RegionPlace,
             lim: _Limits) -> DumpResult:
    """The console prints the region as hex; parsed strictly (harness/formats/hexdump.py)."""
    from harness.formats.hexdump import HexDumpError, HexDumpParser

    style = transfer.style
    assert style is not None and place.size is not None
    board = _board_digest(console, name, transfer, place, lim) if transfer.sha256_command else None
    cmd = _command(transfer.typed, name, place)
    start = place.address if style == "md.b" else 0
    assert start is not None
    rx0, tx0, t0 = console.transcript.rx_bytes, console.transcript.tx_bytes, time.monotonic()
    console.transcript.note(f"hexdump {name!r}: sending {cmd!r} ({style}, {place.size} bytes)")
    sent = len(console.transcript)
    # About 4.3 characters a byte (xxd) to 5 (md.b, hexdump -C); twice that and the console's
    # own budget leaves room for chatter, and still ends a board that prints forever.
    budget = console.max_bytes + 10 * place.size
    try:
        with _reads_shown(console, f"dump {name}", place.size, 5.0):
            text = console.command(cmd, timeout=lim.timeout, max_bytes=budget)
    except ProbeError as e:  # a ConsoleError: what it received is kept as unread text
        _recover(console, cmd, (b"\x03",), max(1.0, min(10.0, console.timeout)))
        raise console._error(f"hexdump of {name!r} with {cmd!r} did not complete: {e}",
                             details={"region": name}) from None
    try:
        parser = HexDumpParser(style, start=start, length=place.size, max_length=lim.max_size)
        parser.feed(text + "\n")
        dump = parser.finish()
    except HexDumpError as e:
        console._keep_unread(text, console.transcript.index("rx", sent), cmd)  # all of it, to be judged
        raise console._error(f"hexdump of {name!r}: the answer to {cmd!r} is no complete {style} dump of "
                             f"{place.size} bytes from {start:#x}: {e}", details={"region": name}) from None
    if dump.chatter:  # lines that are not the dump: console text, judged like all other
        console._keep_unread("\n".join(t for _, t in dump.chatter), console.transcript.index("rx", sent), cmd)
    digest = _check_received(console, name, dump.data, place, board)
    seconds = time.monotonic() - t0
    progress.done(f"dump {name}", f"{len(dump.data)} bytes in {seconds:.1f} s")
    provenance = {"command": cmd, "console": console.url, "style": style,
                  **({"path": place.path} if place.path else {"address": place.address}), **(board or {})}
    console.transcript.note(f"hexdump {name!r}: {len(dump.data)} bytes, sha256 {digest}")
    return DumpResult(name=name, data=dump.data, sha256=digest, size=len(dump.data),
                      rx_bytes=console.transcript.rx_bytes - rx0, tx_bytes=console.transcript.tx_bytes - tx0,
                      seconds=seconds, method="hexdump", strength=READ_BY_HARNESS, provenance=provenance,
                      stats={"lines": dump.lines, "repeats": dump.repeats, "chatter_lines": len(dump.chatter)})


class _reads_shown:
    """While a text command reads a long answer (a hex dump), show its progress from the size of
    each block the console reads (`SerialConsole.on_rx`; the bytes are untouched)."""

    def __init__(self, console: SerialConsole, activity: str, size: int, chars_per_byte: float) -> None:
        self.console, self.activity, self.size, self.per = console, activity, size, chars_per_byte
        self.got = 0

    def _read(self, n: int) -> None:
        self.got += n
        progress.update(self.activity, done=min(self.size, int(self.got / self.per)), total=self.size, unit="B")

    def __enter__(self) -> None:
        self.console.on_rx = self._read

    def __exit__(self, *exc: Any) -> None:
        self.console.on_rx = None
        if exc[0] is not None:
            progress.done(self.activity, "failed")


def _receive(console: SerialConsole, name: str, transfer: TransferConfig, place: RegionPlace,
             lim: _Limits) -> DumpResult:
    """The board's shell sends the file with lrzsz; harness/formats/{zmodem,ymodem}.py receive it."""
    from harness.formats.zmodem import TransferError, ZmodemReceiver
    if transfer.method == "ymodem":
        from harness.formats.ymodem import YmodemReceiver

    board = _board_digest(console, name, transfer, place, lim) if transfer.sha256_command else None
    cmd = _command(transfer.typed, name, place)
    limit = place.size if place.size is not None else lim.max_size
    # Escaping at most doubles the bytes; retransmissions and headers add some: 3x, then no more.
    receiver_class = ZmodemReceiver if transfer.method == "zmodem" else YmodemReceiver  # noqa: F821
    receiver = receiver_class(max_size=limit, max_input=3 * limit + (1 << 20))
    console._drain()
    console._reset_text()  # the transfer's bytes are not text; what the board says around it is kept
    rx0, tx0 = console.transcript.rx_bytes, console.transcript.tx_bytes
    console.transcript.note(f"{transfer.method} {name!r}: sending {cmd!r}")
    console.last_command = cmd
    sent = len(console.transcript)
    console.send_line(cmd)
    run = _Reception(console, name, cmd, receiver, lim, sent)
    try:
        run.run()
        received = receiver.result()
    except (TransferError, ProbeError) as e:  # ProbeError: a ConsoleError from the port
        progress.done(f"dump {name}", "failed")
        run.keep_said()
        cancel = b""
        try:
            cancel = receiver.abort()
        except Exception:  # (a receiver that cannot say how to cancel: Ctrl-C still follows)
            pass
        # A board back at its prompt already needs only its line cleared (YMODEM's "C" was typed there).
        stops = (b"\x03",) if run.at_prompt else (cancel, b"\x03")
        _recover(console, cmd, stops, max(2.0, min(10.0, console.timeout)))
        problem = str(e).removeprefix(f"console {console.url}: ")
        raise console._error(f"{transfer.method} transfer of {name!r} ({cmd!r}) failed after "
                             f"{receiver.received} bytes: {problem}", details={"region": name}) from None
    seconds = time.monotonic() - run.t0
    data = received.data
    run.after_session()
    try:
        _back_at_prompt(console, cmd, max(1.0, min(10.0, console.timeout)), strip="OO")
    except ProbeError as e:
        raise console._error(f"{transfer.method} transfer of {name!r}: the file arrived ({len(data)} bytes) but the "
                             f"board did not return to its prompt: {e}", details={"region": name}) from None
    if received.size is not None and received.size != len(data):
        raise console._error(f"region {name!r}: the sender announced {received.size} bytes and sent {len(data)}",
                             details={"region": name})
    assert place.path is not None
    asked = place.path.rsplit("/", 1)[-1]
    if received.name not in (asked, place.path, place.path.lstrip("/")):  # sz sends the base name, -f the path
        raise console._error(f"region {name!r}: {cmd!r} sent a file named {received.name[:256]!r}, not the "
                             f"{asked!r} asked for", details={"region": name})
    digest = _check_received(console, name, data, place, board)
    progress.done(f"dump {name}", f"{len(data)} bytes in {seconds:.1f} s")
    provenance = {"command": cmd, "console": console.url, "path": place.path, "protocol": received.protocol,
                  "sent_name": received.name[:256], "announced_size": received.size, **(board or {})}
    console.transcript.note(f"{transfer.method} {name!r}: {len(data)} bytes, sha256 {digest}")
    stats = {k: v for k, v in received.stats.items() if isinstance(v, int) and not isinstance(v, bool)}
    return DumpResult(name=name, data=data, sha256=digest, size=len(data),
                      rx_bytes=console.transcript.rx_bytes - rx0, tx_bytes=console.transcript.tx_bytes - tx0,
                      seconds=seconds, method=transfer.method, strength=READ_BY_HARNESS, provenance=provenance,
                      stats=stats)


class _Reception:
    """Drives a receiver over the console: raw reads, its replies written back, by deadlines."""

    def __init__(self, console: SerialConsole, name: str, cmd: str, receiver: Any, lim: _Limits, sent: int) -> None:
        self.c, self.name, self.cmd, self.receiver, self.lim = console, name, cmd, receiver, lim
        self.sent = sent
        self.t0 = time.monotonic()
        self.echo = re.compile(re.escape(cmd.strip().encode()) + rb"[ \t]*\r*\n") if console.echo else None
        self.before = bytearray()  # bytes before the echo of the command: text
        self.started = False       # the sender has spoken the protocol (the receiver answered or took data)
        self.said = TextCleaner()  # what the board says after the echo until the transfer starts
        self.said_text = ""
        self.at_prompt = False     # the board's shell printed its prompt: the sender is gone
        self.tail = b""            # the last bytes received (is the prompt at their end?)
        prompt = console.config.get("prompt")
        self.prompt_at_end = re.compile(
            (re.escape(str(prompt).rstrip()) if prompt is not None else f"(?:{console.config.get('prompt_regex')})")
            + r"\s*\Z")

    def fail(self, message: str) -> ConsoleError:
        return self.c._error(f"{message} ({self.receiver.received} bytes received in "
                             f"{time.monotonic() - self.t0:.1f} s)", details={"region": self.name})

    def keep_said(self) -> None:
        """Text the board printed around the transfer, kept as unread text after the command: before
        the echo, then what the receiver found no part of the file (`take_noise`: text among or
        inside its frames, all of it after the echo once the transfer started)."""
        noise = self.receiver.take_noise()
        after = TextCleaner().feed(noise, final=True) if self.started else self.said_text
        text = TextCleaner().feed(bytes(self.before), final=True) + after
        self.c._keep_unread(text, self.c.transcript.index("rx", self.sent), self.cmd)
        self.before.clear()
        self.said_text = ""

    def _past_echo(self, data: bytes) -> bytes:
        """Until the echo of the command has come: hold bytes; return those after it."""
        if self.echo is None:
            return data
        self.before += data
        m = self.echo.search(self.before)
        if m is None:
            if len(self.before) > _CHATTER_KEEP:
                raise self.fail(f"no echo of {self.cmd!r} within {len(self.before)} bytes")
            return b""
        rest = bytes(self.before[m.end():])
        del self.before[m.start():]
        self.echo = None
        return rest

    def _watch_answer(self, data: bytes) -> None:
        """Before the transfer starts: a prompt means the board answered without starting one."""
        if len(self.said_text) < _CHATTER_KEEP:
            self.said_text += self.said.feed(data[: _CHATTER_KEEP - len(self.said_text)])
        m = self.c._prompt().search(self.said_text)
        if m:
            self.at_prompt = True
            said = self.said_text[: m.start()].strip().replace("\n", " | ")[-300:]
            raise self.fail(f"the board answered {self.cmd!r} without starting a transfer: '{said}'")

    def _sender_gone(self) -> bool:
        """After a silence: do the last bytes end with the shell's prompt? Then the sender exited
        (killed, crashed) and waiting for it to resume only wastes the deadline."""
        text = TextCleaner().feed(self.tail, final=True)
        self.at_prompt = bool(self.prompt_at_end.search(text))
        return self.at_prompt

    def run(self) -> None:
        c, receiver, lim = self.c, self.receiver, self.lim
        deadline = self.t0 + lim.timeout
        opening = receiver.start()
        # YMODEM's receiver speaks first ("C"); a ZMODEM receiver answers the sender's ZRQINIT,
        # so nothing reaches the shell before sz runs (a ZRINIT typed at a prompt is a command).
        speaks_first = type(receiver).__name__.startswith("Ymodem")
        last_rx = time.monotonic()
        activity = f"dump {self.name}"
        if self.echo is None and speaks_first:
            c.write(opening)
        while not receiver.done:
            now = time.monotonic()
            if now >= deadline:
                raise self.fail(f"timed out after {lim.timeout:.1f} s")
            if not self.started and now - self.t0 >= lim.start_timeout:
                said = (TextCleaner().feed(bytes(self.before), final=True) + self.said_text).strip()
                raise self.fail(f"no transfer started within {lim.start_timeout:.1f} s after {self.cmd!r}; the "
                                f"console said: '{said.replace(chr(10), ' | ')[-300:]}'")
            data = c._read_chunk(min(deadline, last_rx + lim.idle_timeout), lambda: f"receiving {self.name!r}")
            if data:
                last_rx = time.monotonic()
                self.tail = (self.tail + data)[-512:]
                if self.echo is not None:
                    data = self._past_echo(data)
                    if self.echo is None and speaks_first:
                        c.write(opening)
                    if not data:
                        continue
                if not self.started:
                    self._watch_answer(data)
                reply = receiver.feed(data)
                if not self.started and (reply or receiver.received > 0):
                    self.started = True
                    self.said_text = ""  # (the receiver's noise holds what came before, kept_said)
                if reply:
                    c.write(reply)
                progress.update(activity, done=receiver.received, total=receiver.expected, unit="B")
            elif time.monotonic() - last_rx >= lim.idle_timeout:
                last_rx = time.monotonic()
                if self.started and self._sender_gone():
                    raise self.fail("the sender stopped and the board's prompt came back")
                if self.echo is None:  # silence after the echo: the receiver asks again
                    reply = receiver.on_timeout()
                    if reply:
                        c.write(reply)
        self.keep_said()

    def after_session(self, seconds: float = 1.0) -> None:
        """After the session: ZMODEM's sender still says "OO" (over and out) before its shell's
        prompt, with no line end; the receiver takes it and leaves the rest (`leftover`), which
        goes back to the console as text. Waits at most `seconds` for something after the "OO"."""
        if not hasattr(self.receiver, "leftover"):
            return
        until = time.monotonic() + seconds
        while not self.receiver.leftover and time.monotonic() < until:
            data = self.c._read_chunk(until, f"reading what follows the transfer of {self.name!r}")
            if data:
                self.receiver.feed(data)
        self.c._raw_left = self.receiver.leftover + self.c._raw_left
