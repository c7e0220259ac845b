"""The delivery files, checked without Docker: the linters pass on every file they cover (hadolint, shellcheck,
actionlint), and the Dockerfile, compose file, workflows, RunPod Hub files, test input and n8n flow say what the
code really does (fields it accepts and returns, settings it reads, ports and paths it uses)."""

from __future__ import annotations

import fnmatch
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from ltx2_worker.job import InputError, parse_request
from ltx2_worker.settings import SETTINGS, load_settings

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
DOCKERFILE = ROOT / "Dockerfile"
COMFYUI_TAG = "v0.26.2"
SETTING = {s.env: s for s in SETTINGS}


def _run(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([str(a) for a in args], cwd=cwd, capture_output=True, text=True, timeout=120)


def _json(rel: str):
    return json.loads((ROOT / rel).read_text(encoding="utf-8"))


def _yaml(rel: str):
    return yaml.safe_load((ROOT / rel).read_text(encoding="utf-8"))


# --- linters -------------------------------------------------------------------------------------------------

def test_hadolint_passes_on_the_dockerfile():
    result = _run(BIN / "hadolint", "--config", ".hadolint.yaml", "Dockerfile")
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_would_fail_on_a_bad_dockerfile(tmp_path):
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM ubuntu\nRUN cd /tmp && apt-get install curl\n", encoding="utf-8")
    result = _run(BIN / "hadolint", "--config", ROOT / ".hadolint.yaml", bad)
    assert result.returncode != 0 and "DL3006" in result.stdout, result.stdout


def test_every_ignored_hadolint_rule_is_explained():
    config = _yaml(".hadolint.yaml")
    text = (ROOT / ".hadolint.yaml").read_text(encoding="utf-8")
    for rule in config.get("ignored", []):
        assert re.search(rf"#\s*{rule}\b", text), f".hadolint.yaml ignores {rule} without a comment saying why"


def _shell_scripts() -> list[Path]:
    """The project's shell scripts: what git tracks or would add, not what an ignored folder holds (without git,
    every *.sh outside the usual ignored folders)."""
    try:
        listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "*.sh"],
                                cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
        scripts = {ROOT / name for name in listed}
    except (OSError, subprocess.CalledProcessError):
        skip = {".venv", ".git", "runpod-volume", "node_modules"}
        scripts = {p for p in ROOT.rglob("*.sh") if not skip & set(p.relative_to(ROOT).parts)}
    return sorted(scripts | {ROOT / ".ci" / "run"})


def test_shellcheck_passes_on_every_shell_script():
    scripts = _shell_scripts()
    assert {"entrypoint.sh", "setup_netvolume.sh", "run.sh"} <= {p.name for p in scripts}
    result = _run(BIN / "shellcheck", *scripts)
    assert result.returncode == 0, result.stdout + result.stderr


def test_actionlint_passes_on_the_workflows():
    result = _run(BIN / "actionlint", "-shellcheck", BIN / "shellcheck")
    assert result.returncode == 0, result.stdout + result.stderr


def test_actionlint_would_fail_on_a_bad_workflow(tmp_path):
    (tmp_path / ".github" / "workflows").mkdir(parents=True)
    (tmp_path / ".github" / "workflows" / "bad.yml").write_text(
        "on: push\njobs:\n  x:\n    runs-on: ubuntu-latest\n    steps:\n      - run: echo ${{ github.nope }}\n",
        encoding="utf-8")
    result = _run(BIN / "actionlint", "-shellcheck", BIN / "shellcheck", cwd=tmp_path)
    assert result.returncode != 0, result.stdout


# --- Dockerfile ------------------------------------------------------------------------------------------------

def _dockerfile() -> str:
    return DOCKERFILE.read_text(encoding="utf-8")


def _instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    joined = re.sub(r"\\\n", " ", "\n".join(line for line in _dockerfile().splitlines()
                                           if not line.lstrip().startswith("#")))
    out = []
    for line in joined.splitlines():
        if line.strip():
            word, _, rest = line.strip().partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def _env() -> dict[str, str]:
    env: dict[str, str] = {}
    for word, rest in _instructions():
        if word == "ENV":
            env.update(dict(re.findall(r"([A-Z_][A-Z0-9_]*)=(\S+)", rest)))
    return env


