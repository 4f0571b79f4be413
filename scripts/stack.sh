#!/usr/bin/env bash
# Start or stop docker/compose.yaml's stack with podman or docker.
#   scripts/stack.sh up     start it; returns when both gateways' /readyz answer 200 (STACK_TIMEOUT s, default 900)
#   scripts/stack.sh down   stop and remove its containers and network; returns when they are gone
#                           (VOLUMES=1 also removes the redis and upload volumes)
set -euo pipefail
source "$(dirname "$0")/containers.sh"
cd "$ROOT"
# Without a registry (the local base image), redis comes from the image `make images` builds from Debian's.
if [ -z "${VIDEOQA_REDIS_IMAGE:-}" ] && "$CTR" image inspect localhost/videoqa-redis:dev >/dev/null 2>&1; then
  export VIDEOQA_REDIS_IMAGE=localhost/videoqa-redis:dev
fi
# shellcheck disable=SC2086
compose() { $COMPOSE -f "$COMPOSE_FILE" "$@"; }

case ${1:-} in
  up)
    # Dependencies first: podman-compose 1.6 goes on after a service fails to start and then waits forever for it
    # to run before starting the gateways; started on their own, a failure ends here with its error.
    compose up -d redis engine
    compose up -d
    python3 - "$CTR" "${STACK_TIMEOUT:-900}" "${VIDEOQA_GATEWAY1_PORT:-8001}" "${VIDEOQA_GATEWAY2_PORT:-8002}" <<'PY'
import sys, time, urllib.request
ctr, deadline, ports = sys.argv[1], time.monotonic() + float(sys.argv[2]), sys.argv[3:]
for port in ports:
    url = f"http://127.0.0.1:{port}/readyz"
    while True:
        try:
            if urllib.request.urlopen(url, timeout=5).status == 200:
                print(f"{url}: ready")
                break
        except OSError:
            pass
        if time.monotonic() > deadline:
            sys.exit(f"{url} not ready in time; see `{ctr} logs videoqa-engine` (and videoqa-gateway-1/2)")
        time.sleep(1)
PY
    ;;
  down)
    if [ "${VOLUMES:-0}" = "1" ]; then compose down -v; else compose down; fi
    left=$("$CTR" ps -a --format '{{.Names}}' | grep -E '^videoqa-(redis|engine|gateway-[12])$' || true)
    if [ -n "$left" ]; then echo "still there: $left" >&2; exit 1; fi
    ;;
  *)
    echo "usage: $0 up|down" >&2
    exit 2
    ;;
esac
