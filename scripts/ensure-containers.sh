#!/usr/bin/env bash
# Makes sure a container engine can build and run the images (`make images`, the deploy tests): docker when its
# daemon answers, else podman + buildah + runc (+ mmdebstrap for the local base image) from Debian.
set -euo pipefail
if command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then exit 0; fi
need=()
for tool in podman buildah runc mmdebstrap; do command -v "$tool" >/dev/null 2>&1 || need+=("$tool"); done
# netavark + aardvark-dns: container networks with name resolution (compose services find each other by name);
# netavark sets those networks up with iptables, which a minimal machine lacks ("netavark: No such file or directory"
# when a container starts).
for pkg in netavark aardvark-dns iptables; do dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg"); done
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" = "0" ]; then SUDO=""; else SUDO="sudo"; fi
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
podman --version
