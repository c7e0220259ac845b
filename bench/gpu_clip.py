"""The standard clip on a real GPU, as a user's worker runs it: ComfyUI started by the worker's own launcher
(`python -m ltx2_worker.launch --boot`) and jobs run through `Worker`, for each configuration named on the
command line, in ONE run, so the figures compare. Not a test: CI never runs it.

For each configuration: a cold job (from the launcher's start to the first MP4), warm jobs with a new seed, a
warm job with a new prompt, optionally distilled jobs and an endurance series. Per job it records ComfyUI's
own "Prompt executed in" time, seconds per node (WebSocket `executing`/`progress`, nodes named by their
workflow role), peak VRAM (nvidia-smi sampled every 0.1 s), model loads from ComfyUI's log ("Requested to
load": a warm job should have none, which also means no LoRA re-patching), the MP4's size, width, height,
frames, and how far its decoded frames are from the first configuration's for the same seed and prompt.

    COMFYUI_DIR=... COMFY_PYTHON=python3 python bench/gpu_clip.py --volume /tmp/vol \\
        --configs reference,today,worker --warm 2 --new-prompt --distilled --json $OUT/gpu_clip.json

Configurations (--configs):
  reference        the earlier package's graph (tests/data/reference_t2v_two_stage_api.json, 1280x704 out)
                   with its flags (--use-sage-attention only: COMFY_PYTHON needs the sageattention package,
                   1.0.6 in the README's runs, or ComfyUI exits at start)
  today            this worker before the GPU work: --fast fp8_matrix_mult --reserve-vram 1.5, the tiled
                   decode, the shared model, the ImageScale resize
  worker           what the worker picks for this GPU (ltx2_worker.gpu), with the worker's own nodes
  worker-before    the worker of 2026-11-25 (before its decode, upscaler-loader and save nodes): its choices
                   for this GPU with ComfyUI's VAEDecodeTiled, LatentUpscaleModelLoader and SaveVideo
  worker-shared    the worker's flags, stage 2 on the shared model (isolates that choice)
  worker-eager     the worker's flags and graph without the LTX2CudaGraphs node (isolates that choice)
  worker-distilled what the worker picks for this GPU, serving distilled mode too (ENABLE_MODELS): run with
                   --distilled and --endurance 2 to see both switches of mode
  large-shared     the large class's flags and CUDA graphs, stage 2 on the shared model (two transformers in
                   memory, not three; an experiment from before --cache-classic)
  nodyn-shared     the same without --highvram: ComfyUI moves models off the GPU when another needs the room
  class-medium     the medium class's choices, on this GPU with memory held back to leave --usable-medium GB
  class-medium-nodyn  the same with --disable-dynamic-vram
  class-small      the small class's choices, leaving --usable-small GB
  custom           the worker's graph for this GPU with the flags given by --custom-flags (for trying flags)
The earlier package's and today's graphs keep ComfyUI's own VAEDecodeTiled and SaveVideo, as they had them.
--usable GB stands a larger card in for a smaller one (an H200 for an H100: --usable 79.6): every configuration
gets --reserve-vram for the difference, and the worker's memory class is chosen for the smaller card.
Weights: tools/make_tiny_models.py --size full writes stand-ins of the real shapes (README, "Speed").
Cold starts compare with the image only where Python finds bytecode for ComfyUI and its packages, as the image
has it (Dockerfile): on a host without, compile it first (README, "Speed": how to reproduce).
"""

from __future__ import annotations

import argparse
import base64
import dataclasses
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
REFERENCE_GRAPH = ROOT / "tests" / "data" / "reference_t2v_two_stage_api.json"
PROMPTS = ("a red fox running through fresh snow at golden hour, cinematic",
           "waves breaking on a rocky coast under a lighthouse at dusk, slow camera pan")
NEGATIVE = "blurry, low quality"
REFERENCE_ROLES = {"92:41": "sampler_stage1", "92:84": "upsampler", "92:70": "sampler_stage2",
                   "92:98": "video_decode", "75": "save_video"}
