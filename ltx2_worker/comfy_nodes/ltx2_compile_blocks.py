# SPDX-License-Identifier: GPL-3.0-or-later (LICENSE; README, "Licence": loaded into ComfyUI, GPL-3.0)
"""ComfyUI custom node `LTX2CompileBlocks` (loaded by ComfyUI, not by the worker: launch adds this folder to
ComfyUI's `custom_nodes` search path): each transformer block of the diffusion model compiled by torch.compile.

Why: a warm job's GPU time is about a quarter elementwise work between the matrix products (norms, RoPE, gates,
the FP8 quantisation of activations: 27,048 separate launches per job; docs/performance.md), which Inductor
fuses into fewer kernels that read and write memory once. Blocks, not the whole model: the 48 blocks share one
class, so Dynamo compiles one block's code (per input shape) and every block reuses it, and the loop over blocks,
the patchifier and ComfyUI's wrappers stay eager.

How: ComfyUI's own `set_torch_compile_wrapper` (what its TorchCompileModel node uses) with the block keys,
static shapes (a new size is a recompile, not a slower dynamic kernel), and Dynamo's guards on
`transformer_options` skipped as ComfyUI skips them. The first call of each shape compiles (tens of seconds on
a cold cache, TORCHINDUCTOR_CACHE_DIR keeps the result); the worker's LTX2CudaGraphs node, placed after this one,
then records the compiled kernels like any other. Self-contained on purpose: it runs inside ComfyUI's Python,
which need not have the worker's packages.
"""

from __future__ import annotations

import logging

log = logging.getLogger("ltx2_compile_blocks")

RECOMPILE_LIMIT = 64  # shapes per block code: stage 1, stage 2, other sizes; Dynamo's default of 8 falls to eager


def _skip_transformer_options(guard_entries):
    return [("transformer_options" not in entry.name) for entry in guard_entries]


def block_keys(diffusion_model) -> list[str]:
    """The attribute paths of the model's transformer blocks, as ComfyUI's compile wrapper takes them."""
    blocks = getattr(diffusion_model, "transformer_blocks", None)
    if blocks is None:
        return []
    return [f"diffusion_model.transformer_blocks.{i}" for i in range(len(blocks))]


class LTX2CompileBlocks:
    """MODEL -> the same model, its transformer blocks compiled by torch.compile (Inductor)."""

    CATEGORY = "advanced/model"
    RETURN_TYPES = ("MODEL",)
    FUNCTION = "apply"
    DESCRIPTION = __doc__.splitlines()[0]

    @classmethod
    def INPUT_TYPES(cls):  # noqa: N802 (ComfyUI's name)
        return {"required": {"model": ("MODEL",), "enabled": ("BOOLEAN", {"default": True})}}

    def apply(self, model, enabled=True):
        import torch

        if not enabled or not torch.cuda.is_available():
            return (model,)
        from comfy_api.torch_helpers import set_torch_compile_wrapper

        keys = block_keys(model.get_model_object("diffusion_model"))
        if not keys:
            log.warning("LTX2CompileBlocks: the model has no transformer_blocks; it runs uncompiled")
            return (model,)
        for name in ("cache_size_limit", "recompile_limit", "accumulated_cache_size_limit",
                     "accumulated_recompile_limit"):
            if hasattr(torch._dynamo.config, name):
                setattr(torch._dynamo.config, name, max(getattr(torch._dynamo.config, name), RECOMPILE_LIMIT))
        patched = model.clone()
        set_torch_compile_wrapper(model=patched, backend="inductor", dynamic=False, keys=keys,
                                  options={"guard_filter_fn": _skip_transformer_options})
        log.info("LTX2CompileBlocks: %d transformer blocks compiled on first use", len(keys))
        return (patched,)


NODE_CLASS_MAPPINGS = {"LTX2CompileBlocks": LTX2CompileBlocks}
NODE_DISPLAY_NAME_MAPPINGS = {"LTX2CompileBlocks": "LTX-2 compiled transformer blocks (worker)"}
