"""The worker's API without a GPU (run by tools/tryout.sh): `handler.py --rp_serve_api` on 127.0.0.1:PORT in
front of the tests' protocol ComfyUI, so a user sees the requests, errors and response shape of the real worker,
with a synthetic MP4 (noise, the asked size, frame count and audio track) instead of LTX-2's video.
"""

from __future__ import annotations

import os
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


def main() -> int:
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 8000
    with tempfile.TemporaryDirectory(prefix="ltx2-tryout-") as tmp_dir:
        tmp = Path(tmp_dir)
        with ProtocolComfy(output_dir=tmp / "output", exec_seconds=EXEC_SECONDS) as comfy:
            env = {**os.environ, **state_env(comfy.url, tmp / "output", tmp)}
            handler = subprocess.Popen([sys.executable, "handler.py", "--rp_serve_api", "--rp_api_host",
                                        "127.0.0.1", "--rp_api_port", str(port)], cwd=ROOT, env=env)
            print(f"\ntry-out: RunPod's local API on http://localhost:{port} (a protocol ComfyUI, no GPU); e.g.\n"
                  f"  curl -s -X POST http://localhost:{port}/runsync -H 'Content-Type: application/json' "
                  "-d @test_input.json\n"
                  f"  curl -s -X POST http://localhost:{port}/runsync -H 'Content-Type: application/json' "
                  "-d '{\"input\": {\"prompt\": \"x\", \"frame_count\": 120}}'\n"
                  "Ctrl-C stops it.\n", flush=True)
            try:
                return handler.wait()
            except KeyboardInterrupt:
                handler.send_signal(signal.SIGINT)  # already sent by the terminal; again if it was not
                try:
                    handler.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    handler.kill()
                return 0


if __name__ == "__main__":
    sys.exit(main())
