"""One job through the worker against the protocol ComfyUI on loopback: real HTTP, real WebSocket, real MP4s,
and every fault the issue lists ending in a clear error or a recovered result, never a hang or a leftover file.
"""

from __future__ import annotations

import json
import time

import pytest

from ltx2_worker.comfy import ComfyClient, Progress
from ltx2_worker.gpu import Gpu, choose_profile
from ltx2_worker.progress import ProgressReporter
from ltx2_worker.worker import Worker

from comfy_server import ProtocolComfy
from helpers import decode_video_field, files_under, loopback_settings

EARLIER_PACKAGE_REQUEST = {"prompt": "a red fox running through snow", "negative_prompt": "blurry",
                           "width": 1280, "height": 720, "frame_count": 121, "seed": 42}
SMALL = {"prompt": "a lighthouse at dusk", "width": 512, "height": 288, "frame_count": 9, "seed": 1}


@pytest.fixture
def output_dir(tmp_path):
    return tmp_path / "output"


@pytest.fixture
def comfy(output_dir):
    server = ProtocolComfy(output_dir=output_dir).start()
    yield server
    server.stop()


def make_worker(comfy, output_dir, tmp_path, **env):
    return Worker(loopback_settings(comfy.url, output_dir, tmp_path, **env))


@pytest.fixture
def worker(comfy, output_dir, tmp_path):
    return make_worker(comfy, output_dir, tmp_path)


def run(worker, job_input, job_id="job-1"):
    return worker.handle({"id": job_id, "input": job_input})


def test_earlier_package_request_returns_exactly_the_asked_mp4(worker, comfy, output_dir):
    out = run(worker, EARLIER_PACKAGE_REQUEST)
    assert "error" not in out, out
    for key in ("video", "seed", "prompt_id", "frame_count", "duration_seconds"):  # the earlier response keys
        assert key in out
    assert (out["seed"], out["frame_count"], out["width"], out["height"], out["fps"]) == (42, 121, 1280, 720, 24)
    assert out["mime_type"] == "video/mp4"
    assert out["duration_seconds"] == pytest.approx(121 / 24, abs=1e-3)
    assert set(out["timings"]) >= {"validate", "generate", "fetch", "deliver", "total"}
    assert out["timings"]["encode"] == out["timings"]["deliver"], "the old name stays one release"
    facts = decode_video_field(out)
    assert facts == {"width": 1280, "height": 720, "frames": 121, "fps": 24.0, "audio": True}
    assert files_under(output_dir) == [], "the MP4 must be removed from ComfyUI's output folder"
    assert len(comfy.submitted) == 1


def test_optional_fields_reach_the_mp4(worker):
    out = run(worker, {"prompt": "x", "aspect_ratio": "9:16", "frame_count": 17, "fps": 30, "audio": False})
    assert "error" not in out, out
    assert (out["width"], out["height"], out["fps"], out["audio"]) == (720, 1280, 30, False)
    assert decode_video_field(out) == {"width": 720, "height": 1280, "frames": 17, "fps": 30.0, "audio": False}


def test_identical_jobs_both_return_a_video(worker, output_dir):
    """ComfyUI answers an identical graph from cache with the same (already deleted) file; the per-job file
    name keeps every job's graph distinct, so the second job still gets its MP4."""
    first, second = run(worker, SMALL, "a"), run(worker, SMALL, "b")
    assert "error" not in first and "error" not in second, (first, second)
    assert first["video"] == second["video"]
    assert files_under(output_dir) == []


def test_invalid_input_never_reaches_comfyui(worker, comfy):
    out = run(worker, {**SMALL, "frame_count": 10})
    assert out == {"error": "frame_count: must be 8k+1 (9, 17, ..., 121, ...), got 10"}
    assert comfy.submitted == []


def test_execution_error_names_node_type_id_and_message(worker, comfy, output_dir):
    comfy.inject("execution_error", node_type="VAEDecodeTiled", exception_type="RuntimeError",
                 exception_message="tile too large")
    out = run(worker, SMALL)
    assert "VAEDecodeTiled" in out["error"] and "92:98" in out["error"] and "tile too large" in out["error"]
    assert "refresh_worker" not in out
    assert files_under(output_dir) == []


