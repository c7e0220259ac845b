"""Small helpers shared by the request-path tests: decoding MP4s, settings for a loopback ComfyUI, a free port."""

from __future__ import annotations

import base64
import io
import socket
from pathlib import Path

import av

from ltx2_worker.settings import Settings, load_settings


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def mp4_facts(data: bytes) -> dict:
    """What a player would see: size, frame count, frame rate, and whether there is sound."""
    with av.open(io.BytesIO(data)) as container:
        video = container.streams.video[0]
        frames = sum(1 for _ in container.decode(video))
        return {"width": video.codec_context.width, "height": video.codec_context.height, "frames": frames,
                "fps": float(video.average_rate), "audio": bool(container.streams.audio)}


def decode_video_field(output: dict) -> dict:
    return mp4_facts(base64.b64decode(output["video"]))


def loopback_env(comfy_url: str, output_dir: Path, tmp: Path, **extra: str) -> dict[str, str]:
    """Environment for a worker talking to a ComfyUI on loopback, with its state files in `tmp`."""
    env = {
        "COMFY_URL": comfy_url,
        "COMFY_OUTPUT_DIR": str(output_dir),
        "BOOT_ERROR_FILE": str(tmp / "boot-error"),
        "COMFY_PID_FILE": str(tmp / "comfy.pid"),
        "COMFY_LOG_FILE": str(tmp / "comfy.log"),
        "JOB_TIMEOUT_S": "30",
        "COMFY_READY_TIMEOUT_S": "5",
        "PROGRESS_INTERVAL_S": "0",
    }
    env.update(extra)
    return env


def loopback_settings(comfy_url: str, output_dir: Path, tmp: Path, **extra: str) -> Settings:
    return load_settings(env=loopback_env(comfy_url, output_dir, tmp, **extra))


def files_under(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file()) if folder.exists() else []
