"""The request contract (README "Request"): accepted shapes and one clear error per broken rule."""

import math

import pytest

from ltx2_worker.gpu import Gpu, choose_profile
from ltx2_worker.job import FIELDS, InputError, Keyframe, LoraSpec, parse_request
from ltx2_worker.settings import ClipLimits, load_settings

S = load_settings(env={})
EARLIER_PACKAGE_REQUEST = {"prompt": "a red fox running through snow", "negative_prompt": "blurry",
                           "width": 1280, "height": 720, "frame_count": 121, "seed": 42}


def test_earlier_package_request_is_accepted_as_is():
    r = parse_request(EARLIER_PACKAGE_REQUEST, S)
    assert (r.prompt, r.negative_prompt, r.width, r.height, r.frame_count, r.seed) == (
        "a red fox running through snow", "blurry", 1280, 720, 121, 42)
    assert (r.fps, r.audio, r.steps, r.cfg) == (24, True, None, None)
    assert r.duration_seconds == pytest.approx(121 / 24, abs=1e-3)


def test_defaults_fill_everything_but_the_prompt():
    r = parse_request({"prompt": "  x  "}, S)
    assert (r.prompt, r.width, r.height, r.frame_count, r.fps) == ("x", 1280, 720, 121, 24)
    assert r.negative_prompt is None


@pytest.mark.parametrize("seed", [None, -1])
def test_absent_or_minus_one_seed_is_random_and_json_safe(seed):
    raw = {"prompt": "x"} if seed is None else {"prompt": "x", "seed": seed}
    seeds = {parse_request(raw, S).seed for _ in range(20)}
    assert len(seeds) > 1
    assert all(0 <= s < 2**53 for s in seeds)


@pytest.mark.parametrize("aspect,size", [("16:9", (1280, 720)), ("9:16", (720, 1280)), ("1:1", (960, 960))])
def test_aspect_ratio_picks_a_size_on_the_grid(aspect, size):
    r = parse_request({"prompt": "x", "aspect_ratio": aspect}, S)
    assert (r.width, r.height) == size
    assert r.width % S.size_multiple == 0 and r.height % S.size_multiple == 0


def test_optional_fields_are_taken():
    r = parse_request({"prompt": "x", "fps": 30.0, "steps": 8, "cfg": 3, "audio": False, "frame_count": 9.0}, S)
    assert (r.fps, r.steps, r.cfg, r.audio, r.frame_count) == (30, 8, 3.0, False, 9)


