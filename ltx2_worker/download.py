"""Fetching one model file from the hub into a staging file on the volume itself, resuming what an earlier,
interrupted attempt left, then verifying it and renaming it into place: the final name only ever holds a
complete, checked file. The caller holds the file's lock.

huggingface_hub builds the URL and the headers (HF_ENDPOINT, HF_TOKEN); the transfer is our own because
huggingface_hub 2.x downloads into a fresh, process-unique temporary file and discards it on failure, so
a worker killed at 20 of 27 GB would start again from zero.

Failures that may pass are retried on the schedule in the settings (DOWNLOAD_ATTEMPTS, DOWNLOAD_BACKOFF_S,
DOWNLOAD_RETRY_WINDOW_S), each attempt's cause logged; the last one ends in one ProvisionError (failures.py).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import shutil
import time
from pathlib import Path

import requests
import urllib3

from .failures import HubAnswered, ProvisionError, describe, endpoint_of, failure, network_cause, status_cause
from .manifest import ModelFile
from .settings import Settings
from .verify import problem, remember_hash, sha256_of

log = logging.getLogger(__name__)
CHUNK = 8 * 1024 * 1024
PROGRESS_EVERY_S = 30


def part_path(volume: Path, model: ModelFile) -> Path:
    return volume / "models" / ".downloads" / f"{model.role}-{model.sha256[:16]}.part"


def hub_url(model: ModelFile) -> str:
    from huggingface_hub import hf_hub_url

    return hf_hub_url(model.repo, model.path, revision=model.revision)


def pin_from_hub(model: ModelFile) -> ModelFile:
    """`model` with the size and sha256 the hub gives for its file (config.ini's `unpublished`): the file's Git
    LFS object id is its sha256. Raises ProvisionError when the hub cannot say, or gives no LFS id."""
    from huggingface_hub import get_hf_file_metadata
    from huggingface_hub.utils import HfHubHTTPError

    url = hub_url(model)
    try:
        meta = get_hf_file_metadata(url, timeout=30)
    except (HfHubHTTPError, requests.RequestException, OSError) as exc:
        raise ProvisionError(f"cannot read the size and sha256 of {model.folder}/{model.name} from the hub "
                             f"({describe(model, endpoint_of(url))}): {str(exc).splitlines()[0][:200]}; config.ini "
                             f"leaves them to the hub ([model.{model.role}]: unpublished)") from None
    etag = (meta.etag or "").strip('"').lower()
    if not re.fullmatch(r"[0-9a-f]{64}", etag) or not meta.size:
        raise ProvisionError(f"the hub gives no sha256 (Git LFS object id) for {model.folder}/{model.name} "
                             f"({describe(model, endpoint_of(url))}); write its size and sha256 into "
                             f"[model.{model.role}] in config.ini")
    log.info("%s/%s: size %d and sha256 %s read from the hub (config.ini: unpublished)", model.folder, model.name,
             meta.size, etag)
    return dataclasses.replace(model, size=int(meta.size), sha256=etag)


def hub_file_url(repo: str, path: str, revision: str) -> str:
    """A file on HF_ENDPOINT's hub (huggingface.co unless set), read at each call: the worker's own LoRAs (camera
    moves, controls' IC-LoRAs) are fetched by this URL through the LoRA cache, not provisioned by hub_url."""
    from huggingface_hub import hf_hub_url

    endpoint = os.environ.get("HF_ENDPOINT")
    return hf_hub_url(repo, path, revision=revision, endpoint=endpoint.rstrip("/") if endpoint else None)


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def check_free_space(volume: Path, model: ModelFile, reserve_mb: float) -> None:
    needed = model.size - _size(part_path(volume, model))
    free = shutil.disk_usage(volume).free
    if free - needed < reserve_mb * 1e6:
        raise ProvisionError(
            f"not enough free space on {volume} for {model.folder}/{model.name}: it needs {needed / 1e9:.2f} GB "
            f"more, {free / 1e9:.2f} GB are free and {reserve_mb / 1e3:g} GB must stay free (DISK_RESERVE_MB); "
            "use a larger network volume")


def download(model: ModelFile, volume: Path, settings: Settings, check_sha256: bool) -> None:
    """Download `model` to its place on the volume; raises ProvisionError, or OSError from the volume."""
    check_free_space(volume, model, settings.disk_reserve_mb)
    part = part_path(volume, model)
    part.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    resumed = _size(part)
    url = hub_url(model)
    _fetch_with_retries(model, part, url, settings)
    bad = problem(part, model)
    digest = sha256_of(part) if bad is None and check_sha256 else None
    if digest and digest != model.sha256:
        bad = f"has sha256 {digest}, not the manifest's {model.sha256}"
    if bad:
        part.unlink(missing_ok=True)
        raise ProvisionError(f"downloaded {model.folder}/{model.name} {bad}; it was discarded. The hub "
                             f"({describe(model, endpoint_of(url))}) and [model.{model.role}] in config.ini "
                             "disagree: check its revision, size and sha256 against the file's page on the hub")
    target = model.target(volume)
    target.parent.mkdir(parents=True, exist_ok=True)
    os.replace(part, target)  # same file system: atomic
    if digest:
        remember_hash(target, digest)
    elapsed = time.monotonic() - started
    log.info("downloaded %s/%s in %.0f s (%.0f MB/s)%s", model.folder, model.name, elapsed,
             (model.size - resumed) / 1e6 / max(elapsed, 1e-3),
             f", resumed after {resumed / 1e9:.2f} GB" if resumed else "")


def _fetch_with_retries(model: ModelFile, part: Path, url: str, settings: Settings) -> None:
    """Run transfers until `part` is complete. A passing failure is retried, waits doubling from
    DOWNLOAD_BACKOFF_S, until DOWNLOAD_ATTEMPTS attempts in a row received nothing or the next one would start
    more than DOWNLOAD_RETRY_WINDOW_S after the last progress. A lasting failure (the hub refuses or lacks the
    file) ends at once."""
    endpoint = endpoint_of(url)
    attempt, failures, since = 0, 0, time.monotonic()  # failures: attempts in a row that received nothing
    while True:
        attempt += 1
        before = _size(part)
        try:
            _transfer(model, part, url, settings.download_timeout_s)
            return
        except HubAnswered as exc:
            from huggingface_hub.utils import build_hf_headers

            cause = status_cause(exc, model, endpoint, token_sent="authorization" in
                                 {k.lower() for k in build_hf_headers()})
        except (requests.RequestException, urllib3.exceptions.HTTPError) as exc:
            cause = network_cause(exc, endpoint, settings.download_timeout_s)
        now = time.monotonic()
        received = _size(part) - before
        failures, since = (0, now) if received > 0 else (failures + 1, since)
        got = f" after {received / 1e6:.1f} MB" if received > 0 else ""
        if not cause.passing:
            log.error("%s: attempt %d failed: %s", model.name, attempt, cause.text)
            raise failure(model, endpoint, cause)
        wait = settings.download_backoff_s * 2 ** max(failures - 1, 0)
        if failures >= settings.download_attempts or now + wait - since > settings.download_retry_window_s:
            log.error("%s: attempt %d failed%s: %s; giving up", model.name, attempt, got, cause.text)
            kept = _size(part)
            raise failure(model, endpoint, cause,
                          f" ({failures} attempt{'' if failures == 1 else 's'} without progress in {now - since:.0f} s;"
                          " DOWNLOAD_ATTEMPTS, DOWNLOAD_RETRY_WINDOW_S)"
                          + (f"; the {kept / 1e9:.2f} GB fetched so far are kept for the next start" if kept else ""))
        log.warning("%s: attempt %d failed%s: %s; retrying in %g s (%d of at most %d in a row without progress)",
                    model.name, attempt, got, cause.text, wait, failures, settings.download_attempts)
        time.sleep(wait)


def _transfer(model: ModelFile, part: Path, url: str, timeout_s: float) -> None:
    """Append the missing bytes of `model` to `part` (Range request), fsyncing as it goes."""
    from huggingface_hub.utils import build_hf_headers

    offset = _size(part)
    if offset > model.size:  # not a prefix of this file: start again
        part.unlink()
        offset = 0
    if offset == model.size:
        return
    headers = build_hf_headers()  # HF_TOKEN when set; never logged
    headers["Range"] = f"bytes={offset}-"
    log.info("downloading %s/%s (%.2f GB) from %s@%s%s", model.folder, model.name, model.size / 1e9, model.repo,
             model.revision, f" from byte {offset}" if offset else "")
    with requests.get(url, headers=headers, stream=True, timeout=(timeout_s, timeout_s)) as r:
        if r.status_code == 200 and offset:
            offset = 0  # the server ignored the range: take the whole file
        elif r.status_code not in (200, 206):
            raise HubAnswered(r.status_code, r.headers.get("X-Error-Code"))
        # read1: every byte that arrived reaches the file, even when the connection breaks mid-chunk
        with open(part, "ab" if offset else "wb", buffering=CHUNK) as f:
            last_report = time.monotonic()
            while chunk := r.raw.read1(CHUNK, decode_content=True):
                f.write(chunk)
                if time.monotonic() - last_report > PROGRESS_EVERY_S:
                    f.flush()
                    os.fsync(f.fileno())
                    last_report = time.monotonic()
                    log.info("%s: %.1f of %.1f GB", model.name, f.tell() / 1e9, model.size / 1e9)
            f.flush()
            os.fsync(f.fileno())
