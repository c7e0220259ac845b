"""The whole path through the runpod SDK's own local API: `python handler.py --rp_serve_api` on loopback,
the earlier package's request POSTed to /runsync, and progress posted to a RunPod-style job endpoint."""

from __future__ import annotations

import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest
import requests

from comfy_server import ProtocolComfy
from helpers import LocalApi, decode_video_field, files_under, loopback_env

ROOT = Path(__file__).resolve().parent.parent
EARLIER_PACKAGE_REQUEST = {"prompt": "a red fox running through snow", "negative_prompt": "blurry",
                           "width": 1280, "height": 720, "frame_count": 121, "seed": 42}
START_DEADLINE_S = 60


class _ProgressSink(BaseHTTPRequestHandler):
    """Stands in for RunPod's job endpoint (RUNPOD_WEBHOOK_POST_OUTPUT), recording progress posts."""

    posts: list[dict] = []

    def do_POST(self):  # noqa: N802 (http.server's naming)
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        query = parse_qs(urlparse(self.path).query)
        type(self).posts.append({"id": query.get("id", [""])[0], "body": json.loads(body)})
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("local-api")
    output_dir = tmp / "output"
    comfy = ProtocolComfy(output_dir=output_dir, exec_seconds=1.0).start()
    sink = ThreadingHTTPServer(("127.0.0.1", 0), _ProgressSink)
    threading.Thread(target=sink.serve_forever, daemon=True).start()
    env = {**loopback_env(comfy.url, output_dir, tmp),
           "RUNPOD_WEBHOOK_POST_OUTPUT": f"http://127.0.0.1:{sink.server_port}/job-done?id=$ID",
           "PROGRESS_INTERVAL_S": "0.2"}
    api = LocalApi(env, tmp / "handler.log").__enter__()
    yield {"base": api.base, "comfy": comfy, "output_dir": output_dir, "log": tmp / "handler.log"}
    api.__exit__()
    sink.shutdown()
    comfy.stop()


def test_runsync_with_the_earlier_package_request_returns_the_mp4(stack):
    r = requests.post(stack["base"] + "/runsync", json={"input": EARLIER_PACKAGE_REQUEST}, timeout=120)
    body = r.json()
    assert body["status"] == "COMPLETED", body
    out = body["output"]
    for key in ("video", "seed", "prompt_id", "frame_count", "duration_seconds"):
        assert key in out
    assert decode_video_field(out) == {"width": 1280, "height": 720, "frames": 121, "fps": 24.0, "audio": True}
    assert out["seed"] == 42
    assert files_under(stack["output_dir"]) == []


def test_the_log_holds_no_job_output(stack):
    """The SDK logs each job's whole output at DEBUG, its default: handler.py makes INFO the default, so an MP4
    of up to 15 MB never lands in RunPod's log as base64."""
    r = requests.post(stack["base"] + "/runsync", json={"input": {"prompt": "x", "width": 512, "height": 288,
                                                                  "frame_count": 9}}, timeout=60)
    video = r.json()["output"]["video"]
    log = stack["log"].read_text()
    middle = len(video) // 2
    assert video[middle:middle + 100] not in log and "Handler output" not in log
    assert re.search(r"INFO +\| [\w-]+ \| Started", log), "the SDK's INFO lines stay"


def test_runsync_with_bad_input_fails_with_the_field_and_rule(stack):
    r = requests.post(stack["base"] + "/runsync", json={"input": {"prompt": "x", "width": 1001}}, timeout=30)
    assert r.json() == {"id": r.json()["id"], "status": "FAILED",
                        "error": "width: must be a multiple of 8, got 1001 (nearest: 1000 or 1008)"}
    assert "Traceback" not in stack["log"].read_text()


def test_progress_reaches_runpods_job_endpoint(stack):
    _ProgressSink.posts.clear()
    r = requests.post(stack["base"] + "/runsync", json={"input": {"prompt": "x", "width": 512, "height": 288,
                                                                  "frame_count": 9, "steps": 6}}, timeout=60)
    job_id = r.json()["id"]
    deadline = time.monotonic() + 5  # progress posts come from the SDK's own threads
    while not _ProgressSink.posts and time.monotonic() < deadline:
        time.sleep(0.1)
    mine = [p["body"] for p in _ProgressSink.posts if p["id"] == job_id]
    assert mine, _ProgressSink.posts
    assert all(p["status"] == "IN_PROGRESS" for p in mine)
    assert any("step" in p["output"] for p in mine), mine


def _video_facts(path: Path) -> dict:
    import base64

    from helpers import decode_video_field
    return decode_video_field({"video": base64.b64encode(path.read_bytes()).decode()})


def test_the_python_client_example_submits_polls_and_saves_the_mp4(stack, tmp_path, capsys):
    import importlib.util

    spec = importlib.util.spec_from_file_location("ltx2_client", ROOT / "examples" / "client" / "ltx2_client.py")
    client = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(client)
    request = tmp_path / "request.json"
    request.write_text(json.dumps({"input": {"prompt": "x", "width": 512, "height": 288, "frame_count": 17}}))
    assert client.main(["--base", stack["base"], "--input", str(request), "--out", str(tmp_path / "clip.mp4")]) == 0
    assert _video_facts(tmp_path / "clip.mp4") == {"width": 512, "height": 288, "frames": 17, "fps": 24.0,
                                                   "audio": True}
    assert "submitted" in capsys.readouterr().out
    request.write_text(json.dumps({"prompt": "x", "frame_count": 120}))  # the input object alone works too
    assert client.main(["--base", stack["base"], "--input", str(request), "--out", str(tmp_path / "no.mp4")]) == 1
    assert "frame_count: must be 8k+1" in capsys.readouterr().err and not (tmp_path / "no.mp4").exists()


def test_the_javascript_client_example_submits_polls_and_saves_the_mp4(stack, tmp_path):
    import shutil
    import subprocess

    node = shutil.which("node")
    if node is None:
        pytest.skip("no Node.js on this machine")
    request = tmp_path / "request.json"
    request.write_text(json.dumps({"input": {"prompt": "x", "width": 384, "height": 256, "frame_count": 9}}))
    out = subprocess.run([node, str(ROOT / "examples" / "client" / "ltx2_client.mjs"), "--base", stack["base"],
                          "--input", str(request), "--out", str(tmp_path / "clip.mp4")], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert _video_facts(tmp_path / "clip.mp4") == {"width": 384, "height": 256, "frames": 9, "fps": 24.0,
                                                   "audio": True}
