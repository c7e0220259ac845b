#!/usr/bin/env bash
# The real-ComfyUI test tier (tests/test_real_comfyui*.py) inside a built image, against its own ComfyUI and
# ComfyUI venv: no ComfyUI checkout on the host. The checkout is mounted read-only; the test tools go into a
# throwaway venv in the container (from PyPI). About 7 min on 2 cores.
#   bash tests/image/real_tier.sh [IMAGE]     # default ltx2-worker:smoke, as tests/image/smoke.sh builds it
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
image=${1:-ltx2-worker:smoke}
# shellcheck source=tests/image/engine.sh
source "$root/tests/image/engine.sh"
# shellcheck disable=SC2016  # expanded in the container
exec "$engine" run --rm --network host -v "$root:/repo:ro" -e MALLOC_MMAP_THRESHOLD_=65536 \
  -e COMFYUI_DIR=/comfyui -e COMFY_PYTHON=/opt/venv/comfyui/bin/python "$image" bash -euo pipefail -c '
    uv venv -q --python "$(command -v python3.11 || echo 3.11)" /tmp/tools
    uv pip install -q --python /tmp/tools/bin/python -r /repo/requirements-dev.txt
    cd /repo && PYTHONDONTWRITEBYTECODE=1 /tmp/tools/bin/python -m pytest -p no:cacheprovider --timeout=1800 \
      tests/test_real_comfyui.py tests/test_real_comfyui_e2e.py'
