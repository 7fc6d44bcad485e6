"""attestlab: decide whether an accelerator board can be trusted, with signed evidence.

Commands:
  attestlab run --plan PLAN --board BOARD --key LAB.key [--out DIR]   run a test plan, sign the result
  attestlab verify RESULT.dsse.json --pubkey LAB.pub [--plan PLAN]    check a signed result and its evidence
  attestlab pcie show TARGET [--json]                                 decode a PCIe function's config space
  attestlab serial show TRANSCRIPT                                    print a console transcript (evidence) readably
  attestlab egress analyze CAPTURE --policy POLICY [--json]           judge a pcap/pcapng against an egress policy
  attestlab keys generate --out PREFIX                                make an Ed25519 lab key pair
  attestlab archive add|list|show|verify|proof|consistency|export DIR  the archive of signed results
  attestlab reference sign|verify|show|bundle PROFILE                 signed reference profiles

Exit codes of `run`: 0 PASS, 1 FAIL (the board violates a requirement), 2 ERROR (could not
decide: a timeout, a disconnect, malformed data, a missing reference, a bad plan or board).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

EXIT_PASS, EXIT_FAIL, EXIT_ERROR = 0, 1, 2


class _OutcomeCatcher:
    """A pytest plugin object that picks up the run's session state after everything else."""

    def __init__(self) -> None:
        self.state = None

    def pytest_unconfigure(self, config) -> None:
        from harness.plugin import attestlab_session
        try:
            self.state = attestlab_session(config)
        except KeyError:
            self.state = None


def _input_problem(path: str) -> str | None:
    """Why `path` cannot be an input file of `run`, in a few words; None when it is a file."""
    target = Path(path)
    if target.is_file():
        return None
    if target.is_dir():
        return "is a directory, not a file"
    return "no such file" if not target.exists() else "not a regular file"


def cmd_run(args: argparse.Namespace) -> int:
    import pytest

    from harness.results.keys import KeyError_, load_private_key
    from harness.verdict import Verdict

    for label, path in (("--plan", args.plan), ("--board", args.board), ("--key", args.key)):
        problem = _input_problem(path)
        if problem:
            print(f"attestlab run: {label} {path}: {problem}", file=sys.stderr)
            return EXIT_ERROR
    try:  # here, not only in the plugin: one line, before pytest starts (a key too open, not a key)
        load_private_key(args.key)
    except KeyError_ as exc:
        print(f"attestlab run: --key: {exc}", file=sys.stderr)
        return EXIT_ERROR
    trust_problem = _trust_problem(args.trust)
    if trust_problem:
        print(f"attestlab run: {trust_problem}", file=sys.stderr)
        return EXIT_ERROR
    archive_problem = args.archive and archive_problem_before_run(args.archive, args.archive_db)
    if archive_problem:
        print(f"attestlab run: --archive {args.archive}: {archive_problem}", file=sys.stderr)
        return EXIT_ERROR
    pytest_args = [str(args.plan), f"--board={args.board}", f"--attestlab-key={args.key}",
                   f"--attestlab-out={args.out}", "-p", "no:cacheprovider",
                   # hypothesis (a test dependency, if installed) has nothing to do in a run: its
                   # plugin would import it at the summary, seconds of nothing
                   "-p", "no:hypothesispytest",
                   # harness is imported before pytest starts when run as `python -m harness.cli`
                   "-W", "ignore::pytest.PytestAssertRewriteWarning", "--rootdir", str(Path(args.plan).parent)]
    if args.run_id:
        pytest_args.append(f"--attestlab-run-id={args.run_id}")
    if args.trust:
        pytest_args.append(f"--attestlab-trust={args.trust}")
    if args.junitxml:
        pytest_args.append(f"--junitxml={args.junitxml}")
    pytest_args += ["-q"] if args.quiet else ["-v"]
    catcher = _OutcomeCatcher()
    try:
        status = pytest.main(pytest_args, plugins=[catcher])
    except KeyboardInterrupt as exc:  # a second signal while the result was written
        print(f"attestlab run: interrupted{f' by {exc}' if str(exc) else ''} while the result was written; "
              f"nothing was signed (verify calls the run's directory an interrupted run)", file=sys.stderr)
        return EXIT_ERROR
    state = catcher.state
    outcome = state.outcome if state is not None else None
    if outcome is None:
        if int(status) != pytest.ExitCode.USAGE_ERROR:  # pytest has printed the usage error: one line
            print(f"attestlab run: no verdict (pytest exit status {int(status)}); see the messages above",
                  file=sys.stderr)
        return EXIT_ERROR
    if outcome.write_error:
        print(f"attestlab run: result NOT written: {outcome.write_error}; the run's verdict "
              f"({outcome.verdict.value}) is not kept, nothing in its directory verifies", file=sys.stderr)
        return EXIT_ERROR
    if args.archive:  # a signed result, whatever its verdict, goes into the archive
        not_archived = archive_result(args.archive, outcome.envelope, args.key, args.archive_db)
        if not_archived:
            print(f"attestlab run: result written to {outcome.envelope} but NOT archived in {args.archive}: "
                  f"{not_archived}", file=sys.stderr)
            return EXIT_FAIL if outcome.verdict is Verdict.FAIL else EXIT_ERROR
    if state.deferred_signal:
        print(f"attestlab run: interrupted by {state.deferred_signal} while the result was written; it was "
              f"finished first ({outcome.verdict.value}): {outcome.envelope}", file=sys.stderr)
        return EXIT_ERROR
    if int(status) == pytest.ExitCode.INTERRUPTED:
        print(f"attestlab run: interrupted by {state.stop_signal or 'an interrupt'}; signed as "
              f"{outcome.verdict.value} and incomplete: {outcome.envelope}", file=sys.stderr)
        return EXIT_FAIL if outcome.verdict is Verdict.FAIL else EXIT_ERROR  # a finding made before stands
    return {Verdict.PASS: EXIT_PASS, Verdict.FAIL: EXIT_FAIL}.get(outcome.verdict, EXIT_ERROR)


def _expectation_text(expectation: dict) -> str:
    """Where a step's expectation came from, for `verify`; one from the plan stands out."""
    if expectation.get("source") == "reference":
        return (f"expectation: reference {expectation.get('key')} "
                f"(profile sha256 {str(expectation.get('profile_sha256'))[:16]}…)")
    if expectation.get("source") == "plan":
        return f"expectation: FROM THE PLAN (expect: at line {expectation.get('line')}), not the reference profile"
    if expectation.get("source") == "none":
        return "expectation: none (the check decides from the step's params in the plan)"
    return "expectation: not recorded"


