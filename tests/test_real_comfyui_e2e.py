"""The whole worker on a real ComfyUI v0.26.2 running the real two-stage graph end to end, on tiny random-weight
model files under the four real names (tools/make_tiny_models.py). Skipped unless COMFYUI_DIR is set, like
test_real_comfyui.py. Slow on a CPU: the text encoder keeps Gemma 3 12B's shape, so each distinct prompt costs
minutes; every test here reuses one prompt pair, which ComfyUI then answers from its cache.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import io
import json
import logging
import os
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import requests
from PIL import Image
from safetensors.numpy import save_file
from test_real_comfyui import COMFY_PYTHON, COMFYUI_DIR, pytestmark  # noqa: F401  (the same skip rule)

from ltx2_worker import https_fetch, launch
from ltx2_worker.lora_check import transformer_layers
from ltx2_worker.manifest import load_manifest
from ltx2_worker.provision import check
from ltx2_worker.settings import ROOT, load_settings
from ltx2_worker.worker import Worker
from ltx2_worker.workflow import DISTILLED_CHECKPOINT, GraphChoices

from helpers import LocalApi, decode_video_field, files_under, free_port, video_field_frames
from https_site import Site, certificates

PROMPT = {"prompt": "a red fox running through snow", "negative_prompt": "blurry"}
SMALL = {**PROMPT, "width": 256, "height": 256, "frame_count": 9, "steps": 2, "seed": 1}
ENABLED = "checkpoint_distilled,control_depth,control_pose"  # the optional files the stack provisions


def tiny_config(tmp: Path, volume: Path) -> Path:
    """config.ini with the real settings and a manifest of the tiny files, sizes and hashes read now: the
    four required entries, the optional distilled checkpoint and the depth control's files (enabled in the
    stack's environment)."""
    tiny = json.loads((volume / "models" / "tiny-manifest.json").read_text())
    base = (ROOT / "config.ini").read_text().split("# The model manifest")[0]
    real = load_manifest(load_settings(env={"ENABLE_MODELS": ENABLED}))
    sections = [base]
    for model in real:
        info = tiny[model.role]
        sections.append(f"[model.{model.role}]\nrepo = {model.repo}\nrevision = {model.revision}\npath = {model.path}\n"
                        f"folder = {model.folder}\nsize = {info['size']}\nsha256 = {info['sha256']}\n"
                        f"required = {str(model.required).lower()}\n")
    path = tmp / "config.ini"
    path.write_text("\n".join(sections))
    return path


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("tiny-ltx2")
    volume = tmp / "volume"
    subprocess.run([COMFY_PYTHON, "tools/make_tiny_models.py", "--comfyui-dir", COMFYUI_DIR, "--out", str(volume),
                    "--seed", "0", "--controls"], cwd=ROOT, check=True, capture_output=True, timeout=300)
    env = {"LTX2_CONFIG": str(tiny_config(tmp, volume)), "COMFYUI_DIR": COMFYUI_DIR, "COMFY_PYTHON": COMFY_PYTHON,
           "COMFY_URL": f"http://127.0.0.1:{free_port()}", "NETWORK_VOLUME_PATH": str(volume),
           "COMFY_OUTPUT_DIR": str(tmp / "output"), "COMFY_LOG_FILE": str(tmp / "comfyui.log"),
           "COMFY_PID_FILE": str(tmp / "comfyui.pid"), "BOOT_ERROR_FILE": str(tmp / "boot-error"),
           "COMFY_EXTRA_ARGS": "--cpu", "JOB_TIMEOUT_S": "1500", "PROGRESS_INTERVAL_S": "30",
           "ENABLE_MODELS": ENABLED}
    os.environ["MALLOC_MMAP_THRESHOLD_"] = "65536"  # the never-written Gemma matrices stay on zero pages
    settings = load_settings(env=env)
    proc = launch.start(settings, load_manifest(settings, Path(env["LTX2_CONFIG"])))
    try:
        launch.wait_ready(settings, proc)
        yield {"env": env, "settings": settings, "volume": volume, "tmp": tmp, "proc": proc}
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(timeout=30)


def test_1_provisioning_verifies_the_tiny_files(stack):
    settings = stack["settings"]
    assert check(settings, load_manifest(settings, Path(stack["env"]["LTX2_CONFIG"])), sha256=True) == []


def test_2_jobs_through_the_local_api_return_the_asked_mp4(stack):
    with LocalApi(stack["env"], stack["tmp"] / "handler.log", start_s=120) as api:
        with_audio = api.runsync(SMALL, timeout=1500)
        without = api.runsync({**SMALL, "audio": False}, timeout=600)
    assert with_audio["status"] == "COMPLETED", with_audio
    assert decode_video_field(with_audio["output"]) == {"width": 256, "height": 256, "frames": 9, "fps": 24.0,
                                                        "audio": True}
    assert without["status"] == "COMPLETED", without
    assert decode_video_field(without["output"])["audio"] is False
    assert files_under(stack["settings"].comfy_output_dir / "ltx2") == []


def test_3_the_earlier_package_request_shape_comes_out_at_exactly_its_size(stack):
    out = Worker(stack["settings"]).handle({"id": "earlier", "input": {**PROMPT, "width": 1280, "height": 720,
                                                                       "frame_count": 9, "seed": 42, "steps": 2}})
    assert "error" not in out, out
    facts = decode_video_field(out)
    assert (facts["width"], facts["height"], facts["frames"]) == (1280, 720, 9)


def test_4_same_seed_same_bytes_other_seed_other_bytes(stack):
    worker = Worker(stack["settings"])
    first, again, other = (worker.handle({"id": f"seed-{i}", "input": {**SMALL, "seed": seed}})
                           for i, seed in enumerate((7, 7, 8)))
    assert first["video"] == again["video"]
    assert first["video"] != other["video"]


