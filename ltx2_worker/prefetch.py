"""Boot prefetch: read the verified model files into the page cache while ComfyUI starts, so its loaders find
the weights in memory instead of waiting on the network volume.

    python -m ltx2_worker.prefetch     # entrypoint.sh runs it in the background, after provisioning

Several readers take 64 MB chunks from one queue: first, with PREFETCH_LIBRARIES (by default where the models come
from RunPod's model cache) and every reader, what ComfyUI read the last time (its Python modules, and the pages of
its files its start and first job read, listed on the volume: ltx2_worker/start_files.py): ComfyUI's start otherwise
reads them behind the model reads, and every load waits for ComfyUI; then the model files in the order the first job
loads them (READ_ORDER): every byte is read once, the first-needed file lands first, and the process holds only one
buffer per reader. It reads at most what the container's memory allows at start (its cgroup's limit less its usage,
and the host's MemAvailable) less PREFETCH_HEADROOM_GB for ComfyUI and the job, so it never evicts what it read a
moment ago. A file that does not fit is read from its start up to the budget (the loader reads each file in full, so
its first bytes found in memory are bytes it need not fetch) and later files not at all. Where ComfyUI starts from
the same disk as the models and nothing was read first (by default a first start where they come from RunPod's model
cache), PREFETCH_YIELD_TO_COMFY keeps one reader in small reads until ComfyUI answers, so ComfyUI's own reads wait
behind little; the others join then (on the lent GPU host, one disk: ComfyUI ready in 15-21 s against 26-42 s beside
eight readers). The checkpoint's audio VAE and vocoder and the text encoder's parts of it (FIRST_TENSORS) are read
before everything else: the first job's first two loaders take them out of it. A missing or shrinking file ends that
file's reading with a warning; PREFETCH_TIMEOUT_S ends it all. It always exits 0: jobs never wait for it, and a
failed prefetch only means the loaders read from storage. Each file's line says when it was all in memory, so a slow
cold start's log shows which load waited on which read.
"""

from __future__ import annotations

import argparse
import dataclasses
import errno
import json
import logging
import mmap
import os
import queue
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from .manifest import load_manifest
from .model_cache import beside_the_image, cached_files, model_path
from .settings import Settings, load_settings
from .start_files import list_path, listed_files, listed_pages, pages_path, start_files_first

log = logging.getLogger(__name__)

# The order the first job loads the files (the text encoder, then the checkpoint, then stage 2's upscaler and
# LoRA); roles not named here follow in manifest order.
READ_ORDER = ("text_encoder", "checkpoint", "upscaler", "lora", "checkpoint_distilled")
# Tensors read before every other byte: the first job's first two loaders (the worker's LTX2AudioVAELoader and
# LTX2TextEncoderLoader, ltx2_worker/comfy_nodes/ltx2_checkpoint_parts.py, whose prefixes these are) take the
# audio VAE and vocoder, and the text encoder's projection and embedding connectors, out of the 27 GB checkpoint;
# read in file order they would come anywhere in it. With the audio ones read first, the audio VAE's loader took
# 0.0-0.2 s of a cold start on the GPU host (ComfyUI's own loader, which opens every tensor, waited 4.3-12 s for
# the whole checkpoint's read; docs/performance.md).
FIRST_TENSORS = {"checkpoint": ("audio_vae.", "vocoder.", "text_embedding_projection.",
                                "model.diffusion_model.audio_embeddings_connector.",
                                "model.diffusion_model.video_embeddings_connector.")}
MAX_HEADER = 100 * 1024 * 1024  # a safetensors header larger than this is not read
LIBRARIES = "libraries"  # the name their reading is logged under
CHUNK = 64 * 1024 * 1024
CGROUP_ROOT = Path("/sys/fs/cgroup")
MEMINFO = Path("/proc/meminfo")
V1_UNLIMITED = 1 << 60  # cgroup v1 writes "no limit" as a huge number (9223372036854771712)
JOIN_GRACE_S = 5.0  # past the deadline, how long a reader stuck in one read is waited for
YIELD_READ = 4 * 1024 * 1024  # while yielding to ComfyUI's start: the one reader's read size (a shallow queue)
YIELD_POLL_S = 0.25  # while yielding: how often ComfyUI is asked whether it answers

Reader = Callable[[int, memoryview, int], int]  # (fd, buffer, offset) -> bytes read, as os.preadv


def os_read(fd: int, buffer: memoryview, offset: int) -> int:
    return os.preadv(fd, [buffer], offset)


