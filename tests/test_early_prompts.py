"""EARLY_PROMPTS against the protocol ComfyUI on loopback, started late as a fresh worker's ComfyUI is: a job that
arrives before ComfyUI answers has its prompts encoded by a process of its own (tests/fake_prompt_encoder.py stands
in for ComfyUI's Python running ltx2_worker/comfy_nodes/ltx2_early_prompts.py) and its graph reads them; anything
wrong with that process leaves the job to encode its prompts in ComfyUI, never failing it. The real script on a
real ComfyUI: tests/test_real_comfyui_e2e.py (the same MP4 bytes either way).
"""

from __future__ import annotations

import json
import shlex
import sys
import threading
import time
from pathlib import Path

import pytest

from ltx2_worker import worker as worker_module
from ltx2_worker.early_prompts import SCRIPT
from ltx2_worker.gpu import Gpu, profile_for
from ltx2_worker.settings import load_settings
from ltx2_worker.worker import Worker
from ltx2_worker.workflow import ENCODED_PROMPTS_NODE, Workflow

from comfy_server import ProtocolComfy
from helpers import decode_video_field, files_under, free_port, loopback_settings

H100 = Gpu("NVIDIA H100 80GB HBM3", 79.6, 9.0)
JOB = {"prompt": "a lighthouse at dusk", "width": 512, "height": 288, "frame_count": 9, "seed": 1}
ENCODER = shlex.join([sys.executable, str(Path(__file__).with_name("fake_prompt_encoder.py"))])
DEFAULT_NEGATIVE = Workflow.load().defaults()["negative_prompt"]


def early_worker(tmp_path, port, **env):
    env = {"EARLY_PROMPTS": "true", "COMFY_PYTHON": ENCODER, "COMFYUI_DIR": str(tmp_path),
           "COMFY_READY_TIMEOUT_S": "20", "COMFY_INPUT_DIR": str(tmp_path / "input"), **env}
    settings = loopback_settings(f"http://127.0.0.1:{port}", tmp_path / "output", tmp_path, **env)
    return Worker(settings, profile=profile_for(settings, H100))


def run_late(worker, port, tmp_path, job=JOB, delay=1.5):
    """The job sent before ComfyUI answers; ComfyUI answers `delay` s later. Returns (output, the server)."""
    late = ProtocolComfy(output_dir=tmp_path / "output", port=port)
    timer = threading.Timer(delay, late.start)
    timer.start()
    try:
        return worker.handle({"id": "first", "input": job}), late
    finally:
        timer.join()
        late.stop()


def conditioning_texts(comfy) -> set[str]:
    """The texts of every conditioning the server's last prompt computed."""
    return {out["text"] for outputs, _ in comfy._cache.values() for out in outputs
            if isinstance(out, dict) and out.get("type") == "CONDITIONING" and "text" in out}


def test_a_job_before_comfyui_answers_reads_the_prompts_its_encoder_wrote(tmp_path, monkeypatch):
    argv = tmp_path / "argv.json"
    monkeypatch.setenv("FAKE_ENCODER_ARGV", str(argv))
    port = free_port()
    worker = early_worker(tmp_path, port)
    out, comfy = run_late(worker, port, tmp_path)
    assert "error" not in out, out
    assert decode_video_field(out)["frames"] == 9
    graph = comfy.submitted[-1]["prompt"]
    classes = [node["class_type"] for node in graph.values()]
    assert ENCODED_PROMPTS_NODE in classes
    assert "CLIPTextEncode" not in classes and "LTX2TextEncoderLoader" not in classes
    assert conditioning_texts(comfy) == {"a lighthouse at dusk", DEFAULT_NEGATIVE}
    args = json.loads(argv.read_text())
    assert args[0] == str(SCRIPT)
    assert args[args.index("--") + 1:] == list(worker.profile.flags)  # ComfyUI's own flags, for its arg parser
    assert args[args.index("--checkpoint") + 1].endswith("ltx-2-19b-dev-fp8.safetensors")
    assert out["timings"]["early_prompts_wait"] >= 0
    assert files_under(tmp_path / "input") == []  # the conditionings and the encoder's log removed with the job


def test_a_ready_comfyui_or_a_prompt_writer_job_encodes_in_comfyui(tmp_path, monkeypatch):
    argv = tmp_path / "argv.json"
    monkeypatch.setenv("FAKE_ENCODER_ARGV", str(argv))
    comfy = ProtocolComfy(output_dir=tmp_path / "output").start()
    try:
        worker = early_worker(tmp_path, comfy.url.rsplit(":", 1)[1])
        out = worker.handle({"id": "warm", "input": JOB})
        assert "error" not in out, out
        assert "CLIPTextEncode" in [node["class_type"] for node in comfy.submitted[-1]["prompt"].values()]
    finally:
        comfy.stop()
    port = free_port()
    out, late = run_late(early_worker(tmp_path, port), port, tmp_path, {**JOB, "enhance_prompt": True})
    assert "error" not in out, out
    assert ENCODED_PROMPTS_NODE not in [node["class_type"] for node in late.submitted[-1]["prompt"].values()]
    assert not argv.exists()  # no encoder was started for either job


@pytest.mark.parametrize("mode", ["fail", "hang"])
def test_an_encoder_that_fails_or_hangs_leaves_the_job_its_usual_graph(tmp_path, monkeypatch, caplog, mode):
    monkeypatch.setenv("FAKE_ENCODER", mode)
    monkeypatch.setattr(worker_module, "EARLY_PROMPTS_WAIT_S", 1.0)
    port = free_port()
    started = time.monotonic()
    out, comfy = run_late(early_worker(tmp_path, port), port, tmp_path)
    assert "error" not in out, out
    assert time.monotonic() - started < 15
    classes = [node["class_type"] for node in comfy.submitted[-1]["prompt"].values()]
    assert ENCODED_PROMPTS_NODE not in classes and "CLIPTextEncode" in classes
    reason = "out of memory" if mode == "fail" else "still running at its deadline"
    assert any(reason in r.getMessage() and "encodes its prompts in ComfyUI" in r.getMessage() for r in caplog.records)
    assert files_under(tmp_path / "input") == []


def test_an_encoder_that_cannot_start_leaves_the_job_its_usual_graph(tmp_path, caplog):
    port = free_port()
    worker = early_worker(tmp_path, port, COMFY_PYTHON=str(tmp_path / "no-such-python"))
    out, comfy = run_late(worker, port, tmp_path)
    assert "error" not in out, out
    assert "CLIPTextEncode" in [node["class_type"] for node in comfy.submitted[-1]["prompt"].values()]
    assert any("cannot start the early prompt encoder" in r.getMessage() for r in caplog.records)


def test_early_prompts_holds_only_in_the_80_gb_class():
    on = load_settings(env={"EARLY_PROMPTS": "true"})
    assert load_settings(env={}).early_prompts is False
    assert profile_for(on, H100).graph.early_prompts is True
    for gpu in (Gpu("NVIDIA L40S", 44.5, 8.9), Gpu("NVIDIA RTX 4090", 23.6, 8.9), None):
        assert profile_for(on, gpu).graph.early_prompts is False
    assert profile_for(load_settings(env={}), H100).graph.early_prompts is False
