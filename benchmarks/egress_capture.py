"""Live capture rate of harness.interfaces.netcap.CapturePoint (needs root).

A simulated board (fixtures/sim/network.py, behaviour `quiet`, IPv6 off) gets a sender process
inside its namespace that blasts 64-byte UDP datagrams at the gateway (192.0.2.1:9) at a fixed
rate for a fixed time, across the veth into a fresh capture namespace. For each rate the report
gives: datagrams sent, captured (in the pcapng), dropped by the capture socket (kernel
PACKET_STATISTICS), and lost before the socket (sent - captured - dropped: the veth/backlog),
then states whether 50,000 pps was captured without drops and where drops begin.

    .venv/bin/python benchmarks/egress_capture.py [--rates 10000,25000,...] [--seconds 2]

Everything stays inside the two namespaces this script creates; both are removed at the end.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

DEFAULT_RATES = (10_000, 25_000, 50_000, 100_000, 200_000)
TARGET = ("192.0.2.1", 9)
PAYLOAD = 64


def sender(namespace: str, rate: int, seconds: float) -> None:
    """Runs in a child process: enter the board namespace and send `rate` datagrams/s."""
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(f"/run/netns/{namespace}", os.O_RDONLY)
    if libc.setns(fd, 0x40000000) != 0:
        raise OSError(ctypes.get_errno(), "setns")
    os.close(fd)
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
    s.connect(TARGET)
    # sendmmsg(2) through ctypes: one system call per batch, so the sender (not Python) sets the pace.
    batch = 256

    class Iovec(ctypes.Structure):
        _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]

    class Msghdr(ctypes.Structure):
        _fields_ = [("name", ctypes.c_void_p), ("namelen", ctypes.c_uint32), ("iov", ctypes.POINTER(Iovec)),
                    ("iovlen", ctypes.c_size_t), ("control", ctypes.c_void_p), ("controllen", ctypes.c_size_t),
                    ("flags", ctypes.c_int)]

    class Mmsghdr(ctypes.Structure):
        _fields_ = [("hdr", Msghdr), ("len", ctypes.c_uint)]

    payload = ctypes.create_string_buffer(b"attestlab-bench" + b"\0" * (PAYLOAD - 15), PAYLOAD)
    iov = Iovec(ctypes.cast(payload, ctypes.c_void_p), PAYLOAD)
    msgs = (Mmsghdr * batch)()
    for m in msgs:
        m.hdr.iov = ctypes.pointer(iov)
        m.hdr.iovlen = 1
    sendmmsg = libc.sendmmsg
    fileno = s.fileno()
    sent = failed = 0
    seconds = min(seconds, 10.0)
    t0 = time.perf_counter()
    end = t0 + seconds
    while True:
        now = time.perf_counter()
        if now >= end:
            break
        due = int((now - t0) * rate) - sent - failed
        if due <= 0:
            time.sleep(0.0001)
            continue
        n = sendmmsg(fileno, msgs, min(due, batch), 0)
        if n < 0:
            failed += 1
        else:
            sent += n
    elapsed = time.perf_counter() - t0
    print(json.dumps({"sent": sent, "failed": failed, "elapsed": elapsed}), flush=True)


def _count_udp(pcapng: bytes) -> int:
    from harness.formats.pcap import iter_packets
    n = 0
    for p in iter_packets(pcapng):
        d = p.data
        if len(d) >= 38 and d[12:14] == b"\x08\x00" and d[23] == 17 and d[36:38] == b"\x00\x09":
            n += 1
    return n


def _tx_dropped(namespace: str, ifname: str) -> int:
    out = subprocess.run(["ip", "-n", namespace, "-s", "-j", "link", "show", "dev", ifname],
                         capture_output=True, text=True, timeout=10)
    try:
        return int(json.loads(out.stdout)[0]["stats64"]["tx"]["dropped"])
    except (ValueError, KeyError, IndexError):
        return 0


def run(rates: list[int], seconds: float, rcvbuf: int = 64 << 20, use_ring: bool = True) -> dict:
    from fixtures.sim import network
    from harness.interfaces.netcap import CapturePoint, privilege_problem

    problem = privilege_problem()
    if problem:
        raise SystemExit(f"cannot benchmark: {problem}")
    rows = []
    with tempfile.TemporaryDirectory() as wd:
        announce, stop = network.start({"network": {"behaviour": "quiet", "ipv6": False}}, Path(wd))
        ns = stop.namespace
        try:
            for i, rate in enumerate(rates):
                with CapturePoint(announce["interface"], announce["address"], f"bench{os.getpid()}-{i}",
                                  buffer_bytes=rcvbuf, use_ring=use_ring) as cp:
                    time.sleep(0.5)  # link up, ARP settled
                    tx_before = _tx_dropped(ns, stop.board_interface)
                    proc = subprocess.run([sys.executable, __file__, "--sender", ns, str(rate), str(seconds)],
                                          capture_output=True, text=True, timeout=seconds + 30)
                    if proc.returncode != 0:
                        raise SystemExit(f"sender failed: {proc.stderr.strip()}")
                    stats = json.loads(proc.stdout.strip().splitlines()[-1])
                    tx_drop = _tx_dropped(ns, stop.board_interface) - tx_before
                    cp.run_for(0.5)
                    res = cp.stop()
                captured = _count_udp(res.pcapng)
                row = {
                    "rate_pps": rate,
                    "achieved_pps": round(stats["sent"] / stats["elapsed"]),
                    "sent": stats["sent"],
                    "captured": captured,
                    "kernel_dropped": res.kernel_dropped,
                    "veth_dropped": tx_drop,
                    "lost_unaccounted": stats["sent"] - captured - res.kernel_dropped - tx_drop,
                    "pcapng_bytes": len(res.pcapng),
                }
                rows.append(row)
                print(f"{rate:>8} pps  sent {row['sent']:>8} ({row['achieved_pps']:>7} pps)  "
                      f"captured {captured:>8}  socket drops {res.kernel_dropped:>7}  "
                      f"veth drops {tx_drop:>6}  unaccounted {row['lost_unaccounted']:>6}", flush=True)
        finally:
            stop()
    return {"seconds_per_rate": seconds, "buffer_bytes": rcvbuf, "ring": use_ring, "rows": rows}


def summarise(report: dict) -> list[str]:
    lines = []
    rows = report["rows"]

    def clean(r: dict) -> bool:
        return r["captured"] == r["sent"] and r["kernel_dropped"] == 0

    at50 = [r for r in rows if r["rate_pps"] == 50_000]
    if at50:
        r = at50[0]
        if clean(r) and r["achieved_pps"] >= 45_000:
            lines.append(f"no drops at 50,000 pps ({r['sent']} sent, {r['captured']} captured)")
        elif clean(r):
            lines.append(f"no drops at the 50,000 pps step, but the sender only reached {r['achieved_pps']} pps")
        else:
            lines.append(f"DROPS at 50,000 pps: {r['sent']} sent, {r['captured']} captured, "
                         f"{r['kernel_dropped']} dropped by the capture socket")
    limited = [r for r in rows if r["achieved_pps"] < 0.9 * r["rate_pps"]]
    if limited:
        lines.append("sender-limited steps (this machine could not generate the rate asked): "
                     + ", ".join(f"{r['rate_pps']:,} asked / {r['achieved_pps']:,} sent" for r in limited))
    first_bad = next((r for r in rows if not clean(r)), None)
    if first_bad:
        lines.append(f"drops begin at {first_bad['rate_pps']:,} pps (achieved {first_bad['achieved_pps']:,}): "
                     f"{first_bad['sent'] - first_bad['captured']} of {first_bad['sent']} not captured")
    else:
        top = max(r["achieved_pps"] for r in rows)
        lines.append(f"no drops at any rate tried (highest achieved: {top:,} pps); the drop onset lies above that")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rates", default=",".join(map(str, DEFAULT_RATES)))
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--rcvbuf", type=int, default=64 << 20,
                    help="capture buffer in bytes: ring size, or socket buffer with --no-ring (default "
                         "64 MiB, CapturePoint's default); a small one shows the sustained rate rather "
                         "than what the buffer absorbs (the ring is at least 4 MiB)")
    ap.add_argument("--no-ring", action="store_true",
                    help="measure the recvmsg fallback (no TPACKET_V3 ring)")
    ap.add_argument("--json", help="also write the report as JSON here")
    ap.add_argument("--sender", nargs=3, metavar=("NS", "RATE", "SECONDS"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.sender:
        sender(args.sender[0], int(args.sender[1]), float(args.sender[2]))
        return
    rates = [int(r) for r in args.rates.split(",") if r.strip()]
    if any(r <= 0 or r > 1_000_000 for r in rates) or not 0 < args.seconds <= 10:
        raise SystemExit("rates must be 1..1,000,000 pps and --seconds 0..10")
    report = run(rates, args.seconds, args.rcvbuf, not args.no_ring)
    report["summary"] = summarise(report)
    for line in report["summary"]:
        print(line)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
