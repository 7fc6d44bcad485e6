"""debug_port — is the board's debug access port locked, as a production board's must be?

What: over the CMSIS-DAP v2 debug probe wired to the board's SWD port (a USB device: the board's
own, or the `usb` interface's `debug_probe`; the interface whose string contains "CMSIS-DAP",
its bulk OUT and IN endpoints), the probe asks what a debugger asks, in order: DAP_Info
(vendor, product, serial, protocol and firmware version, capabilities, packet size), DAP_Connect
in SWD mode, the SWJ clock, DAP_TransferConfigure, the SWD line reset and JTAG-to-SWD switch
sequence, a read of the DP's IDCODE, ABORT to clear sticky errors, a debug power-up request
through CTRL/STAT (and its acknowledgement), the IDR of every access port (APSEL 0..255, SELECT
bank 0xF), then for the reference's AP and every other MEM-AP found: its CSW, a write of CSW
(32-bit accesses, single increment) and TAR (the reference's address), then `words` reads of
DRW: a real attempt to read the board's memory (an AP left open beside the locked one is open). Every CMSIS-DAP command is decoded strictly
(harness/formats/cmsis_dap.py). The reference's `usb.debug_port` says where: {address, words, ap}.

Why: an open debug port reads and writes the board's memory and registers: keys, firmware,
the attestation state itself. A production board has its debug access fused shut; the board's
own security-state report (probes/security_state.py) is a claim its firmware makes, while this
read is a measurement: the `debug-unlocked` simulated board claims its debug lock is set, and
this probe reads its memory.

Evidence: every command and response, readable (`usb/cmsis-dap.json`: each step's name, the
request and response bytes in hex, the decoded answer or why it failed) and as USB transfers
(`usb/transfers.pcapng`); both stored also when a step fails. Facts: the probe device's
location, the CMSIS-DAP interface and endpoints, the DAP_Info answers, the IDCODE (version,
part number, designer), CTRL/STAT, the AP's IDR (class, type, designer), CSW, and the memory
read: address, words asked, the ACK (OK, WAIT, FAULT, NO_ACK) and the words and bytes read.

Check memory_access_refused (expected: the reference's `usb.debug_port`, {address, words, ap,
independent_probe: required | optional}):
- PASS only when the DP's IDCODE was read (the port answers: the probe reached the target) and
  the memory read at the reference's address was refused with ACK FAULT before any word came,
  through the lab's own probe when the reference requires it.
- FAIL when a read through any MEM-AP returned data, through either probe: the AP, the address
  and the bytes, in hex; and, when the board's bridge answered FAULT where the lab's probe read,
  "the board's debug bridge lies".
- ERROR for a refusal through the board's own device where the reference requires an independent
  probe (a refusal through the board's own firmware is its claim, not a measurement), and for
  everything else: no CMSIS-DAP interface, a connect that fails, NO_ACK (nothing
  answers, so nothing is shown locked), WAIT retries exhausted, a protocol error, a timeout or
  disconnect, an IDCODE that is no ADIv5 SW-DP's DPIDR (DPv0, a JTAG-DP's, or reserved bits
  set), a power-up not acknowledged, no MEM-AP at the index, a CSW or TAR write refused (the read was never tried), a read at another address than
  the reference's, or a reference without `usb.debug_port`.
Independent probe: without `debug_probe` the CMSIS-DAP interface is one of the board's own USB
device, run by the board's firmware: a firmware that lies answers FAULT for an open port (the
`lying-debug-bridge` simulated board). Only an independent probe (`usb.debug_probe`, a probe of
the lab's own cabled to the board's SWD header; not the board's VID:PID and serial, not at its
bus and address) measures the port itself (fact `independent_probe`, and `not_independent`
saying why not). With one, the same conversation is held with the board's own bridge too
(`usb/cmsis-dap-bridge.json`, fact `bridge`): it decides nothing alone, but data it reads is a
finding and a FAULT where the lab's probe read data is a lie. A read that returns data is a
finding either way.
The read is real: on an unlocked board it reads `words` words of memory at `address`
(a boot ROM by default) and writes CSW and TAR of the AP; it writes nothing to memory.
"""

