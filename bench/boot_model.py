"""A fresh worker's cold start against storage slower than the lent machine's disk, modelled on the CPU.

What runs for real: the boot prefetch's own code (ltx2_worker.prefetch.prefetch, its readers, chunk queue and
file order) reading files of the manifest's sizes scaled down by --scale, through a read function that models
the storage (bench/prefetch_latency.py's model: every read waits --latency-ms, then moves its bytes at most at
--stream-mbps a stream, and all readers together at most at the volume's throughput), with every wait slept
--speedup times shorter. What is modelled from measurements: ComfyUI's start (--comfy-start-s, from the image's
own disk, beside the volume's reads), and the first job: the nodes of a measured cold job whose weights were
in the page cache (--cold-job), in their order, each loader waiting until the prefetch has its file in memory.

    .venv/bin/python bench/prefetch_latency.py ...   # the storage model alone, against the local disk
    .venv/bin/python bench/boot_model.py [--throughputs 0.2,0.5,1,2] [--readers 8,16] [--out FILE.md]

Rows: RunPod's network volume at each throughput; RunPod's cached models (the checkpoint, LoRA and upscaler on
the host's own disk at --local-gbps, the text encoder still on the network volume at 1 GB/s), read as the worker
does (one queue: the text encoder first, then the host's disk) and, as a candidate, each storage by readers of its
own at once; all in the page cache (no reads). Left out of the model, so its figures are a floor: the loaders'
own page faults beside the prefetch (one stream among many), ComfyUI's reads of the small parts of the
checkpoint it touches before the prefetch reaches them, the copy to the GPU overlapping the read (counted after
it here, which overstates), and any slowing of ComfyUI's start by reads from the disk it starts from (on the
lent machine, one disk for both, the prefetch slowed it from 9.8 to 24.4 s).
"""

from __future__ import annotations

import argparse
import configparser
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ltx2_worker.prefetch import CHUNK, in_read_order, os_read, prefetch  # noqa: E402

# The first job's loader nodes and the file each must find in memory before its page-cache time counts; the
# other nodes only compute. Stage 1's weights are moved to the GPU inside its sampler, after "checkpoint".
NEEDS = {"text_encoder": "text_encoder", "checkpoint": "checkpoint", "upsampler": "upscaler", "lora": "lora"}
SIDE_BY_SIDE = ", the two storages read side by side (a candidate)"
DEFAULT_JOB = ROOT / "bench" / "results" / "h200-2026-12-03-new-prompts.json"


class Clock:
    """Modelled seconds since `start()`: real seconds times `speedup`. One per boot, shared by its storages."""

    def __init__(self, speedup: float):
        self.speedup = speedup
        self.start()

    def start(self) -> None:
        self.t0 = time.monotonic()

    def now(self) -> float:
        return (time.monotonic() - self.t0) * self.speedup


class Storage:
    """One storage's model: a fixed wait per read, a per-stream and a total bandwidth (bytes per modelled
    second). `scale` turns a read's bytes into the bytes it stands for; `clock` gives modelled time."""

    def __init__(self, latency_s: float, stream_bps: float, total_bps: float, scale: float, clock: Clock):
        self.latency_s, self.stream_bps, self.total_bps = latency_s, stream_bps, total_bps
        self.scale, self.clock = scale, clock
        self._free_at = 0.0  # modelled time at which the volume's total bandwidth is free again
        self._lock = threading.Lock()

    def finish_at(self, now: float, nbytes: int) -> float:
        """When a read of `nbytes` (standing for nbytes * scale) asked for at modelled time `now` ends: after
        the latency, at one stream's bandwidth, and after the reads before it through the total bandwidth
        (shared first come first served)."""
        modelled = nbytes * self.scale
        start = now + self.latency_s
        with self._lock:
            self._free_at = max(start, self._free_at) + modelled / self.total_bps
            through_volume = self._free_at
        return max(start + modelled / self.stream_bps, through_volume)

    def wait(self, nbytes: int) -> None:
        now = self.clock.now()
        time.sleep(max(0.0, self.finish_at(now, nbytes) - now) / self.clock.speedup)


