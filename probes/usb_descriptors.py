"""usb_descriptors — does the board's USB device expose only the functions the product declares?

What: reads the descriptors of the board's USB device (the `usb` interface: found by VID:PID and
serial, through pyusb on libusb or the USB/IP backend) with fresh GET_DESCRIPTOR control reads,
in full: the device descriptor, every configuration (its interfaces and alternate settings,
their endpoints, interface associations and class-specific descriptors), the LANGIDs and every
string they name, and the BOS. harness/formats/usb_descriptors.py decodes them strictly. It also
takes what the backend enumerated (pyusb's own descriptor objects, `UsbDevice.enumerated()`) and
compares the two: a device that shows the host's USB stack one set of descriptors and a fresh
read another is showing each reader what it likes. Through USB/IP it also compares what the
server's host enumerated (its devlist entry and import reply: on a bench the exporting kernel's
copy from the device's first enumeration). A USB 2.0 device's device qualifier and other-speed
configurations (what it is at full speed, behind a USB 1.1 hub) are read and judged too. The device
descriptor is read again with wLength 8 and 64, every configuration with 9, 255 and 0xFFFF (what other
hosts ask): a shorter wLength may only cut the full read short. String 0xEE and, when it is a
Microsoft OS 1.0 string, the extended compat ID descriptor it leads to are read as Windows reads them.

Why: a USB function the product does not declare is an unreviewed path into or out of the host:
a CDC-ECM/NCM or RNDIS network function is an egress route around the host's firewall and the
egress capture, a HID keyboard types commands, mass storage delivers files. Operating systems
bind class drivers to such functions with no one asking. Every interface and alternate setting,
with its class triple and endpoints, must be one the product declares.

Evidence: each raw descriptor as read, stored before it is parsed: `usb/device-descriptor.bin`,
`usb/configuration-<n>.bin` (n counts from 0, as GET_DESCRIPTOR indexes them),
`usb/string-<index>.bin` (index 0: the LANGIDs), `usb/bos.bin`, `usb/device-qualifier.bin`,
`usb/other-speed-configuration-<n>.bin`, each read with another wLength
(`usb/device-descriptor-wlength-<n>.bin`, `usb/configuration-<n>-wlength-<n>.bin`, ...),
`usb/string-238.bin` and `usb/ms-os-extended-compat-id.bin` when the device answers them; and every transfer of the device
as `usb/transfers.pcapng` (LINKTYPE_USB_LINUX_MMAPPED: tshark and Wireshark decode it), also when
the read fails. Facts: the device's location, the device descriptor with its strings, per
configuration each interface and alternate (number, class triple, class name, its string, its
endpoints as `0x83 interrupt in` with max packet size and interval), the associations, the BOS
capabilities, what the backend enumerated and where it disagrees with the fresh read.

Check declared_functions (expected: the reference's `usb`: `device: {vid, pid}`, `functions`, a
list of {interface, alternate, class, subclass, protocol, name, endpoints}, and optionally
`associations`, the interface associations (IADs) the product declares, {first_interface,
count, class, subclass, protocol}; none when absent):
- FAIL naming each interface or alternate setting the product does not declare
  (`interface 2: CDC-ECM network (class 0x02/0x06/0x00) is not declared`), each declared one the
  device lacks, each one with another class triple, name or set of endpoints, a VID:PID other
  than the reference's, each interface association the product does not declare (a host may
  bind a driver to the function an IAD names), and every disagreement between the backend's
  enumeration (or the USB/IP server's host's listing) and the fresh read, every read with another
  wLength that is not the full one cut short ("the device shows other descriptors to other hosts"),
  and each Microsoft OS 1.0 compatible ID the reference's `usb.ms_os_compat_ids` (a list of
  {interface, compatible_id, sub_compatible_id}; none when absent) does not declare. Every configuration is
  judged (a second configuration is one SET_CONFIGURATION away), and every other-speed one.
- PASS when every interface of every configuration is declared and every declared one is there,
  as declared.
Errors when: a device running at high speed refuses its device qualifier (its full-speed self
cannot be audited), the board has no `usb` interface or the device is not found, a read stalls, times
out or the device disconnects, a descriptor is malformed (the parser's reason: a length past
the end, a zero length, a total length that disagrees, ...; never a PASS), or the reference
lacks `usb` or gives it another shape.
"""

from __future__ import annotations

import re
from typing import Any

