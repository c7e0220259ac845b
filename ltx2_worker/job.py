"""The request contract: turns `job["input"]` into a validated VideoRequest, or an InputError that names the
field and the rule it broke. Nothing here talks to ComfyUI; every value that reaches the graph passed here.
"""

from __future__ import annotations

import dataclasses
import math
import secrets
from typing import Any

from .settings import EVERY_CLASS_CLIP, LONGEST_CLIP_S, ClipLimits, Settings

SEED_MAX = 2**64 - 1  # RandomNoise.noise_seed's maximum in ComfyUI v0.26.2
RANDOM_SEED_MAX = 2**53 - 1  # random seeds stay exact in JavaScript callers (n8n)
ASPECT_RATIOS = ("16:9", "9:16", "1:1", "4:3", "3:4", "21:9", "9:21", "3:2", "2:3")
FIELDS = (
    "prompt", "negative_prompt", "width", "height", "aspect_ratio", "frame_count", "fps", "seed",
    "steps", "cfg", "audio", "delivery", "mode", "image", "image_strength", "keyframes", "loras",
    "camera_motion", "camera_strength", "enhance_prompt", "audio_input", "video", "control", "control_strength",
)
# video-to-video: what guides the clip from the source video (ltx2_worker.control), fal's `preprocessor`
CONTROLS = ("canny", "depth", "pose")
KEYFRAME_FIELDS = ("image", "frame", "strength")
LORA_FIELDS = ("url", "strength")
LORA_STRENGTH = (-2.0, 2.0)
MODES = ("standard", "distilled")
# Lightricks' camera-control LoRAs for LTX-2 19B (ltx2_worker.camera); fal's `camera_lora` names, "none" = absent
CAMERA_MOVES = ("dolly_in", "dolly_out", "dolly_left", "dolly_right", "jib_up", "jib_down", "static")
# Stage 1 runs at half size on ComfyUI's 32-pixel latent grid and EmptyLTXVLatentVideo rounds down silently,
# so the graph generates at multiples of 64 and centre-crops to the asked size (ltx2_worker.workflow; a slice:
# no resampling, and for 1280x720 the same pixels as ImageScale's centre crop gave). Limits on the clip's size
# apply to what is rendered.
GENERATION_MULTIPLE = 64
DELIVERY_MODES = ("auto", "base64", "url")


class InputError(ValueError):
    """A job input broke a rule. `str()` is the message the caller sees: "<field>: <rule>"."""

    def __init__(self, field: str, rule: str):
        super().__init__(f"{field}: {rule}")
        self.field = field
        self.rule = rule


@dataclasses.dataclass(frozen=True)
class Keyframe:
    """An image the clip must show at `frame` (0-based, from the start; the request's negative indexes are
    resolved), with `strength` from 0 (ignored) to 1 (kept). `field` names it in errors: `image` or
    `keyframes[i].image`."""

    field: str
    image: str = dataclasses.field(repr=False)  # base64 or https URL, checked by ltx2_worker.image_input
    frame: int
    strength: float


@dataclasses.dataclass(frozen=True)
class LoraSpec:
    """A LoRA a request brings: its https URL (fetched and checked by ltx2_worker.lora_cache) and strength."""

    field: str  # "loras[i].url", for errors
    url: str = dataclasses.field(repr=False)  # may carry a signed query: never logged whole
    strength: float
    max_mb: float | None = None  # largest file accepted; None: MAX_LORA_MB (the worker's own LoRAs set theirs)


