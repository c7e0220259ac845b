"""tools/make_tiny_models.py's size planning for `--size full` (the files themselves need ComfyUI and a GPU):
stand-ins reach each real file's size from below, the first and last layers first."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tools"))
import make_tiny_models  # noqa: E402

from ltx2_worker.manifest import load_manifest  # noqa: E402
from ltx2_worker.settings import load_settings  # noqa: E402


def test_fill_to_takes_items_in_order_and_never_overshoots():
    items = [("a", 5), ("b", 7), ("c", 3), ("d", 2), ("e", 1)]
    assert make_tiny_models.fill_to(10, items) == ["a", "c", "d"]  # b would pass 10; e would too after d
    assert make_tiny_models.fill_to(0, items) == []
    assert make_tiny_models.fill_to(100, items) == ["a", "b", "c", "d", "e"]


@pytest.mark.parametrize("count, order", [(1, [0]), (4, [0, 3, 1, 2]), (5, [0, 4, 1, 3, 2])])
def test_outside_in_gives_the_first_and_last_layers_first(count, order):
    assert make_tiny_models.outside_in(count) == order


def test_block_index_reads_transformer_block_keys_only():
    assert make_tiny_models.block_index("transformer_blocks.45.attn1.to_q.weight") == 45
    assert make_tiny_models.block_index("audio_embeddings_connector.transformer_1d_blocks.0.ff.net.2.weight") is None


def test_the_stand_ins_aim_at_the_manifests_real_sizes():
    """REAL_BYTES is the manifest's where it gives a size: a new revision of a model file changes both or the test
    says so. A file whose size the manifest leaves to the hub (`unpublished`) still has a stand-in target."""
    settings = load_settings(env={"ENABLE_MODELS": "checkpoint_distilled,control_depth,control_pose"})
    manifest = {m.role: m.size for m in load_manifest(settings)}
    assert set(make_tiny_models.REAL_BYTES) == set(manifest)
    assert {r: b for r, b in make_tiny_models.REAL_BYTES.items() if manifest[r]} == {
        r: b for r, b in manifest.items() if b}
    assert [r for r, b in manifest.items() if not b] == ["depth_model", "pose_model"]
    assert make_tiny_models.BF16_BLOCKS == (0, 1, 2, 45, 46, 47)
