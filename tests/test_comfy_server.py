"""The protocol ComfyUI itself: it must accept and reject what ComfyUI v0.26.2 does, in ComfyUI's shapes, and
behave as the recordings in tests/data/ show; otherwise the request-path tests built on it would prove nothing."""

from __future__ import annotations

import copy
import io
import json
import time
import uuid
from pathlib import Path

import pytest
import requests
import websocket
from PIL import Image

from comfy_server import DEFAULT_MODEL_FILES, ProtocolComfy
from helpers import mp4_facts

DATA = Path(__file__).resolve().parent / "data"
REFERENCE = json.loads((DATA / "reference_t2v_two_stage_api.json").read_text())
SMOKE = json.loads((DATA / "smoke_no_models_api.json").read_text())
PROJECT = json.loads((DATA.parent.parent / "workflow_api.json").read_text())
TIMEOUT = 10


@pytest.fixture
def comfy(tmp_path):
    with ProtocolComfy(output_dir=tmp_path / "output", input_dir=tmp_path / "input") as server:
        yield server


def short(graph: dict, frames: int = 9) -> dict:
    """The LTX-2 graph at `frames` frames, so a run stays fast."""
    graph = copy.deepcopy(graph)
    for node in graph.values():
        if node["class_type"] == "EmptyLTXVLatentVideo":
            node["inputs"]["length"] = frames
        if node["class_type"] == "LTXVEmptyLatentAudio":
            node["inputs"]["frames_number"] = frames
    return graph


def submit(comfy, graph, client_id="t"):
    return requests.post(comfy.url + "/prompt", json={"prompt": graph, "client_id": client_id}, timeout=TIMEOUT)


def connect(comfy, client_id):
    ws = websocket.create_connection(f"ws{comfy.url[4:]}/ws?clientId={client_id}", timeout=TIMEOUT)
    assert json.loads(ws.recv())["data"]["sid"] == client_id
    return ws


def run(comfy, graph, until=("execution_error", "execution_interrupted")):
    """Submit over a real WebSocket; the messages up to `executing` with node null (binary frames as
    {"type": "BINARY", "data": bytes}), and the /history entry."""
    client_id = uuid.uuid4().hex
    ws = connect(comfy, client_id)
    try:
        r = submit(comfy, graph, client_id)
        assert r.status_code == 200, r.text
        prompt_id = r.json()["prompt_id"]
        messages = []
        while not messages or messages[-1]["type"] != "executing" or messages[-1]["data"]["node"] is not None:
            raw = ws.recv()
            messages.append({"type": "BINARY", "data": raw} if isinstance(raw, bytes) else json.loads(raw))
    finally:
        ws.close()
    return messages, history(comfy, prompt_id)


def history(comfy, prompt_id):
    return requests.get(f"{comfy.url}/history/{prompt_id}", timeout=TIMEOUT).json().get(prompt_id)


def saved_file(comfy, entry, node="75"):
    item = entry["outputs"][node]["images"][0]
    return comfy.output_dir / item["subfolder"] / item["filename"]


def wait_for(condition, seconds=TIMEOUT):
    give_up = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < give_up, "condition not met in time"
        time.sleep(0.02)


# -- validation ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("graph", [REFERENCE, SMOKE, PROJECT], ids=["reference", "smoke", "project"])
def test_recorded_graphs_pass_validation(comfy, graph):
    r = submit(comfy, graph)
    assert r.status_code == 200 and r.json()["node_errors"] == {}
    assert set(r.json()) == {"prompt_id", "number", "node_errors"}


def rejected(comfy, graph):
    r = submit(comfy, graph)
    assert r.status_code == 400, r.text
    return r.json()


def test_unknown_class_is_missing_node_type(comfy):
    graph = copy.deepcopy(SMOKE)
    graph["3"]["class_type"] = "VHS_VideoCombine"
    body = rejected(comfy, graph)
    assert body == {"error": {"type": "missing_node_type", "message": "Node 'Create Video' not found. The custom "
                              "node may not be installed.", "details": "Node ID '#3'",
                              "extra_info": {"node_id": "3", "class_type": "VHS_VideoCombine",
                                             "node_title": "Create Video"}}, "node_errors": {}}