MADV_POPULATE_READ = getattr(mmap, "MADV_POPULATE_READ", 22)  # Linux 5.14's madvise advice (Python 3.11 lacks it)
_page_in_works = True  # False once the kernel refused MADV_POPULATE_READ: page_in copies from then on


def page_in(fd: int, buffer: memoryview, offset: int) -> int:
    """PREFETCH_PAGE_IN's reader: `len(buffer)` bytes at `offset` into the page cache without copying them
    anywhere: the range mapped and filled by the kernel (MADV_POPULATE_READ returns once every page is read), so
    the readers cost almost no CPU; `buffer` is left alone. 0 at or past the file's end, as os.preadv; a kernel
    without the advice (before 5.14: EINVAL) gets os_read, logged once."""
    global _page_in_works
    length = min(len(buffer), os.fstat(fd).st_size - offset)
    if length <= 0:
        return 0
    if _page_in_works:
        start = offset - offset % mmap.ALLOCATIONGRANULARITY  # a mapping starts on a page
        with mmap.mmap(fd, offset + length - start, prot=mmap.PROT_READ, offset=start) as mapped:
            try:
                mapped.madvise(MADV_POPULATE_READ)  # the whole mapping: it starts at most a page early
                return length
            except OSError as exc:
                if exc.errno == errno.EFAULT:  # past the end: the file shrank while its pages were read
                    return 0
                if exc.errno != errno.EINVAL:
                    raise
        _page_in_works = False
        log.info("this kernel cannot fill a mapping (madvise MADV_POPULATE_READ: EINVAL): PREFETCH_PAGE_IN "
                 "copies instead")
    return os_read(fd, buffer, offset)


@dataclasses.dataclass(frozen=True)
class Memory:
    limit: int | None  # the cgroup's limit in bytes; None: no limit
    usage: int  # the cgroup's usage, page cache included
    available: int  # the host's MemAvailable

    def room(self) -> int:
        """Bytes that may be filled without pushing anything out of this container's memory or the host's."""
        return min(self.available, self.limit - self.usage) if self.limit is not None else self.available


def read_memory(cgroup_root: Path = CGROUP_ROOT, meminfo: Path = MEMINFO) -> Memory:
    """The container's memory: cgroup v2 (memory.max, memory.current) or v1 (memory/memory.limit_in_bytes,
    memory/memory.usage_in_bytes), and the host's MemAvailable."""
    available = next(int(line.split()[1]) * 1024 for line in meminfo.read_text().splitlines()
                     if line.startswith("MemAvailable:"))
    limit, usage = None, 0
    if (cgroup_root / "memory.max").is_file():
        text = (cgroup_root / "memory.max").read_text().strip()
        limit = None if text == "max" else int(text)
        usage = int((cgroup_root / "memory.current").read_text())
    elif (cgroup_root / "memory" / "memory.limit_in_bytes").is_file():
        limit = int((cgroup_root / "memory" / "memory.limit_in_bytes").read_text())
        limit = None if limit >= V1_UNLIMITED else limit
        usage = int((cgroup_root / "memory" / "memory.usage_in_bytes").read_text())
    return Memory(limit, usage, available)


def budget_bytes(memory: Memory, headroom_gb: float, readers: int, chunk: int = CHUNK) -> int:
    """What the prefetch may read: the room, less the headroom and the readers' own buffers."""
    return max(0, memory.room() - int(headroom_gb * 1e9) - readers * chunk)


@dataclasses.dataclass(frozen=True)
class Yield:
    """Until `answered()` is true (ComfyUI's HTTP answers) or `within_s` passes, one reader reads, YIELD_READ
    at a time; then all the readers read whole chunks."""

    answered: Callable[[], bool]
    within_s: float
    poll_s: float = YIELD_POLL_S


@dataclasses.dataclass
class File:
    name: str
    path: Path
    size: int = 0
    wanted: int = 0  # bytes it is to be read for: its size, or its `only` ranges' sum
    planned: int = 0  # bytes to read: from the start, or of its `only` ranges
    spans: list[tuple[int, int]] | None = None  # with `only`: the byte ranges planned, not a prefix
    read: int = 0
    reason: str = ""  # why its reading ended early: missing, shrank, a read error
    done_s: float | None = None  # seconds from the prefetch's start until its planned bytes were all read

    def why_short(self) -> str:
        return self.reason or ("memory budget" if self.planned < self.wanted else "deadline")


