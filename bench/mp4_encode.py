"""What the MP4 encode at the end of every job costs on this machine's CPU, and what it does to the picture:
ComfyUI's own `SaveVideo` code (`VideoFromComponents.save_to`: libx264 at its defaults, preset medium, CRF 23,
AAC audio) against the worker's `LTX2SaveVideo` encoder (ltx2_worker/comfy_nodes/ltx2_save_video.py) at the
x264 presets and CRFs named, each on two contents: the stand-in weights' noise (x264's worst case) and a
synthetic moving scene that encodes like camera video (a blurred texture panning, light grain). For each: seconds,
MB, and PSNR of the decoded MP4 against the frames that went in. Not a test: CI never runs it.

    COMFYUI_DIR=... $COMFY_PYTHON bench/mp4_encode.py [--width 1280 --height 720 --frames 121]
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import io
import os
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NODE_FILE = ROOT / "ltx2_worker" / "comfy_nodes" / "ltx2_save_video.py"


def scenes(width: int, height: int, frames: int, seed: int = 0):
    """(name, uint8 frames T x H x W x 3) for noise and for the moving scene."""
    import numpy as np

    rng = np.random.default_rng(seed)
    yield "noise", rng.integers(0, 256, (frames, height, width, 3), dtype=np.uint8)
    pan = 4  # pixels per frame
    base = rng.integers(0, 256, (height // 16 + 8, (width + pan * frames) // 16 + 8, 3)).astype(np.float32)
    big = np.kron(base, np.ones((16, 16, 1), dtype=np.float32))
    k = 9  # box blur through a summed-area table
    c = np.pad(big, ((k, 0), (k, 0), (0, 0))).cumsum(0).cumsum(1)
    big = (c[k:, k:] - c[:-k, k:] - c[k:, :-k] + c[:-k, :-k]) / (k * k)
    grain = rng.normal(0, 4, (4, height, width, 3)).astype(np.float32)
    out = np.empty((frames, height, width, 3), dtype=np.uint8)
    for i in range(frames):
        out[i] = np.clip(big[i // 2:i // 2 + height, i * pan:i * pan + width] + grain[i % 4], 0, 255)
    yield "moving scene", out


def silence(frames: int, fps: float) -> dict:
    import torch

    return {"waveform": torch.zeros(1, 2, int(24000 * frames / fps)), "sample_rate": 24000}


def comfy_save(images, fps: float) -> bytes:
    """ComfyUI's SaveVideo encode of `images` (float frames in [0, 1], as the VAE gives them)."""
    from comfy_api.latest import InputImpl, Types

    video = InputImpl.VideoFromComponents(Types.VideoComponents(images=images, audio=silence(len(images), fps),
                                                                frame_rate=Fraction(fps)))
    buf = io.BytesIO()
    video.save_to(buf)
    return buf.getvalue()


@functools.cache
def save_node():
    """The worker's LTX2SaveVideo module, loaded from its file as ComfyUI loads it (once)."""
    spec = importlib.util.spec_from_file_location("ltx2_save_video", NODE_FILE)
    node = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(node)
    return node


def worker_save(images, fps: float, preset: str, crf: int) -> bytes:
    """The worker's LTX2SaveVideo encode."""
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "clip.mp4")
        save_node().encode_mp4(path, images, fps, silence(len(images), fps), 8, preset, crf)
        return Path(path).read_bytes()


def psnr_db(data: bytes, frames) -> float:
    import av
    import numpy as np

    with av.open(io.BytesIO(data)) as c:
        decoded = np.stack([f.to_ndarray(format="rgb24") for f in c.decode(c.streams.video[0])])
    mse = float(np.mean((decoded.astype(np.float32) - frames.astype(np.float32)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255 ** 2 / mse)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--comfyui-dir", default=os.environ.get("COMFYUI_DIR"))
    p.add_argument("--width", type=int, default=1280)
    p.add_argument("--height", type=int, default=720)
    p.add_argument("--frames", type=int, default=121)
    p.add_argument("--fps", type=float, default=24.0)
    p.add_argument("--encodings", default="medium:23,veryfast:22,veryfast:23,ultrafast:22",
                   help="the worker encoder's PRESET:CRF pairs to measure")
    args = p.parse_args()
    if not args.comfyui_dir:
        print("set --comfyui-dir or COMFYUI_DIR", file=sys.stderr)
        return 2
    sys.path.insert(0, args.comfyui_dir)
    import torch

    print(f"{os.cpu_count()} CPUs; {args.width}x{args.height}, {args.frames} frames, audio (silence) on")
    print("| content | encoder | seconds | MB | PSNR dB |\n|---|---|---|---|---|")
    for name, frames in scenes(args.width, args.height, args.frames):
        images = torch.from_numpy(frames).float().div_(255)
        runs = [("ComfyUI SaveVideo (x264 medium, CRF 23)", None)]
        runs += [(f"LTX2SaveVideo {pair.replace(':', ', CRF ')}", pair.split(":"))
                 for pair in args.encodings.split(",")]
        for label, encoding in runs:
            started = time.perf_counter()
            data = comfy_save(images, args.fps) if encoding is None else \
                worker_save(images, args.fps, encoding[0], int(encoding[1]))
            seconds = time.perf_counter() - started
            print(f"| {name} | {label} | {seconds:.2f} | {len(data) / 1e6:.2f} | {psnr_db(data, frames):.2f} |",
                  flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
