"""A job's `video`, the source clip of video-to-video: base64 or an https URL like an image, checked before
ComfyUI is asked (bytes, container, a decodable video stream, frames, size, duration) by the same decoder
ComfyUI's LoadVideo uses (ltx2_worker/media_probe.py, in ComfyUI's Python), then the clip fitted to it: its
frames follow the source's one to one, so the clip lasts at most as long as the source.
"""

from __future__ import annotations

import dataclasses

from .job import InputError, VideoRequest, check_span, longest_clip
from .media import read_media
from .settings import ClipLimits, Settings

FIELD = "video"
FETCH_TIMEOUT_S = 60.0
# PyAV's container names for the accepted formats -> the extension the file is handed to ComfyUI under
CONTAINERS = {"mov,mp4,m4a,3gp,3g2,mj2": "mp4", "matroska,webm": "webm"}
FORMATS = "MP4, MOV or WebM"


@dataclasses.dataclass(frozen=True)
class SourceVideo:
    data: bytes = dataclasses.field(repr=False)
    extension: str
    frames: int
    fps: float
    width: int
    height: int

    @property
    def seconds(self) -> float:
        return self.frames / self.fps


def load_video(spec: str, settings: Settings) -> SourceVideo:
    """The source clip of `spec` (base64 or https URL), decoded once to check it, or InputError naming video."""
    data, extension, facts = read_media(spec, FIELD, "video", f"an {FORMATS} video", CONTAINERS,
                                        int(settings.max_video_mb * 1_000_000), FETCH_TIMEOUT_S,
                                        settings.comfy_python)
    source = SourceVideo(data, extension, facts["frames"], facts["fps"], facts["width"], facts["height"])
    if source.width * source.height > settings.max_video_pixels:
        raise InputError(FIELD, f"has {source.width}x{source.height} frames, more than MAX_VIDEO_PIXELS "
                                f"({settings.max_video_pixels}) pixels")
    if source.seconds > settings.max_video_seconds:
        raise InputError(FIELD, f"lasts {source.seconds:.1f} s, more than MAX_VIDEO_SECONDS "
                                f"({settings.max_video_seconds:g} s)")
    if source.frames < 9:
        raise InputError(FIELD, f"has {source.frames} frames; a clip needs at least 9")
    return source


def fit_clip(req: VideoRequest, source: SourceVideo, settings: Settings,
             memory_class: ClipLimits) -> tuple[VideoRequest, dict]:
    """The request with the source's frame rate when it gave none (rounded, within MIN_FPS..MAX_FPS) and, when it
    gave no frame count, the most 8k+1 frames the source holds within MAX_FRAMES, MAX_CLIP_PIXELS and LTX-2's 20 s;
    a frame count the source does not hold is refused. Returns the request and the response's `control` facts."""
    fps = req.fps
    if req.fps_from_video:
        fps = min(max(round(source.fps), settings.min_fps), settings.max_fps)
    report = {"source_frames": source.frames, "source_fps": round(source.fps, 3),
              "source_size": [source.width, source.height]}
    if not req.frames_from_video:
        if req.frame_count > source.frames:
            raise InputError("frame_count", f"is {req.frame_count}, more than the video's {source.frames} frames: "
                                            "ask fewer, or leave frame_count out to match the video")
        check_span(req.frame_count, fps)  # at the source's fps, which parse_request did not know
        return dataclasses.replace(req, fps=fps), {**report, "cut_by": None}
    frames, cut_by = longest_clip(req.width, req.height, fps, settings.clip_limits(memory_class), "the video",
                                  source.frames)
    return dataclasses.replace(req, fps=fps, frame_count=frames), {**report, "cut_by": cut_by}
