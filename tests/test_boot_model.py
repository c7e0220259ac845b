"""bench/boot_model.py's arithmetic: the storage model shares its total bandwidth and caps each stream, and the
first job's loaders wait for their files. Its figures come from running it (docs/performance.md); this checks
only that what it adds up is what its docstring says."""

from __future__ import annotations

import sys

from ltx2_worker.settings import ROOT

sys.path.insert(0, str(ROOT / "bench"))

import boot_model  # noqa: E402


def test_a_read_pays_the_latency_and_one_streams_bandwidth():
    storage = boot_model.Storage(latency_s=0.01, stream_bps=200e6, total_bps=10e9, scale=1, clock=boot_model.Clock(1))
    assert abs(storage.finish_at(0.0, 64_000_000) - (0.01 + 0.32)) < 1e-9


def test_reads_at_once_share_the_total_bandwidth():
    storage = boot_model.Storage(latency_s=0.0, stream_bps=1e9, total_bps=1e9, scale=1, clock=boot_model.Clock(1))
    ends = [storage.finish_at(0.0, 500_000_000) for _ in range(4)]
    assert [round(e, 6) for e in ends] == [0.5, 1.0, 1.5, 2.0]  # 2 GB through 1 GB/s: 2 s, whatever the streams


def test_the_scale_makes_a_small_read_stand_for_a_large_one():
    storage = boot_model.Storage(latency_s=0.0, stream_bps=1e9, total_bps=1e9, scale=64, clock=boot_model.Clock(1))
    assert abs(storage.finish_at(3.0, 1_000_000) - 3.064) < 1e-9


def test_a_loader_waits_for_its_file_and_compute_nodes_do_not():
    nodes = [("text_encoder", 2.0), ("positive_prompt", 1.0), ("checkpoint", 4.0), ("sampler_stage1", 9.0),
             ("upsampler", 0.5), ("lora", 0.5), ("video_decode", 2.0)]
    ready = {"text_encoder": 5.0, "checkpoint": 30.0, "upscaler": 31.0, "lora": 35.0}
    # text encoder at 5 -> 7, prompt -> 8; checkpoint waits until 30 -> 34, stage 1 -> 43, the rest is there
    assert boot_model.job_end(nodes, start=1.0, ready=ready) == 46.0
    assert boot_model.job_end(nodes, start=1.0, ready={}) == 1.0 + sum(s for _, s in nodes)


def test_the_model_reads_the_manifests_default_files():
    sizes = boot_model.manifest_sizes()
    assert set(sizes) == {"checkpoint", "text_encoder", "lora", "upscaler"}  # not the optional distilled one
    assert 45.0e9 < sum(sizes.values()) < 45.4e9


class Counting:
    """A storage that only counts the bytes charged to it."""

    def __init__(self):
        self.charged = 0

    def wait(self, nbytes: int) -> None:
        self.charged += nbytes


def test_each_read_is_charged_to_the_storage_of_the_file_it_reads(tmp_path):
    """The prefetch opens a file per chunk, so one descriptor number comes back for another file: each read must
    be charged by the file it reads, not by the first file that descriptor number had."""
    import os

    storages = {"text_encoder": Counting(), "checkpoint": Counting()}
    read = boot_model.modelled_read(storages)
    buffer = memoryview(bytearray(1000))
    for role, size in (("text_encoder", 300), ("checkpoint", 700), ("checkpoint", 700)):
        path = tmp_path / f"{role}.safetensors"
        path.write_bytes(b"x" * size)
        fd = os.open(path, os.O_RDONLY)
        try:
            assert read(fd, buffer, 0) == size
        finally:
            os.close(fd)  # the next open gets this number again
    assert storages["text_encoder"].charged == 300 and storages["checkpoint"].charged == 1400
