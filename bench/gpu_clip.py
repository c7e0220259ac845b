"""The standard clip on a real GPU, as a user's worker runs it: ComfyUI started by the worker's own launcher
(`python -m ltx2_worker.launch --boot`) and jobs run through `Worker`, for each configuration named on the
command line, in ONE run, so the figures compare. Not a test: CI never runs it.

For each configuration: a cold job (from the launcher's start to the first MP4), warm jobs with a new seed, a
warm job with a new prompt, optionally distilled jobs and an endurance series. Per job it records ComfyUI's
own "Prompt executed in" time, seconds per node (WebSocket `executing`/`progress`, nodes named by their
workflow role), peak VRAM (nvidia-smi sampled every 0.1 s), model loads from ComfyUI's log ("Requested to
load", and loaded_mb: the MB those loads moved to the GPU; a warm job should move none, which also means no LoRA
re-patching; with lora_bypass each job has two 0 MB switches between stage 1's patcher and stage 2's bypass
clone), the MP4's size, width, height,
frames, and how far its decoded frames are from the first configuration's for the same seed and prompt.

    COMFYUI_DIR=... COMFY_PYTHON=python3 python bench/gpu_clip.py --volume /tmp/vol \\
        --configs reference,worker --usable 79.6 --warm 2 --new-prompt --distilled --json $OUT/gpu_clip.json

Configurations (--configs):
  reference        the earlier package's graph (tests/data/reference_t2v_two_stage_api.json, 1280x704 out)
                   with its flags (--use-sage-attention only: COMFY_PYTHON needs the sageattention package,
                   1.0.6 in the recorded runs, or ComfyUI exits at start)
  worker           what the worker picks for this GPU (ltx2_worker.gpu), with the worker's own nodes
  worker-merged    the worker with stage 2's LoRA merged into the shared weights (the ablation of lora_bypass)
  worker-eager     the worker without the LTX2CudaGraphs node (the ablation of cuda_graphs)
  worker-moving-upscaler  the worker with ComfyUI's LTXVLatentUpsampler (the ablation of resident_upscaler)
  worker-compiled  the worker with stage 1's transformer blocks' parts compiled (the lever compile_blocks)
  worker-mapped-load  the worker with ComfyUI's own checkpoint loader (the ablation of pinned_checkpoint_load)
  worker-pinned-beside  the worker loading the checkpoint beside the text encoder and prompts (the lever
                   checkpoint_beside_prompts)
  worker-whole-decode  the worker decoding each frame as one tile (the lever decode_tile_px=1536)
  worker-early-prompts  the worker encoding a fresh worker's first prompts beside ComfyUI's start (the lever
                   early_prompts; it acts only on a cold job that arrives before ComfyUI answers: --job-at-launch)
  worker-levers    the worker with both levers
  class-medium     the medium class's choices, on this GPU with memory held back to leave --usable-medium GB
  class-medium-merged  the medium class with stage 2's LoRA merged (the ablation of lora_bypass there)
  class-small      the small class's choices, leaving --usable-small GB
  custom           the worker's graph for this GPU with the flags given by --custom-flags (for trying flags)
The earlier package's graph keeps ComfyUI's own VAEDecodeTiled and SaveVideo, as it had them.
--usable GB stands a larger card in for a smaller one (an H200 for an H100: --usable 79.6): a ballast process
allocates the rest of the card before anything starts, so going past the smaller card is an out-of-memory as it
would be there, and the worker's memory class is chosen for the smaller card; peak memory is reported as that
card would see it (nvidia-smi's figure less the ballast). The memory classes' --usable-medium/--usable-small are
held back the same way for their configurations.
--from-storage evicts from the page cache (posix_fadvise DONTNEED), before each configuration starts, the
volume's files and the image's (ComfyUI, both Pythons with their packages, torch's and CUDA's libraries), so the
cold start reads both from storage as a fresh worker does; the start then runs as entrypoint.sh does:
provisioning's verification, the prefetch (unless --no-prefetch), the launcher. The cold job's figures give the
bytes read from storage by ComfyUI and by the prefetch (/proc/<pid>/io), when the reads ended, and a timeline
(seconds from the start): each file the prefetch finished, ComfyUI ready, each node's start, each sampler's
first step. --job-at-launch sends the cold job as the launcher starts, as RunPod's first job reaches a fresh
worker whose handler starts beside ComfyUI: it waits for ComfyUI (and, with early_prompts, encodes its prompts
meanwhile); its cold start is then provisioning plus the job's own wall time.
Weights: tools/make_tiny_models.py --size full writes stand-ins of the real shapes and sizes (docs/performance.md).
Cold starts compare with the image only where Python finds bytecode for ComfyUI and its packages, as the image
has it (Dockerfile): on a host without, compile it first (docs/performance.md: how to reproduce).
"""

from __future__ import annotations

import argparse
import base64
import dataclasses
import json
import os
import re
import shlex
import shutil
import signal
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
REFERENCE_GRAPH = ROOT / "tests" / "data" / "reference_t2v_two_stage_api.json"
PROMPTS = ("a red fox running through fresh snow at golden hour, cinematic",
           "waves breaking on a rocky coast under a lighthouse at dusk, slow camera pan",
           "a paper boat drifting down a rain-filled gutter in a quiet city street, close-up")
