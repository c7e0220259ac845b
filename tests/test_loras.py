"""Per-request LoRAs: the fit check on safetensors headers, the shared cache on the volume fed over real TLS
from loopback sites (the test's DNS makes 127.0.0.1 "public", as in test_image_url.py), and jobs end to end
against the protocol ComfyUI, whose LoRA loader offers the files of the cache folder as a real one does."""

from __future__ import annotations

import hashlib
import ipaddress
import os
import socket
import threading
import time

import numpy as np
import pytest
from safetensors.numpy import save_file

from ltx2_worker import https_fetch
from ltx2_worker.gpu import Gpu, choose_profile
from ltx2_worker.job import InputError, LoraSpec
from ltx2_worker.lora_cache import LoraCache, cache_key
from ltx2_worker.lora_check import LoraRefused, check_lora, header, transformer_layers
from ltx2_worker.worker import Worker

from comfy_server import ProtocolComfy
from helpers import decode_video_field, loopback_settings
from https_site import Site, certificates

PUBLIC = "127.0.0.1"
# a few of LTX-2's layer names, at small shapes: the check compares against whatever the checkpoint holds
LAYERS = {"transformer_blocks.0.attn1.to_q.weight": (64, 32), "transformer_blocks.0.ff.net.0.proj.weight": (128, 32),
          "audio_transformer_blocks.0.attn1.to_k.weight": (16, 16), "transformer_blocks.0.attn1.to_q.bias": (64,)}
CHECKPOINT = "ltx-2-19b-dev-fp8.safetensors"
DISTILLED_LORA = "ltx-2-19b-distilled-lora-384.safetensors"  # stage 2's, in standard mode


def _lora(path, rank=4, layers=("transformer_blocks.0.attn1.to_q", "transformer_blocks.0.ff.net.0.proj"),
          prefix="diffusion_model.", pair=(".lora_A.weight", ".lora_B.weight"), dtype=np.float16, extra=None):
    tensors = {}
    for layer in layers:
        out_dim, in_dim = LAYERS[f"{layer}.weight"]
        tensors[f"{prefix}{layer}{pair[0]}"] = np.full((rank, in_dim), 0.01, dtype)
        tensors[f"{prefix}{layer}{pair[1]}"] = np.full((out_dim, rank), 0.01, dtype)
    tensors.update(extra or {})
    save_file(tensors, str(path))
    return path.read_bytes()


def _checkpoint(volume):
    path = volume / "models" / "checkpoints" / CHECKPOINT
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {f"model.diffusion_model.{k}": np.zeros(v, np.float16) for k, v in LAYERS.items()}
    tensors["vae.decoder.conv_in.weight"] = np.zeros((4, 4), np.float16)
    save_file(tensors, str(path))
    return path


# -- the fit check ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("prefix,pair", [
    ("diffusion_model.", (".lora_A.weight", ".lora_B.weight")),  # the LTX-2 trainer's and the distilled LoRA's
    ("", (".lora_down.weight", ".lora_up.weight")),  # bare layer names, which ComfyUI maps for LTX-2 only
])
def test_a_lora_for_ltx2_fits(tmp_path, prefix, pair):
    _lora(tmp_path / "a.safetensors", prefix=prefix, pair=pair)
    assert check_lora(header(tmp_path / "a.safetensors"), LAYERS) == 2


def test_kohya_names_and_alphas_fit(tmp_path):
    path = tmp_path / "k.safetensors"
    save_file({"lora_unet_transformer_blocks_0_attn1_to_q.lora_down.weight": np.zeros((8, 32), np.float32),
               "lora_unet_transformer_blocks_0_attn1_to_q.lora_up.weight": np.zeros((64, 8), np.float32),
               "lora_unet_transformer_blocks_0_attn1_to_q.alpha": np.array(8.0, np.float32)}, str(path))
    assert check_lora(header(path), LAYERS) == 1


