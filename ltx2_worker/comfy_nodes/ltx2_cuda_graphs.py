# SPDX-License-Identifier: GPL-3.0-or-later (LICENSE; README, "Licence": loaded into ComfyUI, GPL-3.0)
"""ComfyUI custom node `LTX2CudaGraphs` (loaded by ComfyUI, not by the worker: launch adds this folder to
ComfyUI's `custom_nodes` search path): replays the diffusion model's forward pass as a CUDA graph.

Why: a step of LTX-2 launches 1,344 FP8 linears (each quantises its input and calls `_scaled_mm`) and their
neighbours one by one from Python, and part of that launching shows in the step time; a CUDA graph launches the
whole recorded forward pass at once. Measured on an H100 (docs/performance.md): stage 1 9.7 -> 8.0 s, after which
the GPU itself is the limit (100 % busy at its power cap); stage 2's three large steps gained nothing.

How, per model call (ComfyUI's APPLY_MODEL wrapper, the hook its own TorchCompileModel node uses):
- the call's structure (tensor shapes/dtypes/devices, plain values, small host tensors' values) is its key;
- the first call of a key runs normally; the second records the graph (into static copies of the inputs),
  replays it and checks the result against a normal run: a mismatch turns graphs off for that key, so a graph
  never changes the video; later calls copy their inputs in and replay;
- weights that moved (ComfyUI unloaded or re-patched the model: their addresses changed) drop every recorded
  graph, so a stale graph never runs;
- at most MAX_KEYS graphs are kept per model (least recently used dropped); a model not on a CUDA device, or
  a call that cannot be recorded, simply runs normally;
- the plain model's graphs (no LoRA, no patch of any kind) outlive this node's outputs: a job with LoRAs runs
  the node again on another model, and the next plain job runs it again on the plain one, which used to
  record stage 1's graph anew (3-4 s on the GPU host); it now finds the graphs it recorded before, still
  checked against moved weights. A model with LoRAs gets graphs of its own, dropped with it; while it runs,
  the plain model's graphs keep their memory pool beside its own (each model's graphs have a pool of their
  own: a model's cached tensors made while recording can never be overwritten by another model's replay).
Only under PyTorch's own allocator (ComfyUI's `--disable-cuda-malloc`): under cudaMallocAsync, ComfyUI's
default, a recording that fails aborts the whole process (measured on an H100, torch 2.11); the node then stays
off and says so once. Self-contained on purpose: it runs inside ComfyUI's Python, which need not have the
worker's packages.
"""

from __future__ import annotations

import contextlib
import logging
import weakref

log = logging.getLogger("ltx2_cuda_graphs")

WRAPPER_KEY = "ltx2_cuda_graphs"
MAX_KEYS = 6  # call structures kept per model (stage 1's batch, stage 2, other sizes); the oldest goes first
CHECK_RTOL = 1e-3  # graph vs. normal run: max |difference| over max |output|


class _Ineligible(Exception):
    """A call this wrapper leaves alone."""


def _key(value, tensors: list):
    """A hashable description of `value`'s structure; its GPU tensors are appended to `tensors` in order (a graph
    reads them from static copies). A small CPU tensor (a schedule) is described by its values: a graph would
    bake them in, so other values must be another key."""
    import torch

    if isinstance(value, torch.Tensor):
        if value.device.type == "cuda":
            tensors.append(value)
            return ("T", tuple(value.shape), str(value.dtype), str(value.device))
        if value.numel() > 256:
            raise _Ineligible(f"a {tuple(value.shape)} tensor on {value.device}")
        return ("C", tuple(value.shape), str(value.dtype), tuple(value.flatten().tolist()))
    if isinstance(value, dict):
        return ("D", tuple((k, _key(v, tensors)) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))))
    if isinstance(value, (list, tuple)):
        return ("L", tuple(_key(v, tensors) for v in value))
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    # options objects (uuids, patch holders): their identity changes per sampling run, not the computation
    return ("O", type(value).__name__)


