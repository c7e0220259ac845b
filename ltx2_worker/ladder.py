"""The out-of-memory fallback ladder: what to try, in order, when ComfyUI runs out of GPU memory.

Rungs are cumulative (each shrinks the request the previous rung ran) and never touch the prompt, seed or
any other creative input; the response names the rung that produced the video. The rung syntax itself
is in rungs.py.
"""

from __future__ import annotations

import dataclasses

from .job import VideoRequest
from .rungs import Rung


def step_down(rung: Rung, req: VideoRequest, size_multiple: int, min_size: int) -> VideoRequest | None:
    """The request this rung runs, or None when it cannot shrink it (already at the minimum)."""
    if rung.scale == 1.0 and rung.frames == 1.0:
        return req
    width = max(min_size, int(req.width * rung.scale) // size_multiple * size_multiple)
    height = max(min_size, int(req.height * rung.scale) // size_multiple * size_multiple)
    frames = max(9, int((req.frame_count - 1) * rung.frames) // 8 * 8 + 1)
    if (width, height, frames) == (req.width, req.height, req.frame_count):
        return None
    # keyframes keep their place in time: the last frame stays the last
    keyframes = tuple(dataclasses.replace(k, frame=round(k.frame * (frames - 1) / (req.frame_count - 1)))
                      for k in req.keyframes)
    if len({k.frame for k in keyframes}) < len(keyframes):
        return None  # two keyframes would land on one frame
    return dataclasses.replace(req, width=width, height=height, frame_count=frames, keyframes=keyframes)
