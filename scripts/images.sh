#!/usr/bin/env bash
# Build the images from docker/Dockerfile: `make images` (the CPU ones), `make images-gpu` (engine, train).
#   IMAGES="gateway engine-cpu"   targets to build (default: gateway engine-cpu, + redis-local on the local base)
#   VIDEOQA_BASE_IMAGE=...        base for the CPU images; unset: a Debian bookworm base built here with mmdebstrap
#                                 (no registry is reachable on this project's CI; elsewhere pass
#                                 docker.io/library/python:3.11-slim-bookworm, the Dockerfile's default)
#   VIDEOQA_GPU_BASE_IMAGE=...    base for the GPU images (default: same as the CPU base)
# With podman, pip inside the build uses this machine's pip CA bundle and local wheel directory when its pip
# config names them (mounted read-only for the build only; nothing of them lands in a layer).
set -euo pipefail
source "$(dirname "$0")/containers.sh"
cd "$ROOT"

BASE=${VIDEOQA_BASE_IMAGE:-}
TARGETS=${IMAGES:-gateway engine-cpu}
if [ -z "$BASE" ]; then
  BASE=localhost/videoqa-base:bookworm
  "$CTR" image inspect "$BASE" >/dev/null 2>&1 || scripts/build-base.sh "$BASE"
  [ -n "${IMAGES:-}" ] || TARGETS="$TARGETS redis-local"
fi
GPU_BASE=${VIDEOQA_GPU_BASE_IMAGE:-$BASE}

args=(--build-arg "BASE_IMAGE=$BASE" --build-arg "GPU_BASE_IMAGE=$GPU_BASE"
      --build-arg "REVISION=$(git rev-parse HEAD 2>/dev/null || echo unknown)"
      --build-arg "CREATED=$(date -u +%Y-%m-%dT%H:%M:%SZ)")
if [ "$CTR" = "podman" ]; then
  pipcfg() {  # a pip setting from the environment or pip's config files, e.g. `pipcfg cert`
    { [ -x .venv/bin/pip ] && .venv/bin/pip config list || python3 -m pip config list; } 2>/dev/null \
      | sed -n -E "s/^(:env:|global)\.$1='(.*)'$/\2/p" | head -n1
  }
  conf=$(mktemp -d)
  trap 'rm -rf "$conf"' EXIT
  echo "[global]" >"$conf/pip.conf"
  cert=$(pipcfg cert)
  if [ -n "$cert" ]; then
    echo "cert = /run/videoqa-build/ca.crt" >>"$conf/pip.conf"
    args+=(-v "$cert:/run/videoqa-build/ca.crt:ro")
  fi
  links=$(pipcfg find-links)
  if [ -n "$links" ] && [ -d "$links" ]; then
    # The +cpu torch comes from this directory instead of PyTorch's index (unreachable here).
    echo "find-links = /run/videoqa-build/wheels" >>"$conf/pip.conf"
    args+=(-v "$links:/run/videoqa-build/wheels:ro" --build-arg "PIP_EXTRA_INDEX_URL=")
  fi
  args+=(-v "$conf/pip.conf:/etc/pip.conf:ro")
fi

for target in $TARGETS; do
  case $target in
    redis-local) name=videoqa-redis ;;
    *) name=videoqa-$target ;;
  esac
  echo "== building $name:$TAG (target $target, base $BASE)"
  start=$(date +%s)
  "$CTR" build "${BUILD_FLAGS[@]}" -f docker/Dockerfile --target "$target" -t "localhost/$name:$TAG" "${args[@]}" .
  echo "== $name:$TAG built in $(($(date +%s) - start)) s"
done
