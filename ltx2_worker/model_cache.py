"""Where each model file is read from: RunPod's cached models (a Hugging Face repo on the host's local disk,
no billed download) when the manifest's file is there intact, else the network volume.

RunPod mounts a cached repo as the hub client lays out its cache (MODEL_CACHE_PATH):

    <root>/models--<org>--<name>/refs/<revision>           holds the commit
    <root>/models--<org>--<name>/snapshots/<commit>/<path>  the file (often a link into blobs/)

A cached file is used in place when it has the manifest's exact size and a valid safetensors header
(verify.problem); it is never copied, written or locked: the cache is read-only on RunPod.
"""

from __future__ import annotations

import re
from pathlib import Path

from .manifest import ModelFile, load_manifest
from .settings import Settings
from .verify import problem

COMMIT = re.compile(r"[0-9a-f]{40}")


def repo_dir(root: Path, repo: str) -> Path:
    return root / ("models--" + repo.replace("/", "--"))


def snapshot_dir(root: Path, model: ModelFile) -> Path | None:
    """The snapshot holding `model`'s revision: the revision itself when it is a commit, else the commit its
    refs/<revision> file names; None when the cache does not know that revision."""
    if COMMIT.fullmatch(model.revision):
        commit = model.revision
    else:
        try:
            commit = (repo_dir(root, model.repo) / "refs" / model.revision).read_text().strip()
        except (OSError, UnicodeDecodeError):
            return None
        if not COMMIT.fullmatch(commit):
            return None
    return repo_dir(root, model.repo) / "snapshots" / commit


def cached_path(root: Path, model: ModelFile) -> Path | None:
    """Where the cache would hold `model` (not checked)."""
    snapshot = snapshot_dir(root, model)
    return snapshot / model.path if snapshot else None


def beside_the_image(cached_roles: set[str]) -> bool:
    """Whether the first job's first reads, the text encoder and the checkpoint, come from RunPod's model cache,
    on the host's own disk like the image ComfyUI starts from (not from a network volume)."""
    return {"text_encoder", "checkpoint"} <= cached_roles


def cached_files(settings: Settings, models: list[ModelFile]) -> dict[str, Path]:
    """role -> cached path, for every model whose cached copy is valid and may be used in place.

    A snapshot folder becomes one of ComfyUI's model folders, so it is not used when it also holds a file of
    the same name as a model that comes from the volume (e.g. a re-uploaded file of another size at `main`):
    ComfyUI, searching the cache first, would load that file instead.
    """
    root = settings.model_cache_path
    if root is None or not root.is_dir():
        return {}
    found = {}
    for model in models:
        path = cached_path(root, model)
        if path is not None and path.is_file() and problem(path, model) is None:
            found[model.role] = path
    while True:
        shadowing = {role for role, path in found.items()
                     if any(other.role not in found and other.folder == model_of(models, role).folder
                            and (path.parent / other.name).exists() for other in models)}
        if not shadowing:
            return found
        for role in shadowing:
            del found[role]


def model_of(models: list[ModelFile], role: str) -> ModelFile:
    return next(m for m in models if m.role == role)


def model_path(settings: Settings, model: ModelFile, cached: dict[str, Path]) -> Path:
    """The one place `model` is read from: its cached copy, else its file on the volume."""
    return cached.get(model.role) or model.target(settings.volume_path)


def role_paths(settings: Settings, *roles: str) -> list[Path]:
    """The files ComfyUI loads for these manifest roles (model_path of each), from one reading of the manifest."""
    models = load_manifest(settings)
    cached = cached_files(settings, models)
    return [model_path(settings, model_of(models, role), cached) for role in roles]


def repo_folder(cached: Path, model: ModelFile) -> tuple[Path, str]:
    """(snapshot folder, the file's folder inside it as ComfyUI's yaml writes it: "." for the top)."""
    parent = Path(model.path).parent.as_posix()
    snapshot = cached
    for _ in Path(model.path).parts:
        snapshot = snapshot.parent
    return snapshot, parent
