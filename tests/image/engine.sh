# shellcheck shell=bash
# Sourced by smoke.sh and real_tier.sh: sets $engine to docker where a Docker daemon answers, else podman;
# SMOKE_ENGINE=docker|podman decides instead.
engine=${SMOKE_ENGINE:-}
if [ -z "$engine" ]; then
  if command -v docker >/dev/null && docker info >/dev/null 2>&1; then engine=docker; else engine=podman; fi
fi
