"""ComfyUI's start beside the boot prefetch on this machine's disk, the page cache evicted before each run: ComfyUI
alone, beside the prefetch as it ships, and beside it with PREFETCH_LIBRARIES reading the list of ComfyUI's start
files first (written by the worker's ltx2_start_files module in a first, unmeasured start), and with it the pages of
ComfyUI's files its start read (listed, as the worker lists them after its first job, from a second unmeasured
start, its files evicted first, once ComfyUI answers); and beside a prefetch whose readers copy nothing
(PREFETCH_PAGE_IN), with ComfyUI's and the prefetch's CPU seconds. Where the image and the
models share one disk, every load of the first job waits for ComfyUI's start (docs/performance.md), so this is the
part of a cold start that the list is for. Runs on a CPU: ComfyUI with --cpu and --quick-test-for-ci, which exits
when its start is done; the models are files of the manifest's names with --gb in all, in the real files' ratio.
Not a test: CI never runs it.

    .venv/bin/python bench/comfy_start_contention.py --comfyui-dir /tmp/cf --comfy-python /tmp/venv/bin/python \\
        --work /tmp/contention --gb 12 --repeat 2
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

from gpu_clip import evict, image_roots  # noqa: E402

from ltx2_worker.comfy import ComfyClient  # noqa: E402
from ltx2_worker.launch import COMFY_NODES  # noqa: E402
from ltx2_worker.manifest import load_manifest  # noqa: E402
from ltx2_worker.settings import load_settings  # noqa: E402
from ltx2_worker.start_files import ENV, list_path, listed_files, pages_path, record_pages  # noqa: E402

# case: (PREFETCH_LIBRARIES, what the start list holds, PREFETCH_YIELD_TO_COMFY, PREFETCH_PAGE_IN); "libraries"
# lists, besides the modules, the shared libraries a ComfyUI Python maps (/proc/PID/maps), read whole; "+pages":
# the modules and the pages list; a yielding prefetch keeps its one reader here for the whole start (the quick test
# never answers HTTP); "pagein": the kernel fills mapped chunks instead of the readers copying them
CASES = {"alone": (None, None, False, False), "prefetch": ("false", None, False, False),
         "prefetch+modules": ("true", "modules", False, False),
         "prefetch+libraries": ("true", "libraries", False, False),
         "prefetch+pages": ("true", "modules", False, False), "yield": ("false", None, True, False),
         "yield+modules": ("true", "modules", True, False), "yield+pages": ("true", "modules", True, False),
         "pagein": ("false", None, False, True), "pagein+pages": ("true", "modules", False, True)}
BLOCK = 64 * 1024 * 1024


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_models(settings, gb: float) -> None:
    models = load_manifest(settings)
    total = sum(m.size for m in models)
    block = os.urandom(BLOCK)
    for m in models:
        path = m.target(settings.volume_path)
        size = int(m.size / total * gb * 1e9)
        if path.is_file() and path.stat().st_size == size:
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as f:
            left = size
            while left > 0:
                left -= f.write(block[:min(left, BLOCK)])


def waited(proc: subprocess.Popen, deadline_s: float) -> float:
    """Wait for `proc` (at most `deadline_s`); the CPU seconds it used, user and system."""
    ends = time.monotonic() + deadline_s
    while time.monotonic() < ends:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            proc.returncode = os.waitstatus_to_exitcode(status)
            return usage.ru_utime + usage.ru_stime
        time.sleep(0.05)
    proc.kill()
    raise SystemExit(f"{proc.args[:3]} did not end within {deadline_s:g} s")


def comfy_start(args, work: Path, env: dict) -> tuple[float, float]:
    """Seconds until ComfyUI, started as the worker starts it but on the CPU, has finished its start; its CPU
    seconds."""
    yaml = work / "nodes.yaml"
    yaml.write_text(f"ltx2_worker_nodes:\n    custom_nodes: {COMFY_NODES}\n")
    started = time.monotonic()
    proc = subprocess.Popen([args.comfy_python, "main.py", "--cpu", "--quick-test-for-ci", "--disable-api-nodes",
                             "--disable-auto-launch", "--extra-model-paths-config", str(yaml), "--output-directory",
                             str(work / "out"), "--input-directory", str(work / "in")], cwd=args.comfyui_dir,
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    cpu = waited(proc, 600)
    if proc.returncode:
        raise SystemExit(f"ComfyUI's start exited with {proc.returncode}")
    return time.monotonic() - started, cpu


def list_start_pages(args, work: Path, env: dict, settings) -> int:
    """Start ComfyUI as a server (not the quick test) with its files evicted, and once it answers list the pages of
    its files in memory, as the worker does after its first job; the bytes listed."""
    evict(image_roots(args.comfyui_dir, args.comfy_python, settings.volume_path))
    port = free_port()
    proc = subprocess.Popen([args.comfy_python, "main.py", "--cpu", "--disable-api-nodes", "--disable-auto-launch",
                             "--port", str(port), "--output-directory", str(work / "out"), "--input-directory",
                             str(work / "in")], cwd=args.comfyui_dir, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    client = ComfyClient(f"http://127.0.0.1:{port}")
    try:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            if client.ready(timeout=2.0):
                return record_pages(settings)
            if proc.poll() is not None:
                raise SystemExit(f"ComfyUI exited with {proc.returncode} before it answered")
            time.sleep(0.5)
        raise SystemExit("ComfyUI did not answer within 600 s")
    finally:
        proc.terminate()
        proc.wait(timeout=60)


def mapped_libraries(args, env: dict, listed: list[Path]) -> list[Path]:
    """The shared libraries a ComfyUI Python maps once torch, PyAV and ComfyUI's nodes are imported, largest
    first, less the listed extension modules."""
    code = ("import sys; sys.argv = ['main.py', '--cpu']; import comfy.options; comfy.options.enable_args_parsing(); "
            "import torch, torchaudio, av, nodes; "
            "print(open('/proc/self/maps').read())")
    maps = subprocess.run([args.comfy_python, "-c", code], cwd=args.comfyui_dir, env=env, capture_output=True,
                          text=True, check=True, timeout=600).stdout
    paths = {Path(line.split(None, 5)[5].strip()) for line in maps.splitlines() if len(line.split(None, 5)) == 6}
    found = {p for p in paths if (p.name.endswith(".so") or ".so." in p.name) and p.is_file()} - set(listed)
    return sorted(found, key=lambda p: -p.stat().st_size)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--comfyui-dir", required=True)
    p.add_argument("--comfy-python", required=True)
    p.add_argument("--work", type=Path, required=True, help="the stand-in volume and ComfyUI's folders")
    p.add_argument("--gb", type=float, default=12.0, help="the models' size in all")
    p.add_argument("--repeat", type=int, default=2)
    p.add_argument("--cases", default=",".join(CASES), help="comma-separated, of: " + ", ".join(CASES))
    args = p.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "NETWORK_VOLUME_PATH": str(args.work / "volume"), "COMFYUI_DIR": args.comfyui_dir,
           "COMFY_PYTHON": args.comfy_python, "MODEL_CACHE_PATH": "", "PREFETCH_HEADROOM_GB": "2"}
    settings = load_settings(env=env)
    make_models(settings, args.gb)
    listing = list_path(settings)
    comfy_start(args, args.work, {**env, ENV: str(listing)})  # writes the list; not measured
    files = listed_files(listing)
    print(f"start files: {len(files)}, {sum(f.stat().st_size for f in files) / 1e9:.2f} GB; models {args.gb:g} GB")
    lists = {"modules": files}
    if "prefetch+libraries" in args.cases.split(","):
        libraries = mapped_libraries(args, env, files)
        print(f"mapped libraries besides: {len(libraries)}, {sum(f.stat().st_size for f in libraries) / 1e9:.2f} GB")
        lists["libraries"] = files + libraries
    pages = b""
    if any(case.endswith("+pages") for case in args.cases.split(",")):
        listed = list_start_pages(args, args.work, env, settings)
        pages = pages_path(settings).read_bytes()
        print(f"pages its start read: {listed / 1e9:.2f} GB in {len(pages.splitlines())} files")
    pages_path(settings).unlink(missing_ok=True)
    roots = image_roots(args.comfyui_dir, args.comfy_python, settings.volume_path) + [settings.volume_path]
    print("| case | run | ComfyUI's start s | its CPU s | the prefetch's CPU s | prefetch's summary |\n"
          "|---|---|---|---|---|---|")
    for run in range(1, args.repeat + 1):
        for case in args.cases.split(","):
            flag, keep, yielding, paging = CASES[case]
            if keep is not None:
                listing.write_text("".join(f"{f}\n" for f in lists[keep]))
            if case.endswith("+pages"):
                pages_path(settings).write_bytes(pages)
            else:
                pages_path(settings).unlink(missing_ok=True)
            evict(roots)
            prefetch = None
            if flag is not None:
                yield_env = {"PREFETCH_YIELD_TO_COMFY": "true", "COMFY_URL": f"http://127.0.0.1:{free_port()}"}
                prefetch = subprocess.Popen([sys.executable, "-m", "ltx2_worker.prefetch"], cwd=ROOT,
                                            env={**env, "PREFETCH_LIBRARIES": flag,
                                                 "PREFETCH_PAGE_IN": str(paging).lower(),
                                                 **(yield_env if yielding else {})},
                                            stderr=subprocess.PIPE, text=True)
            seconds, comfy_cpu = comfy_start(args, args.work, env)
            summary, prefetch_cpu = "", ""
            if prefetch is not None:
                lines = prefetch.stderr.read().splitlines()
                prefetch_cpu = f"{waited(prefetch, 600):.1f}"
                summary = next((ln.split("prefetch: ", 1)[1] for ln in lines if "prefetch: read " in ln), "")
            print(f"| {case} | {run} | {seconds:.1f} | {comfy_cpu:.1f} | {prefetch_cpu} | {summary} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
