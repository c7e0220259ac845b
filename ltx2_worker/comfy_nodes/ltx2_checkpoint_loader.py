# SPDX-License-Identifier: GPL-3.0-or-later (LICENSE; README, "Licence": loaded into ComfyUI, GPL-3.0)
"""ComfyUI custom node `LTX2CheckpointLoader` (loaded by ComfyUI, not by the worker: launch adds this folder to
ComfyUI's `custom_nodes` search path): ComfyUI's CheckpointLoaderSimple, run in a thread while ComfyUI runs the
graph's other nodes.

Why: ComfyUI runs a graph's nodes one after another, and the first job on a fresh worker runs the text
encoder's loader and both prompts before the checkpoint's loader, which then copies the 27 GB checkpoint from
the page cache onto the GPU (4.4 s on an H100 after the prefetch had read it). An async node is different
(ComfyUI v0.26.2, execution.py): it is picked first among the nodes that can run, and while its coroutine waits
ComfyUI goes on with the others. This node's coroutine waits on a thread that runs CheckpointLoaderSimple, so
the checkpoint's copy overlaps the text encoder's load and the prompts, and trails the prefetch's read instead
of starting after it. The same call, the same model, VAE and CLIP; only when it runs.

Measured on an H100 and left off in every class (GraphChoices.overlap_checkpoint_load, docs/performance.md,
2026-12-06): 1.8 s off the first job where the checkpoint was read before the job, none while it was being read,
and the loads slowed each other (their copies share PyTorch's default CUDA stream).

ComfyUI runs each prompt in an event loop of its own (`asyncio.run`), which waits for the thread before it
returns: a load left running by a job whose other node failed ends before the next job starts, never doubled.
Every later job takes the loaded model from ComfyUI's cache without running the node. Self-contained on purpose:
it runs inside ComfyUI's Python, which need not have the worker's packages.
"""

from __future__ import annotations

import logging
import time


def _load(ckpt_name: str):
    """CheckpointLoaderSimple's load; logs how long it took and when it ended (on the monotonic clock, which the
    benchmark's timeline shares)."""
    from nodes import CheckpointLoaderSimple

    began = time.monotonic()
    out = CheckpointLoaderSimple().load_checkpoint(ckpt_name)
    ended = time.monotonic()
    logging.info("LTX2CheckpointLoader: %s loaded in %.2f s beside the other nodes (ended at %.3f s, monotonic)",
                 ckpt_name, ended - began, ended)
    return out


class LTX2CheckpointLoader:
    """LTX-2's checkpoint, as CheckpointLoaderSimple loads it, while ComfyUI runs the graph's other nodes."""

    CATEGORY = "loaders"
    RETURN_TYPES = ("MODEL", "CLIP", "VAE")
    FUNCTION = "load"
    DESCRIPTION = __doc__.splitlines()[0]

    @classmethod
    def INPUT_TYPES(cls):  # noqa: N802 (ComfyUI's name); CheckpointLoaderSimple's input
        import folder_paths

        return {"required": {"ckpt_name": (folder_paths.get_filename_list("checkpoints"),)}}

    async def load(self, ckpt_name):
        import asyncio

        return await asyncio.to_thread(_load, ckpt_name)


NODE_CLASS_MAPPINGS = {"LTX2CheckpointLoader": LTX2CheckpointLoader}
NODE_DISPLAY_NAME_MAPPINGS = {"LTX2CheckpointLoader": "LTX-2 load checkpoint beside the other nodes (worker)"}
