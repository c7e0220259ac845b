"""The worker's settings: config.ini first, then environment overrides, as one typed, frozen object.

Every setting is declared once in SETTINGS below (section, key, environment variable, type). The README's
settings table and the tests are checked against this list, so a documented setting always does something.
"""

from __future__ import annotations

import configparser
import dataclasses
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from .rungs import Rung, parse_ladder

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG = ROOT / "config.ini"
CONFIG_ENV = "LTX2_CONFIG"  # an alternative config.ini, for deployments that mount their own


class SettingsError(ValueError):
    """A setting has a value of the wrong type or outside its range; the message names it."""


@dataclasses.dataclass(frozen=True)
class Setting:
    field: str
    section: str
    key: str
    env: str
    parse: Callable[[str], Any]


def _ranged(kind: type, low: float, high: float) -> Callable[[str], Any]:
    """A parser for a number of `kind` (int or float) from `low` to `high`: a value outside the range stops the
    worker at start, naming the setting and the range, instead of misbehaving in the first job."""

    span = f"{low:.12g} to {high:.12g}"

    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise ValueError(f"must be {'a whole number' if kind is int else 'a number'} from {span}") from None
        if not low <= value <= high:  # also refuses nan
            raise ValueError(f"must be from {span}")
        return value

    parse.range = (low, high)  # read by tools/settings_table.py
    return parse


def _url(text: str) -> str:
    text = text.strip().rstrip("/")
    if not text.startswith(("http://", "https://")):
        raise ValueError("must start with http:// or https://")
    return text


def _bool(text: str) -> bool:
    value = text.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off", ""):
        return False
    raise ValueError("must be true or false")


# libx264's presets, fastest first (the worker's LTX2SaveVideo node offers the same list)
X264_PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow")


def _x264_preset(text: str) -> str:
    value = text.strip()
    if value not in X264_PRESETS:
        raise ValueError(f"must be one of libx264's presets: {', '.join(X264_PRESETS)}")
    return value


