"""The image smoke test's run (smoke.sh builds the image, then calls this; standard library only, so it runs
on any host with Python 3.9+ and docker or podman). Every container is started as RunPod starts the worker,
with entrypoint.sh, the host's network (so RunPod's local API and a Hugging-Face-style file server on loopback
reach each other) and a volume folder at /runpod-volume:

1. tiny random-weight model files under the real names, made by tools/make_tiny_models.py inside the image
   (its ComfyUI and torch), served by tests/hf_server.py through HF_ENDPOINT; config.ini's manifest with their
   sizes and sha256 (LTX2_CONFIG);
2. first start on an empty volume: the four files are downloaded and verified, ComfyUI starts on the CPU, the
   local API answers; a small text-to-video job returns an MP4 of the asked size and frame count with an audio
   track, and the container's log does not hold it; a bad input is answered with the field's error; nothing is
   listed for a next start's prefetch (PREFETCH_LIBRARIES auto, the models on the volume);
3. second start on the same volume, PREFETCH_LIBRARIES=true and PREFETCH_PAGE_IN: nothing is downloaded, no
   model file on the volume changes, jobs are served, the prefetch reads every model file by paging it in,
   ComfyUI's start lists the image's module files it read on the volume, and after the first job the worker lists
   the pages of ComfyUI's files in memory (the image's torch libraries and ComfyUI's own modules among them);
4. third start with one file gone and a hub that serves it corrupted: every job gets the provisioning error
   naming the file, and neither the file nor its partial download is left on the volume.

Prints each step's seconds; exits non-zero on the first failed check, with the container's log tail.
"""

from __future__ import annotations

import argparse
import base64
import configparser
import io
import json
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import wave
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(HERE.parent))
from hf_server import HubServer  # noqa: E402  (tests/hf_server.py, standard library only)

JOB = {"prompt": "a red fox running through snow", "negative_prompt": "blurry", "width": 384, "height": 256,
       "frame_count": 9, "steps": 2, "seed": 1}
BAD_JOB = {"prompt": "a red fox", "frame_count": 120}
MISSING_ROLE = "upscaler"  # the file the third start finds gone
START_DEADLINE_S = 900  # container start to the local API answering (downloads, ComfyUI's start on a CPU)
JOB_DEADLINE_S = 1800  # the text encoder keeps Gemma 3 12B's shape: minutes for a new prompt on a CPU
PROBE = """
import av, json, sys
with av.open(sys.argv[1]) as c:
    v = c.streams.video[0]
    frames = sum(1 for _ in c.decode(v))
    print(json.dumps({"width": v.codec_context.width, "height": v.codec_context.height, "frames": frames,
                      "audio": bool(c.streams.audio)}))
"""


def wav(seconds: float, rate: int = 24000) -> str:
    """A silent mono WAV, base64."""
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(b"\0\0" * round(seconds * rate))
    return base64.b64encode(buf.getvalue()).decode()


class SmokeFailure(Exception):
    pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def step(name: str, started: float) -> float:
    now = time.monotonic()
    print(f"smoke: {name}: {now - started:.1f} s", flush=True)
    return now


def http_json(method: str, url: str, body: dict | None = None, timeout: float = 30) -> dict:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as r:
        return json.loads(r.read())


def tiny_config(manifest: dict, out: Path) -> None:
    """config.ini with the tiny files' sizes and sha256 in place of the real ones."""
    text = (ROOT / "config.ini").read_text()
    for role, info in manifest.items():
        section = re.search(rf"^\[model\.{role}\]\n(?:(?!\[).*\n?)*", text, re.M)
        if section is None:
            continue
        body = re.sub(r"^size = \d+$", f"size = {info['size']}", section.group(0), flags=re.M)
        body = re.sub(r"^sha256 = [0-9a-f]+$", f"sha256 = {info['sha256']}", body, flags=re.M)
        text = text[:section.start()] + body + text[section.end():]
    out.write_text(text)