from harness.evidence import EvidenceStore
from harness.formats.usb_descriptors import (ConfigurationDescriptor, DescriptorError, EndpointDescriptor,
                                             interface_class_name, is_network_function, parse_bos,
                                             parse_configuration, parse_device_descriptor,
                                             parse_device_qualifier, parse_langids, parse_string,
                                             capability_name, platform_uuid, PLATFORM, PLATFORM_NAMES,
                                             length_mismatch, parse_extended_compat_ids, parse_ms_os_string)
from harness.verdict import CheckResult, EvidenceRef, Observation, ProbeError
from probes.security_state import keep_transfers

PARAMS: dict[str, Any] = {}
HIGH_SPEED = 3  # libusb's LIBUSB_SPEED_HIGH

_ENDPOINT = re.compile(r"^0x([0-9a-fA-F]{2}) (control|isochronous|bulk|interrupt) (in|out)$")
_FUNCTION_KEYS = {"interface", "alternate", "class", "subclass", "protocol", "name", "endpoints"}


def endpoint_text(endpoint: EndpointDescriptor) -> str:
    """An endpoint as the reference writes it: `0x83 interrupt in`."""
    return f"{endpoint.bEndpointAddress:#04x} {endpoint.transfer_type} {endpoint.direction}"


def _label(interface: int, alternate: int) -> str:
    return f"interface {interface}" + (f" alternate {alternate}" if alternate else "")


def _triple(cls: int, subclass: int, protocol: int) -> str:
    return f"class {cls:#04x}/{subclass:#04x}/{protocol:#04x}"


def _configuration_facts(config: ConfigurationDescriptor, strings: dict[int, str | None]) -> dict[str, Any]:
    functions = []
    for i in config.interfaces:
        triple = (i.bInterfaceClass, i.bInterfaceSubClass, i.bInterfaceProtocol)
        functions.append({
            "interface": i.bInterfaceNumber, "alternate": i.bAlternateSetting,
            "class": triple[0], "subclass": triple[1], "protocol": triple[2],
            "class_name": interface_class_name(*triple), "network": is_network_function(*triple),
            "name": strings.get(i.iInterface) if i.iInterface else None,
            "endpoints": [endpoint_text(e) for e in i.endpoints],
            "endpoint_details": [{"address": e.bEndpointAddress, "type": e.transfer_type, "direction": e.direction,
                                  "max_packet": e.wMaxPacketSize, "interval": e.bInterval} for e in i.endpoints],
            "class_specific_bytes": len(i.extra),
        })
    return {
        "value": config.bConfigurationValue, "name": strings.get(config.iConfiguration) if config.iConfiguration else None,
        "attributes": config.bmAttributes, "self_powered": config.self_powered, "max_power_ma": 2 * config.bMaxPower,
        "functions": functions,
        "associations": [{"first_interface": a.bFirstInterface, "count": a.bInterfaceCount,
                          "class": a.bFunctionClass, "subclass": a.bFunctionSubClass, "protocol": a.bFunctionProtocol,
                          "class_name": interface_class_name(a.bFunctionClass, a.bFunctionSubClass,
                                                             a.bFunctionProtocol),
                          "name": strings.get(a.iFunction) if a.iFunction else None} for a in config.associations],
    }


def _interface_key(configuration: int, number: int, alternate: int, cls: int, subclass: int, protocol: int,
                   endpoints: Any) -> tuple:
    return (configuration, number, alternate, cls, subclass, protocol,
            tuple(sorted((int(a), int(t), int(m)) for a, t, m in endpoints)))


def _key_text(key: tuple) -> str:
    configuration, number, alternate, cls, subclass, protocol, endpoints = key
    eps = ", ".join(f"{a:#04x} attributes {t:#04x} max packet {m}" for a, t, m in endpoints) or "no endpoints"
    return f"configuration {configuration} {_label(number, alternate)} {_triple(cls, subclass, protocol)}: {eps}"


