# SPDX-License-Identifier: GPL-3.0-or-later (LICENSE; README, "Licence": loaded into ComfyUI, GPL-3.0)
"""ComfyUI custom nodes `LTX2AudioVAELoader` and `LTX2TextEncoderLoader` (loaded by ComfyUI, not by the worker:
launch adds this folder to ComfyUI's `custom_nodes` search path): ComfyUI's LTXVAudioVAELoader and
LTXAVTextEncoderLoader, opening only the tensors they take from the 27 GB checkpoint.

Why: both of ComfyUI v0.26.2's loaders (`comfy_extras/nodes_lt_audio.py`) open every tensor of the checkpoint
(`comfy.utils.load_torch_file`) and keep a small part: the audio VAE and vocoder (0.4 GB of the real file), and
the text encoder's projection and embedding connectors beside the Gemma file. Opening a tensor touches its first
page, and the kernel reads around each page it faults in (16 MB on the test machine), so on a fresh worker each
loader waits until nearly the whole checkpoint has come off the disk. On the GPU host the audio VAE loader, the
first node of the first job, waited 4.3-12 s, and the text encoder loader ended 2.6 s after the checkpoint's read
in every cold start, against 2.6 s in all when everything was read before (docs/performance.md). These nodes
open only the tensors they keep; the prefetch reads the audio ones first (ltx2_worker/prefetch.py, FIRST_TENSORS).
With dynamic VRAM on (the 48 and 24 GB classes) ComfyUI maps the file itself without touching it, and its own
loaders run.

The text encoder's loader also counts the checkpoint's parameters (to choose where the model starts), so it
is given every other tensor of the checkpoint as a placeholder of the same shape and dtype on PyTorch's meta
device, which holds no data. Both models are built by ComfyUI's own calls from the same tensors and metadata:
the same models, bit for bit. Self-contained on purpose: it runs inside ComfyUI's Python, which need not have
the worker's packages.
"""

from __future__ import annotations

# LTXVAudioVAELoader's renaming: the checkpoint's prefixes -> the names comfy.sd.VAE recognises (these and the
# text encoder's are what the worker's prefetch reads first: ltx2_worker/prefetch.py, FIRST_TENSORS)
AUDIO_PREFIXES = {"audio_vae.": "autoencoder.", "vocoder.": "vocoder."}
# what comfy/text_encoders/lt.py (LTXAVTEModel.load_sd) takes from the checkpoint
TEXT_ENCODER_PREFIXES = ("text_embedding_projection.", "model.diffusion_model.audio_embeddings_connector.",
                         "model.diffusion_model.video_embeddings_connector.")


def checkpoint_parts(path: str, prefixes: tuple[str, ...], placeholders: bool = False) -> tuple[dict, dict | None]:
    """The file's tensors whose names start with `prefixes`, opened, and its metadata; with `placeholders`,
    every other tensor as an empty meta tensor of its shape and dtype. No other tensor's bytes are touched."""
    import safetensors
    import torch

    sd = {}
    with safetensors.safe_open(path, framework="pt", device="cpu") as f:
        for key in f.keys():
            if key.startswith(prefixes):
                sd[key] = f.get_tensor(key)
            elif placeholders:
                part = f.get_slice(key)  # the header's shape and dtype, no data
                sd[key] = torch.empty(part.get_shape(), dtype=_dtype(part.get_dtype()), device="meta")
        metadata = f.metadata()
    return sd, metadata


# safetensors' dtype names -> torch's; a name missing here (or from this torch) gives a uint8 placeholder of the
# same shape: only the element count is read from the placeholders
DTYPES = {"F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16", "I64": "int64", "I32": "int32",
          "I16": "int16", "I8": "int8", "U8": "uint8", "U16": "uint16", "U32": "uint32", "U64": "uint64",
          "BOOL": "bool", "F8_E4M3": "float8_e4m3fn", "F8_E5M2": "float8_e5m2", "F8_E8M0": "float8_e8m0fnu"}


def _dtype(name: str):
    import torch

    return getattr(torch, DTYPES.get(name, "uint8"), torch.uint8)


def _comfy_maps_the_file(path: str) -> bool:
    """Where ComfyUI's own loader touches nothing (dynamic VRAM on: its own lazy map) or the file is no
    safetensors (opened whole either way), its loader runs."""
    import comfy.memory_management

    return comfy.memory_management.aimdo_enabled or not path.lower().endswith((".safetensors", ".sft"))


