"""Each way a model download can fail ends in one error naming the cause, the file, the hub and the fix, with
no secondary error hiding it, and no partial file under a final name. Produced for real on loopback through
huggingface_hub's URL and header code: a closed port, a name that cannot resolve, a hub that hangs, one that
resets mid-file, one that answers each status; a read-only and a full volume in a private mount namespace.

Passing failures (connection, DNS, timeout, reset, 5xx) are retried on the DOWNLOAD_* schedule and then make
jobs answer with refresh_worker; lasting ones (401/403/404, read-only, full) do not.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
from test_provision import FILES, SECRET_TOKEN, make_config, sha256, target

from ltx2_worker import health
from ltx2_worker.download import part_path
from ltx2_worker.failures import ProvisionError
from ltx2_worker.manifest import load_manifest
from ltx2_worker.provision import provision
from ltx2_worker.settings import ROOT, load_settings
from ltx2_worker.worker import Worker

from helpers import LocalApi, free_port, private_mounts
from hf_server import HubServer, tiny_safetensors, write

CHECKPOINT = "checkpoints/ltx-2-19b-dev-fp8.safetensors"
FAST = {"DOWNLOAD_ATTEMPTS": "3", "DOWNLOAD_BACKOFF_S": "0.05", "DOWNLOAD_RETRY_WINDOW_S": "30",
        "DOWNLOAD_TIMEOUT_S": "1"}


def hub_files(files=FILES) -> dict[str, bytes]:
    return {f"{repo}/{path}": data for repo, path, _, data in files.values()}


def env_at(tmp_path: Path, volume: Path, endpoint: str, files=FILES, **extra: str) -> dict[str, str]:
    env = {"LTX2_CONFIG": str(make_config(tmp_path, files)), "NETWORK_VOLUME_PATH": str(volume),
           "HF_ENDPOINT": endpoint, "HF_TOKEN": SECRET_TOKEN, "HF_HUB_DISABLE_TELEMETRY": "1",
           "HF_HUB_DISABLE_XET": "1", "BOOT_ERROR_FILE": str(tmp_path / "boot-error"),
           "COMFY_PID_FILE": str(tmp_path / "comfy.pid"), "COMFY_LOG_FILE": str(tmp_path / "comfy.log"), **FAST}
    env.update(extra)
    return env


def checkpoint_part(volume: Path) -> Path:
    return volume / "models" / ".downloads" / f"checkpoint-{sha256(FILES['checkpoint'][3])[:16]}.part"


def provision_at(endpoint: str, tmp_path: Path, monkeypatch, token: bool = True, **extra: str) -> ProvisionError:
    """Provision an empty volume in-process against `endpoint`; the ProvisionError it must end in."""
    volume = tmp_path / "volume"
    volume.mkdir(exist_ok=True)
    env = env_at(tmp_path, volume, endpoint, **extra)
    if not token:
        del env["HF_TOKEN"]
        monkeypatch.delenv("HF_TOKEN", raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    import huggingface_hub.constants as hfc

    monkeypatch.setattr(hfc, "ENDPOINT", endpoint)
    monkeypatch.setattr(hfc, "HUGGINGFACE_CO_URL_TEMPLATE", endpoint + "/{repo_id}/resolve/{revision}/{filename}")
    settings = load_settings(env=env)
    with pytest.raises(ProvisionError) as info:
        provision(settings, load_manifest(settings, Path(env["LTX2_CONFIG"])))
    message = str(info.value)
    assert message.startswith(f"cannot provision {CHECKPOINT} (Lightricks/LTX-2 ltx-2-19b-dev-fp8.safetensors@main "
                              f"from {endpoint}): "), message
    assert "No such file or directory" not in message and SECRET_TOKEN not in message
    assert not target(volume, "checkpoint").exists(), "a partial file must never take the final name"
    return info.value


@pytest.mark.parametrize("fault,cause,fix", [
    (500, "the hub failed with a server error (HTTP 500)", "status.huggingface.co"),
    (503, "the hub failed with a server error (HTTP 503)", "status.huggingface.co"),
    ("hang", "the hub did not answer within 1 s (timeout)", "raise DOWNLOAD_TIMEOUT_S"),
    ("reset", "the connection was reset or closed before the file was complete", "resumes"),
])
def test_a_passing_hub_failure_is_retried_then_named_and_asks_for_a_fresh_worker(tmp_path, monkeypatch, caplog,
                                                                                  fault, cause, fix):
    caplog.set_level(logging.INFO, logger="ltx2_worker")
    with HubServer(hub_files(), fault=fault) as hub:
        error = provision_at(hub.url, tmp_path, monkeypatch)
        gets = [r for r in hub.requests if r["method"] == "GET"]
    message = str(error)
    assert f": {cause} (3 attempts without progress in " in message and fix in message
    assert "a fresh start tries again" in message and error.refresh_worker is True
    retries = [r.getMessage() for r in caplog.records if "retrying in" in r.getMessage()]
    assert all(f"failed: {cause}" in line or f"MB: {cause}" in line for line in retries)
    part = checkpoint_part(tmp_path / "volume")
    if fault == "reset":  # the first half arrived and is kept; then three attempts received nothing
        assert part.stat().st_size == len(FILES["checkpoint"][3]) // 2
        assert "GB fetched so far are kept for the next start" in message
        assert [r["range"] for r in gets] == ["bytes=0-", *[f"bytes={part.stat().st_size}-"] * 3]
        assert len(retries) == 3 and "attempt 1 failed after 0.3 MB: " in retries[0]
    else:
        assert len(gets) == 3 and len(retries) == 2
        assert not part.exists() or part.stat().st_size == 0


def test_a_closed_port_is_connection_refused(tmp_path, monkeypatch, caplog):
    caplog.set_level(logging.WARNING, logger="ltx2_worker")
    endpoint = f"http://127.0.0.1:{free_port()}"
    error = provision_at(endpoint, tmp_path, monkeypatch)
    assert ": connection refused (3 attempts without progress in " in str(error)
    assert f"nothing accepts connections at {endpoint}: check HF_ENDPOINT" in str(error)
    assert error.refresh_worker is True
    assert [r.getMessage().split(": ", 1)[1] for r in caplog.records if "retrying" in r.getMessage()] == [
        "attempt 1 failed: connection refused; retrying in 0.05 s (1 of at most 3 in a row without progress)",
        "attempt 2 failed: connection refused; retrying in 0.1 s (2 of at most 3 in a row without progress)"]


def test_a_host_that_does_not_resolve_is_a_dns_failure(tmp_path, monkeypatch):
    error = provision_at("http://hub.invalid:1", tmp_path, monkeypatch)
    assert ": the host name hub.invalid does not resolve (DNS failure) (3 attempts" in str(error)
    assert "check the spelling of HF_ENDPOINT" in str(error) and error.refresh_worker is True


@pytest.mark.parametrize("status,token,cause,fix", [
    (401, False, "the hub refused access (HTTP 401, GatedRepo)", "HF_TOKEN is not set: accept the model's licence"),
    (403, True, "the hub refused access (HTTP 403, GatedRepo)", "HF_TOKEN is set, but its account may not read"),
    (404, True, "the hub has no such file (HTTP 404, EntryNotFound)", "check the path or revision in "
                                                                      "[model.checkpoint] in config.ini"),
])
def test_a_lasting_refusal_is_not_retried_and_keeps_the_worker(tmp_path, monkeypatch, status, token, cause, fix):
    with HubServer(hub_files(), fault=status) as hub:
        error = provision_at(hub.url, tmp_path, monkeypatch, token=token)
        gets = [r for r in hub.requests if r["method"] == "GET"]
        assert hub.token_seen == ({SECRET_TOKEN} if token else set())
    assert f": {cause}; {fix}" in str(error)
    if status != 404:  # where to accept the licence
        assert f"{hub.url}/Lightricks/LTX-2" in str(error)
    assert error.refresh_worker is False and "fresh start" not in str(error)
    assert len(gets) == 1, "a lasting failure is not retried"
    assert not checkpoint_part(tmp_path / "volume").exists() or not checkpoint_part(tmp_path / "volume").stat().st_size


def test_a_reset_that_passes_resumes_from_the_bytes_kept(tmp_path, monkeypatch, caplog):
    caplog.set_level(logging.WARNING, logger="ltx2_worker")
    volume = tmp_path / "volume"
    volume.mkdir()
    env = env_at(tmp_path, volume, "unused")
    with HubServer(hub_files(), fault="reset", fault_count=1) as hub:
        env["HF_ENDPOINT"] = hub.url
        result = subprocess.run([sys.executable, "-m", "ltx2_worker.provision"], cwd=ROOT, env={**os.environ, **env},
                                capture_output=True, text=True, timeout=60)
        gets = hub.downloads("ltx-2-19b-dev-fp8.safetensors")
    assert result.returncode == 0, result.stderr
    data = FILES["checkpoint"][3]
    assert target(volume, "checkpoint").read_bytes() == data
    assert [g["range"] for g in gets] == ["bytes=0-", f"bytes={len(data) // 2}-"]
    assert "attempt 1 failed after 0.3 MB: the connection was reset or closed before the file was complete; " \
           "retrying in 0.05 s" in result.stderr


def test_the_retry_window_ends_retries_before_the_attempts_run_out(tmp_path, monkeypatch):
    error = provision_at(f"http://127.0.0.1:{free_port()}", tmp_path, monkeypatch, DOWNLOAD_ATTEMPTS="10",
                         DOWNLOAD_BACKOFF_S="0.2", DOWNLOAD_RETRY_WINDOW_S="0.5")
    assert ": connection refused (2 attempts without progress in 0 s; DOWNLOAD_ATTEMPTS, DOWNLOAD_RETRY_WINDOW_S)" \
        in str(error)


def test_a_passing_failure_at_boot_makes_every_job_ask_for_a_fresh_worker(tmp_path):
    volume = tmp_path / "volume"
    volume.mkdir()
    env = env_at(tmp_path, volume, f"http://127.0.0.1:{free_port()}")
    result = subprocess.run([sys.executable, "-m", "ltx2_worker.provision", "--boot"], cwd=ROOT,
                            env={**os.environ, **env}, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    settings = load_settings(env=env)
    out = Worker(settings).handle({"id": "j", "input": {"prompt": "x"}})
    assert out["refresh_worker"] is True
    assert out["error"].startswith(f"worker start-up failed: model provisioning failed: cannot provision {CHECKPOINT}")
    assert "connection refused" in out["error"] and SECRET_TOKEN not in result.stderr + json.dumps(out)
    assert "asks RunPod for a new one" in out["error"] and "refresh_worker" in result.stderr


def test_a_lasting_failure_at_boot_keeps_the_worker(tmp_path):
    volume = tmp_path / "volume"
    volume.mkdir()
    with HubServer(hub_files(), fault=404) as hub:
        env = env_at(tmp_path, volume, hub.url)
        result = subprocess.run([sys.executable, "-m", "ltx2_worker.provision", "--boot"], cwd=ROOT,
                                env={**os.environ, **env}, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    out = Worker(load_settings(env=env)).handle({"id": "j", "input": {"prompt": "x"}})
    assert "refresh_worker" not in out and "the hub has no such file (HTTP 404, EntryNotFound)" in out["error"]


def test_a_bad_manifest_at_boot_keeps_the_worker(tmp_path):
    volume = tmp_path / "volume"
    volume.mkdir()
    env = env_at(tmp_path, volume, "http://127.0.0.1:9", ENABLE_MODELS="no_such_role")
    result = subprocess.run([sys.executable, "-m", "ltx2_worker.provision", "--boot"], cwd=ROOT,
                            env={**os.environ, **env}, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    problem = health.worker_problem(load_settings(env=env))
    assert problem.refresh_worker is False and "ENABLE_MODELS names unknown roles ['no_such_role']" in problem.message


def test_entrypoint_with_the_hub_out_of_reach_names_the_cause(tmp_path):
    """The issue's case: entrypoint.sh on an empty volume with the hub away."""
    volume = tmp_path / "volume"
    volume.mkdir()
    env = {**env_at(tmp_path, volume, f"http://127.0.0.1:{free_port()}"), "WORKER_PYTHON": sys.executable}
    with LocalApi(env, tmp_path / "entrypoint.log", command=("bash", "entrypoint.sh")) as api:
        body = api.runsync({"prompt": "x"}, timeout=30)
    assert body["status"] == "FAILED"
    assert body["error"].startswith(f"worker start-up failed: model provisioning failed: cannot provision {CHECKPOINT}")
    assert ": connection refused (3 attempts" in body["error"] and ".part" not in body["error"]
    assert health.worker_problem(load_settings(env=env)).refresh_worker is True


