# syntax=docker/dockerfile:1
# LTX-2 19B text-to-video RunPod worker: ComfyUI v0.26.2 (core nodes only) + the worker, no model weights
# (they live on the network volume; entrypoint.sh provisions them).
#
# Layers, slowest-changing first, so that a change to the worker's code rebuilds in seconds:
#   1. system packages, Python 3.11   2. torch (CUDA 12.8 wheels)   3. ComfyUI at its tag + its requirements
#   4. the worker's requirements       5. the worker's code
#
# Base: NVIDIA's CUDA 12.8.1 runtime on Ubuntu 24.04, pinned by tag and digest. torch's cu128 wheels carry
# their own CUDA libraries and kernels for sm_75..sm_120 (Ampere A100/A40/A6000/3090, Ada L40S/4090, Hopper
# H100/H200, Blackwell B200/RTX PRO 6000/5090); the host driver must support CUDA 12.8 (driver 570+).
ARG CUDA_IMAGE=nvidia/cuda:12.8.1-runtime-ubuntu24.04@sha256:ebef3c171eeef0298e4eb2e4be843105edf3b8b0ac45e0b43acee358e8046867

FROM ghcr.io/astral-sh/uv:0.11.14@sha256:1025398289b62de8269e70c45b91ffa37c373f38118d7da036fb8bb8efc85d97 AS uv

FROM ${CUDA_IMAGE}

ARG DEBIAN_FRONTEND=noninteractive
# Python for both venvs; the pinned uv release resolves "3.11" to one fixed CPython build.
ARG PYTHON_VERSION=3.11
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128
ARG COMFYUI_REPO=https://github.com/comfyanonymous/ComfyUI.git
ARG COMFYUI_VERSION=v0.26.2

SHELL ["/bin/bash", "-o", "pipefail", "-c"]

# COMFYUI_DIR: ComfyUI's checkout (the worker's [comfy] dir). COMFY_PYTHON: the interpreter of ComfyUI's own
# venv, which starts ComfyUI. WORKER_PYTHON: the worker's venv, also first on PATH, so `python handler.py`
# runs in it. The two venvs never share packages, so ComfyUI's and the worker's pins cannot clash.
ENV COMFYUI_DIR=/comfyui \
    COMFY_PYTHON=/opt/venv/comfyui/bin/python \
    WORKER_PYTHON=/opt/venv/worker/bin/python \
    PATH=/opt/venv/worker/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    UV_PYTHON_INSTALL_DIR=/opt/python \
    UV_PYTHON_PREFERENCE=only-managed \
    UV_LINK_MODE=copy \
    UV_COMPILE_BYTECODE=1 \
    UV_NO_CACHE=1

# git: the ComfyUI clone; ca-certificates: HTTPS to the hub and buckets.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates git \
    && rm -rf /var/lib/apt/lists/*

COPY --from=uv /uv /usr/local/bin/uv

RUN uv python install "${PYTHON_VERSION}" \
    && uv venv --python "${PYTHON_VERSION}" /opt/venv/comfyui \
    && uv venv --python "${PYTHON_VERSION}" /opt/venv/worker

# torch from PyTorch's CUDA 12.8 index (the exact versions are pinned in the constraints file).
COPY docker/comfyui-constraints.txt /opt/comfyui-constraints.txt
RUN uv pip install --python "${COMFY_PYTHON}" --extra-index-url "${TORCH_INDEX_URL}" \
        --index-strategy unsafe-best-match -c /opt/comfyui-constraints.txt \
        torch torchvision torchaudio \
    && "${COMFY_PYTHON}" -c "import torch; assert torch.version.cuda.startswith('12.8'), torch.version.cuda"

# ComfyUI at its release tag with its pinned requirements; no custom node packs (the graph uses core nodes).
# Its ~700 modules are compiled to bytecode here, as uv does for the packages (UV_COMPILE_BYTECODE): every
# cold start is a fresh container, which would otherwise compile them again before ComfyUI answers.
RUN git clone --depth 1 --branch "${COMFYUI_VERSION}" "${COMFYUI_REPO}" "${COMFYUI_DIR}" \
    && rm -rf "${COMFYUI_DIR}/.git" \
    && uv pip install --python "${COMFY_PYTHON}" --extra-index-url "${TORCH_INDEX_URL}" \
        --index-strategy unsafe-best-match -c /opt/comfyui-constraints.txt \
        -r "${COMFYUI_DIR}/requirements.txt" \
    && "${COMFY_PYTHON}" -m compileall -q -j 0 "${COMFYUI_DIR}" \
    && "${COMFY_PYTHON}" -c "import torch, torchaudio, av; print('torch', torch.__version__)"

WORKDIR /app

# The worker's own pinned requirements (requirements.txt reads constraints.txt).
COPY requirements.txt constraints.txt ./
RUN uv pip install --python "${WORKER_PYTHON}" -r requirements.txt

# The worker's code last: editing it rebuilds only this layer.
COPY . .

CMD ["bash", "/app/entrypoint.sh"]