NEGATIVE = "blurry, low quality"
REFERENCE_ROLES = {"92:41": "sampler_stage1", "92:84": "upsampler", "92:70": "sampler_stage2",
                   "92:98": "video_decode", "75": "save_video"}
CONFIGS = ("reference", "worker", "worker-merged", "worker-eager", "worker-moving-upscaler", "worker-compiled",
           "worker-mapped-load", "worker-pinned-beside", "worker-whole-decode", "worker-levers", "worker-early-prompts",
           "class-medium", "class-medium-merged", "class-small", "custom")
WHOLE_FRAME_TILE = 1536  # pixels: one tile covers the generated frame up to 1536 x 1536
ABLATIONS = {"worker-merged": {"lora_bypass": False}, "worker-eager": {"cuda_graphs": False},
             "worker-moving-upscaler": {"resident_upscaler": False},
             "worker-compiled": {"compile_blocks": True},
             "worker-mapped-load": {"pinned_checkpoint_load": False},
             "worker-pinned-beside": {"checkpoint_beside_prompts": True},
             "worker-whole-decode": {"decode_tile_px": WHOLE_FRAME_TILE},
             "worker-levers": {"compile_blocks": True, "decode_tile_px": WHOLE_FRAME_TILE},
             "worker-early-prompts": {"early_prompts": True},
             "class-medium-merged": {"lora_bypass": False}}
I2V_SIZE = (1280, 720)  # the first frame of the image-to-video job (a gradient PNG made here)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], epilog=__doc__.split("\n\n", 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--configs", default="reference,worker", help="comma-separated, in order: " +
                   ", ".join(CONFIGS))
    p.add_argument("--volume", type=Path, required=True, help="holds models/<folder>/<file> (the real names)")
    p.add_argument("--comfyui-dir", default=os.environ.get("COMFYUI_DIR"))
    p.add_argument("--comfy-python", default=os.environ.get("COMFY_PYTHON", "python3"))
    p.add_argument("--width", type=int, default=1280)
    p.add_argument("--height", type=int, default=720)
    p.add_argument("--frames", type=int, default=121)
    p.add_argument("--warm", type=int, default=2, help="warm jobs with a new seed and the same prompt")
    p.add_argument("--new-prompt", type=int, nargs="?", const=1, default=0, metavar="N",
                   help="worker configs: then N warm jobs (1 when not given, at most 2), each with another prompt")
    p.add_argument("--no-audio", action="store_true", help="worker configs: then a warm job with audio false")
    p.add_argument("--i2v", action="store_true", help="worker configs: then an image-to-video job")
    p.add_argument("--loras", action="store_true", help="worker and class configs: then jobs with a request's LoRA "
                   "(stand-ins of Lightricks' camera LoRAs' size, rank 16 on every block linear): a new one, the "
                   "same again twice, another new one, none again")
    p.add_argument("--camera", default="", metavar="MOVE",
                   help="worker and class configs: then jobs with camera_motion MOVE (its first use, cached, and a "
                        "plain job after them), its LoRA a stand-in of the real file's size served locally")
    p.add_argument("--enhance", type=int, nargs="?", const=2, default=0, metavar="N",
                   help="worker configs: then N jobs with enhance_prompt (the stand-in Gemma samples to "
                   "ENHANCE_MAX_TOKENS: no end-of-text comes from random weights, the longest case)")
    p.add_argument("--a2v", type=float, default=0, metavar="SECONDS",
                   help="worker configs: then two audio-to-video jobs to a track of SECONDS (a chord with beats, "
                   "WAV), its length setting the frame count")
    p.add_argument("--v2v", default="", metavar="KIND",
                   help="worker configs: then video-to-video jobs with control KIND (its first use, cached) on a "
                   "moving source clip of the command line's size (a stand-in IC-LoRA of the real file's size; "
                   "depth and pose need the stand-ins of make_tiny_models.py --controls)")
    p.add_argument("--keyframes", type=int, nargs="?", const=2, default=0, metavar="N",
                   help="worker and class configs: then N first-and-last-frame jobs (default 2)")
    p.add_argument("--distilled", type=int, nargs="?", const=1, default=0, metavar="N",
                   help="worker configs: then a first distilled job and N warm ones (N = 1 when not given), "
                   "then a standard job again (the switch back)")
    p.add_argument("--sizes", default="", help="worker and class configs: then one job at each WIDTHxHEIGHTxFRAMES, "
                   "comma-separated (the largest requests), with the worker's OOM ladder (OOM_LADDER's default)")
    p.add_argument("--from-storage", action="store_true", help="evict the volume's files from the page cache "
                   "before each configuration starts; start as entrypoint.sh does (verify, prefetch, launch)")
    p.add_argument("--no-prefetch", action="store_true", help="with --from-storage: start without the prefetch")
    p.add_argument("--job-at-launch", action="store_true", help="send the cold job as the launcher starts, not "
                   "once ComfyUI answers (a fresh worker's first job, the handler beside ComfyUI)")
    p.add_argument("--endurance", type=int, default=0, help="worker configs: then this many warm jobs in a row, "
                   "watching VRAM, RAM, loads and files left")
    p.add_argument("--endurance-size", default="768x512x49", help="WIDTHxHEIGHTxFRAMES of the endurance jobs")
    p.add_argument("--custom-flags", default="", help="ComfyUI's flags for the custom configuration")
    p.add_argument("--usable", type=float, help="GiB of GPU memory to leave usable for every configuration, "
                   "standing in for a card of that size (a ballast process holds the rest)")
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
    """Peak GPU memory in use (nvidia-smi, MiB) between reset() and peak(), less what the ballast holds: the
    figure the card stood in for would show."""

    def __init__(self):
        self._peak = 0
        self._proc = None
        self.held_mib = 0  # the ballast's (Ballast.start sets it)
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
        return round((self._peak - self.held_mib) / 1024, 1)

    def current_gb(self) -> float:
        return round((self.current - self.held_mib) / 1024, 1)

    def close(self):
        if self._proc:
            self._proc.kill()


