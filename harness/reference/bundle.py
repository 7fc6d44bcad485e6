"""Reference bundles and pinned files: the files a signed profile was built from, bound to its signature.

A reference profile that rests on third-party documents (an NVIDIA RIM, an OCP S.A.F.E. report, a
vendor's root certificate) names each as a *pinned file*: a mapping with the file's path, relative
to the profile, and its sha256:

    rims:
      - {file: nvidia/1010_0200_882_960074001A_PROD.swidtag, sha256: 8f0c…}

The sha256 is inside the signed profile, so the bytes used at run time are exactly the ones the
profile's signer vouched for, wherever they come from: a file beside the profile that someone
changed, or swapped for another release, is refused ("changed since the profile was signed"),
never used.

A bundle (`attestlab reference bundle`) is one file an air-gapped lab copies: the profile's DSSE
envelope, its three members unchanged, with one more member carrying every pinned file:

    {"payloadType": "application/vnd.attestlab.reference-profile+yaml", "payload": "…", "signatures": […],
     "attestlab_bundle": {"version": 1,
                          "files": {"nvidia/1010_….swidtag": {"sha256": "8f0c…", "base64": "PD94…"}}}}

A DSSE reader ignores the extra member, so a bundle *is* a signed profile: `reference verify`,
`reference show` and `attestlab run` (as `board.reference`) read it as they read the envelope. The
extra member is not signed; it needs no signature, because each file in it is checked against the
signed pin before use. A profile read from a bundle takes pinned files from the bundle only, never
from the disk: what a lab verified is what it ran with, and nothing is fetched. A pinned file the
bundle lacks is `MissingReference` naming it (ERROR, never PASS or FAIL).
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from pathlib import Path
from typing import Any, Iterator

from harness.files import read_capped
from harness.formats.dsse import VerificationError, b64_canonical, strict_json
from harness.reference import MAX_ENVELOPE_BYTES, Reference, load_reference
from harness.reference.signed import UntrustedProfile, parse_profile_envelope
from harness.verdict import MissingReference

BUNDLE_KEY = "attestlab_bundle"
BUNDLE_VERSION = 1
MAX_PINNED_BYTES = 2 * 1024 * 1024  # one RIM, certificate or report; a bundle holds at most MAX_ENVELOPE_BYTES
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


class BundleError(ValueError):
    """A bundle that cannot be made or read: the message names the file and why."""


def is_pin(node: Any) -> bool:
    """A mapping naming a file by path and sha256 (other keys beside them are the user's)."""
    return isinstance(node, dict) and "file" in node and "sha256" in node


def pin_problem(node: Any, where: str) -> str | None:
    """Why `node` is not a usable pinned file, or None."""
    if not is_pin(node):
        return f"reference {where} must be a pinned file {{file: PATH relative to the profile, sha256: HEX}}, got {node!r}"
    if not isinstance(node["file"], str) or not node["file"].strip():
        return f"reference {where}.file must be a path, got {node['file']!r}"
    if not isinstance(node["sha256"], str) or not _SHA256.match(node["sha256"]):
        return f"reference {where}.sha256 must be 64 lower-case hex digits, got {node['sha256']!r}"
    return None


def pinned_files(values: Any, where: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    """(dotted place, pin) of every pinned file anywhere in a profile's values, in document order."""
    if is_pin(values):
        yield where, values
    elif isinstance(values, dict):
        for key, value in values.items():
            yield from pinned_files(value, f"{where}.{key}" if where else str(key))
    elif isinstance(values, list):
        for n, value in enumerate(values):
            yield from pinned_files(value, f"{where}[{n}]")


def _attachments(document: dict[str, Any], source: str) -> dict[str, bytes]:
    """The files a bundle carries, each checked against the sha256 it is listed with."""
    bundle = document.get(BUNDLE_KEY)
    if not isinstance(bundle, dict) or bundle.get("version") != BUNDLE_VERSION or not isinstance(bundle.get("files"), dict):
        raise BundleError(f"{source}: {BUNDLE_KEY} must be {{version: {BUNDLE_VERSION}, files: {{PATH: "
                          f"{{sha256, base64}}}}}}")
    files = {}
    for name, entry in bundle["files"].items():
        if not isinstance(entry, dict) or set(entry) != {"sha256", "base64"}:
            raise BundleError(f"{source}: {BUNDLE_KEY}.files[{name!r}] must be {{sha256, base64}}")
        try:
            data = b64_canonical(entry["base64"], f"file {name!r}")
        except VerificationError as exc:
            raise BundleError(f"{source}: {BUNDLE_KEY}.files[{name!r}]: {exc}") from None
        if hashlib.sha256(data).hexdigest() != entry["sha256"]:
            raise BundleError(f"{source}: {BUNDLE_KEY}.files[{name!r}]: its bytes do not have the sha256 it is "
                              f"listed with (the bundle was damaged or altered)")
        files[name] = data
    return files


def _bundle_document(path: Path) -> dict[str, Any] | None:
    """The parsed bundle at `path`, or None when the file is a plain profile or envelope."""
    try:
        document = strict_json(read_capped(path, MAX_ENVELOPE_BYTES))
    except ValueError:  # YAML: a plain (unsigned) profile
        return None
    return document if isinstance(document, dict) and BUNDLE_KEY in document else None


def read_pinned(reference: Reference, pin: dict[str, Any], needed_for: str, limit: int = MAX_PINNED_BYTES) -> bytes:
    """The bytes of a pinned file of a trusted `reference`: from its bundle when it came as one,
    else from the disk beside the profile; MissingReference naming `needed_for` when they cannot be
    had or are not the bytes the profile's signer pinned."""
    problem = pin_problem(pin, needed_for)
    if problem:
        raise MissingReference(problem)
    name, want = pin["file"], pin["sha256"]
    profile = Path(reference.path)
    try:
        document = _bundle_document(profile)
        if document is not None:
            files = _attachments(document, str(profile))
            if name not in files:
                raise MissingReference(f"no reference for {needed_for}: the bundle {profile} carries no file {name!r} "
                                       f"(rebuild it: attestlab reference bundle)")
            data, origin = files[name], f"{name} in bundle {profile}"
        else:
            origin = str(profile.parent / name)
            data = read_capped(profile.parent / name, limit)
    except OSError as exc:
        raise MissingReference(f"no reference for {needed_for}: {name} (beside {profile}): cannot read: "
                               f"{exc.strerror or exc}") from None
    except BundleError as exc:
        raise MissingReference(f"no reference for {needed_for}: {exc}") from None
    if len(data) > limit:
        raise MissingReference(f"no reference for {needed_for}: {origin} is {len(data)} bytes, more than {limit}")
    got = hashlib.sha256(data).hexdigest()
    if got != want:
        raise MissingReference(f"no reference for {needed_for}: {origin} has sha256 {got}, the signed profile "
                               f"pins {want}: it changed since the profile was signed")
    return data


def make_bundle(envelope_path: str | Path) -> tuple[bytes, list[str]]:
    """A bundle of the signed profile at `envelope_path` with every file it pins, read beside it,
    and the names packed; BundleError naming the first file missing or not the pinned bytes."""
    envelope_path = Path(envelope_path)
    try:
        raw = read_capped(envelope_path, MAX_ENVELOPE_BYTES)
        parse_profile_envelope(raw)
    except OSError as exc:
        raise BundleError(f"{envelope_path}: cannot read: {exc.strerror or exc}") from None
    except UntrustedProfile as exc:
        raise BundleError(f"{envelope_path}: only a signed profile is bundled: {exc}") from None
    document = strict_json(raw)
    if BUNDLE_KEY in document:
        raise BundleError(f"{envelope_path} is a bundle already")
    profile = load_reference(envelope_path)  # the payload parsed: its pins are what the signer vouched for
    files: dict[str, dict[str, str]] = {}
    for where, pin in pinned_files(profile.values):
        problem = pin_problem(pin, where)
        if problem:
            raise BundleError(f"{envelope_path}: {problem}")
        name = pin["file"]
        try:
            data = read_capped(envelope_path.parent / name, MAX_PINNED_BYTES)
        except OSError as exc:
            raise BundleError(f"{envelope_path}: {where}: {envelope_path.parent / name}: cannot read: "
                              f"{exc.strerror or exc}") from None
        got = hashlib.sha256(data).hexdigest()
        if got != pin["sha256"]:
            raise BundleError(f"{envelope_path}: {where}: {name} has sha256 {got}, the signed profile pins "
                              f"{pin['sha256']}: not the file the profile was built from")
        files[name] = {"sha256": got, "base64": base64.b64encode(data).decode("ascii")}
    out = {k: document[k] for k in ("payloadType", "payload", "signatures")}
    out[BUNDLE_KEY] = {"version": BUNDLE_VERSION, "files": files}
    data = (json.dumps(out, indent=2) + "\n").encode("ascii")
    if len(data) > MAX_ENVELOPE_BYTES:
        raise BundleError(f"the bundle would be {len(data)} bytes, more than the {MAX_ENVELOPE_BYTES} a profile may be")
    return data, sorted(files)


def pinned_problems(reference: Reference) -> list[str]:
    """Why each file a trusted profile pins cannot be used where it would be read ([] when all can):
    for `reference verify` to say before a run what the steps would otherwise find one by one."""
    problems = []
    for where, pin in pinned_files(reference.values):
        try:
            read_pinned(reference, pin, where)
        except MissingReference as exc:
            problems.append(str(exc))
    return problems


def bundle_contents(path: str | Path) -> dict[str, bytes] | None:
    """The files a bundle carries (checked against their listed sha256), or None when `path` is no bundle."""
    path = Path(path)
    document = _bundle_document(path)
    return None if document is None else _attachments(document, str(path))


__all__ = ["BUNDLE_KEY", "BundleError", "bundle_contents", "is_pin", "make_bundle", "pin_problem", "pinned_files",
           "pinned_problems", "read_pinned"]
