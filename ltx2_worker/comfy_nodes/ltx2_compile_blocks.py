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
`transformer_options` skipped as ComfyUI skips them. Inside the parts, each FP8 linear (per-tensor scales, a
static input scale: the LTX-2 FP8 checkpoint's format) runs as plain tensor operations, the quantisation of its
input and `torch._scaled_mm`, the product ComfyUI's FP8 path calls: ComfyUI's own path builds a quantised tensor
subclass whose parameters Dynamo cannot trace, so it broke the graph at every linear and left every
quantisation a launch of its own (H100, 2026-12-05). The plain tensors are read off each layer's weight before
every model call (`refresh`), outside the compiled code; any layer not in that format, or carrying weight
patches, keeps ComfyUI's path. The first call of each shape compiles (tens of seconds on a cold cache;
TORCHINDUCTOR_CACHE_DIR, which the launcher puts on the volume, keeps the result; a part that fails to compile
runs eager); the worker's LTX2CudaGraphs node, placed after this one, then records the compiled kernels like any
other. Self-contained on purpose: it runs inside ComfyUI's Python, which need not have the worker's packages.
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
FP8_MAX = 448.0  # float8_e4m3fn's largest finite value: the quantisation saturates there, as comfy_kitchen's does
PLAIN = "_ltx2_fp8_plain"  # a layer's attribute: (fp8 weight, weight scale, input scale) while they are current
REFRESH_KEY = "ltx2_fp8_linears"  # the APPLY_MODEL wrapper that keeps them current


def _skip_transformer_options(guard_entries):
    return [("transformer_options" not in entry.name) for entry in guard_entries]


def part_keys(diffusion_model) -> list[str]:
    """The attribute paths of the transformer blocks' parts, as ComfyUI's compile wrapper takes them."""
    blocks = getattr(diffusion_model, "transformer_blocks", None) or []
    return [f"diffusion_model.transformer_blocks.{i}.{part}" for i, block in enumerate(blocks)
            for part in PARTS if getattr(block, part, None) is not None]


def fp8_linears(parts) -> list:
    """The linears inside `parts` that the plain path can run: ComfyUI's mixed-precision linears holding a
    float8_e4m3fn weight with a float32 input scale (what `torch._scaled_mm` takes), both dimensions multiples of
    16 (cuBLASLt's FP8 rule)."""
    import torch

    found = []
    for part in parts:
        for module in part.modules():
            if (getattr(module, "quant_format", None) == "float8_e4m3fn" and
                    getattr(module, "input_scale", None) is not None and
                    module.input_scale.dtype == torch.float32 and module.input_scale.numel() == 1 and
                    getattr(module.weight, "_qdata", None) is not None and
                    module.weight._qdata.dtype == torch.float8_e4m3fn and
                    module.in_features % 16 == 0 and module.out_features % 16 == 0):
                found.append(module)
    return found


def refresh(linears) -> None:
    """Each layer's plain tensors from its weight as it is now (ComfyUI moves and replaces weights between
    calls), or none where the layer must take ComfyUI's path: a weight patch, forced casting, full precision."""
    for module in linears:
        weight = module.weight
        usable = (not getattr(module, "weight_function", None) and not getattr(module, "bias_function", None) and
                  not getattr(module, "comfy_force_cast_weights", False) and
                  not getattr(module, "_full_precision_mm", False) and
                  module.input_scale.device == weight._qdata.device)
        plain = (weight._qdata, weight._params.scale, module.input_scale) if usable else None
        current = module.__dict__.get(PLAIN)
        if plain and current and all(a is b for a, b in zip(plain, current, strict=True)):
            continue  # the same tensors keep the same tuple: nothing new for Dynamo to guard
        module.__dict__[PLAIN] = plain


