"""What the GPU allows, decided in one place: ComfyUI's flags (used by the launcher) and the graph's
memory-for-speed choices (used by the worker), both from the card's memory class, so the two never disagree.

Measured with full-size stand-in weights under a hard memory cap (docs/performance.md): ComfyUI's dynamic VRAM
and re-merging the distilled LoRA into the shared dev weights on every job cost ~3 s and ~5 s of a warm job. An
80 GB card avoids both with one transformer copy: stage 2's LoRA runs as a low-rank bypass branch beside the
weights stage 1 holds (0.8 s a job against a merged second copy, 21.9 GB less), which leaves room to keep the
text encoder on the GPU, so a new prompt costs its 1.2 s encode and no reload (peak 50.9 of 79.6 GiB); stage 1
also runs as a CUDA graph (9.7 -> 8.0 s, frames identical). The 48 GB class takes the bypass too (no per-job
re-merge; as fast on the standard clip, 4-13 % faster on the largest). Smaller cards keep ComfyUI's
memory-saving defaults. Every class decodes tiled, asking for one tile's memory (ltx2_worker/comfy_nodes) rather
than the whole latent's, which pushed the text encoder off the GPU, and loads the latent upscaler without
ComfyUI's thrown-away random initialisation (2.7-4.3 s of a cold start). The 80 GB class also reads the
checkpoint onto the GPU through pinned buffers (its node 3.3-4.6 s against 5.2-5.7 s with ComfyUI's mapped copy,
frames identical); the smaller classes keep ComfyUI's dynamic VRAM, whose own lazy loading that node leaves alone.
"""

from __future__ import annotations

import dataclasses
import shlex
import subprocess

from .settings import EVERY_CLASS_CLIP, ClipLimits, Settings
from .workflow import GraphChoices

FP8_FAST_FROM_CC = 8.9  # FP8 matrix multiplication needs Ada, Hopper or Blackwell
# the FP8 transformer (21.9 GB with the real checkpoint), the LoRA's bypass branch (7.7 GB), the text encoder
# (11.7 GB), the VAEs, the upscaler and a 1920 x 1080 x 121 job (peak 54.8 GiB) fit
LARGE_FROM_GB = 64
LOW_VRAM_BELOW_GB = 32  # Lightricks: 32 GB+ for ComfyUI; 24 GB cards run out of memory in the text encoder
# The 80 GB class's longest clips, measured on an H200 held to 79.6 GiB and a real H100 (docs/performance.md,
# 2026-12-05): 1280 x 720 x 481 (20 s at 24 fps) in 80-85 s at a peak of 62-64 GiB, 1920 x 1080 x 225 (the same
# pixels) in 82-88 s at 65.6-65.8 GiB, no OOM-ladder rung. The other classes keep EVERY_CLASS_CLIP, unmeasured beyond.
LARGE_CLASS_CLIP = ClipLimits(max_frames=481, max_clip_pixels=1280 * 768 * 481)
# the worker's decode, loader and stacking LoRA nodes cost no memory: every GPU class uses them
EVERY_CLASS = GraphChoices(tile_memory_decode=True, fast_upscaler_load=True, fast_audio_vae_load=True,
                           fast_text_encoder_load=True, lora_stack=True)


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
    """One memory class: its name (logged, and shown by the benchmark), ComfyUI flags, graph choices, and the
    largest clip it serves where MAX_FRAMES and MAX_CLIP_PIXELS are auto."""

    name: str
    flags: tuple[str, ...]
    graph: GraphChoices
    clip: ClipLimits = EVERY_CLASS_CLIP


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
    beside the dev one (measured on an H200 held to 79.6 GiB: peaks of 57.4 GiB at the switch to distilled,
    50.1 GiB at the switch back, 50.9 GiB in standard jobs; docs/performance.md)."""
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
                                                  resident_upscaler=True, pinned_checkpoint_load=True),
                              LARGE_CLASS_CLIP)
        elif gpu.memory_gb >= LOW_VRAM_BELOW_GB:
            profile = Profile("medium", (*fast, *reserve), dataclasses.replace(EVERY_CLASS, lora_bypass=True))
        else:
            profile = Profile("small", ("--lowvram", *fast, *reserve), EVERY_CLASS)
    if extra_args.strip():
        profile = dataclasses.replace(profile, flags=tuple(shlex.split(extra_args)))
    return profile


def profile_for(settings: Settings, gpu: Gpu | None) -> Profile:
    """The memory class of `gpu` as these settings use it (COMFY_EXTRA_ARGS, DECODE_TILE_PX, COMPILE_BLOCKS,
    EARLY_PROMPTS); the launcher and the worker both call this, so ComfyUI's flags and the graph always belong to
    one class. EARLY_PROMPTS holds only in the 80 GB class: its encoder process holds the text encoder beside
    ComfyUI while it starts."""
    profile = choose_profile(gpu, settings.comfy_reserve_vram_gb, settings.comfy_extra_args)
    levers = {}  # the opt-in graph levers these settings turn on, over the class's choices
    if settings.decode_tile_px:
        levers["decode_tile_px"] = settings.decode_tile_px
    if settings.compile_blocks:
        levers["compile_blocks"] = True
    if settings.early_prompts and profile.name == "large":
        levers["early_prompts"] = True
    return dataclasses.replace(profile, graph=dataclasses.replace(profile.graph, **levers))
