"""Benchmark: egress analysis (read_capture + analyze) against `tshark -q -z conv,ip`.

Generates a pcapng of N packets (default 1,000,000) with PcapngWriter in a temporary directory:
interleaved TLS sessions (handshake, ClientHello with SNI, server data, ACKs, FIN) preceded by
DNS lookups, UDP media streams and NTP, from one board address. Then, in the same run, times

  ours:   read the file, read_capture(), analyze()
  stream: read the file, analyze_bytes() (same result, no Packet objects)
  tshark: tshark -r FILE -q -z conv,ip

and prints packets/s for both, the ratio, and whether the two agree on IPv4 conversation frame
counts. Usage: .venv/bin/python benchmarks/egress_analysis.py [--packets N] [--keep DIR]
"""

from __future__ import annotations

import argparse
import random
import shutil
import struct
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from harness.formats.flows import analyze, analyze_bytes  # noqa: E402
from harness.formats.pcap import PcapngWriter, read_capture  # noqa: E402

BOARD_MAC = bytes.fromhex("020000000002")
GW_MAC = bytes.fromhex("020000000001")
BOARD = bytes([10, 0, 0, 2])
RESOLVER = bytes([10, 0, 0, 1])


def _csum(b: bytes) -> int:
    if len(b) % 2:
        b += b"\0"
    s = sum(struct.unpack(f"!{len(b) // 2}H", b))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def _ip(src: bytes, dst: bytes, proto: int, payload: bytes, ident: int) -> bytes:
    h = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), ident & 0xFFFF, 0x4000, 64,
                    proto, 0, src, dst)
    return h[:10] + struct.pack("!H", _csum(h)) + h[12:] + payload


def _frame(outbound: bool, ip: bytes) -> bytes:
    macs = GW_MAC + BOARD_MAC if outbound else BOARD_MAC + GW_MAC
    f = macs + b"\x08\x00" + ip
    return f + b"\0" * (60 - len(f)) if len(f) < 60 else f


def _tcp(sport: int, dport: int, seq: int, ack: int, flags: int, payload: bytes = b"") -> bytes:
    return struct.pack("!HHIIBBHHH", sport, dport, seq, ack, 0x50, flags, 64240, 0, 0) + payload


def _udp(sport: int, dport: int, payload: bytes) -> bytes:
    return struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload


def _dns_name(name: str) -> bytes:
    return b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0"


def _dns_query(ident: int, name: str) -> bytes:
    return struct.pack("!HHHHHH", ident, 0x0100, 1, 0, 0, 0) + _dns_name(name) + b"\0\x01\0\x01"


def _dns_answer(ident: int, name: str, addr: bytes) -> bytes:
    q = _dns_name(name) + b"\0\x01\0\x01"
    return (struct.pack("!HHHHHH", ident, 0x8180, 1, 1, 0, 0) + q
            + b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, 300, 4) + addr)


def _client_hello(sni: str) -> bytes:
    name = sni.encode()
    sni_ext = struct.pack("!HHHBH", 0, len(name) + 5, len(name) + 3, 0, len(name)) + name
    body = (b"\x03\x03" + bytes(32) + b"\x00" + struct.pack("!H", 4) + b"\x13\x01\x13\x02"
            + b"\x01\x00" + struct.pack("!H", len(sni_ext)) + sni_ext)
    hs = b"\x01" + len(body).to_bytes(3, "big") + body
    return b"\x16\x03\x01" + struct.pack("!H", len(hs)) + hs


def _tls_session(rng: random.Random, port: int, server: bytes, name: str):
    """DNS lookup, then a TLS connection; yields (outbound, ip packet bytes)."""
    qid = rng.randrange(65536)
    yield True, _ip(BOARD, RESOLVER, 17, _udp(port ^ 0x2000, 53, _dns_query(qid, name)), qid)
    yield False, _ip(RESOLVER, BOARD, 17, _udp(53, port ^ 0x2000, _dns_answer(qid, name, server)),
                     qid)
    c, s = rng.randrange(1 << 32), rng.randrange(1 << 32)
    m = 0xFFFFFFFF
    yield True, _ip(BOARD, server, 6, _tcp(port, 443, c, 0, 0x02), 1)
    yield False, _ip(server, BOARD, 6, _tcp(443, port, s, c + 1 & m, 0x12), 1)
    c = c + 1 & m
    s = s + 1 & m
    yield True, _ip(BOARD, server, 6, _tcp(port, 443, c, s, 0x10), 2)
    ch = _client_hello(name)
    yield True, _ip(BOARD, server, 6, _tcp(port, 443, c, s, 0x18, ch), 3)
    c = c + len(ch) & m
    chunk = b"\x17\x03\x03" + bytes(rng.randrange(100, 1400))
    for i in range(rng.randrange(4, 120)):
        yield False, _ip(server, BOARD, 6, _tcp(443, port, s, c, 0x18, chunk), 10 + i)
        s = s + len(chunk) & m
        if i % 2:
            yield True, _ip(BOARD, server, 6, _tcp(port, 443, c, s, 0x10), 10 + i)
    yield True, _ip(BOARD, server, 6, _tcp(port, 443, c, s, 0x11), 4)
    yield False, _ip(server, BOARD, 6, _tcp(443, port, s, c + 1 & m, 0x11), 5)
    yield True, _ip(BOARD, server, 6, _tcp(port, 443, c + 1 & m, s + 1 & m, 0x10), 6)