@pytest.mark.timeout(1200)  # three jobs on the CPU, each with its own loads
def test_4b_the_workers_memory_nodes_give_the_same_video(stack):
    """LTX2VAEDecodeTiled only changes the memory ComfyUI is asked for, LTX2LatentUpscaleModelLoader only how
    the upscaler is built, LTX2AudioVAELoader and LTX2TextEncoderLoader only which of the checkpoint's tensors
    are opened, LTX2PinnedCheckpointLoader only how the checkpoint's bytes are read (LTX2PinnedCheckpointLoaderBeside
    also when, as an async node beside the others) and LTX2LatentUpsampler only who keeps the upscaler, never the
    pixels: the same job with and without them gives byte-identical MP4s (all through LTX2SaveVideo, which ComfyUI
    ran)."""
    cpu = Worker(stack["settings"]).profile
    outs = {}
    for ours, beside in ((False, False), (True, False), (True, True)):
        profile = dataclasses.replace(cpu, graph=GraphChoices(tile_memory_decode=ours, fast_upscaler_load=ours,
                                                              fast_audio_vae_load=ours, fast_text_encoder_load=ours,
                                                              pinned_checkpoint_load=ours,
                                                              checkpoint_beside_prompts=beside,
                                                              resident_upscaler=ours))
        worker = Worker(stack["settings"], profile=profile)
        out = outs[ours, beside] = worker.handle({"id": f"nodes-{ours}-{beside}", "input": {**SMALL, "seed": 7}})
        assert "error" not in out, out
        pid = out["prompt_id"]
        entry = requests.get(f"{stack['settings'].comfy_url}/history/{pid}", timeout=30).json()[pid]
        classes = {node["class_type"] for node in entry["prompt"][2].values()}
        assert ("LTX2VAEDecodeTiled" in classes) is ours and "LTX2SaveVideo" in classes
        assert ("LTX2LatentUpscaleModelLoader" in classes) is ours
        assert ("LTX2AudioVAELoader" in classes) is ours and ("LTXVAudioVAELoader" in classes) is not ours
        assert ("LTX2TextEncoderLoader" in classes) is ours and ("LTXAVTextEncoderLoader" in classes) is not ours
        assert ("LTX2LatentUpsampler" in classes) is ours and ("LTXVLatentUpsampler" in classes) is not ours
        assert ("LTX2PinnedCheckpointLoader" in classes) is (ours and not beside)
        assert ("LTX2PinnedCheckpointLoaderBeside" in classes) is beside
        assert ("CheckpointLoaderSimple" in classes) is not ours
    assert outs[True, False]["video"] == outs[False, False]["video"] == outs[True, True]["video"]


class FirstJobWorker(Worker):
    """A worker whose jobs find ComfyUI not answering yet when they arrive, as a fresh worker's first job does:
    the stack's ComfyUI is already up, so only that answer is held back, for the early prompt encoder's start."""

    def _start_early_prompts(self, job_id, req):
        ready, self.client.ready = self.client.ready, lambda: False
        try:
            return super()._start_early_prompts(job_id, req)
        finally:
            self.client.ready = ready


@pytest.mark.timeout(1500)  # the encoder process loads the text encoder and encodes both prompts on the CPU
def test_4r_prompts_encoded_beside_comfyuis_start_give_the_same_video(stack, caplog, monkeypatch):
    """EARLY_PROMPTS: ltx2_early_prompts.py, run by the worker in ComfyUI's Python under ComfyUI's flags, loads the
    text encoder with the worker's loader and encodes both prompts; the graph reads them through
    LTX2EncodedPrompts instead of the text encoder's loader and CLIPTextEncode. The same tensors, so the same MP4
    bytes as the job that encodes them in ComfyUI."""
    from ltx2_worker import worker as worker_module

    monkeypatch.setattr(worker_module, "EARLY_PROMPTS_WAIT_S", 1200)  # minutes for Gemma 3's shape on a CPU
    caplog.set_level(logging.INFO, logger="ltx2_worker.early_prompts")
    cpu = Worker(stack["settings"]).profile
    outs = {}
    for early in (False, True):
        profile = dataclasses.replace(cpu, graph=GraphChoices(fast_text_encoder_load=True, early_prompts=early))
        out = outs[early] = FirstJobWorker(stack["settings"], profile=profile).handle(
            {"id": f"early-{early}", "input": {**SMALL, "seed": 7}})
        assert "error" not in out, out
        pid = out["prompt_id"]
        entry = requests.get(f"{stack['settings'].comfy_url}/history/{pid}", timeout=30).json()[pid]
        classes = [node["class_type"] for node in entry["prompt"][2].values()]
        assert ("LTX2EncodedPrompts" in classes) is early
        assert ("CLIPTextEncode" in classes) is not early and ("LTX2TextEncoderLoader" in classes) is not early
    assert any("prompts encoded beside ComfyUI's start" in r.getMessage() for r in caplog.records)
    assert outs[True]["video"] == outs[False]["video"]
    assert [p for p in files_under(stack["settings"].comfy_input_dir) if p.name.startswith("ltx2-early-")] == []


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a - b) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def test_4e_stage_2s_lora_as_a_bypass_computes_what_the_merged_lora_does(stack):
    """The large and medium classes run stage 2's LoRA through ComfyUI's LoraLoaderBypassModelOnly on stage 1's
    weights instead of merging it: not byte-identical (the merge rounds weight + LoRA back to the stored dtype),
    but the same function, so its video is far closer to the merged LoRA's than another seed's video is."""
    cpu = Worker(stack["settings"]).profile
    outs, classes = {}, {}
    for name, bypass, seed in (("merged", False, 7), ("bypass", True, 7), ("other-seed", False, 8)):
        worker = Worker(stack["settings"], profile=dataclasses.replace(cpu, graph=GraphChoices(lora_bypass=bypass)))
        outs[name] = worker.handle({"id": f"bypass-{name}", "input": {**SMALL, "seed": seed}})
        assert "error" not in outs[name], outs[name]
        pid = outs[name]["prompt_id"]
        entry = requests.get(f"{stack['settings'].comfy_url}/history/{pid}", timeout=30).json()[pid]
        classes[name] = {node["class_type"] for node in entry["prompt"][2].values()}
    assert "LoraLoaderBypassModelOnly" in classes["bypass"] and "LoraLoaderModelOnly" not in classes["bypass"]
    assert "LoraLoaderModelOnly" in classes["merged"]
    frames = {name: video_field_frames(out) for name, out in outs.items()}
    same_function = _psnr(frames["bypass"], frames["merged"])
    unrelated = _psnr(frames["other-seed"], frames["merged"])
    assert same_function > unrelated + 10, (same_function, unrelated)


def test_4o_compiled_block_parts_give_the_eager_frames(stack):
    """The compile lever (LTX2CompileBlocks: each block's attention and feed-forward modules through
    torch.compile) is exact in theory, so the issue's rule holds on the real graph: the same request and seed
    give frames within 40 dB PSNR of the eager ones, and ComfyUI's log shows the parts were compiled (a part
    Dynamo cannot trace fails the job instead of running eager unnoticed)."""
    cpu = Worker(stack["settings"]).profile
    log = Path(stack["env"]["COMFY_LOG_FILE"])
    outs = {}
    for compiled in (False, True):
        profile = dataclasses.replace(cpu, graph=GraphChoices(compile_blocks=compiled))
        worker = Worker(stack["settings"], profile=profile)
        outs[compiled] = worker.handle({"id": f"compiled-{compiled}", "input": {**SMALL, "seed": 7}})
        assert "error" not in outs[compiled], outs[compiled]
    pid = outs[True]["prompt_id"]
    entry = requests.get(f"{stack['settings'].comfy_url}/history/{pid}", timeout=30).json()[pid]
    assert "LTX2CompileBlocks" in {node["class_type"] for node in entry["prompt"][2].values()}
    assert "parts of the transformer blocks compiled" in log.read_text(errors="replace")
    psnr = _psnr(video_field_frames(outs[True]), video_field_frames(outs[False]))
    assert psnr > 40, psnr