def _signer_text(reference: dict) -> str:
    """Who signed the reference profile a record used, as the record says it."""
    signer = reference.get("signer") if isinstance(reference.get("signer"), dict) else None
    if signer:
        trust = signer.get("trust_file") if isinstance(signer.get("trust_file"), dict) else {}
        return (f"profile signed by {signer.get('name')} ({signer.get('algorithm')} key {signer.get('keyid')}), "
                f"trusted by {trust.get('name')} ({trust.get('path')})")
    if reference.get("untrusted"):
        return f"profile NOT TRUSTED in this run: {reference.get('untrusted')}"
    return "profile signer: not recorded (a record from before signed profiles)"


def _not_verified(args: argparse.Namespace, reason: str, status: int, *, signature_verified: bool = False) -> int:
    """`verify` could not verify: why, on stderr, and with --json as a JSON verdict on stdout too."""
    print(f"NOT VERIFIED: {reason}" if not signature_verified else f"attestlab verify: {reason}", file=sys.stderr)
    if args.json:
        print(json.dumps({"verified": False, "signature_verified": signature_verified, "reason": reason,
                          "envelope": args.envelope}, indent=2))
    return status


def _verify_against(args: argparse.Namespace, record: dict) -> tuple[int, list[str]]:
    """Problems with --plan / --reference: (exit status for bad input or 0, mismatches)."""
    from harness.plan import load_plan
    from harness.reference import profile_digest
    from harness.results.bundle import plan_mismatches, reference_mismatches
    from harness.yamlio import YamlError

    problems: list[str] = []
    if args.plan:
        try:
            problems += plan_mismatches(record, load_plan(args.plan))
        except YamlError as exc:
            return _not_verified(args, f"--plan {exc}", EXIT_ERROR, signature_verified=True), []
    if args.reference:
        try:
            digest = profile_digest(args.reference)  # the YAML's, or the payload's of its signed envelope
        except OSError as exc:
            return _not_verified(args, f"--reference {args.reference}: {exc.strerror or exc}", EXIT_ERROR,
                                 signature_verified=True), []
        problems += reference_mismatches(record, digest, args.reference)
    return 0, problems


def _proof_problem(args: argparse.Namespace):
    """({entry, archive, tree_size, checkpoint_time}, None) when --proof shows the envelope is in a
    signed archive tree, else (None, why)."""
    from harness.archive.checkpoint import ProofFileError, verify_inclusion_file
    from harness.files import read_capped
    from harness.formats.dsse import strict_json
    from harness.results.keys import load_public_key

    try:
        proof = strict_json(read_capped(args.proof, 1 << 20))
        envelope = read_capped(args.envelope if not Path(args.envelope).is_dir()
                               else Path(args.envelope) / "result.dsse.json", 256 * 1024 * 1024)
        checkpoint = verify_inclusion_file(envelope, proof, load_public_key(args.pubkey))
    except OSError as exc:
        return None, f"cannot read: {exc.strerror or exc}"
    except (ProofFileError, ValueError, UnicodeDecodeError) as exc:
        return None, str(exc)
    return {"entry": proof["leaf_index"], "archive": checkpoint.archive, "tree_size": checkpoint.size,
            "checkpoint_time": checkpoint.time}, None


def cmd_verify(args: argparse.Namespace) -> int:
    from harness.results.bundle import verify_result
    from harness.results.dsse import VerificationError
    from harness.results.keys import KeyError_, load_public_key

    try:
        verified = verify_result(args.envelope, load_public_key(args.pubkey))
    except (VerificationError, KeyError_) as exc:
        return _not_verified(args, str(exc), EXIT_FAIL)
    record = verified.record
    status, mismatches = _verify_against(args, record)
    if status:
        return status
    if args.proof:
        archived, problem = _proof_problem(args)
        if problem:
            return _not_verified(args, f"--proof {args.proof}: {problem}", EXIT_FAIL, signature_verified=True)
    plan, board = record["plan"], record["board"]
    steps = [(req, step) for req in record.get("requirements", []) for step in req.get("steps", [])]
    from_plan = [f"{req.get('id')}::{step.get('step')}" for req, step in steps
                 if (step.get("expectation") or {}).get("source") == "plan"]
    if args.json:
        print(json.dumps({"verified": not mismatches, "signature_verified": True, "keyid": verified.keyid,
                          "run_id": record.get("run_id"), "verdict": record.get("verdict"),
                          "complete": not record.get("not_run"), "blobs_checked": verified.blobs_checked,
                          "plan": {k: plan.get(k) for k in ("id", "version", "path", "sha256")},
                          "reference": board.get("reference"),
                          "requirements": {r.get("id"): r.get("verdict") for r in record.get("requirements", [])},
                          "expectations": {f"{req.get('id')}::{step.get('step')}": step.get("expectation")
                                           for req, step in steps},
                          "expectations_from_plan": from_plan,
                          "tests": [{k: t.get(k) for k in ("nodeid", "outcome", "verdict")}
                                    for t in record.get("tests", [])],
                          "mismatches": mismatches,
                          **({"archived": archived} if args.proof else {}),
                          **({"reason": f"not from the given files: {'; '.join(mismatches)}"} if mismatches else {})},
                         indent=2))
        return EXIT_FAIL if mismatches else EXIT_PASS
    declared = [s for r in plan.get("requirements") or [] for s in r.get("steps") or []]
    print(f"verified: {verified.envelope}")
    print(f"  signed by key {verified.keyid}")
    print(f"  run {record.get('run_id')}: plan {plan.get('id')} {plan.get('version')} on board {board.get('name')}")
    print(f"  plan {plan.get('path')} sha256 {plan.get('sha256')}: {len(plan.get('requirements') or [])} "
          f"requirement(s), {len(declared)} step(s)")
    reference = board.get("reference") if isinstance(board.get("reference"), dict) else {}
    print(f"  reference profile {reference.get('path')} sha256 {reference.get('sha256')}")
    print(f"  {_signer_text(reference)}")
    for req in record.get("requirements", []):
        print(f"  {req.get('verdict'):<6} {req.get('id')}")
        for step in req.get("steps", []):
            print(f"           {step.get('step')}: {step.get('verdict')}; "
                  f"{_expectation_text(step.get('expectation') or {})}")
    if from_plan:
        print(f"  NOTE: {len(from_plan)} step(s) compared against an expectation written in the plan itself, "
              f"not the board's reference profile: {', '.join(from_plan)}")
    tests = record.get("tests", [])
    others = [t for t in tests if t.get("verdict") != "PASS" and not t.get("step")]
    if tests:
        print(f"  session: {len(tests)} test item(s) ran in the signed session")
    for test in others:
        print(f"  {test.get('verdict'):<6} {test.get('nodeid')} (pytest: {test.get('outcome')})")
    if record.get("not_run"):
        print(f"  INCOMPLETE: {len(record.get('not_run'))} plan step(s) not run: {', '.join(record.get('not_run'))}")
    print(f"  overall {record.get('verdict')}; {verified.blobs_checked} evidence blobs match their digests")
    if args.proof:
        print(f"  archived: entry {archived['entry']} of archive {archived['archive'][:16]}…, in the tree of "
              f"{archived['tree_size']} entries whose checkpoint this key signed at {archived['checkpoint_time']}")
    if args.plan and not mismatches:
        print(f"  plan {args.plan}: the record came from exactly this plan")
    if args.reference and not mismatches:
        print(f"  reference {args.reference}: the record's expectations came from exactly this profile")
    for problem in mismatches:
        print(f"NOT FROM THE GIVEN FILES: {problem}", file=sys.stderr)
    return EXIT_FAIL if mismatches else EXIT_PASS


