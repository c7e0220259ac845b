"""Stands in for ComfyUI's Python running ltx2_worker/comfy_nodes/ltx2_early_prompts.py in the loopback tier
(COMFY_PYTHON="python tests/fake_prompt_encoder.py"): takes the same command line and stdin, and writes the two
prompts as JSON where the real script writes torch tensors (tests/comfy_server.py's LTX2EncodedPrompts reads
them). FAKE_ENCODER: "ok" (after FAKE_ENCODER_S seconds), "fail" or "hang"; FAKE_ENCODER_ARGV, when set, gets
the command line it was given.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path


def main() -> int:
    script, *rest = sys.argv[1:]
    if os.environ.get("FAKE_ENCODER_ARGV"):
        Path(os.environ["FAKE_ENCODER_ARGV"]).write_text(json.dumps(sys.argv[1:]))
    parser = argparse.ArgumentParser()
    for name in ("--comfyui-dir", "--text-encoder", "--checkpoint", "--out"):
        parser.add_argument(name, required=True)
    parser.add_argument("flags", nargs=argparse.REMAINDER)
    args = parser.parse_args(rest)
    if not Path(script).is_file():
        print(f"no script at {script}", file=sys.stderr)
        return 2
    prompts = json.load(sys.stdin)
    mode = os.environ.get("FAKE_ENCODER", "ok")
    if mode == "fail":
        print("RuntimeError: CUDA error: out of memory", file=sys.stderr)
        return 1
    if mode == "hang":
        time.sleep(3600)
    time.sleep(float(os.environ.get("FAKE_ENCODER_S", "0")))
    part = Path(f"{args.out}.part")
    part.write_text(json.dumps({"positive": prompts["positive"], "negative": prompts["negative"]}))
    os.replace(part, args.out)
    print("ltx2_early_prompts: imports and text encoder 0.0 s, prompts 0.0 s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
