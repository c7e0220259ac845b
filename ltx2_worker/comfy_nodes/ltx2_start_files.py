# SPDX-License-Identifier: GPL-3.0-or-later (LICENSE; README, "Licence": loaded into ComfyUI, GPL-3.0)
"""ComfyUI custom node module without nodes (loaded by ComfyUI, not by the worker): when ComfyUI loads it, near the
end of its start, it lists the files of the Python modules that start has imported so far (each module's bytecode,
else its source or extension module) into the file LTX2_START_FILES names (the launcher sets it: a file on the
volume).

Why: where the image and the models share one disk, ComfyUI's start is thousands of small reads, each queued
behind the prefetch's large ones (H100, 2026-12-06: ComfyUI answered in 20.2 s with the disk to itself, 32.5-42.2
s beside the prefetch). The next fresh worker's prefetch reads this list first (PREFETCH_LIBRARIES,
ltx2_worker/start_files.py): about 4,700 files but only 0.7 GB. Shared libraries are left out: ComfyUI's
start touches a part of them, and reading them whole (5.3 GB of torch's and CUDA's) delayed the models without
starting ComfyUI sooner (bench/comfy_start_contention.py); after its first job the worker lists the pages of
ComfyUI's files in memory instead, the libraries' among them. The list is rewritten when it differs (another image,
other packages), atomically, so a reader never sees half of one. Self-contained on purpose: it runs inside
ComfyUI's Python, which need not have the worker's packages.
"""

from __future__ import annotations

import logging
import os
import sys

log = logging.getLogger("ltx2_start_files")
ENV = "LTX2_START_FILES"


def module_files(modules) -> list[str]:
    """The file each module was read from, each once, in import order: its bytecode where that exists (the source
    is then only looked at), else its source or extension module."""
    found = {}
    for module in list(modules):
        for candidate in (getattr(module, "__cached__", None), getattr(module, "__file__", None)):
            if isinstance(candidate, str) and os.path.isfile(candidate):
                found.setdefault(os.path.abspath(candidate), None)
                break
    return list(found)


def write_if_changed(path: str, lines: list[str]) -> bool:
    """Writes the list (one path a line) through a temporary file and a rename; False if it was the same."""
    text = "".join(line + "\n" for line in lines)
    try:
        with open(path, encoding="utf-8") as f:
            if f.read() == text:
                return False
    except OSError:
        pass
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    temporary = f"{path}.{os.getpid()}.tmp"
    try:
        with open(temporary, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)
    return True


def record() -> None:
    path = os.environ.get(ENV)
    if not path:
        return
    try:
        lines = module_files(sys.modules.values())
        if write_if_changed(path, lines):
            log.info("ltx2_start_files: the %d module files ComfyUI's start read, listed in %s", len(lines), path)
    except OSError as exc:  # a read-only or full volume only costs the next worker its head start
        log.warning("ltx2_start_files: could not list ComfyUI's start files in %s: %s", path, exc)


record()

NODE_CLASS_MAPPINGS: dict = {}