CONFIGS = ("reference", "today", "worker", "worker-before", "worker-shared", "worker-eager", "worker-distilled",
           "large-shared", "nodyn-shared", "class-medium", "class-medium-nodyn", "class-small", "custom")
# run with ENABLE_MODELS=checkpoint_distilled
SERVE_DISTILLED = ("worker-distilled", "large-shared", "nodyn-shared")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], epilog=__doc__.split("\n\n", 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--configs", default="reference,today,worker", help="comma-separated, in order: " +
                   ", ".join(CONFIGS))
    p.add_argument("--volume", type=Path, required=True, help="holds models/<folder>/<file> (the real names)")
    p.add_argument("--comfyui-dir", default=os.environ.get("COMFYUI_DIR"))
    p.add_argument("--comfy-python", default=os.environ.get("COMFY_PYTHON", "python3"))
    p.add_argument("--width", type=int, default=1280)
    p.add_argument("--height", type=int, default=720)
    p.add_argument("--frames", type=int, default=121)
    p.add_argument("--warm", type=int, default=2, help="warm jobs with a new seed and the same prompt")
    p.add_argument("--new-prompt", action="store_true", help="worker configs: then a warm job with another prompt")
    p.add_argument("--distilled", type=int, nargs="?", const=1, default=0, metavar="N",
                   help="worker configs: then a first distilled job and N warm ones (N = 1 when not given)")
    p.add_argument("--endurance", type=int, default=0, help="worker configs: then this many warm jobs in a row, "
                   "watching VRAM, RAM, loads and files left")
    p.add_argument("--endurance-size", default="768x512x49", help="WIDTHxHEIGHTxFRAMES of the endurance jobs")
    p.add_argument("--custom-flags", default="", help="ComfyUI's flags for the custom configuration")
    p.add_argument("--usable", type=float, help="GB of GPU memory to leave usable for every configuration, "
                   "standing in for a card of that size (the rest is held back with --reserve-vram)")
    p.add_argument("--usable-medium", type=float, default=44.0)
    p.add_argument("--usable-small", type=float, default=20.0)
    p.add_argument("--work-dir", type=Path, default=Path("/tmp/ltx2-gpu-bench"),
                   help="each configuration's ComfyUI log, pid file and output folder")
    p.add_argument("--json", type=Path, help="write every figure here (rewritten after each job)")
    p.add_argument("--profile", default="", help="profile these prompts of each configuration (1 = the cold "
                   "job, 2 = the first warm one, ...), e.g. 2:python,3:torch: bench/comfy_profile_hook is linked "
                   "into ComfyUI's custom_nodes for the run and writes its tables to <work-dir>/<config>/profile")
    return p.parse_args(argv)


class VramSampler:
    """Peak GPU memory in use (nvidia-smi, MiB) between reset() and peak()."""

    def __init__(self):
        self._peak = 0
        self._proc = None
        if subprocess.run(["which", "nvidia-smi"], capture_output=True).returncode == 0:
            self._proc = subprocess.Popen(["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits",
                                           "-lms", "100"], stdout=subprocess.PIPE, text=True)
            threading.Thread(target=self._read, daemon=True).start()
        self.current = 0

    def _read(self):
        for line in self._proc.stdout:
            try:
                self.current = int(line.strip().split()[0])
            except (ValueError, IndexError):
                continue
            self._peak = max(self._peak, self.current)

    def reset(self):
        self._peak = self.current

    def peak_gb(self) -> float:
        return round(self._peak / 1024, 1)

    def close(self):
        if self._proc:
            self._proc.kill()