def hub_files(config: Path, models: Path) -> dict[str, tuple[str, bytes, str, str]]:
    """role -> ("<repo>/<path>", content, folder, name) for every model section of `config` whose tiny file
    exists."""
    parser = configparser.ConfigParser(interpolation=None)
    parser.read(config)
    files = {}
    for section in parser.sections():
        if not section.startswith("model."):
            continue
        fields = parser[section]
        name = Path(fields["path"]).name
        local = models / fields["folder"] / name
        if local.is_file():
            files[section.removeprefix("model.")] = (f"{fields['repo']}/{fields['path']}", local.read_bytes(),
                                                     fields["folder"], name)
    return files


class Container:
    """One `<engine> run -d` of the image with entrypoint.sh and RunPod's local API on a loopback port."""

    def __init__(self, engine: str, image: str, name: str, work: Path, volume: Path, env: dict[str, str]):
        self.engine, self.name, self.work = engine, name, work
        self.api_port, comfy_port = free_port(), free_port()
        self.base = f"http://127.0.0.1:{self.api_port}"
        env = {**env, "COMFY_URL": f"http://127.0.0.1:{comfy_port}"}
        self.argv = [engine, "run", "-d", "--name", name, "--network", "host",
                     "-v", f"{volume}:/runpod-volume", "-v", f"{work / 'smoke'}:/smoke",
                     *(arg for key, value in env.items() for arg in ("-e", f"{key}={value}")),
                     image, "bash", "/app/entrypoint.sh", "--rp_serve_api", "--rp_api_host", "127.0.0.1",
                     "--rp_api_port", str(self.api_port)]

    def __enter__(self) -> Container:
        subprocess.run([self.engine, "rm", "-f", self.name], capture_output=True)
        subprocess.run(self.argv, check=True, capture_output=True, timeout=120)
        return self

    def wait_api(self) -> None:
        give_up = time.monotonic() + START_DEADLINE_S
        while time.monotonic() < give_up:
            try:
                urllib.request.urlopen(self.base + "/docs", timeout=2).close()
                return
            except (urllib.error.URLError, OSError):
                pass
            state = subprocess.run([self.engine, "inspect", "-f", "{{.State.Running}}", self.name],
                                   capture_output=True, text=True).stdout.strip()
            if state != "true":
                raise SmokeFailure(f"the container {self.name} exited before its API answered")
            time.sleep(1)
        raise SmokeFailure(f"the local API of {self.name} did not answer within {START_DEADLINE_S} s")

    def runsync(self, job: dict, timeout: float) -> dict:
        return http_json("POST", self.base + "/runsync", {"input": job}, timeout=timeout)

    def exec(self, *argv: str) -> str:
        return subprocess.run([self.engine, "exec", self.name, *argv], check=True, capture_output=True,
                              text=True, timeout=120).stdout

    def log(self) -> str:
        out = subprocess.run([self.engine, "logs", self.name], capture_output=True, text=True)
        return out.stdout + out.stderr

    def __exit__(self, *exc) -> None:
        started = time.monotonic()
        subprocess.run([self.engine, "stop", "-t", "30", self.name], capture_output=True, timeout=120)
        print(f"smoke: {self.name} stopped in {time.monotonic() - started:.1f} s", flush=True)
        (self.work / f"{self.name}.log").write_text(self.log())
        subprocess.run([self.engine, "rm", "-f", self.name], capture_output=True, timeout=120)


def volume_files(volume: Path) -> dict[str, tuple[int, int, int]]:
    """path -> (size, mtime_ns, inode) of every file under the volume's models/ (locks and markers included)."""
    return {str(p.relative_to(volume)): (p.stat().st_size, p.stat().st_mtime_ns, p.stat().st_ino)
            for p in sorted((volume / "models").rglob("*")) if p.is_file()}