@dataclasses.dataclass(frozen=True)
class VideoRequest:
    prompt: str
    negative_prompt: str | None  # None: the workflow's own negative prompt
    width: int
    height: int
    frame_count: int
    fps: int
    seed: int
    steps: int | None  # None: the workflow's own value
    cfg: float | None
    audio: bool
    delivery: str = "auto"  # "auto": base64 when it fits, else bucket URL; "base64"; "url"
    mode: str = "standard"  # "standard": dev checkpoint + distilled LoRA; "distilled": the fast checkpoint
    keyframes: tuple[Keyframe, ...] = ()  # `image` is the keyframe at frame 0; frames distinct, sorted
    loras: tuple[LoraSpec, ...] = ()
    camera_motion: str | None = None  # one of CAMERA_MOVES; applied as one more LoRA, outside MAX_LORAS
    camera_strength: float = 1.0
    enhance_prompt: bool = False  # the text encoder rewrites the prompt first (ltx2_worker.workflow)
    # the user's track, base64 or https URL (ltx2_worker.audio_input); never in repr(), so never in a log line
    audio_input: str | None = dataclasses.field(default=None, repr=False)
    frames_from_audio: bool = False  # audio_input without frame_count: the clip lasts as long as the track
    video: str | None = dataclasses.field(default=None, repr=False)  # the source clip (ltx2_worker.video_input)
    control: str | None = None  # one of CONTROLS, with `video`
    control_strength: float = 1.0
    frames_from_video: bool = False  # video without frame_count: the clip lasts as long as the source
    fps_from_video: bool = False  # video without fps: the source's frame rate

    @property
    def duration_seconds(self) -> float:
        return round(self.frame_count / self.fps, 3)


def generation_size(width: int, height: int) -> tuple[int, int]:
    """The size the graph denoises at: the request rounded up to the 64-pixel grid (cropped back later)."""
    return (math.ceil(width / GENERATION_MULTIPLE) * GENERATION_MULTIPLE,
            math.ceil(height / GENERATION_MULTIPLE) * GENERATION_MULTIPLE)


def parse_request(raw: Any, settings: Settings, memory_class: ClipLimits = EVERY_CLASS_CLIP) -> VideoRequest:
    """Validate a job's input against the contract (README, "Request"); raise InputError on the first fault.
    `memory_class`: the largest clip the GPU's memory class serves, where MAX_FRAMES and MAX_CLIP_PIXELS are auto."""
    if not isinstance(raw, dict):
        raise InputError("input", f"must be a JSON object, got {_type_name(raw)}")
    unknown = sorted(str(k) for k in raw if k not in FIELDS)
    if unknown:
        raise InputError(unknown[0], f"is not a known field (known: {', '.join(FIELDS)})")

    prompt = _text(raw, "prompt", settings.max_prompt_chars, required=True)
    negative = _text(raw, "negative_prompt", settings.max_prompt_chars, required=False)
    width, height = _size(raw, settings)
    limits = settings.clip_limits(memory_class)
    frame_count = _int(raw, "frame_count", settings.default_frame_count, 9, limits.max_frames)
    if frame_count % 8 != 1:
        raise InputError("frame_count", f"must be 8k+1 (9, 17, ..., 121, ...), got {frame_count}")
    _check_clip_pixels(width, height, frame_count, limits.max_clip_pixels)
    fps = _whole_number(raw, "fps", settings.default_fps, settings.min_fps, settings.max_fps)
    check_span(frame_count, fps)
    seed = _seed(raw)
    steps = _int(raw, "steps", None, 1, settings.max_steps)
    cfg = _number(raw, "cfg", None, 1.0, settings.max_cfg)
    audio = _bool(raw, "audio", True)
    delivery = _choice(raw, "delivery", DELIVERY_MODES)
    mode = _choice(raw, "mode", MODES)
    if mode == "distilled":
        for field in ("steps", "cfg"):
            if raw.get(field) is not None:
                raise InputError(field, "is fixed in distilled mode (8 steps, CFG 1); leave it out")
    keyframes = _keyframes(raw, frame_count, settings.max_keyframes)
    loras = _loras(raw, settings.max_loras)
    camera = raw.get("camera_motion")
    camera = None if camera == "none" else _choice(raw, "camera_motion", CAMERA_MOVES, None)
    if camera is None and raw.get("camera_strength") is not None:
        raise InputError("camera_strength", "needs a camera_motion")
    camera_strength = _number(raw, "camera_strength", 1.0, 0.0, 1.0)
    enhance = _bool(raw, "enhance_prompt", False)
    audio_input = None if raw.get("audio_input") is None else _image_spec(raw["audio_input"], "audio_input")
    if audio_input is not None and not audio:
        raise InputError("audio_input", 'is the clip\'s sound track, and "audio": false asks for none; leave one out')
    if audio_input is not None and raw.get("frame_count") is None and any(k.frame for k in keyframes):
        raise InputError("keyframes", "with audio_input and no frame_count the clip's length comes from the track; "
                                      "give frame_count too, so the keyframes' frames are counted within it")
    video = None if raw.get("video") is None else _image_spec(raw["video"], "video")
    if video is None:
        for field in ("control", "control_strength"):
            if raw.get(field) is not None:
                raise InputError(field, "needs a video (the source clip whose motion the control follows)")
    control = _choice(raw, "control", CONTROLS, "canny") if video else None
    control_strength = _number(raw, "control_strength", 1.0, 0.0, 1.0)
    if video is not None and any(k.frame for k in keyframes):
        raise InputError("keyframes", "are not taken with a video: the source's control guides every frame "
                                      "(an image for frame 0 is)")
    if video is not None and audio_input is not None and raw.get("frame_count") is None:
        raise InputError("frame_count", "is needed with both video and audio_input: each would set the clip's "
                                        "length")
    no_frames = raw.get("frame_count") is None
    return VideoRequest(prompt, negative, width, height, frame_count, fps, seed, steps, cfg, audio, delivery,
                        mode, keyframes, loras, camera, camera_strength, enhance, audio_input,
                        audio_input is not None and no_frames, video, control, control_strength,
                        video is not None and no_frames, video is not None and raw.get("fps") is None)


