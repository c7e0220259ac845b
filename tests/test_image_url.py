"""An image URL is fetched over real TLS from loopback servers: from the address that was checked, never from
what a second DNS answer says (DNS rebinding), with the certificate checked for the URL's host name, and every
redirect checked again. DNS is the test's: `socket.getaddrinfo` answers for the made-up host names, and the
address rule admits 127.0.0.1 (the "public" host here) but not 127.0.0.2 (the "internal" one)."""

from __future__ import annotations

import datetime
import io
import ipaddress
import socket
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from PIL import Image

from ltx2_worker import image_input
from ltx2_worker.image_input import load_image
from ltx2_worker.job import InputError

PUBLIC, INTERNAL = "127.0.0.1", "127.0.0.2"


def _png(width: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (width, 64), (200, 30, 30)).save(buf, format="PNG")
    return buf.getvalue()


def _certificates(tmp_path, names):
    """A CA (its PEM file path) and a server certificate for `names`, signed by it (cert and key paths)."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(1).not_valid_before(now - datetime.timedelta(days=1))
          .not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(2)
            .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    paths = {name: tmp_path / f"{name}.pem" for name in ("ca", "cert", "key")}
    paths["ca"].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths["cert"].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths["key"].write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
    return paths


class _Site:
    """An HTTPS server on `address`:`port` answering every GET with `routes[path]`: bytes (200) or a URL (302)."""

    def __init__(self, address, port, paths, routes):
        self.hits: list[str] = []
        site = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                site.hits.append(self.path)
                answer = routes.get(self.path)
                if isinstance(answer, str):
                    self.send_response(302)
                    self.send_header("Location", answer)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                body = answer or b""
                self.send_response(200 if answer else 404)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer((address, port), Handler)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(paths["cert"], paths["key"])
        self.httpd.socket = context.wrap_socket(self.httpd.socket, server_side=True)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def web(tmp_path, monkeypatch):
    """Two sites on one port: "public" (127.0.0.1) and "internal" (127.0.0.2), and the test's DNS, in which
    images.example answers 127.0.0.1 once and 127.0.0.2 after that, and internal.example is 127.0.0.2."""
    paths = _certificates(tmp_path, ["images.example", "internal.example"])
    with socket.socket() as s:
        s.bind((PUBLIC, 0))
        port = s.getsockname()[1]
    public = _Site(PUBLIC, port, paths, {"/a.png": _png(96),
                                         "/hop": f"https://internal.example:{port}/a.png"})
    internal = _Site(INTERNAL, port, paths, {"/a.png": _png(128)})
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
    monkeypatch.setattr(image_input, "_address_allowed", lambda a: a == ipaddress.ip_address(PUBLIC))
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
