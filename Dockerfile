# syntax=docker/dockerfile:1
# LTX-2 19B text-to-video RunPod worker: ComfyUI v0.26.2 (core nodes only) + the worker, no model weights
# (they live on the network volume; entrypoint.sh provisions them).
#
# Layers, slowest-changing first, so that a change to the worker's code rebuilds in seconds:
#   1. system packages, Python 3.11   2. torch (CUDA 12.8 wheels)   3. ComfyUI at its tag + its requirements
#   4. the worker's requirements       5. the worker's code
#
# Base: NVIDIA's CUDA 12.8.1 *base* image on Ubuntu 24.04 (the container toolkit's settings and the CUDA 12.8
# driver requirement, no CUDA libraries), pinned by tag and the tag's manifest-list digest. torch's cu128 wheels
# carry their own CUDA libraries and kernels for sm_75..sm_120 (Ampere A100/A40/A6000/3090, Ada L40S/4090,
# Hopper H100/H200, Blackwell B200/RTX PRO 6000/5090); the host driver must support CUDA 12.8 (driver 570+).
# Why -base and not -runtime (measured in the stand-in build, 2026-12-05, with ldd): every CUDA library torch
# links (cudart, cublas, cublasLt, cudnn, cusparse, cufft, curand, nccl, nvrtc, nvJitLink, cupti) resolves inside
# site-packages/nvidia through torch's $ORIGIN runpath, in a build that has no /usr/local/cuda at all, and the
# driver's libcuda comes from the host; -runtime's libraries (about 2.5-3 GB) were a second, unused copy. The
# digest is the one public Dockerfiles and lock files give for this tag (linux/amd64 manifest e711c993...); the
# development machines reach no registry, so the Image workflow's build and smoke test check it before a push.
#
# Built with no build-args, this is exactly the image that ships. The build-args below exist only so that
# tests/image/smoke.sh can build this same file where no registry and no GitHub are reachable (stand-in base
# and uv images, the base's own Python, torch from PyPI, ComfyUI's tree in a local image); that script's
# stand-in values, and which lines they change, are tested (tests/test_image_build.py).
ARG CUDA_IMAGE=nvidia/cuda:12.8.1-base-ubuntu24.04@sha256:133c78a0575303be34164d0b90137a042172bdf60696af01a3c424ab402d86e2
ARG UV_IMAGE=ghcr.io/astral-sh/uv:0.11.14@sha256:1025398289b62de8269e70c45b91ffa37c373f38118d7da036fb8bb8efc85d97
# Where ComfyUI's tree comes from: by default the CUDA image, in which the stage below clones the tag; a build
# that cannot reach GitHub names an image holding the tag's tree at /comfyui instead, and the clone is skipped.
ARG COMFYUI_SOURCE_IMAGE=${CUDA_IMAGE}

FROM ${UV_IMAGE} AS uv

