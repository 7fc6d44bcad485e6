"""Capture point: take the board's management link into a private network namespace and record
every frame on it as pcapng.

Wiring (the same code for a bench and a simulation)::

    board mgmt port ──cable──> host NIC  (bench: e.g. enp5s0; simulation: the host end of the
                                          simulated board's veth pair, announced by
                                          fixtures/sim/network.py)

`CapturePoint(interface, address, runid)` creates the namespace ``attestlab-<runid>``, moves the
interface into it, gives it the gateway address (e.g. 192.0.2.1/24), optionally runs the
sinkhole there (harness.interfaces.sinkhole: DNS answering everything, TCP listeners reading
what the board sends), and captures every frame on the interface with an AF_PACKET socket, both
directions, into pcapng (nanosecond timestamps from the kernel, an Interface Statistics Block
with the kernel's drop count at the end). Nothing in that namespace routes anywhere: it holds
only ``lo`` and the captured interface, so no frame the board sends can leave the machine.

The socket reads through a TPACKET_V3 ring (64 MiB by default; recvmsg with a 64 MiB socket
buffer where the kernel refuses a ring). The capture is bound to the interface before it comes
up, so the board's first frames after link-up are in it. VLAN tags the kernel stripped are put
back. Frames the harness side sends (ARP replies, sinkhole answers, the kernel's ICMP errors)
are in the capture too; they carry `CaptureResult.capture_mac` as source MAC and, having been
captured before the NIC/veth fills in offloaded checksums, may show TCP/UDP checksums a
validating reader calls bad. The board's frames are as they arrived.

::

    with CapturePoint("enp5s0", "192.0.2.1/24", runid, sinkhole=True) as cp:
        cp.run_for(30)              # or: start a workload, then cp.run_for(...)
        result = cp.stop()          # CaptureResult; raises CaptureUnavailable if not usable

Fail closed: a capture that could not be set up, whose interface vanished or went down during
the window, or whose capture thread failed raises `CaptureUnavailable` (a ProbeError, so an
ERROR verdict) -- never an empty capture as if the board had been silent. Drops are not hidden:
`CaptureResult.dropped` (also written as isb_ifdrop) is the kernel's count of frames the
capture socket lost; a judge that must prove absence should treat ``dropped > 0`` as
inconclusive (`CaptureResult.complete`).

Clean-up is unconditional: on stop, on an exception in the ``with`` body, on SIGTERM/SIGHUP
(handlers installed while a capture runs in the main thread; they clean up and then let the
previous handler or the default action happen), on SIGINT (KeyboardInterrupt unwinds the
``with``) and at interpreter exit, the interface is moved back to the namespace the harness runs
in, its up/down state and static addresses are restored, and the namespace is deleted. A process
killed with SIGKILL cannot clean up; every namespace has an owner file
``/run/attestlab/netns/<namespace>.json`` (pid and process start time), and `sweep_stale()` --
run automatically before each capture -- removes ``attestlab-*`` namespaces whose owner is dead,
returning and restoring their interfaces first.

Owner file format (also written by fixtures/sim/network.py for its ``attestlab-sim-<pid>``
namespaces)::

    {"pid": 1234, "starttime": <field 22 of /proc/1234/stat>, "kind": "capture" | "sim",
     "interface": "enp5s0" (capture only), "restore": {"up": true, "addresses": [...]}
     (capture only), "links": ["asim1234"] (sim: links in the home namespace to delete)}

Privileges: creating namespaces and moving interfaces needs CAP_SYS_ADMIN and CAP_NET_ADMIN
(root). Without them `CapturePoint` raises `CaptureUnavailable` naming what is missing. A user
namespace cannot take a host NIC, so a bench capture always needs root; a *simulated* board can be
captured without root by running the whole session inside a user+network+mount namespace (the
kernel must allow unprivileged user namespaces)::

    unshare --user --map-root-user --net --mount sh -c \
        'mount -t tmpfs tmpfs /run && .venv/bin/python -m pytest ...'

(tests/test_netcap.py passes that way; the Python installation must be readable by the user.)

`offline_capture(path)` reads a pcap/pcapng a lab tap recorded, for the same analysis.

The pcapng records the capture interface's MAC as if_MACaddr, so a later reader (``attestlab
egress analyze``) can tell the harness side's frames from the board's without being told.

`open_net(settings)` is the ``net`` interface kind (harness.interfaces.OPENERS): a board config's
``interfaces: {net: {interface: enp5s0, address: 192.0.2.1/24}}`` becomes a `NetworkPort` that
says where to capture; the egress probe runs the `CapturePoint` on it. See docs/board-config.md.
"""

from __future__ import annotations

import atexit
import ctypes
import datetime as _dt
import errno
import io
import ipaddress
import json
import os
import re
import select
import shutil
import signal
import socket
import struct
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from harness.formats.pcap import PcapngWriter
from harness.verdict import ProbeError

__all__ = [
    "CaptureUnavailable",
    "CaptureResult",
    "CapturePoint",
    "sweep_stale",
    "offline_capture",
    "privilege_problem",
    "run_in_netns",
    "NETNS_PREFIX",
    "OWNER_DIR",
    "NetworkPort",
    "NetSettingsError",
    "open_net",
]

NETNS_PREFIX = "attestlab-"
NETNS_DIR = Path("/run/netns")
OWNER_DIR = Path("/run/attestlab/netns")

CLONE_NEWNET = 0x40000000
ETH_P_ALL = 0x0003
SOL_PACKET = 263
PACKET_STATISTICS = 6
PACKET_AUXDATA = 8
PACKET_VERSION = 10
PACKET_RX_RING = 5
TPACKET_V3 = 2
SO_RCVBUFFORCE = 33
SO_TIMESTAMPNS = 35
TP_STATUS_VLAN_VALID = 0x10
TP_STATUS_VLAN_TPID_VALID = 0x40
PACKET_OUTGOING = 4
CAP_NET_ADMIN = 12
CAP_SYS_ADMIN = 21

