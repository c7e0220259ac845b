"""What the provisioned text encoder file holds beyond the language model: `enhance_prompt` with an `image` runs
the image-to-video prompt writer, which looks at the first frame through Gemma 3's vision tower. A file without
those weights would let ComfyUI run the tower uninitialised and write a prompt about nothing, so such a request is
refused, naming the file, before anything runs.
"""

from __future__ import annotations

import functools
from pathlib import Path

from safetensors import safe_open

from .model_cache import role_paths
from .settings import Settings

# Gemma 3's vision tower and its projection into the language model, as ComfyUI's Gemma3_12B names them
VISION_PREFIXES = ("vision_model.", "multi_modal_projector.")


def text_encoder_file(settings: Settings) -> Path:
    """The text encoder file ComfyUI loads (the volume's, or RunPod's model cache's)."""
    (path,) = role_paths(settings, "text_encoder")
    return path


def sees_images(path: Path) -> bool:
    """Whether the file carries the vision tower; read from its header once per file version."""
    stat = path.stat()
    return _has_vision(str(path), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=4)
def _has_vision(path: str, size: int, mtime_ns: int) -> bool:
    with safe_open(path, framework="np") as f:
        return any(name.startswith(VISION_PREFIXES) for name in f.keys())
