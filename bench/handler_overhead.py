"""What the worker itself adds to a job: jobs through Worker.handle against the protocol ComfyUI on loopback
with zero execution time, and the cost of delivering a 5 MB and a 15 MB MP4 (fetch over /view + base64 + the
JSON the SDK sends). Prints figures; goal: p95 under 50 ms for 5 MB.

    .venv/bin/python bench/handler_overhead.py [--jobs 50]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from ltx2_worker.comfy import ComfyClient, OutputFile  # noqa: E402
from ltx2_worker.output import deliver  # noqa: E402
from ltx2_worker.worker import Worker  # noqa: E402

from comfy_server import ProtocolComfy  # noqa: E402
from helpers import loopback_settings  # noqa: E402

JOB = {"prompt": "a lighthouse at dusk", "width": 256, "height": 256, "frame_count": 9, "steps": 1}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def bench_jobs(worker: Worker, n: int) -> list[float]:
    times = []
    for i in range(n):
        started = time.perf_counter()
        out = worker.handle({"id": f"bench-{i}", "input": {**JOB, "seed": i}})
        times.append(time.perf_counter() - started)
        if "error" in out:
            raise SystemExit(f"job failed: {out['error']}")
    return times


def bench_delivery(client: ComfyClient, output_dir: Path, settings, megabytes: int, repeats: int) -> list[float]:
    name = f"bench_{megabytes}mb_00001_.mp4"
    (output_dir / "ltx2").mkdir(parents=True, exist_ok=True)
    (output_dir / "ltx2" / name).write_bytes(os.urandom(megabytes * 1_000_000))
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        data = client.view(OutputFile(name, "ltx2", "output"))
        json.dumps(deliver(data, settings))
        times.append(time.perf_counter() - started)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=50)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        output_dir = tmp_path / "output"
        with ProtocolComfy(output_dir=output_dir) as comfy:
            settings = loopback_settings(comfy.url, output_dir, tmp_path, MAX_INLINE_MB="25")
            worker = Worker(settings)
            bench_jobs(worker, 3)  # warm-up: imports, connection pool, first graph copy
            times = bench_jobs(worker, args.jobs)
            print(f"jobs through Worker.handle (zero execution time, 256x256x9 MP4), n={args.jobs}:")
            print(f"  p50 {statistics.median(times) * 1000:7.1f} ms   p95 {percentile(times, 0.95) * 1000:7.1f} ms"
                  f"   max {max(times) * 1000:7.1f} ms")
            client = ComfyClient(comfy.url)
            delivery = {}
            for mb in (5, 15):
                delivery[mb] = bench_delivery(client, output_dir, settings, mb, 10)
                print(f"deliver a {mb:2d} MB MP4 (GET /view + base64 + JSON), n=10:  "
                      f"p50 {statistics.median(delivery[mb]) * 1000:6.1f} ms   "
                      f"p95 {percentile(delivery[mb], 0.95) * 1000:6.1f} ms")
            overhead = percentile(times, 0.95) + percentile(delivery[5], 0.95)
            print(f"estimated p95 per-job overhead with a 5 MB MP4: {overhead * 1000:.1f} ms (goal < 50 ms)")


if __name__ == "__main__":
    main()