@pytest.mark.parametrize("raw,field,rule", [
    ("just a string", "input", "JSON object"),
    ({}, "prompt", "required"),
    ({"prompt": "   "}, "prompt", "empty"),
    ({"prompt": 5}, "prompt", "string"),
    ({"prompt": "x" * 4001}, "prompt", "at most 4000"),
    ({"prompt": "x", "negative_prompt": ["a"]}, "negative_prompt", "string"),
    ({"prompt": "x", "colour": "red"}, "colour", "not a known field"),
    ({"prompt": "x", "width": 1001}, "width", "multiple of 8"),
    ({"prompt": "x", "height": 721}, "height", "multiple of 8"),
    ({"prompt": "x", "width": "1280"}, "width", "integer"),
    ({"prompt": "x", "width": 1280.5}, "width", "integer"),
    ({"prompt": "x", "width": True}, "width", "integer"),
    ({"prompt": "x", "width": 4096}, "width", "from 256 to 1920"),
    ({"prompt": "x", "height": 128}, "height", "from 256 to 1920"),
    ({"prompt": "x", "frame_count": 120}, "frame_count", "8k+1"),
    ({"prompt": "x", "frame_count": 1}, "frame_count", "from 9 to 257"),
    ({"prompt": "x", "frame_count": 265}, "frame_count", "from 9 to 257"),
    ({"prompt": "x", "fps": 23.976}, "fps", "whole number"),
    ({"prompt": "x", "fps": 0}, "fps", "from 8 to 60"),
    ({"prompt": "x", "fps": math.nan}, "fps", "integer"),
    ({"prompt": "x", "seed": -2}, "seed", "from 0 to"),
    ({"prompt": "x", "seed": 2**64}, "seed", "from 0 to"),
    ({"prompt": "x", "seed": "42"}, "seed", "integer"),
    ({"prompt": "x", "steps": 0}, "steps", "from 1 to 60"),
    ({"prompt": "x", "cfg": math.inf}, "cfg", "number from 1.0"),
    ({"prompt": "x", "cfg": "4"}, "cfg", "number"),
    ({"prompt": "x", "audio": "yes"}, "audio", "true or false"),
    ({"prompt": "x", "aspect_ratio": "5:4"}, "aspect_ratio", "one of"),
    ({"prompt": "x", "delivery": "s3"}, "delivery", "one of auto, base64, url"),
    ({"prompt": "x", "mode": "fast"}, "mode", "one of standard, distilled"),
    ({"prompt": "x", "mode": "distilled", "steps": 8}, "steps", "fixed in distilled mode"),
    ({"prompt": "x", "mode": "distilled", "cfg": 2}, "cfg", "fixed in distilled mode"),
    ({"prompt": "x", "image": 5}, "image", "base64 string or an https URL"),
    ({"prompt": "x", "image": "  "}, "image", "base64 string or an https URL"),
    ({"prompt": "x", "image_strength": 0.5}, "image_strength", "needs an image"),
    ({"prompt": "x", "image": "aGk=", "image_strength": 1.5}, "image_strength", "from 0.0 to 1.0"),
    ({"prompt": "x", "aspect_ratio": "16:9", "width": 1280}, "aspect_ratio", "cannot be combined with width"),
    ({"prompt": "x", "keyframes": {"image": "aGk="}}, "keyframes", "must be an array of {image, frame, strength}"),
    ({"prompt": "x", "image": ""}, "image", "got an empty string (leave the field out"),
    ({"prompt": "x", "keyframes": [{"image": " ", "frame": -1}]}, "keyframes[0].image", "got an empty string"),
    ({"prompt": "x", "keyframes": ["aGk="]}, "keyframes[0]", "must be an object"),
    ({"prompt": "x", "keyframes": [{"image": "aGk=", "frame": 0, "weight": 1}]}, "keyframes[0].weight",
     "not a known field (known: image, frame, strength)"),
    ({"prompt": "x", "keyframes": [{"frame": 0}]}, "keyframes[0].image", "base64 string or an https URL"),
    ({"prompt": "x", "keyframes": [{"image": "aGk="}]}, "keyframes[0].frame", "is required"),
    ({"prompt": "x", "keyframes": [{"image": "aGk=", "frame": 121}]}, "keyframes[0].frame", "from -121 to 120"),
    ({"prompt": "x", "keyframes": [{"image": "aGk=", "frame": -122}]}, "keyframes[0].frame", "from -121 to 120"),
    ({"prompt": "x", "keyframes": [{"image": "aGk=", "frame": 1.5}]}, "keyframes[0].frame", "integer"),
    ({"prompt": "x", "keyframes": [{"image": "aGk=", "frame": 8, "strength": 1.2}]}, "keyframes[0].strength",
     "from 0.0 to 1.0"),
    ({"prompt": "x", "keyframes": [{"image": "aGk=", "frame": 120}, {"image": "aGk=", "frame": -1}]},
     "keyframes[1].frame", "is frame 120, which keyframes[0] already conditions"),
    ({"prompt": "x", "image": "aGk=", "keyframes": [{"image": "aGk=", "frame": 0}]}, "keyframes[0].frame",
     "is frame 0, which image already conditions"),
    ({"prompt": "x", "image": "aGk=", "keyframes": [{"image": "aGk=", "frame": n} for n in (8, 16, 24, 32)]},
     "keyframes", "at most 4 images in all, image included (MAX_KEYFRAMES), got 4 and image"),
    ({"prompt": "x", "loras": {"url": "https://h/a.safetensors"}}, "loras", "array of {url, strength}"),
    ({"prompt": "x", "loras": [{"url": f"https://h/{n}.safetensors"} for n in range(4)]}, "loras",
     "at most 3 LoRAs (MAX_LORAS), got 4"),
    ({"prompt": "x", "loras": [None]}, "loras[0]", "must be an object"),
    ({"prompt": "x", "loras": [{"url": "https://h/a", "scale": 1}]}, "loras[0].scale", "not a known field"),
    ({"prompt": "x", "loras": [{"strength": 1}]}, "loras[0].url", "is required"),
    ({"prompt": "x", "loras": [{"url": "http://h/a.safetensors"}]}, "loras[0].url", "must be an https URL"),
    ({"prompt": "x", "loras": [{"url": "https://h/a"}, {"url": "https://h/b", "strength": -2.5}]},
     "loras[1].strength", "from -2.0 to 2.0"),
    ({"prompt": "x", "loras": [{"url": "https://h/a"}, {"url": "https://h/a"}]}, "loras[1].url",
     "is the same as loras[0].url"),
])
def test_each_broken_rule_names_field_and_rule(raw, field, rule):
    with pytest.raises(InputError) as info:
        parse_request(raw, S)
    assert info.value.field == field
    assert rule in str(info.value)
    assert str(info.value).startswith(f"{field}: ")


def test_limits_come_from_settings():
    strict = S.replace(max_frames=49, max_prompt_chars=10, size_multiple=32, default_height=704)
    with pytest.raises(InputError, match="from 9 to 49"):
        parse_request({"prompt": "x", "frame_count": 57}, strict)
    with pytest.raises(InputError, match="at most 10"):
        parse_request({"prompt": "x" * 11}, strict)
    with pytest.raises(InputError, match="multiple of 32"):
        parse_request({"prompt": "x", "height": 720}, strict)


