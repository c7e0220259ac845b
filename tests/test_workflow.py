"""workflow_api.json: every role present once, and a request patched into every place it belongs."""

import json

import pytest

from ltx2_worker.job import generation_size, parse_request
from ltx2_worker.settings import load_settings
from ltx2_worker.workflow import ROLES, Encoding, GraphChoices, Workflow, WorkflowError

S = load_settings(env={})
WF = Workflow.load()


def _by_class(graph, class_type):
    return [n["inputs"] for n in graph.values() if n["class_type"] == class_type]


def test_every_role_is_one_node_of_the_right_class():
    assert set(WF.node_ids) == set(ROLES)
    for role, nid in WF.node_ids.items():
        assert WF.graph[nid]["class_type"] == ROLES[role][0]


@pytest.mark.parametrize("size,gen", [((1280, 720), (1280, 768)), ((768, 512), (768, 512)),
                                      ((352, 288), (384, 320)), ((720, 1280), (768, 1280))])
def test_generation_size_is_the_request_rounded_up_to_64(size, gen):
    assert generation_size(*size) == gen


def test_request_is_patched_into_all_places():
    req = parse_request({"prompt": "a fox", "negative_prompt": "ugly", "width": 1280, "height": 720,
                         "frame_count": 49, "fps": 30, "seed": 7, "steps": 12, "cfg": 3.5}, S)
    g = WF.build(req, "ltx2/job-1")
    texts = sorted(n["text"] for n in _by_class(g, "CLIPTextEncode"))
    assert texts == ["a fox", "ugly"]
    assert _by_class(g, "EmptyImage")[0] | {} == {"width": 1280, "height": 768, "batch_size": 1, "color": 0}
    assert _by_class(g, "EmptyLTXVLatentVideo")[0]["length"] == 49
    audio = _by_class(g, "LTXVEmptyLatentAudio")[0]
    assert (audio["frames_number"], audio["frame_rate"]) == (49, 30) and isinstance(audio["frame_rate"], int)
    assert _by_class(g, "LTXVConditioning")[0]["frame_rate"] == 30.0
    assert _by_class(g, "CreateVideo")[0]["fps"] == 30.0
    assert {n["noise_seed"] for n in _by_class(g, "RandomNoise")} == {7}
    assert _by_class(g, "LTXVScheduler")[0]["steps"] == 12
    assert g[WF.node_ids["guider_stage1"]]["inputs"]["cfg"] == 3.5
    assert g[WF.node_ids["output_crop"]]["inputs"]["width"] == 1280
    assert g[WF.node_ids["output_crop"]]["inputs"]["height"] == 720
    assert _by_class(g, "SaveVideo")[0]["filename_prefix"] == "ltx2/job-1"


def test_defaults_keep_the_workflows_values_and_the_loaded_graph_is_untouched():
    before = json.dumps(WF.graph, sort_keys=True)
    g = WF.build(parse_request({"prompt": "x"}, S), "ltx2/a")
    assert json.dumps(WF.graph, sort_keys=True) == before
    assert g[WF.node_ids["negative_prompt"]]["inputs"]["text"] == WF.defaults()["negative_prompt"]
    assert g[WF.node_ids["scheduler"]]["inputs"]["steps"] == 20
    assert g[WF.node_ids["guider_stage1"]]["inputs"]["cfg"] == 4.0


AUDIO_CLASSES = {"LTXVEmptyLatentAudio", "LTXVAudioVAELoader", "LTXVAudioVAEDecode", "LTXVConcatAVLatent",
                 "LTXVSeparateAVLatent"}


@pytest.mark.parametrize("extra", [{}, {"mode": "distilled"}], ids=["standard", "distilled"])
def test_audio_off_runs_no_audio_node_at_all(extra):
    g = WF.build(parse_request({"prompt": "x", "audio": False, **extra}, S), "ltx2/a")
    reachable = {g[nid]["class_type"] for nid in _reachable(g, WF.node_ids["save_video"])}
    assert not reachable & AUDIO_CLASSES
    assert "audio" not in g[WF.node_ids["create_video"]]["inputs"]
    assert {"SamplerCustomAdvanced", "LTXVLatentUpsampler", "VAEDecodeTiled", "EmptyLTXVLatentVideo"} <= reachable
    g = WF.build(parse_request({"prompt": "x", **extra}, S), "ltx2/a")
    assert g[WF.node_ids["create_video"]]["inputs"]["audio"] == [WF.node_ids["audio_decode"], 0]
    assert AUDIO_CLASSES <= {g[nid]["class_type"] for nid in _reachable(g, WF.node_ids["save_video"])}