_MAX_DUMP_BYTES = 4 * 1024 * 1024  # `lspci -xxxx` of a whole machine is well below this
_TEXT_BYTES = frozenset(range(0x20, 0x7F)) | {0x09, 0x0A, 0x0D}


def config_space_from_file(raw: bytes) -> bytes:
    """The config-space bytes of a file: `lspci -x…` text, or else the raw binary as sysfs has it.

    It is text only if every byte is printable ASCII or a line break and lspci's grammar finds
    exactly one device in it; a binary dump whose first bytes happen to read `ab:` is binary."""
    from harness.formats.pci_config import ConfigSpaceError, parse_lspci_hex_dump

    if raw and all(b in _TEXT_BYTES for b in raw):
        dumps = parse_lspci_hex_dump(raw.decode("ascii"))
        if len(dumps) > 1:
            raise ConfigSpaceError(f"expected one device in the lspci dump, found {len(dumps)}")
        if dumps:
            return next(iter(dumps.values()))
    return raw


def cmd_pcie_show(args: argparse.Namespace) -> int:
    from harness.files import read_capped
    from harness.formats.pci_config import ConfigSpaceError, config_space_json, decode_config_space, format_dsn
    from harness.interfaces.pcie import PcieFunction, PcieUnavailable, resolve_sysfs_path

    target = resolve_sysfs_path(args.target)
    try:
        if target.is_dir():
            raw = PcieFunction(target).config_space()
        else:
            raw = config_space_from_file(read_capped(target, _MAX_DUMP_BYTES))
        cs = decode_config_space(raw)
    except (OSError, PcieUnavailable, ConfigSpaceError) as exc:
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
        print(f"attestlab pcie show: {target}: {why}", file=sys.stderr)
        return EXIT_ERROR
    if args.json:
        print(json.dumps(config_space_json(cs), indent=2))
        return EXIT_PASS
    print(f"{target}: {cs.vendor_id:04x}:{cs.device_id:04x} rev {cs.revision:02x} class {cs.class_code:06x} "
          f"header type {cs.header_type} ({cs.size} bytes)")
    if cs.subsystem_vendor_id is not None:
        print(f"  subsystem {cs.subsystem_vendor_id:04x}:{cs.subsystem_id:04x}")
    if cs.dsn is not None:
        print(f"  device serial number {format_dsn(cs.dsn)}")
    for cap in cs.capabilities:
        where = f"[{cap.offset:x} v{cap.version}]" if cap.extended else f"[{cap.offset:x}]"
        print(f"  Capabilities: {where} {cap.name}")
    for anomaly in cs.anomalies:
        print(f"  anomaly: {anomaly}")
    return EXIT_PASS


def _egress_policy_doc(path: str):
    """The policy mapping in `path`: the file itself, or `egress.policy` of a reference profile."""
    from harness.formats.egress_policy import PolicyError
    from harness.yamlio import YamlError, load_yaml_file

    try:
        doc = load_yaml_file(Path(path))
    except (OSError, YamlError) as exc:
        raise PolicyError(f"{path}: {exc}") from None
    if isinstance(doc, dict) and "reference" in doc:  # a reference profile
        policy = (doc.get("egress") or {}).get("policy") if isinstance(doc.get("egress"), dict) else None
        if policy is None:
            raise PolicyError(f"{path} is a reference profile without egress.policy; add one, or give a "
                              f"policy file ({{allow: [...]}})")
        return policy, "egress.policy of reference profile"
    return doc, "policy file"


def load_egress_policy(path: str):
    """(EgressPolicy, what kind of file it came from) for a policy file or a reference profile.

    The one place an egress policy is read from a file (harness.formats does no I/O).
    PolicyError naming the file when it cannot be read or is not a valid policy.
    """
    from harness.formats.egress_policy import PolicyError, load_policy

    doc, kind = _egress_policy_doc(path)
    try:
        return load_policy(doc), kind
    except PolicyError as exc:
        raise PolicyError(f"{path}: {exc}") from None


_MAX_VIOLATION_ROWS = 50  # a flood is summed up by its own violation, not printed row by row


