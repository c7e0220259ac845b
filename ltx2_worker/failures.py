"""What a failed model download means, said once: the cause, the file, the hub and what to do, and whether it
may pass (connection refused or reset, DNS, timeout, HTTP 5xx/429: retried, then a fresh worker tries again)
or lasts (the hub refuses or lacks the file, the volume cannot be written: a fresh worker would fail alike).

The cause is read from the exception itself (requests wraps urllib3 wraps socket errors), never from a
secondary step such as the size of a staging file that may not exist. No header or token is ever quoted.
"""

from __future__ import annotations

import dataclasses
import errno
import socket
from pathlib import Path
from urllib.parse import urlsplit

import requests
from urllib3.exceptions import NameResolutionError, ProtocolError
from urllib3.exceptions import TimeoutError as Urllib3Timeout

from .manifest import ModelFile

AGAIN = "this may pass: a fresh start tries again (a serverless worker asks RunPod for a new one)"


class ProvisionError(Exception):
    """Provisioning cannot complete; the message names the file, the cause and what to do."""

    def __init__(self, message: str, refresh_worker: bool = False):
        super().__init__(message)
        self.refresh_worker = refresh_worker  # a fresh worker could succeed where this one cannot


@dataclasses.dataclass(frozen=True)
class Cause:
    text: str  # what happened: "connection refused"
    fix: str  # what to do about it
    passing: bool  # retried; and a fresh worker may succeed later


class HubAnswered(Exception):
    """The hub answered with a status other than 200/206."""

    def __init__(self, status: int, error_code: str | None):
        super().__init__(f"HTTP {status}")
        self.status = status
        self.error_code = error_code  # the hub's X-Error-Code: GatedRepo, RepoNotFound, EntryNotFound...


def endpoint_of(url: str) -> str:
    """scheme://host[:port] of a hub URL, without any user:password part."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}"


def describe(model: ModelFile, endpoint: str) -> str:
    """The file as the messages name it: where it goes and where it comes from."""
    return f"{model.folder}/{model.name} ({model.repo} {model.path}@{model.revision} from {endpoint})"


def failure(model: ModelFile, endpoint: str, cause: Cause, detail: str = "") -> ProvisionError:
    message = f"cannot provision {describe(model, endpoint)}: {cause.text}{detail}; {cause.fix}"
    return ProvisionError(message + (f"; {AGAIN}" if cause.passing else ""), refresh_worker=cause.passing)


def _chain(exc: BaseException) -> list[BaseException]:
    """`exc` and every exception it wraps (args, urllib3's `reason`, __cause__, __context__)."""
    seen: list[BaseException] = []
    todo: list[object] = [exc]
    while todo and len(seen) < 32:
        item = todo.pop(0)
        if not isinstance(item, BaseException) or any(item is s for s in seen):
            continue
        seen.append(item)
        todo += [*item.args, getattr(item, "reason", None), item.__cause__, item.__context__]
    return seen


def network_cause(exc: Exception, endpoint: str, timeout_s: float) -> Cause:
    """From requests' errors, or urllib3's while the body streams."""
    chain = _chain(exc)
    host = urlsplit(endpoint).hostname

    def has(*types: type) -> bool:
        return any(isinstance(e, types) for e in chain)

    if has(NameResolutionError, socket.gaierror):
        return Cause(f"the host name {host} does not resolve (DNS failure)",
                     "check the spelling of HF_ENDPOINT (unset means https://huggingface.co) and this machine's "
                     "DNS and network", passing=True)
    if has(ConnectionRefusedError):  # before timeouts: urllib3's NewConnectionError is a ConnectTimeoutError
        return Cause("connection refused",
                     f"nothing accepts connections at {endpoint}: check HF_ENDPOINT (unset means "
                     "https://huggingface.co) and that the hub or mirror is up", passing=True)
    if has(requests.Timeout, Urllib3Timeout, TimeoutError, socket.timeout):
        return Cause(f"the hub did not answer within {timeout_s:g} s (timeout)",
                     "the hub or the network is stalled; if it is only slow, raise DOWNLOAD_TIMEOUT_S", passing=True)
    if has(ConnectionResetError, ProtocolError, requests.exceptions.ChunkedEncodingError):
        return Cause("the connection was reset or closed before the file was complete",
                     "the hub or the network dropped the transfer; what arrived is kept and the next attempt "
                     "resumes from it", passing=True)
    return Cause(f"the connection failed ({type(exc).__name__})",
                 "check HF_ENDPOINT and this machine's network", passing=True)


def status_cause(answer: HubAnswered, model: ModelFile, endpoint: str, token_sent: bool) -> Cause:
    status, code = answer.status, answer.error_code
    said = f"HTTP {status}" + (f", {code}" if code else "")
    where = f"[model.{model.role}] in config.ini"
    if status in (401, 403):
        if code == "RepoNotFound":
            fix = f"check the repo name in {where}" + ("" if token_sent else ", or set HF_TOKEN if it is private")
        elif token_sent:
            fix = (f"HF_TOKEN is set, but its account may not read {model.repo}: accept the model's licence at "
                   f"{endpoint}/{model.repo} with that account, and check that the token is valid with read access")
        else:
            fix = (f"HF_TOKEN is not set: accept the model's licence at {endpoint}/{model.repo}, then set HF_TOKEN "
                   "to a read token of that account")
        return Cause(f"the hub refused access ({said})", fix, passing=False)
    if status == 404:
        what = {"RepoNotFound": "repo", "RevisionNotFound": "revision"}.get(code or "", "path or revision")
        return Cause(f"the hub has no such file ({said})",
                     f"check the {what} in {where} against the hub ({model.repo}, {model.path}@{model.revision})",
                     passing=False)
    if status == 429:
        return Cause(f"the hub is rate-limiting this worker ({said})",
                     "set HF_TOKEN (authenticated downloads get higher limits) or provision from a pod",
                     passing=True)
    if status >= 500:
        return Cause(f"the hub failed with a server error ({said})",
                     "the hub is having trouble (https://status.huggingface.co for the public hub)", passing=True)
    return Cause(f"the hub answered {said}", f"check HF_ENDPOINT and {where}", passing=False)


def volume_cause(exc: OSError, volume: Path, where: Path) -> Cause:
    path = exc.filename or where
    reason = exc.strerror or type(exc).__name__
    if exc.errno == errno.EROFS:
        return Cause(f"the volume at {volume} is read-only ({reason}: {path})",
                     "mount it read-write, or provision it once from a pod (setup_netvolume.sh) so that workers "
                     "only read it", passing=False)
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return Cause(f"the volume at {volume} is full ({reason} writing {path}), although the free-space check "
                     "before the download passed",
                     "another writer may be filling it: free space on it or use a larger network volume "
                     "(DISK_RESERVE_MB is what must stay free); the bytes fetched so far are kept in the .part file "
                     "and the next start resumes", passing=False)
    if exc.errno in (errno.EACCES, errno.EPERM):
        return Cause(f"this worker may not write to the volume at {volume} ({reason}: {path})",
                     "give the worker's user write access to the volume", passing=False)
    return Cause(f"the volume at {volume} failed ({reason}: {path})", "check the volume", passing=False)