BALLAST = """
import sys, time, torch
usable = float(sys.argv[1]) * 2**30
free, total = torch.cuda.mem_get_info()
# after this, the card's free memory is what a card of `usable` bytes has before its first process starts
held = torch.empty(int(free - usable), dtype=torch.uint8, device="cuda")
free, total = torch.cuda.mem_get_info()
print(f"{(total - free) / 2**20:.0f}", flush=True)
time.sleep(86400)
"""


class Ballast:
    """A process that allocates all but `usable` GiB of the GPU before ComfyUI starts and holds it: a hard cap,
    not ComfyUI's bookkeeping (--reserve-vram), so going past the smaller card is an out-of-memory."""

    def __init__(self, python: str, usable_gib: float, vram: VramSampler):
        self.proc = subprocess.Popen([*shlex.split(python), "-c", BALLAST, str(usable_gib)], stdout=subprocess.PIPE,
                                     text=True)
        line = self.proc.stdout.readline().strip()
        if not line:
            raise SystemExit(f"the ballast for {usable_gib:g} GiB did not start (exit {self.proc.poll()})")
        self.vram = vram
        vram.held_mib = int(line)  # in use on the card once it holds its memory: its context and its tensor

    def stop(self):
        self.proc.kill()
        self.proc.wait(timeout=60)
        self.vram.held_mib = 0
        time.sleep(2)  # nvidia-smi's next samples without it


def usable_for(name: str, args: argparse.Namespace) -> float | None:
    """GiB the configuration may use: the memory classes' own, else --usable (None: the whole card)."""
    return {"class-medium": args.usable_medium, "class-medium-merged": args.usable_medium,
            "class-small": args.usable_small}.get(name, args.usable)


def config_setup(name: str, args: argparse.Namespace, reserve_gb: float):
    """(ComfyUI flags, GraphChoices, the worker's MP4 encoder?, the class's ClipLimits) for a configuration name,
    on this GPU held to usable_for(name) GiB."""
    from ltx2_worker.gpu import Gpu, choose_profile, detect_gpu
    from ltx2_worker.settings import EVERY_CLASS_CLIP
    from ltx2_worker.workflow import GraphChoices

    gpu = detect_gpu()
    usable = usable_for(name, args)
    if gpu and usable:  # the worker's class is chosen for the card stood in for
        gpu = Gpu(f"{gpu.name} held to {usable:g} GiB", usable, gpu.compute_capability)
    if name == "reference":
        return ["--use-sage-attention"], GraphChoices(), False, EVERY_CLASS_CLIP
    profile = choose_profile(gpu, reserve_gb)
    graph = dataclasses.replace(profile.graph, **ABLATIONS.get(name, {}))
    flags = shlex.split(args.custom_flags) if name == "custom" else list(profile.flags)
    return flags, graph, True, profile.clip


def _pid(pid_file: Path) -> int | None:
    try:
        return int(Path(pid_file).read_text())
    except (OSError, ValueError):
        return None


def stand_in_config(args: argparse.Namespace, tmp: Path) -> Path:
    """config.ini with the manifest's sizes replaced by the stand-ins' (models/tiny-manifest.json, written by
    tools/make_tiny_models.py), so provisioning verifies them and downloads nothing, as on a provisioned volume."""
    import configparser

    written = json.loads((args.volume / "models" / "tiny-manifest.json").read_text())
    parser = configparser.ConfigParser(interpolation=None)
    parser.read(ROOT / "config.ini", encoding="utf-8")
    for role, info in written.items():
        section = f"model.{role}"
        if parser.has_section(section):
            parser[section]["size"] = str(info["size"])
            parser[section]["sha256"] = info.get("sha256") or "0" * 64  # never checked: no --sha256 here
    path = tmp / "stand-in-config.ini"
    tmp.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        parser.write(f)
    return path


class StorageReads:
    """Bytes read from storage (/proc/<pid>/io read_bytes) by ComfyUI and the prefetch, sampled every second
    from the start of a configuration: how much, and when the reads ended."""

    def __init__(self, pid_sources: dict | None = None):
        self.pid_sources = pid_sources or {}  # name -> callable giving a pid once the process exists
        self.pids: dict[str, int] = {}
        self.samples: list[tuple[float, int]] = []  # (seconds since start, bytes read by all)
        self.by: dict[str, int] = {}
        self.started = time.monotonic()
        self._stop = threading.Event()
        threading.Thread(target=self._sample, daemon=True).start()

    def _sample(self):
        while not self._stop.wait(1.0):
            for who, source in self.pid_sources.items():
                pid = source()
                if pid is not None:
                    self.pids[who] = pid
            for who, pid in list(self.pids.items()):
                try:
                    io = dict(line.split(": ") for line in Path(f"/proc/{pid}/io").read_text().splitlines())
                    self.by[who] = int(io["read_bytes"])
                except (OSError, ValueError, KeyError):
                    pass  # ended: its last figure stays
            self.samples.append((time.monotonic() - self.started, sum(self.by.values())))

    def figures(self) -> dict:
        self._stop.set()
        total = self.samples[-1][1] if self.samples else 0
        ended = next((t for t, b in self.samples if b >= total * 0.999), None) if total else None
        first = next((t for t, b in self.samples if b > 0), None)
        return {"storage_read_gb": {k: round(v / 1e9, 2) for k, v in self.by.items()},
                "storage_read_total_gb": round(total / 1e9, 2), "storage_reads_end_s": ended,
                "storage_read_gbps": round(total / 1e9 / (ended - first), 2) if total and ended and ended > first
                else None,
                "storage_read_series": [(round(t, 1), round(b / 1e9, 2)) for t, b in self.samples[::5]]}


