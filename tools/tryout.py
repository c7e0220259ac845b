"""The worker's API without a GPU (run by tools/tryout.sh): `handler.py --rp_serve_api` on 127.0.0.1:PORT in
front of the tests' protocol ComfyUI, so a user sees the requests, errors and response shape of the real worker,
with a synthetic MP4 (noise, the asked size, frame count and audio track) instead of LTX-2's video.

Everything it writes is in one folder, /tmp/ltx2-tryout-*: ComfyUI's output and input, the worker's state files
and the volume (a request's LoRAs land in its cache there). However it is stopped, it stops what it started and
removes that folder: Ctrl-C, SIGTERM or SIGHUP to it or to its process group (the handler runs in a group of its
own and is stopped by the try-out); SIGKILL cannot be caught, so the handler is also told by the kernel to stop
when the try-out dies (PR_SET_PDEATHSIG), and the next try-out removes a folder whose try-out is gone.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]  # the tests' helpers import the worker's package
from comfy_server import ProtocolComfy  # noqa: E402
from helpers import state_env  # noqa: E402

EXEC_SECONDS = 2.0  # how long the protocol ComfyUI takes for a job, spread over its sampler steps
PREFIX = "ltx2-tryout-"
OWNER_FILE = "tryout.pid"  # in the folder: the try-out that owns it
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
HANDLER_STOP_S = 10  # how long the handler gets to stop after SIGTERM before SIGKILL
# run in the handler's process before handler.py: it receives SIGTERM when its parent (the try-out) dies, and
# exits at once if the try-out died before that was set
DIE_WITH_PARENT = ("import ctypes, os, runpy, signal, sys; parent = int(sys.argv.pop(1)); "
                   "ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM); "  # PR_SET_PDEATHSIG
                   "os.getppid() == parent or sys.exit(1); sys.argv[0] = 'handler.py'; "
                   "runpy.run_path('handler.py', run_name='__main__')")


class Stop(Exception):
    """A stop signal arrived: unwind, so every `finally` below runs."""


def _raise_stop(signum, frame):
    raise Stop(signal.Signals(signum).name)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_orphaned_folders(tmp_root: Path) -> list[Path]:
    """Folders of earlier try-outs that are gone (killed with SIGKILL, or a machine that stopped): removed."""
    removed = []
    for folder in tmp_root.glob(f"{PREFIX}*"):
        try:
            owner = int((folder / OWNER_FILE).read_text())
        except (OSError, ValueError):
            continue  # not ours, or still being made
        if not _alive(owner):
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    return removed


def stop_handler(handler: subprocess.Popen) -> None:
    """SIGTERM to the handler's process group (the local API server and anything it started), then SIGKILL."""
    if handler.poll() is not None:
        return
    for sig, wait in ((signal.SIGTERM, HANDLER_STOP_S), (signal.SIGKILL, 5)):
        try:
            os.killpg(handler.pid, sig)
        except ProcessLookupError:
            return
        try:
            handler.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def main() -> int:
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 8000
    for sig in STOP_SIGNALS:
        signal.signal(sig, _raise_stop)
    tmp_root = Path(tempfile.gettempdir())
    for folder in remove_orphaned_folders(tmp_root):
        print(f"try-out: removed {folder}, left by a try-out that was killed", flush=True)
    tmp = Path(tempfile.mkdtemp(prefix=PREFIX, dir=tmp_root))
    handler: subprocess.Popen | None = None
    try:
        (tmp / OWNER_FILE).write_text(str(os.getpid()))
        with ProtocolComfy(output_dir=tmp / "output", input_dir=tmp / "input", exec_seconds=EXEC_SECONDS) as comfy:
            env = {**os.environ, **state_env(comfy.url, tmp / "output", tmp),
                   "COMFY_INPUT_DIR": str(tmp / "input"), "NETWORK_VOLUME_PATH": str(tmp / "volume"),
                   "MODEL_CACHE_PATH": ""}
            handler = subprocess.Popen([sys.executable, "-c", DIE_WITH_PARENT, str(os.getpid()), "--rp_serve_api",
                                        "--rp_api_host", "127.0.0.1", "--rp_api_port", str(port)],
                                       cwd=ROOT, env=env, process_group=0)
            print(f"\ntry-out: RunPod's local API on http://localhost:{port} (a protocol ComfyUI, no GPU); e.g.\n"
                  f"  curl -s -X POST http://localhost:{port}/runsync -H 'Content-Type: application/json' "
                  "-d @test_input.json\n"
                  f"  curl -s -X POST http://localhost:{port}/runsync -H 'Content-Type: application/json' "
                  "-d '{\"input\": {\"prompt\": \"x\", \"frame_count\": 120}}'\n"
                  f"Its files: {tmp} (removed when it stops). Ctrl-C stops it.\n", flush=True)
            code = handler.wait()
            print(f"try-out: the worker exited with code {code}", flush=True)
            return code or 1
    except Stop as stop:
        print(f"try-out: {stop}: stopping", flush=True)
        return 0
    finally:
        for sig in STOP_SIGNALS:  # a second Ctrl-C must not cut the clean-up short
            signal.signal(sig, signal.SIG_IGN)
        if handler is not None:
            stop_handler(handler)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