def _rebuild(value, tensors):
    """`value` with its tensors replaced, in `_key`'s order, by the next items of the iterator `tensors`."""
    import torch

    if isinstance(value, torch.Tensor):
        return next(tensors) if value.device.type == "cuda" else value
    if isinstance(value, dict):
        return {k: _rebuild(v, tensors) for k, v in value.items()}
    if isinstance(value, list):
        return [_rebuild(v, tensors) for v in value]
    if isinstance(value, tuple):
        return tuple(_rebuild(v, tensors) for v in value)
    return value


def _weight_addresses(model) -> tuple:
    """Where the model's weights live: a graph reads those addresses, so it is only valid while they hold."""
    out = []
    for tensor in list(model.parameters()) + list(model.buffers()):
        qdata = getattr(tensor, "_qdata", None)  # ComfyUI's quantised weights keep their bytes in _qdata
        try:
            out.append((qdata if qdata is not None else tensor).data_ptr())
        except RuntimeError:
            out.append(id(tensor))
    return tuple(out)


class _Graphs:
    """The recorded graphs of one model (one ComfyUI MODEL output of this node, or the plain model's: see
    _graphs_for)."""

    def __init__(self):
        self.entries: dict = {}  # key -> "seen" | "eager" | (graph, static inputs, static output, host constants)
        self.pool = None
        self.weights: tuple | None = None
        self.disabled_reason: str | None = None

    def __call__(self, executor, *args, **kwargs):
        import torch

        if self.disabled_reason is not None:
            return executor(*args, **kwargs)
        tensors: list = []
        try:
            key = _key((args, kwargs), tensors)
        except _Ineligible:
            return executor(*args, **kwargs)
        except Exception as exc:  # an argument this wrapper does not understand: leave the model alone
            return self._disable(f"cannot describe the call ({exc})", executor, args, kwargs)
        if not tensors or torch.cuda.is_current_stream_capturing():
            return executor(*args, **kwargs)
        if torch.cuda.get_allocator_backend() != "native":  # ComfyUI's default cudaMallocAsync: see module doc
            return self._disable("PyTorch's allocator is cudaMallocAsync (start ComfyUI with --disable-cuda-malloc)",
                                 executor, args, kwargs)
        weights = _weight_addresses(executor.class_obj)
        if weights != self.weights:  # first call, or ComfyUI moved / re-patched the weights: old graphs are stale
            if self.entries:
                log.info("LTX2CudaGraphs: the model's weights moved; dropping %d recorded graph(s)", len(self.entries))
            self.entries, self.pool, self.weights = {}, None, weights
        entry = self.entries.pop(key, None)
        if entry is not None:
            self.entries[key] = entry  # most recently used last
        else:
            while len(self.entries) >= MAX_KEYS:
                del self.entries[next(iter(self.entries))]
            self.entries[key] = "seen"  # the first call also warms up (cuBLAS handles, lazy kernels)
            return executor(*args, **kwargs)
        if entry == "eager":
            return executor(*args, **kwargs)
        if entry == "seen":
            return self._record(key, executor, args, kwargs, tensors)
        graph, static_in, static_out, _pinned = entry
        with torch.no_grad():
            for dst, src in zip(static_in, tensors, strict=True):
                dst.copy_(src)
        graph.replay()
        return static_out.clone()

    def _record(self, key, executor, args, kwargs, tensors):
        import torch

        static_in = [t.clone() for t in tensors]
        s_args, s_kwargs = _rebuild((args, kwargs), iter(static_in))
        if self.pool is None:
            self.pool = torch.cuda.graph_pool_handle()
        graph = torch.cuda.CUDAGraph()
        pinned: list = []
        try:
            torch.cuda.synchronize()
            with _pinned_constants(pinned), torch.cuda.graph(graph, pool=self.pool, capture_error_mode="thread_local"):
                static_out = executor(*s_args, **s_kwargs)
            graph.replay()
        except Exception as exc:  # something in the forward pass cannot be recorded (a host sync, an allocation)
            torch.cuda.synchronize()
            self.entries[key] = "eager"
            log.warning("LTX2CudaGraphs: cannot record this model call (%s: %s); it runs without a graph",
                        type(exc).__name__, str(exc)[:300])
            return executor(*args, **kwargs)
        expected = executor(*args, **kwargs)
        if not isinstance(static_out, torch.Tensor) or not _close(static_out, expected):
            self.entries[key] = "eager"
            log.warning("LTX2CudaGraphs: the recorded graph's result differs from a normal run; this call "
                        "shape runs without a graph")
            return expected
        self.entries[key] = (graph, static_in, static_out, pinned)
        log.info("LTX2CudaGraphs: recorded a graph for input %s", tuple(tensors[0].shape))
        return expected

    def _disable(self, reason, executor, args, kwargs):
        self.disabled_reason = reason
        self.entries, self.pool = {}, None
        log.warning("LTX2CudaGraphs: off for this model: %s", reason)
        return executor(*args, **kwargs)


