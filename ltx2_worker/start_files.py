"""The files ComfyUI's start reads, listed on the volume by one worker for the next fresh one's prefetch.

Where the image and the models share a disk (the lent GPU host; RunPod's model cache on the host's disk), ComfyUI's
start, thousands of small reads of Python modules and library pages, queues behind the prefetch's large reads and
every load waits for ComfyUI (H100, 2026-12-06: 20.2 s with the disk to itself, 32.5-42.2 s beside the prefetch).
Where PREFETCH_LIBRARIES (or its auto: start_files_first) says so, the launcher names list_path() to ComfyUI (the
LTX2_START_FILES variable), whose `ltx2_start_files` module writes the list when ComfyUI loads it
(ltx2_worker/comfy_nodes/ltx2_start_files.py), and the prefetch reads the listed files before the models. The list is
keyed by ComfyUI's Python and tree, so images that share a volume keep one each; a listed file that is gone
(another image's packages) is skipped.

The modules are not all: on the GPU host ComfyUI still read 1.74 GB itself with them in memory (2026-12-06f), and
with the pages its process had mapped listed too (/proc/<pid>/pagemap) still 0.07-0.09 GB, on which its main thread
waited 7-9 s, one read at a time behind the prefetch's (bench/comfy_start_waits.py): pages read ahead around its
faults but never mapped, Python sources read for their text, packages' metadata. So after its first job the worker
lists every page in memory of the files under ComfyUI's folders (its Python's sys.path, its bytecode cache, its
tree; mincore(2)): on a fresh host that is what the start and the first job read, 1.5-1.8 GB (2026-12-06g: ComfyUI
then answered as from the page cache, 16.0 s against 23.3-23.5 s; 2026-12-06h, the worker's own lists, no yielding:
17.5-17.8 s against 31.0-31.5 s). A host whose cache held more of those files before
the start (more than MAX_LISTED_BYTES in memory) says nothing about a fresh start: its list is not written.
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import mmap
import os
import shlex
import shutil
import stat
import subprocess
from pathlib import Path

from .model_cache import beside_the_image
from .settings import Settings
from .verify import write_atomically

FOLDER = ".ltx2-worker"  # inside the volume: the worker's own small state, beside models/ and the LoRA cache
ENV = "LTX2_START_FILES"  # the variable ComfyUI's ltx2_start_files module reads (it cannot import this one)
MAX_LIST_BYTES = 16 * 1024 * 1024  # a list larger than this is not one the module wrote
PAGE = mmap.PAGESIZE
MERGE_GAP = 1024 * 1024  # ranges in memory closer than this are read as one: fewer, larger reads for a little more
MAX_LISTED_BYTES = 4 * 10**9  # a fresh start and first job read 1.8 GB of ComfyUI's files (H100 host, 2026-12-06g)
ROOTS_TIMEOUT_S = 60.0  # ComfyUI's Python asked for its sys.path


def start_files_first(settings: Settings, cached_roles: set[str]) -> bool:
    """PREFETCH_LIBRARIES, its "auto" decided: ComfyUI's start files are listed and read first where the models
    share the image's disk (there ComfyUI's own reads queue behind the models'); not where the models come over the
    network, whose reads they would only delay, and where listing them would only cost each start and first job
    its CPU time and writes to the volume."""
    if settings.prefetch_libraries is not None:
        return settings.prefetch_libraries
    return beside_the_image(cached_roles)


def _key(settings: Settings) -> str:
    python = shutil.which(settings.comfy_python) or settings.comfy_python
    return hashlib.sha256(f"{os.path.realpath(python)}\n{settings.comfy_dir}".encode()).hexdigest()[:16]


def list_path(settings: Settings) -> Path:
    """Where the list of ComfyUI's start files is kept: one file per ComfyUI Python and tree."""
    return settings.volume_path / FOLDER / f"comfy-start-files-{_key(settings)}.txt"


def pages_path(settings: Settings) -> Path:
    """Where the pages of ComfyUI's files in memory after the first job are listed: one file per ComfyUI Python and
    tree."""
    return settings.volume_path / FOLDER / f"comfy-start-pages-{_key(settings)}.txt"


def merged(spans: list[tuple[int, int]], gap: int) -> list[tuple[int, int]]:
    """`spans` sorted and joined where less than `gap` bytes lie between them."""
    out: list[list[int]] = []
    for begin, end in sorted(spans):
        if out and begin <= out[-1][1] + gap:
            out[-1][1] = max(out[-1][1], end)
        else:
            out.append([begin, end])
    return [(a, b) for a, b in out]