def test_graph_without_output_node(comfy):
    body = rejected(comfy, {k: v for k, v in SMOKE.items() if v["class_type"] != "SaveVideo"})
    assert body["error"] == {"type": "prompt_no_outputs", "message": "Prompt has no outputs", "details": "",
                             "extra_info": {}}


@pytest.mark.parametrize("change,node,kind", [
    (lambda g: g["1"]["inputs"].pop("width"), "1", "required_input_missing"),
    (lambda g: g["4"]["inputs"].update(codec="vp9"), "4", "value_not_in_list"),
    (lambda g: g["1"]["inputs"].update(width=0), "1", "value_smaller_than_min"),
    (lambda g: g["1"]["inputs"].update(width=99999), "1", "value_bigger_than_max"),
    (lambda g: g["1"]["inputs"].update(width="wide"), "1", "invalid_input_type"),
    (lambda g: g["3"]["inputs"].update(audio=["1", 0]), "3", "return_type_mismatch"),
    # a link ComfyUI cannot follow raises inside the linking node; its caller reports it on that node...
    (lambda g: g["3"]["inputs"].update(images=["77", 0]), "3", "exception_during_inner_validation"),
    (lambda g: g["3"]["inputs"].update(images=["1", 5]), "3", "exception_during_inner_validation"),
    # ...and on the output node itself, validate_prompt catches it
    (lambda g: g["4"]["inputs"].update(video=["77", 0]), "4", "exception_during_validation"),
])
def test_node_errors_have_comfyuis_types_and_shape(comfy, change, node, kind):
    graph = copy.deepcopy(SMOKE)
    change(graph)
    body = rejected(comfy, graph)
    assert body["error"]["type"] == "prompt_outputs_failed_validation"
    assert list(body["node_errors"]) == [node]
    entry = body["node_errors"][node]
    assert entry["errors"][0]["type"] == kind
    assert set(entry) == {"errors", "dependent_outputs", "class_type"} and entry["dependent_outputs"] == ["4"]
    assert set(entry["errors"][0]) == {"type", "message", "details", "extra_info"}


def test_error_details_read_as_comfyuis(comfy):
    graph = copy.deepcopy(SMOKE)
    graph["1"]["inputs"].update(width="wide")
    error = rejected(comfy, graph)["node_errors"]["1"]["errors"][0]
    assert error["message"] == "Failed to convert an input value to a INT value"
    assert error["details"] == "width, wide, invalid literal for int() with base 10: 'wide'"
    graph["1"]["inputs"].update(width=99999)
    error = rejected(comfy, graph)["node_errors"]["1"]["errors"][0]
    assert (error["message"], error["details"]) == ("Value 99999 bigger than max of 16384", "width")
    assert error["extra_info"]["input_config"] == ["INT", {"default": 512, "max": 16384, "min": 1, "step": 1}]


def test_missing_model_files_are_rejected_as_recorded(tmp_path):
    with ProtocolComfy(output_dir=tmp_path / "o", model_files={}) as comfy:
        body = rejected(comfy, REFERENCE)
        info = requests.get(comfy.url + "/object_info/CheckpointLoaderSimple", timeout=TIMEOUT).json()
    assert info["CheckpointLoaderSimple"]["input"]["required"]["ckpt_name"][0] == []
    recorded = json.loads((DATA / "prompt_rejected_400.json").read_text())["body"]
    assert body == recorded  # details "" too: only the output node's own reasons are joined, and it has none


def test_object_info_lists_the_model_files_on_disk(tmp_path):
    files = {**DEFAULT_MODEL_FILES, "checkpoints": ["a.safetensors", "b.safetensors"]}
    with ProtocolComfy(output_dir=tmp_path / "o", model_files=files) as comfy:
        info = requests.get(comfy.url + "/object_info", timeout=TIMEOUT).json()
        assert submit(comfy, REFERENCE).status_code == 400  # the reference's checkpoint is not there
    assert info["CheckpointLoaderSimple"]["input"]["required"]["ckpt_name"][0] == files["checkpoints"]
    assert info["LTXAVTextEncoderLoader"]["input"]["required"]["ckpt_name"][1]["options"] == files["checkpoints"]


