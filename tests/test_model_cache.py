"""RunPod's cached models: a Hugging Face repo laid out as the hub client's cache (refs/, snapshots/ linking into
blobs/), mounted read-only beside the volume. A manifest file there, intact, is used in place: never downloaded,
copied or written; what is not cached (or not intact) is provisioned on the volume as before."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
import test_provision
import yaml
from test_provision import FILES, env_for, make_config, run_cli, target

from ltx2_worker.launch import extra_model_paths_yaml
from ltx2_worker.manifest import load_manifest
from ltx2_worker.model_cache import cached_files
from ltx2_worker.settings import SettingsError, load_settings
from ltx2_worker.start_files import list_path

from helpers import free_port
from hf_server import tiny_safetensors

COMMIT = "c0ffee0000000000000000000000000000000001"
OTHER = "badc0de000000000000000000000000000000002"
volume, hub = test_provision.volume, test_provision.hub  # the provisioning tests' fixtures: a volume, the hub
LIGHTRICKS = {path: data for repo, path, _, data in FILES.values() if repo == "Lightricks/LTX-2"}


def runpod_cache(root: Path, repo: str, commit: str, files: dict[str, bytes],
                 refs: dict[str, str] | None = None) -> Path:
    """A repo as huggingface_hub (and RunPod's model cache) lays it out: blobs/<sha256>, snapshots/<commit>/<path>
    as a relative link to its blob, refs/<revision> holding the commit."""
    repo_dir = root / ("models--" + repo.replace("/", "--"))
    for path, data in files.items():
        blob = repo_dir / "blobs" / hashlib.sha256(data).hexdigest()
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(data)
        link = repo_dir / "snapshots" / commit / path
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    for revision, target_commit in (refs if refs is not None else {"main": commit}).items():
        (repo_dir / "refs").mkdir(parents=True, exist_ok=True)
        (repo_dir / "refs" / revision).write_text(target_commit)
    return repo_dir / "snapshots" / commit


def every_model_cached(root: Path) -> None:
    """Both repos in RunPod's cache at `root`: Lightricks/LTX-2 (checkpoint, LoRA, upscaler) and Comfy-Org/ltx-2
    (the text encoder)."""
    runpod_cache(root, "Lightricks/LTX-2", COMMIT, LIGHTRICKS)
    runpod_cache(root, "Comfy-Org/ltx-2", OTHER, {FILES["text_encoder"][1]: FILES["text_encoder"][3]})


def tree(root: Path) -> dict[str, tuple]:
    """Every entry under `root` with its size and mtime: what "untouched" compares."""
    return {str(p.relative_to(root)): (p.is_symlink(), p.lstat().st_size, p.lstat().st_mtime_ns)
            for p in sorted(root.rglob("*"))}


def cache_env(tmp_path, volume, hub, cache: Path, config: Path | None = None) -> dict[str, str]:
    return {**env_for(tmp_path, volume, hub), "MODEL_CACHE_PATH": str(cache),
            **({"LTX2_CONFIG": str(config)} if config else {})}


def test_cached_files_are_used_in_place_and_only_the_rest_is_downloaded(tmp_path, volume, hub):
    cache = tmp_path / "huggingface-cache" / "hub"
    snapshot = runpod_cache(cache, "Lightricks/LTX-2", COMMIT, LIGHTRICKS)
    before = tree(cache)
    env = cache_env(tmp_path, volume, hub, cache)
    result = run_cli(env)
    assert result.returncode == 0, result.stderr
    for role in ("checkpoint", "lora", "upscaler"):
        name = Path(FILES[role][1]).name
        assert hub.downloads(name) == [], f"{role} is cached: no request for it"
        assert not target(volume, role).exists(), "a cached file is not copied onto the volume"
        assert f"in the model cache at {snapshot / name}: used in place" in result.stderr
    assert target(volume, "text_encoder").read_bytes() == FILES["text_encoder"][3]
    assert tree(cache) == before, "nothing is written into the cache"
    check = run_cli(env, "--check", "--sha256")
    assert check.returncode == 0, check.stdout + check.stderr
    assert f"CACHED checkpoints/ltx-2-19b-dev-fp8.safetensors: {snapshot / 'ltx-2-19b-dev-fp8.safetensors'}" in \
        check.stdout.splitlines()
    assert check.stdout.splitlines()[-1] == (f"OK all 4 model files are valid: 1 on {volume}, 3 in the model cache "
                                             f"at {cache}")
    assert tree(cache) == before, "a sha256 check records nothing in the cache"


def test_a_fully_cached_manifest_needs_no_volume(tmp_path, hub):
    cache = tmp_path / "cache"
    every_model_cached(cache)
    result = run_cli(cache_env(tmp_path, tmp_path / "no-volume", hub, cache))
    assert result.returncode == 0, result.stderr
    assert hub.downloads(".safetensors") == [] and not (tmp_path / "no-volume").exists()


def test_a_cached_file_of_the_wrong_size_is_ignored_and_downloaded_to_the_volume(tmp_path, volume, hub):
    cache = tmp_path / "cache"
    lora_path = FILES["lora"][1]
    runpod_cache(cache, "Lightricks/LTX-2", COMMIT, {**LIGHTRICKS, lora_path: tiny_safetensors(5_000, 7)})
    before = tree(cache)
    result = run_cli(cache_env(tmp_path, volume, hub, cache))
    assert result.returncode == 0, result.stderr
    assert len(hub.downloads(Path(lora_path).name)) == 1
    assert target(volume, "lora").read_bytes() == FILES["lora"][3]
    assert hub.downloads("ltx-2-19b-dev-fp8.safetensors") == []
    assert tree(cache) == before


def pinned_config(tmp_path: Path, role: str, revision: str) -> Path:
    """make_config's manifest with `role` pinned to `revision`."""
    head, section, rest = make_config(tmp_path).read_text().partition(f"[model.{role}]\n")
    config = tmp_path / f"config-{role}-{revision[:8]}.ini"
    config.write_text(head + section + rest.replace("revision = main", f"revision = {revision}", 1))
    return config


def test_refs_decide_the_snapshot_and_a_pinned_commit_is_looked_up_as_such(tmp_path, volume, hub):
    cache = tmp_path / "cache"
    # the cache holds the repo at OTHER, and refs/main says so; the manifest pins the checkpoint to COMMIT
    runpod_cache(cache, "Lightricks/LTX-2", OTHER, LIGHTRICKS, refs={"main": OTHER})
    env = cache_env(tmp_path, volume, hub, cache, pinned_config(tmp_path, "checkpoint", COMMIT))
    settings = load_settings(env=env)
    models = load_manifest(settings, Path(env["LTX2_CONFIG"]))
    assert sorted(cached_files(settings, models)) == ["lora", "upscaler"]  # found through refs/main
    result = run_cli(env)
    assert result.returncode == 0, result.stderr
    assert len(hub.downloads("ltx-2-19b-dev-fp8.safetensors")) == 1, "the pinned commit is not in the cache"
    assert hub.downloads("ltx-2-19b-distilled-lora-384.safetensors") == []
    # the same checkpoint pinned to the commit the cache holds is used from it
    config = pinned_config(tmp_path, "checkpoint", OTHER)
    settings = load_settings(env={**env, "LTX2_CONFIG": str(config)})
    assert "checkpoint" in cached_files(settings, load_manifest(settings, config))


def test_a_snapshot_that_would_shadow_a_volume_file_is_not_used(tmp_path, volume, hub):
    """ComfyUI searches the cache's folder first: a same-named file of another size there (a re-upload at
    `main`) would be loaded instead of the volume's, so that snapshot serves nothing of that ComfyUI folder."""
    cache = tmp_path / "cache"
    distilled = "ltx-2-19b-distilled-fp8.safetensors"
    files = {**FILES,
             "checkpoint_distilled": ("Lightricks/LTX-2", distilled, "checkpoints", tiny_safetensors(9_000, 8))}
    runpod_cache(cache, "Lightricks/LTX-2", COMMIT, {**LIGHTRICKS, distilled: tiny_safetensors(8_000, 9)})
    env = {**cache_env(tmp_path, volume, hub, cache), "LTX2_CONFIG": str(make_config(tmp_path, files))}
    settings = load_settings(env=env)
    models = load_manifest(settings, Path(env["LTX2_CONFIG"]))
    assert sorted(cached_files(settings, models)) == ["lora", "upscaler"]


def test_comfyuis_yaml_names_the_cache_folders_first(tmp_path, volume, hub):
    cache = tmp_path / "cache"
    lightricks = runpod_cache(cache, "Lightricks/LTX-2", COMMIT, LIGHTRICKS)
    comfy_org = runpod_cache(cache, "Comfy-Org/ltx-2", OTHER, {FILES["text_encoder"][1]: FILES["text_encoder"][3]})
    env = cache_env(tmp_path, volume, hub, cache)
    settings = load_settings(env=env)
    models = load_manifest(settings, Path(env["LTX2_CONFIG"]))
    cached = cached_files(settings, models)
    text = extra_model_paths_yaml(volume, models, cached)
    parsed = yaml.safe_load(text)
    assert list(parsed)[:2] == ["ltx2_model_cache_1", "ltx2_model_cache_2"] and list(parsed)[2] == "ltx2_volume"
    entries = {Path(e["base_path"]): e for name, e in parsed.items() if name.startswith("ltx2_model_cache")}
    assert entries[lightricks] == {"base_path": str(lightricks), "checkpoints": ".", "latent_upscale_models": ".",
                                   "loras": "."}
    assert entries[comfy_org] == {"base_path": str(comfy_org), "text_encoders": "split_files/text_encoders"}
    for model in models:  # as ComfyUI's extra_config.py joins them: each cached file is found under its folder
        entry = entries[next(b for b in entries if cached[model.role].is_relative_to(b))]
        folder = Path(os.path.normpath(os.path.join(entry["base_path"], entry[model.folder])))
        assert (folder / model.name).resolve() == cached[model.role].resolve()


def run_prefetch_with(env: dict[str, str]) -> str:
    """The prefetch's log, run as entrypoint.sh runs it after provisioning; ComfyUI not answering (a closed port)."""
    env = {**env, "PREFETCH_HEADROOM_GB": "0", "COMFY_URL": f"http://127.0.0.1:{free_port()}"}
    result = subprocess.run([sys.executable, "-m", "ltx2_worker.prefetch"], cwd=Path(__file__).parents[1], env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "prefetch: read " in result.stderr, result.stderr
    return result.stderr


def test_the_prefetch_yields_to_comfyui_by_default_only_where_the_first_reads_come_from_the_model_cache(
        tmp_path, volume, hub):
    """auto: the text encoder and the checkpoint on the host's own disk (the model cache) beside the image that
    ComfyUI starts from: yield; on the network volume: eight readers at once. true and false decide alone."""
    cache = tmp_path / "cache"
    every_model_cached(cache)
    env = cache_env(tmp_path, tmp_path / "no-volume", hub, cache)
    assert run_cli(env).returncode == 0
    yielding = "one reader until ComfyUI answers at "
    assert yielding in run_prefetch_with(env)
    assert yielding not in run_prefetch_with({**env, "PREFETCH_YIELD_TO_COMFY": "false"})

    only_checkpoint = tmp_path / "cache-2"  # the text encoder, read first, from the volume
    runpod_cache(only_checkpoint, "Lightricks/LTX-2", COMMIT, LIGHTRICKS)
    env = cache_env(tmp_path, volume, hub, only_checkpoint)
    assert run_cli(env).returncode == 0
    assert yielding not in run_prefetch_with(env)
    assert yielding in run_prefetch_with({**env, "PREFETCH_YIELD_TO_COMFY": "true"})

    env = {**env_for(tmp_path, volume, hub), "MODEL_CACHE_PATH": ""}
    assert yielding not in run_prefetch_with(env)


def test_the_prefetch_reads_comfyuis_start_files_first_on_auto_only_where_the_models_come_from_the_model_cache(
        tmp_path, volume, hub):
    """PREFETCH_LIBRARIES=auto decides as yielding does: the models on the image's disk, ComfyUI's start files
    first; the models on the network volume, not (they would only delay the models)."""
    cache = tmp_path / "cache"
    every_model_cached(cache)
    env = {**cache_env(tmp_path, tmp_path / "no-volume", hub, cache), "PREFETCH_LIBRARIES": "auto"}
    assert run_cli(env).returncode == 0
    first = "prefetch: libraries: no list yet in "  # a first start: the branch taken, nothing listed to read
    assert first in run_prefetch_with(env)
    assert first not in run_prefetch_with({**env, "PREFETCH_LIBRARIES": "false"})
    env = {**env_for(tmp_path, volume, hub), "MODEL_CACHE_PATH": "", "PREFETCH_LIBRARIES": "auto"}
    assert first not in run_prefetch_with(env)
    assert first in run_prefetch_with({**env, "PREFETCH_LIBRARIES": "true"})


def test_once_comfyuis_start_files_are_read_first_the_prefetch_no_longer_yields_on_auto(tmp_path, hub):
    """The models in the model cache and a list from an earlier start: the list is read first with every reader,
    and then no reader yields to ComfyUI's start (there is little left for it to read, and one reader only
    delayed the models on the GPU host); PREFETCH_YIELD_TO_COMFY=true still yields."""
    cache = tmp_path / "cache"
    every_model_cached(cache)
    env = {**cache_env(tmp_path, tmp_path / "no-volume", hub, cache), "COMFY_PYTHON": sys.executable}
    assert run_cli(env).returncode == 0
    yielding = "one reader until ComfyUI answers at "
    assert yielding in run_prefetch_with(env)  # a first start: no list, so it yields
    listing = list_path(load_settings(env=env))
    listing.parent.mkdir(parents=True, exist_ok=True)
    module = tmp_path / "img" / "m.pyc"
    module.parent.mkdir()
    module.write_bytes(os.urandom(4096))
    listing.write_text(f"{module}\n")
    log = run_prefetch_with(env)
    assert "prefetch: libraries first: 1 files" in log and yielding not in log, log
    assert yielding in run_prefetch_with({**env, "PREFETCH_YIELD_TO_COMFY": "true"})


def test_yield_to_comfy_is_true_false_or_auto():
    assert load_settings(env={}).prefetch_yield_to_comfy is None
    assert load_settings(env={"PREFETCH_YIELD_TO_COMFY": "AUTO"}).prefetch_yield_to_comfy is None
    assert load_settings(env={"PREFETCH_YIELD_TO_COMFY": "on"}).prefetch_yield_to_comfy is True
    with pytest.raises(SettingsError, match="PREFETCH_YIELD_TO_COMFY.*must be auto or true or false"):
        load_settings(env={"PREFETCH_YIELD_TO_COMFY": "sometimes"})
