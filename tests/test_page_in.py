"""PREFETCH_PAGE_IN: the prefetch's reader that has the kernel fill a mapping (madvise MADV_POPULATE_READ) instead
of copying every byte into a buffer, on this machine's real kernel and file system."""

from __future__ import annotations

import logging
import mmap
import os
import re

from test_prefetch import cli_env, files_in_memory, provisioned, run_prefetch, shrinking
from test_start_files import evicted

from ltx2_worker import prefetch
from ltx2_worker.prefetch import page_in
from ltx2_worker.start_files import resident_ranges

from hf_server import write

PAGE = mmap.PAGESIZE


def covered(ranges: list[tuple[int, int]], start: int, end: int) -> bool:
    return any(a <= start and end <= b for a, b in ranges)


def zeros(n: int) -> memoryview:
    return memoryview(bytearray(n))


def test_a_cold_range_is_put_in_the_page_cache_and_nothing_is_copied(tmp_path):
    path = evicted(write(tmp_path / "model.bin", os.urandom(1024 * PAGE)))
    buffer = zeros(64 * PAGE)
    fd = os.open(path, os.O_RDONLY)
    try:
        assert page_in(fd, buffer, 512 * PAGE + 100) == 64 * PAGE  # an offset off a page boundary too
    finally:
        os.close(fd)
    assert covered(resident_ranges(path), 512 * PAGE + 100, 576 * PAGE + 100), resident_ranges(path)
    assert not any(buffer), "the bytes were copied into the buffer"


def test_the_files_end_is_its_end_as_with_a_read(tmp_path):
    path = write(tmp_path / "short.bin", os.urandom(10 * PAGE + 5))
    fd = os.open(path, os.O_RDONLY)
    try:
        assert page_in(fd, zeros(8 * PAGE), 8 * PAGE) == 2 * PAGE + 5
        assert page_in(fd, zeros(8 * PAGE), 10 * PAGE + 5) == 0
        assert page_in(fd, zeros(8 * PAGE), 20 * PAGE) == 0
    finally:
        os.close(fd)


def test_a_kernel_without_the_advice_gets_the_bytes_copied_and_one_line_saying_so(tmp_path, monkeypatch, caplog):
    """An advice this kernel does not know is refused with EINVAL, as MADV_POPULATE_READ is before Linux 5.14."""
    monkeypatch.setattr(prefetch, "MADV_POPULATE_READ", 12345)
    monkeypatch.setattr(prefetch, "_page_in_works", True)
    data = os.urandom(16 * PAGE)
    path = write(tmp_path / "model.bin", data)
    fd = os.open(path, os.O_RDONLY)
    try:
        with caplog.at_level(logging.INFO, logger="ltx2_worker.prefetch"):
            first, second = zeros(8 * PAGE), zeros(8 * PAGE)
            assert page_in(fd, first, 0) == 8 * PAGE and page_in(fd, second, 8 * PAGE) == 8 * PAGE
    finally:
        os.close(fd)
    assert bytes(first) + bytes(second) == data
    said = [r.getMessage() for r in caplog.records if "cannot fill a mapping" in r.getMessage()]
    assert len(said) == 1 and "copies instead" in said[0], said


def test_a_file_that_shrinks_while_paged_in_ends_only_that_file(tmp_path):
    files = [(name, write(tmp_path / f"{name}.bin", os.urandom(size)))
             for name, size in (("text_encoder", 40 * PAGE), ("checkpoint", 80 * PAGE), ("lora", 30 * PAGE))]
    result = prefetch.prefetch(files, readers=1, budget=10**9, timeout_s=30, chunk=8 * PAGE,
                               read=shrinking(page_in, files[1][1], 10 * PAGE))
    read = {f.name: f.read for f in result.files}
    assert read == {"text_encoder": 40 * PAGE, "checkpoint": 10 * PAGE, "lora": 30 * PAGE}, read
    assert f"(shrank to {10 * PAGE} bytes while being read)" in result.summary()


def test_the_cli_pages_in_with_prefetch_page_in(tmp_path):
    volume = provisioned(tmp_path)
    on = run_prefetch(cli_env(tmp_path, volume, PREFETCH_HEADROOM_GB="0", PREFETCH_PAGE_IN="true"))
    assert on.returncode == 0 and "nothing is copied (PREFETCH_PAGE_IN)" in on.stderr, on.stderr
    assert sorted(files_in_memory(on)) == ["checkpoint", "lora", "text_encoder", "upscaler"], on.stderr
    off = run_prefetch(cli_env(tmp_path, volume, PREFETCH_HEADROOM_GB="0"))
    assert off.returncode == 0 and "PREFETCH_PAGE_IN" not in off.stderr
    for result in (on, off):  # the summary says what the readers cost, to compare the two on a real host
        summary = next(line for line in result.stderr.splitlines() if "prefetch: read " in line)
        assert re.search(r"with 8 readers, \d+\.\d s of CPU", summary), summary
