"""entrypoint.sh and setup_netvolume.sh: shellcheck-clean, and doing what the README says."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_provision import FILES, make_config

from helpers import LocalApi
from hf_server import write

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = ["entrypoint.sh", "setup_netvolume.sh"]
SHELLCHECK = Path(sys.executable).parent / "shellcheck"


def test_scripts_pass_shellcheck():
    result = subprocess.run([str(SHELLCHECK), *SCRIPTS], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout


def test_setup_netvolume_help_is_its_usage_and_nothing_else():
    out = subprocess.run(["bash", "setup_netvolume.sh", "--help"], cwd=ROOT, capture_output=True, text=True,
                         timeout=30)
    assert out.returncode == 0 and out.stdout.startswith("Provision a RunPod network volume once")
    assert "--sha256" in out.stdout and "set -" not in out.stdout and "#" not in out.stdout, out.stdout


def setup_netvolume(tmp_path, volume, *args):
    env = {**os.environ, "WORKER_PYTHON": sys.executable, "LTX2_CONFIG": str(make_config(tmp_path))}
    return subprocess.run(["bash", "setup_netvolume.sh", "--volume", str(volume), *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)


def test_check_passes_on_a_provisioned_volume_and_names_each_bad_file(tmp_path):
    volume = tmp_path / "volume"
    for _, path, folder, data in FILES.values():
        write(volume / "models" / folder / Path(path).name, data)
    ok = setup_netvolume(tmp_path, volume, "--check", "--sha256")
    assert ok.returncode == 0 and ok.stdout.startswith("OK all 4 model files"), ok.stdout + ok.stderr
    (volume / "models" / "loras" / "ltx-2-19b-distilled-lora-384.safetensors").unlink()
    lora = volume / "models" / "latent_upscale_models" / "ltx-2-spatial-upscaler-x2-1.0.safetensors"
    lora.write_bytes(lora.read_bytes()[:100])
    bad = setup_netvolume(tmp_path, volume, "--check")
    assert bad.returncode == 1
    assert bad.stdout.splitlines() == [
        "BAD loras/ltx-2-19b-distilled-lora-384.safetensors: missing",
        "BAD latent_upscale_models/ltx-2-spatial-upscaler-x2-1.0.safetensors: has 100 bytes, expected exactly 40088"]


def test_unknown_option_is_refused(tmp_path):
    result = setup_netvolume(tmp_path, tmp_path, "--force")
    assert result.returncode == 2 and "unknown option --force" in result.stderr


def test_entrypoint_starts_the_handler_even_when_provisioning_fails(tmp_path):
    env = {"WORKER_PYTHON": sys.executable, "LTX2_CONFIG": str(make_config(tmp_path)),
           "NETWORK_VOLUME_PATH": str(tmp_path / "no-volume"), "BOOT_ERROR_FILE": str(tmp_path / "boot-error"),
           "COMFY_LOG_FILE": str(tmp_path / "comfy.log"), "COMFY_PID_FILE": str(tmp_path / "comfy.pid")}
    with LocalApi(env, tmp_path / "entrypoint.log", command=("bash", "entrypoint.sh")) as api:
        body = api.runsync({"prompt": "x"}, timeout=30)
    assert body["status"] == "FAILED"
    assert body["error"].startswith("worker start-up failed: model provisioning failed: no network volume at")


HELD_PREFETCH = '''#!/usr/bin/env bash
# WORKER_PYTHON for the test: the real prefetch, its every read held until the test creates $GATE
if [ "$1" = "-m" ] && [ "$2" = "ltx2_worker.prefetch" ]; then
  exec "{python}" -c '
import os, sys, time
from ltx2_worker import prefetch
def held(fd, buffer, offset):
    give_up = time.monotonic() + 60
    while not os.path.exists(os.environ["GATE"]) and time.monotonic() < give_up:
        time.sleep(0.05)
    return prefetch.os_read(fd, buffer, offset)
sys.exit(prefetch.main([], read=held))'
fi
exec "{python}" "$@"
'''


def test_entrypoint_serves_jobs_while_the_prefetch_still_reads(tmp_path):
    """The prefetch runs beside ComfyUI's start and the handler: a job completes while its reads are held, and
    the prefetch still finishes afterwards."""
    from test_provision import target

    from comfy_server import ProtocolComfy
    from helpers import loopback_env

    volume = tmp_path / "volume"
    for role, (_, _, _, data) in FILES.items():
        write(target(volume, role), data)
    shim = write(tmp_path / "bin" / "worker-python", HELD_PREFETCH.format(python=sys.executable).encode())
    shim.chmod(0o755)
    smi = write(tmp_path / "bin" / "nvidia-smi", b'#!/bin/sh\necho "NVIDIA H100 80GB HBM3, 81559, 9.0"\n')
    smi.chmod(0o755)
    comfy_dir = tmp_path / "ComfyUI"
    write(comfy_dir / "main.py", b"import time\ntime.sleep(300)\n")  # alive; the protocol server below answers
    comfy = ProtocolComfy(output_dir=tmp_path / "output").start()
    gate = tmp_path / "release-the-prefetch"
    env = {**loopback_env(comfy.url, tmp_path / "output", tmp_path), "WORKER_PYTHON": str(shim), "GATE": str(gate),
           "LTX2_CONFIG": str(make_config(tmp_path)), "NETWORK_VOLUME_PATH": str(volume), "MODEL_CACHE_PATH": "",
           "PREFETCH_HEADROOM_GB": "0", "COMFYUI_DIR": str(comfy_dir), "COMFY_PYTHON": sys.executable,
           "COMFY_START_TIMEOUT_S": "30", "PATH": f"{tmp_path / 'bin'}:{os.environ['PATH']}"}
    log = tmp_path / "entrypoint.log"
    try:
        with LocalApi(env, log, command=("bash", "entrypoint.sh")) as api:
            body = api.runsync({"prompt": "x", "width": 512, "height": 288, "frame_count": 9, "steps": 6}, timeout=60)
            assert body["status"] == "COMPLETED", body
            text = log.read_text()
            assert "prefetch: 4 model files" in text and "prefetch: read " not in text, \
                "the job ran during the prefetch"
            gate.touch()
            give_up = time.monotonic() + 30
            while "prefetch: read " not in log.read_text():
                assert time.monotonic() < give_up, log.read_text()[-2000:]
                time.sleep(0.1)
            assert "prefetch: read 0.00 GB of 4 files" in log.read_text()
            assert api.runsync({"prompt": "y", "width": 512, "height": 288, "frame_count": 9, "steps": 6},
                               timeout=60)["status"] == "COMPLETED"
    finally:
        comfy.stop()


def _starting_comfy_env(tmp_path: Path, main_py: bytes, comfy_url: str) -> dict[str, str]:
    """entrypoint.sh's environment with a provisioned volume and a stand-in ComfyUI (`main_py`) that the
    launcher starts; the test decides when something answers at `comfy_url`."""
    from test_provision import target

    from helpers import loopback_env

    volume = tmp_path / "volume"
    for role, (_, _, _, data) in FILES.items():
        write(target(volume, role), data)
    comfy_dir = tmp_path / "ComfyUI"
    write(comfy_dir / "main.py", main_py)
    return {**loopback_env(comfy_url, tmp_path / "output", tmp_path), "WORKER_PYTHON": sys.executable,
            "LTX2_CONFIG": str(make_config(tmp_path)), "NETWORK_VOLUME_PATH": str(volume), "MODEL_CACHE_PATH": "",
            "PREFETCH": "false", "COMFYUI_DIR": str(comfy_dir), "COMFY_PYTHON": sys.executable,
            "COMFY_START_TIMEOUT_S": "60", "COMFY_READY_TIMEOUT_S": "120"}


def test_the_handler_takes_a_job_while_comfyui_still_starts(tmp_path):
    """The handler starts beside the launcher: the API answers and takes the job before ComfyUI does, and the
    job runs once ComfyUI answers."""
    import threading

    from comfy_server import ProtocolComfy
    from helpers import free_port

    port = free_port()
    env = _starting_comfy_env(tmp_path, b"import time\ntime.sleep(300)\n", f"http://127.0.0.1:{port}")
    comfy = ProtocolComfy(output_dir=tmp_path / "output", port=port)
    answer: dict = {}
    try:
        with LocalApi(env, tmp_path / "entrypoint.log", command=("bash", "entrypoint.sh")) as api:
            job = threading.Thread(target=lambda: answer.update(api.runsync(
                {"prompt": "x", "width": 512, "height": 288, "frame_count": 9, "steps": 6}, timeout=90)))
            job.start()
            time.sleep(3)
            assert job.is_alive(), answer  # taken, and waiting: nothing answers at the ComfyUI address yet
            assert "ready in" not in (tmp_path / "entrypoint.log").read_text()
            comfy.start()
            job.join(90)
        assert answer.get("status") == "COMPLETED", answer
        assert answer["output"]["timings"]["comfy_startup_wait"] >= 2.5, answer["output"]["timings"]
    finally:
        comfy.stop()


def test_a_launch_that_fails_while_a_job_waits_answers_it_with_the_cause(tmp_path):
    """ComfyUI dies during its start while the first job waits: the job gets the cause at once, not after
    COMFY_READY_TIMEOUT_S (120 s here)."""
    from helpers import free_port

    main_py = b"import sys, time\nprint('CUDA error: no kernel image is available')\ntime.sleep(3)\nsys.exit(3)\n"
    env = _starting_comfy_env(tmp_path, main_py, f"http://127.0.0.1:{free_port()}")
    with LocalApi(env, tmp_path / "entrypoint.log", command=("bash", "entrypoint.sh")) as api:
        started = time.monotonic()
        body = api.runsync({"prompt": "x", "width": 512, "height": 288, "frame_count": 9}, timeout=60)
        waited = time.monotonic() - started
    assert body["status"] == "FAILED" and waited < 60, (waited, body)
    assert "no kernel image is available" in body["error"], body["error"]
    # the launcher's record, or (when the worker's poll sees the dead process first) the process's own end
    assert ("ComfyUI launch failed: ComfyUI exited with code 3" in body["error"]
            or "is not running" in body["error"]), body["error"]


def _start_tryout(tmp_path, name="tryout"):
    """tools/tryout.sh on a free port, its temporary folders under tmp_path; (process, port, log path) once the
    API answers."""
    import requests

    from helpers import free_port

    port = free_port()
    log_path = tmp_path / f"{name}.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(["bash", "tools/tryout.sh", str(port)], cwd=ROOT, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True,
                                env={**os.environ, "TMPDIR": str(tmp_path)})
    give_up = time.monotonic() + 60
    while True:
        try:
            requests.get(f"http://127.0.0.1:{port}/docs", timeout=1)
            return proc, port, log_path
        except requests.ConnectionError:
            assert proc.poll() is None and time.monotonic() < give_up, log_path.read_text()
            time.sleep(0.2)


def _port_free(port: int) -> bool:
    import socket

    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


def _wait_until(condition, seconds=20) -> bool:
    give_up = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > give_up:
            return False
        time.sleep(0.2)
    return True


def test_the_tryout_serves_the_api_with_a_synthetic_mp4_and_stops_on_ctrl_c(tmp_path):
    """README's try-out without a GPU: test_input.json through the local API in front of the protocol ComfyUI."""
    import json
    import signal

    import requests

    from helpers import decode_video_field

    proc, port, log = _start_tryout(tmp_path)
    try:
        job = json.loads((ROOT / "test_input.json").read_text())
        started = time.monotonic()
        out = requests.post(f"http://127.0.0.1:{port}/runsync", json=job, timeout=60).json()
        took = time.monotonic() - started
        bad = requests.post(f"http://127.0.0.1:{port}/runsync", json={"input": {"prompt": "x", "fps": 0}},
                            timeout=30).json()
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        code = proc.wait(timeout=20)
    assert out["status"] == "COMPLETED", out
    assert decode_video_field(out["output"]) == {"width": 768, "height": 512, "frames": 49, "fps": 24.0,
                                                 "audio": True}
    assert took < 15
    assert bad["status"] == "FAILED" and bad["error"].startswith("fps: "), bad
    assert code in (0, -signal.SIGINT, 130), log.read_text()
    assert _port_free(port) and list(tmp_path.glob("ltx2-tryout-*")) == [], log.read_text()