def _args() -> dict[str, str]:
    return dict(re.findall(r"^ARG ([A-Z_]+)=(\S+)", _dockerfile(), re.M))


def _stages() -> dict[str, str]:
    """Stage name -> its FROM image, ARGs expanded to their defaults."""
    args = _args()
    stages = {}
    for word, rest in _instructions():
        if word == "FROM":
            image, *alias = rest.split()
            for _ in range(3):  # an ARG's default may name an earlier ARG
                image = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], image)
            stages[alias[-1] if alias else "final"] = image
    return stages


def test_base_images_are_pinned_by_tag_and_digest():
    stages = _stages()
    assert stages, "no FROM"
    for image in stages.values():
        assert re.fullmatch(r"[\w./-]+:[\w.-]+@sha256:[0-9a-f]{64}", image), f"{image} is not pinned by tag+digest"
    assert "nvidia/cuda:12.8" in _args()["CUDA_IMAGE"], "the CUDA runtime must match torch's cu128 wheels"
    assert stages["comfyui-source"] == stages["final"], "with no build-args, ComfyUI is cloned in the CUDA image"


def test_torch_and_comfyui_are_pinned_and_match():
    args = _args()
    assert args["COMFYUI_VERSION"] == COMFYUI_TAG
    assert re.fullmatch(r"[0-9a-f]{40}", args["COMFYUI_COMMIT"]), "ComfyUI is pinned by commit as well as tag"
    assert args["TORCH_INDEX_URL"].endswith("/cu128")
    clone = [rest for word, rest in _instructions() if word == "RUN" and "git clone" in rest]
    assert len(clone) == 1 and re.search(r'git clone --depth 1 --branch "\$\{COMFYUI_VERSION\}"', clone[0])
    assert re.search(r'test "\$\(git -C /comfyui rev-parse HEAD\)" = "\$\{COMFYUI_COMMIT\}"', clone[0]), \
        "the clone must be checked against the tag's commit"
    assert args["COMFYUI_REPO"] in ("https://github.com/comfyanonymous/ComfyUI.git",
                                    "https://github.com/Comfy-Org/ComfyUI.git")
    torch_pins = dict(pin.split("==") for pin in re.search(r'^ARG TORCH_PACKAGES="([^"]+)"', _dockerfile(),
                                                           re.M).group(1).split())
    assert set(torch_pins) == {"torch", "torchvision", "torchaudio"}
    for name, version in torch_pins.items():
        assert version.endswith("+cu128"), f"{name} must be the cu128 build, got {version}"
    assert torch_pins["torch"].split("+")[0] == torch_pins["torchaudio"].split("+")[0]
    for line in (ROOT / "docker" / "comfyui-constraints.txt").read_text(encoding="utf-8").splitlines():
        if line and not line.startswith("#"):
            name, _, version = line.partition("==")
            assert version, f"unpinned line in docker/comfyui-constraints.txt: {line}"
            assert name.lower() not in torch_pins, f"{name} is pinned by TORCH_PACKAGES, not the constraints file"
    assert "custom_nodes" not in _dockerfile().replace("#", ""), "no custom node packs: core nodes only"


def test_comfyuis_tree_is_compiled_to_bytecode_where_it_is_installed():
    """A cold start is a fresh container: without bytecode in the image, ComfyUI's ~700 modules are compiled
    again before it answers (docs/performance.md: cold start)."""
    install = [rest for word, rest in _instructions() if word == "RUN" and "/requirements.txt" in rest]
    assert len(install) == 1
    assert re.search(r'"\$\{COMFY_PYTHON\}" -m compileall -q -j 0 "\$\{COMFYUI_DIR\}"', install[0]), install[0]
    assert _env().get("UV_COMPILE_BYTECODE") == "1", "the packages' bytecode comes from uv"