def cmd_egress_analyze(args: argparse.Namespace) -> int:
    from harness.formats.egress_policy import PolicyError, egress_report_json, judge
    from harness.formats.flows import analyze_bytes
    from harness.formats.pcap import CaptureFormatError
    from harness.interfaces.netcap import CaptureUnavailable, offline_capture

    try:
        policy, kind = load_egress_policy(args.policy)
    except PolicyError as exc:
        print(f"attestlab egress analyze: policy {exc}" if not str(exc).startswith(args.policy)
              else f"attestlab egress analyze: {exc}", file=sys.stderr)
        return EXIT_ERROR
    try:
        analysis = analyze_bytes(offline_capture(args.capture))
    except (CaptureUnavailable, CaptureFormatError) as exc:
        print(f"attestlab egress analyze: {args.capture}: {exc}", file=sys.stderr)
        return EXIT_ERROR
    judgement = judge(policy, analysis, exclude_macs=() if args.all_flows else None)
    verdict = judgement.outcome
    code = {"PASS": EXIT_PASS, "FAIL": EXIT_FAIL}.get(verdict, EXIT_ERROR)
    if args.json:
        report = egress_report_json(analysis, judgement)
        report.update(verdict=verdict, errors=list(judgement.errors),
                      capture_macs=[] if args.all_flows else list(analysis.capture_macs),
                      judged_flows=judgement.judged_flows, excluded_flows=judgement.excluded_flows)
        print(json.dumps(report, indent=2))
        return code
    flows = analysis.flows
    print(f"{args.capture}: {analysis.capture_format}, {analysis.packets} frames, {len(flows)} flows; "
          f"policy: {kind} {args.policy}")
    print(f"  judged {judgement.judged_flows} flow(s) the board started: {judgement.allowed_flows} allowed by a "
          f"rule, {judgement.housekeeping_flows} link-local housekeeping, {len(judgement.violations)} violation(s)")
    if judgement.excluded_flows:
        print(f"  not judged: {judgement.excluded_flows} flow(s) the capturing host "
              f"({', '.join(analysis.capture_macs)}, the pcapng's if_MACaddr) started on its own: ARP, ICMP "
              f"errors (--all-flows judges them too)")
    if judgement.not_judged_flows:
        print(f"  not judged: {judgement.not_judged_flows} flow(s) started by hosts other than the policy's board")
    if judgement.violations:
        rows = [("PROTO", "SOURCE", "DESTINATION", "NAMES", "PKTS", "BYTES", "FIRST SEEN", "LAST SEEN")]
        shown = judgement.violations[:_MAX_VIOLATION_ROWS]
        for v in shown:
            dst = v.dst if v.dport is None or v.proto not in ("tcp", "udp", "sctp", "udplite") else (
                f"[{v.dst}]:{v.dport}" if ":" in v.dst else f"{v.dst}:{v.dport}")
            names = ", ".join(v.names[:3]) + (f" (+{len(v.names) - 3})" if len(v.names) > 3 else "")
            rows.append((v.proto, v.src, dst, names or "-", str(v.packets), str(v.bytes),
                         v.first_seen, v.last_seen))
        widths = [min(max(len(r[i]) for r in rows), 60) for i in range(len(rows[0]))]
        print("\nviolations:")
        for n, r in enumerate(rows):
            print("  " + "  ".join(c[:60].ljust(w) for c, w in zip(r, widths)).rstrip())
            if n:
                print(f"      why: {judgement.violations[n - 1].why}")
        if len(judgement.violations) > len(shown):
            print(f"  ... {len(judgement.violations) - len(shown)} more violations (--json lists them)")
    if judgement.errors:
        print("\ncannot be fully judged:")
        for e in judgement.errors:
            print(f"  - {e}")
    for a in analysis.anomalies[:20]:
        print(f"  anomaly: {a}")
    if len(analysis.anomalies) > 20:
        print(f"  ... {len(analysis.anomalies) - 20} more anomalies (--json lists them)")
    print(f"\nverdict: {verdict} ({judgement.reason if verdict != 'PASS' else 'every flow the board started is allowed'})")
    return code


def cmd_serial_show(args: argparse.Namespace) -> int:
    from harness.files import read_capped
    from harness.interfaces.transcript import MAX_TRANSCRIPT_BYTES, render_jsonl

    limit = args.max_chunk_bytes if args.max_chunk_bytes > 0 else None
    try:
        # Checked whole before a line is printed, then printed a record at a time (render_jsonl).
        render_jsonl(read_capped(args.transcript, MAX_TRANSCRIPT_BYTES), sys.stdout.write,
                     max_chunk_bytes=limit, numbered=True)
    except (OSError, ValueError) as exc:  # FileRefused (a FIFO, /dev/zero, too large) is an OSError
        print(f"attestlab serial show: {args.transcript}: {exc}", file=sys.stderr)
        return EXIT_ERROR
    return EXIT_PASS


def _trust_problem(trust: str | None) -> str | None:
    """Why the lab's trust file (--trust, else the default locations) cannot be used; None if it can
    or there is none (then every reference profile is untrusted, and says so in each step)."""
    from harness.reference.trust import TrustError, load_lab_trust

    try:
        load_lab_trust(trust)
    except TrustError as exc:
        return f"trust file: {exc}"
    return None


def _signed_profile(path: str, trust_path: str | None, at: str | None):
    """(Reference, envelope) of a signed profile judged by a trust file; ValueError/OSError if unusable."""
    from datetime import datetime, timezone

    from harness.files import read_capped
    from harness.reference import MAX_ENVELOPE_BYTES, load_board_reference
    from harness.reference.signed import parse_profile_envelope
    from harness.reference.trust import load_lab_trust

    when = datetime.now(timezone.utc)
    if at:
        when = datetime.fromisoformat(at.replace("Z", "+00:00"))
        if when.tzinfo is None:
            raise ValueError(f"--at {at}: give a time with its zone (Z or +HH:MM)")
    trust = load_lab_trust(trust_path)
    reference = load_board_reference(path, trust, when)
    try:
        envelope = parse_profile_envelope(read_capped(path, MAX_ENVELOPE_BYTES))
    except ValueError:
        envelope = None
    return reference, envelope, trust


def cmd_reference_sign(args: argparse.Namespace) -> int:
    from cryptography.hazmat.primitives.asymmetric.ec import EllipticCurvePrivateKey
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from harness.files import read_capped
    from harness.formats.dsse import algorithm_of, keyid
    from harness.formats.x509chain import ChainError, load_pem_certificates
    from harness.reference import load_reference
    from harness.reference.signed import envelope_json, sign_profile
    from harness.results.keys import KeyError_, load_private_key
    from harness.yamlio import MAX_YAML_BYTES, YamlError

    out = Path(args.out) if args.out else Path(args.profile).with_suffix(".dsse.json")
    try:
        load_reference(args.profile)  # only a valid profile is signed: its errors are the author's to fix
        profile = read_capped(args.profile, MAX_YAML_BYTES)
        key = load_private_key(args.key, kinds=(Ed25519PrivateKey, EllipticCurvePrivateKey))
        chain = None
        if args.x509_chain:
            chain = read_capped(args.x509_chain, 64 * 1024).decode("ascii", "replace")
            leaf = load_pem_certificates(chain, args.x509_chain)[0]
            if keyid(leaf.public_key()) != keyid(key.public_key()):
                raise KeyError_(f"{args.x509_chain}: its first certificate (the leaf) holds another key than {args.key}")
        envelope = sign_profile(profile, key, chain)
        out.write_bytes(envelope_json(envelope))
    except (OSError, YamlError, KeyError_, ChainError) as exc:
        print(f"attestlab reference sign: {getattr(exc, 'strerror', None) or exc}", file=sys.stderr)
        return EXIT_ERROR
    print(f"wrote {out}: {args.profile} signed with {algorithm_of(key)} key {keyid(key.public_key())}")
    return EXIT_PASS


