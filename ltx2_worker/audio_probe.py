"""Run by ComfyUI's Python (which has PyAV, as ComfyUI's LoadAudio needs it), not imported by the worker:
`COMFY_PYTHON audio_probe.py FILE` decodes FILE's first audio stream the way LoadAudio will and prints one JSON
line: {"seconds", "sample_rate", "channels", "container"} or {"error"}. Self-contained on purpose: the worker's
own Python has no audio decoder.
"""

import json
import sys


def probe(path: str) -> dict:
    try:
        import av

        with av.open(path) as container:
            if not container.streams.audio:
                return {"error": "has no audio stream"}
            stream = container.streams.audio[0]
            rate, channels, samples = stream.codec_context.sample_rate, stream.channels, 0
            for frame in container.decode(streams=stream.index):
                samples += frame.samples
            name = container.format.name
    except Exception as exc:  # PyAV raises its own error types for every kind of bad file
        return {"error": f"cannot be decoded ({type(exc).__name__}: {str(exc)[:120]})"}
    if not rate or not samples:
        return {"error": "holds no audio samples"}
    return {"seconds": samples / rate, "sample_rate": rate, "channels": channels, "container": name}


if __name__ == "__main__":
    print(json.dumps(probe(sys.argv[1])))
