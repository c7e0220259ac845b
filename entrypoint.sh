#!/usr/bin/env bash
# Container start: provision the models on the network volume, prefetch them into memory in the background,
# launch ComfyUI, then become the RunPod handler. The handler always starts, so the worker registers; a
# failure before it is recorded in BOOT_ERROR_FILE and every job answers with it instead of hanging.
# Arguments go to handler.py (e.g. --rp_serve_api --rp_api_host 0.0.0.0 --rp_api_port 8000 for RunPod's local API).
set -uo pipefail
cd "$(dirname "$(readlink -f "$0")")" || exit 1
python=${WORKER_PYTHON:-python3}

# ComfyUI writes its log to a file (its tail goes into job errors); mirror it on stdout for RunPod's logs.
comfy_log=$("$python" -c 'from ltx2_worker.settings import load_settings; print(load_settings().comfy_log_file)' 2>/dev/null)
if [ -n "$comfy_log" ]; then
  : > "$comfy_log"
  tail -n +1 -F "$comfy_log" 2>/dev/null &
fi

if "$python" -m ltx2_worker.provision --boot; then
  # Read the weights into memory while ComfyUI starts; nothing waits for it (PREFETCH turns it off).
  "$python" -m ltx2_worker.prefetch &
  "$python" -m ltx2_worker.launch --boot || echo "entrypoint: ComfyUI launch failed; every job will say why" >&2
else
  echo "entrypoint: model provisioning failed; every job will say why" >&2
fi
exec "$python" handler.py "$@"
