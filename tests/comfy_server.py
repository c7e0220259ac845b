"""A ComfyUI v0.26.2 *protocol* server for the CI tests: real HTTP and a real WebSocket on 127.0.0.1 (aiohttp,
as ComfyUI itself), behaving as the recordings in tests/data/ show, with fault injection.

What it reproduces from ComfyUI's source (execution.py, server.py, main.py):
- /prompt validation against the recorded node schemas (tests/data/object_info.json), with ComfyUI's error
  types and JSON shapes; only nodes reachable from output nodes are validated; model COMBO options list the
  files "on disk" (`model_files`), as a real server does.
- execution of the graph's *shapes*: sizes, frame counts, frame rate and audio flow through the nodes as in
  ComfyUI (EmptyLTXVLatentVideo silently rounds down to 32 pixels), and SaveVideo writes a real MP4 (PyAV)
  with ComfyUI's file naming; its pixel colour derives from the noise seeds, so outputs are deterministic.
- the WebSocket message order of tests/data/trace_*.json; execution_success is sent before /history holds the
  entry, and `executing` with node null after it (main.py's order).
- node-level caching: an unchanged node is not re-executed, and an identical resubmission points at the same
  output file, even if that file has been deleted since.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import struct
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import av
import numpy as np
from aiohttp import WSMsgType, web
from PIL import Image

DATA = Path(__file__).resolve().parent / "data"
DEFAULT_MODEL_FILES = {
    "checkpoints": ["ltx-2-19b-dev-fp8.safetensors"],
    "text_encoders": ["gemma_3_12B_it_fp4_mixed.safetensors"],
    "loras": ["ltx-2-19b-distilled-lora-384.safetensors"],
    "latent_upscale_models": ["ltx-2-spatial-upscaler-x2-1.0.safetensors"],
}
# (class, input) -> the model folder whose files a real server lists as the input's options
MODEL_INPUTS = {
    ("CheckpointLoaderSimple", "ckpt_name"): "checkpoints",
    ("LTXAVTextEncoderLoader", "ckpt_name"): "checkpoints",
    ("LTXAVTextEncoderLoader", "text_encoder"): "text_encoders",
    ("LTXVAudioVAELoader", "ckpt_name"): "checkpoints",
    ("LoraLoaderModelOnly", "lora_name"): "loras",
    ("LatentUpscaleModelLoader", "model_name"): "latent_upscale_models",
}
SAMPLERS = {"SamplerCustomAdvanced"}
FAULTS = {"execution_error", "ws_drop", "hang", "reject", "history_missing_output", "view_error", "die",
          "slow_http"}
PREVIEW_TEXT = 3  # BinaryEventTypes.TEXT in ComfyUI's protocol.py


class NotModelled(Exception):
    """A node class this server cannot simulate: reported as an execution_error naming it."""


class ProtocolComfy:
    def __init__(self, output_dir: Path, object_info_path: Path = DATA / "object_info.json",
                 model_files: dict[str, list[str]] | None = None, exec_seconds: float = 0.0,
                 input_dir: Path | None = None, port: int = 0):
        self.port = port  # 0: any free port
        self.output_dir = Path(output_dir)
        self.input_dir = Path(input_dir) if input_dir else self.output_dir.parent / "input"
        self.model_files = model_files if model_files is not None else DEFAULT_MODEL_FILES
        self.object_info = self._with_model_options(json.loads(Path(object_info_path).read_text()))
        self.exec_seconds = exec_seconds
        self.submitted: list[dict] = []
        self.interrupts = 0
        self.frees = 0
        self.ws_connections = 0
        self.exec_durations: list[float] = []  # seconds from POST /prompt to the history entry, per prompt
        self.url = ""
        self._faults: list[tuple[str, dict]] = []
        self._history: dict[str, dict] = {}
        self._cache: dict[str, tuple[list, dict | None]] = {}  # signature -> (outputs, ui)
        self._sockets: dict[str, list[web.WebSocketResponse]] = {}
        self._number = 0
        self._running: dict | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._dead = False

    # -- lifecycle --------------------------------------------------------------------------------------

    def start(self) -> ProtocolComfy:
        ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, args=(ready,), daemon=True, name="protocol-comfy")
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("protocol ComfyUI did not start within 10 s")
        return self

    def _serve(self, ready: threading.Event) -> None:
        self._loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self._loop)
        self._queue: asyncio.Queue = asyncio.Queue()
        app = web.Application(client_max_size=64 * 1024 * 1024, middlewares=[self._faulty_http])
        app.add_routes([
            web.get("/ws", self._ws), web.get("/object_info", self._object_info),
            web.get("/object_info/{node_class}", self._object_info_one), web.get("/system_stats", self._system_stats),
            web.post("/prompt", self._post_prompt), web.get("/history", self._get_history),
            web.get("/history/{prompt_id}", self._get_history_one), web.get("/view", self._view),
            web.post("/interrupt", self._interrupt), web.post("/free", self._free), web.get("/queue", self._get_queue),
            web.post("/queue", self._post_queue), web.post("/upload/image", self._upload_image)])
        self._runner = web.AppRunner(app, handle_signals=False)
        self._loop.run_until_complete(self._runner.setup())
        site = web.TCPSite(self._runner, "127.0.0.1", self.port)
        self._loop.run_until_complete(site.start())
        self.url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"
        self._worker = self._loop.create_task(self._execute_queue())
        ready.set()
        self._loop.run_forever()

    def stop(self) -> None:
        if not self._loop or self._loop.is_closed():
            return

        async def shutdown():
            self._worker.cancel()
            for sockets in self._sockets.values():
                for ws in list(sockets):
                    await ws.close()
            await self._runner.cleanup()

        try:
            asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result(timeout=10)
        except Exception:
            pass
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)

    def __enter__(self) -> ProtocolComfy:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def inject(self, fault: str, **params: Any) -> None:
        """Make the next submitted prompt (or the next `times`) meet `fault`; see FAULTS and the tests."""
        if fault not in FAULTS:
            raise ValueError(f"unknown fault {fault!r}; known: {sorted(FAULTS)}")
        self._faults.append((fault, params))

    def _take_faults(self) -> dict[str, dict]:
        taken = {}
        keep = []
        for name, params in self._faults:
            taken[name] = params
            times = params.get("times", 1)
            if times > 1:
                keep.append((name, {**params, "times": times - 1}))
        self._faults = keep
        return taken

    # -- HTTP -------------------------------------------------------------------------------------------

    @web.middleware
    async def _faulty_http(self, request: web.Request, handler):
        if self._dead:
            request.transport.close()
            raise web.HTTPServiceUnavailable()
        slow = next((p for n, p in self._faults if n == "slow_http"), None)
        if slow is not None:
            await asyncio.sleep(slow.get("seconds", 5))
        return await handler(request)

    def _with_model_options(self, info: dict) -> dict:
        for (class_type, name), folder in MODEL_INPUTS.items():
            spec = info.get(class_type, {}).get("input", {}).get("required", {}).get(name)
            if spec is None:
                continue
            files = sorted(self.model_files.get(folder, []))
            if isinstance(spec[0], list):
                spec[0] = files
            else:
                spec[1]["options"] = files
        return info

    async def _object_info(self, request):
        return web.json_response(self.object_info)

    async def _object_info_one(self, request):
        name = request.match_info["node_class"]
        return web.json_response({name: self.object_info[name]} if name in self.object_info else {})

    async def _system_stats(self, request):
        return web.json_response({
            "system": {"os": "posix", "python_version": "3.11.7", "embedded_python": False,
                       "comfyui_version": "0.26.2", "pytorch_version": "protocol-server", "argv": ["main.py"],
                       "ram_total": 24 * 2**30, "ram_free": 20 * 2**30},
            "devices": [{"name": "cpu", "type": "cpu", "index": None, "vram_total": 24 * 2**30,
                         "vram_free": 20 * 2**30, "torch_vram_total": 0, "torch_vram_free": 0}]})

    async def _post_prompt(self, request):
        body = await request.json()
        self.submitted.append(body)
        faults = self._take_faults()
        if "reject" in faults:
            recorded = json.loads((DATA / "prompt_rejected_400.json").read_text())["body"]
            if "node_errors" in faults["reject"]:
                recorded["node_errors"] = faults["reject"]["node_errors"]
            return web.json_response(recorded, status=400)
        prompt = body.get("prompt")
        if not isinstance(prompt, dict):
            return web.json_response({"error": {"type": "invalid_prompt", "message": "Invalid prompt",
                                                "details": "no prompt", "extra_info": {}}, "node_errors": {}},
                                     status=400)
        ok, error, outputs, node_errors = validate_prompt(prompt, self.object_info, self.input_dir)
        if not ok:
            return web.json_response({"error": error, "node_errors": node_errors}, status=400)
        prompt_id = str(uuid.uuid4())
        number = self._number
        self._number += 1
        item = {"number": number, "prompt_id": prompt_id, "prompt": prompt, "outputs": outputs,
                "client_id": body.get("client_id"), "faults": faults, "create_time": int(time.time() * 1000),
                "received": time.perf_counter(),
                "interrupted": asyncio.Event()}
        await self._queue.put(item)
        return web.json_response({"prompt_id": prompt_id, "number": number, "node_errors": {}})

    async def _get_history(self, request):
        return web.json_response(self._history)

    async def _get_history_one(self, request):
        prompt_id = request.match_info["prompt_id"]
        return web.json_response({prompt_id: self._history[prompt_id]} if prompt_id in self._history else {})

    async def _view(self, request):
        q = request.query
        filename, subfolder = q.get("filename", ""), q.get("subfolder", "")
        if q.get("type", "output") != "output" or filename.startswith("/") or ".." in filename:
            return web.Response(status=400)
        base = self.output_dir.resolve()
        path = (base / subfolder / filename).resolve()
        if base not in path.parents:  # ComfyUI refuses paths outside its folder (os.path.commonpath check)
            return web.Response(status=403)
        failing = self._view_fault(subfolder, filename)
        if failing:
            return web.Response(status=failing)
        if not path.is_file():
            return web.Response(status=404)
        return web.Response(body=path.read_bytes(), content_type="video/mp4" if filename.endswith(".mp4")
                            else "application/octet-stream")

    def _view_fault(self, subfolder: str, filename: str) -> int | None:
        for entry in self._history.values():
            status = entry.get("_view_error")
            if status and any(f["filename"] == filename for f in entry.get("_files", [])):
                return status
        return None

    async def _interrupt(self, request):
        self.interrupts += 1
        try:
            body = await request.json()
        except json.JSONDecodeError:
            body = {}
        running = self._running
        if running and body.get("prompt_id") in (None, running["prompt_id"]):
            running["interrupted"].set()
        return web.Response(status=200)

    async def _free(self, request):
        self.frees += 1
        await request.json()
        return web.Response(status=200)

    async def _get_queue(self, request):
        running = [[self._running["number"], self._running["prompt_id"]]] if self._running else []
        return web.json_response({"queue_running": running, "queue_pending": []})

    async def _post_queue(self, request):
        await request.json()
        return web.Response(status=200)

    async def _upload_image(self, request):
        form = await request.post()
        image = form.get("image")
        if image is None or not hasattr(image, "file"):
            return web.Response(status=400)
        subfolder = str(form.get("subfolder", ""))
        folder = self.input_dir / subfolder
        folder.mkdir(parents=True, exist_ok=True)
        name = Path(image.filename).name
        tmp = folder / f".{name}.part"
        tmp.write_bytes(image.file.read())
        tmp.replace(folder / name)
        return web.json_response({"name": name, "subfolder": subfolder, "type": "input"})

    # -- WebSocket --------------------------------------------------------------------------------------

    async def _ws(self, request):
        if self._dead:
            raise web.HTTPServiceUnavailable()
        ws = web.WebSocketResponse(max_msg_size=0)
        await ws.prepare(request)
        client_id = request.query.get("clientId") or uuid.uuid4().hex
        self._sockets.setdefault(client_id, []).append(ws)
        self.ws_connections += 1
        await ws.send_json({"type": "status", "data": {"status": {"exec_info": {"queue_remaining":
                                                                                self._queue.qsize()}},
                                                       "sid": client_id}})
        try:
            async for msg in ws:
                if msg.type == WSMsgType.ERROR:
                    break
        finally:
            if ws in self._sockets.get(client_id, []):
                self._sockets[client_id].remove(ws)
        return ws

    async def _send(self, item: dict, kind: str, data: dict) -> None:
        """Send to the submitting client, counting messages for the faults that strike after N of them."""
        item["sent"] = item.get("sent", 0) + 1
        for ws in list(self._sockets.get(item["client_id"], [])):
            try:
                await ws.send_json({"type": kind, "data": data})
            except (ConnectionError, RuntimeError):
                pass
        drop = item["faults"].get("ws_drop")
        if drop and item["sent"] == drop.get("after_messages", 5):
            for ws in list(self._sockets.get(item["client_id"], [])):
                await ws.close()
        die = item["faults"].get("die")
        if die and item["sent"] == die.get("after_messages", 5):
            await self._die()

    async def _send_binary(self, item: dict, payload: bytes) -> None:
        for ws in list(self._sockets.get(item["client_id"], [])):
            try:
                await ws.send_bytes(payload)
            except (ConnectionError, RuntimeError):
                pass

    async def _die(self) -> None:
        """Like a crashed process: every connection drops and nothing answers any more."""
        self._dead = True
        for sockets in self._sockets.values():
            for ws in list(sockets):
                await ws.close()
        await self._runner.cleanup()
        raise asyncio.CancelledError

    # -- execution --------------------------------------------------------------------------------------

    async def _execute_queue(self) -> None:
        while True:
            item = await self._queue.get()
            self._running = item
            try:
                await self._execute(item)
            except asyncio.CancelledError:
                return
            finally:
                self._running = None

    async def _broadcast_status(self) -> None:
        for sockets in self._sockets.values():
            for ws in list(sockets):
                try:
                    await ws.send_json({"type": "status", "data": {"status": {"exec_info": {
                        "queue_remaining": self._queue.qsize() + (1 if self._running else 0)}}}})
                except (ConnectionError, RuntimeError):
                    pass

    async def _execute(self, item: dict) -> None:
        prompt, prompt_id = item["prompt"], item["prompt_id"]
        order = execution_order(prompt, item["outputs"])
        signatures = {nid: node_signature(prompt, nid) for nid in order}
        cached_at_start = [nid for nid in order if signatures[nid] in self._cache]
        await self._broadcast_status()
        ts = lambda: int(time.time() * 1000)  # noqa: E731
        await self._send(item, "execution_start", {"prompt_id": prompt_id, "timestamp": ts()})
        messages = [["execution_start", {"prompt_id": prompt_id, "timestamp": ts()}]]
        await self._send(item, "execution_cached", {"nodes": cached_at_start, "prompt_id": prompt_id,
                                                    "timestamp": ts()})
        messages.append(["execution_cached", {"nodes": cached_at_start, "prompt_id": prompt_id,
                                              "timestamp": ts()}])
        await self._send_binary(item, struct.pack(">I", PREVIEW_TEXT) + json.dumps(
            {"prompt_id": prompt_id, "text": "starting"}).encode())
        values: dict[str, list] = {}
        ui_outputs: dict[str, dict] = {}
        progress: dict[str, dict] = {}
        executed: list[str] = []
        fault_error = item["faults"].get("execution_error")
        steps_total = sum(max(1, self._steps(prompt, nid, values)) for nid in order if
                          prompt[nid]["class_type"] in SAMPLERS) or 1
        for nid in order:
            node = prompt[nid]
            sig = signatures[nid]
            if sig in self._cache:
                values[nid], ui = self._cache[sig]
                if nid not in cached_at_start or ui is not None:
                    await self._send(item, "executed", {"node": nid, "display_node": nid, "output": ui,
                                                        "prompt_id": prompt_id})
                if ui is not None:
                    ui_outputs[nid] = ui
                continue
            progress[nid] = {"value": 0, "max": 1, "state": "running", "node_id": nid, "prompt_id": prompt_id,
                             "display_node_id": nid, "parent_node_id": None, "real_node_id": nid}
            await self._send(item, "executing", {"node": nid, "display_node": nid, "prompt_id": prompt_id})
            await self._send(item, "progress_state", {"prompt_id": prompt_id, "nodes": dict(progress)})
            error = None
            if fault_error and node["class_type"] == fault_error.get("node_type", "VAEDecodeTiled"):
                error = (fault_error.get("exception_type", "torch.OutOfMemoryError"),
                         fault_error.get("exception_message", "Allocation on device 0 would exceed allowed memory. "
                                                              "(out of memory)\nCurrently allocated     : 21.5 GiB"))
            elif "hang" in item["faults"] and node["class_type"] in SAMPLERS:
                await item["interrupted"].wait()
            if not error and not item["interrupted"].is_set():
                steps = self._steps(prompt, nid, values) if node["class_type"] in SAMPLERS else 0
                for step in range(1, steps + 1):
                    if item["interrupted"].is_set():
                        break
                    await asyncio.sleep(self.exec_seconds / steps_total)
                    progress[nid].update(value=step, max=steps)
                    await self._send(item, "progress", {"value": step, "max": steps, "prompt_id": prompt_id,
                                                        "node": nid})
                    await self._send(item, "progress_state", {"prompt_id": prompt_id, "nodes": dict(progress)})
            if item["interrupted"].is_set():
                data = {"prompt_id": prompt_id, "node_id": nid, "node_type": node["class_type"],
                        "executed": executed, "timestamp": ts()}
                await self._send(item, "execution_interrupted", data)
                self._finish(item, "error", messages + [["execution_interrupted", data]], {})
                return
            if not error:
                try:
                    values[nid], ui = self._run_node(node, values, item)
                except NotModelled as exc:
                    error = ("NotImplementedError", str(exc))
                except Exception as exc:  # what a node raising looks like to the client
                    error = (type(exc).__name__, str(exc))
            if error:
                data = {"prompt_id": prompt_id, "node_id": nid, "node_type": node["class_type"],
                        "executed": executed, "exception_message": error[1], "exception_type": error[0],
                        "traceback": ["  File \"ComfyUI/execution.py\", line 542, in execute\n"],
                        "current_inputs": {}, "current_outputs": list(order), "timestamp": ts()}
                await self._send(item, "execution_error", data)
                self._finish(item, "error", messages + [["execution_error", data]], {})
                return
            self._cache[sig] = (values[nid], ui)
            executed.append(nid)
            progress[nid]["state"] = "finished"
            if ui is not None:
                ui_outputs[nid] = ui
                await self._send(item, "executed", {"node": nid, "display_node": nid, "output": ui,
                                                    "prompt_id": prompt_id})
            await self._send(item, "progress_state", {"prompt_id": prompt_id, "nodes": dict(progress)})
        success = {"prompt_id": prompt_id, "timestamp": ts()}
        await self._send(item, "execution_success", success)
        await asyncio.sleep(0.01)  # main.py stores the history only after execution_success
        self._finish(item, "success", messages + [["execution_success", success]], ui_outputs)
        await self._send(item, "executing", {"node": None, "prompt_id": prompt_id})
        await self._broadcast_status()

    def _finish(self, item: dict, status: str, messages: list, outputs: dict) -> None:
        files = [f for ui in outputs.values() for f in ui.get("images", [])]
        if "history_missing_output" in item["faults"]:
            outputs = {}
        self.exec_durations.append(time.perf_counter() - item["received"])
        self._history[item["prompt_id"]] = {
            "prompt": [item["number"], item["prompt_id"], item["prompt"],
                       {"client_id": item["client_id"], "create_time": item["create_time"]}, item["outputs"]],
            "outputs": outputs,
            "status": {"status_str": status, "completed": status == "success", "messages": messages},
            "meta": {nid: {"node_id": nid, "display_node": nid, "parent_node": None, "real_node_id": nid}
                     for nid in outputs},
            "_files": files,
            "_view_error": item["faults"].get("view_error", {}).get("status", 500)
            if "view_error" in item["faults"] else None,
        }

    def _steps(self, prompt: dict, nid: str, values: dict) -> int:
        sigmas_link = prompt[nid]["inputs"].get("sigmas")
        sigmas = values.get(sigmas_link[0], [None])[0] if isinstance(sigmas_link, list) else None
        if isinstance(sigmas, dict):
            return sigmas["steps"]
        source = prompt.get(sigmas_link[0]) if isinstance(sigmas_link, list) else None
        if source and source["class_type"] == "LTXVScheduler":
            return int(source["inputs"]["steps"])
        if source and source["class_type"] == "ManualSigmas":
            return max(0, len(source["inputs"]["sigmas"].split(",")) - 1)
        return 1

    def _run_node(self, node: dict, values: dict, item: dict) -> tuple[list, dict | None]:
        inputs = {k: (values[v[0]][v[1]] if isinstance(v, list) else v) for k, v in node["inputs"].items()}
        return simulate(node["class_type"], inputs, self)


# -- validation (execution.validate_prompt) ---------------------------------------------------------------

def _error(kind: str, message: str, details: str, **extra: Any) -> dict:
    return {"type": kind, "message": message, "details": details, "extra_info": extra}


def validate_prompt(prompt: dict, info: dict, input_dir: Path) -> tuple[bool, dict | None, list[str], dict]:
    outputs = []
    for nid, node in prompt.items():
        if not isinstance(node, dict) or "class_type" not in node:
            title = (node.get("_meta") or {}).get("title") if isinstance(node, dict) else None
            return False, _error("missing_node_type", f"Node '{title or f'ID #{nid}'}' has no class_type. The "
                                 "workflow may be corrupted or a custom node is missing.", f"Node ID '#{nid}'",
                                 node_id=nid, class_type=None, node_title=title), [], {}
        if node["class_type"] not in info:
            title = (node.get("_meta") or {}).get("title", node["class_type"])
            return False, _error("missing_node_type", f"Node '{title}' not found. The custom node may not be "
                                 "installed.", f"Node ID '#{nid}'", node_id=nid, class_type=node["class_type"],
                                 node_title=title), [], {}
        if info[node["class_type"]].get("output_node"):
            outputs.append(nid)
    if not outputs:
        return False, _error("prompt_no_outputs", "Prompt has no outputs", ""), [], {}
    node_errors: dict[str, dict] = {}
    validated: dict[str, bool] = {}
    failed = []
    for out in outputs:
        try:
            ok = _validate_node(prompt, info, out, validated, node_errors, input_dir)
        except Exception as exc:
            node_errors.setdefault(out, {"errors": [], "dependent_outputs": [], "class_type":
                                         prompt[out]["class_type"]})
            node_errors[out]["errors"].append(_error("exception_during_validation", "Exception when validating "
                                                     "node", str(exc), exception_type=type(exc).__name__))
            ok = False
        if not ok:
            failed.append(out)
            for entry in node_errors.values():
                entry["dependent_outputs"].append(out)
    good = [o for o in outputs if o not in failed]
    if failed and not good or node_errors:
        details = "\n".join(f"{e['message']}: {e['details']}" for entry in node_errors.values()
                            for e in entry["errors"])
        return False, _error("prompt_outputs_failed_validation", "Prompt outputs failed validation", details), \
            good, node_errors
    return True, None, good, {}


def _validate_node(prompt: dict, info: dict, nid: str, validated: dict, node_errors: dict, input_dir: Path) -> bool:
    if nid in validated:
        return validated[nid]
    validated[nid] = True  # a cycle reaching this node again is not re-entered
    node = prompt[nid]
    spec = info[node["class_type"]]["input"]
    schema = {**spec.get("required", {}), **spec.get("optional", {})}
    errors = []
    valid = True
    for name, (kind, *rest) in schema.items():
        opts = rest[0] if rest and isinstance(rest[0], dict) else {}
        if name not in node["inputs"]:
            if name in spec.get("required", {}):
                errors.append(_error("required_input_missing", "Required input is missing", name, input_name=name))
            continue
        value = node["inputs"][name]
        if isinstance(value, list):
            if len(value) != 2:
                errors.append(_error("bad_linked_input", "Bad linked input, must be a length-2 list of "
                                     "[node_id, slot_index]", name, input_name=name))
                continue
            source = prompt[value[0]]  # KeyError for a missing node: exception_during_validation, as ComfyUI
            returned = info[source["class_type"]]["output"][value[1]]  # IndexError likewise
            expected = "COMBO" if isinstance(kind, list) else kind
            if not _types_match(returned, expected):
                errors.append(_error("return_type_mismatch", "Return type mismatch between linked nodes",
                                     f"{name}, received_type({returned}) mismatch input_type({expected})",
                                     input_name=name, received_type=returned, linked_node=value))
                continue
            if not _validate_node(prompt, info, value[0], validated, node_errors, input_dir):
                valid = False
            continue
        if (node["class_type"], name) == ("LoadImage", "image"):
            # LoadImage.VALIDATE_INPUTS replaces the list check: the file must exist in the input folder
            if not (isinstance(value, str) and (input_dir / value).is_file()):
                errors.append(_error("custom_validation_failed", "Custom validation failed for node",
                                     f"image - Invalid image file: {value}", input_name=name))
            continue
        errors.extend(_check_widget(name, kind, opts, value))
    if errors:
        node_errors[nid] = {"errors": errors, "dependent_outputs": [], "class_type": node["class_type"]}
    validated[nid] = valid and not errors
    return validated[nid]


def _types_match(returned: str, expected: str) -> bool:
    if "*" in (returned, expected):
        return True
    return bool(set(returned.split(",")) & set(expected.split(",")))


def _check_widget(name: str, kind: Any, opts: dict, value: Any) -> list[dict]:
    if isinstance(kind, list) or kind == "COMBO":
        options = kind if isinstance(kind, list) else opts.get("options", [])
        if value not in options:
            listed = f"(list of length {len(options)})" if len(options) > 20 else str(options)
            return [_error("value_not_in_list", "Value not in list", f"{name}: {value!r} not in {listed}",
                           input_name=name, received_value=value)]
        return []
    convert = {"INT": int, "FLOAT": float, "STRING": str, "BOOLEAN": bool}.get(kind)
    if convert is None:
        return [_error("invalid_input_type", f"Failed to convert an input value to a {kind} value",
                       f"{name}, {value}, not a link", input_name=name, received_value=value)]
    try:
        if kind in ("INT", "FLOAT") and isinstance(value, str | bool | type(None) | dict):
            raise ValueError(f"{value!r} is not a number")
        number = convert(value)
    except (TypeError, ValueError) as exc:
        return [_error("invalid_input_type", f"Failed to convert an input value to a {kind} value",
                       f"{name}, {value}, {exc}", input_name=name, received_value=value)]
    if kind in ("INT", "FLOAT"):
        if "min" in opts and number < opts["min"]:
            return [_error("value_smaller_than_min", f"Value {number} smaller than min of {opts['min']}", name,
                           input_name=name, received_value=value)]
        if "max" in opts and number > opts["max"]:
            return [_error("value_bigger_than_max", f"Value {number} bigger than max of {opts['max']}", name,
                           input_name=name, received_value=value)]
    return []


# -- execution of shapes -----------------------------------------------------------------------------------

def execution_order(prompt: dict, outputs: list[str]) -> list[str]:
    """Nodes reachable from the outputs, dependencies first (ComfyUI prunes everything else)."""
    order: list[str] = []
    seen: set[str] = set()

    def visit(nid: str) -> None:
        if nid in seen:
            return
        seen.add(nid)
        for value in prompt[nid]["inputs"].values():
            if isinstance(value, list) and len(value) == 2:
                visit(value[0])
        order.append(nid)

    for out in outputs:
        visit(out)
    return order


def node_signature(prompt: dict, nid: str, memo: dict | None = None) -> str:
    """ComfyUI's cache key, in spirit: the class and inputs, with links replaced by upstream signatures."""
    memo = {} if memo is None else memo
    if nid not in memo:
        node = prompt[nid]
        parts = {k: (["link", node_signature(prompt, v[0], memo), v[1]] if isinstance(v, list) else v)
                 for k, v in sorted(node["inputs"].items())}
        memo[nid] = hashlib.sha256(json.dumps([node["class_type"], parts], sort_keys=True,
                                              default=str).encode()).hexdigest()
    return memo[nid]


