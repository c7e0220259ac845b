"""A safetensors checkpoint onto the GPU (or into memory) two ways, timed: as ComfyUI's loader copies it, and
through the worker's pinned reader (LTX2PinnedCheckpointLoader's `read_checkpoint`).

- `mapped`: ComfyUI's way with dynamic VRAM off (comfy.utils.load_torch_file, then the model's load_state_dict):
  the file opened with safetensors' `safe_open`, each tensor taken from the map and copied to the device, every
  page faulted in and every copy from pageable memory. Onto the CPU it copies nothing (the map is the tensor).
- `pinned`: `read_checkpoint(path, device)`: `pread` into pinned buffers, a few readers, one CUDA stream each.

Run with a Python that has torch and safetensors (ComfyUI's), on the file in the page cache (the default: read once
first) or, with --evict, after dropping it from the page cache before each run (posix_fadvise DONTNEED), as a
fresh worker would find it without the prefetch. Prints seconds and GB/s per run; the model building around the
copy, the same either way, is left out.

    python bench/checkpoint_read.py --file /tmp/vol/models/checkpoints/ltx-2-19b-dev-fp8.safetensors --repeat 2
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NODE = ROOT / "ltx2_worker" / "comfy_nodes" / "ltx2_checkpoint_parts.py"


@functools.cache
def node_module():
    """The worker's node module, loaded by path as ComfyUI loads it (it imports nothing of ComfyUI's at load)."""
    spec = importlib.util.spec_from_file_location("ltx2_checkpoint_parts", NODE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def mapped(path: str, device) -> dict:
    import safetensors
    import torch

    out = {}
    with safetensors.safe_open(path, framework="pt", device="cpu") as f:
        for key in f.keys():
            out[key] = f.get_tensor(key).to(device)
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()
    return out


def pinned(path: str, device) -> dict:
    import torch

    sd, _ = node_module().read_checkpoint(path, device)
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()
    return sd


def evict(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def main(argv: list[str] | None = None) -> int:
    import torch

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--file", required=True, help="a safetensors file")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--ways", default="mapped,pinned", help="comma-separated, in order: mapped, pinned")
    p.add_argument("--repeat", type=int, default=2, help="runs of each way, alternating")
    p.add_argument("--evict", action="store_true", help="drop the file from the page cache before each run")
    args = p.parse_args(argv)
    ways = {"mapped": mapped, "pinned": pinned}
    size = os.path.getsize(args.file)
    if not args.evict:  # in the page cache, as after the boot prefetch
        with open(args.file, "rb") as f:
            while f.read(64 << 20):
                pass
    print(f"{args.file}: {size / 1e9:.2f} GB onto {args.device}, {'evicted' if args.evict else 'page cache'}; "
          f"torch {torch.__version__}")
    print("| way | run | seconds | GB/s |\n|---|---|---|---|")
    reference = None
    for run in range(1, args.repeat + 1):
        for name in args.ways.split(","):
            if args.evict:
                evict(args.file)
            started = time.monotonic()
            sd = ways[name](args.file, args.device)
            seconds = time.monotonic() - started
            if run == 1 and reference is None:
                reference = {k: v.cpu() for k, v in sd.items()}
            elif run == 1:  # every way gives the first way's tensors
                bad = [k for k in reference if k not in sd or not torch.equal(reference[k], sd[k].cpu())]
                if bad or len(sd) != len(reference):
                    print(f"{name}: tensors differ from the first way's ({bad[:3]})", file=sys.stderr)
                    return 1
            print(f"| {name} | {run} | {seconds:.2f} | {size / seconds / 1e9:.2f} |", flush=True)
            del sd
            if torch.device(args.device).type == "cuda":
                torch.cuda.empty_cache()
    return 0


if __name__ == "__main__":
    sys.exit(main())
