"""Provisioning against a Hugging-Face-style server on loopback through the real huggingface_hub client."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ltx2_worker import health
from ltx2_worker.failures import ProvisionError
from ltx2_worker.manifest import load_manifest
from ltx2_worker.provision import check, provision
from ltx2_worker.settings import ROOT, load_settings

from hf_server import HubServer, tiny_safetensors, write

FILES = {  # role: (repo, path in repo, folder, content)
    "checkpoint": ("Lightricks/LTX-2", "ltx-2-19b-dev-fp8.safetensors", "checkpoints", tiny_safetensors(150_000, 1)),
    "text_encoder": ("Comfy-Org/ltx-2", "split_files/text_encoders/gemma_3_12B_it_fp4_mixed.safetensors",
                     "text_encoders", tiny_safetensors(60_000, 2)),
    "lora": ("Lightricks/LTX-2", "ltx-2-19b-distilled-lora-384.safetensors", "loras", tiny_safetensors(20_000, 3)),
    "upscaler": ("Lightricks/LTX-2", "ltx-2-spatial-upscaler-x2-1.0.safetensors", "latent_upscale_models",
                 tiny_safetensors(10_000, 4)),
}
SECRET_TOKEN = "hf_testsecret_never_logged_0123456789"


def sha256(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()


def make_config(tmp: Path, files=FILES) -> Path:
    """config.ini with the real settings and a manifest of tiny files."""
    base = (ROOT / "config.ini").read_text().split("# The model manifest")[0]
    sections = [base]
    for role, (repo, path, folder, data) in files.items():
        sections.append(f"[model.{role}]\nrepo = {repo}\nrevision = main\npath = {path}\nfolder = {folder}\n"
                        f"size = {len(data)}\nsha256 = {sha256(data)}\nrequired = true\n")
    config = tmp / "config.ini"
    config.write_text("\n".join(sections))
    return config


@pytest.fixture
def volume(tmp_path):
    path = tmp_path / "volume"
    path.mkdir()
    return path


@pytest.fixture
def hub():
    with HubServer({f"{repo}/{path}": data for repo, path, _, data in FILES.values()}) as server:
        yield server


def env_for(tmp_path, volume, hub, **extra):
    return {"LTX2_CONFIG": str(make_config(tmp_path)), "NETWORK_VOLUME_PATH": str(volume), "HF_ENDPOINT": hub.url,
            "HF_TOKEN": SECRET_TOKEN, "HF_HUB_DISABLE_TELEMETRY": "1", "HF_HUB_DISABLE_XET": "1",
            "BOOT_ERROR_FILE": str(tmp_path / "boot-error"), "PROVISION_LOCK_STALE_S": "3",
            "PROVISION_WAIT_S": "60", **extra}


@pytest.fixture
def setup(tmp_path, volume, hub, monkeypatch):
    """In-process provisioning: settings and manifest for the tiny files, huggingface_hub pointed at `hub`."""
    env = env_for(tmp_path, volume, hub)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    import huggingface_hub.constants as hfc

    monkeypatch.setattr(hfc, "ENDPOINT", hub.url)
    monkeypatch.setattr(hfc, "HUGGINGFACE_CO_URL_TEMPLATE", hub.url + "/{repo_id}/resolve/{revision}/{filename}")
    settings = load_settings(env=env)
    return settings, load_manifest(settings, Path(env["LTX2_CONFIG"]))


def target(volume: Path, role: str) -> Path:
    _, path, folder, _ = FILES[role]
    return volume / "models" / folder / Path(path).name


def run_cli(env, *args, timeout=60):
    return subprocess.run([sys.executable, "-m", "ltx2_worker.provision", *args], cwd=ROOT, env={**os.environ, **env},
                          capture_output=True, text=True, timeout=timeout)


def test_fresh_volume_gets_every_file_once(setup, volume, hub):
    settings, models = setup
    provision(settings, models)
    for role, (_, _, _, data) in FILES.items():
        assert target(volume, role).read_bytes() == data
        assert len(hub.downloads(Path(FILES[role][1]).name)) == 1
    assert check(settings, models, sha256=True) == []
    assert hub.token_seen == {SECRET_TOKEN}
    assert not (volume / "models" / ".downloads").exists() or not any((volume / "models" / ".downloads").iterdir())


def test_provisioned_volume_downloads_nothing(setup, hub):
    settings, models = setup
    provision(settings, models)
    before = len(hub.requests)
    provision(settings, models)
    assert len(hub.requests) == before


@pytest.mark.parametrize("damage,expected", [
    (lambda d: d[:-100], "has {n} bytes, expected exactly"),
    (lambda d: b"version https://git-lfs.github.com/spec/v1\noid sha256:ab\nsize 1\n", "Git LFS pointer"),
    (lambda d: d[:-8] + d[:8], None),  # same size, intact header: only --sha256 sees it
    (lambda d: d[:8] + b"[" + d[9:], "invalid safetensors header"),
])
def test_a_damaged_file_is_named_and_replaced(setup, volume, hub, damage, expected):
    settings, models = setup
    good = FILES["checkpoint"][3]
    bad = damage(good)
    write(target(volume, "checkpoint"), bad)
    for role in ("text_encoder", "lora", "upscaler"):
        write(target(volume, role), FILES[role][3])
    lines = check(settings, models)
    if expected is None:
        assert lines == []
        lines = check(settings, models, sha256=True)
        assert len(lines) == 1 and "does not match the manifest" in lines[0]
        provision(settings, models, sha256=True)
    else:
        assert len(lines) == 1 and lines[0].startswith("checkpoints/ltx-2-19b-dev-fp8.safetensors: ")
        assert expected.format(n=len(bad)) in lines[0]
        provision(settings, models)
    assert target(volume, "checkpoint").read_bytes() == good
    assert len(hub.downloads("ltx-2-19b-dev-fp8.safetensors")) == 1


def test_trailing_bytes_are_rejected_by_the_header_check(setup, volume):
    settings, models = setup
    data = FILES["upscaler"][3]
    model = next(m for m in models if m.role == "upscaler")
    from ltx2_worker.verify import problem

    path = write(volume / "x.safetensors", data + b"\0" * 8)
    assert "expected exactly" in problem(path, model)
    object.__setattr__(model, "size", len(data) + 8)  # even at the expected size, the header says "not covered"
    assert "not fully covered" in problem(path, model)


def test_sha256_is_remembered_until_the_file_changes(setup, volume, monkeypatch):
    settings, models = setup
    provision(settings, models)
    import ltx2_worker.verify as verify

    calls = []
    real = verify.sha256_of
    monkeypatch.setattr(verify, "sha256_of", lambda p: calls.append(p) or real(p))
    assert check(settings, models, sha256=True) == []
    assert calls == []  # the download already hashed and recorded every file
    os.utime(target(volume, "lora"), (1, 1))
    assert check(settings, models, sha256=True) == []
    assert calls == [target(volume, "lora")]


def test_no_volume_refuses_unless_container_disk_is_allowed(tmp_path, hub, monkeypatch):
    env = env_for(tmp_path, tmp_path / "not-mounted", hub)
    settings = load_settings(env=env)
    with pytest.raises(ProvisionError, match="no network volume at .*ALLOW_CONTAINER_DISK"):
        provision(settings, load_manifest(settings, Path(env["LTX2_CONFIG"])))
    result = run_cli(env, "--boot")
    assert result.returncode == 1
    problem = health.worker_problem(load_settings(env=env))
    assert "no network volume" in problem.message and problem.refresh_worker is False
    result = run_cli({**env, "ALLOW_CONTAINER_DISK": "true"})
    assert result.returncode == 0, result.stderr
    assert target(tmp_path / "not-mounted", "lora").is_file()


def test_too_little_disk_fails_before_downloading(setup, hub):
    settings, models = setup
    with pytest.raises(ProvisionError, match="not enough free space .*DISK_RESERVE_MB"):
        provision(settings.replace(disk_reserve_mb=1e12), models)
    assert hub.downloads(".safetensors") == []


def test_killed_download_resumes_where_it_stopped(tmp_path, volume):
    repo, path, folder, _ = FILES["checkpoint"]
    big = tiny_safetensors(7_500_000, 9)  # 30 MB
    files = {**FILES, "checkpoint": (repo, path, folder, big)}
    with HubServer({f"{r}/{p}": d for r, p, _, d in files.values()}, bytes_per_second=12_000_000) as hub:
        env = {**env_for(tmp_path, volume, hub), "LTX2_CONFIG": str(make_config(tmp_path, files))}
        proc = subprocess.Popen([sys.executable, "-m", "ltx2_worker.provision"], cwd=ROOT,
                                env={**os.environ, **env}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        staging = volume / "models" / ".downloads"
        give_up = time.monotonic() + 30
        while sum(p.stat().st_size for p in staging.rglob("*.part")) < 10_000_000:
            assert time.monotonic() < give_up and proc.poll() is None, "the download never got going"
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        assert not target(volume, "checkpoint").exists(), "a half-written file must never take the final name"
        hub.bytes_per_second = None
        result = run_cli(env)
        assert result.returncode == 0, result.stderr
        assert target(volume, "checkpoint").read_bytes() == big
        gets = hub.downloads(Path(path).name)
        assert len(gets) == 2 and gets[1]["range"] and int(gets[1]["range"].split("=")[1].rstrip("-")) >= 10_000_000
        resumed_at = int(gets[1]["range"].split("=")[1].rstrip("-"))
        assert gets[1]["sent"] == len(big) - resumed_at, "the second run fetched only the rest"


def test_two_workers_at_once_download_each_file_once(tmp_path, volume):
    with HubServer({f"{r}/{p}": d for r, p, _, d in FILES.values()}, bytes_per_second=2_000_000) as hub:
        env = {**os.environ, **env_for(tmp_path, volume, hub)}
        procs = [subprocess.Popen([sys.executable, "-m", "ltx2_worker.provision"], cwd=ROOT, env=env,
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for _ in range(2)]
        outputs = [p.communicate(timeout=90)[0] for p in procs]
        assert [p.returncode for p in procs] == [0, 0], outputs
        for role, (_, path, _, data) in FILES.items():
            assert len(hub.downloads(Path(path).name)) == 1, role
            assert target(volume, role).read_bytes() == data
        assert any("another worker is downloading" in out for out in outputs)
        assert all(SECRET_TOKEN not in out for out in outputs)


def test_a_stale_lock_is_taken_over(setup, volume):
    settings, models = setup
    lock = target(volume, "lora").with_name("ltx-2-19b-distilled-lora-384.safetensors.lock")
    write(lock, b'{"pid": 999999, "host": "dead-worker"}')
    os.utime(lock, (time.time() - 60, time.time() - 60))
    started = time.monotonic()
    provision(settings, models)
    assert time.monotonic() - started < 10
    assert target(volume, "lora").is_file() and not lock.exists()


def test_a_live_lock_is_waited_on_with_a_deadline(setup, volume):
    settings, models = setup
    lock = target(volume, "upscaler").with_name("ltx-2-spatial-upscaler-x2-1.0.safetensors.lock")
    write(lock, b"{}")
    import threading

    stop = threading.Event()
    threading.Thread(target=lambda: [os.utime(lock) for _ in iter(lambda: stop.wait(0.5), True)],
                     daemon=True).start()  # a live holder's heartbeat
    try:
        with pytest.raises(ProvisionError, match="PROVISION_WAIT_S"):
            provision(settings.replace(provision_wait_s=2), models)
    finally:
        stop.set()


def test_a_download_with_the_wrong_content_is_discarded(tmp_path, volume):
    repo, path, folder, good = FILES["lora"]
    evil = good[:-16] + b"\x01" * 16  # same size, valid header, other bytes
    with HubServer({**{f"{r}/{p}": d for r, p, _, d in FILES.values()}, f"{repo}/{path}": evil}) as hub:
        result = run_cli(env_for(tmp_path, volume, hub))
    assert result.returncode == 1
    assert "loras/ltx-2-19b-distilled-lora-384.safetensors has sha256" in result.stderr and "discarded" in result.stderr
    assert not target(volume, "lora").exists()
    assert SECRET_TOKEN not in result.stderr + result.stdout


def test_a_camera_move_that_cannot_be_fetched_at_boot_does_not_fail_the_boot(tmp_path, volume, hub):
    """ENABLE_MODELS=camera_<move> fetches the move's LoRA after the models; failing that (here the hub is plain
    http, which LoRA downloads refuse) only leaves it for its first job."""
    env = env_for(tmp_path, volume, hub, ENABLE_MODELS="camera_static")
    result = run_cli(env, "--boot")
    assert result.returncode == 0, result.stderr
    assert "camera move static not fetched at boot (its first job tries again): camera_motion: " in result.stderr
    assert health.worker_problem(load_settings(env=env)) is None
    bad = run_cli({**env, "ENABLE_MODELS": "camera_pan"}, "--boot")
    assert bad.returncode == 1 and "unknown camera moves ['pan']" in bad.stderr


def test_an_unpublished_size_and_sha256_come_from_the_hub_and_stay_pinned(tmp_path, setup, volume, hub):
    """`size = unpublished` and `sha256 = unpublished` (a file whose page gave neither where config.ini was
    written): provisioning reads both from the hub's file metadata (the LFS id is the sha256), checks the
    download against them and records them, so a later check holds the file to them without the hub."""
    from ltx2_worker.settings import SettingsError

    settings, _ = setup
    config = Path(os.environ["LTX2_CONFIG"])
    text = config.read_text()
    data = FILES["lora"][3]
    pinned = f"size = {len(data)}\nsha256 = {sha256(data)}"
    assert pinned in text
    config.write_text(text.replace(pinned, "size = unpublished\nsha256 = unpublished"))
    models = load_manifest(settings, config)
    lora = next(m for m in models if m.role == "lora")
    assert (lora.size, lora.sha256) == (0, "")
    assert f"loras/{lora.name}: missing (config.ini leaves its size and sha256 to the hub, read when it is " \
           "provisioned)" in check(settings, models)
    provision(settings, models)
    assert target(volume, "lora").read_bytes() == data and len(hub.downloads(lora.name)) == 1
    hub.files.clear()  # from here on the hub is gone: the recorded pin is what holds the file
    assert check(settings, models, sha256=True) == []
    write(target(volume, "lora"), data[:-8] + data[:8])  # same size, same header, other bytes
    lines = check(settings, models, sha256=True)
    assert len(lines) == 1 and f"does not match the manifest's {sha256(data)}" in lines[0], lines
    write(target(volume, "lora"), data[:-100])
    assert f"has {len(data) - 100} bytes, expected exactly {len(data)}" in check(settings, models)[0]
    config.write_text(text.replace(pinned, f"size = {len(data)}\nsha256 ="))
    with pytest.raises(SettingsError, match=r"\[model.lora\] needs its exact size and sha256"):
        load_manifest(settings, config)


def test_a_hub_without_the_unpublished_file_fails_provisioning_naming_it(tmp_path, setup, volume, hub):
    settings, _ = setup
    config = Path(os.environ["LTX2_CONFIG"])
    data = FILES["lora"][3]
    config.write_text(config.read_text().replace(f"size = {len(data)}\nsha256 = {sha256(data)}",
                                                 "size = unpublished\nsha256 = unpublished"))
    hub.files.pop(f"{FILES['lora'][0]}/{FILES['lora'][1]}")
    with pytest.raises(ProvisionError, match=r"cannot read the size and sha256 of loras/ltx-2-19b-distilled-lora-384"
                                             r".safetensors from the hub"):
        provision(settings, load_manifest(settings, config))