def test_audio_off_keeps_the_first_frame_of_image_to_video():
    g = WF.build(parse_request({"prompt": "x", "audio": False, "image": "aGk="}, S), "ltx2/a", ["f.png"])
    sampler1 = g[WF.node_ids["sampler_stage1"]]["inputs"]["latent_image"][0]
    sampler2 = g[WF.node_ids["sampler_stage2"]]["inputs"]["latent_image"][0]
    assert g[sampler1]["class_type"] == g[sampler2]["class_type"] == "LTXVImgToVideoInplace"


def test_a_graph_without_a_role_is_refused_at_load():
    graph = json.loads(json.dumps(WF.graph))
    graph[WF.node_ids["canvas"]]["_meta"]["title"] = "Empty Image"
    with pytest.raises(WorkflowError, match="'canvas'"):
        Workflow(graph)


def test_a_role_on_the_wrong_class_is_refused_at_load():
    graph = json.loads(json.dumps(WF.graph))
    graph[WF.node_ids["scheduler"]]["_meta"]["title"] = "canvas"
    with pytest.raises(WorkflowError, match="'canvas'"):
        Workflow(graph)


def _reachable(graph, start):
    seen, todo = set(), [start]
    while todo:
        nid = todo.pop()
        if nid in seen:
            continue
        seen.add(nid)
        todo += [v[0] for v in graph[nid]["inputs"].values() if isinstance(v, list) and len(v) == 2]
    return seen


def test_distilled_mode_swaps_checkpoint_schedule_cfg_and_drops_the_lora():
    g = WF.build(parse_request({"prompt": "x", "mode": "distilled"}, S), "ltx2/d")
    used = _reachable(g, WF.node_ids["save_video"])
    for role in ("checkpoint", "text_encoder", "audio_vae_loader"):
        assert g[WF.node_ids[role]]["inputs"]["ckpt_name"] == "ltx-2-19b-distilled-fp8.safetensors"
    assert g[WF.node_ids["guider_stage1"]]["inputs"]["cfg"] == 1.0
    sigmas = g[g[WF.node_ids["sampler_stage1"]]["inputs"]["sigmas"][0]]
    assert sigmas["class_type"] == "ManualSigmas" and len(sigmas["inputs"]["sigmas"].split(",")) == 9
    assert WF.node_ids["lora"] not in used and WF.node_ids["scheduler"] not in used
    standard = WF.build(parse_request({"prompt": "x"}, S), "ltx2/s")
    assert WF.node_ids["lora"] in _reachable(standard, WF.node_ids["save_video"])


def test_image_to_video_conditions_both_stages_on_the_uploaded_image():
    g = WF.build(parse_request({"prompt": "x", "image": "aGk=", "image_strength": 0.7}, S), "ltx2/i", ["first.png"])
    inplace = {nid: n for nid, n in g.items() if n["class_type"] == "LTXVImgToVideoInplace"}
    assert len(inplace) == 2 and all(n["inputs"]["strength"] == 0.7 for n in inplace.values())
    for concat in ("av_latent_stage1", "av_latent_stage2"):
        assert g[WF.node_ids[concat]]["inputs"]["video_latent"][0] in inplace
    loads = [n for n in g.values() if n["class_type"] == "LoadImage"]
    assert [n["inputs"]["image"] for n in loads] == ["first.png"]
    assert all(nid in _reachable(g, WF.node_ids["save_video"]) for nid in inplace)


@pytest.mark.parametrize("size,xy", [((1280, 720), (0, 24)), ((720, 1280), (24, 0)), ((1008, 560), (8, 8)),
                                     ((768, 512), (0, 0))])
def test_the_output_is_the_centre_of_the_generated_frame(size, xy):
    g = WF.build(parse_request({"prompt": "x", "width": size[0], "height": size[1]}, S), "ltx2/a")
    crop = g[WF.node_ids["output_crop"]]["inputs"]
    assert (crop["width"], crop["height"], crop["x"], crop["y"]) == (*size, *xy)


