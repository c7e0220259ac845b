# SPDX-License-Identifier: GPL-3.0-or-later (LICENSE; README, "Licence": loaded into ComfyUI, GPL-3.0)
"""ComfyUI custom node `LTX2ReleaseTextEncoder` (loaded by ComfyUI, not by the worker: launch adds this folder to
ComfyUI's `custom_nodes` search path): the text encoder leaves the GPU once the prompts are encoded.

Since 2026-12-03 no memory class ships it: stage 2's LoRA as a bypass leaves room for the encoder, and a new
prompt is faster with it resident (docs/performance.md); the bench's `worker-own-model` and `worker-release-te`
still use it. Why it was built: the large memory class then held two transformer copies (21.9 GB each with the
real checkpoint, whose first and last blocks are bf16) and, under `--highvram`, kept the 11.2 GB Gemma 3 text
encoder beside them for the whole job. With the real file sizes that went past the card (a peak of 80.3 GiB,
and ComfyUI partly unloading the encoder at every decode to make room). The encoder is needed only while a
prompt is encoded; its conditioning is what the samplers use. ComfyUI caches this node's output like the
encoders' (`--cache-classic`), so a job with the same prompts runs neither the encoders nor this node and the
encoder stays off the GPU; a new prompt loads it back from the CPU (one host-to-device copy) and this node
moves it off again.

Outputs are the two conditionings unchanged. Self-contained on purpose: it runs inside ComfyUI's Python,
which need not have the worker's packages.
"""

from __future__ import annotations


def unload(model_management, patcher) -> int:
    """Unload every model ComfyUI holds that is `patcher` or a clone of it; the bytes it had on the GPU."""
    freed = 0
    loaded = model_management.current_loaded_models
    for i in range(len(loaded) - 1, -1, -1):
        entry = loaded[i]
        if entry.model is None or not entry.model.is_clone(patcher):
            continue
        size = entry.model_loaded_memory()
        if entry.model_unload():  # detach: weights back to the offload device (the CPU), patches undone
            loaded.pop(i)
            freed += size
    if freed:
        model_management.soft_empty_cache()
    return freed


class LTX2ReleaseTextEncoder:
    """(positive, negative, clip) -> (positive, negative), with the text encoder moved off the GPU."""

    CATEGORY = "advanced/conditioning"
    RETURN_TYPES = ("CONDITIONING", "CONDITIONING")
    RETURN_NAMES = ("positive", "negative")
    FUNCTION = "release"
    DESCRIPTION = __doc__.splitlines()[0]

    @classmethod
    def INPUT_TYPES(cls):  # noqa: N802 (ComfyUI's name)
        return {"required": {"positive": ("CONDITIONING",), "negative": ("CONDITIONING",), "clip": ("CLIP",)}}

    def release(self, positive, negative, clip):
        import logging

        import comfy.model_management

        freed = unload(comfy.model_management, clip.patcher)
        logging.info("LTX2ReleaseTextEncoder: text encoder off the GPU (%.0f MB freed)", freed / 2**20)
        return (positive, negative)


NODE_CLASS_MAPPINGS = {"LTX2ReleaseTextEncoder": LTX2ReleaseTextEncoder}
NODE_DISPLAY_NAME_MAPPINGS = {"LTX2ReleaseTextEncoder": "LTX-2 release the text encoder (worker)"}
