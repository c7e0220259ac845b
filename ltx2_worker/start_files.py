"""The files ComfyUI's start reads, listed on the volume by one worker for the next fresh one's prefetch.

Where the image and the models share a disk (the lent GPU host; RunPod's model cache on the host's disk), ComfyUI's
start, thousands of small reads of Python modules and library pages, queues behind the prefetch's large reads and
every load waits for ComfyUI (H100, 2026-12-06: 20.2 s with the disk to itself, 32.5-42.2 s beside the prefetch).
With PREFETCH_LIBRARIES the launcher names list_path() to ComfyUI (the LTX2_START_FILES variable), whose
`ltx2_start_files` module writes the list when ComfyUI loads it (ltx2_worker/comfy_nodes/ltx2_start_files.py), and
the prefetch reads the listed files before the models. The list is keyed by ComfyUI's Python and tree, so images
that share a volume keep one each; a listed file that is gone (another image's packages) is skipped.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
from pathlib import Path

from .settings import Settings

FOLDER = ".ltx2-worker"  # inside the volume: the worker's own small state, beside models/ and the LoRA cache
ENV = "LTX2_START_FILES"  # the variable ComfyUI's ltx2_start_files module reads (it cannot import this one)
MAX_LIST_BYTES = 16 * 1024 * 1024  # a list larger than this is not one the module wrote


def list_path(settings: Settings) -> Path:
    """Where the list of ComfyUI's start files is kept: one file per ComfyUI Python and tree."""
    python = shutil.which(settings.comfy_python) or settings.comfy_python
    key = hashlib.sha256(f"{os.path.realpath(python)}\n{settings.comfy_dir}".encode()).hexdigest()[:16]
    return settings.volume_path / FOLDER / f"comfy-start-files-{key}.txt"


def listed_files(path: Path) -> list[Path]:
    """The regular files the list at `path` names, in its order, each once (links to one file count once);
    [] when there is no list yet, or it cannot be read."""
    try:
        if path.stat().st_size > MAX_LIST_BYTES:
            return []
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return []
    found, seen = [], set()
    for line in lines:
        if not line.startswith("/"):
            continue
        try:
            st = os.stat(line)
        except OSError:
            continue
        if stat.S_ISREG(st.st_mode) and (st.st_dev, st.st_ino) not in seen:
            seen.add((st.st_dev, st.st_ino))
            found.append(Path(line))
    return found
