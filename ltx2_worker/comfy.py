"""ComfyUI client: submit a graph, watch it over the WebSocket until it ends or the job's deadline passes,
and recover from /history when the socket drops. Speaks ComfyUI v0.26.2's protocol as recorded in
tests/data/trace_*.json.

Why it is built this way:
- The socket is opened (with this job's client id) before the prompt is posted, so no message is missed.
- Every receive has a short timeout so the deadline is checked even while ComfyUI is silent (the text
  encoder can run for minutes without a message); silence also triggers a /history check.
- `execution_success` is sent before ComfyUI stores the history entry; `executing` with node null follows
  once it is stored (main.py), so that is the signal to read /history, with a bounded retry as a fallback.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
import uuid
from collections.abc import Callable
from typing import Any

import requests
import websocket

from .stopping import Stopping

log = logging.getLogger(__name__)

RECV_SLICE_S = 1.0  # longest single blocking WebSocket read: bounds how late a deadline is noticed
SILENCE_CHECK_S = 15.0  # with no message for this long, ask /history whether the prompt ended unseen
RECONNECT_GRACE_S = 20.0  # how long ComfyUI may refuse connections before it counts as dead
HISTORY_SETTLE_S = 10.0  # how long /history may lag behind the end-of-prompt message
SUCCESS_TO_HISTORY_S = 2.0  # after execution_success, wait this long for executing/null before polling /history


class ComfyError(Exception):
    """A job-ending failure in or with ComfyUI; `str()` is what the caller reads."""

    refresh_worker = False


class ComfyUnavailable(ComfyError):
    """ComfyUI does not answer: this worker is broken, a fresh one should take the next job."""

    refresh_worker = True


class PromptRejected(ComfyError):
    """POST /prompt answered 400: the graph failed ComfyUI's validation."""

    def __init__(self, message: str, node_errors: dict[str, Any]):
        super().__init__(message)
        self.node_errors = node_errors


class ExecutionFailed(ComfyError):
    """A node raised while executing (`execution_error`)."""

    def __init__(self, data: dict[str, Any]):
        self.node_id = str(data.get("node_id"))
        self.node_type = str(data.get("node_type"))
        self.exception_type = str(data.get("exception_type", ""))
        self.exception_message = str(data.get("exception_message", "")).strip()
        super().__init__(f"ComfyUI node {self.node_type} (id {self.node_id}) failed: "
                         f"{self.exception_type}: {self.exception_message}")

    @property
    def out_of_memory(self) -> bool:
        text = f"{self.exception_type} {self.exception_message}".lower()
        return "outofmemory" in text.replace(" ", "") or "out of memory" in text


class _SocketDropped(Exception):
    """The WebSocket broke mid-prompt: reconnect, after asking /history whether the prompt ended."""


class Interrupted(ComfyError):
    """The prompt was interrupted (by us at the deadline, or by someone else)."""


class DeadlinePassed(ComfyError):
    """The job's deadline passed; the prompt was interrupted."""


@dataclasses.dataclass(frozen=True)
class Progress:
    """One progress event: `node` is executing; `value`/`max` are its steps when it reports them."""

    node: str
    value: int | None = None
    max: int | None = None


@dataclasses.dataclass(frozen=True)
class OutputFile:
    filename: str
    subfolder: str
    type: str


def format_node_errors(node_errors: dict[str, Any]) -> str:
    """ComfyUI's per-node validation errors as one readable line per problem."""
    lines = []
    for node_id, entry in node_errors.items():
        class_type = entry.get("class_type", "?")
        for err in entry.get("errors", []):
            detail = err.get("details") or err.get("message", "")
            lines.append(f"node {node_id} ({class_type}): {err.get('message', '')}: {detail}".rstrip(": "))
    return "; ".join(lines)


