#!/usr/bin/env bash
# Try the worker's API on any machine, without a GPU, ComfyUI or model weights: RunPod's local API on
# http://localhost:8000 in front of the tests' protocol ComfyUI (tests/comfy_server.py), which validates each
# graph against the real ComfyUI's node schemas and answers with a synthetic MP4 in about 2 s. Ctrl-C stops it.
#   bash tools/tryout.sh [PORT]
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=tools/venv.sh
source tools/venv.sh
exec .venv/bin/python tools/tryout.py "$@"
