"""The two-stage LTX-2 graph (workflow_api.json, ComfyUI API format) and how a request patches it.

Nodes are found by role, written in their `_meta.title`, never by node id: the graph can be re-exported from
ComfyUI without touching this code, and a missing or doubled role fails at start-up, not mid-job.
"""

from __future__ import annotations

import copy
import dataclasses
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .job import Keyframe, VideoRequest, generation_size
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
    "output_crop": ("ImageCrop", ("width", "height", "x", "y")),
    "create_video": ("CreateVideo", ("fps", "audio")),
    "save_video": ("SaveVideo", ("video", "filename_prefix")),
    "audio_decode": ("LTXVAudioVAEDecode", ("samples", "audio_vae")),
    "checkpoint": ("CheckpointLoaderSimple", ("ckpt_name",)),
    "text_encoder": ("LTXAVTextEncoderLoader", ("ckpt_name",)),
    "audio_vae_loader": ("LTXVAudioVAELoader", ("ckpt_name",)),
    "sampler_stage1": ("SamplerCustomAdvanced", ("sigmas",)),
    "guider_stage2": ("CFGGuider", ("model",)),
    "lora": ("LoraLoaderModelOnly", ("model",)),
    "upsampler": ("LTXVLatentUpsampler", ("samples",)),
    "av_latent_stage1": ("LTXVConcatAVLatent", ("video_latent",)),
    "av_latent_stage2": ("LTXVConcatAVLatent", ("video_latent",)),
    "crop_guides": ("LTXVCropGuides", ("latent",)),
    "sampler_stage2": ("SamplerCustomAdvanced", ("latent_image",)),
    "video_decode": ("VAEDecodeTiled", ("samples",)),
    "upscaler_loader": ("LatentUpscaleModelLoader", ("model_name",)),
}

# Distilled mode (ltx2-workflow.md): the distilled FP8 checkpoint, CFG 1, a fixed 8-step stage-1 schedule,
# and stage 2 on that checkpoint directly (it is distilled already, so the distilled LoRA is left out).
DISTILLED_CHECKPOINT = "ltx-2-19b-distilled-fp8.safetensors"
DISTILLED_STAGE1_SIGMAS = "1., 0.99375, 0.9875, 0.98125, 0.975, 0.909375, 0.725, 0.421875, 0.0"
# the worker's own ComfyUI nodes (ltx2_worker/comfy_nodes/ltx2_cuda_graphs.py, ltx2_compile_blocks.py,
# ltx2_save_video.py, ltx2_vae_decode.py, ltx2_upscaler_loader.py, ltx2_upsampler.py, ltx2_lora_bypass.py,
# ltx2_checkpoint_parts.py)
CUDA_GRAPHS_NODE = "LTX2CudaGraphs"
COMPILE_BLOCKS_NODE = "LTX2CompileBlocks"
SAVE_VIDEO_NODE = "LTX2SaveVideo"
TILE_DECODE_NODE = "LTX2VAEDecodeTiled"
UPSCALER_LOADER_NODE = "LTX2LatentUpscaleModelLoader"
UPSAMPLER_NODE = "LTX2LatentUpsampler"
AUDIO_VAE_LOADER_NODE = "LTX2AudioVAELoader"
TEXT_ENCODER_LOADER_NODE = "LTX2TextEncoderLoader"
CHECKPOINT_LOADER_NODE = "LTX2PinnedCheckpointLoader"
CHECKPOINT_BESIDE_NODE = "LTX2PinnedCheckpointLoaderBeside"
ENCODED_PROMPTS_NODE = "LTX2EncodedPrompts"  # the prompts an encoder process wrote (ltx2_worker.early_prompts)
# GraphChoices field -> (role, the worker's node that takes that role's node's place under the same id, with the
# same inputs: VAEDecodeTiled's, LatentUpscaleModelLoader's, LTXVAudioVAELoader's, LTXAVTextEncoderLoader's,
# CheckpointLoaderSimple's, LTXVLatentUpsampler's)
SWAPPED_NODES = {"tile_memory_decode": ("video_decode", TILE_DECODE_NODE),
                 "fast_upscaler_load": ("upscaler_loader", UPSCALER_LOADER_NODE),
                 "fast_audio_vae_load": ("audio_vae_loader", AUDIO_VAE_LOADER_NODE),
                 "fast_text_encoder_load": ("text_encoder", TEXT_ENCODER_LOADER_NODE),
                 "pinned_checkpoint_load": ("checkpoint", CHECKPOINT_LOADER_NODE),
                 # after pinned_checkpoint_load: with both, this node takes the place
                 "checkpoint_beside_prompts": ("checkpoint", CHECKPOINT_BESIDE_NODE),
                 "resident_upscaler": ("upsampler", UPSAMPLER_NODE)}