@pytest.mark.parametrize("mode", ["standard", "distilled"])
def test_the_cuda_graph_choice_wraps_stage_1s_model_and_nothing_else(mode):
    req = parse_request({"prompt": "x", "mode": mode}, S)
    plain = WF.build(req, "ltx2/a", choices=GraphChoices(lora_bypass=True))
    g = WF.build(req, "ltx2/a", choices=GraphChoices(lora_bypass=True, cuda_graphs=True))
    wrapper = g[WF.node_ids["guider_stage1"]]["inputs"]["model"][0]
    assert g[wrapper]["class_type"] == "LTX2CudaGraphs"
    assert g[wrapper]["inputs"] == {"model": plain[WF.node_ids["guider_stage1"]]["inputs"]["model"], "enabled": True}
    # stage 2 samples with the model it had: its large steps are bound by the GPU, not by kernel launches
    assert g[WF.node_ids["guider_stage2"]]["inputs"]["model"] == plain[WF.node_ids["guider_stage2"]]["inputs"]["model"]
    assert set(g) - set(plain) == {wrapper}
    assert {nid for nid in plain if plain[nid] != g[nid]} == {WF.node_ids["guider_stage1"]}


@pytest.mark.parametrize("mode", ["standard", "distilled"])
def test_compiled_blocks_come_before_the_cuda_graphs_on_stage_1s_model_only(mode):
    """LTX2CudaGraphs records what it is given, so the compiled model must reach it, not the other way round."""
    req = parse_request({"prompt": "x", "mode": mode}, S)
    plain = WF.build(req, "ltx2/a", choices=GraphChoices(lora_bypass=True, cuda_graphs=True))
    g = WF.build(req, "ltx2/a", choices=GraphChoices(lora_bypass=True, cuda_graphs=True, compile_blocks=True))
    graphs = g[WF.node_ids["guider_stage1"]]["inputs"]["model"][0]
    compiled = g[graphs]["inputs"]["model"][0]
    assert (g[graphs]["class_type"], g[compiled]["class_type"]) == ("LTX2CudaGraphs", "LTX2CompileBlocks")
    assert g[compiled]["inputs"] == {"model": plain[graphs]["inputs"]["model"], "enabled": True}
    assert set(g) - set(plain) == {compiled}
    assert {nid for nid in plain if plain[nid] != g[nid]} == {graphs}


def test_the_decode_tile_choice_sets_only_the_decodes_tile_size():
    req = parse_request({"prompt": "x"}, S)
    plain = WF.build(req, "ltx2/a", choices=GraphChoices(tile_memory_decode=True))
    g = WF.build(req, "ltx2/a", choices=GraphChoices(tile_memory_decode=True, decode_tile_px=1536))
    decode = WF.node_ids["video_decode"]
    assert plain[decode]["inputs"]["tile_size"] == 512 and g[decode]["inputs"]["tile_size"] == 1536
    assert {k: v for k, v in g[decode]["inputs"].items() if k != "tile_size"} == \
        {k: v for k, v in plain[decode]["inputs"].items() if k != "tile_size"}
    assert {nid for nid in plain if plain[nid] != g[nid]} == {decode}


def test_distilled_mode_ignores_the_lora_bypass_choice():
    g = WF.build(parse_request({"prompt": "x", "mode": "distilled"}, S), "ltx2/a",
                 choices=GraphChoices(lora_bypass=True))
    assert "LoraLoaderBypassModelOnly" not in {n["class_type"] for n in g.values()}
    assert g[WF.node_ids["guider_stage2"]]["inputs"]["model"] == [WF.node_ids["checkpoint"], 0]


@pytest.mark.parametrize("audio", [True, False])
def test_an_encoding_turns_the_save_node_into_the_workers_node_in_place(audio):
    req = parse_request({"prompt": "x", "audio": audio}, S)
    plain = WF.build(req, "ltx2/a")
    g = WF.build(req, "ltx2/a", encoding=Encoding("faster", 19))
    save = g[WF.node_ids["save_video"]]  # the same id: the worker finds the MP4 in /history under it
    assert save["class_type"] == "LTX2SaveVideo"
    assert save["inputs"] == {"video": plain[WF.node_ids["save_video"]]["inputs"]["video"],
                              "filename_prefix": "ltx2/a", "preset": "faster", "crf": 19}
    assert {nid for nid in plain if plain[nid] != g[nid]} == {WF.node_ids["save_video"]} and set(g) == set(plain)