@pytest.mark.parametrize("width, height, frames, longest", [(1920, 1088, 121, None), (1088, 1920, 121, None),
                                                           (1280, 720, 257, None), (1920, 1088, 129, 121),
                                                           (1920, 1920, 257, 65)])
def test_a_clip_has_at_most_max_clip_pixels(width, height, frames, longest):
    """What every memory class finishes (docs/performance.md): 1080p for 121 frames, 720p for 257; the error
    names the longest clip (8k+1 frames) at the asked size."""
    raw = {"prompt": "x", "width": width, "height": height, "frame_count": frames}
    if longest is None:
        assert parse_request(raw, S).frame_count == frames
        return
    with pytest.raises(InputError) as info:
        parse_request(raw, S)
    assert info.value.field == "frame_count" and "MAX_CLIP_PIXELS (252,764,160)" in str(info.value)
    assert f"at most {longest} frames" in str(info.value)


def test_the_80_gb_class_serves_20_seconds_at_720p_and_the_others_keep_every_classs_limits():
    """MAX_FRAMES and MAX_CLIP_PIXELS on auto (config.ini): the memory class decides; a number overrides it on
    every class."""
    large = choose_profile(Gpu("NVIDIA H100 80GB HBM3", 79.6, 9.0)).clip
    medium = choose_profile(Gpu("NVIDIA L40S", 44.4, 8.9)).clip
    longest = {"prompt": "x", "width": 1280, "height": 720, "frame_count": 481}
    assert parse_request(longest, S, large).frame_count == 481
    assert parse_request({**longest, "width": 1920, "height": 1080, "frame_count": 225}, S, large).frame_count == 225
    with pytest.raises(InputError, match="frame_count: makes 1920 x 1080 x 233.*at 1920 x 1080 at most 225 frames"):
        parse_request({**longest, "width": 1920, "height": 1080, "frame_count": 233}, S, large)
    with pytest.raises(InputError, match="frame_count: must be from 9 to 257, got 481"):
        parse_request(longest, S, medium)
    with pytest.raises(InputError, match="from 9 to 257"):
        parse_request(longest, S.replace(max_frames=257), large)  # a number applies to every class
    assert S.replace(max_clip_pixels=10**9).clip_limits(large) == ClipLimits(481, 10**9)


@pytest.mark.parametrize("frames, fps, ok", [(481, 24, True), (489, 24, False), (241, 12, True), (249, 12, False),
                                             (481, 25, True), (121, 8, True)])
def test_a_clip_spans_at_most_ltx2s_20_seconds(frames, fps, ok):
    """LTX-2's temporal positions are seconds and reach 20 (ComfyUI's av_model.py): (frames - 1) / fps <= 20."""
    unlimited = S.replace(max_frames=2049, max_clip_pixels=10**10)
    raw = {"prompt": "x", "width": 512, "height": 512, "frame_count": frames, "fps": fps}
    if ok:
        assert parse_request(raw, unlimited).frame_count == frames
        return
    with pytest.raises(InputError) as info:
        parse_request(raw, unlimited)
    assert info.value.field == "frame_count" and "more than the 20 s" in str(info.value)
    assert f"at {fps} fps at most {20 * fps // 8 * 8 + 1} frames" in str(info.value)


def test_max_clip_pixels_counts_the_rendered_size():
    """1352 x 712 renders at 1408 x 768 (the 64-pixel grid): 257 frames of that are 9.9 % over the limit although
    1352 x 712 x 257 alone is under it; the error says what is rendered."""
    assert 1352 * 712 * 257 <= S.clip_limits().max_clip_pixels < 1408 * 768 * 257
    with pytest.raises(InputError) as info:
        parse_request({"prompt": "x", "width": 1352, "height": 712, "frame_count": 257}, S)
    assert str(info.value) == ("frame_count: makes 1352 x 712 x 257, rendered at 1408 x 768 x 257 = 277,905,408 "
                               "pixels, more than MAX_CLIP_PIXELS (252,764,160): at 1352 x 712 at most 233 frames")
    assert parse_request({"prompt": "x", "width": 1352, "height": 712, "frame_count": 233}, S).frame_count == 233


def test_null_is_absent_for_every_optional_field():
    nulls = {field: None for field in FIELDS if field != "prompt"}
    req = parse_request({"prompt": "x", **nulls}, S)
    assert (req.delivery, req.mode, req.audio, req.keyframes, req.loras) == ("auto", "standard", True, (), ())
    assert (req.width, req.height, req.frame_count) == (S.default_width, S.default_height, S.default_frame_count)
    assert (req.camera_motion, req.camera_strength) == (None, 1.0)


