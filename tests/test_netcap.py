"""Capture point, sinkhole and the simulated board's network port, against real namespaces.

Most tests need root (they create network namespaces and veth pairs) and skip without it. Every
packet stays inside namespaces these tests create (documentation addresses 192.0.2.0/24,
198.51.100.0/24, 203.0.113.0/24); the simulated board runs in a separate process.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness.formats.pcap import PcapngWriter, read_capture
from harness.interfaces import netcap, netns, pktring
from harness.interfaces.netcap import CapturePoint, CaptureUnavailable, offline_capture, sweep_stale
from harness.interfaces.sinkhole import dns_response
from harness.verdict import ProbeError
from fixtures.sim import network as simnet

from conftest import link_exists

ROOT = Path(__file__).resolve().parent.parent
BOARD_MAC = "02:00:5e:10:00:02"
BOARD_MAC_BYTES = bytes.fromhex(BOARD_MAC.replace(":", ""))

root = pytest.mark.skipif(os.geteuid() != 0 or netcap.privilege_problem() is not None,
                          reason="needs root: creates network namespaces")

# A stand-in for `python -m fixtures.sim` that takes the profile as JSON, so a test can shape it.
LAUNCHER = r"""
import json, os, signal, sys, threading, pathlib
from fixtures.sim import network
announce, stop = network.start(json.loads(sys.argv[1]), pathlib.Path(sys.argv[2]))
print(json.dumps(announce), flush=True)
done = threading.Event()
for s in (signal.SIGTERM, signal.SIGINT):
    signal.signal(s, lambda *a: done.set())
parent, deadline = os.getppid(), 60
while not done.wait(0.2) and os.getppid() == parent and deadline > 0:
    deadline -= 0.2
stop()
print("stopped", flush=True)
"""

# A process that holds a capture point until told otherwise (signals, SIGKILL).
HOLDER = r"""
import sys
from harness.interfaces.netcap import CapturePoint
with CapturePoint(sys.argv[1], sys.argv[2], sys.argv[3]) as cp:
    print("ready", flush=True)
    cp.run_for(float(sys.argv[4]))
