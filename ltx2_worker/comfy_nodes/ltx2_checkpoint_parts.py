# SPDX-License-Identifier: GPL-3.0-or-later (LICENSE; README, "Licence": loaded into ComfyUI, GPL-3.0)
"""ComfyUI custom nodes `LTX2AudioVAELoader` and `LTX2TextEncoderLoader` (loaded by ComfyUI, not by the worker:
launch adds this folder to ComfyUI's `custom_nodes` search path): ComfyUI's LTXVAudioVAELoader and
LTXAVTextEncoderLoader, opening only the tensors they take from the 27 GB checkpoint; and
`LTX2PinnedCheckpointLoader`, CheckpointLoaderSimple reading the checkpoint straight onto the GPU
(`LTX2PinnedCheckpointLoaderBeside`: the same, while ComfyUI runs the graph's other nodes).

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

CheckpointLoaderSimple maps the checkpoint and copies each tensor to the GPU from the map: every page faulted in,
every copy from pageable memory (4.2-5.7 s for the 27 GB on an H100 with the file in the page cache, about
6 GB/s; its node 3.3-4.6 s this way). `LTX2PinnedCheckpointLoader` reads the file with `pread` into pinned
staging buffers, a few readers at once, and copies each buffer to the tensors it covers on the GPU, then hands
ComfyUI's own `load_state_dict_guess_config` those tensors: the same bytes, the same calls after the read (each
layer's `comfy_quant` settings stay on the CPU, where ComfyUI decodes them). Where the GPU lacks room for the
file beside the model it builds (twice the file, with a margin: at a switch of checkpoints, say),
CheckpointLoaderSimple runs; on a machine without a GPU (ComfyUI's --cpu) the tensors are read into memory.

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


# safetensors' dtype names -> torch's; a name missing here (or from this torch) gives uint8: a placeholder of the
# same shape (only its element count is read), and in read_checkpoint a tensor that fails its reshape unless
# the dtype is one byte wide
DTYPES = {"F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16", "I64": "int64", "I32": "int32",
          "I16": "int16", "I8": "int8", "U8": "uint8", "U16": "uint16", "U32": "uint32", "U64": "uint64",
          "BOOL": "bool", "F8_E4M3": "float8_e4m3fn", "F8_E5M2": "float8_e5m2", "F8_E8M0": "float8_e8m0fnu"}


def _dtype(name: str):
    import torch

    return getattr(torch, DTYPES.get(name, "uint8"), torch.uint8)


READERS = 4  # pread streams at once: the page cache or the disk, not one thread's copy, should set the pace
STAGING = 64 << 20  # bytes per reader's pinned buffer
ROOM_MARGIN = 4 << 30  # bytes of GPU memory left free beyond the file and the model built from it


def read_checkpoint(path: str, device, readers: int = READERS, staging: int = STAGING) -> tuple[dict, dict | None]:
    """Every tensor of the safetensors file at `path` on `device` (on the CPU those `read_on_host` names), and its
    metadata, read with `pread` in `staging`-byte pieces by `readers` threads (through pinned buffers and a stream
    each where `device` is a GPU)."""
    import bisect
    import contextlib
    import json
    import os
    import queue
    import struct
    import threading

    import torch

    cuda = torch.device(device).type == "cuda"
    fd = os.open(path, os.O_RDONLY)
    try:
        (length,) = struct.unpack("<Q", os.pread(fd, 8, 0))
        header = json.loads(os.pread(fd, length, 8))
        metadata = header.pop("__metadata__", None)
        base, end = 8 + length, os.fstat(fd).st_size
        raw = {name: torch.empty(info["data_offsets"][1] - info["data_offsets"][0], dtype=torch.uint8,
                                 device="cpu" if read_on_host(name) else device)
               for name, info in header.items()}
        spans = sorted((base + info["data_offsets"][0], base + info["data_offsets"][1], name)
                       for name, info in header.items())
        starts = [start for start, _, _ in spans]
        pieces: queue.Queue = queue.Queue()
        for offset in range(base, end, staging):
            pieces.put(offset)
        failures: list[BaseException] = []
        inference = torch.is_inference_mode_enabled()  # ComfyUI runs nodes in it; a thread starts outside it

        def reader() -> None:
            buffer = torch.empty(staging, dtype=torch.uint8, pin_memory=cuda)
            view = memoryview(buffer.numpy())
            stream = torch.cuda.Stream(device) if cuda else None
            try:
                while not failures:
                    try:
                        offset = pieces.get_nowait()
                    except queue.Empty:
                        return
                    size = min(staging, end - offset)
                    got = 0
                    while got < size:
                        n = os.preadv(fd, [view[got:size]], offset + got)
                        if n <= 0:
                            raise OSError(f"{path}: the file ended at byte {offset + got} of {end}")
                        got += n
                    with torch.inference_mode(inference), \
                            torch.cuda.stream(stream) if cuda else contextlib.nullcontext():
                        # the tensors this piece covers: from the last one starting at or before it
                        for start, stop, name in spans[max(0, bisect.bisect_right(starts, offset) - 1):]:
                            if start >= offset + size:
                                break
                            lo, hi = max(start, offset), min(stop, offset + size)
                            if lo < hi:
                                raw[name][lo - start:hi - start].copy_(buffer[lo - offset:hi - offset],
                                                                        non_blocking=cuda)
                    if cuda:
                        stream.synchronize()  # the buffer is read again only once its copies are done
            except BaseException as e:  # noqa: BLE001 (re-raised in the caller's thread)
                failures.append(e)

        threads = [threading.Thread(target=reader, name=f"checkpoint-reader-{i}") for i in range(readers)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if failures:
            raise failures[0]
    finally:
        os.close(fd)
    sd = {name: _typed(raw[name], info["dtype"], info["shape"]) for name, info in header.items()}
    return sd, metadata


def read_on_host(name: str) -> bool:
    """A tensor ComfyUI reads with the CPU, which must stay there: a layer's quantisation settings (`comfy_quant`,
    JSON bytes that comfy.ops decodes with `.numpy()`)."""
    return name.endswith("comfy_quant")


def _typed(raw, dtype_name: str, shape: list[int]):
    """The bytes as the header's dtype and shape."""
    return raw.view(_dtype(dtype_name)).reshape(shape)


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
        import folder_paths

        path = folder_paths.get_full_path_or_raise("checkpoints", ckpt_name)
        if _comfy_maps_the_file(path):
            from comfy_extras.nodes_lt_audio import LTXAVTextEncoderLoader

            return LTXAVTextEncoderLoader.execute(text_encoder, ckpt_name, device).result
        return (load_text_encoder(folder_paths.get_full_path_or_raise("text_encoders", text_encoder), path, device),)