@pytest.mark.parametrize("tensors,message", [
    ({"double_blocks.0.img_attn.qkv.lora_A.weight": (4, 3072)}, "is a LoRA for FLUX, not LTX-2 19B"),
    ({"diffusion_model.blocks.0.self_attn.q.lora_A.weight": (4, 5120)}, "is a LoRA for Wan 2.x"),
    ({"lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight": (4, 320)}, "Stable Diffusion 1.x/2.x/XL"),
    ({"diffusion_model.transformer_blocks.0.attn9.to_q.lora_A.weight": (4, 32)},
     "does not fit LTX-2 19B: key 'diffusion_model.transformer_blocks.0.attn9.to_q.lora_A.weight'"),
    ({"transformer.transformer_blocks.0.attn1.to_q.lora_A.weight": (4, 32)}, "does not fit LTX-2 19B"),
    ({"diffusion_model.transformer_blocks.0.attn1.to_q.bias.lora_A.weight": (4, 32)}, "does not fit"),
    ({"diffusion_model.transformer_blocks.0.attn1.to_q.lora_A.weight": (4, 2048),
      "diffusion_model.transformer_blocks.0.attn1.to_q.lora_B.weight": (64, 4)},
     "layer 'transformer_blocks.0.attn1.to_q': the LoRA's matrices are 64 x 4 and 4 x 2048, but LTX-2 19B's layer "
     "is 64 x 32"),
    ({"diffusion_model.transformer_blocks.0.attn1.to_q.lora_A.weight": (4, 32)}, "has only the down half"),
    ({"diffusion_model.transformer_blocks.0.attn1.to_q.alpha": (2,)}, "an alpha is one number"),
    ({}, "holds no tensors"),
])
def test_a_lora_that_does_not_fit_is_refused_naming_why(tensors, message):
    with pytest.raises(LoraRefused) as info:
        check_lora({k: ("F16", v) for k, v in tensors.items()}, LAYERS)
    assert message in str(info.value)


def test_integer_tensors_are_refused(tmp_path):
    _lora(tmp_path / "i.safetensors", dtype=np.int8)
    with pytest.raises(LoraRefused, match="is I8; LoRA tensors must be F16, BF16 or F32"):
        check_lora(header(tmp_path / "i.safetensors"), LAYERS)


@pytest.mark.parametrize("content", [
    b"\x80\x04\x95\x10\x00\x00\x00\x00\x00\x00\x00}\x94.",  # a pickle
    b"PK\x03\x04" + b"\x00" * 100,  # a torch .pt / .ckpt (zip)
    b"version https://git-lfs.github.com/spec/v1\noid sha256:00\nsize 1\n",  # an LFS pointer
])
def test_a_file_that_is_not_safetensors_is_refused_unread(tmp_path, content):
    (tmp_path / "x.safetensors").write_bytes(content)
    with pytest.raises(LoraRefused, match="is not a valid safetensors file .* can run code"):
        header(tmp_path / "x.safetensors")


def test_trailing_bytes_are_refused(tmp_path):
    data = _lora(tmp_path / "t.safetensors")
    (tmp_path / "t.safetensors").write_bytes(data + b"\x00" * 16)
    with pytest.raises(LoraRefused, match="not a valid safetensors file"):
        header(tmp_path / "t.safetensors")


def test_the_layers_are_read_from_the_checkpoint_header(tmp_path):
    assert transformer_layers(_checkpoint(tmp_path)) == LAYERS


# -- the cache, over TLS -----------------------------------------------------------------------------------

@pytest.fixture
def web(tmp_path, monkeypatch):
    """One site on 127.0.0.1 for loras.example, hub.example (HF_ENDPOINT) and cdn.example; the test's DNS."""
    paths = certificates(tmp_path, ["loras.example", "hub.example", "cdn.example"])
    with socket.socket() as s:
        s.bind((PUBLIC, 0))
        port = s.getsockname()[1]
    routes = {}
    site = Site(PUBLIC, port, paths, routes)
    real = socket.getaddrinfo
    names = ("loras.example", "hub.example", "cdn.example")
    monkeypatch.setattr(socket, "getaddrinfo", lambda host, *a, **k: real(PUBLIC if host in names else host, *a, **k))
    monkeypatch.setattr(https_fetch, "_address_allowed", lambda a: a == ipaddress.ip_address(PUBLIC))
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(paths["ca"]))
    monkeypatch.setenv("HF_ENDPOINT", f"https://hub.example:{port}")
    yield {"port": port, "site": site, "routes": routes, "base": f"https://loras.example:{port}"}
    site.close()


def _settings(tmp_path, **extra):
    volume = tmp_path / "vol"
    _checkpoint(volume)
    return loopback_settings("http://127.0.0.1:9", tmp_path / "out", tmp_path, NETWORK_VOLUME_PATH=str(volume),
                             MODEL_CACHE_PATH="", **extra)


def _cache(settings):
    return LoraCache(settings, lambda: LAYERS)