def evict(roots: list[Path], seen: set | None = None) -> int:
    """Drop every file under `roots` from the page cache (no privileges needed; pages a running process has
    mapped stay); the bytes of the files dropped. `seen` (device, inode) pairs are skipped and added to."""
    dropped, seen = 0, set() if seen is None else seen
    for root in roots:
        for folder, dirs, names in os.walk(root):
            dirs.sort()
            for name in sorted(names):
                path = Path(folder, name)
                try:
                    st = path.lstat()
                except OSError:
                    continue
                if not stat.S_ISREG(st.st_mode) or (st.st_dev, st.st_ino) in seen:
                    continue
                seen.add((st.st_dev, st.st_ino))
                try:
                    fd = os.open(path, os.O_RDONLY)
                except OSError:
                    continue
                try:
                    os.fsync(fd)  # dirty pages cannot be dropped
                    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
                except OSError:
                    pass
                finally:
                    os.close(fd)
                dropped += st.st_size
    return dropped


def image_roots(comfyui_dir: str, comfy_python: str, volume: Path) -> list[Path]:
    """What a fresh worker reads from its image at start: ComfyUI's tree, this repository, and every folder on
    either Python's path (the standard library, site-packages with torch's and CUDA's libraries, PYTHONPATH),
    and either Python's bytecode cache where PYTHONPYCACHEPREFIX puts it outside those (the image keeps its
    bytecode beside the sources, so it is read from storage too), the volume left out. Folders inside another
    are walked once."""
    ask = ("import json, site, sys; "
           "print(json.dumps([sys.prefix, *site.getsitepackages(), *sys.path, sys.pycache_prefix or '']))")
    found = [comfyui_dir, str(ROOT), sys.prefix, *sys.path, sys.pycache_prefix or ""]
    found += json.loads(subprocess.run([comfy_python, "-c", ask], capture_output=True, text=True, check=True,
                                       timeout=120).stdout)
    # sys.path's "" (the current folder) is not the image's: left out with the empty strings
    folders = sorted({Path(p).resolve() for p in found if p and Path(p).is_dir()} - {Path("/")})
    volume = volume.resolve()
    kept: list[Path] = []
    for folder in folders:  # sorted: a parent comes before what is inside it
        if not any(folder.is_relative_to(k) for k in kept) and not folder.is_relative_to(volume) \
                and not volume.is_relative_to(folder):
            kept.append(folder)
    return kept


def i2v_image(flip: bool = False) -> str:
    """A base64 PNG for the image-to-video and keyframe jobs: a smooth gradient of I2V_SIZE (`flip`: the other
    way round, for a last frame)."""
    import io

    import numpy as np
    from PIL import Image

    w, h = I2V_SIZE
    x, y = np.meshgrid(np.linspace(0, 255, w), np.linspace(0, 255, h))
    if flip:
        x, y = 255 - x, 255 - y
    pixels = np.stack([x, y, 255 - x], axis=-1).astype("uint8")
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def timed_client(settings):
    """A ComfyClient whose run() notes when each node starts (executing events) in `.record["marks"]`, for
    the per-node split, and each node's first progress step in `.record["first_steps"]`; the caller gives it a
    fresh `.record` per job."""
    from ltx2_worker.comfy import ComfyClient

    class Timed(ComfyClient):
        record: dict = {}

        def run(self, graph, deadline, on_progress=lambda p: None):
            marks = self.record.setdefault("marks", [])
            first_steps = self.record.setdefault("first_steps", [])
            titles = {nid: (n.get("_meta") or {}).get("title") or n.get("class_type") for nid, n in graph.items()}
            stepped: set = set()

            def note(p):
                if p.value is None:
                    marks.append((time.monotonic(), titles.get(p.node, p.node)))
                elif p.node not in stepped:
                    stepped.add(p.node)
                    first_steps.append((time.monotonic(), titles.get(p.node, p.node)))
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


def loaded_mb(lines: list[str]) -> float:
    """MB of weights ComfyUI moved to the GPU, from its "loaded completely/partially; … N MB loaded" lines. A
    "Requested to load" with no such line is a switch between patchers of weights already there (stage 1's
    model and stage 2's bypass clone), which moves nothing."""
    return round(sum(float(m.group(1)) for line in lines
                     if (m := re.search(r"loaded (?:completely|partially);.*?([\d.]+) MB loaded", line))), 1)


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


