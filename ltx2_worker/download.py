"""Fetching one model file from the hub into a staging file on the volume itself, resuming what an earlier,
interrupted attempt left, then verifying it and renaming it into place: the final name only ever holds a
complete, checked file. The caller holds the file's lock.

huggingface_hub builds the URL and the headers (HF_ENDPOINT, HF_TOKEN); the transfer is our own because
huggingface_hub 2.x downloads into a fresh, process-unique temporary file and discards it on failure, so
a worker killed at 20 of 27 GB would start again from zero.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from pathlib import Path

import requests

from .manifest import ModelFile
from .verify import problem, remember_hash, sha256_of

log = logging.getLogger(__name__)
CHUNK = 8 * 1024 * 1024
ATTEMPTS = 5  # transient network failures are resumed this many times before giving up
TIMEOUT = (15, 60)  # connect, and longest silence between two reads
PROGRESS_EVERY_S = 30


class ProvisionError(Exception):
    """Provisioning cannot complete; the message names the file and what to do."""


def part_path(volume: Path, model: ModelFile) -> Path:
    return volume / "models" / ".downloads" / f"{model.role}-{model.sha256[:16]}.part"


def check_free_space(volume: Path, model: ModelFile, reserve_mb: float) -> None:
    part = part_path(volume, model)
    needed = model.size - (part.stat().st_size if part.exists() else 0)
    free = shutil.disk_usage(volume).free
    if free - needed < reserve_mb * 1e6:
        raise ProvisionError(
            f"not enough free space on {volume} for {model.folder}/{model.name}: it needs {needed / 1e9:.2f} GB "
            f"more, {free / 1e9:.2f} GB are free and {reserve_mb / 1e3:g} GB must stay free (DISK_RESERVE_MB); "
            "use a larger network volume")


def download(model: ModelFile, volume: Path, reserve_mb: float, check_sha256: bool) -> None:
    """Download `model` to its place on the volume; raises ProvisionError."""
    check_free_space(volume, model, reserve_mb)
    part = part_path(volume, model)
    part.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    resumed = part.stat().st_size if part.exists() else 0
    for attempt in range(1, ATTEMPTS + 1):
        try:
            _transfer(model, part)
            break
        except (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError) as exc:
            if attempt == ATTEMPTS:
                raise ProvisionError(f"download of {model.repo}/{model.path} failed {ATTEMPTS} times, last: "
                                     f"{type(exc).__name__}; the {part.stat().st_size / 1e9:.2f} GB fetched so far "
                                     "are kept and the next start resumes") from None
            log.warning("download of %s interrupted (%s); resuming (attempt %d of %d)", model.name,
                        type(exc).__name__, attempt + 1, ATTEMPTS)
            time.sleep(min(30, 2 ** attempt))
    bad = problem(part, model)
    if bad is None and check_sha256 and (digest := sha256_of(part)) != model.sha256:
        bad = f"has sha256 {digest}, not the manifest's {model.sha256}"
    if bad:
        part.unlink(missing_ok=True)
        raise ProvisionError(f"downloaded {model.folder}/{model.name} {bad}; it was discarded")
    target = model.target(volume)
    target.parent.mkdir(parents=True, exist_ok=True)
    os.replace(part, target)  # same file system: atomic
    if check_sha256:
        remember_hash(target, model.sha256)
    elapsed = time.monotonic() - started
    log.info("downloaded %s/%s in %.0f s (%.0f MB/s)%s", model.folder, model.name, elapsed,
             (model.size - resumed) / 1e6 / max(elapsed, 1e-3),
             f", resumed after {resumed / 1e9:.2f} GB" if resumed else "")


def _transfer(model: ModelFile, part: Path) -> None:
    """Append the missing bytes of `model` to `part` (Range request), fsyncing as it goes."""
    from huggingface_hub import hf_hub_url
    from huggingface_hub.utils import build_hf_headers

    offset = part.stat().st_size if part.exists() else 0
    if offset > model.size:  # not a prefix of this file: start again
        part.unlink()
        offset = 0
    if offset == model.size:
        return
    url = hf_hub_url(model.repo, model.path, revision=model.revision)
    headers = build_hf_headers()  # HF_TOKEN when set; never logged
    headers["Range"] = f"bytes={offset}-"
    log.info("downloading %s/%s (%.2f GB) from %s@%s%s", model.folder, model.name, model.size / 1e9, model.repo,
             model.revision, f" from byte {offset}" if offset else "")
    with requests.get(url, headers=headers, stream=True, timeout=TIMEOUT) as r:
        if r.status_code in (401, 403):
            raise ProvisionError(f"the hub refused {model.repo}/{model.path} (HTTP {r.status_code}): set HF_TOKEN "
                                 "to a token of an account that accepted the model's licence")
        if r.status_code == 200 and offset:
            offset = 0  # the server ignored the range: take the whole file
        elif r.status_code not in (200, 206):
            raise ProvisionError(f"the hub answered HTTP {r.status_code} for {model.repo}/{model.path}"
                                 f"@{model.revision}")
        with open(part, "ab" if offset else "wb") as f:
            last_report = time.monotonic()
            for chunk in r.iter_content(CHUNK):
                f.write(chunk)
                if time.monotonic() - last_report > PROGRESS_EVERY_S:
                    f.flush()
                    os.fsync(f.fileno())
                    last_report = time.monotonic()
                    log.info("%s: %.1f of %.1f GB", model.name, f.tell() / 1e9, model.size / 1e9)
            f.flush()
            os.fsync(f.fileno())