def load_text_encoder(encoder_path: str, path: str, device: str = "default"):
    """comfy.sd.load_clip's steps for LTX-2's text encoder (the Gemma file at `encoder_path`, the checkpoint at
    `path` opened in part); also what ltx2_early_prompts' encoder process loads, outside ComfyUI's graph."""
    import comfy.sd
    import comfy.utils
    import folder_paths
    import torch

    model_options = {}
    if device == "cpu":
        model_options["load_device"] = model_options["offload_device"] = torch.device("cpu")
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
    return clip


class LTX2PinnedCheckpointLoader:
    """LTX-2's checkpoint, as CheckpointLoaderSimple loads it, read onto the GPU through pinned buffers."""

    CATEGORY = "loaders"
    RETURN_TYPES = ("MODEL", "CLIP", "VAE")
    FUNCTION = "load"
    DESCRIPTION = __doc__.splitlines()[0]

    @classmethod
    def INPUT_TYPES(cls):  # noqa: N802 (ComfyUI's name); CheckpointLoaderSimple's input
        import folder_paths

        return {"required": {"ckpt_name": (folder_paths.get_filename_list("checkpoints"),)}}

    def load(self, ckpt_name):
        import logging
        import os
        import time

        import comfy.model_management
        import comfy.sd
        import folder_paths

        path = folder_paths.get_full_path_or_raise("checkpoints", ckpt_name)
        device = comfy.model_management.get_torch_device()
        size = os.path.getsize(path)
        if _comfy_maps_the_file(path) or (device.type == "cuda" and comfy.model_management.get_free_memory(device)
                                          < 2 * size + ROOM_MARGIN):
            from nodes import CheckpointLoaderSimple

            logging.info("LTX2PinnedCheckpointLoader: %s by ComfyUI's loader (dynamic VRAM, not safetensors, or no "
                         "room on the GPU for the file beside its model)", ckpt_name)
            return CheckpointLoaderSimple().load_checkpoint(ckpt_name)
        began = time.monotonic()
        sd, metadata = read_checkpoint(path, device)
        seconds = time.monotonic() - began
        logging.info("LTX2PinnedCheckpointLoader: %s read onto %s in %.2f s (%.1f GB/s)", ckpt_name, device, seconds,
                     size / max(seconds, 1e-9) / 1e9)
        embeddings = folder_paths.get_folder_paths("embeddings")
        # comfy.sd.load_checkpoint_guess_config's steps after its load_torch_file
        out = comfy.sd.load_state_dict_guess_config(sd, output_vae=True, output_clip=True,
                                                    embedding_directory=embeddings, metadata=metadata)
        del sd
        if out is None:
            raise RuntimeError(f"ERROR: Could not detect model type of: {path}")
        if out[0] is not None:
            out[0].cached_patcher_init = (comfy.sd.load_checkpoint_guess_config,
                                          (path, False, False, False, embeddings, True, {}, {}), 0)
        if out[1] is not None and getattr(out[1], "patcher", None) is not None:
            out[1].patcher.cached_patcher_init = (comfy.sd.load_checkpoint_clip_patcher, (path, embeddings, {}, {}))
        if out[2] is not None and getattr(out[2], "patcher", None) is not None:
            out[2].patcher.cached_patcher_init = (comfy.sd.load_checkpoint_vae_patcher, (path, embeddings, {}, {}))
        return out[:3]


