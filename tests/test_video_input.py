"""Video-to-video (`video`, `control`, `control_strength`) against the protocol ComfyUI: the source clip checked
by ComfyUI's own decoder before ComfyUI is asked, the clip fitted to it (its frames and frame rate), Canny edges of
its frames as one guide at frame 0 of stage 1 under the IC-LoRA fetched from Lightricks' repo on HF_ENDPOINT,
the guide cropped before the decode."""

from __future__ import annotations

import base64
import hashlib
import io
import sys
from fractions import Fraction

import av
import numpy as np
import pytest
from PIL import Image
from test_loras import DISTILLED_LORA, _lora, _settings, lora_comfy, web  # noqa: F401  (web: the loopback hub)

from ltx2_worker.worker import Worker

from helpers import decode_video_field, files_under

SMALL = {"prompt": "a dancer in a red coat", "width": 512, "height": 288, "seed": 4}
IC_CANNY = "/Lightricks/LTX-2-19b-IC-LoRA-Canny-Control/resolve/main/ltx-2-19b-ic-lora-canny-control.safetensors"


def clip(frames: int, fps: int = 30, size=(320, 180), fmt: str = "mp4") -> bytes:
    """A real video: a white square moving across a dark frame."""
    buf = io.BytesIO()
    with av.open(buf, "w", format=fmt) as out:
        stream = out.add_stream("libx264" if fmt == "mp4" else "libvpx-vp9", rate=Fraction(fps))
        stream.width, stream.height, stream.pix_fmt = size[0], size[1], "yuv420p"
        for i in range(frames):
            img = np.full((size[1], size[0], 3), 20, np.uint8)
            x = (i * 7) % (size[0] - 40)
            img[60:100, x:x + 40] = 255
            out.mux(stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")))
        out.mux(stream.encode())
    return buf.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@pytest.fixture
def stack(tmp_path, web):  # noqa: F811
    settings, comfy = lora_comfy(tmp_path, COMFY_PYTHON=sys.executable)
    web["routes"][IC_CANNY] = _lora(tmp_path / "ic-canny.safetensors")
    yield comfy, Worker(settings), web
    comfy.stop()


def by_title(comfy) -> dict[str, tuple[str, dict]]:
    return {n["_meta"]["title"]: (nid, n) for nid, n in comfy.submitted[-1]["prompt"].items()}


def test_a_canny_job_follows_the_source_at_its_length_and_rate(stack):
    comfy, worker, hub = stack
    out = worker.handle({"id": "v2v", "input": {**SMALL, "video": b64(clip(60, fps=30)), "control_strength": 0.7}})
    assert "error" not in out, out
    # 60 source frames: the most 8k+1 within them is 57, at the source's 30 fps
    assert (out["frame_count"], out["fps"]) == (57, 30)
    assert decode_video_field(out) == {"width": 512, "height": 288, "frames": 57, "fps": 30.0, "audio": True}
    assert out["control"] == {"kind": "canny", "strength": 0.7,
                              "ic_lora_sha256": hashlib.sha256(hub["routes"][IC_CANNY]).hexdigest(),
                              "source_frames": 60, "source_fps": 30.0, "source_size": [320, 180], "cut_by": None,
                              "used_frames": 57}
    nodes = by_title(comfy)
    guide_id, guide = nodes["control_guide"]
    assert guide["inputs"]["frame_idx"] == 0 and guide["inputs"]["strength"] == 0.7
    assert nodes["control_video_frames"][1]["inputs"]["length"] == 57
    assert nodes["control_video_sized"][1]["inputs"]["width"] == 512, "at the generation size (512 x 320)"
    assert nodes["av_latent_stage1"][1]["inputs"]["video_latent"] == [guide_id, 2]
    assert nodes["crop_guides"][1]["inputs"]["positive"] == [guide_id, 0], "the guide comes off after stage 1"
    ic = [n for nid, n in comfy.submitted[-1]["prompt"].items() if nid.startswith("ltx2:user_lora_")]
    assert len(ic) == 1 and ic[0]["inputs"]["strength_model"] == 1.0
    stage1, stage2 = comfy.sampled[-2:]  # the IC-LoRA in both stages, the distilled LoRA in stage 2 only
    ic_lora = (ic[0]["inputs"]["lora_name"], 1.0)
    assert stage1[1]["merged"] == (ic_lora,), stage1
    assert stage2[1]["merged"] == (ic_lora, (DISTILLED_LORA, 1.0)), stage2
    assert IC_CANNY in hub["site"].hits and files_under(comfy.input_dir) == []


def test_frame_count_and_fps_given_are_kept_and_checked_against_the_source(stack):
    comfy, worker, _ = stack
    source = b64(clip(40, fps=25))
    ok = worker.handle({"id": "ok", "input": {**SMALL, "video": source, "frame_count": 33, "fps": 24}})
    assert "error" not in ok and (ok["frame_count"], ok["fps"]) == (33, 24), ok
    long = worker.handle({"id": "long", "input": {**SMALL, "video": source, "frame_count": 41}})
    assert long["error"].startswith("frame_count: is 41, more than the video's 40 frames"), long
    assert len(comfy.submitted) == 1


@pytest.mark.parametrize("change, expected", [
    ({"video": b64(b"no video here")}, "video: must be an MP4, MOV or WebM video, and this file cannot be decoded"),
    ({"video": b64(clip(5))}, "video: has 5 frames; a clip needs at least 9"),
    ({"control": "canny"}, "control: needs a video"),
    ({"control_strength": 0.5}, "control_strength: needs a video"),
    ({"video": "x", "control": "edges"}, "control: must be one of canny, depth, pose, got 'edges'"),
    ({"video": b64(clip(20)), "control": "depth"}, "control: depth needs its preprocessor's files (depth_model, "
     "depth_vae) on the volume, which this worker provisions only when ENABLE_MODELS lists control_depth"),
    ({"video": b64(clip(20)), "control": "pose"}, "control: pose needs its preprocessor's files (pose_model) on the "
     "volume, which this worker provisions only when ENABLE_MODELS lists control_pose"),
    ({"video": "x", "keyframes": [{"image": "https://example.com/a.png", "frame": -1}], "frame_count": 9},
     "keyframes: are not taken with a video"),
    ({"video": "x", "audio_input": "y"}, "frame_count: is needed with both video and audio_input"),
])
def test_a_bad_source_or_control_is_answered_before_comfyui(stack, change, expected):
    comfy, worker, hub = stack
    out = worker.handle({"id": "bad", "input": {**SMALL, **change}})
    assert out["error"].startswith(expected), out
    assert comfy.submitted == [] and files_under(comfy.input_dir) == []
    assert IC_CANNY not in hub["site"].hits, "nothing fetched for a refused job"


def test_an_image_is_not_a_video(stack):
    comfy, worker, _ = stack
    buf = io.BytesIO()
    Image.new("RGB", (64, 64)).save(buf, "PNG")
    out = worker.handle({"id": "png", "input": {**SMALL, "video": b64(buf.getvalue())}})
    assert out["error"] == "video: must be an MP4, MOV or WebM video; this file is png_pipe (FFmpeg's name for its " \
                           "format)", out
    assert comfy.submitted == []


@pytest.mark.parametrize("limit, expected", [
    ({"max_video_seconds": 1.0}, "video: lasts 2.0 s, more than MAX_VIDEO_SECONDS (1 s)"),
    ({"max_video_pixels": 10000}, "video: has 320x180 frames, more than MAX_VIDEO_PIXELS (10000) pixels"),
    ({"max_video_mb": 0.001}, "video: must be at most 0.001 MB"),
])
def test_the_source_limits_are_settings(stack, limit, expected):
    comfy, worker, _ = stack
    out = Worker(worker.settings.replace(**limit)).handle({"id": "lim", "input": {**SMALL, "video": b64(clip(60))}})
    assert out["error"].startswith(expected), out
    assert comfy.submitted == []


def test_a_frame_count_past_20_s_at_the_sources_rate_is_refused(stack):
    """parse_request checks the span at the default fps; the source's own rate (8 fps here) is known only later,
    and the same rule applies to it."""
    comfy, worker, _ = stack
    out = worker.handle({"id": "span", "input": {**SMALL, "video": b64(clip(180, fps=8)), "frame_count": 169}})
    assert out["error"].startswith("frame_count: 169 frames at 8 fps span 21.0 s, more than the 20 s"), out
    assert "at 8 fps at most 161 frames" in out["error"] and comfy.submitted == []


def test_a_webm_source_works_too(stack):
    _, worker, _ = stack
    out = worker.handle({"id": "webm", "input": {**SMALL, "video": b64(clip(17, fps=24, fmt="webm"))}})
    assert "error" not in out and out["frame_count"] == 17, out


def test_enable_models_fetches_the_canny_ic_lora_at_boot(tmp_path, web, caplog):  # noqa: F811
    import time

    from test_loras import _cache

    from ltx2_worker.control import enabled_controls, fetch_enabled, ic_lora
    from ltx2_worker.manifest import enabled_roles
    from ltx2_worker.settings import SettingsError

    web["routes"][IC_CANNY] = _lora(tmp_path / "ic.safetensors")
    settings = _settings(tmp_path, ENABLE_MODELS="checkpoint_distilled, control_canny")
    assert enabled_roles(settings) == {"checkpoint_distilled"}, "canny needs no manifest file"
    assert enabled_roles(settings.replace(enable_models="control_depth")) == {"depth_model", "depth_vae"}
    assert enabled_roles(settings.replace(enable_models="control_pose")) == {"pose_model"}
    with pytest.raises(SettingsError, match="ENABLE_MODELS names control_edges; this worker runs "
                                            "control_canny, control_depth, control_pose"):
        enabled_controls(settings.replace(enable_models="control_edges"))
    cache = _cache(settings)
    assert fetch_enabled(settings, cache, 30) == ["canny"]
    hits = list(web["site"].hits)
    assert cache.get(ic_lora("canny"), time.monotonic() + 30).sha256 == hashlib.sha256(
        web["routes"][IC_CANNY]).hexdigest()
    assert web["site"].hits == hits == [IC_CANNY], "a job finds the IC-LoRA in the cache"


def test_video_with_a_first_frame_a_track_and_a_requests_lora(stack, tmp_path):
    """The source's control beside what else a request brings: `image` at frame 0, `audio_input` (frame_count then
    given) and a user LoRA, which comes before the IC-LoRA in the chain."""
    from test_audio_input import wav

    comfy, worker, hub = stack
    hub["routes"]["/style.safetensors"] = _lora(tmp_path / "style.safetensors")
    buf = io.BytesIO()
    Image.new("RGB", (512, 288), (200, 100, 0)).save(buf, "PNG")
    out = worker.handle({"id": "all", "input": {
        **SMALL, "video": b64(clip(40, fps=24)), "frame_count": 33, "image": b64(buf.getvalue()),
        "audio_input": b64(wav(2.0, channels=1)), "loras": [{"url": f"{hub['base']}/style.safetensors"}]}})
    assert "error" not in out, out
    assert (out["frame_count"], out["fps"]) == (33, 24) and out["audio_input"]["used_seconds"] == round(33 / 24, 3)
    graph = comfy.submitted[-1]["prompt"]
    assert {"LoadImage", "LoadAudio", "LoadVideo", "LTXVImgToVideoInplace", "LTXVAddGuide"} <= {
        n["class_type"] for n in graph.values()}
    assert graph["ltx2:user_lora_1"]["inputs"]["model"] == ["ltx2:user_lora_0", 0], "the IC-LoRA after the user's"
    assert out["loras"][0]["url"].endswith("/style.safetensors") and out["control"]["kind"] == "canny"


IC_DEPTH = "/Lightricks/LTX-2-19b-IC-LoRA-Depth-Control/resolve/main/ltx-2-19b-ic-lora-depth-control.safetensors"
IC_POSE = "/Lightricks/LTX-2-19b-IC-LoRA-Pose-Control/resolve/main/ltx-2-19b-ic-lora-pose-control.safetensors"
DEPTH_FILES = {"diffusion_models": "lotus-depth-d-v1-1.safetensors", "vae": "vae-ft-mse-840000-ema-pruned.safetensors"}
POSE_FILES = {"checkpoints": "sdpose_wholebody_fp16.safetensors"}


def _control_stack(tmp_path, web, kind: str, files: dict[str, str]):  # noqa: F811
    """The protocol ComfyUI listing `files` (folder: name) and a worker with ENABLE_MODELS=control_<kind>."""
    folders = {}
    for folder, name in files.items():
        folders[folder] = [tmp_path / folder]
        (tmp_path / folder).mkdir()
        (tmp_path / folder / name).write_bytes(b"x")
    settings, comfy = lora_comfy(tmp_path, model_dirs=folders, COMFY_PYTHON=sys.executable,
                                 ENABLE_MODELS=f"control_{kind}")
    return comfy, Worker(settings)


def test_a_pose_job_draws_sdpose_skeletons_of_every_frame_under_the_pose_ic_lora(tmp_path, web):  # noqa: F811
    """control pose with its file provisioned (ENABLE_MODELS=control_pose): SDPose's keypoints of the sized source
    frames, drawn as skeletons, are the guide, as ComfyUI's SDPose blueprint makes them."""
    web["routes"][IC_POSE] = _lora(tmp_path / "ic-pose.safetensors")
    comfy, worker = _control_stack(tmp_path, web, "pose", POSE_FILES)
    try:
        out = worker.handle({"id": "pose", "input": {**SMALL, "video": b64(clip(30, fps=24)), "control": "pose"}})
        assert "error" not in out, out
        assert out["frame_count"] == 25 and out["control"]["kind"] == "pose", out
        nodes = by_title(comfy)
        assert nodes["pose_model"][1]["inputs"]["ckpt_name"] == POSE_FILES["checkpoints"]
        keypoints = nodes["pose_keypoints"][1]["inputs"]
        assert keypoints["image"] == [nodes["control_video_sized"][0], 0] and keypoints["vae"] == [
            nodes["pose_model"][0], 2] and keypoints["batch_size"] == 16
        assert nodes["control_guide"][1]["inputs"]["image"] == [nodes["pose_maps"][0], 0]
        assert "control_video_canny" not in nodes and "depth_maps" not in nodes and IC_POSE in web["site"].hits
    finally:
        comfy.stop()


def test_a_depth_job_runs_lotus_on_every_frame_under_the_depth_ic_lora(tmp_path, web):  # noqa: F811
    """control depth with its files provisioned (ENABLE_MODELS=control_depth): ComfyUI's Lotus subgraph turns the
    sized source frames into depth maps, the guide; without ComfyUI listing the files the job is refused."""
    web["routes"][IC_DEPTH] = _lora(tmp_path / "ic-depth.safetensors")
    comfy, worker = _control_stack(tmp_path, web, "depth", DEPTH_FILES)
    try:
        out = worker.handle({"id": "depth", "input": {**SMALL, "video": b64(clip(30, fps=24)), "control": "depth"}})
        assert "error" not in out, out
        assert out["frame_count"] == 25 and out["control"]["kind"] == "depth", out
        assert decode_video_field(out)["frames"] == 25
        nodes = by_title(comfy)
        assert nodes["depth_model"][1]["inputs"]["unet_name"] == DEPTH_FILES["diffusion_models"]
        assert nodes["depth_vae"][1]["inputs"]["vae_name"] == DEPTH_FILES["vae"]
        assert nodes["depth_encode"][1]["inputs"]["pixels"] == [nodes["control_video_sized"][0], 0]
        assert nodes["depth_first_sigma"][1]["inputs"]["sigma"] == 999.0000000000002
        assert nodes["depth_scheduler"][1]["inputs"]["steps"] == 1
        assert nodes["control_guide"][1]["inputs"]["image"] == [nodes["depth_maps"][0], 0]
        assert "control_video_canny" not in nodes and IC_DEPTH in web["site"].hits
        (tmp_path / "vae" / DEPTH_FILES["vae"]).unlink()  # provisioned, but not what ComfyUI lists
        gone = worker.handle({"id": "gone", "input": {**SMALL, "video": b64(clip(30)), "control": "depth"}})
        assert gone["error"].startswith(f"control: needs {DEPTH_FILES['vae']}, which ComfyUI does not list"), gone
    finally:
        comfy.stop()