def _auto(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    """`parse`, or None for "auto": the value is then decided where it is used (limits: from the GPU's memory
    class, ltx2_worker.gpu; the prefetch's yielding and its start files: from where the models are read,
    ltx2_worker.prefetch)."""

    def parse_or_auto(text: str) -> Any:
        if text.strip().lower() == "auto":
            return None
        try:
            return parse(text)
        except ValueError as exc:
            raise ValueError(f"must be auto or {exc.args[0].removeprefix('must be ')}") from None

    if hasattr(parse, "range"):
        parse_or_auto.range = parse.range
    return parse_or_auto


@dataclasses.dataclass(frozen=True)
class ClipLimits:
    """The largest clip a job may ask for: MAX_FRAMES and MAX_CLIP_PIXELS (width x height x frames as rendered)."""

    max_frames: int
    max_clip_pixels: int


# what every memory class finishes within the job timeout (docs/performance.md): 1920 x 1088 x 121 of pixels, 257
# frames; a class that was measured further says so in ltx2_worker.gpu
EVERY_CLASS_CLIP = ClipLimits(max_frames=257, max_clip_pixels=1920 * 1088 * 121)
# LTX-2's temporal positions are seconds, its position range 20 of them (ComfyUI's av_model.py,
# positional_embedding_max_pos[0]): a clip spans at most 20 s from its first frame to its last, (frames - 1) / fps
LONGEST_CLIP_S = 20


def _optional_path(text: str) -> Path | None:
    return Path(text) if text.strip() else None


# ranges that several settings share: a frame side in pixels, a frame count (8k+1 is checked apart), a frame rate
_SIDE = _ranged(int, 64, 8192)
_FRAMES = _ranged(int, 9, 2049)
_FPS = _ranged(int, 1, 240)

SETTINGS: tuple[Setting, ...] = (
    Setting("comfy_url", "comfy", "url", "COMFY_URL", _url),
    Setting("comfy_dir", "comfy", "dir", "COMFYUI_DIR", Path),
    Setting("comfy_output_dir_override", "comfy", "output_dir", "COMFY_OUTPUT_DIR", _optional_path),
    Setting("comfy_http_timeout_s", "comfy", "http_timeout_s", "COMFY_HTTP_TIMEOUT_S", _ranged(float, 1, 600)),
    Setting("comfy_python", "comfy", "python", "COMFY_PYTHON", str),
    Setting("comfy_start_timeout_s", "comfy", "start_timeout_s", "COMFY_START_TIMEOUT_S", _ranged(float, 5, 3600)),
    Setting("comfy_extra_args", "comfy", "extra_args", "COMFY_EXTRA_ARGS", str),
    Setting("comfy_reserve_vram_gb", "comfy", "reserve_vram_gb", "COMFY_RESERVE_VRAM_GB", _ranged(float, 0, 64)),
    Setting("decode_tile_px", "comfy", "decode_tile_px", "DECODE_TILE_PX", _ranged(int, 0, 4096)),
    Setting("compile_blocks", "comfy", "compile_blocks", "COMPILE_BLOCKS", _bool),
    Setting("early_prompts", "comfy", "early_prompts", "EARLY_PROMPTS", _bool),
    Setting("volume_path", "volume", "path", "NETWORK_VOLUME_PATH", Path),
    Setting("allow_container_disk", "volume", "allow_container_disk", "ALLOW_CONTAINER_DISK", _bool),
    Setting("enable_models", "volume", "enable_models", "ENABLE_MODELS", str),
    Setting("disk_reserve_mb", "volume", "disk_reserve_mb", "DISK_RESERVE_MB", _ranged(float, 0, 1_000_000)),
    Setting("lock_stale_s", "volume", "lock_stale_s", "PROVISION_LOCK_STALE_S", _ranged(float, 1, 3600)),
    Setting("provision_wait_s", "volume", "wait_s", "PROVISION_WAIT_S", _ranged(float, 1, 86_400)),
    Setting("sha256_after_download", "volume", "sha256_after_download", "SHA256_AFTER_DOWNLOAD", _bool),
    Setting("download_attempts", "volume", "download_attempts", "DOWNLOAD_ATTEMPTS", _ranged(int, 1, 100)),
    Setting("download_backoff_s", "volume", "download_backoff_s", "DOWNLOAD_BACKOFF_S", _ranged(float, 0.01, 600)),
    Setting("download_retry_window_s", "volume", "download_retry_window_s", "DOWNLOAD_RETRY_WINDOW_S",
            _ranged(float, 0.1, 86_400)),
    Setting("download_timeout_s", "volume", "download_timeout_s", "DOWNLOAD_TIMEOUT_S", _ranged(float, 1, 3600)),
    Setting("model_cache_path", "volume", "model_cache", "MODEL_CACHE_PATH", _optional_path),
    Setting("prefetch", "prefetch", "enabled", "PREFETCH", _bool),
    Setting("prefetch_readers", "prefetch", "readers", "PREFETCH_READERS", _ranged(int, 1, 64)),
    Setting("prefetch_page_in", "prefetch", "page_in", "PREFETCH_PAGE_IN", _bool),
    Setting("prefetch_libraries", "prefetch", "libraries", "PREFETCH_LIBRARIES", _auto(_bool)),
    Setting("prefetch_yield_to_comfy", "prefetch", "yield_to_comfy", "PREFETCH_YIELD_TO_COMFY", _auto(_bool)),
    Setting("prefetch_headroom_gb", "prefetch", "headroom_gb", "PREFETCH_HEADROOM_GB", _ranged(float, 0, 1024)),
    Setting("prefetch_timeout_s", "prefetch", "timeout_s", "PREFETCH_TIMEOUT_S", _ranged(float, 1, 3600)),
    Setting("comfy_ready_timeout_s", "comfy", "ready_timeout_s", "COMFY_READY_TIMEOUT_S", _ranged(float, 0.01, 3600)),
    Setting("comfy_log_file", "comfy", "log_file", "COMFY_LOG_FILE", Path),
    Setting("comfy_pid_file", "comfy", "pid_file", "COMFY_PID_FILE", Path),
    Setting("boot_error_file", "job", "boot_error_file", "BOOT_ERROR_FILE", Path),
    Setting("job_timeout_s", "job", "timeout_s", "JOB_TIMEOUT_S", _ranged(float, 1, 86_400)),
    Setting("progress_interval_s", "job", "progress_interval_s", "PROGRESS_INTERVAL_S", _ranged(float, 0, 600)),
    Setting("max_inline_mb", "output", "max_inline_mb", "MAX_INLINE_MB", _ranged(float, 0.001, 1000)),
    Setting("bucket_name", "output", "bucket_name", "BUCKET_NAME", str),
    Setting("bucket_url_expiry_s", "output", "url_expiry_s", "BUCKET_URL_EXPIRY_S", _ranged(int, 1, 604_800)),
    Setting("x264_preset", "output", "x264_preset", "X264_PRESET", _x264_preset),
    Setting("x264_crf", "output", "x264_crf", "X264_CRF", _ranged(int, 0, 51)),
    Setting("oom_ladder", "job", "oom_ladder", "OOM_LADDER", parse_ladder),
    Setting("max_image_mb", "limits", "max_image_mb", "MAX_IMAGE_MB", _ranged(float, 0.01, 100)),
    Setting("max_image_pixels", "limits", "max_image_pixels", "MAX_IMAGE_PIXELS", _ranged(int, 4096, 1_000_000_000)),
    Setting("max_audio_mb", "limits", "max_audio_mb", "MAX_AUDIO_MB", _ranged(float, 0.01, 500)),
    Setting("max_audio_seconds", "limits", "max_audio_seconds", "MAX_AUDIO_SECONDS", _ranged(float, 1, 3600)),
    Setting("max_video_mb", "limits", "max_video_mb", "MAX_VIDEO_MB", _ranged(float, 0.01, 5000)),
    Setting("max_video_seconds", "limits", "max_video_seconds", "MAX_VIDEO_SECONDS", _ranged(float, 1, 600)),
    Setting("max_video_pixels", "limits", "max_video_pixels", "MAX_VIDEO_PIXELS", _ranged(int, 4096, 100_000_000)),
    Setting("max_keyframes", "limits", "max_keyframes", "MAX_KEYFRAMES", _ranged(int, 1, 16)),
    Setting("max_loras", "loras", "max_loras", "MAX_LORAS", _ranged(int, 0, 8)),
    Setting("max_lora_mb", "loras", "max_lora_mb", "MAX_LORA_MB", _ranged(float, 1, 50_000)),
    Setting("lora_fetch_timeout_s", "loras", "fetch_timeout_s", "LORA_FETCH_TIMEOUT_S", _ranged(float, 1, 3600)),
    Setting("lora_cache_dir_setting", "loras", "cache_dir", "LORA_CACHE_DIR", Path),
    Setting("lora_cache_gb", "loras", "cache_gb", "LORA_CACHE_GB", _ranged(float, 0.1, 100_000)),
    Setting("max_prompt_chars", "limits", "max_prompt_chars", "MAX_PROMPT_CHARS", _ranged(int, 1, 100_000)),
    Setting("size_multiple", "limits", "size_multiple", "SIZE_MULTIPLE", _ranged(int, 1, 64)),
    Setting("min_size", "limits", "min_size", "MIN_SIZE", _SIDE),
    Setting("max_size", "limits", "max_size", "MAX_SIZE", _SIDE),
    Setting("max_frames", "limits", "max_frames", "MAX_FRAMES", _auto(_FRAMES)),
    Setting("max_clip_pixels", "limits", "max_clip_pixels", "MAX_CLIP_PIXELS",
            _auto(_ranged(int, 64 * 64 * 9, 10**10))),
    Setting("min_fps", "limits", "min_fps", "MIN_FPS", _FPS),
    Setting("max_fps", "limits", "max_fps", "MAX_FPS", _FPS),
    Setting("max_steps", "limits", "max_steps", "MAX_STEPS", _ranged(int, 1, 500)),
    Setting("max_cfg", "limits", "max_cfg", "MAX_CFG", _ranged(float, 1, 100)),
    Setting("default_width", "defaults", "width", "DEFAULT_WIDTH", _SIDE),
    Setting("default_height", "defaults", "height", "DEFAULT_HEIGHT", _SIDE),
    Setting("default_frame_count", "defaults", "frame_count", "DEFAULT_FRAME_COUNT", _FRAMES),
    Setting("default_fps", "defaults", "fps", "DEFAULT_FPS", _FPS),
    Setting("enhance_max_tokens", "defaults", "enhance_max_tokens", "ENHANCE_MAX_TOKENS", _ranged(int, 1, 4096)),
)


@dataclasses.dataclass(frozen=True)
class Settings:
    comfy_url: str
    comfy_dir: Path
    comfy_output_dir_override: Path | None
    comfy_http_timeout_s: float
    comfy_python: str
    comfy_start_timeout_s: float
    comfy_extra_args: str
    comfy_reserve_vram_gb: float
    decode_tile_px: int
    compile_blocks: bool
    early_prompts: bool
    volume_path: Path
    allow_container_disk: bool
    enable_models: str
    disk_reserve_mb: float
    lock_stale_s: float
    provision_wait_s: float
    sha256_after_download: bool
    download_attempts: int
    download_backoff_s: float
    download_retry_window_s: float
    download_timeout_s: float
    model_cache_path: Path | None
    prefetch: bool
    prefetch_readers: int
    prefetch_page_in: bool
    prefetch_libraries: bool | None  # None: auto, on where the models come from RunPod's model cache
    prefetch_yield_to_comfy: bool | None  # None: auto, on where the models come from RunPod's model cache and
    # ComfyUI's start files were not read first
    prefetch_headroom_gb: float
    prefetch_timeout_s: float
    comfy_ready_timeout_s: float
    comfy_log_file: Path
    comfy_pid_file: Path
    boot_error_file: Path
    job_timeout_s: float
    progress_interval_s: float
    max_inline_mb: float
    oom_ladder: tuple[Rung, ...]
    bucket_name: str
    bucket_url_expiry_s: int
    x264_preset: str
    x264_crf: int
    max_image_mb: float
    max_image_pixels: int
    max_audio_mb: float
    max_audio_seconds: float
    max_video_mb: float
    max_video_seconds: float
    max_video_pixels: int
    max_keyframes: int
    max_loras: int
    max_lora_mb: float
    lora_fetch_timeout_s: float
    lora_cache_dir_setting: Path
    lora_cache_gb: float
    max_prompt_chars: int
    size_multiple: int
    min_size: int
    max_size: int
    max_frames: int | None  # None: auto, the memory class's (clip_limits)
    max_clip_pixels: int | None
    min_fps: int
    max_fps: int
    max_steps: int
    max_cfg: float
    default_width: int
    default_height: int
    default_frame_count: int
    default_fps: int
    enhance_max_tokens: int

    @property
    def comfy_input_dir(self) -> Path:
        """Where ComfyUI keeps uploaded images; image-to-video first frames are removed from here after each job."""
        return self.comfy_dir / "input"

    @property
    def comfy_output_dir(self) -> Path:
        """ComfyUI's output folder: explicit, or the checkout's own `output/`."""
        return self.comfy_output_dir_override or self.comfy_dir / "output"

    @property
    def lora_cache_dir(self) -> Path:
        """Where requests' LoRAs are kept: LORA_CACHE_DIR, a relative one inside the network volume."""
        return self.volume_path / self.lora_cache_dir_setting

    def clip_limits(self, memory_class: ClipLimits = EVERY_CLASS_CLIP) -> ClipLimits:
        """MAX_FRAMES and MAX_CLIP_PIXELS where set, the memory class's where auto."""
        return ClipLimits(self.max_frames or memory_class.max_frames,
                          self.max_clip_pixels or memory_class.max_clip_pixels)

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)


