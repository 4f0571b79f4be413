#!/usr/bin/env bash
# Build a Debian bookworm base image (Python 3.11 + venv) from Debian packages with mmdebstrap, for machines that
# cannot pull the official python:3.11-slim-bookworm (no registry). Usage: scripts/build-base.sh IMAGE_NAME
set -euo pipefail
source "$(dirname "$0")/containers.sh"
name=${1:-localhost/videoqa-base:bookworm}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mmdebstrap --quiet --variant=minbase --include=python3,python3-venv bookworm "$tmp/base.tar"
"$CTR" import "$tmp/base.tar" "$name"
