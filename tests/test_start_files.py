"""The list of files ComfyUI's start reads: written inside ComfyUI by the ltx2_start_files module, read by the
worker's prefetch (ltx2_worker/start_files.py) before the models."""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import subprocess
import sys
import types
from pathlib import Path

import pytest
from test_prefetch import cli_env, files_in_memory, provisioned, run_prefetch

from ltx2_worker.settings import ROOT, load_settings
from ltx2_worker.start_files import FOLDER, list_path, listed_files

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


def test_comfyui_is_told_where_to_list_its_start_only_with_prefetch_libraries(tmp_path, monkeypatch):
    from ltx2_worker import launch

    monkeypatch.setenv("LTX2_START_FILES", "/stale/from/the/parent")
    settings = load_settings(env={"NETWORK_VOLUME_PATH": str(tmp_path), "PREFETCH_LIBRARIES": "true"})
    assert launch.comfy_env(settings)["LTX2_START_FILES"] == str(list_path(settings))
    off = dataclasses.replace(settings, prefetch_libraries=False)
    assert "LTX2_START_FILES" not in launch.comfy_env(off)
    assert launch.comfy_env(off)["PATH"] == os.environ["PATH"]


def test_the_worker_does_not_import_the_comfyui_module():
    """It runs inside ComfyUI's Python only: the worker's side shares no code with it but the variable's name."""
    text = (ROOT / "ltx2_worker" / "start_files.py").read_text()
    assert "comfy_nodes" not in text.split('"""', 2)[2]
    assert f'ENV = "{node_module().ENV}"' in text
    assert Path(NODE).read_text().count("import ltx2_worker") == 0
