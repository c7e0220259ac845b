"""The boot prefetch's readers against storage whose every read waits (a network file system), on the CPU.

Each read of the modelled storage pays a fixed latency plus its bytes at a per-stream bandwidth (both slept,
so parallel readers overlap them as they do on MooseFS or NFS), then copies the bytes from the page cache: the
prefetch's own code (ltx2_worker.prefetch.prefetch) with its read function wrapped. As a reference, the same
files on this machine's disk with the page cache evicted before each run (posix_fadvise DONTNEED).

    .venv/bin/python bench/prefetch_latency.py [--files 4] [--file-mb 256] [--chunk-mb 16] [--latency-ms 10]
        [--stream-mbps 200] [--dir DIR] [--out bench/results/cpu-....md]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ltx2_worker.prefetch import os_read, prefetch  # noqa: E402

READERS = (1, 2, 4, 8, 16)


def network_read(latency_s: float, stream_bps: float):
    """os.preadv behind a per-read latency and a per-stream bandwidth cap."""
    def read(fd: int, buffer: memoryview, offset: int) -> int:
        time.sleep(latency_s + len(buffer) / stream_bps)
        return os_read(fd, buffer, offset)
    return read


def evict(paths: list[Path]) -> None:
    for path in paths:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def make_files(folder: Path, count: int, size: int) -> list[Path]:
    paths = []
    block = os.urandom(16 * 1024 * 1024)
    for i in range(count):
        path = folder / f"model-{i}.safetensors"
        with open(path, "wb") as f:
            for offset in range(0, size, len(block)):
                f.write(block[:min(len(block), size - offset)])
            f.flush()
            os.fsync(f.fileno())  # clean pages: DONTNEED can drop them
        paths.append(path)
    return paths


def run(paths: list[Path], readers: int, chunk: int, read) -> float:
    result = prefetch([(p.stem, p) for p in paths], readers, budget=1 << 62, timeout_s=600, chunk=chunk, read=read)
    assert result.bytes_read == sum(p.stat().st_size for p in paths), result.summary()
    return result.bytes_read / 1e9 / result.seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=4)
    parser.add_argument("--file-mb", type=int, default=256)
    parser.add_argument("--chunk-mb", type=int, default=16)
    parser.add_argument("--latency-ms", type=float, default=10.0)
    parser.add_argument("--stream-mbps", type=float, default=200.0, help="one stream's bandwidth, MB/s")
    parser.add_argument("--dir", type=Path, default=None, help="where the files go (a real disk, not tmpfs)")
    parser.add_argument("--out", type=Path, default=None, help="also write the table to this file")
    args = parser.parse_args()
    chunk = args.chunk_mb * 1024 * 1024
    with tempfile.TemporaryDirectory(dir=args.dir or ROOT, prefix=".prefetch-bench-") as folder:
        paths = make_files(Path(folder), args.files, args.file_mb * 1024 * 1024)
        total_gb = sum(p.stat().st_size for p in paths) / 1e9
        slow = network_read(args.latency_ms / 1e3, args.stream_mbps * 1e6)
        rows = []
        for n in READERS:
            modelled = run(paths, n, chunk, slow)  # its bytes come from the page cache, its waits are slept
            evict(paths)
            disk = run(paths, n, chunk, os_read)
            rows.append((n, modelled, disk))
            print(f"{n:2d} readers: modelled network storage {modelled:.3f} GB/s, local disk (evicted) {disk:.3f} GB/s",
                  file=sys.stderr)
    lines = [f"{args.files} files, {total_gb:.2f} GB in all, {args.chunk_mb} MB chunks; modelled storage: "
             f"{args.latency_ms:g} ms a read + {args.stream_mbps:g} MB/s a stream; {platform.node()}, "
             f"{os.cpu_count()} CPUs, Python {platform.python_version()}", "",
             "| readers | modelled network storage, GB/s | x one reader | local disk, evicted, GB/s | x one reader |",
             "|---|---|---|---|---|"]
    lines += [f"| {n} | {m:.3f} | {m / rows[0][1]:.2f} | {d:.3f} | {d / rows[0][2]:.2f} |" for n, m, d in rows]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
