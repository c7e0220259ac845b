"""Launching ComfyUI: GPU-aware flags, extra_model_paths.yaml, readiness, the log and pid files, and what a
job sees when ComfyUI is gone. A stand-in main.py plays ComfyUI (the real one is the COMFYUI_DIR tier's)."""

from __future__ import annotations

import dataclasses
import os
import signal
import textwrap
import time

import pytest
import yaml

from ltx2_worker import health
from ltx2_worker.gpu import Gpu, GpuError, choose_profile, detect_gpu, profile_for
from ltx2_worker.launch import (
    COMFY_NODES,
    LaunchError,
    comfy_env,
    compile_cache_dir,
    extra_model_paths_yaml,
    start,
    wait_ready,
)
from ltx2_worker.manifest import ModelFile
from ltx2_worker.settings import load_settings
from ltx2_worker.worker import Worker

from helpers import free_port

S = load_settings(env={})
MODELS = [ModelFile("checkpoint", "r", "main", "a.safetensors", "checkpoints", 1, "0" * 64, True),
          ModelFile("lora", "r", "main", "b.safetensors", "loras", 1, "0" * 64, True),
          ModelFile("upscaler", "r", "main", "c.safetensors", "latent_upscale_models", 1, "0" * 64, True)]


@pytest.mark.parametrize("gpu,flags", [
    (Gpu("RTX 4090", 24.0, 8.9), ["--lowvram", "--fast", "fp8_matrix_mult", "--reserve-vram", "1.5"]),
    (Gpu("H100 80GB HBM3", 79.6, 9.0), ["--disable-dynamic-vram", "--highvram", "--disable-cuda-malloc", "--fast",
                                        "fp8_matrix_mult", "--reserve-vram", "1.5"]),
    (Gpu("A100-SXM4-80GB", 80.0, 8.0), ["--disable-dynamic-vram", "--highvram", "--disable-cuda-malloc",
                                        "--reserve-vram", "1.5"]),
    (Gpu("L40S", 44.4, 8.9), ["--fast", "fp8_matrix_mult", "--reserve-vram", "1.5"]),
    (Gpu("RTX A5000", 24.0, 8.6), ["--lowvram", "--reserve-vram", "1.5"]),
    (None, ["--cpu"]),
])
def test_flags_fit_the_gpu(gpu, flags):
    assert list(profile_for(S, gpu).flags) == flags


def test_comfy_extra_args_replace_the_chosen_flags():
    assert list(profile_for(S.replace(comfy_extra_args="--novram --reserve-vram 3"), Gpu("x", 24, 8.9)).flags) == [
        "--novram", "--reserve-vram", "3"]


def fake_nvidia_smi(tmp_path, monkeypatch, body: str):
    tool = tmp_path / "bin" / "nvidia-smi"
    tool.parent.mkdir()
    tool.write_text(f"#!/bin/sh\n{body}\n")
    tool.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tool.parent}:{os.environ['PATH']}")


def test_gpu_is_read_from_nvidia_smi(tmp_path, monkeypatch):
    fake_nvidia_smi(tmp_path, monkeypatch, 'echo "NVIDIA H100 80GB HBM3, 81559, 9.0"')
    assert detect_gpu() == Gpu("NVIDIA H100 80GB HBM3", 81559 / 1024, 9.0)


def test_a_broken_gpu_asks_for_a_fresh_worker(tmp_path, monkeypatch):
    fake_nvidia_smi(tmp_path, monkeypatch, 'echo "Unable to determine the device handle for GPU0: Unknown Error" '
                                           '>&2; exit 15')
    with pytest.raises(GpuError, match="Unknown Error") as info:
        detect_gpu()
    assert info.value.refresh_worker is True


@pytest.mark.parametrize("memory_gb,name,large,bypass", [
    (79.6, "large", True, True), (44.4, "medium", False, True), (23.6, "small", False, False),
])
def test_the_memory_class_decides_the_graph_too(memory_gb, name, large, bypass):
    profile = choose_profile(Gpu("x", memory_gb, 9.0), 1.5)
    assert (profile.name, profile.graph.cuda_graphs, profile.graph.resident_upscaler) == (name, large, large)
    # the pinned reader where ComfyUI runs without dynamic VRAM (elsewhere its node would fall back anyway)
    assert profile.graph.pinned_checkpoint_load is large
    # stage 2's LoRA as a bypass where the card holds the transformer and the LoRA's 7.7 GB; a small card
    # keeps ComfyUI's merged LoRA, which its low-VRAM loading applies to whatever part of the weights it moves
    assert profile.graph.lora_bypass is bypass
    # the worker's decode and loader nodes cost no memory: every class uses them
    assert profile.graph.tile_memory_decode and profile.graph.fast_upscaler_load
    assert profile.graph.fast_audio_vae_load and profile.graph.fast_text_encoder_load
    # CUDA graphs keep their memory in PyTorch's own allocator's pools, not in cudaMallocAsync's
    assert ("--disable-cuda-malloc" in profile.flags) is large
    # COMFY_EXTRA_ARGS replaces the flags, never the graph choices of the class
    assert choose_profile(Gpu("x", memory_gb, 9.0), 1.5, "--novram").graph == profile.graph


