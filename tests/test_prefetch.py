"""The boot prefetch: every byte read once in file order, the memory budget from a (fake) cgroup tree, a missing
or shrinking file, the deadline, and the CLI that never fails the boot. The read function is a parameter: the
tests wrap the real os.preadv to record or slow what it reads."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from test_provision import FILES, make_config, target

from ltx2_worker import prefetch
from ltx2_worker.prefetch import Memory, budget_bytes, in_read_order, os_read, read_memory
from ltx2_worker.settings import ROOT

from hf_server import write


class Recorder:
    """os.preadv, recording (file, offset, bytes) of each read; optionally slowed."""

    def __init__(self, delay_s: float = 0.0):
        self.reads: list[tuple[str, int, int]] = []
        self.delay_s = delay_s
        self._lock = threading.Lock()

    def __call__(self, fd: int, buffer: memoryview, offset: int) -> int:
        time.sleep(self.delay_s)
        n = os_read(fd, buffer, offset)
        with self._lock:
            self.reads.append((os.readlink(f"/proc/self/fd/{fd}"), offset, n))
        return n

    def coverage(self, path: Path) -> list[tuple[int, int]]:
        return sorted((offset, offset + n) for name, offset, n in self.reads if name == str(path.resolve()) and n)


def files_of(tmp_path: Path, sizes: dict[str, int]) -> list[tuple[str, Path]]:
    return [(name, write(tmp_path / f"{name}.safetensors", os.urandom(size))) for name, size in sizes.items()]


def test_every_byte_is_read_once_by_parallel_readers(tmp_path):
    files = files_of(tmp_path, {"text_encoder": 100_003, "checkpoint": 250_000, "lora": 4096, "empty": 0})
    recorder = Recorder()
    result = prefetch.prefetch(files, readers=4, budget=10**9, timeout_s=30, chunk=4096, read=recorder)
    for name, path in files:
        spans = recorder.coverage(path)
        size = path.stat().st_size
        assert sum(end - start for start, end in spans) == size, name
        assert all(a[1] == b[0] for a, b in zip(spans, spans[1:], strict=False)), f"{name}: a gap or an overlap"
        assert not spans or (spans[0][0], spans[-1][1]) == (0, size)
    assert result.bytes_read == 354_099
    assert result.summary().startswith("read 0.00 GB of 3 files in ") and "with 4 readers" in result.summary()
    assert "skipped" not in result.summary()


def test_one_reader_reads_in_the_order_given():
    assert in_read_order(["checkpoint", "lora", "other", "upscaler", "text_encoder"]) == [
        "text_encoder", "checkpoint", "upscaler", "lora", "other"]


def test_single_reader_reads_the_files_in_order(tmp_path):
    files = files_of(tmp_path, {"a": 10_000, "b": 10_000, "c": 10_000})
    recorder = Recorder()
    prefetch.prefetch(files, readers=1, budget=10**9, timeout_s=30, chunk=4096, read=recorder)
    order = [Path(name).stem for name, _, _ in recorder.reads]
    assert order == sorted(order) and [o for o in order if o == "a"] == ["a"] * 3


def test_each_file_says_when_it_was_all_in_memory(tmp_path, caplog):
    files = files_of(tmp_path, {"a": 10_000, "b": 20_000, "c": 5_000})
    with caplog.at_level(logging.INFO, logger="ltx2_worker.prefetch"):
        result = prefetch.prefetch(files, readers=1, budget=32_000, timeout_s=30, chunk=4096, read=Recorder(0.01))
    done = {f.name: f.done_s for f in result.files}
    assert done["a"] is not None and done["b"] is not None and 0 < done["a"] < done["b"] <= result.seconds
    assert done["c"] is not None  # its 2,000 planned bytes (the budget's rest) are what "all" means for it
    lines = [r.getMessage() for r in caplog.records if "in memory at +" in r.getMessage()]
    assert [line.split(":")[0] for line in lines] == ["a", "b", "c"], lines


def test_the_memory_budget_is_never_exceeded(tmp_path):
    files = files_of(tmp_path, {"text_encoder": 100_000, "checkpoint": 100_000, "upscaler": 50_000})
    recorder = Recorder()
    result = prefetch.prefetch(files, readers=3, budget=150_000, timeout_s=30, chunk=4096, read=recorder)
    assert sum(n for _, _, n in recorder.reads) == 150_000 == result.bytes_read
    assert recorder.coverage(files[1][1])[-1][1] == 50_000, "the file that does not fit is read from its start"
    assert recorder.coverage(files[2][1]) == [], "nothing after the budget"
    assert result.summary().endswith("; skipped: checkpoint 0.00 of 0.00 GB (memory budget), upscaler 0.00 of 0.00 GB "
                                     "(memory budget)")


def fake_cgroup(root: Path, version: int, limit: str, usage: int) -> Path:
    if version == 2:
        write(root / "memory.max", f"{limit}\n".encode())
        write(root / "memory.current", f"{usage}\n".encode())
    else:
        write(root / "memory" / "memory.limit_in_bytes", f"{limit}\n".encode())
        write(root / "memory" / "memory.usage_in_bytes", f"{usage}\n".encode())
    return root


@pytest.mark.parametrize("version,limit,usage,room", [
    (2, "80000000000", 30_000_000_000, 50_000_000_000),  # the container's limit binds, page cache in its usage
    (2, "max", 30_000_000_000, 64_000_000_000 // 1000 * 1024),  # no limit: the host's MemAvailable
    (1, "40000000000", 1_000_000_000, 39_000_000_000),
    (1, "9223372036854771712", 1_000_000_000, 64_000_000_000 // 1000 * 1024),  # v1's "unlimited"
    (0, "", 0, 64_000_000_000 // 1000 * 1024),  # no cgroup memory controller
])
def test_memory_is_read_from_cgroup_v2_or_v1_and_the_host(tmp_path, version, limit, usage, room):
    root = fake_cgroup(tmp_path / "cgroup", version, limit, usage) if version else tmp_path / "none"
    meminfo = write(tmp_path / "meminfo", f"MemTotal: 9999 kB\nMemAvailable: {64_000_000_000 // 1000} kB\n".encode())
    assert read_memory(root, meminfo).room() == room


def test_the_budget_keeps_the_headroom_and_the_readers_buffers():
    memory = Memory(limit=100 * 10**9, usage=10 * 10**9, available=200 * 10**9)
    assert budget_bytes(memory, headroom_gb=24, readers=8) == 66 * 10**9 - 8 * prefetch.CHUNK
    assert budget_bytes(memory, headroom_gb=200, readers=8) == 0


def shrinking(read, path: Path, size: int):
    """`read`, which cuts the file at `path` to `size` bytes once it has read its first chunk, as a file replaced or
    cut while being read."""
    def reads_and_cuts(fd, buffer, offset):
        n = read(fd, buffer, offset)
        if os.readlink(f"/proc/self/fd/{fd}") == str(path) and offset == 0:
            os.truncate(path, size)
        return n

    return reads_and_cuts


def test_a_missing_or_shrinking_file_ends_only_that_file(tmp_path, caplog):
    files = files_of(tmp_path, {"text_encoder": 40_000, "checkpoint": 80_000, "lora": 30_000})
    missing = ("upscaler", tmp_path / "gone.safetensors")
    recorder = Recorder()
    shrink = files[1][1]
    with caplog.at_level(logging.WARNING, logger="ltx2_worker.prefetch"):
        result = prefetch.prefetch([*files[:2], missing, files[2]], readers=1, budget=10**9, timeout_s=30,
                                   chunk=4096, read=shrinking(recorder, shrink, 10_000))
    assert sum(e - s for s, e in recorder.coverage(files[0][1])) == 40_000
    assert sum(e - s for s, e in recorder.coverage(files[2][1])) == 30_000, "the files after it are still read"
    assert sum(e - s for s, e in recorder.coverage(shrink)) == 10_000
    assert "upscaler (missing)" in result.summary() and "(shrank to 10000 bytes while being read)" in result.summary()
    assert any("gone.safetensors missing" in r.message for r in caplog.records)


def test_the_deadline_ends_the_prefetch(tmp_path):
    files = files_of(tmp_path, {"checkpoint": 200 * 4096})
    started = time.monotonic()
    result = prefetch.prefetch(files, readers=2, budget=10**9, timeout_s=0.5, chunk=4096, read=Recorder(0.1))
    assert time.monotonic() - started < 3
    assert 0 < result.bytes_read < 200 * 4096 and "(deadline)" in result.summary()


class ThreadRecorder(Recorder):
    """Recorder, also noting which thread read and whether ComfyUI answered by then."""

    def __init__(self, answered: threading.Event, delay_s: float = 0.0):
        super().__init__(delay_s)
        self.answered = answered
        self.by: list[tuple[str, int, bool]] = []  # (thread, bytes asked for, ComfyUI answered)

    def __call__(self, fd: int, buffer: memoryview, offset: int) -> int:
        self.by.append((threading.current_thread().name, len(buffer), self.answered.is_set()))
        return super().__call__(fd, buffer, offset)


def test_yielding_to_comfyui_reads_one_thread_in_small_reads_until_it_answers(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(prefetch, "YIELD_READ", 1000)
    files = files_of(tmp_path, {"text_encoder": 60_000, "checkpoint": 120_000})
    answered = threading.Event()
    recorder = ThreadRecorder(answered, delay_s=0.002)

    def comfy_answers() -> bool:  # ComfyUI answers once 20 reads are done
        if len(recorder.by) >= 20:
            answered.set()
        return answered.is_set()

    with caplog.at_level(logging.INFO, logger="ltx2_worker.prefetch"):
        result = prefetch.prefetch(files, readers=4, budget=10**9, timeout_s=30, chunk=8192, read=recorder,
                                   yield_to=prefetch.Yield(comfy_answers, within_s=30, poll_s=0.01))
    before = [(thread, size) for thread, size, after in recorder.by if not after]
    after = [(thread, size) for thread, size, after_ in recorder.by if after_]
    assert len(before) >= 20 and {thread for thread, _ in before} == {"prefetch-0"}
    assert all(size <= 1000 for _, size in before), "small reads while ComfyUI starts"
    assert len({thread for thread, _ in after}) > 1 and max(size for _, size in after) == 8192, "then all of them"
    assert result.bytes_read == 180_000 and result.all_readers_at is not None
    for _, path in files:  # every byte once, as without yielding
        spans = recorder.coverage(path)
        assert sum(e - s for s, e in spans) == path.stat().st_size
        assert all(a[1] == b[0] for a, b in zip(spans, spans[1:], strict=False))
    assert "yielding to ComfyUI's start" in result.summary()
    assert any(r.getMessage().startswith("ComfyUI answers at +") for r in caplog.records)


def test_yielding_ends_when_comfyui_never_answers_or_all_is_read(tmp_path, caplog):
    files = files_of(tmp_path, {"checkpoint": 200_000})
    with caplog.at_level(logging.INFO, logger="ltx2_worker.prefetch"):
        late = prefetch.prefetch(files, readers=3, budget=10**9, timeout_s=30, chunk=4096, read=Recorder(0.01),
                                 yield_to=prefetch.Yield(lambda: False, within_s=0.2, poll_s=0.01))
    assert late.bytes_read == 200_000 and late.all_readers_at is not None and late.all_readers_at < 1
    assert any("ComfyUI did not answer within 0.2 s" in r.getMessage() for r in caplog.records)

    def broken() -> bool:
        raise OSError("connection refused")

    started = time.monotonic()  # the one reader reads it all before ComfyUI answers: nobody waits for it
    done = prefetch.prefetch(files, readers=3, budget=10**9, timeout_s=30, chunk=4096, read=Recorder(),
                             yield_to=prefetch.Yield(broken, within_s=30, poll_s=0.01))
    assert done.bytes_read == 200_000 and done.all_readers_at is None and time.monotonic() - started < 5


def test_the_checkpoints_parts_the_first_loaders_take_are_read_before_everything_else(tmp_path, caplog):
    """The first job's first two loaders take the audio VAE and vocoder, and the text encoder's projection, out
    of the checkpoint: their bytes come first, then the files in order, every byte once."""
    import numpy as np
    from safetensors.numpy import save_file

    checkpoint = tmp_path / "checkpoint.safetensors"
    save_file({"audio_vae.decoder.w": np.ones((64, 64), np.float32), "model.diffusion_model.w": np.ones(
        (256, 256), np.float32), "vocoder.conv.w": np.ones((32, 64), np.float32), "vae.w": np.ones((8, 8), np.float32),
        "text_embedding_projection.weight": np.ones((16, 16), np.float32)},
        str(checkpoint))
    ranges = prefetch.tensor_ranges(checkpoint, prefetch.FIRST_TENSORS["checkpoint"])
    assert sum(b - a for a, b in ranges) == (64 * 64 + 32 * 64 + 16 * 16) * 4
    text_encoder = files_of(tmp_path, {"text_encoder": 50_000})[0]
    recorder = Recorder()
    result = prefetch.prefetch([text_encoder, ("checkpoint", checkpoint)], readers=1, budget=10**9, timeout_s=30,
                               chunk=4096, read=recorder, first={"checkpoint": ranges})
    assert result.bytes_read == 50_000 + checkpoint.stat().st_size
    early = []
    for name, offset, n in recorder.reads:
        if name != str(checkpoint.resolve()):
            break
        early.append((offset, offset + n))
    assert sum(b - a for a, b in early) == sum(b - a for a, b in ranges), "those parts, before the text encoder"
    assert all(any(a <= s and e <= b for a, b in ranges) for s, e in early)
    spans = recorder.coverage(checkpoint)
    assert sum(e - s for s, e in spans) == checkpoint.stat().st_size
    assert all(a[1] == b[0] for a, b in zip(spans, spans[1:], strict=False)), "every byte once"
    assert prefetch.tensor_ranges(text_encoder[1], ("audio_vae.",)) == [], "not safetensors: nothing first"


def test_what_is_read_first_is_what_the_workers_checkpoint_loaders_open():
    """The prefetch reads first exactly the checkpoint tensors that LTX2AudioVAELoader and LTX2TextEncoderLoader
    open (the node module keeps its own copy: it runs in ComfyUI's Python, without the worker's package)."""
    import importlib.util

    path = ROOT / "ltx2_worker" / "comfy_nodes" / "ltx2_checkpoint_parts.py"
    spec = importlib.util.spec_from_file_location("ltx2_checkpoint_parts", path)
    nodes = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(nodes)  # imports nothing heavy at module level
    assert prefetch.FIRST_TENSORS["checkpoint"] == (*nodes.AUDIO_PREFIXES, *nodes.TEXT_ENCODER_PREFIXES)


def cli_env(tmp_path: Path, volume: Path, **extra: str) -> dict[str, str]:
    return {**os.environ, "LTX2_CONFIG": str(make_config(tmp_path)), "NETWORK_VOLUME_PATH": str(volume),
            "MODEL_CACHE_PATH": "", **extra}


def provisioned(tmp_path: Path) -> Path:
    volume = tmp_path / "volume"
    for role, (_, _, _, data) in FILES.items():
        write(target(volume, role), data)
    return volume


def files_in_memory(result: subprocess.CompletedProcess) -> list[str]:
    """The names of the CLI's "<name>: ... in memory at +N s" lines, in the order it logged them."""
    return [line.split("prefetch: ", 1)[1].split(":")[0] for line in result.stderr.splitlines()
            if " in memory at +" in line]