def test_prompt_rejected_lists_node_errors(worker, comfy):
    comfy.inject("reject")
    out = run(worker, SMALL)
    assert "rejected the workflow" in out["error"]
    for node_id, class_type in (("92:48", "LTXVAudioVAELoader"), ("92:60", "LTXAVTextEncoderLoader"),
                                ("92:68", "LoraLoaderModelOnly")):
        assert f"node {node_id} ({class_type})" in out["error"]
    assert "gemma_3_12B_it_fp4_mixed.safetensors' not in []" in out["error"]


def test_dropped_websocket_is_reconnected_and_the_result_recovered(worker, comfy, output_dir):
    comfy.exec_seconds = 1.0  # still running when the socket drops: the worker must reconnect, not just ask /history
    comfy.inject("ws_drop", after_messages=4)
    out = run(worker, SMALL)
    assert "error" not in out, out
    assert decode_video_field(out)["frames"] == 9
    assert comfy.ws_connections >= 2
    assert files_under(output_dir) == []
    give_up = time.monotonic() + 5
    while any(comfy._sockets.values()) and time.monotonic() < give_up:
        time.sleep(0.05)
    assert not any(comfy._sockets.values()), "the worker left a WebSocket open"


def test_deadline_interrupts_the_prompt(comfy, output_dir, tmp_path):
    worker = make_worker(comfy, output_dir, tmp_path, JOB_TIMEOUT_S="2")
    comfy.inject("hang")
    started = time.monotonic()
    out = run(worker, SMALL)
    elapsed = time.monotonic() - started
    assert "deadline" in out["error"] and "interrupted" in out["error"]
    assert comfy.interrupts >= 1
    assert elapsed < 6, f"the deadline of 2 s was overrun: {elapsed:.1f} s"


def test_history_without_the_output_is_an_error_and_leaves_no_file(worker, comfy, output_dir):
    comfy.inject("history_missing_output")
    out = run(worker, SMALL)
    assert "no MP4" in out["error"]
    assert files_under(output_dir) == []


def test_view_failure_is_an_error_and_leaves_no_file(worker, comfy, output_dir):
    comfy.inject("view_error")
    out = run(worker, SMALL)
    assert "could not serve output" in out["error"] and "500" in out["error"]
    assert files_under(output_dir) == []


def test_comfyui_dying_mid_job_asks_for_a_fresh_worker(worker, comfy):
    comfy.inject("die", after_messages=4)
    started = time.monotonic()
    out = run(worker, SMALL)
    assert out.get("refresh_worker") is True
    assert "ComfyUI" in out["error"]
    assert time.monotonic() - started < 25


def test_no_comfyui_at_all_fails_within_the_ready_timeout(output_dir, tmp_path):
    from helpers import free_port

    worker = Worker(loopback_settings(f"http://127.0.0.1:{free_port()}", output_dir, tmp_path,
                                      COMFY_READY_TIMEOUT_S="1"))
    started = time.monotonic()
    out = run(worker, SMALL)
    assert out["refresh_worker"] is True and "COMFY_READY_TIMEOUT_S" in out["error"]
    assert time.monotonic() - started < 4


@pytest.mark.parametrize("image, rule", [("not base64 at all!", "must be base64"),
                                         ("http://example.com/a.png", "URL must use https"),
                                         ("https://127.0.0.1/a.png", "not a public address")])
def test_an_image_error_is_answered_before_waiting_for_comfyui(output_dir, tmp_path, image, rule):
    """With ComfyUI starting or down, a bad image is the caller's error, answered at once: not "ComfyUI did not
    answer" (with refresh_worker) after COMFY_READY_TIMEOUT_S."""
    from helpers import free_port

    worker = Worker(loopback_settings(f"http://127.0.0.1:{free_port()}", output_dir, tmp_path,
                                      COMFY_READY_TIMEOUT_S="20"))
    started = time.monotonic()
    out = run(worker, {**SMALL, "image": image})
    assert out["error"].startswith("image: ") and rule in out["error"], out
    assert "refresh_worker" not in out
    assert time.monotonic() - started < 5


