"""A request's `camera_motion` as the LoRA that makes it: Lightricks' camera-control LoRAs for LTX-2 19B, one
Hugging Face repo per move. The worker fetches the move's file through the LoRA cache (the same download,
checks and cache as a request's LoRAs) on first use and applies it as it applies those, outside MAX_LORAS.

No commit of these repos is recorded here (the project's machines reach no hub), so the file is read from `main`
and pinned by what the cache records on first use (its sha256, reported in the response); sizes from
ComfyUI-Manager's model list: about 327 MB for the dollies, 2.21 GB for the jibs and static.
"""

from __future__ import annotations

from .download import hub_file_url
from .job import CAMERA_MOVES, LoraSpec
from .lora_cache import LoraCache, fetch_at_boot
from .manifest import CAMERA_PREFIX, enabled_names
from .settings import Settings, SettingsError

REPO = "Lightricks/LTX-2-19b-LoRA-Camera-Control-{title}"
FILE = "ltx-2-19b-lora-camera-control-{slug}.safetensors"
REVISION = "main"
MAX_MB = 2400  # the largest move's file (2.21 GB) with room; above MAX_LORA_MB's default, these are the worker's own


def camera_lora(move: str, strength: float) -> LoraSpec:
    """The LoRA of `move` (job.CAMERA_MOVES) at `strength`, from HF_ENDPOINT's hub (huggingface.co unless set)."""
    title = "-".join(part.capitalize() for part in move.split("_"))
    url = hub_file_url(REPO.format(title=title), FILE.format(slug=move.replace("_", "-")), REVISION)
    return LoraSpec("camera_motion", url, strength, MAX_MB)


def enabled_moves(settings: Settings) -> list[str]:
    """The moves ENABLE_MODELS names as camera_<move> (camera_all: every move), in CAMERA_MOVES' order."""
    names = {n[len(CAMERA_PREFIX):] for n in enabled_names(settings) if n.startswith(CAMERA_PREFIX)}
    unknown = names - set(CAMERA_MOVES) - {"all"}
    if unknown:
        raise SettingsError(f"ENABLE_MODELS names unknown camera moves {sorted(unknown)}; known: "
                            f"{', '.join(CAMERA_PREFIX + m for m in (*CAMERA_MOVES, 'all'))}")
    return [m for m in CAMERA_MOVES if m in names or "all" in names]


def fetch_enabled(settings: Settings, cache: LoraCache, timeout_s: float) -> list[str]:
    """At boot: each enabled move's LoRA into the cache (lora_cache.fetch_at_boot); the moves fetched."""
    moves = enabled_moves(settings)
    done = fetch_at_boot(cache, [(f"camera move {m}", camera_lora(m, 1.0)) for m in moves], timeout_s)
    return [m for m in moves if f"camera move {m}" in done]
