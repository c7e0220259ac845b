# SPDX-License-Identifier: GPL-3.0-or-later (LICENSE; README, "Licence": loaded into ComfyUI, GPL-3.0)
"""ComfyUI custom node `LTX2LoraBypass` (loaded by ComfyUI, not by the worker: launch adds this folder to
ComfyUI's `custom_nodes` search path): a LoRA as a bypass branch that keeps the bypass LoRAs before it.

Why: ComfyUI v0.26.2's `LoraLoaderBypassModelOnly` (comfy/sd.py, load_bypass_lora_for_models) stores its
branches under one injection key, "bypass_lora", with `set_injections`, which replaces what the model carried
under that key: in a chain of bypass LoRAs only the last one runs (checked on the pinned ComfyUI: after two,
the model holds the second's injection alone). A request's LoRAs, its camera move and its IC-LoRA are such a
chain, and stage 2's distilled LoRA sits on top of it, so stage 1 ran the last of them only and stage 2 none.

This node builds the branches as ComfyUI does (the same adapters, the same forward: output + up(down(x)) *
strength) and stores, under the same key, one injection that injects the earlier ones and then its own, and
ejects them in reverse order, so each layer's forward is wrapped once per LoRA and unwrapped back to the
original. Its adapters are kept by the node between prompts (per file, strength and model type): after their
first use their matrices sit on the GPU, so a prompt that re-runs the node (the LoRAs below it changed) moves
nothing again; stage 2's distilled LoRA (7.7 GB) used to be copied to the GPU at every switch between plain
and LoRA jobs. Self-contained on purpose: it runs inside ComfyUI's Python, which need not have the worker's
packages.
"""

from __future__ import annotations

import logging

log = logging.getLogger("ltx2_lora_bypass")

INJECTION_KEY = "bypass_lora"  # ComfyUI's key for bypass branches (comfy/sd.py at the pinned tag)


def stacked(parts: list):
    """One PatcherInjection running `parts` in order and ejecting them in reverse: a layer's forward wrapped
    by several bypass hooks is restored to its original only when the last wrapper comes off first."""
    from comfy.patcher_extension import PatcherInjection

    def inject(model_patcher):
        for part in parts:
            part.inject(model_patcher)

    def eject(model_patcher):
        for part in reversed(parts):
            part.eject(model_patcher)

    return PatcherInjection(inject=inject, eject=eject)


def with_bypass(model, adapters: dict, regular: dict, strength: float):
    """A clone of `model` (a ModelPatcher) with `adapters` (weight key -> WeightAdapterBase) as bypass
    branches after the ones it already has, and `regular` (other patch kinds) as weight patches."""
    import comfy.weight_adapter

    out = model.clone()
    if regular:
        out.add_patches(regular, strength)
    manager = comfy.weight_adapter.BypassInjectionManager()
    keys = set(out.model.state_dict().keys())
    for key, adapter in adapters.items():
        if key in keys:
            manager.add_adapter(key, adapter, strength=strength)
        else:
            log.warning("LTX2LoraBypass: adapter key not in the model: %s", key)
    injections = manager.create_injections(out.model)
    if manager.get_hook_count() > 0:
        earlier = model.get_injections(INJECTION_KEY) or []
        out.set_injections(INJECTION_KEY, [stacked([*earlier, *injections])] if earlier else injections)
    return out


class LTX2LoraBypass:
    """MODEL -> the model with a LoRA as a bypass branch, after the bypass LoRAs it already has."""

    CATEGORY = "loaders"
    RETURN_TYPES = ("MODEL",)
    FUNCTION = "apply"
    DESCRIPTION = __doc__.splitlines()[0]

    def __init__(self):
        self.kept: tuple | None = None  # ((path, strength, model type), adapters, regular patches)

    @classmethod
    def INPUT_TYPES(cls):  # noqa: N802 (ComfyUI's name)
        import folder_paths

        return {"required": {"model": ("MODEL",), "lora_name": (folder_paths.get_filename_list("loras"),),
                             "strength_model": ("FLOAT", {"default": 1.0, "min": -100.0, "max": 100.0,
                                                          "step": 0.01})}}

    def apply(self, model, lora_name, strength_model):
        import comfy.lora
        import comfy.lora_convert
        import comfy.utils
        import comfy.weight_adapter
        import folder_paths

        if strength_model == 0:
            return (model,)
        path = folder_paths.get_full_path_or_raise("loras", lora_name)
        key = (path, strength_model, type(model.model))
        if self.kept is None or self.kept[0] != key:
            self.kept = None  # the previous LoRA's tensors go before the next one loads
            lora = comfy.utils.load_torch_file(path, safe_load=True)
            key_map = comfy.lora.model_lora_keys_unet(model.model, {})
            loaded = comfy.lora.load_lora(comfy.lora_convert.convert_lora(lora), key_map)
            adapters = {k: v for k, v in loaded.items() if isinstance(v, comfy.weight_adapter.WeightAdapterBase)}
            self.kept = (key, adapters, {k: v for k, v in loaded.items() if k not in adapters})
        _, adapters, regular = self.kept
        return (with_bypass(model, adapters, regular, strength_model),)


NODE_CLASS_MAPPINGS = {"LTX2LoraBypass": LTX2LoraBypass}
NODE_DISPLAY_NAME_MAPPINGS = {"LTX2LoraBypass": "LTX-2 LoRA as a bypass, stacking (worker)"}
