"""Egress policy: which flows a board may emit during a test window, and the judgement.

A policy is an allow list; anything not allowed is a violation. Built from an already-parsed
YAML mapping (`load_policy`; reading files is the CLI's `load_egress_policy`, formats do no I/O):

    allow:
      - {proto: udp, dst: 192.0.2.10/32, dport: 123}      # NTP to one server
      - {dns: "*.lab.example"}                            # names under the lab domain
      - {proto: tcp, dst: "2001:db8::/32", dport: [80, "8000-8080"]}
      - {icmp: true, dst: 192.0.2.1}
      - {ethertype: 0x88cc}                               # LLDP frames
    link_local_housekeeping: true    # default: ARP, IPv6 ND/DAD, MLD, IGMP allowed
    dns_tunnel_check: true           # default: DNS-tunnel suspects are violations
    board: [192.0.2.50, "02:00:00:00:00:02"]   # optional: judge only flows the board starts

Rule keys (all given must hold): proto (name or number, or a list), dst and src (address or
CIDR, IPv4 or IPv6, or a list), dport (int, "lo-hi" range, or a list of either), dns
(fnmatch-style pattern or list, case-insensitive), icmp (true: ICMP/ICMPv6 only), ethertype
(non-IP frames), comment (ignored). A flow is allowed by a dns pattern when a name that
resolved to its destination matches and its TLS SNI and HTTP Host (the board's own choice, which
tie no address to a name) are allowed names too; a DNS query for a matching
name is itself allowed when it goes to the capture side, the link's mDNS/LLMNR groups or a
destination a rule allows, and a DNS query for any other name is a violation even towards an
allowed resolver (names are what leak). A DNS-port flow is allowed by its names only when all
of its payloads are DNS as a client sends it.

There is no way to allow everything: an empty or missing allow list allows nothing, and a rule
that would match any destination (0.0.0.0/0, ::/0, dns "*", a proto with nothing else, every
port with no destination) is a PolicyError naming the rule. So are rules that TOGETHER cover
every IPv4 or IPv6 address for one protocol and port (0.0.0.0/1 plus 128.0.0.0/1; a rule with a
port but no dst), and dns patterns with wildcards that do not end in two literal labels
("*.com"). Unknown keys are PolicyErrors naming the key.

`evaluate(policy, analysis)` gives an `EgressJudgement`: its verdict is ERROR when the analysis
cannot be trusted (frames not decoded, capture damaged, packets dropped), FAIL when any flow is
a violation, else PASS.

Whose frames: every frame not from the capturing host's MAC (the pcapng's if_MACaddr) is the
board's, whatever its addresses or ports say, and a flow is the board's when it sent the first
frame. The flows the capturing host starts on its own -- ARP, neighbour discovery, MLD, IGMP
and ICMP errors such as the port-unreachable its kernel sends back to a board's NTP request --
are not judged; any other flow is judged whatever MAC it carries. A board frame (either
direction) whose source address is not one of the board's own -- the policy's `board:`
addresses, else those it claims on the link that the capturing host does not claim or hold (the
pcapng's if_IPv4addr/if_IPv6addr), else the source of its first flow of that IP version -- is a
violation: a forged source address. Without a
capture MAC the policy's `board:` decides (by MAC; by address only when it names none, and then
a forged source cannot be seen); with neither, every flow is judged and the judgement is an
error. What the board's frames carried beyond their flow's addresses and ports (a VLAN tag, a
source route, bytes after the datagram: `Flow.initiator_concealed`) is a violation of that flow,
even of an allowed one. More than FLOOD_NAMES distinct names or FLOOD_FLOWS flows in one capture
is a flood: a violation with counts and a sample.

`judge(policy, analysis)` is what attestlab decides about a capture (the egress probe's check and
`attestlab egress analyze` both use it). A capture
with no flow left to judge is an error (silence cannot be told from an unplugged cable). Its
`outcome` ranks as the run's verdicts do: FAIL (a flow the policy does not allow was seen -- a
definite finding, even when other frames could not be decoded) before ERROR (cannot be judged)
before PASS.
"""

from __future__ import annotations

import fnmatch
import ipaddress
from dataclasses import dataclass, fields, replace
from typing import Any, Mapping

from harness.formats.flows import (
    MAX_RECORDED_FLOWS, Flow, FlowAnalysis, flow_count, flow_json, iso_ns,
)
from harness.formats.netproto import IP_PROTO_NAMES

__all__ = ["PolicyError", "Rule", "EgressPolicy", "load_policy",
           "Violation", "EgressJudgement", "evaluate", "judge", "egress_report_json"]

_TOP_KEYS = ("allow", "link_local_housekeeping", "dns_tunnel_check", "board", "description")
_RULE_KEYS = ("proto", "dst", "src", "dport", "dns", "icmp", "ethertype", "comment")
_PORT_PROTOS = frozenset(("tcp", "udp", "sctp", "udplite"))
_KNOWN_PROTOS = frozenset(IP_PROTO_NAMES.values()) | {"arp", "ether", "llc"}
_MAX_NAMES_IN_WHY = 5

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class PolicyError(ValueError):
    """The policy document is invalid; the message names the rule or key."""


