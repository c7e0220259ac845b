"""The manifest's pinned revisions reach the hub: provisioning the distilled checkpoint asks the loopback hub
(tests/hf_server.py, through the real huggingface_hub URL builder) for the file at the pinned commit, not at
`main`, where a later upload under the same name would fail the pinned size and sha256."""

from __future__ import annotations

import dataclasses
import hashlib

import pytest

from ltx2_worker.manifest import load_manifest
from ltx2_worker.provision import provision
from ltx2_worker.settings import load_settings

from hf_server import HubServer, tiny_safetensors

DISTILLED_COMMIT = "db91187f2742815412d294ef5f2de6aacf9dea7c"  # ../shared/facts/models.md


def test_the_distilled_checkpoint_is_pinned_to_the_commit_that_added_it():
    models = {m.role: m for m in load_manifest(load_settings(env={"ENABLE_MODELS": "checkpoint_distilled"}))}
    distilled = models["checkpoint_distilled"]
    assert (distilled.repo, distilled.revision, distilled.path) == (
        "Lightricks/LTX-2", DISTILLED_COMMIT, "ltx-2-19b-distilled-fp8.safetensors")
    assert (distilled.size, distilled.sha256) == (
        27_127_589_812, "2be4dd61394194e44e00248773eea9a33e4d4c0d151aeea0e4ba6ed093cf8ab6")
    assert distilled.required is False
    assert {m.revision for role, m in models.items() if role != "checkpoint_distilled"} == {"main"}
    assert "checkpoint_distilled" not in {m.role for m in load_manifest(load_settings(env={}))}


def test_a_download_of_the_pinned_entry_asks_the_hub_for_that_revision(tmp_path, monkeypatch):
    env = {"ENABLE_MODELS": "checkpoint_distilled", "NETWORK_VOLUME_PATH": str(tmp_path / "volume")}
    settings = load_settings(env=env)
    real = {m.role: m for m in load_manifest(settings)}
    # the real entries (repo, revision, path) with tiny content: sizes and hashes of what the hub serves
    content = {role: tiny_safetensors(2_000, seed) for seed, role in enumerate(("checkpoint", "checkpoint_distilled"))}
    models = [dataclasses.replace(real[role], size=len(data), sha256=hashlib.sha256(data).hexdigest())
              for role, data in content.items()]
    (tmp_path / "volume").mkdir()
    with HubServer({f"{m.repo}/{m.path}": content[m.role] for m in models}) as hub:
        import huggingface_hub.constants as hfc

        monkeypatch.setattr(hfc, "ENDPOINT", hub.url)
        monkeypatch.setattr(hfc, "HUGGINGFACE_CO_URL_TEMPLATE", hub.url + "/{repo_id}/resolve/{revision}/{filename}")
        provision(settings, models)
    asked = {r["path"] for r in hub.requests if "/resolve/" in r["path"]}  # not the client's own API calls
    assert asked == {f"/Lightricks/LTX-2/resolve/{DISTILLED_COMMIT}/ltx-2-19b-distilled-fp8.safetensors",
                     "/Lightricks/LTX-2/resolve/main/ltx-2-19b-dev-fp8.safetensors"}
    for m in models:
        assert m.target(settings.volume_path).read_bytes() == content[m.role]


@pytest.mark.parametrize("role", ["checkpoint", "text_encoder", "lora", "upscaler"])
def test_every_unpinned_entry_says_why_beside_it(role):
    from ltx2_worker.settings import DEFAULT_CONFIG

    section = DEFAULT_CONFIG.read_text().split(f"[model.{role}]\n", 1)[1].split("\n[", 1)[0]
    assert "revision = main" in section and "no commit is recorded" in section