def cmd_reference_verify(args: argparse.Namespace) -> int:
    try:
        reference, _, trust = _signed_profile(args.envelope, args.trust, args.at)
    except (OSError, ValueError) as exc:  # TrustError and YamlError are ValueErrors
        print(f"attestlab reference verify: {getattr(exc, 'strerror', None) or exc}", file=sys.stderr)
        return EXIT_ERROR
    if reference.untrusted:
        print(f"NOT TRUSTED: {args.envelope}: {reference.untrusted}", file=sys.stderr)
        return EXIT_FAIL
    signer = reference.signed_by
    print(f"trusted: {args.envelope}: {reference.product}")
    print(f"  signed by {signer.signer} ({signer.algorithm} key {signer.keyid}) of trust file {trust.path} "
          f"({trust.name})" + (f"; X.509 leaf {signer.x509['leaf']} under {signer.x509['anchor']}" if signer.x509 else ""))
    print(f"  profile sha256 {reference.sha256}; {len(reference.components)} firmware component(s)")
    from harness.reference.bundle import pinned_problems

    problems = pinned_problems(reference)  # files it pins (RIMs, roots) that a run could not use
    for problem in problems:
        print(f"  NOT USABLE: {problem}", file=sys.stderr)
    return EXIT_FAIL if problems else EXIT_PASS


def cmd_reference_show(args: argparse.Namespace) -> int:
    from harness.progress import terminal_safe

    try:
        reference, envelope, trust = _signed_profile(args.envelope, args.trust, None)
    except (OSError, ValueError) as exc:
        print(f"attestlab reference show: {getattr(exc, 'strerror', None) or exc}", file=sys.stderr)
        return EXIT_ERROR
    print(f"# {args.envelope}")
    if envelope is None:
        print("# not signed: " + terminal_safe(reference.untrusted))
        return EXIT_FAIL
    for n, sig in enumerate(envelope.signatures):
        chain = " (with an X.509 chain)" if "x509_chain" in sig.extra else ""
        print(f"# signature {n}: keyid {terminal_safe(str(sig.keyid))}{chain}")
    if reference.untrusted:
        print(f"# NOT TRUSTED{f' by {trust.path}' if trust else ''}: {terminal_safe(reference.untrusted)}")
    else:
        s = reference.signed_by
        print(f"# trusted: signed by {s.signer} ({s.algorithm}, key {s.keyid}) of trust file {trust.path}")
    print(f"# profile sha256 {reference.sha256}")
    text = envelope.payload.decode("utf-8", "replace")
    sys.stdout.write("\n".join(terminal_safe(line) for line in text.split("\n")))
    return EXIT_FAIL if reference.untrusted else EXIT_PASS


def cmd_reference_bundle(args: argparse.Namespace) -> int:
    from harness.reference.bundle import BundleError, make_bundle
    from harness.yamlio import YamlError

    envelope = Path(args.envelope)
    out = Path(args.out) if args.out else envelope.with_name(envelope.name.removesuffix(".dsse.json") + ".bundle.json")
    try:
        data, names = make_bundle(envelope)
        out.write_bytes(data)
    except (OSError, BundleError, YamlError) as exc:
        print(f"attestlab reference bundle: {getattr(exc, 'strerror', None) or exc}", file=sys.stderr)
        return EXIT_ERROR
    print(f"wrote {out}: {envelope} with {len(names)} pinned file(s)" + "".join(f"\n  {n}" for n in names))
    return EXIT_PASS


def _archive_fail(command: str, exc: BaseException) -> int:
    """One line for an archive command that could not do its work: 1 when the archive (or a
    proof) does not verify, 2 for bad input (no archive, unreadable key or file)."""
    from harness.archive.store import ArchiveCorrupt
    from harness.progress import terminal_safe
    from harness.results.dsse import VerificationError

    import sqlite3

    unopened = isinstance(exc, sqlite3.OperationalError) and "open" in str(exc)  # I/O, not tampering
    bad = isinstance(exc, (ArchiveCorrupt, VerificationError)) or (
        command == "verify" and isinstance(exc, sqlite3.DatabaseError) and not unopened)  # archive.db damaged
    why = getattr(exc, "strerror", None) if isinstance(exc, OSError) else None
    print(f"{'NOT VERIFIED: ' if bad else ''}attestlab archive {command}: {terminal_safe(str(why or exc))}",
          file=sys.stderr)
    return EXIT_FAIL if bad else EXIT_ERROR


def _write_json(path: str, document: dict) -> None:
    Path(path).write_text(json.dumps(document, indent=2) + "\n")


def cmd_archive(args: argparse.Namespace) -> int:
    """Every `attestlab archive` subcommand: open the archive, do one thing, close it."""
    from harness.archive.db import database_errors
    from harness.archive.store import Archive
    from harness.results.keys import KeyError_, load_private_key, load_public_key
    from harness.results.dsse import VerificationError

    command = args.archive_command
    try:
        key = load_private_key(args.key) if command == "add" else None
        public_key = load_public_key(args.pubkey) if getattr(args, "pubkey", None) else None
        with Archive(args.dir, create=command == "add", db=args.archive_db, read_only=command != "add") as archive:
            return _ARCHIVE_COMMANDS[command](args, archive, key or public_key)
    except (OSError, ValueError, KeyError_, VerificationError, *database_errors()) as exc:
        return _archive_fail(command, exc)


def _archive_add(args, archive, key) -> int:
    if len(args.envelope) == 1:
        index = archive.append(args.envelope[0], key)
        print(f"archived {args.envelope[0]} as entry {index} of {archive.dir} (checkpoint size {index + 1}, signed)")
        return EXIT_PASS
    # One transaction for the batch: all of it is appended, or none (docs/archive.md).
    indexes = archive.append_many(args.envelope, key)
    print(f"archived {len(indexes)} results as entries {indexes[0]}..{indexes[-1]} of {archive.dir} "
          f"(checkpoint size {indexes[-1] + 1}, signed)")
    return EXIT_PASS


def archive_problem_before_run(archive_dir: str, db: str | None = None) -> str | None:
    """Why `run --archive` could not append at the end, found before the board is touched."""
    from harness.archive.db import database_errors
    from harness.archive.store import Archive

    try:
        Archive(archive_dir, create=True, db=db).close()
    except (OSError, ValueError, *database_errors()) as exc:
        return str(exc)
    return None


def archive_result(archive_dir: str, envelope: Path, key_path: str, db: str | None = None) -> str | None:
    """`run --archive`: append the run's signed result; None when done, else why not."""
    from harness.archive.db import database_errors
    from harness.archive.store import Archive
    from harness.results.keys import KeyError_, load_private_key

    try:
        with Archive(archive_dir, create=True, db=db) as archive:
            index = archive.append(envelope, load_private_key(key_path))
    except (OSError, ValueError, KeyError_, *database_errors()) as exc:
        return str(getattr(exc, "strerror", None) if isinstance(exc, OSError) and exc.strerror else exc)
    print(f"archived as entry {index} of {archive_dir}")
    return None