def config_setup(name: str, args: argparse.Namespace, reserve_gb: float):
    """(flags, GraphChoices, legacy resize?, worker's MP4 encoder?) for a configuration name."""
    from ltx2_worker.gpu import detect_gpu

    gpu = detect_gpu()
    flags, graph, legacy = _config_setup(name, args, reserve_gb, gpu)
    if args.usable:  # hold back what a card of args.usable GB would not have, on top of the config's own reserve
        held = gpu.memory_gb - args.usable
        if "--reserve-vram" in flags:
            at = flags.index("--reserve-vram") + 1
            flags[at] = f"{float(flags[at]) + held:.1f}"
        else:
            flags += ["--reserve-vram", f"{held:.1f}"]
    return flags, graph, legacy, name not in ("reference", "today", "worker-before")


def _config_setup(name: str, args: argparse.Namespace, reserve_gb: float, gpu):
    from ltx2_worker.gpu import Gpu, choose_profile
    from ltx2_worker.workflow import GraphChoices

    total = gpu.memory_gb if gpu else 0.0
    cc = gpu.compute_capability if gpu else 0.0
    if gpu and args.usable:  # the worker's class is chosen for the card stood in for
        gpu = Gpu(f"{gpu.name} held to {args.usable:g} GB", args.usable, cc)
    if name == "reference":
        return ["--use-sage-attention"], GraphChoices(), False
    if name == "today":
        flags = (["--fast", "fp8_matrix_mult"] if cc >= 8.9 else []) + ["--reserve-vram", f"{reserve_gb:g}"]
        return flags if gpu else ["--cpu"], GraphChoices(), True
    if name in ("worker", "worker-shared", "worker-eager", "worker-before", "worker-distilled", "custom"):
        profile = choose_profile(gpu, reserve_gb)
        graph = {"worker-shared": GraphChoices(),
                 "worker-eager": dataclasses.replace(profile.graph, cuda_graphs=False),
                 "worker-before": dataclasses.replace(profile.graph, tile_memory_decode=False,
                                                      fast_upscaler_load=False)
                 }.get(name, profile.graph)
        return shlex.split(args.custom_flags) if name == "custom" else list(profile.flags), graph, False
    if name in ("large-shared", "nodyn-shared"):
        profile = choose_profile(gpu, reserve_gb)
        flags = [f for f in profile.flags if name == "large-shared" or f != "--highvram"]
        return flags, dataclasses.replace(profile.graph, stage2_own_model=False), False
    usable = args.usable_small if name == "class-small" else args.usable_medium
    total = args.usable or total  # the emulated classes' reserve is added to --usable's by config_setup
    profile = choose_profile(Gpu("emulated", usable, cc), 0)
    flags = list(profile.flags) + ["--reserve-vram", f"{max(0.0, total - usable):.1f}"]
    if name == "class-medium-nodyn":
        flags.insert(0, "--disable-dynamic-vram")
    return flags, profile.graph, False


def legacy_workflow():
    """The graph as it was before the GPU work: ImageScale (bicubic, centre crop) instead of ImageCrop."""
    from ltx2_worker.workflow import Workflow

    class Legacy(Workflow):
        def build(self, req, prefix, image_name=None, choices=None):
            graph = super().build(req, prefix, image_name) if choices is None else \
                super().build(req, prefix, image_name, choices)
            node = graph[self.node_ids["output_crop"]]
            node["class_type"] = "ImageScale"
            node["inputs"] = {"image": node["inputs"]["image"], "upscale_method": "bicubic",
                              "width": req.width, "height": req.height, "crop": "center"}
            return graph

    return Legacy.load()


def timed_client(settings):
    """A ComfyClient whose run() notes when each node starts (executing events) in `.record["marks"]`, for
    the per-node split; the caller gives it a fresh `.record` per job."""
    from ltx2_worker.comfy import ComfyClient

    class Timed(ComfyClient):
        record: dict = {}

        def run(self, graph, deadline, on_progress=lambda p: None):
            marks = self.record.setdefault("marks", [])
            titles = {nid: (n.get("_meta") or {}).get("title") or n.get("class_type") for nid, n in graph.items()}

            def note(p):
                if p.value is None:
                    marks.append((time.monotonic(), titles.get(p.node, p.node)))
                on_progress(p)

            try:
                return super().run(graph, deadline, note)
            finally:
                marks.append((time.monotonic(), None))

    return Timed(settings.comfy_url, settings.comfy_http_timeout_s)


