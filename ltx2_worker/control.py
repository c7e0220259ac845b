"""Video-to-video's control (`control`): Lightricks' IC-LoRA for the kind, which teaches LTX-2 19B to follow a
guide video (ComfyUI's blueprints "Canny to Video (LTX 2.0)", "Depth to Video", "Pose to Video"), and what turns
the source clip into that guide. The IC-LoRA is fetched like a camera move's LoRA (ltx2_worker.camera): through the
LoRA cache on first use, from `main` of its repo (no commit is recorded here; the cache pins what it got by sha256,
reported in the response), and applied in both stages after the request's LoRAs.

Canny edges come from ComfyUI's own `Canny` node, with no model. Depth maps come from Lotus-D with the SD VAE
(ComfyUI's "Image to Depth Map (Lotus)" subgraph), pose maps from SDPose (its "Image to Pose Map (SDPose-OOD)":
whole-body keypoints of one figure per frame, drawn as an OpenPose skeleton), all core nodes, on files the
manifest provisions only with ENABLE_MODELS=control_depth / control_pose (manifest.CONTROL_ROLES): without them
such a request is refused, saying so.
"""

from __future__ import annotations

from .download import hub_file_url
from .job import CONTROLS, InputError, LoraSpec
from .lora_cache import LoraCache, fetch_at_boot
from .manifest import CONTROL_PREFIX, CONTROL_ROLES, enabled_names, enabled_roles, load_manifest
from .settings import Settings, SettingsError

REPO = "Lightricks/LTX-2-19b-IC-LoRA-{title}-Control"
FILE = "ltx-2-19b-ic-lora-{kind}-control.safetensors"
REVISION = "main"
MAX_MB = 1500  # about 0.65 GB each (the figure; ComfyUI-Manager lists them), with room


def check_available(kind: str, settings: Settings) -> dict[str, str]:
    """The files of `kind`'s preprocessor (manifest role: file name, as ComfyUI lists it), or InputError saying
    why it cannot run here."""
    roles = CONTROL_ROLES.get(kind, ())
    if any(role not in enabled_roles(settings) for role in roles):
        raise InputError("control", f"{kind} needs its preprocessor's files ({', '.join(roles)}) on the volume, "
                         f"which this worker provisions only when ENABLE_MODELS lists control_{kind}; canny runs "
                         "on ComfyUI's Canny node alone")
    return {m.role: m.name for m in load_manifest(settings) if m.role in roles}


def ic_lora(kind: str) -> LoraSpec:
    """The IC-LoRA of `kind` (job.CONTROLS) at strength 1, as the blueprints apply it, from HF_ENDPOINT's hub."""
    return LoraSpec("control", hub_file_url(REPO.format(title=kind.capitalize()), FILE.format(kind=kind), REVISION),
                    1.0, MAX_MB)


def enabled_controls(settings: Settings) -> list[str]:
    """The controls ENABLE_MODELS names as control_<kind> whose IC-LoRA is fetched at boot; a kind this worker
    does not know is a configuration error."""
    kinds = sorted(n[len(CONTROL_PREFIX):] for n in enabled_names(settings) if n.startswith(CONTROL_PREFIX))
    for kind in kinds:
        if kind not in CONTROLS:
            raise SettingsError(f"ENABLE_MODELS names control_{kind}; this worker runs "
                                f"{', '.join(CONTROL_PREFIX + k for k in CONTROLS)}")
    return kinds


def fetch_enabled(settings: Settings, cache: LoraCache, timeout_s: float) -> list[str]:
    """At boot: each enabled control's IC-LoRA into the cache (lora_cache.fetch_at_boot); the kinds fetched."""
    kinds = enabled_controls(settings)
    done = fetch_at_boot(cache, [(f"control {k}", ic_lora(k)) for k in kinds], timeout_s)
    return [k for k in kinds if f"control {k}" in done]