def _disagreements(configs: list[ConfigurationDescriptor], enumerated: Any) -> list[str]:
    """Where the backend's enumeration and the fresh GET_DESCRIPTOR read differ."""
    read = {_interface_key(c.bConfigurationValue, i.bInterfaceNumber, i.bAlternateSetting, i.bInterfaceClass,
                           i.bInterfaceSubClass, i.bInterfaceProtocol,
                           [(e.bEndpointAddress, e.bmAttributes, e.wMaxPacketSize) for e in i.endpoints])
            for c in configs for i in c.interfaces}
    seen = {_interface_key(e.configuration, e.number, e.alternate, e.cls, e.subclass, e.protocol, e.endpoints)
            for e in enumerated}
    return ([f"the backend enumerated {_key_text(k)}, the fresh read does not show it" for k in sorted(seen - read)]
            + [f"the fresh read shows {_key_text(k)}, the backend did not enumerate it" for k in sorted(read - seen)])


def _server_disagreements(descriptor: dict[str, Any], configs: list[ConfigurationDescriptor],
                          server: dict[str, Any]) -> list[str]:
    """Where what a USB/IP server's host enumerated (its devlist entry and import reply: on a bench the
    exporting kernel's copy from the device's first enumeration) and the fresh read differ."""
    found = []
    listed = {key: server[key] for key in ("configuration", "configurations", "interface_count")}
    if server["import"] != listed:
        found.append(f"the USB/IP server's devlist says {listed}, its import reply {server['import']}")
    ids = (server["vid"], server["pid"], server["bcdDevice"], server["configurations"])
    fresh = (descriptor["vid"], descriptor["pid"], descriptor["bcdDevice"], descriptor["configurations"])
    if ids != fresh:
        found.append(f"the USB/IP server's host enumerated {ids[0]:04x}:{ids[1]:04x} bcdDevice {ids[2]:#06x} with "
                     f"{ids[3]} configuration(s), the fresh read {fresh[0]:04x}:{fresh[1]:04x} bcdDevice "
                     f"{fresh[2]:#06x} with {fresh[3]}")
    if not server["configuration"]:
        return found  # unconfigured there: it lists no interfaces
    config = next((c for c in configs if c.bConfigurationValue == server["configuration"]), None)
    triples: dict[int, set[tuple[int, int, int]]] = {}
    for i in config.interfaces if config else ():
        triples.setdefault(i.bInterfaceNumber, set()).add((i.bInterfaceClass, i.bInterfaceSubClass,
                                                            i.bInterfaceProtocol))
    listed_triples = [tuple(t) for t in server["interfaces"]]
    agree = (config is not None and server["interface_count"] == len(listed_triples) == config.bNumInterfaces
             and all(t in triples.get(n, ()) for n, t in enumerate(listed_triples)))
    if not agree:
        shown = ", ".join(f"{n}: {_triple(*t)} {interface_class_name(*t)}" for n, t in enumerate(listed_triples))
        read = (f"{config.bNumInterfaces} interface(s)" if config else "no such configuration")
        found.append(f"the USB/IP server's host enumerated configuration {server['configuration']} with "
                     f"{server['interface_count']} interface(s) ({shown or 'none listed'}), the fresh read shows "
                     f"{read}")
    return found


def collect(board: Any, params: dict[str, Any], evidence: EvidenceStore) -> Observation:
    device = board.interface("usb").device()
    try:
        raw = device.read_descriptors()
    except ProbeError as exc:
        keep_transfers(device, evidence)
        raise ProbeError(f"the USB descriptors could not be read: {exc}") from None
    # every descriptor is evidence before anything is parsed: a malformed one is kept as it came
    refs: list[EvidenceRef] = [evidence.add("usb/device-descriptor.bin", raw.device)]
    refs += [evidence.add(f"usb/configuration-{n}.bin", data) for n, data in enumerate(raw.configurations)]
    refs.append(evidence.add("usb/string-0.bin", raw.langids))
    refs += [evidence.add(f"usb/string-{index}.bin", data) for index, data in sorted(raw.strings.items())]
    if raw.bos is not None:
        refs.append(evidence.add("usb/bos.bin", raw.bos))
    if raw.qualifier is not None:
        refs.append(evidence.add("usb/device-qualifier.bin", raw.qualifier))
    refs += [evidence.add(f"usb/other-speed-configuration-{n}.bin", data) for n, data in enumerate(raw.other_speed)]
    refs += [evidence.add(_length_name(name, asked), data) for name, asked, data in raw.by_length]
    if raw.ms_os_string is not None:
        refs.append(evidence.add("usb/string-238.bin", raw.ms_os_string))
    if raw.ms_compat_ids is not None:
        refs.append(evidence.add("usb/ms-os-extended-compat-id.bin", raw.ms_compat_ids))
    transfers = keep_transfers(device, evidence)
    try:
        facts, configs = _decode(raw)
    except DescriptorError as exc:
        raise ProbeError(f"malformed USB descriptor from {device.location.get('vid', 0):04x}:"
                         f"{device.location.get('pid', 0):04x}: {exc}") from None
    if raw.qualifier is None and facts["descriptor"]["bcdUSB"] >= 0x0200 and device.speed == HIGH_SPEED:
        # USB 2.0 §9.6.2: only a full-speed-only device may refuse it; this one runs at high speed
        raise ProbeError("the device runs at high speed but refuses its device qualifier: what it is at full "
                         "speed (its other-speed configurations) cannot be read, so not audited")
    enumerated = device.enumerated()
    facts["enumerated"] = [{"configuration": e.configuration, "interface": e.number, "alternate": e.alternate,
                            "class": e.cls, "subclass": e.subclass, "protocol": e.protocol,
                            "endpoints": [list(ep) for ep in e.endpoints]} for e in enumerated]
    facts["enumeration_disagreements"] = _disagreements(configs, enumerated)
    server = getattr(device, "server_enumeration", None)
    if server is not None:
        facts["server_enumeration"] = server
        facts["enumeration_disagreements"] += _server_disagreements(facts["descriptor"], configs, server)
    facts["device"] = dict(device.location)
    if transfers is not None:
        refs.append(transfers)
    return Observation("usb_descriptors", facts, tuple(refs))


