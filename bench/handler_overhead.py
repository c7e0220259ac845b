"""What the worker itself adds to a job: jobs through Worker.handle against the protocol ComfyUI on loopback
with zero execution time (the server's own simulation and MP4 writing, which it times, are subtracted), and
the cost of delivering a 5 MB and a 15 MB MP4: fetch over /view, base64, and the JSON the SDK then sends.
Prints figures; goal: p95 under 50 ms for 5 MB.

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


def bench_jobs(worker: Worker, comfy: ProtocolComfy, n: int) -> tuple[list[float], list[float]]:
    """(wall time per job, worker overhead per job = wall time - the server's execution time)."""
    walls, overheads = [], []
    for i in range(n):
        started = time.perf_counter()
        out = worker.handle({"id": f"bench-{i}", "input": {**JOB, "seed": i}})
        wall = time.perf_counter() - started
        if "error" in out:
            raise SystemExit(f"job failed: {out['error']}")
        walls.append(wall)
        overheads.append(wall - comfy.exec_durations[-1])
    return walls, overheads


def bench_delivery(client: ComfyClient, output_dir: Path, settings, megabytes: int,
                   repeats: int) -> dict[str, list[float]]:
    name = f"bench_{megabytes}mb_00001_.mp4"
    (output_dir / "ltx2").mkdir(parents=True, exist_ok=True)
    (output_dir / "ltx2" / name).write_bytes(os.urandom(megabytes * 1_000_000))
    phases: dict[str, list[float]] = {"view": [], "base64": [], "json": [], "total": []}
    for _ in range(repeats):
        t0 = time.perf_counter()
        data = client.view(OutputFile(name, "ltx2", "output"))
        t1 = time.perf_counter()
        payload = deliver(data, settings)
        t2 = time.perf_counter()
        json.dumps(payload)
        t3 = time.perf_counter()
        for key, value in (("view", t1 - t0), ("base64", t2 - t1), ("json", t3 - t2), ("total", t3 - t0)):
            phases[key].append(value)
    return phases


def ms(values: list[float]) -> str:
    return f"p50 {statistics.median(values) * 1000:6.1f} ms  p95 {percentile(values, 0.95) * 1000:6.1f} ms"


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
            bench_jobs(worker, comfy, 3)  # warm-up: imports, connection pool, first graph copy
            walls, overheads = bench_jobs(worker, comfy, args.jobs)
            print(f"jobs through Worker.handle, 256x256x9 MP4, n={args.jobs}:")
            print(f"  wall time (incl. the protocol server's simulation)  {ms(walls)}")
            print(f"  worker overhead (wall - server execution)           {ms(overheads)}")
            client = ComfyClient(comfy.url)
            delivery = {}
            for mb in (5, 15):
                delivery[mb] = bench_delivery(client, output_dir, settings, mb, 10)
                print(f"deliver a {mb:2d} MB MP4, n=10:")
                for phase, values in delivery[mb].items():
                    print(f"  {phase:7s} {ms(values)}")
            worker_part = percentile(overheads, 0.95) + percentile(
                [v + b for v, b in zip(delivery[5]["view"], delivery[5]["base64"], strict=True)], 0.95)
            print(f"p95 worker overhead with a 5 MB MP4 (job + /view + base64; the SDK's own JSON excluded): "
                  f"{worker_part * 1000:.1f} ms (goal < 50 ms)")


if __name__ == "__main__":
    main()