_PLAIN: dict = {}  # id(model.model) -> (a weak reference to it, its plain _Graphs); one model at most


def _is_plain(model) -> bool:
    """No LoRA, wrapper or other patch on this ModelPatcher: its forward is the checkpoint's own."""
    options = getattr(model, "model_options", {}).get("transformer_options", {})
    return not any((getattr(model, "patches", None), getattr(model, "object_patches", None),
                    getattr(model, "injections", None), getattr(model, "hook_patches", None),
                    getattr(model, "wrappers", None), options.get("patches"), options.get("patches_replace"),
                    options.get("wrappers")))


def _graphs_for(model) -> _Graphs:
    """The plain model's kept graphs (made once per model; another model, as at a switch to distilled mode,
    replaces them), or new graphs for a patched model."""
    if not _is_plain(model):
        return _Graphs()
    kept = _PLAIN.get(id(model.model))
    if kept is not None and kept[0]() is model.model:
        return kept[1]
    _PLAIN.clear()
    graphs = _Graphs()
    _PLAIN[id(model.model)] = (weakref.ref(model.model), graphs)
    return graphs


@contextlib.contextmanager
def _pinned_constants(keep: list):
    """While recording: `torch.tensor(values, device="cuda")` (ComfyUI's LTX-2 patchifier builds its scale
    factors that way on every call) is made from pinned host memory, the only host copy a graph may record; the
    graph then copies those same constant values at every replay, and `keep` holds the host memory alive."""
    import torch

    original = torch.tensor

    def tensor(data, *args, device=None, **kwargs):
        if device is None or torch.device(device).type != "cuda":
            return original(data, *args, device=device, **kwargs)
        host = original(data, *args, **kwargs).pin_memory()
        keep.append(host)
        return host.to(device, non_blocking=True)

    torch.tensor = tensor
    try:
        yield
    finally:
        torch.tensor = original


def _close(a, b) -> bool:
    import torch

    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    scale = b.abs().max().float().clamp_min(1e-6)
    return bool(((a.float() - b.float()).abs().max() / scale) <= CHECK_RTOL) and bool(torch.isfinite(a).all())


class LTX2CudaGraphs:
    """MODEL -> the same model, its forward passes replayed as CUDA graphs where that gives the same result."""

    CATEGORY = "advanced/model"
    RETURN_TYPES = ("MODEL",)
    FUNCTION = "apply"
    DESCRIPTION = __doc__.splitlines()[0]

    @classmethod
    def INPUT_TYPES(cls):  # noqa: N802 (ComfyUI's name)
        return {"required": {"model": ("MODEL",), "enabled": ("BOOLEAN", {"default": True})}}

    def apply(self, model, enabled=True):
        import torch
        from comfy.patcher_extension import WrappersMP

        if not enabled or not torch.cuda.is_available():
            return (model,)
        graphs = _graphs_for(model)
        patched = model.clone()
        patched.remove_wrappers_with_key(WrappersMP.APPLY_MODEL, WRAPPER_KEY)
        patched.add_wrapper_with_key(WrappersMP.APPLY_MODEL, WRAPPER_KEY, graphs)
        return (patched,)


NODE_CLASS_MAPPINGS = {"LTX2CudaGraphs": LTX2CudaGraphs}
NODE_DISPLAY_NAME_MAPPINGS = {"LTX2CudaGraphs": "LTX-2 CUDA graphs (worker)"}