# ComfyUI's own (comfy_extras/nodes_lora_debug.py at the pinned tag): LoraLoaderModelOnly's inputs and output
LORA_BYPASS_NODE = "LoraLoaderBypassModelOnly"
# the worker's bypass LoRA that keeps the bypass LoRAs before it (ComfyUI's keeps only the last of a chain)
LORA_STACK_NODE = "LTX2LoraBypass"
LORA_MERGE_NODE = "LoraLoaderModelOnly"
# Prompt enhancement (request `enhance_prompt`): ComfyUI's TextGenerateLTX2Prompt, the text encoder writing the
# prompt with LTX-2's own system prompts (comfy_extras/nodes_textgen.py), sampled with the node's defaults and the
# request's seed, so the same request gives the same text; PreviewAny reports the text in /history.
ENHANCE_NODE = "TextGenerateLTX2Prompt"
ENHANCER_NODE = "ltx2:prompt_enhancer"  # the writer's node id, whose seconds the response reports
ENHANCED_PROMPT_NODE = "ltx2:enhanced_prompt"  # the PreviewAny node that reports the text
ENHANCE_SAMPLING = {"temperature": 0.7, "top_k": 64, "top_p": 0.95, "min_p": 0.05, "repetition_penalty": 1.05}
# the Canny thresholds of ComfyUI's LTX-2 canny blueprint (its node's defaults)
CANNY_LOW, CANNY_HIGH = 0.4, 0.8
# ComfyUI's "Image to Depth Map (Lotus)" subgraph: one Euler step of Lotus-D from the first sigma 999, no noise
LOTUS_FIRST_SIGMA = 999.0000000000002
# ComfyUI's "Image to Pose Map (SDPose-OOD)" blueprint: frames per SDPose pass, and how its skeletons are drawn
POSE_BATCH = 16
POSE_DRAWING = {"draw_body": True, "draw_hands": True, "draw_face": True, "draw_feet": True, "stick_width": 4,
                "face_point_size": 2, "score_threshold": 0.5, "draw_head": True}
# the node and input that load each preprocessor file (manifest role), as _depth_maps and _pose_maps wire them
PREPROCESSOR_LOADERS = {"depth_model": ("UNETLoader", "unet_name"), "depth_vae": ("VAELoader", "vae_name"),
                        "pose_model": ("CheckpointLoaderSimple", "ckpt_name")}
# LTXVPreprocess's default: compresses the first frame like a video frame so motion starts naturally.
I2V_IMAGE_COMPRESSION = 35

