"""ComfyUI's resident memory job after job, as a worker runs it: ComfyUI started by the worker's launcher and
jobs with new seeds through `Worker`. Prints one line per job (seconds, ComfyUI's RSS). Not a test: CI never runs
it (tests/test_real_comfyui_e2e.py checks the launcher's case on the tiny weights).

`--default-cache GB` leaves out the launcher's --cache-classic and runs ComfyUI's default RAM-pressure cache with
GB of inactive headroom (`--cache-ram 2 GB`): it keeps past jobs' outputs while the host has more than GB of RAM
available, so a small GB stands in for a large host (on a host with over 96 GB available, the default itself).

    $COMFY_PYTHON tools/make_tiny_models.py --comfyui-dir "$COMFYUI_DIR" --out /tmp/volume   # or --size full
    COMFYUI_DIR=... COMFY_PYTHON=... python bench/comfy_memory.py --volume /tmp/volume --config tiny-config.ini
    ... --default-cache 1                                     # the same with ComfyUI's default cache
The tiny files need a config.ini whose manifest gives their sizes (the e2e tier's `tiny_config` writes one).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def rss_gb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1e6
    raise RuntimeError(f"no VmRSS for process {pid}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], epilog=__doc__.split("\n\n", 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--volume", type=Path, required=True, help="holds models/<folder>/<file> (the real names)")
    p.add_argument("--config", type=Path, help="the config.ini to use (LTX2_CONFIG), e.g. one for tiny files")
    p.add_argument("--comfyui-dir", default=os.environ.get("COMFYUI_DIR"))
    p.add_argument("--comfy-python", default=os.environ.get("COMFY_PYTHON", "python3"))
    p.add_argument("--jobs", type=int, default=8)
    p.add_argument("--size", default="512x512x33", help="WIDTHxHEIGHTxFRAMES of every job")
    p.add_argument("--steps", type=int, default=2)
    p.add_argument("--default-cache", type=float, metavar="GB",
                   help="ComfyUI's default cache with this inactive headroom instead of the launcher's flag")
    args = p.parse_args(argv)
    if not args.comfyui_dir:
        print("set --comfyui-dir or COMFYUI_DIR", file=sys.stderr)
        return 2
    sys.path.insert(0, str(ROOT))
    from ltx2_worker import launch
    from ltx2_worker.manifest import load_manifest
    from ltx2_worker.settings import load_settings
    from ltx2_worker.worker import Worker

    tmp = Path(tempfile.mkdtemp(prefix="ltx2-memory-"))
    env = {"COMFYUI_DIR": args.comfyui_dir, "COMFY_PYTHON": args.comfy_python, "NETWORK_VOLUME_PATH": str(args.volume),
           "COMFY_URL": "http://127.0.0.1:18188", "COMFY_OUTPUT_DIR": str(tmp / "output"),
           "COMFY_LOG_FILE": str(tmp / "comfyui.log"), "COMFY_PID_FILE": str(tmp / "comfyui.pid"),
           "BOOT_ERROR_FILE": str(tmp / "boot-error"), "JOB_TIMEOUT_S": "1500", "OOM_LADDER": ""}
    if args.config:
        env["LTX2_CONFIG"] = str(args.config)
    settings = load_settings(env=env)
    if args.default_cache is not None:
        flags = launch.profile_for(settings, launch.detect_gpu()).flags
        env["COMFY_EXTRA_ARGS"] = " ".join([*flags, "--cache-ram", "2", f"{args.default_cache:g}"])
        settings = load_settings(env=env)
        command = launch.command
        launch.command = lambda *a: [x for x in command(*a) if x != launch.CACHE_FLAG]
    os.environ.setdefault("MALLOC_MMAP_THRESHOLD_", "65536")  # tiny weights: the 12B text encoder's zero pages
    proc = launch.start(settings, load_manifest(settings))
    try:
        launch.wait_ready(settings, proc)
        worker = Worker(settings)
        width, height, frames = (int(v) for v in args.size.split("x"))
        job = {"prompt": "a red fox running through snow", "negative_prompt": "blurry", "width": width,
               "height": height, "frame_count": frames, "steps": args.steps}
        print(f"one decoded clip: {width * height * frames * 3 * 4 / 1e9:.3f} GB (float32 frames)")
        for i in range(args.jobs):
            started = time.monotonic()
            out = worker.handle({"id": f"memory-{i}", "input": {**job, "seed": 100 + i}})
            print(json.dumps({"job": i, "seconds": round(time.monotonic() - started, 1),
                              "comfy_rss_gb": round(rss_gb(proc.pid), 3), "error": out.get("error", "")[:200]}),
                  flush=True)
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    return 0


if __name__ == "__main__":
    sys.exit(main())
