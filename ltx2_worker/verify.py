"""Is a model file on the volume the one the manifest names? Exact size and a valid safetensors header at
every boot (milliseconds, no tensor is read); the full sha256 only when asked, remembered afterwards.

What this catches (models.md): a truncated download ("incomplete metadata"), a Git LFS pointer saved in
place of the weights ("header too large"/"too small"), trailing bytes ("file not fully covered").
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from safetensors import safe_open

from .manifest import ModelFile

LFS_POINTER = b"version https://git-lfs.github.com/spec/v1"
HASH_CHUNK = 16 * 1024 * 1024


def problem(path: Path, model: ModelFile, sha256: bool = False, remember: bool = True) -> str | None:
    """Why `path` is not a valid copy of `model`, or None when it is. `remember=False` records no passed sha256
    next to the file (a read-only model cache)."""
    try:
        stat = path.stat()
    except FileNotFoundError:
        return "missing"
    except OSError as exc:
        return f"cannot be read ({exc.strerror})"
    if stat.st_size != model.size:
        with open(path, "rb") as f:
            if f.read(len(LFS_POINTER)) == LFS_POINTER:
                return f"is a Git LFS pointer file ({stat.st_size} bytes), not the weights"
        return f"has {stat.st_size} bytes, expected exactly {model.size}"
    try:
        with safe_open(str(path), framework="np") as f:
            f.keys()
    except Exception as exc:  # safetensors raises its own error type for every malformed header
        return f"has an invalid safetensors header ({str(exc).strip()})"
    if sha256 and not _hash_recorded(path, model.sha256):
        digest = sha256_of(path)
        if digest != model.sha256:
            return f"sha256 {digest} does not match the manifest's {model.sha256}"
        if remember:
            remember_hash(path, digest)
    return None


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(HASH_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _record_path(path: Path) -> Path:
    return path.parent / ".verified" / f"{path.name}.json"


def _fingerprint(path: Path) -> dict:
    st = path.stat()
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "inode": st.st_ino}


def recorded(path: Path) -> dict:
    """What the last passed sha256 check of `path` recorded: {"sha256", "file": {"size", "mtime_ns", "inode"}}."""
    try:
        record = json.loads(_record_path(path).read_text())
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def _hash_recorded(path: Path, expected: str) -> bool:
    """True when this very file (same size, mtime and inode) already passed a sha256 check."""
    record = recorded(path)
    return record.get("sha256") == expected and record.get("file") == _fingerprint(path)


def remember_hash(path: Path, digest: str) -> None:
    record = _record_path(path)
    record.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(record, json.dumps({"sha256": digest, "file": _fingerprint(path)}).encode())


def write_atomically(path: Path, data: bytes) -> None:
    """Write to a temporary name in the same folder, fsync, then rename: never seen half-written."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
