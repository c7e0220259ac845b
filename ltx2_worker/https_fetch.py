"""Downloads from a URL a job names (an image, a LoRA): https only, from public addresses only, from the address
that was checked (the host is resolved once and the connection goes to that address, so a DNS answer that
changes in between cannot send it elsewhere), every redirect checked again, with a size cap and a deadline for
the whole download. Errors are InputError naming the request's field.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import socket
import time
from collections.abc import Callable, Iterator
from urllib.parse import urljoin, urlparse

import certifi
import urllib3

from .job import InputError

MAX_REDIRECTS = 3
CHUNK = 1024 * 1024


def _address_allowed(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """Only public addresses: a URL in a job must not reach the worker's own network (ComfyUI, metadata services)."""
    return address.is_global


def checked_address(url: str, field: str) -> str:
    """The address to connect to for `url`: its host resolved once, every address it has checked."""
    parsed = urlparse(url)
    if parsed.scheme != "https":
        raise InputError(field, f"URL must use https, got {parsed.scheme or 'no scheme'}")
    host = parsed.hostname or ""
    try:
        infos = socket.getaddrinfo(host, parsed.port or 443, proto=socket.IPPROTO_TCP)
    except (socket.gaierror, UnicodeError, ValueError):
        raise InputError(field, f"URL host {host!r} cannot be resolved") from None
    addresses = [ipaddress.ip_address(info[4][0]) for info in infos]
    if not addresses or not all(_address_allowed(a) for a in addresses):
        raise InputError(field, f"URL host {host!r} is not a public address")
    return str(addresses[0])


def _ca_bundle() -> str:
    """The CA certificates requests would use: REQUESTS_CA_BUNDLE or CURL_CA_BUNDLE, else certifi's."""
    return os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or certifi.where()


@contextlib.contextmanager
def _get(url: str, address: str, headers: dict[str, str]) -> Iterator[urllib3.BaseHTTPResponse]:
    """GET `url` from `address` over TLS, with the certificate checked for the URL's host name (SNI too); the
    response streams until the block ends, which closes the connection."""
    parsed = urlparse(url)
    host = parsed.hostname or ""
    target = (parsed.path or "/") + (f"?{parsed.query}" if parsed.query else "")
    with urllib3.HTTPSConnectionPool(address, port=parsed.port or 443, server_hostname=host, assert_hostname=host,
                                     cert_reqs="CERT_REQUIRED", ca_certs=_ca_bundle(), retries=False, maxsize=1,
                                     timeout=urllib3.Timeout(connect=5, read=10)) as pool:
        response = pool.urlopen("GET", target, headers={"Host": parsed.netloc.rpartition("@")[2], **headers},
                                redirect=False, preload_content=False)
        try:
            yield response
        finally:
            response.release_conn()


def fetch(url: str, field: str, max_bytes: int, timeout_s: float, write: Callable[[bytes], None],
          headers: Callable[[str], dict[str, str]] = lambda url: {}) -> None:
    """Stream the body of `url` into `write`, at most `max_bytes` within `timeout_s`. `headers(url)` gives each
    hop's extra headers (a token only for the host it belongs to: a redirect elsewhere does not carry it)."""
    give_up = time.monotonic() + timeout_s
    too_big = InputError(field, f"must be at most {max_bytes / 1_000_000:g} MB")
    for _ in range(MAX_REDIRECTS + 1):
        address = checked_address(url, field)
        try:
            with _get(url, address, headers(url)) as response:
                if response.status in (301, 302, 303, 307, 308):
                    url = urljoin(url, response.headers.get("Location", ""))
                    continue
                if response.status != 200:
                    raise InputError(field, f"URL answered HTTP {response.status}")
                if int(response.headers.get("Content-Length") or 0) > max_bytes:
                    raise too_big
                size = 0
                for chunk in response.stream(CHUNK):
                    size += len(chunk)
                    if size > max_bytes:
                        raise too_big
                    if time.monotonic() > give_up:
                        raise InputError(field, f"URL took longer than {timeout_s:g} s to download")
                    write(chunk)
                return
        except urllib3.exceptions.HTTPError as exc:
            raise InputError(field, f"URL could not be fetched: {type(exc).__name__}") from None
    raise InputError(field, f"URL redirected more than {MAX_REDIRECTS} times")


def fetch_bytes(url: str, field: str, max_bytes: int, timeout_s: float) -> bytes:
    body = bytearray()
    fetch(url, field, max_bytes, timeout_s, body.extend)
    return bytes(body)
