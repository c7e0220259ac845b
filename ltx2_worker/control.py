"""Video-to-video's control (`control`): Lightricks' IC-LoRA for the kind, which teaches LTX-2 19B to follow a
guide video (ComfyUI's blueprints "Canny to Video (LTX 2.0)", "Depth to Video", "Pose to Video"), and what turns
the source clip into that guide. The IC-LoRA is fetched like a camera move's LoRA (ltx2_worker.camera): through the
LoRA cache on first use, from `main` of its repo (no commit is recorded here; the cache pins what it got by sha256,
reported in the response), and applied in both stages after the request's LoRAs.

Canny edges come from ComfyUI's own `Canny` node, with no model. Depth needs the Lotus depth model and an SD VAE,
pose a pose estimator (SDPose): files this worker does not provision, so those kinds are refused with the reason.
"""

from __future__ import annotations

import os

from .job import InputError, LoraSpec

REPO = "Lightricks/LTX-2-19b-IC-LoRA-{title}-Control"
FILE = "ltx-2-19b-ic-lora-{kind}-control.safetensors"
REVISION = "main"
MAX_MB = 1500  # about 0.65 GB each (the figure; ComfyUI-Manager lists them), with room
HUB = "https://huggingface.co"
MISSING_PREPROCESSOR = {
    "depth": "depth needs a depth map of every source frame, made by the Lotus depth model "
             "(lotus-depth-d-v1-1.safetensors) with an SD VAE, which this worker does not provision yet",
    "pose": "pose needs a pose map of every source frame, made by a pose estimator (SDPose), which this worker "
            "does not provision yet",
}


def check_available(kind: str) -> None:
    """Refuse a control whose preprocessor cannot run on the provisioned files, saying why."""
    if kind in MISSING_PREPROCESSOR:
        raise InputError("control", f"{MISSING_PREPROCESSOR[kind]}; canny runs on ComfyUI's Canny node alone")


def ic_lora(kind: str) -> LoraSpec:
    """The IC-LoRA of `kind` (job.CONTROLS) at strength 1, as the blueprints apply it, from HF_ENDPOINT's hub."""
    endpoint = (os.environ.get("HF_ENDPOINT") or HUB).rstrip("/")
    url = f"{endpoint}/{REPO.format(title=kind.capitalize())}/resolve/{REVISION}/{FILE.format(kind=kind)}"
    return LoraSpec("control", url, 1.0, MAX_MB)