def test_4q_the_whole_frame_decode_differs_from_the_tiled_one_only_at_the_seams(stack):
    """DECODE_TILE_PX (GraphChoices.decode_tile_px) decodes each frame in one tile instead of the graph's 512-pixel
    tiles blended at their overlaps. On a frame wider than one tile the two decodes differ (so the setting reaches
    the decode), but as the same function does: closer to each other than another seed's clip is (35.1 against
    27.7 dB on the tiny model, CPU, 2026-12-06; at least 5 dB asked)."""
    cpu = Worker(stack["settings"]).profile
    wide = {**SMALL, "width": 768, "height": 256}
    outs = {}
    for name, tile, seed in (("tiled", 0, 7), ("whole", 1536, 7), ("other-seed", 0, 8)):
        profile = dataclasses.replace(cpu, graph=GraphChoices(tile_memory_decode=True, decode_tile_px=tile))
        outs[name] = Worker(stack["settings"], profile=profile).handle(
            {"id": f"decode-{name}", "input": {**wide, "seed": seed}})
        assert "error" not in outs[name], outs[name]
    pid = outs["whole"]["prompt_id"]
    entry = requests.get(f"{stack['settings'].comfy_url}/history/{pid}", timeout=30).json()[pid]
    tiles = [node["inputs"].get("tile_size") for node in entry["prompt"][2].values()
             if node["class_type"] == "LTX2VAEDecodeTiled"]
    assert tiles == [1536], tiles
    frames = {name: video_field_frames(out) for name, out in outs.items()}
    same_function = _psnr(frames["whole"], frames["tiled"])
    unrelated = _psnr(frames["other-seed"], frames["tiled"])
    assert same_function != float("inf") and same_function > unrelated + 5, (same_function, unrelated)


# run in ComfyUI's Python, in its folder; UPSCALERS and NODE come from the environment
UPSCALER_CHECK = """
import importlib.util, json, os, sys
sys.argv = ["check", "--cpu"]
sys.path.insert(0, os.getcwd())
import comfy.options
comfy.options.enable_args_parsing()  # as main.py does: --cpu is then read
import torch, folder_paths
folder_paths.add_model_folder_path("latent_upscale_models", os.environ["UPSCALERS"])
from comfy_extras.nodes_hunyuan import LatentUpscaleModelLoader
spec = importlib.util.spec_from_file_location("node", os.environ["NODE"])
node = importlib.util.module_from_spec(spec)
spec.loader.exec_module(node)
name = folder_paths.get_filename_list("latent_upscale_models")[0]
theirs = LatentUpscaleModelLoader.execute(name).result[0]
initialised = []  # the devices of the tensors PyTorch's initialisation ran on: only "meta" for ours
reset = torch.nn.Conv3d.reset_parameters
torch.nn.Conv3d.reset_parameters = lambda self: (initialised.append(self.weight.device.type), reset(self))
def fallback(*args):
    raise AssertionError("the worker's loader fell back to ComfyUI's")
LatentUpscaleModelLoader.execute = fallback
ours = node.LTX2LatentUpscaleModelLoader().load(name)[0]
a, b = theirs.state_dict(), ours.state_dict()
print(json.dumps({"class": [type(theirs).__name__, type(ours).__name__], "keys": sorted(a) == sorted(b),
                  "equal": all(a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]) for k in a),
                  "tensors": len(a), "initialised_on": sorted(set(initialised)),
                  "devices": sorted({t.device.type for t in b.values()})}))
"""