from __future__ import annotations

import json
import os
import secrets
from typing import Any, Sequence

from harness.evidence import EvidenceStore
from harness.formats import cmsis_dap as dap
from harness.verdict import CheckResult, EvidenceRef, Observation, ProbeError
from probes.security_state import keep_transfers

PARAMS: dict[str, Any] = {
    "clock_hz": 1_000_000,   # SWD clock asked of the probe (DAP_SWJ_Clock)
    "wait_retry": 100,       # WAIT answers the probe retries before it gives up (then ERROR)
}

SECTION = "usb.debug_port"
TRANSCRIPT_NAME = "usb/cmsis-dap.json"
BRIDGE_TRANSCRIPT_NAME = "usb/cmsis-dap-bridge.json"      # the board's own bridge, beside the lab's probe
BRIDGE_TRANSFERS_NAME = "usb/transfers-bridge.pcapng"
CSW_SIZE_MASK, CSW_SIZE_WORD, CSW_ADDRINC_MASK = 0x07, 0x02, 0x30
_INFO = (("vendor", "VENDOR"), ("product", "PRODUCT"), ("serial", "SERIAL"),
         ("protocol_version", "PROTOCOL_VERSION"), ("firmware", "FIRMWARE"),
         ("capabilities", "CAPABILITIES"), ("packet_size", "PACKET_SIZE"))


