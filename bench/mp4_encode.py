"""What the MP4 encode at the end of every job costs on this machine's CPU, by content: ComfyUI's own
`SaveVideo` code (`VideoFromComponents.save_to`: libx264 at its defaults, preset medium, CRF 23, AAC audio) on
the stand-in weights' noise, x264's worst case, and on a synthetic moving scene that encodes like camera video
(a blurred texture panning, light grain). Then libx264 presets on the same frames, through PyAV directly, for
comparison. Not a test: CI never runs it.

    COMFYUI_DIR=... $COMFY_PYTHON bench/mp4_encode.py [--width 1280 --height 720 --frames 121]
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import time
from fractions import Fraction


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


def comfy_save(frames, fps: float) -> tuple[float, int]:
    """Seconds and bytes of ComfyUI's SaveVideo encode (float frames in [0, 1], as the VAE gives them)."""
    import torch
    from comfy_api.latest import InputImpl, Types

    images = torch.from_numpy(frames).float().div_(255)
    audio = {"waveform": torch.zeros(1, 2, int(24000 * len(frames) / fps)), "sample_rate": 24000}
    video = InputImpl.VideoFromComponents(Types.VideoComponents(images=images, audio=audio, frame_rate=Fraction(fps)))
    buf = io.BytesIO()
    started = time.perf_counter()
    video.save_to(buf)
    return time.perf_counter() - started, len(buf.getvalue())


def pyav_save(frames, fps: float, preset: str) -> tuple[float, int]:
    import av

    buf = io.BytesIO()
    started = time.perf_counter()
    with av.open(buf, mode="w", format="mp4") as out:
        stream = out.add_stream("h264", rate=Fraction(fps))
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        stream.codec_context.options = {"preset": preset}
        for f in frames:
            out.mux(stream.encode(av.VideoFrame.from_ndarray(f, format="rgb24").reformat(format="yuv420p")))
        out.mux(stream.encode(None))
    return time.perf_counter() - started, len(buf.getvalue())


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--comfyui-dir", default=os.environ.get("COMFYUI_DIR"))
    p.add_argument("--width", type=int, default=1280)
    p.add_argument("--height", type=int, default=720)
    p.add_argument("--frames", type=int, default=121)
    p.add_argument("--fps", type=float, default=24.0)
    p.add_argument("--presets", default="medium,veryfast,ultrafast")
    args = p.parse_args()
    if not args.comfyui_dir:
        print("set --comfyui-dir or COMFYUI_DIR", file=sys.stderr)
        return 2
    sys.path.insert(0, args.comfyui_dir)
    print(f"{os.cpu_count()} CPUs; {args.width}x{args.height}, {args.frames} frames")
    print("| content | encoder | seconds | MB |\n|---|---|---|---|")
    for name, frames in scenes(args.width, args.height, args.frames):
        seconds, size = comfy_save(frames, args.fps)
        print(f"| {name} | ComfyUI SaveVideo (x264 medium, CRF 23, + AAC) | {seconds:.2f} | {size / 1e6:.2f} |",
              flush=True)
        for preset in args.presets.split(","):
            seconds, size = pyav_save(frames, args.fps, preset)
            print(f"| {name} | PyAV x264 {preset} | {seconds:.2f} | {size / 1e6:.2f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