# -- execution -------------------------------------------------------------------------------------------

def test_message_order_matches_the_recorded_trace(comfy):
    messages, entry = run(comfy, SMOKE)
    recorded = json.loads((DATA / "trace_success.json").read_text())
    # the recording starts with the connect status, which run() has read, and stops at execution_success
    types = ["status"] + [m["type"] for m in messages]
    assert types == recorded["ws_type_sequence"] + ["status", "executing"]
    assert [m["data"]["node"] for m in messages if m["type"] == "executing"] == ["2", "1", "3", "4", None]
    states = [m["data"]["nodes"] for m in messages if m["type"] == "progress_state"]
    assert states[-1]["4"] == {"value": 1, "max": 1, "state": "finished", "node_id": "4",
                               "prompt_id": messages[-1]["data"]["prompt_id"], "display_node_id": "4",
                               "parent_node_id": None, "real_node_id": "4"}
    expected = list(recorded["history"].values())[0]
    assert list(entry) == list(expected) and entry["outputs"] == expected["outputs"]
    assert entry["meta"] == expected["meta"]
    assert [m[0] for m in entry["status"]["messages"]] == [m[0] for m in expected["status"]["messages"]]
    assert entry["prompt"][3]["client_id"] and entry["prompt"][4] == ["4"]
    assert mp4_facts(saved_file(comfy, entry, "4").read_bytes()) == mp4_facts((DATA / "smoke_output.mp4")
                                                                              .read_bytes())


def test_two_stage_run_sends_progress_and_the_size_text(comfy):
    messages, entry = run(comfy, short(REFERENCE))
    progress = [(m["data"]["node"], m["data"]["value"], m["data"]["max"]) for m in messages
                if m["type"] == "progress"]
    assert progress == [("92:41", i, 20) for i in range(1, 21)] + [("92:70", i, 3) for i in range(1, 4)]
    text = next(m["data"] for m in messages if m["type"] == "BINARY")
    assert text == b"\x00\x00\x00\x03\x00\x00\x00\x0592:91width: 640, height: 360\n batch size: 1"
    # the second KSamplerSelect equals the first, so it comes from the cache: `executed` with output null
    assert {"node": "92:66", "display_node": "92:66", "output": None,
            "prompt_id": entry["prompt"][1]} in [m["data"] for m in messages if m["type"] == "executed"]
    assert entry["status"]["status_str"] == "success"


def test_project_graph_at_1280x720_gives_a_real_1280x720_mp4(comfy):
    _, entry = run(comfy, short(PROJECT))
    assert entry["outputs"]["75"]["images"][0] == {"filename": "LTX-2_00001_.mp4", "subfolder": "video",
                                                   "type": "output"}
    facts = mp4_facts(saved_file(comfy, entry).read_bytes())
    assert facts == {"width": 1280, "height": 720, "frames": 9, "fps": 24.0, "audio": True}


def test_without_the_crop_a_1280x720_canvas_comes_out_1280x704_as_in_real_comfyui(comfy):
    graph = short(PROJECT)
    graph["92:89"]["inputs"]["height"] = 720  # what the earlier package asked for
    graph["92:97"]["inputs"]["images"] = ["92:98", 0]
    del graph["92:99"]
    _, entry = run(comfy, graph)
    facts = mp4_facts(saved_file(comfy, entry).read_bytes())
    assert (facts["width"], facts["height"], facts["frames"]) == (1280, 704, 9)


def test_same_graph_same_bytes_other_seed_other_bytes(tmp_path):
    outputs = []
    for n, seed in enumerate((10, 10, 11)):
        graph = short(REFERENCE)
        graph["92:11"]["inputs"]["noise_seed"] = seed
        with ProtocolComfy(output_dir=tmp_path / f"o{n}") as comfy:
            _, entry = run(comfy, graph)
            outputs.append(saved_file(comfy, entry).read_bytes())
    assert outputs[0] == outputs[1] and outputs[0] != outputs[2]


