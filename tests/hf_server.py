"""A Hugging-Face-style file server on 127.0.0.1 for the provisioning tests, reached by the real huggingface_hub
client through HF_ENDPOINT: `HEAD/GET /{repo}/resolve/{revision}/{path}` with the headers the client reads
(X-Repo-Commit, ETag, Content-Length) and Range requests, so a resumed download is a real resume.

It records every request (method, path, Range, bytes sent) and can throttle, so a test can kill a download
midway and see the next run ask only for the rest. Fault modes (`fault`, for the next `fault_count` GETs or
all of them) make the failures a real hub has: "hang" (accepts, reads the request, never answers), "reset"
(headers, the file up to its middle, then a TCP reset), or an HTTP status (with the hub's X-Error-Code).
"""

from __future__ import annotations

import hashlib
import re
import socket
import struct
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

COMMIT = "0123456789abcdef0123456789abcdef01234567"
ERROR_CODES = {401: "GatedRepo", 403: "GatedRepo", 404: "EntryNotFound"}  # what the hub sends with these


class HubServer:
    def __init__(self, files: dict[str, bytes], bytes_per_second: int | None = None, fault: str | int | None = None,
                 fault_count: int | None = None):
        """`files` maps "<repo>/<path>" (repo as "owner/name") to content; `fault` as in the module's doc."""
        self.files = dict(files)
        self.bytes_per_second = bytes_per_second
        self.fault = fault
        self.fault_count = fault_count  # None: every GET
        self._closing = threading.Event()  # releases hanging handlers at exit
        self.requests: list[dict] = []
        self.token_seen: set[str] = set()
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_HEAD(self):  # noqa: N802
                server._serve(self, head=True)

            def do_GET(self):  # noqa: N802
                server._serve(self, head=False)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_port}"
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> HubServer:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._closing.set()
        self.httpd.shutdown()
        self.httpd.server_close()

    def downloads(self, name: str) -> list[dict]:
        """GET requests that sent content of a file whose path ends with `name`."""
        return [r for r in self.requests if r["method"] == "GET" and r["path"].endswith(name) and r["sent"]]

    def bytes_sent(self, name: str) -> int:
        return sum(r["sent"] for r in self.downloads(name))

    def _serve(self, handler: BaseHTTPRequestHandler, head: bool) -> None:
        auth = handler.headers.get("Authorization", "")
        if auth:
            self.token_seen.add(auth.removeprefix("Bearer "))
        match = re.fullmatch(r"/(?P<repo>[^/]+/[^/]+)/resolve/(?P<rev>[^/]+)/(?P<path>.+)", handler.path.split("?")[0])
        record = {"method": handler.command, "path": handler.path, "range": handler.headers.get("Range"), "sent": 0}
        with self._lock:
            self.requests.append(record)
        fault = self._take_fault(handler.command)
        if fault == "hang":
            self._closing.wait()
            handler.close_connection = True
            return
        if isinstance(fault, int):
            handler.send_response(fault)
            handler.send_header("Content-Length", "0")
            if fault in ERROR_CODES:
                handler.send_header("X-Error-Code", ERROR_CODES[fault])
            handler.end_headers()
            return
        data = self.files.get(f"{match['repo']}/{match['path']}") if match else None
        if data is None:
            handler.send_response(404)
            handler.send_header("Content-Length", "0")
            handler.send_header("X-Error-Code", "EntryNotFound")
            handler.end_headers()
            return
        etag = hashlib.sha256(data).hexdigest()
        start = 0
        status = 200
        if handler.headers.get("Range") and not head:
            start = int(re.match(r"bytes=(\d+)-", handler.headers["Range"]).group(1))
            status = 206
        body = data[start:]
        handler.send_response(status)
        handler.send_header("Content-Length", str(len(body) if not head else len(data)))
        handler.send_header("ETag", f'"{etag}"')
        handler.send_header("X-Repo-Commit", COMMIT)
        handler.send_header("Accept-Ranges", "bytes")
        if status == 206:
            handler.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        handler.end_headers()
        if head:
            return
        if fault == "reset":
            self._reset_midway(handler, body, data, record)
            return
        chunk = 64 * 1024
        try:
            for offset in range(0, len(body), chunk):
                piece = body[offset:offset + chunk]
                handler.wfile.write(piece)
                record["sent"] += len(piece)
                if self.bytes_per_second:
                    time.sleep(len(piece) / self.bytes_per_second)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def _take_fault(self, method: str) -> str | int | None:
        with self._lock:
            if self.fault is None or method != "GET" or self.fault_count == 0:
                return None
            if self.fault_count is not None:
                self.fault_count -= 1
            return self.fault

    @staticmethod
    def _reset_midway(handler: BaseHTTPRequestHandler, body: bytes, data: bytes, record: dict) -> None:
        """The file up to its middle byte, then RST (SO_LINGER 0) instead of an orderly close: a connection that
        always breaks at the same place. A request that starts at or past the middle gets no byte at all."""
        piece = body[:max(0, len(body) - (len(data) - len(data) // 2))]
        handler.wfile.write(piece)
        handler.wfile.flush()
        record["sent"] = len(piece)
        time.sleep(0.2)  # a reset discards what the client has not read yet: let it take what was sent
        handler.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        handler.close_connection = True
        handler.connection.close()


def tiny_safetensors(n_floats: int, seed: int = 0, metadata: dict | None = None) -> bytes:
    """A valid safetensors file of about 4*n_floats bytes, deterministic for a seed."""
    import json
    import struct

    header = {"weight": {"dtype": "F32", "shape": [n_floats], "data_offsets": [0, 4 * n_floats]}}
    if metadata:
        header["__metadata__"] = metadata
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    payload = hashlib.shake_256(f"seed{seed}".encode()).digest(4 * n_floats)
    return struct.pack("<Q", len(raw)) + raw + payload


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path
