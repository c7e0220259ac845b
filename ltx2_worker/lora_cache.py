"""The LoRAs requests bring, downloaded once into a cache on the network volume that every worker shares.

One file per URL, named by the URL's sha256 (`<key>.safetensors`, beside `<key>.json`: its sha256, size and
host), in LORA_CACHE_DIR, which ltx2_worker.launch adds to ComfyUI's `loras` folders. A download goes through
ltx2_worker.https_fetch (public https only, redirects checked, MAX_LORA_MB and LORA_FETCH_TIMEOUT_S), into a
temporary name, is hashed as it arrives, checked by ltx2_worker.lora_check, and only then renamed into place:
the cache never holds a file that failed, and one downloader per file works at a time across workers (a lock
file beside it, taken over when its holder stops refreshing it). Each use refreshes the file's time; beyond
LORA_CACHE_GB the least recently used files go, but never one used within the last JOB_TIMEOUT_S, which a job of
another worker may be about to load.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import secrets
import time
from collections.abc import Callable
from urllib.parse import urlparse

from .https_fetch import fetch
from .job import InputError, LoraSpec
from .locking import VolumeLock
from .lora_check import LoraRefused, check_lora, header, transformer_layers
from .model_cache import role_paths
from .settings import Settings
from .verify import write_atomically

log = logging.getLogger(__name__)
HUB_HOST = "huggingface.co"
WAIT_POLL_S = 0.5


def checkpoint_layers(settings: Settings) -> dict[str, tuple[int, ...]]:
    """The transformer layers a LoRA must fit, from the header of the checkpoint ComfyUI loads."""
    (path,) = role_paths(settings, "checkpoint")
    return transformer_layers(path)


def fetch_at_boot(cache: LoraCache, named: list[tuple[str, LoraSpec]], timeout_s: float) -> list[str]:
    """At boot: the worker's own LoRAs that ENABLE_MODELS names (camera moves, controls' IC-LoRAs) into the cache,
    so no job waits for their download; the names fetched. One that cannot be fetched is logged and left for its
    first job, which then says why."""
    done = []
    for name, spec in named:
        try:
            cached = cache.get(spec, time.monotonic() + timeout_s)
        except (InputError, LoraCacheUnusable, OSError) as exc:
            log.warning("%s not fetched at boot (its first job tries again): %s", name, exc)
            continue
        log.info("%s: %s (%.2f GB) in the LoRA cache", name, cached.name, cached.size / 1e9)
        done.append(name)
    return done


class LoraCacheUnusable(Exception):
    """The worker's LoRA cache cannot be used (a configuration or volume problem, not the request's)."""


@dataclasses.dataclass(frozen=True)
class CachedLora:
    name: str  # the file name ComfyUI's `loras` folder lists it under
    sha256: str
    size: int


def cache_key(url: str) -> str:
    return hashlib.sha256(url.encode()).hexdigest()[:32]


def where(url: str) -> str:
    """The URL without its query (a signed URL's signature is a secret): what logs may show."""
    parsed = urlparse(url)
    return f"{parsed.hostname}{parsed.path}"


def hub_token_headers(url: str) -> dict[str, str]:
    """HF_TOKEN, sent only to the Hugging Face hub itself (or HF_ENDPOINT's host), never along a redirect to its
    file storage or anywhere else."""
    token = os.environ.get("HF_TOKEN")
    hub_hosts = {HUB_HOST, urlparse(os.environ.get("HF_ENDPOINT", "")).hostname}
    return {"Authorization": f"Bearer {token}"} if token and urlparse(url).hostname in hub_hosts else {}


class LoraCache:
    def __init__(self, settings: Settings, layers: Callable[[], dict[str, tuple[int, ...]]]):
        """`layers()` gives the transformer's layers a LoRA must fit (ltx2_worker.lora_check.transformer_layers
        of the checkpoint), read when the first LoRA is checked."""
        self.settings = settings
        self.folder = settings.lora_cache_dir
        self._layers = layers
        self._known: dict[str, tuple[int, ...]] | None = None

    def get(self, spec: LoraSpec, deadline: float) -> CachedLora:
        """The cached copy of `spec.url`, downloaded and checked first if needed (InputError naming spec.field;
        LoraCacheUnusable when the cache folder cannot be made or written)."""
        key = cache_key(spec.url)
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise LoraCacheUnusable(f"the LoRA cache folder {self.folder} cannot be made ({exc.strerror}): "
                                    "LORA_CACHE_DIR, inside NETWORK_VOLUME_PATH unless absolute, must be a "
                                    "writable folder (is the network volume attached?)") from None
        lock = VolumeLock(self.folder / f"{key}.lock", self.settings.lock_stale_s)
        while True:
            cached = self._lookup(key)
            if cached is not None:
                return cached
            if lock.try_acquire():
                try:
                    return self._lookup(key) or self._download(spec, key, deadline)
                finally:
                    lock.release()
            if time.monotonic() + WAIT_POLL_S > deadline:
                raise InputError(spec.field, "another worker is still downloading this LoRA; the job's deadline "
                                             "(JOB_TIMEOUT_S) passed while waiting for it")
            time.sleep(WAIT_POLL_S)

    def _lookup(self, key: str) -> CachedLora | None:
        path, record = self.folder / f"{key}.safetensors", self.folder / f"{key}.json"
        try:
            meta = json.loads(record.read_text())
            if path.stat().st_size != meta["size"]:
                return None
            now = time.time()
            os.utime(path, (now, now))  # the least-recently-used order across workers
        except (OSError, ValueError, KeyError, TypeError):
            return None
        return CachedLora(path.name, meta["sha256"], meta["size"])

    def _download(self, spec: LoraSpec, key: str, deadline: float) -> CachedLora:
        s = self.settings
        part = self.folder / f".{key}.{secrets.token_hex(4)}.part"
        digest, started = hashlib.sha256(), time.monotonic()
        timeout = min(s.lora_fetch_timeout_s, deadline - started)
        try:
            with open(part, "wb") as f:
                def write(chunk: bytes) -> None:
                    digest.update(chunk)
                    f.write(chunk)

                max_mb = spec.max_mb if spec.max_mb is not None else s.max_lora_mb
                fetch(spec.url, spec.field, int(max_mb * 1_000_000), timeout, write, hub_token_headers)
                f.flush()
                os.fsync(f.fileno())
            try:
                layers = check_lora(header(part), self.layers())
            except LoraRefused as exc:
                raise InputError(spec.field, str(exc)) from None
            size = part.stat().st_size
            os.replace(part, self.folder / f"{key}.safetensors")
        finally:
            part.unlink(missing_ok=True)
        write_atomically(self.folder / f"{key}.json", json.dumps(
            {"sha256": digest.hexdigest(), "size": size, "host": urlparse(spec.url).hostname}).encode())
        log.info("LoRA %s: %d bytes, %d layers, downloaded and checked in %.1f s", where(spec.url), size, layers,
                 time.monotonic() - started)
        self.evict(keep=key)
        return CachedLora(f"{key}.safetensors", digest.hexdigest(), size)

    def layers(self) -> dict[str, tuple[int, ...]]:
        if self._known is None:
            self._known = self._layers()
        return self._known

    def evict(self, keep: str) -> None:
        """Least recently used first, until the cache fits LORA_CACHE_GB; never `keep`, nor a file used within
        JOB_TIMEOUT_S (another worker's job may load it), so the cache may stay over its size for that long."""
        limit = self.settings.lora_cache_gb * 1e9
        entries = []
        for path in self.folder.glob("*.safetensors"):
            try:
                st = path.stat()
            except FileNotFoundError:
                continue
            entries.append((st.st_mtime, st.st_size, path))
        total = sum(size for _, size, _ in entries)
        recent = time.time() - self.settings.job_timeout_s
        for mtime, size, path in sorted(entries):
            if total <= limit:
                return
            if path.stem == keep or mtime > recent:
                continue
            (self.folder / f"{path.stem}.json").unlink(missing_ok=True)  # the record first: never a stale match
            path.unlink(missing_ok=True)
            total -= size
            log.info("LoRA cache: removed %s (least recently used, %d bytes)", path.name, size)
        if total > limit:
            log.warning("LoRA cache holds %.1f GB, over LORA_CACHE_GB (%g): the rest was used within JOB_TIMEOUT_S",
                        total / 1e9, self.settings.lora_cache_gb)
