"""The second tier: the worker against a real ComfyUI v0.26.2, started with the package's own launch code on
127.0.0.1. Runs only when COMFYUI_DIR points at a checkout whose requirements are installed in COMFY_PYTHON
(default: this interpreter); skipped otherwise, as on CI (ComfyUI is not on PyPI).

The model files here are placeholders under the four real names: enough for ComfyUI's prompt validation
(which lists the files in its model folders) and for its loaders to fail the way a corrupt volume makes them
fail, which the worker must report by node.
"""

from __future__ import annotations

import base64
import io
import os
import subprocess
import sys
from pathlib import Path

import pytest
import requests
from PIL import Image

from ltx2_worker import launch
from ltx2_worker.comfy import ComfyClient
from ltx2_worker.gpu import Gpu, choose_profile
from ltx2_worker.job import parse_request
from ltx2_worker.manifest import load_manifest
from ltx2_worker.settings import load_settings
from ltx2_worker.start_files import list_path, listed_files, listed_pages, pages_path, record_pages
from ltx2_worker.worker import Worker
from ltx2_worker.workflow import DISTILLED_CHECKPOINT, Encoding, Workflow

from helpers import files_under, free_port

COMFYUI_DIR = os.environ.get("COMFYUI_DIR", "")
COMFY_PYTHON = os.environ.get("COMFY_PYTHON", sys.executable)


def _comfyui_usable() -> str | None:
    if not COMFYUI_DIR or not (Path(COMFYUI_DIR) / "main.py").is_file():
        return "COMFYUI_DIR does not point at a ComfyUI checkout"
    probe = subprocess.run([COMFY_PYTHON, "-c", "import torch, aiohttp, av"], capture_output=True, timeout=120)
    return None if probe.returncode == 0 else f"{COMFY_PYTHON} cannot import ComfyUI's requirements"


pytestmark = pytest.mark.skipif(bool(reason := _comfyui_usable()), reason=reason or "")
EARLIER_PACKAGE_REQUEST = {"prompt": "a red fox running through snow", "negative_prompt": "blurry",
                           "width": 1280, "height": 720, "frame_count": 121, "seed": 42}


@pytest.fixture(scope="module")
def comfy(tmp_path_factory):
    """A real ComfyUI on a free loopback port, models found through the package's extra_model_paths.yaml."""
    tmp = tmp_path_factory.mktemp("real-comfyui")
    env = {"COMFYUI_DIR": COMFYUI_DIR, "COMFY_PYTHON": COMFY_PYTHON, "COMFY_URL": f"http://127.0.0.1:{free_port()}",
           "NETWORK_VOLUME_PATH": str(tmp / "volume"), "COMFY_OUTPUT_DIR": str(tmp / "output"),
           "COMFY_LOG_FILE": str(tmp / "comfyui.log"), "COMFY_PID_FILE": str(tmp / "comfyui.pid"),
           "BOOT_ERROR_FILE": str(tmp / "boot-error"), "COMFY_EXTRA_ARGS": "--cpu", "COMFY_START_TIMEOUT_S": "240",
           "JOB_TIMEOUT_S": "120", "PREFETCH_LIBRARIES": "true"}
    settings = load_settings(env=env)
    models = load_manifest(settings)
    for model in models:  # placeholders: listed by ComfyUI, rejected by its loaders like a truncated file
        model.target(settings.volume_path).parent.mkdir(parents=True, exist_ok=True)
        model.target(settings.volume_path).write_bytes(b"\0" * 64)
    (settings.volume_path / "models" / "checkpoints" / DISTILLED_CHECKPOINT).write_bytes(b"\0" * 64)
    proc = launch.start(settings, models)
    try:
        launch.wait_ready(settings, proc)
        yield settings
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()


def test_real_comfyui_lists_the_files_its_start_read(comfy):
    """PREFETCH_LIBRARIES: the ltx2_start_files module, loaded by ComfyUI with the worker's nodes, lists on the
    volume what ComfyUI's start read, for the next fresh worker's prefetch."""
    listed = [str(p) for p in listed_files(list_path(comfy))]
    comfy_tree = str(Path(COMFYUI_DIR).resolve())
    nodes = [p for p in listed if p.startswith(comfy_tree) and os.path.basename(p).startswith("nodes.")]
    assert nodes and nodes[0].endswith((".py", ".pyc")), listed[:20]  # ComfyUI's own (bytecode where compiled)
    assert any("/torch/_C." in p for p in listed)  # torch's extension module, as imported
    assert not any(os.path.basename(p).startswith("libtorch") for p in listed)  # shared libraries left out
    assert any(p.endswith(".py") or p.endswith(".pyc") for p in listed if "/torch/" in p)
    assert len(listed) > 1000


