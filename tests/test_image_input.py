"""The image-to-video first frame: accepted encodings, and a named rule for each refusal."""

import base64
import io

import pytest
from PIL import Image

from ltx2_worker.image_input import load_image
from ltx2_worker.job import InputError

MB = 1_000_000


def png(width=96, height=64, fmt="PNG"):
    buf = io.BytesIO()
    Image.new("RGB", (width, height), (200, 30, 30)).save(buf, fmt)
    return buf.getvalue()


def test_plain_and_data_url_base64_are_accepted():
    raw = png()
    assert load_image(base64.b64encode(raw).decode(), MB, 10**6) == (raw, "png")
    data_url = "data:image/jpeg;base64," + base64.b64encode(png(fmt="JPEG")).decode()
    assert load_image(data_url, MB, 10**6)[1] == "jpg"


@pytest.mark.parametrize("spec,rule", [
    ("not base64 at all!", "must be base64"),
    (base64.b64encode(b"GIF89a" + b"\0" * 50).decode(), "not a decodable"),
    (base64.b64encode(png()[:60]).decode(), "not a decodable"),
    (base64.b64encode(png(32, 32)).decode(), "at least 64x64"),
    (base64.b64encode(png(2000, 1000)).decode(), "at most 1000000 pixels"),
    (base64.b64encode(b"x" * (2 * MB)).decode(), "at most 1 MB"),
    ("data:image/png,rawbytes", "must be base64-encoded"),
    ("http://example.com/a.png", "must use https"),
    ("https://127.0.0.1/a.png", "not a public address"),
    ("https://localhost:8188/view?filename=x", "not a public address"),
    ("https://no-such-host.invalid/a.png", "cannot be resolved"),
])
def test_refusals_name_the_image_field_and_the_rule(spec, rule):
    with pytest.raises(InputError) as info:
        load_image(spec, MB, 10**6)
    assert info.value.field == "image" and rule in str(info.value)
