"""A worker that does not look in ComfyUI's output folder cannot remove the MP4s it delivered: it says so, once
at start and once when a job's file is not where it looks, naming the setting to fix; the jobs still return
their video (fetched through /view). Against the protocol ComfyUI on loopback, writing to a folder of its own.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from ltx2_worker.output import output_dir_from_argv
from ltx2_worker.worker import Worker, build_handler

from comfy_server import ProtocolComfy
from helpers import decode_video_field, files_under, free_port, loopback_env, loopback_settings

SMALL = {"prompt": "a lighthouse at dusk", "width": 512, "height": 288, "frame_count": 9, "seed": 1}


def warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


@pytest.fixture
def comfy(tmp_path):
    with ProtocolComfy(output_dir=tmp_path / "comfyui" / "output") as server:
        yield server


def test_another_output_folder_is_named_at_start_and_after_the_first_job(comfy, tmp_path, caplog):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    worker = Worker(loopback_settings(comfy.url, elsewhere, tmp_path))
    with caplog.at_level(logging.INFO):
        at_start = worker.check_output_folder()
        outs = [worker.handle({"id": f"job-{i}", "input": SMALL}) for i in range(2)]
    for out in outs:
        assert "error" not in out, out
        assert decode_video_field(out)["width"] == 512
    start, job = warnings(caplog)  # one at start, one for the first job; the second job adds none
    assert start == f"ComfyUI's output folder: {at_start}"
    assert f"ComfyUI writes its output files to {comfy.output_dir} (its command line)" in start
    assert f"removes them from {elsewhere} (COMFY_OUTPUT_DIR)" in start
    assert "set COMFY_OUTPUT_DIR to the folder ComfyUI writes to" in start
    assert f"but {elsewhere / 'ltx2' / 'job-0-'}" in job and "_00001_.mp4 does not exist" in job
    assert f"looks for ComfyUI's output files in {elsewhere} (COMFY_OUTPUT_DIR)" in job
    assert "set COMFY_OUTPUT_DIR" in job and "once per worker process" in job
    assert len(files_under(comfy.output_dir)) == 2, "the leftovers the warnings are about"


def test_handler_start_without_comfyui_dir_names_the_missing_folder(comfy, tmp_path, caplog, monkeypatch):
    """No COMFY_OUTPUT_DIR and a COMFYUI_DIR that is not ComfyUI's (here: missing), through handler start-up;
    ComfyUI was started by hand in its own folder, so its command line does not say where it writes."""
    comfy.argv = ["main.py", "--listen", "127.0.0.1"]
    not_comfy = tmp_path / "not-comfyui"
    env = loopback_env(comfy.url, tmp_path / "unused", tmp_path, COMFY_OUTPUT_DIR="", COMFYUI_DIR=str(not_comfy))
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with caplog.at_level(logging.INFO):
        handler = build_handler()
        out = handler({"id": "job-x", "input": SMALL})
    assert "error" not in out, out
    assert decode_video_field(out)["frames"] == 9
    start, cache, job = warnings(caplog)  # the hand-started ComfyUI also runs with its own cache: said once
    assert "lacks what ltx2_worker.launch gives it: --cache-classic" in cache
    assert f"{not_comfy / 'output'}, does not exist (COMFYUI_DIR ({not_comfy}) + /output, as COMFY_OUTPUT_DIR is " \
           "empty)" in start
    assert f"but {not_comfy / 'output' / 'ltx2' / 'job-x-'}" in job and "COMFYUI_DIR" in job


def test_the_right_folder_gives_no_warning(comfy, tmp_path, caplog):
    worker = Worker(loopback_settings(comfy.url, comfy.output_dir, tmp_path))
    with caplog.at_level(logging.INFO):
        assert worker.check_output_folder() is None
        out = worker.handle({"id": "ok", "input": SMALL})
    assert "error" not in out, out
    assert warnings(caplog) == []
    assert files_under(comfy.output_dir) == []


def test_a_comfyui_not_answering_yet_is_judged_by_the_folder_alone(tmp_path, caplog):
    folder = tmp_path / "output"
    folder.mkdir()
    worker = Worker(loopback_settings(f"http://127.0.0.1:{free_port()}", folder, tmp_path))
    assert worker.check_output_folder() is None
    assert "does not exist" in Worker(loopback_settings(worker.settings.comfy_url, tmp_path / "no", tmp_path)) \
        .check_output_folder()


@pytest.mark.parametrize("argv,expected", [
    (["/comfyui/main.py", "--listen", "0.0.0.0", "--output-directory", "/data/out"], "/data/out"),
    (["main.py", "--output-directory=/data/out", "--cpu"], "/data/out"),
    (["main.py", "--output-directory", "/a", "--output-directory", "/b"], "/b"),  # argparse: the last one wins
    (["main.py", "--base-directory", "/srv/comfy"], "/srv/comfy/output"),
    (["main.py", "--base-directory", "/srv/comfy", "--output-directory", "/o"], "/o"),  # it overrides the base
    (["/opt/ComfyUI/main.py", "--listen", "127.0.0.1"], "/opt/ComfyUI/output"),  # folder_paths.py's default
    (["main.py", "--listen", "127.0.0.1"], None),  # relative to ComfyUI's working directory: unknown here
    (["main.py", "--output-directory", "out"], None),
    ([], None),
])
def test_comfyuis_output_folder_from_its_command_line(argv, expected):
    assert output_dir_from_argv(argv) == (Path(expected) if expected else None)