def run_prefetch(env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ltx2_worker.prefetch"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=60)


def test_the_cli_reads_the_volume_and_logs_one_summary(tmp_path):
    result = run_prefetch(cli_env(tmp_path, provisioned(tmp_path), PREFETCH_HEADROOM_GB="0"))
    assert result.returncode == 0
    summary = [line for line in result.stderr.splitlines() if "prefetch: read " in line]
    assert len(summary) == 1 and "prefetch: read 0.00 GB of 4 files in " in summary[0], result.stderr
    assert "with 8 readers" in summary[0] and "skipped" not in summary[0]


def test_the_cli_never_fails_the_boot(tmp_path):
    off = run_prefetch(cli_env(tmp_path, provisioned(tmp_path), PREFETCH="false"))
    assert off.returncode == 0 and "prefetch: off (PREFETCH=false)" in off.stderr
    empty = run_prefetch(cli_env(tmp_path, tmp_path / "nothing"))
    assert empty.returncode == 0 and "skipped: text_encoder (missing), checkpoint (missing)" in empty.stderr
    broken = run_prefetch(cli_env(tmp_path, tmp_path, PREFETCH_READERS="many"))
    assert broken.returncode == 0 and "prefetch: failed, the loaders read from storage instead" in broken.stderr


def test_the_cli_stays_within_the_cgroups_memory(tmp_path, monkeypatch, caplog):
    volume = provisioned(tmp_path)
    for key, value in cli_env(tmp_path, volume, PREFETCH_HEADROOM_GB="0", PREFETCH_READERS="2").items():
        monkeypatch.setenv(key, value)
    room = 2 * prefetch.CHUNK + 100_000  # after the readers' buffers, 100 kB may be read
    cgroup = fake_cgroup(tmp_path / "cgroup", 2, str(room + 5_000_000), 5_000_000)
    meminfo = write(tmp_path / "meminfo", b"MemAvailable: 99999999999 kB\n")
    recorder = Recorder()
    with caplog.at_level(logging.INFO, logger="ltx2_worker.prefetch"):
        assert prefetch.main([], read=recorder, cgroup_root=cgroup, meminfo=meminfo) == 0
    assert sum(n for _, _, n in recorder.reads) == 100_000
    first = [Path(name).name for name, _, _ in recorder.reads]
    assert set(first) == {"gemma_3_12B_it_fp4_mixed.safetensors"}, "the text encoder, loaded first, comes first"
    assert any("skipped: text_encoder" in r.message and "(memory budget)" in r.message for r in caplog.records)


def test_thousands_of_files_hold_no_more_descriptors_than_readers(tmp_path):
    """25,260 files (every file of the packages, a variant tried on the GPU host) once exhausted the descriptor
    limit, and no model was read."""
    import resource

    files = [("libraries", write(tmp_path / f"f{i}.py", b"x" * 10)) for i in range(300)]
    files += files_of(tmp_path, {"checkpoint": 50_000})
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(256, hard), hard))
    try:
        result = prefetch.prefetch(files, readers=4, budget=10**9, timeout_s=30, chunk=4096, read=Recorder())
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert result.bytes_read == 300 * 10 + 50_000 and "skipped" not in result.summary()