class WarmHost(Exception):
    """More of ComfyUI's files were in memory than a fresh start reads: the host's cache was warm before it."""


_libc = None


def _mincore():
    global _libc
    if _libc is None:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.mmap.restype = ctypes.c_void_p
        libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int,
                              ctypes.c_long]
        libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
        libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.POINTER(ctypes.c_ubyte)]
        _libc = libc
    return _libc


def resident_ranges(path: str | Path) -> list[tuple[int, int]]:
    """The byte ranges of the file at `path` whose pages are in the page cache (mincore(2) on a read-only shared
    mapping: nothing is read, no privilege needed); [] when it cannot be opened or mapped."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return []
    try:
        size = os.fstat(fd).st_size
        if size == 0:
            return []
        libc = _mincore()
        address = libc.mmap(None, size, mmap.PROT_READ, mmap.MAP_SHARED, fd, 0)
        if address is None or address == ctypes.c_void_p(-1).value:
            return []
        try:
            pages = (size + PAGE - 1) // PAGE
            vec = (ctypes.c_ubyte * pages)()
            if libc.mincore(address, size, vec) != 0:
                return []
        finally:
            libc.munmap(address, size)
    finally:
        os.close(fd)
    spans, start = [], None
    for i, byte in enumerate(bytes(vec) + b"\0"):
        if byte & 1 and start is None:
            start = i
        elif not byte & 1 and start is not None:
            spans.append((start * PAGE, min(i * PAGE, size)))
            start = None
    return spans


def comfy_roots(settings: Settings) -> list[Path]:
    """The folders ComfyUI's files are read from: its Python's sys.path and bytecode cache, asked of that Python
    as ComfyUI runs it, and its tree; none inside another."""
    code = "import json, sys; print(json.dumps(sys.path + [sys.pycache_prefix or '']))"
    out = subprocess.run([*shlex.split(settings.comfy_python), "-c", code], capture_output=True, text=True,
                         check=True, timeout=ROOTS_TIMEOUT_S, cwd=settings.comfy_dir)
    paths = json.loads(out.stdout.strip().splitlines()[-1])  # "" (the current folder) is ComfyUI's tree
    found = {Path(p).resolve() for p in paths if p and os.path.isabs(p) and os.path.isdir(p)}
    found.add(Path(settings.comfy_dir).resolve())
    return sorted(p for p in found if not any(p != q and p.is_relative_to(q) for q in found))


def resident_pages(roots: list[Path], skip: Path | None = None,
                   gap: int = MERGE_GAP) -> dict[str, list[tuple[int, int]]]:
    """Each regular file under `roots`, outside the folder `skip` (the volume: its models are the prefetch's
    own), with pages in memory: its ranges, merged across `gap`. Links are not followed, and a file reached twice
    (hard links) is listed once."""
    out, seen = {}, set()
    skipped = str(skip.resolve()) if skip is not None else None
    for root in roots:
        for folder, folders, names in os.walk(root):
            folders[:] = [f for f in folders if os.path.join(folder, f) != skipped]
            for name in names:
                path = os.path.join(folder, name)
                try:
                    st = os.lstat(path)
                except OSError:
                    continue
                if not stat.S_ISREG(st.st_mode) or (st.st_dev, st.st_ino) in seen:
                    continue
                seen.add((st.st_dev, st.st_ino))
                spans = resident_ranges(path)
                if spans:
                    out[path] = merged(spans, gap)
    return out


def pages_text(pages: dict[str, list[tuple[int, int]]]) -> str:
    """A pages list as listed_pages() reads it: one line a file, its path, a tab, its ranges as start-end,
    comma-separated."""
    return "".join(f"{path}\t{','.join(f'{a}-{b}' for a, b in spans)}\n" for path, spans in sorted(pages.items()))


def record_pages(settings: Settings) -> int:
    """List on the volume (pages_path(), atomically) the pages of ComfyUI's files in memory now, what its start
    and first job read on a fresh host (pages_text()); returns the bytes listed. Raises WarmHost, writing nothing,
    past MAX_LISTED_BYTES."""
    pages = resident_pages(comfy_roots(settings), skip=Path(settings.volume_path))
    total = sum(b - a for spans in pages.values() for a, b in spans)
    if total > MAX_LISTED_BYTES:
        raise WarmHost(f"{total / 1e9:.2f} GB of ComfyUI's files are in memory, more than a fresh start reads "
                       f"({MAX_LISTED_BYTES / 1e9:g} GB): this host had them before its start; not listed")
    path = pages_path(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(path, pages_text(pages).encode())
    return total


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