@dataclasses.dataclass(frozen=True)
class GraphChoices:
    """Memory-for-speed choices that leave the sampling itself unchanged (ltx2_worker.gpu picks them).

    cuda_graphs: stage 1's model goes through the worker's `LTX2CudaGraphs` node (ltx2_worker/comfy_nodes, on
        ComfyUI's custom-node path when launch started it), which replays each model call as one CUDA graph
        instead of launching ~30,000 kernels from Python. Only where the weights stay put on the GPU.
    tile_memory_decode: the tiled decode runs as the worker's `LTX2VAEDecodeTiled` node, which asks ComfyUI's
        model management for one tile's memory instead of the whole latent's (18.1 GB for the standard clip),
        so the decode no longer pushes the text encoder off the GPU; the same tiles, the same pixels.
    fast_upscaler_load: the latent upscaler is loaded by the worker's `LTX2LatentUpscaleModelLoader` node, which
        builds the model without PyTorch's random initialisation that ComfyUI's loader throws away (2.7-4.3 s
        of a cold start on the GPU host, 0.01-0.02 s this way); the same model, the same weights.
    fast_audio_vae_load: the audio VAE is loaded by the worker's `LTX2AudioVAELoader` node, which opens only the
        checkpoint's audio VAE and vocoder tensors; ComfyUI's loader opens all of them and so, on a fresh worker,
        waits for most of the 27 GB checkpoint to be read (4.3-12 s of a cold start on the GPU host). The same
        tensors, the same VAE.
    fast_text_encoder_load: the text encoder likewise, by the worker's `LTX2TextEncoderLoader` node: ComfyUI's
        LTXAVTextEncoderLoader opens every tensor of the checkpoint beside the Gemma file, and on the GPU host it
        ended 2.5-2.6 s after the checkpoint's read in every cold start where it began before that read ended.
        The same tensors, the same text encoder.
    pinned_checkpoint_load: the checkpoint is loaded by the worker's `LTX2PinnedCheckpointLoader` node, which
        reads the file with `pread` into pinned buffers and copies them onto the GPU, instead of ComfyUI's
        faulting each page in through a map and copying from pageable memory (its node 3.3-4.6 s against
        5.2-5.7 s for the 27 GB on an H100, frames identical). The same bytes into ComfyUI's own model building.
    checkpoint_beside_prompts: the same load by `LTX2PinnedCheckpointLoaderBeside`, an async node that ComfyUI
        starts first and runs beside the text encoder's load and the prompts, instead of after them (a fresh
        worker's first job). Off in every class: on an H100 its gain stayed inside the first job's run-to-run
        spread, the prompts beside its copy slowing (ComfyUI's own loader run this way was rejected too: its
        pageable copies slowed the other loads; docs/performance.md).
    lora_bypass: stage 2's distilled LoRA runs as a bypass branch (`LTX2LoraBypass` with lora_stack, else
        ComfyUI's `LoraLoaderBypassModelOnly`): each patched layer computes its FP8 output and adds up(down(x))
        from the LoRA's own bf16 matrices, on the weights stage 1 already holds. No second transformer copy
        (21.9 GB) and no weights re-patched between the stages; the LoRA's 7.7 GB sit on the GPU instead,
        outside ComfyUI's model accounting. The sum is not rounded back to FP8 as a merged LoRA is, so frames
        differ slightly from the merged LoRA's.
    lora_stack: the request's LoRAs (and, with lora_bypass, stage 2's distilled LoRA on top of them) run as
        bypass branches through the worker's `LTX2LoraBypass` node, which keeps the branches before it;
        ComfyUI's own bypass node keeps only the last of a chain. Without it the request's LoRAs are merged
        into the weights (`LoraLoaderModelOnly`): the same LoRAs, re-patched whenever they change.
    resident_upscaler: upscaling runs as the worker's `LTX2LatentUpsampler` node, which leaves the 1 GB upscaler
        to ComfyUI's model management instead of moving it to the GPU and back in every job (0.7-1.1 s a job);
        the same computation, the same latent.
    compile_blocks: stage 1's model goes through the worker's `LTX2CompileBlocks` node (before LTX2CudaGraphs,
        which then records the compiled kernels): each transformer block's attention and feed-forward modules,
        their FP8 linears included, compiled by torch.compile, so the elementwise work between the matrix
        products runs fused. The first job of each size compiles. Off unless COMPILE_BLOCKS: on an H100 0.7-1.3 s
        less a warm job, frames 28.9 dB from the eager ones on the stand-ins, the first job of a fresh worker
        26-29 s longer, 2-8 s with the compile cache on the volume (docs/performance.md).
    early_prompts: a job that arrives before ComfyUI answers has its two prompts encoded by a process of its own
        while ComfyUI starts (ltx2_worker.early_prompts), and its graph reads them through the worker's
        `LTX2EncodedPrompts` node instead of the text encoder's loader and two CLIPTextEncode nodes; a job
        with enhance_prompt keeps them. The same code and weights. Only where EARLY_PROMPTS and the 80 GB class.
    decode_tile_px: the video decode's spatial tile in pixels (0: the graph's 512). A tile as large as the frame
        decodes it in one piece: no tile seams to blend, and fewer, larger convolutions, for the memory of the
        whole latent's decode instead of one tile's.
    """

    cuda_graphs: bool = False
    tile_memory_decode: bool = False
    fast_upscaler_load: bool = False
    fast_audio_vae_load: bool = False
    fast_text_encoder_load: bool = False
    pinned_checkpoint_load: bool = False
    checkpoint_beside_prompts: bool = False
    lora_bypass: bool = False
    lora_stack: bool = False
    resident_upscaler: bool = False
    compile_blocks: bool = False
    early_prompts: bool = False
    decode_tile_px: int = 0


@dataclasses.dataclass(frozen=True)
class Encoding:
    """The x264 preset and CRF of the MP4 (X264_PRESET, X264_CRF), applied by the worker's LTX2SaveVideo node,
    which replaces ComfyUI's SaveVideo (fixed at libx264's defaults, preset medium, CRF 23)."""

    preset: str
    crf: int


