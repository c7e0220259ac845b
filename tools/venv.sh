# Sourced by tests/run.sh and tools/tryout.sh: builds .venv from the pinned requirement files when they changed
# (the stamp is their hash), with $PYTHON (default python3).
# shellcheck shell=bash
python=${PYTHON:-python3}
stamp=$(cat requirements.txt requirements-dev.txt constraints.txt | sha256sum | cut -c1-16)
if [ "$(cat .venv/.stamp 2>/dev/null)" != "$stamp" ]; then
  rm -rf .venv
  "$python" -m venv .venv
  .venv/bin/python -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
  echo "$stamp" > .venv/.stamp
fi
