"""RunPod entry point: builds the worker from config.ini and the environment, and starts the SDK.

`python handler.py --rp_serve_api --rp_api_host 127.0.0.1 --rp_api_port 8000` serves RunPod's local API.
"""

import logging
import os

# The runpod SDK logs at DEBUG unless told otherwise, and at DEBUG it prints every job's whole output: the MP4
# as base64, up to 15 MB a job, into RunPod's log (seen running the image: tests/image/smoke.sh). INFO keeps its
# one line per job start; RUNPOD_LOG_LEVEL or RUNPOD_DEBUG_LEVEL, when set, still decide. Set before the SDK is
# imported, as it reads them at import.
if not (os.environ.get("RUNPOD_LOG_LEVEL") or os.environ.get("RUNPOD_DEBUG_LEVEL")):
    os.environ["RUNPOD_LOG_LEVEL"] = "INFO"

import runpod  # noqa: E402

from ltx2_worker.worker import build_handler  # noqa: E402

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

if __name__ == "__main__":
    # Importing runpod has already configured the root logger (runpod/serverless/utils/rp_upload.py calls
    # logging.basicConfig with a format without the level), so a plain basicConfig here would do nothing and
    # the worker's warnings and errors would reach RunPod's log without their level. force=True replaces that
    # one handler: every line that goes through logging (the worker's, the SDK's upload utility's, boto3's)
    # then carries its level and logger name. The SDK's own lines are printed by its RunPodLogger, not through
    # logging, so none is doubled (tests/test_log_levels.py).
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT, force=True)
    runpod.serverless.start({"handler": build_handler()})
