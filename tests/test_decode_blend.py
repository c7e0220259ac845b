"""The decode node's blend on the GPU (ltx2_worker/comfy_nodes/ltx2_vae_decode.py, `blend_on_device`) against
ComfyUI's own tiled decode, in ComfyUI's Python with a real LTX-2 video VAE (the tiny stand-in's shape, random
weights). Skipped unless COMFYUI_DIR is set, like the other real tiers; the check that matters runs where
ComfyUI's Python has CUDA (a GPU host): the same frames, bit for bit, blended in GPU memory.

Why: the node moves ComfyUI's tile blending (a multiply, two sums and a division in float32) from the CPU to the
GPU to save the CPU's passes over the clip; it ships on by default only because the pixels stay the same."""

from __future__ import annotations

import json
import os
import subprocess

import pytest
from test_real_comfyui import COMFY_PYTHON, COMFYUI_DIR, pytestmark  # noqa: F401  (the same skip rule)

from ltx2_worker import launch

ROOT = launch.COMFY_NODES.parent.parent

# run in ComfyUI's Python, in its folder; NODE, TOOLS and DEVICE come from the environment
CHECK = r"""
import importlib.util, json, os, sys
device = os.environ["DEVICE"]
sys.argv = ["check"] + (["--cpu"] if device == "cpu" else [])
sys.path.insert(0, os.getcwd())
sys.path.insert(0, os.environ["TOOLS"])
import comfy.options
comfy.options.enable_args_parsing()
import torch, comfy.sd, comfy.utils, nodes
import make_tiny_models as tiny
from comfy.ldm.lightricks.vae.causal_video_autoencoder import VideoVAE
spec = importlib.util.spec_from_file_location("ltx2_vae_decode_under_test", os.environ["NODE"])
node = importlib.util.module_from_spec(spec)
spec.loader.exec_module(node)
torch.manual_seed(0)
generator = torch.Generator().manual_seed(0)
sd = tiny.fill(VideoVAE(config=tiny.VIDEO_VAE), torch, generator)
vae = comfy.sd.VAE(sd=sd, metadata={"config": json.dumps({"vae": tiny.VIDEO_VAE})})
latent = {"samples": torch.randn(1, 128, 3, 5, 7, generator=generator)}  # 224 x 160 x 17: 3 x 2 tiles of 128
seen = []
blend = comfy.utils.tiled_scale_multidim
def spy(*args, **kwargs):
    seen.append(str(kwargs.get("output_device")))
    return blend(*args, **kwargs)
comfy.utils.tiled_scale_multidim = spy
facts = {"vae_device": str(vae.device)}
with torch.inference_mode():
    theirs, = nodes.VAEDecodeTiled().decode(vae, latent, 128, 32, 64, 8)
    ours, = node.LTX2VAEDecodeTiled().decode(vae, latent, 128, 32, 64, 8, blend_on_device=True)
    facts["blended_on"] = seen[-1]
    facts["output_device_restored"] = str(vae.output_device)
    facts["result_device"] = str(ours.device)
    facts["equal"] = torch.equal(ours, theirs)
    facts["strides"] = [list(ours.stride()), list(theirs.stride())]
    facts["shape"] = list(ours.shape)
    node.BLEND_MARGIN_BYTES = 1 << 50  # no GPU holds this margin: the blend stays on the CPU
    node.LTX2VAEDecodeTiled().decode(vae, latent, 128, 32, 64, 8, blend_on_device=True)
    facts["blended_on_without_room"] = seen[-1]
print(json.dumps(facts))
"""


def run_check(device: str) -> dict:
    env = {**os.environ, "NODE": str(launch.COMFY_NODES / "ltx2_vae_decode.py"), "TOOLS": str(ROOT / "tools"),
           "DEVICE": device}
    out = subprocess.run([COMFY_PYTHON, "-c", CHECK], cwd=COMFYUI_DIR, env=env, capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def has_cuda() -> bool:
    out = subprocess.run([COMFY_PYTHON, "-c", "import torch; print(torch.cuda.is_available())"],
                         capture_output=True, text=True, timeout=120)
    return out.stdout.strip() == "True"


def test_on_the_cpu_the_node_decodes_as_comfyuis_tiled_decode():
    facts = run_check("cpu")
    assert facts["vae_device"] == "cpu" and facts["blended_on"] == "cpu", facts  # nothing to move
    assert facts["equal"] and facts["result_device"] == "cpu" and facts["output_device_restored"] == "cpu", facts
    assert facts["shape"] == [17, 160, 224, 3], facts


def test_on_a_gpu_the_blend_runs_there_and_gives_the_same_bits():
    if not has_cuda():
        pytest.skip("ComfyUI's Python has no CUDA device")
    facts = run_check("cuda")
    assert facts["vae_device"].startswith("cuda") and facts["blended_on"].startswith("cuda"), facts
    assert facts["equal"], facts
    assert facts["result_device"] == "cpu" and facts["output_device_restored"] == "cpu", facts
    assert facts["strides"][0] == facts["strides"][1], facts  # the frames' layout downstream is unchanged too
    assert facts["blended_on_without_room"] == "cpu", facts
