"""The out-of-memory fallback ladder: what to try, in order, when ComfyUI runs out of GPU memory.

Rungs are cumulative (each shrinks the request the previous rung ran) and never touch the prompt, seed or
any other creative input; the response names the rung that produced the video.
"""

from __future__ import annotations

import dataclasses
import math

from .job import VideoRequest


@dataclasses.dataclass(frozen=True)
class Rung:
    name: str  # as written in config.ini: "retry", "scale:0.75", "frames:0.5"
    scale: float = 1.0  # width and height factor
    frames: float = 1.0  # frame count factor


def parse_ladder(text: str) -> tuple[Rung, ...]:
    """`retry, scale:0.75, frames:0.5` -> rungs; raises ValueError naming the bad rung."""
    rungs = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        kind, _, arg = item.partition(":")
        if kind == "retry" and not arg:
            rungs.append(Rung(item))
            continue
        try:
            factor = float(arg)
        except ValueError:
            factor = math.nan
        if kind not in ("scale", "frames") or not 0 < factor < 1:
            raise ValueError(f"rung {item!r} must be retry, scale:F or frames:F with 0 < F < 1")
        rungs.append(Rung(item, scale=factor) if kind == "scale" else Rung(item, frames=factor))
    return tuple(rungs)


def step_down(rung: Rung, req: VideoRequest, size_multiple: int, min_size: int) -> VideoRequest | None:
    """The request this rung runs, or None when it cannot shrink it (already at the minimum)."""
    if rung.scale == 1.0 and rung.frames == 1.0:
        return req
    width = max(min_size, int(req.width * rung.scale) // size_multiple * size_multiple)
    height = max(min_size, int(req.height * rung.scale) // size_multiple * size_multiple)
    frames = max(9, int((req.frame_count - 1) * rung.frames) // 8 * 8 + 1)
    if (width, height, frames) == (req.width, req.height, req.frame_count):
        return None
    return dataclasses.replace(req, width=width, height=height, frame_count=frames)