def _length_name(name: str, asked: int) -> str:
    return f"usb/{'device-descriptor' if name == 'device' else name}-wlength-{asked}.bin"


def _length_disagreements(raw: Any) -> list[str]:
    """Each read with another wLength that is not the full read cut to that wLength: the device
    answers the lengths different hosts ask with different descriptors."""
    full = {"device": raw.device, **{f"configuration-{n}": d for n, d in enumerate(raw.configurations)},
            **{f"other-speed-configuration-{n}": d for n, d in enumerate(raw.other_speed)}}
    found = []
    for name, asked, data in raw.by_length:
        problem = length_mismatch(full[name], asked, data)
        if problem:
            found.append(f"{name.replace('-', ' ')} read with wLength {asked} answers {problem} "
                         f"({_length_name(name, asked)})")
    return found


def _compat_ids(raw: Any) -> dict[str, Any] | None:
    """The Microsoft OS 1.0 descriptors: None without string 0xEE (or with another string there)."""
    code = parse_ms_os_string(raw.ms_os_string) if raw.ms_os_string is not None else None
    if code is None:
        return None
    parsed = parse_extended_compat_ids(raw.ms_compat_ids) if raw.ms_compat_ids is not None else None
    return {"vendor_code": code, "compat_ids": None if parsed is None else [
        {"interface": f.bFirstInterfaceNumber, "compatible_id": f.compatible_id,
         "sub_compatible_id": f.sub_compatible_id} for f in parsed.functions]}


def _decode(raw: Any) -> tuple[dict[str, Any], list[ConfigurationDescriptor]]:
    descriptor = parse_device_descriptor(raw.device)
    configs = [parse_configuration(data) for data in raw.configurations]
    if len(configs) != descriptor.bNumConfigurations:
        raise DescriptorError(f"the device descriptor names {descriptor.bNumConfigurations} configuration(s), "
                              f"{len(configs)} were read")
    langids = parse_langids(raw.langids) if raw.langids else ()
    strings: dict[int, str | None] = {index: parse_string(data) for index, data in raw.strings.items()}
    bos = parse_bos(raw.bos) if raw.bos is not None else None
    qualifier = parse_device_qualifier(raw.qualifier) if raw.qualifier is not None else None
    other_speed = [parse_configuration(data, other_speed=True) for data in raw.other_speed]
    if qualifier is not None and len(other_speed) != qualifier.bNumConfigurations:
        raise DescriptorError(f"the device qualifier names {qualifier.bNumConfigurations} other-speed "
                              f"configuration(s), {len(other_speed)} were read")
    facts: dict[str, Any] = {
        "descriptor": {
            "vid": descriptor.idVendor, "pid": descriptor.idProduct, "bcdUSB": descriptor.bcdUSB,
            "bcdDevice": descriptor.bcdDevice, "class": descriptor.bDeviceClass,
            "subclass": descriptor.bDeviceSubClass, "protocol": descriptor.bDeviceProtocol,
            "max_packet_size0": descriptor.bMaxPacketSize0, "configurations": descriptor.bNumConfigurations,
            "manufacturer": strings.get(descriptor.iManufacturer) if descriptor.iManufacturer else None,
            "product": strings.get(descriptor.iProduct) if descriptor.iProduct else None,
            "serial": strings.get(descriptor.iSerialNumber) if descriptor.iSerialNumber else None,
        },
        "langids": [f"{langid:#06x}" for langid in langids],
        "configurations": [_configuration_facts(c, strings) for c in configs],
        "bos": None if bos is None else [_capability_facts(kind, data) for kind, data in bos.capabilities],
        "qualifier": None if qualifier is None else {"bcdUSB": qualifier.bcdUSB,
                                                     "max_packet_size0": qualifier.bMaxPacketSize0,
                                                     "configurations": qualifier.bNumConfigurations},
        "other_speed_configurations": [_configuration_facts(c, strings) for c in other_speed],
        "wlength_reads": [{"descriptor": name, "wLength": asked, "bytes": len(data),
                           "evidence": _length_name(name, asked)} for name, asked, data in raw.by_length],
        "length_disagreements": _length_disagreements(raw),
        "ms_os_10": _compat_ids(raw),
    }
    return facts, configs


