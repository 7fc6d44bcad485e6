"""Network namespace plumbing for the capture point: run code inside a namespace, drive `ip`,
own and sweep ``attestlab-*`` namespaces, and say whether this process may create them.

A capture namespace holds only ``lo`` and the interface cabled to the board, so nothing the board
sends can be routed anywhere. Every namespace has an owner file
``/run/attestlab/netns/<namespace>.json`` (pid and process start time); `sweep_stale()` removes
namespaces whose owner is dead, returning and restoring their interfaces first. Owner file format
(also written by fixtures/sim/network.py for its ``attestlab-sim-<pid>`` namespaces)::

    {"pid": 1234, "starttime": <field 22 of /proc/1234/stat>, "kind": "capture" | "sim",
     "interface": "enp5s0" (capture only), "restore": {"up": true, "addresses": [...]}
     (capture only), "links": ["asim1234"] (sim: links in the home namespace to delete)}

Privileges: creating namespaces and moving interfaces needs CAP_SYS_ADMIN and CAP_NET_ADMIN
(root); `privilege_problem()` says what is missing.
"""

from __future__ import annotations

import ctypes
import json
import os
import re
import shutil
import subprocess
import threading
import time
from pathlib import Path
from typing import Any, Callable

from harness.verdict import ProbeError

NETNS_PREFIX = "attestlab-"
NETNS_DIR = Path("/run/netns")
OWNER_DIR = Path("/run/attestlab/netns")

CLONE_NEWNET = 0x40000000
CAP_NET_ADMIN = 12
CAP_SYS_ADMIN = 21

# A namespace without an owner file older than this is someone's crash leftover (the owner file is
# written before the namespace is created, and removed after it is deleted).
_ORPHAN_GRACE_S = 30.0
_IP_TIMEOUT_S = 10.0


class CaptureUnavailable(ProbeError):
    """The capture could not be taken (or not completely); the message says why and what to do.

    `partial` holds what was captured before a failure during the window, when there is any,
    so it can be kept as evidence; it is never a substitute for a complete capture.
    """

    def __init__(self, message: str, partial: Any = None) -> None:
        super().__init__(message)
        self.partial = partial  # a harness.interfaces.netcap.CaptureResult, or None


_libc = ctypes.CDLL(None, use_errno=True)


def _setns(fd: int, nstype: int) -> None:
    if _libc.setns(fd, nstype) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


def run_in_netns(namespace: str, fn: Callable[..., Any], *args: Any, timeout: float = 30.0) -> Any:
    """Run `fn(*args)` in a short-lived thread that has entered network namespace `namespace`.

    Sockets created there stay in that namespace after the thread ends, so this is how a socket
    is opened "inside" a namespace while the calling thread never leaves its own.
    """
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            fd = os.open(NETNS_DIR / namespace, os.O_RDONLY | os.O_CLOEXEC)
            try:
                _setns(fd, CLONE_NEWNET)
            finally:
                os.close(fd)
            box["value"] = fn(*args)
        except BaseException as exc:  # handed to the caller
            box["error"] = exc

    t = threading.Thread(target=target, name=f"netns:{namespace}", daemon=True)
    t.start()
    t.join(timeout)
    if t.is_alive():
        raise CaptureUnavailable(f"work inside network namespace {namespace} did not finish within {timeout:g} s")
    if "error" in box:
        raise box["error"]
    return box.get("value")


def write_sysctls(values: dict[str, str]) -> None:
    """Write /proc/sys entries; /proc/sys/net is the calling thread's namespace (run_in_netns)."""
    for key, value in values.items():
        Path("/proc/sys", key).write_text(value)


def run_ip(*args: str, check: bool = True, timeout: float = _IP_TIMEOUT_S) -> subprocess.CompletedProcess:
    cmd = ["ip", *args]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except FileNotFoundError:
        raise CaptureUnavailable("the `ip` command (iproute2) is not installed; install iproute2") from None
    except subprocess.TimeoutExpired:
        raise CaptureUnavailable(f"`{' '.join(cmd)}` did not finish within {timeout:g} s") from None
    if check and proc.returncode != 0:
        raise CaptureUnavailable(f"`{' '.join(cmd)}` failed: {proc.stderr.strip() or proc.returncode}")
    return proc


def ip_json(*args: str) -> list[dict[str, Any]]:
    proc = run_ip("-j", *args)
    try:
        return json.loads(proc.stdout or "[]")
    except ValueError:
        raise CaptureUnavailable(f"`ip -j {' '.join(args)}` printed no JSON: {proc.stdout[:200]!r}") from None


