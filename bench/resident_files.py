"""Which files under some folders have pages in the page cache, against the worker's start lists: what a start
read that the lists do not name.

After a start from storage (bench/gpu_clip.py --from-storage evicts the image's folders first), the pages in
memory under those folders are what the start read: the prefetch's (the lists), ComfyUI's and the handler's own.
Why: with the lists read first ComfyUI still read 0.07 GB itself on the H100 host and its main thread waited 8-9 s
on pages being read (bench/comfy_start_waits.py); this names those files. Uses mincore(2) (start_files.resident_ranges).

    python bench/resident_files.py --volume /tmp/vol --roots /opt/venv,/comfyui --json /tmp/resident.json
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from ltx2_worker.start_files import (  # noqa: E402
    FOLDER,
    MERGE_GAP,
    listed_files,
    listed_pages,
    merged,
    pages_text,
    resident_ranges,
)


def covered(spans: list[tuple[int, int]], listed: list[tuple[int, int]]) -> int:
    """Bytes of `spans` outside every range of `listed`."""
    outside = 0
    for a, b in spans:
        inside = sum(max(0, min(b, y) - max(a, x)) for x, y in listed)
        outside += (b - a) - inside
    return outside


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--volume", type=Path, required=True, help="holds .ltx2-worker/ with the start lists")
    p.add_argument("--roots", required=True, help="comma-separated folders to scan")
    p.add_argument("--top", type=int, default=40)
    p.add_argument("--json", type=Path)
    p.add_argument("--write-pages", type=Path, help="write the listed pages and every unlisted resident range here, "
                   "in the pages list's format (a trial of listing all a start read)")
    args = p.parse_args()
    folder = args.volume / FOLDER
    modules = set()
    for lst in folder.glob("comfy-start-files-*.txt"):
        modules.update(str(f) for f in listed_files(lst))
    pages = {}
    for lst in folder.glob("comfy-start-pages-*.txt"):
        pages.update({str(path): spans for path, spans in listed_pages(lst)})
    unlisted: dict[str, int] = {}
    union = {path: list(spans) for path, spans in pages.items()}
    kinds: collections.Counter = collections.Counter()
    total = 0
    for root in args.roots.split(","):
        for dirpath, _, names in os.walk(root):
            for name in names:
                path = os.path.join(dirpath, name)
                if os.path.islink(path) or not os.path.isfile(path):
                    continue
                spans = resident_ranges(path)
                if not spans:
                    continue
                size = sum(b - a for a, b in spans)
                total += size
                real = os.path.realpath(path)
                if real in modules or path in modules:
                    continue
                extra = covered(spans, pages.get(real, pages.get(path, [])))
                if extra:
                    unlisted[path] = extra
                    union[real] = merged(union.get(real, []) + spans, MERGE_GAP)
                    suffix = Path(name).suffix or name
                    kinds[".so" if ".so" in name else suffix] += extra
    top = sorted(unlisted.items(), key=lambda kv: -kv[1])[:args.top]
    summary = {"resident_gb": round(total / 1e9, 3), "unlisted_gb": round(sum(unlisted.values()) / 1e9, 3),
               "unlisted_files": len(unlisted), "by_kind_mb": {k: round(v / 1e6, 1) for k, v in kinds.most_common(15)},
               "top_mb": [[path, round(n / 1e6, 2)] for path, n in top]}
    print(json.dumps(summary, indent=1))
    if args.json:
        args.json.write_text(json.dumps({**summary, "unlisted": unlisted}))
    if args.write_pages:
        args.write_pages.write_text(pages_text(union))
    return 0


if __name__ == "__main__":
    sys.exit(main())