def _capability_facts(kind: int, data: bytes) -> dict[str, Any]:
    facts: dict[str, Any] = {"type": kind, "name": capability_name(kind), "bytes": data.hex()}
    if kind == PLATFORM:
        facts["uuid"] = platform_uuid(data)
        facts["platform"] = PLATFORM_NAMES.get(facts["uuid"], "an unknown platform")
    return facts


# --- the check ---


def _platform_findings(bos: Any, expected: dict[str, Any]) -> list[str]:
    """Each BOS platform capability the reference does not declare (`usb.platform_capabilities`, a list
    of UUIDs; none when absent): a host acts on one with no interface to show for it (Windows binds
    the drivers a Microsoft OS 2.0 descriptor set names, RNDIS network included)."""
    declared = expected.get("platform_capabilities", [])
    if not isinstance(declared, list) or not all(isinstance(u, str) for u in declared):
        return [f"reference usb.platform_capabilities must list UUIDs, got {declared!r}"]
    return [f"BOS platform capability {c['uuid']} ({c['platform']}) is not declared: a host acts on it by itself "
            f"(usb/bos.bin)" for c in bos or () if c.get("type") == PLATFORM and c["uuid"] not in
            {u.lower() for u in declared}]


_COMPAT_KEYS = ("interface", "compatible_id", "sub_compatible_id")


def _declared_compat_ids(expected: dict[str, Any]) -> tuple[set[tuple[Any, ...]], list[str]]:
    """The Microsoft OS 1.0 compatible IDs the reference declares (`usb.ms_os_compat_ids`, a list of
    {interface, compatible_id, sub_compatible_id}): none unless it lists them."""
    declared = expected.get("ms_os_compat_ids", [])
    if not isinstance(declared, list) or not all(
            isinstance(d, dict) and set(d) == set(_COMPAT_KEYS) and _is_byte(d["interface"])
            and isinstance(d["compatible_id"], str) and isinstance(d["sub_compatible_id"], str) for d in declared):
        return set(), [f"reference usb.ms_os_compat_ids must list {{{', '.join(_COMPAT_KEYS)}}}, got {declared!r}"]
    return {tuple(d[k] for k in _COMPAT_KEYS) for d in declared}, []


def _compat_findings(ms_os: dict[str, Any] | None, allowed: set[tuple[Any, ...]]) -> list[str]:
    """Each Microsoft OS 1.0 compatible ID the reference does not declare: Windows binds a driver by
    it with no interface class to show for it (RNDIS: a network adapter)."""
    return [f"Microsoft OS 1.0 compatible ID {c['compatible_id']!r} (sub-compatible ID {c['sub_compatible_id']!r}) "
            f"for interface {c['interface']} is not declared: Windows binds a driver by it"
            f"{' (a network adapter: an egress path around the host)' if c['compatible_id'] == 'RNDIS' else ''} "
            f"(usb/ms-os-extended-compat-id.bin, vendor code {ms_os['vendor_code']:#04x})"
            for c in (ms_os or {}).get("compat_ids") or ()
            if (c["compatible_id"] or c["sub_compatible_id"]) and tuple(c[k] for k in _COMPAT_KEYS) not in allowed]