def modelled_read(storage_of: dict[str, Storage]):
    """os.preadv, then the wait of the storage that holds the file (by its path, looked up at every read: the
    prefetch opens a file per chunk, so one descriptor number stands for different files over a boot)."""
    def read(fd: int, buffer: memoryview, offset: int) -> int:
        n = os_read(fd, buffer, offset)
        storage_of[Path(os.readlink(f"/proc/self/fd/{fd}")).stem].wait(n)
        return n
    return read


def manifest_sizes(config: Path = ROOT / "config.ini") -> dict[str, int]:
    """Each default model's role and real size in bytes, from the manifest (the optional distilled checkpoint,
    off unless ENABLE_MODELS names it, left out)."""
    parser = configparser.ConfigParser()
    parser.read(config, encoding="utf-8")
    return {section.split(".", 1)[1]: parser.getint(section, "size") for section in parser.sections()
            if section.startswith("model.") and parser.getboolean(section, "required", fallback=True)}


def cold_job(path: Path) -> tuple[list[tuple[str, float]], float, float]:
    """The measured cold job (page cache): its nodes in order with seconds, the launcher's and provisioning's
    seconds before it, and the worker's time around ComfyUI's (wall less "Prompt executed in")."""
    job = next(r for r in json.loads(path.read_text()) if r.get("job") == "cold")
    return list(job["nodes"].items()), job["provision_s"], job["wall_s"] - job["comfy_s"]


def job_end(nodes: list[tuple[str, float]], start: float, ready: dict[str, float]) -> float:
    """When the first job's last node ends: each node in order, a loader first waiting for its file."""
    t = start
    for name, seconds in nodes:
        if name in NEEDS:
            t = max(t, ready.get(NEEDS[name], 0.0))
        t += seconds
    return t


