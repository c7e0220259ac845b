"""Stopping `python handler.py --rp_serve_api` (Ctrl-C, or SIGTERM from `docker stop` or RunPod) while a job
waits on ComfyUI: the process ends within seconds, ComfyUI's prompt is interrupted, and the waiting caller is
answered with why, instead of the signal waiting for the job to end (up to JOB_TIMEOUT_S)."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest
import requests

from comfy_server import ProtocolComfy
from helpers import LocalApi, loopback_env


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_during_a_job_interrupts_comfyui_answers_the_caller_and_stops_the_server(tmp_path, signum):
    with ProtocolComfy(output_dir=tmp_path / "output") as comfy:
        comfy.inject("hang")
        env = loopback_env(comfy.url, tmp_path / "output", tmp_path, JOB_TIMEOUT_S="120")
        api = LocalApi(env, tmp_path / "handler.log").__enter__()
        answer: dict = {}

        def call():
            try:
                answer.update(requests.post(api.base + "/runsync", json={"input": {"prompt": "x"}}, timeout=60).json())
            except requests.RequestException as exc:
                answer["exception"] = repr(exc)

        caller = threading.Thread(target=call)
        caller.start()
        give_up = time.monotonic() + 20
        while not comfy.submitted and time.monotonic() < give_up:
            time.sleep(0.1)
        assert comfy.submitted, "the job never reached ComfyUI"
        time.sleep(0.5)
        sent = time.monotonic()
        os.kill(api.proc.pid, signum)
        try:
            api.proc.wait(timeout=15)
        finally:
            stopped_in = time.monotonic() - sent
            api.__exit__()
        caller.join(timeout=10)
        log = (tmp_path / "handler.log").read_text()
    assert stopped_in < 5, f"the server took {stopped_in:.1f} s to stop:\n{log[-2000:]}"
    assert comfy.interrupts >= 1, "ComfyUI's prompt was left running"
    name = signal.Signals(signum).name
    assert answer.get("status") == "FAILED" and name in answer.get("error", ""), answer
    assert "Traceback" not in log, log[-3000:]


def test_the_sdks_own_handler_still_hears_the_signal_and_a_second_signal_raises_nothing_more():
    """RunPod's worker loop (JobScaler) and uvicorn set handlers that only note the shutdown: they are called,
    the job gets one Stopping, and they are back in place after the job."""
    from ltx2_worker.stopping import Stopping, stop_on_signals

    heard = []
    before = signal.signal(signal.SIGTERM, lambda signum, frame: heard.append(signum))
    try:
        with pytest.raises(Stopping, match="SIGTERM"):
            with stop_on_signals():
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(1)  # the handler runs between bytecodes: Stopping ends this wait
        with stop_on_signals():
            pass
        os.kill(os.getpid(), signal.SIGTERM)
        assert heard == [signal.SIGTERM] * 2
    finally:
        signal.signal(signal.SIGTERM, before)


def test_a_signal_that_ends_the_process_is_raised_again_when_the_job_returns():
    """Python's default for SIGINT raises KeyboardInterrupt: not mid-job (the prompt is interrupted first), but
    as soon as the job has returned."""
    from ltx2_worker.stopping import Stopping, stop_on_signals

    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    reached = []
    try:
        with pytest.raises(KeyboardInterrupt):
            with stop_on_signals():
                try:
                    os.kill(os.getpid(), signal.SIGINT)
                    time.sleep(1)
                except Stopping:
                    reached.append("job stopped")
        assert reached == ["job stopped"]
    finally:
        signal.signal(signal.SIGINT, before)
