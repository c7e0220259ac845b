"""Is this worker able to run a job at all? Checked at the start of every job, in microseconds.

entrypoint.sh leaves a boot error file when provisioning or the ComfyUI launch failed; the launcher leaves
ComfyUI's pid file. A job on a broken worker fails at once with the reason instead of hanging.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

from .settings import Settings

LOG_TAIL_LINES = 20


@dataclasses.dataclass(frozen=True)
class Problem:
    message: str
    refresh_worker: bool  # True when a fresh worker could succeed where this one cannot


def log_tail(path: Path, lines: int = LOG_TAIL_LINES, max_bytes: int = 64 * 1024) -> str:
    """The last lines of a log file, read from its end (the log may be large)."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - max_bytes))
            data = f.read()
    except OSError:
        return ""
    return "\n".join(data.decode("utf-8", "replace").splitlines()[-lines:])


def process_alive(pid: int) -> bool:
    """True while `pid` runs; a zombie (ComfyUI exited, not yet reaped by us, its parent) counts as dead."""
    try:
        reaped, _ = os.waitpid(pid, os.WNOHANG)
        if reaped == pid:
            return False
    except ChildProcessError:
        pass  # not our child: fall through to /proc
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    state = stat.rsplit(")", 1)[-1].split()[0]
    return state not in ("Z", "X")


def comfy_exit_problem(settings: Settings) -> Problem | None:
    """ComfyUI's process is gone: say so with the end of its log, and ask RunPod for a fresh worker."""
    try:
        pid = int(settings.comfy_pid_file.read_text().strip())
    except (OSError, ValueError):
        return None  # no launcher here (local development or tests): judged by HTTP alone
    if process_alive(pid):
        return None
    tail = log_tail(settings.comfy_log_file)
    return Problem(
        f"ComfyUI (pid {pid}) is not running; last lines of {settings.comfy_log_file}:\n{tail}"
        if tail
        else f"ComfyUI (pid {pid}) is not running and left no log at {settings.comfy_log_file}",
        refresh_worker=True,
    )


def boot_problem(settings: Settings) -> Problem | None:
    """The failure a start-up step recorded in BOOT_ERROR_FILE, or None."""
    try:
        text = settings.boot_error_file.read_text(encoding="utf-8", errors="replace").strip()
    except FileNotFoundError:
        text = None
    except OSError as exc:
        text = f"cannot read {settings.boot_error_file}: {exc}"
    return _boot_problem(text) if text else None


def worker_problem(settings: Settings) -> Problem | None:
    """Why this worker cannot run jobs, or None."""
    return boot_problem(settings) or comfy_exit_problem(settings)


def record_boot_failure(settings: Settings, message: str, refresh_worker: bool = False) -> None:
    """Called by the start-up steps (provisioning, launch) when they fail: every later job reports it."""
    from .verify import write_atomically

    write_atomically(settings.boot_error_file,
                     json.dumps({"message": message, "refresh_worker": refresh_worker}).encode())


def _boot_problem(text: str) -> Problem:
    """The boot error file holds plain text, or JSON {"message", "refresh_worker"} (a broken GPU asks for a
    fresh worker; a missing volume would not be helped by one)."""
    try:
        record = json.loads(text)
    except ValueError:
        record = None
    if isinstance(record, dict) and "message" in record:
        return Problem(f"worker start-up failed: {record['message']}", bool(record.get("refresh_worker")))
    return Problem(f"worker start-up failed: {text}", refresh_worker=False)
