"""Log lines carry their level under the runpod SDK, where RunPod's log is read: importing runpod configures the
root logger with a format that has no level, and handler.py must replace it (a filter for WARNING or ERROR in
RunPod's log must find the worker's warnings and errors). The CLIs that entrypoint.sh runs before the SDK
(provisioning, the launcher) log with their level too."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import requests

from comfy_server import ProtocolComfy
from helpers import LocalApi, loopback_env

ROOT = Path(__file__).resolve().parent.parent


def test_the_sdk_configures_the_root_logger_without_a_level_on_import():
    """The premise: if a runpod release stops doing this, the force=True in handler.py is merely harmless."""
    out = subprocess.run([sys.executable, "-c", "import logging, runpod; "
                          "print([h.formatter._fmt for h in logging.getLogger().handlers])"],
                         capture_output=True, text=True, check=True, cwd=ROOT).stdout
    assert "levelname" not in out, out


def test_a_workers_warning_under_the_sdk_carries_its_level_and_is_not_doubled(tmp_path):
    elsewhere = tmp_path / "elsewhere"  # not ComfyUI's output folder: the worker warns at start
    elsewhere.mkdir()
    with ProtocolComfy(output_dir=tmp_path / "comfyui" / "output") as comfy:
        log_path = tmp_path / "handler.log"
        with LocalApi(loopback_env(comfy.url, elsewhere, tmp_path), log_path) as api:
            r = requests.post(api.base + "/runsync", json={"input": {"prompt": "x", "width": 1001}}, timeout=30)
            assert r.json()["status"] == "FAILED"
        text = log_path.read_text()
    lines = [line for line in text.splitlines() if "ComfyUI's output folder:" in line]
    assert len(lines) == 1, text[-3000:]
    assert re.search(r"\d{2}:\d{2}:\d{2},\d{3} WARNING ltx2_worker\.worker: ComfyUI's output folder: ", lines[0]), \
        lines[0]
    # the SDK's own lines (printed by its RunPodLogger, not through logging) are still there, once each
    started = [line for line in text.splitlines() if "Starting API server" in line]
    assert len(started) == 1, text[-3000:]


def test_provisioning_and_launch_lines_carry_their_level(tmp_path):
    env = {"PATH": "/usr/bin:/bin", "NETWORK_VOLUME_PATH": str(tmp_path / "no-volume"),
           "BOOT_ERROR_FILE": str(tmp_path / "boot-error"), "COMFY_PYTHON": str(tmp_path / "no-python"),
           "COMFYUI_DIR": str(tmp_path / "no-comfyui"), "COMFY_LOG_FILE": str(tmp_path / "comfy.log"),
           "COMFY_PID_FILE": str(tmp_path / "comfy.pid")}
    for module, level in (("ltx2_worker.provision", "ERROR"), ("ltx2_worker.launch", "ERROR")):
        proc = subprocess.run([sys.executable, "-m", module], capture_output=True, text=True, cwd=ROOT, env=env,
                              timeout=60)
        assert proc.returncode != 0, proc
        assert re.search(rf"^\S+ \S+ {level} \w+: ", proc.stderr, re.MULTILINE), (module, proc.stderr)