def test_4d_the_workers_upscaler_loader_builds_comfyuis_model_without_initialising_it(stack):
    """In ComfyUI's own Python: the worker's loader gives the model ComfyUI's loader gives (class, dtype, every
    tensor equal), built on the meta device (PyTorch's random initialisation never touches real memory), and
    not through its fallback to ComfyUI's loader."""
    env = {**os.environ, "UPSCALERS": str(stack["volume"] / "models" / "latent_upscale_models"),
           "NODE": str(launch.COMFY_NODES / "ltx2_upscaler_loader.py")}
    out = subprocess.run([COMFY_PYTHON, "-c", UPSCALER_CHECK], cwd=COMFYUI_DIR, env=env, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    facts = json.loads(out.stdout.strip().splitlines()[-1])
    assert facts["class"] == ["LatentUpsampler", "LatentUpsampler"] and facts["keys"] and facts["equal"], facts
    assert facts["tensors"] > 10 and facts["devices"] == ["cpu"], facts
    assert facts["initialised_on"] == ["meta"], facts


# run in ComfyUI's Python, in its folder; MODELS (the volume's models folder) and NODE come from the environment
CHECKPOINT_PARTS_CHECK = """
import importlib.util, json, os, sys
sys.argv = ["check", "--cpu"]
sys.path.insert(0, os.getcwd())
import comfy.options
comfy.options.enable_args_parsing()
import torch, folder_paths, safetensors, comfy.sd
for folder in ("checkpoints", "text_encoders"):
    folder_paths.add_model_folder_path(folder, os.path.join(os.environ["MODELS"], folder))
from comfy_extras.nodes_lt_audio import LTXVAudioVAELoader, LTXAVTextEncoderLoader
spec = importlib.util.spec_from_file_location("node", os.environ["NODE"])
node = importlib.util.module_from_spec(spec)
spec.loader.exec_module(node)
ckpt = "ltx-2-19b-dev-fp8.safetensors"
encoder = folder_paths.get_filename_list("text_encoders")[0]
opened = []  # (file, tensor) of every tensor opened while the worker's loaders run
real_open = safetensors.safe_open
class Recording:
    def __init__(self, path, *args, **kwargs):
        self.path, self.f = os.path.basename(path), real_open(path, *args, **kwargs)
    def __enter__(self):
        self.f.__enter__()
        return self
    def __exit__(self, *exc):
        return self.f.__exit__(*exc)
    def get_tensor(self, key):
        opened.append((self.path, key))
        return self.f.get_tensor(key)
    def __getattr__(self, name):
        return getattr(self.f, name)
import comfy.utils
from nodes import CheckpointLoaderSimple
path = os.path.join(os.environ["MODELS"], "checkpoints", ckpt)
# the pinned reader, in pieces of an odd size so that tensors straddle them, against ComfyUI's own read
read, read_meta = node.read_checkpoint(path, "cpu", readers=3, staging=(1 << 20) + 13)
loaded, loaded_meta = comfy.utils.load_torch_file(path, return_metadata=True)
# onto another device (the meta device stands in for a GPU), a layer's quantisation settings stay on the CPU,
# where comfy.ops decodes them with .numpy(); the tiny checkpoint has none, so a file of one quantised layer
import tempfile, safetensors.torch
quant_file = os.path.join(tempfile.mkdtemp(), "quantised.safetensors")
quant_tag = {"format": "float8_e4m3fn"}
safetensors.torch.save_file({"layer.weight": torch.ones(4, 4).to(torch.float8_e4m3fn), "layer.comfy_quant":
                             torch.frombuffer(bytearray(json.dumps(quant_tag).encode()), dtype=torch.uint8)},
                            quant_file)
quant, _ = node.read_checkpoint(quant_file, "meta")
host_read = (quant["layer.weight"].device.type == "meta" and
             json.loads(quant["layer.comfy_quant"].numpy().tobytes()) == quant_tag)
pinned_read = (sorted(read) == sorted(loaded) and read_meta == loaded_meta and all(
    read[k].dtype == loaded[k].dtype and read[k].shape == loaded[k].shape and torch.equal(read[k], loaded[k])
    for k in loaded))
with torch.inference_mode():  # as ComfyUI runs every node; the reader's threads start outside it
    theirs_ckpt = CheckpointLoaderSimple().load_checkpoint(ckpt)
    ours_ckpt = node.LTX2PinnedCheckpointLoader().load(ckpt)
theirs_vae = LTXVAudioVAELoader.execute(ckpt).result[0]
theirs_clip = LTXAVTextEncoderLoader.execute(encoder, ckpt, "default").result[0]
def fallback(*args):
    raise AssertionError("the worker's loader fell back to ComfyUI's")
LTXVAudioVAELoader.execute = LTXAVTextEncoderLoader.execute = fallback
safetensors.safe_open = Recording
ours_vae = node.LTX2AudioVAELoader().load(ckpt)[0]
vae_opened = [k for f, k in opened if f == ckpt]
opened.clear()
ours_clip = node.LTX2TextEncoderLoader().load(encoder, ckpt)[0]
clip_opened = [k for f, k in opened if f == ckpt]
def same(a, b, keep=lambda k: True):
    a, b = a.state_dict(), b.state_dict()
    return sorted(a) == sorted(b) and all(a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]) for k in a if keep(k))
mine = ("text_embedding_projection", "audio_embeddings_connector", "video_embeddings_connector")
print(json.dumps({
    "pinned_read": pinned_read, "host_read": host_read,
    "pinned_model": same(theirs_ckpt[0].model, ours_ckpt[0].model) and same(theirs_ckpt[2].first_stage_model,
                                                                           ours_ckpt[2].first_stage_model),
    "pinned_reinit": repr(theirs_ckpt[0].cached_patcher_init) == repr(ours_ckpt[0].cached_patcher_init),
    "vae": same(theirs_vae.first_stage_model, ours_vae.first_stage_model),
    # the Gemma-shaped encoder's own weights (from the text encoder file, read whole by both) are not compared:
    # most of them were never written and stay off the memory
    "clip": same(theirs_clip.cond_stage_model, ours_clip.cond_stage_model, lambda k: any(m in k for m in mine)),
    "clip_checkpoint_tensors": sum(any(m in k for m in mine) for k in ours_clip.cond_stage_model.state_dict()),
    "devices": [str(theirs_clip.patcher.load_device), str(ours_clip.patcher.load_device)],
    "reinit": repr(theirs_clip.patcher.cached_patcher_init) == repr(ours_clip.patcher.cached_patcher_init),
    "vae_opened": vae_opened, "clip_opened": clip_opened,
    "checkpoint_tensors": len(real_open(os.path.join(os.environ["MODELS"], "checkpoints", ckpt), "pt").keys())}))
"""


def test_4p_the_workers_checkpoint_loaders_open_only_their_tensors_and_build_comfyuis_models(stack):
    """In ComfyUI's own Python: LTX2AudioVAELoader and LTX2TextEncoderLoader give the models ComfyUI's loaders
    give (every tensor taken from the checkpoint equal, the same keys, the same devices and re-initialisation),
    not through their fallback, and open only the checkpoint's tensors they keep: the audio VAE's and vocoder's,
    the text encoder's projection and connectors. ComfyUI's open all of them, which on a fresh worker waits for
    the whole checkpoint's read. The pinned reader reads every tensor and the metadata as ComfyUI does (keeping
    on the CPU what ComfyUI reads there), and
    LTX2PinnedCheckpointLoader builds CheckpointLoaderSimple's model and VAE."""
    env = {**os.environ, "MODELS": str(stack["volume"] / "models"),
           "NODE": str(launch.COMFY_NODES / "ltx2_checkpoint_parts.py")}
    out = subprocess.run([COMFY_PYTHON, "-c", CHECKPOINT_PARTS_CHECK], cwd=COMFYUI_DIR, env=env, capture_output=True,
                         text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    facts = json.loads(out.stdout.strip().splitlines()[-1])
    assert facts["pinned_read"] and facts["host_read"] and facts["pinned_model"] and facts["pinned_reinit"], facts
    assert facts["vae"] and facts["clip"] and facts["reinit"], facts
    assert facts["clip_checkpoint_tensors"] > 0 and facts["devices"][0] == facts["devices"][1], facts
    vae, clip = facts["vae_opened"], facts["clip_opened"]
    assert vae and all(k.startswith(("audio_vae.", "vocoder.")) for k in vae), vae
    assert clip and all(k.startswith(("text_embedding_projection.", "model.diffusion_model.audio_embeddings_connector.",
                                      "model.diffusion_model.video_embeddings_connector.")) for k in clip), clip
    # the tiny checkpoint keeps the audio VAE whole but few transformer blocks: still under half its tensors
    assert len(vae) + len(clip) < facts["checkpoint_tensors"] / 2, facts["checkpoint_tensors"]


def comfy_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1e3
    raise AssertionError("no VmRSS")


def test_4c_comfyuis_memory_does_not_grow_job_after_job(stack):
    """Jobs with new seeds leave ComfyUI's resident memory flat: the launcher's --cache-classic keeps only the last
    job's node outputs (ComfyUI's default cache kept one decoded clip per job, until the host ran low on RAM)."""
    worker, pid = Worker(stack["settings"]), stack["proc"].pid
    job = {**PROMPT, "width": 512, "height": 512, "frame_count": 33, "steps": 2}
    clip_mb = 512 * 512 * 33 * 3 * 4 / 1e6  # one decoded clip as float32 frames: what the default cache kept
    rss = []
    for seed in range(200, 206):
        out = worker.handle({"id": f"rss-{seed}", "input": {**job, "seed": seed}})
        assert "error" not in out, out
        rss.append(comfy_rss_mb(pid))
    growth = rss[-1] - rss[1]  # from the second job on: the first one's outputs stay, as they should
    assert growth < clip_mb, f"ComfyUI grew {growth:.0f} MB over 4 jobs (one clip is {clip_mb:.0f} MB): {rss}"


def _png(colour, size=(256, 256)) -> str:
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, "PNG")
    return base64.b64encode(buf.getvalue()).decode()


def test_4f_keyframes_run_in_comfyuis_guide_nodes_and_pull_the_clip_towards_them(stack):
    """First-and-last-frame jobs on the real nodes. On random tiny weights no frame can look like a given image
    (the tiny VAE does not reconstruct, the transformer has learnt nothing), so this checks what holds anyway:
    ComfyUI runs LTXVImgToVideoInplace and LTXVAddGuide in both stages and LTXVCropGuides after each, the MP4 has
    the asked frames (the guide frames were taken off), the last-frame guide changes the clip against the same
    seed without it, and a first frame held to one image makes two seeds' first frames more alike than they are
    without it (the first latent frame is fixed; the decoder mixes in its neighbour, which is not)."""
    worker = Worker(stack["settings"])
    first, last = _png((220, 40, 40)), _png((30, 60, 210), (320, 256))
    job = {**SMALL, "frame_count": 17}
    outs = {name: worker.handle({"id": f"kf-{name}", "input": {**job, "seed": seed, **extra}})
            for name, seed, extra in (
                ("first-7", 7, {"image": first}), ("first-8", 8, {"image": first}),
                ("plain-7", 7, {}), ("plain-8", 8, {}),
                ("both-7", 7, {"image": first, "keyframes": [{"image": last, "frame": -1}]}))}
    for name, out in outs.items():
        assert "error" not in out, (name, out)
        assert decode_video_field(out)["frames"] == 17, name
    assert outs["both-7"]["keyframes"] == [{"frame": 0, "strength": 1.0}, {"frame": 16, "strength": 1.0}]
    frames = {name: video_field_frames(out) for name, out in outs.items()}
    figures = {"first frame, two seeds, held": _psnr(frames["first-7"][0], frames["first-8"][0]),
               "first frame, two seeds, free": _psnr(frames["plain-7"][0], frames["plain-8"][0]),
               "last frame, two seeds, free": _psnr(frames["plain-7"][-1], frames["plain-8"][-1]),
               "clip, last guide against none": _psnr(frames["both-7"], frames["first-7"]),
               "first frame, last guide against none": _psnr(frames["both-7"][0], frames["first-7"][0])}
    print(json.dumps(figures))
    assert figures["first frame, two seeds, held"] > figures["first frame, two seeds, free"] + 1, figures
    assert figures["clip, last guide against none"] < 60, figures
    pid = outs["both-7"]["prompt_id"]
    entry = requests.get(f"{stack['settings'].comfy_url}/history/{pid}", timeout=30).json()[pid]
    classes = [node["class_type"] for node in entry["prompt"][2].values()]
    assert classes.count("LTXVAddGuide") == classes.count("LTXVCropGuides") == 2, classes
    assert classes.count("LTXVImgToVideoInplace") == 2, classes
    assert not list(stack["settings"].comfy_input_dir.glob("ltx2-*")), "the uploaded keyframe images are removed"


def _tiny_lora(settings, path: Path, rank: int = 4, seed: int = 0) -> None:
    """A LoRA over every 2-D layer of the tiny transformer's first block, random, strong enough to show."""
    layers = transformer_layers(settings.volume_path / "models" / "checkpoints" / "ltx-2-19b-dev-fp8.safetensors")
    rng = np.random.default_rng(seed)
    tensors = {}
    for name, shape in layers.items():
        if name.startswith("transformer_blocks.0.") and name.endswith(".weight") and len(shape) == 2:
            layer = name[:-len(".weight")]
            tensors[f"diffusion_model.{layer}.lora_A.weight"] = rng.normal(0, 0.5, (rank, shape[1])).astype(np.float16)
            tensors[f"diffusion_model.{layer}.lora_B.weight"] = rng.normal(0, 0.5, (shape[0], rank)).astype(np.float16)
    assert tensors, "the tiny transformer has a first block"
    save_file(tensors, str(path))


def _lora_site(tmp_path: Path, monkeypatch, files: dict[str, Path]) -> tuple[Site, str]:
    """`files` (URL path -> file) served over TLS as https://loras.example:<port> (the test's DNS and CA, as in
    test_loras.py); (the site, its base URL)."""
    paths = certificates(tmp_path, ["loras.example"])
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    site = Site("127.0.0.1", port, paths, {route: path.read_bytes() for route, path in files.items()})
    real = socket.getaddrinfo
    monkeypatch.setattr(socket, "getaddrinfo",
                        lambda host, *a, **k: real("127.0.0.1" if host == "loras.example" else host, *a, **k))
    monkeypatch.setattr(https_fetch, "_address_allowed", lambda a: str(a) == "127.0.0.1")
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(paths["ca"]))
    return site, f"https://loras.example:{port}"