def _is_byte(value: Any, top: int = 0xFF) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= top


def _declared(expected: Any) -> tuple[dict[str, int], dict[tuple[int, int], dict[str, Any]], list[str]]:
    """The reference's device IDs and functions by (interface, alternate), and what is wrong with them."""
    if not isinstance(expected, dict):
        return {}, {}, [f"reference 'usb' must be a mapping (device, functions, ...), got {expected!r}"]
    problems = []
    device = expected.get("device")
    if not isinstance(device, dict) or not _is_byte(device.get("vid"), 0xFFFF) or not _is_byte(device.get("pid"), 0xFFFF):
        problems.append(f"reference usb.device must be {{vid, pid}} (integers), got {device!r}")
        device = {}
    functions = expected.get("functions")
    if not isinstance(functions, list) or not functions:
        return device, {}, problems + [f"reference usb.functions must list every interface the product declares, "
                                       f"got {functions!r}"]
    declared: dict[tuple[int, int], dict[str, Any]] = {}
    for k, f in enumerate(functions):
        at = f"usb.functions[{k}]"
        if not isinstance(f, dict) or set(f) - _FUNCTION_KEYS or not {"interface", "alternate", "class", "subclass",
                                                                       "protocol", "endpoints"} <= set(f):
            problems.append(f"reference {at} must be {{{', '.join(sorted(_FUNCTION_KEYS))}}} (name optional), got {f!r}")
            continue
        if not all(_is_byte(f[key]) for key in ("interface", "alternate", "class", "subclass", "protocol")):
            problems.append(f"reference {at}: interface, alternate, class, subclass and protocol must be bytes, got {f!r}")
            continue
        if "name" in f and not isinstance(f["name"], str):
            problems.append(f"reference {at}.name must be the interface's string, got {f['name']!r}")
            continue
        endpoints = f["endpoints"]
        matches = [_ENDPOINT.match(e) if isinstance(e, str) else None for e in endpoints] \
            if isinstance(endpoints, list) else [None]
        if not all(matches):
            problems.append(f"reference {at}.endpoints must list endpoints as '0x83 interrupt in', got {endpoints!r}")
            continue
        key = (f["interface"], f["alternate"])
        if key in declared:
            problems.append(f"reference {at}: {_label(*key)} is declared twice")
            continue
        declared[key] = {**f, "endpoints": sorted(f"0x{m[1].lower()} {m[2]} {m[3]}" for m in matches)}
    return device, declared, problems


_ASSOCIATION_KEYS = ("first_interface", "count", "class", "subclass", "protocol")


def _declared_associations(expected: dict[str, Any]) -> tuple[set[tuple[int, ...]], list[str]]:
    """The interface associations (IADs) the reference declares: none unless it lists them."""
    listed = expected.get("associations", [])
    if not isinstance(listed, list) or not all(
            isinstance(a, dict) and set(a) == set(_ASSOCIATION_KEYS) and all(_is_byte(a[k]) for k in a) for a in listed):
        return set(), [f"reference usb.associations must list {{{', '.join(_ASSOCIATION_KEYS)}}} (bytes), "
                       f"got {listed!r}"]
    return {tuple(a[k] for k in _ASSOCIATION_KEYS) for a in listed}, []


