"""Soak: jobs in a row through RunPod's local API (`python handler.py --rp_serve_api`) against the protocol
ComfyUI on loopback. Prints job time percentiles, the output folder's file count afterwards, and the handler
process's open file descriptors and memory before and after. Goal: 0 files left, flat descriptors and memory.

    .venv/bin/python bench/soak.py [--jobs 100]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from comfy_server import ProtocolComfy  # noqa: E402
from helpers import LocalApi, files_under, loopback_env  # noqa: E402

JOB = {"prompt": "a lighthouse at dusk, waves", "width": 512, "height": 288, "frame_count": 17}


def process_stats(pid: int) -> tuple[int, float]:
    """(open file descriptors, resident memory in MB) of a process."""
    fds = len(os.listdir(f"/proc/{pid}/fd"))
    rss_kb = next(int(line.split()[1]) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
                  if line.startswith("VmRSS:"))
    return fds, rss_kb / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=100)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        output_dir = tmp_path / "output"
        with ProtocolComfy(output_dir=output_dir) as comfy:
            with LocalApi(loopback_env(comfy.url, output_dir, tmp_path), tmp_path / "handler.log") as api:
                session = requests.Session()
                for i in range(5):  # warm-up: imports and first allocations are not a leak
                    session.post(api.base + "/runsync", json={"input": {**JOB, "seed": i}}, timeout=60)
                before = process_stats(api.proc.pid)
                times, failures = [], 0
                for i in range(args.jobs):
                    started = time.perf_counter()
                    body = session.post(api.base + "/runsync", json={"input": {**JOB, "seed": 1000 + i}},
                                        timeout=60).json()
                    times.append(time.perf_counter() - started)
                    failures += body.get("status") != "COMPLETED"
                after = process_stats(api.proc.pid)
            left = files_under(output_dir)
    ordered = sorted(times)
    print(f"{args.jobs} jobs through /runsync (512x288x17 MP4), {failures} failed")
    p95 = ordered[int(0.95 * (len(ordered) - 1))]
    print(f"job time: p50 {statistics.median(times) * 1000:.0f} ms  p95 {p95 * 1000:.0f} ms"
          f"  max {ordered[-1] * 1000:.0f} ms")
    print(f"files left in ComfyUI's output folder: {len(left)}")
    print(f"handler process: open fds {before[0]} -> {after[0]}, RSS {before[1]:.1f} MB -> {after[1]:.1f} MB")


if __name__ == "__main__":
    main()
