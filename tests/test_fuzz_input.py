"""Fuzzing the input path with hypothesis: whatever a caller sends, the worker answers with a validated request
or an error naming a field; no exception escapes. CI runs FUZZ_EXAMPLES (default 1000) inputs per test; the
long run is `FUZZ_EXAMPLES=10000 bash tests/run.sh -k fuzz`."""

from __future__ import annotations

import os

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ltx2_worker.job import FIELDS, InputError, VideoRequest, generation_size, parse_request
from ltx2_worker.settings import load_settings
from ltx2_worker.worker import Worker

S = load_settings(env={})
EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "1000"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])

scalars = (st.none() | st.booleans() | st.integers() | st.integers(min_value=-2**70, max_value=2**70)
           | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=50)
           | st.text(min_size=3990, max_size=4100) | st.sampled_from(["16:9", "9:16", "1:1", "-1", "", "\x00"]))
junk = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner,
                                                                                            max_size=3), max_leaves=8)
plausible = {
    "prompt": st.text(max_size=60) | junk,
    "negative_prompt": st.text(max_size=60) | junk,
    "width": st.integers(0, 4000) | junk, "height": st.integers(0, 4000) | junk,
    "aspect_ratio": st.sampled_from(["16:9", "9:16", "1:1", "4:3", "5:4"]) | junk,
    "frame_count": st.integers(-10, 400) | junk, "fps": st.floats(0, 100) | st.integers(0, 100) | junk,
    "seed": st.integers(-5, 2**65) | junk, "steps": st.integers(-1, 100) | junk,
    "cfg": st.floats(-1, 20) | junk, "audio": st.booleans() | junk,
    "delivery": st.sampled_from(["auto", "url", "base64", "URL"]) | junk,
}
job_inputs = (st.fixed_dictionaries({}, optional={k: v for k, v in plausible.items()})
              | st.dictionaries(st.text(max_size=12) | st.sampled_from(FIELDS), junk, max_size=6)
              | junk)


@FUZZ
@given(job_inputs)
def test_fuzz_input_yields_a_request_or_a_named_field(raw):
    try:
        req = parse_request(raw, S)
    except InputError as exc:
        known = set(FIELDS) | {"input"} | (set(map(str, raw)) if isinstance(raw, dict) else set())
        assert exc.field in known
        assert str(exc).startswith(f"{exc.field}: ") and len(str(exc)) < 400
        return
    assert isinstance(req, VideoRequest)
    assert req.prompt and len(req.prompt) <= S.max_prompt_chars
    assert req.width % S.size_multiple == 0 and S.min_size <= req.width <= S.max_size
    assert req.height % S.size_multiple == 0 and S.min_size <= req.height <= S.max_size
    assert req.frame_count % 8 == 1 and req.frame_count <= S.clip_limits().max_frames
    gen_w, gen_h = generation_size(req.width, req.height)
    assert gen_w * gen_h * req.frame_count <= S.clip_limits().max_clip_pixels, "the rendered clip is within the limit"
    assert isinstance(req.fps, int) and S.min_fps <= req.fps <= S.max_fps
    assert (req.frame_count - 1) / req.fps <= 20, "within LTX-2's position range"
    assert 0 <= req.seed < 2**64


@settings(max_examples=max(100, EXAMPLES // 10), deadline=None)
@given(junk | st.fixed_dictionaries({"id": st.text(max_size=80) | junk}, optional={"input": junk}))
def test_fuzz_whole_jobs_through_the_handler_never_raise(tmp_path_factory, job):
    """Bad jobs through Worker.handle (ComfyUI is never reached for them: validation answers first)."""
    worker = _worker(tmp_path_factory)
    if not isinstance(job, dict):
        job = {"id": "j", "input": job}
    out = worker.handle(job)
    assert isinstance(out, dict)
    if "error" in out:
        assert isinstance(out["error"], str) and out["error"]


_WORKERS: dict = {}


def _worker(tmp_path_factory):
    if "w" not in _WORKERS:
        tmp = tmp_path_factory.mktemp("fuzz")
        # a ComfyUI that is never there, found out at once: only invalid inputs are expected to get this far
        _WORKERS["w"] = Worker(load_settings(env={"COMFY_URL": "http://127.0.0.1:9", "COMFY_READY_TIMEOUT_S": "0.01",
                                                  "BOOT_ERROR_FILE": str(tmp / "none"),
                                                  "COMFY_PID_FILE": str(tmp / "none.pid"),
                                                  "COMFY_OUTPUT_DIR": str(tmp / "out")}))
    return _WORKERS["w"]
