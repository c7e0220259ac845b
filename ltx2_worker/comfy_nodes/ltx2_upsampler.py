# SPDX-License-Identifier: GPL-3.0-or-later (LICENSE; README, "Licence": loaded into ComfyUI, GPL-3.0)
"""ComfyUI custom node `LTX2LatentUpsampler` (loaded by ComfyUI, not by the worker: launch adds this folder to
ComfyUI's `custom_nodes` search path): ComfyUI's LTXVLatentUpsampler, with the upscaler left on the GPU.

Why: ComfyUI v0.26.2's node (`comfy_extras/nodes_lt_upsampler.py`) moves the 1 GB upscaler to the GPU and
back to the CPU in every job, outside model management ("TODO: use the comfy model management system"):
0.7-1.1 s of every job on the GPU host, whatever the clip's size. This node hands the model to ComfyUI's model
management instead (one ModelPatcher per upscaler), so it is loaded once, stays while there is room, and is
unloaded like any other model when memory runs short or on /free.

The computation is LTXVLatentUpsampler's, unchanged: the same un-normalise, model call, normalise and dtypes,
so the same latent. Self-contained on purpose: it runs inside ComfyUI's Python, which need not have the
worker's packages.
"""

from __future__ import annotations

import math
import weakref

# One slot: the last upscaler seen and its ModelPatcher. The patcher holds the model (not the other way round:
# no reference cycle), so when ComfyUI's cache lets go of the model, a new one replaces it here and the old
# one's memory is released through model management's own finalizer.
_RESIDENT: dict = {}


def patcher_for(upscale_model, load_device, offload_device):
    """The ModelPatcher wrapping `upscale_model`, made on first use."""
    import comfy.model_patcher

    ref = _RESIDENT.get("model")
    if ref is None or ref() is not upscale_model:
        _RESIDENT["patcher"] = comfy.model_patcher.ModelPatcher(upscale_model, load_device=load_device,
                                                                offload_device=offload_device)
        _RESIDENT["model"] = weakref.ref(upscale_model)
    return _RESIDENT["patcher"]


class LTX2LatentUpsampler:
    """LATENT -> LATENT at twice the size, as LTXVLatentUpsampler, the upscaler kept by model management."""

    CATEGORY = "latent/video/ltxv"
    RETURN_TYPES = ("LATENT",)
    FUNCTION = "upsample"
    DESCRIPTION = __doc__.splitlines()[0]

    @classmethod
    def INPUT_TYPES(cls):  # noqa: N802 (ComfyUI's name); LTXVLatentUpsampler's inputs
        return {"required": {"samples": ("LATENT",), "upscale_model": ("LATENT_UPSCALE_MODEL",), "vae": ("VAE",)}}

    def upsample(self, samples, upscale_model, vae):
        import comfy.model_management as mm

        device = mm.get_torch_device()
        latents = samples["samples"]
        input_dtype = latents.dtype
        patcher = patcher_for(upscale_model, device, mm.unet_offload_device())
        mm.load_models_gpu([patcher], memory_required=math.prod(latents.shape) * 3000.0)  # the stock estimate
        model_dtype = next(upscale_model.parameters()).dtype
        latents = latents.to(dtype=model_dtype, device=device)
        stats = vae.first_stage_model.per_channel_statistics
        upsampled = stats.normalize(upscale_model(stats.un_normalize(latents)))
        out = samples.copy()
        out["samples"] = upsampled.to(dtype=input_dtype, device=mm.intermediate_device())
        out.pop("noise_mask", None)
        return (out,)


NODE_CLASS_MAPPINGS = {"LTX2LatentUpsampler": LTX2LatentUpsampler}
NODE_DISPLAY_NAME_MAPPINGS = {"LTX2LatentUpsampler": "LTX-2 latent upsampler, model kept (worker)"}
