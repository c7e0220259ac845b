# SPDX-License-Identifier: GPL-3.0-or-later (LICENSE; README, "Licence": loaded into ComfyUI, GPL-3.0)
"""ComfyUI custom node `LTX2VAEDecodeTiled` (loaded by ComfyUI, not by the worker: launch adds this folder to
ComfyUI's `custom_nodes` search path): ComfyUI's VAEDecodeTiled, asking for the memory of one tile.

Why: ComfyUI v0.26.2's tiled decode asks model management for the memory of decoding the WHOLE latent in one
piece (`comfy/sd.py`, `VAE.decode_tiled`: "TODO: calculate mem required for tile"): 18.1 GB for the standard
1280x736x121 clip. On an 80 GB card (holding two transformer copies when measured) that pushed the 11.2 GB
text encoder out of GPU memory at every decode, and the next new prompt loaded it again and pushed it out again
(docs/performance.md: a new prompt took 32-35 s against 22 s warm). The tiles are decoded one at a time, so one
tile's memory is what the decode needs: ~5 GB at the graph's 512-pixel tiles.

The decode itself is VAEDecodeTiled's, unchanged (same tiles, same overlaps, the same pixels); only the
estimate passed to model management is per tile. Self-contained on purpose: it runs inside ComfyUI's Python,
which need not have the worker's packages.
"""

from __future__ import annotations


def tile_shape(shape, tile_size: int, temporal_size: int, spatial: int, temporal: int | None) -> tuple:
    """The latent shape of the largest tile VAEDecodeTiled decodes from a latent of `shape` (B, C, T, H, W),
    with its node inputs and the VAE's compression (VAEDecodeTiled.decode's conversions)."""
    tile = tile_size // spatial
    out = list(shape)
    out[-1], out[-2] = min(shape[-1], tile), min(shape[-2], tile)
    if temporal is not None and len(shape) == 5:
        out[-3] = min(shape[-3], max(2, temporal_size // temporal))
    return tuple(out)


class LTX2VAEDecodeTiled:
    """LATENT -> IMAGE as VAEDecodeTiled, with model management asked for one tile's memory."""

    CATEGORY = "latent"
    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "decode"
    DESCRIPTION = __doc__.splitlines()[0]

    @classmethod
    def INPUT_TYPES(cls):  # noqa: N802 (ComfyUI's name); VAEDecodeTiled's inputs
        return {"required": {
            "samples": ("LATENT",),
            "vae": ("VAE",),
            "tile_size": ("INT", {"default": 512, "min": 64, "max": 4096, "step": 32}),
            "overlap": ("INT", {"default": 64, "min": 0, "max": 4096, "step": 32}),
            "temporal_size": ("INT", {"default": 64, "min": 8, "max": 4096, "step": 4}),
            "temporal_overlap": ("INT", {"default": 8, "min": 4, "max": 4096, "step": 4}),
        }}

    def decode(self, vae, samples, tile_size, overlap=64, temporal_size=64, temporal_overlap=8):
        import nodes

        whole = vae.memory_used_decode  # an attribute of the VAE object (set in its __init__), restored below
        shrink = (tile_size, temporal_size, vae.spacial_compression_decode(), vae.temporal_compression_decode())
        vae.memory_used_decode = lambda shape, dtype: whole(tile_shape(shape, *shrink), dtype)
        try:
            return nodes.VAEDecodeTiled().decode(vae, samples, tile_size, overlap, temporal_size, temporal_overlap)
        finally:
            vae.memory_used_decode = whole


NODE_CLASS_MAPPINGS = {"LTX2VAEDecodeTiled": LTX2VAEDecodeTiled}
NODE_DISPLAY_NAME_MAPPINGS = {"LTX2VAEDecodeTiled": "LTX-2 VAE decode, tiled (worker)"}
