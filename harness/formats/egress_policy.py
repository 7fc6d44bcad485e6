"""Egress policy: which flows a board may emit during a test window, and the judgement.

A policy is an allow list; anything not allowed is a violation. Loaded from an already-parsed
YAML mapping (`load_policy`) or a file (`load_policy_file`):

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
resolved to its destination, its TLS SNI or its HTTP Host matches; a DNS query for a matching
name is itself allowed, and a DNS query for any other name is a violation even towards an
allowed resolver (names are what leak). A DNS-port flow is allowed by its names only when all
of its payloads decoded as DNS.

There is no way to allow everything: an empty or missing allow list allows nothing, and a rule
that would match any destination (0.0.0.0/0, ::/0, dns "*", a proto with nothing else, every
port with no destination) is a PolicyError naming the rule. Unknown keys are PolicyErrors
naming the key.

`evaluate(policy, analysis)` gives an `EgressJudgement`: its verdict is ERROR when the analysis
cannot be trusted (frames not decoded, capture damaged, packets dropped), FAIL when any flow is
a violation, else PASS.

`judge(policy, analysis)` is what attestlab decides about a capture (the egress probe's check and
`attestlab egress analyze` both use it): the flows the capturing host starts on its own -- ARP
and neighbour discovery, and ICMP errors such as the port-unreachable its kernel sends back to
a board's NTP request, all from the MAC the pcapng names as its interface's if_MACaddr -- are
not the board's and are not judged. Only those kinds: any other flow is judged whatever MAC it
carries, so a board that forges the harness's MAC hides nothing but an ICMP error. A capture
with no flow left to judge is an error (silence cannot be told from an unplugged cable). Its
`outcome` ranks as the run's verdicts do: FAIL (a flow the policy does not allow was seen -- a
definite finding, even when other frames could not be decoded) before ERROR (cannot be judged)
before PASS.
"""

from __future__ import annotations

import fnmatch
import ipaddress
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any, Mapping

from harness.formats.flows import FlowAnalysis, Flow, flow_json, iso_ns
from harness.formats.netproto import IP_PROTO_NAMES