def test_4g_a_requests_lora_is_fetched_checked_and_applied_by_comfyui(stack, tmp_path, monkeypatch):
    """The LoRA comes over TLS from a loopback site (the test's DNS, as in test_loras.py) into the cache on the
    volume, which the launcher gave ComfyUI as a `loras` folder; ComfyUI applies every key of it (its log has no
    "lora key not loaded"), it changes the video, and at strength 0 it changes nothing."""
    settings = stack["settings"]
    _tiny_lora(settings, tmp_path / "tiny.safetensors")
    site, base = _lora_site(tmp_path, monkeypatch, {"/tiny.safetensors": tmp_path / "tiny.safetensors"})
    url = f"{base}/tiny.safetensors"
    log_start = settings.comfy_log_file.stat().st_size
    cpu = Worker(settings).profile
    lora = {"loras": [{"url": url, "strength": 1.0}]}
    try:
        worker = Worker(settings)
        outs = {name: worker.handle({"id": f"lora-{name}", "input": {**SMALL, "seed": 7, **extra}})
                for name, extra in (("none", {}), ("lora", lora),
                                    ("zero", {"loras": [{"url": url, "strength": 0.0}]}))}
        # the large and medium classes: the request's bypass LoRA under stage 2's bypass distilled LoRA
        bypass = Worker(settings, profile=dataclasses.replace(cpu, graph=GraphChoices(lora_bypass=True,
                                                                                      lora_stack=True)))
        outs.update({name: bypass.handle({"id": f"lora-{name}", "input": {**SMALL, "seed": 7, **extra}})
                     for name, extra in (("bypass-none", {}), ("bypass-lora", lora))})
    finally:
        site.close()
    for name, out in outs.items():
        assert "error" not in out, (name, out)
    assert site.hits == ["/tiny.safetensors"], "downloaded once, then from the cache"
    digest = hashlib.sha256((tmp_path / "tiny.safetensors").read_bytes()).hexdigest()
    assert outs["lora"]["loras"][0]["sha256"] == digest
    with open(settings.comfy_log_file, "rb") as f:
        f.seek(log_start)
        comfy_log = f.read().decode("utf-8", "replace")
    assert "lora key not loaded" not in comfy_log, comfy_log[-3000:]
    frames = {name: video_field_frames(out) for name, out in outs.items()}
    assert _psnr(frames["lora"], frames["none"]) < 40, "the LoRA changes the video"
    assert _psnr(frames["zero"], frames["none"]) > 60, "at strength 0 it changes nothing"
    assert _psnr(frames["bypass-lora"], frames["bypass-none"]) < 40, "beside stage 2's bypass LoRA too"