def _archive_list(args, archive, _key) -> int:
    from harness.progress import terminal_safe

    rows = list(archive.log.entries(args.board_serial, args.plan, args.verdict, args.since, args.until))
    if args.json:
        print(json.dumps(rows, indent=2))
        return EXIT_PASS
    columns = ("idx", "run_started", "verdict", "board_name", "board_serial", "plan_id", "run_id")
    table = [columns] + [tuple(terminal_safe(str(row[c])) for c in columns) for row in rows]
    widths = [max(len(r[i]) for r in table) for i in range(len(columns))]
    for line in table:
        print("  ".join(cell.ljust(w) for cell, w in zip(line, widths)).rstrip())
    print(f"{len(rows)} of {archive.size()} entries")
    return EXIT_PASS


def _archive_show(args, archive, _key) -> int:
    from harness.progress import terminal_safe

    row = archive.log.entry(args.n)
    leaf = archive.log.leaf(args.n)
    if row is None or leaf is None:
        print(f"attestlab archive show: {archive.dir}: no entry {args.n} (it holds {archive.size()})", file=sys.stderr)
        return EXIT_ERROR
    print(f"entry {args.n} of {archive.dir} (archive {archive.id})")
    print(f"  envelope sha256 {leaf[2]}, leaf hash {leaf[1].hex()}, appended {terminal_safe(str(leaf[3]))}")
    for field, value in row.items():
        if field != "idx":
            print(f"  {field}: {terminal_safe(str(value))}")
    print(f"  envelope: {archive.envelope_path(args.n)} (verify it with `attestlab archive verify`)")
    return EXIT_PASS


def held_checkpoint(path: str, public_key):
    """The signed checkpoint in a file an auditor kept: a proof (`archive proof|export`), a
    consistency proof (its newer checkpoint) or a bare checkpoint envelope."""
    from harness.archive.checkpoint import open_checkpoint
    from harness.files import read_capped
    from harness.formats.dsse import strict_json

    document = strict_json(read_capped(path, 1 << 20))
    if isinstance(document, dict) and "payloadType" not in document:
        document = document.get("checkpoint", document.get("new_checkpoint"))
    return open_checkpoint(document, public_key, f"held checkpoint {path}")


def _archive_verify(args, archive, public_key) -> int:
    held = tuple(held_checkpoint(path, public_key) for path in args.held or ())
    verified = archive.verify(public_key, held, jobs=args.jobs)
    print(f"verified: {archive.dir}: {verified.size} entries, {verified.checkpoints} signed checkpoints, "
          f"{verified.blobs} blobs match their digests; root {verified.root.hex()}"
          + (f"; consistent with {len(held)} held checkpoint(s)" if held else ""))
    return EXIT_PASS


def _archive_proof(args, archive, public_key) -> int:
    document = archive.inclusion(args.n, public_key)
    _write_json(args.out, document)
    print(f"wrote {args.out}: entry {args.n} in the signed tree of {document['tree_size']} "
          f"({len(document['audit_path'])} hashes)")
    return EXIT_PASS


def _archive_consistency(args, archive, public_key) -> int:
    document = archive.consistency(args.old, args.new, public_key)
    text = json.dumps(document, indent=2)
    if args.out:
        _write_json(args.out, document)
    print(f"checkpoint {args.old} is a prefix of checkpoint {args.new}: {len(document['proof'])} hashes"
          + (f"; wrote {args.out}" if args.out else f"\n{text}"))
    return EXIT_PASS


def _archive_export(args, archive, public_key) -> int:
    import shutil

    from harness.results.bundle import ENVELOPE_NAME, EVIDENCE_DIR, verify_result

    document = archive.inclusion(args.n, public_key)
    envelope = archive.envelope_path(args.n)
    verified = verify_result(envelope, public_key)
    out = Path(args.out)
    (out / EVIDENCE_DIR).mkdir(parents=True, exist_ok=False)
    shutil.copyfile(envelope, out / ENVELOPE_NAME)
    for ref in verified.record.get("evidence", []):  # verified: each names a blob with its digest
        shutil.copyfile(archive.evidence / ref["sha256"], out / EVIDENCE_DIR / ref["sha256"])
    _write_json(str(out / "proof.json"), document)
    print(f"wrote {out}: entry {args.n} with {verified.blobs_checked} evidence blob(s) and its inclusion proof; "
          f"check it with: attestlab verify {out / ENVELOPE_NAME} --pubkey LAB.pub --proof {out / 'proof.json'}")
    return EXIT_PASS


_ARCHIVE_COMMANDS = {"add": _archive_add, "list": _archive_list, "show": _archive_show, "verify": _archive_verify,
                     "proof": _archive_proof, "consistency": _archive_consistency, "export": _archive_export}


