# SPDX-License-Identifier: GPL-3.0-or-later (LICENSE; README, "Licence": loaded into ComfyUI, GPL-3.0)
"""ComfyUI custom node `LTX2VAEDecodeTiled` (loaded by ComfyUI, not by the worker: launch adds this folder to
ComfyUI's `custom_nodes` search path): ComfyUI's VAEDecodeTiled, asking for the memory of one tile, and blending
its tiles in GPU memory where the clip fits.

Why: ComfyUI v0.26.2's tiled decode asks model management for the memory of decoding the WHOLE latent in one
piece (`comfy/sd.py`, `VAE.decode_tiled`: "TODO: calculate mem required for tile"): 18.1 GB for the standard
1280x736x121 clip. On an 80 GB card (holding two transformer copies when measured) that pushed the 11.2 GB
text encoder out of GPU memory at every decode, and the next new prompt loaded it again and pushed it out again
(docs/performance.md: a new prompt took 32-35 s against 22 s warm). The tiles are decoded one at a time, so one
tile's memory is what the decode needs: ~5 GB at the graph's 512-pixel tiles.

With `blend_on_device`, the tiles are also blended where they are decoded: ComfyUI's tiled decode copies each
tile to the CPU and blends it there (`comfy.utils.tiled_scale_multidim`: a multiply and two sums per tile over
the whole clip, then a division and VAE's output scaling, all in float32 on the CPU, ~1.8 GB of buffers for the
standard clip) while the GPU waits. The node points the VAE's output device at the GPU for the call, so the same
code blends in GPU memory, and copies the finished frames to the CPU once. Elementwise float32 multiplies, sums
and divisions round the same on both devices, so the frames are the same bits. Only where the GPU's free memory
holds the buffers beside a tile's decode, with a margin; otherwise on the CPU as before.

The decode itself is VAEDecodeTiled's, unchanged (same tiles, same overlaps, the same pixels); only the
estimate passed to model management is per tile. Self-contained on purpose: it runs inside ComfyUI's Python,
which need not have the worker's packages.
"""

from __future__ import annotations

BLEND_MARGIN_BYTES = 2 << 30  # left free beside the tile's decode and the blend's buffers



def tile_shape(shape, tile_size: int, temporal_size: int, spatial: int, temporal: int | None) -> tuple:
    """The latent shape of the largest tile VAEDecodeTiled decodes from a latent of `shape` (B, C, T, H, W),
    with its node inputs and the VAE's compression (VAEDecodeTiled.decode's conversions)."""
    tile = tile_size // spatial
    out = list(shape)
    out[-1], out[-2] = min(shape[-1], tile), min(shape[-2], tile)
    if temporal is not None and len(shape) == 5:
        out[-3] = min(shape[-3], max(2, temporal_size // temporal))
    return tuple(out)


def blend_bytes(shape, spatial: int, temporal: int | None, channels: int = 3) -> int:
    """An upper bound on the float32 buffers tiled_scale_multidim blends a latent of `shape` into: the frames
    (`channels`) and the per-pixel weights (one channel), at the VAE's compression."""
    pixels = shape[0] * shape[-1] * shape[-2] * spatial * spatial
    if temporal is not None and len(shape) == 5:
        pixels *= shape[-3] * temporal
    return 4 * (channels + 1) * pixels


def blend_fits(vae, shape, tile_memory: int) -> bool:
    """Whether the GPU's free memory holds the blend's buffers beside one tile's decode and the margin, with the
    VAE loaded as VAEDecodeTiled loads it (the same call, so the decode's own load finds it done)."""
    import comfy.model_management as mm

    mm.load_models_gpu([vae.patcher], memory_required=tile_memory, force_full_load=vae.disable_offload)
    temporal = vae.temporal_compression_decode() if len(shape) == 5 else None
    need = blend_bytes(shape, vae.spacial_compression_decode(), temporal, vae.output_channels)
    return mm.get_free_memory(vae.device) >= need + tile_memory + BLEND_MARGIN_BYTES


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
        }, "optional": {
            "blend_on_device": ("BOOLEAN", {"default": False}),
        }}

    def decode(self, vae, samples, tile_size, overlap=64, temporal_size=64, temporal_overlap=8,
               blend_on_device=False):
        import nodes

        whole = vae.memory_used_decode  # attributes of the VAE object (set in its __init__), restored below
        output_device = vae.output_device
        shrink = (tile_size, temporal_size, vae.spacial_compression_decode(), vae.temporal_compression_decode())
        vae.memory_used_decode = lambda shape, dtype: whole(tile_shape(shape, *shrink), dtype)
        try:
            latent = samples["samples"]
            if (blend_on_device and str(vae.device) != str(output_device)
                    and blend_fits(vae, latent.shape, vae.memory_used_decode(latent.shape, vae.vae_dtype))):
                vae.output_device = vae.device
            images, = nodes.VAEDecodeTiled().decode(vae, samples, tile_size, overlap, temporal_size,
                                                    temporal_overlap)
            return (images.to(output_device),)
        finally:
            vae.memory_used_decode = whole
            vae.output_device = output_device


NODE_CLASS_MAPPINGS = {"LTX2VAEDecodeTiled": LTX2VAEDecodeTiled}
NODE_DISPLAY_NAME_MAPPINGS = {"LTX2VAEDecodeTiled": "LTX-2 VAE decode, tiled (worker)"}