def _image_spec(value: Any, field: str) -> str:
    if not isinstance(value, str):
        raise InputError(field, f"must be a base64 string or an https URL, got {_type_name(value)}")
    if not value.strip():
        raise InputError(field, "must be a base64 string or an https URL, got an empty string (leave the field "
                                "out, or set it to null, for none)")
    return value.strip()


def _keyframes(raw: dict, frame_count: int, max_keyframes: int) -> tuple[Keyframe, ...]:
    """`image` (with `image_strength`) is the keyframe at frame 0; `keyframes` adds more. A frame index counts
    from the end when negative (-1 is the last frame); every resolved index is inside the clip and used once."""
    found: list[Keyframe] = []
    if raw.get("image") is not None:
        found.append(Keyframe("image", _image_spec(raw["image"], "image"), 0,
                              _number(raw, "image_strength", 1.0, 0.0, 1.0)))
    elif raw.get("image_strength") is not None:
        raise InputError("image_strength", "needs an image")
    items = raw.get("keyframes")
    if items is None or items == []:  # an empty array is none, as for loras: flows that build the list send it
        return tuple(found)
    if not isinstance(items, list):
        raise InputError("keyframes", f"must be an array of {{image, frame, strength}} objects, got "
                                      f"{_type_name(items)}")
    if len(items) + len(found) > max_keyframes:
        given = f"{len(items)}{' and image' if found else ''}"
        raise InputError("keyframes", f"must hold at most {max_keyframes} images in all, image included "
                                      f"(MAX_KEYFRAMES), got {given}")
    taken = {k.frame: k.field for k in found}
    for n, item in enumerate(items):
        where = f"keyframes[{n}]"
        if not isinstance(item, dict):
            raise InputError(where, f"must be an object {{image, frame, strength}}, got {_type_name(item)}")
        unknown = sorted(str(k) for k in item if k not in KEYFRAME_FIELDS)
        if unknown:
            raise InputError(f"{where}.{unknown[0]}", f"is not a known field (known: {', '.join(KEYFRAME_FIELDS)})")
        image = _image_spec(item.get("image"), f"{where}.image")
        if item.get("frame") is None:
            raise InputError(f"{where}.frame", f"is required: a frame index from 0 to {frame_count - 1}, or "
                                               "negative from the end (-1 is the last frame)")
        frame = _int(item, "frame", None, -frame_count, frame_count - 1, f"{where}.frame")
        frame = frame + frame_count if frame < 0 else frame
        if frame in taken:
            raise InputError(f"{where}.frame", f"is frame {frame}, which {taken[frame]} already conditions: "
                                               "give each frame once")
        strength = _number(item, "strength", 1.0, 0.0, 1.0, f"{where}.strength")
        taken[frame] = where
        found.append(Keyframe(f"{where}.image", image, frame, strength))
    return tuple(sorted(found, key=lambda k: k.frame))