def test_4n_every_bypass_lora_of_a_chain_runs_in_both_stages(stack, tmp_path, monkeypatch):
    """ComfyUI's LoraLoaderBypassModelOnly keeps only the last bypass LoRA of a chain (set_injections under one
    key); the worker's LTX2LoraBypass keeps them all. Two LoRAs as stacked bypass branches under stage 2's
    bypass distilled LoRA (the large class's graph) compute what the same two merged into the weights do (the
    CPU class's graph), far closer than the second LoRA alone does: both run, in both stages; so do they under
    a merged distilled LoRA (the 24 GB class's graph). Jobs in between
    leave nothing behind: a plain job after them gives the plain job's frames again (every branch ejected),
    and the two LoRAs again give their frames again (the kept adapters reused)."""
    settings = stack["settings"]
    for name, seed in (("a", 1), ("b", 2)):
        _tiny_lora(settings, tmp_path / f"{name}.safetensors", seed=seed)
    site, base = _lora_site(tmp_path, monkeypatch, {f"/{n}.safetensors": tmp_path / f"{n}.safetensors"
                                                    for n in ("a", "b")})
    both = {"loras": [{"url": f"{base}/a.safetensors", "strength": 0.7},
                      {"url": f"{base}/b.safetensors", "strength": 0.7}]}
    second = {"loras": both["loras"][1:]}
    cpu = Worker(settings).profile
    stacked = Worker(settings, profile=dataclasses.replace(cpu, graph=GraphChoices(lora_bypass=True, lora_stack=True)))
    try:
        # the 24 GB class: the request's LoRAs stacked as bypass branches, stage 2's distilled LoRA merged on top
        small = Worker(settings, profile=dataclasses.replace(cpu, graph=GraphChoices(lora_stack=True)))
        outs = {"merged-ab": Worker(settings).handle({"id": "merged-ab", "input": {**SMALL, "seed": 7, **both}}),
                "small-ab": small.handle({"id": "small-ab", "input": {**SMALL, "seed": 7, **both}})}
        for name, extra in (("plain", {}), ("stacked-ab", both), ("stacked-b", second), ("plain-again", {}),
                            ("stacked-ab-again", both)):
            outs[name] = stacked.handle({"id": name, "input": {**SMALL, "seed": 7, **extra}})
    finally:
        site.close()
    for name, out in outs.items():
        assert "error" not in out, (name, out)
    pid = outs["stacked-ab"]["prompt_id"]
    entry = requests.get(f"{settings.comfy_url}/history/{pid}", timeout=30).json()[pid]
    classes = [node["class_type"] for node in entry["prompt"][2].values()]
    assert classes.count("LTX2LoraBypass") == 3 and "LoraLoaderModelOnly" not in classes, classes
    frames = {name: video_field_frames(out) for name, out in outs.items()}
    same_loras = _psnr(frames["stacked-ab"], frames["merged-ab"])
    last_only = _psnr(frames["stacked-b"], frames["merged-ab"])
    assert same_loras > last_only + 10, (same_loras, last_only)
    assert _psnr(frames["small-ab"], frames["merged-ab"]) > last_only + 10, "under a merged distilled LoRA too"
    assert _psnr(frames["stacked-ab"], frames["plain"]) < 40, "the LoRAs change the video"
    assert np.array_equal(frames["plain-again"], frames["plain"]), "no branch left on after the LoRA jobs"
    assert np.array_equal(frames["stacked-ab-again"], frames["stacked-ab"]), "the kept adapters give the same"


def test_4h_enhance_prompt_runs_comfyuis_prompt_writer_on_the_real_graph(stack):
    """TextGenerateLTX2Prompt on the real graph: ComfyUI v0.26.2 accepts the worker's inputs (the DynamicCombo's
    `sampling_mode.*`), loads the text encoder and samples tokens from the request's seed (a few: the tiny Gemma
    has 12B's shapes, so ENHANCE_MAX_TOKENS=8, still about 15 min on 2 CPUs). The stand-in's weights are zero and
    its tokenizer has 48 pieces, so the sampled ids lie outside it and decoding them fails: that failure, by
    node, is what this stand-in can show (the text's path to the encoder is tested on the protocol tier). The
    tiny Gemma has no vision tower, so the image variant is refused before ComfyUI is asked."""
    settings = stack["settings"].replace(enhance_max_tokens=8)
    worker = Worker(settings)
    enhanced = worker.handle({"id": "enhanced", "input": {**SMALL, "seed": 7, "enhance_prompt": True}})
    assert enhanced == {"error": "ComfyUI node TextGenerateLTX2Prompt (id ltx2:prompt_enhancer) failed: IndexError: "
                                 "OUT_OF_RANGE: piece id is out of range."}, enhanced
    image = base64.b64encode(_png_bytes()).decode()
    refused = worker.handle({"id": "blind", "input": {**SMALL, "image": image, "enhance_prompt": True}})
    assert refused["error"].startswith("enhance_prompt: with an image needs Gemma 3's vision weights"), refused


def _png_bytes() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (256, 256), (200, 40, 40)).save(buf, "PNG")
    return buf.getvalue()


def _loopback_hub(tmp_path, monkeypatch, routes: dict) -> Site:
    """A TLS site on 127.0.0.1 as hub.example, which HF_ENDPOINT then names (the test's DNS and CA), serving
    `routes`; the worker's own LoRAs (camera moves, IC-LoRAs) come from it."""
    paths = certificates(tmp_path, ["hub.example"])
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    real = socket.getaddrinfo
    monkeypatch.setattr(socket, "getaddrinfo",
                        lambda host, *a, **k: real("127.0.0.1" if host == "hub.example" else host, *a, **k))
    monkeypatch.setattr(https_fetch, "_address_allowed", lambda a: str(a) == "127.0.0.1")
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(paths["ca"]))
    monkeypatch.setenv("HF_ENDPOINT", f"https://hub.example:{port}")
    return Site("127.0.0.1", port, paths, routes)


def test_4i_a_camera_move_comes_from_the_hub_and_changes_the_clip(stack, tmp_path, monkeypatch):
    """camera_motion: the move's file (a tiny stand-in keyed as Lightricks' LoRAs are) from its repo on
    HF_ENDPOINT's hub, over TLS, into the LoRA cache; ComfyUI loads every key (no "lora key not loaded") and the
    clip changes against the same seed without the move."""
    settings = stack["settings"]
    move = "/Lightricks/LTX-2-19b-LoRA-Camera-Control-Jib-Up/resolve/main/ltx-2-19b-lora-camera-control-jib-up" \
           ".safetensors"
    _tiny_lora(settings, tmp_path / "jib.safetensors")
    site = _loopback_hub(tmp_path, monkeypatch, {move: (tmp_path / "jib.safetensors").read_bytes()})
    log_start = settings.comfy_log_file.stat().st_size
    try:
        worker = Worker(settings)
        plain = worker.handle({"id": "cam-none", "input": {**SMALL, "seed": 7}})
        moved = worker.handle({"id": "cam-jib", "input": {**SMALL, "seed": 7, "camera_motion": "jib_up"}})
    finally:
        site.close()
    assert "error" not in plain and "error" not in moved, (plain, moved)
    assert site.hits == [move] and moved["camera_motion"]["move"] == "jib_up"
    with open(settings.comfy_log_file, "rb") as f:
        f.seek(log_start)
        comfy_log = f.read().decode("utf-8", "replace")
    assert "lora key not loaded" not in comfy_log, comfy_log[-3000:]
    assert _psnr(video_field_frames(moved), video_field_frames(plain)) < 40, "the move changes the clip"


