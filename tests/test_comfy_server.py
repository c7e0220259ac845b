"""The protocol ComfyUI itself: it must reject what ComfyUI v0.26.2 rejects, in ComfyUI's shapes, and behave as
the recordings in tests/data/ show; otherwise the request-path tests would prove nothing."""

from __future__ import annotations

import copy
import json
import uuid
from pathlib import Path

import pytest
import requests
import websocket

from comfy_server import ProtocolComfy
from helpers import mp4_facts

DATA = Path(__file__).resolve().parent / "data"
REFERENCE = json.loads((DATA / "reference_t2v_two_stage_api.json").read_text())
SMOKE = json.loads((DATA / "smoke_no_models_api.json").read_text())
PROJECT_GRAPH = json.loads((DATA.parent.parent / "workflow_api.json").read_text())


@pytest.fixture
def comfy(tmp_path):
    server = ProtocolComfy(output_dir=tmp_path / "output").start()
    yield server
    server.stop()


def post(comfy, graph):
    return requests.post(comfy.url + "/prompt", json={"prompt": graph, "client_id": "t"}, timeout=10)


def run_graph(comfy, graph, timeout=30):
    """Submit over a real WebSocket and collect the message types until `executing` with node null."""
    client_id = uuid.uuid4().hex
    ws = websocket.create_connection(f"ws{comfy.url[4:]}/ws?clientId={client_id}", timeout=timeout)
    r = requests.post(comfy.url + "/prompt", json={"prompt": graph, "client_id": client_id}, timeout=10)
    assert r.status_code == 200, r.text
    prompt_id = r.json()["prompt_id"]
    messages = []
    while True:
        raw = ws.recv()
        if isinstance(raw, bytes):
            messages.append({"type": "BINARY"})
            continue
        msg = json.loads(raw)
        messages.append(msg)
        if msg["type"] in ("execution_error", "execution_interrupted"):
            break
        if msg["type"] == "executing" and msg["data"]["node"] is None:
            break
    ws.close()
    history = requests.get(f"{comfy.url}/history/{prompt_id}", timeout=10).json()[prompt_id]
    return messages, history


@pytest.mark.parametrize("graph", [REFERENCE, SMOKE, PROJECT_GRAPH], ids=["reference", "smoke", "project"])
def test_recorded_graphs_pass_validation(comfy, graph):
    r = post(comfy, graph)
    assert r.status_code == 200 and r.json()["node_errors"] == {}


def _errors(comfy, graph):
    r = post(comfy, graph)
    assert r.status_code == 400
    return r.json()


def test_unknown_class_is_missing_node_type(comfy):
    graph = copy.deepcopy(SMOKE)
    graph["3"]["class_type"] = "VHS_VideoCombine"
    body = _errors(comfy, graph)
    assert body["error"]["type"] == "missing_node_type" and body["node_errors"] == {}
    assert body["error"]["extra_info"]["class_type"] == "VHS_VideoCombine"


def test_graph_without_output_node(comfy):
    graph = {k: v for k, v in SMOKE.items() if v["class_type"] != "SaveVideo"}
    assert _errors(comfy, graph)["error"]["type"] == "prompt_no_outputs"


@pytest.mark.parametrize("change,node,kind", [
    (lambda g: g["1"]["inputs"].pop("width"), "1", "required_input_missing"),
    (lambda g: g["4"]["inputs"].update(codec="vp9"), "4", "value_not_in_list"),
    (lambda g: g["1"]["inputs"].update(width=99999), "1", "value_bigger_than_max"),
    (lambda g: g["1"]["inputs"].update(width="wide"), "1", "invalid_input_type"),
    (lambda g: g["3"]["inputs"].update(audio=["1", 0]), "3", "return_type_mismatch"),
    (lambda g: g["3"]["inputs"].update(images=["77", 0]), "4", "exception_during_validation"),
    (lambda g: g["3"]["inputs"].update(images=["1", 5]), "4", "exception_during_validation"),
])
def test_node_errors_have_comfyuis_types_and_shape(comfy, change, node, kind):
    graph = copy.deepcopy(SMOKE)
    change(graph)
    body = _errors(comfy, graph)
    assert body["error"]["type"] == "prompt_outputs_failed_validation"
    entry = body["node_errors"][node]
    assert entry["errors"][0]["type"] == kind
    assert set(entry) == {"errors", "dependent_outputs", "class_type"} and entry["dependent_outputs"] == ["4"]


def test_missing_model_files_are_rejected_as_recorded(tmp_path):
    with ProtocolComfy(output_dir=tmp_path / "o", model_files={}) as comfy:
        body = _errors(comfy, REFERENCE)
    recorded = json.loads((DATA / "prompt_rejected_400.json").read_text())["body"]
    assert body["error"]["type"] == recorded["error"]["type"]
    assert set(body["node_errors"]) == set(recorded["node_errors"])
    for nid, entry in recorded["node_errors"].items():
        assert [e["details"] for e in body["node_errors"][nid]["errors"]] == [e["details"] for e in entry["errors"]]


def test_message_order_matches_the_recorded_trace(comfy):
    messages, history = run_graph(comfy, SMOKE)
    types = [m["type"] for m in messages if m["type"] not in ("progress_state", "BINARY", "status")]
    recorded = json.loads((DATA / "trace_success.json").read_text())["ws_type_sequence"]
    recorded = [t for t in recorded if t not in ("progress_state", "status")]
    assert types[:len(recorded)] == recorded
    assert types[len(recorded):] == ["executing"]  # node null, after the history entry is stored
    assert history["status"]["status_str"] == "success"
    assert history["outputs"]["4"]["images"][0]["subfolder"] == "video"
    assert history["outputs"]["4"]["animated"] == [True]


def test_identical_resubmission_is_cached_and_points_at_the_same_file(comfy):
    _, first = run_graph(comfy, SMOKE)
    messages, second = run_graph(comfy, SMOKE)
    cached = next(m for m in messages if m["type"] == "execution_cached")
    assert sorted(cached["data"]["nodes"]) == sorted(SMOKE)
    assert second["outputs"] == first["outputs"]


def test_the_1280x720_request_comes_out_1280x704_without_the_resize_as_in_real_comfyui(comfy, tmp_path):
    graph = copy.deepcopy(REFERENCE)
    for node in graph.values():
        if node["class_type"] == "EmptyLTXVLatentVideo":
            node["inputs"]["length"] = 9
        if node["class_type"] == "LTXVEmptyLatentAudio":
            node["inputs"]["frames_number"] = 9
    _, history = run_graph(comfy, graph)
    item = history["outputs"]["75"]["images"][0]
    facts = mp4_facts((tmp_path / "output" / item["subfolder"] / item["filename"]).read_bytes())
    assert (facts["width"], facts["height"], facts["frames"], facts["audio"]) == (1280, 704, 9, True)


def test_view_serves_the_mp4_and_refuses_paths_outside_the_output_folder(comfy):
    _, history = run_graph(comfy, SMOKE)
    item = history["outputs"]["4"]["images"][0]
    r = requests.get(comfy.url + "/view", params=item, timeout=10)
    assert r.status_code == 200 and r.headers["Content-Type"] == "video/mp4" and r.content[4:8] == b"ftyp"
    assert mp4_facts(r.content) == {"width": 64, "height": 64, "frames": 9, "fps": 24.0, "audio": True}
    r = requests.get(comfy.url + "/view", params={"filename": "x.mp4", "subfolder": "../..", "type": "output"},
                     timeout=10)
    assert r.status_code in (400, 403)