def test_real_comfyuis_start_pages_cover_its_tree_and_torchs_libraries(comfy):
    """PREFETCH_LIBRARIES: what the worker lists after its first job, the pages of a real ComfyUI's files in
    memory: its own modules' and torch's library's, found under the folders its Python names."""
    listed = record_pages(comfy)
    pages = dict(listed_pages(pages_path(comfy)))
    assert listed == sum(b - a for spans in pages.values() for a, b in spans)
    torch_cpu = [p for p in pages if p.name.startswith("libtorch_cpu")]
    assert torch_cpu and str(torch_cpu[0]).startswith(str(Path(COMFY_PYTHON).parent.parent)), sorted(pages)[:20]
    assert any(p.is_relative_to(comfy.comfy_dir) and p.suffix in (".py", ".pyc") for p in pages)
    assert not any(p.is_relative_to(comfy.volume_path) for p in pages)


def _validate(settings, graph) -> requests.Response:
    """POST /prompt: 200 means ComfyUI's validation passed (the prompt is then queued and fails on the
    placeholder weights, which is fine here)."""
    return requests.post(settings.comfy_url + "/prompt", json={"prompt": graph, "client_id": "tier2"}, timeout=30)


@pytest.mark.parametrize("job", [
    EARLIER_PACKAGE_REQUEST,
    {"prompt": "x", "aspect_ratio": "9:16", "frame_count": 17, "fps": 30, "steps": 8, "cfg": 3.0},
    {"prompt": "x", "width": 352, "height": 288, "audio": False},
    {"prompt": "x", "mode": "distilled"},
    {"prompt": "x", "mode": "distilled", "audio": False},
], ids=["earlier-request", "portrait-30fps", "small-no-audio", "distilled", "distilled-no-audio"])
def test_real_comfyui_accepts_the_patched_workflow(comfy, job):
    graph = Workflow.load().build(parse_request(job, comfy), "ltx2/tier2")
    r = _validate(comfy, graph)
    assert r.status_code == 200, r.text
    assert r.json()["node_errors"] == {}


GPU_CLASS_GRAPHS = {  # what each memory class ships (ltx2_worker.gpu)
    "large": choose_profile(Gpu("NVIDIA H100 80GB HBM3", 79.6, 9.0)).graph,
    "medium": choose_profile(Gpu("NVIDIA L40S", 44.4, 8.9)).graph,
    "small": choose_profile(Gpu("NVIDIA GeForce RTX 4090", 23.99, 8.9)).graph,
}


@pytest.mark.parametrize("audio", [True, False])
@pytest.mark.parametrize("gpu_class", GPU_CLASS_GRAPHS)
def test_real_comfyui_accepts_each_gpu_class_graph(comfy, gpu_class, audio):
    """Each class's graph passes the pinned ComfyUI's validation: the worker's nodes (LTX2LoraBypass for stage
    2's LoRA on the large and medium classes, LTX2CudaGraphs, LTX2VAEDecodeTiled, LTX2LatentUpscaleModelLoader,
    LTX2SaveVideo, LTX2LatentUpsampler) are loaded from the custom-node path the launcher adds."""
    choices = GPU_CLASS_GRAPHS[gpu_class]
    req = parse_request({**EARLIER_PACKAGE_REQUEST, "audio": audio}, comfy)
    graph = Workflow.load().build(req, f"ltx2/tier2-{gpu_class}", choices=choices,
                                  encoding=Encoding(comfy.x264_preset, comfy.x264_crf))
    classes = {node["class_type"] for node in graph.values()}
    assert ("LTX2LoraBypass" in classes) is choices.lora_bypass and "LoraLoaderBypassModelOnly" not in classes
    assert ("LTX2CudaGraphs" in classes) is choices.cuda_graphs
    assert {"LTX2VAEDecodeTiled", "LTX2LatentUpscaleModelLoader", "LTX2SaveVideo"} <= classes
    r = _validate(comfy, graph)
    assert r.status_code == 200, r.text
    assert r.json()["node_errors"] == {}


@pytest.mark.parametrize("audio", [True, False])
def test_real_comfyui_accepts_the_image_to_video_graph(comfy, audio):
    buf = io.BytesIO()
    Image.new("RGB", (640, 360), (10, 120, 200)).save(buf, "PNG")
    name = ComfyClient(comfy.comfy_url).upload_image(buf.getvalue(), "tier2-first-frame.png")
    req = parse_request({"prompt": "x", "image": base64.b64encode(buf.getvalue()).decode(), "audio": audio}, comfy)
    r = _validate(comfy, Workflow.load().build(req, "ltx2/tier2-i2v", [name]))
    assert r.status_code == 200, r.text


