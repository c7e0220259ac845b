"""Small helpers shared by the tests: decoding MP4s, settings for a loopback ComfyUI, a free port, a private mount
namespace for file-system failures (a read-only or full volume)."""

from __future__ import annotations

import base64
import functools
import io
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import av
import numpy as np
import requests

from ltx2_worker.settings import ROOT, Settings, load_settings


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@functools.cache
def private_mounts() -> tuple[str, ...] | None:
    """A command prefix under which a command runs in its own mount namespace and may mount a tmpfs (a real
    read-only or full file system, gone when the command ends): `unshare -rm` (an unprivileged user namespace),
    else `sudo -n -E unshare -m` (CI runners with password-less sudo); None when neither works here."""
    for prefix in (("unshare", "-rm"), ("sudo", "-n", "-E", "unshare", "-m")):
        with tempfile.TemporaryDirectory() as folder:
            try:
                probe = subprocess.run([*prefix, "sh", "-c", 'mount -t tmpfs -o size=64k tmpfs "$1"', "sh", folder],
                                       capture_output=True, timeout=30)
            except (OSError, subprocess.TimeoutExpired):
                continue
            if probe.returncode == 0:
                return prefix
    return None


def mp4_facts(data: bytes) -> dict:
    """What a player would see: size, frame count, frame rate, and whether there is sound."""
    with av.open(io.BytesIO(data)) as container:
        video = container.streams.video[0]
        frames = sum(1 for _ in container.decode(video))
        return {"width": video.codec_context.width, "height": video.codec_context.height, "frames": frames,
                "fps": float(video.average_rate), "audio": bool(container.streams.audio)}


def decode_video_field(output: dict) -> dict:
    return mp4_facts(base64.b64decode(output["video"]))


def video_field_frames(output: dict) -> np.ndarray:
    """The output's decoded frames as RGB, (frames, height, width, 3) in float64, for comparing two videos."""
    with av.open(io.BytesIO(base64.b64decode(output["video"]))) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)]).astype(np.float64)


def state_env(comfy_url: str, output_dir: Path, tmp: Path) -> dict[str, str]:
    """Environment for a worker talking to a ComfyUI it did not start, with its state files in `tmp`; no start
    lists (tests/test_start_files.py asks for them: elsewhere every first job would list the pages of this
    Python's folders)."""
    return {
        "PREFETCH_LIBRARIES": "false",
        "COMFY_URL": comfy_url,
        "COMFY_OUTPUT_DIR": str(output_dir),
        "BOOT_ERROR_FILE": str(tmp / "boot-error"),
        "COMFY_PID_FILE": str(tmp / "comfy.pid"),
        "COMFY_LOG_FILE": str(tmp / "comfy.log"),
    }


def loopback_env(comfy_url: str, output_dir: Path, tmp: Path, **extra: str) -> dict[str, str]:
    """state_env with the tests' short deadlines."""
    env = {
        **state_env(comfy_url, output_dir, tmp),
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


class LocalApi:
    """`handler.py` (or entrypoint.sh) serving RunPod's local API on a free loopback port, its output in a log
    file; a context manager that waits until /docs answers (deadline `start_s`) and stops the process after."""

    def __init__(self, env: dict[str, str], log_path: Path, command: tuple[str, ...] | None = None,
                 extra_args: tuple[str, ...] = (), start_s: float = 60):
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self.argv = [*(command or (sys.executable, "handler.py")), "--rp_serve_api", "--rp_api_host", "127.0.0.1",
                     "--rp_api_port", str(self.port), *extra_args]
        self.env = {**os.environ, **env}
        self.start_s = start_s

    def __enter__(self) -> LocalApi:
        self._log = open(self.log_path, "w")
        self.proc = subprocess.Popen(self.argv, cwd=ROOT, env=self.env, stdout=self._log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        give_up = time.monotonic() + self.start_s
        while True:
            try:
                requests.get(self.base + "/docs", timeout=1)
                return self
            except requests.ConnectionError:
                pass
            if self.proc.poll() is not None or time.monotonic() > give_up:
                self.__exit__()
                raise RuntimeError(f"the local API did not come up: {self.log_path.read_text()[-2000:]}")
            time.sleep(0.2)

    def __exit__(self, *exc) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)
        self._log.close()

    def runsync(self, job_input: dict, timeout: float = 120) -> dict:
        return requests.post(self.base + "/runsync", json={"input": job_input}, timeout=timeout).json()