__all__ = ["PolicyError", "Rule", "EgressPolicy", "load_policy", "load_policy_file",
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
        out.append(p)
    return tuple(out)


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


def load_policy_file(path: str | Path) -> EgressPolicy:
    import yaml

    p = Path(path)
    try:
        doc = yaml.safe_load(p.read_text(encoding="utf-8"))
    except OSError as e:
        raise PolicyError(f"{p}: cannot read ({e.strerror or e})") from None
    except yaml.YAMLError as e:
        raise PolicyError(f"{p}: not valid YAML: {e}") from None
    try:
        return load_policy(doc)
    except PolicyError as e:
        raise PolicyError(f"{p}: {e}") from None


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


def _endpoint(flow: Flow) -> str:
    if flow.dport is None or flow.proto not in _PORT_PROTOS:
        return flow.dst
    return f"[{flow.dst}]:{flow.dport}" if ":" in flow.dst else f"{flow.dst}:{flow.dport}"


def _describe(flow: Flow) -> str:
    """'TCP to 203.0.113.5:443 (SNI x)' — what was seen, for a violation's why."""
    p = flow.proto
    if p in ("icmp", "icmpv6"):
        kind = {8: "echo request", 128: "echo request"}.get(flow.sport, f"type {flow.sport} code "
                                                                       f"{flow.dport}")
        what = f"{p.upper()} {kind} to {flow.dst}"
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


def _from_board(policy: EgressPolicy, flow: Flow) -> bool:
    if not policy.board_networks and not policy.board_macs:
        return True  # board unknown: judge every flow (fail closed)
    if flow.src_mac is not None and flow.src_mac.lower() in policy.board_macs:
        return True
    if flow.proto in ("ether", "llc"):
        return flow.src.lower() in policy.board_macs
    return _in(_addr(flow.src), policy.board_networks)


# ICMP types a host's kernel sends on its own in answer to someone else's packet.
_ICMP_ERRORS = {"icmp": frozenset((3, 4, 5, 11, 12)), "icmpv6": frozenset((1, 2, 3, 4))}


def _capture_host_flow(flow: Flow, macs: set[str]) -> bool:
    """A flow the capturing host started on its own: from its MAC, and of a kind it sends unasked."""
    if flow.src_mac is None or flow.src_mac.lower() not in macs:
        return False
    if flow.proto == "arp" or flow.housekeeping is not None:
        return True
    return flow.sport in _ICMP_ERRORS.get(flow.proto, ())


def evaluate(policy: EgressPolicy, analysis: FlowAnalysis, *,
             exclude_macs: tuple[str, ...] | list[str] | frozenset[str] = ()) -> EgressJudgement:
    """Judge every flow in the analysis against the policy.

    exclude_macs: the capturing host's own MACs. The flows it starts on its own from one of them
    (ARP, neighbour discovery and other link-local housekeeping, ICMP/ICMPv6 error messages)
    are not judged (counted in `excluded_flows`); every other flow is judged, whatever its MAC.
    """
    violations: list[Violation] = []
    allowed = housekeeping = not_judged = excluded = 0
    excluded_macs = {m.lower() for m in exclude_macs}
    for flow in analysis.flows:
        if excluded_macs and _capture_host_flow(flow, excluded_macs):
            excluded += 1
            continue
        if not _from_board(policy, flow):
            not_judged += 1
            continue
        if flow.housekeeping is not None and policy.link_local_housekeeping:
            housekeeping += 1
            continue
        names = [_norm_name(n) for n in flow.names]
        dst_addr, src_addr = _addr(flow.dst), _addr(flow.src)
        by_rule = any(_rule_matches(r, flow, names, dst_addr, src_addr) for r in policy.rules)
        if flow.is_dns:
            bad = [q for q in flow.dns_queries if not policy.allows_name(q)]
            if len(bad) == 1:
                violations.append(_violation(flow, f"DNS query for {bad[0]} (not in allowed names)",
                                             (bad[0],)))
            elif bad:
                shown = ", ".join(bad[:_MAX_NAMES_IN_WHY])
                extra = len(bad) - _MAX_NAMES_IN_WHY
                more = f" (+{extra} more)" if extra > 0 else ""
                violations.append(_violation(
                    flow, f"DNS queries for {len(bad)} names not in allowed names: {shown}{more}",
                    tuple(bad[:100])))
            by_names = bool(flow.dns_queries) and flow.dns_undecoded == 0 and not bad
            if bad:
                continue  # already a violation; the transport adds nothing to it
            if by_rule or by_names:
                allowed += 1
                continue
            if flow.dns_undecoded:
                violations.append(_violation(
                    flow, f"{_describe(flow)} carried {flow.dns_undecoded} payload(s) that are not "
                          f"DNS and matches no allow rule"))
            else:
                violations.append(_violation(flow, f"{_describe(flow)} matches no allow rule"))
            continue
        if by_rule:
            allowed += 1
            continue
        if flow.housekeeping is not None:
            why = f"{_describe(flow)} ({flow.housekeeping} housekeeping not allowed by the policy)"
        else:
            why = f"{_describe(flow)} matches no allow rule"
        violations.append(_violation(flow, why))

    if policy.dns_tunnel_check:
        violations.extend(_tunnel_violations(policy, analysis))

    errors = []
    if analysis.undecoded:
        errors.append(f"{analysis.undecoded} frame{'s' if analysis.undecoded != 1 else ''} "
                      f"not decoded")
    if analysis.capture_data_lost:
        errors.append("capture damaged or truncated; packets may be missing (see anomalies)")
    if analysis.stats is not None and analysis.stats.dropped:
        errors.append(f"capture dropped {analysis.stats.dropped} packets")
    judged = len(analysis.flows) - not_judged - excluded
    return EgressJudgement(tuple(violations), tuple(errors), allowed, housekeeping, not_judged,
                           excluded, judged)


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
    for s in analysis.tunnel_suspects:
        suffix = "." + s.parent
        matching = [q for q in analysis.dns_queries if _norm_name(q.name).endswith(suffix)]
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
        "flows": [flow_json(f) for f in analysis.flows],
        "violations": [v.as_dict() for v in judgement.violations],
        "anomalies": anomalies,
    }
