"""Delivering the MP4: inline base64 when it fits RunPod's result limit, and removing it from ComfyUI's
output folder afterwards so a long-lived worker's disk does not fill up.
"""

from __future__ import annotations

import base64
import logging
import re
from pathlib import Path

from .settings import Settings

log = logging.getLogger(__name__)
MIME_MP4 = "video/mp4"


class DeliveryError(Exception):
    """The video exists but cannot be handed to the caller; the message says what to change."""


def b64_size(n_bytes: int) -> int:
    return 4 * ((n_bytes + 2) // 3)


def deliver(data: bytes, settings: Settings) -> dict[str, str]:
    """The response fields carrying the video: {"video": base64, "mime_type"}."""
    limit = int(settings.max_inline_mb * 1_000_000)
    size = b64_size(len(data))
    if size > limit:
        raise DeliveryError(
            f"the video is {len(data) / 1e6:.1f} MB ({size / 1e6:.1f} MB as base64), over the inline limit of "
            f"{settings.max_inline_mb:g} MB (MAX_INLINE_MB); RunPod cannot return results near 20 MB. Ask "
            "for a shorter or smaller clip, or configure a bucket (BUCKET_ENDPOINT_URL, BUCKET_ACCESS_KEY_ID, "
            "BUCKET_SECRET_ACCESS_KEY)")
    return {"video": base64.b64encode(data).decode("ascii"), "mime_type": MIME_MP4}


def safe_stem(job_id: str) -> str:
    """A file-name-safe form of the job id (RunPod ids are safe already; local ones may not be)."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", job_id)[:64] or "job"


def remove_outputs(output_dir: Path, filename_prefix: str) -> list[Path]:
    """Delete every file ComfyUI wrote for this job's unique prefix (`<subfolder>/<stem>_00001_.mp4`, ...).

    Matching the prefix, not the file names ComfyUI reported, also catches files of a job that failed
    after SaveVideo ran or whose history lacked the output."""
    folder = (output_dir / filename_prefix).parent
    stem = Path(filename_prefix).name
    removed = []
    try:
        candidates = list(folder.glob(f"{glob_escape(stem)}_*"))
    except OSError:
        return removed
    for path in candidates:
        try:
            path.unlink()
            removed.append(path)
        except FileNotFoundError:
            pass
        except OSError as exc:
            log.warning("could not delete output %s: %s", path, exc)
    return removed


def glob_escape(text: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", text)