def test_the_workers_save_node_offers_the_presets_the_settings_accept():
    from ltx2_worker.settings import X264_PRESETS

    from comfy_server import worker_node_schemas

    spec = worker_node_schemas()["LTX2SaveVideo"]["input"]["required"]
    assert tuple(spec["preset"][0]) == X264_PRESETS
    assert (spec["crf"][1]["min"], spec["crf"][1]["max"]) == (0, 51)
    assert (spec["preset"][1]["default"], spec["crf"][1]["default"]) == (S.x264_preset, S.x264_crf)


@pytest.mark.parametrize("choice, role, class_type", [
    ("tile_memory_decode", "video_decode", "LTX2VAEDecodeTiled"),
    ("fast_upscaler_load", "upscaler_loader", "LTX2LatentUpscaleModelLoader"),
    ("fast_audio_vae_load", "audio_vae_loader", "LTX2AudioVAELoader"),
    ("fast_text_encoder_load", "text_encoder", "LTX2TextEncoderLoader"),
    ("pinned_checkpoint_load", "checkpoint", "LTX2PinnedCheckpointLoader"),
    ("checkpoint_beside_prompts", "checkpoint", "LTX2PinnedCheckpointLoaderBeside"),
    ("resident_upscaler", "upsampler", "LTX2LatentUpsampler"),
])
def test_a_node_swapping_choice_changes_only_that_nodes_class(choice, role, class_type):
    """The worker's node takes the stock node's place under the same id, with the same inputs."""
    req = parse_request({"prompt": "x"}, S)
    plain = WF.build(req, "ltx2/a")
    g = WF.build(req, "ltx2/a", choices=GraphChoices(**{choice: True}))
    node = WF.node_ids[role]
    assert g[node]["class_type"] == class_type and g[node]["inputs"] == plain[node]["inputs"]
    assert {nid for nid in plain if plain[nid] != g[nid]} == {node} and set(g) == set(plain)


def test_the_workers_upsampler_takes_and_gives_what_comfyuis_does():
    from comfy_server import DATA, worker_node_schemas

    recorded = json.loads((DATA / "object_info.json").read_text())["LTXVLatentUpsampler"]
    node = worker_node_schemas()["LTX2LatentUpsampler"]
    assert list(node["input"]["required"]) == recorded["input_order"]["required"]
    assert [v[0] for v in node["input"]["required"].values()] == \
        [recorded["input"]["required"][k][0] for k in recorded["input_order"]["required"]]
    assert node["output"] == recorded["output"]


def test_the_workers_upscaler_loader_takes_and_gives_what_comfyuis_does():
    from comfy_server import DATA, worker_node_schemas

    recorded = json.loads((DATA / "object_info.json").read_text())["LatentUpscaleModelLoader"]
    ours = worker_node_schemas()["LTX2LatentUpscaleModelLoader"]
    assert list(ours["input"]["required"]) == recorded["input_order"]["required"] == ["model_name"]
    assert ours["output"] == recorded["output"] == ["LATENT_UPSCALE_MODEL"]


def test_the_workers_decode_node_takes_vae_decode_tileds_inputs():
    """The node keeps VAEDecodeTiled's inputs (the graph's values pass ComfyUI's validation unchanged)."""
    from comfy_server import DATA, worker_node_schemas

    recorded = json.loads((DATA / "object_info.json").read_text())["VAEDecodeTiled"]
    ours = worker_node_schemas()["LTX2VAEDecodeTiled"]
    assert list(ours["input"]["required"]) == recorded["input_order"]["required"]
    for name, spec in ours["input"]["required"].items():
        theirs = recorded["input"]["required"][name]
        assert spec[0] == theirs[0]
        if len(spec) > 1:
            assert {k: spec[1][k] for k in ("default", "min", "max", "step")} == \
                {k: theirs[1][k] for k in ("default", "min", "max", "step")}
    assert ours["output"] == recorded["output"]