@pytest.mark.parametrize("mode", ["standard", "distilled"])
def test_real_comfyui_accepts_keyframes_and_a_requests_lora(comfy, mode):
    """LTXVAddGuide and LTXVCropGuides as the keyframes wire them, and a user LoRA found in the LoRA cache folder
    that the launcher added to ComfyUI's `loras` folders (the file is a placeholder: validation lists names)."""
    buf = io.BytesIO()
    Image.new("RGB", (640, 360), (10, 120, 200)).save(buf, "PNG")
    client = ComfyClient(comfy.comfy_url)
    names = [client.upload_image(buf.getvalue(), f"tier2-keyframe-{n}.png") for n in range(3)]
    comfy.lora_cache_dir.mkdir(parents=True, exist_ok=True)
    (comfy.lora_cache_dir / "tier2-user.safetensors").write_bytes(b"\0" * 64)
    image = base64.b64encode(buf.getvalue()).decode()
    req = parse_request({"prompt": "x", "mode": mode, "frame_count": 49, "image": image,
                         "keyframes": [{"image": image, "frame": 24}, {"image": image, "frame": -1}],
                         "loras": [{"url": "https://h/a.safetensors", "strength": 0.7}]}, comfy)
    graph = Workflow.load().build(req, "ltx2/tier2-kf", names, loras=["tier2-user.safetensors"])
    r = _validate(comfy, graph)
    assert r.status_code == 200, r.text
    assert r.json()["node_errors"] == {}


def test_real_comfyui_accepts_enhance_prompt_audio_input_and_a_control_video(comfy, tmp_path):
    """The graphs of enhance_prompt (TextGenerateLTX2Prompt's DynamicCombo inputs, PreviewAny), audio_input
    (LoadAudio, TrimAudioDuration, LTXVAudioVAEEncode, SolidMask, SetLatentNoiseMask) and video with its IC-LoRA
    (LoadVideo, GetVideoComponents, ImageFromBatch, Canny, LTXVAddGuide) pass the pinned ComfyUI's validation,
    together with a first frame (the files are real: LoadAudio and LoadVideo check them; the IC-LoRA is a
    placeholder, as validation lists names)."""
    import av
    from test_audio_input import wav

    client = ComfyClient(comfy.comfy_url)
    buf = io.BytesIO()
    Image.new("RGB", (640, 360), (10, 120, 200)).save(buf, "PNG")
    image = client.upload_image(buf.getvalue(), "tier2-v2v-first.png")
    track = client.upload_image(wav(1.0, channels=1), "tier2-track.wav")
    clip = tmp_path / "source.mp4"
    with av.open(str(clip), "w") as out:
        stream = out.add_stream("libx264", rate=24)
        stream.width, stream.height, stream.pix_fmt = 64, 64, "yuv420p"
        for _ in range(17):
            out.mux(stream.encode(av.VideoFrame(64, 64, "yuv420p")))
        out.mux(stream.encode())
    video = client.upload_image(clip.read_bytes(), "tier2-source.mp4")
    comfy.lora_cache_dir.mkdir(parents=True, exist_ok=True)
    (comfy.lora_cache_dir / "tier2-ic.safetensors").write_bytes(b"\0" * 64)
    first = base64.b64encode(buf.getvalue()).decode()
    for job, kwargs in (
            ({"enhance_prompt": True, "image": first}, {"images": [image]}),
            ({"audio_input": "t", "frame_count": 17, "image": first}, {"images": [image], "audio": track}),
            ({"video": "v", "frame_count": 17, "image": first, "control_strength": 0.6},
             {"images": [image], "video": video, "loras": ["tier2-ic.safetensors"]})):
        graph = Workflow.load().build(parse_request({"prompt": "x", **job}, comfy), "ltx2/tier2-new", **kwargs)
        r = _validate(comfy, graph)
        assert r.status_code == 200, (job, r.text)
        assert r.json()["node_errors"] == {}


def test_real_comfyui_rejects_a_bad_value_the_way_the_worker_reports(comfy):
    graph = Workflow.load().build(parse_request({"prompt": "x"}, comfy), "ltx2/tier2")
    graph["75"]["inputs"]["codec"] = "vp9"
    r = _validate(comfy, graph)
    assert r.status_code == 400 and r.json()["node_errors"]["75"]["errors"][0]["type"] == "value_not_in_list"


def test_a_corrupt_model_fails_the_job_naming_the_node(comfy):
    out = Worker(comfy).handle({"id": "tier2-corrupt", "input": {**EARLIER_PACKAGE_REQUEST, "frame_count": 9}})
    assert "error" in out, out
    assert "failed" in out["error"] and "Loader" in out["error"], out["error"]
    assert files_under(comfy.comfy_output_dir / "ltx2") == []