def test_fields_list_is_the_documented_contract():
    assert set(FIELDS) == {"prompt", "negative_prompt", "width", "height", "aspect_ratio", "frame_count", "fps",
                           "seed", "steps", "cfg", "audio", "delivery", "mode", "image", "image_strength",
                           "keyframes", "loras", "camera_motion", "camera_strength", "enhance_prompt",
                           "audio_input", "video", "control", "control_strength"}


def test_modes_and_image_fields():
    r = parse_request({"prompt": "x", "mode": "distilled", "image": " https://example.com/a.png ",
                       "image_strength": 0.8}, S)
    assert r.mode == "distilled"
    assert r.keyframes == (Keyframe("image", "https://example.com/a.png", 0, 0.8),)
    assert "example.com" not in repr(r), "a multi-megabyte base64 image must not reach log lines via repr()"
    track = parse_request({"prompt": "x", "audio_input": "https://example.com/a.wav"}, S)
    assert track.audio_input == "https://example.com/a.wav" and track.frames_from_audio
    assert "example.com" not in repr(track), "nor a base64 track"
    source = parse_request({"prompt": "x", "video": "https://example.com/a.mp4"}, S)
    assert (source.video, source.control, source.frames_from_video, source.fps_from_video) == (
        "https://example.com/a.mp4", "canny", True, True)
    assert "example.com" not in repr(source), "nor a base64 video"


def test_keyframes_resolve_negative_indexes_and_fold_in_the_image():
    r = parse_request({"prompt": "x", "frame_count": 49, "image": "Zmlyc3Q=", "image_strength": 0.9,
                       "keyframes": [{"image": "bGFzdA==", "frame": -1}, {"image": "bWlk", "frame": 24,
                                                                          "strength": 0.5}]}, S)
    assert r.keyframes == (Keyframe("image", "Zmlyc3Q=", 0, 0.9), Keyframe("keyframes[1].image", "bWlk", 24, 0.5),
                           Keyframe("keyframes[0].image", "bGFzdA==", 48, 1.0))
    assert "bGFzdA" not in repr(r), "images stay out of log lines"


def test_loras_keep_their_order_and_strengths_and_stay_out_of_reprs():
    r = parse_request({"prompt": "x", "loras": [{"url": "https://h/a.safetensors?sig=SECRET", "strength": -0.5},
                                                {"url": " https://h/b.safetensors "}]}, S)
    assert r.loras == (LoraSpec("loras[0].url", "https://h/a.safetensors?sig=SECRET", -0.5),
                       LoraSpec("loras[1].url", "https://h/b.safetensors", 1.0))
    assert "SECRET" not in repr(r), "a signed URL's signature stays out of log lines"
    with pytest.raises(InputError, match="at most 0 LoRAs"):
        parse_request({"prompt": "x", "loras": [{"url": "https://h/a"}]}, S.replace(max_loras=0))


def test_an_empty_array_is_none_for_keyframes_and_loras_alike():
    """One rule for empty arrays (flows that build the list send []): none, as null and an absent field are."""
    for field in ("keyframes", "loras"):
        req = parse_request({"prompt": "x", field: []}, S)
        assert (req.keyframes, req.loras) == ((), ()), field


@pytest.mark.parametrize("raw, expected", [
    ({"camera_motion": "dolly_in"}, ("dolly_in", 1.0)),
    ({"camera_motion": "jib_down", "camera_strength": 0.4}, ("jib_down", 0.4)),
    ({"camera_motion": "none"}, (None, 1.0)),  # fal's "none"
    ({"camera_motion": None, "camera_strength": None}, (None, 1.0)),
])
def test_camera_motion_is_one_of_the_moves_at_a_strength(raw, expected):
    req = parse_request({"prompt": "x", **raw}, S)
    assert (req.camera_motion, req.camera_strength) == expected and req.loras == ()


@pytest.mark.parametrize("raw, field, rule", [
    ({"camera_motion": "pan_left"}, "camera_motion", "must be one of dolly_in, dolly_out, dolly_left, dolly_right, "
                                                     "jib_up, jib_down, static, got 'pan_left'"),
    ({"camera_motion": 1}, "camera_motion", "must be one of"),
    ({"camera_strength": 0.5}, "camera_strength", "needs a camera_motion"),
    ({"camera_motion": "static", "camera_strength": 1.5}, "camera_strength", "from 0.0 to 1.0"),
    ({"camera_motion": "static", "camera_strength": "1"}, "camera_strength", "number"),
])
def test_camera_errors_name_the_field_and_the_rule(raw, field, rule):
    with pytest.raises(InputError) as info:
        parse_request({"prompt": "x", **raw}, S)
    assert info.value.field == field and rule in info.value.rule, str(info.value)