def _loras(raw: dict, max_loras: int) -> tuple[LoraSpec, ...]:
    items = raw.get("loras")
    if items is None:
        return ()
    if not isinstance(items, list):
        raise InputError("loras", f"must be an array of {{url, strength}} objects, got {_type_name(items)}")
    if len(items) > max_loras:
        raise InputError("loras", f"must hold at most {max_loras} LoRAs (MAX_LORAS), got {len(items)}")
    found: list[LoraSpec] = []
    urls: dict[str, int] = {}
    for n, item in enumerate(items):
        where = f"loras[{n}]"
        if not isinstance(item, dict):
            raise InputError(where, f"must be an object {{url, strength}}, got {_type_name(item)}")
        unknown = sorted(str(k) for k in item if k not in LORA_FIELDS)
        if unknown:
            raise InputError(f"{where}.{unknown[0]}", f"is not a known field (known: {', '.join(LORA_FIELDS)})")
        url = item.get("url")
        if not isinstance(url, str) or not url.strip():
            raise InputError(f"{where}.url", f"is required: an https URL of a .safetensors file, got "
                                             f"{_type_name(url)}")
        url = url.strip()
        if not url.startswith("https://"):
            raise InputError(f"{where}.url", "must be an https URL (https://...)")
        if url in urls:
            raise InputError(f"{where}.url", f"is the same as loras[{urls[url]}].url: give each LoRA once, with "
                                             "the sum of the strengths")
        urls[url] = n
        strength = _number(item, "strength", 1.0, *LORA_STRENGTH, f"{where}.strength")
        found.append(LoraSpec(f"{where}.url", url, strength))
    return tuple(found)


def check_span(frame_count: int, fps: int) -> None:
    """A clip spans (frame_count - 1) / fps seconds, at most LONGEST_CLIP_S, or InputError naming frame_count."""
    if (frame_count - 1) / fps > LONGEST_CLIP_S:
        longest = LONGEST_CLIP_S * fps + 1
        raise InputError("frame_count", f"{frame_count} frames at {fps} fps span {(frame_count - 1) / fps:.1f} s, "
                                        f"more than the {LONGEST_CLIP_S} s LTX-2's positions cover: at {fps} fps at "
                                        f"most {(longest - 1) // 8 * 8 + 1} frames, or a higher fps")


def longest_clip(width: int, height: int, fps: int, limits: ClipLimits, source: str,
                 source_frames: int) -> tuple[int, str | None]:
    """The most frames (8k+1) a clip at this size and fps may have when a source (a track, a video) of
    `source_frames` frames sets its length: within the source, MAX_FRAMES, MAX_CLIP_PIXELS and LTX-2's 20 s; and
    which of those cut it (None: the source itself)."""
    gen_w, gen_h = generation_size(width, height)
    caps = {source: source_frames, "MAX_FRAMES": limits.max_frames,
            "MAX_CLIP_PIXELS": limits.max_clip_pixels // (gen_w * gen_h),
            f"LTX-2's {LONGEST_CLIP_S} s": LONGEST_CLIP_S * fps + 1}
    limit = min(caps, key=caps.get)
    return (caps[limit] - 1) // 8 * 8 + 1, None if limit == source else limit


def _check_clip_pixels(width: int, height: int, frame_count: int, max_clip_pixels: int) -> None:
    """MAX_CLIP_PIXELS bounds the clip the graph renders (the size rounded up to GENERATION_MULTIPLE), which is
    what every memory class was measured to finish."""
    gen_w, gen_h = generation_size(width, height)
    if gen_w * gen_h * frame_count <= max_clip_pixels:
        return
    rendered = "" if (gen_w, gen_h) == (width, height) else f", rendered at {gen_w} x {gen_h} x {frame_count}"
    longest = max_clip_pixels // (gen_w * gen_h)
    most = f"at most {(longest - 1) // 8 * 8 + 1} frames" if longest >= 9 else "not even 9 frames: ask a smaller size"
    raise InputError("frame_count", f"makes {width} x {height} x {frame_count}{rendered} = "
                     f"{gen_w * gen_h * frame_count:,} pixels, more than MAX_CLIP_PIXELS ({max_clip_pixels:,}): "
                     f"at {width} x {height} {most}")


def _short_repr(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _type_name(value: Any) -> str:
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean", type(None): "null",
            int: "an integer", float: "a number"}.get(type(value), type(value).__name__)


