# shellcheck shell=bash
# Sourced by smoke.sh: podman on a machine without a Docker daemon or registry access, and the stand-ins that
# let the project's Dockerfile build there unchanged but for its build-args (STANDIN_BUILD_ARGS).
#   localhost/ltx2-standin-base:bookworm   Debian 12 minbase with python3.11 and the host's CA bundle, in
#                                          place of nvidia/cuda (the worker runs ComfyUI on the CPU here)
#   localhost/ltx2-standin-uv:0.11.14      uv's static binary from its musllinux wheel on PyPI, the same
#                                          binary as ghcr.io/astral-sh/uv
#   localhost/ltx2-standin-comfyui:v0.26.2 the stand-in base with ComfyUI's tag at /comfyui, from
#                                          $COMFYUI_TARBALL (its .sha256 checked)
# Each is made once and kept; `podman rmi` one to make it again.

UV_VERSION=0.11.14
COMFYUI_TARBALL=${COMFYUI_TARBALL:-$root/../shared/comfyui/ComfyUI-v0.26.2.tar.gz}
# shellcheck disable=SC2034  # used by smoke.sh, which sources this file
STANDIN_BUILD_ARGS=(
  --build-arg CUDA_IMAGE=localhost/ltx2-standin-base:bookworm
  --build-arg "UV_IMAGE=localhost/ltx2-standin-uv:$UV_VERSION"
  --build-arg COMFYUI_SOURCE_IMAGE=localhost/ltx2-standin-comfyui:v0.26.2
  --build-arg PYTHON_PREFERENCE=only-system
  --build-arg TORCH_INDEX_URL=https://pypi.org/simple
  --build-arg "TORCH_PACKAGES=torch==2.9.1 torchvision==0.24.1 torchaudio==2.9.1"
)

podman_ready() {
  if ! command -v podman >/dev/null || ! command -v mmdebstrap >/dev/null; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq podman buildah runc mmdebstrap >/dev/null
  fi
  # crun fails on these hosts' cgroups and rlimits; runc with cgroupfs works
  if [ ! -f /etc/containers/containers.conf ]; then
    mkdir -p /etc/containers
    cat > /etc/containers/containers.conf <<'CONF'
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
CONF
  fi
}

_have_image() { podman image exists "$1"; }

standin_images() {
  podman_ready
  local tmp
  tmp=$(mktemp -d)
  # shellcheck disable=SC2064  # expand now: tmp is local
  trap "rm -rf '$tmp'" RETURN
  local ca=${SSL_CERT_FILE:-/etc/ssl/certs/ca-certificates.crt}
  if ! _have_image localhost/ltx2-standin-base:bookworm; then
    # the host's CA bundle: HTTPS from the build's RUN steps must trust what the host trusts
    mmdebstrap --quiet --variant=minbase --include=ca-certificates,python3.11 \
      --customize-hook="copy-in $ca /usr/local/share" bookworm "$tmp/rootfs.tar"
    podman import --change "ENV SSL_CERT_FILE=/usr/local/share/$(basename "$ca")" \
      --change 'CMD ["bash"]' "$tmp/rootfs.tar" localhost/ltx2-standin-base:bookworm
  fi
  if ! _have_image "localhost/ltx2-standin-uv:$UV_VERSION"; then
    python3 -m pip download --quiet --no-deps --only-binary=:all: --platform musllinux_1_1_x86_64 \
      --dest "$tmp" "uv==$UV_VERSION"
    mkdir "$tmp/uv"
    python3 - "$tmp" <<'PY'
import sys, zipfile, pathlib
tmp = pathlib.Path(sys.argv[1])
wheel = zipfile.ZipFile(next(tmp.glob("uv-*.whl")))
for name in wheel.namelist():
    if name.endswith(("/scripts/uv", "/scripts/uvx")):
        out = tmp / "uv" / name.rsplit("/", 1)[1]
        out.write_bytes(wheel.read(name))
        out.chmod(0o755)
PY
    printf 'FROM scratch\nCOPY uv uvx /\n' > "$tmp/uv/Containerfile"
    podman build --quiet --format docker -t "localhost/ltx2-standin-uv:$UV_VERSION" "$tmp/uv" >/dev/null
  fi
  if ! _have_image localhost/ltx2-standin-comfyui:v0.26.2; then
    mkdir "$tmp/comfyui"
    local want got
    want=$(cut -c1-64 "$COMFYUI_TARBALL.sha256")
    got=$(sha256sum "$COMFYUI_TARBALL" | cut -c1-64)
    if [ "$want" != "$got" ]; then
      echo "smoke: $COMFYUI_TARBALL has sha256 $got, its .sha256 file says $want" >&2
      return 1
    fi
    cp "$COMFYUI_TARBALL" "$tmp/comfyui/comfyui.tar.gz"
    printf 'FROM localhost/ltx2-standin-base:bookworm\nADD comfyui.tar.gz /comfyui/\n' > "$tmp/comfyui/Containerfile"
    podman build --quiet --format docker -t localhost/ltx2-standin-comfyui:v0.26.2 "$tmp/comfyui" >/dev/null
  fi
}