def proc_starttime(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    try:
        return int(stat[stat.rindex(")") + 2:].split()[19])
    except (ValueError, IndexError):
        return None


def process_alive(pid: Any, starttime: Any) -> bool:
    """The process `pid` exists and is the one that started at `starttime` (None: any start),
    not a later process that reuses its pid. Anything malformed is not alive."""
    try:
        start = proc_starttime(int(pid))
        return start is not None and (starttime is None or int(starttime) == start)
    except (TypeError, ValueError):
        return False


def _owner_alive(owner: dict[str, Any]) -> bool:
    return process_alive(owner.get("pid"), owner.get("starttime"))


def _owner_path(namespace: str) -> Path:
    return OWNER_DIR / f"{namespace}.json"


def write_owner(namespace: str, data: dict[str, Any]) -> None:
    OWNER_DIR.mkdir(parents=True, exist_ok=True)
    path = _owner_path(namespace)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(data, sort_keys=True))
    os.replace(tmp, path)


def _read_owner(namespace: str) -> dict[str, Any] | None:
    try:
        data = json.loads(_owner_path(namespace).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def remove_owner(namespace: str) -> None:
    try:
        _owner_path(namespace).unlink()
    except FileNotFoundError:
        pass


def _effective_caps() -> int:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("CapEff:"):
                return int(line.split()[1], 16)
    except (OSError, ValueError):
        pass
    return 0


def _userns_note() -> str:
    """Whether this kernel lets an unprivileged user create user namespaces, in words."""
    try:
        if int(Path("/proc/sys/user/max_user_namespaces").read_text()) == 0:
            return "unprivileged user namespaces are disabled here (user.max_user_namespaces = 0)"
    except (OSError, ValueError):
        pass
    for knob, bad in (("/proc/sys/kernel/unprivileged_userns_clone", "0"),
                      ("/proc/sys/kernel/apparmor_restrict_unprivileged_userns", "1")):
        try:
            if Path(knob).read_text().strip() == bad:
                return f"unprivileged user namespaces are disabled here ({knob} = {bad})"
        except OSError:
            pass
    return ("for a simulated board only, an unprivileged user namespace also works: run the whole "
            "session under `unshare --user --map-root-user --net --mount sh -c 'mount -t tmpfs "
            "tmpfs /run && ...'`")


def privilege_problem() -> str | None:
    """Why this process cannot create a capture namespace, or None when it can (as far as we can tell)."""
    if not Path("/proc/self/ns/net").exists():
        return "network namespaces are not available (not Linux, or /proc is not mounted)"
    caps = _effective_caps()
    missing = [name for bit, name in ((CAP_SYS_ADMIN, "CAP_SYS_ADMIN"), (CAP_NET_ADMIN, "CAP_NET_ADMIN"))
               if not caps >> bit & 1]
    if missing:
        return (f"capturing the board's network needs {' and '.join(missing)} to create a network "
                f"namespace and move the interface into it; run the harness as root (sudo). "
                f"A bench NIC can only be taken by root; {_userns_note()}")
    return None


def tool_problem() -> str | None:
    """A missing tool is a broken setup, not a lack of privilege: the caller reports it as ERROR."""
    if shutil.which("ip") is None:
        return "the `ip` command (iproute2) is not installed; install iproute2"
    return None


def _list_namespaces() -> list[str]:
    try:
        return sorted(p.name for p in NETNS_DIR.iterdir() if p.name.startswith(NETNS_PREFIX))
    except FileNotFoundError:
        return []


def _home() -> str:
    # The main thread never changes namespace (run_in_netns uses helper threads), so the process
    # id names the namespace the harness runs in, for `ip link set ... netns <pid>`.
    return str(os.getpid())


def link_exists(name: str, namespace: str | None = None) -> bool:
    args = ["-n", namespace] if namespace else []
    return run_ip(*args, "link", "show", "dev", name, check=False).returncode == 0


def promiscuity(interface: str, namespace: str) -> int | None:
    """The kernel's promiscuity count of `interface` in `namespace` (0: only frames addressed to
    it and broadcasts reach it), or None when `ip` does not report it.

    Read from `ip -d`, not /sys/class/net/<if>/flags: sysfs shows the namespace it was mounted
    in, not the capture namespace, and SIOCGIFFLAGS hides promiscuity a packet socket holds.
    """
    links = ip_json("-n", namespace, "-d", "link", "show", "dev", interface)
    count = links[0].get("promiscuity") if links and isinstance(links[0], dict) else None
    return count if isinstance(count, int) and not isinstance(count, bool) else None


_RX_LOSS = ("dropped", "errors", "missed_errors")


def receive_losses(interface: str, namespace: str) -> int | None:
    """How many frames `interface` in `namespace` received but delivered to no socket: the
    kernel's rx dropped, errors and missed counters summed (a frame longer than the MTU, a full
    ring, a bad FCS). None when they cannot be read (the link is gone, `ip -s` does not report
    them): never an exception, as the capture's own error must not be hidden behind this one. A
    packet socket sees none of these frames, so any increase during a window is evidence lost."""
    try:
        links = ip_json("-n", namespace, "-s", "-s", "link", "show", "dev", interface)
    except CaptureUnavailable:
        return None
    rx = ((links[0].get("stats64") or {}).get("rx") if links and isinstance(links[0], dict) else None)
    if not isinstance(rx, dict) or not all(isinstance(rx.get(k), int) for k in _RX_LOSS):
        return None
    return sum(rx[k] for k in _RX_LOSS)


def carrier(interface: str, namespace: str) -> tuple[bool | None, int | None]:
    """Whether `interface` in `namespace` has carrier (the kernel's LOWER_UP: the board's port is
    up at the other end of the cable) and how many times its carrier has changed (`ip -s -s`:
    carrier_changes). Each is None when it cannot be read; never an exception."""
    try:
        links = ip_json("-n", namespace, "-s", "-s", "link", "show", "dev", interface)
    except CaptureUnavailable:
        return None, None
    link = links[0] if links and isinstance(links[0], dict) else {}
    flags = link.get("flags")
    up = ("LOWER_UP" in flags) if isinstance(flags, list) else None
    changes = ((link.get("stats64") or {}).get("tx") or {}).get("carrier_changes")
    return up, changes if isinstance(changes, int) and not isinstance(changes, bool) else None


def max_mtu(interface: str, namespace: str) -> int | None:
    """The largest MTU the interface's driver accepts (`ip -d`'s max_mtu), or None."""
    links = ip_json("-n", namespace, "-d", "link", "show", "dev", interface)
    value = links[0].get("max_mtu") if links and isinstance(links[0], dict) else None
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def restore_interface(interface: str, restore: dict[str, Any]) -> list[str]:
    """Put back the static addresses, MTU and up/down state recorded before the capture. Returns problems."""
    problems = []
    if isinstance(restore.get("mtu"), int):
        proc = run_ip("link", "set", "dev", interface, "mtu", str(restore["mtu"]), check=False)
        if proc.returncode != 0:
            problems.append(f"could not restore MTU {restore['mtu']} on {interface}: {proc.stderr.strip()}")
    for addr in restore.get("addresses", []):
        proc = run_ip("addr", "add", addr, "dev", interface, check=False)
        if proc.returncode != 0 and "File exists" not in proc.stderr:
            problems.append(f"could not restore address {addr} on {interface}: {proc.stderr.strip()}")
    state = "up" if restore.get("up") else "down"
    proc = run_ip("link", "set", "dev", interface, state, check=False)
    if proc.returncode != 0:
        problems.append(f"could not set {interface} {state}: {proc.stderr.strip()}")
    return problems


def return_interface(namespace: str, interface: str) -> bool:
    """Move `interface` from `namespace` back home. True when it is home afterwards."""
    if link_exists(interface, namespace):
        run_ip("-n", namespace, "link", "set", "dev", interface, "down", check=False)
        run_ip("-n", namespace, "link", "set", "dev", interface, "netns", _home(), check=False)
    return link_exists(interface)


def delete_namespace(namespace: str) -> None:
    if (NETNS_DIR / namespace).exists():
        proc = run_ip("netns", "delete", namespace, check=False)
        if proc.returncode != 0 and (NETNS_DIR / namespace).exists():
            raise CaptureUnavailable(f"could not delete network namespace {namespace}: {proc.stderr.strip()}")


def sweep_stale(grace_s: float = _ORPHAN_GRACE_S) -> list[str]:
    """Remove ``attestlab-*`` namespaces whose owner process is dead. Returns the names removed.

    A capture namespace's interface is moved back home and its recorded state restored first; a
    simulated board's home-side links are deleted. A namespace without an owner file is removed
    once it is older than `grace_s` (the owner file is written before the namespace exists).
    Owner files whose namespace is gone are deleted too.
    """
    removed = []
    for ns in _list_namespaces():
        owner = _read_owner(ns)
        if owner is None:
            try:
                age = time.time() - (NETNS_DIR / ns).stat().st_mtime
            except FileNotFoundError:
                continue
            m = re.fullmatch(re.escape(NETNS_PREFIX) + r"sim-(\d+)(?:-\d+)?", ns)
            if m and proc_starttime(int(m.group(1))) is not None:
                continue
            if age < grace_s:
                continue
            owner = {}
        elif _owner_alive(owner):
            continue
        iface = owner.get("interface")
        if iface and return_interface(ns, iface):
            restore_interface(iface, owner.get("restore") or {})
        delete_namespace(ns)
        for link in owner.get("links") or []:
            if link_exists(link):
                run_ip("link", "delete", "dev", link, check=False)
        remove_owner(ns)
        removed.append(ns)
    if OWNER_DIR.is_dir():
        for path in OWNER_DIR.glob(f"{NETNS_PREFIX}*.json"):
            ns = path.name[:-len(".json")]
            if not (NETNS_DIR / ns).exists():
                owner = _read_owner(ns) or {}
                if not _owner_alive(owner):
                    for link in owner.get("links") or []:
                        if link_exists(link):
                            run_ip("link", "delete", "dev", link, check=False)
                    remove_owner(ns)
    return removed
