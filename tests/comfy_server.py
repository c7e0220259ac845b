"""A ComfyUI v0.26.2 *protocol* server for the CI tests, which have no GPU and no ComfyUI.

It speaks real HTTP and a real WebSocket on 127.0.0.1 (aiohttp, as ComfyUI does) and behaves as ComfyUI's
source (server.py, execution.py, main.py, comfy_execution/) and the recordings in tests/data/ show, so that a
client that works against it has met the real protocol, including its awkward corners:

- /prompt validation against the recorded node schemas (tests/data/object_info.json) with ComfyUI's error
  types and JSON shapes; only nodes reachable from output nodes are validated; model COMBO options list
  `model_files`, as a real server lists what is on disk.
- execution of the graph's *shapes*: sizes, frame counts, frame rate and audio flow through the nodes as in
  ComfyUI (EmptyLTXVLatentVideo silently rounds down to multiples of 32), and SaveVideo writes a real MP4
  with PyAV under ComfyUI's file naming. The pixel colour derives from the noise seeds, so the same graph
  gives the same bytes and another seed other bytes.
- the WebSocket message order of the recordings, messages only to the submitting client (status, and the
  text event GetImageSize emits, to everyone), and the ComfyUI quirk that a second socket with the same
  clientId takes over the first and the first one closing silences both.
- output caching as ComfyUI's default (RAM-pressure) cache: a node whose class and inputs (recursively)
  were seen before is not run again, an identical resubmission reports the same file even if it has been
  deleted since, and POST /free {"free_memory": true} empties the cache.

Faults for the client's error paths are armed with `inject`; see `ProtocolComfy.inject`.
"""

from __future__ import annotations

import asyncio
import copy
import hashlib
import importlib.util
import io
import json
import mimetypes
import os
import re
import struct
import sys
import threading
import time
import types
import uuid
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
from aiohttp import WSMsgType, web

DATA = Path(__file__).resolve().parent / "data"
ROOT = DATA.parent.parent
DEFAULT_MODEL_FILES = {
    "checkpoints": ["ltx-2-19b-dev-fp8.safetensors"],
    "text_encoders": ["gemma_3_12B_it_fp4_mixed.safetensors"],
    "loras": ["ltx-2-19b-distilled-lora-384.safetensors"],
    "latent_upscale_models": ["ltx-2-spatial-upscaler-x2-1.0.safetensors"],
}
# (class, input) -> the model folder whose files a real server offers as that input's options
MODEL_INPUTS = {
    ("CheckpointLoaderSimple", "ckpt_name"): "checkpoints",
    ("LTX2PinnedCheckpointLoader", "ckpt_name"): "checkpoints",
    ("LTX2PinnedCheckpointLoaderBeside", "ckpt_name"): "checkpoints",
    ("LTXAVTextEncoderLoader", "ckpt_name"): "checkpoints",
    ("LTXAVTextEncoderLoader", "text_encoder"): "text_encoders",
    ("LTXVAudioVAELoader", "ckpt_name"): "checkpoints",
    ("LTX2AudioVAELoader", "ckpt_name"): "checkpoints",
    ("LTX2TextEncoderLoader", "ckpt_name"): "checkpoints",
    ("LTX2TextEncoderLoader", "text_encoder"): "text_encoders",
    ("CLIPLoader", "clip_name"): "text_encoders",
    ("UNETLoader", "unet_name"): "diffusion_models",
    ("VAELoader", "vae_name"): "vae",
    ("LoraLoader", "lora_name"): "loras",
    ("LoraLoaderModelOnly", "lora_name"): "loras",
    ("LoraLoaderBypassModelOnly", "lora_name"): "loras",
    ("LTX2LoraBypass", "lora_name"): "loras",
    ("LatentUpscaleModelLoader", "model_name"): "latent_upscale_models",
    ("LTX2LatentUpscaleModelLoader", "model_name"): "latent_upscale_models",
}
SAVE_NODES = ("SaveVideo", "LTX2SaveVideo")  # ComfyUI's and the worker's (ltx2_worker/comfy_nodes)
FAULTS = ("execution_error", "ws_drop", "hang", "reject", "history_missing_output", "view_error", "die",
          "slow_http")
OOM_TIPS = ("This error means you ran out of memory on your GPU.\n\nTIPS: If the workflow worked before you might "
            "have accidentally set the batch_size to a large number.")
TEXT_EVENT = 3  # protocol.BinaryEventTypes.TEXT
TRANSPORT = web.ResponseKey("transport", asyncio.Transport)  # a socket's TCP link, which ws_drop cuts
SAMPLERS = {"SamplerCustomAdvanced"}
DYNAMIC_COMBO = "COMFY_DYNAMICCOMBO_V3"  # a v3 node's DynamicCombo input type in /object_info
DEADLINE_S = 10  # seconds start() and stop() wait for the server thread


class NodeFailure(Exception):
    """A node raising while it executes: reported as execution_error with this type name and message."""

    def __init__(self, exception_type: str, message: str):
        super().__init__(message)
        self.exception_type = exception_type


class Interrupted(Exception):
    """comfy.model_management.InterruptProcessingException: ends the prompt with execution_interrupted."""


class Crashed(Exception):
    """The "die" fault fired: the executor stops as a killed process would."""