def _text(raw: dict, field: str, max_chars: int, required: bool) -> str | None:
    value = raw.get(field)
    if value is None:
        if required:
            raise InputError(field, "is required: a non-empty string")
        return None
    if not isinstance(value, str):
        raise InputError(field, f"must be a string, got {_type_name(value)}")
    if "\x00" in value:
        raise InputError(field, "must not contain NUL characters")
    value = value.strip()
    if required and not value:
        raise InputError(field, "must not be empty")
    if len(value) > max_chars:
        raise InputError(field, f"must be at most {max_chars} characters, got {len(value)}")
    return value


def _int(raw: dict, field: str, default: int | None, low: int, high: int, label: str | None = None) -> int | None:
    """`raw[field]` as an integer from low to high; errors name `label` (default: the field)."""
    value = raw.get(field)
    field = label or field
    if value is None:
        return default
    # JSON has one number type: 121.0 is accepted as 121, 121.5 is not; booleans are not numbers.
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise InputError(field, f"must be an integer from {low} to {high}, got {_type_name(value)}")
    if not low <= value <= high:
        raise InputError(field, f"must be from {low} to {high}, got {value}")
    return value


def _whole_number(raw: dict, field: str, default: int, low: int, high: int) -> int:
    value = raw.get(field)
    if isinstance(value, float) and math.isfinite(value) and not value.is_integer():
        raise InputError(field, f"must be a whole number from {low} to {high} (LTX-2's audio latent takes an "
                                f"integer frame rate), got {value}")
    return _int(raw, field, default, low, high)


def _number(raw: dict, field: str, default: float | None, low: float, high: float,
            label: str | None = None) -> float | None:
    """A finite number within [low, high]; booleans are not numbers. Errors name `label` (default: the field)."""
    value = raw.get(field)
    field = label or field
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InputError(field, f"must be a number from {low} to {high}, got {_type_name(value)}")
    if not math.isfinite(value) or not low <= value <= high:
        raise InputError(field, f"must be a number from {low} to {high}, got {value}")
    return float(value)


_FIRST = object()


def _choice(raw: dict, field: str, choices: tuple[str, ...], default: Any = _FIRST) -> Any:
    """One of `choices`; absent or null is `default`, else the first."""
    value = raw.get(field)
    if value is None:
        return choices[0] if default is _FIRST else default
    if value not in choices:
        raise InputError(field, f"must be one of {', '.join(choices)}, got {_short_repr(value)}")
    return value


def _bool(raw: dict, field: str, default: bool) -> bool:
    value = raw.get(field)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise InputError(field, f"must be true or false, got {_type_name(value)}")
    return value


def _seed(raw: dict) -> int:
    value = raw.get("seed")
    if value is None or (value == -1 and not isinstance(value, bool)):
        return secrets.randbelow(RANDOM_SEED_MAX + 1)
    return _int(raw, "seed", None, 0, SEED_MAX)


def _size(raw: dict, settings: Settings) -> tuple[int, int]:
    aspect = raw.get("aspect_ratio")
    if aspect is not None:
        for field in ("width", "height"):
            if field in raw and raw[field] is not None:
                raise InputError("aspect_ratio", f"cannot be combined with {field}: give one or the other")
        return _size_from_aspect(aspect, settings)
    m = settings.size_multiple
    sizes = []
    for field, default in (("width", settings.default_width), ("height", settings.default_height)):
        value = _int(raw, field, default, settings.min_size, settings.max_size)
        if value % m:
            raise InputError(field, f"must be a multiple of {m}, got {value} (nearest: {_nearest(value, m)})")
        sizes.append(value)
    return sizes[0], sizes[1]


def _nearest(value: int, multiple: int) -> str:
    low = value // multiple * multiple
    return f"{low} or {low + multiple}"


def _size_from_aspect(aspect: Any, settings: Settings) -> tuple[int, int]:
    """The default frame area (1280x720's pixels) at the asked ratio, on the size grid, within the limits."""
    if aspect not in ASPECT_RATIOS:
        raise InputError("aspect_ratio", f"must be one of {', '.join(ASPECT_RATIOS)}, got {_short_repr(aspect)}")
    w_ratio, h_ratio = (int(x) for x in aspect.split(":"))
    area = settings.default_width * settings.default_height
    m = settings.size_multiple
    height = math.sqrt(area * h_ratio / w_ratio)
    width = height * w_ratio / h_ratio
    width, height = (max(settings.min_size, min(settings.max_size, round(v / m) * m)) for v in (width, height))
    return width - width % m, height - height % m