needs_mounts = pytest.mark.skipif(private_mounts() is None, reason="needs a private mount namespace for a tmpfs "
                                  "(unshare -rm, or sudo -n unshare -m); neither works on this machine")


def in_private_mounts(script: str, env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess:
    """Run a shell script in its own mount namespace; the volume it mounts is gone when it ends, so the script
    prints what the test needs to see (`find` of the volume)."""
    return subprocess.run([*private_mounts(), "sh", "-c", script], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **env, "PY": sys.executable})


@needs_mounts
def test_a_read_only_volume_is_named_and_a_complete_one_still_boots(tmp_path):
    source, volume = tmp_path / "source", tmp_path / "volume"
    volume.mkdir()
    for _, path, folder, data in FILES.values():
        write(source / "models" / folder / Path(path).name, data)
    upscaler = target(source, "upscaler")
    env = env_at(tmp_path, volume, "http://127.0.0.1:9", UPSCALER=str(upscaler))
    script = """
        mount --bind "$SOURCE" "$NETWORK_VOLUME_PATH" && mount -o remount,bind,ro "$NETWORK_VOLUME_PATH" || exit 99
        "$PY" -m ltx2_worker.provision --boot; echo "complete=$?"
        rm "$UPSCALER"   # through the writable source: the read-only volume now lacks a file
        "$PY" -m ltx2_worker.provision --boot; echo "missing=$?"
    """
    result = in_private_mounts(script, {**env, "SOURCE": str(source)})
    assert "complete=0" in result.stdout and "missing=1" in result.stdout, result.stdout + result.stderr
    problem = health.worker_problem(load_settings(env=env))
    assert problem.refresh_worker is False
    assert problem.message == (
        "worker start-up failed: model provisioning failed: cannot provision latent_upscale_models/"
        "ltx-2-spatial-upscaler-x2-1.0.safetensors (Lightricks/LTX-2 ltx-2-spatial-upscaler-x2-1.0.safetensors@main "
        f"from http://127.0.0.1:9): the volume at {volume} is read-only (Read-only file system: "
        f"{volume}/models/latent_upscale_models/ltx-2-spatial-upscaler-x2-1.0.safetensors.lock); mount it "
        "read-write, or provision it once from a pod (setup_netvolume.sh) so that workers only read it")