def start_files_listed(volume: Path, deadline_s: float) -> list[str]:
    """The paths of the list ComfyUI's start writes on the volume where PREFETCH_LIBRARIES says so (its worker
    module writes it once ComfyUI loads the worker's nodes), waiting for it until the deadline."""
    ends = time.monotonic() + deadline_s
    while time.monotonic() < ends:
        found = sorted((volume / ".ltx2-worker").glob("comfy-start-files-*.txt"))
        if found:
            return found[0].read_text().splitlines()
        time.sleep(1)
    raise SmokeFailure(f"no list of ComfyUI's start files on the volume after {deadline_s:g} s")


def listed_pages(volume: Path, deadline_s: float) -> dict[str, int]:
    """File -> bytes, of the list the worker writes after its first job where PREFETCH_LIBRARIES says so (the
    pages of ComfyUI's files in memory), waiting for it until the deadline."""
    ends = time.monotonic() + deadline_s
    while time.monotonic() < ends:
        found = sorted((volume / ".ltx2-worker").glob("comfy-start-pages-*.txt"))
        if found:
            pages = {}
            for line in found[0].read_text().splitlines():
                path, _, spans = line.partition("\t")
                pages[path] = sum(int(b) - int(a) for a, b in (span.split("-") for span in spans.split(",")))
            return pages
        time.sleep(1)
    raise SmokeFailure(f"no list of the pages of ComfyUI's files on the volume after {deadline_s:g} s")


def check(condition: bool, message: str) -> None:
    if not condition:
        raise SmokeFailure(message)