@pytest.mark.parametrize("how", ["SIGTERM to the try-out", "SIGTERM to its group", "SIGHUP to the try-out"])
def test_every_way_of_stopping_the_tryout_stops_the_worker_and_removes_its_folder(tmp_path, how):
    import signal

    import requests

    proc, port, log = _start_tryout(tmp_path)
    folders = list(tmp_path.glob("ltx2-tryout-*"))
    try:
        # a request with a LoRA: its cache goes in the try-out's own folder, never /runpod-volume
        out = requests.post(f"http://127.0.0.1:{port}/runsync", timeout=30, json={"input": {
            "prompt": "x", "loras": [{"url": "https://127.0.0.1/style.safetensors"}]}}).json()
    finally:
        sig = signal.SIGHUP if "SIGHUP" in how else signal.SIGTERM
        if "group" in how:
            os.killpg(proc.pid, sig)
        else:
            proc.send_signal(sig)
        code = proc.wait(timeout=30)
    assert out["status"] == "FAILED" and out["error"].startswith("loras[0].url: "), out
    assert len(folders) == 1 and not folders[0].exists(), log.read_text()
    assert code == 0 and _wait_until(lambda: _port_free(port)), log.read_text()


def test_a_killed_tryout_takes_the_worker_with_it_and_the_next_removes_its_folder(tmp_path):
    import signal

    proc, port, log = _start_tryout(tmp_path, "first")
    left = list(tmp_path.glob("ltx2-tryout-*"))
    proc.send_signal(signal.SIGKILL)  # nothing can be cleaned up by the try-out itself
    proc.wait(timeout=10)
    assert _wait_until(lambda: _port_free(port)), "the worker must not outlive its try-out: " + log.read_text()
    again, again_port, again_log = _start_tryout(tmp_path, "second")
    try:
        assert len(left) == 1 and not left[0].exists(), again_log.read_text()
        assert "removed" in again_log.read_text()
    finally:
        again.send_signal(signal.SIGTERM)
        again.wait(timeout=30)
    assert list(tmp_path.glob("ltx2-tryout-*")) == []


