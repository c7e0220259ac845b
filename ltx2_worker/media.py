"""The worker's side of checking a request's media file (`audio_input`, `video`): the file is decoded by
ltx2_worker/media_probe.py run in ComfyUI's Python (COMFY_PYTHON), which has the PyAV that ComfyUI's LoadAudio and
LoadVideo use, so what passes here is what those nodes can read; the worker's own Python has no decoder.
"""

from __future__ import annotations

import json
import subprocess
import tempfile
from pathlib import Path

from .image_input import read_spec
from .job import InputError

PROBE_TIMEOUT_S = 60.0
PROBE = Path(__file__).resolve().parent / "media_probe.py"


class ProbeUnavailable(Exception):
    """ComfyUI's Python cannot run the check of a track or a video (a worker configuration problem, not the
    request's)."""


def read_media(spec: str, field: str, stream: str, what: str, containers: dict[str, str], max_bytes: int,
               fetch_timeout_s: float, python: str) -> tuple[bytes, str, dict]:
    """The file of `spec` (base64 or https URL) as (bytes, the extension ComfyUI gets it under, the probe's facts
    of its `stream`, "audio" or "video"), or InputError naming `field`: empty, undecodable, no such stream, or a
    container outside `containers` (PyAV's container name -> extension); `what` describes the formats taken."""
    data = read_spec(spec, field, max_bytes, fetch_timeout_s)
    if not data:
        raise InputError(field, "is an empty file")
    media = probe(data, python, field)
    facts = media.get(stream) or media
    if "error" in facts:
        raise InputError(field, f"must be {what}, and this file {facts['error']}")
    extension = containers.get(media["container"])
    if extension is None:
        raise InputError(field, f"must be {what}; this file is {media['container']} (FFmpeg's name for its format)")
    return data, extension, facts


def probe(data: bytes, python: str, field: str) -> dict:
    """media_probe.py's answer for `data`, run by ComfyUI's Python (`field` names the request's field)."""
    with tempfile.NamedTemporaryFile(prefix="ltx2-media-") as f:
        f.write(data)
        f.flush()
        try:
            out = subprocess.run([python, str(PROBE), f.name], capture_output=True, text=True,
                                 timeout=PROBE_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            return {"error": f"took more than {PROBE_TIMEOUT_S:g} s to decode"}
        except OSError as exc:
            raise ProbeUnavailable(f"{field} cannot be checked: ComfyUI's Python (COMFY_PYTHON={python}) "
                                   f"does not run: {exc}") from None
    try:
        return json.loads(out.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError):
        raise ProbeUnavailable(f"{field} cannot be checked: ComfyUI's Python (COMFY_PYTHON={python}) "
                               f"failed: {(out.stderr or out.stdout).strip()[-300:]}") from None