class WorkflowError(ValueError):
    """workflow_api.json does not have the shape this code patches."""


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

    def build(self, req: VideoRequest, filename_prefix: str, images: Sequence[str] = (),
              choices: GraphChoices = GraphChoices(), encoding: Encoding | None = None,
              loras: Sequence[str] = (), enhance_max_tokens: int = 512, audio: str | None = None,
              video: str | None = None, control_files: Mapping[str, str] | None = None,
              encoded_prompts: str | None = None) -> dict[str, Any]:
        """A patched copy of the graph for one request; the loaded graph is never changed. `images[i]` is
        req.keyframes[i]'s image, already uploaded to ComfyUI's input folder; `loras` are the files of
        req.loras, then of the camera move's LoRA if any, as ComfyUI's `loras` folder lists them. Without
        `encoding` the MP4 is written by ComfyUI's SaveVideo as exported. `enhance_max_tokens`: the most the
        prompt writer may write (ENHANCE_MAX_TOKENS), when the request asks for it. `audio`: req.audio_input's
        file, already uploaded to ComfyUI's input folder; `video` likewise req.video's. `loras` then ends with the
        control's IC-LoRA when there is a video; `control_files` are its preprocessor's files by manifest role
        (control.check_available). `encoded_prompts`: the file of this request's two conditionings, written by the
        early prompt encoder (ltx2_worker.early_prompts), read in place of the text encoder and its prompts."""
        if encoded_prompts is not None and req.enhance_prompt:
            raise ValueError("enhance_prompt writes its prompt in the graph: it cannot take prompts encoded before")
        if (audio is None) != (req.audio_input is None) or (video is None) != (req.video is None):
            raise ValueError("an audio file goes with a request's audio_input and a video with its video, and only "
                             "with them")
        strengths = [spec.strength for spec in req.loras] + ([req.camera_strength] if req.camera_motion else []) \
            + ([1.0] if req.video else [])  # the IC-LoRA at full strength, as the blueprints apply it
        if len(images) != len(req.keyframes) or len(loras) != len(strengths):
            raise ValueError(f"{len(images)} images for {len(req.keyframes)} keyframes, {len(loras)} LoRA files "
                             f"for {len(strengths)} LoRAs (the camera move's included)")
        graph = copy.deepcopy(self.graph)
        gen_w, gen_h = generation_size(req.width, req.height)
        positive, negative = self.prompt_texts(req)
        self.node(graph, "positive_prompt")["text"] = positive
        self.node(graph, "negative_prompt")["text"] = negative
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
        self.node(graph, "output_crop").update(width=req.width, height=req.height, x=(gen_w - req.width) // 2,
                                               y=(gen_h - req.height) // 2)
        self.node(graph, "create_video")["fps"] = float(req.fps)
        self.node(graph, "save_video")["filename_prefix"] = filename_prefix
        if req.mode == "distilled":
            self._distilled(graph)  # stage 2 then uses the checkpoint's model as it is: nothing to re-apply
        elif choices.lora_bypass:  # LoraLoaderModelOnly's inputs, on the checkpoint's model as exported
            graph[self.node_ids["lora"]]["class_type"] = LORA_STACK_NODE if choices.lora_stack else LORA_BYPASS_NODE
        if loras:
            self._user_loras(graph, list(zip(loras, strengths, strict=True)),
                             LORA_STACK_NODE if choices.lora_stack else LORA_MERGE_NODE)
        if images:
            self._keyframes(graph, list(zip(images, req.keyframes, strict=True)))
        if audio is not None:
            self._audio_input(graph, audio, req.frame_count / req.fps)
        if video is not None:
            self._control_video(graph, video, req, control_files or {})
        if req.enhance_prompt:
            first = [n for n, k in enumerate(req.keyframes) if k.frame == 0]
            self._enhance_prompt(graph, req, f"ltx2:keyframe_{first[0]}" if first else None, enhance_max_tokens)
        if not req.audio:
            self._video_only(graph)
        if choices.compile_blocks:
            self._wrap_stage1_model(graph, "compile_blocks_stage1", COMPILE_BLOCKS_NODE)
        if choices.cuda_graphs:
            self._cuda_graphs(graph)
        if choices.decode_tile_px:
            self.node(graph, "video_decode")["tile_size"] = choices.decode_tile_px
        for choice, (role, class_type) in SWAPPED_NODES.items():
            if getattr(choices, choice):
                graph[self.node_ids[role]]["class_type"] = class_type
        if encoding is not None:
            self._encoding(graph, encoding)
        if encoded_prompts is not None:
            self._encoded_prompts(graph, encoded_prompts)
        return graph

    def prompt_texts(self, req: VideoRequest) -> tuple[str, str]:
        """The positive and negative texts the graph encodes for `req` (the graph's negative when it has none)."""
        negative = req.negative_prompt if req.negative_prompt is not None else self.node(self.graph,
                                                                                          "negative_prompt")["text"]
        return req.prompt, negative

    def _encoded_prompts(self, graph: dict[str, Any], path: str) -> None:
        """The two CLIPTextEncode nodes give way to LTX2EncodedPrompts reading `path` (positive, then negative);
        the text encoder's loader goes too where nothing else takes its output."""
        encoded = self._add(graph, "encoded_prompts", ENCODED_PROMPTS_NODE, {"path": path})
        outputs = {self.node_ids["positive_prompt"]: [encoded, 0], self.node_ids["negative_prompt"]: [encoded, 1]}
        for node_id in outputs:
            del graph[node_id]
        for node in graph.values():
            for name, value in node["inputs"].items():
                if isinstance(value, list) and len(value) == 2 and value[0] in outputs and value[1] == 0:
                    node["inputs"][name] = outputs[value[0]]
        loader = self.node_ids["text_encoder"]
        if not any(isinstance(value, list) and value[:1] == [loader]
                   for node in graph.values() for value in node["inputs"].values()):
            del graph[loader]

    def _encoding(self, graph: dict[str, Any], encoding: Encoding) -> None:
        """The save node becomes LTX2SaveVideo under the same id (so its answer in /history is found as before),
        with the same video and file name prefix."""
        node = graph[self.node_ids["save_video"]]
        inputs = node["inputs"]
        node["class_type"] = SAVE_VIDEO_NODE
        node["inputs"] = {"video": inputs["video"], "filename_prefix": inputs["filename_prefix"],
                          "preset": encoding.preset, "crf": encoding.crf}

    def _cuda_graphs(self, graph: dict[str, Any]) -> None:
        """Stage 1's model goes through the LTX2CudaGraphs node. Only stage 1: its 20 batched steps are where
        launching kernels from Python costs time (measured: 9.7 -> 8.0 s on an H100); stage 2's three large
        steps are bound by the GPU (2.9 s either way), and recording both stages raised peak GPU memory from 73.5
        to 77.5 GB."""
        self._wrap_stage1_model(graph, "cuda_graphs_stage1", CUDA_GRAPHS_NODE)

    def _wrap_stage1_model(self, graph: dict[str, Any], role: str, class_type: str) -> None:
        """A MODEL -> MODEL node (inputs `model`, `enabled`) between stage 1's guider and the model it had."""
        inputs = self.node(graph, "guider_stage1")
        node = self._add(graph, role, class_type, {"model": inputs["model"], "enabled": True})
        inputs["model"] = [node, 0]

    def _video_only(self, graph: dict[str, Any]) -> None:
        """No audio branch at all: both samplers denoise the video latent alone (ComfyUI's LTXAV model takes
        a latent without audio part), and the audio latent, its VAE and its decode become unreachable, so
        ComfyUI never runs them. The MP4 has no audio track."""
        sampler1 = self.node_ids["sampler_stage1"]
        video_in = self.node(graph, "av_latent_stage1")["video_latent"]  # after image-to-video, if any
        self.node(graph, "sampler_stage1")["latent_image"] = video_in
        self.node(graph, "scheduler")["latent"] = video_in
        self.node(graph, "crop_guides")["latent"] = [sampler1, 0]
        self.node(graph, "sampler_stage2")["latent_image"] = self.node(graph, "av_latent_stage2")["video_latent"]
        stage2_video = [self.node_ids["sampler_stage2"], 1]
        crop2 = graph.get("ltx2:crop_guides_stage2")  # keyframes past frame 0: the guides come off before decoding
        if crop2:
            crop2["inputs"]["latent"] = stage2_video
        else:
            self.node(graph, "video_decode")["samples"] = stage2_video
        del self.node(graph, "create_video")["audio"]

    def _control_video(self, graph: dict[str, Any], name: str, req: VideoRequest, files: Mapping[str, str]) -> None:
        """Video-to-video, as ComfyUI's "Canny", "Depth" and "Pose to Video (LTX 2.0)" blueprints wire it: the
        source's first frame_count frames, at the generation size, turned into Canny edges, depth maps or pose
        skeletons, are one guide at frame 0 of stage 1's latent (LTXVAddGuide, at control_strength), which the
        IC-LoRA (among `loras`) teaches the model to follow; LTXVCropGuides takes the guide off after stage 1,
        and stage 2 refines with the IC-LoRA alone."""
        gen_w, gen_h = generation_size(req.width, req.height)
        load = self._add(graph, "control_video", "LoadVideo", {"file": name})
        parts = self._add(graph, "control_video_parts", "GetVideoComponents", {"video": [load, 0]})
        frames = self._add(graph, "control_video_frames", "ImageFromBatch",
                           {"image": [parts, 0], "batch_index": 0, "length": req.frame_count})
        sized = self._add(graph, "control_video_sized", "ImageScale",
                          {"image": [frames, 0], "upscale_method": "bilinear", "width": gen_w, "height": gen_h,
                           "crop": "center"})
        if req.control == "depth":
            edges = self._depth_maps(graph, [sized, 0], files["depth_model"], files["depth_vae"])
        elif req.control == "pose":
            edges = self._pose_maps(graph, [sized, 0], files["pose_model"])
        else:
            edges = self._add(graph, "control_video_canny", "Canny",
                              {"image": [sized, 0], "low_threshold": CANNY_LOW, "high_threshold": CANNY_HIGH})
        stage1, guider = self.node(graph, "av_latent_stage1"), self.node(graph, "guider_stage1")
        guide = self._add(graph, "control_guide", "LTXVAddGuide",
                          {"positive": guider["positive"], "negative": guider["negative"],
                           "vae": [self.node_ids["checkpoint"], 2], "latent": stage1["video_latent"],
                           "image": [edges, 0], "frame_idx": 0, "strength": req.control_strength})
        stage1["video_latent"] = [guide, 2]
        guider.update(positive=[guide, 0], negative=[guide, 1])
        self.node(graph, "crop_guides").update(positive=[guide, 0], negative=[guide, 1])

    def _depth_maps(self, graph: dict[str, Any], frames: list, model_file: str, vae_file: str) -> str:
        """ComfyUI's "Image to Depth Map (Lotus)" subgraph on every frame: the frames encoded by the SD VAE, one
        noiseless Euler step of Lotus-D from sigma 999 under its fixed conditioning, decoded and inverted (near is
        bright). Returns the node whose output 0 is the depth maps, at the frames' size."""
        unet = self._add(graph, "depth_model", *self._loader("depth_model", model_file, weight_dtype="default"))
        vae = self._add(graph, "depth_vae", *self._loader("depth_vae", vae_file))
        latent = self._add(graph, "depth_encode", "VAEEncode", {"pixels": frames, "vae": [vae, 0]})
        cond = self._add(graph, "depth_conditioning", "LotusConditioning", {})
        guider = self._add(graph, "depth_guider", "BasicGuider", {"model": [unet, 0], "conditioning": [cond, 0]})
        sigmas = self._add(graph, "depth_scheduler", "BasicScheduler",
                           {"model": [unet, 0], "scheduler": "normal", "steps": 1, "denoise": 1.0})
        first = self._add(graph, "depth_first_sigma", "SetFirstSigma",
                          {"sigmas": [sigmas, 0], "sigma": LOTUS_FIRST_SIGMA})
        sample = self._add(graph, "depth_sampler", "SamplerCustomAdvanced",
                           {"noise": [self._add(graph, "depth_noise", "DisableNoise", {}), 0],
                            "guider": [guider, 0],
                            "sampler": [self._add(graph, "depth_sampler_select", "KSamplerSelect",
                                                  {"sampler_name": "euler"}), 0],
                            "sigmas": [first, 0], "latent_image": [latent, 0]})
        decoded = self._add(graph, "depth_decode", "VAEDecode", {"samples": [sample, 0], "vae": [vae, 0]})
        return self._add(graph, "depth_maps", "ImageInvert", {"image": [decoded, 0]})

    def _pose_maps(self, graph: dict[str, Any], frames: list, model_file: str) -> str:
        """ComfyUI's "Image to Pose Map (SDPose-OOD)" on every frame: SDPose's whole-body keypoints (one figure a
        frame, the whole frame its box), drawn as OpenPose skeletons on black at the frames' size."""
        sdpose = self._add(graph, "pose_model", *self._loader("pose_model", model_file))
        points = self._add(graph, "pose_keypoints", "SDPoseKeypointExtractor",
                           {"model": [sdpose, 0], "vae": [sdpose, 2], "image": frames, "batch_size": POSE_BATCH})
        return self._add(graph, "pose_maps", "SDPoseDrawKeypoints", {"keypoints": [points, 0], **POSE_DRAWING})

    @staticmethod
    def _loader(role: str, file: str, **inputs: Any) -> tuple[str, dict[str, Any]]:
        """(class_type, inputs) of the node that loads a preprocessor file (PREPROCESSOR_LOADERS)."""
        node, field = PREPROCESSOR_LOADERS[role]
        return node, {field: file, **inputs}

    def _audio_input(self, graph: dict[str, Any], name: str, seconds: float) -> None:
        """Audio-to-video, wired as ComfyUI's LTX-2 image+audio-to-video template does: the user's track, cut to
        the clip, encoded by the audio VAE and given a noise mask of zeros, so the sampler keeps it as it is in
        both stages (stage 2 takes stage 1's audio latent, mask and all) while the video is generated to it. The
        MP4 carries the track itself, not its trip through the audio VAE, whose decode then never runs."""
        load = self._add(graph, "audio_input", "LoadAudio", {"audio": name})
        cut = self._add(graph, "audio_input_cut", "TrimAudioDuration",
                        {"audio": [load, 0], "start_index": 0.0, "duration": seconds})
        encoded = self._add(graph, "audio_input_encode", "LTXVAudioVAEEncode",
                            {"audio": [cut, 0], "audio_vae": [self.node_ids["audio_vae_loader"], 0]})
        zeros = self._add(graph, "audio_input_mask", "SolidMask", {"value": 0.0, "width": 8, "height": 8})
        kept = self._add(graph, "audio_input_kept", "SetLatentNoiseMask",
                         {"samples": [encoded, 0], "mask": [zeros, 0]})
        self.node(graph, "av_latent_stage1")["audio_latent"] = [kept, 0]
        self.node(graph, "create_video")["audio"] = [cut, 0]

    def _enhance_prompt(self, graph: dict[str, Any], req: VideoRequest, first_frame: str | None,
                        max_tokens: int) -> None:
        """The positive prompt's text becomes what the text encoder writes from the request's prompt (the
        image-to-video system prompt, seeing the first frame, when there is one); PreviewAny reports it."""
        inputs = {"clip": [self.node_ids["text_encoder"], 0], "prompt": req.prompt,
                  "max_length": max_tokens, "sampling_mode": "on",
                  **{f"sampling_mode.{k}": v for k, v in ENHANCE_SAMPLING.items()}, "sampling_mode.seed": req.seed,
                  "thinking": False, "use_default_template": True}
        if first_frame is not None:
            inputs["image"] = [first_frame, 0]
        enhancer = self._add(graph, ENHANCER_NODE.removeprefix("ltx2:"), ENHANCE_NODE, inputs)
        self.node(graph, "positive_prompt")["text"] = [enhancer, 0]
        self._add(graph, ENHANCED_PROMPT_NODE.removeprefix("ltx2:"), "PreviewAny", {"source": [enhancer, 0]})

    def _add(self, graph: dict[str, Any], role: str, class_type: str, inputs: dict[str, Any]) -> str:
        node_id = f"ltx2:{role}"
        graph[node_id] = {"class_type": class_type, "inputs": inputs, "_meta": {"title": role}}
        return node_id

    def _distilled(self, graph: dict[str, Any]) -> None:
        for role in ("checkpoint", "text_encoder", "audio_vae_loader"):
            self.node(graph, role)["ckpt_name"] = DISTILLED_CHECKPOINT
        self.node(graph, "guider_stage1")["cfg"] = 1.0
        sigmas = self._add(graph, "distilled_sigmas_stage1", "ManualSigmas", {"sigmas": DISTILLED_STAGE1_SIGMAS})
        self.node(graph, "sampler_stage1")["sigmas"] = [sigmas, 0]
        self.node(graph, "guider_stage2")["model"] = [self.node_ids["checkpoint"], 0]

    def _user_loras(self, graph: dict[str, Any], loras: list[tuple[str, float]], class_type: str) -> None:
        """The request's LoRAs, chained on the checkpoint's model, so both stages use them; stage 2's distilled
        LoRA (standard mode) goes on top. As bypass branches (LTX2LoraBypass: each patched layer adds
        up(down(x)) to its FP8 output) changing LoRAs between jobs re-patches no weights; merged
        (LoraLoaderModelOnly, where the worker's node is missing) they are re-patched."""
        model = [self.node_ids["checkpoint"], 0]
        for n, (name, strength) in enumerate(loras):
            model = [self._add(graph, f"user_lora_{n}", class_type,
                               {"model": model, "lora_name": name, "strength_model": strength}), 0]
        self.node(graph, "guider_stage1")["model"] = model
        stage2 = self.node(graph, "guider_stage2")
        if stage2["model"] == [self.node_ids["checkpoint"], 0]:  # distilled mode: stage 2 on the checkpoint
            stage2["model"] = model
        else:
            self.node(graph, "lora")["model"] = model

    def _keyframes(self, graph: dict[str, Any], keyframes: list[tuple[str, Keyframe]]) -> None:
        """Images the clip must show. Frame 0 replaces the first latent frame in both stages
        (LTXVImgToVideoInplace, which scales and centre-crops the image to each stage's size itself). Any other
        frame is ComfyUI's LTXVAddGuide: the image, encoded alone, is appended to the video latent as guide frames
        placed at that frame's time, before the audio is joined (it refuses an audio-video latent); the model
        denoises the clip attending to them, and LTXVCropGuides takes them off after each stage. Each image
        goes through LTXVPreprocess, which compresses it like a video frame so motion starts naturally."""
        vae = [self.node_ids["checkpoint"], 2]
        prepared = []
        for n, (name, keyframe) in enumerate(keyframes):
            load = self._add(graph, f"keyframe_{n}", "LoadImage", {"image": name})
            prepared.append((self._add(graph, f"keyframe_{n}_preprocess", "LTXVPreprocess",
                                       {"image": [load, 0], "img_compression": I2V_IMAGE_COMPRESSION}), keyframe))
        crop1 = self.node_ids["crop_guides"]
        conditioning = {"1": [[self.node_ids["conditioning"], 0], [self.node_ids["conditioning"], 1]],
                        "2": [[crop1, 0], [crop1, 1]]}
        for stage, concat in (("1", "av_latent_stage1"), ("2", "av_latent_stage2")):
            inputs = self.node(graph, concat)
            latent = inputs["video_latent"]
            positive, negative = conditioning[stage]
            for n, (image, keyframe) in enumerate(prepared):
                if keyframe.frame == 0:
                    latent = [self._add(graph, f"keyframe_{n}_stage{stage}", "LTXVImgToVideoInplace",
                                        {"vae": vae, "image": [image, 0], "latent": latent,
                                         "strength": keyframe.strength, "bypass": False}), 0]
            for n, (image, keyframe) in enumerate(prepared):
                if keyframe.frame != 0:
                    guide = self._add(graph, f"keyframe_{n}_stage{stage}", "LTXVAddGuide",
                                      {"positive": positive, "negative": negative, "vae": vae, "latent": latent,
                                       "image": [image, 0], "frame_idx": keyframe.frame,
                                       "strength": keyframe.strength})
                    positive, negative, latent = [guide, 0], [guide, 1], [guide, 2]
            inputs["video_latent"] = latent
            conditioning[stage] = [positive, negative]
        if any(keyframe.frame for _, keyframe in prepared):
            (positive1, negative1), (positive2, negative2) = conditioning["1"], conditioning["2"]
            self.node(graph, "guider_stage1").update(positive=positive1, negative=negative1)
            self.node(graph, "crop_guides").update(positive=positive1, negative=negative1)
            self.node(graph, "guider_stage2").update(positive=positive2, negative=negative2)
            decode = self.node(graph, "video_decode")
            crop2 = self._add(graph, "crop_guides_stage2", "LTXVCropGuides",
                              {"positive": positive2, "negative": negative2, "latent": decode["samples"]})
            decode["samples"] = [crop2, 2]

    def defaults(self) -> dict[str, Any]:
        """The graph's own values for what a request may leave out (reported in the README and responses)."""
        return {
            "negative_prompt": self.node(self.graph, "negative_prompt")["text"],
            "steps": self.node(self.graph, "scheduler")["steps"],
            "cfg": self.node(self.graph, "guider_stage1")["cfg"],
        }
