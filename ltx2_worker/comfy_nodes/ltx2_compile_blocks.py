# SPDX-License-Identifier: GPL-3.0-or-later (LICENSE; README, "Licence": loaded into ComfyUI, GPL-3.0)
"""ComfyUI custom node `LTX2CompileBlocks` (loaded by ComfyUI, not by the worker: launch adds this folder to
ComfyUI's `custom_nodes` search path): the parts of each transformer block (its attention and feed-forward
modules) compiled by torch.compile.

Why: a warm job's GPU time is about a quarter elementwise work between the matrix products (norms, RoPE, gates,
the FP8 quantisation of activations: 27,048 separate launches per job; docs/performance.md), which Inductor
fuses into fewer kernels that read and write memory once. Parts, not whole blocks: a block adds its branches to
its input in place (`vx.add_`, `vx.addcmul_`), where Dynamo breaks the graph and recompiled the rest at every
call until it gave up (H100, 2026-12-05: stage 1 24.4 s against 8.3 s). The parts take tensors and return new
ones; the 48 blocks share their classes, so Dynamo compiles each part's code once per input shape and every
block reuses it, and the block bodies, the loop, the patchifier and ComfyUI's wrappers stay eager.

How: ComfyUI's own `set_torch_compile_wrapper` (what its TorchCompileModel node uses) with the parts' keys,
static shapes (a new size is a recompile, not a slower dynamic kernel), and Dynamo's guards on
`transformer_options` skipped as ComfyUI skips them. The first call of each shape compiles (tens of seconds on
a cold cache, TORCHINDUCTOR_CACHE_DIR keeps the result); the worker's LTX2CudaGraphs node, placed after this one,
then records the compiled kernels like any other. Self-contained on purpose: it runs inside ComfyUI's Python,
which need not have the worker's packages.
"""

from __future__ import annotations

import logging

log = logging.getLogger("ltx2_compile_blocks")

# per part code: 6 attention shapes (video and audio self and text attention, both cross-modal ones) and 2
# feed-forward shapes a stage, two stages, other sizes; Dynamo's default of 8 falls back to eager
RECOMPILE_LIMIT = 64
# LTX-2's BasicAVTransformerBlock (comfy/ldm/lightricks/av_model.py): the modules it calls, none of which
# changes its inputs in place
PARTS = ("attn1", "attn2", "ff", "audio_attn1", "audio_attn2", "audio_ff", "audio_to_video_attn",
         "video_to_audio_attn")


def _skip_transformer_options(guard_entries):
    return [("transformer_options" not in entry.name) for entry in guard_entries]


def part_keys(diffusion_model) -> list[str]:
    """The attribute paths of the transformer blocks' parts, as ComfyUI's compile wrapper takes them."""
    blocks = getattr(diffusion_model, "transformer_blocks", None) or []
    return [f"diffusion_model.transformer_blocks.{i}.{part}" for i, block in enumerate(blocks)
            for part in PARTS if getattr(block, part, None) is not None]


class LTX2CompileBlocks:
    """MODEL -> the same model, its transformer blocks' parts compiled by torch.compile (Inductor)."""

    CATEGORY = "advanced/model"
    RETURN_TYPES = ("MODEL",)
    FUNCTION = "apply"
    DESCRIPTION = __doc__.splitlines()[0]

    @classmethod
    def INPUT_TYPES(cls):  # noqa: N802 (ComfyUI's name)
        return {"required": {"model": ("MODEL",), "enabled": ("BOOLEAN", {"default": True})}}

    def apply(self, model, enabled=True):
        import torch

        if not enabled:
            return (model,)
        from comfy_api.torch_helpers import set_torch_compile_wrapper

        keys = part_keys(model.get_model_object("diffusion_model"))
        if not keys:
            log.warning("LTX2CompileBlocks: the model has no transformer blocks' parts; it runs uncompiled")
            return (model,)
        for name in ("cache_size_limit", "recompile_limit", "accumulated_cache_size_limit",
                     "accumulated_recompile_limit"):
            if hasattr(torch._dynamo.config, name):
                setattr(torch._dynamo.config, name, max(getattr(torch._dynamo.config, name), RECOMPILE_LIMIT))
        patched = model.clone()
        set_torch_compile_wrapper(model=patched, backend="inductor", dynamic=False, keys=keys,
                                  options={"guard_filter_fn": _skip_transformer_options})
        log.info("LTX2CompileBlocks: %d parts of the transformer blocks compiled on first use", len(keys))
        return (patched,)


NODE_CLASS_MAPPINGS = {"LTX2CompileBlocks": LTX2CompileBlocks}
NODE_DISPLAY_NAME_MAPPINGS = {"LTX2CompileBlocks": "LTX-2 compiled transformer blocks (worker)"}