def test_a_launch_failure_recorded_while_a_job_waits_ends_the_wait_with_its_cause(output_dir, tmp_path):
    """The handler starts beside the launcher (entrypoint.sh): a job waiting for ComfyUI is answered with the
    launcher's recorded failure as soon as it is written, not after COMFY_READY_TIMEOUT_S."""
    import threading

    from ltx2_worker.health import record_boot_failure

    from helpers import free_port

    settings = loopback_settings(f"http://127.0.0.1:{free_port()}", output_dir, tmp_path, COMFY_READY_TIMEOUT_S="30")
    timer = threading.Timer(1.0, record_boot_failure, (settings, "ComfyUI launch failed: it did not answer", False))
    timer.start()
    started = time.monotonic()
    out = run(Worker(settings), SMALL)
    timer.join()
    assert out["error"] == "worker start-up failed: ComfyUI launch failed: it did not answer", out
    assert "refresh_worker" not in out  # as recorded: a fresh worker would fail the same way
    assert 0.9 < time.monotonic() - started < 5


def test_boot_failure_answers_every_job(worker, comfy, tmp_path):
    (tmp_path / "boot-error").write_text("model ltx-2-19b-dev-fp8.safetensors: truncated (27 of 27078716018 bytes)")
    out = run(worker, SMALL)
    assert out["error"].startswith("worker start-up failed: model ltx-2-19b-dev-fp8.safetensors: truncated")
    assert comfy.submitted == []


def test_result_over_the_inline_limit_says_how_to_configure_a_bucket(comfy, output_dir, tmp_path):
    worker = make_worker(comfy, output_dir, tmp_path, MAX_INLINE_MB="0.001")
    out = run(worker, SMALL)
    assert "MAX_INLINE_MB" in out["error"] and "BUCKET_ENDPOINT_URL" in out["error"]
    assert files_under(output_dir) == []


def test_progress_is_forwarded_from_sampler_steps(comfy, output_dir):
    comfy.exec_seconds = 0.5
    sent = []
    client = ComfyClient(comfy.url)
    from ltx2_worker.job import parse_request
    from ltx2_worker.settings import load_settings
    from ltx2_worker.workflow import Workflow

    wf = Workflow.load()
    graph = wf.build(parse_request({**SMALL, "steps": 4}, load_settings(env={})), "ltx2/progress")
    reporter = ProgressReporter("p", graph, 0.0, sent.append)
    client.run(graph, time.monotonic() + 20, reporter)
    stage1 = [p for p in sent if p["node"] == wf.node_ids["sampler_stage1"] and "step" in p]
    assert stage1, sent
    assert stage1[-1]["steps"] == 4 and stage1[-1]["step"] == 4
    assert stage1[0]["stage"] == "stage 1: sampling at half size"


def test_progress_reporter_throttles():
    sent = []
    reporter = ProgressReporter("p", {}, 60.0, sent.append)
    for i in range(1, 50):
        reporter(Progress("92:41", i, 49))
    assert len(sent) == 1


def test_out_of_memory_retries_after_freeing_memory(worker, comfy, output_dir):
    comfy.inject("execution_error", node_type="VAEDecodeTiled")  # a CUDA OOM, once
    out = run(worker, SMALL)
    assert "error" not in out, out
    assert out["fallback"]["rung"] == "retry"
    assert "OutOfMemoryError" in out["fallback"]["reason"] and "VAEDecodeTiled" in out["fallback"]["reason"]
    assert comfy.frees == 1
    assert (out["width"], out["height"]) == (512, 288)
    assert files_under(output_dir) == []


def test_out_of_memory_ladder_shrinks_and_reports_the_size_it_made(worker, comfy, output_dir):
    comfy.inject("execution_error", node_type="SamplerCustomAdvanced", times=2)
    out = run(worker, {**SMALL, "width": 1280, "height": 720, "prompt": "unchanged prompt"})
    assert out["fallback"]["rung"] == "scale:0.75"
    assert out["fallback"]["requested"] == {"width": 1280, "height": 720, "frame_count": 9}
    assert (out["width"], out["height"]) == (960, 536)
    assert decode_video_field(out)["width"] == 960
    texts = [n["inputs"]["text"] for n in comfy.submitted[-1]["prompt"].values() if n["class_type"] == "CLIPTextEncode"]
    assert "unchanged prompt" in texts, "the ladder never changes the prompt"
    assert comfy.frees == 2
    assert files_under(output_dir) == []