def _udp_stream(rng: random.Random, port: int, server: bytes):
    payload = bytes(rng.randrange(160, 1000))
    for i in range(rng.randrange(50, 400)):
        yield True, _ip(BOARD, server, 17, _udp(port, 5004, payload), i)
        if i % 10 == 0:
            yield False, _ip(server, BOARD, 17, _udp(5004, port, payload[:64]), i)


def _ntp(rng: random.Random, port: int, server: bytes):
    yield True, _ip(BOARD, server, 17, _udp(port, 123, bytes(48)), 1)
    yield False, _ip(server, BOARD, 17, _udp(123, port, bytes(48)), 1)


def generate(path: Path, n_packets: int, seed: int = 1) -> None:
    rng = random.Random(seed)
    servers = [bytes([198, 51, 100, i]) for i in range(1, 201)] + \
              [bytes([203, 0, 113, i]) for i in range(1, 101)]
    names = {s: f"svc{i}.lab.example" for i, s in enumerate(servers)}
    next_port = [20000]

    def new_session():
        next_port[0] = 20000 + (next_port[0] - 19999) % 40000
        port = next_port[0]
        server = rng.choice(servers)
        r = rng.random()
        if r < 0.75:
            return _tls_session(rng, port, server, names[server])
        if r < 0.95:
            return _udp_stream(rng, port, server)
        return _ntp(rng, port, server)

    active = [new_session() for _ in range(32)]
    ts = 1_700_000_000_000_000_000
    written = 0
    with open(path, "wb") as f:
        w = PcapngWriter(f, if_name="bench0")
        while written < n_packets:
            i = rng.randrange(len(active))
            try:
                outbound, ip = next(active[i])
            except StopIteration:
                active[i] = new_session()
                continue
            ts += rng.randrange(20_000, 400_000)
            w.write_packet(ts, _frame(outbound, ip))
            written += 1
        w.write_stats(ts, written, 0)


def _tshark_conv_frames(out: str) -> Counter:
    """Total frames per unordered IPv4 address pair from `-z conv,ip` text."""
    frames: Counter = Counter()
    for line in out.splitlines():
        parts = line.split()
        if len(parts) > 3 and parts[1] == "<->":
            # a <-> b  frames_in bytes unit  frames_out bytes unit  total_frames bytes unit ...
            rest = parts[3:]
            frames[frozenset((parts[0], parts[2]))] += int(rest[6])
    return frames


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--packets", type=int, default=1_000_000)
    ap.add_argument("--keep", type=Path, help="write the capture here and keep it")
    args = ap.parse_args(argv)

    tmp = None if args.keep else Path(tempfile.mkdtemp(prefix="egress-bench-"))
    if args.keep:
        args.keep.mkdir(parents=True, exist_ok=True)
    path = (args.keep or tmp) / "bench.pcapng"
    try:
        t0 = time.perf_counter()
        generate(path, args.packets)
        size = path.stat().st_size
        print(f"generated {args.packets} packets ({size / 1e6:.1f} MB) in "
              f"{time.perf_counter() - t0:.1f} s: {path}")

        t0 = time.perf_counter()
        data = path.read_bytes()
        t1 = time.perf_counter()
        capture = read_capture(data)
        t2 = time.perf_counter()
        analysis = analyze(capture)
        t3 = time.perf_counter()
        ours = t3 - t0
        n = len(capture.packets)
        print(f"ours:   {ours:6.2f} s  {n / ours:10,.0f} packets/s  (file {t1 - t0:.2f} s, "
              f"read_capture {t2 - t1:.2f} s, analyze {t3 - t2:.2f} s; {len(analysis.flows)} "
              f"flows, {analysis.undecoded} undecoded)")
        del capture, data

        t0 = time.perf_counter()
        streamed = analyze_bytes(path.read_bytes())
        stream = time.perf_counter() - t0
        same = streamed.flows == analysis.flows
        print(f"stream: {stream:6.2f} s  {n / stream:10,.0f} packets/s  (file + analyze_bytes; "
              f"{'same flows' if same else 'DIFFERENT flows'})")

        tshark = shutil.which("tshark")
        if tshark is None:
            print("tshark: not installed; no comparison")
            return 0
        t0 = time.perf_counter()
        proc = subprocess.run([tshark, "-r", str(path), "-q", "-z", "conv,ip"],
                              capture_output=True, text=True, check=False)
        theirs = time.perf_counter() - t0
        if proc.returncode != 0:
            print(f"tshark failed ({proc.returncode}): {proc.stderr.strip()[:500]}")
            return 1
        print(f"tshark: {theirs:6.2f} s  {n / theirs:10,.0f} packets/s")
        print(f"ratio:  read_capture+analyze is {theirs / ours:.2f}x tshark's speed; "
              f"analyze_bytes {theirs / stream:.2f}x")

        mine: Counter = Counter()
        for fl in analysis.flows:
            if fl.proto in ("tcp", "udp", "icmp") and ":" not in fl.src:
                mine[frozenset((fl.src, fl.dst))] += fl.packets
        theirs_frames = _tshark_conv_frames(proc.stdout)
        agree = mine == theirs_frames
        print(f"IPv4 conversations: ours {len(mine)}, tshark {len(theirs_frames)}; frame counts "
              f"{'agree' if agree else 'DISAGREE'}")
        return 0 if agree and same else 1
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