def test_4j_audio_to_video_keeps_the_users_track_and_its_length_sets_the_clip(stack, tmp_path):
    """audio_input through the real graph: LoadAudio, the audio VAE's encode under a zero noise mask in both
    stages, and the MP4's sound is the track itself (decoded, aligned, compared), 2.0 s giving 41 frames."""
    import wave

    rate, seconds = 24000, 2.0
    t = np.arange(int(rate * seconds)) / rate
    tone = (np.sin(2 * np.pi * 330 * t) * np.sin(2 * np.pi * 1.5 * t) * 0.5).astype(np.float32)  # a moving level
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes((tone * 32767).astype("<i2").tobytes())
    worker = Worker(stack["settings"])
    out = worker.handle({"id": "a2v", "input": {**SMALL, "seed": 7, "frame_count": None,
                                                "audio_input": base64.b64encode(buf.getvalue()).decode()}})
    assert "error" not in out, out
    assert out["frame_count"] == 41 and decode_video_field(out)["frames"] == 41
    assert out["audio_input"]["used_seconds"] == round(41 / 24, 3) and out["audio_input"]["cut_by"] is None
    path = tmp_path / "a2v.mp4"
    path.write_bytes(base64.b64decode(out["video"]))
    import av

    with av.open(str(path)) as container:
        got = np.concatenate([f.to_ndarray().reshape(f.to_ndarray().shape[0], -1)[0] for f in
                              container.decode(audio=0)]).astype(np.float64)
        got_rate = container.streams.audio[0].sample_rate
    assert got_rate == rate
    n = int(rate * 41 / 24)
    assert abs(len(got) - n) < 2048, (len(got), n)
    want = tone[:n].astype(np.float64)
    # AAC shifts by its priming and is lossy: the best alignment within 2048 samples must match closely
    m = min(len(got), n) - 4096
    best = max(float(np.corrcoef(got[lag:lag + m], want[2048:2048 + m])[0, 1]) for lag in range(0, 4097))
    assert best > 0.95, best


