"""An image URL is fetched over real TLS from loopback servers: from the address that was checked, never from
what a second DNS answer says (DNS rebinding), with the certificate checked for the URL's host name, and every
redirect checked again. DNS is the test's: `socket.getaddrinfo` answers for the made-up host names, and the
address rule admits 127.0.0.1 (the "public" host here) but not 127.0.0.2 (the "internal" one)."""

from __future__ import annotations

import io
import ipaddress
import socket

import pytest
from PIL import Image

from ltx2_worker import https_fetch
from ltx2_worker.image_input import load_image
from ltx2_worker.job import InputError

from https_site import Site, certificates

PUBLIC, INTERNAL = "127.0.0.1", "127.0.0.2"


def _png(width: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (width, 64), (200, 30, 30)).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture
def web(tmp_path, monkeypatch):
    """Two sites on one port: "public" (127.0.0.1) and "internal" (127.0.0.2), and the test's DNS, in which
    images.example answers 127.0.0.1 once and 127.0.0.2 after that, and internal.example is 127.0.0.2."""
    paths = certificates(tmp_path, ["images.example", "internal.example"])
    with socket.socket() as s:
        s.bind((PUBLIC, 0))
        port = s.getsockname()[1]
    public = Site(PUBLIC, port, paths, {"/a.png": _png(96),
                                         "/hop": f"https://internal.example:{port}/a.png"})
    internal = Site(INTERNAL, port, paths, {"/a.png": _png(128)})
    asked: list[str] = []
    real = socket.getaddrinfo

    def resolve(host, *args, **kwargs):
        if host == "images.example":
            asked.append(host)
            return real(PUBLIC if len(asked) == 1 else INTERNAL, *args, **kwargs)
        if host == "internal.example":
            return real(INTERNAL, *args, **kwargs)
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", resolve)
    monkeypatch.setattr(https_fetch, "_address_allowed", lambda a: a == ipaddress.ip_address(PUBLIC))
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(paths["ca"]))
    yield {"port": port, "public": public, "internal": internal}
    public.close()
    internal.close()


def test_the_image_comes_from_the_checked_address_even_when_dns_changes_its_answer(web):
    data, ext = load_image(f"https://images.example:{web['port']}/a.png", 8_000_000, 16_000_000)
    assert ext == "png" and Image.open(io.BytesIO(data)).size == (96, 64), "the image of the checked address"
    assert web["public"].hits == ["/a.png"] and web["internal"].hits == []


def test_a_redirect_is_checked_again_and_one_to_an_internal_address_is_refused(web):
    with pytest.raises(InputError, match="'internal.example' is not a public address"):
        load_image(f"https://images.example:{web['port']}/hop", 8_000_000, 16_000_000)
    assert web["internal"].hits == []


def test_a_certificate_for_another_name_is_refused(web, monkeypatch):
    real = socket.getaddrinfo
    monkeypatch.setattr(socket, "getaddrinfo",
                        lambda host, *a, **k: real(PUBLIC if host == "other.example" else host, *a, **k))
    with pytest.raises(InputError, match="could not be fetched"):
        load_image(f"https://other.example:{web['port']}/a.png", 8_000_000, 16_000_000)
