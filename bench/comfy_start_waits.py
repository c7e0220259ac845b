"""Where ComfyUI's start waits: samples the process's threads from /proc until ComfyUI answers, on any Linux host.

Run beside a worker start (bench/gpu_clip.py): it finds the ComfyUI process by its command line (`main.py` and
`--port PORT`), then every --every seconds reads each thread's state (R running, D waiting on the disk or a
driver, S sleeping) and kernel wait channel, the process's CPU seconds and its storage reads, until
http://127.0.0.1:PORT/system_stats answers. Why: beside the boot prefetch ComfyUI answered at 28-30 s on the
H100 host with its start files and library pages read first (0.07-0.10 GB left to read itself) against 16 s from
the page cache; the samples say whether the rest is disk waits, CPU, or something else.

    python bench/comfy_start_waits.py --port 8188 --json /tmp/waits.json   # then start the worker
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import sys
import time
import urllib.request
from pathlib import Path

TICK = os.sysconf("SC_CLK_TCK")


def find(port: int) -> int | None:
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if any(a.endswith(b"main.py") for a in argv) and str(port).encode() in argv:
            return int(entry.name)
    return None


def answers(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/system_stats", timeout=0.5):
            return True
    except OSError:
        return False


def read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


def sample(pid: int) -> dict:
    """Each thread's state and wait channel; the process's CPU seconds and bytes read from storage."""
    base = Path(f"/proc/{pid}")
    threads = {}
    for task in (base / "task").iterdir() if base.exists() else []:
        stat = read(task / "stat")
        if not stat:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        threads[task.name] = (fields[0], read(task / "wchan") or "0")
    stat = read(base / "stat")
    cpu = 0.0
    if stat:
        fields = stat[stat.rindex(")") + 2:].split()
        cpu = (int(fields[11]) + int(fields[12])) / TICK  # utime, stime: all threads
    io = dict(line.split(": ") for line in read(base / "io").splitlines() if ": " in line)
    return {"threads": threads, "cpu_s": cpu, "read_bytes": int(io.get("read_bytes", 0))}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--port", type=int, default=8188)
    p.add_argument("--every", type=float, default=0.02, help="seconds between samples")
    p.add_argument("--deadline", type=float, default=300.0, help="give up after this many seconds")
    p.add_argument("--json", type=Path, help="write the summary and the series here")
    args = p.parse_args()
    began = time.monotonic()
    pid = None
    while pid is None:
        if time.monotonic() - began > args.deadline:
            print("no ComfyUI process found", file=sys.stderr)
            return 1
        pid = find(args.port)
        time.sleep(0.01)
    found = time.monotonic()
    main_states: collections.Counter = collections.Counter()
    main_waits: collections.Counter = collections.Counter()
    other_d: collections.Counter = collections.Counter()
    series = []
    last = None
    while time.monotonic() - found < args.deadline:
        now = time.monotonic() - found
        s = sample(pid)
        if not s["threads"]:
            print("ComfyUI exited", file=sys.stderr)
            return 1
        state, wait = s["threads"].get(str(pid), ("?", "?"))
        main_states[state] += 1
        if state != "R":
            main_waits[f"{state} {wait}"] += 1
        for tid, (st, w) in s["threads"].items():
            if tid != str(pid) and st == "D":
                other_d[w] += 1
        series.append([round(now, 3), state, wait, round(s["cpu_s"], 2), s["read_bytes"]])
        last = s
        if int(now / 0.25) != int((now - args.every) / 0.25) and answers(args.port):
            break
        time.sleep(args.every)
    wall = time.monotonic() - found
    n = max(1, len(series))
    summary = {
        "ready_s": round(wall, 2), "samples": len(series),
        "cpu_s": round(last["cpu_s"], 2) if last else None,
        "read_gb": round(last["read_bytes"] / 1e9, 3) if last else None,
        "main_thread_s": {k: round(wall * v / n, 2) for k, v in main_states.most_common()},
        "main_thread_waits_s": {k: round(wall * v / n, 2) for k, v in main_waits.most_common(12)},
        "other_threads_disk_waits_samples": dict(other_d.most_common(8)),
    }
    print(json.dumps(summary, indent=1))
    if args.json:
        args.json.write_text(json.dumps({"summary": summary, "series": series}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
