#!/usr/bin/env bash
# The project's test command (README.md, .ci/run): builds .venv from the pinned requirement files when they
# changed, then runs the linters and the test suite. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
stamp=$(cat requirements.txt requirements-dev.txt constraints.txt | sha256sum | cut -c1-16)
if [ "$(cat .venv/.stamp 2>/dev/null)" != "$stamp" ]; then
  rm -rf .venv
  "$python" -m venv .venv
  .venv/bin/python -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
  echo "$stamp" > .venv/.stamp
fi
.venv/bin/ruff check .
.venv/bin/python -m pytest -p no:cacheprovider --timeout=300 "$@" tests
