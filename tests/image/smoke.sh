#!/usr/bin/env bash
# The image smoke test: builds the project's Dockerfile and runs jobs through the built image (smoke.py says
# what is checked). Exits non-zero on any failure.
#
#   bash tests/image/smoke.sh                 # build, then test
#   bash tests/image/smoke.sh --image NAME    # test an image built already (the Image workflow does this)
#
# With a Docker daemon it builds exactly what ships. Without one (this project's development machines: no
# daemon, no registry, no GitHub) it installs podman and builds the same Dockerfile on stand-ins, made here
# with build-args only (tests/image/standin.sh): a Debian base with its own Python 3.11 in place of the CUDA
# image, uv from its PyPI wheel, torch 2.9.1 from PyPI (a CUDA 12.8 build) and ComfyUI's tag from
# $COMFYUI_TARBALL (default ../shared/comfyui/ComfyUI-v0.26.2.tar.gz, checked against its .sha256).
# SMOKE_ENGINE=docker|podman picks the engine; SMOKE_KEEP=1 keeps the work folder and the containers' logs.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
image=""
if [ "${1:-}" = "--image" ]; then
  image=${2:?--image needs a name}
fi

# shellcheck source=tests/image/engine.sh
source "$here/engine.sh"

if [ -z "$image" ]; then
  image=ltx2-worker:smoke
  start=$(date +%s)
  if [ "$engine" = docker ]; then
    docker build -t "$image" "$root"
  else
    # shellcheck source=tests/image/standin.sh
    source "$here/standin.sh"
    standin_images
    podman build --format docker --pull=never -t "$image" "${STANDIN_BUILD_ARGS[@]}" "$root"
  fi
  echo "smoke: built $image in $(( $(date +%s) - start )) s"
fi

exec python3 "$here/smoke.py" --engine "$engine" --image "$image" ${SMOKE_KEEP:+--keep}
