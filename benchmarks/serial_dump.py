"""Firmware dump over a pty: our dumpframe protocol against ZMODEM (lrzsz), same image, same run.

(a) ours: the simulated console (fixtures/sim/console.py) in its own process serves the image
    as a flash region on a pty; `SerialConsole.dump_region` fetches and verifies it. Timed:
    the whole call (command, frames, sha256 check, DONE, back at the prompt).
(b) ZMODEM: `sz` on the pty master, `rz` on the raw slave, the same image as a file. Timed:
    both processes from start to exit; the received file is checked against the image.

Runs alternate (ours, ZMODEM, ours, ...) so background load hits both alike; medians are
compared. Usage: .venv/bin/python benchmarks/serial_dump.py [--size 8MiB] [--repeat 5]
[--frame-size 4096 16384] [--json]
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


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", default="8MiB", type=parse_size)
    ap.add_argument("--repeat", default=5, type=int)
    ap.add_argument("--frame-size", default=[4096, 16384], type=int, nargs="+")
    ap.add_argument("--json", action="store_true", help="print the results as JSON")
    args = ap.parse_args(argv)
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