def config_path(env: Mapping[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    return Path(env.get(CONFIG_ENV) or DEFAULT_CONFIG)


def read_config(path: Path) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None)
    if not parser.read(path, encoding="utf-8"):
        raise SettingsError(f"config file {path} cannot be read")
    return parser


def load_settings(config_file: str | Path | None = None, env: Mapping[str, str] | None = None) -> Settings:
    """Read config.ini (or $LTX2_CONFIG), apply environment overrides, and check every value."""
    env = os.environ if env is None else env
    path = Path(config_file) if config_file else config_path(env)
    parser = read_config(path)
    values: dict[str, Any] = {}
    for s in SETTINGS:
        raw = env.get(s.env)
        source = f"environment variable {s.env}"
        if raw is None:
            if not parser.has_option(s.section, s.key):
                raise SettingsError(f"{path}: [{s.section}] {s.key} is missing")
            raw = parser.get(s.section, s.key)
            source = f"{path.name} [{s.section}] {s.key}"
        try:
            values[s.field] = s.parse(raw)
        except ValueError as exc:
            raise SettingsError(f"{source} = {raw!r}: {exc}") from None
    settings = Settings(**values)
    _check_consistency(settings)
    return settings


def _check_consistency(s: Settings) -> None:
    if s.min_size > s.max_size:
        raise SettingsError(f"MIN_SIZE ({s.min_size}) is larger than MAX_SIZE ({s.max_size})")
    if s.min_fps > s.max_fps:
        raise SettingsError(f"MIN_FPS ({s.min_fps}) is larger than MAX_FPS ({s.max_fps})")
    for name, value in (("DEFAULT_WIDTH", s.default_width), ("DEFAULT_HEIGHT", s.default_height)):
        if value % s.size_multiple or not s.min_size <= value <= s.max_size:
            raise SettingsError(f"{name} ({value}) must be a multiple of SIZE_MULTIPLE ({s.size_multiple}) "
                                f"from MIN_SIZE to MAX_SIZE ({s.min_size}-{s.max_size})")
    if s.max_frames is not None and s.max_frames % 8 != 1:  # its own error first, not the default frame count's
        raise SettingsError(f"MAX_FRAMES ({s.max_frames}) must be 8k+1 (9, 17, ..., 121, ..., 257)")
    # a default serves every request without the field, so with a limit on auto it must fit every memory class
    limits = s.clip_limits()
    frames_limit = (f"MAX_FRAMES ({limits.max_frames})" if s.max_frames else
                    f"MAX_FRAMES on auto ({limits.max_frames}, what every memory class allows)")
    if s.default_frame_count % 8 != 1 or s.default_frame_count > limits.max_frames:
        raise SettingsError(f"DEFAULT_FRAME_COUNT ({s.default_frame_count}) must be 8k+1 and at most {frames_limit}")
    if s.default_width * s.default_height * s.default_frame_count > limits.max_clip_pixels:
        pixels_limit = (f"MAX_CLIP_PIXELS ({limits.max_clip_pixels})" if s.max_clip_pixels else
                        f"MAX_CLIP_PIXELS on auto ({limits.max_clip_pixels}, what every memory class allows)")
        raise SettingsError(f"the default clip ({s.default_width} x {s.default_height} x {s.default_frame_count}) "
                            f"has more pixels than {pixels_limit}")
    if not s.min_fps <= s.default_fps <= s.max_fps:
        raise SettingsError(f"DEFAULT_FPS ({s.default_fps}) must be from MIN_FPS to MAX_FPS")
    if (s.default_frame_count - 1) / s.default_fps > LONGEST_CLIP_S:
        raise SettingsError(f"the default clip ({s.default_frame_count} frames at DEFAULT_FPS {s.default_fps}) spans "
                            f"more than LTX-2's {LONGEST_CLIP_S} s")