@pytest.mark.parametrize("enable", ["", "checkpoint_distilled", " checkpoint_distilled , x"])
def test_a_large_card_serving_distilled_mode_too_keeps_the_large_class(enable):
    """--cache-classic lets go of the other mode's models at a switch, so distilled mode fits beside nothing
    else: the large class's choices whatever ENABLE_MODELS says (measured peak 78.1 GB on an 80 GB card)."""
    settings = S.replace(enable_models=enable)
    h100 = Gpu("H100 80GB HBM3", 79.6, 9.0)
    assert profile_for(settings, h100) == choose_profile(h100, settings.comfy_reserve_vram_gb)
    assert profile_for(settings, h100).name == "large" and profile_for(settings, h100).graph.lora_bypass


def test_no_nvidia_tools_means_cpu(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    assert detect_gpu() is None


def test_extra_model_paths_yaml_points_comfyui_at_the_volume(tmp_path):
    parsed = yaml.safe_load(extra_model_paths_yaml(tmp_path / "vol", MODELS))
    assert parsed == {"ltx2_volume": {"base_path": str(tmp_path / "vol" / "models"), "checkpoints": "checkpoints",
                                      "latent_upscale_models": "latent_upscale_models", "loras": "loras"},
                      "ltx2_worker_nodes": {"custom_nodes": str(COMFY_NODES)}}
    # the folder ComfyUI loads as custom nodes holds the worker's node modules and nothing it would misload
    assert sorted(p.name for p in COMFY_NODES.iterdir() if p.name != "__pycache__") == [
        "ltx2_checkpoint_parts.py", "ltx2_compile_blocks.py", "ltx2_cuda_graphs.py", "ltx2_early_prompts.py",
        "ltx2_lora_bypass.py", "ltx2_save_video.py", "ltx2_start_files.py", "ltx2_upsampler.py",
        "ltx2_upscaler_loader.py", "ltx2_vae_decode.py"]


STAND_IN = textwrap.dedent('''
    """Plays ComfyUI's start: prints, then serves /system_stats on --port (or exits when told to)."""
    import http.server, os, sys
    args = sys.argv[1:]
    print("stand-in ComfyUI starting with", " ".join(args), flush=True)
    print("compile cache:", os.environ.get("TORCHINDUCTOR_CACHE_DIR"), flush=True)
    if os.environ.get("STAND_IN_FAIL"):
        print("Traceback: torch.cuda.OutOfMemoryError: CUDA error: out of memory", flush=True)
        sys.exit(3)
    port = int(args[args.index("--port") + 1])
    class H(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200); self.end_headers(); self.wfile.write(b"{}")
        def log_message(self, *a): pass
    http.server.HTTPServer(("127.0.0.1", port), H).serve_forever()
''')


@pytest.fixture
def stand_in(tmp_path, monkeypatch):
    comfy_dir = tmp_path / "ComfyUI"
    comfy_dir.mkdir()
    (comfy_dir / "main.py").write_text(STAND_IN)
    monkeypatch.setenv("PATH", str(tmp_path))  # no nvidia-smi: --cpu
    port = free_port()
    return load_settings(env={"COMFYUI_DIR": str(comfy_dir), "COMFY_URL": f"http://127.0.0.1:{port}",
                              "COMFY_PYTHON": os.sys.executable, "COMFY_LOG_FILE": str(tmp_path / "comfy.log"),
                              "COMFY_PID_FILE": str(tmp_path / "comfy.pid"), "COMFY_START_TIMEOUT_S": "20",
                              "BOOT_ERROR_FILE": str(tmp_path / "boot-error"), "NETWORK_VOLUME_PATH": str(tmp_path),
                              "COMFY_READY_TIMEOUT_S": "1"})


def test_start_waits_until_ready_and_a_dead_comfyui_fails_the_next_job(stand_in):
    proc = start(stand_in, MODELS)
    try:
        assert wait_ready(stand_in, proc) < 20
        assert int(stand_in.comfy_pid_file.read_text()) == proc.pid
        log_text = stand_in.comfy_log_file.read_text()
        assert "stand-in ComfyUI starting with" in log_text and "--cpu" in log_text
        assert "--extra-model-paths-config" in log_text and "--output-directory" in log_text
        assert "--disable-metadata" in log_text and "--cache-classic" in log_text and "--disable-api-nodes" in log_text
        assert health.worker_problem(stand_in) is None
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    problem = health.worker_problem(stand_in)
    assert problem.refresh_worker is True and "is not running" in problem.message
    assert "stand-in ComfyUI starting" in problem.message  # the log's last lines
    out = Worker(stand_in).handle({"id": "j", "input": {"prompt": "x"}})
    assert out["refresh_worker"] is True and "is not running" in out["error"]


def test_comfyui_dying_at_start_is_reported_with_its_log(stand_in, monkeypatch):
    monkeypatch.setenv("STAND_IN_FAIL", "1")
    proc = start(stand_in, MODELS)
    started = time.monotonic()
    with pytest.raises(LaunchError, match="exited with code 3") as info:
        wait_ready(stand_in, proc)
    assert "CUDA error: out of memory" in str(info.value)
    assert time.monotonic() - started < 15


def test_missing_comfyui_is_a_clear_error(stand_in, tmp_path):
    with pytest.raises(LaunchError, match="no ComfyUI at .*COMFYUI_DIR"):
        start(stand_in.replace(comfy_dir=tmp_path / "nowhere"), MODELS)


def test_a_failed_launch_at_boot_is_reported_by_every_job(tmp_path, monkeypatch):
    from ltx2_worker import launch

    fake_nvidia_smi(tmp_path, monkeypatch, 'echo "GPU is lost" >&2; exit 15')
    comfy_dir = tmp_path / "ComfyUI"
    comfy_dir.mkdir()
    (comfy_dir / "main.py").write_text(STAND_IN)
    env = {"COMFYUI_DIR": str(comfy_dir), "BOOT_ERROR_FILE": str(tmp_path / "boot-error"),
           "COMFY_PID_FILE": str(tmp_path / "none.pid"), "COMFY_LOG_FILE": str(tmp_path / "comfy.log")}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert launch.main(["--boot"]) == 1
    problem = health.worker_problem(load_settings())
    assert problem.refresh_worker is True
    assert problem.message.startswith("worker start-up failed: ComfyUI launch failed: nvidia-smi failed (GPU is lost)")


def test_compile_blocks_changes_the_graphs_compile_choice_only_in_every_class():
    for gpu in (Gpu("NVIDIA H100 80GB HBM3", 79.6, 9.0), Gpu("NVIDIA L40S", 44.4, 8.9), Gpu("RTX 4090", 23.6, 8.9)):
        plain, compiled = profile_for(S, gpu), profile_for(S.replace(compile_blocks=True), gpu)
        assert not plain.graph.compile_blocks and compiled.graph.compile_blocks
        assert compiled.flags == plain.flags
        assert dataclasses.replace(compiled.graph, compile_blocks=False) == plain.graph
    assert load_settings(env={"COMPILE_BLOCKS": "true"}).compile_blocks is True
    assert S.compile_blocks is False


def test_compile_blocks_gives_comfyui_the_compile_cache_on_the_volume(stand_in, monkeypatch):
    """With COMPILE_BLOCKS the launched ComfyUI keeps torch.compile's output on the volume, where the next fresh
    worker finds it; without, ComfyUI's environment is left as it was; a cache the environment names is kept."""
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    folder = stand_in.volume_path / ".ltx2-worker" / "torch-compile"
    assert compile_cache_dir(stand_in) == folder
    for settings, expected in ((stand_in, "None"), (stand_in.replace(compile_blocks=True), str(folder))):
        stand_in.comfy_log_file.unlink(missing_ok=True)
        proc = start(settings, MODELS)
        try:
            wait_ready(settings, proc)
            assert f"compile cache: {expected}\n" in settings.comfy_log_file.read_text()
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=10)
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", "/fast/disk/inductor")
    assert comfy_env(stand_in.replace(compile_blocks=True), set())["TORCHINDUCTOR_CACHE_DIR"] == "/fast/disk/inductor"


def test_decode_tile_px_changes_the_graphs_decode_tile_only():
    h100 = Gpu("NVIDIA H100 80GB HBM3", 79.6, 9.0)
    plain, whole = profile_for(S, h100), profile_for(S.replace(decode_tile_px=1536), h100)
    assert plain.graph.decode_tile_px == 0 and whole.graph.decode_tile_px == 1536
    assert whole.flags == plain.flags and dataclasses.replace(whole.graph, decode_tile_px=0) == plain.graph
    assert load_settings(env={"DECODE_TILE_PX": "1536"}).decode_tile_px == 1536
