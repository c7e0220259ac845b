"""Is a downloaded file a LoRA that ComfyUI will apply to LTX-2 19B's transformer? Checked before ComfyUI sees
it, from the safetensors header alone (no tensor is read, nothing is unpickled: a pickle, .ckpt or .pt file is
refused because loading one can run code).

A LoRA fits when every tensor is a low-rank pair or an alpha that ComfyUI's loader maps to a linear layer of
the transformer (comfy/lora.py at v0.26.2, for LTXAV: `diffusion_model.<layer>`, `<layer>` or
`lora_unet_<layer with _>`, with `.lora_A/.lora_B` or `.lora_down/.lora_up`), with shapes that multiply to
that layer's weight. ComfyUI itself skips a key it cannot map with a log line and applies the rest, so a LoRA
made for another model would run as a silent no-op; here it is refused, naming the model it looks made for or
the first key that does not fit. The layers and their shapes are read from the checkpoint's own header.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

from safetensors import safe_open

TRANSFORMER_PREFIX = "model.diffusion_model."  # where the checkpoint keeps the transformer
# suffix -> the part of the pair it is ("down": rank x in, "up": out x rank)
PAIRS = {".lora_A.weight": "down", ".lora_B.weight": "up", ".lora_down.weight": "down", ".lora_up.weight": "up"}
FLOAT_TYPES = {"F16", "BF16", "F32"}
# key patterns of LoRAs for other models, tried on the first key that does not fit (most specific first)
OTHER_MODELS = (
    (re.compile(r"double_blocks[._]\d+[._]img_attn[._]qkv|single_blocks[._]\d+[._]linear1"), "FLUX"),
    (re.compile(r"double_blocks[._]\d+[._]img_attn_qkv|txt_in[._]individual_token_refiner"), "HunyuanVideo"),
    (re.compile(r"single_transformer_blocks[._]\d+"), "FLUX (diffusers format)"),
    (re.compile(r"joint_blocks[._]\d+"), "Stable Diffusion 3"),
    (re.compile(r"(^|[._])blocks[._]\d+[._](self_attn|cross_attn)[._][qkvo][._]"), "Wan 2.x"),
    (re.compile(r"transformer_blocks[._]\d+[._](img_mlp|txt_mlp|img_mod)"), "Qwen-Image"),
    (re.compile(r"lora_te\d?_|(down|up|input|output)_blocks[._]\d+|mid_block"), "Stable Diffusion 1.x/2.x/XL"),
)


class LoraRefused(ValueError):
    """The file is not a LoRA this worker applies; `str()` says why, for `loras[i].url: ...`."""


def header(path: Path) -> dict[str, tuple[str, tuple[int, ...]]]:
    """name -> (dtype, shape) of every tensor, from a file that safetensors accepts as a whole (header, offsets,
    no trailing bytes)."""
    try:
        with safe_open(str(path), framework="np") as f:
            found = {}
            for name in f.keys():
                piece = f.get_slice(name)
                found[name] = (piece.get_dtype(), tuple(piece.get_shape()))
            return found
    except Exception as exc:  # safetensors raises its own error type for every malformed file
        raise LoraRefused(f"is not a valid safetensors file ({str(exc).strip()[:120]}); only .safetensors LoRAs "
                          "are loaded (a pickle, .ckpt or .pt file can run code)") from None


def transformer_layers(checkpoint: Path) -> dict[str, tuple[int, ...]]:
    """The transformer's weights and their shapes as named in the checkpoint, without the prefix."""
    try:
        tensors = header(checkpoint)
    except LoraRefused as exc:  # the checkpoint, not the request's LoRA: a worker fault
        raise RuntimeError(f"cannot read the layers of the checkpoint {checkpoint}: {exc}") from None
    return {name[len(TRANSFORMER_PREFIX):]: shape for name, (_, shape) in tensors.items()
            if name.startswith(TRANSFORMER_PREFIX)}


def check_lora(tensors: dict[str, tuple[str, tuple[int, ...]]], layers: dict[str, tuple[int, ...]]) -> int:
    """Raise LoraRefused unless every tensor fits a linear layer of `layers`; return the number of layers it
    changes."""
    if not tensors:
        raise LoraRefused("holds no tensors")
    underscored = {name[:-len(".weight")].replace(".", "_"): name[:-len(".weight")]
                   for name in layers if name.endswith(".weight")}
    pairs: dict[str, dict[str, tuple[int, ...]]] = {}
    for key, (dtype, shape) in sorted(tensors.items()):
        suffix = next((s for s in (*PAIRS, ".alpha") if key.endswith(s)), None)
        layer = _layer(key[:-len(suffix)], underscored) if suffix else None
        weight = layers.get(f"{layer}.weight") if layer else None
        if weight is None or len(weight) != 2:
            raise LoraRefused(_misfit(key, tensors))
        if dtype not in FLOAT_TYPES:
            raise LoraRefused(f"key {key!r} is {dtype}; LoRA tensors must be F16, BF16 or F32")
        if suffix == ".alpha":
            if math.prod(shape) != 1:
                raise LoraRefused(f"key {key!r} has shape {list(shape)}; an alpha is one number")
            continue
        pairs.setdefault(layer, {})[PAIRS[suffix]] = shape
        if len(shape) != 2:
            raise LoraRefused(f"key {key!r} has shape {list(shape)}; a LoRA matrix has two dimensions")
    for layer, parts in pairs.items():
        out_dim, in_dim = layers[f"{layer}.weight"]
        if set(parts) != {"down", "up"}:
            raise LoraRefused(f"layer {layer!r} has only the {next(iter(parts))} half of its LoRA pair")
        (rank, down_in), (up_out, up_rank) = parts["down"], parts["up"]
        if (down_in, up_out) != (in_dim, out_dim) or rank != up_rank:
            raise LoraRefused(f"layer {layer!r}: the LoRA's matrices are {up_out} x {up_rank} and {rank} x {down_in}, "
                              f"but LTX-2 19B's layer is {out_dim} x {in_dim}: made for another model or size of "
                              "it (LTX-Video 0.9, for one)")
    if not pairs:
        raise LoraRefused("holds only alphas, no LoRA matrices")
    return len(pairs)


def _layer(prefix: str, underscored: dict[str, str]) -> str:
    """The transformer layer ComfyUI maps a LoRA key's prefix to (comfy/lora.py, model_lora_keys_unet)."""
    if prefix.startswith("diffusion_model."):
        return prefix[len("diffusion_model."):]
    if prefix.startswith("lora_unet_"):
        return underscored.get(prefix[len("lora_unet_"):], "")
    return prefix


def _misfit(key: str, tensors: dict) -> str:
    for pattern, model in OTHER_MODELS:
        if any(pattern.search(name) for name in tensors):
            return f"is a LoRA for {model}, not LTX-2 19B (key {key!r} names no layer of LTX-2's transformer)"
    return (f"does not fit LTX-2 19B: key {key!r} is not a LoRA matrix (.lora_A/.lora_B, .lora_down/.lora_up) "
            "or alpha of a linear layer of its transformer (diffusion_model.<layer>...)")