def test_two_venvs_and_the_layer_order_keep_code_changes_cheap():
    steps = [f"{w} {r}" for w, r in _instructions()]

    def index(pattern: str) -> int:
        hits = [i for i, s in enumerate(steps) if re.search(pattern, s)]
        assert hits, f"no Dockerfile step matches {pattern}"
        return hits[0]

    torch = index(r"uv pip install .*torch torchvision torchaudio")
    comfy = index(r"^COPY --from=comfyui-source /comfyui")
    worker_reqs = index(r"uv pip install --python \"\$\{WORKER_PYTHON\}\" -r requirements.txt")
    code = index(r"^COPY \. \.")
    assert torch < comfy < worker_reqs < code == len(steps) - 3, steps
    # the code's bytecode, for the worker and the nodes ComfyUI loads from it, made in the image (the start lists
    # name it, and a fresh container would otherwise write its own)
    assert re.fullmatch(r'RUN "\$\{WORKER_PYTHON\}" -m compileall -q -j 0 /app', steps[-2]), steps[-2]
    assert steps[-1].startswith("CMD") and "entrypoint.sh" in steps[-1]
    env = _env()
    assert env["COMFY_PYTHON"] != env["WORKER_PYTHON"]
    assert env["PATH"].startswith(str(Path(env["WORKER_PYTHON"]).parent)), "python must be the worker's venv"


def test_image_environment_matches_the_settings_and_entrypoint():
    env = _env()
    defaults = load_settings(env={})
    assert Path(env["COMFYUI_DIR"]) == defaults.comfy_dir, "COMFYUI_DIR in the image and config.ini differ"
    assert "COMFY_PYTHON" in SETTING, "the launcher must read COMFY_PYTHON"
    entrypoint = (ROOT / "entrypoint.sh").read_text(encoding="utf-8")
    assert "WORKER_PYTHON" in entrypoint
    assert re.search(r'handler\.py "\$@"', entrypoint), "entrypoint.sh must pass its arguments to handler.py"
    image_only = {"PATH", "PYTHONUNBUFFERED"}
    sys.path.insert(0, str(ROOT / "tools"))
    import settings_table

    for name in env:
        if name in image_only or name.startswith("UV_"):
            continue
        assert name in settings_table.table_names(), f"the image sets {name}, which the settings table lacks"


def _ignored(path: str, patterns: list[str]) -> bool:
    """.dockerignore semantics for plain patterns: the last matching pattern wins, ! re-includes."""
    result = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").rstrip("/")
        parts = path.split("/")
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        if any(fnmatch.fnmatch(p, pattern) or fnmatch.fnmatch(p, pattern.replace("**/", "")) for p in prefixes):
            result = not negate
    return result