class ComfyClient:
    def __init__(self, base_url: str, http_timeout_s: float = 30.0):
        self.base_url = base_url.rstrip("/")
        self.ws_url = "ws" + self.base_url[len("http"):] + "/ws"
        self.http_timeout_s = http_timeout_s
        self.session = requests.Session()

    # -- plain HTTP -------------------------------------------------------------------------------------

    def _request(self, method: str, path: str, timeout: float | None = None, **kwargs) -> requests.Response:
        try:
            return self.session.request(method, self.base_url + path,
                                        timeout=timeout or self.http_timeout_s, **kwargs)
        except requests.ConnectionError as exc:
            raise ComfyUnavailable(f"ComfyUI at {self.base_url} refused the connection ({path}): "
                                   f"{_short(exc)}") from None
        except requests.Timeout:
            raise ComfyUnavailable(f"ComfyUI at {self.base_url} did not answer {path} within "
                                   f"{timeout or self.http_timeout_s:g} s") from None

    def ready(self, timeout: float = 2.0) -> bool:
        try:
            return self._request("GET", "/system_stats", timeout=timeout).status_code == 200
        except ComfyUnavailable:
            return False

    def argv(self, timeout: float = 2.0) -> list[str] | None:
        """ComfyUI's command line (`sys.argv`, reported by /system_stats), or None when it does not answer."""
        try:
            r = self._request("GET", "/system_stats", timeout=timeout)
        except ComfyUnavailable:
            return None
        argv = (_json(r).get("system") or {}).get("argv") if r.status_code == 200 else None
        return [str(a) for a in argv] if isinstance(argv, list) else None

    def submit(self, graph: dict[str, Any], client_id: str) -> str:
        r = self._request("POST", "/prompt", json={"prompt": graph, "client_id": client_id})
        body = _json(r)
        if r.status_code == 400:
            error = body.get("error") if isinstance(body.get("error"), dict) else {}
            node_errors = body.get("node_errors") or {}
            summary = format_node_errors(node_errors) or error.get("details") or error.get("message", "")
            raise PromptRejected(f"ComfyUI rejected the workflow ({error.get('type', 'invalid prompt')}): "
                                 f"{summary}", node_errors)
        if r.status_code != 200 or "prompt_id" not in body:
            raise ComfyError(f"ComfyUI answered POST /prompt with HTTP {r.status_code}: {r.text[:300]}")
        return body["prompt_id"]

    def history(self, prompt_id: str) -> dict[str, Any] | None:
        """The finished prompt's history entry, or None while it runs (or if ComfyUI forgot it)."""
        r = self._request("GET", f"/history/{prompt_id}")
        if r.status_code != 200:
            raise ComfyError(f"ComfyUI answered GET /history with HTTP {r.status_code}")
        return _json(r).get(prompt_id)

    def view(self, item: OutputFile) -> bytes:
        params = {"filename": item.filename, "subfolder": item.subfolder, "type": item.type}
        r = self._request("GET", "/view", params=params, stream=True)
        with r:
            if r.status_code != 200:
                raise ComfyError(f"ComfyUI could not serve output {item.subfolder}/{item.filename}: "
                                 f"HTTP {r.status_code}")
            body = bytearray()
            try:
                for chunk in r.iter_content(1 << 20):  # large chunks: twice as fast as .content for 5 MB
                    body += chunk
            except requests.RequestException as exc:
                raise ComfyUnavailable(f"ComfyUI broke off sending {item.filename}: {_short(exc)}") from None
        return bytes(body)

    def upload_image(self, data: bytes, name: str) -> str:
        """Put an image into ComfyUI's input folder; returns the name LoadImage must use."""
        r = self._request("POST", "/upload/image", files={"image": (name, data)}, data={"overwrite": "true"})
        body = _json(r)
        if r.status_code != 200 or "name" not in body:
            raise ComfyError(f"ComfyUI refused the uploaded image: HTTP {r.status_code}")
        return f"{body['subfolder']}/{body['name']}" if body.get("subfolder") else body["name"]

    def node_info(self, class_type: str) -> dict[str, Any]:
        """ComfyUI's description of a node class (/object_info); empty when it does not know the class (a
        custom node that was not loaded is simply absent)."""
        return _json(self._request("GET", f"/object_info/{class_type}")).get(class_type) or {}

    def options(self, class_type: str, input_name: str) -> list[str]:
        """The values ComfyUI offers for a COMBO input; for model loaders, the files it sees on disk."""
        spec = ((self.node_info(class_type).get("input") or {}).get("required") or {}).get(input_name)
        if not spec:
            return []
        if isinstance(spec[0], list):
            return spec[0]
        return list((spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}).get("options", []))

    def interrupt(self, prompt_id: str) -> None:
        """Stop the prompt whether it runs (interrupt) or still waits in the queue (delete); best effort."""
        for path, body in (("/queue", {"delete": [prompt_id]}), ("/interrupt", {"prompt_id": prompt_id})):
            try:
                self._request("POST", path, json=body, timeout=5)
            except ComfyUnavailable as exc:
                log.warning("could not %s prompt %s: %s", path, prompt_id, exc)

    def free(self, unload_models: bool = True, free_memory: bool = True) -> None:
        self._request("POST", "/free", json={"unload_models": unload_models, "free_memory": free_memory})

    # -- one prompt, start to end -------------------------------------------------------------------------

    def run(self, graph: dict[str, Any], deadline: float,
            on_progress: Callable[[Progress], None] = lambda p: None) -> tuple[str, dict[str, Any]]:
        """Submit `graph` and wait until it ends; return (prompt_id, history entry). Raises ComfyError."""
        client_id = uuid.uuid4().hex
        ws = self._connect(client_id, deadline)
        try:
            prompt_id = self.submit(graph, client_id)
            log.info("prompt %s queued", prompt_id)
            return prompt_id, self._wait(ws, client_id, prompt_id, deadline, on_progress)
        finally:
            ws.close()

    def _wait(self, ws: websocket.WebSocket, client_id: str, prompt_id: str, deadline: float,
              on_progress: Callable[[Progress], None]) -> dict[str, Any]:
        """The prompt's history entry once it ended, across dropped sockets; a worker that is stopping
        interrupts the prompt instead of leaving it to run on."""
        try:
            while True:
                try:
                    return self._watch(ws, prompt_id, deadline, on_progress)
                except _SocketDropped as exc:
                    log.warning("WebSocket to ComfyUI dropped (%s); reconnecting", exc)
                ws.close()
                entry = self._finished_entry(prompt_id)
                if entry is not None:
                    return entry
                ws = self._connect(client_id, deadline)
                # The prompt may have ended between the history check and the new socket.
                entry = self._finished_entry(prompt_id)
                if entry is not None:
                    return entry
        except Stopping:
            self.interrupt(prompt_id)
            raise
        finally:
            ws.close()

    def _connect(self, client_id: str, deadline: float) -> websocket.WebSocket:
        """Open the socket, retrying refused connections for a short grace (ComfyUI restarting, a blip)."""
        give_up = min(deadline, time.monotonic() + RECONNECT_GRACE_S)
        delay = 0.1
        while True:
            try:
                timeout = max(0.1, min(self.http_timeout_s, deadline - time.monotonic()))
                ws = websocket.create_connection(f"{self.ws_url}?clientId={client_id}", timeout=timeout)
                ws.settimeout(RECV_SLICE_S)
                return ws
            except (OSError, websocket.WebSocketException) as exc:
                if time.monotonic() + delay >= give_up:
                    if time.monotonic() + delay >= deadline:
                        raise DeadlinePassed("job deadline passed while connecting to ComfyUI") from None
                    raise ComfyUnavailable(f"ComfyUI's WebSocket at {self.ws_url} is unreachable: "
                                           f"{_short(exc)}") from None
                time.sleep(delay)
                delay = min(delay * 2, 2.0)

    def _watch(self, ws: websocket.WebSocket, prompt_id: str, deadline: float,
               on_progress: Callable[[Progress], None]) -> dict[str, Any]:
        """Read the socket until the prompt ends; raises _SocketDropped when the connection breaks."""
        last_message = time.monotonic()
        succeeded_at = None  # execution_success seen: the history entry follows, announced by executing/null
        while True:
            now = time.monotonic()
            if succeeded_at is not None and now - succeeded_at >= SUCCESS_TO_HISTORY_S:
                return self._settled_entry(prompt_id, deadline)
            if now >= deadline:
                self.interrupt(prompt_id)
                raise DeadlinePassed(f"job deadline passed before ComfyUI finished prompt {prompt_id}; "
                                     "the prompt was interrupted")
            try:
                ws.settimeout(max(0.05, min(RECV_SLICE_S, deadline - now)))
                raw = ws.recv()
            except websocket.WebSocketTimeoutException:
                if time.monotonic() - last_message >= SILENCE_CHECK_S:
                    last_message = time.monotonic()
                    entry = self._finished_entry(prompt_id)
                    if entry is not None:
                        return entry
                continue
            except (OSError, websocket.WebSocketException) as exc:
                raise _SocketDropped(_short(exc)) from None
            last_message = time.monotonic()
            if not isinstance(raw, str):
                continue  # binary frames: previews and text progress, not needed here
            try:
                message = json.loads(raw)
            except json.JSONDecodeError:
                continue
            state = self._handle(message, prompt_id, on_progress)
            if state == "history_ready":
                return self._settled_entry(prompt_id, deadline)
            if state == "succeeded" and succeeded_at is None:
                succeeded_at = time.monotonic()

    def _handle(self, message: dict[str, Any], prompt_id: str,
                on_progress: Callable[[Progress], None]) -> str | None:
        """React to one message: "succeeded" on execution_success, "history_ready" on the `executing` with
        node null that main.py sends once the history entry is stored; raises the prompt's failure."""
        kind = message.get("type")
        data = message.get("data") or {}
        if not isinstance(data, dict) or data.get("prompt_id") not in (None, prompt_id):
            return None
        if kind == "executing":
            if data.get("prompt_id") == prompt_id and data.get("node") is None:
                return "history_ready"
            if data.get("node") is not None:
                on_progress(Progress(str(data["node"])))
        elif kind == "progress" and data.get("prompt_id") == prompt_id:
            on_progress(Progress(str(data.get("node")), _int(data.get("value")), _int(data.get("max"))))
        elif kind == "execution_success" and data.get("prompt_id") == prompt_id:
            return "succeeded"
        elif kind == "execution_error" and data.get("prompt_id") == prompt_id:
            raise ExecutionFailed(data)
        elif kind == "execution_interrupted" and data.get("prompt_id") == prompt_id:
            raise Interrupted(f"ComfyUI interrupted prompt {prompt_id} at node "
                              f"{data.get('node_type')} (id {data.get('node_id')})")
        return None

    def _finished_entry(self, prompt_id: str) -> dict[str, Any] | None:
        """History entry of a prompt that ended; raises the prompt's failure if it ended in one."""
        entry = self.history(prompt_id)
        if not entry or not (entry.get("status") or {}).get("status_str"):
            return None
        status = entry["status"]
        if status.get("status_str") == "success":
            return entry
        for name, data in status.get("messages") or []:
            if name == "execution_error":
                raise ExecutionFailed(data)
            if name == "execution_interrupted":
                raise Interrupted(f"ComfyUI interrupted prompt {prompt_id}")
        raise ComfyError(f"ComfyUI ended prompt {prompt_id} with status {status.get('status_str')!r}")

    def _settled_entry(self, prompt_id: str, deadline: float) -> dict[str, Any]:
        give_up = min(deadline, time.monotonic() + HISTORY_SETTLE_S)
        while True:
            entry = self._finished_entry(prompt_id)
            if entry is not None:
                return entry
            if time.monotonic() >= give_up:
                raise ComfyError(f"ComfyUI reported prompt {prompt_id} finished but has no history for it")
            time.sleep(0.05)


def output_files(entry: dict[str, Any], node_id: str) -> list[OutputFile]:
    """The files one output node reported (SaveVideo lists its MP4 under `images`)."""
    node_out = (entry.get("outputs") or {}).get(node_id) or {}
    files = []
    for key in ("images", "videos", "gifs"):
        for item in node_out.get(key) or []:
            if isinstance(item, dict) and item.get("filename"):
                files.append(OutputFile(item["filename"], item.get("subfolder", ""), item.get("type", "output")))
    return files


def output_text(entry: dict[str, Any], node_id: str) -> str | None:
    """The text a PreviewAny node reported (its UI output `text`), or None."""
    texts = ((entry.get("outputs") or {}).get(node_id) or {}).get("text")
    return texts[0] if isinstance(texts, list) and texts and isinstance(texts[0], str) else None


def _json(r: requests.Response) -> dict[str, Any]:
    try:
        body = r.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _short(exc: BaseException) -> str:
    return str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