LORA_URL = "https://bench.invalid/{}.safetensors"  # the bench's LoRAs: served from LORA_DIR, not the network
LORA_RANK = 16  # Lightricks' camera LoRAs are ~0.33 GB: rank 16 on all 1,344 block linears is that size
# the stand-in camera LoRA's rank for each move: the dollies' files are ~0.33 GB, the jibs' and static's 2.21 GB
CAMERA_RANKS = {"dolly_in": 16, "dolly_out": 16, "dolly_left": 16, "dolly_right": 16, "jib": 108}
IC_LORA_RANK = 32  # Lightricks' IC-LoRAs are ~0.65 GB: rank 32 on every block linear


def track_wav(seconds: float, rate: int = 48000) -> str:
    """A stereo WAV of `seconds`: a chord whose loudness beats twice a second (something for the audio VAE to
    encode), base64."""
    import io
    import wave

    import numpy as np

    t = np.arange(round(seconds * rate)) / rate
    chord = sum(np.sin(2 * np.pi * hz * t) for hz in (220.0, 277.2, 329.6)) / 3
    pcm = (chord * (0.3 + 0.3 * np.abs(np.sin(2 * np.pi * t))) * 32767).astype("<i2")
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(2)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(np.repeat(pcm[:, None], 2, axis=1).tobytes())
    return base64.b64encode(buf.getvalue()).decode()