def test_dockerignore_keeps_what_the_image_runs_and_drops_the_rest():
    patterns = [line.strip() for line in (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
                if line.strip() and not line.startswith("#")]
    for needed in ("handler.py", "config.ini", "workflow_api.json", "entrypoint.sh", "setup_netvolume.sh",
                   "requirements.txt", "constraints.txt", "docker/comfyui-constraints.txt", "test_input.json",
                   "ltx2_worker/worker.py", "ltx2_worker/settings.py"):
        assert (ROOT / needed).exists(), needed
        assert not _ignored(needed, patterns), f".dockerignore drops {needed}, which the image needs"
    for dropped in (".git/HEAD", ".venv/bin/python", "tests/test_job.py", "runpod-volume/models/x",
                    "ltx2_worker/__pycache__/x.pyc", "examples/n8n/README.md"):
        assert _ignored(dropped, patterns), f".dockerignore lets {dropped} into the build context"


# --- local run -------------------------------------------------------------------------------------------------

def test_compose_builds_mounts_the_volume_requests_a_gpu_and_serves_the_local_api():
    compose = _yaml("docker-compose.yml")
    (service,) = compose["services"].values()
    assert service["build"] in (".", {"context": "."})
    assert "./runpod-volume:/runpod-volume" in service["volumes"]
    assert service["environment"]["NETWORK_VOLUME_PATH"] == "/runpod-volume"
    device = service["deploy"]["resources"]["reservations"]["devices"][0]
    assert device["driver"] == "nvidia" and "gpu" in device["capabilities"]
    command = service["command"]
    assert command[:2] == ["bash", "/app/entrypoint.sh"], "compose's command replaces the image's CMD"
    flags = command[2:]
    assert flags[:1] == ["--rp_serve_api"] and flags[flags.index("--rp_api_host") + 1] == "0.0.0.0"
    port = flags[flags.index("--rp_api_port") + 1]
    assert f"{port}:{port}" in service["ports"]
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    quick = readme.split("## Quick start", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    assert quick.strip().startswith("docker compose up --build")
    assert f"http://localhost:{port}/runsync" in quick and "@test_input.json" in quick
    assert 'base64.b64decode(o["video"])' in quick


def _valid(raw: dict) -> object:
    try:
        return parse_request(raw, load_settings(env={}))
    except InputError as exc:  # pragma: no cover - the assertion message is the point
        pytest.fail(f"the worker refuses {raw}: {exc}")


def test_test_input_is_a_small_valid_request_with_a_fixed_seed():
    raw = _json("test_input.json")["input"]
    req = _valid(raw)
    assert (req.width, req.height, req.frame_count) == (768, 512, 49)
    assert raw["seed"] >= 0 and req.seed == raw["seed"]


# --- GitHub Actions --------------------------------------------------------------------------------------------

def _workflow(name: str) -> dict:
    wf = _yaml(f".github/workflows/{name}")
    wf["on"] = wf.pop(True, wf.get("on"))  # YAML 1.1 reads the key `on` as true
    return wf


def _steps(wf: dict) -> list[dict]:
    return [step for job in wf["jobs"].values() for step in job.get("steps", [])]


def test_every_action_is_pinned_by_commit_sha():
    for path in (ROOT / ".github" / "workflows").glob("*.yml"):
        for step in _steps(_workflow(path.name)):
            if "uses" in step:
                assert re.fullmatch(r"[\w.-]+/[\w.-]+@[0-9a-f]{40}", step["uses"]), f"{path.name}: {step['uses']}"


def test_ci_runs_the_readme_test_command_and_every_linter():
    wf = _workflow("ci.yml")
    assert {"push", "pull_request", "workflow_call"} <= set(wf["on"])
    runs = " ".join(step.get("run", "") for step in _steps(wf))
    for command in ("bash tests/run.sh", "ruff check", "hadolint", "shellcheck", "actionlint"):
        assert command in runs, f"ci.yml does not run {command}"


def test_image_is_built_smoke_tested_then_pushed_to_ghcr_with_the_gha_cache():
    wf = _workflow("image.yml")
    assert wf["jobs"]["test"]["uses"] == "./.github/workflows/ci.yml"
    image = wf["jobs"]["image"]
    assert image["needs"] == "test" and image["permissions"]["packages"] == "write"
    steps = image["steps"]
    builds = [i for i, step in enumerate(steps) if step.get("uses", "").startswith("docker/build-push-action@")]
    smoke = [i for i, step in enumerate(steps) if "tests/image/smoke.sh" in step.get("run", "")]
    assert len(builds) == 2 and len(smoke) == 1 and builds[0] < smoke[0] < builds[1], "build, smoke test, push"
    built, pushed = (steps[i]["with"] for i in builds)
    assert built["load"] is True and "push" not in built, "the smoke-tested build is loaded, never pushed"
    assert f"--image {built['tags']}" in steps[smoke[0]]["run"], "the smoke test runs the image just built"
    assert built["cache-from"] == "type=gha" and built["cache-to"].startswith("type=gha")
    assert pushed["cache-from"] == "type=gha", "the push rebuilds from the cache the smoke-tested build wrote"
    assert "steps.meta.outputs.tags" in pushed["tags"] and "github.event_name != 'pull_request'" in pushed["push"]
    by_action = {step["uses"].split("@")[0]: step for step in steps if "uses" in step}
    assert by_action["docker/login-action"]["with"]["registry"] == "ghcr.io"
    meta = by_action["docker/metadata-action"]["with"]
    assert meta["images"].startswith("ghcr.io/")
    tags = meta["tags"]
    assert "type=semver" in tags and "type=sha" in tags and "value=latest,enable={{is_default_branch}}" in tags
    assert wf["on"]["push"]["branches"] == ["main"] and "v*" in wf["on"]["push"]["tags"]
    assert "tests/image/**" in wf["on"]["pull_request"]["paths"], "a change to the smoke test runs it"


# --- RunPod Hub ------------------------------------------------------------------------------------------------

# RunPod's serverless GPU pools and their memory in GB.
POOL_VRAM = {"AMPERE_16": 16, "AMPERE_24": 24, "ADA_24": 24, "ADA_32_PRO": 32, "AMPERE_48": 48,
             "ADA_48_PRO": 48, "AMPERE_80": 80, "ADA_80_PRO": 80, "BLACKWELL_96": 96, "HOPPER_141": 141,
             "BLACKWELL_180": 180}


def test_hub_json_has_the_fields_the_hub_reads():
    hub = _json(".runpod/hub.json")
    assert hub["title"] and hub["description"] and hub["type"] == "serverless" and hub["category"] == "video"
    config = hub["config"]
    assert config["runsOn"] == "GPU" and config["gpuCount"] == 1
    assert isinstance(config["containerDiskInGb"], int) and config["containerDiskInGb"] >= 30
    assert all(float(v) >= 12.8 for v in config["allowedCudaVersions"]), "the image needs CUDA 12.8+ drivers"
    pools = config["gpuIds"].split(",")
    assert set(pools) <= set(POOL_VRAM), f"unknown GPU pool in {pools}"
    vram = [POOL_VRAM[p] for p in pools]
    big = [v >= 48 for v in vram]
    assert big[0] and big == sorted(big, reverse=True), "GPUs with 48 GB or more must be listed first"
    assert "10" in hub["description"] and "licen" in hub["description"].lower()


def test_the_readme_and_the_hub_files_tell_one_truth():
    """Container disk, the smallest GPU and the job deadline: the README's deploy steps and .runpod/hub.json
    give the same figures, and neither tells a class to raise a deadline its measured clips stay far under."""
    hub, readme = _json(".runpod/hub.json"), (ROOT / "README.md").read_text(encoding="utf-8")
    config = hub["config"]
    assert re.search(rf"container disk {config['containerDiskInGb']} GB", readme), "container disk differs"
    smallest = min(POOL_VRAM[p] for p in config["gpuIds"].split(","))
    quick = readme.split("## Quick start", 1)[1].split("##", 1)[0]
    assert f"{smallest} GB+ of VRAM" in quick, f"the Hub admits {smallest} GB cards; Quick start must say so"
    assert f"| {smallest} GB (below" in readme, "the speed table has a row for the smallest class the Hub admits"
    deadlines = {preset["defaults"].get("JOB_TIMEOUT_S") for preset in config.get("presets", [])}
    assert deadlines <= {int(SETTING["JOB_TIMEOUT_S"].parse(_settings_table().config_comments()[1][
        ("job", "timeout_s")]))}, f"a preset changes JOB_TIMEOUT_S ({deadlines}): the README gives one default"
    assert "1680" not in readme + json.dumps(hub)


def test_hub_env_entries_are_complete_and_their_defaults_are_the_workers():
    hub = _json(".runpod/hub.json")
    comments, values = _settings_table().config_comments()
    keys = []
    for entry in hub["config"]["env"]:
        key, field = entry["key"], entry["input"]
        keys.append(key)
        assert field["name"] and field["description"] and field["type"] in ("string", "number", "boolean"), key
        assert "default" in field, key
        setting = SETTING.get(key)
        if setting is None:
            assert field["default"] in ("", None), f"{key}: only settings of config.ini may have a default"
            continue
        given = str(field["default"]).lower() if field["type"] == "boolean" else str(field["default"])
        assert setting.parse(given) == setting.parse(values[(setting.section, setting.key)]), \
            f"hub.json's default for {key} ({field['default']!r}) differs from config.ini's"
    assert len(keys) == len(set(keys))
    for preset in hub["config"].get("presets", []):
        assert preset["name"] and set(preset["defaults"]) <= set(keys)
        for key, value in preset["defaults"].items():
            SETTING[key].parse(str(value))


def test_hub_tests_can_pass_on_runpods_test_runner(tmp_path):
    """RunPod's runner starts the image on the test's GPU with hub.json's container disk and no network volume:
    the ~45 GB of weights cannot be there. So each test is a health check, which completes on such a worker
    (saying why it could not run a job); each is sent here through the local API to a worker started the same
    way (no volume, the test's environment on top of hub.json's defaults)."""
    from helpers import LocalApi, state_env

    tests, hub = _json(".runpod/tests.json"), _json(".runpod/hub.json")
    assert tests["tests"]
    env = {e["key"]: str(e["input"]["default"]).lower() if e["input"]["type"] == "boolean"
           else str(e["input"]["default"]) for e in hub["config"]["env"] if e["input"].get("default") not in ("", None)}
    env.update({e["key"]: e["value"] for e in tests["config"]["env"]})
    assert env.get("ALLOW_CONTAINER_DISK", "false") == "false", "45 GB do not fit the Hub's container disk"
    env.update(state_env("http://127.0.0.1:9", tmp_path / "output", tmp_path),
               NETWORK_VOLUME_PATH=str(tmp_path / "no-volume"), MODEL_CACHE_PATH="")
    subprocess.run([sys.executable, "-m", "ltx2_worker.provision", "--boot"], cwd=ROOT, env={**os.environ, **env},
                   capture_output=True, timeout=60)  # as entrypoint.sh does: it fails, and records why
    with LocalApi(env, tmp_path / "handler.log") as api:
        for case in tests["tests"]:
            assert case["name"] and isinstance(case["timeout"], int) and case["timeout"] > 0
            started = time.monotonic()
            body = api.runsync(case["input"], timeout=60)
            assert body["status"] == "COMPLETED", body
            assert time.monotonic() - started < case["timeout"] / 1000
            report = body["output"]["health"]
            assert report["ready"] is False and "network volume" in report["problem"], report
    for entry in tests["config"]["env"]:
        if entry["key"] in SETTING:
            SETTING[entry["key"]].parse(entry["value"])


def _settings_table():
    sys.path.insert(0, str(ROOT / "tools"))
    import settings_table

    return settings_table


# --- n8n -------------------------------------------------------------------------------------------------------

def _flow() -> dict:
    (path,) = (ROOT / "examples" / "n8n").glob("*.json")
    return json.loads(path.read_text(encoding="utf-8"))


def _node(flow: dict, type_: str) -> list[dict]:
    return [n for n in flow["nodes"] if n["type"] == f"n8n-nodes-base.{type_}"]


def test_n8n_flow_is_importable_and_its_connections_are_sound():
    flow = _flow()
    names = [n["name"] for n in flow["nodes"]]
    assert len(names) == len(set(names))
    for node in flow["nodes"]:
        assert node["id"] and node["type"].startswith("n8n-nodes-base.") and node["typeVersion"]
        assert len(node["position"]) == 2
    for source, outputs in flow["connections"].items():
        assert source in names
        for branch in outputs["main"]:
            for link in branch:
                assert link["node"] in names


def test_n8n_flow_submits_with_run_and_polls_status_with_a_cap():
    flow = _flow()
    http = {n["name"]: n for n in _node(flow, "httpRequest")}
    submit = next(n for n in http.values() if n["parameters"].get("method") == "POST")
    assert submit["parameters"]["url"].endswith("/run")
    assert "{{" in submit["parameters"]["url"], "the endpoint id is a variable"
    status = next(n for n in http.values() if "/status/" in n["parameters"]["url"])
    for node in (submit, status):
        assert node["parameters"]["genericAuthType"] == "httpHeaderAuth" and "httpHeaderAuth" in node["credentials"]
    (wait,) = _node(flow, "wait")
    conns = flow["connections"]
    assert conns[submit["name"]]["main"][0][0]["node"] == wait["name"]
    # the loop: some IF's true branch goes back to the Wait node, and its condition is a poll count
    loop_ifs = [n for n in _node(flow, "if") if any(link["node"] == wait["name"]
                                                    for link in conns.get(n["name"], {}).get("main", [[]])[0])]
    assert loop_ifs, "no IF node loops back to the Wait node"
    condition = loop_ifs[0]["parameters"]["conditions"]["conditions"][0]
    assert condition["operator"] == {"type": "number", "operation": "lt"} and "polls" in json.dumps(condition)
    config = {a["name"]: a["value"] for n in _node(flow, "set")
              for a in n["parameters"]["assignments"]["assignments"]}
    assert isinstance(config["max_polls"], int) and 0 < config["max_polls"] <= 1000


def test_n8n_flow_handles_every_final_status_and_makes_a_file():
    flow = _flow()
    (switch,) = _node(flow, "switch")
    keys = [rule["outputKey"] for rule in switch["parameters"]["rules"]["values"]]
    assert keys == ["COMPLETED", "FAILED", "CANCELLED", "TIMED_OUT"]
    assert switch["parameters"]["options"]["fallbackOutput"] == "extra"
    outputs = flow["connections"][switch["name"]]["main"]
    assert len(outputs) == len(keys) + 1 and all(outputs)
    (convert,) = _node(flow, "convertToFile")
    assert convert["parameters"]["operation"] == "toBinary"
    assert convert["parameters"]["sourceProperty"] == "output.video"
    assert convert["parameters"]["options"]["mimeType"] == "video/mp4"
    assert "output.video_url" in json.dumps(flow)
    assert len(_node(flow, "stopAndError")) >= 1


def test_n8n_request_is_one_the_worker_accepts_and_it_reads_fields_the_worker_returns():
    flow = _flow()
    submit = next(n for n in _node(flow, "httpRequest") if n["parameters"].get("method") == "POST")
    body = submit["parameters"]["jsonBody"]
    plain, _, optional = body.partition("}, $json.first_frame_url ?")
    fields = dict(re.findall(r"(\w+): \$json\.(\w+)", plain))
    assert "prompt" in fields
    config = {a["name"]: a["value"] for n in _node(flow, "set")
              for a in n["parameters"]["assignments"]["assignments"]}
    _valid({field: config[source] for field, source in fields.items()})
    # the keyframes shown: left out while Config's URLs are empty (as shipped), else a first and a last frame
    assert config["first_frame_url"] == config["last_frame_url"] == ""
    assert "{ image: $json.first_frame_url }" in optional
    assert "{ keyframes: [{ image: $json.last_frame_url, frame: -1 }] }" in optional
    _valid({**{field: config[source] for field, source in fields.items()}, "image": "https://example.com/a.png",
            "keyframes": [{"image": "https://example.com/b.png", "frame": -1}]})
    # camera_motion and enhance_prompt: left out while Config leaves them empty and false (as shipped)
    assert config["camera_motion"] == "" and config["enhance_prompt"] is False
    assert "{ camera_motion: $json.camera_motion }" in optional and "{ enhance_prompt: true }" in optional
    assert _valid({**{field: config[source] for field, source in fields.items()}, "camera_motion": "jib_up",
                   "enhance_prompt": True}).enhance_prompt
    assert config["audio_url"] == "" and "{ audio_input: $json.audio_url }" in optional
    assert config["video_url"] == "" and "{ video: $json.video_url }" in optional
    assert config["control"] == "" and "$json.video_url && $json.control ? { control: $json.control }" in optional
    source = "\n".join(p.read_text(encoding="utf-8") for p in (ROOT / "ltx2_worker").glob("*.py"))
    for field in set(re.findall(r"output\??\.(\w+)", json.dumps(flow))):
        assert f'"{field}"' in source, f"the n8n flow reads output.{field}, which the worker never returns"


@pytest.mark.parametrize("path", sorted((ROOT / "examples" / "requests").glob("*.json")), ids=lambda p: p.name)
def test_each_request_example_is_one_the_worker_accepts(path):
    body = _json(str(path.relative_to(ROOT)))
    req = _valid(body["input"])
    assert req.keyframes or req.loras or req.camera_motion or req.enhance_prompt or req.audio_input or req.video, \
        "each example shows a feature beyond plain text-to-video"