def test_file_names_count_up_as_comfyuis(comfy):
    (comfy.output_dir / "video").mkdir(parents=True)
    (comfy.output_dir / "video" / "smoke_00007_.png").write_bytes(b"")
    _, entry = run(comfy, SMOKE)
    assert entry["outputs"]["4"]["images"][0]["filename"] == "smoke_00008_.mp4"


def test_identical_resubmission_is_cached_and_points_at_the_same_deleted_file(comfy):
    _, first = run(comfy, SMOKE)
    saved_file(comfy, first, "4").unlink()
    messages, second = run(comfy, SMOKE)
    types = [m["type"] for m in messages]
    recorded = json.loads((DATA / "trace_cached_resubmit.json").read_text())["ws_type_sequence"]
    assert ["status"] + types == recorded + ["status", "executing"]
    assert next(m for m in messages if m["type"] == "execution_cached")["data"]["nodes"] == ["1", "2", "3", "4"]
    assert second["outputs"] == first["outputs"] and not saved_file(comfy, second, "4").exists()
    # a changed input re-runs that node and what depends on it, and writes a new file
    graph = copy.deepcopy(SMOKE)
    graph["1"]["inputs"]["color"] = 255
    messages, third = run(comfy, graph)
    assert next(m for m in messages if m["type"] == "execution_cached")["data"]["nodes"] == ["2"]
    assert third["outputs"]["4"]["images"][0]["filename"] == "smoke_00001_.mp4"  # the counter saw no file


def test_free_memory_empties_the_cache(comfy):
    run(comfy, SMOKE)
    requests.post(comfy.url + "/free", json={"unload_models": True, "free_memory": True}, timeout=TIMEOUT)
    messages, _ = run(comfy, SMOKE)
    assert next(m for m in messages if m["type"] == "execution_cached")["data"]["nodes"] == []
    assert comfy.frees == 1


def test_history_is_empty_while_running_and_progress_is_spread_over_exec_seconds(tmp_path):
    with ProtocolComfy(output_dir=tmp_path / "o", exec_seconds=1.0) as comfy:
        started = time.monotonic()
        prompt_id = submit(comfy, short(REFERENCE)).json()["prompt_id"]
        time.sleep(0.3)
        assert requests.get(f"{comfy.url}/history/{prompt_id}", timeout=TIMEOUT).json() == {}
        queue = requests.get(comfy.url + "/queue", timeout=TIMEOUT).json()
        assert queue["queue_running"][0][1] == prompt_id and queue["queue_pending"] == []
        wait_for(lambda: history(comfy, prompt_id))
        assert 0.9 < time.monotonic() - started < 3


def test_load_image_gives_the_uploaded_images_real_size(comfy):
    png = io.BytesIO()
    Image.new("RGB", (320, 200), (0, 128, 255)).save(png, format="PNG")
    r = requests.post(comfy.url + "/upload/image", files={"image": ("first.png", png.getvalue(), "image/png")},
                      data={"overwrite": "true"}, timeout=TIMEOUT)
    assert r.json() == {"name": "first.png", "subfolder": "", "type": "input"}
    graph = copy.deepcopy(SMOKE)
    graph["5"] = {"class_type": "LoadImage", "inputs": {"image": "first.png"}}
    graph["3"]["inputs"]["images"] = ["5", 0]
    _, entry = run(comfy, graph)
    assert mp4_facts(saved_file(comfy, entry, "4").read_bytes())["width"] == 320
    graph["5"]["inputs"]["image"] = "missing.png"
    assert rejected(comfy, graph)["node_errors"]["5"]["errors"][0]["details"] == \
        "image - Invalid image file: missing.png"