def cmd_keys_generate(args: argparse.Namespace) -> int:
    from harness.results.keys import KeyError_, generate_keypair

    try:
        private_path, public_path = generate_keypair(args.out, overwrite=args.force)
    except KeyError_ as exc:
        print(f"attestlab keys generate: {exc}", file=sys.stderr)
        return EXIT_ERROR
    print(f"wrote {private_path} (private, mode 0600: keep it secret) and {public_path} (give to verifiers)")
    return EXIT_PASS


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="attestlab", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="run a test plan against a board and sign the result",
                         formatter_class=argparse.RawDescriptionHelpFormatter,
                         description="Run a test plan against a board (bench or simulated), print verdicts by "
                                     "requirement, and write a signed result directory.",
                         epilog="exit status: 0 PASS, 1 FAIL (a requirement is violated), "
                                "2 ERROR (could not decide, or bad input)\n\n"
                                "example:\n  attestlab run --plan test_plans/level1.yaml "
                                "--board fixtures/boards/sim-clean.yaml --key lab.key --out results/")
    run.add_argument("--plan", required=True, help="test plan YAML (e.g. test_plans/level1.yaml)")
    run.add_argument("--board", required=True, help="board config YAML (e.g. fixtures/boards/sim-clean.yaml)")
    run.add_argument("--key", required=True, help="the lab's Ed25519 private key (PEM) that signs the result")
    run.add_argument("--out", default="results", help="results directory (default: results/)")
    run.add_argument("--run-id", help="name of this run's directory (default: time-board-random)")
    run.add_argument("--junitxml", help="also write a JUnit XML report here")
    run.add_argument("--trust", metavar="TRUST.yaml",
                     help="the lab's trust file: who may sign reference profiles (default: $ATTESTLAB_TRUST, "
                          "else ~/.config/attestlab/trust.yaml, else /etc/attestlab/trust.yaml; without one "
                          "every step that uses the reference is ERROR)")
    run.add_argument("--archive", metavar="DIR",
                     help="also append the signed result to this archive (made if missing; docs/archive.md), "
                          "its checkpoint signed with --key")
    _archive_db_option(run)
    run.add_argument("-q", "--quiet", action="store_true",
                     help="less output from pytest, and no status line (on a terminal, the step under way "
                          "and what long work reports, e.g. the egress window, is shown in place)")
    run.set_defaults(func=cmd_run)

    verify = sub.add_parser("verify", help="verify a signed result and every evidence blob",
                            description="Check the DSSE signature, the in-toto statement, and that every "
                                        "evidence blob next to it has the digest that was signed; print "
                                        "where each step's expectation came from. Exit status 0 verified, "
                                        "1 not verified (or not from the --plan/--reference given), 2 bad input.")
    verify.add_argument("envelope", help="path to result.dsse.json")
    verify.add_argument("--pubkey", required=True, help="the lab's public key (PEM)")
    verify.add_argument("--plan", metavar="PLAN.yaml",
                        help="also check the result came from exactly this plan file: its sha256, its "
                             "requirements and steps, where each step's expectation came from (exit 1 if not)")
    verify.add_argument("--reference", metavar="PROFILE.yaml",
                        help="also check the expectations came from exactly this reference profile (exit 1 if not)")
    verify.add_argument("--proof", metavar="PROOF.json",
                        help="also check the inclusion proof (`attestlab archive proof|export`): the envelope is "
                             "the stated entry of an archive tree whose checkpoint the same key signed (exit 1 if not)")
    verify.add_argument("--json", action="store_true", help="machine-readable output")
    verify.set_defaults(func=cmd_verify)

    pcie = sub.add_parser("pcie", help="PCIe tools").add_subparsers(dest="pcie_command", required=True, metavar="TOOL")
    show = pcie.add_parser("show", help="decode a config space: IDs, capabilities, DSN, anomalies",
                           description="TARGET is a BDF (0000:41:00.0, read from /sys/bus/pci/devices), a "
                                       "sysfs-shaped device directory, a raw config-space file (256 or 4096 "
                                       "bytes) or an `lspci -xxxx` text dump.")
    show.add_argument("target")
    show.add_argument("--json", action="store_true", help="print the decoded config space as JSON")
    show.set_defaults(func=cmd_pcie_show)

    serial = sub.add_parser("serial", help="serial console tools").add_subparsers(
        dest="serial_command", required=True, metavar="TOOL")
    serial_show = serial.add_parser(
        "show", help="print a console transcript readably",
        description="Print a console transcript (the serial/*-transcript.jsonl evidence of a result, "
                    "stored under evidence/<sha256>) one chunk per line: L<n> is its line in the file, "
                    "the line the probes' reasons cite; then seconds since the console was opened, the "
                    "direction (rx board to host, tx host to board, note from the harness) and the "
                    "bytes, with \\r \\n \\t \\\\ \\xNN escapes (docs/serial.md).")
    serial_show.add_argument("transcript", metavar="TRANSCRIPT", help="transcript JSONL file")
    serial_show.add_argument("--max-chunk-bytes", type=int, default=256, metavar="N",
                             help="show at most N bytes of each chunk (dump frames are long; 0: all)")
    serial_show.set_defaults(func=cmd_serial_show)

    keys = sub.add_parser("keys", help="lab signing keys").add_subparsers(dest="keys_command", required=True, metavar="TOOL")
    gen = keys.add_parser("generate", help="make an Ed25519 key pair: PREFIX.key and PREFIX.pub")
    gen.add_argument("--out", required=True, help="path prefix, e.g. lab → lab.key and lab.pub")
    gen.add_argument("--force", action="store_true", help="overwrite existing files")
    gen.set_defaults(func=cmd_keys_generate)

    reference = sub.add_parser("reference", help="signed reference profiles").add_subparsers(
        dest="reference_command", required=True, metavar="TOOL")
    sign = reference.add_parser("sign", help="sign a reference profile (YAML) as a DSSE envelope",
                                description="Check PROFILE.yaml is a valid reference profile and write its "
                                            "DSSE envelope (docs/firmware-integrity.md). Exit 0 written, 2 not.")
    sign.add_argument("profile", metavar="PROFILE.yaml")
    sign.add_argument("--key", required=True, help="the signer's private key (PEM: Ed25519, ECDSA P-256 or P-384)")
    sign.add_argument("--x509-chain", metavar="CHAIN.pem",
                      help="the signer's certificate chain, leaf first, for labs that pin an X.509 anchor")
    sign.add_argument("--out", metavar="OUT.dsse.json", help="default: PROFILE.dsse.json next to the profile")
    sign.set_defaults(func=cmd_reference_sign)
    rverify = reference.add_parser("verify", help="is a signed profile trusted by a trust file?",
                                   description="Exit 0 trusted, 1 not trusted (unsigned, bad signature, "
                                               "untrusted or expired signer, chain outside validity), 2 bad input.")
    rverify.add_argument("envelope", metavar="PROFILE.dsse.json")
    rverify.add_argument("--trust", required=True, metavar="TRUST.yaml", help="the lab's trust file")
    rverify.add_argument("--at", metavar="TIME", help="judge at this time (ISO 8601 with zone) instead of now")
    rverify.set_defaults(func=cmd_reference_verify)
    rshow = reference.add_parser("show", help="print a signed profile and who signed it",
                                 description="Print the signatures, the trust decision (with --trust, or "
                                             "the default trust file) and the profile's YAML. Exit 0 trusted, "
                                             "1 not trusted, 2 unreadable.")
    rshow.add_argument("envelope", metavar="PROFILE.dsse.json")
    rshow.add_argument("--trust", metavar="TRUST.yaml", help="the lab's trust file (default: as for run)")
    rshow.set_defaults(func=cmd_reference_show)
    rbundle = reference.add_parser(
        "bundle", help="pack a signed profile with the files it pins into one file, for air-gapped labs",
        description="Write PROFILE.bundle.json: the signed profile's envelope with every file it pins "
                    "({file, sha256}: RIMs, OCP SFRs, vendor roots), read beside it and checked against the "
                    "signed sha256 (docs/firmware-integrity.md, \"Reference bundles\"). A bundle is read "
                    "wherever a signed profile is (board.reference, reference verify|show), and its files "
                    "are taken from it, never from the disk. Exit 0 written, 2 not.")
    rbundle.add_argument("envelope", metavar="PROFILE.dsse.json")
    rbundle.add_argument("--out", metavar="OUT.bundle.json", help="default: PROFILE.bundle.json beside the profile")
    rbundle.set_defaults(func=cmd_reference_bundle)

    _archive_parser(sub)

    egress = sub.add_parser("egress", help="network egress tools").add_subparsers(
        dest="egress_command", required=True, metavar="TOOL")
    analyze = egress.add_parser(
        "analyze", help="judge a pcap/pcapng against an egress policy",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Group the frames of CAPTURE (pcap or pcapng: a lab tap's recording, or the\n"
                    "egress/capture.pcapng evidence of a signed result) into flows and judge every flow\n"
                    "the board started against an egress policy (docs/egress.md). What the capturing\n"
                    "host sends on its own -- ARP, neighbour discovery and ICMP errors from the MAC in the\n"
                    "pcapng's if_MACaddr, which attestlab's own captures record -- is not judged.",
        epilog="POLICY is either a policy file, the mapping itself:\n"
               "    allow:\n"
               "      - {proto: udp, dst: 192.0.2.123/32, dport: 123}\n"
               "      - {dns: \"*.lab.example\"}\n"
               "or a reference profile (a file with a `reference:` section), whose egress.policy is used,\n"
               "e.g. fixtures/references/nvidia-h100-sxm5-80gb.yaml. An empty allow list allows nothing.\n\n"
               "exit status: 0 every flow allowed, 1 a flow is not allowed (also when other frames could\n"
               "not be decoded), 2 the capture cannot be judged (undecoded frames, drops, damage, no\n"
               "frames from the board, unreadable file or policy)")
    analyze.add_argument("capture", metavar="CAPTURE", help="pcap or pcapng file")
    analyze.add_argument("--policy", required=True, metavar="POLICY",
                         help="egress policy YAML, or a reference profile (its egress.policy is used)")
    analyze.add_argument("--json", action="store_true",
                         help="print {verdict, packets, flows, violations, anomalies, errors} as JSON")
    analyze.add_argument("--all-flows", action="store_true",
                         help="also judge the ARP and ICMP errors the capturing host (the pcapng's "
                              "if_MACaddr) sent on its own"),
    analyze.set_defaults(func=cmd_egress_analyze)
    return parser


def _archive_parser(sub) -> None:
    archive = sub.add_parser(
        "archive", help="the archive of signed results: append-only, tamper-evident (docs/archive.md)",
        description="Exit status: 0 done, 1 the archive or a proof does not verify, 2 bad input.").add_subparsers(
        dest="archive_command", required=True, metavar="TOOL")
    add = archive.add_parser("add", help="append a signed result (it must verify with --key) and sign a new checkpoint")
    add.add_argument("dir", metavar="DIR")
    add.add_argument("envelope", metavar="RESULT.dsse.json", nargs="+",
                     help="result envelopes, or their run directories; several are appended in one transaction "
                          "(all or none)")
    add.add_argument("--key", required=True, help="the lab's Ed25519 private key: the result must verify with "
                                                  "it, and it signs the checkpoint")
    listing = archive.add_parser("list", help="entries, filtered, as a table")
    listing.add_argument("dir", metavar="DIR")
    listing.add_argument("--board-serial", metavar="DSN", help="the board's Device Serial Number (any case)")
    listing.add_argument("--plan", metavar="ID|SHA256", help="plan id or the sha256 of the plan file")
    listing.add_argument("--verdict", choices=("PASS", "FAIL", "ERROR", "SKIP"), type=str.upper)
    listing.add_argument("--since", metavar="TIME", help="runs started at or after (ISO 8601, e.g. 2026-11-01)")
    listing.add_argument("--until", metavar="TIME", help="runs started up to (ISO 8601; a date includes that day)")
    listing.add_argument("--json", action="store_true")
    show = archive.add_parser("show", help="one entry")
    show.add_argument("dir", metavar="DIR")
    show.add_argument("n", type=int, metavar="N")
    check = archive.add_parser("verify", help="check every envelope, blob, node and checkpoint; name the first "
                                              "entry that fails")
    check.add_argument("dir", metavar="DIR")
    check.add_argument("--pubkey", required=True, help="the lab's public key (PEM)")
    check.add_argument("--held", action="append", metavar="FILE",
                       help="a checkpoint kept outside the archive (a proof.json, a consistency proof, a "
                            "checkpoint envelope): the archive must extend it (repeatable)")
    check.add_argument("--jobs", type=int, metavar="N",
                       help="processes checking signatures (default: every core from 2000 entries on, else 1)")
    proof = archive.add_parser("proof", help="write the inclusion proof of entry N under the latest checkpoint")
    proof.add_argument("dir", metavar="DIR")
    proof.add_argument("n", type=int, metavar="N")
    proof.add_argument("--pubkey", required=True, help="the lab's public key: the checkpoint is checked first")
    proof.add_argument("--out", required=True, metavar="PROOF.json")
    consistency = archive.add_parser("consistency", help="prove the checkpoint of OLD entries is a prefix of NEW's")
    consistency.add_argument("dir", metavar="DIR")
    consistency.add_argument("old", type=int, metavar="OLD")
    consistency.add_argument("new", type=int, metavar="NEW")
    consistency.add_argument("--pubkey", required=True, help="the lab's public key: both checkpoints are checked")
    consistency.add_argument("--out", metavar="CONSISTENCY.json")
    export = archive.add_parser("export", help="write entry N as a self-contained bundle for an auditor: "
                                               "result.dsse.json, evidence/, proof.json")
    export.add_argument("dir", metavar="DIR")
    export.add_argument("n", type=int, metavar="N")
    export.add_argument("--pubkey", required=True, help="the lab's public key: what is exported is checked first")
    export.add_argument("--out", required=True, metavar="BUNDLE_DIR", help="a directory that does not exist yet")
    for parser in archive.choices.values():
        _archive_db_option(parser)
        parser.set_defaults(func=cmd_archive)


def _archive_db_option(parser) -> None:
    parser.add_argument("--archive-db", metavar="URL", default=os.environ.get("ATTESTLAB_ARCHIVE_DB") or None,
                        help="the lab's shared archive: its log and index in this PostgreSQL database "
                             "(postgresql://USER@HOST/DB; the password from PGPASSFILE, never the URL), its blobs "
                             "in DIR; remembered in DIR/database.json once paired (default: $ATTESTLAB_ARCHIVE_DB; "
                             "without either, DIR/archive.db, SQLite)")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except KeyboardInterrupt:  # Ctrl-C outside a run's own handling: one line, no traceback
        print(f"attestlab {args.command}: interrupted", file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