def test_a_lora_is_downloaded_once_checked_and_kept_by_url(tmp_path, web):
    data = _lora(tmp_path / "style.safetensors")
    web["routes"]["/style.safetensors"] = data
    cache = _cache(_settings(tmp_path))
    url = f"{web['base']}/style.safetensors"
    first = cache.get(LoraSpec("loras[0].url", url, 1.0), time.monotonic() + 30)
    again = cache.get(LoraSpec("loras[0].url", url, 0.5), time.monotonic() + 30)
    assert first == again and first.sha256 == hashlib.sha256(data).hexdigest() and first.size == len(data)
    assert web["site"].hits == ["/style.safetensors"], "the second job reads the cache"
    folder = cache.folder
    assert (folder / first.name).read_bytes() == data and first.name == f"{cache_key(url)}.safetensors"
    assert sorted(p.name for p in folder.iterdir()) == sorted([first.name, f"{cache_key(url)}.json"])


@pytest.mark.parametrize("content,message", [
    ("flux", "loras[0].url: is a LoRA for FLUX, not LTX-2 19B"),
    ("pickle", "loras[0].url: is not a valid safetensors file"),
])
def test_a_refused_file_leaves_nothing_in_the_cache(tmp_path, web, content, message):
    if content == "flux":
        save_file({"double_blocks.0.img_attn.qkv.lora_A.weight": np.zeros((4, 8), np.float16)},
                  str(tmp_path / "f.safetensors"))
        web["routes"]["/x.safetensors"] = (tmp_path / "f.safetensors").read_bytes()
    else:
        web["routes"]["/x.safetensors"] = b"\x80\x04\x95" + b"\x00" * 64
    cache = _cache(_settings(tmp_path))
    with pytest.raises(InputError) as info:
        cache.get(LoraSpec("loras[0].url", f"{web['base']}/x.safetensors", 1.0), time.monotonic() + 30)
    assert str(info.value).startswith(message)
    assert list(cache.folder.iterdir()) == [], "no file, no .part, no record, no lock"


def test_size_cap_and_http_errors_name_the_field(tmp_path, web):
    web["routes"]["/big.safetensors"] = _lora(tmp_path / "b.safetensors", rank=64)
    cache = _cache(_settings(tmp_path).replace(max_lora_mb=0.01))  # below the setting's range: a small file here
    with pytest.raises(InputError, match=r"^loras\[2\]\.url: must be at most 0.01 MB"):
        cache.get(LoraSpec("loras[2].url", f"{web['base']}/big.safetensors", 1.0), time.monotonic() + 30)
    with pytest.raises(InputError, match=r"^loras\[0\]\.url: URL answered HTTP 404"):
        cache.get(LoraSpec("loras[0].url", f"{web['base']}/missing.safetensors", 1.0), time.monotonic() + 30)
    assert list(cache.folder.iterdir()) == []