def test_a_class_it_does_not_model_fails_the_prompt_saying_so(comfy):
    graph = copy.deepcopy(SMOKE)
    graph["5"] = {"class_type": "ImageBatch", "inputs": {"image1": ["1", 0], "image2": ["1", 0]}}
    graph["3"]["inputs"]["images"] = ["5", 0]
    messages, entry = run(comfy, graph)
    error = next(m["data"] for m in messages if m["type"] == "execution_error")
    assert error["node_type"] == "ImageBatch" and "does not model ImageBatch" in error["exception_message"]


def test_view_serves_the_mp4_and_refuses_paths_outside_the_output_folder(comfy):
    _, entry = run(comfy, SMOKE)
    item = entry["outputs"]["4"]["images"][0]
    r = requests.get(comfy.url + "/view", params=item, timeout=TIMEOUT)
    assert r.status_code == 200 and r.headers["Content-Type"] == "video/mp4" and r.content[4:8] == b"ftyp"
    outside = [({"filename": "x.mp4", "subfolder": "../..", "type": "output"}, 403),
               ({"filename": "../x.mp4", "type": "output"}, 400),
               ({"filename": "nothing.mp4", "subfolder": "video", "type": "output"}, 404)]
    for params, status in outside:
        assert requests.get(comfy.url + "/view", params=params, timeout=TIMEOUT).status_code == status


def test_system_stats_shape(comfy):
    stats = requests.get(comfy.url + "/system_stats", timeout=TIMEOUT).json()
    assert stats["system"]["comfyui_version"] == "0.26.2" and stats["devices"][0]["vram_total"] > 0


# -- faults ----------------------------------------------------------------------------------------------

def test_execution_error_fault_is_shaped_as_recorded(comfy):
    comfy.inject("execution_error")
    messages, entry = run(comfy, short(REFERENCE))
    error = next(m["data"] for m in messages if m["type"] == "execution_error")
    recorded = json.loads((DATA / "history_execution_error.json").read_text())
    recorded = next(iter(recorded.values()))["status"]["messages"][-1][1]
    assert set(error) == set(recorded)
    assert error["node_type"] == "VAEDecodeTiled" and error["exception_type"] == "torch.OutOfMemoryError"
    assert "TIPS" in error["exception_message"]
    assert messages[-1]["type"] == "executing" and messages[-1]["data"]["node"] is None
    assert entry["status"]["status_str"] == "error" and entry["outputs"] == {}
    assert entry["status"]["messages"][-1] == ["execution_error", error]
    _, again = run(comfy, short(REFERENCE))  # the fault was for one prompt only
    assert again["status"]["status_str"] == "success"


def test_ws_drop_cuts_the_socket_and_the_prompt_finishes(comfy):
    comfy.inject("ws_drop", after_messages=3)
    ws = connect(comfy, "dropper")
    prompt_id = submit(comfy, SMOKE, "dropper").json()["prompt_id"]
    with pytest.raises((websocket.WebSocketConnectionClosedException, ConnectionError)):
        for _ in range(50):
            ws.recv()
    ws.close()
    wait_for(lambda: history(comfy, prompt_id))
    assert history(comfy, prompt_id)["status"]["status_str"] == "success"


def test_hang_ends_only_on_interrupt(comfy):
    comfy.inject("hang")
    client_id = "hanger"
    ws = connect(comfy, client_id)
    prompt_id = submit(comfy, short(REFERENCE), client_id).json()["prompt_id"]
    time.sleep(0.5)
    assert history(comfy, prompt_id) is None
    requests.post(comfy.url + "/interrupt", json={"prompt_id": prompt_id}, timeout=TIMEOUT)
    while (message := json.loads(raw) if isinstance(raw := ws.recv(), str) else {})\
            .get("type") != "execution_interrupted":
        pass
    ws.close()
    assert set(message["data"]) == {"prompt_id", "node_id", "node_type", "executed", "timestamp"}
    assert message["data"]["node_type"] == "SamplerCustomAdvanced"
    wait_for(lambda: history(comfy, prompt_id))
    assert history(comfy, prompt_id)["status"]["status_str"] == "error" and comfy.interrupts == 1