def plain_fp8(module, x):
    """What ComfyUI's FP8 path computes for `module(x)`, as operations Dynamo can trace: x quantised with the
    layer's input scale (x / scale, saturated, rounded to float8_e4m3fn, as comfy_kitchen's kernel does), then
    `torch._scaled_mm` with the per-tensor scales and the bias, out in x's dtype. None where ComfyUI's own path
    must run: no current plain tensors, another dtype or device, a shape ComfyUI would not quantise."""
    import torch

    plain = getattr(module, PLAIN, None)
    bias = module.bias
    if (plain is None or type(x) is not torch.Tensor or x.ndim not in (2, 3) or
            x.dtype not in (torch.bfloat16, torch.float16) or x.device != plain[0].device or
            (bias is not None and bias.dtype != x.dtype)):
        return None
    weight, weight_scale, input_scale = plain
    rows = x.reshape(-1, x.shape[-1])
    quantised = (rows.float() / input_scale).clamp(-FP8_MAX, FP8_MAX).to(torch.float8_e4m3fn)
    out = torch._scaled_mm(quantised, weight.t(), scale_a=input_scale, scale_b=weight_scale, bias=bias,
                           out_dtype=x.dtype)
    return out.reshape(*x.shape[:-1], out.shape[-1])


_PLAIN_CLASSES: dict = {}


def plain_fp8_class(cls):
    """A subclass of ComfyUI's linear class `cls` whose forward, while Dynamo traces it, takes `plain_fp8`, and
    otherwise is ComfyUI's. A class, not an instance's `forward`: ComfyUI's bypass LoRAs wrap and restore the
    instance's `forward`, and wrap this one like any other, so a LoRA's branch is never bypassed. `cls` itself
    where it is one of these already (a layer seen by an earlier clone of the model)."""
    import torch

    if cls in _PLAIN_CLASSES.values():
        return cls
    if cls not in _PLAIN_CLASSES:
        def forward(self, x, *args, **kwargs):
            if torch.compiler.is_compiling() and not args and not kwargs:
                out = plain_fp8(self, x)
                if out is not None:
                    return out
            return cls.forward(self, x, *args, **kwargs)

        _PLAIN_CLASSES[cls] = type(cls.__name__, (cls,), {"forward": forward, "__module__": cls.__module__,
                                                          "__qualname__": cls.__qualname__})
    return _PLAIN_CLASSES[cls]


def refresh_wrapper(linears):
    """An APPLY_MODEL wrapper: the plain tensors made current, then the model call (compiled or recorded)."""

    def wrapper(executor, *args, **kwargs):
        refresh(linears)
        return executor(*args, **kwargs)

    return wrapper


def modules_at(patcher, keys):
    """The modules at `keys` (paths from the ModelPatcher's model, as `part_keys` gives them)."""
    return [patcher.get_model_object(key) for key in keys]


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
        # a part that fails to compile (a damaged compile cache, a kernel the GPU refuses) runs eager, with
        # Dynamo's warning in ComfyUI's log, instead of failing every job: only this node compiles in ComfyUI
        torch._dynamo.config.suppress_errors = True
        patched = model.clone()
        linears = fp8_linears(modules_at(patched, keys))
        for module in linears:
            module.__class__ = plain_fp8_class(type(module))
        from comfy.patcher_extension import WrappersMP

        patched.add_wrapper_with_key(WrappersMP.APPLY_MODEL, REFRESH_KEY, refresh_wrapper(linears))
        set_torch_compile_wrapper(model=patched, backend="inductor", dynamic=False, keys=keys,
                                  options={"guard_filter_fn": _skip_transformer_options})
        log.info("LTX2CompileBlocks: %d parts of the transformer blocks compiled on first use, %d FP8 linears "
                 "in them as plain operations", len(keys), len(linears))
        return (patched,)


NODE_CLASS_MAPPINGS = {"LTX2CompileBlocks": LTX2CompileBlocks}
NODE_DISPLAY_NAME_MAPPINGS = {"LTX2CompileBlocks": "LTX-2 compiled transformer blocks (worker)"}