def test_a_bad_setting_keeps_the_worker_serving_and_every_job_names_it(tmp_path):
    """README, Settings: the worker registers and answers every job with the setting's error; nothing is
    downloaded and ComfyUI is not started."""
    from helpers import free_port

    env = _starting_comfy_env(tmp_path, b"raise SystemExit('ComfyUI must not start')\n",
                              f"http://127.0.0.1:{free_port()}")
    env["MAX_FRAMES"] = "many"
    with LocalApi(env, tmp_path / "entrypoint.log", command=("bash", "entrypoint.sh")) as api:
        answers = [api.runsync({"prompt": "x", "frame_count": 9}, timeout=30) for _ in range(2)]
    log = (tmp_path / "entrypoint.log").read_text()
    for body in answers:
        assert body["status"] == "FAILED" and body["error"].startswith("worker configuration error: "), body
        assert "MAX_FRAMES" in body["error"], body
    assert "ComfyUI must not start" not in log and "launch: " not in log, log


def test_setup_netvolume_says_which_python_it_needs(tmp_path):
    bare = tmp_path / "python-without-packages"
    bare.write_text(f"#!/bin/sh\nexec {sys.executable} -S -I \"$@\"\n")  # no site-packages: no requests
    bare.chmod(0o755)
    out = subprocess.run(["bash", "setup_netvolume.sh", "--check", "--volume", str(tmp_path)], cwd=ROOT,
                         env={**os.environ, "WORKER_PYTHON": str(bare)}, capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "lacks the worker's packages" in out.stderr, out.stderr
    assert "WORKER_PYTHON" in out.stderr and "requirements.txt" in out.stderr