def _latent_from_pixels(width: int, height: int, length: int, seeds: tuple = ()) -> dict:
    return {"w": width // 32, "h": height // 32, "t": (length - 1) // 8 + 1, "seeds": seeds}


def simulate(class_type: str, i: dict, server: ProtocolComfy) -> tuple[list, dict | None]:
    """One node's outputs as shapes (and the UI output of output nodes)."""
    handle = {"kind": class_type}
    match class_type:
        case "CheckpointLoaderSimple":
            return [{"model": i["ckpt_name"]}, {"clip": i["ckpt_name"]}, {"vae": i["ckpt_name"]}], None
        case "LTXAVTextEncoderLoader" | "CLIPLoader" | "LTXVAudioVAELoader" | "LatentUpscaleModelLoader" | \
                "KSamplerSelect" | "VAELoader" | "UNETLoader":
            return [handle], None
        case "LoraLoaderModelOnly":
            return [{**i["model"], "lora": i["lora_name"]}], None
        case "CLIPTextEncode":
            return [{"text": i["text"]}], None
        case "LTXVConditioning":
            return [i["positive"], i["negative"]], None
        case "CFGGuider":
            return [{"cfg": i["cfg"], "model": i["model"]}], None
        case "RandomNoise":
            return [{"seed": i["noise_seed"]}], None
        case "LTXVScheduler":
            return [{"steps": int(i["steps"])}], None
        case "ManualSigmas":
            return [{"steps": max(0, len([s for s in i["sigmas"].split(",") if s.strip()]) - 1)}], None
        case "EmptyImage":
            return [{"w": i["width"], "h": i["height"], "frames": i["batch_size"]}], None
        case "ImageScaleBy":
            img = i["image"]
            return [{**img, "w": round(img["w"] * i["scale_by"]), "h": round(img["h"] * i["scale_by"])}], None
        case "ImageScale":
            img = i["image"]
            w, h = i["width"], i["height"]
            if w == 0 and h == 0:
                w, h = img["w"], img["h"]
            elif w == 0:
                w = max(1, round(img["w"] * h / img["h"]))
            elif h == 0:
                h = max(1, round(img["h"] * w / img["w"]))
            return [{**img, "w": w, "h": h}], None
        case "GetImageSize":
            return [i["image"]["w"], i["image"]["h"], i["image"]["frames"]], None
        case "LoadImage":
            path = server.input_dir / i["image"]
            with Image.open(path) as im:
                return [{"w": im.width, "h": im.height, "frames": 1}, {"mask": True}], None
        case "LTXVPreprocess":
            return [i["image"]], None
        case "EmptyLTXVLatentVideo":
            return [_latent_from_pixels(i["width"], i["height"], i["length"])], None
        case "LTXVEmptyLatentAudio":
            return [{"seconds": i["frames_number"] / i["frame_rate"]}], None
        case "LTXVConcatAVLatent":
            return [{"video": i["video_latent"], "audio": i["audio_latent"]}], None
        case "LTXVSeparateAVLatent":
            av_latent = i["av_latent"]
            return [av_latent["video"], av_latent["audio"]], None
        case "LTXVImgToVideoInplace":
            return [{**i["latent"], "first_frame": True}], None
        case "SamplerCustomAdvanced":
            latent = i["latent_image"]
            seeds = (i["noise"]["seed"],)
            if "video" in latent:
                latent = {"video": {**latent["video"], "seeds": latent["video"].get("seeds", ()) + seeds},
                          "audio": latent["audio"]}
            else:
                latent = {**latent, "seeds": latent.get("seeds", ()) + seeds}
            return [latent, latent], None
        case "LTXVCropGuides":
            return [i["positive"], i["negative"], i["latent"]], None
        case "LTXVLatentUpsampler":
            lat = i["samples"]
            return [{**lat, "w": lat["w"] * 2, "h": lat["h"] * 2}], None
        case "VAEDecode" | "VAEDecodeTiled":
            lat = i["samples"]
            return [{"w": lat["w"] * 32, "h": lat["h"] * 32, "frames": (lat["t"] - 1) * 8 + 1,
                     "seeds": lat.get("seeds", ())}], None
        case "EmptyAudio":
            return [{"audio_seconds": i["duration"]}], None
        case "LTXVAudioVAEDecode":
            return [{"audio_seconds": i["samples"]["seconds"]}], None
        case "CreateVideo":
            return [{"images": i["images"], "fps": float(i["fps"]), "audio": i.get("audio")}], None
        case "SaveVideo":
            return [], {"images": [write_mp4(server.output_dir, i["filename_prefix"], i["video"])],
                        "animated": [True]}
    raise NotModelled(f"the protocol server does not model {class_type}")


def write_mp4(output_dir: Path, prefix: str, video: dict) -> dict:
    """A real MP4 named as ComfyUI names it: `<subfolder>/<name>_00001_.mp4`, counting up past existing ones."""
    subfolder, _, name = prefix.rpartition("/")
    folder = output_dir / subfolder
    folder.mkdir(parents=True, exist_ok=True)
    counter = 1 + max([int(p.name[len(name) + 1:len(name) + 6]) for p in folder.glob(f"{name}_?????_.mp4")],
                      default=0)
    filename = f"{name}_{counter:05}_.mp4"
    images = video["images"]
    seed_bytes = hashlib.sha256(repr(images.get("seeds", ())).encode()).digest()
    colour = tuple(seed_bytes[:3])
    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=round(video["fps"]))
        stream.width, stream.height, stream.pix_fmt = images["w"], images["h"], "yuv420p"
        stream.options = {"preset": "ultrafast"}
        audio = container.add_stream("aac", rate=24000) if video.get("audio") else None
        if audio is not None:
            audio.layout = "stereo"
        pixels = np.full((images["h"], images["w"], 3), colour, dtype=np.uint8)
        for _ in range(images["frames"]):
            for packet in stream.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
        if audio is not None:
            samples = max(1, int(24000 * video["audio"]["audio_seconds"]))
            frame = av.AudioFrame.from_ndarray(np.zeros((2, samples), dtype=np.float32), format="fltp",
                                               layout="stereo")
            frame.sample_rate = 24000
            for packet in audio.encode(frame):
                container.mux(packet)
            for packet in audio.encode():
                container.mux(packet)
    (folder / filename).write_bytes(buf.getvalue())
    return {"filename": filename, "subfolder": subfolder, "type": "output"}