@needs_mounts
def test_a_volume_filled_by_another_writer_during_the_download_is_disk_full(tmp_path):
    """The free-space check passes (24 MB free for 20 MB), then another writer takes the rest mid-download."""
    repo, path, folder, _ = FILES["checkpoint"]
    big = tiny_safetensors(5_000_000, 7)  # 20 MB: more than one 8 MB chunk
    files = {**FILES, "checkpoint": (repo, path, folder, big)}
    volume = tmp_path / "volume"
    volume.mkdir()
    with HubServer(hub_files(files), bytes_per_second=20_000_000) as hub:
        env = env_at(tmp_path, volume, hub.url, files, DISK_RESERVE_MB="0")
        model = next(m for m in load_manifest(load_settings(env=env), Path(env["LTX2_CONFIG"]))
                     if m.role == "checkpoint")
        script = """
            mount -t tmpfs -o size=24m tmpfs "$NETWORK_VOLUME_PATH" || exit 99
            "$PY" -m ltx2_worker.provision --boot & pid=$!
            while [ ! -s "$PART" ] && kill -0 "$pid" 2>/dev/null; do sleep 0.02; done
            cat /dev/zero > "$NETWORK_VOLUME_PATH/filler" 2>/dev/null   # another writer takes the rest
            rc=0; wait "$pid" || rc=$?; echo "provision=$rc"
            cd "$NETWORK_VOLUME_PATH" && find . -type f | sort | while read -r f; do
                echo "file $f $(wc -c < "$f")"
            done
        """
        result = in_private_mounts(script, {**env, "PART": str(part_path(volume, model))})
    assert "provision=1" in result.stdout, result.stdout + result.stderr
    files_left = dict(line.split()[1:] for line in result.stdout.splitlines() if line.startswith("file "))
    part = f"./models/.downloads/checkpoint-{model.sha256[:16]}.part"
    assert 0 < int(files_left[part]) < len(big), "the bytes fetched are kept for the next start"
    assert f"./models/{folder}/{path}" not in files_left, "a partial file must never take the final name"
    problem = health.worker_problem(load_settings(env=env))
    assert problem.refresh_worker is False
    assert problem.message.startswith(
        f"worker start-up failed: model provisioning failed: cannot provision {CHECKPOINT} (Lightricks/LTX-2 "
        f"ltx-2-19b-dev-fp8.safetensors@main from {hub.url}): the volume at {volume} is full (No space left on "
        f"device writing {volume}/{part[2:]})")
    assert "although the free-space check before the download passed" in problem.message
    assert "the next start resumes" in problem.message and SECRET_TOKEN not in result.stdout + result.stderr