def run(engine: str, image: str, work: Path) -> None:
    t = time.monotonic()
    (work / "smoke").mkdir()
    (work / "smoke" / "probe.py").write_text(PROBE)
    made = work / "tiny"
    made.mkdir()
    subprocess.run([engine, "run", "--rm", "-v", f"{ROOT / 'tools'}:/tools:ro", "-v", f"{made}:/out", image,
                    "/opt/venv/comfyui/bin/python", "/tools/make_tiny_models.py", "--comfyui-dir", "/comfyui",
                    "--out", "/out", "--seed", "0"], check=True, capture_output=True, timeout=600)
    manifest = json.loads((made / "models" / "tiny-manifest.json").read_text())
    tiny_config(manifest, work / "smoke" / "config.ini")
    files = hub_files(work / "smoke" / "config.ini", made / "models")
    required = ("checkpoint", "text_encoder", "lora", "upscaler")
    check(all(role in files for role in required), f"make_tiny_models.py made {sorted(files)}, not {required}")
    t = step("tiny model files made in the image", t)

    volume = work / "volume"
    volume.mkdir()
    with HubServer({key: content for key, content, _, _ in files.values()}) as hub:
        env = {"LTX2_CONFIG": "/smoke/config.ini", "HF_ENDPOINT": hub.url, "COMFY_EXTRA_ARGS": "--cpu",
               "JOB_TIMEOUT_S": str(JOB_DEADLINE_S - 60), "PROGRESS_INTERVAL_S": "30",
               # the text encoder's never-written Gemma matrices stay on shared zero pages
               "MALLOC_MMAP_THRESHOLD_": "65536"}

        with Container(engine, image, "ltx2-smoke-1", work, volume, env) as first:
            first.wait_api()
            t = step("first start (download, verify; the handler beside ComfyUI's start) to the local API answering",
                     t)
            gets = [r for r in hub.requests if r["method"] == "GET"]
            check(len(gets) >= len(required), f"the first start made {len(gets)} downloads, not {len(required)}")
            for role in required:
                _, content, folder, name = files[role]
                on_volume = volume / "models" / folder / name
                check(on_volume.is_file() and on_volume.read_bytes() == content,
                      f"{folder}/{name} on the volume is not the hub's file")
            out = first.runsync(JOB, timeout=JOB_DEADLINE_S)
            t = step(f"job {JOB['width']}x{JOB['height']}x{JOB['frame_count']}, {JOB['steps']} steps", t)
            check(out.get("status") == "COMPLETED", f"the job ended {json.dumps(out)[:2000]}")
            ready = re.search(r"ComfyUI \(pid \d+\) ready in ([\d.]+) s", first.log())
            check(ready is not None, "the container's log lacks the launcher's 'ComfyUI ... ready in' line")
            print(f"smoke: ComfyUI ready {ready.group(1)} s after the launcher started it; the job waited "
                  f"{out['output']['timings'].get('comfy_startup_wait', 0):.1f} s for it", flush=True)
            video = out["output"]["video"]
            check(video[len(video) // 2:][:100] not in first.log(), "the container's log holds the MP4 as base64")
            (work / "smoke" / "clip.mp4").write_bytes(base64.b64decode(video))
            facts = json.loads(first.exec("/opt/venv/comfyui/bin/python", "/smoke/probe.py", "/smoke/clip.mp4"))
            want = {"width": JOB["width"], "height": JOB["height"], "frames": JOB["frame_count"], "audio": True}
            check(facts == want, f"the MP4 is {facts}, the job asked for {want}")
            print(f"smoke: MP4 {facts}, {len(base64.b64decode(video))} bytes", flush=True)
            shown = {**out, "output": {**out["output"], "video": video[:24] + "..."}}
            print(f"smoke: response {json.dumps(shown)}", flush=True)
            bad = first.runsync(BAD_JOB, timeout=60)
            check(bad.get("status") == "FAILED" and str(bad.get("error", "")).startswith("frame_count: "),
                  f"a frame_count of 120 was answered {bad}")
            t = step("bad input answered", t)
            # audio_input is checked by ComfyUI's Python in the image (ltx2_worker/media_probe.py), then generated to
            bad = first.runsync({**JOB, "audio_input": base64.b64encode(b"not audio").decode()}, timeout=60)
            check(bad.get("status") == "FAILED" and str(bad.get("error", "")).startswith("audio_input: must be WAV"),
                  f"an undecodable audio_input was answered {bad}")
            out = first.runsync({**JOB, "frame_count": None, "audio_input": wav(0.5)}, timeout=JOB_DEADLINE_S)
            check(out.get("status") == "COMPLETED" and out["output"]["frame_count"] == 9,
                  f"a 0.5 s audio_input was answered {json.dumps(out)[:1000]}")
            t = step("audio_input checked in the image and a clip made to it", t)
        stray = sorted(p.name for p in (volume / ".ltx2-worker").glob("comfy-start-*"))
        check(not stray, f"the first start (PREFETCH_LIBRARIES auto, the models on the volume) listed {stray}")
        before = volume_files(volume)
        downloads = len([r for r in hub.requests if r["method"] == "GET"])

        paging_in = {**env, "PREFETCH_PAGE_IN": "true", "PREFETCH_LIBRARIES": "true",
                     "PREFETCH_HEADROOM_GB": "2"}  # 2: this host's memory is small
        with Container(engine, image, "ltx2-smoke-2", work, volume, paging_in) as second:
            second.wait_api()
            t = step("second start (same volume) to the local API answering", t)
            again = len([r for r in hub.requests if r["method"] == "GET"]) - downloads
            check(again == 0, f"the second start downloaded {again} files again")
            check(volume_files(volume) == before, "the second start changed files on the volume: "
                  f"{sorted(set(volume_files(volume).items()) ^ set(before.items()))}")
            bad = second.runsync(BAD_JOB, timeout=60)
            check(bad.get("status") == "FAILED" and str(bad.get("error", "")).startswith("frame_count: "),
                  f"the second start answered a bad input with {bad}")
            listed = start_files_listed(volume, deadline_s=240)
            check(any(p.startswith("/comfyui/") and p.endswith(".pyc") for p in listed)
                  and any(p.startswith("/opt/venv/comfyui/") for p in listed),
                  f"ComfyUI's start files listed on the volume are not the image's: {listed[:10]}")
            second.exec("test", "-f", listed[-1])  # a path inside the image, not the host's
            t = step(f"ComfyUI's start listed its {len(listed)} module files on the volume", t)
            out = second.runsync(JOB, timeout=JOB_DEADLINE_S)
            check(out.get("status") == "COMPLETED", f"the second start's job ended {json.dumps(out)[:2000]}")
            log = second.log()
            summary = [ln for ln in log.splitlines() if "prefetch: read " in ln]
            in_memory = {role for role in ("text_encoder", "checkpoint", "upscaler", "lora")
                         if re.search(rf"prefetch: {role}: [\d.]+ GB in memory at", log)}
            check("nothing is copied (PREFETCH_PAGE_IN)" in log and len(summary) == 1 and len(in_memory) == 4
                  and "skipped" not in summary[0],
                  f"the second start's prefetch did not page in every model file: {summary}, {sorted(in_memory)}")
            t = step(f"the prefetch paged in the models: {summary[0].split('prefetch: ', 1)[1]}", t)
            pages = listed_pages(volume, deadline_s=60)
            check(any(p.startswith("/opt/venv/comfyui/") and "libtorch" in p for p in pages)
                  and any(p.startswith("/comfyui/") for p in pages),
                  f"the pages listed after a first job are not the image's torch's and ComfyUI's: {sorted(pages)[:9]}")
            t = step(f"after its first job the worker listed {sum(pages.values()) / 1e6:.0f} MB of pages of "
                     f"{len(pages)} of ComfyUI's files", t)

    key, content, folder, name = files[MISSING_ROLE]
    (volume / "models" / folder / name).unlink()
    corrupt = bytes(b ^ 0xFF for b in content[-64:])
    with HubServer({**{k: c for k, c, _, _ in files.values()}, key: content[:-64] + corrupt}) as hub:
        env = {**env, "HF_ENDPOINT": hub.url}
        with Container(engine, image, "ltx2-smoke-3", work, volume, env) as third:
            third.wait_api()
            t = step("third start (one file gone, the hub serving it corrupted) to the local API answering", t)
            out = third.runsync(JOB, timeout=120)
            error = str(out.get("error", ""))
            check(out.get("status") == "FAILED" and f"{folder}/{name}" in error and "sha256" in error,
                  f"a job on a volume without {folder}/{name} was answered {json.dumps(out)[:2000]}")
            print(f"smoke: provisioning error: {error[:300]}", flush=True)
            # (the earlier file's .verified record may stay: it names that file's inode and mtime, never a new one)
            left = [p for p in volume_files(volume) if p.endswith((f"/{name}", ".part"))]
            check(left == [], f"the failed download left {left} on the volume")
            step("provisioning error answered", t)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engine", choices=("docker", "podman"), required=True)
    parser.add_argument("--image", required=True)
    parser.add_argument("--keep", action="store_true", help="keep the work folder (logs, volume, MP4)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="ltx2-smoke-"))
    started = time.monotonic()
    try:
        run(args.engine, args.image, work)
        print(f"smoke: passed in {time.monotonic() - started:.0f} s", flush=True)
        return 0
    except (SmokeFailure, subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as exc:
        print(f"smoke: FAILED: {exc}", file=sys.stderr)
        if isinstance(exc, subprocess.CalledProcessError):
            print((exc.stderr or b"")[-3000:].decode(errors="replace") if isinstance(exc.stderr, bytes)
                  else (exc.stderr or "")[-3000:], file=sys.stderr)
        for log in sorted(work.glob("ltx2-smoke-*.log")):
            tail = (line[:400] for line in log.read_text().splitlines()[-40:])
            print(f"--- last lines of {log.name}:\n" + "\n".join(tail), file=sys.stderr)
        return 1
    finally:
        if args.keep:
            print(f"smoke: work folder kept: {work}")
        else:
            # the containers wrote as root: remove through the image, so an unprivileged host user can too
            subprocess.run([args.engine, "run", "--rm", "-v", f"{work}:/work", args.image, "rm", "-rf",
                            "/work/volume", "/work/tiny", "/work/smoke"], capture_output=True, timeout=300)
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