def test_the_hub_token_goes_to_the_hub_only_not_along_its_redirect(tmp_path, web, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_SECRET")
    port = web["port"]
    web["routes"]["/org/repo/resolve/main/a.safetensors"] = f"https://cdn.example:{port}/blob/a"
    web["routes"]["/blob/a"] = _lora(tmp_path / "a.safetensors")
    cache = _cache(_settings(tmp_path))
    cache.get(LoraSpec("loras[0].url", f"https://hub.example:{port}/org/repo/resolve/main/a.safetensors", 1.0),
              time.monotonic() + 30)
    hub, cdn = web["site"].headers
    assert hub.get("Authorization") == "Bearer hf_SECRET" and "Authorization" not in cdn


def test_workers_downloading_the_same_lora_at_once_fetch_it_once(tmp_path, web):
    web["routes"]["/s.safetensors"] = _lora(tmp_path / "s.safetensors", rank=64)
    settings = _settings(tmp_path)
    results, errors = [], []

    def get():
        try:  # one LoraCache per "worker", as two processes would have
            results.append(_cache(settings).get(LoraSpec("loras[0].url", f"{web['base']}/s.safetensors", 1.0),
                                                time.monotonic() + 30))
        except Exception as exc:  # noqa: BLE001 (reported below)
            errors.append(exc)

    threads = [threading.Thread(target=get) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert errors == [] and len(results) == 4 and len(set(results)) == 1
    assert web["site"].hits == ["/s.safetensors"]


def test_the_least_recently_used_loras_go_but_not_recently_used_ones(tmp_path, web):
    settings = _settings(tmp_path, LORA_CACHE_GB="0.1", JOB_TIMEOUT_S="60")
    cache = _cache(settings)
    specs = []
    for n in range(3):
        web["routes"][f"/{n}.safetensors"] = _lora(tmp_path / f"{n}.safetensors", rank=8 + n)
        specs.append(LoraSpec("loras[0].url", f"{web['base']}/{n}.safetensors", 1.0))
    names = [cache.get(spec, time.monotonic() + 30).name for spec in specs[:2]]
    old = time.time() - 3600
    for name, age in zip(names, (2, 1), strict=True):  # 0 used longest ago, 1 after it, both before the timeout
        os.utime(cache.folder / name, (old - age, old - age))
    cache.settings = settings.replace(lora_cache_gb=1.5 * sum((cache.folder / n).stat().st_size for n in names) / 1e9)
    third = cache.get(specs[2], time.monotonic() + 30).name
    assert sorted(p.name for p in cache.folder.glob("*.safetensors")) == sorted([names[1], third])
    assert not (cache.folder / f"{names[0][:-len('.safetensors')]}.json").exists()
    # a file used within JOB_TIMEOUT_S stays, even over the limit; the old one goes
    cache.settings = settings.replace(lora_cache_gb=1e-9)
    first_again = cache.get(specs[0], time.monotonic() + 30).name
    assert sorted(p.name for p in cache.folder.glob("*.safetensors")) == sorted([third, first_again])


# -- jobs end to end ------------------------------------------------------------------------------------------

SMALL = {"prompt": "a lighthouse at dusk", "width": 512, "height": 288, "frame_count": 9, "seed": 1}


def lora_comfy(tmp_path, worker_nodes: bool = True, model_dirs: dict | None = None, **env: str):
    """(settings, a started protocol ComfyUI) whose `loras` folder is the settings' LoRA cache, with
    `model_dirs` (folder -> paths) listed too; `env` as _settings takes it."""
    comfy_dir = tmp_path / "comfyui"
    settings = _settings(tmp_path, COMFYUI_DIR=str(comfy_dir), COMFY_OUTPUT_DIR=str(comfy_dir / "output"), **env)
    comfy = ProtocolComfy(output_dir=comfy_dir / "output", input_dir=comfy_dir / "input", worker_nodes=worker_nodes,
                          model_dirs={"loras": [settings.lora_cache_dir], **(model_dirs or {})}).start()
    return settings.replace(comfy_url=comfy.url), comfy


@pytest.fixture
def stack(tmp_path, web):
    settings, comfy = lora_comfy(tmp_path)
    yield comfy, Worker(settings), web
    comfy.stop()


def test_a_job_with_loras_applies_them_to_both_stages_and_says_which(tmp_path, stack, caplog):
    caplog.set_level("INFO")  # handler.py's level
    comfy, worker, web = stack
    web["routes"]["/style.safetensors"] = _lora(tmp_path / "style.safetensors")
    web["routes"]["/camera.safetensors?token=abc"] = _lora(tmp_path / "camera.safetensors", layers=(
        "transformer_blocks.0.attn1.to_q", "audio_transformer_blocks.0.attn1.to_k"))
    loras = [{"url": f"{web['base']}/style.safetensors", "strength": 0.8},
             {"url": f"{web['base']}/camera.safetensors?token=abc", "strength": -0.3}]
    out = worker.handle({"id": "l", "input": {**SMALL, "loras": loras}})
    assert "error" not in out, out
    assert decode_video_field(out)["frames"] == 9
    assert out["loras"] == [{"url": loras[0]["url"], "sha256": hashlib.sha256(
        web["routes"]["/style.safetensors"]).hexdigest(), "strength": 0.8},
        {"url": loras[1]["url"], "sha256": hashlib.sha256(web["routes"]["/camera.safetensors?token=abc"]).hexdigest(),
         "strength": -0.3}]
    graph = comfy.submitted[-1]["prompt"]
    user = {nid: n for nid, n in graph.items() if nid.startswith("ltx2:user_lora_")}
    assert [n["inputs"]["strength_model"] for n in user.values()] == [0.8, -0.3]
    names = [n["inputs"]["lora_name"] for n in user.values()]
    stage1, stage2 = comfy.sampled[-2:]  # this ComfyUI's CPU class merges them: all of them, in both stages
    assert stage1[1]["merged"] == ((names[0], 0.8), (names[1], -0.3)) and "bypass" not in stage1[1]
    assert stage2[1]["merged"] == ((names[0], 0.8), (names[1], -0.3), (DISTILLED_LORA, 1.0))
    last = ["ltx2:user_lora_1", 0]
    assert graph["ltx2:user_lora_1"]["inputs"]["model"] == ["ltx2:user_lora_0", 0]
    lora_node = next(nid for nid, n in graph.items() if n["_meta"]["title"] == "lora")
    stage1 = next(n for n in graph.values() if n["_meta"]["title"] == "guider_stage1")
    assert stage1["inputs"]["model"] == last and graph[lora_node]["inputs"]["model"] == last
    assert "timings" in out and out["timings"]["loras"] >= 0
    assert "camera.safetensors" in caplog.text and "token=abc" not in caplog.text, "no URL query in the log"
    hits = list(web["site"].hits)
    again = worker.handle({"id": "l2", "input": {**SMALL, "loras": loras[:1]}})
    assert "error" not in again and web["site"].hits == hits, "a cached LoRA is not downloaded again"


@pytest.mark.parametrize("worker_nodes", [True, False])
def test_every_lora_of_a_job_runs_in_both_stages_on_the_gpu_classes(tmp_path, web, worker_nodes):
    """ComfyUI's own bypass node keeps only the last bypass LoRA of a chain (the server models its
    set_injections): on the 80 GB class the request's LoRAs and stage 2's distilled LoRA run through the
    worker's stacking LTX2LoraBypass, and under a ComfyUI without it the request's LoRAs are merged, so no
    LoRA is lost either way."""
    settings, comfy = lora_comfy(tmp_path, worker_nodes=worker_nodes)
    try:
        worker = Worker(settings, profile=choose_profile(Gpu("H100 80GB HBM3", 79.6, 9.0)))
        for name in ("a", "b"):
            web["routes"][f"/{name}.safetensors"] = _lora(tmp_path / f"{name}.safetensors")
        loras = [{"url": f"{web['base']}/a.safetensors", "strength": 0.8},
                 {"url": f"{web['base']}/b.safetensors", "strength": 0.5}]
        out = worker.handle({"id": "two", "input": {**SMALL, "loras": loras}})
        assert "error" not in out, out
        graph = comfy.submitted[-1]["prompt"]
        a, b = (graph[f"ltx2:user_lora_{n}"]["inputs"]["lora_name"] for n in (0, 1))
        stage1, stage2 = (model for _, model in comfy.sampled[-2:])
        if worker_nodes:
            assert stage1.get("bypass") == ((a, 0.8), (b, 0.5)) and "merged" not in stage1
            assert stage2.get("bypass") == ((a, 0.8), (b, 0.5), (DISTILLED_LORA, 1.0))
        else:
            assert stage1.get("merged") == ((a, 0.8), (b, 0.5)) and "bypass" not in stage1
            assert stage2.get("merged") == ((a, 0.8), (b, 0.5)) and stage2.get("bypass") == ((DISTILLED_LORA, 1.0),)
    finally:
        comfy.stop()


def test_a_bad_lora_is_answered_before_comfyui_is_asked(tmp_path, stack):
    comfy, worker, web = stack
    save_file({"double_blocks.0.img_attn.qkv.lora_A.weight": np.zeros((4, 8), np.float16)},
              str(tmp_path / "f.safetensors"))
    web["routes"]["/flux.safetensors"] = (tmp_path / "f.safetensors").read_bytes()
    comfy.stop()  # a ComfyUI that is down: the LoRA's error still comes at once
    started = time.monotonic()
    out = worker.handle({"id": "f", "input": {**SMALL, "loras": [{"url": f"{web['base']}/nope.safetensors"},
                                                                 {"url": f"{web['base']}/flux.safetensors"}]}})
    assert out == {"error": "loras[0].url: URL answered HTTP 404"}
    out = worker.handle({"id": "f", "input": {**SMALL, "loras": [{"url": f"{web['base']}/flux.safetensors"}]}})
    assert out["error"].startswith("loras[0].url: is a LoRA for FLUX, not LTX-2 19B")
    assert time.monotonic() - started < 5 and comfy.submitted == []


def test_a_cache_folder_that_cannot_be_made_is_a_clear_error_naming_the_setting(tmp_path, stack):
    comfy, worker, web = stack
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the cache folder would go")
    worker.loras = LoraCache(worker.settings.replace(lora_cache_dir_setting=blocker / "loras"), lambda: LAYERS)
    web["routes"]["/style.safetensors"] = _lora(tmp_path / "style.safetensors")
    out = worker.handle({"id": "c", "input": {**SMALL, "loras": [{"url": f"{web['base']}/style.safetensors"}]}})
    assert set(out) == {"error"} and "LORA_CACHE_DIR" in out["error"] and str(blocker) in out["error"], out
    assert "internal error" not in out["error"] and comfy.submitted == [] and web["site"].hits == []



def test_a_camera_move_fetches_lightricks_lora_from_the_hub_once_outside_max_loras(tmp_path, stack):
    """camera_motion: the move's file from its Lightricks repo on HF_ENDPOINT's hub, through the LoRA cache (its
    checks, its sha256), applied after the request's LoRAs; MAX_LORAS counts only the request's."""
    comfy, worker, web = stack
    worker.settings = worker.settings.replace(max_loras=1)
    cam = "/Lightricks/LTX-2-19b-LoRA-Camera-Control-Dolly-In/resolve/main/ltx-2-19b-lora-camera-control-dolly-in" \
          ".safetensors"
    web["routes"][cam] = _lora(tmp_path / "cam.safetensors")
    web["routes"]["/style.safetensors"] = _lora(tmp_path / "style.safetensors")
    job = {**SMALL, "loras": [{"url": f"{web['base']}/style.safetensors"}], "camera_motion": "dolly_in",
           "camera_strength": 0.8}
    out = worker.handle({"id": "cam", "input": job})
    assert "error" not in out, out
    assert out["camera_motion"] == {"move": "dolly_in", "strength": 0.8,
                                    "sha256": hashlib.sha256(web["routes"][cam]).hexdigest()}
    assert [lora["url"] for lora in out["loras"]] == [f"{web['base']}/style.safetensors"]
    graph = comfy.submitted[-1]["prompt"]
    assert graph["ltx2:user_lora_1"]["inputs"]["strength_model"] == 0.8
    hits = list(web["site"].hits)
    assert cam in hits
    again = worker.handle({"id": "cam2", "input": {**SMALL, "camera_motion": "dolly_in"}})
    assert "error" not in again and web["site"].hits == hits, "the move's LoRA is cached"
    missing = worker.handle({"id": "cam3", "input": {**SMALL, "camera_motion": "static"}})
    assert missing["error"].startswith("camera_motion: URL answered HTTP 404"), missing


def test_enable_models_fetches_camera_moves_at_boot_so_no_job_waits_for_them(tmp_path, web, caplog):
    from ltx2_worker.camera import camera_lora, enabled_moves, fetch_enabled
    from ltx2_worker.manifest import enabled_roles
    from ltx2_worker.settings import SettingsError

    dolly = "/Lightricks/LTX-2-19b-LoRA-Camera-Control-Dolly-Out/resolve/main/ltx-2-19b-lora-camera-control-dolly-out" \
            ".safetensors"
    web["routes"][dolly] = _lora(tmp_path / "dolly-out.safetensors")
    settings = _settings(tmp_path, ENABLE_MODELS="checkpoint_distilled, camera_dolly_out, camera_jib_up")
    assert enabled_roles(settings) == {"checkpoint_distilled"}, "camera moves are no manifest roles"
    assert enabled_moves(settings) == ["dolly_out", "jib_up"]
    assert enabled_moves(settings.replace(enable_models="camera_all")) == [
        "dolly_in", "dolly_out", "dolly_left", "dolly_right", "jib_up", "jib_down", "static"]
    with pytest.raises(SettingsError, match=r"unknown camera moves \['pan'\]"):
        enabled_moves(settings.replace(enable_models="camera_pan"))
    cache = _cache(settings)
    with caplog.at_level("WARNING"):
        assert fetch_enabled(settings, cache, 30) == ["dolly_out"]  # jib_up is not on this hub: left for its job
    assert "camera move jib_up not fetched at boot" in caplog.text and "HTTP 404" in caplog.text
    hits = list(web["site"].hits)
    cached = cache.get(camera_lora("dolly_out", 0.5), time.monotonic() + 30)
    assert cached.sha256 == hashlib.sha256(web["routes"][dolly]).hexdigest()
    assert web["site"].hits == hits, "a job finds the move in the cache"