@dataclass(frozen=True)
class Rule:
    index: int                                   # 1-based position in the allow list
    text: str                                    # the rule as written, for messages
    protos: frozenset[str] | None = None
    dst: tuple[Network, ...] | None = None
    src: tuple[Network, ...] | None = None
    dports: tuple[tuple[int, int], ...] | None = None
    dns: tuple[str, ...] | None = None           # lower-case patterns
    icmp: bool = False
    ethertypes: frozenset[int] | None = None

    def allows_name(self, name: str) -> bool:
        return self.dns is not None and any(fnmatch.fnmatchcase(name, p) for p in self.dns)


@dataclass(frozen=True)
class EgressPolicy:
    rules: tuple[Rule, ...] = ()
    link_local_housekeeping: bool = True
    dns_tunnel_check: bool = True
    board_networks: tuple[Network, ...] = ()
    board_macs: frozenset[str] = frozenset()

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any] | None) -> "EgressPolicy":
        return load_policy(doc)

    def allows_name(self, name: str) -> bool:
        n = _norm_name(name)
        return any(r.allows_name(n) for r in self.rules)


# ---------------------------------------------------------------------------------------------
# Loading


def _norm_name(name: str) -> str:
    return name.lower().rstrip(".")


def _as_list(v: Any) -> list:
    return list(v) if isinstance(v, (list, tuple)) else [v]


def _networks(value: Any, where: str, key: str) -> tuple[Network, ...]:
    out = []
    items = _as_list(value)
    if not items:
        raise PolicyError(f"{where}: {key} is an empty list")
    for item in items:
        if not isinstance(item, str) or not item.strip():
            raise PolicyError(f"{where}: {key} {item!r} is not an address or CIDR string")
        try:
            net = ipaddress.ip_network(item.strip(), strict=False)
        except ValueError as e:
            raise PolicyError(f"{where}: {key} {item!r} is not an address or CIDR ({e})") from None
        if net.prefixlen == 0:
            raise PolicyError(f"{where}: {key} {item} matches every address; allowing everything "
                              f"is not possible")
        out.append(net)
    return tuple(out)


def _port(v: Any, where: str) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= 65535:
        raise PolicyError(f"{where}: port {v!r} is not an integer 0-65535")
    return v


def _ports(value: Any, where: str) -> tuple[tuple[int, int], ...]:
    out = []
    items = _as_list(value)
    if not items:
        raise PolicyError(f"{where}: dport is an empty list")
    for item in items:
        if isinstance(item, str):
            s = item.strip()
            lo_s, sep, hi_s = s.partition("-")
            try:
                lo = int(lo_s)
                hi = int(hi_s) if sep else lo
            except ValueError:
                raise PolicyError(f"{where}: dport {item!r} is not a port or 'lo-hi' "
                                  f"range") from None
            lo, hi = _port(lo, where), _port(hi, where)
            if lo > hi:
                raise PolicyError(f"{where}: dport range {item!r} is empty (low > high)")
            out.append((lo, hi))
        else:
            p = _port(item, where)
            out.append((p, p))
    return tuple(out)


def _protos(value: Any, where: str) -> frozenset[str]:
    out = set()
    items = _as_list(value)
    if not items:
        raise PolicyError(f"{where}: proto is an empty list")
    for item in items:
        if isinstance(item, bool):
            raise PolicyError(f"{where}: proto {item!r} is not a protocol")
        if isinstance(item, int):
            if not 0 <= item <= 255:
                raise PolicyError(f"{where}: proto number {item} is not 0-255")
            out.add(IP_PROTO_NAMES.get(item, f"ip-{item}"))
            continue
        if not isinstance(item, str):
            raise PolicyError(f"{where}: proto {item!r} is not a protocol name")
        p = item.strip().lower()
        if p not in _KNOWN_PROTOS and not (p.startswith("ip-") and p[3:].isdigit()):
            raise PolicyError(f"{where}: proto {item!r} unknown (known: "
                              f"{', '.join(sorted(_KNOWN_PROTOS))}, or a number)")
        out.add(p)
    return frozenset(out)


def _patterns(value: Any, where: str) -> tuple[str, ...]:
    out = []
    items = _as_list(value)
    if not items:
        raise PolicyError(f"{where}: dns is an empty list")
    for item in items:
        if not isinstance(item, str) or not item.strip():
            raise PolicyError(f"{where}: dns pattern {item!r} is not a name pattern")
        p = _norm_name(item.strip())
        if not p.strip("*?.[]!"):
            raise PolicyError(f"{where}: dns pattern {item!r} matches every name; allowing "
                              f"everything is not possible")
        if _has_wildcard(p) and (p.count(".") < 2 or _has_wildcard(".".join(p.split(".")[-2:]))):
            raise PolicyError(f"{where}: dns pattern {item!r} is too wide: a pattern with "
                              f"wildcards must end in two literal labels, e.g. '*.lab.example'")
        out.append(p)
    return tuple(out)


def _has_wildcard(pattern: str) -> bool:
    return any(c in pattern for c in "*?[")


