"""Print the README's settings table, made from the code so the two cannot drift.

One row per entry of ltx2_worker.settings.SETTINGS (environment variable, config.ini key, its default in
config.ini and its meaning: the comment above the key in config.ini), then the variables read outside that
table (EXTERNAL below: the bucket keys, the Hugging Face client's, the runpod SDK's and the image's).

    .venv/bin/python tools/settings_table.py           # print the section
    .venv/bin/python tools/settings_table.py --write   # rewrite README.md between its settings markers
    .venv/bin/python tools/settings_table.py --check   # exit 1 when README.md's section differs
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ltx2_worker.settings import CONFIG_ENV, DEFAULT_CONFIG, SETTINGS  # noqa: E402

README = ROOT / "README.md"
BEGIN = "<!-- section: settings -->"
END = "<!-- end section: settings -->"

# Variables read outside SETTINGS: (name, where it is read, meaning). `where` is a file of this repository that
# must mention the name (tests/test_docs.py checks it), or a library that reads it itself.
EXTERNAL: tuple[tuple[str, str, str], ...] = (
    (CONFIG_ENV, "ltx2_worker/settings.py",
     "Path of another config.ini to read instead of the image's `/app/config.ini` (for a mounted one)."),
    ("BUCKET_ENDPOINT_URL", "ltx2_worker/output.py",
     "S3-compatible endpoint for videos too large to return inline (e.g. `https://<account>.r2.cloudflarestorage"
     ".com`). The three `BUCKET_*` keys are read from the environment only, never from config.ini."),
    ("BUCKET_ACCESS_KEY_ID", "ltx2_worker/output.py", "Access key of that bucket."),
    ("BUCKET_SECRET_ACCESS_KEY", "ltx2_worker/output.py", "Secret key of that bucket; never logged."),
    ("HF_TOKEN", "huggingface_hub",
     "Hugging Face token used for the model downloads and for requests' LoRAs from the hub (needed only if the "
     "hub asks for one; never sent to another host)."),
    ("HF_ENDPOINT", "huggingface_hub",
     "Another Hugging Face hub or mirror to download the models from (default `https://huggingface.co`)."),
    ("WORKER_PYTHON", "entrypoint.sh",
     "The Python that runs the worker, its provisioning and `handler.py` (default `python3`); the image sets "
     "it to its venv's `/opt/venv/worker/bin/python`."),
    ("RUNPOD_WEBHOOK_GET_JOB", "runpod",
     "Set by RunPod on serverless workers: the SDK takes jobs from it. Without it (and without "
     "`--rp_serve_api`), `handler.py` runs `test_input.json` once and exits."),
    ("RUNPOD_WEBHOOK_POST_OUTPUT", "ltx2_worker/progress.py",
     "Set by RunPod on serverless workers: progress updates are sent only when it is present."),
    ("RUNPOD_DEBUG_LEVEL", "runpod", "Log level of the runpod SDK (`DEBUG`, `INFO`, `WARN`, `ERROR`; "
     "`RUNPOD_LOG_LEVEL`, when set, takes its place); with neither set, `handler.py` makes it `INFO`, as at "
     "`DEBUG` the SDK logs every job's whole output, the MP4 included."),
)

_ENV_NOTE = re.compile(r"\s*\(env [A-Z0-9_, ]+\)")


def config_comments(path: Path = DEFAULT_CONFIG) -> tuple[dict[tuple[str, str], str], dict[tuple[str, str], str]]:
    """(section, key) -> the comment block above it, and -> its raw value, read from config.ini's text.

    A key with no comment of its own shares the one above the key before it (`min_size` / `max_size`).
    """
    comments: dict[tuple[str, str], str] = {}
    values: dict[tuple[str, str], str] = {}
    section, block, last = "", [], ""
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if line.startswith("[") and line.endswith("]"):
            section, block, last = line[1:-1], [], ""
        elif line.startswith(("#", ";")):
            if last:  # a comment after a key starts the next key's block
                block, last = [], ""
            block.append(line.lstrip("#;").strip())
        elif "=" in line and section:
            key, _, value = line.partition("=")
            comments[(section, key.strip())] = " ".join(block)
            values[(section, key.strip())] = value.strip()
            last = key.strip()
        elif not line:
            block, last = [], ""
    return comments, values


def _meaning(section: str, key: str, comment: str) -> str:
    text = _ENV_NOTE.sub("", comment).strip()
    if not text and section == "defaults":
        text = f"The request's `{key}` when a job does not give one."
    text = text.replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;")
    return text or "(no description in config.ini)"


def _code(value: str) -> str:
    return f"`{value}`" if value else "(empty)"


def _where(where: str) -> str:
    return f"`{where}`" if (ROOT / where).exists() else f"the `{where}` package"


def settings_rows() -> list[tuple[str, str, str, str]]:
    comments, values = config_comments()
    rows = []
    for s in SETTINGS:
        value, comment = values.get((s.section, s.key), ""), comments.get((s.section, s.key), "")
        meaning = _meaning(s.section, s.key, comment)
        if hasattr(s.parse, "range"):
            meaning += " Range: {:.12g} to {:.12g}.".format(*s.parse.range)
        rows.append((s.env, f"[{s.section}] {s.key}", _code(value), meaning))
    return rows


def external_rows() -> list[tuple[str, str, str]]:
    declared = {s.env for s in SETTINGS}
    return [(name, where, meaning) for name, where, meaning in EXTERNAL if name not in declared]


def table_names() -> set[str]:
    """Every environment variable the section documents."""
    return {row[0] for row in settings_rows()} | {row[0] for row in external_rows()}


def render() -> str:
    out = [
        "## Settings",
        "",
        "Every setting has a default in `config.ini` and can be overridden by the environment variable named in the",
        "first column (RunPod: the template's or endpoint's environment variables). An invalid value, or a number",
        "outside its range, is logged at start; nothing is downloaded and ComfyUI is not started, but the worker still",
        "registers and answers every job with `worker configuration error: ...` naming the variable, so callers learn",
        "why instead of waiting. This table is generated from `ltx2_worker/settings.py` and `config.ini` by",
        "`tools/settings_table.py`; CI fails when it is out of date. The last rows are read from the environment only,",
        "by the code or library named.",
        "",
        "| variable | config.ini | default | meaning |",
        "|---|---|---|---|",
    ]
    out += [f"| `{env}` | `{key}` | {default} | {meaning} |" for env, key, default, meaning in settings_rows()]
    out += [f"| `{name}` | environment only | (unset) | {meaning} Read by {_where(where)}. |"
            for name, where, meaning in external_rows()]
    return "\n".join(out) + "\n"


def readme_section(text: str) -> str:
    """The text between the settings markers of README.md (without the marker lines)."""
    start, end = text.index(BEGIN) + len(BEGIN), text.index(END)
    return text[start:end].strip("\n") + "\n"


def replace_section(text: str, body: str) -> str:
    start, end = text.index(BEGIN) + len(BEGIN), text.index(END)
    return text[:start] + "\n" + body + text[end:]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--write", action="store_true", help="rewrite the settings section of README.md")
    mode.add_argument("--check", action="store_true", help="exit 1 when README.md's section is out of date")
    args = parser.parse_args(argv)
    body = render()
    if args.write:
        text = README.read_text(encoding="utf-8")
        new = replace_section(text, body)
        if new != text:
            README.write_text(new, encoding="utf-8")
        return 0
    if args.check:
        if readme_section(README.read_text(encoding="utf-8")) != body:
            print("README.md's settings section is out of date: run .venv/bin/python tools/settings_table.py "
                  "--write", file=sys.stderr)
            return 1
        return 0
    sys.stdout.write(body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