print("ended", flush=True)
"""


class Sim:
    def __init__(self, network: dict, workdir: Path) -> None:
        self.proc = subprocess.Popen([sys.executable, "-c", LAUNCHER, json.dumps({"network": network}), str(workdir)],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
        line = self.proc.stdout.readline()
        if not line:
            self.proc.wait(10)
            raise AssertionError(f"simulator did not start: {self.proc.stderr.read()}")
        self.announce = json.loads(line)
        self.interface = self.announce["interface"]
        self.address = self.announce["address"]
        self.namespace = f"attestlab-sim-{self.proc.pid}"
        self.workdir = workdir

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        assert self.proc.returncode == 0, self.proc.stderr.read()

    def log(self) -> list[dict]:
        path = self.workdir / "network.log"
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


@pytest.fixture
def sim(tmp_path):
    started: list[Sim] = []

    def make(**network) -> Sim:
        s = Sim(network, tmp_path / f"board{len(started)}")
        started.append(s)
        return s

    yield make
    for s in started:
        s.stop()
        assert not (netcap.NETNS_DIR / s.namespace).exists()
        assert not link_exists(s.interface), f"{s.interface} left behind"


def _runid(tag: str) -> str:
    return f"t{os.getpid()}-{tag}"


def _link_up(name: str) -> bool:
    out = subprocess.run(["ip", "-j", "link", "show", "dev", name], capture_output=True, text=True)
    return "UP" in json.loads(out.stdout)[0]["flags"]


def _assert_gone(cp_runid: str, interface: str | None = None) -> None:
    ns = f"attestlab-{cp_runid}"
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert ns not in listed
    assert not (netcap.OWNER_DIR / f"{ns}.json").exists()
    if interface:
        assert link_exists(interface), f"{interface} did not come back to the root namespace"
        assert not _link_up(interface), f"{interface} should be back in its original (down) state"


# -- tiny decoders for what the tests look for -------------------------------------------------

def _ipv4_udp(frame: bytes):
    """(src, dst, sport, dport, payload) of an Ethernet/IPv4/UDP frame, else None."""
    if len(frame) < 42 or frame[12:14] != b"\x08\x00" or frame[23] != 17:
        return None
    ihl = (frame[14] & 0xF) * 4
    src, dst = frame[26:30], frame[30:34]
    sport, dport = struct.unpack_from("!HH", frame, 14 + ihl)
    return (".".join(map(str, src)), ".".join(map(str, dst)), sport, dport, frame[14 + ihl + 8:])


def _qname(dns: bytes) -> str | None:
    off, labels = 12, []
    while off < len(dns) and dns[off]:
        n = dns[off]
        labels.append(dns[off + 1:off + 1 + n].decode())
        off += 1 + n
    return ".".join(labels) if labels else None


def _board_queries(pcapng: bytes) -> list[tuple[int, str, str]]:
    """(timestamp_ns, resolver, qname) of every DNS query the board sent."""
    out = []
    for p in read_capture(pcapng).packets:
        u = _ipv4_udp(p.data)
        if u and u[0] == "192.0.2.2" and u[3] == 53 and p.data[6:12] == BOARD_MAC_BYTES:
            out.append((p.timestamp_ns, u[1], _qname(u[4])))
    return out


def _tshark(pcapng: bytes, tmp_path: Path, *fields: str, display: str = "") -> list[str]:
    if shutil.which("tshark") is None:
        pytest.skip("tshark not installed")
    path = tmp_path / "cap.pcapng"
    path.write_bytes(pcapng)
    cmd = ["tshark", "-r", str(path), "-T", "fields"]
    for f in fields:
        cmd += ["-e", f]
    if display:
        cmd += ["-Y", display]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return [line for line in proc.stdout.splitlines() if line.strip()]


# -- live captures -------------------------------------------------------------------------------

@root
def test_phone_home_reveals_dns_name_and_sni_through_the_sinkhole(sim, tmp_path):
    board = sim(behaviour="phone-home")
    runid = _runid("phone")
    with CapturePoint(board.interface, board.address, runid, sinkhole=True) as cp:
        assert (netcap.NETNS_DIR / f"attestlab-{runid}").exists()
        assert not link_exists(board.interface)  # it is inside the capture namespace now
        cp.run_for(2.0)
        res = cp.stop()
    _assert_gone(runid, board.interface)

    assert res.packets > 5 and res.packets == res.packets_in + res.packets_out
    assert res.dropped == 0 and res.complete and res.received >= res.packets
    assert res.namespace == f"attestlab-{runid}" and res.address == "192.0.2.1/24"
    cap = read_capture(res.pcapng)
    assert cap.format == "pcapng" and not cap.anomalies and not cap.data_lost
    assert len(cap.packets) == res.packets
    assert cap.stats is not None and cap.stats.dropped == 0 and cap.stats.received == res.received
    assert all(res.started_ns - 10**9 <= p.timestamp_ns <= res.ended_ns for p in cap.packets)
    # Board frames come from its MAC, the harness side's from the capture interface's.
    macs = {p.data[6:12].hex(":") for p in cap.packets}
    assert BOARD_MAC in macs and res.capture_mac in macs

    assert ("192.0.2.1", "telemetry.acme.example") in {(r, q) for _t, r, q in _board_queries(res.pcapng)}
    seen = _tshark(res.pcapng, tmp_path, "dns.qry.name", "tls.handshake.extensions_server_name",
                   display="dns.flags.response == 0 or tls.handshake.type == 1")
    assert "telemetry.acme.example" in {f for line in seen for f in line.split("\t")}  # DNS name
    assert "\ttelemetry.acme.example" in seen  # SNI in a ClientHello
    events = res.sinkhole_events
    assert any(e["kind"] == "dns" and e["qname"] == "telemetry.acme.example" and e["answers"] == ["192.0.2.1"]
               for e in events)
    assert any(e["kind"] == "tcp" and e["local"] == "192.0.2.1:443" and e["head_hex"].startswith("1603")
               for e in events)


@root
def test_passive_capture_shows_dns_tunnel_and_icmp_covert_channel(sim, tmp_path):
    board = sim(behaviour=["dns-tunnel", "icmp-covert"], ipv6=False)
    runid = _runid("passive")
    with CapturePoint(board.interface, board.address, runid) as cp:
        cp.run_for(1.8)
        res = cp.stop()
    _assert_gone(runid, board.interface)
    assert res.complete and not res.sinkhole_events

    names = [q for _t, _r, q in _board_queries(res.pcapng)]
    assert len(names) >= 3
    for name in names:
        assert name.endswith(".x.exfil.example")
        assert max(len(label) for label in name.split(".")) >= 32  # long encoded labels
    pings = [p.data for p in read_capture(res.pcapng).packets
             if p.data[12:14] == b"\x08\x00" and p.data[23] == 1 and p.data[34] == 8]
    assert pings, "no ICMP echo requests captured"
    assert all(d[30:34] == bytes([198, 51, 100, 7]) for d in pings)
    assert all(d[42:46] == b"ALX1" for d in pings)  # the covert payload, after the ICMP header
    assert not [p for p in read_capture(res.pcapng).packets if p.data[12:14] == b"\x86\xdd"]  # ipv6: false
    assert len(_tshark(res.pcapng, tmp_path, "frame.number")) == res.packets


@root
def test_clean_ntp_and_late_beacon_with_hardcoded_resolver(sim, tmp_path):
    board = sim(behaviour=["clean-ntp", "late-beacon"], delay=1.5, resolver="203.0.113.53", ipv6=False)
    runid = _runid("late")
    with CapturePoint(board.interface, board.address, runid, sinkhole=True, extra_addresses=["192.0.2.123"]) as cp:
        cp.run_for(3.2)
        res = cp.stop()
    _assert_gone(runid, board.interface)
    assert res.complete

    frames = read_capture(res.pcapng).packets
    board_frames = [p for p in frames if p.data[6:12] == BOARD_MAC_BYTES]
    ntp = [u for p in board_frames if (u := _ipv4_udp(p.data)) and u[3] == 123]
    assert ntp and all(u[1] == "192.0.2.123" and len(u[4]) == 48 and u[4][0] & 7 == 3 for u in ntp)
    queries = _board_queries(res.pcapng)
    assert queries and {(r, q) for _t, r, q in queries} == {("203.0.113.53", "beacon.acme.example")}
    # Silent for the delay after the link came up (just after `started`), then beaconing.
    assert queries[0][0] - res.started_ns >= 1.4e9
    # The hard-coded resolver was answered from its own address (claim_all + IP_PKTINFO).
    answers = [u for p in frames if (u := _ipv4_udp(p.data)) and u[0] == "203.0.113.53" and u[2] == 53]
    assert answers and answers[0][1] == "192.0.2.2"
    # ARP is answered only for addresses the capture side really has (nothing on-link is claimed).
    arp_replies = {".".join(map(str, p.data[28:32])) for p in frames
                   if p.data[12:14] == b"\x08\x06" and p.data[20:22] == b"\x00\x02"}
    assert arp_replies <= {"192.0.2.1", "192.0.2.123"} and "192.0.2.123" in arp_replies
    assert "beacon.acme.example" in _tshark(res.pcapng, tmp_path, "tls.handshake.extensions_server_name",
                                            display="tls.handshake.type == 1")


@root
def test_sinkhole_answers_dns_over_tcp_and_connections_to_any_offlink_address(sim):
    board = sim(behaviour="quiet", ipv6=False)
    runid = _runid("tcp")

    def as_the_board():
        import socket
        qid, q = simnet.dns_query("update.acme.example", 1)
        with socket.create_connection(("198.51.100.53", 53), timeout=3) as s:
            s.sendall(struct.pack("!H", len(q)) + q)
            data = b""
            while len(data) < 2 or len(data) < 2 + struct.unpack_from("!H", data)[0]:
                chunk = s.recv(4096)
                if not chunk:
                    break
                data += chunk
        answers = simnet.dns_a_answers(data[2:], qid)
        with socket.create_connection(("203.0.113.50", 8080), timeout=3) as s:
            s.sendall(b"GET /beacon HTTP/1.1\r\nHost: cdn.acme.example\r\n\r\n")
            closed = s.recv(100) == b""
        return answers, closed

    with CapturePoint(board.interface, board.address, runid, sinkhole=True) as cp:
        cp.run_for(0.3)
        answers, closed = netcap.run_in_netns(board.namespace, as_the_board)
        cp.run_for(0.2)
        res = cp.stop()
    _assert_gone(runid, board.interface)
    assert answers == ["192.0.2.1"] and closed
    events = res.sinkhole_events
    assert any(e["kind"] == "dns" and e["proto"] == "tcp" and e["server"] == "198.51.100.53"
               and e["qname"] == "update.acme.example" for e in events)
    http = [e for e in events if e["kind"] == "tcp" and e["local"] == "203.0.113.50:8080"]
    assert http and bytes.fromhex(http[0]["head_hex"]).startswith(b"GET /beacon HTTP/1.1")


@root
def test_drops_are_reported_not_hidden(sim, tmp_path):
    board = sim(behaviour="quiet", ipv6=False)
    runid = _runid("drops")
    # A socket buffer of a few frames, no ring, and a burst far faster than Python reads.
    with CapturePoint(board.interface, board.address, runid, use_ring=False, buffer_bytes=4096) as cp:
        cp.run_for(0.5)
        blast = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "egress_capture.py"), "--sender",
                                board.namespace, "400000", "0.3"], capture_output=True, text=True, timeout=30)
        assert blast.returncode == 0, blast.stderr
        sent = json.loads(blast.stdout.splitlines()[-1])["sent"]
        cp.run_for(0.3)
        res = cp.stop()
    _assert_gone(runid, board.interface)
    assert sent > 5000
    assert res.dropped > 0 and not res.complete
    assert res.kernel_dropped == res.dropped
    assert res.packets + res.kernel_dropped <= res.received <= res.packets + res.kernel_dropped + 5
    cap = read_capture(res.pcapng)
    assert cap.stats is not None and cap.stats.dropped == res.dropped and cap.stats.received == res.received
    assert len(cap.packets) == res.packets


@root
def test_exception_in_window_removes_namespace_and_returns_interface(sim):
    board = sim(behaviour="quiet")
    runid = _runid("exc")
    with pytest.raises(RuntimeError, match="probe blew up"):
        with CapturePoint(board.interface, board.address, runid, sinkhole=True) as cp:
            cp.run_for(0.2)
            raise RuntimeError("probe blew up")
    _assert_gone(runid, board.interface)


@root
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_to_holder_process_cleans_up(sim, sig):
    board = sim(behaviour="quiet")
    runid = _runid(f"sig{int(sig)}")
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, board.interface, board.address, runid, "30"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        assert holder.stdout.readline().strip() == "ready", holder.stderr.read()
        assert (netcap.NETNS_DIR / f"attestlab-{runid}").exists()
        holder.send_signal(sig)
        holder.wait(15)
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait(5)
    if sig == signal.SIGTERM:
        assert holder.returncode == -signal.SIGTERM  # cleaned up, then died of the signal as asked
    else:
        assert holder.returncode != 0 and "KeyboardInterrupt" in holder.stderr.read()
    _assert_gone(runid, board.interface)


@root
def test_sweep_stale_removes_namespace_of_killed_owner(sim):
    board = sim(behaviour="quiet")
    runid = _runid("stale")
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, board.interface, board.address, runid, "30"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    assert holder.stdout.readline().strip() == "ready", holder.stderr.read()
    holder.kill()  # SIGKILL: no chance to clean up
    holder.wait(10)
    ns = f"attestlab-{runid}"
    assert (netcap.NETNS_DIR / ns).exists() and (netcap.OWNER_DIR / f"{ns}.json").exists()
    assert ns in sweep_stale()
    _assert_gone(runid, board.interface)
    # Live owners are left alone: the simulator's own namespace survives the sweep.
    assert (netcap.NETNS_DIR / board.namespace).exists()


@root
def test_sweep_stale_removes_killed_simulator(tmp_path):
    board = Sim({"behaviour": "quiet"}, tmp_path)
    board.proc.kill()
    board.proc.wait(10)
    assert (netcap.NETNS_DIR / board.namespace).exists() and link_exists(board.interface)
    assert board.namespace in sweep_stale()
    assert not (netcap.NETNS_DIR / board.namespace).exists()
    assert not (netcap.OWNER_DIR / f"{board.namespace}.json").exists()
    deadline = time.monotonic() + 5
    while link_exists(board.interface) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not link_exists(board.interface)


@root
def test_board_vanishing_mid_window_fails_closed(sim):
    board = sim(behaviour="phone-home")
    runid = _runid("vanish")
    with CapturePoint(board.interface, board.address, runid, sinkhole=True) as cp:
        cp.run_for(1.0)
        board.stop()  # destroys the veth pair, capture end included
        time.sleep(0.3)
        with pytest.raises(CaptureUnavailable, match="went down or disappeared") as info:
            cp.stop()
    assert info.value.partial is not None and info.value.partial.packets > 0
    _assert_gone(runid)


def _promiscuity(interface: str, namespace: str | None = None) -> int:
    ns = ["-n", namespace] if namespace else []
    out = subprocess.run(["ip", *ns, "-d", "-j", "link", "show", "dev", interface], capture_output=True, text=True)
    return json.loads(out.stdout)[0]["promiscuity"]


@root
def test_capture_interface_is_promiscuous_during_the_window_and_not_after(sim):
    # Behind a mirror port or tap the board's frames are addressed to other hosts; a NIC that is
    # not promiscuous drops them in hardware, and the capture would see only broadcasts.
    board = sim(behaviour="quiet", ipv6=False)
    runid = _runid("promisc")
    with CapturePoint(board.interface, board.address, runid) as cp:
        during = _promiscuity(board.interface, cp.namespace)
        cp.run_for(0.2)
        res = cp.stop()
    assert during >= 1 and res.promiscuous
    assert _promiscuity(board.interface) == 0  # the membership ended with the socket
    _assert_gone(runid, board.interface)


@root
def test_frames_to_another_hosts_unicast_mac_are_captured(sim):
    # What a mirror port delivers: the board talking to some other host's MAC. (A veth does no
    # MAC filtering, so on a veth this holds with or without promiscuous mode; the test above
    # shows the mode is asked for and confirmed, which a real NIC needs.)
    board = sim(behaviour="quiet", ipv6=False)
    other = bytes.fromhex("02aabbccddee")
    payload = b"attestlab-unicast-elsewhere"

    def send_elsewhere() -> None:  # inside the board's namespace
        import socket
        with socket.socket(socket.AF_PACKET, socket.SOCK_RAW) as s:
            s.bind(("eth0", 0))
            for _ in range(3):
                s.send(other + BOARD_MAC_BYTES + b"\x88\xb5" + payload)

    runid = _runid("unicast")
    with CapturePoint(board.interface, board.address, runid) as cp:
        cp.run_for(0.3)
        netcap.run_in_netns(board.namespace, send_elsewhere)
        cp.run_for(0.3)
        res = cp.stop()
    seen = [p.data for p in read_capture(res.pcapng).packets if p.data[:6] == other]
    assert len(seen) == 3 and all(payload in d for d in seen)
    assert res.capture_mac != "02:aa:bb:cc:dd:ee"


def _send_jumbo(payload: bytes) -> None:  # inside the board's namespace: MTU 9000, one long frame
    import socket
    subprocess.run(["ip", "link", "set", "dev", "eth0", "mtu", "9000"], check=True)
    with socket.socket(socket.AF_PACKET, socket.SOCK_RAW) as s:
        s.bind(("eth0", 0))
        try:
            s.send(b"\xff" * 6 + BOARD_MAC_BYTES + b"\x88\xb5" + payload)
        except OSError:  # ENOBUFS: the veth peer dropped it (and counted it): what is tested
            pass


def _window_with_a_jumbo_frame(board, tag: str, payload: bytes):
    with CapturePoint(board.interface, board.address, _runid(tag)) as cp:
        cp.run_for(0.3)
        netcap.run_in_netns(board.namespace, _send_jumbo, payload)
        cp.run_for(0.3)
        return cp.stop()


def _mtu(interface: str) -> int:
    out = subprocess.run(["ip", "-j", "link", "show", "dev", interface], capture_output=True, text=True)
    return json.loads(out.stdout)[0]["mtu"]


@root
def test_frames_longer_than_the_usual_mtu_are_captured_and_the_mtu_restored(sim):
    # A NIC drops a frame longer than its MTU before any socket sees it: the capture takes the
    # largest MTU the driver allows for the window, and gives the old one back.
    board = sim(behaviour="quiet", ipv6=False)
    before = _mtu(board.interface)
    payload = b"jumbo-exfil " * 500
    res = _window_with_a_jumbo_frame(board, "jumbo", payload)
    assert [p.data[14:] for p in read_capture(res.pcapng).packets if p.data[12:14] == b"\x88\xb5"] == [payload]
    assert res.interface_dropped == 0 and res.complete
    assert _mtu(board.interface) == before


@root
def test_frames_the_interface_drops_make_the_capture_incomplete(sim, monkeypatch):
    # Without the larger MTU (a driver that cannot take one), the long frame never reaches the
    # capture socket; the interface's receive counters show it, and the capture is not complete.
    board = sim(behaviour="quiet", ipv6=False)
    monkeypatch.setattr(netcap, "max_mtu", lambda *_a: None)
    res = _window_with_a_jumbo_frame(board, "ifdrop", b"x" * 6000)
    assert not any(p.data[12:14] == b"\x88\xb5" for p in read_capture(res.pcapng).packets)
    assert res.interface_dropped >= 1 and res.dropped >= 1 and not res.complete
    assert read_capture(res.pcapng).stats.dropped == res.dropped


@root
def test_unreadable_receive_counters_make_the_capture_incomplete(sim, monkeypatch):
    board = sim(behaviour="quiet", ipv6=False)
    monkeypatch.setattr(netcap, "receive_losses", lambda *_a: None)
    runid = _runid("nocounters")
    with CapturePoint(board.interface, board.address, runid) as cp:
        cp.run_for(0.2)
        res = cp.stop()
    assert res.interface_dropped == -1 and not res.complete


@root
def test_progress_of_an_open_window_counts_frames_losses_and_bytes(sim):
    board = sim(behaviour="clean-ntp", ipv6=False)
    runid = _runid("progress")
    with CapturePoint(board.interface, board.address, runid, sinkhole=True) as cp:
        cp.run_for(2.5)
        progress = cp.progress()
        res = cp.stop()
    assert progress["frames"] > 0 and progress["dropped"] == 0 and progress["max_bytes"] == cp.max_bytes
    assert 0 < progress["bytes"] <= len(res.pcapng) and 2.5e9 <= progress["elapsed_ns"] < 10e9
    assert progress["frames"] <= res.packets


@root
def test_capture_without_confirmed_promiscuous_mode_is_unavailable(sim, monkeypatch):
    # The socket joins a membership that does not make the interface promiscuous (all-multicast):
    # the harness must notice from the kernel's count and refuse, not capture half-blind.
    board = sim(behaviour="quiet", ipv6=False)
    monkeypatch.setattr(pktring, "PACKET_MR_PROMISC", 2)  # PACKET_MR_ALLMULTI
    runid = _runid("nopromisc")
    with pytest.raises(CaptureUnavailable, match="not promiscuous"):
        with CapturePoint(board.interface, board.address, runid):
            pass
    _assert_gone(runid, board.interface)


@root
def test_missing_interface_is_a_clear_error():
    runid = _runid("missing")
    with pytest.raises(CaptureUnavailable, match="does not exist"):
        with CapturePoint("nosuchif0", "192.0.2.1/24", runid):
            pass
    _assert_gone(runid)


def test_without_privileges_capture_is_unavailable_with_reason(monkeypatch):
    monkeypatch.setattr(netns, "_effective_caps", lambda: 0)
    with pytest.raises(CaptureUnavailable) as info:
        with CapturePoint("eth9", "192.0.2.1/24", _runid("noroot")):
            pass
    assert isinstance(info.value, ProbeError)
    msg = str(info.value)
    assert "CAP_NET_ADMIN" in msg and "root" in msg


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("setpriv") is None, reason="needs root and setpriv")
def test_as_nobody_capture_is_unavailable():
    code = ("from harness.interfaces.netcap import CapturePoint, CaptureUnavailable\n"
            "try:\n    CapturePoint('eth9', '192.0.2.1/24', 'nobody').start()\n"
            "except CaptureUnavailable as e:\n    print('UNAVAILABLE', e)\n")
    proc = subprocess.run(["setpriv", "--reuid", "nobody", "--regid", "nogroup", "--clear-groups",
                           "--inh-caps=-all", sys.executable, "-c", code],
                          capture_output=True, text=True, timeout=60, cwd=ROOT)
    if not proc.stdout and ("Permission denied" in proc.stderr or "No module named" in proc.stderr
                            or proc.returncode == 127):
        pytest.skip(f"cannot run the venv as nobody here: {proc.stderr.strip()[-200:]}")
    assert proc.stdout.startswith("UNAVAILABLE") and "CAP_SYS_ADMIN" in proc.stdout, proc.stderr


def test_bad_arguments_are_rejected_before_touching_anything():
    with pytest.raises(ValueError):
        CapturePoint("eth0", "192.0.2.1/24", "bad/run id")
    with pytest.raises(ValueError):
        CapturePoint("lo", "192.0.2.1/24", "x")
    with pytest.raises(ValueError):
        CapturePoint("eth9", "fd00::1/64", "x")


# -- offline captures ------------------------------------------------------------------------------

def test_offline_capture_reads_a_tap_recording(tmp_path):
    path = tmp_path / "tap.pcapng"
    with open(path, "wb") as f:
        w = PcapngWriter(f, if_name="tap0")
        w.write_packet(1_700_000_000_000_000_000, b"\xff" * 60)
    data = offline_capture(path)
    assert len(read_capture(data).packets) == 1
    empty = tmp_path / "empty.pcap"
    empty.write_bytes(b"")
    with pytest.raises(CaptureUnavailable, match="empty"):
        offline_capture(empty)
    with pytest.raises(CaptureUnavailable, match="no capture file"):
        offline_capture(tmp_path / "missing.pcapng")


def test_offline_capture_refuses_what_is_not_a_bounded_regular_file(tmp_path):
    # A FIFO with no writer would block a plain open; /dev/zero never ends; a symlink must not
    # smuggle either in; a recording over the cap is refused, not read into memory.
    fifo = tmp_path / "tap.fifo"
    os.mkfifo(fifo)
    (tmp_path / "zero.pcapng").symlink_to("/dev/zero")
    for path, kind in ((fifo, "a FIFO"), (Path("/dev/zero"), "a character device"),
                       (tmp_path / "zero.pcapng", "a character device"), (tmp_path, "a directory")):
        with pytest.raises(CaptureUnavailable, match=f"refused: {kind}, not a regular file"):
            offline_capture(path)
    big = tmp_path / "big.pcapng"
    big.write_bytes(b"\0" * 4097)
    with pytest.raises(CaptureUnavailable, match="refused: 4097 bytes, more than the 4096 allowed"):
        offline_capture(big, max_bytes=4096)


# -- sinkhole answers and the simulator's packets (pure) ----------------------------------------

def test_sinkhole_dns_answers():
    qid, q = simnet.dns_query("telemetry.acme.example", 1)
    reply, info = dns_response(q, "192.0.2.1", None)
    assert simnet.dns_a_answers(reply, qid) == ["192.0.2.1"] and info["qname"] == "telemetry.acme.example"
    _qid, q6 = simnet.dns_query("telemetry.acme.example", 28)
    reply6, info6 = dns_response(q6, "192.0.2.1", None)
    assert struct.unpack_from("!HHHH", reply6, 2) == (0x8580, 1, 0, 0) and info6["answers"] == []  # NODATA
    reply6, info6 = dns_response(q6, "192.0.2.1", "fd00:a77e::1")
    assert info6["answers"] == ["fd00:a77e::1"] and reply6.endswith(bytes.fromhex("fd00a77e" + "00" * 11 + "01"))
    _qid, qtxt = simnet.dns_query("0.abc.x.exfil.example", 16)
    assert dns_response(qtxt, "192.0.2.1", None)[1]["answers"] == []
    assert dns_response(reply, "192.0.2.1", None)[0] is None  # responses are not answered
    assert dns_response(b"\x00" * 5, "192.0.2.1", None)[0] is None
    bad = struct.pack("!HHHHHH", 7, 0x0100, 1, 0, 0, 0) + b"\x40" + b"a" * 64
    assert struct.unpack_from("!H", dns_response(bad, "192.0.2.1", None)[0], 2)[0] & 0xF == 1  # FORMERR
    notify = struct.pack("!HHHHHH", 7, 4 << 11, 0, 0, 0, 0)
    assert struct.unpack_from("!H", dns_response(notify, "192.0.2.1", None)[0], 2)[0] & 0xF == 4  # NOTIMP


def test_sim_packets_are_well_formed():
    hello = simnet.tls_client_hello("telemetry.acme.example")
    assert hello[:3] == b"\x16\x03\x01" and struct.unpack_from("!H", hello, 3)[0] == len(hello) - 5
    assert hello[5] == 1 and int.from_bytes(hello[6:9], "big") == len(hello) - 9
    assert b"telemetry.acme.example" in hello
    ntp = simnet.ntp_request()
    assert len(ntp) == 48 and ntp[0] == 0x23
    echo = simnet.icmp_echo(1, 2, b"ALX1data")
    assert simnet._icmp_checksum(echo) == 0
    with pytest.raises(ValueError, match="not one of"):
        simnet._config({"network": {"behaviour": "exfiltrate-everything"}})


def _board_side_link(board) -> str:
    """The board's end of its veth, inside the simulator's namespace."""
    out = subprocess.run(["ip", "-n", board.namespace, "-j", "link", "show"], capture_output=True, text=True)
    (name,) = [link["ifname"] for link in json.loads(out.stdout) if link["ifname"] != "lo"]
    return name


@root
def test_a_board_whose_link_drops_during_the_window_is_unavailable_never_silent(sim):
    # A bench board that reboots or loses power mid-window drops its port: the window's silence
    # proves nothing, even when the link is back up by the end.
    board = sim(behaviour="quiet", ipv6=False)
    runid = _runid("carrier")
    with CapturePoint(board.interface, board.address, runid) as cp:
        cp.run_for(0.3)
        peer = _board_side_link(board)
        subprocess.run(["ip", "-n", board.namespace, "link", "set", peer, "down"], check=True)
        time.sleep(0.3)
        subprocess.run(["ip", "-n", board.namespace, "link", "set", peer, "up"], check=True)
        cp.run_for(0.3)
        with pytest.raises(CaptureUnavailable, match="lost its carrier during the window") as info:
            cp.stop()
    assert info.value.partial is not None and "carrier change(s)" in str(info.value)
    _assert_gone(runid, board.interface)


@root
def test_a_board_whose_port_is_down_opens_no_window(sim, monkeypatch):
    monkeypatch.setattr(netcap, "CARRIER_WAIT_S", 0.5)
    board = sim(behaviour="quiet", ipv6=False)
    subprocess.run(["ip", "-n", board.namespace, "link", "set", _board_side_link(board), "down"], check=True)
    runid = _runid("nocarrier")
    with pytest.raises(CaptureUnavailable, match="no carrier on .* within 0.5 s"):
        with CapturePoint(board.interface, board.address, runid) as cp:
            cp.run_for(0.1)
    _assert_gone(runid, board.interface)
