"""The model manifest (config.ini's [model.<role>] sections): which files the worker needs, where they come
from, and their exact size and sha256. Data, not code: adding a file is a config change."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

from .settings import Settings, SettingsError, config_path, read_config

SECTION = re.compile(r"model\.(?P<role>[a-z0-9_]+)")


@dataclasses.dataclass(frozen=True)
class ModelFile:
    role: str
    repo: str
    revision: str
    path: str  # inside the hub repo
    folder: str  # ComfyUI model folder under <volume>/models/
    # size 0 and sha256 "" where config.ini says `unpublished`: provisioning reads both from the hub (provision.pinned)
    size: int
    sha256: str
    required: bool

    @property
    def name(self) -> str:
        return Path(self.path).name

    def target(self, volume: Path) -> Path:
        return volume / "models" / self.folder / self.name


CAMERA_PREFIX = "camera_"  # ENABLE_MODELS=camera_<move>: a camera move's LoRA (ltx2_worker.camera), not a role
CONTROL_PREFIX = "control_"  # ENABLE_MODELS=control_<kind>: a control's IC-LoRA (ltx2_worker.control), not a role
# the manifest roles a control's preprocessor needs, provisioned with ENABLE_MODELS=control_<kind>
CONTROL_ROLES = {"depth": ("depth_model", "depth_vae"), "pose": ("pose_model",)}
UNPUBLISHED = "unpublished"  # config.ini's word for a size and sha256 left to the hub's file metadata


def enabled_names(settings: Settings) -> set[str]:
    """Every name ENABLE_MODELS lists."""
    return {r.strip() for r in settings.enable_models.split(",") if r.strip()}


def enabled_roles(settings: Settings) -> set[str]:
    """The optional manifest roles ENABLE_MODELS names (camera moves aside), a control's preprocessor files
    (CONTROL_ROLES) among them."""
    names = enabled_names(settings)
    roles = {r for r in names if not r.startswith((CAMERA_PREFIX, CONTROL_PREFIX))}
    for name in names:
        if name.startswith(CONTROL_PREFIX):
            roles.update(CONTROL_ROLES.get(name[len(CONTROL_PREFIX):], ()))
    return roles


def load_manifest(settings: Settings, config_file: Path | None = None) -> list[ModelFile]:
    """The files to provision: every required entry, plus the optional roles named in ENABLE_MODELS."""
    parser = read_config(config_file or config_path())
    entries = {}
    for section in parser.sections():
        match = SECTION.fullmatch(section)
        if not match:
            continue
        s = parser[section]
        try:
            entries[match["role"]] = ModelFile(
                role=match["role"], repo=s["repo"], revision=s["revision"], path=s["path"], folder=s["folder"],
                size=_size(s["size"]), sha256=_sha256(s.get("sha256", "")), required=s.getboolean("required"))
        except (KeyError, ValueError) as exc:
            raise SettingsError(f"[{section}] is incomplete or malformed: {exc}") from None
    wanted = enabled_roles(settings)
    unknown = wanted - set(entries)
    if unknown:
        raise SettingsError(f"ENABLE_MODELS names unknown roles {sorted(unknown)}; known: {sorted(entries)}")
    chosen = [m for m in entries.values() if m.required or m.role in wanted]
    for m in chosen:
        unpublished = m.size == 0 and m.sha256 == ""
        if not unpublished and (m.size <= 0 or not re.fullmatch(r"[0-9a-f]{64}", m.sha256)):
            raise SettingsError(f"[model.{m.role}] needs its exact size and sha256 before it can be provisioned "
                                f"(read them from the file's page on the hub), or both `{UNPUBLISHED}` to read "
                                "them from the hub's file metadata when it is provisioned")
    return chosen


def _size(value: str) -> int:
    return 0 if value.strip().lower() == UNPUBLISHED else int(value)


def _sha256(value: str) -> str:
    """The manifest's sha256: `unpublished` is "" (read from the hub), a missing one stays invalid."""
    value = value.strip().lower()
    return "" if value == UNPUBLISHED else (value or "missing")
