"""Submit one clip to the worker and save the MP4: /run, then /status until it ends, printing the progress the
worker reports, then the video decoded from base64 or fetched from its bucket URL. Only `requests` is needed.

    export RUNPOD_API_KEY=...    # not needed for the local API
    python ltx2_client.py --endpoint ENDPOINT_ID --input ../../test_input.json --out clip.mp4
    python ltx2_client.py --base http://localhost:8000 --input ../../test_input.json --out clip.mp4  # local API

RunPod's local API (`handler.py --rp_serve_api`, tools/tryout.sh) answers /status only to POST and runs the job
during that call, so the client falls back to POST when GET is refused.

RunPod's own SDK does the same in three lines, for the hosted endpoint only (it builds api.runpod.ai URLs):
    import runpod; runpod.api_key = KEY
    job = runpod.Endpoint(ENDPOINT_ID).run(request_input)   # job.status() while it runs
    output = job.output(timeout=900)                          # the worker's output: "video" or "video_url"
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import sys
import time

import requests

ENDS = {"COMPLETED", "FAILED", "CANCELLED", "TIMED_OUT"}


def run_clip(base: str, request_input: dict, api_key: str | None = None, poll_s: float = 2.0,
             deadline_s: float = 1800.0, say=print) -> dict:
    """The job's final /status body. /run answers at once; /status is polled until the job ends or deadline_s
    passes (then it is cancelled). RunPod keeps a /run result for 30 minutes after it ends."""
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    job = requests.post(f"{base}/run", json={"input": request_input}, headers=headers, timeout=30)
    job.raise_for_status()
    job_id = job.json()["id"]
    say(f"job {job_id} submitted")
    give_up = time.monotonic() + deadline_s
    last, method = None, "GET"
    while True:
        response = requests.request(method, f"{base}/status/{job_id}", headers=headers, timeout=deadline_s)
        if response.status_code == 405 and method == "GET":  # RunPod's local API takes POST (and runs the job)
            method = "POST"
            continue
        response.raise_for_status()
        body = response.json()
        if "status" not in body:
            raise RuntimeError(f"/status/{job_id} answered without a status: {str(body)[:300]}")
        if body["status"] in ENDS:
            return body
        progress = body.get("output")  # while IN_PROGRESS: the worker's progress report, e.g. stage and step
        if progress and progress != last:
            say(f"  {body['status']}: {json.dumps(progress)}")
            last = progress
        if time.monotonic() > give_up:
            requests.post(f"{base}/cancel/{job_id}", headers=headers, timeout=30)
            raise TimeoutError(f"job {job_id} did not end within {deadline_s:g} s; cancelled")
        time.sleep(poll_s)


def save_video(output: dict, path: str) -> int:
    """Write the MP4 of a completed job's output to `path`: inline base64, or downloaded from its bucket URL."""
    if "video" in output:
        data = base64.b64decode(output["video"])
    else:
        response = requests.get(output["video_url"], timeout=300)
        response.raise_for_status()
        data = response.content
    with open(path, "wb") as f:
        f.write(data)
    return len(data)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--endpoint", help="RunPod endpoint id (https://api.runpod.ai/v2/<id>)")
    where.add_argument("--base", help="another base URL, e.g. http://localhost:8000 for RunPod's local API")
    p.add_argument("--input", required=True, help="a JSON file: {\"input\": {...}} or the input object itself")
    p.add_argument("--out", default="clip.mp4")
    p.add_argument("--deadline", type=float, default=1800.0, help="seconds before the job is cancelled")
    args = p.parse_args(argv)
    base = args.base.rstrip("/") if args.base else f"https://api.runpod.ai/v2/{args.endpoint}"
    with open(args.input, encoding="utf-8") as f:
        loaded = json.load(f)
    request_input = loaded.get("input", loaded)
    body = run_clip(base, request_input, os.environ.get("RUNPOD_API_KEY"), deadline_s=args.deadline)
    if body["status"] != "COMPLETED" or "error" in (body.get("output") or {}):
        print(f"job {body.get('id')} {body['status']}: {body.get('error') or body.get('output')}", file=sys.stderr)
        return 1
    output = body["output"]
    size = save_video(output, args.out)
    print(f"{args.out}: {size} bytes, {output['width']}x{output['height']}, {output['frame_count']} frames at "
          f"{output['fps']} fps, seed {output['seed']}, {output['timings']['total']:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