class ProtocolComfy:
    """The server; `start()` runs it in a daemon thread with its own event loop, `stop()` ends it."""

    def __init__(self, output_dir: Path, object_info_path: Path = DATA / "object_info.json",
                 model_files: dict[str, list[str]] | None = None, exec_seconds: float = 0.0,
                 input_dir: Path | None = None, port: int = 0, worker_nodes: bool = True,
                 model_dirs: dict[str, list[Path]] | None = None):
        self.output_dir = Path(output_dir).resolve()
        self.input_dir = Path(input_dir).resolve() if input_dir else self.output_dir.parent / "input"
        self.temp_dir = self.output_dir.parent / "temp"
        self.model_files = copy.deepcopy(model_files if model_files is not None else DEFAULT_MODEL_FILES)
        # folder -> more directories of it, listed at every /object_info as extra_model_paths.yaml's are
        self.model_dirs = {folder: [Path(d) for d in dirs] for folder, dirs in (model_dirs or {}).items()}
        self.exec_seconds = exec_seconds
        self.port = port  # 0: a free port; a fixed one lets a test start a server "late" on a known address
        # sys.argv as /system_stats reports it: as the package's launcher starts ComfyUI, output folder included
        # (worker_nodes=False stands for a ComfyUI started some other way: no worker nodes, ComfyUI's own cache)
        self.argv = ["main.py", "--listen", "127.0.0.1", "--output-directory", str(self.output_dir),
                     *(["--disable-metadata", "--disable-api-nodes", "--cache-classic"] if worker_nodes else [])]
        self.url = ""
        self.submitted: list[dict] = []
        self.interrupts = 0
        self.frees = 0
        self.ws_connections = 0
        self.exec_durations: list[float] = []  # seconds from /prompt to the history entry, per executed prompt
        # per SamplerCustomAdvanced run: (its node id, the model its guider carries, with the LoRAs it runs)
        self.sampled: list[tuple[str, dict]] = []
        self._schemas = json.loads(Path(object_info_path).read_text())
        if worker_nodes:  # as when ltx2_worker.launch started it, with the worker's nodes on its custom-node path
            self._schemas.update(worker_node_schemas())
        self._faults: dict[str, dict] = {}
        self._faults_lock = threading.Lock()
        self._history: dict[str, dict] = {}
        self._view_faults: dict[Path, int] = {}  # file written by a prompt with the view_error fault -> status
        self._cache: dict[str, tuple[list, dict | None]] = {}  # node signature -> (outputs, ui entry)
        self._sockets: dict[str, list[web.WebSocketResponse]] = {}  # clientId -> its open sockets
        self._route: dict[str, web.WebSocketResponse] = {}  # clientId -> the socket that receives its messages
        self._pending: list[dict] = []
        self._running: dict | None = None
        self._flags: dict[str, bool] = {}
        self._number = 0
        self._dead = False
        self._last_node: str | None = None  # server.last_node_id: re-sent to a client reconnecting mid-run
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ------------------------------------------------------------------------------------------

    def start(self) -> ProtocolComfy:
        ready = threading.Event()
        failure: list[BaseException] = []
        self._thread = threading.Thread(target=self._serve, args=(ready, failure), daemon=True,
                                        name="protocol-comfy")
        self._thread.start()
        if not ready.wait(DEADLINE_S) or failure:
            raise RuntimeError(f"the protocol ComfyUI did not start: {failure}")
        return self

    def stop(self) -> None:
        if self._loop is None or self._loop.is_closed():
            return
        try:
            asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(DEADLINE_S)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(DEADLINE_S)

    def __enter__(self) -> ProtocolComfy:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def _serve(self, ready: threading.Event, failure: list) -> None:
        self._loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self._loop)
        try:
            self._wakeup = asyncio.Event()
            self._interrupt = asyncio.Event()  # nodes.interrupt_processing()
            app = web.Application(client_max_size=100 * 2**20, middlewares=[self._http_faults])
            app.add_routes([
                web.get("/ws", self._ws), web.get("/object_info", self._object_info),
                web.get("/object_info/{node_class}", self._object_info_one),
                web.get("/system_stats", self._system_stats), web.post("/prompt", self._post_prompt),
                web.get("/prompt", self._get_prompt), web.get("/history", self._get_history),
                web.get("/history/{prompt_id}", self._get_history_one), web.post("/history", self._post_history),
                web.get("/view", self._view), web.post("/interrupt", self._post_interrupt),
                web.post("/free", self._post_free), web.get("/queue", self._get_queue),
                web.post("/queue", self._post_queue), web.post("/upload/image", self._upload_image)])
            self._runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=1)
            self._loop.run_until_complete(self._runner.setup())
            self._site = web.TCPSite(self._runner, "127.0.0.1", self.port)
            self._loop.run_until_complete(self._site.start())
            self.port = self._site._server.sockets[0].getsockname()[1]
            self.url = f"http://127.0.0.1:{self.port}"
            self._worker = self._loop.create_task(self._prompt_worker())
        except BaseException as exc:  # reported to start(), which raises
            failure.append(exc)
            ready.set()
            return
        ready.set()
        self._loop.run_forever()
        self._loop.close()

    async def _shutdown(self) -> None:
        self._worker.cancel()
        self._interrupt.set()
        self._abort_connections()
        await self._runner.cleanup()

    def _abort_connections(self) -> None:
        """Drop every HTTP and WebSocket connection at the TCP level, as a killed process does."""
        for connection in list(self._runner.server.connections if self._runner.server else []):
            if connection.transport is not None:
                connection.transport.abort()

    # -- faults ---------------------------------------------------------------------------------------------

    def inject(self, fault: str, **params: Any) -> None:
        """Arm `fault` for the next submitted /prompt (or the next `times=N` of them). Params, with defaults:

        - execution_error: node_type="VAEDecodeTiled", exception_type="torch.OutOfMemoryError",
          exception_message="Allocation on device 0 would exceed allowed memory. (out of memory)..."
        - ws_drop: after_messages=5 (the client's socket is cut; the prompt runs on)
        - hang: seconds=600 (a sampler waits for POST /interrupt; `seconds` is only a safety deadline)
        - reject: node_errors=<recorded> (HTTP 400 with tests/data/prompt_rejected_400.json's body)
        - history_missing_output: (the save node writes its file but /history does not list it)
        - view_error: status=500 (GET /view of that prompt's files)
        - die: after_messages=5 (the server stops listening and drops every connection)
        - slow_http: seconds=5 (every HTTP answer is delayed while the fault is armed)
        """
        if fault not in FAULTS:
            raise ValueError(f"unknown fault {fault!r}; known: {FAULTS}")
        with self._faults_lock:
            self._faults[fault] = {"times": 1, **params}

    def _take_faults(self) -> dict[str, dict]:
        """The faults the prompt being submitted meets; each is used up after `times` prompts."""
        with self._faults_lock:
            taken = {name: params for name, params in self._faults.items()}
            for name, params in taken.items():
                if params["times"] <= 1:
                    del self._faults[name]
                else:
                    self._faults[name] = {**params, "times": params["times"] - 1}
        return taken

    @web.middleware
    async def _http_faults(self, request: web.Request, handler):
        if self._dead:  # a request racing the crash
            request.transport.abort()
            raise web.HTTPServiceUnavailable()
        with self._faults_lock:
            slow = self._faults.get("slow_http")
        if slow:
            await asyncio.sleep(slow.get("seconds", 5))
        return await handler(request)

    # -- HTTP -----------------------------------------------------------------------------------------------

    def schemas(self) -> dict:
        """/object_info as a real server would answer it now: model and input-file options are what is on disk."""
        info = copy.deepcopy(self._schemas)
        for (class_type, name), folder in MODEL_INPUTS.items():
            files = sorted({*self.model_files.get(folder, []),
                            *(p.name for d in self.model_dirs.get(folder, []) if d.is_dir()
                              for p in d.glob("*.safetensors"))})
            _set_options(info, class_type, name, files + ["pixel_space"] if folder == "vae" else files)
        inputs = sorted(str(p.relative_to(self.input_dir)) for p in self.input_dir.rglob("*")
                        if p.is_file()) if self.input_dir.is_dir() else []
        _set_options(info, "LoadImage", "image", inputs)
        return info

    async def _object_info(self, request: web.Request) -> web.Response:
        return web.json_response(self.schemas())

    async def _object_info_one(self, request: web.Request) -> web.Response:
        name = request.match_info["node_class"]
        info = self.schemas()
        return web.json_response({name: info[name]} if name in info else {})

    async def _system_stats(self, request: web.Request) -> web.Response:
        gib = 2**30
        return web.json_response({
            "system": {"os": "linux", "ram_total": 62 * gib, "ram_free": 50 * gib, "comfyui_version": "0.26.2",
                       "required_frontend_version": "1.30.6", "installed_templates_version": None,
                       "required_templates_version": None, "comfy_package_versions": [],
                       "python_version": "3.12.3 (main) [GCC 13.2.0]", "pytorch_version": "2.9.1+cu128",
                       "embedded_python": False, "deploy_environment": "local",
                       "argv": self.argv},
            "devices": [{"name": "cuda:0 NVIDIA GeForce RTX 4090 : cudaMallocAsync", "type": "cuda", "index": 0,
                         "vram_total": 24 * gib, "vram_free": 23 * gib, "torch_vram_total": 0,
                         "torch_vram_free": 0}]})

    async def _post_prompt(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.submitted.append(copy.deepcopy(body))
        faults = self._take_faults()
        number = self._number
        self._number += 1
        if "reject" in faults:
            answer = json.loads((DATA / "prompt_rejected_400.json").read_text())["body"]
            answer["node_errors"] = faults["reject"].get("node_errors", answer["node_errors"])
            return web.json_response(answer, status=400)
        if "prompt" not in body:
            return web.json_response({"error": _error("no_prompt", "No prompt provided", "No prompt provided"),
                                      "node_errors": {}}, status=400)
        prompt = body["prompt"]
        prompt_id = body.get("prompt_id") or str(uuid.uuid4())
        ok, error, outputs, node_errors = validate_prompt(prompt, self.schemas(), self.input_dir)
        if not ok:
            return web.json_response({"error": error, "node_errors": node_errors}, status=400)
        extra_data = dict(body.get("extra_data", {}))
        if "client_id" in body:
            extra_data["client_id"] = body["client_id"]
        extra_data["create_time"] = int(time.time() * 1000)
        self._pending.append({"number": number, "prompt_id": prompt_id, "prompt": prompt, "extra_data": extra_data,
                              "outputs": outputs, "faults": faults, "received": time.perf_counter()})
        await self._queue_updated()
        self._wakeup.set()
        return web.json_response({"prompt_id": prompt_id, "number": number, "node_errors": node_errors})

    async def _get_prompt(self, request: web.Request) -> web.Response:
        return web.json_response(self._queue_info())

    async def _get_history(self, request: web.Request) -> web.Response:
        items = list(self._history.items())
        if "max_items" in request.query:
            items = items[-int(request.query["max_items"]):]
        return web.json_response(dict(items))

    async def _get_history_one(self, request: web.Request) -> web.Response:
        prompt_id = request.match_info["prompt_id"]
        return web.json_response({prompt_id: self._history[prompt_id]} if prompt_id in self._history else {})

    async def _post_history(self, request: web.Request) -> web.Response:
        body = await request.json()
        if body.get("clear"):
            self._history.clear()
        for prompt_id in body.get("delete", []):
            self._history.pop(prompt_id, None)
        return web.Response()

    async def _view(self, request: web.Request) -> web.Response:
        """server.py's /view: 400 for '..' or an absolute name, 403 for a subfolder outside the folder."""
        query = request.query
        if "filename" not in query:
            return web.Response(status=404)
        filename, folder = _annotated(query["filename"], self)
        if not filename:
            return web.Response(status=400)
        if filename[0] == "/" or ".." in filename:
            return web.Response(status=400)
        folder = folder or self._folder(query.get("type", "output"))
        if folder is None:
            return web.Response(status=400)
        if "subfolder" in query:
            full = os.path.join(folder, query["subfolder"])
            if os.path.commonpath((os.path.abspath(full), str(folder))) != str(folder):
                return web.Response(status=403)
            folder = full
        path = Path(folder) / os.path.basename(filename)
        status = self._view_faults.get(path.resolve())
        if status:
            return web.Response(status=status)
        if not path.is_file():
            return web.Response(status=404)
        content_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        return web.FileResponse(path, headers={"Content-Disposition": f'filename="{path.name}"',
                                               "Content-Type": content_type})

    def _folder(self, kind: str | None) -> Path | None:
        return {"output": self.output_dir, "input": self.input_dir, "temp": self.temp_dir}.get(kind)

    async def _post_interrupt(self, request: web.Request) -> web.Response:
        """Global, or only if `prompt_id` is the running prompt (server.py); the executor notices it at the
        next node or sampler step."""
        self.interrupts += 1
        try:
            body = await request.json()
        except json.JSONDecodeError:
            body = {}
        wanted = body.get("prompt_id")
        if not wanted or (self._running and self._running["prompt_id"] == wanted):
            self._interrupt.set()
        return web.Response()

    async def _post_free(self, request: web.Request) -> web.Response:
        """Sets flags the worker applies after the running prompt (main.py): free_memory empties the cache."""
        self.frees += 1
        body = await request.json()
        for flag in ("unload_models", "free_memory"):
            if body.get(flag, False):
                self._flags[flag] = True
        self._wakeup.set()
        return web.Response()

    async def _get_queue(self, request: web.Request) -> web.Response:
        def row(item):
            return [item["number"], item["prompt_id"], item["prompt"], item["extra_data"], item["outputs"]]
        return web.json_response({"queue_running": [row(self._running)] if self._running else [],
                                  "queue_pending": [row(item) for item in self._pending]})

    async def _post_queue(self, request: web.Request) -> web.Response:
        body = await request.json()
        if body.get("clear"):
            self._pending.clear()
        deleted = set(body.get("delete", []))
        self._pending[:] = [item for item in self._pending if item["prompt_id"] not in deleted]
        return web.Response()

    async def _upload_image(self, request: web.Request) -> web.Response:
        """server.py's image_upload: a same-named different file becomes `name (1).ext`; an identical one is
        not written again; `overwrite` "true"/"1" replaces."""
        post = await request.post()
        image = post.get("image")
        kind = post.get("type") or "input"
        folder = self._folder(kind) or self.input_dir
        if image is None or not getattr(image, "filename", None):
            return web.Response(status=400)
        subfolder = post.get("subfolder", "")
        target = Path(os.path.abspath(os.path.join(folder, os.path.normpath(subfolder), image.filename)))
        if os.path.commonpath((str(folder), str(target))) != str(folder):
            return web.Response(status=400)
        target.parent.mkdir(parents=True, exist_ok=True)
        data = image.file.read()
        stem, ext = os.path.splitext(image.filename)
        name, duplicate, i = image.filename, False, 1
        if post.get("overwrite") not in ("true", "1"):
            while target.exists():
                if target.read_bytes() == data:
                    duplicate = True
                    break
                name = f"{stem} ({i}){ext}"
                target = target.with_name(name)
                i += 1
        if not duplicate:
            target.write_bytes(data)
        return web.json_response({"name": name, "subfolder": subfolder, "type": kind})

    # -- WebSocket ------------------------------------------------------------------------------------------

    async def _ws(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        ws[TRANSPORT] = request.transport
        sid = request.query.get("clientId") or uuid.uuid4().hex
        self._sockets.setdefault(sid, []).append(ws)
        self._route[sid] = ws  # server.py keeps one socket per clientId: the newest takes over
        self.ws_connections += 1
        try:
            await self._emit("status", {"status": self._queue_info(), "sid": sid}, sid)
            if self._running and self._running["extra_data"].get("client_id") == sid and self._last_node:
                await self._emit("executing", {"node": self._last_node}, sid)
            first = True
            async for msg in ws:
                if msg.type == WSMsgType.TEXT and first:
                    first = False
                    if _json_or_none(msg.data, "type") == "feature_flags":
                        await self._emit("feature_flags", {"supports_preview_metadata": True,
                                                           "max_upload_size": 100 * 2**20,
                                                           "extension": {"manager": {"supports_v4": True}},
                                                           "node_replacements": True, "assets": False}, sid)
        finally:
            self._sockets[sid].remove(ws)
            if not self._sockets[sid]:
                del self._sockets[sid]
            self._route.pop(sid, None)  # server.py pops the clientId, even when a newer socket holds it
        return ws

    def _queue_info(self) -> dict:
        return {"exec_info": {"queue_remaining": len(self._pending) + (1 if self._running else 0)}}

    async def _queue_updated(self) -> None:
        await self._emit("status", {"status": self._queue_info()}, None)

    async def _emit(self, event: str | int, data: dict | bytes, sid: str | None) -> None:
        """server.send: to clientId `sid`, or to every socket when `sid` is None; a dead socket is skipped.
        An int event is a binary frame: 4-byte big-endian event type, then the payload."""
        sockets = list(self._route.values()) if sid is None else [self._route[sid]] if sid in self._route else []
        for ws in sockets:
            try:
                if isinstance(event, int):
                    await ws.send_bytes(struct.pack(">I", event) + data)
                else:
                    await ws.send_json({"type": event, "data": data})
            except (ConnectionError, RuntimeError):
                pass

    def _crash(self) -> None:
        """The die fault: stop listening and drop every connection, without a goodbye."""
        self._dead = True
        self._site._server.close()
        self._abort_connections()

    # -- the prompt worker (main.py prompt_worker) ----------------------------------------------------------

    async def _prompt_worker(self) -> None:
        while True:
            if not self._pending:
                self._apply_flags()
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            self._running = self._pending.pop(0)
            self._interrupt.clear()  # execute_async starts with interrupt_processing(False)
            try:
                await self._execute(_Run(self, self._running))
            except Crashed:
                return
            finally:
                self._running = None
            self._apply_flags()

    def _apply_flags(self) -> None:
        if self._flags.pop("free_memory", False):
            self._cache.clear()  # e.reset(): a new, empty cache set
        self._flags.pop("unload_models", None)

    async def _execute(self, run: _Run) -> None:
        """PromptExecutor.execute_async, then task_done and the final `executing` (main.py's order): the
        history entry exists before `executing` with node null, after execution_success."""
        prompt, prompt_id = run.prompt, run.prompt_id
        messages: list = []

        async def add_message(event: str, data: dict, broadcast: bool) -> None:
            data = {**data, "timestamp": int(time.time() * 1000)}
            messages.append([event, data])
            if run.sid is not None or broadcast:
                await run.emit(event, data, run.sid)

        await run.emit("status", {"status": self._queue_info()}, None)  # PromptQueue.get: queue_updated
        await add_message("execution_start", {"prompt_id": prompt_id}, False)
        cached = [nid for nid in prompt if run.signatures[nid] in self._cache]
        await add_message("execution_cached", {"nodes": cached, "prompt_id": prompt_id}, False)
        executed: list[str] = []
        ui_outputs: dict[str, dict] = {}
        success = True
        for nid in execution_order(prompt, run.item["outputs"], self._schemas, set(cached)):
            try:
                await self._execute_node(run, nid, ui_outputs)
                executed.append(nid)
            except (Interrupted, NodeFailure) as exc:
                success = False
                data = {"prompt_id": prompt_id, "node_id": nid, "node_type": prompt[nid]["class_type"],
                        "executed": executed}
                if isinstance(exc, Interrupted):
                    await add_message("execution_interrupted", data, True)
                else:
                    message = f"{exc}\n{OOM_TIPS if 'OutOfMemory' in exc.exception_type else ''}"
                    await add_message("execution_error", {
                        **data, "exception_message": message, "exception_type": exc.exception_type,
                        "traceback": [f'  File "ComfyUI/execution.py", line 542, in execute\n'
                                      f'    (the protocol server ran {prompt[nid]["class_type"]})\n'],
                        "current_inputs": run.current_inputs, "current_outputs": list(prompt)}, False)
                break
        if success:
            await add_message("execution_success", {"prompt_id": prompt_id}, False)
        self._last_node = None
        self._record_history(run.item, success, messages, ui_outputs)
        self._running = None
        await run.emit("status", {"status": self._queue_info()}, None)  # task_done: queue_updated
        if run.sid is not None:
            await run.emit("executing", {"node": None, "prompt_id": prompt_id}, run.sid)

    async def _execute_node(self, run: _Run, nid: str, ui_outputs: dict) -> None:
        """execution.execute for one node: from the cache (`executed` with its cached UI output, null for a
        non-output node), or run, with progress_state before `executing` (progress.py's start_progress)."""
        node = run.prompt[nid]
        hit = self._cache.get(run.signatures[nid])
        if hit is not None:
            ui = hit[1]
            if run.sid is not None:
                await run.emit("executed", {"node": nid, "display_node": nid,
                                            "output": ui["output"] if ui else None, "prompt_id": run.prompt_id},
                               run.sid)
            await run.progress(nid, "finished")
            if ui is not None:
                ui_outputs[nid] = ui
            return
        await run.progress(nid, "running", 0, 1)
        self._last_node = nid
        if run.sid is not None:
            await run.emit("executing", {"node": nid, "display_node": nid, "prompt_id": run.prompt_id}, run.sid)
        run.check_interrupt()
        inputs = {name: run.value(value) if isinstance(value, list) else value
                  for name, value in node["inputs"].items()}
        run.current_inputs = {name: [_format_value(v)] for name, v in inputs.items()}
        fault = run.faults.get("execution_error")
        if fault and node["class_type"] == fault.get("node_type", "VAEDecodeTiled"):
            raise NodeFailure(fault.get("exception_type", "torch.OutOfMemoryError"), fault.get(
                "exception_message", "Allocation on device 0 would exceed allowed memory. (out of memory)\n"
                                     "Currently allocated     : 21.47 GiB\nRequested               : 2.81 GiB"))
        if node["class_type"] in SAMPLERS:
            await run.sample(nid, inputs)
        else:
            await run.tick()
        try:
            outputs, ui_output = simulate(node["class_type"], inputs, run, nid)
        except NodeFailure:
            raise
        except Exception as exc:  # a node given values it cannot handle fails as a real node would
            raise NodeFailure(_type_name(exc), str(exc)) from exc
        for text in run.texts:
            await run.emit(TEXT_EVENT, text, None)  # send_progress_text(..., sid=None) goes to every socket
        run.texts.clear()
        ui = None
        if ui_output:
            ui = {"meta": {"node_id": nid, "display_node": nid, "parent_node": None, "real_node_id": nid},
                  "output": ui_output}
            ui_outputs[nid] = ui
            if run.sid is not None:
                await run.emit("executed", {"node": nid, "display_node": nid, "output": ui_output,
                                            "prompt_id": run.prompt_id}, run.sid)
        self._cache[run.signatures[nid]] = (outputs, ui)
        await run.progress(nid, "finished")

    def _record_history(self, item: dict, success: bool, messages: list, ui_outputs: dict) -> None:
        """task_done: the history entry (prompt, outputs, status, meta) appears only after the run."""
        files = {(self.output_dir / f["subfolder"] / f["filename"]).resolve()
                 for ui in ui_outputs.values() for f in ui["output"].get("images", [])}
        if "view_error" in item["faults"]:
            self._view_faults.update(dict.fromkeys(files, item["faults"]["view_error"].get("status", 500)))
        if "history_missing_output" in item["faults"]:
            ui_outputs = {nid: ui for nid, ui in ui_outputs.items()
                          if item["prompt"][nid]["class_type"] not in SAVE_NODES}
        self.exec_durations.append(time.perf_counter() - item["received"])
        self._history[item["prompt_id"]] = {
            "prompt": [item["number"], item["prompt_id"], item["prompt"], item["extra_data"], item["outputs"]],
            "outputs": {nid: ui["output"] for nid, ui in ui_outputs.items()},
            "status": {"status_str": "success" if success else "error", "completed": success,
                       "messages": messages},
            "meta": {nid: ui["meta"] for nid, ui in ui_outputs.items()},
        }


class _Run:
    """One prompt's execution: its node signatures, progress registry, pacing, interrupt and faults."""

    def __init__(self, server: ProtocolComfy, item: dict):
        self.server, self.item = server, item
        self.prompt, self.prompt_id = item["prompt"], item["prompt_id"]
        self.sid = item["extra_data"].get("client_id")
        self.faults = dict(item["faults"])
        memo: dict = {}
        self.signatures = {nid: node_signature(self.prompt, nid, server._schemas, server.input_dir, memo)
                           for nid in self.prompt}
        self.nodes: dict[str, dict] = {}  # the progress registry: node -> {state, value, max}
        self.texts: list[bytes] = []
        self.current_inputs: dict = {}
        self.sent = 0
        # exec_seconds goes to the sampler steps, where a real run spends its time and a watcher sees
        # progress; a graph without a sampler spends it over its nodes
        steps = sum(_sampler_steps_hint(self.prompt, nid) for nid in self.prompt
                    if self.prompt[nid]["class_type"] in SAMPLERS)
        self.step_s = server.exec_seconds / steps if steps else 0.0
        self.node_s = 0.0 if steps else server.exec_seconds / max(1, len(self.prompt))

    def value(self, link: list) -> Any:
        """A linked input: the source's output, from this run or (for a node cached before it) the cache."""
        return self.server._cache[self.signatures[link[0]]][0][link[1]]

    async def emit(self, event: str | int, data: dict | bytes, sid: str | None) -> None:
        """Send a message of this prompt, counting them for the faults that strike after N messages."""
        await self.server._emit(event, data, sid)
        self.sent += 1
        drop = self.faults.get("ws_drop")
        if drop and self.sent == drop.get("after_messages", 5):
            for ws in self.server._sockets.get(self.sid, []):
                ws[TRANSPORT].abort()
        die = self.faults.get("die")
        if die and self.sent == die.get("after_messages", 5):
            self.server._crash()
            raise Crashed()

    async def progress(self, nid: str, state: str, value: float | None = None, maximum: float | None = None):
        """ProgressRegistry + WebUIProgressHandler: every change sends all non-pending nodes."""
        entry = self.nodes.setdefault(nid, {"state": "pending", "value": 0, "max": 1})
        entry["state"] = state
        if maximum is not None:
            entry["value"], entry["max"] = value, maximum
        if state == "finished":
            entry["value"] = entry["max"]
        nodes = {n: {"value": e["value"], "max": e["max"], "state": e["state"], "node_id": n,
                     "prompt_id": self.prompt_id, "display_node_id": n, "parent_node_id": None, "real_node_id": n}
                 for n, e in self.nodes.items()}
        await self.emit("progress_state", {"prompt_id": self.prompt_id, "nodes": nodes}, self.sid)

    def check_interrupt(self) -> None:
        """throw_exception_if_processing_interrupted: checked before each node and at each sampler step."""
        if self.server._interrupt.is_set():
            raise Interrupted()

    async def tick(self) -> None:
        """A non-sampler node's share of exec_seconds."""
        await asyncio.sleep(self.node_s)

    async def sample(self, nid: str, inputs: dict) -> None:
        """A sampler's steps; each sends progress_state then `progress` (main.py's hook). The hang fault
        waits here for an interrupt (its `seconds` are only a safety deadline)."""
        hang = self.faults.pop("hang", None)
        if hang is not None:
            try:
                await asyncio.wait_for(self.server._interrupt.wait(), hang.get("seconds", 600))
            except TimeoutError:
                pass
        steps = inputs["sigmas"]["steps"]
        for step in range(1, steps + 1):
            await asyncio.sleep(self.step_s)
            self.check_interrupt()
            await self.progress(nid, "running", step, steps)
            await self.emit("progress", {"value": step, "max": steps, "prompt_id": self.prompt_id, "node": nid},
                            self.sid)

    def send_text(self, nid: str, text: str) -> None:
        """PromptServer.send_progress_text: node id length (4 bytes, big-endian), node id, then the text."""
        node = nid.encode()
        self.texts.append(struct.pack(">I", len(node)) + node + text.encode())


# -- validation (execution.validate_prompt / validate_inputs) -------------------------------------------------

def worker_node_schemas() -> dict:
    """/object_info entries of the worker's own ComfyUI nodes (ltx2_worker/comfy_nodes), built from their
    classes the way ComfyUI's server describes a node (server.py, node_info). A loader node lists its folder
    through ComfyUI's `folder_paths`, stood in for here by an empty list: the server fills in its own files
    (_set_options, MODEL_INPUTS)."""
    out = {}
    stand_in = types.ModuleType("folder_paths")
    stand_in.get_filename_list = lambda folder: []
    saved = sys.modules.setdefault("folder_paths", stand_in)
    try:
        for path in sorted((ROOT / "ltx2_worker" / "comfy_nodes").glob("*.py")):
            out.update(_node_schemas(path))
    finally:
        if saved is stand_in:
            del sys.modules["folder_paths"]
    return out


def _node_schemas(path: Path) -> dict:
    spec = importlib.util.spec_from_file_location(f"comfy_node_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # imports nothing heavy at module level (torch is imported on use)
    out = {}
    for name, cls in module.NODE_CLASS_MAPPINGS.items():
        inputs = cls.INPUT_TYPES()
        out[name] = {
            "input": inputs, "input_order": {k: list(v) for k, v in inputs.items()},
            "output": list(cls.RETURN_TYPES), "output_is_list": [False] * len(cls.RETURN_TYPES),
            "output_name": list(getattr(cls, "RETURN_NAMES", cls.RETURN_TYPES)), "name": name,
            "display_name": module.NODE_DISPLAY_NAME_MAPPINGS.get(name, name),
            "description": getattr(cls, "DESCRIPTION", ""), "python_module": f"custom_nodes.{path.stem}",
            "category": cls.CATEGORY, "output_node": getattr(cls, "OUTPUT_NODE", False)}
    return json.loads(json.dumps(out))  # as /object_info carries it: tuples become lists


def _error(kind: str, message: str, details: str, **extra: Any) -> dict:
    return {"type": kind, "message": message, "details": details, "extra_info": extra}


def _set_options(info: dict, class_type: str, name: str, options: list[str]) -> None:
    spec = info.get(class_type, {}).get("input", {}).get("required", {}).get(name)
    if spec is None:
        return
    if isinstance(spec[0], list):
        spec[0] = options
    else:
        spec[1]["options"] = options


def validate_prompt(prompt: dict, schemas: dict, input_dir: Path) -> tuple[bool, dict | None, list[str], dict]:
    """(ok, error, outputs to execute, node_errors) as execution.validate_prompt returns them. A prompt with
    at least one valid output is accepted, and the failing outputs' node_errors come with the 200 answer."""
    outputs = []
    for nid, node in prompt.items():
        if "class_type" not in node:
            title = node.get("_meta", {}).get("title")
            return False, _error("missing_node_type", f"Node '{title or f'ID #{nid}'}' has no class_type. The "
                                 "workflow may be corrupted or a custom node is missing.", f"Node ID '#{nid}'",
                                 node_id=nid, class_type=None, node_title=title), [], {}
        if node["class_type"] not in schemas:
            title = node.get("_meta", {}).get("title", node["class_type"])
            return False, _error("missing_node_type", f"Node '{title}' not found. The custom node may not be "
                                 "installed.", f"Node ID '#{nid}'", node_id=nid, class_type=node["class_type"],
                                 node_title=title), [], {}
        if schemas[node["class_type"]].get("output_node") is True:
            outputs.append(nid)
    if not outputs:
        return False, _error("prompt_no_outputs", "Prompt has no outputs", ""), [], {}
    good, failed, node_errors = [], [], {}
    validated: dict[str, tuple] = {}
    for out in outputs:
        try:
            valid, reasons, _ = validate_inputs(prompt, out, validated, schemas, input_dir)
        except Exception as exc:
            valid, reasons = False, [_error("exception_during_validation", "Exception when validating node",
                                            str(exc), exception_type=_type_name(exc), traceback=[])]
            validated[out] = (False, reasons, out)
        if valid:
            good.append(out)
            continue
        failed.append((out, reasons))
        for nid, (ok, node_reasons, _) in validated.items():
            if not ok and node_reasons:
                node_errors.setdefault(nid, {"errors": node_reasons, "dependent_outputs": [],
                                             "class_type": prompt[nid]["class_type"]})
                node_errors[nid]["dependent_outputs"].append(out)
    if not good:
        details = "\n".join(f"{e['message']}: {e['details']}" for _, reasons in failed for e in reasons)
        return False, _error("prompt_outputs_failed_validation", "Prompt outputs failed validation", details), \
            [], node_errors
    return True, None, good, node_errors


def validate_inputs(prompt: dict, nid: str, validated: dict, schemas: dict, input_dir: Path,
                    visiting: list | None = None) -> tuple[bool, list, str]:
    """One node and, through its links, its ancestors. Mirrors execution.validate_inputs, including that a
    link to a missing node or output index raises here and is reported by the *downstream* node's check
    (exception_during_inner_validation), or as exception_during_validation when the output node itself raises.
    Converted widget values are written back into the prompt, as ComfyUI does."""
    visiting = [] if visiting is None else visiting
    if nid in validated:
        return validated[nid]
    if nid in visiting:
        path = visiting[visiting.index(nid):] + [nid]
        cycle = list(dict.fromkeys(path))
        details = " -> ".join(f"{n} ({prompt[n]['class_type']})" for n in path)
        for n in cycle:
            validated[n] = (False, [_error("dependency_cycle", "Dependency cycle detected", details, node_id=n,
                                           cycle_nodes=cycle)], n)
        return validated[nid]
    node = prompt[nid]
    inputs = node["inputs"]
    spec = schemas[node["class_type"]]["input"]
    # inputs LoadImage.VALIDATE_INPUTS and LoadAudio.validate_inputs take instead of the COMBO check
    custom = {"LoadImage": {"image"}, "LoadAudio": {"audio"}, "LoadVideo": {"file"}}.get(node["class_type"], set())
    errors, valid = [], True
    for section in ("required", "optional"):
        for name, (input_type, *rest) in spec.get(section, {}).items():
            extra = rest[0] if rest else {}
            if name not in inputs:
                if section == "required":
                    errors.append(_error("required_input_missing", "Required input is missing", name,
                                         input_name=name))
                continue
            value = inputs[name]
            config = [input_type, extra]
            if isinstance(value, list):
                if len(value) != 2:
                    errors.append(_error("bad_linked_input", "Bad linked input, must be a length-2 list of "
                                         "[node_id, slot_index]", name, input_name=name, input_config=config,
                                         received_value=value))
                    continue
                source = value[0]
                received = tuple(schemas[prompt[source]["class_type"]]["output"])[value[1]]
                if not types_match(received, input_type):
                    errors.append(_error("return_type_mismatch", "Return type mismatch between linked nodes",
                                         f"{name}, received_type({received}) mismatch input_type({input_type})",
                                         input_name=name, input_config=config, received_type=received,
                                         linked_node=value))
                    continue
                try:
                    visiting.append(nid)
                    try:
                        upstream = validate_inputs(prompt, source, validated, schemas, input_dir, visiting)
                    finally:
                        visiting.pop()
                    if upstream[0] is False:
                        valid = False
                except Exception as exc:
                    valid = False
                    validated[source] = (False, [_error(
                        "exception_during_inner_validation", "Exception when validating inner node", str(exc),
                        input_name=name, input_config=config, exception_message=str(exc),
                        exception_type=_type_name(exc), traceback=[], linked_node=value)], source)
                continue
            error = _check_widget(inputs, name, input_type, extra, config, name in custom)
            if error:
                errors.append(error)
            elif input_type == DYNAMIC_COMBO:
                errors += _check_dynamic_combo(inputs, name, extra)
    for name in custom:
        if isinstance(inputs.get(name), str) and not (input_dir / inputs[name]).is_file():
            kind = {"file": "video"}.get(name, name)
            errors.append(_error("custom_validation_failed", "Custom validation failed for node",
                                 f"{name} - Invalid {kind} file: {inputs[name]}", input_name=name))
    previous = validated.get(nid, (True, [], nid))
    validated[nid] = (previous[0] and valid and not errors, previous[1] + [e for e in errors if e not in previous[1]],
                      nid)
    return validated[nid]


def _check_dynamic_combo(inputs: dict, name: str, extra: dict) -> list[dict]:
    """A v3 DynamicCombo (e.g. TextGenerate's sampling_mode): its value picks an option, whose own inputs come
    as `<name>.<input>` (comfy_api's finalize_prefix) and are checked as widgets."""
    options = {option["key"]: option["inputs"] for option in extra.get("options", [])}
    if inputs[name] not in options:
        return [_error("value_not_in_list", "Value not in list", f"{name}: {inputs[name]!r} not in {list(options)}",
                       input_name=name, received_value=inputs[name])]
    errors = []
    for section in ("required", "optional"):
        for sub, (sub_type, *rest) in options[inputs[name]].get(section, {}).items():
            full = f"{name}.{sub}"
            if full not in inputs:
                if section == "required":
                    errors.append(_error("required_input_missing", "Required input is missing", full,
                                         input_name=full))
                continue
            error = _check_widget(inputs, full, sub_type, rest[0] if rest else {}, [sub_type, *rest], False)
            if error:
                errors.append(error)
    return errors


def _check_widget(inputs: dict, name: str, input_type: Any, extra: dict, config: list, custom: bool) -> dict | None:
    """A widget value: converted as int()/float()/str()/bool() would, then min, max and the COMBO list."""
    value = inputs[name]
    if isinstance(value, dict) and "__value__" in value:
        value = inputs[name] = value["__value__"]
    convert = {"INT": int, "FLOAT": float, "STRING": str, "BOOLEAN": bool}.get(input_type) \
        if isinstance(input_type, str) else None
    if convert is not None:
        try:
            value = inputs[name] = convert(value)
        except Exception as exc:
            return _error("invalid_input_type", f"Failed to convert an input value to a {input_type} value",
                          f"{name}, {value}, {exc}", input_name=name, input_config=config, received_value=value,
                          exception_message=str(exc))
    if custom:
        return None
    if "min" in extra and value < extra["min"]:
        return _error("value_smaller_than_min", f"Value {value} smaller than min of {extra['min']}", name,
                      input_name=name, input_config=config, received_value=value)
    if "max" in extra and value > extra["max"]:
        return _error("value_bigger_than_max", f"Value {value} bigger than max of {extra['max']}", name,
                      input_name=name, input_config=config, received_value=value)
    if isinstance(input_type, list) or input_type == "COMBO":
        options = input_type if isinstance(input_type, list) else extra.get("options", [])
        if value not in options:
            listed = f"(list of length {len(options)})" if len(options) > 20 else str(options)
            return _error("value_not_in_list", "Value not in list", f"{name}: {value!r} not in {listed}",
                          input_name=name, input_config=None if len(options) > 20 else config,
                          received_value=value)
    return None


def types_match(received: Any, expected: Any) -> bool:
    """comfy_execution.validation.validate_node_input (non-strict): equal, '*', or overlapping unions."""
    if received == expected or "*" in (received, expected):
        return True
    if isinstance(received, list) and expected == "COMBO":
        return True
    if not isinstance(received, str) or not isinstance(expected, str):
        return False
    got, want = {t.strip() for t in received.split(",")}, {t.strip() for t in expected.split(",")}
    return "*" in got or "*" in want or bool(got & want)


def _type_name(exc: BaseException) -> str:
    """execution.full_type_name: builtins are bare (KeyError), others module-qualified."""
    kind = type(exc)
    return kind.__qualname__ if kind.__module__ == "builtins" else f"{kind.__module__}.{kind.__qualname__}"


def _format_value(value: Any) -> Any:
    return value if value is None or isinstance(value, int | float | bool | str) else str(value)


def _json_or_none(text: str, key: str) -> Any:
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        return None
    return data.get(key) if isinstance(data, dict) else None


def _annotated(filename: str, server: ProtocolComfy) -> tuple[str, Path | None]:
    """folder_paths.annotated_filepath: `name [output]` / `[input]` / `[temp]` picks the folder."""
    for kind in ("output", "input", "temp"):
        if filename.endswith(f" [{kind}]"):
            return filename[:-len(kind) - 3], server._folder(kind)
    return filename, None


# -- execution order and cache keys ------------------------------------------------------------------------

def execution_order(prompt: dict, outputs: list[str], schemas: dict, cached: set[str]) -> list[str]:
    """ExecutionList: the outputs and their ancestors that were not cached when added (a cached node's inputs
    are not needed), each after its inputs; among ready nodes an output node first, then one feeding an
    output (ux_friendly_pick_node), else the first ready."""
    pending: dict[str, set[str]] = {}
    stack = list(outputs)
    while stack:
        nid = stack.pop()
        if nid in pending:
            continue
        pending[nid] = set()
        for value in prompt[nid]["inputs"].values():
            if isinstance(value, list) and len(value) == 2:
                if value[0] not in cached:
                    stack.append(value[0])
                    pending[nid].add(value[0])
    order: list[str] = []
    while pending:
        ready = [n for n, deps in pending.items() if not deps - set(order)]
        outputs_now = [n for n in ready if schemas[prompt[n]["class_type"]].get("output_node")]
        feeding = [n for n in ready if any(n in pending[o] and schemas[prompt[o]["class_type"]].get("output_node")
                                           for o in pending)]
        pick = (outputs_now or feeding or ready)[0]
        order.append(pick)
        del pending[pick]
    return order


def node_signature(prompt: dict, nid: str, schemas: dict, input_dir: Path, memo: dict | None = None) -> str:
    """CacheKeySetInputSignature in effect: class, IS_CHANGED (LoadImage: the file's hash), the node id for
    classes with a hidden UNIQUE_ID input, and the inputs with links replaced by their source's signature.
    Two nodes with the same signature share a cache entry, even within one prompt."""
    memo = {} if memo is None else memo
    if nid in memo:
        return memo[nid]
    memo[nid] = "cycle"
    node = prompt[nid]
    class_type = node["class_type"]
    parts: list = [class_type]
    if class_type == "LoadImage":
        path = input_dir / str(node["inputs"].get("image"))
        parts.append(hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None)
    if "UNIQUE_ID" in json.dumps(schemas.get(class_type, {}).get("input", {}).get("hidden", {})):
        parts.append(nid)
    for name in sorted(node["inputs"]):
        value = node["inputs"][name]
        if isinstance(value, list) and len(value) == 2 and value[0] in prompt:
            parts.append([name, node_signature(prompt, value[0], schemas, input_dir, memo), value[1]])
        else:
            parts.append([name, value])
    memo[nid] = hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()
    return memo[nid]


def _sampler_steps_hint(prompt: dict, nid: str) -> int:
    """Steps a sampler will take, read off its sigmas node before running (only to pace exec_seconds)."""
    link = prompt[nid]["inputs"].get("sigmas")
    source = prompt.get(link[0], {}) if isinstance(link, list) else {}
    inputs = source.get("inputs", {})
    if source.get("class_type") == "ManualSigmas":
        return max(1, len(_numbers(str(inputs.get("sigmas", "")))) - 1)
    steps = inputs.get("steps")
    return steps if isinstance(steps, int) and steps > 0 else 1


def _numbers(text: str) -> list[float]:
    return [float(n) for n in re.findall(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?", text)]


# -- shapes: what each node class produces ---------------------------------------------------------------

def _image(w: int, h: int, frames: int, colour: tuple) -> dict:
    return {"type": "IMAGE", "w": w, "h": h, "frames": frames, "colour": colour}


def _latent(w: int, h: int, t: int, seeds: tuple = (), guides: int = 0) -> dict:
    """A video latent: w, h in 32-pixel units, t in 8-frame units (+1), guide frames appended by LTXVAddGuide."""
    return {"type": "LATENT", "w": w, "h": h, "t": t, "seeds": seeds, "guides": guides}


def _seed_colour(seeds: tuple) -> tuple[int, int, int]:
    digest = hashlib.sha256(repr(seeds).encode()).digest()
    return digest[0], digest[1], digest[2]


def _video_part(latent: dict) -> dict:
    if latent.get("kind") == "av":
        return latent["video"]
    if latent.get("kind") == "audio":
        raise NodeFailure("RuntimeError", "expected a video latent, got an audio latent")
    return latent


def _scaled(img: dict, w: int, h: int) -> dict:
    """ImageScale's sizes: 0 on one side keeps the aspect ratio (nodes.ImageScale.upscale)."""
    if w == 0 and h == 0:
        return img
    if w == 0:
        w = max(1, round(img["w"] * h / img["h"]))
    elif h == 0:
        h = max(1, round(img["h"] * w / img["w"]))
    return {**img, "w": w, "h": h}


def _sample(i: dict) -> list:
    latent = i["latent_image"]
    seed = i["noise"]["seed"]
    if latent.get("kind") == "av":
        video = latent["video"]
        out = {**latent, "video": {**video, "seeds": video["seeds"] + (seed,)}}
    else:
        out = {**latent, "seeds": latent.get("seeds", ()) + (seed,)}
    return [out, out]


def _load_image(run: _Run, name: str) -> list:
    """LoadImage's real size, decoded with PyAV (PNG, JPEG, WebP...); every frame of an animated file."""
    with av.open(str(run.server.input_dir / name)) as container:
        frames = [f for f in container.decode(video=0)]
    colour = tuple(frames[0].to_ndarray(format="rgb24")[0, 0].tolist())
    return [_image(frames[0].width, frames[0].height, len(frames), colour), {"type": "MASK"}]


def _load_audio(path: Path) -> dict:
    """LoadAudio: the file's first audio stream, decoded with PyAV as comfy_extras/nodes_audio.py does; the
    samples stay in the file (`path`), which CreateVideo's MP4 then carries."""
    with av.open(str(path)) as container:
        if not container.streams.audio:
            raise NodeFailure("ValueError", "No audio stream found in the file.")
        stream = container.streams.audio[0]
        samples = sum(frame.samples for frame in container.decode(streams=stream.index))
        rate, channels = stream.codec_context.sample_rate, stream.channels
    if not samples:
        raise NodeFailure("ValueError", "No audio frames decoded.")
    return {"type": "AUDIO", "seconds": samples / rate, "sample_rate": rate, "channels": channels,
            "path": str(path), "start": 0.0}


def _load_video(path: Path) -> dict:
    """LoadVideo and its components: every frame of the first video stream, decoded with PyAV."""
    with av.open(str(path)) as container:
        if not container.streams.video:
            raise NodeFailure("ValueError", "No video stream found in the file.")
        stream = container.streams.video[0]
        frames = [f for f in container.decode(video=0)]
        fps = float(stream.average_rate or stream.guessed_rate)
    colour = tuple(frames[0].to_ndarray(format="rgb24")[0, 0].tolist())
    return {"type": "VIDEO", "images": _image(frames[0].width, frames[0].height, len(frames), colour), "fps": fps,
            "audio": None}


def _audio_samples(audio: dict, channels: int) -> np.ndarray:
    """The samples an AUDIO carries, as `channels` x n float32: a loaded file's (from `start`, `seconds` long),
    else silence (the audio VAE's decode of a random latent is noise; silence is enough here)."""
    n = max(1, round(audio["seconds"] * audio["sample_rate"]))
    if "path" not in audio:
        return np.zeros((channels, n), np.float32)
    decoded = decode_audio(audio["path"])
    start = round(audio.get("start", 0.0) * audio["sample_rate"])
    decoded = decoded[:, start:start + n]
    return np.repeat(decoded[:1], channels, axis=0) if decoded.shape[0] < channels else decoded[:channels]


def decode_audio(path: str | Path) -> np.ndarray:
    """A file's first audio stream as channels x samples floats in [-1, 1] (integer PCM scaled)."""
    parts = []
    with av.open(str(path)) as container:
        for f in container.decode(audio=0):
            a = f.to_ndarray()
            a = a.reshape(-1, f.samples) if f.format.is_planar else a.reshape(f.samples, -1).T
            if np.issubdtype(a.dtype, np.integer):
                a = a / float(2 ** (8 * a.dtype.itemsize - 1))
            parts.append(a.astype(np.float32))
    return np.concatenate(parts, axis=1)


def _crop(img: dict, width: int, height: int, x: int, y: int) -> dict:
    """nodes.ImageCrop: the origin is clamped inside the image and the crop to its edge."""
    x, y = min(x, img["w"] - 1), min(y, img["h"] - 1)
    return {**img, "w": min(x + width, img["w"]) - x, "h": min(y + height, img["h"]) - y}


def _add_guide(i: dict) -> list:
    latent = i["latent"]
    guides = (i["image"]["frames"] - 1) // 8 + 1
    return [i["positive"], i["negative"], {**latent, "t": latent["t"] + guides, "guides": latent["guides"] + guides}]


def _crop_guides(i: dict) -> list:
    latent = _video_part(i["latent"])
    return [i["positive"], i["negative"], {**latent, "t": latent["t"] - latent["guides"], "guides": 0}]


def _decode(latent: dict) -> list:
    latent = _video_part(latent)
    colour = _seed_colour(latent["seeds"])
    return [_image(latent["w"] * 32, latent["h"] * 32, (latent["t"] - 1) * 8 + 1, colour)]


def _audio_decode(latent: dict) -> list:
    if latent.get("kind") != "audio":
        raise NodeFailure("RuntimeError", "LTXVAudioVAEDecode needs an audio latent")
    return [{"type": "AUDIO", "seconds": latent["seconds"], "sample_rate": 24000, "channels": 2}]


def _handle(kind: str, **detail: Any) -> dict:
    """An opaque loaded model (MODEL, CLIP, VAE, ...): only its identity matters here."""
    return {"type": kind, **detail}


def _with_lora(class_type: str, model: dict, name: str, strength: float) -> dict:
    """A model with a LoRA, as each loader leaves it at the pinned tag: LoraLoader(ModelOnly) adds weight
    patches (`merged`, which add up); ComfyUI's LoraLoaderBypassModelOnly sets its branches under the one key
    "bypass_lora", replacing the bypass LoRAs before it (comfy/sd.py: set_injections); the worker's
    LTX2LoraBypass keeps them and adds its own. Strength 0 returns the model as it is (both loaders)."""
    if strength == 0:
        return model
    if class_type in ("LoraLoader", "LoraLoaderModelOnly"):
        return {**model, "merged": (*model.get("merged", ()), (name, strength))}
    earlier = model.get("bypass", ()) if class_type == "LTX2LoraBypass" else ()
    return {**model, "bypass": (*earlier, (name, strength))}


def simulate(class_type: str, i: dict, run: _Run, nid: str) -> tuple[list, dict | None]:
    """One node's outputs as shapes, and the UI output of an output node. A class not modelled here fails
    the prompt as a node would (execution_error), naming it."""
    match class_type:
        case "CheckpointLoaderSimple" | "LTX2PinnedCheckpointLoader" | "LTX2PinnedCheckpointLoaderBeside":
            name = i["ckpt_name"]
            return [_handle("MODEL", ckpt=name), _handle("CLIP", ckpt=name), _handle("VAE", ckpt=name)], None
        case "LTXAVTextEncoderLoader" | "LTX2TextEncoderLoader" | "CLIPLoader":
            return [_handle("CLIP", **i)], None
        case "TextGenerateLTX2Prompt":  # the text encoder writing: here a function of prompt, image and seed
            if i["clip"].get("type") != "CLIP":
                raise NodeFailure("AttributeError", "'dict' object has no attribute 'tokenize'")
            seen = f", after a {i['image']['w']} x {i['image']['h']} first frame" if i.get("image") else ""
            return [f"Style: cinematic. {i['prompt']}, told in detail{seen} (seed "
                    f"{i.get('sampling_mode.seed')})"], None
        case "PreviewAny":
            text = i["source"] if isinstance(i["source"], str) else json.dumps(i["source"])
            return [text], {"text": [text]}
        case "LTXVAudioVAELoader" | "LTX2AudioVAELoader" | "VAELoader":
            return [_handle("VAE", **i)], None
        case "UNETLoader":
            return [_handle("MODEL", **i)], None
        case "LatentUpscaleModelLoader" | "LTX2LatentUpscaleModelLoader":
            return [_handle("LATENT_UPSCALE_MODEL", **i)], None
        case "LTX2CudaGraphs":
            return [{**i["model"], "cuda_graphs": i["enabled"]}], None
        case "LTX2CompileBlocks":
            return [{**i["model"], "compiled": i["enabled"]}], None
        case "LoraLoaderModelOnly" | "LoraLoaderBypassModelOnly" | "LTX2LoraBypass":
            return [_with_lora(class_type, i["model"], i["lora_name"], i["strength_model"])], None
        case "LoraLoader":
            return [_with_lora(class_type, i["model"], i["lora_name"], i["strength_model"]),
                    {**i["clip"], "lora": i["lora_name"]}], None
        case "ModelSamplingLTXV":
            return [i["model"]], None
        case "CLIPTextEncode":
            return [{"type": "CONDITIONING", "text": i["text"]}], None
        case "LTX2EncodedPrompts":  # the worker's node: the conditionings an encoder process wrote (here as JSON:
            try:  # tests/fake_prompt_encoder.py stands in for that process)
                saved = json.loads(Path(i["path"]).read_text())
            except (OSError, ValueError) as exc:
                raise NodeFailure(type(exc).__name__, str(exc)) from None
            return [{"type": "CONDITIONING", "text": saved["positive"]},
                    {"type": "CONDITIONING", "text": saved["negative"]}], None
        case "LTXVConditioning":
            return [i["positive"], i["negative"]], None
        case "CFGGuider":
            return [{"type": "GUIDER", "cfg": i["cfg"], "model": i["model"]}], None
        case "KSamplerSelect":
            return [{"type": "SAMPLER", "name": i["sampler_name"]}], None
        case "RandomNoise":
            return [{"type": "NOISE", "seed": i["noise_seed"]}], None
        case "LTXVScheduler" | "BasicScheduler":
            return [{"type": "SIGMAS", "steps": i["steps"]}], None
        case "ManualSigmas":
            return [{"type": "SIGMAS", "steps": max(0, len(_numbers(i["sigmas"])) - 1)}], None
        case "SplitSigmas":
            steps, at = i["sigmas"]["steps"], min(i["step"], i["sigmas"]["steps"])
            return [{"type": "SIGMAS", "steps": at}, {"type": "SIGMAS", "steps": steps - at}], None
        case "SamplerCustomAdvanced":
            run.server.sampled.append((nid, i["guider"].get("model", {})))
            return _sample(i), None
        case "PrimitiveInt" | "PrimitiveFloat" | "PrimitiveString":
            return [i["value"]], None
        case "EmptyImage":
            c = i["color"]
            return [_image(i["width"], i["height"], i["batch_size"], (c >> 16 & 255, c >> 8 & 255, c & 255))], None
        case "LoadImage":
            return _load_image(run, i["image"]), None
        case "LoadAudio":
            return [_load_audio(run.server.input_dir / i["audio"])], None
        case "LoadVideo":
            return [_load_video(run.server.input_dir / i["file"])], None
        case "GetVideoComponents":
            v = i["video"]
            return [v["images"], v.get("audio"), v["fps"], v["images"]["frames"]], None
        case "ImageFromBatch":
            img = i["image"]
            start = min(i["batch_index"], img["frames"] - 1)
            return [{**img, "frames": min(i["length"], img["frames"] - start)}], None
        case "Canny":
            return [{**i["image"], "colour": (255, 255, 255)}], None
        case "SDPoseKeypointExtractor":
            if "sdpose" not in i["model"].get("ckpt", "").lower():  # the file name stands in for its keys
                raise NodeFailure("ValueError", "The provided model does not have a heatmap_head. Please use SDPose "
                                                "model from here https://huggingface.co/Comfy-Org/SDPose/tree/main/checkpoints.")
            img = i["image"]
            return [{"type": "POSE_KEYPOINT", "w": img["w"], "h": img["h"], "frames": img["frames"]}], None
        case "SDPoseDrawKeypoints":
            kp = i["keypoints"]
            return [_image(kp["w"], kp["h"], kp["frames"], (255, 0, 85))], None
        case "LotusConditioning":
            return [{"type": "CONDITIONING", "lotus": True}], None
        case "BasicGuider":
            return [{"type": "GUIDER", "model": i["model"], "conditioning": i["conditioning"]}], None
        case "DisableNoise":
            return [{"type": "NOISE", "seed": None}], None
        case "SetFirstSigma":
            return [{**i["sigmas"], "first": i["sigma"]}], None
        case "ImageInvert":
            img = i["image"]
            return [{**img, "colour": tuple(255 - c for c in img["colour"])}], None
        case "TrimAudioDuration":
            start = i["start_index"]
            return [{**i["audio"], "start": i["audio"].get("start", 0.0) + start,
                     "seconds": max(0.0, min(i["audio"]["seconds"] - start, i["duration"]))}], None
        case "LTXVAudioVAEEncode":
            return [{"type": "LATENT", "kind": "audio", "seconds": i["audio"]["seconds"], "encoded": True}], None
        case "SolidMask":
            return [{"type": "MASK", "value": i["value"], "w": i["width"], "h": i["height"]}], None
        case "SetLatentNoiseMask":
            return [{**i["samples"], "noise_mask": i["mask"]["value"]}], None
        case "ImageScale":
            return [_scaled(i["image"], i["width"], i["height"])], None
        case "ImageScaleBy":
            img = i["image"]
            return [{**img, "w": round(img["w"] * i["scale_by"]), "h": round(img["h"] * i["scale_by"])}], None
        case "ResizeAndPadImage":
            return [{**i["image"], "w": i["target_width"], "h": i["target_height"]}], None
        case "ImageCrop":
            return [_crop(i["image"], i["width"], i["height"], i["x"], i["y"])], None
        case "RepeatImageBatch":
            return [{**i["image"], "frames": i["image"]["frames"] * i["amount"]}], None
        case "GetImageSize":
            img = i["image"]
            run.send_text(nid, f"width: {img['w']}, height: {img['h']}\n batch size: {img['frames']}")
            return [img["w"], img["h"], img["frames"]], None
        case "LTXVPreprocess":
            return [i["image"]], None
        case "EmptyLTXVLatentVideo":
            return [_latent(i["width"] // 32, i["height"] // 32, (i["length"] - 1) // 8 + 1)], None
        case "LTXVEmptyLatentAudio":
            return [{"type": "LATENT", "kind": "audio", "seconds": i["frames_number"] / i["frame_rate"]}], None
        case "LTXVConcatAVLatent":
            return [{"type": "LATENT", "kind": "av", "video": _video_part(i["video_latent"]),
                     "audio": i["audio_latent"]}], None
        case "LTXVSeparateAVLatent":
            if i["av_latent"].get("kind") != "av":
                raise NodeFailure("KeyError", "'audio' (the latent is not an audio-video latent)")
            return [i["av_latent"]["video"], i["av_latent"]["audio"]], None
        case "LTXVImgToVideoInplace":
            return [i["latent"]], None
        case "LTXVImgToVideo":
            latent = _latent(i["width"] // 32, i["height"] // 32, (i["length"] - 1) // 8 + 1)
            return [i["positive"], i["negative"], latent], None
        case "LTXVAddGuide":
            return _add_guide(i), None
        case "LTXVCropGuides":
            return _crop_guides(i), None
        case "LTXVLatentUpsampler" | "LTX2LatentUpsampler":
            latent = _video_part(i["samples"])
            return [{**latent, "w": latent["w"] * 2, "h": latent["h"] * 2}], None
        case "VAEEncode":
            img = i["pixels"]
            if "vae_name" in i["vae"]:  # an image VAE (VAELoader): 8-pixel units, every frame its own image
                return [{"type": "LATENT", "kind": "image", "w": img["w"] // 8, "h": img["h"] // 8,
                         "frames": img["frames"], "seeds": ()}], None
            return [_latent(img["w"] // 32, img["h"] // 32, (img["frames"] - 1) // 8 + 1)], None
        case "VAEDecode" | "VAEDecodeTiled" | "LTX2VAEDecodeTiled":
            if i["samples"].get("kind") == "image":
                if "vae_name" not in i["vae"]:
                    raise NodeFailure("RuntimeError", "an image latent decoded by a video VAE")
                lat = i["samples"]
                return [_image(lat["w"] * 8, lat["h"] * 8, lat["frames"], _seed_colour(lat["seeds"]))], None
            return _decode(i["samples"]), None
        case "LTXVAudioVAEDecode":
            return _audio_decode(i["samples"]), None
        case "EmptyAudio":
            return [{"type": "AUDIO", "seconds": i["duration"], "sample_rate": i["sample_rate"],
                     "channels": i["channels"]}], None
        case "CreateVideo":
            return [{"type": "VIDEO", "images": i["images"], "fps": i["fps"], "audio": i.get("audio")}], None
        case "SaveVideo":  # libx264's defaults, the prompt in the metadata
            saved = save_video(run.server.output_dir, i["filename_prefix"], i["video"], run.prompt)
            return [i["video"]], {"images": [saved], "animated": [True]}
        case "LTX2SaveVideo":  # the worker's node: its preset and CRF, no metadata, written under a temporary name
            saved = save_video(run.server.output_dir, i["filename_prefix"], i["video"], None,
                               {"preset": i["preset"], "crf": str(i["crf"])})
            return [], {"images": [saved], "animated": [True]}
    raise NodeFailure("NotImplementedError", f"the protocol server does not model {class_type}")


# -- SaveVideo and LTX2SaveVideo -----------------------------------------------------------------------------

def save_path(output_dir: Path, prefix: str, width: int, height: int) -> tuple[Path, str, str]:
    """folder_paths.get_save_image_path + SaveVideo's name: (folder, file name, reported subfolder).
    The counter is one past the highest `<name>_NNNNN_*` already in the folder, whatever its extension."""
    for key, value in (("%width%", width), ("%height%", height)):
        prefix = prefix.replace(key, str(value))
    now = time.localtime()
    for key, value in (("%year%", now.tm_year), ("%month%", now.tm_mon), ("%day%", now.tm_mday),
                       ("%hour%", now.tm_hour), ("%minute%", now.tm_min), ("%second%", now.tm_sec)):
        prefix = prefix.replace(key, str(value).zfill(2))
    subfolder, name = os.path.split(os.path.normpath(prefix))
    folder = Path(os.path.abspath(output_dir / subfolder))
    if os.path.commonpath((str(output_dir), str(folder))) != str(output_dir):
        raise NodeFailure("Exception", "**** ERROR: Saving image outside the output folder is not allowed."
                                       f"\n full_output_folder: {folder}\n         output_dir: {output_dir}")
    folder.mkdir(parents=True, exist_ok=True)
    counters = [int(m.group(1)) for p in folder.iterdir()
                if (m := re.match(re.escape(name) + r"_(\d+)_", p.name)) and p.name[len(name) + 1:].split(".")[0]
                .split("_")[0] == m.group(1)]
    return folder, f"{name}_{max(counters, default=0) + 1:05}_.mp4", subfolder


def save_video(output_dir: Path, prefix: str, video: dict, prompt: dict | None,
               options: dict[str, str] | None = None) -> dict:
    """A real MP4 as SaveVideo writes it: h264 yuv420p at the video's size, frame count and rate, an AAC
    stream when CreateVideo had audio, the prompt (if any) in the metadata, libx264 `options` (SaveVideo's:
    the defaults). Frames are one solid colour, fast at any preset."""
    images = video["images"]
    folder, filename, subfolder = save_path(output_dir, prefix, images["w"], images["h"])
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="mp4") as container:
        if prompt is not None:
            container.metadata["prompt"] = json.dumps(prompt)
        stream = container.add_stream("libx264", rate=Fraction(round(video["fps"] * 1000), 1000))
        stream.width, stream.height, stream.pix_fmt = images["w"], images["h"], "yuv420p"
        stream.options = options or {}
        audio = video.get("audio")
        audio_stream = container.add_stream("aac", rate=audio["sample_rate"]) if audio else None
        if audio_stream is not None:
            audio_stream.layout = "stereo" if audio["channels"] > 1 else "mono"
        frame = av.VideoFrame.from_ndarray(np.full((images["h"], images["w"], 3), images["colour"], np.uint8),
                                           format="rgb24")
        for _ in range(images["frames"]):
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
        if audio_stream is not None:
            channels = 2 if audio["channels"] > 1 else 1
            samples = np.ascontiguousarray(_audio_samples(audio, channels))
            sound = av.AudioFrame.from_ndarray(samples, format="fltp", layout=audio_stream.layout.name)
            sound.sample_rate = audio["sample_rate"]
            container.mux(audio_stream.encode(sound))
            container.mux(audio_stream.encode())
    partial = folder / f"{filename}.part"
    partial.write_bytes(buffer.getvalue())
    partial.replace(folder / filename)
    return {"filename": filename, "subfolder": subfolder, "type": "output"}
