"""Provisioning the network volume: verify every manifest file, download what is missing or bad, one worker
per file; a file RunPod's model cache holds intact is used there and needs nothing on the volume. Shared by
entrypoint.sh (at every start) and setup_netvolume.sh (once, on a pod):

    python -m ltx2_worker.provision [--check] [--sha256] [--boot]

--check verifies only (exit 1 and one line per bad file; a CACHED line per file served from the model cache);
--sha256 also checks content hashes (remembered on the volume, so a file is hashed once; a cached file is
hashed every time, as nothing is written into the cache); --boot writes a failure to BOOT_ERROR_FILE so every
job reports it.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import re
import sys
import time
from pathlib import Path

from . import camera, control
from .download import download, hub_url, part_path, pin_from_hub
from .failures import ProvisionError, endpoint_of, failure, volume_cause
from .health import record_boot_failure
from .locking import VolumeLock
from .lora_cache import LoraCache, checkpoint_layers
from .manifest import ModelFile, load_manifest
from .model_cache import cached_files, model_path
from .settings import Settings, SettingsError, load_settings
from .verify import problem, recorded

log = logging.getLogger(__name__)
WAIT_POLL_S = 2.0


def volume_root(settings: Settings) -> Path:
    volume = settings.volume_path
    if volume.is_dir():
        return volume
    if not settings.allow_container_disk:
        raise ProvisionError(
            f"no network volume at {volume}: attach one to the endpoint (about 60 GB), or set "
            "ALLOW_CONTAINER_DISK=true to download ~45 GB onto the container disk at every cold start")
    log.warning("no network volume at %s: downloading onto the container disk (ALLOW_CONTAINER_DISK)", volume)
    try:
        volume.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ProvisionError(f"cannot create {volume} on the container disk (ALLOW_CONTAINER_DISK): "
                             f"{exc.strerror}") from None
    return volume


def pinned(model: ModelFile, volume: Path | None, ask_hub: bool) -> ModelFile | None:
    """`model` with its exact size and sha256 where config.ini leaves them to the hub (`unpublished`): those its
    verified download recorded beside it on the volume, else (ask_hub) the hub's file metadata; None when
    neither is known."""
    if model.size and model.sha256:
        return model
    if volume is not None:
        record = recorded(model.target(volume))
        size, digest = (record.get("file") or {}).get("size"), record.get("sha256")
        if isinstance(size, int) and size > 0 and isinstance(digest, str) and re.fullmatch(r"[0-9a-f]{64}", digest):
            return dataclasses.replace(model, size=size, sha256=digest)
    return pin_from_hub(model) if ask_hub else None


def check(settings: Settings, models: list[ModelFile], sha256: bool = False,
          cached: dict[str, Path] | None = None) -> list[str]:
    """One line per bad or missing file; empty when the volume (and the model cache) are ready."""
    cached = cached_files(settings, models) if cached is None else cached
    if any(m.role not in cached for m in models):
        volume_root(settings)  # a volume is needed: say so if it is not there (or make it, ALLOW_CONTAINER_DISK)
    lines = []
    for model in models:
        started = time.perf_counter()
        in_cache = model.role in cached
        if not in_cache:
            known = pinned(model, settings.volume_path if settings.volume_path.is_dir() else None, ask_hub=False)
            if known is None:
                lines.append(f"{model.folder}/{model.name}: missing (config.ini leaves its size and sha256 to the "
                             "hub, read when it is provisioned)")
                continue
            model = known
        bad = problem(model_path(settings, model, cached), model, sha256=sha256, remember=not in_cache)
        if bad:
            lines.append(f"{model.folder}/{model.name}: {bad}")
        else:
            log.info("ok %s/%s (%.2f GB) in %.1f ms%s", model.folder, model.name, model.size / 1e9,
                     (time.perf_counter() - started) * 1000, " in the model cache" if in_cache else "")
    return lines


def provision(settings: Settings, models: list[ModelFile], sha256: bool = False) -> None:
    """Make every file valid on the volume, except those the model cache holds intact; raises ProvisionError
    naming the first file that cannot be."""
    cached = cached_files(settings, models)
    for model in models:
        if model.role in cached:
            log.info("ok %s/%s in the model cache at %s: used in place", model.folder, model.name,
                     cached[model.role])
    missing = [m for m in models if m.role not in cached]
    if not missing:
        return
    volume = volume_root(settings)
    for model in missing:
        try:
            known = pinned(model, volume, ask_hub=True)
            ensure(settings, volume, known, sha256 or known is not model)  # the hub's pin: its sha256 is checked
        except ProvisionError:
            raise
        except OSError as exc:  # the volume's own errors: read-only, full, no permission
            cause = volume_cause(exc, volume, part_path(volume, model))
            raise failure(model, endpoint_of(hub_url(model)), cause) from None


def ensure(settings: Settings, volume: Path, model: ModelFile, sha256: bool) -> None:
    target = model.target(volume)
    bad = problem(target, model, sha256=sha256)
    if bad is None:
        log.info("ok %s/%s", model.folder, model.name)
        return
    log.info("%s/%s %s", model.folder, model.name, bad)
    lock = VolumeLock(target.with_name(target.name + ".lock"), settings.lock_stale_s)
    give_up = time.monotonic() + settings.provision_wait_s
    waiting_logged = False
    while True:
        if lock.try_acquire():
            try:
                bad = problem(target, model, sha256=sha256)  # another worker may have finished it meanwhile
                if bad is None:
                    return
                if target.exists():
                    target.unlink()  # invalid: it must never be loaded
                download(model, volume, settings, settings.sha256_after_download or sha256)
                return
            finally:
                lock.release()
        if not waiting_logged:
            log.info("another worker is downloading %s/%s; waiting for it", model.folder, model.name)
            waiting_logged = True
        if time.monotonic() > give_up:
            raise ProvisionError(f"waited {settings.provision_wait_s:g} s for another worker's download of "
                                 f"{model.folder}/{model.name} (PROVISION_WAIT_S); a fresh worker waits again and "
                                 "finds the file once that download is done", refresh_worker=True)
        time.sleep(WAIT_POLL_S)
        if not lock.held_by_someone() and problem(target, model, sha256=sha256) is None:
            return


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ltx2_worker.provision", description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="verify only; download nothing")
    parser.add_argument("--sha256", action="store_true", help="also check every file's sha256 (remembered)")
    parser.add_argument("--boot", action="store_true", help="write a failure to BOOT_ERROR_FILE")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s provision: %(message)s")
    settings = None
    try:
        settings = load_settings()
        if args.boot:
            settings.boot_error_file.unlink(missing_ok=True)  # a new start: only this start's failures count
        models = load_manifest(settings)
        if args.check:
            cached = cached_files(settings, models)
            for model in models:
                if model.role in cached:
                    print(f"CACHED {model.folder}/{model.name}: {cached[model.role]}")
            lines = check(settings, models, sha256=args.sha256, cached=cached)
            for line in lines:
                print(f"BAD {line}")
            if lines:
                return 1
            where = (f"{len(models) - len(cached)} on {settings.volume_path}, {len(cached)} in the model cache at "
                     f"{settings.model_cache_path}" if cached else f"on {settings.volume_path}")
            print(f"OK all {len(models)} model files {where} are valid" if not cached else
                  f"OK all {len(models)} model files are valid: {where}")
            return 0
        provision(settings, models, sha256=args.sha256)
        # the camera moves and controls' IC-LoRAs ENABLE_MODELS names: into the LoRA cache now, not at a job
        if camera.enabled_moves(settings) or control.enabled_controls(settings):
            cache = LoraCache(settings, lambda: checkpoint_layers(settings))
            camera.fetch_enabled(settings, cache, settings.lora_fetch_timeout_s)
            control.fetch_enabled(settings, cache, settings.lora_fetch_timeout_s)
        return 0
    except (ProvisionError, SettingsError, OSError) as exc:
        message = f"model provisioning failed: {exc}"
        refresh_worker = isinstance(exc, ProvisionError) and exc.refresh_worker
        log.error(message)
        if args.boot and settings is not None:
            record_boot_failure(settings, message, refresh_worker)
            if refresh_worker:
                log.error("every job will answer with this and refresh_worker, so RunPod starts a fresh worker")
        return 1


if __name__ == "__main__":
    sys.exit(main())