@pytest.mark.parametrize(("shape", "inputs", "expected"), [
    # the standard clip: 1280x736x121 -> latent 40x23x16; 512-pixel tiles, every frame at once
    ((1, 128, 16, 23, 40), (512, 4096, 32, 8), (1, 128, 16, 16, 16)),
    # a small clip fits one tile: the estimate is the whole latent's, as before
    ((1, 128, 7, 8, 12), (512, 4096, 32, 8), (1, 128, 7, 8, 12)),
    # VAEDecodeTiled's temporal rule: temporal_size // compression, at least 2 latent frames
    ((1, 128, 16, 23, 40), (256, 8, 32, 8), (1, 128, 2, 8, 8)),
    ((1, 128, 16, 23, 40), (512, 64, 32, 8), (1, 128, 8, 16, 16)),
    # an image VAE (4-D latent, no temporal compression)
    ((1, 4, 128, 96), (512, 64, 8, None), (1, 4, 64, 64)),
])
def test_the_decode_nodes_memory_estimate_is_one_tiles(shape, inputs, expected):
    import importlib.util

    from ltx2_worker.launch import COMFY_NODES

    spec = importlib.util.spec_from_file_location("ltx2_vae_decode_under_test", COMFY_NODES / "ltx2_vae_decode.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.tile_shape(shape, *inputs) == expected


def _keyframed(extra=None, images=("first.png", "mid.png", "last.png")):
    req = parse_request({"prompt": "x", "frame_count": 49, "image": "aGk=",
                         "keyframes": [{"image": "aGk=", "frame": 24, "strength": 0.6},
                                       {"image": "aGk=", "frame": -1}], **(extra or {})}, S)
    return req, WF.build(req, "ltx2/k", list(images))


def test_keyframes_past_frame_0_are_guides_in_both_stages_cropped_after_each():
    req, g = _keyframed()
    assert [k.frame for k in req.keyframes] == [0, 24, 48]
    guides = {nid: n["inputs"] for nid, n in g.items() if n["class_type"] == "LTXVAddGuide"}
    assert sorted((i["frame_idx"], i["strength"]) for i in guides.values()) == [(24, 0.6), (24, 0.6), (48, 1.0),
                                                                               (48, 1.0)]
    crop1, crop2 = WF.node_ids["crop_guides"], "ltx2:crop_guides_stage2"
    # stage 1: the guided conditioning reaches its guider and the crop that takes the guides off
    for role in ("guider_stage1", "crop_guides"):
        assert g[g[WF.node_ids[role]]["inputs"]["positive"][0]]["class_type"] == "LTXVAddGuide"
    # stage 2 starts from the cropped conditioning, adds its own guides, and the decode reads the cropped latent
    first_stage2 = next(i for nid, i in guides.items() if nid.endswith("stage2") and i["frame_idx"] == 24)
    assert first_stage2["positive"] == [crop1, 0]
    assert g[g[WF.node_ids["guider_stage2"]]["inputs"]["positive"][0]]["class_type"] == "LTXVAddGuide"
    assert g[WF.node_ids["video_decode"]]["inputs"]["samples"] == [crop2, 2]
    assert g[crop2]["inputs"]["latent"] == WF.graph[WF.node_ids["video_decode"]]["inputs"]["samples"]
    # the guides go on the video latent before the audio is joined (LTXVAddGuide refuses an audio-video latent)
    for concat in ("av_latent_stage1", "av_latent_stage2"):
        assert g[g[WF.node_ids[concat]]["inputs"]["video_latent"][0]]["class_type"] == "LTXVAddGuide"
    loads = sorted(n["inputs"]["image"] for n in g.values() if n["class_type"] == "LoadImage")
    assert loads == ["first.png", "last.png", "mid.png"]
    used = _reachable(g, WF.node_ids["save_video"])
    assert set(guides) <= used and crop2 in used


def test_keyframes_without_audio_still_crop_the_guides_before_the_decode():
    _, g = _keyframed({"audio": False})
    crop2 = "ltx2:crop_guides_stage2"
    assert g[crop2]["inputs"]["latent"] == [WF.node_ids["sampler_stage2"], 1]
    assert g[WF.node_ids["video_decode"]]["inputs"]["samples"] == [crop2, 2]
    sampler1 = g[WF.node_ids["sampler_stage1"]]["inputs"]["latent_image"][0]
    assert g[sampler1]["class_type"] == "LTXVAddGuide"


def test_only_a_first_frame_adds_no_guide_and_no_second_crop():
    g = WF.build(parse_request({"prompt": "x", "keyframes": [{"image": "aGk=", "frame": 0}]}, S), "ltx2/k", ["a.png"])
    assert not any(n["class_type"] == "LTXVAddGuide" for n in g.values()) and "ltx2:crop_guides_stage2" not in g


def test_the_number_of_images_and_lora_files_must_match_the_request():
    with pytest.raises(ValueError, match="1 images for 3 keyframes"):
        _keyframed(images=("first.png",))


@pytest.mark.parametrize("stack", [True, False])
@pytest.mark.parametrize("mode", ["standard", "distilled"])
def test_user_loras_chain_on_the_checkpoint_and_feed_both_stages(mode, stack):
    req = parse_request({"prompt": "x", "mode": mode, "loras": [{"url": "https://h/a", "strength": 0.5},
                                                               {"url": "https://h/b"}]}, S)
    g = WF.build(req, "ltx2/l", loras=["a.safetensors", "b.safetensors"],
                 choices=GraphChoices(cuda_graphs=True, lora_stack=stack))
    first, second = g["ltx2:user_lora_0"]["inputs"], g["ltx2:user_lora_1"]["inputs"]
    assert first["model"] == [WF.node_ids["checkpoint"], 0] and second["model"] == ["ltx2:user_lora_0", 0]
    assert (first["lora_name"], first["strength_model"], second["strength_model"]) == ("a.safetensors", 0.5, 1.0)
    # ComfyUI's own bypass node keeps only the last of a chain: the worker's node, or merged LoRAs
    assert {g[f"ltx2:user_lora_{n}"]["class_type"] for n in (0, 1)} == {
        "LTX2LoraBypass" if stack else "LoraLoaderModelOnly"}
    cuda = g[g[WF.node_ids["guider_stage1"]]["inputs"]["model"][0]]
    assert cuda["class_type"] == "LTX2CudaGraphs" and cuda["inputs"]["model"] == ["ltx2:user_lora_1", 0]
    stage2 = g[WF.node_ids["guider_stage2"]]["inputs"]["model"]
    if mode == "standard":  # the distilled LoRA on top of the user's
        assert stage2 == [WF.node_ids["lora"], 0]
        assert g[WF.node_ids["lora"]]["inputs"]["model"] == ["ltx2:user_lora_1", 0]
    else:
        assert stage2 == ["ltx2:user_lora_1", 0]


def test_a_camera_move_is_one_more_bypass_lora_after_the_requests_on_both_stages():
    req = parse_request({"prompt": "x", "loras": [{"url": "https://a.example/a.safetensors", "strength": 0.7}],
                         "camera_motion": "dolly_left", "camera_strength": 0.6}, S)
    g = WF.build(req, "ltx2/c", loras=["a.safetensors", "cam.safetensors"],
                 choices=GraphChoices(lora_bypass=True, lora_stack=True))
    assert [(g[n]["inputs"]["lora_name"], g[n]["inputs"]["strength_model"], g[n]["class_type"])
            for n in ("ltx2:user_lora_0", "ltx2:user_lora_1")] == [
        ("a.safetensors", 0.7, "LTX2LoraBypass"), ("cam.safetensors", 0.6, "LTX2LoraBypass")]
    last = ["ltx2:user_lora_1", 0]
    assert g[WF.node_ids["guider_stage1"]]["inputs"]["model"] == last
    assert g[WF.node_ids["lora"]]["inputs"]["model"] == last  # stage 2's distilled LoRA goes on top
    assert g[WF.node_ids["lora"]]["class_type"] == "LTX2LoraBypass", "keeping the branches below it"
    without = WF.build(req, "ltx2/c", loras=["a.safetensors", "cam.safetensors"],
                       choices=GraphChoices(lora_bypass=True))
    assert without[WF.node_ids["lora"]]["class_type"] == "LoraLoaderBypassModelOnly"
    assert without["ltx2:user_lora_0"]["class_type"] == "LoraLoaderModelOnly", "merged under ComfyUI's bypass"
    with pytest.raises(ValueError, match="camera move's included"):
        WF.build(req, "ltx2/c", loras=["a.safetensors"])