class LTX2AudioVAELoader:
    """LTX-2's audio VAE from a checkpoint, as LTXVAudioVAELoader loads it, opening only its own tensors."""

    CATEGORY = "loaders"
    RETURN_TYPES = ("VAE",)
    FUNCTION = "load"
    DESCRIPTION = __doc__.splitlines()[0]

    @classmethod
    def INPUT_TYPES(cls):  # noqa: N802 (ComfyUI's name); LTXVAudioVAELoader's input
        import folder_paths

        return {"required": {"ckpt_name": (folder_paths.get_filename_list("checkpoints"),)}}

    def load(self, ckpt_name):
        import comfy.sd
        import comfy.utils
        import folder_paths

        path = folder_paths.get_full_path_or_raise("checkpoints", ckpt_name)
        if _comfy_maps_the_file(path):
            from comfy_extras.nodes_lt_audio import LTXVAudioVAELoader

            return LTXVAudioVAELoader.execute(ckpt_name).result
        sd, metadata = checkpoint_parts(path, tuple(AUDIO_PREFIXES))
        sd = comfy.utils.state_dict_prefix_replace(sd, AUDIO_PREFIXES, filter_keys=True)  # as ComfyUI's loader
        vae = comfy.sd.VAE(sd=sd, metadata=metadata)
        vae.throw_exception_if_invalid()
        return (vae,)


class LTX2TextEncoderLoader:
    """LTX-2's text encoder, as LTXAVTextEncoderLoader loads it, opening only the checkpoint's tensors it keeps."""

    CATEGORY = "loaders"
    RETURN_TYPES = ("CLIP",)
    FUNCTION = "load"
    DESCRIPTION = __doc__.splitlines()[0]

    @classmethod
    def INPUT_TYPES(cls):  # noqa: N802 (ComfyUI's name); LTXAVTextEncoderLoader's inputs
        import folder_paths

        return {"required": {"text_encoder": (folder_paths.get_filename_list("text_encoders"),),
                             "ckpt_name": (folder_paths.get_filename_list("checkpoints"),),
                             "device": (["default", "cpu"],)}}

    def load(self, text_encoder, ckpt_name, device="default"):
        import comfy.sd
        import comfy.utils
        import folder_paths
        import torch

        encoder_path = folder_paths.get_full_path_or_raise("text_encoders", text_encoder)
        path = folder_paths.get_full_path_or_raise("checkpoints", ckpt_name)
        if _comfy_maps_the_file(path):
            from comfy_extras.nodes_lt_audio import LTXAVTextEncoderLoader

            return LTXAVTextEncoderLoader.execute(text_encoder, ckpt_name, device).result
        model_options = {}
        if device == "cpu":
            model_options["load_device"] = model_options["offload_device"] = torch.device("cpu")
        # comfy.sd.load_clip's steps, with the checkpoint opened in part
        clip_data = []
        for sd, metadata in (comfy.utils.load_torch_file(encoder_path, safe_load=True, return_metadata=True),
                             checkpoint_parts(path, TEXT_ENCODER_PREFIXES, placeholders=True)):
            sd, metadata = comfy.utils.convert_old_quants(sd, model_prefix="", metadata=metadata)
            clip_data.append(sd)
        clip = comfy.sd.load_text_encoder_state_dicts(
            clip_data, embedding_directory=folder_paths.get_folder_paths("embeddings"),
            clip_type=comfy.sd.CLIPType.LTXV, model_options=model_options)
        clip.patcher.cached_patcher_init = (comfy.sd.load_clip_model_patcher, (
            [encoder_path, path], folder_paths.get_folder_paths("embeddings"), comfy.sd.CLIPType.LTXV, model_options))
        return (clip,)


NODE_CLASS_MAPPINGS = {"LTX2AudioVAELoader": LTX2AudioVAELoader, "LTX2TextEncoderLoader": LTX2TextEncoderLoader}
NODE_DISPLAY_NAME_MAPPINGS = {"LTX2AudioVAELoader": "LTX-2 load audio VAE (worker)",
                              "LTX2TextEncoderLoader": "LTX-2 load text encoder (worker)"}