def test_before_any_list_the_cli_reads_the_models_first(tmp_path):
    """A first start with PREFETCH_LIBRARIES: nothing is read before the models (the shared libraries whole, 7.7
    GB, delayed the models and started ComfyUI no sooner); its start and first job write the lists."""
    env = cli_env(tmp_path, provisioned(tmp_path), PREFETCH_HEADROOM_GB="0", PREFETCH_READERS="1",
                  COMFY_PYTHON=sys.executable, PREFETCH_LIBRARIES="true")
    result = run_prefetch(env)
    assert result.returncode == 0
    assert files_in_memory(result)[:2] == ["text_encoder", "checkpoint"], result.stderr
    assert "prefetch: libraries: no list yet in " in result.stderr and "libraries first" not in result.stderr


def test_the_cli_yields_to_a_comfyui_that_answers_on_loopback(tmp_path, monkeypatch, caplog):
    import http.server

    asked: list[str] = []
    answered = threading.Event()

    class Comfy(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (http.server's name)
            asked.append(self.path)
            self.send_response(200 if self.path == "/system_stats" else 404)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"{}")
            answered.set()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Comfy)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    for key, value in cli_env(tmp_path, provisioned(tmp_path), PREFETCH_HEADROOM_GB="0",
                              PREFETCH_YIELD_TO_COMFY="true", COMFY_URL=url).items():
        monkeypatch.setenv(key, value)
    recorder = Recorder(0.1)

    def slow_disk(fd, buffer, offset):  # ComfyUI answers before the first byte is read, however loaded the host
        answered.wait(10)
        return recorder(fd, buffer, offset)

    try:
        with caplog.at_level(logging.INFO, logger="ltx2_worker.prefetch"):
            assert prefetch.main([], read=slow_disk) == 0
    finally:
        server.shutdown()
    messages = [r.getMessage() for r in caplog.records]
    assert f"one reader until ComfyUI answers at {url} (PREFETCH_YIELD_TO_COMFY)" in messages
    assert any(m.startswith("ComfyUI answers at +") and m.endswith(": 8 readers read now") for m in messages)
    assert asked and set(asked) == {"/system_stats"}
    summary = [m for m in messages if m.startswith("read ")]
    assert len(summary) == 1 and "of 4 files" in summary[0] and "yielding to ComfyUI's start" in summary[0], summary