def test_out_of_memory_on_every_rung_fails_naming_the_ladder(worker, comfy):
    comfy.inject("execution_error", node_type="VAEDecodeTiled", times=10)
    out = run(worker, {**SMALL, "frame_count": 17})
    assert "OutOfMemoryError" in out["error"] and "retry, scale:0.75, frames:0.5" in out["error"]
    assert len(comfy.submitted) == 4
    assert [n["inputs"]["length"] for p in comfy.submitted for n in p["prompt"].values()
            if n["class_type"] == "EmptyLTXVLatentVideo"] == [17, 17, 17, 9]


def test_a_rung_that_cannot_shrink_is_skipped(worker, comfy):
    comfy.inject("execution_error", node_type="VAEDecodeTiled", times=10)
    out = run(worker, SMALL)  # 9 frames: frames:0.5 has nothing left to take
    assert "did not help" in out["error"] and len(comfy.submitted) == 3


def test_other_execution_errors_are_not_retried(worker, comfy):
    comfy.inject("execution_error", exception_type="RuntimeError", exception_message="shape mismatch")
    out = run(worker, SMALL)
    assert "shape mismatch" in out["error"] and len(comfy.submitted) == 1 and comfy.frees == 0


def test_a_job_arriving_while_comfyui_starts_waits_for_it(output_dir, tmp_path):
    import threading

    from helpers import free_port

    port = free_port()
    worker = Worker(loopback_settings(f"http://127.0.0.1:{port}", output_dir, tmp_path, COMFY_READY_TIMEOUT_S="20"))
    late = ProtocolComfy(output_dir=output_dir, port=port)
    timer = threading.Timer(1.5, late.start)
    timer.start()
    try:
        out = run(worker, SMALL)
    finally:
        timer.join()
        late.stop()
    assert "error" not in out, out
    assert out["timings"]["comfy_startup_wait"] >= 1.0


def test_result_over_the_inline_limit_goes_to_the_bucket(comfy, output_dir, tmp_path, monkeypatch):
    import boto3
    import requests
    from moto.server import ThreadedMotoServer

    s3 = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    s3.start()
    try:
        host, port = s3.get_host_and_port()
        keys = {"BUCKET_ENDPOINT_URL": f"http://{host}:{port}", "BUCKET_ACCESS_KEY_ID": "AKIAEXAMPLE",
                "BUCKET_SECRET_ACCESS_KEY": "example-secret"}
        boto3.client("s3", endpoint_url=keys["BUCKET_ENDPOINT_URL"], aws_access_key_id="AKIAEXAMPLE",
                     aws_secret_access_key="example-secret", region_name="us-east-1").create_bucket(Bucket="clips")
        for key, value in keys.items():
            monkeypatch.setenv(key, value)
        worker = make_worker(comfy, output_dir, tmp_path, MAX_INLINE_MB="0.001", BUCKET_NAME="clips")
        out = run(worker, SMALL)
        assert "video" not in out and out["video_url"].startswith(keys["BUCKET_ENDPOINT_URL"] + "/clips/ltx2/job-1-")
        from helpers import mp4_facts

        assert mp4_facts(requests.get(out["video_url"], timeout=10).content)["frames"] == 9
        assert files_under(output_dir) == []
    finally:
        s3.stop()


def test_comfyui_not_answering_http_in_time_asks_for_a_fresh_worker(comfy, output_dir, tmp_path):
    worker = make_worker(comfy, output_dir, tmp_path, COMFY_HTTP_TIMEOUT_S="1", COMFY_READY_TIMEOUT_S="2")
    comfy.inject("slow_http", seconds=4)
    started = time.monotonic()
    out = run(worker, SMALL)
    assert out["refresh_worker"] is True and "did not answer" in out["error"]
    assert time.monotonic() - started < 8
    assert comfy.submitted == []


