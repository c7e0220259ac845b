"""Delivery to a real S3 server on loopback (moto in server mode) through real boto3: upload with the MP4
content type, a presigned URL that serves the bytes, and clear errors when no bucket is configured."""

from __future__ import annotations

import base64

import boto3
import pytest
import requests
from moto.server import ThreadedMotoServer

from ltx2_worker.output import Bucket, DeliveryError, deliver
from ltx2_worker.settings import load_settings

S = load_settings(env={"MAX_INLINE_MB": "1"})
ACCESS, SECRET = "AKIATESTACCESSKEY000", "test-secret-key-that-must-never-be-logged"


@pytest.fixture(scope="module")
def s3_endpoint():
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=ACCESS, aws_secret_access_key=SECRET,
                 region_name="us-east-1").create_bucket(Bucket=S.bucket_name)
    yield endpoint
    server.stop()


@pytest.fixture
def bucket(s3_endpoint):
    env = {"BUCKET_ENDPOINT_URL": s3_endpoint, "BUCKET_ACCESS_KEY_ID": ACCESS, "BUCKET_SECRET_ACCESS_KEY": SECRET}
    return Bucket.from_env(S, env)


def test_small_video_is_inline(bucket):
    out = deliver(b"\x00\x01mp4", S, bucket)
    assert base64.b64decode(out["video"]) == b"\x00\x01mp4" and "video_url" not in out


def test_large_video_goes_to_the_bucket_with_a_working_url(bucket, s3_endpoint):
    data = bytes(range(256)) * 5000  # 1.28 MB: over MAX_INLINE_MB=1 as base64
    out = deliver(data, S, bucket, key="ltx2/job-7.mp4")
    assert "video" not in out and out["video_bytes"] == len(data)
    r = requests.get(out["video_url"], timeout=10)
    assert r.status_code == 200 and r.content == data
    head = boto3.client("s3", endpoint_url=s3_endpoint, aws_access_key_id=ACCESS, aws_secret_access_key=SECRET,
                        region_name="us-east-1").head_object(Bucket=S.bucket_name, Key="ltx2/job-7.mp4")
    assert head["ContentType"] == "video/mp4"


def test_url_on_request_even_when_small(bucket):
    out = deliver(b"tiny", S, bucket, key="ltx2/asked.mp4", mode="url")
    assert requests.get(out["video_url"], timeout=10).content == b"tiny"


def test_oversized_without_bucket_says_how_to_configure_one():
    with pytest.raises(DeliveryError) as info:
        deliver(b"x" * 2_000_000, S, None)
    for name in ("MAX_INLINE_MB", "BUCKET_ENDPOINT_URL", "BUCKET_ACCESS_KEY_ID", "BUCKET_SECRET_ACCESS_KEY"):
        assert name in str(info.value)


def test_url_asked_without_bucket_is_an_error():
    with pytest.raises(DeliveryError, match="a URL was asked for, and no bucket is configured"):
        deliver(b"x", S, None, mode="url")


def test_partial_bucket_configuration_counts_as_none():
    assert Bucket.from_env(S, {"BUCKET_ENDPOINT_URL": "http://x", "BUCKET_ACCESS_KEY_ID": ACCESS}) is None


def test_failed_upload_names_the_bucket_and_hides_the_keys(s3_endpoint):
    env = {"BUCKET_ENDPOINT_URL": s3_endpoint, "BUCKET_ACCESS_KEY_ID": ACCESS, "BUCKET_SECRET_ACCESS_KEY": SECRET}
    missing = Bucket.from_env(S.replace(bucket_name="no-such-bucket"), env)
    with pytest.raises(DeliveryError) as info:
        deliver(b"x" * 2_000_000, S, missing, key="k.mp4")
    assert "no-such-bucket" in str(info.value)
    assert SECRET not in str(info.value) and ACCESS not in str(info.value)
    assert SECRET not in repr(missing) and ACCESS not in repr(missing)
