"""Firmware dump over a pty: our dumpframe protocol against ZMODEM (lrzsz), same image, same run.

(a) ours: the simulated console (fixtures/sim/console.py) in its own process serves the image
    as a flash region on a pty; `SerialConsole.dump_region` fetches and verifies it. Timed:
    the whole call (command, frames, sha256 check, DONE, back at the prompt).
(b) ZMODEM: `sz` on the pty master, `rz` on the raw slave, the same image as a file. Timed:
    both processes from start to exit; the received file is checked against the image.

Runs alternate (ours, ZMODEM, ours, ...) so background load hits both alike; medians are
compared. Usage: .venv/bin/python benchmarks/serial_dump.py [--size 8MiB] [--repeat 5]
[--frame-size 4096 16384] [--json]

--transports: the same dumpframe dump over the pty and through ser2net in front of that pty
(fixtures/consoleserver.py), as socket:// and rfc2217://, with ser2net's defaults and with a
larger dev-to-net buffer; medians, their ratio to the pty, and the rx records each transcript
got. E.g. .venv/bin/python benchmarks/serial_dump.py --transports --size 1MiB --repeat 15

--transfers: the same region over the pty through each transfer a board config can choose
(harness/interfaces/serial_transfer.py): dumpframe, ZMODEM and YMODEM (the simulated shell runs
the real lrzsz `sz`, the harness receives), and the hex dumps (md.b, hexdump -C, xxd, printed by
the simulated shell, parsed strictly); medians and their ratio to dumpframe. Each run opens a
fresh console (a region is read once per console). E.g. ... --transfers --size 1MiB --repeat 5
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import select
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import tty
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from fixtures.sim.console import region_image  # noqa: E402
from harness.formats.dumpframe import image_wire_size, wire_overhead  # noqa: E402
from harness.interfaces.serial import SerialConsole  # noqa: E402

PROMPT = "bench> "


def parse_size(text: str) -> int:
    units = {"kib": 1 << 10, "mib": 1 << 20, "gib": 1 << 30, "k": 1 << 10, "m": 1 << 20}
    t = text.strip().lower()
    for unit, mult in units.items():
        if t.endswith(unit):
            return int(float(t[: -len(unit)]) * mult)
    return int(t)


def cpu_of(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class OurSide:
    def __init__(self, size: int, frame_size: int, workdir: Path) -> None:
        region = {"size": size, "seed": "benchmark", "version": "bench"}
        self.profile = {"console": {"prompt": PROMPT, "frame_size": frame_size, "regions": {"bench": region}}}
        self.image = region_image("bench", region)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "fixtures.sim.console", "--profile-json", json.dumps(self.profile),
             "--workdir", str(workdir)], cwd=REPO, stdout=subprocess.PIPE)
        ready, _, _ = select.select([self.proc.stdout], [], [], 30)
        if not ready:
            self.close()
            raise RuntimeError("simulator did not start")
        self.endpoint = json.loads(self.proc.stdout.readline())
        self.console = SerialConsole(self.endpoint).open()
        self.console.wait_prompt(timeout=10)

    def run(self) -> dict:
        sim0, own0 = cpu_of(self.proc.pid), time.process_time()
        t0 = time.perf_counter()
        result = self.console.dump_region("bench", timeout=300)
        seconds = time.perf_counter() - t0
        if result.data != self.image:
            raise SystemExit("our dump returned a different image")
        return {"seconds": seconds, "cpu": (time.process_time() - own0) + (cpu_of(self.proc.pid) - sim0),
                "wire_bytes": result.rx_bytes, "resend_rounds": result.resend_rounds}

    def close(self) -> None:
        if getattr(self, "console", None) is not None:
            self.console.close()
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class ZmodemSide:
    def __init__(self, image: bytes, workdir: Path) -> None:
        self.src = workdir / "zsrc"
        self.dst = workdir / "zdst"
        self.src.mkdir(parents=True)
        self.dst.mkdir(parents=True)
        self.file = self.src / "bench.bin"
        self.file.write_bytes(image)
        self.digest = hashlib.sha256(image).digest()

    def run(self) -> dict:
        received = self.dst / self.file.name
        if received.exists():
            received.unlink()
        master, slave = os.openpty()
        tty.setraw(slave)
        try:
            r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
            t0 = time.perf_counter()
            rz = subprocess.Popen(["rz", "--binary", "--quiet", "--overwrite"], stdin=slave, stdout=slave,
                                  stderr=subprocess.DEVNULL, cwd=self.dst)
            sz = subprocess.Popen(["sz", "--binary", "--quiet", str(self.file)], stdin=master, stdout=master,
                                  stderr=subprocess.DEVNULL)
            rc_sz, rc_rz = sz.wait(300), rz.wait(300)
            seconds = time.perf_counter() - t0
            r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        finally:
            os.close(master)
            os.close(slave)
        if rc_sz or rc_rz or hashlib.sha256(received.read_bytes()).digest() != self.digest:
            raise SystemExit(f"ZMODEM transfer failed (sz {rc_sz}, rz {rc_rz})")
        cpu = (r1.ru_utime + r1.ru_stime) - (r0.ru_utime + r0.ru_stime)
        return {"seconds": seconds, "cpu": cpu}


def summarize(runs: list[dict], size: int) -> dict:
    secs = [r["seconds"] for r in runs]
    return {"median_MBps": size / statistics.median(secs) / 1e6, "best_MBps": size / min(secs) / 1e6,
            "median_s": statistics.median(secs), "median_cpu_s": statistics.median(r["cpu"] for r in runs)}


# --- the same dump through a console server (ser2net) -------------------------------------------

SER2NET_TUNED = {"dev-to-net-bufsize": 65536}  # ser2net reads the tty in blocks this large (its default is smaller)


def transports(size: int, frame_size: int, repeat: int, workdir: Path) -> list[dict]:
    """The dumpframe dump of one region over the pty, and through ser2net (defaults, and with
    SER2NET_TUNED) as socket:// and rfc2217://; rounds alternate between them. Timed: the
    dump_region call on an open console at its prompt (opening is not)."""
    from fixtures.consoleserver import Ser2net

    ours = OurSide(size, frame_size, workdir)
    ours.console.close()  # one client on the pty at a time: each run opens its own
    ours.console = None
    servers = [Ser2net(ours.endpoint["url"]).start(), Ser2net(ours.endpoint["url"], options=SER2NET_TUNED).start()]
    try:
        urls = {"pty": ours.endpoint["url"]}
        for server, label in zip(servers, ("ser2net defaults", "ser2net dev-to-net-bufsize 65536")):
            urls[f"socket://   {label}"] = server.socket_url
            urls[f"rfc2217://  {label}"] = server.rfc2217_url
        seconds: dict[str, list[float]] = {name: [] for name in urls}
        records: dict[str, int] = {}
        for round_ in range(repeat + 1):  # round 0 warms up (page cache, imports): not counted
            for name, url in urls.items():
                with SerialConsole({**ours.endpoint, "url": url}) as console:
                    console.sync(timeout=10)
                    before = len(console.transcript)
                    t0 = time.perf_counter()
                    result = console.dump_region("bench", timeout=300)
                    elapsed = time.perf_counter() - t0
                    if result.data != ours.image:
                        raise SystemExit(f"{name}: the dump returned a different image")
                    records[name] = sum(1 for c in console.transcript.chunks[before:] if c.direction == "rx")
                if round_:
                    seconds[name].append(elapsed)
    finally:
        for server in servers:
            server.stop()
        ours.close()
    pty = statistics.median(seconds["pty"])
    return [{"transport": name, "median_s": statistics.median(secs), "best_s": min(secs),
             "ratio_to_pty": statistics.median(secs) / pty, "rx_records": records[name]}
            for name, secs in seconds.items()]


BENCH_PLACES = {"path": "/flash/bench.bin"}  # where the simulated shell has the region (fixtures/sim/console.py)
TRANSFER_CONFIGS = {
    "dumpframe": None,
    "zmodem (sz --binary)": {"method": "zmodem", "regions": {"bench": BENCH_PLACES}},
    "ymodem (sz --ymodem -k)": {"method": "ymodem", "regions": {"bench": BENCH_PLACES}},
    "hex dump: md.b": {"method": "hexdump", "command": "md.b {address:#x} {size:#x}",
                       "regions": {"bench": {"address": 0x08000000}}},
    "hex dump: hexdump -C": {"method": "hexdump", "style": "hexdump-C", "regions": {"bench": BENCH_PLACES}},
    "hex dump: xxd": {"method": "hexdump", "command": "xxd {path}", "regions": {"bench": BENCH_PLACES}},
}


def transfers(size: int, frame_size: int, repeat: int, workdir: Path) -> list[dict]:
    """One region over the pty through each transfer; rounds alternate between them. Timed: the
    dump_region call on a fresh console at its prompt (opening is not)."""
    from harness.interfaces.serial import serial_settings

    ours = OurSide(size, frame_size, workdir)
    ours.console.close()
    ours.console = None
    seconds: dict[str, list[float]] = {name: [] for name in TRANSFER_CONFIGS}
    wire: dict[str, int] = {}
    try:
        for round_ in range(repeat + 1):  # round 0 warms up: not counted
            for name, transfer in TRANSFER_CONFIGS.items():
                if transfer is not None and "size" not in next(iter(transfer["regions"].values())) \
                        and transfer["method"] == "hexdump":
                    transfer = {**transfer, "regions": {"bench": {**next(iter(transfer["regions"].values())),
                                                                  "size": size}}}
                settings = {**ours.endpoint, **({"transfer": transfer} if transfer else {})}
                config, _ = serial_settings(settings)
                with SerialConsole(config) as console:
                    console.sync(timeout=10)
                    t0 = time.perf_counter()
                    result = console.dump_region("bench", timeout=300)
                    elapsed = time.perf_counter() - t0
                    if result.data != ours.image:
                        raise SystemExit(f"{name}: the transfer returned a different image")
                    wire[name] = result.rx_bytes
                if round_:
                    seconds[name].append(elapsed)
    finally:
        ours.close()
    base = statistics.median(seconds["dumpframe"])
    return [{"transfer": name, "median_s": statistics.median(secs), "best_s": min(secs),
             "ratio_to_dumpframe": statistics.median(secs) / base, "wire_per_image_byte": wire[name] / size}
            for name, secs in seconds.items()]


def print_transfers(rows: list[dict], size: int, repeat: int) -> None:
    print(f"firmware of {size / (1 << 20):g} MiB over a pty, by transfer: {repeat} alternating runs each, "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}")
    for r in rows:
        print(f"  {r['transfer']:<24} median {r['median_s'] * 1000:8.1f} ms  best {r['best_s'] * 1000:8.1f} ms  "
              f"x{r['ratio_to_dumpframe']:6.2f} of dumpframe  {r['wire_per_image_byte']:5.2f} bytes read per image byte")


def print_transports(rows: list[dict], size: int, repeat: int) -> None:
    print(f"firmware dump (dumpframe) of {size / (1 << 20):g} MiB: pty vs ser2net, {repeat} alternating runs each, "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}")
    for r in rows:
        print(f"  {r['transport']:<48} median {r['median_s'] * 1000:8.1f} ms  best {r['best_s'] * 1000:8.1f} ms  "
              f"x{r['ratio_to_pty']:5.2f} of the pty  {r['rx_records']:6d} rx records")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", default="8MiB", type=parse_size)
    ap.add_argument("--repeat", default=5, type=int)
    ap.add_argument("--frame-size", default=[4096, 16384], type=int, nargs="+")
    ap.add_argument("--json", action="store_true", help="print the results as JSON")
    ap.add_argument("--transports", action="store_true",
                    help="instead: the same dump over the pty and through ser2net (socket://, rfc2217://)")
    ap.add_argument("--transfers", action="store_true",
                    help="instead: the same region over the pty through each transfer (dumpframe, ZMODEM, YMODEM, hex dumps)")
    args = ap.parse_args(argv)
    if args.transfers:
        if shutil.which("sz") is None:
            raise SystemExit("sz not found: install lrzsz")
        with tempfile.TemporaryDirectory(prefix="attestlab-bench-") as tmp:
            rows = transfers(args.size, args.frame_size[0], args.repeat, Path(tmp))
        if args.json:
            print(json.dumps(rows, indent=2))
        else:
            print_transfers(rows, args.size, args.repeat)
        return 0
    if args.transports:
        from fixtures.consoleserver import ser2net_path
        if ser2net_path() is None:
            raise SystemExit("ser2net not found: install ser2net")
        with tempfile.TemporaryDirectory(prefix="attestlab-bench-") as tmp:
            rows = transports(args.size, args.frame_size[0], args.repeat, Path(tmp))
        if args.json:
            print(json.dumps(rows, indent=2))
        else:
            print_transports(rows, args.size, args.repeat)
        return 0
    for tool in ("sz", "rz"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} not found: install lrzsz")
    size = args.size
    results = []
    with tempfile.TemporaryDirectory(prefix="attestlab-bench-") as tmp:
        tmpdir = Path(tmp)
        for i, frame_size in enumerate(args.frame_size):
            ours = OurSide(size, frame_size, tmpdir)
            try:
                zmodem = ZmodemSide(ours.image, tmpdir / f"zmodem-{i}")
                ours.run()  # warm-up, not counted (first touch of the image pages, imports)
                zmodem.run()
                o_runs, z_runs = [], []
                for _ in range(args.repeat):
                    o_runs.append(ours.run())
                    z_runs.append(zmodem.run())
            finally:
                ours.close()
            o, z = summarize(o_runs, size), summarize(z_runs, size)
            results.append({
                "size": size, "frame_size": frame_size, "repeat": args.repeat, "ours": o, "zmodem": z,
                "ratio_median": o["median_MBps"] / z["median_MBps"],
                "overhead_format": image_wire_size(size, frame_size, "bench") / size,
                "overhead_frame": wire_overhead(frame_size),
                "overhead_measured": statistics.median(r["wire_bytes"] for r in o_runs) / size,
                "resend_rounds": sum(r["resend_rounds"] for r in o_runs),
            })
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    print(f"firmware dump over a pty: {size / (1 << 20):g} MiB image, {args.repeat} alternating runs each, "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}")
    for r in results:
        o, z = r["ours"], r["zmodem"]
        print(f"\nframe size {r['frame_size']} bytes")
        print(f"  ours (dumpframe)  median {o['median_MBps']:7.1f} MB/s  best {o['best_MBps']:7.1f} MB/s  "
              f"cpu {o['median_cpu_s']:.3f} s (harness + board)")
        print(f"  ZMODEM (lrzsz)    median {z['median_MBps']:7.1f} MB/s  best {z['best_MBps']:7.1f} MB/s  "
              f"cpu {z['median_cpu_s']:.3f} s (sz + rz)")
        print(f"  ratio ours/ZMODEM (medians) {r['ratio_median']:.2f}")
        print(f"  framing overhead: {r['overhead_frame']:.5f} per DATA frame, {r['overhead_format']:.5f} whole image, "
              f"{r['overhead_measured']:.5f} measured (wire bytes read / image bytes, echo and prompt included)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