def node_seconds(marks: list) -> dict[str, float]:
    out: dict[str, float] = {}
    for (t0, role), (t1, _) in zip(marks, marks[1:], strict=False):
        if role is not None:
            out[role] = round(out.get(role, 0.0) + t1 - t0, 2)
    return out


def mp4_frames(data: bytes):
    import io

    import av
    import numpy as np

    with av.open(io.BytesIO(data)) as c:
        v = c.streams.video[0]
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(v)]
        audio = len(c.streams.audio) > 0
    arr = np.stack(frames)
    return arr, {"width": arr.shape[2], "height": arr.shape[1], "frames": arr.shape[0], "audio": audio,
                 "frame_std": round(float(arr.std()), 1)}


def psnr(a, b) -> float | None:
    import numpy as np

    if a.shape != b.shape:
        return None
    mse = float(np.mean((a.astype(np.float32) - b.astype(np.float32)) ** 2))
    return float("inf") if mse == 0 else round(10 * np.log10(255 ** 2 / mse), 2)


class Run:
    """One configuration's ComfyUI, started with the worker's launcher, and the jobs sent to it."""

    def __init__(self, name: str, args: argparse.Namespace, tmp: Path, vram: VramSampler, reserve_gb: float):
        from ltx2_worker.settings import load_settings

        self.name, self.args, self.vram = name, args, vram
        self.flags, self.choices, legacy, worker_encoder = config_setup(name, args, reserve_gb)
        self.tmp = tmp / name
        self.tmp.mkdir(parents=True, exist_ok=True)
        self.env = {"COMFYUI_DIR": args.comfyui_dir, "COMFY_PYTHON": args.comfy_python,
                    "COMFY_URL": "http://127.0.0.1:8188", "NETWORK_VOLUME_PATH": str(args.volume),
                    "COMFY_OUTPUT_DIR": str(self.tmp / "output"), "COMFY_INPUT_DIR": str(self.tmp / "input"),
                    "COMFY_LOG_FILE": str(self.tmp / "comfyui.log"), "COMFY_PID_FILE": str(self.tmp / "comfyui.pid"),
                    "BOOT_ERROR_FILE": str(self.tmp / "boot-error"), "COMFY_EXTRA_ARGS": shlex.join(self.flags),
                    "MAX_INLINE_MB": "400", "JOB_TIMEOUT_S": "900", "OOM_LADDER": ""}
        if name in SERVE_DISTILLED:
            self.env["ENABLE_MODELS"] = "checkpoint_distilled"
        if args.profile:
            self.env.update(LTX2_PROFILE=args.profile, LTX2_PROFILE_DIR=str(self.tmp / "profile"))
        self.settings = load_settings(env=self.env)
        self.client = timed_client(self.settings)
        # one Worker for the whole run, as in a worker process (it remembers the last job's mode)
        from ltx2_worker.gpu import Profile
        from ltx2_worker.worker import Worker

        self.worker = Worker(self.settings, workflow=legacy_workflow() if legacy else None, client=self.client,
                             profile=Profile(self.name, tuple(self.flags), self.choices))
        if not worker_encoder:  # a baseline: its MP4 is written by ComfyUI's SaveVideo, as it was
            self.worker.encoding = None

    def start(self) -> float:
        """Seconds the launcher took to get ComfyUI answering (the cold start's first part)."""
        Path(self.settings.boot_error_file).unlink(missing_ok=True)  # a failure of an earlier run
        started = time.monotonic()
        subprocess.run([sys.executable, "-m", "ltx2_worker.launch", "--boot"], cwd=ROOT, check=True,
                       env={**os.environ, **self.env}, timeout=600)
        return time.monotonic() - started

    def stop(self):
        try:
            os.kill(int(Path(self.settings.comfy_pid_file).read_text()), signal.SIGTERM)
            time.sleep(3)
        except (OSError, ValueError):
            pass

    def log_lines(self) -> list[str]:
        try:
            return Path(self.settings.comfy_log_file).read_text(errors="replace").splitlines()
        except OSError:
            return []

    def comfy_rss_gb(self) -> float | None:
        try:
            pid = int(Path(self.settings.comfy_pid_file).read_text())
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    return round(int(line.split()[1]) / 1e6, 2)
        except (OSError, ValueError):
            return None
        return None

    def job(self, label: str, prompt: str, seed: int, mode: str = "standard",
            size: tuple[int, int, int] | None = None) -> tuple[dict, object]:
        """Run one job (at the command line's size unless `size`); returns (figures, decoded frames)."""
        before = len(self.log_lines())
        record: dict = {}
        self.vram.reset()
        started = time.monotonic()
        width, height, frames = size or (self.args.width, self.args.height, self.args.frames)
        request = {"prompt": prompt, "negative_prompt": NEGATIVE, "width": width, "height": height,
                   "frame_count": frames, "seed": seed}
        self.client.record = record
        if self.name == "reference":
            out = self._reference_job(request)
        else:
            out = self.worker.handle({"id": f"{self.name}-{label}", "input": {**request, "mode": mode}})
        wall = time.monotonic() - started
        lines = self.log_lines()[before:]
        executed = [float(m.group(1)) for line in lines if (m := re.search(r"Prompt executed in ([\d.]+) seconds",
                                                                         line))]
        fig = {"config": self.name, "job": label, "mode": mode, "seed": seed, "prompt": PROMPTS.index(prompt),
               "wall_s": round(wall, 2), "comfy_s": executed[-1] if executed else None,
               "peak_vram_gb": self.vram.peak_gb(), "vram_after_gb": round(self.vram.current / 1024, 1),
               "comfy_rss_gb": self.comfy_rss_gb(),
               "model_loads": sum("Requested to load" in line for line in lines),
               "loaded_lines": [line.split("INFO")[-1].strip()[:120] for line in lines
                                if "Requested to load" in line or "loaded completely" in line
                                or "loaded partially" in line][:12],
               "nodes": node_seconds(record.get("marks", [])),
               "output_files_left": sum(1 for _ in Path(self.settings.comfy_output_dir).rglob("*") if _.is_file())}
        if "error" in out:
            fig["error"] = out["error"][:600]
            return fig, None
        data = base64.b64decode(out["video"])
        frames, facts = mp4_frames(data)
        fig.update(mp4_mb=round(len(data) / 1e6, 1), **facts)
        return fig, frames

    def _reference_job(self, request: dict) -> dict:
        """The earlier package's graph as it sent it: its prompt, seed and nothing else patched."""
        from ltx2_worker.comfy import ComfyError, output_files

        graph = json.loads(REFERENCE_GRAPH.read_text())
        for nid, role in REFERENCE_ROLES.items():  # name its nodes as ours are, for the per-node table
            graph[nid]["_meta"]["title"] = role
        graph["92:3"]["inputs"]["text"] = request["prompt"]
        graph["92:4"]["inputs"]["text"] = request["negative_prompt"]
        for nid in ("92:11", "92:67"):
            graph[nid]["inputs"]["noise_seed"] = request["seed"]
        graph["75"]["inputs"]["filename_prefix"] = f"ltx2/reference-{request['seed']}"
        client = self.client
        try:
            _, entry = client.run(graph, time.monotonic() + 900)
            item = output_files(entry, "75")[0]
            data = client.view(item)
            (Path(self.settings.comfy_output_dir) / item.subfolder / item.filename).unlink(missing_ok=True)
            return {"video": base64.b64encode(data).decode()}
        except ComfyError as exc:
            return {"error": str(exc)}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    sys.path.insert(0, str(ROOT))
    names = [n.strip() for n in args.configs.split(",") if n.strip()]
    unknown = [n for n in names if n not in CONFIGS]
    if unknown or not args.comfyui_dir:
        print(f"unknown configurations {unknown}" if unknown else "set --comfyui-dir or COMFYUI_DIR",
              file=sys.stderr)
        return 2
    tmp = args.work_dir
    hook = Path(args.comfyui_dir) / "custom_nodes" / "ltx2_profile_hook"
    if args.profile and not hook.exists():
        hook.symlink_to(ROOT / "bench" / "comfy_profile_hook", target_is_directory=True)
    vram = VramSampler()
    results: list[dict] = []
    baseline: dict = {}  # (seed, prompt, mode) -> frames of the first configuration that ran it

    def save():
        if args.json:
            args.json.write_text(json.dumps(results, indent=1))

    from ltx2_worker.settings import load_settings

    reserve = load_settings(env={}).comfy_reserve_vram_gb
    for name in names:
        run = Run(name, args, tmp, vram, reserve)
        print(f"== {name}: flags {' '.join(run.flags)}; {run.choices}", flush=True)
        try:
            start_s = run.start()
        except subprocess.CalledProcessError:
            results.append({"config": name, "job": "start", "error": "\n".join(run.log_lines()[-15:])})
            save()
            run.stop()
            continue
        ours = name not in ("reference", "today") and not name.startswith("class-")  # the worker's graph
        endurance_size = tuple(int(v) for v in args.endurance_size.split("x"))
        plan = [("cold", PROMPTS[0], 42, "standard", None)]
        plan += [(f"warm{i + 1}", PROMPTS[0], 43 + i, "standard", None) for i in range(args.warm)]
        if args.new_prompt and ours:
            plan.append(("new-prompt", PROMPTS[1], 42, "standard", None))
        if args.distilled and ours:
            plan.append(("distilled-first", PROMPTS[0], 42, "distilled", None))
            plan += [(f"distilled-warm{i + 1}" if args.distilled > 1 else "distilled-warm", PROMPTS[0], 43 + i,
                      "distilled", None) for i in range(args.distilled)]
        if ours:
            plan += [(f"endurance{i + 1}", PROMPTS[0], 100 + i, "standard", endurance_size)
                     for i in range(args.endurance)]
        for label, prompt, seed, mode, size in plan:
            fig, frames = run.job(label, prompt, seed, mode, size)
            if label == "cold":
                fig["launch_s"] = round(start_s, 1)
                fig["cold_start_s"] = round(start_s + fig["wall_s"], 1)
            key = (seed, prompt, mode)
            if frames is not None and not label.startswith("endurance"):
                if key in baseline:
                    ref_name, ref = baseline[key]
                    fig["psnr_vs"] = ref_name
                    fig["psnr_db"] = psnr(frames, ref)
                    fig["identical_frames"] = bool(fig["psnr_db"] == float("inf"))
                elif name != "reference":  # its 1280x704 frames compare with nothing of ours
                    baseline[key] = (name, frames)
            results.append(fig)
            save()
            print(json.dumps({k: v for k, v in fig.items() if k != "loaded_lines"}), flush=True)
        run.stop()
    vram.close()
    if hook.is_symlink():
        hook.unlink()
    print_table(results)
    return 0


def print_table(results: list[dict]) -> None:
    cols = ("config", "job", "comfy_s", "wall_s", "peak_vram_gb", "model_loads", "mp4_mb", "width", "height",
            "frames", "psnr_db")
    print("\n| " + " | ".join(cols) + " |\n|" + "---|" * len(cols))
    for r in results:
        print("| " + " | ".join(str(r.get(c, "")) for c in cols) + " |" + (f" ERROR {r['error'][:200]}"
                                                                            if "error" in r else ""))
    roles = ("sampler_stage1", "upsampler", "sampler_stage2", "video_decode", "output_crop", "ImageScale",
             "save_video")
    print("\nper node (s): config job | " + " | ".join(roles))
    for r in results:
        if r.get("nodes"):
            print(f"{r['config']} {r['job']} | " + " | ".join(str(r["nodes"].get(x, "")) for x in roles))


if __name__ == "__main__":
    sys.exit(main())
