"""Audio-to-video (`audio_input`) against the protocol ComfyUI: the track is checked by ComfyUI's own decoder
(PyAV, run as COMFY_PYTHON) before ComfyUI is asked, sets the clip's length when frame_count is absent, is kept
as it is through both stages (a zero noise mask) and is the MP4's sound track."""

from __future__ import annotations

import base64
import io
import sys
import wave

import numpy as np
import pytest
from PIL import Image

from ltx2_worker.worker import Worker

from comfy_server import ProtocolComfy, decode_audio
from helpers import decode_video_field, files_under, loopback_settings

SMALL = {"prompt": "a drummer on a stage", "width": 512, "height": 288, "seed": 3}
RATE = 24000


def wav(seconds: float, hz: float = 440.0, channels: int = 2) -> bytes:
    t = np.arange(round(seconds * RATE)) / RATE
    pcm = (np.sin(2 * np.pi * hz * t) * 0.5 * 32767).astype("<i2")
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(2)
        w.setframerate(RATE)
        w.writeframes(np.repeat(pcm[:, None], channels, axis=1).tobytes())
    return buf.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@pytest.fixture
def stack(tmp_path):
    comfy_dir = tmp_path / "comfyui"
    comfy = ProtocolComfy(output_dir=comfy_dir / "output", input_dir=comfy_dir / "input").start()
    settings = loopback_settings(comfy.url, comfy_dir / "output", tmp_path, COMFYUI_DIR=str(comfy_dir),
                                 COMFY_PYTHON=sys.executable)
    yield comfy, Worker(settings), settings
    comfy.stop()


def graph_nodes(comfy) -> dict[str, dict]:
    return comfy.submitted[-1]["prompt"]


def mp4_track(out: dict, tmp_path) -> np.ndarray:
    path = tmp_path / "out.mp4"
    path.write_bytes(base64.b64decode(out["video"]))
    return decode_audio(path)


def peak_hz(samples: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(samples[0]))
    return float(np.fft.rfftfreq(samples.shape[1], 1 / rate)[int(np.argmax(spectrum))])


def test_the_track_sets_the_clips_length_is_kept_and_is_the_mp4s_sound(stack, tmp_path):
    comfy, worker, _ = stack
    out = worker.handle({"id": "a2v", "input": {**SMALL, "audio_input": b64(wav(2.0, hz=440))}})
    assert "error" not in out, out
    # 2.0 s at 24 fps covers 48 frames: the most 8k+1 within them is 41
    assert out["frame_count"] == 41 and decode_video_field(out)["frames"] == 41
    assert out["audio_input"] == {"seconds": 2.0, "sample_rate": RATE, "channels": 2,
                                  "used_seconds": round(41 / 24, 3), "cut_by": None}
    assert out["timings"]["audio_input"] >= 0
    g = graph_nodes(comfy)
    by_title = {n["_meta"]["title"]: (nid, n) for nid, n in g.items()}
    cut_id, cut = by_title["audio_input_cut"]
    assert cut["inputs"]["duration"] == pytest.approx(41 / 24) and cut["inputs"]["audio"] == ["ltx2:audio_input", 0]
    kept_id, kept = by_title["audio_input_kept"]
    assert g[kept["inputs"]["mask"][0]]["inputs"]["value"] == 0.0, "a zero mask: the sampler keeps the track"
    assert by_title["av_latent_stage1"][1]["inputs"]["audio_latent"] == [kept_id, 0]
    assert by_title["create_video"][1]["inputs"]["audio"] == [cut_id, 0], "the track itself, not its VAE trip"
    sound = mp4_track(out, tmp_path)
    assert abs(peak_hz(sound, RATE) - 440) < 5 and float(np.sqrt(np.mean(sound ** 2))) > 0.2
    assert files_under(comfy.input_dir) == [], "the track is removed from ComfyUI's input folder"


