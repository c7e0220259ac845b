# SPDX-License-Identifier: GPL-3.0-or-later (LICENSE; README, "Licence": loaded into ComfyUI, GPL-3.0)
"""ComfyUI custom node `LTX2LatentUpscaleModelLoader` (loaded by ComfyUI, not by the worker: launch adds this
folder to ComfyUI's `custom_nodes` search path): ComfyUI's LatentUpscaleModelLoader, without the random start.

Why: for LTX-2's spatial upscaler, ComfyUI v0.26.2 (`comfy_extras/nodes_hunyuan.py`) builds the 498M-parameter
model in float32 with PyTorch's random initialisation, converts it to bfloat16 and only then copies the file's
weights over it. The random initialisation is thrown away and is the slow part: 2.7-4.3 s of every cold start
on the GPU host's 16 CPUs (docs/performance.md), 5.3 s on 2 CPUs, against 0.25 s for what this node does.

This node builds the same model on PyTorch's meta device (shapes only) and takes the file's tensors as its
weights, cast to the dtype ComfyUI would choose (`vae_dtype`, bfloat16 or float32). The model is the same
object type with the same weights, bit for bit, on the CPU as ComfyUI leaves it. A file in any other format
(HunyuanVideo 1.5's upscalers), or a model that would keep a tensor without a value, is loaded by ComfyUI's
own node. Self-contained on purpose: it runs inside ComfyUI's Python, which need not have the worker's packages.
"""

from __future__ import annotations

import json

LTX2_KEY = "post_upsample_res_blocks.0.conv2.bias"  # how ComfyUI's loader recognises LTX-2's upscaler file


def build_without_init(model_class, config: dict, state_dict: dict, dtype):
    """`model_class.from_config(config)` holding `state_dict` (cast to `dtype`) as its tensors, built without
    initialising any weight; None when the model has a parameter or buffer the file does not give."""
    import torch

    with torch.device("meta"):
        model = model_class.from_config(config)
    model.load_state_dict({k: v.to(dtype) for k, v in state_dict.items()}, strict=True, assign=True)
    tensors = [*model.parameters(), *model.buffers()]
    if any(t.is_meta for t in tensors):
        return None
    return model


class LTX2LatentUpscaleModelLoader:
    """A latent upscale model from `latent_upscale_models`, LTX-2's built without random initialisation."""

    CATEGORY = "loaders"
    RETURN_TYPES = ("LATENT_UPSCALE_MODEL",)
    FUNCTION = "load"
    DESCRIPTION = __doc__.splitlines()[0]

    @classmethod
    def INPUT_TYPES(cls):  # noqa: N802 (ComfyUI's name); LatentUpscaleModelLoader's input
        import folder_paths

        return {"required": {"model_name": (folder_paths.get_filename_list("latent_upscale_models"),)}}

    def load(self, model_name):
        import comfy.model_management
        import comfy.utils
        import folder_paths
        import torch

        path = folder_paths.get_full_path_or_raise("latent_upscale_models", model_name)
        state_dict, metadata = comfy.utils.load_torch_file(path, safe_load=True, return_metadata=True)
        model = None
        if LTX2_KEY in state_dict:
            from comfy.ldm.lightricks.latent_upsampler import LatentUpsampler

            dtype = comfy.model_management.vae_dtype(allowed_dtypes=[torch.bfloat16, torch.float32])
            model = build_without_init(LatentUpsampler, json.loads(metadata["config"]), state_dict, dtype)
        if model is None:
            from comfy_extras.nodes_hunyuan import LatentUpscaleModelLoader

            return LatentUpscaleModelLoader.execute(model_name).result
        return (model,)


NODE_CLASS_MAPPINGS = {"LTX2LatentUpscaleModelLoader": LTX2LatentUpscaleModelLoader}
NODE_DISPLAY_NAME_MAPPINGS = {"LTX2LatentUpscaleModelLoader": "LTX-2 load latent upscale model (worker)"}
