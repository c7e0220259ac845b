"""`enhance_prompt` against the protocol ComfyUI: the text encoder's prompt writer (TextGenerateLTX2Prompt) feeds
the positive prompt, seeded from the request, its text comes back in the response, and an image request whose
Gemma file cannot see images is refused before ComfyUI is asked."""

from __future__ import annotations

import base64
import io
import json
import struct

import pytest
from PIL import Image

from ltx2_worker.text_encoder import text_encoder_file
from ltx2_worker.worker import Worker

from comfy_server import ProtocolComfy
from helpers import decode_video_field, files_under, loopback_settings

SMALL = {"prompt": "a lighthouse at dusk", "width": 512, "height": 288, "frame_count": 9, "seed": 7}


def header_only_safetensors(names: list[str]) -> bytes:
    """A valid safetensors file whose tensors have these names (one float each)."""
    header = {name: {"dtype": "F32", "shape": [1], "data_offsets": [4 * i, 4 * i + 4]} for i, name in enumerate(names)}
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw)) + raw + b"\0" * (4 * len(names))


@pytest.fixture
def stack(tmp_path):
    comfy_dir = tmp_path / "comfyui"
    comfy = ProtocolComfy(output_dir=comfy_dir / "output", input_dir=comfy_dir / "input").start()
    settings = loopback_settings(comfy.url, comfy_dir / "output", tmp_path, COMFYUI_DIR=str(comfy_dir),
                                 NETWORK_VOLUME_PATH=str(tmp_path / "volume"))
    yield comfy, Worker(settings), settings
    comfy.stop()


def write_text_encoder(settings, vision: bool) -> None:
    names = ["model.layers.0.mlp.down_proj.weight", "model.norm.weight"]
    if vision:
        names += ["vision_model.embeddings.patch_embedding.weight", "multi_modal_projector.mm_input_projection_weight"]
    path = text_encoder_file(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(header_only_safetensors(names))


def png() -> str:
    buf = io.BytesIO()
    Image.new("RGB", (640, 360), (10, 120, 200)).save(buf, "PNG")
    return base64.b64encode(buf.getvalue()).decode()


def nodes_of(comfy, class_type: str) -> list[tuple[str, dict]]:
    return [(nid, n) for nid, n in comfy.submitted[-1]["prompt"].items() if n["class_type"] == class_type]


def test_without_enhance_prompt_the_graph_has_no_prompt_writer(stack):
    comfy, worker, _ = stack
    out = worker.handle({"id": "plain", "input": SMALL})
    assert "error" not in out and "prompt_enhanced" not in out and "enhance_prompt" not in out["timings"], out
    assert nodes_of(comfy, "TextGenerateLTX2Prompt") == []


def test_the_enhanced_prompt_is_encoded_returned_and_repeatable(stack):
    comfy, worker, _ = stack
    out = worker.handle({"id": "e1", "input": {**SMALL, "enhance_prompt": True}})
    assert "error" not in out, out
    [(writer_id, writer)] = nodes_of(comfy, "TextGenerateLTX2Prompt")
    assert writer["inputs"]["prompt"] == SMALL["prompt"] and "image" not in writer["inputs"]
    assert writer["inputs"]["sampling_mode"] == "on" and writer["inputs"]["sampling_mode.seed"] == 7
    positive = [n for _, n in nodes_of(comfy, "CLIPTextEncode") if n["_meta"]["title"] == "positive_prompt"]
    assert positive[0]["inputs"]["text"] == [writer_id, 0], "the encoder gets the written prompt"
    # the protocol ComfyUI writes "Style: cinematic. <prompt>, told in detail (seed <seed>)"
    assert out["prompt_enhanced"] == "Style: cinematic. a lighthouse at dusk, told in detail (seed 7)"
    assert out["timings"]["enhance_prompt"] >= 0 and decode_video_field(out)["width"] == 512
    again = worker.handle({"id": "e2", "input": {**SMALL, "enhance_prompt": True}})
    other = worker.handle({"id": "e3", "input": {**SMALL, "enhance_prompt": True, "seed": 8}})
    assert again["prompt_enhanced"] == out["prompt_enhanced"] != other["prompt_enhanced"]
    assert files_under(comfy.output_dir) == []


def test_with_an_image_the_writer_sees_the_first_frame(stack):
    comfy, worker, settings = stack
    write_text_encoder(settings, vision=True)
    out = worker.handle({"id": "i", "input": {**SMALL, "image": png(), "enhance_prompt": True}})
    assert "error" not in out, out
    [(_, writer)] = nodes_of(comfy, "TextGenerateLTX2Prompt")
    [(load_id, _)] = nodes_of(comfy, "LoadImage")
    assert writer["inputs"]["image"] == [load_id, 0]
    assert "after a 640 x 360 first frame" in out["prompt_enhanced"]


def test_an_image_request_is_refused_when_the_gemma_file_cannot_see_images(stack):
    comfy, worker, settings = stack
    write_text_encoder(settings, vision=False)
    out = worker.handle({"id": "blind", "input": {**SMALL, "image": png(), "enhance_prompt": True}})
    assert out["error"].startswith("enhance_prompt: with an image needs Gemma 3's vision weights"), out
    assert "gemma_3_12B_it_fp4_mixed.safetensors has none" in out["error"]
    assert comfy.submitted == [] and files_under(comfy.input_dir) == [], "nothing sent to ComfyUI"
    text_only = worker.handle({"id": "text", "input": {**SMALL, "enhance_prompt": True}})
    assert "error" not in text_only, "the text variant needs no vision weights"


def test_enhance_prompt_must_be_a_boolean(stack):
    comfy, worker, _ = stack
    out = worker.handle({"id": "bad", "input": {**SMALL, "enhance_prompt": "yes"}})
    assert out == {"error": "enhance_prompt: must be true or false, got a string"}
    assert comfy.submitted == []


def test_enhance_max_tokens_bounds_what_the_writer_may_write(stack, tmp_path):
    comfy, _, settings = stack
    worker = Worker(settings.replace(enhance_max_tokens=64))
    assert "error" not in worker.handle({"id": "short", "input": {**SMALL, "enhance_prompt": True}})
    [(_, writer)] = nodes_of(comfy, "TextGenerateLTX2Prompt")
    assert writer["inputs"]["max_length"] == 64