@dataclasses.dataclass
class Result:
    files: list[File]
    seconds: float
    readers: int
    budget: int
    cpu_s: float  # the process's CPU seconds meanwhile (copying: 1.2-1.7 s a GB on 2 CPUs)
    all_readers_at: float | None = None  # with a Yield: seconds until every reader read (None: from the start)

    @property
    def bytes_read(self) -> int:
        return sum(f.read for f in self.files)

    def summary(self) -> str:
        read = [f for f in self.files if f.read]
        gb = self.bytes_read / 1e9
        line = (f"read {gb:.2f} GB of {len(read)} file{'' if len(read) == 1 else 's'} in {self.seconds:.1f} s "
                f"({gb / max(self.seconds, 1e-6):.2f} GB/s) with {self.readers} reader"
                f"{'' if self.readers == 1 else 's'}, {self.cpu_s:.1f} s of CPU")
        if self.all_readers_at is not None:
            line += f" (one until +{self.all_readers_at:.1f} s, yielding to ComfyUI's start)"
        skipped = [f"{f.name} {(f.wanted - f.read) / 1e9:.2f} of {f.wanted / 1e9:.2f} GB ({f.why_short()})"
                   if f.wanted else f"{f.name} ({f.why_short()})" for f in self.files if f.reason or f.read < f.wanted]
        return line + (f"; skipped: {', '.join(skipped)}" if skipped else "")


def tensor_ranges(path: Path, prefixes: tuple[str, ...]) -> list[tuple[int, int]]:
    """Byte ranges [start, end) of the safetensors file's tensors whose names start with `prefixes`, merged
    where they touch; [] for a file that is not safetensors or has none."""
    try:
        with open(path, "rb") as f:
            length = int.from_bytes(f.read(8), "little")
            if not 0 < length <= MAX_HEADER:
                return []
            header = json.loads(f.read(length))
    except (OSError, ValueError):
        return []
    spans = sorted(tuple(entry["data_offsets"]) for name, entry in header.items()
                   if name != "__metadata__" and name.startswith(prefixes))
    merged: list[list[int]] = []
    for begin, end in spans:
        if merged and begin <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([begin, end])
    return [(8 + length + begin, 8 + length + end) for begin, end in merged]


def in_read_order(names: list[str]) -> list[str]:
    rank = {name: i for i, name in enumerate(READ_ORDER)}
    return sorted(names, key=lambda name: rank.get(name, len(READ_ORDER)))  # stable: the rest keep their order


