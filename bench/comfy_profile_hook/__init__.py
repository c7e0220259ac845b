"""A profiler inside ComfyUI, for the GPU benchmark only (never installed by the worker).

`bench/gpu_clip.py --profile N,M` links this folder into ComfyUI's `custom_nodes/` for the run and sets
`LTX2_PROFILE`; ComfyUI imports it as a custom node with no nodes. It wraps `PromptExecutor.execute` and, for
the prompts whose 1-based number is listed, writes into `LTX2_PROFILE_DIR`:
- `prompt<N>-python.txt`: cProfile of the prompt thread (where the CPU time of the Python code goes), and
  `prompt<N>-python.prof`, its raw statistics for `pstats` (callers, callees);
- `prompt<N>-torch.txt`: torch.profiler's operator table (CPU and GPU time per aten op and kernel) and the
  totals, which say whether a job is bound by the GPU's work or by the CPU launching it.
A listed number may carry `:torch` or `:python` to run only that profiler (they distort each other).
"""

from __future__ import annotations

import cProfile
import io
import os
import pstats
import time
from pathlib import Path

NODE_CLASS_MAPPINGS: dict = {}


def _wanted() -> dict[int, set[str]]:
    out: dict[int, set[str]] = {}
    for item in os.environ.get("LTX2_PROFILE", "").split(","):
        if item.strip():
            number, _, kind = item.strip().partition(":")
            out[int(number)] = {kind} if kind else {"python", "torch"}
    return out


def _torch_report(prof, seconds: float) -> str:
    events = prof.key_averages()
    cpu_us = sum(e.self_cpu_time_total for e in events)
    dev_us = sum(getattr(e, "self_device_time_total", 0) or getattr(e, "self_cuda_time_total", 0) for e in events)
    lines = [f"wall {seconds:.2f} s; self CPU time of all ops {cpu_us / 1e6:.2f} s; "
             f"self GPU time of all kernels {dev_us / 1e6:.2f} s",
             f"ops launched: {sum(e.count for e in events)}"]
    for key in ("self_cpu_time_total", "self_device_time_total" if dev_us else "cpu_time_total"):
        try:
            lines.append(events.table(sort_by=key, row_limit=45, max_name_column_width=70))
        except (AttributeError, KeyError, RuntimeError):
            lines.append(events.table(sort_by="self_cuda_time_total", row_limit=45, max_name_column_width=70))
    return "\n".join(lines)


def _install() -> None:
    import execution

    wanted = _wanted()
    out_dir = Path(os.environ.get("LTX2_PROFILE_DIR", "."))
    original = execution.PromptExecutor.execute
    count = [0]

    def execute(self, prompt, prompt_id, extra_data={}, execute_outputs=[]):  # noqa: B006 (ComfyUI's signature)
        count[0] += 1
        kinds = wanted.get(count[0], set())
        if not kinds:
            return original(self, prompt, prompt_id, extra_data, execute_outputs)
        import torch

        prof_py = cProfile.Profile() if "python" in kinds else None
        activities = [torch.profiler.ProfilerActivity.CPU]
        if torch.cuda.is_available():
            activities.append(torch.profiler.ProfilerActivity.CUDA)
        prof_t = torch.profiler.profile(activities=activities) if "torch" in kinds else None
        started = time.perf_counter()
        if prof_t:
            prof_t.__enter__()
        if prof_py:
            prof_py.enable()
        try:
            return original(self, prompt, prompt_id, extra_data, execute_outputs)
        finally:
            if prof_py:
                prof_py.disable()
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            seconds = time.perf_counter() - started
            if prof_t:
                prof_t.__exit__(None, None, None)
            out_dir.mkdir(parents=True, exist_ok=True)
            if prof_py:
                buf = io.StringIO()
                stats = pstats.Stats(prof_py, stream=buf)
                buf.write(f"prompt {count[0]}: {seconds:.2f} s\n")
                stats.sort_stats("tottime").print_stats(45)
                stats.sort_stats("cumulative").print_stats(60)
                (out_dir / f"prompt{count[0]}-python.txt").write_text(buf.getvalue())
                prof_py.dump_stats(str(out_dir / f"prompt{count[0]}-python.prof"))  # for pstats, callers
            if prof_t:
                (out_dir / f"prompt{count[0]}-torch.txt").write_text(_torch_report(prof_t, seconds))

    execution.PromptExecutor.execute = execute


if os.environ.get("LTX2_PROFILE"):
    _install()
