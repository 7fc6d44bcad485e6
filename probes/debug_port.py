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

Check memory_access_refused (expected: the reference's `usb.debug_port`):
- PASS only when the DP's IDCODE was read (the port answers: the probe reached the target) and
  the memory read at the reference's address was refused with ACK FAULT before any word came.
- FAIL when a read through any MEM-AP returned data: the AP, the address and the bytes, in hex.
- ERROR for everything else: no CMSIS-DAP interface, a connect that fails, NO_ACK (nothing
  answers, so nothing is shown locked), WAIT retries exhausted, a protocol error, a timeout or
  disconnect, an IDCODE that is no ADIv5 IDCODE, a power-up not acknowledged, no MEM-AP at the
  index, a CSW or TAR write refused (the read was never tried), a read at another address than
  the reference's, or a reference without `usb.debug_port`.
Caution: without `debug_probe` the CMSIS-DAP interface is one of the board's own USB device, run
by the board's firmware: a firmware that lies can answer FAULT for an open port. Only an
independent probe (`usb.debug_probe`, a probe of the lab's own cabled to the board's SWD header)
measures the port itself; the PASS says which it was (fact `independent_probe`). A read that
returns data is a finding either way.
The read is real: on an unlocked board it reads `words` words of memory at `address`
(a boot ROM by default) and writes CSW and TAR of the AP; it writes nothing to memory.
"""

from __future__ import annotations

import json
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
CSW_SIZE_MASK, CSW_SIZE_WORD, CSW_ADDRINC_MASK = 0x07, 0x02, 0x30
_INFO = (("vendor", "VENDOR"), ("product", "PRODUCT"), ("serial", "SERIAL"),
         ("protocol_version", "PROTOCOL_VERSION"), ("firmware", "FIRMWARE"),
         ("capabilities", "CAPABILITIES"), ("packet_size", "PACKET_SIZE"))


def _is_int(value: Any, top: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= top


def target_problem(section: Any) -> str | None:
    """Why the reference's `usb.debug_port` cannot say where to read, or None."""
    if not isinstance(section, dict) or set(section) != {"address", "words", "ap"}:
        return f"reference {SECTION} must be {{address, words, ap}}, got {section!r}"
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
                       "designer": f"{decoded.designer:#05x}"}
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
    return csw_facts, memory


def _board_device(port: Any) -> Any:
    try:
        return port.device()
    except ProbeError:  # the board's own device is not there: the probe is another device
        return None


def collect(board: Any, params: dict[str, Any], evidence: EvidenceStore) -> Observation:
    clock_hz, wait_retry = _params(params)
    section = board.reference.lookup(SECTION)  # MissingReference / UntrustedReference → ERROR
    problem = target_problem(section)
    if problem:
        raise ProbeError(problem)
    target = {key: section[key] for key in ("address", "words", "ap")}
    port = board.interface("usb")
    device = port.debug_probe()
    facts: dict[str, Any] = {"probe_device": dict(device.location), "target": target,
                             "independent_probe": device is not _board_device(port)}
    transcript: list[dict[str, Any]] = []
    refs: list[EvidenceRef] = []
    from harness.interfaces.usb import CmsisDapLink  # here: plans load (and other kinds run) without pyusb

    try:
        link = CmsisDapLink(device)
        facts["link"] = {"interface": link.interface_number, "out_endpoint": f"{link.out_endpoint:#04x}",
                         "in_endpoint": f"{link.in_endpoint:#04x}"}
        facts.update(_converse(_Session(link, transcript), target, clock_hz, wait_retry))
        try:
            _Session(link, transcript).status("DAP_Disconnect", dap.DISCONNECT, dap.encode_disconnect())
        except ProbeError as exc:  # the decision is made; a probe that will not let go does not change it
            facts["disconnect"] = str(exc)
    finally:  # kept whatever happened: what was asked and answered is the evidence of an ERROR too
        refs.append(evidence.add(TRANSCRIPT_NAME, json.dumps(transcript, indent=1).encode(), "application/json"))
        transfers = keep_transfers(device, evidence)
        if transfers is not None:
            refs.append(transfers)
    facts["transcript"] = TRANSCRIPT_NAME
    return Observation("debug_port", facts, tuple(refs))


def _scanned(facts: dict[str, Any]) -> str:
    ports = facts.get("access_ports")
    if not isinstance(ports, list):
        return "no other access port was looked for"
    mem = 1 + len(facts.get("other_aps") or [])
    return (f"{mem} MEM-AP(s) of {AP_COUNT} access port numbers scanned ({len(ports)} present), "
            f"every one refused the read")


def memory_access_refused(observation: Observation, expected: Any) -> CheckResult:
    """The debug port answers, and refuses a memory read with FAULT."""
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
    others = [other["memory"] for other in facts.get("other_aps") or []]
    opened = [m for m in (memory, *others) if m["values"]]
    if opened:
        return CheckResult.failed(*(
            f"debug memory access is open: {len(m['values'])} of {m['words']} word(s) read at AP "
            f"{m.get('ap', target['ap'])}, address {m['address']:#010x} through the SWD port ({port}): "
            f"{' '.join(m['values'])} (bytes {m['bytes']}); evidence {TRANSCRIPT_NAME}" for m in opened), evidence=ev)
    where = f"AP {target['ap']}, address {memory['address']:#010x}"
    undecided = [m for m in others if not (m["refused"] and m["ack"] == dap.ack_name(dap.ACK_FAULT))]
    if undecided:
        return CheckResult.error(*(
            f"the memory read through AP {m['ap']} (another MEM-AP) ended with ACK {m['ack']} after {m['count']} "
            f"transfer(s): neither data nor a FAULT, undecided" for m in undecided), evidence=ev)
    if memory["refused"] and memory["ack"] == dap.ack_name(dap.ACK_FAULT):
        csw = facts.get("csw", {})
        through = ("an independent CMSIS-DAP probe (usb.debug_probe)" if facts.get("independent_probe") is True else
                   "the board's own CMSIS-DAP interface: the board's firmware answers for its SWD port, so an "
                   "independent probe (usb.debug_probe) cabled to the SWD header is the stronger evidence")
        return CheckResult.passed(
            f"debug memory access refused: the {port} answers, the read at {where} was answered ACK FAULT with no "
            f"data (CSW {csw.get('raw')}, DeviceEn {int(bool(csw.get('device_enabled')))}; evidence "
            f"{TRANSCRIPT_NAME}); {_scanned(facts)}; read through {through}", evidence=ev)
    return CheckResult.error(
        f"the memory read at {where} ended with ACK {memory['ack']} after {memory['count']} transfer(s)"
        f"{' and an SWD protocol error' if memory['protocol_error'] else ''}: neither data nor a FAULT, undecided",
        evidence=ev)


CHECKS = {"memory_access_refused": memory_access_refused}
