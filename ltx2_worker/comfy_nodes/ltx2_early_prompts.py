# SPDX-License-Identifier: GPL-3.0-or-later (LICENSE; README, "Licence": loaded into ComfyUI, GPL-3.0)
"""ComfyUI custom node `LTX2EncodedPrompts` (loaded by ComfyUI, not by the worker: launch adds this folder to
ComfyUI's `custom_nodes` search path), and the process that writes what it reads: a fresh worker's first two
prompts encoded while ComfyUI is still starting.

Why: on a fresh worker the first job waits for ComfyUI's start (16-28 s on the GPU host, its imports on one CPU
thread), then loads the text encoder (2.7 s) and encodes the two prompts (2.5-4.6 s) before the checkpoint's
load and stage 1, while the GPU has sat idle through ComfyUI's start (docs/performance.md). Run as a script
(`python ltx2_early_prompts.py --comfyui-dir ... -- <ComfyUI's flags>`, started by ltx2_worker.early_prompts when
a job arrives before ComfyUI answers), this file loads the text encoder with the worker's own loader
(`ltx2_checkpoint_parts.load_text_encoder`, what `LTX2TextEncoderLoader` runs inside ComfyUI) under the same
flags, encodes the positive and negative prompts as CLIPTextEncode does, under inference mode as ComfyUI runs
every node, writes both conditionings to one file (under a temporary name, then renamed), and exits, which gives
its GPU memory back before the job's graph is queued. `LTX2EncodedPrompts` then hands those conditionings to the
graph in place of the two CLIPTextEncode nodes: the same code on the same device and weights, so the same
tensors. Self-contained on purpose: it runs inside ComfyUI's Python, which need not have the worker's packages.
"""

from __future__ import annotations


class LTX2EncodedPrompts:
    """The positive and negative conditionings an encoder process wrote (see the module's docstring)."""

    CATEGORY = "conditioning"
    RETURN_TYPES = ("CONDITIONING", "CONDITIONING")
    RETURN_NAMES = ("positive", "negative")
    FUNCTION = "load"
    DESCRIPTION = __doc__.splitlines()[0]

    @classmethod
    def INPUT_TYPES(cls):  # noqa: N802 (ComfyUI's name)
        return {"required": {"path": ("STRING", {"default": ""})}}

    def load(self, path):
        import torch

        saved = torch.load(path, map_location="cpu", weights_only=True)
        return saved["positive"], saved["negative"]


def main(argv: list[str] | None = None) -> int:
    """Encode the prompts read as JSON from stdin ({"positive": ..., "negative": ...}) into --out; exit 0, or 1
    with the reason on stderr. ComfyUI's flags follow `--`, parsed by ComfyUI's own argument parser."""
    import argparse
    import json
    import os
    import sys
    import time

    started = time.monotonic()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--comfyui-dir", required=True)
    parser.add_argument("--text-encoder", required=True, help="the Gemma file")
    parser.add_argument("--checkpoint", required=True, help="the LTX-2 checkpoint the job's graph loads")
    parser.add_argument("--out", required=True)
    parser.add_argument("flags", nargs=argparse.REMAINDER, help="-- then ComfyUI's flags")
    args = parser.parse_args(argv)
    prompts = json.load(sys.stdin)
    flags = args.flags[1:] if args.flags[:1] == ["--"] else args.flags
    sys.path.insert(0, args.comfyui_dir)
    sys.argv = ["main.py", *flags]  # comfy.cli_args parses these, as in ComfyUI's process
    import comfy.options

    comfy.options.enable_args_parsing()
    import cuda_malloc  # noqa: F401 (ComfyUI's allocator choice, which main.py makes before torch starts)
    import torch
    from ltx2_checkpoint_parts import load_text_encoder

    clip = load_text_encoder(args.text_encoder, args.checkpoint)
    loaded = time.monotonic()
    with torch.inference_mode():
        out = {role: clip.encode_from_tokens_scheduled(clip.tokenize(prompts[role]))
               for role in ("positive", "negative")}
    part = f"{args.out}.part"
    torch.save(out, part)
    os.replace(part, args.out)
    print(f"ltx2_early_prompts: imports and text encoder {loaded - started:.1f} s, prompts "
          f"{time.monotonic() - loaded:.1f} s", file=sys.stderr, flush=True)
    return 0


NODE_CLASS_MAPPINGS = {"LTX2EncodedPrompts": LTX2EncodedPrompts}
NODE_DISPLAY_NAME_MAPPINGS = {"LTX2EncodedPrompts": "LTX-2 prompts encoded before ComfyUI started (worker)"}

if __name__ == "__main__":
    raise SystemExit(main())
