"""Which graphs LTX2CudaGraphs gives a model (ltx2_worker/comfy_nodes/ltx2_cuda_graphs.py, `_graphs_for`): the
plain model's are kept across the node's runs, so a plain job after LoRA jobs finds stage 1's graph recorded;
a patched model gets its own. Plain Python (no torch): the ModelPatchers are stand-ins with ComfyUI's attribute
names; the recording itself is tested on a GPU (test_cuda_graphs_node.py)."""

from __future__ import annotations

import gc
import importlib.util
import types
from pathlib import Path

NODE = Path(__file__).resolve().parent.parent / "ltx2_worker" / "comfy_nodes" / "ltx2_cuda_graphs.py"


def load_node():
    spec = importlib.util.spec_from_file_location("ltx2_cuda_graphs_plain_under_test", NODE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class Diffusion:
    """Stands in for the nn.Module a ModelPatcher wraps (weakly referenceable, as torch modules are)."""


def patcher(model: Diffusion, **changes) -> types.SimpleNamespace:
    fields = {"patches": {}, "object_patches": {}, "injections": {}, "hook_patches": {}, "wrappers": {},
              "model_options": {"transformer_options": {}}}
    return types.SimpleNamespace(model=model, **{**fields, **changes})


def test_the_plain_models_graphs_outlive_the_nodes_runs_and_a_patched_model_gets_its_own():
    node = load_node()
    dev = Diffusion()
    plain = node._graphs_for(patcher(dev))
    assert node._graphs_for(patcher(dev)) is plain, "a plain job after LoRA jobs: the same graphs"
    for change in ({"injections": {"bypass_lora": [object()]}}, {"patches": {"w": [object()]}},
                   {"object_patches": {"m": object()}}, {"wrappers": {"apply_model": {"k": [object()]}}},
                   {"model_options": {"transformer_options": {"patches": {"attn1_patch": [object()]}}}}):
        lora = node._graphs_for(patcher(dev, **change))
        assert lora is not plain and node._graphs_for(patcher(dev, **change)) is not lora, change
    assert node._graphs_for(patcher(dev)) is plain, "still kept after the LoRA jobs"


def test_another_checkpoint_replaces_the_kept_graphs_and_a_dead_one_is_not_matched():
    node = load_node()
    dev, distilled = Diffusion(), Diffusion()
    first = node._graphs_for(patcher(dev))
    other = node._graphs_for(patcher(distilled))
    assert other is not first and len(node._PLAIN) == 1, "one model's graphs kept at most"
    again = node._graphs_for(patcher(dev))
    assert again is not first, "recorded anew after a switch"
    fresh = Diffusion()  # a new model at a dead one's id (CPython reuses ids): the weak reference tells them apart
    node._PLAIN[id(fresh)] = node._PLAIN.pop(id(dev))
    del dev
    gc.collect()
    assert node._graphs_for(patcher(fresh)) is not again
