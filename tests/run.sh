#!/usr/bin/env bash
# The project's test command (README.md, .ci/run): builds .venv from the pinned requirement files when they
# changed, then runs the linters and the test suite. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=tools/venv.sh
source tools/venv.sh
.venv/bin/ruff check .
.venv/bin/python -m pytest -p no:cacheprovider --timeout=300 "$@" tests
