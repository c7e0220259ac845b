"""entrypoint.sh and setup_netvolume.sh: shellcheck-clean, and doing what the README says."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from test_provision import FILES, make_config

from helpers import LocalApi
from hf_server import write

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = ["entrypoint.sh", "setup_netvolume.sh"]
SHELLCHECK = Path(sys.executable).parent / "shellcheck"


def test_scripts_pass_shellcheck():
    result = subprocess.run([str(SHELLCHECK), *SCRIPTS], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout


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