# A namespace without an owner file older than this is someone's crash leftover (the owner file is
# written before the namespace is created, and removed after it is deleted).
_ORPHAN_GRACE_S = 30.0
_IP_TIMEOUT_S = 10.0
_RUNID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,47}$")
_AUX = struct.Struct("IIIHHHH")
_TIMESPEC = struct.Struct("qq")


class CaptureUnavailable(ProbeError):
    """The capture could not be taken (or not completely); the message says why and what to do.

    `partial` holds what was captured before a failure during the window, when there is any,
    so it can be kept as evidence; it is never a substitute for a complete capture.
    """

    def __init__(self, message: str, partial: "CaptureResult | None" = None) -> None:
        super().__init__(message)
        self.partial = partial


@dataclass(frozen=True)
class CaptureResult:
    """One capture window.

    packets:     frames written to `pcapng` (both directions).
    received:    frames the kernel handed to the capture socket, dropped ones included
                 (PACKET_STATISTICS tp_packets).
    dropped:     frames lost: the kernel's tp_drops (socket buffer full) plus frames not written
                 because the capture hit `max_bytes`. Also in the pcapng's ISB (isb_ifdrop).
    packets_in:  frames the board sent (received on the captured interface).
    packets_out: frames the harness side sent (ARP replies, sinkhole answers, ICMP errors);
                 their source MAC is `capture_mac`.
    forged_in:   frames that arrived from the board's side carrying `capture_mac` as their
                 source: a board impersonating the harness side (nothing else sends them).
    """

    pcapng: bytes
    packets: int
    dropped: int
    received: int
    started: str
    ended: str
    started_ns: int
    ended_ns: int
    interface: str
    namespace: str
    address: str
    capture_mac: str
    packets_in: int
    packets_out: int
    kernel_dropped: int
    not_written: int = 0
    sinkhole_events: tuple[dict[str, Any], ...] = ()
    forged_in: int = 0   # frames from the board's side whose source MAC is `capture_mac` (forged)

    @property
    def complete(self) -> bool:
        """True when no frame was lost: absence of a flow in the capture means it did not happen."""
        return self.dropped == 0

    @property
    def duration_s(self) -> float:
        return (self.ended_ns - self.started_ns) / 1e9


# ---------------------------------------------------------------------------------------------
# Small system helpers


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


def _write_sysctls(values: dict[str, str]) -> None:
    """Write /proc/sys entries; /proc/sys/net is the calling thread's namespace (run_in_netns)."""
    for key, value in values.items():
        Path("/proc/sys", key).write_text(value)


def _ip(*args: str, check: bool = True, timeout: float = _IP_TIMEOUT_S) -> subprocess.CompletedProcess:
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


def _ip_json(*args: str) -> list[dict[str, Any]]:
    proc = _ip("-j", *args)
    try:
        return json.loads(proc.stdout or "[]")
    except ValueError:
        raise CaptureUnavailable(f"`ip -j {' '.join(args)}` printed no JSON: {proc.stdout[:200]!r}") from None


