"""An image a job conditions on (`image`, `keyframes[i].image`): base64 (with or without a `data:` prefix) or
an https URL (fetched by ltx2_worker.https_fetch: public addresses only, every redirect checked, a size cap and
a deadline), then decoded and checked (format, pixel and byte limits) before ComfyUI ever sees it.
"""

from __future__ import annotations

import base64
import binascii
import io

from PIL import Image, UnidentifiedImageError

from .https_fetch import fetch_bytes
from .job import InputError

FORMATS = {"PNG": "png", "JPEG": "jpg", "WEBP": "webp"}
FETCH_TIMEOUT_S = 20.0  # the whole download, not just one read
MIN_SIDE = 64


def load_image(spec: str, max_bytes: int, max_pixels: int, field: str = "image") -> tuple[bytes, str]:
    """(image bytes, file extension) of a valid image, or InputError(field, ...)."""
    data = read_spec(spec, field, max_bytes, FETCH_TIMEOUT_S)
    return data, _check(data, max_pixels, field)


def read_spec(spec: str, field: str, max_bytes: int, fetch_timeout_s: float) -> bytes:
    """The bytes of a file a request sends (an image, `audio_input`, `video`): fetched when `spec` is an http(s)
    URL, else decoded from base64; at most `max_bytes`, or InputError naming `field`."""
    if spec.startswith(("https://", "http://")):
        return fetch_bytes(spec, field, max_bytes, fetch_timeout_s)
    return decode_base64(spec, max_bytes, field)


def decode_base64(text: str, max_bytes: int, field: str) -> bytes:
    """A file sent inline (an image, or `audio_input`): base64, with or without a data: prefix, at most
    `max_bytes` once decoded."""
    if text.startswith("data:"):
        header, _, text = text.partition(",")
        if not header.endswith(";base64"):
            raise InputError(field, "a data: URL must be base64-encoded (data:<type>;base64,...)")
    if len(text) > 4 * (max_bytes // 3 + 1):
        raise InputError(field, f"must be at most {max_bytes / 1_000_000:g} MB")
    try:
        return base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError):
        raise InputError(field, "must be base64 (optionally with a data: prefix) or an https URL") from None


def _check(data: bytes, max_pixels: int, field: str) -> str:
    try:
        with Image.open(io.BytesIO(data)) as img:
            kind, (width, height) = img.format, img.size
            if kind not in FORMATS:
                raise InputError(field, f"must be PNG, JPEG or WebP, got {kind}")
            if width * height > max_pixels:
                raise InputError(field, f"must have at most {max_pixels} pixels, got {width}x{height}")
            if min(width, height) < MIN_SIDE:
                raise InputError(field, f"must be at least {MIN_SIDE}x{MIN_SIDE} pixels, got {width}x{height}")
            img.load()  # decodes fully: a truncated or corrupt file fails here, not inside ComfyUI
    except InputError:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError):
        raise InputError(field, "is not a decodable PNG, JPEG or WebP image") from None
    return FORMATS[kind]
