"""The worker's ComfyUI node LTX2CudaGraphs (ltx2_worker/comfy_nodes/ltx2_cuda_graphs.py) on a real CUDA device:
recording, replay, the check against a normal run, weights that move, host constants, and a call that cannot
be recorded. Needs torch with CUDA, so CI (no GPU) skips it; on a GPU host run it with pytest, or directly
where torch is installed but pytest is not: `python tests/test_cuda_graphs_node.py`.

The model is a small stand-in for ComfyUI's BaseModel; the executor plays ComfyUI's WrapperExecutor (called
with the model call's arguments, `class_obj` the model), which is all the wrapper touches."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

try:
    import torch
except ImportError:  # the CI venv has no torch
    torch = None

NODE = Path(__file__).resolve().parent.parent / "ltx2_worker" / "comfy_nodes" / "ltx2_cuda_graphs.py"
CUDA = torch is not None and torch.cuda.is_available()

if "pytest" in sys.modules:
    import pytest

    pytestmark = pytest.mark.skipif(not CUDA, reason="needs torch with a CUDA device")


def load_node():
    spec = importlib.util.spec_from_file_location("ltx2_cuda_graphs_under_test", NODE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class Model(torch.nn.Module if torch is not None else object):
    """Enough of a diffusion model: many small kernels, a timestep, a dict of options, a host constant."""

    def __init__(self, host_constant: bool = False, sync: bool = False):
        super().__init__()
        self.layers = torch.nn.ModuleList(torch.nn.Linear(64, 64) for _ in range(8))
        self.host_constant, self.sync = host_constant, sync
        self.calls = 0

    def forward(self, x, t, transformer_options=None, **kwargs):
        self.calls += 1
        for layer in self.layers:
            x = torch.nn.functional.gelu(layer(x)) * (1 + t.view(-1, 1))
        if self.host_constant:  # as ComfyUI's LTX-2 patchifier does on every call
            x = x * torch.tensor([0.5, 2.0], device=x.device).sum()
        if self.sync and float(x.sum()) > 1e30:  # a host sync: cannot be recorded
            x = x * 0
        return x * transformer_options["scale"]


class Executor:
    def __init__(self, model):
        self.class_obj = model

    def __call__(self, *args, **kwargs):
        return self.class_obj(*args, **kwargs)


def call(wrapper, model, seed: int, scale: float = 1.0):
    g = torch.Generator(device="cuda").manual_seed(seed)
    x = torch.randn(4, 64, device="cuda", generator=g)
    t = torch.rand(4, device="cuda", generator=g)
    options = {"scale": scale, "uuids": [object()], "sigmas": t}
    with torch.inference_mode():
        got = wrapper(Executor(model), x, t, transformer_options=options)
        expected = model(x, t, transformer_options=options)
    return got, expected


def test_the_second_call_records_and_later_calls_replay_with_the_same_results():
    node = load_node()
    model = Model().cuda()
    graphs = node._Graphs()
    for seed in range(6):
        got, expected = call(graphs, model, seed)
        torch.testing.assert_close(got, expected, rtol=0, atol=0)
    (entry,) = graphs.entries.values()
    assert isinstance(entry, tuple)  # recorded
    calls = model.calls
    call(graphs, model, 99)
    assert model.calls == calls + 1  # a replay runs no Python forward; only the comparison run counted


def test_another_option_value_is_another_graph():
    node = load_node()
    model = Model().cuda()
    graphs = node._Graphs()
    for seed in range(3):
        call(graphs, model, seed, scale=1.0)
    got, expected = call(graphs, model, 10, scale=3.0)
    torch.testing.assert_close(got, expected, rtol=0, atol=0)
    assert len(graphs.entries) == 2


def test_weights_that_move_drop_the_recorded_graphs():
    node = load_node()
    model = Model().cuda()
    graphs = node._Graphs()
    for seed in range(3):
        call(graphs, model, seed)
    with torch.no_grad():  # ComfyUI re-patching a weight: a new tensor at a new address, new values
        model.layers[0].weight = torch.nn.Parameter(model.layers[0].weight * 2)
    got, expected = call(graphs, model, 5)
    torch.testing.assert_close(got, expected, rtol=0, atol=0)
    assert list(graphs.entries.values()) == ["seen"]


def test_host_constants_are_recorded_from_pinned_memory():
    node = load_node()
    model = Model(host_constant=True).cuda()
    graphs = node._Graphs()
    original = torch.tensor
    for seed in range(4):
        got, expected = call(graphs, model, seed)
        torch.testing.assert_close(got, expected, rtol=0, atol=0)
    assert isinstance(next(iter(graphs.entries.values())), tuple)
    assert torch.tensor is original  # put back after recording


def test_a_call_that_cannot_be_recorded_runs_normally_and_leaves_cuda_usable():
    node = load_node()
    model = Model(sync=True).cuda()
    graphs = node._Graphs()
    for seed in range(4):
        got, expected = call(graphs, model, seed)
        torch.testing.assert_close(got, expected, rtol=0, atol=0)
    assert list(graphs.entries.values()) == ["eager"]
    assert float(torch.ones(3, device="cuda").sum()) == 3.0


def test_under_cuda_malloc_async_the_node_stays_off_instead_of_risking_an_abort():
    """ComfyUI's default allocator: there a failed recording aborts the process (rc 134 on an H100), so the
    node must not record at all; checked in a fresh process, as the allocator is chosen at CUDA start."""
    import os
    import subprocess

    script = (f"import sys; sys.argv = ['x']; sys.path.insert(0, {str(Path(__file__).parent)!r}); "
              "import test_cuda_graphs_node as t; node = t.load_node(); model = t.Model(sync=True).cuda(); "
              "graphs = node._Graphs(); [t.call(graphs, model, s) for s in range(4)]; "
              "print('off:', graphs.disabled_reason)")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTORCH_CUDA_ALLOC_CONF": "backend:cudaMallocAsync"})
    assert out.returncode == 0, out.stderr[-2000:]
    assert "off: PyTorch's allocator is cudaMallocAsync" in out.stdout


if __name__ == "__main__":
    if not CUDA:
        print("needs torch with a CUDA device")
        sys.exit(2)
    failed = 0
    for name, fn in list(globals().items()):
        if name.startswith("test_"):
            try:
                fn()
                print(f"PASS {name}")
            except Exception as exc:  # report every test, like pytest would
                failed += 1
                print(f"FAIL {name}: {type(exc).__name__}: {exc}")
    sys.exit(1 if failed else 0)