def _rule(i: int, raw: Any) -> Rule:
    where = f"allow rule {i}"
    if not isinstance(raw, Mapping):
        raise PolicyError(f"{where}: expected a mapping of conditions, got {type(raw).__name__}")
    for k in raw:
        if k not in _RULE_KEYS:
            raise PolicyError(f"{where}: unknown key {k!r} (known: {', '.join(_RULE_KEYS)})")
    text = "{" + ", ".join(f"{k}: {v}" for k, v in raw.items() if k != "comment") + "}"
    where = f"allow rule {i} {text}"
    kw: dict[str, Any] = {}
    if "proto" in raw:
        kw["protos"] = _protos(raw["proto"], where)
    if "dst" in raw:
        kw["dst"] = _networks(raw["dst"], where, "dst")
    if "src" in raw:
        kw["src"] = _networks(raw["src"], where, "src")
    if "dport" in raw:
        kw["dports"] = _ports(raw["dport"], where)
    if "dns" in raw:
        kw["dns"] = _patterns(raw["dns"], where)
    if "icmp" in raw:
        if not isinstance(raw["icmp"], bool):
            raise PolicyError(f"{where}: icmp must be true or false")
        if not raw["icmp"]:
            raise PolicyError(f"{where}: icmp: false allows nothing; leave the key out")
        kw["icmp"] = True
    if "ethertype" in raw:
        ets = set()
        for v in _as_list(raw["ethertype"]):
            if isinstance(v, bool) or not isinstance(v, int) or not 0x0600 <= v <= 0xFFFF:
                raise PolicyError(f"{where}: ethertype {v!r} is not an EtherType (0x0600-0xffff)")
            ets.add(v)
        if not ets:
            raise PolicyError(f"{where}: ethertype is an empty list")
        kw["ethertypes"] = frozenset(ets)

    protos = kw.get("protos")
    if kw.get("icmp") and protos and not protos <= {"icmp", "icmpv6"}:
        raise PolicyError(f"{where}: icmp: true contradicts proto {sorted(protos)}")
    if "dports" in kw:
        if kw.get("icmp") or (protos and not protos & _PORT_PROTOS):
            raise PolicyError(f"{where}: dport applies only to {', '.join(sorted(_PORT_PROTOS))}")
    if "ethertypes" in kw and (protos and protos != {"ether"} or kw.get("icmp")):
        raise PolicyError(f"{where}: ethertype applies only to non-IP frames (proto ether)")
    narrows = any(k in kw for k in ("dst", "dns", "dports", "ethertypes")) or kw.get("icmp")
    if not narrows and not (protos and protos <= {"arp"}):
        raise PolicyError(f"{where}: allows every destination; give dst, dport, dns, icmp or "
                          f"ethertype")
    if ("dports" in kw and set(kw["dports"]) & {(0, 65535), (1, 65535)}
            and not any(k in kw for k in ("dst", "dns"))):
        raise PolicyError(f"{where}: every port to every destination is allowing everything; "
                          f"give dst or dns")
    return Rule(index=i, text=text, **kw)


def load_policy(doc: Mapping[str, Any] | None) -> EgressPolicy:
    """Build a policy from a parsed YAML mapping; None or {} allows nothing."""
    if doc is None:
        return EgressPolicy()
    if not isinstance(doc, Mapping):
        raise PolicyError(f"egress policy must be a mapping, got {type(doc).__name__}")
    for k in doc:
        if k not in _TOP_KEYS:
            raise PolicyError(f"egress policy: unknown key {k!r} (known: {', '.join(_TOP_KEYS)})")
    allow = doc.get("allow")
    if allow is None:
        allow = []
    if not isinstance(allow, (list, tuple)):
        raise PolicyError(f"egress policy: allow must be a list of rules, got "
                          f"{type(allow).__name__}")
    rules = tuple(_rule(i, r) for i, r in enumerate(allow, 1))
    _refuse_union_of_everything(rules)
    flags = {}
    for key in ("link_local_housekeeping", "dns_tunnel_check"):
        if key in doc:
            if not isinstance(doc[key], bool):
                raise PolicyError(f"egress policy: {key} must be true or false")
            flags[key] = doc[key]
    nets: list[Network] = []
    macs: set[str] = set()
    if "board" in doc:
        items = _as_list(doc["board"])
        if not items:
            raise PolicyError("egress policy: board is an empty list")
        for item in items:
            if not isinstance(item, str):
                raise PolicyError(f"egress policy: board entry {item!r} is not an address")
            s = item.strip().lower()
            hexdigits = s.replace(":", "").replace("-", "")
            if len(hexdigits) == 12 and all(c in "0123456789abcdef" for c in hexdigits) \
                    and s.count(":") + s.count("-") == 5:
                macs.add(":".join(hexdigits[j:j + 2] for j in range(0, 12, 2)))
            else:
                nets.extend(_networks(s, "egress policy board", "address"))
    return EgressPolicy(rules=rules, board_networks=tuple(nets), board_macs=frozenset(macs),
                        **flags)


_EVERY = {4: ipaddress.ip_network("0.0.0.0/0"), 6: ipaddress.ip_network("::/0")}
_IP_OTHER = "ip-253"   # stands for every IP protocol no rule names


