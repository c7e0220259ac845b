"""The list of files ComfyUI's start reads: written inside ComfyUI by the ltx2_start_files module, read by the
worker's prefetch (ltx2_worker/start_files.py) before the models."""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import subprocess
import sys
import threading
import time
import types
from pathlib import Path

import pytest
from test_prefetch import cli_env, files_in_memory, provisioned, run_prefetch

from ltx2_worker.settings import ROOT, load_settings
from ltx2_worker.start_files import (
    FOLDER,
    PAGE,
    WarmHost,
    comfy_roots,
    list_path,
    listed_files,
    listed_pages,
    pages_path,
    record_pages,
    resident_ranges,
)

from hf_server import write

NODE = ROOT / "ltx2_worker" / "comfy_nodes" / "ltx2_start_files.py"


def node_module():
    spec = importlib.util.spec_from_file_location("ltx2_start_files_under_test", NODE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # LTX2_START_FILES is unset here: importing records nothing
    return module


def test_the_node_lists_each_modules_bytecode_else_its_source_each_once_in_import_order(tmp_path):
    node = node_module()
    pyc = write(tmp_path / "pkg" / "__pycache__" / "a.cpython-311.pyc", b"b" * 10)
    source_a = write(tmp_path / "pkg" / "a.py", b"s")
    source_only = write(tmp_path / "pkg" / "b.py", b"s" * 3)
    extension = write(tmp_path / "pkg" / "_c.cpython-311-x86_64-linux-gnu.so", b"e" * 50)
    modules = [types.SimpleNamespace(__file__=str(source_a), __cached__=str(pyc)),  # bytecode read, source stat'ed
               types.SimpleNamespace(__file__=str(source_only), __cached__=str(tmp_path / "gone.pyc")),
               types.SimpleNamespace(__file__=str(extension)),
               types.SimpleNamespace(__file__=None), types.SimpleNamespace(),  # namespace and built-in modules
               types.SimpleNamespace(__file__=str(tmp_path / "deleted.py")),  # a generated module, gone since
               types.SimpleNamespace(__file__=str(source_a), __cached__=str(pyc))]  # an alias: listed once
    assert node.module_files(modules) == [str(pyc), str(source_only), str(extension)]


def test_the_list_is_replaced_whole_and_only_when_it_changed(tmp_path, monkeypatch):
    node = node_module()
    path = tmp_path / "volume" / FOLDER / "list.txt"
    assert node.write_if_changed(str(path), ["/a", "/b"]) is True
    assert path.read_text() == "/a\n/b\n"
    assert node.write_if_changed(str(path), ["/a", "/b"]) is False

    def fails(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(node.os, "replace", fails)
    with pytest.raises(OSError):
        node.write_if_changed(str(path), ["/c"])
    assert path.read_text() == "/a\n/b\n"  # the old list, never half of a new one
    assert sorted(p.name for p in path.parent.iterdir()) == ["list.txt"]  # and no temporary file left


def test_inside_a_python_the_node_lists_that_pythons_own_start(tmp_path):
    """Run as ComfyUI runs it: imported by a Python with LTX2_START_FILES set; the list names the files that
    Python really read (a module's bytecode, a mapped extension) and nothing of an import it never made."""
    out = tmp_path / "volume" / FOLDER / "comfy-start-files.txt"
    code = ("import importlib.util, json, decimal; "
            f"spec = importlib.util.spec_from_file_location('n', {str(NODE)!r}); "
            "m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)")
    env = {**os.environ, "LTX2_START_FILES": str(out)}
    subprocess.run([sys.executable, "-c", code], env=env, check=True, timeout=60)
    listed = out.read_text().splitlines()
    import json

    assert json.__cached__ in listed or json.__file__ in listed
    assert all(os.path.isabs(p) for p in listed) and len(listed) == len(set(listed))
    assert not any("/email/" in p for p in listed)  # never imported by that Python
    unset = subprocess.run([sys.executable, "-c", code], env={k: v for k, v in os.environ.items()
                                                                if k != "LTX2_START_FILES"},
                           capture_output=True, text=True, timeout=60)
    assert unset.returncode == 0 and "ltx2_start_files" not in unset.stderr


def test_the_worker_reads_the_listed_files_in_order_each_once(tmp_path):
    a = write(tmp_path / "img" / "a.pyc", b"a")
    b = write(tmp_path / "img" / "libb.so", b"b" * 10)
    (tmp_path / "img" / "liblink.so").symlink_to(b)
    listing = tmp_path / "list.txt"
    listing.write_text(f"{b}\n{a}\nrelative/c.pyc\n{tmp_path / 'img' / 'gone.pyc'}\n{tmp_path / 'img'}\n"
                       f"{tmp_path / 'img' / 'liblink.so'}\n{a}\n")
    assert listed_files(listing) == [b, a]  # a folder, a missing file, a relative line: skipped
    assert listed_files(tmp_path / "no-list.txt") == []
    with open(listing, "r+b") as f:
        f.truncate(17 * 1024 * 1024)  # not a list the module writes
    assert listed_files(listing) == []


def test_each_comfyui_python_and_tree_keeps_its_own_list_on_the_volume(tmp_path):
    base = {"NETWORK_VOLUME_PATH": str(tmp_path / "vol"), "COMFY_PYTHON": sys.executable}
    one = list_path(load_settings(env={**base, "COMFYUI_DIR": "/comfyui"}))
    assert one.parent == tmp_path / "vol" / FOLDER and one.name.startswith("comfy-start-files-")
    assert list_path(load_settings(env={**base, "COMFYUI_DIR": "/comfyui"})) == one
    assert list_path(load_settings(env={**base, "COMFYUI_DIR": "/other"})) != one


@pytest.mark.parametrize("libraries", [True, False])
def test_the_prefetch_reads_the_listed_start_files_before_the_models(tmp_path, libraries):
    volume = provisioned(tmp_path)
    env = cli_env(tmp_path, volume, PREFETCH_HEADROOM_GB="0", PREFETCH_READERS="1",
                  PREFETCH_LIBRARIES=str(libraries).lower(), COMFY_PYTHON=sys.executable,
                  COMFYUI_DIR=str(tmp_path / "ComfyUI"))
    settings = load_settings(env=env)
    started = [write(tmp_path / "img" / f"m{i}.pyc", os.urandom(1000)) for i in range(5)]
    listing = list_path(settings)
    listing.parent.mkdir(parents=True)
    listing.write_text("".join(f"{p}\n" for p in started))
    result = run_prefetch(env)
    done = files_in_memory(result)
    assert result.returncode == 0
    if libraries:
        assert done[0] == "libraries" and done[1:3] == ["text_encoder", "checkpoint"], result.stderr
        assert f"libraries first: 5 files, 0.00 GB: what ComfyUI's last start read, listed in {listing}" \
            in result.stderr
    else:
        assert "libraries" not in done and "listed in" not in result.stderr


def test_comfyui_is_told_where_to_list_its_start_only_where_the_list_will_be_read(tmp_path, monkeypatch):
    """true: always; auto: where the text encoder and the checkpoint come from RunPod's model cache (the prefetch
    reads the list first only there); false: never, and a stale variable from the parent is not passed on."""
    from ltx2_worker import launch

    monkeypatch.setenv("LTX2_START_FILES", "/stale/from/the/parent")
    settings = load_settings(env={"NETWORK_VOLUME_PATH": str(tmp_path), "PREFETCH_LIBRARIES": "true"})
    assert launch.comfy_env(settings, set())["LTX2_START_FILES"] == str(list_path(settings))
    auto = load_settings(env={"NETWORK_VOLUME_PATH": str(tmp_path), "PREFETCH_LIBRARIES": "auto"})
    assert auto.prefetch_libraries is None
    assert launch.comfy_env(auto, {"text_encoder", "checkpoint"})["LTX2_START_FILES"] == str(list_path(settings))
    for network_volume in (set(), {"checkpoint", "lora", "upscaler"}):  # the text encoder from the volume too
        assert "LTX2_START_FILES" not in launch.comfy_env(auto, network_volume)
    off = dataclasses.replace(settings, prefetch_libraries=False)
    assert "LTX2_START_FILES" not in launch.comfy_env(off, {"text_encoder", "checkpoint"})
    assert launch.comfy_env(off, set())["PATH"] == os.environ["PATH"]


def test_the_worker_does_not_import_the_comfyui_module():
    """It runs inside ComfyUI's Python only: the worker's side shares no code with it but the variable's name."""
    text = (ROOT / "ltx2_worker" / "start_files.py").read_text()
    assert "comfy_nodes" not in text.split('"""', 2)[2]
    assert f'ENV = "{node_module().ENV}"' in text
    assert Path(NODE).read_text().count("import ltx2_worker") == 0


def evicted(path: Path) -> Path:
    """`path` written out and dropped from the page cache, as a fresh host has it."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fdatasync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)
    if resident_ranges(path):
        pytest.skip(f"{path.parent}'s file system keeps files in memory (tmpfs): no cold file to read")
    return path


def touch(path: Path, pages) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        for page in pages:
            os.pread(fd, PAGE, page * PAGE)
    finally:
        os.close(fd)


@pytest.fixture
def cold_python(tmp_path):
    """A stand-in for ComfyUI's Python whose sys.path holds a folder of cold files, some then read: a library of
    4,096 pages (pages 3 and 100-102 read), a package's METADATA (read), a module's source (not read), and the
    volume inside that folder with a model file read whole."""
    site = tmp_path / "img" / "site"
    library = evicted(write(site / "libfake.so.1", os.urandom(4096 * PAGE)))
    metadata = evicted(write(site / "pkg-1.0.dist-info" / "METADATA", b"Name: pkg\n" * 400))
    source = evicted(write(site / "pkg" / "mod.py", b"x = 1\n" * 1000))
    model = evicted(write(site / "vol" / "models" / "model.bin", os.urandom(64 * PAGE)))
    touch(library, [3, 100, 101, 102])
    metadata.read_bytes()
    model.read_bytes()
    python = f"env PYTHONPATH={site} PYTHONPYCACHEPREFIX={tmp_path / 'pyc'} {sys.executable} -S"
    (tmp_path / "pyc").mkdir()
    return types.SimpleNamespace(python=python, site=site, library=library, metadata=metadata, source=source,
                                 volume=site / "vol", comfy_dir=tmp_path / "ComfyUI")


def covered(spans, offset):
    return any(a <= offset < b for a, b in spans)


def test_the_pages_of_a_file_in_memory_are_found_and_nothing_far_from_them(tmp_path):
    library = evicted(write(tmp_path / "libfake.so.1", os.urandom(4096 * PAGE)))
    assert resident_ranges(library) == []
    touch(library, [3, 100, 101, 102])
    spans = resident_ranges(library)
    assert all(covered(spans, page * PAGE) for page in (3, 100, 101, 102)), spans
    # the kernel reads ahead of a read (128 KB by default), never megabytes
    assert not any(covered(spans, page * PAGE) for page in (1000, 2000, 4095)), spans
    assert sum(b - a for a, b in spans) <= 1 << 20
    assert resident_ranges(tmp_path / "none") == [] and resident_ranges(write(tmp_path / "empty", b"")) == []


def test_comfyuis_folders_are_its_pythons_path_its_bytecode_cache_and_its_tree_none_inside_another(tmp_path,
                                                                                                 cold_python):
    (tmp_path / "ComfyUI").mkdir()
    settings = load_settings(env={"NETWORK_VOLUME_PATH": str(cold_python.volume), "COMFY_PYTHON": cold_python.python,
                                  "COMFYUI_DIR": str(tmp_path / "ComfyUI")})
    roots = comfy_roots(settings)
    assert cold_python.site in roots and tmp_path / "pyc" in roots and tmp_path / "ComfyUI" in roots
    assert not any(p != q and p.is_relative_to(q) for p in roots for q in roots)
    assert ROOT not in roots  # "" in its sys.path is ComfyUI's tree, not the worker's current folder


def test_the_pages_read_are_listed_on_the_volume_and_read_back_not_the_volumes_own(tmp_path, cold_python):
    settings = load_settings(env={"NETWORK_VOLUME_PATH": str(cold_python.volume), "COMFY_PYTHON": cold_python.python,
                                  "COMFYUI_DIR": str(tmp_path / "ComfyUI")})
    (tmp_path / "ComfyUI").mkdir()
    listed = record_pages(settings)
    path = pages_path(settings)
    assert path.parent == list_path(settings).parent and path.name.startswith("comfy-start-pages-")
    found = dict(listed_pages(path))
    spans = found[cold_python.library]
    assert len(spans) == 1 and spans[0][0] <= 3 * PAGE < 103 * PAGE <= spans[0][1] < 1000 * PAGE  # MERGE_GAP
    assert found[cold_python.metadata] == [(0, cold_python.metadata.stat().st_size)]
    assert cold_python.source not in found  # never read
    assert not any(p.is_relative_to(cold_python.volume) for p in found)  # the models are the prefetch's own
    assert listed == sum(b - a for spans in found.values() for a, b in spans)  # its stdlib's pages too
    assert not list(path.parent.glob("*.tmp"))  # written through a temporary name


def test_a_host_with_more_of_comfyuis_files_in_memory_than_a_start_reads_lists_nothing(tmp_path, cold_python,
                                                                                      monkeypatch):
    import ltx2_worker.start_files as start_files

    settings = load_settings(env={"NETWORK_VOLUME_PATH": str(cold_python.volume), "COMFY_PYTHON": cold_python.python,
                                  "COMFYUI_DIR": str(tmp_path / "ComfyUI")})
    (tmp_path / "ComfyUI").mkdir()
    monkeypatch.setattr(start_files, "MAX_LISTED_BYTES", 4 * PAGE)
    with pytest.raises(WarmHost, match="GB of ComfyUI's files are in memory, more than a fresh start reads"):
        record_pages(settings)
    assert not pages_path(settings).exists()


def test_a_pages_list_is_read_with_each_range_cut_to_the_file_and_bad_lines_skipped(tmp_path):
    small = write(tmp_path / "img" / "libsmall.so", b"s" * 10_000)
    other = write(tmp_path / "img" / "libother.so.2", b"o" * 10_000)
    listing = tmp_path / "pages.txt"
    listing.write_text(f"{small}\t0-4096,8192-20000,30000-40000\n"  # the last is past the end now
                       f"relative/lib.so\t0-10\n{tmp_path / 'img' / 'gone.so'}\t0-10\n{other}\tx-y\n"
                       f"{other}\t100\n{tmp_path / 'img'}\t0-10\n{small}\t0-10\n")
    assert listed_pages(listing) == [(small, [(0, 4096), (8192, 10_000)])]
    assert listed_pages(tmp_path / "none.txt") == []


def test_the_prefetch_reads_only_the_listed_ranges_of_a_file(tmp_path):
    from ltx2_worker.prefetch import os_read, prefetch

    library = write(tmp_path / "libbig.so", os.urandom(1 << 20))
    model = write(tmp_path / "model.bin", os.urandom(1 << 16))
    reads = []

    def recording(fd, buffer, offset):
        n = os_read(fd, buffer, offset)
        reads.append((os.readlink(f"/proc/self/fd/{fd}"), offset, n))
        return n

    result = prefetch([("libraries", library), ("model", model)], readers=1, budget=1 << 30, timeout_s=30,
                      chunk=1 << 14, read=recording, only={library: [(0, 4096), (1 << 19, (1 << 19) + 40_000)]})
    from_library = [(offset, n) for name, offset, n in reads if name == str(library)]
    assert from_library == [(0, 4096), (1 << 19, 1 << 14), ((1 << 19) + (1 << 14), 1 << 14),
                            ((1 << 19) + (2 << 14), 40_000 - (2 << 14))]
    assert sum(n for name, _, n in reads if name == str(model)) == 1 << 16  # a file not in `only`: whole
    assert result.bytes_read == 4096 + 40_000 + (1 << 16) and "skipped" not in result.summary()
    short = prefetch([("libraries", library)], readers=1, budget=5000, timeout_s=30, read=os_read,
                     only={library: [(0, 4096), (8192, 12288)]})
    assert short.bytes_read == 5000 and (short.files[0].wanted, short.files[0].planned) == (8192, 5000)
    assert "skipped: libraries 0.00 of 0.00 GB (memory budget)" in short.summary()  # short of its ranges


def test_the_prefetch_reads_the_listed_pages_with_the_start_files_before_the_models(tmp_path):
    volume = provisioned(tmp_path)
    env = cli_env(tmp_path, volume, PREFETCH_HEADROOM_GB="0", PREFETCH_READERS="2", PREFETCH_LIBRARIES="true",
                  COMFY_PYTHON=sys.executable, COMFYUI_DIR=str(tmp_path / "ComfyUI"),
                  PREFETCH_YIELD_TO_COMFY="true", COMFY_URL="http://127.0.0.1:9")
    settings = load_settings(env=env)
    library = write(tmp_path / "img" / "libcuda-ish.so", os.urandom(1 << 20))
    module = write(tmp_path / "img" / "m.pyc", os.urandom(1000))
    list_path(settings).parent.mkdir(parents=True)
    list_path(settings).write_text(f"{module}\n")
    pages_path(settings).write_text(f"{library}\t0-65536,524288-655360\n{module}\t0-10\n")  # a listed module: whole
    result = run_prefetch(env)
    assert result.returncode == 0
    assert files_in_memory(result)[:3] == ["libraries", "text_encoder", "checkpoint"], result.stderr
    assert (f"libraries first: 2 files, 0.00 GB: what ComfyUI's last start read, listed in {list_path(settings)}, "
            f"and the pages its start and first job read, listed in {pages_path(settings)}") in result.stderr
    line = next(ln for ln in result.stderr.splitlines() if "prefetch: libraries: read " in ln)
    # ComfyUI's own reads go at once with every reader, not one reader yielding to ComfyUI's start
    assert "of 2 files" in line and "with 2 readers" in line and "one until" not in line, line
    assert "libraries: read 0.00 GB" in line and f"{1000 + 65536 + 131072}" not in line


@pytest.fixture
def listing_worker_settings(tmp_path, cold_python):
    """Settings of a worker with PREFETCH_LIBRARIES beside the protocol ComfyUI, its volume in tmp_path/vol, its
    ComfyUI's Python cold_python's."""
    from comfy_server import ProtocolComfy
    from helpers import loopback_settings

    comfy_dir = tmp_path / "comfyui"
    comfy = ProtocolComfy(output_dir=comfy_dir / "output", input_dir=comfy_dir / "input").start()
    try:
        yield loopback_settings(comfy.url, comfy_dir / "output", tmp_path, COMFYUI_DIR=str(comfy_dir),
                                NETWORK_VOLUME_PATH=str(tmp_path / "vol"), PREFETCH_LIBRARIES="true",
                                COMFY_PYTHON=cold_python.python)
    finally:
        comfy.stop()


JOB = {"prompt": "a lighthouse", "width": 512, "height": 288, "frame_count": 9, "seed": 1}


def listed_soon(path: Path) -> dict:
    """The pages list at `path` once the worker's listing thread has ended (5 s at most)."""
    listing_ended()
    return dict(listed_pages(path))


def listing_ended() -> None:
    """Wait (5 s at most) for the worker's listing thread, whether it lists or decides not to."""
    for thread in [t for t in threading.enumerate() if t.name == "list-start-pages"]:
        thread.join(timeout=5)
        assert not thread.is_alive()


def test_after_its_first_job_the_worker_lists_the_pages_comfyuis_start_read(listing_worker_settings, cold_python):
    from ltx2_worker.worker import Worker

    settings = listing_worker_settings
    worker = Worker(settings)
    assert "error" in worker.handle({"id": "bad", "input": {**JOB, "width": 7}})
    assert not pages_path(settings).exists()  # a failed job lists nothing
    assert "video" in worker.handle({"id": "one", "input": JOB})
    assert cold_python.library in listed_soon(pages_path(settings))
    pages_path(settings).unlink()
    assert "video" in worker.handle({"id": "two", "input": JOB})
    listing_ended()
    assert not pages_path(settings).exists()  # once per worker
    off = Worker(dataclasses.replace(settings, prefetch_libraries=False))
    assert "video" in off.handle({"id": "three", "input": JOB})
    listing_ended()
    assert not pages_path(settings).exists()


def test_on_auto_the_worker_lists_the_pages_only_where_the_models_come_from_the_model_cache(
        listing_worker_settings, cold_python, tmp_path, monkeypatch):
    """Where the prefetch would read the list first: the text encoder and the checkpoint on the image's disk."""
    from test_model_cache import every_model_cached
    from test_provision import make_config

    from ltx2_worker.worker import Worker

    monkeypatch.setenv("LTX2_CONFIG", str(make_config(tmp_path)))  # the manifest the cache's files match
    auto = dataclasses.replace(listing_worker_settings, prefetch_libraries=None)
    assert "video" in Worker(auto).handle({"id": "volume", "input": JOB})
    listing_ended()
    assert not pages_path(auto).exists()  # the models on the network volume: the list would never be read
    cache = tmp_path / "cache"
    every_model_cached(cache)
    cached = dataclasses.replace(auto, model_cache_path=cache)
    assert "video" in Worker(cached).handle({"id": "cache", "input": JOB})
    assert cold_python.library in listed_soon(pages_path(cached))


def test_a_pages_list_that_cannot_be_written_costs_a_warning_not_the_job(listing_worker_settings, caplog):
    import logging

    from ltx2_worker.worker import Worker

    settings = listing_worker_settings
    write(pages_path(settings).parent, b"a file where the worker's folder goes")  # the list cannot be written
    with caplog.at_level(logging.WARNING, logger="ltx2_worker.worker"):
        out = Worker(settings).handle({"id": "one", "input": JOB})
        for _ in range(100):
            if any("could not list the pages of ComfyUI's files" in r.getMessage() for r in caplog.records):
                break
            time.sleep(0.05)
    assert "video" in out
    warned = [r.getMessage() for r in caplog.records if "could not list the pages of ComfyUI's files" in r.getMessage()]
    assert warned and "FileExistsError" in warned[0] and not any(r.exc_info for r in caplog.records), warned
