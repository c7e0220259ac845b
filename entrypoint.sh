#!/usr/bin/env bash
# Container start: provision the models on the network volume, then, side by side, prefetch them into memory,
# launch ComfyUI, and become the RunPod handler. The handler starts while ComfyUI still starts, so the job that
# woke the worker is taken, checked and its images and LoRAs fetched meanwhile, then waits for ComfyUI. The
# handler always starts, so the worker registers; a failure at boot is recorded in BOOT_ERROR_FILE and every
# job answers with it instead of hanging.
# Arguments go to handler.py (e.g. --rp_serve_api --rp_api_host 0.0.0.0 --rp_api_port 8000 for RunPod's local API).
set -uo pipefail
cd "$(dirname "$(readlink -f "$0")")" || exit 1
python=${WORKER_PYTHON:-python3}

# ComfyUI writes its log to a file (its tail goes into job errors); mirror it on stdout for RunPod's logs. A pid
# file left by an earlier start of this container would point a waiting job at a dead process: removed first.
files=$("$python" -c 'from ltx2_worker.settings import load_settings as l; s = l(); print(s.comfy_log_file, s.comfy_pid_file, sep="\n")' 2>/dev/null)
{ read -r comfy_log; read -r comfy_pid; } <<< "$files"
[ -n "$comfy_pid" ] && rm -f "$comfy_pid"
if [ -n "$comfy_log" ]; then
  : > "$comfy_log"
  tail -n +1 -F "$comfy_log" 2>/dev/null &
fi

if "$python" -m ltx2_worker.provision --boot; then
  # Read the weights into memory while ComfyUI starts; nothing waits for it (PREFETCH turns it off).
  "$python" -m ltx2_worker.prefetch &
  { "$python" -m ltx2_worker.launch --boot || echo "entrypoint: ComfyUI launch failed; every job will say why" >&2; } &
else
  echo "entrypoint: model provisioning failed; every job will say why" >&2
fi
exec "$python" handler.py "$@"
