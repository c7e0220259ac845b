# SPDX-License-Identifier: GPL-3.0-or-later (LICENSE; README, "Licence": loaded into ComfyUI, GPL-3.0)
"""ComfyUI custom node `LTX2SaveVideo` (loaded by ComfyUI, not by the worker: launch adds this folder to ComfyUI's
`custom_nodes` search path): ComfyUI's SaveVideo with the x264 preset and CRF as inputs.

Why: SaveVideo encodes with libx264's defaults (preset medium, CRF 23) and offers no setting, and the encode is
part of every job's time on the CPU. Measured (bench/mp4_encode.py; docs/performance.md), 121 frames at
1280x720 on 16 CPUs: SaveVideo 6.4 s on the stand-in weights' noise and 2.1 s on a moving synthetic scene; this
node at veryfast / CRF 22 2.8 s and 1.8 s, files of the same size, 0.4 dB less PSNR on the scene. At medium / CRF
23 it gives SaveVideo's size and PSNR. Each frame's conversion runs on a few threads beside the encoder, which
takes the pictures in order: the same bitstream as converting frame by frame, and 4.1-4.8 -> 2.2-2.6 s inside a
job on the GPU host.

The MP4 is what SaveVideo writes, stream for stream: H.264 yuv420p (10-bit when CreateVideo asked for it), the
same RGB-to-YUV conversion, AAC audio cut to the video's length, the same file name scheme, the same answer in
/history. It carries no workflow metadata (SaveVideo embeds the whole prompt graph), and it is written under a
temporary name and renamed, so a file under the final name is always complete. Self-contained on purpose: it
runs inside ComfyUI's Python, which need not have the worker's packages.
"""

from __future__ import annotations

import collections
import functools
import math
import os
from concurrent.futures import ThreadPoolExecutor
from fractions import Fraction

X264_PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow")
DEFAULT_PRESET = "veryfast"
DEFAULT_CRF = 22
CONVERT_THREADS = 4  # frame conversions in flight beside the encoder (x264 has threads of its own)


@functools.cache
def converter() -> ThreadPoolExecutor:
    """The frame-conversion threads, made at the first MP4 and kept for ComfyUI's lifetime: the same threads job
    after job, so no job starts threads (or their memory arenas) of its own."""
    return ThreadPoolExecutor(CONVERT_THREADS, thread_name_prefix="ltx2-mp4")


def picture(frame, ten_bit: bool, pix_fmt: str):
    """One frame (H x W x 3 floats in [0, 1]) as SaveVideo converts it: to 8- or 16-bit RGB, then to `pix_fmt`
    by libswscale (which runs without Python's lock, so frames convert in parallel)."""
    import av
    import numpy as np

    if ten_bit:
        rgb = (frame.float() * 65535).clamp(0, 65535).cpu().numpy().astype(np.uint16)
        return av.VideoFrame.from_ndarray(rgb, format="rgb48le").reformat(format=pix_fmt)
    rgb = (frame * 255).clamp(0, 255).byte().cpu().numpy()
    return av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format=pix_fmt)


def encode_mp4(path: str, images, frame_rate, audio, bit_depth: int, preset: str, crf: int) -> None:
    """Write `images` (T x H x W x 3 floats in [0, 1]) and `audio` (ComfyUI's AUDIO dict or None) to `path`."""
    import av

    ten_bit = bit_depth >= 10
    pix_fmt = "yuv420p10le" if ten_bit else "yuv420p"
    frame_rate = Fraction(round(frame_rate * 1000), 1000)
    with av.open(path, mode="w", format="mp4") as output:
        video = output.add_stream("h264", rate=frame_rate)
        video.width, video.height, video.pix_fmt = images.shape[2], images.shape[1], pix_fmt
        video.codec_context.options = {"preset": preset, "crf": str(crf)}
        audio_stream = waveform = layout = None
        if audio:
            rate = int(audio["sample_rate"])
            waveform = audio["waveform"][0, :, :math.ceil(rate / frame_rate * images.shape[0])]
            layout = {1: "mono", 2: "stereo", 6: "5.1"}.get(waveform.shape[0], "stereo")
            audio_stream = output.add_stream("aac", rate=rate, layout=layout)
        # frames are converted on the converter's threads, a bounded window ahead of the encoder, and encoded
        # in order: the same pictures, the same bitstream
        pool, ahead = converter(), collections.deque()
        for frame in images:
            ahead.append(pool.submit(picture, frame, ten_bit, pix_fmt))
            if len(ahead) > 2 * CONVERT_THREADS:
                output.mux(video.encode(ahead.popleft().result()))
        while ahead:
            output.mux(video.encode(ahead.popleft().result()))
        output.mux(video.encode(None))
        if audio_stream is not None:
            sound = av.AudioFrame.from_ndarray(waveform.float().cpu().contiguous().numpy(), format="fltp",
                                               layout=layout)
            sound.sample_rate, sound.pts = audio_stream.rate, 0
            output.mux(audio_stream.encode(sound))
            output.mux(audio_stream.encode(None))


class LTX2SaveVideo:
    """VIDEO -> an MP4 in ComfyUI's output folder, encoded with the given x264 preset and CRF."""

    CATEGORY = "video"
    RETURN_TYPES = ()
    FUNCTION = "save"
    OUTPUT_NODE = True
    DESCRIPTION = __doc__.splitlines()[0]

    @classmethod
    def INPUT_TYPES(cls):  # noqa: N802 (ComfyUI's name)
        return {"required": {
            "video": ("VIDEO",),
            "filename_prefix": ("STRING", {"default": "video/LTX-2"}),
            "preset": (list(X264_PRESETS), {"default": DEFAULT_PRESET}),
            "crf": ("INT", {"default": DEFAULT_CRF, "min": 0, "max": 51}),
        }}

    def save(self, video, filename_prefix, preset=DEFAULT_PRESET, crf=DEFAULT_CRF):
        import folder_paths

        width, height = video.get_dimensions()
        folder, name, counter, subfolder, _ = folder_paths.get_save_image_path(
            filename_prefix, folder_paths.get_output_directory(), width, height)
        file = f"{name}_{counter:05}_.mp4"
        path = os.path.join(folder, file)
        parts = video.get_components()
        bit_depth = video.get_bit_depth() if hasattr(video, "get_bit_depth") else 8
        partial = path + ".part"
        try:
            encode_mp4(partial, parts.images, parts.frame_rate, parts.audio, bit_depth, preset, crf)
            os.replace(partial, path)
        finally:
            if os.path.exists(partial):
                os.remove(partial)
        return {"ui": {"images": [{"filename": file, "subfolder": subfolder, "type": "output"}], "animated": (True,)}}


NODE_CLASS_MAPPINGS = {"LTX2SaveVideo": LTX2SaveVideo}
NODE_DISPLAY_NAME_MAPPINGS = {"LTX2SaveVideo": "LTX-2 save video (worker)"}
