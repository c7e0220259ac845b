"""Issue 7's modes end to end against the protocol ComfyUI: distilled, image-to-video, audio off."""

from __future__ import annotations

import base64
import io

import pytest
from PIL import Image

from ltx2_worker.worker import Worker

from comfy_server import DEFAULT_MODEL_FILES, ProtocolComfy
from helpers import decode_video_field, files_under, loopback_settings

SMALL = {"prompt": "a lighthouse at dusk", "width": 512, "height": 288, "frame_count": 9, "seed": 1}
DISTILLED = "ltx-2-19b-distilled-fp8.safetensors"


def start(tmp_path, model_files=DEFAULT_MODEL_FILES):
    comfy_dir = tmp_path / "comfyui"
    comfy = ProtocolComfy(output_dir=comfy_dir / "output", input_dir=comfy_dir / "input",
                          model_files=model_files).start()
    worker = Worker(loopback_settings(comfy.url, comfy_dir / "output", tmp_path, COMFYUI_DIR=str(comfy_dir)))
    return comfy, worker, comfy_dir


@pytest.fixture
def stack(tmp_path):
    comfy, worker, comfy_dir = start(tmp_path)
    yield comfy, worker, comfy_dir
    comfy.stop()


def test_distilled_mode_runs_on_the_distilled_checkpoint(tmp_path):
    files = {**DEFAULT_MODEL_FILES, "checkpoints": [*DEFAULT_MODEL_FILES["checkpoints"], DISTILLED]}
    comfy, worker, _ = start(tmp_path, files)
    try:
        out = worker.handle({"id": "d", "input": {**SMALL, "mode": "distilled"}})
    finally:
        comfy.stop()
    assert "error" not in out, out
    assert out["mode"] == "distilled" and decode_video_field(out)["width"] == 512
    graph = comfy.submitted[-1]["prompt"]
    assert {n["inputs"]["ckpt_name"] for n in graph.values() if "ckpt_name" in n["inputs"]} == {DISTILLED}


def test_distilled_mode_without_its_checkpoint_says_how_to_enable_it(stack):
    comfy, worker, _ = stack
    out = worker.handle({"id": "d", "input": {**SMALL, "mode": "distilled"}})
    assert out["error"].startswith(f"mode: distilled needs {DISTILLED}")
    assert "[model.checkpoint_distilled]" in out["error"]
    assert comfy.submitted == []


def _png(width=640, height=360):
    buf = io.BytesIO()
    Image.new("RGB", (width, height), (10, 120, 200)).save(buf, "PNG")
    return base64.b64encode(buf.getvalue()).decode()


def test_image_to_video_uploads_the_first_frame_and_cleans_up(stack):
    comfy, worker, comfy_dir = stack
    out = worker.handle({"id": "i2v", "input": {**SMALL, "image": "data:image/png;base64," + _png(),
                                                "image_strength": 0.9}})
    assert "error" not in out, out
    assert decode_video_field(out) == {"width": 512, "height": 288, "frames": 9, "fps": 24.0, "audio": True}
    graph = comfy.submitted[-1]["prompt"]
    loads = [n["inputs"]["image"] for n in graph.values() if n["class_type"] == "LoadImage"]
    assert len(loads) == 1 and loads[0].startswith("ltx2-i2v-") and loads[0].endswith(".png")
    assert files_under(comfy_dir / "input") == [] and files_under(comfy_dir / "output") == []


def test_an_undecodable_image_never_reaches_comfyui(stack):
    comfy, worker, _ = stack
    out = worker.handle({"id": "bad", "input": {**SMALL, "image": base64.b64encode(b"\x89PNG broken").decode()}})
    assert out == {"error": "image: is not a decodable PNG, JPEG or WebP image"}
    assert comfy.submitted == []


def test_audio_off_gives_an_mp4_without_sound(stack):
    _, worker, _ = stack
    out = worker.handle({"id": "quiet", "input": {**SMALL, "audio": False}})
    assert decode_video_field(out)["audio"] is False and out["audio"] is False


def test_first_and_last_keyframes_guide_both_stages_and_come_off_before_the_decode(stack):
    comfy, worker, comfy_dir = stack
    job = {**SMALL, "frame_count": 25, "image": _png(), "keyframes": [{"image": _png(300, 300), "frame": -1,
                                                                       "strength": 0.8}]}
    out = worker.handle({"id": "kf", "input": job})
    assert "error" not in out, out
    assert decode_video_field(out) == {"width": 512, "height": 288, "frames": 25, "fps": 24.0, "audio": True}
    assert out["keyframes"] == [{"frame": 0, "strength": 1.0}, {"frame": 24, "strength": 0.8}]
    graph = comfy.submitted[-1]["prompt"]
    guides = [n["inputs"] for n in graph.values() if n["class_type"] == "LTXVAddGuide"]
    assert [(g["frame_idx"], g["strength"]) for g in guides] == [(24, 0.8), (24, 0.8)]
    assert sum(n["class_type"] == "LTXVCropGuides" for n in graph.values()) == 2
    assert sum(n["class_type"] == "LTXVImgToVideoInplace" for n in graph.values()) == 2
    assert files_under(comfy_dir / "input") == [], "both uploaded images are removed"


def test_keyframes_without_audio_and_a_bad_keyframe_image(stack):
    comfy, worker, _ = stack
    out = worker.handle({"id": "kf", "input": {**SMALL, "frame_count": 17, "audio": False,
                                               "keyframes": [{"image": _png(), "frame": 8}]}})
    assert "error" not in out, out
    assert decode_video_field(out)["frames"] == 17 and decode_video_field(out)["audio"] is False
    submitted = len(comfy.submitted)
    out = worker.handle({"id": "kf", "input": {**SMALL, "keyframes": [{"image": _png(), "frame": 0},
                                                                      {"image": "bm90IGFuIGltYWdl", "frame": 8}]}})
    assert out == {"error": "keyframes[1].image: is not a decodable PNG, JPEG or WebP image"}
    assert len(comfy.submitted) == submitted
