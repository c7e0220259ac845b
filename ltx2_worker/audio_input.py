"""A job's `audio_input`, the track the clip is generated to (audio-to-video): base64 or an https URL like an
image, checked before ComfyUI is asked (bytes, container, a decodable audio stream, duration), then the clip
fitted to it. ComfyUI's LoadAudio decodes it with PyAV in ComfyUI's Python, so the check runs there too
(ltx2_worker/media_probe.py): what passes here is what LoadAudio can read.
"""

from __future__ import annotations

import dataclasses

from .job import InputError, VideoRequest, longest_clip
from .media import read_media
from .settings import ClipLimits, Settings

FIELD = "audio_input"
FETCH_TIMEOUT_S = 30.0
# PyAV's container names for the accepted formats -> the extension the file is handed to ComfyUI under
CONTAINERS = {"wav": "wav", "mp3": "mp3", "flac": "flac", "ogg": "ogg", "aac": "aac",
              "mov,mp4,m4a,3gp,3g2,mj2": "m4a"}
FORMATS = "WAV, MP3, FLAC, OGG, M4A or AAC"


@dataclasses.dataclass(frozen=True)
class AudioTrack:
    data: bytes = dataclasses.field(repr=False)  # megabytes: never in a log line
    extension: str
    seconds: float
    sample_rate: int
    channels: int


def load_audio(spec: str, settings: Settings) -> AudioTrack:
    """The track of `spec` (base64 or https URL), decoded once to check it, or InputError naming audio_input."""
    data, extension, facts = read_media(spec, FIELD, "audio", f"{FORMATS} audio", CONTAINERS,
                                        int(settings.max_audio_mb * 1_000_000), FETCH_TIMEOUT_S,
                                        settings.comfy_python)
    if facts["seconds"] > settings.max_audio_seconds:
        raise InputError(FIELD, f"lasts {facts['seconds']:.1f} s, more than MAX_AUDIO_SECONDS "
                                f"({settings.max_audio_seconds:g} s)")
    return AudioTrack(data, extension, facts["seconds"], facts["sample_rate"], facts["channels"])


def fit_clip(req: VideoRequest, track: AudioTrack, settings: Settings,
             memory_class: ClipLimits) -> tuple[VideoRequest, dict]:
    """The request with its frame count set by the track when it gave none: the most 8k+1 frames the track
    covers at its fps, within MAX_FRAMES, MAX_CLIP_PIXELS and LTX-2's 20 s; with a frame count, the track must
    cover it. Returns the request and the response's `audio_input` report."""
    frames_in_track = int(track.seconds * req.fps + 1e-6)
    if frames_in_track < 9:
        raise InputError(FIELD, f"lasts {track.seconds:.2f} s, shorter than the shortest clip (9 frames at "
                                f"{req.fps} fps: {9 / req.fps:.2f} s)")
    report = {"seconds": round(track.seconds, 3), "sample_rate": track.sample_rate, "channels": track.channels}
    if not req.frames_from_audio:
        if req.frame_count > frames_in_track:
            raise InputError("frame_count", f"{req.frame_count} frames at {req.fps} fps last "
                                            f"{req.frame_count / req.fps:.2f} s, longer than audio_input's "
                                            f"{track.seconds:.2f} s: ask fewer frames, or leave frame_count out to "
                                            "match the track")
        return req, {**report, "used_seconds": round(req.frame_count / req.fps, 3)}
    frames, cut_by = longest_clip(req.width, req.height, req.fps, settings.clip_limits(memory_class), "the track",
                                  frames_in_track)
    req = dataclasses.replace(req, frame_count=frames)
    report.update(used_seconds=round(frames / req.fps, 3), cut_by=cut_by)
    return req, report
