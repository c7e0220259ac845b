"""Secrets (HF_TOKEN, the bucket keys) never reach a log line or a job's output: known values are set, the
whole worker runs through the SDK's local API at DEBUG log level (inline result, bucket upload, bad inputs, a
provisioning failure), provisioning fails against a hub that refuses the token, one that resets mid-file and
a mirror address holding a password, and everything printed, returned or recorded is scanned. The one
exception is by S3's design: a presigned URL names the access key *id* in X-Amz-Credential (never the secret
key)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import boto3
from moto.server import ThreadedMotoServer
from test_provision import FILES, make_config

from comfy_server import ProtocolComfy
from helpers import LocalApi, free_port, loopback_env
from hf_server import HubServer

ROOT = Path(__file__).resolve().parent.parent
HF_TOKEN = "hf_SECRETtokenVALUE1234567890abcdef"
ACCESS_KEY = "AKIASECRETACCESSID77"
SECRET_KEY = "sEcReT/bucket+key/that-must-never-show-0123456789"
MIRROR_PASSWORD = "mirrorPASSWORDneverShown42"
JOB = {"prompt": "a lighthouse", "width": 256, "height": 256, "frame_count": 9, "seed": 3}


def test_no_secret_in_any_log_or_output(tmp_path):
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    moto.start()
    host, port = moto.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY,
                 region_name="us-east-1").create_bucket(Bucket="ltx2-videos")
    comfy = ProtocolComfy(output_dir=tmp_path / "output").start()
    env = {**loopback_env(comfy.url, tmp_path / "output", tmp_path), "HF_TOKEN": HF_TOKEN,
           "BUCKET_ENDPOINT_URL": endpoint, "BUCKET_ACCESS_KEY_ID": ACCESS_KEY, "BUCKET_SECRET_ACCESS_KEY": SECRET_KEY}
    log_path = tmp_path / "handler.log"
    try:
        with LocalApi(env, log_path, extra_args=("--rp_log_level", "DEBUG")) as api:
            outputs = [api.runsync(job, timeout=60) for job in
                       (JOB, {**JOB, "delivery": "url"}, {**JOB, "width": 1001}, {"prompt": HF_TOKEN[:3]})]
    finally:
        comfy.stop()
    provision = subprocess.run([sys.executable, "-m", "ltx2_worker.provision"], cwd=ROOT, capture_output=True,
                               text=True, timeout=60,
                               env={**os.environ, **env, "NETWORK_VOLUME_PATH": str(tmp_path / "none")})
    moto.stop()
    failed_downloads = provisioning_failures(tmp_path, env)

    url_job = outputs[1]["output"]
    assert url_job["video_url"].startswith(endpoint)
    # SigV4 presigned URLs carry the access key *id* in X-Amz-Credential by design; never the secret key.
    credential = parse_qs(urlparse(url_job["video_url"]).query)["X-Amz-Credential"][0]
    assert credential.startswith(ACCESS_KEY + "/")
    everything = (log_path.read_text() + provision.stdout + provision.stderr + json.dumps(outputs)
                  + failed_downloads).replace(url_job["video_url"], "<presigned url>")
    assert "DEBUG" in log_path.read_text() or "INFO" in log_path.read_text()
    for secret in (HF_TOKEN, ACCESS_KEY, SECRET_KEY, MIRROR_PASSWORD):
        assert secret not in everything, f"a secret leaked: {secret[:6]}..."


def provisioning_failures(tmp_path: Path, env: dict[str, str]) -> str:
    """What failed downloads print and record for the jobs (boot error file), with HF_TOKEN set."""
    files = {f"{repo}/{path}": data for repo, path, _, data in FILES.values()}
    volume = tmp_path / "volume"
    volume.mkdir()
    texts = []
    with HubServer(files, fault=401) as refusing, HubServer(files, fault="reset") as resetting:
        for endpoint in (refusing.url, resetting.url, f"http://mirror:{MIRROR_PASSWORD}@127.0.0.1:{free_port()}"):
            run = subprocess.run([sys.executable, "-m", "ltx2_worker.provision", "--boot"], cwd=ROOT,
                                 capture_output=True, text=True, timeout=60,
                                 env={**os.environ, **env, "HF_ENDPOINT": endpoint, "NETWORK_VOLUME_PATH": str(volume),
                                      "LTX2_CONFIG": str(make_config(tmp_path)), "HF_HUB_DISABLE_XET": "1",
                                      "DOWNLOAD_ATTEMPTS": "2", "DOWNLOAD_BACKOFF_S": "0.05"})
            record = (tmp_path / "boot-error").read_text()
            assert run.returncode == 1 and "cannot provision" in record, run.stderr
            texts += [run.stdout, run.stderr, record]
        assert refusing.token_seen == {HF_TOKEN}  # the token was sent, and still appears nowhere
    return "".join(texts)