def _proc_starttime(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    try:
        return int(stat[stat.rindex(")") + 2:].split()[19])
    except (ValueError, IndexError):
        return None


def _owner_alive(owner: dict[str, Any]) -> bool:
    try:
        pid = int(owner["pid"])
    except (KeyError, TypeError, ValueError):
        return False
    start = _proc_starttime(pid)
    if start is None:
        return False
    recorded = owner.get("starttime")
    return recorded is None or int(recorded) == start


def _owner_path(namespace: str) -> Path:
    return OWNER_DIR / f"{namespace}.json"


def _write_owner(namespace: str, data: dict[str, Any]) -> None:
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


def _remove_owner(namespace: str) -> None:
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


def _iso(ns: int) -> str:
    return _dt.datetime.fromtimestamp(ns / 1e9, tz=_dt.timezone.utc).isoformat(timespec="microseconds").replace("+00:00", "Z")


def _list_namespaces() -> list[str]:
    try:
        return sorted(p.name for p in NETNS_DIR.iterdir() if p.name.startswith(NETNS_PREFIX))
    except FileNotFoundError:
        return []


def _home() -> str:
    # The main thread never changes namespace (run_in_netns uses helper threads), so the process
    # id names the namespace the harness runs in, for `ip link set ... netns <pid>`.
    return str(os.getpid())


def _link_exists(name: str, namespace: str | None = None) -> bool:
    args = ["-n", namespace] if namespace else []
    return _ip(*args, "link", "show", "dev", name, check=False).returncode == 0


def _restore_interface(interface: str, restore: dict[str, Any]) -> list[str]:
    """Put back the static addresses and up/down state recorded before the capture. Returns problems."""
    problems = []
    for addr in restore.get("addresses", []):
        proc = _ip("addr", "add", addr, "dev", interface, check=False)
        if proc.returncode != 0 and "File exists" not in proc.stderr:
            problems.append(f"could not restore address {addr} on {interface}: {proc.stderr.strip()}")
    state = "up" if restore.get("up") else "down"
    proc = _ip("link", "set", "dev", interface, state, check=False)
    if proc.returncode != 0:
        problems.append(f"could not set {interface} {state}: {proc.stderr.strip()}")
    return problems


def _return_interface(namespace: str, interface: str) -> bool:
    """Move `interface` from `namespace` back home. True when it is home afterwards."""
    if _link_exists(interface, namespace):
        _ip("-n", namespace, "link", "set", "dev", interface, "down", check=False)
        _ip("-n", namespace, "link", "set", "dev", interface, "netns", _home(), check=False)
    return _link_exists(interface)


def _delete_namespace(namespace: str) -> None:
    if (NETNS_DIR / namespace).exists():
        proc = _ip("netns", "delete", namespace, check=False)
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
            if m and _proc_starttime(int(m.group(1))) is not None:
                continue
            if age < grace_s:
                continue
            owner = {}
        elif _owner_alive(owner):
            continue
        iface = owner.get("interface")
        if iface and _return_interface(ns, iface):
            _restore_interface(iface, owner.get("restore") or {})
        _delete_namespace(ns)
        for link in owner.get("links") or []:
            if _link_exists(link):
                _ip("link", "delete", "dev", link, check=False)
        _remove_owner(ns)
        removed.append(ns)
    if OWNER_DIR.is_dir():
        for path in OWNER_DIR.glob(f"{NETNS_PREFIX}*.json"):
            ns = path.name[:-len(".json")]
            if not (NETNS_DIR / ns).exists():
                owner = _read_owner(ns) or {}
                if not _owner_alive(owner):
                    for link in owner.get("links") or []:
                        if _link_exists(link):
                            _ip("link", "delete", "dev", link, check=False)
                    _remove_owner(ns)
    return removed


def offline_capture(path: str | os.PathLike[str], max_bytes: int = 4 << 30) -> bytes:
    """The bytes of a pcap/pcapng recorded elsewhere (a lab tap), for the same analysis.

    Raises CaptureUnavailable when there is no usable file: missing, empty, or larger than
    `max_bytes`. The format itself is checked by `harness.formats.pcap.read_capture`.
    """
    p = Path(path)
    try:
        size = p.stat().st_size
    except OSError as exc:
        raise CaptureUnavailable(f"no capture file at {p}: {exc.strerror}") from None
    if not p.is_file():
        raise CaptureUnavailable(f"{p} is not a regular file")
    if size == 0:
        raise CaptureUnavailable(f"capture file {p} is empty (0 bytes): a tap that recorded nothing is not evidence of silence")
    if size > max_bytes:
        raise CaptureUnavailable(f"capture file {p} is {size} bytes, more than the {max_bytes} allowed")
    return p.read_bytes()


# ---------------------------------------------------------------------------------------------
# The capture point


class _Ring:
    """A TPACKET_V3 receive ring mapped into this process (what libpcap uses on Linux).

    The kernel fills blocks of `block_size` bytes with frames and hands a block over when it is
    full or `retire_ms` after its first frame; we walk it and give it back. Small frames cost
    their length plus ~80 bytes of the ring (a socket buffer costs ~1 KiB of skb per frame), so a
    64 MiB ring holds several hundred thousand frames of burst.
    """

    HDR = struct.Struct("IIIIIIHHIIH")  # tpacket3_hdr up to tp_vlan_tpid
    BLOCK_STATUS, NUM_PKTS, FIRST_PKT = 8, 12, 16
    TP_STATUS_USER = 1

    def __init__(self, sock: socket.socket, total: int, snaplen: int, retire_ms: int = 20) -> None:
        import mmap
        page = mmap.PAGESIZE
        block = max(page, 1 << (snaplen + 4096 - 1).bit_length())  # a full frame fits one block
        block = min(max(block, 1 << 20), 4 << 20)
        nr = max(4, total // block)
        frame = 2048
        req = struct.pack("IIIIIII", block, nr, frame, block // frame * nr, retire_ms, 0, 0)
        sock.setsockopt(SOL_PACKET, PACKET_VERSION, TPACKET_V3)
        sock.setsockopt(SOL_PACKET, PACKET_RX_RING, req)
        self.map = mmap.mmap(sock.fileno(), block * nr, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        self.block_size, self.blocks = block, nr

    def close(self) -> None:
        try:
            self.map.close()
        except (BufferError, ValueError):
            pass


def _open_packet_socket(ifname: str, buffer_bytes: int, snaplen: int,
                        use_ring: bool = True) -> tuple[socket.socket, "_Ring | None", str]:
    """Open and bind the capture socket (with a TPACKET_V3 ring when the kernel allows);
    call inside the capture namespace."""
    # Protocol 0 at creation: the socket receives nothing until bound, so no frame of another
    # interface slips in before the bind.
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
    ring = None
    try:
        if use_ring:
            try:
                ring = _Ring(sock, buffer_bytes, snaplen)
            except (OSError, ValueError):
                ring = None  # fall back to recvmsg with a large socket buffer
        if ring is None:
            try:
                sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, buffer_bytes)
            except OSError:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, buffer_bytes)
            sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
            sock.setsockopt(SOL_PACKET, PACKET_AUXDATA, 1)
        sock.bind((ifname, ETH_P_ALL))
        # Bound to an interface that is still down: the kernel flags ENETDOWN once; clear it. The
        # socket starts receiving when the interface comes up.
        sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        mac = ":".join(f"{b:02x}" for b in sock.getsockname()[4])
        return sock, ring, mac
    except BaseException:
        if ring is not None:
            ring.close()
        sock.close()
        raise


class CapturePoint:
    """Capture everything on `interface` in a private namespace ``attestlab-<runid>``.

    interface:   host NIC cabled to the board (or a simulated board's announced veth end).
    address:     gateway address given to it inside the namespace, e.g. "192.0.2.1/24".
    runid:       names the namespace; letters, digits, ``_.-``, at most 48 characters.
    sinkhole:    also answer the board: DNS (every A query -> the gateway address), TCP
                 listeners that read and close (see harness.interfaces.sinkhole), and claim
                 every off-link IPv4 destination (`claim_all`).
    claim_all:   treat every IPv4 destination the board routes through the gateway as local, so
                 a connection to a hard-coded address (203.0.113.50:443, a resolver at 8.8.8.8)
                 reaches the sinkhole and is answered from the address asked (default: same as
                 `sinkhole`). On-link addresses are never claimed: answering ARP for arbitrary
                 addresses would lie to a real board about its own segment (RFC 5227 conflict
                 detection). Give lab hosts that live on the board's segment as `extra_addresses`.
    extra_addresses: more IPv4/IPv6 addresses for the capture interface, i.e. lab hosts on the
                 board's segment (e.g. "192.0.2.123" for the lab NTP server). Without them a board
                 talking to an on-link peer shows only ARP requests (who-has 192.0.2.123).
    address6:    optional IPv6 gateway address (e.g. "fd00:a77e::1/64"); the sinkhole then
                 answers AAAA with it. Without it IPv6 is off on the capture side (the board's
                 own IPv6 frames are still captured).
    buffer_bytes: kernel buffering between the wire and this process: the TPACKET_V3 ring size
                 (or the socket receive buffer when `use_ring` is False or the kernel refuses a
                 ring). Bursts beyond what it holds are dropped and counted.
    max_bytes:   pcapng size cap; frames beyond it are counted as dropped, not silently lost.
    force:       allow taking an interface that carries this host's default route.
    """

    def __init__(self, interface: str, address: str, runid: str, sinkhole: bool = False, *,
                 claim_all: bool | None = None, address6: str | None = None,
                 extra_addresses: tuple[str, ...] | list[str] = (),
                 snaplen: int = 262144, buffer_bytes: int = 64 << 20, use_ring: bool = True,
                 max_bytes: int = 512 << 20,
                 sinkhole_tcp_ports: tuple[int, ...] | None = None, sweep: bool = True,
                 force: bool = False) -> None:
        if not _RUNID_RE.match(runid):
            raise ValueError(f"runid {runid!r}: use letters, digits and _.- (at most 48 characters)")
        if not interface or len(interface) > 15 or "/" in interface or interface == "lo":
            raise ValueError(f"interface {interface!r} is not a usable interface name")
        self.interface = interface
        self.iface_addr = ipaddress.ip_interface(address)
        if self.iface_addr.version != 4:
            raise ValueError(f"address {address!r}: the gateway address must be IPv4 (give IPv6 as address6)")
        self.address = str(self.iface_addr)
        self.address6 = str(ipaddress.IPv6Interface(address6)) if address6 else None
        self.extra_addresses = tuple(str(ipaddress.ip_interface(a)) for a in extra_addresses)
        self.runid = runid
        self.namespace = f"{NETNS_PREFIX}{runid}"
        self.sinkhole_enabled = sinkhole
        self.claim_all = sinkhole if claim_all is None else claim_all
        self.snaplen = snaplen
        self.buffer_bytes = buffer_bytes
        self.use_ring = use_ring
        self.max_bytes = max_bytes
        self.sinkhole_tcp_ports = sinkhole_tcp_ports
        self.sweep = sweep
        self.force = force
        self.result: CaptureResult | None = None
        # state for clean-up
        self._lock = threading.Lock()
        self._cleaning = False
        self._pending_signal: int | None = None
        self._ns_created = False
        self._moved = False
        self._restore: dict[str, Any] = {}
        self._prev_handlers: dict[int, Any] = {}
        self._atexit_registered = False
        self._sock: socket.socket | None = None
        self._sinkhole = None
        self._thread: threading.Thread | None = None
        self._stop_evt = threading.Event()
        self._error: str | None = None
        self._buf = io.BytesIO()
        self._writer: PcapngWriter | None = None
        self._mac = ""
        self._ring: _Ring | None = None
        self._started_ns = 0
        self._counts = {"packets": 0, "in": 0, "out": 0, "not_written": 0, "received": 0, "kdrops": 0,
                        "forged": 0}
        self._stopped = False

    # -- context manager ----------------------------------------------------------------------

    def __enter__(self) -> "CapturePoint":
        self.start()
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None and not self._stopped:
            self.stop()
        else:
            self._cleanup()

    # -- setup --------------------------------------------------------------------------------

    def start(self) -> None:
        """Create the namespace, take the interface, start capturing. Raises CaptureUnavailable."""
        if self._ns_created or self._stopped:
            raise RuntimeError("a CapturePoint is started once")
        problem = privilege_problem() or tool_problem()
        if problem:
            raise CaptureUnavailable(problem)
        try:
            self._setup()
        except BaseException as exc:
            self._cleanup()
            if isinstance(exc, CaptureUnavailable):
                raise
            if isinstance(exc, (OSError, ValueError)):
                raise CaptureUnavailable(f"could not set up the capture on {self.interface}: {exc}") from exc
            raise

    def _setup(self) -> None:
        if self.sweep:
            sweep_stale()
        info = _ip_json("addr", "show", "dev", self.interface) if _link_exists(self.interface) else []
        if not info:
            raise CaptureUnavailable(
                f"interface {self.interface} does not exist in this network namespace: check the "
                f"board config's net.interface (bench: the NIC cabled to the board; simulation: the "
                f"interface the simulator announced) and that the cable/simulator is up")
        link = info[0]
        if link.get("link_type") != "ether":
            raise CaptureUnavailable(
                f"interface {self.interface} is link type {link.get('link_type')!r}; the capture "
                f"records Ethernet frames, so the board must be on an Ethernet interface")
        if link.get("master"):
            raise CaptureUnavailable(
                f"interface {self.interface} is enslaved to {link['master']}; take it out of the "
                f"bridge/bond first (the board's port must be a dedicated NIC)")
        if not self.force:
            routes = _ip_json("route", "show", "default") + _ip_json("-6", "route", "show", "default")
            if any(r.get("dev") == self.interface for r in routes):
                raise CaptureUnavailable(
                    f"interface {self.interface} carries this host's default route; taking it would "
                    f"cut the host off. Use a dedicated NIC for the board (or force=True)")
        if (NETNS_DIR / self.namespace).exists():
            raise CaptureUnavailable(
                f"network namespace {self.namespace} already exists (another capture with run id "
                f"{self.runid!r} is running); use a unique run id")
        self._restore = {
            "up": "UP" in (link.get("flags") or []),
            "addresses": [f"{a['local']}/{a['prefixlen']}" for a in link.get("addr_info", [])
                          if a.get("family") in ("inet", "inet6") and a.get("scope") == "global"
                          and not a.get("dynamic")],
        }
        _write_owner(self.namespace, {"pid": os.getpid(), "starttime": _proc_starttime(os.getpid()),
                                      "kind": "capture", "interface": self.interface,
                                      "restore": self._restore})
        self._install_handlers()
        self._ns_created = True
        _ip("netns", "add", self.namespace)
        ns = self.namespace
        # Quiet capture side: no router solicitations or DAD; IPv6 off unless an address is given.
        # (Set on `default` before the interface moves in: it takes its settings from there.)
        run_in_netns(ns, _write_sysctls, {
            "net/ipv6/conf/default/accept_ra": "0", "net/ipv6/conf/default/router_solicitations": "0",
            "net/ipv6/conf/default/dad_transmits": "0",
            "net/ipv6/conf/default/disable_ipv6": "0" if self.address6 else "1",
            "net/ipv4/conf/default/rp_filter": "0", "net/ipv4/conf/all/rp_filter": "0"})
        _ip("-n", ns, "link", "set", "dev", "lo", "up")
        self._moved = True
        _ip("link", "set", "dev", self.interface, "netns", ns)
        self._sock, self._ring, self._mac = run_in_netns(ns, _open_packet_socket, self.interface,
                                                         self.buffer_bytes, self.snaplen, self.use_ring)
        self._writer = PcapngWriter(self._buf, linktype=1, snaplen=self.snaplen, if_name=self.interface,
                                    application="attestlab", if_mac=self._mac or None)
        _ip("-n", ns, "addr", "add", self.address, "dev", self.interface)
        if self.address6:
            _ip("-n", ns, "addr", "add", self.address6, "dev", self.interface, "nodad")
        for extra in self.extra_addresses:
            _ip("-n", ns, "addr", "add", extra, "dev", self.interface,
                *(["nodad"] if ":" in extra else []))
        if self.claim_all:
            # Every off-link IPv4 destination arriving on the interface is local here (input
            # routing only: `iif` never matches the namespace's own output), so connections to
            # any address reach the sinkhole's listeners. The on-link subnet is thrown back to
            # the main table: no ARP answers for addresses nobody here has.
            _ip("-n", ns, "route", "add", "local", "0.0.0.0/0", "dev", "lo", "table", "100")
            _ip("-n", ns, "route", "add", "throw", str(self.iface_addr.network), "table", "100")
            _ip("-n", ns, "rule", "add", "pref", "1000", "iif", self.interface, "lookup", "100")
        if self.sinkhole_enabled:
            from harness.interfaces.sinkhole import DEFAULT_TCP_PORTS, Sinkhole
            hole = Sinkhole(answer_v4=str(self.iface_addr.ip),
                            answer_v6=str(ipaddress.IPv6Interface(self.address6).ip) if self.address6 else None,
                            tcp_ports=self.sinkhole_tcp_ports or DEFAULT_TCP_PORTS,
                            transparent=self.claim_all)
            self._sinkhole = hole
            run_in_netns(ns, hole.open)
            hole.start()
        self._started_ns = time.time_ns()
        self._thread = threading.Thread(target=self._capture_loop, name=f"capture:{self.interface}", daemon=True)
        self._thread.start()
        _ip("-n", ns, "link", "set", "dev", self.interface, "up")

    # -- capturing ----------------------------------------------------------------------------

    def _capture_loop(self) -> None:
        try:
            if self._ring is not None:
                self._ring_loop()
            else:
                self._recv_loop()
        except OSError as exc:
            if exc.errno in (errno.ENETDOWN, errno.ENXIO, errno.ENODEV):
                self._error = (f"interface {self.interface} went down or disappeared during the capture "
                               f"({exc.strerror}); frames after that were not seen")
            else:
                self._error = f"capture socket on {self.interface} failed: {exc}"
        except BaseException as exc:  # never let the thread die silently
            self._error = f"capture thread failed: {exc!r}"
        finally:
            try:
                self._read_stats()
            except OSError:
                pass

    def _ring_loop(self) -> None:
        ring, sock, writer, counts = self._ring, self._sock, self._writer, self._counts
        assert ring is not None and sock is not None and writer is not None
        mm = ring.map
        bsize, nblocks = ring.block_size, ring.blocks
        unpack_hdr = _Ring.HDR.unpack_from
        u32 = struct.Struct("I").unpack_from
        write = writer.write_packet
        out = self._buf
        max_bytes = self.max_bytes
        poller = select.poll()
        poller.register(sock.fileno(), select.POLLIN | select.POLLERR)
        zero = b"\0\0\0\0"
        blk = 0
        n_in = n_out = n_written = n_skipped = n_forged = 0
        own = bytes.fromhex(self._mac.replace(":", "")) if self._mac else b"-"
        last_stats = time.monotonic()
        drain_until = None
        try:
            while True:
                base = blk * bsize
                if not u32(mm, base + _Ring.BLOCK_STATUS)[0] & _Ring.TP_STATUS_USER:
                    now = time.monotonic()
                    if now - last_stats >= 1.0:
                        self._read_stats()
                        last_stats = now
                    if drain_until is None and self._stop_evt.is_set():
                        # Blocks are handed over at most retire_ms after their first frame.
                        drain_until = now + 0.2
                    if drain_until is not None and now >= drain_until:
                        return
                    for _fd, ev in poller.poll(50):
                        if ev & select.POLLERR:
                            err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                            if err:
                                raise OSError(err, os.strerror(err))
                    continue
                num = u32(mm, base + _Ring.NUM_PKTS)[0]
                p = base + u32(mm, base + _Ring.FIRST_PKT)[0]
                for _ in range(num):
                    (nxt, sec, nsec, snap, length, status, mac, _net, _rxhash, tci,
                     tpid) = unpack_hdr(mm, p)
                    data = mm[p + mac:p + mac + snap]
                    if mm[p + 58] == PACKET_OUTGOING:  # sockaddr_ll.sll_pkttype after the header
                        n_out += 1
                    else:
                        n_in += 1
                        if data[6:12] == own:  # arrived from the board's side with our own MAC
                            n_forged += 1
                    if status & TP_STATUS_VLAN_VALID and snap >= 12:
                        if not status & TP_STATUS_VLAN_TPID_VALID or not tpid:
                            tpid = 0x8100
                        data = data[:12] + struct.pack("!HH", tpid, tci) + data[12:]
                        length += 4
                    if out.tell() >= max_bytes:
                        n_skipped += 1
                    else:
                        write(sec * 1_000_000_000 + nsec, data, length)
                        n_written += 1
                    p += nxt
                mm[base + _Ring.BLOCK_STATUS:base + _Ring.BLOCK_STATUS + 4] = zero  # back to the kernel
                blk = (blk + 1) % nblocks
                if self._stop_evt.is_set():
                    # A link that never goes quiet must not keep the window open: 2 s at most.
                    now = time.monotonic()
                    if drain_until is None:
                        drain_until = now + 0.2
                    if now >= drain_until + 1.8:
                        return
                counts["packets"], counts["in"], counts["out"], counts["not_written"], counts["forged"] = (
                    n_written, n_in, n_out, n_skipped, n_forged)
        finally:
            counts["packets"], counts["in"], counts["out"], counts["not_written"], counts["forged"] = (
                n_written, n_in, n_out, n_skipped, n_forged)

    def _recv_loop(self) -> None:
        sock, writer, counts = self._sock, self._writer, self._counts
        assert sock is not None and writer is not None
        anc = socket.CMSG_SPACE(_TIMESPEC.size) + socket.CMSG_SPACE(_AUX.size)
        bufsize = self.snaplen
        recvmsg = sock.recvmsg
        out = self._buf
        max_bytes = self.max_bytes
        poller = select.poll()
        poller.register(sock.fileno(), select.POLLIN)
        last_stats = time.monotonic()
        own = bytes.fromhex(self._mac.replace(":", "")) if self._mac else b"-"
        try:
            draining = False
            drain_deadline = 0.0
            while True:
                if not draining and self._stop_evt.is_set():
                    draining = True
                    drain_deadline = time.monotonic() + 2.0
                if not draining:
                    if not poller.poll(100):
                        continue
                got = 0
                for _ in range(4096):
                    try:
                        data, ancdata, flags, addr = recvmsg(bufsize, anc, socket.MSG_DONTWAIT)
                    except (BlockingIOError, InterruptedError):
                        break
                    got += 1
                    ts = 0
                    aux = None
                    for level, typ, cdata in ancdata:
                        if level == socket.SOL_SOCKET and typ == SO_TIMESTAMPNS and len(cdata) >= 16:
                            sec, nsec = _TIMESPEC.unpack_from(cdata)
                            ts = sec * 1_000_000_000 + nsec
                        elif level == SOL_PACKET and typ == PACKET_AUXDATA and len(cdata) >= _AUX.size:
                            aux = _AUX.unpack_from(cdata)
                    if not ts:
                        ts = time.time_ns()
                    orig_len = len(data)
                    if aux is not None:
                        status, tp_len, _snap, _mac, _net, tci, tpid = aux
                        orig_len = max(tp_len, orig_len)
                        if status & TP_STATUS_VLAN_VALID and len(data) >= 12:
                            # The kernel strips the VLAN tag into metadata; put it back as libpcap does.
                            if not status & TP_STATUS_VLAN_TPID_VALID or not tpid:
                                tpid = 0x8100
                            data = data[:12] + struct.pack("!HH", tpid, tci) + data[12:]
                            orig_len += 4
                    if addr[2] == PACKET_OUTGOING:
                        counts["out"] += 1
                    else:
                        counts["in"] += 1
                        if data[6:12] == own:  # arrived from the board's side with our own MAC
                            counts["forged"] += 1
                    if out.tell() >= max_bytes:
                        counts["not_written"] += 1
                        continue
                    writer.write_packet(ts, data, orig_len)
                    counts["packets"] += 1
                now = time.monotonic()
                if now - last_stats >= 1.0:
                    self._read_stats()
                    last_stats = now
                if draining and (got == 0 or now > drain_deadline):
                    break
        finally:
            pass

    def _read_stats(self) -> None:
        if self._sock is None:
            return
        # tpacket_stats (or tpacket_stats_v3 with a ring); tp_packets includes the drops.
        raw = self._sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, 12 if self._ring is not None else 8)
        packets, drops = struct.unpack_from("II", raw)
        self._counts["received"] += packets
        self._counts["kdrops"] += drops

    def _check_thread(self) -> None:
        if self._error:
            raise CaptureUnavailable(self._error)
        if self._thread is None or not self._thread.is_alive():
            raise CaptureUnavailable(f"the capture on {self.interface} is not running")

    def run_for(self, seconds: float) -> None:
        """Keep capturing for `seconds` (at most one day), checking the capture stays healthy."""
        if not 0 <= seconds <= 86400:
            raise ValueError(f"run_for({seconds}): give 0..86400 seconds")
        deadline = time.monotonic() + seconds
        while True:
            self._check_thread()
            left = deadline - time.monotonic()
            if left <= 0:
                return
            time.sleep(min(0.1, left))

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive() and not self._stop_evt.is_set()

    @property
    def packets_so_far(self) -> int:
        return self._counts["packets"] + self._counts["not_written"]

    def stop(self) -> CaptureResult:
        """End the window, clean up everything, and return the capture.

        Raises CaptureUnavailable (with `.partial`) when the capture failed during the window.
        """
        if self._stopped:
            if self.result is None:
                raise CaptureUnavailable("this capture was already stopped without a result")
            return self.result
        if self._thread is None:
            self._cleanup()
            raise CaptureUnavailable("the capture was never started")
        if self._sinkhole is not None:
            # First, so the frames of the connections it closes are still captured and its
            # event log is final.
            try:
                self._sinkhole.stop()
            except RuntimeError:
                pass
        self._stop_evt.set()
        self._thread.join(10.0)
        thread_stuck = self._thread.is_alive()
        ended = time.time_ns()
        events = tuple(self._sinkhole.events) if self._sinkhole is not None else ()
        error = self._error or ("the capture thread did not finish within 10 s" if thread_stuck else None)
        result = None
        if not thread_stuck and self._writer is not None:
            c = self._counts
            dropped = c["kdrops"] + c["not_written"]
            self._writer.write_stats(ended, c["received"], dropped)
            result = CaptureResult(
                pcapng=self._buf.getvalue(), packets=c["packets"], dropped=dropped, received=c["received"],
                started=_iso(self._started_ns), ended=_iso(ended), started_ns=self._started_ns,
                ended_ns=ended, interface=self.interface, namespace=self.namespace, address=self.address,
                capture_mac=self._mac, packets_in=c["in"], packets_out=c["out"], kernel_dropped=c["kdrops"],
                not_written=c["not_written"], sinkhole_events=events, forged_in=c["forged"])
        cleanup_problems = self._cleanup()
        self._stopped = True
        if error:
            raise CaptureUnavailable(error, partial=result)
        if result is None:
            raise CaptureUnavailable("no capture was recorded")
        self.result = result
        if cleanup_problems:
            # The capture itself is good; a restore problem is the operator's to fix, but say so.
            raise CaptureUnavailable("capture taken but clean-up failed: " + "; ".join(cleanup_problems),
                                     partial=result)
        return result

    # -- clean-up -----------------------------------------------------------------------------

    def _cleanup(self) -> list[str]:
        """Undo everything set up so far; idempotent, safe from a signal handler. Returns problems."""
        if not self._lock.acquire(blocking=False):
            return []  # another clean-up is running (possibly the one this signal interrupted)
        problems: list[str] = []
        try:
            if self._cleaning:
                return []
            self._cleaning = True
            self._stop_evt.set()
            if self._thread is not None and self._thread is not threading.current_thread():
                self._thread.join(5.0)
            if self._sinkhole is not None:
                try:
                    self._sinkhole.stop()
                except Exception as exc:
                    problems.append(f"sinkhole stop: {exc}")
            if self._ring is not None:
                self._ring.close()
            if self._sock is not None:
                self._sock.close()
            if self._moved:
                try:
                    if _return_interface(self.namespace, self.interface):
                        problems += _restore_interface(self.interface, self._restore)
                except CaptureUnavailable as exc:
                    problems.append(str(exc))
            if self._ns_created:
                try:
                    _delete_namespace(self.namespace)
                except CaptureUnavailable as exc:
                    problems.append(str(exc))
                else:
                    _remove_owner(self.namespace)
            self._stopped = True
        finally:
            self._restore_handlers()
            self._lock.release()
            pending, self._pending_signal = self._pending_signal, None
            if pending is not None:
                signal.raise_signal(pending)
        return problems

    def _install_handlers(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return  # signals are only delivered to the main thread's handlers; atexit still runs
        for sig in (signal.SIGTERM, signal.SIGHUP):
            try:
                self._prev_handlers[sig] = signal.signal(sig, self._on_signal)
            except (ValueError, OSError):
                pass
        atexit.register(self._cleanup)
        self._atexit_registered = True

    def _restore_handlers(self) -> None:
        if self._atexit_registered:
            atexit.unregister(self._cleanup)
            self._atexit_registered = False
        if threading.current_thread() is not threading.main_thread():
            if self._prev_handlers:
                # Cannot touch handlers here; _on_signal checks _cleaning and passes signals on.
                return
        for sig, prev in list(self._prev_handlers.items()):
            try:
                if signal.getsignal(sig) == self._on_signal:
                    signal.signal(sig, prev if prev is not None else signal.SIG_DFL)
            except (ValueError, OSError):
                pass
        self._prev_handlers.clear()

    def _on_signal(self, signum: int, frame: Any) -> None:
        prev = self._prev_handlers.get(signum, signal.SIG_DFL)
        if self._lock.locked():
            # A clean-up is in progress (this signal interrupted it, or another thread runs it):
            # let it finish; it re-raises the signal at its end.
            self._pending_signal = signum
            return
        if not self._cleaning:
            self._cleanup()  # restores the previous handlers
        else:
            self._restore_handlers()
        # Now behave as if we had never been installed.
        if callable(prev):
            prev(signum, frame)
        elif prev == signal.SIG_IGN:
            return
        else:
            signal.signal(signum, signal.SIG_DFL)
            signal.raise_signal(signum)


# ---------------------------------------------------------------------------------------------
# The `net` interface kind


class NetSettingsError(ProbeError):
    """The board config's `interfaces.net` settings are unusable; the message says which and why."""


_NET_KEYS = ("interface", "address", "extra_addresses", "address6", "workload", "workload_trigger",
             "sinkhole_tcp_ports", "force")
_IFNAME_RE = re.compile(r"^[A-Za-z0-9_.:@-]{1,15}$")


@dataclass(frozen=True)
class NetworkPort:
    """Where the board's management port is reached, as a board config (or the simulator) says.

    interface:        host NIC cabled to the board (or the mirror/tap port); moved into the
                      capture namespace for each window and given back afterwards.
    address:          the gateway address the capture side takes on it (IPv4 with prefix).
    extra_addresses:  lab hosts on the board's segment the capture side impersonates (the NTP server).
    address6:         optional IPv6 gateway address (the sinkhole then answers AAAA with it).
    workload_command: a bench command that makes the board work (argv list), for `activity: workload`.
    workload_trigger: a file whose creation starts a simulated board's workload.
    sinkhole_tcp_ports: TCP ports the sinkhole listens on (default: its own list).
    force:            allow taking a NIC that carries the host's default route.
    """

    interface: str
    address: str
    extra_addresses: tuple[str, ...] = ()
    address6: str | None = None
    workload_command: tuple[str, ...] | None = None
    workload_trigger: str | None = None
    sinkhole_tcp_ports: tuple[int, ...] | None = None
    force: bool = False

    @property
    def has_workload(self) -> bool:
        return self.workload_command is not None or self.workload_trigger is not None

    def close(self) -> None:
        """Nothing to release: every capture window sets up and tears down its own namespace."""


def open_net(settings: dict[str, Any]) -> NetworkPort:
    """The `net` opener: validate the settings, say clearly what is wrong, touch nothing.

    A simulated board that could not create its network port announces ``{"unavailable": why}``;
    that becomes CaptureUnavailable(why) here, so only the egress steps are affected.
    """
    if not isinstance(settings, dict):
        raise NetSettingsError(f"interfaces.net must be a mapping, got {type(settings).__name__}")
    if "unavailable" in settings:
        raise CaptureUnavailable(f"the board's network port is unavailable: {settings['unavailable']}")
    unknown = sorted(set(settings) - set(_NET_KEYS))
    if unknown:
        raise NetSettingsError(f"interfaces.net: unknown setting {unknown[0]!r} (known: {', '.join(_NET_KEYS)})")
    interface = settings.get("interface")
    if not isinstance(interface, str) or not _IFNAME_RE.match(interface) or interface == "lo":
        raise NetSettingsError(
            f"interfaces.net.interface {interface!r}: give the host NIC cabled to the board's management "
            f"port (or to the switch mirror port / tap), e.g. enp5s0 (at most 15 characters, not lo)")
    address = settings.get("address")
    try:
        if not isinstance(address, str) or "/" not in address:
            raise ValueError("no prefix length")
        gw = ipaddress.IPv4Interface(address)
    except ValueError as exc:
        raise NetSettingsError(
            f"interfaces.net.address {address!r}: give the IPv4 address the harness takes on the board's "
            f"segment with its prefix length, e.g. 192.0.2.1/24 (the board's gateway) ({exc})") from None
    if gw.network.prefixlen >= 31 or gw.ip in (gw.network.network_address, gw.network.broadcast_address):
        raise NetSettingsError(f"interfaces.net.address {address}: not a usable host address on a subnet "
                               f"the board can share")
    extras_raw = settings.get("extra_addresses") or []
    if isinstance(extras_raw, str) or not isinstance(extras_raw, list):
        raise NetSettingsError(f"interfaces.net.extra_addresses must be a list of addresses, got {extras_raw!r}")
    extras = []
    for item in extras_raw:
        try:
            extras.append(str(ipaddress.ip_interface(str(item))))
        except ValueError:
            raise NetSettingsError(f"interfaces.net.extra_addresses: {item!r} is not an IP address") from None
    address6 = settings.get("address6")
    if address6 is not None:
        try:
            address6 = str(ipaddress.IPv6Interface(str(address6)))
        except ValueError:
            raise NetSettingsError(f"interfaces.net.address6 {address6!r} is not an IPv6 address/prefix") from None
    command = None
    workload = settings.get("workload")
    if workload is not None:
        if not isinstance(workload, dict) or set(workload) != {"command"}:
            raise NetSettingsError(f"interfaces.net.workload must be {{command: [program, arg, ...]}}, got {workload!r}")
        cmd = workload["command"]
        if (not isinstance(cmd, list) or not cmd
                or not all(isinstance(a, (str, int)) and not isinstance(a, bool) for a in cmd)):
            raise NetSettingsError(f"interfaces.net.workload.command must be a non-empty list of strings "
                                   f"(program and arguments, no shell), got {cmd!r}")
        command = tuple(str(a) for a in cmd)
    trigger = settings.get("workload_trigger")
    if trigger is not None and (not isinstance(trigger, str) or not os.path.isabs(trigger)):
        raise NetSettingsError(f"interfaces.net.workload_trigger must be an absolute file path, got {trigger!r}")
    ports = settings.get("sinkhole_tcp_ports")
    if ports is not None:
        if (not isinstance(ports, list) or not ports
                or not all(isinstance(p, int) and not isinstance(p, bool) and 0 < p < 65536 for p in ports)):
            raise NetSettingsError(f"interfaces.net.sinkhole_tcp_ports must be a list of TCP ports, got {ports!r}")
        ports = tuple(ports)
    force = settings.get("force", False)
    if not isinstance(force, bool):
        raise NetSettingsError(f"interfaces.net.force must be true or false, got {force!r}")
    return NetworkPort(interface=interface, address=str(gw), extra_addresses=tuple(extras), address6=address6,
                       workload_command=command, workload_trigger=trigger, sinkhole_tcp_ports=ports, force=force)