def test_reject_fault_answers_the_recorded_400(comfy):
    comfy.inject("reject")
    body = rejected(comfy, SMOKE)
    assert body == json.loads((DATA / "prompt_rejected_400.json").read_text())["body"]
    assert submit(comfy, SMOKE).status_code == 200 and len(comfy.submitted) == 2


def test_history_missing_output_still_writes_the_file(comfy):
    comfy.inject("history_missing_output")
    _, entry = run(comfy, SMOKE)
    assert entry["outputs"] == {} and entry["status"]["status_str"] == "success"
    assert list((comfy.output_dir / "video").glob("smoke_*.mp4"))


def test_view_error_fails_that_prompts_files(comfy):
    comfy.inject("view_error", status=503)
    _, entry = run(comfy, SMOKE)
    r = requests.get(comfy.url + "/view", params=entry["outputs"]["4"]["images"][0], timeout=TIMEOUT)
    assert r.status_code == 503


def test_die_drops_every_connection_and_stops_answering(comfy):
    comfy.inject("die", after_messages=4)
    ws = connect(comfy, "victim")
    submit(comfy, SMOKE, "victim")
    with pytest.raises((websocket.WebSocketConnectionClosedException, ConnectionError)):
        for _ in range(50):
            ws.recv()
    ws.close()
    with pytest.raises(requests.ConnectionError):
        requests.get(comfy.url + "/system_stats", timeout=TIMEOUT)


def test_slow_http_delays_answers(comfy):
    comfy.inject("slow_http", seconds=1.5)
    with pytest.raises(requests.Timeout):
        requests.get(comfy.url + "/system_stats", timeout=0.5)


def test_messages_go_only_to_the_submitting_client(comfy):
    other = connect(comfy, "other")
    run(comfy, SMOKE)
    other.settimeout(0.5)
    seen = []
    try:
        while True:
            seen.append(json.loads(other.recv())["type"])
    except websocket.WebSocketTimeoutException:
        pass
    other.close()
    assert set(seen) == {"status"} and comfy.ws_connections == 2


def prompt_writer_graph(**changes) -> dict:
    """The text encoder writing a prompt (TextGenerateLTX2Prompt, a v3 node with a DynamicCombo) and PreviewAny
    reporting it, as the worker builds them for enhance_prompt."""
    writer = {"clip": ["1", 0], "prompt": "a fox", "max_length": 64, "sampling_mode": "on",
              "sampling_mode.temperature": 0.7, "sampling_mode.top_k": 64, "sampling_mode.top_p": 0.95,
              "sampling_mode.min_p": 0.05, "sampling_mode.repetition_penalty": 1.05, "sampling_mode.seed": 3}
    writer.update(changes)
    return {"1": {"class_type": "LTXAVTextEncoderLoader",
                  "inputs": {"text_encoder": "gemma_3_12B_it_fp4_mixed.safetensors",
                             "ckpt_name": "ltx-2-19b-dev-fp8.safetensors", "device": "default"}},
            "2": {"class_type": "TextGenerateLTX2Prompt", "inputs": {k: v for k, v in writer.items() if v is not None}},
            "3": {"class_type": "PreviewAny", "inputs": {"source": ["2", 0]}}}


@pytest.mark.parametrize("changes,kind", [
    ({"sampling_mode": "maybe"}, "value_not_in_list"),
    ({"sampling_mode.seed": None}, "required_input_missing"),
    ({"sampling_mode.temperature": 5.0}, "value_bigger_than_max"),
])
def test_a_dynamic_combos_option_and_its_inputs_are_validated(comfy, changes, kind):
    body = rejected(comfy, prompt_writer_graph(**changes))
    assert [e["type"] for e in body["node_errors"]["2"]["errors"]] == [kind]


def test_the_prompt_writer_reports_its_text_in_history(comfy):
    _, entry = run(comfy, prompt_writer_graph(**{"sampling_mode": "off"}))
    [text] = entry["outputs"]["3"]["text"]
    assert text.startswith("Style: cinematic. a fox")