def prefetch(files: list[tuple[str, Path]], readers: int, budget: int, timeout_s: float, chunk: int = CHUNK,
             read: Reader = os_read, yield_to: Yield | None = None,
             first: dict[str, list[tuple[int, int]]] | None = None,
             only: dict[Path, list[tuple[int, int]]] | None = None, since: float | None = None) -> Result:
    """Read `files` (name, path; in this order) into the page cache with `readers` threads, at most `budget`
    bytes in all, for at most `timeout_s` seconds; with `yield_to`, one reader in small reads until it ends.
    `first` (name -> byte ranges of that file) is read before everything else; of a path in `only`, just those
    byte ranges (sorted, apart) are read. Its "in memory at +N s" lines count from `since` (time.monotonic()),
    by default its own start."""
    started, cpu_started = time.monotonic(), time.process_time()
    origin = started if since is None else since
    deadline = started + timeout_s
    everyone = threading.Event()  # set: every reader reads whole chunks
    all_readers_at: list[float] = []
    plan, left = [], budget
    for name, path in files:
        f = File(name, path)
        plan.append(f)
        try:
            f.size = os.stat(path).st_size
        except OSError as exc:
            f.reason = _unreadable(exc)
            log.warning("%s: %s %s; not read", name, path, f.reason)
            continue
        if only is not None and path in only:
            f.spans = []
            for a, b in only[path]:
                take = max(0, min(b, f.size) - a)
                f.wanted += take
                planned = min(take, left)
                if planned > 0:
                    f.spans.append((a, a + planned))
                    left -= planned
            f.planned = sum(b - a for a, b in f.spans)
            continue
        f.wanted = f.size
        f.planned = min(f.size, left)
        left -= f.planned
    early: list[tuple[File, int, int]] = []
    late: list[tuple[File, int, int]] = []
    for f in plan:
        if f.spans is not None:
            late += [(f, offset, min(chunk, b - offset)) for a, b in f.spans for offset in range(a, b, chunk)]
            continue
        ranges = [(a, min(b, f.planned)) for a, b in (first or {}).get(f.name, []) if a < f.planned]
        gaps, at = [], 0
        for a, b in ranges:
            gaps.append((at, a))
            at = b
        gaps.append((at, f.planned))
        for spans, into in ((ranges, early), (gaps, late)):
            for a, b in spans:
                into += [(f, offset, min(chunk, b - offset)) for offset in range(a, b, chunk)]
    chunks: queue.SimpleQueue[tuple[File, int, int]] = queue.SimpleQueue()
    for item in early + late:
        chunks.put(item)
    lock = threading.Lock()
    planned: dict[str, int] = {}
    for f in plan:
        planned[f.name] = planned.get(f.name, 0) + f.planned
    read_by_name = dict.fromkeys(planned, 0)

    def reader(leads: bool) -> None:
        view = memoryview(mmap.mmap(-1, chunk))  # its memory is taken only as a copying reader writes into it
        if not leads and not everyone.wait(max(0.0, deadline - time.monotonic())):
            return
        while time.monotonic() < deadline:
            try:
                f, offset, length = chunks.get_nowait()
            except queue.Empty:
                everyone.set()  # nothing left: no reader need wait for ComfyUI any more
                return
            if f.reason:
                continue  # this file already ended
            done = 0
            try:  # opened per chunk: thousands of library files must not hold as many descriptors at once
                fd = os.open(f.path, os.O_RDONLY)
            except OSError as exc:
                _end(f, _unreadable(exc), lock)
                continue
            try:
                while done < length:
                    step = length - done if everyone.is_set() else min(YIELD_READ, length - done)
                    n = read(fd, view[:step], offset + done)
                    if n <= 0:
                        _end(f, f"shrank to {offset + done} bytes while being read", lock)
                        break
                    done += n
            except OSError as exc:
                _end(f, f"read failed at byte {offset + done}: {exc.strerror or exc}", lock)
            finally:
                os.close(fd)
            with lock:
                f.read += done
                read_by_name[f.name] += done
                if f.read == f.planned and f.done_s is None:
                    f.done_s = time.monotonic() - origin
                if done and read_by_name[f.name] == planned[f.name]:  # the name's last file: log it once
                    log.info("%s: %.2f GB in memory at +%.1f s", f.name, planned[f.name] / 1e9,
                             time.monotonic() - origin)

    def watch(within: Yield) -> None:
        """Ask ComfyUI until it answers or `within.within_s` passes, then let every reader read."""
        until = min(deadline, started + within.within_s)
        answered = False
        while not answered and not everyone.is_set() and time.monotonic() < until:
            try:
                answered = within.answered()
            except Exception as exc:  # noqa: BLE001 - a failed question is a "not yet"
                log.debug("asking ComfyUI failed: %s", exc)
            if not answered:
                time.sleep(within.poll_s)
        if everyone.is_set():  # the first reader read everything already
            return
        all_readers_at.append(time.monotonic() - origin)
        log.info("%s at +%.1f s: %d readers read now", "ComfyUI answers" if answered else
                 f"ComfyUI did not answer within {within.within_s:g} s", all_readers_at[0], readers)
        everyone.set()

    threads = [threading.Thread(target=reader, args=(i == 0,), name=f"prefetch-{i}", daemon=True)
               for i in range(readers)]
    if yield_to is None:
        everyone.set()
    else:
        threads.append(threading.Thread(target=watch, args=(yield_to,), name="prefetch-yield", daemon=True))
    for t in threads:
        t.start()
    for t in threads[:readers]:
        t.join(max(0.0, deadline - time.monotonic()) + JOIN_GRACE_S)
    everyone.set()  # the readers are done: the watcher stops asking
    if any(t.is_alive() for t in threads[:readers]):
        log.warning("a reader is still waiting on a read %g s after the deadline (PREFETCH_TIMEOUT_S); left behind",
                    JOIN_GRACE_S)
    if time.monotonic() >= deadline and chunks.qsize():
        log.warning("deadline of %g s passed (PREFETCH_TIMEOUT_S); the rest is not read", timeout_s)
    return Result(plan, time.monotonic() - started, readers, budget, time.process_time() - cpu_started,
                  all_readers_at[0] if all_readers_at else None)


def _unreadable(exc: OSError) -> str:
    """Why a file cannot be read at all, as its summary line says it."""
    return "missing" if isinstance(exc, FileNotFoundError) else f"cannot be opened: {exc.strerror}"


def _end(f: File, reason: str, lock: threading.Lock) -> None:
    with lock:
        if not f.reason:
            f.reason = reason
            log.warning("%s: %s %s; the rest of it is not read", f.name, f.path, reason)