@pytest.mark.parametrize("audio", [True, False])
def test_the_large_memory_graph_passes_validation_and_delivers_the_asked_size(comfy, output_dir, tmp_path, audio):
    settings = loopback_settings(comfy.url, output_dir, tmp_path)
    large = choose_profile(Gpu("H100 80GB HBM3", 79.6, 9.0), settings.comfy_reserve_vram_gb)
    out = Worker(settings, profile=large).handle({"id": "large", "input": {**EARLIER_PACKAGE_REQUEST,
                                                                           "audio": audio}})
    assert "error" not in out, out
    assert decode_video_field(out) == {"width": 1280, "height": 720, "frames": 121, "fps": 24.0, "audio": audio}
    classes = {node["class_type"] for node in comfy.submitted[-1]["prompt"].values()}
    assert {"LTX2LoraBypass", "ImageCrop", "LTX2CudaGraphs", "LTX2VAEDecodeTiled", "LTX2AudioVAELoader",
            "LTX2TextEncoderLoader", "LTX2LatentUpscaleModelLoader", "LTX2SaveVideo", "LTX2LatentUpsampler"} <= classes
    # one transformer: no second copy for stage 2, no merged LoRA
    assert not {"SaveVideo", "VAEDecodeTiled", "LatentUpscaleModelLoader", "LTXVLatentUpsampler", "UNETLoader",
                "LoraLoaderModelOnly", "LTXVAudioVAELoader", "LTXAVTextEncoderLoader"} & classes


def test_the_mp4_is_encoded_with_the_configured_x264_preset_and_crf(comfy, output_dir, tmp_path, caplog):
    """X264_PRESET and X264_CRF reach the save node; the MP4 comes back, and nothing is left in the output folder."""
    worker = make_worker(comfy, output_dir, tmp_path, X264_PRESET="faster", X264_CRF="30")
    out = run(worker, SMALL)
    assert "error" not in out, out
    [save] = [n for n in comfy.submitted[-1]["prompt"].values() if n["class_type"] == "LTX2SaveVideo"]
    assert (save["inputs"]["preset"], save["inputs"]["crf"]) == ("faster", 30)
    assert decode_video_field(out)["frames"] == SMALL["frame_count"]
    assert not any(p.is_file() for p in output_dir.rglob("*"))
    assert not [r for r in caplog.records if "lacks what ltx2_worker.launch gives it" in r.getMessage()]


def test_a_comfyui_without_the_workers_nodes_runs_the_large_graph_without_them(output_dir, tmp_path, caplog):
    """Pointed at a ComfyUI it did not start (no worker nodes on its custom-node path), the large class still
    works: the CUDA-graph node is left out and SaveVideo writes the MP4, with one warning for the whole
    process naming both."""
    server = ProtocolComfy(output_dir=output_dir, worker_nodes=False).start()
    try:
        settings = loopback_settings(server.url, output_dir, tmp_path)
        large = choose_profile(Gpu("H100 80GB HBM3", 79.6, 9.0), settings.comfy_reserve_vram_gb)
        assert large.graph.cuda_graphs
        worker = Worker(settings, profile=large)
        outs = [worker.handle({"id": f"j{i}", "input": dict(SMALL)}) for i in range(2)]
        assert all("error" not in out for out in outs), outs
        for submitted in server.submitted:
            classes = {node["class_type"] for node in submitted["prompt"].values()}
            assert not {"LTX2CudaGraphs", "LTX2VAEDecodeTiled", "LTX2LatentUpscaleModelLoader",
                        "LTX2SaveVideo", "LTX2LatentUpsampler", "LTX2LoraBypass", "LTX2AudioVAELoader",
                        "LTX2TextEncoderLoader"} & classes
            # the LoRA bypass is ComfyUI's own node: it stays
            assert {"LoraLoaderBypassModelOnly", "VAEDecodeTiled", "LatentUpscaleModelLoader", "SaveVideo",
                    "LTXVLatentUpsampler", "LTXVAudioVAELoader", "LTXAVTextEncoderLoader"} <= classes
        warnings = [r.getMessage() for r in caplog.records
                    if "lacks what ltx2_worker.launch gives it" in r.getMessage()]
        assert len(warnings) == 1 and "ltx2_worker.launch" in warnings[0]
        assert all(name in warnings[0] for name in ("LTX2CudaGraphs", "LTX2VAEDecodeTiled", "LTX2SaveVideo",
                                                     "LTX2LatentUpscaleModelLoader", "LTX2LatentUpsampler",
                                                     "LTX2LoraBypass", "LTX2AudioVAELoader", "LTX2TextEncoderLoader",
                                                     "X264_PRESET",
                                                     "--cache-classic"))
        assert "LoraLoaderBypassModelOnly" not in warnings[0]
    finally:
        server.stop()


