# Sourced by the image and stack scripts: which container engine and compose to use, with what settings.
#   CTR=docker|podman (default: docker when its daemon answers, else podman), COMPOSE (the matching compose)
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
if [ -z "${CTR:-}" ]; then
  if command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then CTR=docker; else CTR=podman; fi
fi
if [ "$CTR" = "podman" ]; then
  # runc and no default ulimits: what works in sandboxed machines like this project's CI (see the file).
  export CONTAINERS_CONF=${CONTAINERS_CONF:-$ROOT/docker/podman/containers.conf}
  if [ -z "${COMPOSE:-}" ]; then
    if [ -x "$ROOT/.venv/bin/podman-compose" ]; then COMPOSE=$ROOT/.venv/bin/podman-compose; else COMPOSE=podman-compose; fi
  fi
  # chroot isolation and the host network: builds in unprivileged sandboxes (no nested namespaces for RUN).
  BUILD_FLAGS=(--isolation chroot --network host)
else
  COMPOSE=${COMPOSE:-docker compose}
  BUILD_FLAGS=()
fi
COMPOSE_FILE=$ROOT/docker/compose.yaml
TAG=${TAG:-dev}
