"""Run by ComfyUI's Python (which has PyAV, as ComfyUI's LoadAudio and LoadVideo need it), not imported by the
worker: `COMFY_PYTHON media_probe.py FILE` decodes FILE's first audio and first video stream the way those nodes
will and prints one JSON line: {"container", "audio": {"seconds", "sample_rate", "channels"} or {"error"},
"video": {"frames", "fps", "width", "height"} or {"error"}}, or {"error"} for a file PyAV cannot open.
Self-contained on purpose: the worker's own Python has no decoder.
"""

import json
import sys


def _audio(container) -> dict:
    if not container.streams.audio:
        return {"error": "has no audio stream"}
    stream = container.streams.audio[0]
    rate, channels, samples = stream.codec_context.sample_rate, stream.channels, 0
    for frame in container.decode(streams=stream.index):
        samples += frame.samples
    if not rate or not samples:
        return {"error": "holds no audio samples"}
    return {"seconds": samples / rate, "sample_rate": rate, "channels": channels}


def _video(container) -> dict:
    if not container.streams.video:
        return {"error": "has no video stream"}
    stream = container.streams.video[0]
    frames = width = height = 0
    for frame in container.decode(streams=stream.index):
        frames, width, height = frames + 1, frame.width, frame.height
    rate = stream.average_rate or stream.guessed_rate
    if not frames or not rate:
        return {"error": "holds no video frames"}
    return {"frames": frames, "fps": float(rate), "width": width, "height": height}


def probe(path: str) -> dict:
    try:
        import av

        out = {}
        for kind, read in (("audio", _audio), ("video", _video)):
            with av.open(path) as container:  # opened per stream: each decode reads the file from its start
                out["container"] = container.format.name
                out[kind] = read(container)
        return out
    except Exception as exc:  # PyAV raises its own error types for every kind of bad file
        return {"error": f"cannot be decoded ({type(exc).__name__}: {str(exc)[:120]})"}


if __name__ == "__main__":
    print(json.dumps(probe(sys.argv[1])))