def test_4k_video_to_video_runs_canny_under_the_ic_lora_and_crops_the_guide(stack, tmp_path, monkeypatch):
    """video with control canny through the real graph: LoadVideo, Canny, LTXVAddGuide at frame 0 under the IC-LoRA
    (a tiny stand-in from the loopback hub), LTXVCropGuides: the clip has exactly the asked frames and size (the
    guide came off) at the source's rate. With random weights the clip cannot be said to follow the source; the
    correlation of its frame-to-frame changes with the source's is printed beside a text-only clip's, as a record."""
    import av

    settings = stack["settings"]
    ic = "/Lightricks/LTX-2-19b-IC-LoRA-Canny-Control/resolve/main/ltx-2-19b-ic-lora-canny-control.safetensors"
    _tiny_lora(settings, tmp_path / "ic.safetensors")
    site = _loopback_hub(tmp_path, monkeypatch, {ic: (tmp_path / "ic.safetensors").read_bytes()})
    source = tmp_path / "source.mp4"
    moves = []
    with av.open(str(source), "w") as out:
        stream = out.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 256, 256, "yuv420p"
        for i in range(20):
            img = np.full((256, 256, 3), 30, np.uint8)
            x, w = (i * i * 2) % 200, 20 + (i % 5) * 8  # uneven motion and size: the change varies frame to frame
            img[100:160, x:x + w] = 250
            moves.append(img.astype(np.float64))
            out.mux(stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")))
        out.mux(stream.encode())
    try:
        worker = Worker(settings)
        plain = worker.handle({"id": "v2v-none", "input": {**SMALL, "seed": 7, "frame_count": 17, "fps": 25}})
        v2v = worker.handle({"id": "v2v", "input": {**SMALL, "seed": 7, "frame_count": None,
                                                    "video": base64.b64encode(source.read_bytes()).decode()}})
    finally:
        site.close()
    assert "error" not in plain and "error" not in v2v, (plain, v2v)
    assert (v2v["frame_count"], v2v["fps"]) == (17, 25) and v2v["control"]["source_frames"] == 20
    assert decode_video_field(v2v) == {"width": 256, "height": 256, "frames": 17, "fps": 25.0, "audio": True}
    assert site.hits == [ic]

    def changes(frames):
        return np.array([np.abs(b - a).mean() for a, b in zip(frames, frames[1:], strict=False)])

    src = changes(moves[:17])
    assert src.std() > 0
    for name, out in (("video-to-video", v2v), ("text only", plain)):
        got = changes(list(video_field_frames(out)))
        follow = float(np.corrcoef(got, src)[0, 1]) if got.std() > 0 else None
        print(f"{name}: mean frame-to-frame change {got.mean():.3f}, correlation with the source's: {follow}")


def _control_job(stack, tmp_path, monkeypatch, kind: str, frames: int, draw) -> tuple[dict, str, float]:
    """One video-to-video job with control `kind` (frame_count left to the source: `frames` frames at 24 fps,
    256 x 256, frame i drawn by draw(img, i)), its IC-LoRA a tiny stand-in from the loopback hub: (the result,
    ComfyUI's log of the job, seconds)."""
    import av

    settings = stack["settings"]
    ic = f"/Lightricks/LTX-2-19b-IC-LoRA-{kind.capitalize()}-Control/resolve/main/ltx-2-19b-ic-lora-{kind}-" \
         "control.safetensors"
    _tiny_lora(settings, tmp_path / "ic.safetensors")
    site = _loopback_hub(tmp_path, monkeypatch, {ic: (tmp_path / "ic.safetensors").read_bytes()})
    source = tmp_path / "source.mp4"
    with av.open(str(source), "w") as out:
        stream = out.add_stream("libx264", rate=24)
        stream.width, stream.height, stream.pix_fmt = 256, 256, "yuv420p"
        for i in range(frames):
            img = np.full((256, 256, 3), 30, np.uint8)
            draw(img, i)
            out.mux(stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")))
        out.mux(stream.encode())
    log_file = Path(stack["env"]["COMFY_LOG_FILE"])
    before, started = len(log_file.read_text()), time.monotonic()
    try:
        out = Worker(settings).handle({"id": f"v2v-{kind}", "input": {
            **SMALL, "seed": 8, "frame_count": None, "control": kind,
            "video": base64.b64encode(source.read_bytes()).decode()}})
    finally:
        site.close()
    assert "error" not in out, out
    assert site.hits == [ic]
    return out, log_file.read_text()[before:], time.monotonic() - started


def test_4l_video_to_video_runs_lotus_depth_maps_under_the_depth_ic_lora(stack, tmp_path, monkeypatch):
    """control depth through the real graph: ComfyUI's Lotus subgraph (UNETLoader with a stand-in ComfyUI detects
    as LotusD, VAELoader with the SD VAE at its real shape, one noiseless Euler step from sigma 999, VAEDecode,
    ImageInvert) makes the guide under the depth IC-LoRA; the clip has exactly the asked frames and size. What
    random weights make of the depth maps says nothing; the maps' run does."""
    def block(img, i):
        img[80:180, 10 + i * 15:70 + i * 15] = 220

    out, log, seconds = _control_job(stack, tmp_path, monkeypatch, "depth", 12, block)
    assert (out["frame_count"], out["fps"]) == (9, 24) and out["control"]["kind"] == "depth"
    assert decode_video_field(out) == {"width": 256, "height": 256, "frames": 9, "fps": 24.0, "audio": True}
    assert "Requested to load Lotus" in log, "ComfyUI loaded Lotus-D for the depth maps"
    print(f"depth video-to-video on the CPU: {seconds:.1f} s")


def test_4m_video_to_video_draws_sdpose_skeletons_under_the_pose_ic_lora(stack, tmp_path, monkeypatch):
    """control pose through the real graph: CheckpointLoaderSimple with an SDPose stand-in (an SD 2 UNet with the
    heatmap head, which ComfyUI's SDPoseKeypointExtractor checks for), its keypoints drawn by SDPoseDrawKeypoints
    as the guide under the pose IC-LoRA; the clip has exactly the asked frames and size. SDPose reads every
    frame at 768 x 1024: on a CPU one frame a pass (POSE_BATCH) keeps memory in bounds."""
    from ltx2_worker import workflow

    def figure(img, i):  # a standing figure, drifting right
        img[60:200, 100 + i * 4:140 + i * 4] = 200

    monkeypatch.setattr(workflow, "POSE_BATCH", 1)
    out, log, seconds = _control_job(stack, tmp_path, monkeypatch, "pose", 9, figure)
    assert (out["frame_count"], out["fps"]) == (9, 24) and out["control"]["kind"] == "pose"
    assert decode_video_field(out) == {"width": 256, "height": 256, "frames": 9, "fps": 24.0, "audio": True}
    assert "Requested to load BaseModel" in log, "ComfyUI loaded SDPose for the keypoints"
    print(f"pose video-to-video on the CPU: {seconds:.1f} s")


def test_5_a_truncated_model_is_caught_before_comfyui_loads_it(stack, tmp_path):
    settings = stack["settings"]
    lora = stack["volume"] / "models" / "loras" / "ltx-2-19b-distilled-lora-384.safetensors"
    original = lora.read_bytes()
    try:
        lora.write_bytes(original[: len(original) // 2])
        env = {**stack["env"], "BOOT_ERROR_FILE": str(tmp_path / "boot-error")}
        result = subprocess.run([os.sys.executable, "-m", "ltx2_worker.provision", "--check"], cwd=ROOT,
                                env={**os.environ, **env}, capture_output=True, text=True, timeout=60)
        assert result.returncode == 1
        assert "BAD loras/ltx-2-19b-distilled-lora-384.safetensors: has" in result.stdout
    finally:
        lora.write_bytes(original)
    assert check(settings, load_manifest(settings, Path(stack["env"]["LTX2_CONFIG"]))) == []


def reachable_classes(graph: dict, output_node: str) -> set[str]:
    """The class types ComfyUI runs for `output_node`: it and every node it depends on through links."""
    seen, todo = set(), [output_node]
    while todo:
        nid = todo.pop()
        if nid not in seen:
            seen.add(nid)
            todo += [v[0] for v in graph[nid]["inputs"].values() if isinstance(v, list) and len(v) == 2]
    return {graph[nid]["class_type"] for nid in seen}


@pytest.mark.timeout(1500)  # another text-encoder load and encoding: distilled mode loads it from its checkpoint
def test_6_a_distilled_job_runs_the_distilled_checkpoint_without_the_lora(stack):
    """mode "distilled" through handler.py --rp_serve_api: the MP4 as asked and `mode` in the response, and the
    stage-2 LoRA never loaded: the job runs with the LoRA file taken off the volume (a graph that still used
    LoraLoaderModelOnly would fail ComfyUI's validation, its lora_name not in the list of files), ComfyUI logs
    nothing about a LoRA, and the prompt it ran reaches no LoRA node from SaveVideo."""
    settings = stack["settings"]
    lora = stack["volume"] / "models" / "loras" / "ltx-2-19b-distilled-lora-384.safetensors"
    aside = stack["tmp"] / "lora-aside.safetensors"
    # The distilled graph loads the text encoder again (from the distilled checkpoint): let ComfyUI drop the
    # cached one first, or two 12B-shaped encoders share the machine. The earlier tests' prompts are done.
    requests.post(f"{settings.comfy_url}/free", json={"unload_models": True, "free_memory": True}, timeout=30)
    time.sleep(3)  # the flags take effect when ComfyUI's prompt worker wakes, before the next prompt
    log_start = settings.comfy_log_file.stat().st_size
    lora.rename(aside)
    try:
        with LocalApi(stack["env"], stack["tmp"] / "handler-distilled.log", start_s=120) as api:
            result = api.runsync({**PROMPT, "mode": "distilled", "width": 384, "height": 256, "frame_count": 17,
                                  "seed": 3}, timeout=1500)
    finally:
        aside.rename(lora)
    assert result["status"] == "COMPLETED", result
    out = result["output"]
    assert out["mode"] == "distilled"
    assert (out["width"], out["height"], out["frame_count"]) == (384, 256, 17)
    assert decode_video_field(out) == {"width": 384, "height": 256, "frames": 17, "fps": 24.0, "audio": True}
    with open(settings.comfy_log_file, "rb") as f:
        f.seek(log_start)
        comfy_log = f.read().decode("utf-8", "replace")
    assert "Prompt executed" in comfy_log, comfy_log[-3000:]
    assert "lora" not in comfy_log.lower(), comfy_log[-3000:]
    entry = requests.get(f"{settings.comfy_url}/history/{out['prompt_id']}", timeout=30).json()[out["prompt_id"]]
    assert entry["status"]["status_str"] == "success"
    graph, outputs = entry["prompt"][2], entry["prompt"][4]
    ran = set().union(*(reachable_classes(graph, node) for node in outputs))
    assert "LoraLoaderModelOnly" not in ran and "CheckpointLoaderSimple" in ran
    assert {n["inputs"]["ckpt_name"] for n in graph.values() if "ckpt_name" in n["inputs"]} == {DISTILLED_CHECKPOINT}
    assert files_under(settings.comfy_output_dir / "ltx2") == []
    handler_log = (stack["tmp"] / "handler-distilled.log").read_text()
    assert "ComfyUI's output folder" not in handler_log and "cannot remove them" not in handler_log, handler_log


def test_7_comfyui_killed_mid_job_gives_a_clear_error_and_a_fresh_worker(stack):
    settings, proc = stack["settings"], stack["proc"]
    killer = threading.Timer(1.0, lambda: os.kill(proc.pid, signal.SIGKILL))
    killer.start()
    started = time.monotonic()
    job = {**PROMPT, "width": 1280, "height": 720, "frame_count": 17, "steps": 4, "seed": 99}  # runs for seconds
    out = Worker(settings).handle({"id": "killed", "input": job})
    killer.join()
    assert out["refresh_worker"] is True
    assert "ComfyUI" in out["error"] and "not running" in out["error"]
    assert time.monotonic() - started < 60