def test_a_comfyui_without_the_lora_bypass_merges_the_lora_instead(output_dir, tmp_path, caplog):
    """A ComfyUI older than the bypass node (another ComfyUI than the pinned one) still runs the large class:
    stage 2's LoRA goes through LoraLoaderModelOnly as exported, and the warning says what that costs."""
    from comfy_server import DATA

    schemas = json.loads((DATA / "object_info.json").read_text())
    del schemas["LoraLoaderBypassModelOnly"]
    older = tmp_path / "object_info.json"
    older.write_text(json.dumps(schemas))
    server = ProtocolComfy(output_dir=output_dir, object_info_path=older).start()
    try:
        settings = loopback_settings(server.url, output_dir, tmp_path)
        worker = Worker(settings, profile=choose_profile(Gpu("H100 80GB HBM3", 79.6, 9.0), 0.0))
        out = worker.handle({"id": "older", "input": dict(SMALL)})
        assert "error" not in out, out
        classes = {node["class_type"] for node in server.submitted[-1]["prompt"].values()}
        assert "LoraLoaderModelOnly" in classes and "LoraLoaderBypassModelOnly" not in classes
        [warning] = [r.getMessage() for r in caplog.records
                     if "lacks what ltx2_worker.launch gives it" in r.getMessage()]
        assert "LoraLoaderBypassModelOnly (stage 2's LoRA is merged" in warning
    finally:
        server.stop()



def test_a_url_delivery_without_a_bucket_is_refused_before_anything_is_generated(worker, comfy, monkeypatch):
    for name in ("BUCKET_ENDPOINT_URL", "BUCKET_ACCESS_KEY_ID", "BUCKET_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(name, raising=False)
    started = time.monotonic()
    out = run(worker, {**SMALL, "delivery": "url"})
    assert set(out) == {"error"} and out["error"].startswith('delivery: "url" needs a bucket'), out
    assert "BUCKET_ENDPOINT_URL" in out["error"] and comfy.submitted == [] and time.monotonic() - started < 2


def test_a_health_check_says_whether_a_job_could_run_and_runs_none(comfy, output_dir, tmp_path, monkeypatch):
    from test_provision import FILES, make_config, target

    from hf_server import write

    volume = tmp_path / "volume"
    monkeypatch.setenv("LTX2_CONFIG", str(make_config(tmp_path)))  # the manifest of the small test files
    worker = make_worker(comfy, output_dir, tmp_path, NETWORK_VOLUME_PATH=str(volume), MODEL_CACHE_PATH="")
    missing = run(worker, {"health": True})["health"]
    assert missing["ready"] is False and missing["comfyui"] == "ready" and missing["models"] != "ok", missing
    for role, (_, _, _, data) in FILES.items():
        write(target(volume, role), data)
    report = run(worker, {"health": True})["health"]
    assert report == {"ready": True, "problem": None, "comfyui": "ready", "models": "ok", "gpu": None,
                      "memory_class": "cpu", "clip_limits": {"max_frames": 257, "max_clip_pixels": 252764160}}, report
    comfy.stop()
    assert run(worker, {"health": True})["health"]["comfyui"] == "starting"
    assert run(worker, {"health": True, "prompt": "x"}) == {
        "error": "health: must be true, alone in the input (a health check runs no job)"}
    assert comfy.submitted == []