def source_clip(width: int, height: int, frames: int, fps: int = 24) -> str:
    """An H.264 MP4 with motion that edges can follow: a bright disc crossing a striped field, base64."""
    import io

    import av
    import numpy as np

    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        yy, xx = np.mgrid[0:height, 0:width]
        for i in range(frames):
            img = np.zeros((height, width, 3), np.uint8)
            img[..., 1] = ((xx // 64 + i // 6) % 2) * 90
            cx, cy = width * (0.15 + 0.7 * i / max(frames - 1, 1)), height / 2 + height / 4 * np.sin(i / 12)
            img[(xx - cx) ** 2 + (yy - cy) ** 2 < (height / 6) ** 2] = 230
            out.mux(stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")))
        out.mux(stream.encode())
    return base64.b64encode(buf.getvalue()).decode()


def make_loras(volume: Path, out: Path, names=("lora-a", "lora-b"), rank: int = LORA_RANK) -> None:
    """Stand-in LoRAs for the stand-in checkpoint: random, of `rank` on every block linear."""
    import numpy as np
    from safetensors.numpy import save_file

    from ltx2_worker.lora_check import transformer_layers

    layers = transformer_layers(volume / "models" / "checkpoints" / "ltx-2-19b-dev-fp8.safetensors")
    rng = np.random.default_rng(0)
    out.mkdir(parents=True, exist_ok=True)
    for name in names:
        if (out / f"{name}.safetensors").exists():
            continue
        tensors = {}
        for layer, shape in layers.items():
            if layer.startswith("transformer_blocks.") and layer.endswith(".weight") and len(shape) == 2 \
                    and min(shape) > 1:
                base = f"diffusion_model.{layer[:-len('.weight')]}"
                tensors[f"{base}.lora_A.weight"] = (rng.standard_normal((rank, shape[1]), np.float32)
                                                    * 0.01).astype(np.float16)
                tensors[f"{base}.lora_B.weight"] = (rng.standard_normal((shape[0], rank), np.float32)
                                                    * 0.01).astype(np.float16)
        save_file(tensors, str(out / f"{name}.safetensors"))


def serve_loras_from(folder: Path) -> None:
    """The worker's LoRA cache fetches LORA_URL from `folder` instead of the network; everything after the
    fetch (hashing, the header and fit check, the atomic rename, the record) is the worker's own."""
    from ltx2_worker import lora_cache

    def fetch(url, field, max_bytes, timeout_s, write, headers=None):
        with open(folder / url.rsplit("/", 1)[1], "rb") as f:
            while chunk := f.read(64 << 20):
                write(chunk)

    lora_cache.fetch = fetch


class Run:
    """One configuration's ComfyUI, started with the worker's launcher, and the jobs sent to it."""

    def __init__(self, name: str, args: argparse.Namespace, tmp: Path, vram: VramSampler, reserve_gb: float):
        from ltx2_worker.settings import load_settings

        self.name, self.args, self.vram = name, args, vram
        self.flags, self.choices, worker_encoder, clip = config_setup(name, args, reserve_gb)
        self.tmp = tmp / name
        self.tmp.mkdir(parents=True, exist_ok=True)
        self.env = {"COMFYUI_DIR": args.comfyui_dir, "COMFY_PYTHON": args.comfy_python,
                    "COMFY_URL": "http://127.0.0.1:8188", "NETWORK_VOLUME_PATH": str(args.volume),
                    "COMFY_OUTPUT_DIR": str(self.tmp / "output"), "COMFY_INPUT_DIR": str(self.tmp / "input"),
                    "COMFY_LOG_FILE": str(self.tmp / "comfyui.log"), "COMFY_PID_FILE": str(self.tmp / "comfyui.pid"),
                    "BOOT_ERROR_FILE": str(self.tmp / "boot-error"), "COMFY_EXTRA_ARGS": shlex.join(self.flags),
                    "MAX_INLINE_MB": "400", "JOB_TIMEOUT_S": "900", "LTX2_CONFIG": str(stand_in_config(args, tmp))}
        from ltx2_worker.settings import SETTINGS  # the shell's settings reach the worker as they reach ComfyUI
        self.env.update({s.env: os.environ[s.env] for s in SETTINGS if s.env in os.environ and s.env not in self.env})
        if not args.sizes:  # the largest requests run with the worker's OOM ladder; other jobs must fit as they are
            self.env["OOM_LADDER"] = ""
        enabled = (["checkpoint_distilled"] if args.distilled else []) + (
            [f"control_{args.v2v}"] if args.v2v in ("depth", "pose") else [])  # their files: --controls stand-ins
        if enabled:
            self.env["ENABLE_MODELS"] = ",".join(enabled)
        if args.profile:
            self.env.update(LTX2_PROFILE=args.profile, LTX2_PROFILE_DIR=str(self.tmp / "profile"))
        self.settings = load_settings(env=self.env)
        self.client = timed_client(self.settings)
        self.reads: StorageReads | None = None
        self.prefetch: subprocess.Popen | None = None
        self.t0 = time.monotonic()  # the start's beginning, for the cold job's timeline
        self.prefetch_at = 0.0
        self.launched_s: float | None = None
        self.launcher: threading.Thread | None = None  # with --job-at-launch: the launcher, run beside the cold job
        # one Worker for the whole run, as in a worker process (it remembers the last job's mode)
        from ltx2_worker.gpu import Profile
        from ltx2_worker.worker import Worker

        self.worker = Worker(self.settings, client=self.client,
                             profile=Profile(self.name, tuple(self.flags), self.choices, clip))
        if not worker_encoder:  # a baseline: its MP4 is written by ComfyUI's SaveVideo, as it was
            self.worker.encoding = None

    def start(self) -> dict:
        """The cold start's parts as entrypoint.sh runs them: verification of the volume, the prefetch started
        beside the launcher (with --from-storage), the launcher until ComfyUI answers; seconds of each."""
        Path(self.settings.boot_error_file).unlink(missing_ok=True)  # a failure of an earlier run
        env = {**os.environ, **self.env}
        parts: dict = {}
        if self.args.from_storage:
            seen: set = set()
            parts["evicted_gb"] = round(evict([self.args.volume / "models"], seen) / 1e9, 2)
            roots = image_roots(self.args.comfyui_dir, self.args.comfy_python, self.args.volume)
            parts["evicted_image_gb"] = round(evict(roots, seen) / 1e9, 2)
            parts["evicted_image_roots"] = [str(r) for r in roots]
            self.reads = StorageReads({"comfyui": lambda: _pid(self.settings.comfy_pid_file)})
        started = self.t0 = time.monotonic()
        subprocess.run([sys.executable, "-m", "ltx2_worker.provision", "--boot"], cwd=ROOT, check=True, env=env,
                       timeout=600)
        parts["provision_s"] = round(time.monotonic() - started, 2)
        if self.args.from_storage and not self.args.no_prefetch:
            self.prefetch_at = time.monotonic() - started
            self.prefetch = subprocess.Popen([sys.executable, "-m", "ltx2_worker.prefetch"], cwd=ROOT, env=env,
                                             stdout=open(self.tmp / "prefetch.log", "w"), stderr=subprocess.STDOUT)
            self.reads.pids["prefetch"] = self.prefetch.pid
        launched = time.monotonic()

        def launch() -> None:
            subprocess.run([sys.executable, "-m", "ltx2_worker.launch", "--boot"], cwd=ROOT, check=True, env=env,
                           timeout=600)
            parts["launch_s"] = round(time.monotonic() - launched, 2)
            self.launched_s = time.monotonic() - started

        if self.args.job_at_launch:  # the cold job waits for ComfyUI as the worker's handler does
            self.launcher = threading.Thread(target=launch, daemon=True)
            self.launcher.start()
        else:
            launch()
        return parts

    def launched(self) -> None:
        """With --job-at-launch, after the cold job: the launcher's end (ComfyUI ready or failed)."""
        if self.launcher is not None:
            self.launcher.join(timeout=600)

    def timeline(self, record: dict) -> list[tuple[float, str]]:
        """The cold start's events in seconds from its start: provisioned, each file the prefetch finished (its
        log's "in memory at +N s" lines), ComfyUI ready, each node's start and each sampler's first step."""
        at = [(0.0, "provisioning started")]
        if self.prefetch is not None:
            at.append((self.prefetch_at, "prefetch started"))
            try:
                log_text = (self.tmp / "prefetch.log").read_text(errors="replace")
            except OSError:
                log_text = ""
            for m in re.finditer(r"prefetch: (\S+): ([\d.]+) GB in memory at \+([\d.]+) s", log_text):
                at.append((self.prefetch_at + float(m.group(3)), f"prefetch: {m.group(1)} ({m.group(2)} GB) read"))
        at += [(t - self.t0, f"node {title}" if title else "job done") for t, title in record.get("marks", [])]
        at += [(t - self.t0, f"first step of {title}") for t, title in record.get("first_steps", [])]
        if self.launched_s is not None:
            at.append((self.launched_s, "ComfyUI ready"))
        return [(round(t, 1), what) for t, what in sorted(at)]

    def storage_figures(self) -> dict:
        """After the cold job: what was read from storage, by whom, and the prefetch's own summary line."""
        if self.reads is None:
            return {}
        out = self.reads.figures()
        if self.prefetch is not None:
            out["prefetch_done_by_cold_job_end"] = self.prefetch.poll() is not None
            try:
                out["prefetch_log"] = (self.tmp / "prefetch.log").read_text(errors="replace").strip()[-600:]
            except OSError:
                pass
        return out

    def stop(self):
        if self.prefetch is not None and self.prefetch.poll() is None:
            self.prefetch.kill()
        pid = _pid(self.settings.comfy_pid_file)
        try:
            if pid is not None:
                os.kill(pid, signal.SIGTERM)
                time.sleep(3)
        except OSError:
            pass

    def log_lines(self) -> list[str]:
        try:
            return Path(self.settings.comfy_log_file).read_text(errors="replace").splitlines()
        except OSError:
            return []

    def comfy_rss_gb(self) -> float | None:
        pid = _pid(self.settings.comfy_pid_file)
        if pid is None:
            return None
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    return round(int(line.split()[1]) / 1e6, 2)
        except (OSError, ValueError):
            return None
        return None

    def job(self, label: str, prompt: str, seed: int, mode: str = "standard",
            size: tuple[int, int, int] | None = None, extra: dict | None = None) -> tuple[dict, object]:
        """Run one job (at the command line's size unless `size`, with `extra` request fields); returns
        (figures, decoded frames)."""
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
        else:  # an extra field of None leaves the request's out (frame_count, to follow a track or a video)
            merged = {**request, "mode": mode, **(extra or {})}
            out = self.worker.handle({"id": f"{self.name}-{label}",
                                      "input": {k: v for k, v in merged.items() if v is not None}})
        wall = time.monotonic() - started
        lines = self.log_lines()[before:]
        executed = [float(m.group(1)) for line in lines if (m := re.search(r"Prompt executed in ([\d.]+) seconds",
                                                                         line))]
        self.last_record = record
        fig = {"config": self.name, "job": label, "mode": mode, "seed": seed, "prompt": PROMPTS.index(prompt),
               "wall_s": round(wall, 2), "comfy_s": executed[-1] if executed else None,
               "size": f"{width}x{height}x{frames}", "fallback": out.get("fallback"),
               "peak_vram_gb": self.vram.peak_gb(), "vram_after_gb": self.vram.current_gb(),
               "comfy_rss_gb": self.comfy_rss_gb(),
               "model_loads": sum("Requested to load" in line for line in lines),
               "loaded_mb": loaded_mb(lines),
               "loaded_lines": [line.split("INFO")[-1].strip()[:120] for line in lines
                                if "Requested to load" in line or "loaded completely" in line
                                or "loaded partially" in line][:12],
               "nodes": node_seconds(record.get("marks", [])),
               "output_files_left": sum(1 for _ in Path(self.settings.comfy_output_dir).rglob("*") if _.is_file())}
        for key in ("timings", "audio_input", "control"):
            if isinstance(out.get(key), dict):
                fig[key] = out[key]
        if out.get("prompt_enhanced") is not None:
            fig["prompt_enhanced_chars"] = len(out["prompt_enhanced"])
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
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(results, indent=1))

    from ltx2_worker.settings import load_settings

    reserve = load_settings(env={}).comfy_reserve_vram_gb
    if args.loras or args.camera or args.v2v:
        started = time.monotonic()
        make_loras(args.volume, tmp / "loras")
        if args.v2v:  # named as the real file, which is what the worker's URL for the kind ends in
            from ltx2_worker.control import ic_lora

            make_loras(args.volume, tmp / "loras", [ic_lora(args.v2v).url.rsplit("/", 1)[1][:-12]], IC_LORA_RANK)
        if args.camera:  # named as the real file, which is what the worker's URL for the move ends in
            from ltx2_worker.camera import camera_lora

            make_loras(args.volume, tmp / "loras", [camera_lora(args.camera, 1.0).url.rsplit("/", 1)[1][:-12]],
                       CAMERA_RANKS.get(args.camera, CAMERA_RANKS["jib"]))
        serve_loras_from(tmp / "loras")
        shutil.rmtree(args.volume / "lora-cache", ignore_errors=True)  # each configuration's first use is new
        print(f"stand-in LoRAs made in {time.monotonic() - started:.1f} s", flush=True)
    for name in names:
        usable = usable_for(name, args)
        ballast = Ballast(args.comfy_python, usable, vram) if usable else None
        run = Run(name, args, tmp, vram, reserve)
        shutil.rmtree(args.volume / "lora-cache", ignore_errors=True)  # the LoRA jobs start from an empty cache
        print(f"== {name}: flags {' '.join(run.flags)}; {run.choices}; usable {usable or 'all'} GiB", flush=True)
        try:
            try:
                parts = run.start()
            except subprocess.CalledProcessError:
                results.append({"config": name, "job": "start", "error": "\n".join(run.log_lines()[-15:])})
                save()
                continue
            for label, prompt, seed, mode, size, extra in plan_for(name, args):
                fig, frames = run.job(label, prompt, seed, mode, size, extra)
                if label == "cold":
                    run.launched()
                    fig.update(parts, **run.storage_figures())
                    fig["timeline"] = run.timeline(run.last_record)
                    # with --job-at-launch the job's wall time began with the launch and holds it
                    launch_s = 0 if args.job_at_launch else parts["launch_s"]
                    fig["cold_start_s"] = round(parts["provision_s"] + launch_s + fig["wall_s"], 1)
                    fig["job_at_launch"] = args.job_at_launch
                fig["usable_gib"] = usable
                key = (seed, prompt, mode, size, json.dumps(extra, sort_keys=True))
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
                quiet = ("loaded_lines", "storage_read_series", "evicted_image_roots")
                print(json.dumps({k: v for k, v in fig.items() if k not in quiet}), flush=True)
        finally:
            run.stop()
            if ballast:
                ballast.stop()
    vram.close()
    if hook.is_symlink():
        hook.unlink()
    print_table(results)
    return 0


def plan_for(name: str, args: argparse.Namespace) -> list[tuple]:
    """The jobs of one configuration, in order: (label, prompt, seed, mode, size or None, extra input)."""
    ours = name != "reference" and not name.startswith("class-")  # the worker's graph on this card's class
    plan = [("cold", PROMPTS[0], 42, "standard", None, None)]
    plan += [(f"warm{i + 1}", PROMPTS[0], 43 + i, "standard", None, None) for i in range(args.warm)]
    sizes = [(f"size-{spec}", PROMPTS[0], 47, "standard", tuple(int(v) for v in spec.split("x")), None)
             for spec in filter(None, args.sizes.split(","))]
    conditioned = []  # what requests bring: keyframes, LoRAs (the worker's graph and the classes')
    first_last = {"image": i2v_image(), "keyframes": [{"image": i2v_image(flip=True), "frame": -1}]}
    conditioned += [(f"keyframes{i + 1}", PROMPTS[0], 48 + i, "standard", None, first_last)
                    for i in range(args.keyframes)]
    if args.loras:
        lora = {"loras": [{"url": LORA_URL.format("lora-a")}]}
        conditioned += [("lora-new", PROMPTS[0], 52, "standard", None, lora),
                        ("lora-again1", PROMPTS[0], 53, "standard", None, lora),
                        ("lora-again2", PROMPTS[0], 54, "standard", None, lora),
                        ("lora-other-new", PROMPTS[0], 55, "standard", None,
                         {"loras": [{"url": LORA_URL.format("lora-b")}]}),
                        ("lora-none", PROMPTS[0], 56, "standard", None, None)]
    if args.camera:
        camera = {"camera_motion": args.camera}
        conditioned += [("camera-new", PROMPTS[0], 57, "standard", None, camera),
                        ("camera-again", PROMPTS[0], 58, "standard", None, camera),
                        ("camera-none", PROMPTS[0], 59, "standard", None, None)]
    if not ours:  # the earlier package's graph, or another class's choices: the standard clip, the largest ones
        return plan + (conditioned + sizes if name.startswith("class-") else [])
    plan += conditioned
    plan += [(f"new-prompt{i + 1}", PROMPTS[1 + i], 42, "standard", None, None)
             for i in range(min(args.new_prompt, len(PROMPTS) - 1))]
    if args.no_audio:
        plan.append(("no-audio", PROMPTS[0], 44, "standard", None, {"audio": False}))
    if args.i2v:
        plan.append(("i2v", PROMPTS[0], 45, "standard", None, {"image": i2v_image()}))
    plan += [(f"enhance{i + 1}", PROMPTS[0], 60 + i, "standard", None, {"enhance_prompt": True})
             for i in range(args.enhance)]
    if args.a2v:
        track = {"audio_input": track_wav(args.a2v), "frame_count": None}
        plan += [("a2v-first", PROMPTS[0], 64, "standard", None, track),
                 ("a2v-again", PROMPTS[0], 65, "standard", None, track)]
    if args.v2v:
        clip = {"video": source_clip(args.width, args.height, args.frames), "control": args.v2v}
        plan += [("v2v-first", PROMPTS[0], 66, "standard", None, clip),
                 ("v2v-again", PROMPTS[0], 67, "standard", None, clip),
                 ("after-v2v", PROMPTS[0], 68, "standard", None, None)]
    if args.distilled:
        plan.append(("distilled-first", PROMPTS[0], 42, "distilled", None, None))
        plan += [(f"distilled-warm{i + 1}", PROMPTS[0], 43 + i, "distilled", None, None)
                 for i in range(args.distilled)]
        plan.append(("standard-again", PROMPTS[0], 46, "standard", None, None))
    plan += sizes
    endurance_size = tuple(int(v) for v in args.endurance_size.split("x"))
    plan += [(f"endurance{i + 1}", PROMPTS[0], 100 + i, "standard", endurance_size, None)
             for i in range(args.endurance)]
    return plan


def print_table(results: list[dict]) -> None:
    cols = ("config", "job", "comfy_s", "wall_s", "cold_start_s", "peak_vram_gb", "model_loads", "loaded_mb",
            "fallback", "mp4_mb", "width", "height", "frames", "psnr_db")
    print("\n| " + " | ".join(cols) + " |\n|" + "---|" * len(cols))
    for r in results:
        print("| " + " | ".join(str(r.get(c, "")) for c in cols) + " |" + (f" ERROR {r['error'][:200]}"
                                                                            if "error" in r else ""))
    roles = ("text_encoder", "positive_prompt", "checkpoint", "sampler_stage1", "upsampler", "sampler_stage2",
             "video_decode", "save_video")
    print("\nper node (s): config job | " + " | ".join(roles))
    for r in results:
        if r.get("nodes"):
            print(f"{r['config']} {r['job']} | " + " | ".join(str(r["nodes"].get(x, "")) for x in roles))


if __name__ == "__main__":
    sys.exit(main())