def boot(sizes: dict[str, int], storage_of: dict[str, Storage], readers: int, scale: float, folder: Path,
         clock: Clock, side_by_side: bool = False) -> dict[str, float]:
    """Run the prefetch over scaled files; each file's modelled time until it was all in memory. With
    `side_by_side`, each storage's files get a prefetch of their own (`readers` each), run at once: the
    candidate for cached models, not what the worker does (one queue, in READ_ORDER)."""
    files = []
    for role in in_read_order(list(sizes)):
        path = folder / f"{role}.safetensors"
        if not path.exists() or path.stat().st_size != int(sizes[role] / scale):
            with open(path, "wb") as f:
                f.truncate(int(sizes[role] / scale))
        files.append((role, path))
    for path in (p for _, p in files):  # in the page cache: only the modelled waits count
        with open(path, "rb") as f:
            while f.read(16 << 20):
                pass
    clock.start()
    groups: dict[int, list] = {}
    for role, path in files:
        groups.setdefault(id(storage_of[role]) if side_by_side else 0, []).append((role, path))
    done: dict[str, float] = {}
    read = modelled_read(storage_of)

    def run(group: list) -> None:
        result = prefetch(group, readers, budget=1 << 62, timeout_s=3600, chunk=max(4096, int(CHUNK / scale)),
                          read=read)
        done.update({f.name: (f.done_s or 0.0) * clock.speedup for f in result.files})

    threads = [threading.Thread(target=run, args=(group,)) for group in groups.values()]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return done


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--throughputs", default="0.2,0.5,1,2", help="network volume throughputs, GB/s")
    p.add_argument("--readers", default="8,16", help="PREFETCH_READERS values to model")
    p.add_argument("--latency-ms", type=float, default=10.0)
    p.add_argument("--stream-mbps", type=float, default=200.0, help="one stream's bandwidth, MB/s")
    p.add_argument("--local-gbps", type=float, default=2.18,
                   help="a host's own disk for cached models (the lent H200's disk, 8 readers, 2026-12-04)")
    p.add_argument("--comfy-start-s", type=float, default=9.8,
                   help="ComfyUI's start from the image's own disk, nothing cached (lent H200, 2026-12-04)")
    p.add_argument("--check-start-s", type=float, default=24.4,
                   help="a row for the lent machine itself, whose ComfyUI start took this long beside the prefetch "
                        "(2026-12-04: 24.4 s, cold start 56.3 s measured); 0: no such row")
    p.add_argument("--cold-job", type=Path, default=DEFAULT_JOB, help="a gpu_clip.py JSON with a page-cache cold job")
    p.add_argument("--scale", type=float, default=64.0, help="files are their real size divided by this")
    p.add_argument("--speedup", type=float, default=20.0, help="every modelled wait is slept this many times shorter")
    p.add_argument("--out", type=Path, default=None, help="also write the table to this file")
    args = p.parse_args(argv)
    sizes = manifest_sizes()
    nodes, provision_s, worker_s = cold_job(args.cold_job)
    page_cache_job = sum(s for _, s in nodes)

    def network(gbps: float, clock: Clock) -> Storage:
        return Storage(args.latency_ms / 1e3, args.stream_mbps * 1e6, gbps * 1e9, args.scale, clock)

    def local(clock: Clock) -> Storage:
        return Storage(0.0, args.local_gbps * 1e9, args.local_gbps * 1e9, args.scale, clock)

    def cached_model(clock: Clock) -> dict[str, Storage]:
        return {**dict.fromkeys(sizes, local(clock)), "text_encoder": network(1.0, clock)}

    # each storage is one object shared by the files on it: its total bandwidth is theirs together
    scenarios = [(f"network volume, {g:g} GB/s", lambda clock, g=g: dict.fromkeys(sizes, network(g, clock)))
                 for g in map(float, args.throughputs.split(","))]
    cached = f"cached model on the host's disk ({args.local_gbps:g} GB/s), text encoder on a 1 GB/s volume"
    scenarios += [(cached, cached_model), (cached + SIDE_BY_SIDE, cached_model)]
    if args.check_start_s:  # the lent machine: ComfyUI's start shares the disk with the prefetch (measured slower)
        scenarios.append((f"check: the lent machine's disk ({args.local_gbps:g} GB/s), ComfyUI's start "
                          f"{args.check_start_s:g} s", lambda clock: dict.fromkeys(sizes, local(clock))))
    rows = []
    with tempfile.TemporaryDirectory(dir=ROOT, prefix=".boot-model-") as tmp:
        for label, make in scenarios:
            for readers in map(int, args.readers.split(",")):
                clock = Clock(args.speedup)  # one for all the boot's storages
                started = time.monotonic()
                ready = boot(sizes, make(clock), readers, args.scale, Path(tmp), clock,
                             side_by_side=label.endswith(SIDE_BY_SIDE))
                real = time.monotonic() - started
                comfy_ready = provision_s + (args.check_start_s if label.startswith("check") else args.comfy_start_s)
                end = job_end(nodes, comfy_ready, {r: provision_s + t for r, t in ready.items()})
                rows.append((label, readers, provision_s + max(ready.values()), end + worker_s, real))
                print(f"{label}, {readers} readers: all read at {rows[-1][2]:.1f} s, cold start "
                      f"{rows[-1][3]:.1f} s ({real:.1f} s to model)", file=sys.stderr, flush=True)
    floor = provision_s + args.comfy_start_s + page_cache_job + worker_s
    lines = [f"Files: {', '.join(f'{r} {s / 1e9:.2f} GB' for r, s in sizes.items())} ({sum(sizes.values()) / 1e9:.2f} "
             f"GB). Storage: {args.latency_ms:g} ms a read, {args.stream_mbps:g} MB/s a stream; prefetch chunks "
             f"{CHUNK >> 20} MB. ComfyUI's start {args.comfy_start_s:g} s; first job from {args.cold_job.name} "
             f"({page_cache_job:.1f} s of nodes, {worker_s:.1f} s of the worker's around them, provisioning "
             f"{provision_s:g} s). Modelled at 1/{args.scale:g} size, {args.speedup:g}x faster.", "",
             "| storage | prefetch readers | everything read at, s | cold start, s | over the page cache, s |",
             "|---|---|---|---|---|"]
    lines += [f"| {label} | {n} | {read:.1f} | {cold:.1f} | {cold - floor:+.1f} |" for label, n, read, cold, _ in rows]
    lines.append(f"| all in the page cache | — | — | {floor:.1f} | 0 |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
