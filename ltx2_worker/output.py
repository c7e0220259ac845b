"""Delivering the MP4: inline base64 when it fits RunPod's result limit, otherwise (or when asked) uploaded
to an S3-compatible bucket and returned as a presigned URL; and removing it from ComfyUI's output folder
afterwards so a long-lived worker's disk does not fill up.

The runpod SDK's own upload helper is not used: without credentials it silently copies the file to a local
folder and returns that path as if uploaded, and it labels files as images.
"""

from __future__ import annotations

import base64
import dataclasses
import io
import logging
import os
import re
from collections.abc import Mapping
from pathlib import Path

from .settings import Settings

log = logging.getLogger(__name__)
MIME_MP4 = "video/mp4"
BUCKET_ENV = ("BUCKET_ENDPOINT_URL", "BUCKET_ACCESS_KEY_ID", "BUCKET_SECRET_ACCESS_KEY")


class DeliveryError(Exception):
    """The video exists but cannot be handed to the caller; the message says what to change."""


@dataclasses.dataclass(frozen=True)
class Bucket:
    """Where oversized videos go. The keys are kept out of repr() so they cannot reach a log line."""

    endpoint_url: str
    access_key_id: str = dataclasses.field(repr=False)
    secret_access_key: str = dataclasses.field(repr=False)
    name: str
    url_expiry_s: int

    @classmethod
    def from_env(cls, settings: Settings, env: Mapping[str, str] | None = None) -> Bucket | None:
        env = os.environ if env is None else env
        values = [env.get(name, "").strip() for name in BUCKET_ENV]
        if not all(values):
            return None
        return cls(*values, name=settings.bucket_name, url_expiry_s=settings.bucket_url_expiry_s)

    def redact(self, text: str) -> str:
        for secret in (self.secret_access_key, self.access_key_id):
            text = text.replace(secret, "***")
        return text

    def upload(self, data: bytes, key: str) -> str:
        """Put the MP4 in the bucket and return a presigned GET URL for it."""
        import boto3
        from botocore.config import Config
        from botocore.exceptions import BotoCoreError, ClientError

        client = boto3.client(
            "s3", endpoint_url=self.endpoint_url, aws_access_key_id=self.access_key_id,
            aws_secret_access_key=self.secret_access_key,
            config=Config(connect_timeout=10, read_timeout=120, retries={"max_attempts": 3, "mode": "standard"},
                          signature_version="s3v4"))
        try:
            client.upload_fileobj(io.BytesIO(data), self.name, key, ExtraArgs={"ContentType": MIME_MP4})
            return client.generate_presigned_url("get_object", Params={"Bucket": self.name, "Key": key},
                                                 ExpiresIn=self.url_expiry_s)
        except (BotoCoreError, ClientError) as exc:
            raise DeliveryError(self.redact(f"upload to bucket {self.name!r} at {self.endpoint_url} failed: "
                                            f"{exc}")) from None


def b64_size(n_bytes: int) -> int:
    return 4 * ((n_bytes + 2) // 3)


def deliver(data: bytes, settings: Settings, bucket: Bucket | None = None, key: str = "video.mp4",
            mode: str = "auto") -> dict[str, object]:
    """The response fields carrying the video: {"video": base64} or {"video_url": presigned URL}.

    mode "auto" inlines what fits MAX_INLINE_MB and uploads the rest; "url" always uploads; "base64" never."""
    limit = int(settings.max_inline_mb * 1_000_000)
    size = b64_size(len(data))
    if mode == "url" or (mode == "auto" and size > limit):
        if bucket is None:
            why = ("a URL was asked for" if mode == "url" else
                   f"the video is {len(data) / 1e6:.1f} MB ({size / 1e6:.1f} MB as base64), over the inline "
                   f"limit of {settings.max_inline_mb:g} MB (MAX_INLINE_MB); RunPod cannot return results near "
                   "20 MB")
            raise DeliveryError(f"{why}, and no bucket is configured: set BUCKET_ENDPOINT_URL, "
                                "BUCKET_ACCESS_KEY_ID and BUCKET_SECRET_ACCESS_KEY (and BUCKET_NAME), or ask for a "
                                "shorter or smaller clip")
        url = bucket.upload(data, key)
        log.info("uploaded %d bytes to bucket %s as %s", len(data), bucket.name, key)
        return {"video_url": url, "mime_type": MIME_MP4, "video_bytes": len(data)}
    if size > limit:
        raise DeliveryError(f"the video is {size / 1e6:.1f} MB as base64, over the inline limit of "
                            f"{settings.max_inline_mb:g} MB (MAX_INLINE_MB), and \"delivery\": \"base64\" was "
                            "asked for; ask for \"auto\" or \"url\" with a bucket configured")
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


def output_dir_from_argv(argv: list[str]) -> Path | None:
    """The output folder of a ComfyUI v0.26.2 started with `argv` (main.py, folder_paths.py): --output-directory,
    else <--base-directory>/output, else <main.py's folder>/output. None where a relative path leaves it to
    ComfyUI's working directory, which cannot be seen from outside."""
    def flag(name: str) -> str | None:
        value = None
        for i, arg in enumerate(argv):
            if arg == name and i + 1 < len(argv):
                value = argv[i + 1]
            elif arg.startswith(name + "="):
                value = arg.split("=", 1)[1]
        return value

    if (out := flag("--output-directory")) is not None:
        return Path(out) if os.path.isabs(out) else None
    if (base := flag("--base-directory")) is not None:
        return Path(base) / "output" if os.path.isabs(base) else None
    main = argv[0] if argv else ""
    return Path(main).parent / "output" if os.path.isabs(main) and Path(main).name == "main.py" else None


def output_dir_source(settings: Settings) -> str:
    """Which setting chose the folder output files are removed from, for messages that say what to fix."""
    if settings.comfy_output_dir_override is not None:
        return "COMFY_OUTPUT_DIR"
    return f"COMFYUI_DIR ({settings.comfy_dir}) + /output, as COMFY_OUTPUT_DIR is empty"


OUTPUT_DIR_FIX = ("set COMFY_OUTPUT_DIR to the folder ComfyUI writes to (its --output-directory), or COMFYUI_DIR to "
                  "its checkout")


def output_dir_problem(settings: Settings, comfy_argv: list[str] | None) -> str | None:
    """Why the folder the worker removes each job's MP4 from is probably not ComfyUI's output folder, or None.
    Cheap: the folder ComfyUI's command line names (`comfy_argv`, from /system_stats when it answered; ComfyUI
    v0.26.2 has no endpoint that reports its output folder), else whether the folder exists at all."""
    folder = settings.comfy_output_dir
    reported = output_dir_from_argv(comfy_argv) if comfy_argv else None
    if reported is not None:  # ComfyUI creates the folder it names when it first saves: no need to exist yet
        if os.path.realpath(reported) == os.path.realpath(folder):
            return None
        why = (f"ComfyUI writes its output files to {reported} (its command line), but the worker removes them "
               f"from {folder}")
    elif folder.is_dir():
        return None
    else:
        why = f"the folder the worker removes ComfyUI's output files from, {folder}, does not exist"
    return (f"{why} ({output_dir_source(settings)}): every job's MP4 would be left in ComfyUI's output folder "
            f"until its disk fills; {OUTPUT_DIR_FIX}")


def glob_escape(text: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", text)
