"""Forwards ComfyUI's progress to RunPod (`/status` shows it as IN_PROGRESS output), at most once per interval.

The SDK's progress_update posts to RunPod's job endpoint from a new thread per call, so updates are
throttled; without that endpoint (RunPod's local API, development) progress is only logged.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from typing import Any

from .comfy import Progress

log = logging.getLogger(__name__)
RUNPOD_PROGRESS_ENV = "RUNPOD_WEBHOOK_POST_OUTPUT"  # set by RunPod on real workers


def runpod_sender(job: dict[str, Any]) -> Callable[[dict[str, Any]], None] | None:
    if not os.environ.get(RUNPOD_PROGRESS_ENV):
        return None
    from runpod.serverless import progress_update

    return lambda payload: progress_update(job, payload)


class ProgressReporter:
    def __init__(self, job_id: str, graph: dict[str, Any], interval_s: float,
                 send: Callable[[dict[str, Any]], None] | None):
        self.job_id = job_id
        self.labels = {nid: _label(node) for nid, node in graph.items()}
        self.interval_s = interval_s
        self.send = send
        self.started = time.monotonic()
        self.last_sent = float("-inf")
        self.last_node: str | None = None

    def __call__(self, p: Progress) -> None:
        now = time.monotonic()
        new_node = p.node != self.last_node
        self.last_node = p.node
        if now - self.last_sent < self.interval_s and not (new_node and p.value is None and
                                                           now - self.last_sent >= self.interval_s / 4):
            return
        self.last_sent = now
        payload = {"stage": self.labels.get(p.node, p.node), "node": p.node,
                   "elapsed_s": round(now - self.started, 1)}
        if p.value is not None and p.max:
            payload.update(step=p.value, steps=p.max)
        log.info("job %s progress %s", self.job_id, payload)
        if self.send is not None:
            try:
                self.send(payload)
            except Exception as exc:  # progress is a courtesy: it never fails the job
                log.warning("job %s: progress update failed: %s", self.job_id, exc)


class NodeClock:
    """Passes progress on to `forward` and notes when each node starts executing, for one node's seconds in a
    job's `timings` (a node ComfyUI takes from its cache never starts: 0 s)."""

    def __init__(self, forward: Callable[[Progress], None]):
        self.forward = forward
        self.starts: list[tuple[float, str]] = []

    def __call__(self, p: Progress) -> None:
        if p.value is None and (not self.starts or self.starts[-1][1] != p.node):
            self.starts.append((time.monotonic(), p.node))
        self.forward(p)

    def seconds(self, node: str, end: float) -> float:
        """Seconds from each start of `node` to the next node's start (or `end`, the run's end)."""
        marks = [*self.starts, (end, "")]
        return sum(t1 - t0 for (t0, n), (t1, _) in zip(marks, marks[1:], strict=False) if n == node)


# What a caller polling /status reads, by node role (workflow_api.json's _meta.title); other nodes show their
# class name.
STAGES = {
    "checkpoint": "loading the model", "text_encoder": "loading the text encoder",
    "positive_prompt": "encoding the prompt", "negative_prompt": "encoding the prompt",
    "sampler_stage1": "stage 1: sampling at half size", "upsampler": "upscaling 2x",
    "sampler_stage2": "stage 2: refining at full size", "video_decode": "decoding the video",
    "audio_decode": "decoding the audio", "output_crop": "sizing the frames", "save_video": "writing the MP4",
    "prompt_enhancer": "enhancing the prompt",
}


def _label(node: dict[str, Any]) -> str:
    return STAGES.get((node.get("_meta") or {}).get("title") or "", node.get("class_type", "?"))
