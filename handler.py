"""RunPod entry point: builds the worker from config.ini and the environment, and starts the SDK.

`python handler.py --rp_serve_api --rp_api_host 127.0.0.1 --rp_api_port 8000` serves RunPod's local API.
"""

import logging

import runpod

from ltx2_worker.worker import build_handler

if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    runpod.serverless.start({"handler": build_handler()})
