"""The files ComfyUI's start reads, listed on the volume by one worker for the next fresh one's prefetch.

Where the image and the models share a disk (the lent GPU host; RunPod's model cache on the host's disk), ComfyUI's
start, thousands of small reads of Python modules and library pages, queues behind the prefetch's large reads and
every load waits for ComfyUI (H100, 2026-12-06: 20.2 s with the disk to itself, 32.5-42.2 s beside the prefetch).
With PREFETCH_LIBRARIES the launcher names list_path() to ComfyUI (the LTX2_START_FILES variable), whose
`ltx2_start_files` module writes the list when ComfyUI loads it (ltx2_worker/comfy_nodes/ltx2_start_files.py), and
the prefetch reads the listed files before the models. The list is keyed by ComfyUI's Python and tree, so images
that share a volume keep one each; a listed file that is gone (another image's packages) is skipped.

The modules are not all: on the GPU host ComfyUI still read 1.74 GB itself with them in memory (2026-12-06f), the
pages of the shared libraries it maps (torch's, CUDA's), fetched one fault at a time behind the prefetch's reads.
Reading those libraries whole (7.67 GB) delays the models. So after its first job the worker also lists the pages
of them that ComfyUI's process has touched (pages_path(): its page table, /proc/<pid>/pagemap, covers the start and
the first job's CUDA libraries), and the prefetch reads just those byte ranges.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
from pathlib import Path

from .settings import Settings
from .verify import write_atomically

FOLDER = ".ltx2-worker"  # inside the volume: the worker's own small state, beside models/ and the LoRA cache
ENV = "LTX2_START_FILES"  # the variable ComfyUI's ltx2_start_files module reads (it cannot import this one)
MAX_LIST_BYTES = 16 * 1024 * 1024  # a list larger than this is not one the module wrote
PAGE = os.sysconf("SC_PAGE_SIZE")
PRESENT = 1 << 63  # a /proc/<pid>/pagemap entry's bit: the page is in the process's memory
MERGE_GAP = 1024 * 1024  # touched ranges closer than this are read as one: fewer, larger reads for a little more


def _key(settings: Settings) -> str:
    python = shutil.which(settings.comfy_python) or settings.comfy_python
    return hashlib.sha256(f"{os.path.realpath(python)}\n{settings.comfy_dir}".encode()).hexdigest()[:16]


def list_path(settings: Settings) -> Path:
    """Where the list of ComfyUI's start files is kept: one file per ComfyUI Python and tree."""
    return settings.volume_path / FOLDER / f"comfy-start-files-{_key(settings)}.txt"


def pages_path(settings: Settings) -> Path:
    """Where the pages of the shared libraries ComfyUI touched are listed: one file per ComfyUI Python and tree."""
    return settings.volume_path / FOLDER / f"comfy-start-pages-{_key(settings)}.txt"


def is_library(path: str) -> bool:
    name = os.path.basename(path)
    return name.endswith(".so") or ".so." in name


def merged(spans: list[tuple[int, int]], gap: int) -> list[tuple[int, int]]:
    """`spans` sorted and joined where less than `gap` bytes lie between them."""
    out: list[list[int]] = []
    for begin, end in sorted(spans):
        if out and begin <= out[-1][1] + gap:
            out[-1][1] = max(out[-1][1], end)
        else:
            out.append([begin, end])
    return [(a, b) for a, b in out]


def touched_pages(pid: int | str, gap: int = MERGE_GAP) -> dict[str, list[tuple[int, int]]]:
    """The byte ranges of each shared library mapped by process `pid` whose pages are in its memory (touched by
    it, or mapped beside a touched page from the page cache), merged across `gap`. Reads /proc/<pid>/maps and
    /proc/<pid>/pagemap (the present bit needs no privilege; the same user may read another process's)."""
    spans: dict[str, list[tuple[int, int]]] = {}
    with open(f"/proc/{pid}/maps", encoding="utf-8", errors="replace") as f:
        maps = f.read().splitlines()
    with open(f"/proc/{pid}/pagemap", "rb") as pagemap:
        for line in maps:
            fields = line.split(None, 5)
            if len(fields) < 6 or not fields[5].startswith("/") or fields[4] == "0" or not is_library(fields[5]):
                continue
            path = fields[5].strip()
            start, end = (int(x, 16) for x in fields[0].split("-"))
            offset = int(fields[2], 16)
            pagemap.seek(start // PAGE * 8)
            entries = memoryview(pagemap.read((end - start) // PAGE * 8)).cast("Q")
            at = [offset + i * PAGE for i, entry in enumerate(entries) if entry & PRESENT]
            spans.setdefault(path, []).extend((a, a + PAGE) for a in at)
    out = {}
    for path, found in spans.items():
        try:
            size = os.stat(path).st_size  # a mapping's last page runs past the file's end
        except OSError:
            continue
        cut = [(a, min(b, size)) for a, b in merged(found, gap) if a < size]
        if cut:
            out[path] = cut
    return out


def record_pages(settings: Settings, pid: int | str) -> int:
    """List on the volume (pages_path(), atomically) what touched_pages() finds in ComfyUI's process `pid`;
    returns the bytes listed. One line a library: its path, a tab, its ranges as start-end, comma-separated."""
    pages = touched_pages(pid)
    text = "".join(f"{path}\t{','.join(f'{a}-{b}' for a, b in spans)}\n" for path, spans in sorted(pages.items()))
    path = pages_path(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(path, text.encode())
    return sum(b - a for spans in pages.values() for a, b in spans)


def _lines(path: Path) -> list[str]:
    """A list's lines; [] when there is none, it cannot be read, or it is larger than any the worker writes."""
    try:
        if path.stat().st_size > MAX_LIST_BYTES:
            return []
        return path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return []


def _span(text: str) -> tuple[int, int]:
    begin, end = text.split("-")  # ValueError unless exactly one dash
    return int(begin), int(end)


def listed_pages(path: Path) -> list[tuple[Path, list[tuple[int, int]]]]:
    """The libraries and byte ranges the list at `path` names, each range cut to the file's size now (another
    image's library of the same name may be shorter), each file once; [] when there is no list or it cannot
    be read. A line that is not path, tab, ranges is skipped."""
    found, seen = [], set()
    for line in _lines(path):
        name, _, text = line.partition("\t")
        try:
            st = os.stat(name) if name.startswith("/") else None
            spans = [_span(part) for part in text.split(",")]
        except (OSError, ValueError):
            continue
        if st is None or not stat.S_ISREG(st.st_mode) or (st.st_dev, st.st_ino) in seen:
            continue
        cut = [(a, min(b, st.st_size)) for a, b in spans if 0 <= a < min(b, st.st_size)]
        if cut:
            seen.add((st.st_dev, st.st_ino))
            found.append((Path(name), merged(cut, 0)))
    return found


def listed_files(path: Path) -> list[Path]:
    """The regular files the list at `path` names, in its order, each once (links to one file count once);
    [] when there is no list yet, or it cannot be read."""
    found, seen = [], set()
    for line in _lines(path):
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