# ComfyUI at its release tag, checked against the tag's commit (a moved tag fails the build), without .git.
FROM ${COMFYUI_SOURCE_IMAGE} AS comfyui-source
ARG DEBIAN_FRONTEND=noninteractive
ARG COMFYUI_REPO=https://github.com/comfyanonymous/ComfyUI.git
ARG COMFYUI_VERSION=v0.26.2
ARG COMFYUI_COMMIT=7c8450ef2b720bb096f0d94ff933c62fd174cb57
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
RUN test -f /comfyui/main.py || { apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates git \
    && rm -rf /var/lib/apt/lists/* \
    && git clone --depth 1 --branch "${COMFYUI_VERSION}" "${COMFYUI_REPO}" /comfyui \
    && test "$(git -C /comfyui rev-parse HEAD)" = "${COMFYUI_COMMIT}" \
    && rm -rf /comfyui/.git; }

FROM ${CUDA_IMAGE}

ARG DEBIAN_FRONTEND=noninteractive
# Python for both venvs; with only-managed, the pinned uv release downloads "3.11" as one fixed CPython build.
ARG PYTHON_VERSION=3.11
ARG PYTHON_PREFERENCE=only-managed
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128
ARG TORCH_PACKAGES="torch==2.11.0+cu128 torchvision==0.26.0+cu128 torchaudio==2.11.0+cu128"

SHELL ["/bin/bash", "-o", "pipefail", "-c"]

# COMFYUI_DIR: ComfyUI's tree (the worker's [comfy] dir). COMFY_PYTHON: the interpreter of ComfyUI's own
# venv, which starts ComfyUI. WORKER_PYTHON: the worker's venv, also first on PATH, so `python handler.py`
# runs in it. The two venvs never share packages, so ComfyUI's and the worker's pins cannot clash.
ENV COMFYUI_DIR=/comfyui \
    COMFY_PYTHON=/opt/venv/comfyui/bin/python \
    WORKER_PYTHON=/opt/venv/worker/bin/python \
    PATH=/opt/venv/worker/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    UV_PYTHON_INSTALL_DIR=/opt/python \
    UV_PYTHON_PREFERENCE=${PYTHON_PREFERENCE} \
    UV_LINK_MODE=copy \
    UV_COMPILE_BYTECODE=1 \
    UV_NO_CACHE=1

# ca-certificates: HTTPS to the hub and buckets.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/*

COPY --from=uv /uv /usr/local/bin/uv

RUN uv venv --python "${PYTHON_VERSION}" /opt/venv/comfyui \
    && uv venv --python "${PYTHON_VERSION}" /opt/venv/worker

# torch from PyTorch's CUDA 12.8 index, at the versions TORCH_PACKAGES names; they stay pinned as constraints
# when ComfyUI's requirements are installed next.
COPY docker/comfyui-constraints.txt /opt/comfyui-constraints.txt
RUN echo "${TORCH_PACKAGES}" | tr ' ' '\n' > /opt/torch-constraints.txt \
    && uv pip install --python "${COMFY_PYTHON}" --extra-index-url "${TORCH_INDEX_URL}" \
        --index-strategy unsafe-best-match -c /opt/comfyui-constraints.txt -c /opt/torch-constraints.txt \
        torch torchvision torchaudio \
    && "${COMFY_PYTHON}" -c "import torch; assert torch.version.cuda.startswith('12.8'), torch.version.cuda"

# ComfyUI's tree with its pinned requirements; no custom node packs (the graph uses core nodes).
# Its ~700 modules are compiled to bytecode here, as uv does for the packages (UV_COMPILE_BYTECODE): every
# cold start is a fresh container, which would otherwise compile them again before ComfyUI answers.
COPY --from=comfyui-source /comfyui ${COMFYUI_DIR}
RUN uv pip install --python "${COMFY_PYTHON}" --extra-index-url "${TORCH_INDEX_URL}" \
        --index-strategy unsafe-best-match -c /opt/comfyui-constraints.txt -c /opt/torch-constraints.txt \
        -r "${COMFYUI_DIR}/requirements.txt" \
    && "${COMFY_PYTHON}" -m compileall -q -j 0 "${COMFYUI_DIR}" \
    && "${COMFY_PYTHON}" -c "import torch, torchaudio, av; print('torch', torch.__version__)"

WORKDIR /app

# The worker's own pinned requirements (requirements.txt reads constraints.txt).
COPY requirements.txt constraints.txt ./
RUN uv pip install --python "${WORKER_PYTHON}" -r requirements.txt

# The worker's code last: editing it rebuilds only these layers. Compiled to bytecode as ComfyUI's tree is (both
# venvs run the one Python 3.11, so one .pyc serves the worker and the nodes ComfyUI loads from ltx2_worker/):
# a fresh container would otherwise compile them at every start, and the start lists on the volume would name
# bytecode that only the container that wrote it had.
COPY . .
RUN "${WORKER_PYTHON}" -m compileall -q -j 0 /app

CMD ["bash", "/app/entrypoint.sh"]
