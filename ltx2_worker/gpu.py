"""What the GPU allows, decided in one place: ComfyUI's flags (used by the launcher) and the graph's
memory-for-speed choices (used by the worker), both from the card's memory class, so the two never disagree.

Measured on an H100 80GB with full-size stand-in weights (docs/performance.md): ComfyUI's dynamic VRAM and the
distilled LoRA being re-applied to the shared dev weights on every job cost ~3 s and ~5 s of a warm job; with
the memory of an 80 GB card both can be avoided. Smaller cards keep ComfyUI's memory-saving defaults. The
tiled VAE decode stays everywhere: decoding in one piece saved 0.4 s but, next to two transformer copies,
pushed the text encoder out of GPU memory and cost 8 s on the next new prompt; on every class the tiled
decode asks for one tile's memory (ltx2_worker/comfy_nodes), not the whole latent's, for the same reason. On an
80 GB card stage 1 also runs as a CUDA graph (ltx2_worker/comfy_nodes): 9.7 -> 8.0 s, frames identical. Every
class loads the latent upscaler through the worker's loader node, without ComfyUI's thrown-away random
initialisation (2.7-4.3 s of a cold start).
"""

from __future__ import annotations

import dataclasses
import shlex
import subprocess

from .settings import Settings
from .workflow import GraphChoices

FP8_FAST_FROM_CC = 8.9  # FP8 matrix multiplication needs Ada, Hopper or Blackwell
# two copies of the FP8 transformer (2 x 21.9 GB with the real checkpoint) and a job fit; the text encoder
# (11.2 GB) only while it encodes (GraphChoices.release_text_encoder)
LARGE_FROM_GB = 64
LOW_VRAM_BELOW_GB = 32  # Lightricks: 32 GB+ for ComfyUI; 24 GB cards run out of memory in the text encoder
# the worker's decode and upscaler-loader nodes cost no memory: every GPU class uses them
EVERY_CLASS = GraphChoices(tile_memory_decode=True, fast_upscaler_load=True)


class GpuError(Exception):
    """nvidia-smi exists but the GPU does not answer properly: this worker cannot serve."""

    refresh_worker = True


@dataclasses.dataclass(frozen=True)
class Gpu:
    name: str
    memory_gb: float
    compute_capability: float


@dataclasses.dataclass(frozen=True)
class Profile:
    """One memory class: its name (logged, and shown by the benchmark), ComfyUI flags and graph choices."""

    name: str
    flags: tuple[str, ...]
    graph: GraphChoices


def detect_gpu() -> Gpu | None:
    """The first GPU as nvidia-smi reports it; None on a machine without NVIDIA tools (development, CI)."""
    query = ["nvidia-smi", "--query-gpu=name,memory.total,compute_cap", "--format=csv,noheader,nounits"]
    try:
        out = subprocess.run(query, capture_output=True, text=True, timeout=20)
    except FileNotFoundError:
        return None
    except subprocess.TimeoutExpired:
        raise GpuError("nvidia-smi did not answer within 20 s: the GPU is in a broken state") from None
    if out.returncode != 0:
        raise GpuError(f"nvidia-smi failed ({(out.stderr or out.stdout).strip()[:300]}): the GPU is not usable")
    try:
        name, memory_mib, cc = (part.strip() for part in out.stdout.splitlines()[0].split(","))
        return Gpu(name, float(memory_mib) / 1024, float(cc))
    except (IndexError, ValueError):
        raise GpuError(f"cannot read nvidia-smi's answer {out.stdout.strip()[:200]!r}") from None


def choose_profile(gpu: Gpu | None, reserve_vram_gb: float = 0.0, extra_args: str = "") -> Profile:
    """The profile for `gpu`; `extra_args` (COMFY_EXTRA_ARGS), when set, replaces the flags only.

    A large card serves distilled mode on the same choices: ComfyUI runs with --cache-classic (ltx2_worker.launch),
    which lets go of the other mode's models when the mode changes, so the distilled transformer never sits
    beside the two dev copies (measured on an H200 held to 80 GB: peaks of 72.3 GB at the switch to distilled,
    75.7 GB at the switch back, 78.1 GB in standard jobs; docs/performance.md)."""
    if gpu is None:
        profile = Profile("cpu", ("--cpu",), GraphChoices())
    else:
        fast = ("--fast", "fp8_matrix_mult") if gpu.compute_capability >= FP8_FAST_FROM_CC else ()
        reserve = ("--reserve-vram", f"{reserve_vram_gb:g}") if reserve_vram_gb > 0 else ()
        if gpu.memory_gb >= LARGE_FROM_GB:
            # estimate-based loading, every model kept on the GPU: no per-job re-attachment of weights
            # PyTorch's own allocator: CUDA graphs (GraphChoices.cuda_graphs) keep their memory in its pools
            profile = Profile("large", ("--disable-dynamic-vram", "--highvram", "--disable-cuda-malloc", *fast,
                                        *reserve),
                              dataclasses.replace(EVERY_CLASS, lora_bypass=True, cuda_graphs=True,
                                                  resident_upscaler=True))
        elif gpu.memory_gb >= LOW_VRAM_BELOW_GB:
            profile = Profile("medium", (*fast, *reserve), dataclasses.replace(EVERY_CLASS, lora_bypass=True))
        else:
            profile = Profile("small", ("--lowvram", *fast, *reserve), EVERY_CLASS)
    if extra_args.strip():
        profile = dataclasses.replace(profile, flags=tuple(shlex.split(extra_args)))
    return profile


def profile_for(settings: Settings, gpu: Gpu | None) -> Profile:
    """The memory class of `gpu` as these settings use it (COMFY_EXTRA_ARGS); the launcher and the worker both
    call this, so ComfyUI's flags and the graph always belong to one class."""
    return choose_profile(gpu, settings.comfy_reserve_vram_gb, settings.comfy_extra_args)
