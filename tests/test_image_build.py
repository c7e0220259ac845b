"""The image smoke test (tests/image/smoke.sh) builds the project's Dockerfile on stand-ins where no registry or
GitHub is reachable. These checks keep that build honest without building anything: the stand-ins change the
Dockerfile only through its build-args, and exactly these lines differ from the image that ships."""

from __future__ import annotations

import re
import shlex
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STANDIN = ROOT / "tests" / "image" / "standin.sh"

# What the stand-in build changes, and why it cannot be the real thing on a machine without registries or GitHub.
STANDIN_ARGS = {
    "CUDA_IMAGE": "a Debian 12 base with its own Python 3.11, in place of nvidia/cuda",
    "UV_IMAGE": "uv's binary from its PyPI wheel, in place of ghcr.io/astral-sh/uv",
    "COMFYUI_SOURCE_IMAGE": "ComfyUI's tag from a local source tarball, in place of a clone from GitHub",
    "PYTHON_PREFERENCE": "the base's Python, as uv cannot download one",
    "TORCH_INDEX_URL": "PyPI, as PyTorch's index is not reachable",
    "TORCH_PACKAGES": "torch 2.9.1 from PyPI (a CUDA 12.8 build), as PyPI's 2.11.0 is a CUDA 13 build",
}
# Every instruction line the stand-in build-args change (continuation lines joined), by the ARG it reads.
EXPECTED_DIFFERENCES = [
    ("FROM ${UV_IMAGE} AS uv", "UV_IMAGE"),
    ("FROM ${COMFYUI_SOURCE_IMAGE} AS comfyui-source", "COMFYUI_SOURCE_IMAGE"),
    ("FROM ${CUDA_IMAGE}", "CUDA_IMAGE"),
    ("ENV COMFYUI_DIR=", "PYTHON_PREFERENCE"),
    ("RUN echo \"${TORCH_PACKAGES}\" | tr ' ' '\\n' > /opt/torch-constraints.txt", "TORCH_PACKAGES"),
    ("RUN uv pip install --python \"${COMFY_PYTHON}\" --extra-index-url \"${TORCH_INDEX_URL}\"", "TORCH_INDEX_URL"),
]


def dockerfile_args(text: str) -> dict[str, str]:
    """Every `ARG NAME=default` of the Dockerfile, quotes removed."""
    return {m.group(1): shlex.split(m.group(2))[0] for m in re.finditer(r"^ARG (\w+)=(.+)$", text, re.M)}


def standin_args() -> dict[str, str]:
    """The stand-in build's --build-arg values, as bash expands STANDIN_BUILD_ARGS in standin.sh."""
    script = (f"root={shlex.quote(str(ROOT))}; source {shlex.quote(str(STANDIN))}; "
              'printf "%s\\0" "${STANDIN_BUILD_ARGS[@]}"')
    words = subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=True,
                           timeout=30).stdout.split("\0")[:-1]
    assert words[::2] == ["--build-arg"] * (len(words) // 2), words
    return dict(word.split("=", 1) for word in words[1::2])


def instructions(text: str) -> list[str]:
    joined = re.sub(r"\\\n\s*", " ", "\n".join(x for x in text.splitlines() if not x.lstrip().startswith("#")))
    return [" ".join(line.split()) for line in joined.splitlines() if line.strip()]


def expand(text: str, args: dict[str, str]) -> str:
    """${NAME} of a build-arg replaced by its value, which may itself name an earlier ARG."""
    for _ in range(5):
        text = re.sub(r"\$\{(\w+)\}", lambda m: args.get(m.group(1), m.group(0)), text)
    return text


def render(lines: list[str], args: dict[str, str]) -> list[str]:
    """Each instruction with the build-args expanded (ENV and RUN read ARGs the same way)."""
    return [expand(line, args) for line in lines]


def test_the_standin_build_sets_only_args_the_dockerfile_declares_for_it():
    declared = dockerfile_args((ROOT / "Dockerfile").read_text())
    given = standin_args()
    assert set(given) == set(STANDIN_ARGS), f"stand-in build-args {sorted(given)} against {sorted(STANDIN_ARGS)}"
    assert set(given) <= set(declared), f"{set(given) - set(declared)} are not ARGs of the Dockerfile"
    for name, value in given.items():
        assert value != declared[name], f"{name}: the stand-in value is the shipped one"


def test_exactly_these_lines_differ_from_the_image_that_ships():
    text = (ROOT / "Dockerfile").read_text()
    lines = [line for line in instructions(text) if not line.startswith("ARG ")]  # their values are the args
    defaults = dockerfile_args(text)
    shipped, standin = render(lines, defaults), render(lines, {**defaults, **standin_args()})
    differing = [line for line, a, b in zip(lines, shipped, standin, strict=True) if a != b]
    expected = [prefix for prefix, _ in EXPECTED_DIFFERENCES]
    assert len(differing) == len(expected), "lines that differ:\n" + "\n".join(differing)
    for line, (prefix, arg) in zip(differing, EXPECTED_DIFFERENCES, strict=True):
        assert line.startswith(prefix), f"{line!r} differs; expected a line starting {prefix!r}"
        assert f"${{{arg}}}" in line, f"{line!r} should differ through {arg}"


def test_smoke_script_uses_the_standins_only_without_docker():
    smoke = (ROOT / "tests" / "image" / "smoke.sh").read_text()
    docker_build = re.search(r'docker build -t "\$image" "\$root"', smoke)
    assert docker_build, "with Docker, smoke.sh builds the Dockerfile with no build-args"
    assert '"${STANDIN_BUILD_ARGS[@]}"' in smoke.split("else", 1)[1]