def yields_to_comfy(settings: Settings, cached_roles: set[str], start_read_first: bool) -> bool:
    """PREFETCH_YIELD_TO_COMFY, its "auto" decided: yield where the models share the image's disk and ComfyUI's
    start files were not read first (a first start: yielding gave the first MP4 sooner in every pair of runs of
    three leases); not once they were (ComfyUI then reads almost nothing from the disk, and one reader only delayed
    the models: 51.5-52.9 s against 46.9-47.8 s, 2026-12-06h); not where the models come from a network volume,
    where one reader would only read them slower."""
    if settings.prefetch_yield_to_comfy is not None:
        return settings.prefetch_yield_to_comfy
    return beside_the_image(cached_roles) and not start_read_first


def main(argv: list[str] | None = None, read: Reader | None = None, cgroup_root: Path = CGROUP_ROOT,
         meminfo: Path = MEMINFO) -> int:
    parser = argparse.ArgumentParser(prog="python -m ltx2_worker.prefetch", description=__doc__.splitlines()[0])
    parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s prefetch: %(message)s")
    try:
        settings = load_settings()
        if not settings.prefetch:
            log.info("off (PREFETCH=false)")
            return 0
        if read is None:
            read = page_in if settings.prefetch_page_in else os_read
        if read is page_in:
            log.info("the kernel fills mapped chunks, nothing is copied (PREFETCH_PAGE_IN)")
        models = {m.role: m for m in load_manifest(settings)}
        cached = cached_files(settings, list(models.values()))
        files = [(role, model_path(settings, models[role], cached)) for role in in_read_order(list(models))]
        libraries, pages, source = [], [], ""
        if start_files_first(settings, set(cached)):
            listing = list_path(settings)
            libraries, source = listed_files(listing), f"what ComfyUI's last start read, listed in {listing}"
            whole, page_list = set(libraries), pages_path(settings)
            pages = [(path, spans) for path, spans in listed_pages(page_list) if path not in whole]
            if pages:
                source += f", and the pages its start and first job read, listed in {page_list}"
            if not libraries and not pages:  # a first start: reading the libraries whole (7.7 GB) delayed the
                log.info("%s: no list yet in %s", LIBRARIES, listing.parent)  # models and started ComfyUI no sooner
        if libraries or pages:
            log.info("%s first: %d files, %.2f GB: %s", LIBRARIES, len(libraries) + len(pages),
                     (sum(p.stat().st_size for p in libraries) + sum(b - a for _, spans in pages for a, b in spans))
                     / 1e9, source)
        memory = read_memory(cgroup_root, meminfo)
        budget = budget_bytes(memory, settings.prefetch_headroom_gb, settings.prefetch_readers)
        started = time.monotonic()
        if libraries or pages:  # ComfyUI's own reads: every reader, yielding or not, then the models
            first_result = prefetch([(LIBRARIES, path) for path in libraries + [path for path, _ in pages]],
                                    settings.prefetch_readers, budget, settings.prefetch_timeout_s, read=read,
                                    only=dict(pages), since=started)
            log.info("%s: %s", LIBRARIES, first_result.summary())
            budget -= first_result.bytes_read
        log.info("%d model files, %.2f GB; memory budget %.2f GB (cgroup limit %s, usage %.2f GB; host available "
                 "%.2f GB; PREFETCH_HEADROOM_GB %g)", len(models), sum(m.size for m in models.values()) / 1e9,
                 budget / 1e9, f"{memory.limit / 1e9:.2f} GB" if memory.limit is not None else "none",
                 memory.usage / 1e9, memory.available / 1e9, settings.prefetch_headroom_gb)
        yield_to = None
        if yields_to_comfy(settings, set(cached), bool(libraries or pages)):
            from .comfy import ComfyClient  # here: the HTTP client's import would delay every other prefetch

            client = ComfyClient(settings.comfy_url)
            yield_to = Yield(lambda: client.ready(timeout=1.0), settings.comfy_start_timeout_s)
            log.info("one reader until ComfyUI answers at %s (PREFETCH_YIELD_TO_COMFY)", settings.comfy_url)
        first = {name: tensor_ranges(path, FIRST_TENSORS[name]) for name, path in files if name in FIRST_TENSORS}
        for name, ranges in first.items():
            if ranges:
                log.info("%s: %s first (%.2f GB)", name, ", ".join(FIRST_TENSORS[name]),
                         sum(b - a for a, b in ranges) / 1e9)
        timeout_s = max(0.0, settings.prefetch_timeout_s - (time.monotonic() - started))
        result = prefetch(files, settings.prefetch_readers, max(0, budget), timeout_s, read=read,
                          yield_to=yield_to, first=first, since=started)
        log.info("%s", result.summary())
    except Exception as exc:  # noqa: BLE001 - a failed prefetch must never fail the boot; the loaders still read
        log.warning("failed, the loaders read from storage instead: %s: %s", type(exc).__name__, exc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
