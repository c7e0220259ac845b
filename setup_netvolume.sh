#!/usr/bin/env bash
# Provision a RunPod network volume once, from a pod with the volume attached, so serverless workers boot
# in seconds. The same code as entrypoint.sh runs (python -m ltx2_worker.provision).
#
#   ./setup_netvolume.sh [--volume PATH] [--check] [--sha256]
#     --volume PATH  where the volume is mounted (default $NETWORK_VOLUME_PATH, else /workspace as on pods)
#     --check        download nothing: exit 0 when every required file is valid, else 1 with a line per file
#     --sha256       also check every file's sha256 (a full read, remembered until the file changes)
set -euo pipefail
cd "$(dirname "$(readlink -f "$0")")"
# A Python with the worker's packages (requirements.txt): the image's worker venv (WORKER_PYTHON), else a
# checkout's .venv (made by tests/run.sh), else python3.
if [ -n "${WORKER_PYTHON:-}" ]; then python=$WORKER_PYTHON
elif [ -x .venv/bin/python ]; then python=.venv/bin/python
else python=python3
fi
if ! "$python" -c 'import requests, safetensors, huggingface_hub' 2>/dev/null; then
  echo "setup_netvolume.sh: $python lacks the worker's packages (requests, safetensors, huggingface_hub)." >&2
  echo "  In the image, WORKER_PYTHON (/opt/venv/worker/bin/python) has them. From a checkout, make .venv:" >&2
  echo "  python3 -m venv .venv && .venv/bin/pip install -r requirements.txt -c constraints.txt" >&2
  echo "  or set WORKER_PYTHON to a Python that has them." >&2
  exit 2
fi
args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --volume)
      [ $# -ge 2 ] || { echo "setup_netvolume.sh: --volume needs a path" >&2; exit 2; }
      NETWORK_VOLUME_PATH=$2
      shift 2 ;;
    --check | --sha256) args+=("$1"); shift ;;
    -h | --help) sed -n '2,/^[^#]/{/^#/s/^# \{0,1\}//p}' "$0"; exit 0 ;;
    *) echo "setup_netvolume.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done
export NETWORK_VOLUME_PATH=${NETWORK_VOLUME_PATH:-/workspace}
exec "$python" -m ltx2_worker.provision "${args[@]}"