def _is_int(value: Any, top: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= top


INDEPENDENCE = ("required", "optional")  # the reference's `independent_probe`: may the board's own bridge decide?


def target_problem(section: Any) -> str | None:
    """Why the reference's `usb.debug_port` cannot say where to read, or None."""
    if not isinstance(section, dict) or not {"address", "words", "ap"} <= set(section) \
            or not set(section) <= {"address", "words", "ap", "independent_probe"}:
        return f"reference {SECTION} must be {{address, words, ap[, independent_probe]}}, got {section!r}"
    if section.get("independent_probe", "optional") not in INDEPENDENCE:
        return (f"reference {SECTION}.independent_probe must be one of {', '.join(INDEPENDENCE)}, "
                f"got {section['independent_probe']!r}")
    if not _is_int(section["address"], 0xFFFFFFFF) or section["address"] % 4:
        return f"reference {SECTION}.address must be a word-aligned 32-bit address, got {section['address']!r}"
    if not _is_int(section["words"], 256) or not section["words"]:
        return f"reference {SECTION}.words must be 1..256, got {section['words']!r}"
    if not _is_int(section["ap"], 0xFF):
        return f"reference {SECTION}.ap must be an access port index 0..255, got {section['ap']!r}"
    return None


class _Session:
    """One conversation with the probe: every command and its answer go into the transcript."""

    def __init__(self, link: Any, transcript: list[dict[str, Any]]) -> None:
        self.link = link
        self.transcript = transcript

    def exchange(self, what: str, request: bytes) -> tuple[bytes, dict[str, Any]]:
        entry: dict[str, Any] = {"step": what, "request": bytes(request).hex()}
        self.transcript.append(entry)
        try:
            response = self.link.command(request)
        except ProbeError as exc:
            entry["error"] = str(exc)
            raise ProbeError(f"CMSIS-DAP {what}: {exc}") from None
        entry["response"] = bytes(response).hex()
        return response, entry

    def decoded(self, what: str, request: bytes, decode: Any) -> Any:
        response, entry = self.exchange(what, request)
        try:
            value = decode(response)
        except dap.DapError as exc:
            entry["error"] = str(exc)
            raise ProbeError(f"CMSIS-DAP {what}: {exc}") from None
        entry["decoded"] = value if isinstance(value, (int, str, type(None))) else bytes(value).hex()
        return value

    def status(self, what: str, command: int, request: bytes) -> None:
        self.decoded(what, request, lambda response: dap.decode_status(command, response))

    def transfer(self, what: str, requests: Sequence[Any]) -> Any:
        response, entry = self.exchange(what, dap.encode_transfer(requests))
        try:
            result = dap.decode_transfer(response, requests)
        except dap.DapError as exc:
            entry["error"] = str(exc)
            raise ProbeError(f"CMSIS-DAP {what}: {exc}") from None
        entry["decoded"] = {"count": result.count, "ack": dap.ack_name(result.ack),
                            "protocol_error": result.protocol_error, "values": [f"{v:#010x}" for v in result.values]}
        return result

    def transfer_ok(self, what: str, requests: Sequence[Any]) -> tuple[int, ...]:
        """A transfer that must complete in full: anything else is undecided (ERROR)."""
        result = self.transfer(what, requests)
        if result.protocol_error:
            raise ProbeError(f"CMSIS-DAP {what}: SWD protocol error (parity or line fault) after "
                             f"{result.count} of {len(requests)} transfer(s)")
        if result.ack != dap.ACK_OK or result.count != len(requests):
            raise ProbeError(f"CMSIS-DAP {what}: ACK {dap.ack_name(result.ack)} after {result.count} of "
                             f"{len(requests)} transfer(s){_ack_meaning(result.ack)}")
        return result.values


def _ack_meaning(ack: int) -> str:
    return {dap.ACK_NO_ACK: " (nothing answers on SWD: no target, no power, or the wrong wiring)",
            dap.ACK_WAIT: " (the target kept answering WAIT until the probe's retries ran out)",
            dap.ACK_FAULT: " (the target refused it)"}.get(ack, "")


def _decoded(decode: Any, value: int, what: str) -> Any:
    try:
        return decode(value)
    except dap.DapError as exc:  # a floating bus, a designer that is no maker: not an ADIv5 port
        raise ProbeError(f"{what} {value:#010x} is not what an ADIv5 debug port answers: {exc}") from None


def _read(ap: bool, register: int) -> Any:
    return dap.TransferRequest(ap=ap, read=True, register=register)


def _write(ap: bool, register: int, value: int) -> Any:
    return dap.TransferRequest(ap=ap, read=False, register=register, value=value)


def _params(params: dict[str, Any]) -> tuple[int, int]:
    clock, retry = params.get("clock_hz", PARAMS["clock_hz"]), params.get("wait_retry", PARAMS["wait_retry"])
    if not _is_int(clock, 100_000_000) or clock < 1000:
        raise ProbeError(f"debug_port: clock_hz must be 1000..100000000, got {clock!r}")
    if not _is_int(retry, 0xFFFF):
        raise ProbeError(f"debug_port: wait_retry must be 0..65535, got {retry!r}")
    return clock, retry


def _converse(session: _Session, target: dict[str, int], clock_hz: int, wait_retry: int) -> dict[str, Any]:
    facts: dict[str, Any] = {}
    info: dict[str, Any] = {}
    for name, constant in _INFO:
        info_id = getattr(dap, constant)
        info[name] = session.decoded(f"DAP_Info {name}", dap.encode_info(info_id),
                                     lambda response, i=info_id: dap.decode_info(i, response))
    facts["info"] = {k: (v if isinstance(v, (int, str)) else bytes(v).hex()) for k, v in info.items()}
    port = session.decoded("DAP_Connect SWD", dap.encode_connect(1), dap.decode_connect)
    if port != 1:
        raise ProbeError(f"CMSIS-DAP DAP_Connect SWD failed: the probe answered port {port} "
                         f"({'failed' if port == 0 else 'not SWD'})")
    session.status("DAP_SWJ_Clock", dap.SWJ_CLOCK, dap.encode_swj_clock(clock_hz))
    session.status("DAP_TransferConfigure", dap.TRANSFER_CONFIGURE, dap.encode_transfer_configure(0, wait_retry, 0))
    for n, (bits, data) in enumerate(dap.LINE_RESET_AND_SWITCH):
        session.status(f"DAP_SWJ_Sequence {n} ({bits} bits)", dap.SWJ_SEQUENCE, dap.encode_swj_sequence(bits, data))
    (idcode,) = session.transfer_ok("read DP IDCODE", [_read(False, dap.DP_IDCODE)])
    decoded = _decoded(dap.decode_idcode, idcode, "DP IDCODE")
    facts["idcode"] = {"raw": f"{idcode:#010x}", "version": decoded.version, "partno": f"{decoded.partno:#06x}",
                       "designer": f"{decoded.designer:#05x}", "dp_version": decoded.dp_version}
    session.transfer_ok("ABORT (clear sticky errors)", [_write(False, dap.DP_ABORT, dap.ABORT_CLEAR_ERRORS)])
    (ctrl_stat,) = session.transfer_ok("power up (CTRL/STAT)", [
        _write(False, dap.DP_CTRL_STAT, dap.CTRL_STAT_POWERUP_REQ), _read(False, dap.DP_CTRL_STAT)])[-1:]
    facts["ctrl_stat"] = f"{ctrl_stat:#010x}"
    if ctrl_stat & dap.CTRL_STAT_POWERUP_ACK != dap.CTRL_STAT_POWERUP_ACK:
        raise ProbeError(f"the debug power-up was not acknowledged: CTRL/STAT {ctrl_stat:#010x}")
    ap = target["ap"]
    ports = _scan_access_ports(session)
    facts["access_ports"] = [_ap_facts(n, idr) for n, idr in sorted(ports.items())]
    idr = ports.get(ap, 0)
    ap_idr = _decoded(dap.decode_ap_idr, idr, f"AP {ap} IDR")
    facts["ap_idr"] = _ap_facts(ap, idr)
    if not ap_idr.present or not ap_idr.is_mem_ap:
        raise ProbeError(f"AP {ap} is no MEM-AP (IDR {idr:#010x}): there is no memory to read through it")
    facts["csw"], facts["memory"] = _try_read(session, ap, target["address"], target["words"])
    # Every other MEM-AP reaches memory too (a core's own AHB-AP left open beside the locked one):
    # each is tried at the same address, and one that reads is as open as the reference's.
    facts["other_aps"] = []
    for n in sorted(ports):
        if n != ap and dap.decode_ap_idr(ports[n]).is_mem_ap:
            csw, memory = _try_read(session, n, target["address"], target["words"])
            facts["other_aps"].append({"ap": n, "csw": csw, "memory": memory})
    return facts


AP_COUNT = 256      # APSEL is 8 bits (ADIv5): an AP may hide at any of them
SCAN_BATCH = 32     # APs per DAP_Transfer: 32 SELECT writes and IDR reads fit a 512-byte packet


def _ap_facts(n: int, idr: int) -> dict[str, Any]:
    decoded = _decoded(dap.decode_ap_idr, idr, f"AP {n} IDR")
    return {"ap": n, "raw": f"{idr:#010x}", "class": decoded.ap_class, "type": decoded.type_name,
            "designer": f"{decoded.designer:#05x}", "revision": decoded.revision}


def _scan_access_ports(session: _Session) -> dict[int, int]:
    """The IDR of every access port that is there (IDR not 0), APSEL 0..255, a batch per transfer."""
    def idr_reads(numbers: range) -> list[Any]:
        return [r for n in numbers for r in (_write(False, dap.DP_SELECT, dap.dp_select(n, dap.AP_IDR)),
                                             _read(True, dap.AP_IDR & 0xC))]
    found: dict[int, int] = {}
    for first in range(0, AP_COUNT, SCAN_BATCH):
        numbers = range(first, first + SCAN_BATCH)
        values = session.transfer_ok(f"read the IDR of APs {first}..{numbers[-1]}", idr_reads(numbers))
        found.update({n: idr for n, idr in zip(numbers, values) if idr})
    return found


def _try_read(session: _Session, ap: int, address: int, words: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """Read `words` words at `address` through MEM-AP `ap`: its CSW facts and the read's outcome."""
    (csw,) = session.transfer_ok(f"read AP {ap} CSW", [_write(False, dap.DP_SELECT, dap.dp_select(ap, dap.AP_CSW)),
                                                       _read(True, dap.AP_CSW)])[-1:]
    csw_facts = {"raw": f"{csw:#010x}", "device_enabled": bool(csw & dap.CSW_DEVICE_EN)}
    word_csw = (csw & ~(CSW_SIZE_MASK | CSW_ADDRINC_MASK)) | CSW_SIZE_WORD | dap.CSW_ADDRINC_SINGLE
    try:
        session.transfer_ok(f"write AP {ap} CSW {word_csw:#010x} and TAR {address:#010x}",
                            [_write(True, dap.AP_CSW, word_csw), _write(True, dap.AP_TAR, address)])
    except ProbeError as exc:
        raise ProbeError(f"the memory read was never tried (AP {ap}): {exc}") from None
    result = session.transfer(f"read {words} word(s) of AP {ap} DRW at {address:#010x}",
                              [_read(True, dap.AP_DRW)] * words)
    data = b"".join(v.to_bytes(4, "little") for v in result.values)
    memory = {"ap": ap, "address": address, "words": words, "ack": dap.ack_name(result.ack), "count": result.count,
              "protocol_error": result.protocol_error, "values": [f"{v:#010x}" for v in result.values],
              "bytes": data.hex(), "refused": not result.values and result.ack == dap.ACK_FAULT
              and not result.protocol_error}
    if memory["refused"]:  # leave the port as a debugger would find it: sticky flags cleared (the next AP too)
        session.transfer_ok(f"ABORT (clear AP {ap}'s FAULT)", [_write(False, dap.DP_ABORT, dap.ABORT_CLEAR_ERRORS)])
        # A lock is the port's, not one address's: a target that refuses only the window it expects
        # a harness to read, or only its first access, is open. One word at each further address.
        memory["further"] = [_read_word(session, ap, word_csw, at) for at in further_addresses(address)]
    return csw_facts, memory


# The eight 512 MiB regions of the ARMv6/v7/v8-M memory map (code, SRAM, peripheral, RAM x2, device x2,
# system): an open port reads in at least one of them.
REGION_BASES = tuple(range(0, 1 << 32, 0x2000_0000))


def further_addresses(address: int) -> list[int]:
    """Where a refusal at `address` is tried again, one word each: the same address (a lock that
    held once), the next 4 KiB page, a word within 64 KiB that no board can know in advance, and
    each region base of the Arm memory map."""
    found = [address]
    for at in [(address + 0x1000) % (1 << 32), (address + 4 * (4 + secrets.randbelow(0x4000 - 4))) % (1 << 32),
               *REGION_BASES]:
        if at not in found:
            found.append(at)
    return found


def _read_word(session: _Session, ap: int, csw: int, address: int) -> dict[str, Any]:
    """One word of DRW through AP `ap` at `address` (SELECT, CSW, TAR, DRW in one DAP_Transfer)."""
    requests = [_write(False, dap.DP_SELECT, dap.dp_select(ap, dap.AP_CSW)), _write(True, dap.AP_CSW, csw),
                _write(True, dap.AP_TAR, address), _read(True, dap.AP_DRW)]
    result = session.transfer(f"read 1 word of AP {ap} DRW at {address:#010x}", requests)
    values = list(result.values)
    read = {"ap": ap, "address": address, "words": 1, "ack": dap.ack_name(result.ack), "count": result.count,
            "protocol_error": result.protocol_error, "values": [f"{v:#010x}" for v in values],
            "bytes": b"".join(v.to_bytes(4, "little") for v in values).hex(),
            "refused": not values and result.count == 3 and result.ack == dap.ACK_FAULT and not result.protocol_error}
    if not read["refused"] and not values:
        read["never_tried"] = result.count < 3
    if result.ack == dap.ACK_FAULT:
        session.transfer_ok(f"ABORT (clear AP {ap}'s FAULT at {address:#010x})",
                            [_write(False, dap.DP_ABORT, dap.ABORT_CLEAR_ERRORS)])
    return read


def _board_device(port: Any) -> Any:
    try:
        return port.device()
    except ProbeError:  # the board's own device is not there: the probe is another device
        return None


def _identity(location: dict[str, Any]) -> tuple[Any, ...]:
    return location.get("vid"), location.get("pid"), location.get("serial")


def _place(location: dict[str, Any]) -> tuple[Any, ...]:
    return location.get("backend"), location.get("bus"), location.get("address")


def _server(address: str | None) -> Any:
    """A USB/IP server address as one place: a Unix socket by its real path, TCP by host and port."""
    if address is None:
        return None
    from harness.interfaces.usbip_backend import parse_server_address
    scheme, where = parse_server_address(address)
    return (scheme, os.path.realpath(where)) if scheme == "unix" else (scheme, where[0].lower(), where[1])


def independence(port: Any, probe: Any, board_device: Any) -> str | None:
    """Why `probe` is not a device of the lab's own beside the board's, or None when it is: a
    refusal through the board's own device is its firmware's answer, not a measurement."""
    settings = getattr(port, "settings", None)
    if settings is None or settings.debug_probe is None:
        return "the board config names no interfaces.usb.debug_probe: the read went through the board's own device"
    wanted = (settings.vid, settings.pid, settings.serial)
    location = probe.location
    if probe is board_device or _identity(location) == wanted:
        return (f"interfaces.usb.debug_probe names the board's own device ({location.get('vid'):04x}:"
                f"{location.get('pid'):04x} serial {location.get('serial')!r})")
    server = _server(settings.usbip)
    if server is not None and server == _server(settings.debug_probe.usbip):
        return (f"interfaces.usb.debug_probe is reached through the board's own USB/IP server ({settings.usbip}): "
                f"whoever serves the board's device serves the probe's answers too (a device there with the lab "
                f"probe's VID:PID and serial is what that server says it is)")
    if board_device is not None and (_identity(board_device.location) == _identity(location)
                                     or _place(board_device.location) == _place(location)):
        return (f"interfaces.usb.debug_probe found the board's own device (bus {location.get('bus')} address "
                f"{location.get('address')} through {location.get('backend')})")
    return None


def _conversation(device: Any, target: dict[str, int], clock_hz: int, wait_retry: int,
                  transcript: list[dict[str, Any]]) -> dict[str, Any]:
    """The whole debugger conversation over `device`'s CMSIS-DAP interface: its facts."""
    from harness.interfaces.usb import CmsisDapLink  # here: plans load (and other kinds run) without pyusb

    link = CmsisDapLink(device)
    facts: dict[str, Any] = {"link": {"interface": link.interface_number, "out_endpoint": f"{link.out_endpoint:#04x}",
                                      "in_endpoint": f"{link.in_endpoint:#04x}"}}
    facts.update(_converse(_Session(link, transcript), target, clock_hz, wait_retry))
    try:
        _Session(link, transcript).status("DAP_Disconnect", dap.DISCONNECT, dap.encode_disconnect())
    except ProbeError as exc:  # the decision is made; a probe that will not let go does not change it
        facts["disconnect"] = str(exc)
    return facts


def _bridge(device: Any, target: dict[str, int], clock_hz: int, wait_retry: int, evidence: EvidenceStore,
            refs: list[EvidenceRef]) -> dict[str, Any]:
    """The same read through the board's own CMSIS-DAP bridge, beside the lab's probe: what the
    board's firmware answers, to compare with the measurement (it decides nothing alone)."""
    transcript: list[dict[str, Any]] = []
    try:
        facts = _conversation(device, target, clock_hz, wait_retry, transcript)
        return {key: facts[key] for key in ("csw", "memory", "other_aps")}
    except ProbeError as exc:  # no bridge, or one that breaks: the lab's probe measured what counts
        return {"error": str(exc)}
    finally:
        refs.append(evidence.add(BRIDGE_TRANSCRIPT_NAME, json.dumps(transcript, indent=1).encode(), "application/json"))
        try:
            refs.append(evidence.add(BRIDGE_TRANSFERS_NAME, device.transfers_pcapng(), "application/vnd.tcpdump.pcapng"))
        except Exception:  # noqa: BLE001 - the comparison is a fact, its record must not replace the verdict
            pass


def collect(board: Any, params: dict[str, Any], evidence: EvidenceStore) -> Observation:
    clock_hz, wait_retry = _params(params)
    section = board.reference.lookup(SECTION)  # MissingReference / UntrustedReference → ERROR
    problem = target_problem(section)
    if problem:
        raise ProbeError(problem)
    target = {key: section[key] for key in ("address", "words", "ap")}
    port = board.interface("usb")
    board_device = _board_device(port)
    device = port.debug_probe()
    not_independent = independence(port, device, board_device)
    facts: dict[str, Any] = {"probe_device": dict(device.location), "target": target,
                             "independent_probe": not_independent is None}
    if not_independent:
        facts["not_independent"] = not_independent
    transcript: list[dict[str, Any]] = []
    refs: list[EvidenceRef] = []
    try:
        facts.update(_conversation(device, target, clock_hz, wait_retry, transcript))
    finally:  # kept whatever happened: what was asked and answered is the evidence of an ERROR too
        refs.append(evidence.add(TRANSCRIPT_NAME, json.dumps(transcript, indent=1).encode(), "application/json"))
        transfers = keep_transfers(device, evidence)
        if transfers is not None:
            refs.append(transfers)
    if not_independent is None and board_device is not None:
        facts["bridge"] = _bridge(board_device, target, clock_hz, wait_retry, evidence, refs)
    facts["transcript"] = TRANSCRIPT_NAME
    return Observation("debug_port", facts, tuple(refs))


def _scanned(facts: dict[str, Any]) -> str:
    ports = facts.get("access_ports")
    if not isinstance(ports, list):
        return "no other access port was looked for"
    mem = 1 + len(facts.get("other_aps") or [])
    tried = len((facts.get("memory") or {}).get("further") or [])
    return (f"{mem} MEM-AP(s) of {AP_COUNT} access port numbers scanned ({len(ports)} present), "
            f"every one refused the read, at the reference's address and {tried} further one(s)")


CLAIM_NOT_MEASUREMENT = ("a refusal through the board's own firmware is its claim, not a measurement: name the "
                         "lab's probe as interfaces.usb.debug_probe")


def _memories(facts: Any) -> list[dict[str, Any]]:
    """Every memory read of a conversation: the reference's AP's, then each other MEM-AP's."""
    if not isinstance(facts, dict) or not isinstance(facts.get("memory"), dict):
        return []
    return _with_further([facts["memory"], *(other["memory"] for other in facts.get("other_aps") or [])])


def _with_further(memories: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each read and the one-word reads at further addresses that followed its refusal."""
    return [read for m in memories for read in (m, *(m.get("further") or []))]


def _open(m: dict[str, Any], ap: int, port: str, through: str) -> str:
    return (f"debug memory access is open{through}: {len(m['values'])} of {m['words']} word(s) read at AP "
            f"{m.get('ap', ap)}, address {m['address']:#010x} through the SWD port ({port}): "
            f"{' '.join(m['values'])} (bytes {m['bytes']})")


def _bridge_note(bridge: Any) -> str:
    if not isinstance(bridge, dict):
        return ""
    if "error" in bridge:
        return f"; the board's own bridge was not compared ({bridge['error']})"
    if all(m.get("refused") for m in _memories(bridge)):
        return f"; the board's own CMSIS-DAP bridge answered the same (evidence {BRIDGE_TRANSCRIPT_NAME})"
    return f"; the board's own CMSIS-DAP bridge neither read nor refused (evidence {BRIDGE_TRANSCRIPT_NAME})"


def memory_access_refused(observation: Observation, expected: Any) -> CheckResult:
    """The debug port answers, and refuses a memory read with FAULT (measured by the lab's own probe
    when the reference requires it)."""
    ev = observation.evidence
    problem = target_problem(expected)
    if problem:
        return CheckResult.error(problem, evidence=ev)
    facts = observation.facts
    memory, idcode, target = facts.get("memory"), facts.get("idcode"), facts.get("target")
    if not isinstance(memory, dict) or not isinstance(idcode, dict):
        return CheckResult.error(f"no memory read to judge (facts: {sorted(facts)})", evidence=ev)
    if target != {k: expected[k] for k in ("address", "words", "ap")}:
        return CheckResult.error(f"the read was tried at {target!r}, the reference says {expected!r}", evidence=ev)
    port = f"DP IDCODE {idcode['raw']}"
    others = _with_further([other["memory"] for other in facts.get("other_aps") or []])
    opened = [m for m in _with_further([memory]) + others if m["values"]]
    bridge = _memories(facts.get("bridge"))
    bridge_opened = [m for m in bridge if m.get("values")]
    if opened or bridge_opened:
        reasons = [f"{_open(m, target['ap'], port, '')}; evidence {TRANSCRIPT_NAME}" for m in opened]
        via_bridge = " through the board's own CMSIS-DAP bridge"
        reasons += [f"{_open(m, target['ap'], port, via_bridge)}; evidence {BRIDGE_TRANSCRIPT_NAME}"
                    for m in bridge_opened]
        if opened and bridge and not bridge_opened and all(m.get("refused") for m in bridge):
            csw = (facts["bridge"].get("csw") or {})
            reasons.append(
                f"the board's debug bridge lies: through the board's own CMSIS-DAP interface every read was answered "
                f"ACK FAULT (CSW {csw.get('raw')}, DeviceEn {int(bool(csw.get('device_enabled')))}), as a locked "
                f"port answers, while the lab's probe read the same SWD port; evidence {BRIDGE_TRANSCRIPT_NAME}")
        return CheckResult.failed(*reasons, evidence=ev)
    where = f"AP {target['ap']}, address {memory['address']:#010x}"
    further = [m for m in _with_further([memory]) if m is not memory]
    if memory["refused"] and not further:
        return CheckResult.error(f"the read at {where} was refused, but no further address was tried: a lock "
                                 f"of one address is not the port's", evidence=ev)
    undecided = [m for m in others + further if not (m["refused"] and m["ack"] == dap.ack_name(dap.ACK_FAULT))]
    if undecided:
        return CheckResult.error(*(
            f"the memory read through AP {m['ap']} at {m['address']:#010x} ended with ACK {m['ack']} after "
            f"{m['count']} transfer(s): neither data nor a FAULT, undecided" for m in undecided), evidence=ev)
    if memory["refused"] and memory["ack"] == dap.ack_name(dap.ACK_FAULT):
        independent = facts.get("independent_probe") is True
        refused = f"the read at {where} was answered ACK FAULT with no data"
        if not independent and expected.get("independent_probe") == "required":
            why = facts.get("not_independent") or "no independent probe read it"
            return CheckResult.error(f"{refused}, but {why}: {CLAIM_NOT_MEASUREMENT}", evidence=ev)
        csw = facts.get("csw", {})
        through = ("an independent CMSIS-DAP probe (usb.debug_probe)" if independent else
                   "the board's own CMSIS-DAP interface: the board's firmware answers for its SWD port, so an "
                   "independent probe (usb.debug_probe) cabled to the SWD header is the stronger evidence")
        return CheckResult.passed(
            f"debug memory access refused: the {port} answers, {refused} (CSW {csw.get('raw')}, DeviceEn "
            f"{int(bool(csw.get('device_enabled')))}; evidence {TRANSCRIPT_NAME}); {_scanned(facts)}; read "
            f"through {through}{_bridge_note(facts.get('bridge'))}", evidence=ev)
    return CheckResult.error(
        f"the memory read at {where} ended with ACK {memory['ack']} after {memory['count']} transfer(s)"
        f"{' and an SWD protocol error' if memory['protocol_error'] else ''}: neither data nor a FAULT, undecided",
        evidence=ev)


CHECKS = {"memory_access_refused": memory_access_refused}