def test_a_frame_count_the_track_does_not_cover_is_refused_before_comfyui(stack):
    comfy, worker, _ = stack
    out = worker.handle({"id": "long", "input": {**SMALL, "frame_count": 121, "audio_input": b64(wav(2.0))}})
    assert out["error"].startswith("frame_count: 121 frames at 24 fps last 5.04 s, longer than audio_input's "
                                   "2.00 s"), out
    ok = worker.handle({"id": "short", "input": {**SMALL, "frame_count": 25, "audio_input": b64(wav(2.0))}})
    assert "error" not in ok and ok["frame_count"] == 25 and ok["audio_input"]["used_seconds"] == round(25 / 24, 3)
    assert len(comfy.submitted) == 1


def test_a_long_track_is_cut_to_the_longest_clip_and_says_by_what(stack):
    _, worker, _ = stack
    out = worker.handle({"id": "cut", "input": {**SMALL, "audio_input": b64(wav(12.0, channels=1))}})
    assert "error" not in out, out
    assert out["frame_count"] == 257 and out["audio_input"]["cut_by"] == "MAX_FRAMES"
    assert out["audio_input"]["channels"] == 1


def test_image_and_audio_together(stack):
    comfy, worker, _ = stack
    buf = io.BytesIO()
    Image.new("RGB", (512, 288), (200, 100, 0)).save(buf, "PNG")
    out = worker.handle({"id": "ia2v", "input": {**SMALL, "image": b64(buf.getvalue()),
                                                 "audio_input": b64(wav(1.0))}})
    assert "error" not in out and out["frame_count"] == 17, out
    assert {n["class_type"] for n in graph_nodes(comfy).values()} >= {"LoadImage", "LoadAudio"}


@pytest.mark.parametrize("change, expected", [
    ({"audio_input": b64(b"not audio at all, just some bytes")},
     "audio_input: must be WAV, MP3, FLAC, OGG, M4A or AAC audio, and this file cannot be decoded"),
    ({"audio_input": ""}, "audio_input: must be a base64 string or an https URL, got an empty string"),
    ({"audio_input": 5}, "audio_input: must be a base64 string or an https URL, got an integer"),
    ({"audio_input": b64(wav(0.2))}, "audio_input: lasts 0.20 s, shorter than the shortest clip (9 frames"),
    ({"audio_input": b64(wav(1.0)), "audio": False}, 'audio_input: is the clip\'s sound track, and "audio": false'),
    ({"audio_input": b64(wav(1.0)), "keyframes": [{"image": "https://example.com/a.png", "frame": -1}]},
     "keyframes: with audio_input and no frame_count the clip's length comes from the track"),
])
def test_a_bad_track_is_answered_naming_the_field_before_comfyui(stack, change, expected):
    comfy, worker, _ = stack
    out = worker.handle({"id": "bad", "input": {**SMALL, **change}})
    assert out["error"].startswith(expected), out
    assert comfy.submitted == [] and files_under(comfy.input_dir) == []


def test_a_png_has_no_audio_stream(stack):
    comfy, worker, _ = stack
    buf = io.BytesIO()
    Image.new("RGB", (64, 64)).save(buf, "PNG")
    out = worker.handle({"id": "png", "input": {**SMALL, "audio_input": b64(buf.getvalue())}})
    assert out["error"].startswith("audio_input: must be WAV, MP3, FLAC, OGG, M4A or AAC audio, and this file"), out
    assert comfy.submitted == []


@pytest.mark.parametrize("env, expected", [
    ({"max_audio_seconds": 1.0}, "audio_input: lasts 2.0 s, more than MAX_AUDIO_SECONDS (1 s)"),
    ({"max_audio_mb": 0.01}, "audio_input: must be at most 0.01 MB"),
])
def test_the_track_limits_are_settings(stack, env, expected):
    comfy, _, settings = stack
    out = Worker(settings.replace(**env)).handle({"id": "lim", "input": {**SMALL, "audio_input": b64(wav(2.0))}})
    assert out["error"].startswith(expected), out
    assert comfy.submitted == []


def test_a_comfyui_python_that_cannot_run_the_check_is_named(stack, tmp_path):
    comfy, _, settings = stack
    out = Worker(settings.replace(comfy_python=str(tmp_path / "no-python"))).handle(
        {"id": "py", "input": {**SMALL, "audio_input": b64(wav(1.0))}})
    assert out["error"].startswith("audio_input cannot be checked: ComfyUI's Python (COMFY_PYTHON="), out
    assert comfy.submitted == []