def _refuse_union_of_everything(rules: tuple[Rule, ...]) -> None:
    """No set of rules may together allow every IPv4 or every IPv6 address for one protocol and
    port: 0.0.0.0/1 plus 128.0.0.0/1 is 0.0.0.0/0. Rules naming dns patterns are judged by name,
    src does not narrow (the board's own address is every board flow's source). Coverage is the
    same between the ends of the port ranges given, so checking those ends checks every port."""
    ip_rules = [r for r in rules if r.dns is None and r.ethertypes is None
                and not (r.protos is not None and r.protos <= {"arp", "ether", "llc"})]
    if not ip_rules:
        return
    protos = {"tcp", "udp", "icmp", "icmpv6", _IP_OTHER}
    ports = {0}
    for r in ip_rules:
        protos |= set(r.protos or ())
        for lo, hi in r.dports or ():
            ports |= {lo, hi + 1} if hi < 65535 else {lo}
    for proto in sorted(protos - {"arp", "ether", "llc"}):
        for port in sorted(ports) if proto in _PORT_PROTOS else [None]:
            applying = [r for r in ip_rules if _rule_applies(r, proto, port)]
            for version, every in _EVERY.items():
                nets = [n for r in applying for n in (r.dst or (every,)) if n.version == version]
                if nets and list(ipaddress.collapse_addresses(nets)) == [every]:
                    what = proto if proto != _IP_OTHER else "any IP protocol"
                    if port is not None:
                        what += f" port {port}"
                    named = [f"{r.index} {r.text}" for r in applying
                             if any(n.version == version for n in r.dst or (every,))]
                    who = (f"allow rule {named[0]} allows" if len(named) == 1 else
                           f"allow rules {' and '.join(named)} together allow")
                    raise PolicyError(f"{who} every IPv{version} address for {what}; allowing "
                                      f"everything is not possible: give dst or dns")


def _rule_applies(rule: Rule, proto: str, port: int | None) -> bool:
    if rule.protos is not None and proto not in rule.protos:
        return False
    if rule.icmp and proto not in ("icmp", "icmpv6"):
        return False
    if rule.dports is not None:
        return port is not None and any(lo <= port <= hi for lo, hi in rule.dports)
    return True


# ---------------------------------------------------------------------------------------------
# Judging


@dataclass(frozen=True)
class Violation:
    proto: str
    src: str
    dst: str
    sport: int | None
    dport: int | None
    names: tuple[str, ...]
    packets: int
    bytes: int
    first_seen: str   # ISO-8601 UTC
    last_seen: str
    why: str

    def as_dict(self) -> dict:
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        d["names"] = list(self.names)
        return d

    def __getitem__(self, key: str) -> Any:  # reads like the JSON dict it becomes
        if key not in self.__dataclass_fields__:
            raise KeyError(key)
        return self.as_dict()[key]


@dataclass(frozen=True)
class EgressJudgement:
    violations: tuple[Violation, ...]
    errors: tuple[str, ...]      # why the analysis cannot be trusted (→ ERROR)
    allowed_flows: int
    housekeeping_flows: int
    not_judged_flows: int        # started by another host than the board (when board is given)
    excluded_flows: int = 0      # started by the capturing host itself (exclude_macs)
    judged_flows: int = 0        # flows held against the policy (allowed, housekeeping or not)
    identity: str = ""           # how the board's frames were told apart from the others
    board_addresses: tuple[str, ...] = ()   # the board's own addresses, as the capture shows them

    @property
    def verdict(self) -> str:
        if self.errors:
            return "ERROR"
        if self.violations:
            return "FAIL"
        return "PASS"

    @property
    def reason(self) -> str:
        if self.errors:
            return "; ".join(self.errors)
        if self.violations:
            n = len(self.violations)
            return f"{n} egress violation{'s' if n != 1 else ''}: {self.violations[0].why}"
        return "every flow allowed by the policy"

    @property
    def outcome(self) -> str:
        """FAIL when a flow is not allowed (a definite finding, whatever else is wrong), else
        ERROR when the capture cannot be trusted, else PASS."""
        if self.violations:
            return "FAIL"
        if self.errors:
            return "ERROR"
        return "PASS"


