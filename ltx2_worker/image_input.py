"""The first frame of an image-to-video job: base64 (with or without a `data:` prefix) or an https URL,
fetched with a timeout and a size cap from the address that was checked (public only, https only, every
redirect checked again), then decoded and checked (format, pixel and byte limits) before ComfyUI ever sees it.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import io
import ipaddress
import os
import socket
import time
from collections.abc import Iterator
from urllib.parse import urljoin, urlparse

import certifi
import urllib3
from PIL import Image, UnidentifiedImageError

from .job import InputError

FORMATS = {"PNG": "png", "JPEG": "jpg", "WEBP": "webp"}
MAX_REDIRECTS = 3
FETCH_TIMEOUT_S = 20.0  # the whole download, not just one read
MIN_SIDE = 64


def load_image(spec: str, max_bytes: int, max_pixels: int) -> tuple[bytes, str]:
    """(image bytes, file extension) of a valid image, or InputError("image", ...)."""
    data = _fetch(spec, max_bytes) if spec.startswith(("https://", "http://")) else _decode_base64(spec, max_bytes)
    return data, _check(data, max_pixels)


def _decode_base64(text: str, max_bytes: int) -> bytes:
    if text.startswith("data:"):
        header, _, text = text.partition(",")
        if not header.endswith(";base64"):
            raise InputError("image", "a data: URL must be base64-encoded (data:image/png;base64,...)")
    if len(text) > 4 * (max_bytes // 3 + 1):
        raise InputError("image", f"must be at most {max_bytes // 1_000_000} MB")
    try:
        return base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError):
        raise InputError("image", "must be base64 (optionally with a data: prefix) or an https URL") from None


def _address_allowed(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """Only public addresses: an image URL must not reach the worker's own network (ComfyUI, metadata services)."""
    return address.is_global


def _checked_address(url: str) -> str:
    """The address to connect to for `url`: its host resolved once, every address it has checked. The download
    then connects to this address (not to the name again), so a DNS answer that changes between the check and
    the connection (DNS rebinding) cannot send it elsewhere."""
    parsed = urlparse(url)
    if parsed.scheme != "https":
        raise InputError("image", f"URL must use https, got {parsed.scheme or 'no scheme'}")
    host = parsed.hostname or ""
    try:
        infos = socket.getaddrinfo(host, parsed.port or 443, proto=socket.IPPROTO_TCP)
    except (socket.gaierror, UnicodeError):
        raise InputError("image", f"URL host {host!r} cannot be resolved") from None
    addresses = [ipaddress.ip_address(info[4][0]) for info in infos]
    if not addresses or not all(_address_allowed(a) for a in addresses):
        raise InputError("image", f"URL host {host!r} is not a public address")
    return str(addresses[0])


def _ca_bundle() -> str:
    """The CA certificates requests would use: REQUESTS_CA_BUNDLE or CURL_CA_BUNDLE, else certifi's."""
    return os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or certifi.where()


@contextlib.contextmanager
def _get(url: str, address: str) -> Iterator[urllib3.BaseHTTPResponse]:
    """GET `url` from `address` over TLS, with the certificate checked for the URL's host name (SNI too); the
    response streams until the block ends, which closes the connection."""
    parsed = urlparse(url)
    host = parsed.hostname or ""
    target = (parsed.path or "/") + (f"?{parsed.query}" if parsed.query else "")
    with urllib3.HTTPSConnectionPool(address, port=parsed.port or 443, server_hostname=host, assert_hostname=host,
                                     cert_reqs="CERT_REQUIRED", ca_certs=_ca_bundle(), retries=False, maxsize=1,
                                     timeout=urllib3.Timeout(connect=5, read=10)) as pool:
        response = pool.urlopen("GET", target, headers={"Host": parsed.netloc.rpartition("@")[2]}, redirect=False,
                                preload_content=False)
        try:
            yield response
        finally:
            response.release_conn()


def _fetch(url: str, max_bytes: int) -> bytes:
    give_up = time.monotonic() + FETCH_TIMEOUT_S
    for _ in range(MAX_REDIRECTS + 1):
        address = _checked_address(url)
        try:
            with _get(url, address) as response:
                if response.status in (301, 302, 303, 307, 308):
                    url = urljoin(url, response.headers.get("Location", ""))
                    continue
                if response.status != 200:
                    raise InputError("image", f"URL answered HTTP {response.status}")
                body = bytearray()
                for chunk in response.stream(64 * 1024):
                    body += chunk
                    if len(body) > max_bytes:
                        raise InputError("image", f"must be at most {max_bytes // 1_000_000} MB")
                    if time.monotonic() > give_up:
                        raise InputError("image", f"URL took longer than {FETCH_TIMEOUT_S:g} s to download")
                return bytes(body)
        except urllib3.exceptions.HTTPError as exc:
            raise InputError("image", f"URL could not be fetched: {type(exc).__name__}") from None
    raise InputError("image", f"URL redirected more than {MAX_REDIRECTS} times")


def _check(data: bytes, max_pixels: int) -> str:
    try:
        with Image.open(io.BytesIO(data)) as img:
            kind, (width, height) = img.format, img.size
            if kind not in FORMATS:
                raise InputError("image", f"must be PNG, JPEG or WebP, got {kind}")
            if width * height > max_pixels:
                raise InputError("image", f"must have at most {max_pixels} pixels, got {width}x{height}")
            if min(width, height) < MIN_SIDE:
                raise InputError("image", f"must be at least {MIN_SIDE}x{MIN_SIDE} pixels, got {width}x{height}")
            img.load()  # decodes fully: a truncated or corrupt file fails here, not inside ComfyUI
    except InputError:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError):
        raise InputError("image", "is not a decodable PNG, JPEG or WebP image") from None
    return FORMATS[kind]