class LTX2PinnedCheckpointLoaderBeside(LTX2PinnedCheckpointLoader):
    """LTX2PinnedCheckpointLoader's load in a thread, while ComfyUI runs the graph's other nodes.

    ComfyUI v0.26.2 starts an async node first among those ready and runs the others while it waits
    (execution.py), so the checkpoint's read and model building overlap the text encoder's load and the prompts
    instead of following them. The same load, under inference mode as ComfyUI runs every node (the thread starts
    outside it). ComfyUI runs each prompt in an event loop of its own that waits for the thread before it
    returns: a load left running by a failed job ends before the next job starts, never doubled. Its free-memory
    check runs while the text encoder may be loading beside it."""

    FUNCTION = "load_beside"
    DESCRIPTION = __doc__.splitlines()[0]

    async def load_beside(self, ckpt_name):
        import asyncio

        return await asyncio.to_thread(self._load_in_inference_mode, ckpt_name)

    def _load_in_inference_mode(self, ckpt_name):
        import torch

        with torch.inference_mode():
            return self.load(ckpt_name)


NODE_CLASS_MAPPINGS = {"LTX2AudioVAELoader": LTX2AudioVAELoader, "LTX2TextEncoderLoader": LTX2TextEncoderLoader,
                       "LTX2PinnedCheckpointLoader": LTX2PinnedCheckpointLoader,
                       "LTX2PinnedCheckpointLoaderBeside": LTX2PinnedCheckpointLoaderBeside}
NODE_DISPLAY_NAME_MAPPINGS = {"LTX2AudioVAELoader": "LTX-2 load audio VAE (worker)",
                              "LTX2TextEncoderLoader": "LTX-2 load text encoder (worker)",
                              "LTX2PinnedCheckpointLoader": "LTX-2 load checkpoint through pinned buffers (worker)",
                              "LTX2PinnedCheckpointLoaderBeside":
                                  "LTX-2 load checkpoint through pinned buffers, beside the other nodes (worker)"}
