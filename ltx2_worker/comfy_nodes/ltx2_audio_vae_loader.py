# SPDX-License-Identifier: GPL-3.0-or-later (LICENSE; README, "Licence": loaded into ComfyUI, GPL-3.0)
"""ComfyUI custom node `LTX2AudioVAELoader` (loaded by ComfyUI, not by the worker: launch adds this folder to
ComfyUI's `custom_nodes` search path): ComfyUI's LTXVAudioVAELoader, opening only the audio VAE's tensors.

Why: ComfyUI v0.26.2's loader (`comfy_extras/nodes_lt_audio.py`) opens every tensor of the 27 GB checkpoint
and then keeps the audio VAE's and vocoder's (0.4 GB of the real file). Opening a tensor touches its first page,
and the kernel reads around each page it faults in (16 MB on the test machine), so on a fresh worker the loader
waits until nearly the whole checkpoint has come off the disk: the first node of the first job, 4.3-12 s on the
GPU host while the prefetch was still reading (docs/performance.md). This node opens only the tensors it keeps,
which the prefetch reads first (ltx2_worker/prefetch.py, FIRST_TENSORS): 0.0-0.2 s on the same host. With
dynamic VRAM on (the 48 and 24 GB classes) ComfyUI maps the file itself without touching it, and its own loader
runs.

The VAE is built by the same call from the same tensors and metadata, so it is the same model, bit for bit.
Self-contained on purpose: it runs inside ComfyUI's Python, which need not have the worker's packages.
"""

from __future__ import annotations

# LTXVAudioVAELoader's renaming: the checkpoint's prefixes -> the names comfy.sd.VAE recognises
PREFIXES = {"audio_vae.": "autoencoder.", "vocoder.": "vocoder."}


def audio_state_dict(path: str) -> tuple[dict, dict]:
    """The checkpoint's audio VAE and vocoder tensors under comfy.sd.VAE's names, and the file's metadata,
    without opening any other tensor."""
    import safetensors

    sd = {}
    with safetensors.safe_open(path, framework="pt", device="cpu") as f:
        for key in f.keys():
            for old, new in PREFIXES.items():
                if key.startswith(old):
                    sd[new + key[len(old):]] = f.get_tensor(key)
                    break
        metadata = f.metadata()
    return sd, metadata


class LTX2AudioVAELoader:
    """LTX-2's audio VAE from a checkpoint, as LTXVAudioVAELoader loads it, reading only its own tensors."""

    CATEGORY = "loaders"
    RETURN_TYPES = ("VAE",)
    FUNCTION = "load"
    DESCRIPTION = __doc__.splitlines()[0]

    @classmethod
    def INPUT_TYPES(cls):  # noqa: N802 (ComfyUI's name); LTXVAudioVAELoader's input
        import folder_paths

        return {"required": {"ckpt_name": (folder_paths.get_filename_list("checkpoints"),)}}

    def load(self, ckpt_name):
        import comfy.memory_management
        import comfy.sd
        import folder_paths

        path = folder_paths.get_full_path_or_raise("checkpoints", ckpt_name)
        # ComfyUI's own loader touches nothing with dynamic VRAM on (its own mmap, lazily), and only safetensors
        # open tensor by tensor
        if comfy.memory_management.aimdo_enabled or not path.lower().endswith((".safetensors", ".sft")):
            from comfy_extras.nodes_lt_audio import LTXVAudioVAELoader

            return LTXVAudioVAELoader.execute(ckpt_name).result
        sd, metadata = audio_state_dict(path)
        vae = comfy.sd.VAE(sd=sd, metadata=metadata)
        vae.throw_exception_if_invalid()
        return (vae,)


NODE_CLASS_MAPPINGS = {"LTX2AudioVAELoader": LTX2AudioVAELoader}
NODE_DISPLAY_NAME_MAPPINGS = {"LTX2AudioVAELoader": "LTX-2 load audio VAE (worker)"}