def _judge_configuration(config: dict[str, Any], declared: dict[tuple[int, int], dict[str, Any]],
                         associations: set[tuple[int, ...]], prefix: str) -> tuple[list[str], list[str]]:
    findings, passed = [], []
    for a in config["associations"]:  # a host may bind a driver to the function an IAD names (Windows does)
        if tuple(a[k] for k in _ASSOCIATION_KEYS) not in associations:
            last = a["first_interface"] + a["count"] - 1
            findings.append(f"{prefix}association of interfaces {a['first_interface']}-{last}: {a['class_name']} "
                            f"({_triple(a['class'], a['subclass'], a['protocol'])}) is not declared")
    present = {}
    for f in config["functions"]:
        key = (f["interface"], f["alternate"])
        present[key] = f
        label = f"{prefix}{_label(*key)}"
        triple = _triple(f["class"], f["subclass"], f["protocol"])
        want = declared.get(key)
        if want is None:
            network = "; a network function: an egress path around the host" if f["network"] else ""
            eps = ", ".join(f["endpoints"]) or "no endpoints"
            findings.append(f"{label}: {f['class_name']} ({triple}) is not declared "
                            f"(name {f['name']!r}, endpoints {eps}{network})")
            continue
        wanted = _triple(want["class"], want["subclass"], want["protocol"])
        if wanted != triple:
            findings.append(f"{label}: declared {interface_class_name(want['class'], want['subclass'], want['protocol'])}"
                            f" ({wanted}), measured {f['class_name']} ({triple})")
        if "name" in want and want["name"] != f["name"]:
            findings.append(f"{label}: declared name {want['name']!r}, measured {f['name']!r}")
        got = sorted(e.lower() for e in f["endpoints"])
        if got != want["endpoints"]:
            extra = [e for e in got if e not in want["endpoints"]]
            missing = [e for e in want["endpoints"] if e not in got]
            findings.append(f"{label}: endpoints differ: declared {want['endpoints']}, measured {got}"
                            + (f"; not declared: {extra}" if extra else "") + (f"; missing: {missing}" if missing else ""))
        if wanted == triple and got == want["endpoints"] and want.get("name", f["name"]) == f["name"]:
            passed.append(f"{label}: {f['class_name']} ({triple}) {f['name']!r}, endpoints {got or 'none'}")
    for key, want in sorted(declared.items()):
        if key not in present:
            findings.append(f"{prefix}{_label(*key)}: declared "
                            f"{interface_class_name(want['class'], want['subclass'], want['protocol'])} "
                            f"({_triple(want['class'], want['subclass'], want['protocol'])}) "
                            f"{want.get('name', '')!r} is missing")
    return findings, passed


def declared_functions(observation: Observation, expected: Any) -> CheckResult:
    """Every interface and alternate setting of every configuration is one the reference declares."""
    ev = observation.evidence
    device, declared, problems = _declared(expected)
    associations, wrong = _declared_associations(expected) if isinstance(expected, dict) else (set(), [])
    compat_ids, wrong_ids = _declared_compat_ids(expected) if isinstance(expected, dict) else (set(), [])
    problems += wrong + wrong_ids
    if problems:
        return CheckResult.error(*problems, evidence=ev)
    facts = observation.facts
    if not {"configurations", "descriptor", "enumeration_disagreements", "length_disagreements",
            "ms_os_10"} <= set(facts):
        return CheckResult.error(f"no USB descriptors to judge (facts: {sorted(facts)})", evidence=ev)
    findings = []
    measured = facts["descriptor"]
    if (measured["vid"], measured["pid"]) != (device["vid"], device["pid"]):
        findings.append(f"device: expected {device['vid']:04x}:{device['pid']:04x}, measured "
                        f"{measured['vid']:04x}:{measured['pid']:04x} (usb/device-descriptor.bin)")
    configs = facts["configurations"]
    passed = []
    for config in configs:
        prefix = f"configuration {config['value']}: " if len(configs) > 1 else ""
        found, ok = _judge_configuration(config, declared, associations, prefix)
        findings += found
        passed += ok
    other_speed = facts.get("other_speed_configurations") or []
    for config in other_speed:  # what the device is at full speed is what a host behind a USB 1.1 hub gets
        found, _ = _judge_configuration(config, declared, associations, f"other-speed configuration {config['value']}: ")
        findings += found
    if not configs:
        findings.append("the device has no configuration")
    findings += _platform_findings(facts.get("bos"), expected)
    findings += [f"two descriptor sets: {d}" for d in facts["enumeration_disagreements"]]
    findings += _compat_findings(facts["ms_os_10"], compat_ids)
    findings += [f"the device shows other descriptors to other hosts: {d}" for d in facts["length_disagreements"]]
    if findings:
        return CheckResult.failed(*findings, evidence=ev)
    server = " (and the USB/IP server's host's listing)" if facts.get("server_enumeration") else ""
    return CheckResult.passed(
        f"{measured['vid']:04x}:{measured['pid']:04x} {measured.get('product')!r}: every interface of "
        f"{len(configs)} configuration(s) is declared (and of {len(other_speed)} other-speed configuration(s), "
        f"what the device is at full speed), and every declared one is there; the backend's enumeration"
        f"{server} agrees with the fresh read, and every descriptor read with the other wLengths hosts ask "
        f"({len(facts.get('wlength_reads') or [])} reads) is the full one cut short", *passed, evidence=ev)


CHECKS = {"declared_functions": declared_functions}
