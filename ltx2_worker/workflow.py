"""The two-stage LTX-2 graph (workflow_api.json, ComfyUI API format) and how a request patches it.

Nodes are found by role, written in their `_meta.title`, never by node id: the graph can be re-exported from
ComfyUI without touching this code, and a missing or doubled role fails at start-up, not mid-job.
"""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path
from typing import Any

from .job import VideoRequest
from .settings import ROOT

DEFAULT_WORKFLOW = ROOT / "workflow_api.json"

# role -> (class_type, inputs the worker sets). Frame rate lives in three places and length in two; all of
# them are set together here so they cannot disagree.
ROLES: dict[str, tuple[str, tuple[str, ...]]] = {
    "positive_prompt": ("CLIPTextEncode", ("text",)),
    "negative_prompt": ("CLIPTextEncode", ("text",)),
    "canvas": ("EmptyImage", ("width", "height")),
    "video_latent": ("EmptyLTXVLatentVideo", ("length",)),
    "audio_latent": ("LTXVEmptyLatentAudio", ("frames_number", "frame_rate")),
    "conditioning": ("LTXVConditioning", ("frame_rate",)),
    "scheduler": ("LTXVScheduler", ("steps",)),
    "guider_stage1": ("CFGGuider", ("cfg",)),
    "noise_stage1": ("RandomNoise", ("noise_seed",)),
    "noise_stage2": ("RandomNoise", ("noise_seed",)),
    "output_resize": ("ImageScale", ("width", "height")),
    "create_video": ("CreateVideo", ("fps", "audio")),
    "save_video": ("SaveVideo", ("filename_prefix",)),
    "audio_decode": ("LTXVAudioVAEDecode", ("samples", "audio_vae")),
}

# Stage 1 runs at half size on ComfyUI's 32-pixel latent grid and EmptyLTXVLatentVideo rounds down silently,
# so the graph generates at multiples of 64 and `output_resize` scales/centre-crops to the asked size.
GENERATION_MULTIPLE = 64


class WorkflowError(ValueError):
    """workflow_api.json does not have the shape this code patches."""


def generation_size(width: int, height: int) -> tuple[int, int]:
    """The size the graph denoises at: the request rounded up to the 64-pixel grid (cropped back later)."""
    return (math.ceil(width / GENERATION_MULTIPLE) * GENERATION_MULTIPLE,
            math.ceil(height / GENERATION_MULTIPLE) * GENERATION_MULTIPLE)


class Workflow:
    def __init__(self, graph: dict[str, Any]):
        self.graph = graph
        self.node_ids = self._index_roles(graph)

    @classmethod
    def load(cls, path: str | Path = DEFAULT_WORKFLOW) -> Workflow:
        try:
            graph = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise WorkflowError(f"cannot read {path}: {exc}") from None
        return cls(graph)

    @staticmethod
    def _index_roles(graph: dict[str, Any]) -> dict[str, str]:
        found: dict[str, list[str]] = {}
        for node_id, node in graph.items():
            title = (node.get("_meta") or {}).get("title")
            if title in ROLES:
                found.setdefault(title, []).append(node_id)
        ids = {}
        for role, (class_type, inputs) in ROLES.items():
            nodes = found.get(role, [])
            if len(nodes) != 1:
                raise WorkflowError(f"role {role!r} must be the _meta.title of exactly one node, found {nodes}")
            node = graph[nodes[0]]
            if node.get("class_type") != class_type:
                raise WorkflowError(f"role {role!r} is node {nodes[0]} of class {node.get('class_type')}, "
                                    f"expected {class_type}")
            missing = [i for i in inputs if i not in node.get("inputs", {})]
            if missing:
                raise WorkflowError(f"role {role!r} (node {nodes[0]}) lacks inputs {missing}")
            ids[role] = nodes[0]
        return ids

    def node(self, graph: dict[str, Any], role: str) -> dict[str, Any]:
        return graph[self.node_ids[role]]["inputs"]

    def build(self, req: VideoRequest, filename_prefix: str) -> dict[str, Any]:
        """A patched copy of the graph for one request; the loaded graph is never changed."""
        graph = copy.deepcopy(self.graph)
        gen_w, gen_h = generation_size(req.width, req.height)
        self.node(graph, "positive_prompt")["text"] = req.prompt
        if req.negative_prompt is not None:
            self.node(graph, "negative_prompt")["text"] = req.negative_prompt
        self.node(graph, "canvas").update(width=gen_w, height=gen_h)
        self.node(graph, "video_latent")["length"] = req.frame_count
        self.node(graph, "audio_latent").update(frames_number=req.frame_count, frame_rate=req.fps)
        self.node(graph, "conditioning")["frame_rate"] = float(req.fps)
        if req.steps is not None:
            self.node(graph, "scheduler")["steps"] = req.steps
        if req.cfg is not None:
            self.node(graph, "guider_stage1")["cfg"] = req.cfg
        self.node(graph, "noise_stage1")["noise_seed"] = req.seed
        self.node(graph, "noise_stage2")["noise_seed"] = req.seed
        self.node(graph, "output_resize").update(width=req.width, height=req.height)
        create = self.node(graph, "create_video")
        create["fps"] = float(req.fps)
        if not req.audio:
            del create["audio"]  # the audio decode is then unreachable, and ComfyUI skips it
        self.node(graph, "save_video")["filename_prefix"] = filename_prefix
        return graph

    def defaults(self) -> dict[str, Any]:
        """The graph's own values for what a request may leave out (reported in the README and responses)."""
        return {
            "negative_prompt": self.node(self.graph, "negative_prompt")["text"],
            "steps": self.node(self.graph, "scheduler")["steps"],
            "cfg": self.node(self.graph, "guider_stage1")["cfg"],
        }
