"""One downloader per file across workers sharing a network volume.

A lock is a file created with O_EXCL next to the target (network file systems honour exclusive create
where flock() across hosts is unreliable). Its holder refreshes its mtime as a heartbeat; a lock whose
heartbeat is older than `stale_s` belongs to a dead worker and is taken over: renamed away first, so of
several waiters exactly one wins the takeover.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid
from pathlib import Path


class VolumeLock:
    def __init__(self, path: Path, stale_s: float):
        self.path = path
        self.stale_s = stale_s
        self._stop = threading.Event()
        self._beat: threading.Thread | None = None

    def try_acquire(self) -> bool:
        """Take the lock if it is free or stale; never blocks."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                if not self._take_over_if_stale():
                    return False
                continue
            with os.fdopen(fd, "w") as f:
                json.dump({"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()}, f)
            self._stop.clear()
            self._beat = threading.Thread(target=self._heartbeat, daemon=True, name=f"lock {self.path.name}")
            self._beat.start()
            return True
        return False

    def _take_over_if_stale(self) -> bool:
        try:
            age = time.time() - self.path.stat().st_mtime
        except FileNotFoundError:
            return True  # released meanwhile: try again
        if age < self.stale_s:
            return False
        try:  # exactly one of several waiters succeeds in moving the stale lock away
            os.rename(self.path, self.path.with_name(f"{self.path.name}.stale-{uuid.uuid4().hex[:8]}"))
        except FileNotFoundError:
            return True
        for old in self.path.parent.glob(f"{self.path.name}.stale-*"):
            old.unlink(missing_ok=True)
        return True

    def _heartbeat(self) -> None:
        while not self._stop.wait(self.stale_s / 4):
            try:
                os.utime(self.path)
            except FileNotFoundError:
                return

    def held_by_someone(self) -> bool:
        try:
            return time.time() - self.path.stat().st_mtime < self.stale_s
        except FileNotFoundError:
            return False

    def release(self) -> None:
        self._stop.set()
        if self._beat:
            self._beat.join(timeout=5)
        self.path.unlink(missing_ok=True)