def _addr(s: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(s)
    except ValueError:
        return None


def _in(addr, nets: tuple[Network, ...]) -> bool:
    return addr is not None and any(addr.version == n.version and addr in n for n in nets)


def _rule_matches(rule: Rule, flow: Flow, names: list[str], dst_addr, src_addr) -> bool:
    if rule.protos is not None and flow.proto not in rule.protos:
        return False
    if rule.icmp and flow.proto not in ("icmp", "icmpv6"):
        return False
    if rule.ethertypes is not None and not (flow.proto == "ether"
                                            and flow.dport in rule.ethertypes):
        return False
    if rule.dst is not None and not _in(dst_addr, rule.dst):
        return False
    if rule.src is not None and not _in(src_addr, rule.src):
        return False
    if rule.dports is not None:
        if flow.proto not in _PORT_PROTOS or flow.dport is None:
            return False
        if not any(lo <= flow.dport <= hi for lo, hi in rule.dports):
            return False
    if rule.dns is not None and not any(rule.allows_name(n) for n in names):
        return False
    return True


def _named_names(policy: EgressPolicy, flow: Flow) -> list[str]:
    """The names that tie this flow's destination to a name a dns rule may allow: those an answer
    from the other side resolved to it. The TLS SNI and HTTP Host the board sends are its own
    choice and tie nothing; they only must be allowed too (no fronting a name nobody allowed
    behind an allowed one). None of them when one is not allowed."""
    if not all(policy.allows_name(n) for n in flow.sni + flow.http_hosts):
        return []
    return [_norm_name(n) for n in flow.resolved_names]


def _endpoint(flow: Flow) -> str:
    if flow.dport is None or flow.proto not in _PORT_PROTOS:
        return flow.dst
    return f"[{flow.dst}]:{flow.dport}" if ":" in flow.dst else f"{flow.dst}:{flow.dport}"


_ICMP_KINDS = {8: "echo request", 0: "echo reply answering no request"}
_ICMPV6_KINDS = {128: "echo request", 129: "echo reply answering no request",
                 130: "MLD query (a router's)", 131: "MLD report", 132: "MLD done",
                 133: "router solicitation", 134: "router advertisement (a router's)",
                 135: "neighbour solicitation", 136: "neighbour advertisement",
                 137: "redirect (a router's)", 143: "MLDv2 report"}


def _describe(flow: Flow) -> str:
    """'TCP to 203.0.113.5:443 (SNI x)' — what was seen, for a violation's why."""
    p = flow.proto
    if p in ("icmp", "icmpv6"):
        kind = (_ICMP_KINDS if p == "icmp" else _ICMPV6_KINDS).get(
            flow.sport, f"type {flow.sport} code {flow.dport}")
        what = f"{'ICMP' if p == 'icmp' else 'ICMPv6'} {kind} to {flow.dst}"
        if flow.icmp_echo_sizes:
            sizes = sorted(set(flow.icmp_echo_sizes))
            shown = ", ".join(map(str, sizes[:8])) + (", ..." if len(sizes) > 8 else "")
            what += f" (payload sizes {shown})"
        return what
    if p == "ether":
        return f"EtherType 0x{flow.dport:04x} frames from {flow.src} to {flow.dst}"
    if p == "llc":
        return f"802.3/LLC frames from {flow.src} to {flow.dst}"
    if p == "arp":
        return f"ARP between {flow.src} and {flow.dst}"
    what = f"{p.upper()} to {_endpoint(flow)}"
    tags = []
    if flow.sni:
        tags.append("SNI " + ", ".join(flow.sni))
    if flow.http_hosts:
        tags.append("Host " + ", ".join(flow.http_hosts))
    if flow.resolved_names:
        tags.append("resolved from " + ", ".join(flow.resolved_names[:_MAX_NAMES_IN_WHY]))
    if tags:
        what += f" ({'; '.join(tags)})"
    return what


def _violation(flow: Flow, why: str, names: tuple[str, ...] | None = None) -> Violation:
    return Violation(proto=flow.proto, src=flow.src, dst=flow.dst, sport=flow.sport,
                     dport=flow.dport, names=flow.names if names is None else names,
                     packets=flow.packets, bytes=flow.bytes, first_seen=iso_ns(flow.first_seen),
                     last_seen=iso_ns(flow.last_seen), why=why)


# ---------------------------------------------------------------------------------------------
# Whose frames: the board's, the capturing host's, or another host's


# ICMP types a host's kernel sends on its own in answer to someone else's packet.
_ICMP_ERRORS = {"icmp": frozenset((3, 4, 5, 11, 12)), "icmpv6": frozenset((1, 2, 3, 4))}
_ICMPV6_LINK = frozenset((130, 131, 132, 133, 134, 135, 136, 137, 143))
_UNSPECIFIED = {"0.0.0.0", "::"}
FLOOD_NAMES = 256                 # distinct names asked in one capture before it is a flood
FLOOD_FLOWS = MAX_RECORDED_FLOWS  # flows in one capture before it is a flood
MAX_OWN_ADDRESSES = 8             # addresses one board plausibly claims on its link


def _capture_host_kind(flow: Flow) -> bool:
    """A kind of flow the capturing host's kernel starts unasked: ARP, neighbour discovery, MLD,
    IGMP, ICMP errors. Any other flow from its MAC is judged (a board may forge that MAC)."""
    if flow.proto in ("arp", "igmp"):
        return True
    if flow.proto == "icmpv6" and flow.sport in _ICMPV6_LINK:
        return True
    return flow.sport in _ICMP_ERRORS.get(flow.proto, ())


@dataclass(frozen=True)
class _Board:
    """How the board's frames are told apart in this capture, and its own addresses."""
    how: str                       # "link", "board-mac", "board-address" or "none"
    capture_macs: frozenset[str]
    board_macs: frozenset[str]
    networks: tuple[Network, ...]
    addresses: frozenset[str]

    def sent(self, flow: Flow, initiator: bool) -> bool:
        """Did the board send frames in this direction of the flow?"""
        macs = flow.initiator_macs if initiator else flow.responder_macs
        addr = flow.src if initiator else flow.dst
        if self.how == "link":
            if not macs:  # frames without a link layer: nothing shows they are not the board's
                return initiator
            return any(m.lower() not in self.capture_macs for m in macs)
        if self.how == "board-mac":
            if macs:
                return any(m.lower() in self.board_macs for m in macs)
            return _in(_addr(addr), self.networks) if self.networks else initiator
        if self.how == "board-address":
            return _in(_addr(addr), self.networks)
        return initiator

    def own(self, addr: str) -> bool | None:
        """Is `addr` one of the board's addresses? None when this capture cannot tell."""
        if self.how not in ("link", "board-mac"):
            return None
        if self.networks:
            return _in(_addr(addr), self.networks)
        return addr in self.addresses


def _identify(policy: EgressPolicy, analysis: FlowAnalysis, capture_macs: set[str]) -> _Board:
    if capture_macs:
        how = "link"
    elif policy.board_macs:
        how = "board-mac"
    elif policy.board_networks:
        how = "board-address"
    else:
        how = "none"
    board = _Board(how, frozenset(capture_macs), policy.board_macs, policy.board_networks,
                   frozenset())
    if how not in ("link", "board-mac") or policy.board_networks:
        return board
    return replace(board, addresses=_own_addresses(board, analysis))


def _own_addresses(board: _Board, analysis: FlowAnalysis) -> frozenset[str]:
    """The addresses the board claims on the link (ARP, duplicate-address detection, neighbour
    advertisements) that the capturing host neither claims nor holds (the pcapng names its
    addresses); for an IP version in which it claims none, the source of its first flow of that
    version. A board claiming the harness's addresses claims what is not its own."""
    def boards(mac: str) -> bool:
        m = mac.lower()
        return m not in board.capture_macs if board.how == "link" else m in board.board_macs
    theirs = {a for m, a in analysis.claims if not boards(m)} | set(analysis.capture_addresses)
    own = {a for m, a in analysis.claims if boards(m) and a not in theirs and a not in _UNSPECIFIED}
    for version in (4, 6):
        if any((a := _addr(x)) is not None and a.version == version for x in own):
            continue
        first = min((f for f in analysis.flows if f.src not in _UNSPECIFIED and f.proto != "arp"
                     and f.src not in theirs
                     and (a := _addr(f.src)) is not None and a.version == version
                     and not a.is_multicast and board.sent(f, True)),
                    key=lambda f: f.first_seen, default=None)
        if first is not None:
            own.add(first.src)
    return frozenset(own)


def _unspecified_allowed(flow: Flow) -> bool:
    """What a host may send before it has an address: DHCP, ARP probes, IGMP/MLD reports,
    duplicate-address detection and router solicitation (the housekeeping rules check those)."""
    if flow.src == "0.0.0.0":
        return (flow.proto == "udp" and (flow.sport, flow.dport) == (68, 67)) or \
            flow.proto == "arp" or flow.housekeeping == "igmp"
    return flow.src == "::" and flow.housekeeping is not None


def _forged(board: _Board, flow: Flow, initiator: bool) -> str | None:
    """Why the board's frames in this direction of the flow carry a source address that is not
    its own, or None."""
    if flow.proto in ("ether", "llc") or not board.sent(flow, initiator):
        return None
    addr = flow.src if initiator else flow.dst
    if initiator and _unspecified_allowed(flow):
        return None
    if board.own(addr) is not False:
        return None
    own = ", ".join(sorted(board.addresses)) or ", ".join(map(str, board.networks)) or "none seen"
    port = flow.sport if initiator else flow.dport
    shown = addr if port is None or flow.proto not in _PORT_PROTOS else (
        f"[{addr}]:{port}" if ":" in addr else f"{addr}:{port}")
    side = "" if initiator else " in the answering direction"
    return (f"forged source address: the board sent frames{side} as {shown}, which is not its own "
            f"address (its addresses: {own})")


def _concealed(board: _Board, flow: Flow) -> str | None:
    """What the board's frames in this flow carried that the flow's addresses and ports do not
    show (a VLAN tag, a source route, bytes after the datagram), or None: a rule that allows the
    destination does not allow these."""
    texts = [t for initiator, texts in ((True, flow.initiator_concealed),
                                         (False, flow.responder_concealed))
             if texts and board.sent(flow, initiator) for t in texts]
    return f"the board's {'; '.join(texts)}" if texts else None


def evaluate(policy: EgressPolicy, analysis: FlowAnalysis, *,
             exclude_macs: tuple[str, ...] | list[str] | frozenset[str] | None = None) -> EgressJudgement:
    """Judge every flow the board started against the policy.

    exclude_macs: the capturing host's own MACs (default: the capture's if_MACaddr,
    analysis.capture_macs). Every frame from another MAC is the board's, whatever its addresses
    or ports say; a flow is the board's when it sent the flow's first frame. The flows the
    capturing host starts unasked (ARP, neighbour discovery, MLD, IGMP, ICMP errors) are not
    judged (`excluded_flows`). Without capture MACs the policy's `board:` tells the board's
    frames (by MAC, else by address: then a forged source cannot be seen); with neither, every
    flow is judged and the judgement is an error (it cannot tell what the board sent).
    """
    macs = analysis.capture_macs if exclude_macs is None else exclude_macs
    board = _identify(policy, analysis, {m.lower() for m in macs})
    violations: list[Violation] = _flood_violations(analysis)
    allowed = housekeeping = not_judged = excluded = 0
    for flow in analysis.flows:
        forged = "; ".join(x for x in (_forged(board, flow, True) or _forged(board, flow, False),
                                       _concealed(board, flow)) if x)
        # From the capturing host's MAC, yet nothing it sends unasked: judged all the same.
        if not board.sent(flow, True) and not (board.how == "link" and not _capture_host_kind(flow)):
            if forged:  # the board answered the other side with an address not its own
                violations.append(_violation(flow, f"{_describe(flow)}: {forged}"))
            if board.how == "link":
                excluded += 1
                continue
            if board.how != "none":
                not_judged += 1
                continue
        finding = _judge_flow(policy, flow, analysis.capture_addresses)
        if forged:
            why, names = finding or ("", None)
            finding = (f"{_describe(flow)}: {forged}" + (f"; {why}" if why else ""), names)
        if finding is None:
            if flow.housekeeping is not None and policy.link_local_housekeeping:
                housekeeping += 1
            else:
                allowed += 1
            continue
        violations.append(_violation(flow, *finding))

    if policy.dns_tunnel_check:
        violations.extend(_tunnel_violations(policy, analysis))
    if len(board.addresses) > MAX_OWN_ADDRESSES and not policy.board_networks:
        shown = ", ".join(sorted(board.addresses)[:_MAX_NAMES_IN_WHY])
        violations.append(Violation(
            proto="*", src="", dst="", sport=None, dport=None, names=(), packets=0, bytes=0,
            first_seen="", last_seen="",
            why=f"the board claims {len(board.addresses)} addresses on the link (more than "
                f"{MAX_OWN_ADDRESSES}), e.g. {shown}: a host has few, and which ones it claims is "
                f"its choice (a board rotating addresses and MACs looks like many hosts); name "
                f"its addresses in the policy's board: to judge a busier segment"))

    errors = []
    if board.how == "none":
        errors.append("cannot tell which frames the board sent: the capture names no capture-side "
                      "MAC (pcapng if_MACaddr) and the policy names no board (board: [its MAC or "
                      "address]); every flow was judged as the board's")
    if analysis.undecoded:
        errors.append(f"{analysis.undecoded} frame{'s' if analysis.undecoded != 1 else ''} "
                      f"not decoded")
    if analysis.capture_data_lost:
        errors.append("capture damaged or truncated; packets may be missing (see anomalies)")
    if analysis.stats is not None and analysis.stats.dropped:
        errors.append(f"capture dropped {analysis.stats.dropped} packets")
    judged = len(analysis.flows) - not_judged - excluded
    return EgressJudgement(tuple(violations), tuple(errors), allowed, housekeeping, not_judged,
                           excluded, judged, identity=_IDENTITY[board.how],
                           board_addresses=tuple(sorted(board.addresses)))


_IDENTITY = {
    "link": "by link layer: every frame not from the capture side's MAC is the board's",
    "board-mac": "by the MACs the policy's board: names",
    "board-address": "by the addresses the policy's board: names (no MAC: a forged source "
                     "address cannot be seen)",
    "none": "not at all: no capture-side MAC and no board: in the policy",
}


# Where a DNS query allowed by its names alone may go: the link's multicast resolvers (mDNS,
# LLMNR), which answer on the link only.
_LINK_RESOLVERS = frozenset(("224.0.0.251", "224.0.0.252", "ff02::fb", "ff02::1:3"))


def _judge_flow(policy: EgressPolicy, flow: Flow,
                resolvers: tuple[str, ...] = ()) -> tuple[str, tuple[str, ...] | None] | None:
    """Why the policy does not allow this flow of the board's (and the names to show), or None.

    resolvers: the capture side's own addresses (it stands in for the board's resolver). A DNS
    query for allowed names goes to one of them, to the link's multicast resolvers, or to a
    destination a rule allows: anywhere else it carries its header fields (id, cookie, type) to
    a host nobody allowed."""
    if flow.housekeeping is not None and policy.link_local_housekeeping:
        return None
    names = _named_names(policy, flow)
    dst_addr, src_addr = _addr(flow.dst), _addr(flow.src)
    by_rule = any(_rule_matches(r, flow, names, dst_addr, src_addr) for r in policy.rules)
    if flow.is_dns:
        bad = [q for q in flow.dns_queries if not policy.allows_name(q)]
        if flow.dns_queries_unlisted:
            total = len(flow.dns_queries) + flow.dns_queries_unlisted
            return (f"{_describe(flow)} asked about {total} names, more than one flow's record "
                    f"keeps ({len(flow.dns_queries)}): a flood", tuple(bad[:100]) or None)
        if len(bad) == 1:
            return f"DNS query for {bad[0]} (not in allowed names)", (bad[0],)
        if bad:
            shown = ", ".join(bad[:_MAX_NAMES_IN_WHY])
            extra = len(bad) - _MAX_NAMES_IN_WHY
            more = f" (+{extra} more)" if extra > 0 else ""
            return (f"DNS queries for {len(bad)} names not in allowed names: {shown}{more}",
                    tuple(bad[:100]))
        if by_rule:
            return None
        if flow.dns_queries and flow.dns_undecoded == 0:
            if flow.dst in _LINK_RESOLVERS or flow.dst in resolvers:
                return None
            return (f"{_describe(flow)}: DNS to a resolver no rule allows (the names are allowed; "
                    f"the destination is not the capture side, nor named by a rule)", None)
        if flow.dns_undecoded:
            first = next((n for n in flow.notes if "DNS" in n), "")
            return (f"{_describe(flow)} carried {flow.dns_undecoded} payload(s) that are not DNS "
                    f"as a client sends it{f' ({first})' if first else ''} and matches no allow "
                    f"rule", None)
        return f"{_describe(flow)} matches no allow rule", None
    if by_rule:
        return None
    if flow.housekeeping is not None:
        return (f"{_describe(flow)} ({flow.housekeeping} housekeeping not allowed by the policy)",
                None)
    return f"{_describe(flow)} matches no allow rule", None


def _flood_violations(analysis: FlowAnalysis) -> list[Violation]:
    """A capture with more names or flows than a board plausibly needs: counted, sampled, never
    replayed in full (what a board sends may cost the harness linear time, bounded memory)."""
    out = []
    first = min((q.timestamp_ns for q in analysis.dns_queries), default=0)
    last = max((q.timestamp_ns for q in analysis.dns_queries), default=0)
    if analysis.dns_name_count > FLOOD_NAMES:
        sample = tuple(dict.fromkeys(q.name for q in analysis.dns_queries))[:_MAX_NAMES_IN_WHY]
        src = analysis.dns_queries[0].src if analysis.dns_queries else ""
        out.append(Violation(
            proto="dns", src=src, dst="", sport=None, dport=53, names=sample,
            packets=analysis.dns_query_count, bytes=0, first_seen=iso_ns(first),
            last_seen=iso_ns(last),
            why=f"{analysis.dns_name_count} distinct names queried in the capture (more than "
                f"{FLOOD_NAMES}): a flood; {analysis.dns_query_count} queries, e.g. "
                f"{', '.join(sample)}"))
    n = flow_count(analysis)
    if n > FLOOD_FLOWS:
        fl = analysis.flows
        out.append(Violation(
            proto="*", src="", dst="", sport=None, dport=None, names=(), packets=analysis.packets,
            bytes=0, first_seen=iso_ns(min((f.first_seen for f in fl), default=0)),
            last_seen=iso_ns(max((f.last_seen for f in fl), default=0)),
            why=f"{n} flows in the capture (more than {FLOOD_FLOWS}): a flood; the record lists "
                f"the first {min(len(fl), MAX_RECORDED_FLOWS)}"))
    return out


def judge(policy: EgressPolicy, analysis: FlowAnalysis, *,
          exclude_macs: tuple[str, ...] | list[str] | frozenset[str] | None = None) -> EgressJudgement:
    """attestlab's decision about one capture; see the module docstring. Use `.outcome`.

    exclude_macs: the capturing host's MACs (default: the capture's if_MACaddr, analysis.capture_macs).
    """
    macs = tuple(analysis.capture_macs if exclude_macs is None else exclude_macs)
    j = evaluate(policy, analysis, exclude_macs=macs)
    if j.judged_flows == 0:
        if analysis.packets == 0:
            why = "the capture holds no frames at all"
        elif j.excluded_flows and not j.not_judged_flows:
            why = (f"every frame in the capture came from the capturing host "
                   f"({', '.join(macs)}), none from the board")
        else:
            why = "the capture holds no flow the board started"
        j = replace(j, errors=j.errors + (
            f"nothing to judge: {why}. A board that sends nothing at all cannot be told from an "
            f"unplugged cable: check that the board's port is cabled to the capture interface and "
            f"powered, and capture for longer or with activity: workload",))
    return j


def _tunnel_violations(policy: EgressPolicy, analysis: FlowAnalysis) -> list[Violation]:
    out = []
    by_parent: dict[str, list] = {s.parent: [] for s in analysis.tunnel_suspects}
    for q in analysis.dns_queries:  # one pass: a suspect's parent is a name's last two labels
        labels = _norm_name(q.name).split(".")
        if len(labels) > 2 and (parent := ".".join(labels[-2:])) in by_parent:
            by_parent[parent].append(q)
    for s in analysis.tunnel_suspects:
        matching = by_parent[s.parent]
        # DNS queries carry no MAC: narrow to the board's addresses where the policy gives some, and
        # never drop a suspect because the narrowing left nothing (better a named alarm than a miss).
        qs = [q for q in matching if _in(_addr(q.src), policy.board_networks)] if policy.board_networks else matching
        qs = qs or matching
        first = min((q.timestamp_ns for q in qs), default=0)
        last = max((q.timestamp_ns for q in qs), default=0)
        src = qs[0].src if qs else ""
        dst = qs[0].dst if qs else ""
        out.append(Violation(
            proto="dns", src=src, dst=dst, sport=None, dport=53, names=s.examples,
            packets=len(qs), bytes=0, first_seen=iso_ns(first), last_seen=iso_ns(last),
            why=f"DNS tunnel suspected under {s.parent}: {'; '.join(s.reasons)}"))
    return out


def egress_report_json(analysis: FlowAnalysis, judgement: EgressJudgement) -> dict:
    """The `attestlab egress analyze --json` document."""
    anomalies = list(analysis.anomalies)
    if analysis.stats is not None and analysis.stats.dropped:
        anomalies.append(f"capture dropped {analysis.stats.dropped} packets")
    return {
        "packets": analysis.packets,
        "flows": [flow_json(f) for f in analysis.flows[:MAX_RECORDED_FLOWS]],
        "flow_count": flow_count(analysis),
        "violations": [v.as_dict() for v in judgement.violations[:MAX_RECORDED_FLOWS]],
        "violation_count": len(judgement.violations),
        "anomalies": anomalies,
        "identity": judgement.identity,
        "board_addresses": list(judgement.board_addresses),
    }
