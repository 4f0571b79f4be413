"""The chart rendered once per example values file (helm template), parsed into objects, for every test here.

helm comes from scripts/install-helm.sh (run by scripts/setup.sh) into the venv's bin; no cluster is involved.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "videoqa"
CI_FILES = sorted(p.name for p in (CHART / "ci").glob("*-values.yaml"))
KUBE_VERSION = "1.35.0"
NAMESPACE = "videoqa"
RELEASE = "vqa"
# The CRDs these charts' optional objects need, as a cluster that runs them would announce them to helm.
API_VERSIONS = ("monitoring.coreos.com/v1/ServiceMonitor", "monitoring.coreos.com/v1/PrometheusRule")


def helm_binary() -> str:
    beside = Path(sys.executable).parent / "helm"
    found = str(beside) if beside.is_file() else shutil.which("helm")
    if found is None:
        pytest.fail("helm is not installed; run scripts/install-helm.sh (make setup does)")
    return found


def helm(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([helm_binary(), *args], capture_output=True, text=True, timeout=120)
    if check and proc.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}{proc.stdout}")
    return proc


def render(values_file: str | None = None, *sets: str, api_versions: tuple[str, ...] = API_VERSIONS) -> list[dict]:
    args = ["template", RELEASE, str(CHART), "--namespace", NAMESPACE, "--kube-version", KUBE_VERSION]
    if values_file:
        args += ["-f", str(CHART / "ci" / values_file)]
    for api in api_versions:
        args += ["--api-versions", api]
    for s in sets:
        args += ["--set", s]
    return [doc for doc in yaml.safe_load_all(helm(*args).stdout) if doc]


@pytest.fixture(scope="session")
def rendered() -> dict[str, list[dict]]:
    """values file name -> rendered objects, each file rendered once per session."""
    return {name: render(name) for name in CI_FILES}


@pytest.fixture(scope="session")
def values() -> Callable[[str], dict]:
    """values file name -> the merged values helm saw (chart defaults overlaid with the file)."""
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())

    def merge(base: dict, over: dict) -> dict:
        out = dict(base)
        for k, v in over.items():
            out[k] = merge(base[k], v) if isinstance(v, dict) and isinstance(base.get(k), dict) else v
        return out

    return lambda name: merge(defaults, yaml.safe_load((CHART / "ci" / name).read_text()) or {})


# ---- helpers on rendered objects ------------------------------------------------------------------------------


def find(objs: list[dict], kind: str, component: str | None = None) -> list[dict]:
    return [
        o
        for o in objs
        if o["kind"] == kind
        and (component is None or o["metadata"].get("labels", {}).get("app.kubernetes.io/component") == component)
    ]


def one(objs: list[dict], kind: str, component: str | None = None) -> dict:
    found = find(objs, kind, component)
    assert len(found) == 1, f"expected one {kind} {component or ''}, found {len(found)}"
    return found[0]


def pod_templates(obj: dict) -> Iterator[tuple[str, dict]]:
    """(name, pod spec holder with metadata+spec) of every pod an object makes."""
    kind, spec = obj["kind"], obj.get("spec", {})
    if kind == "Pod":
        yield obj["metadata"]["name"], obj
    elif kind in ("Deployment", "StatefulSet", "Job", "DaemonSet"):
        yield obj["metadata"]["name"], spec["template"]
    elif kind == "PyTorchJob":
        for role, replica in spec["pytorchReplicaSpecs"].items():
            yield f"{obj['metadata']['name']}/{role}", replica["template"]


def containers(pod: dict) -> list[dict]:
    return pod["spec"].get("initContainers", []) + pod["spec"]["containers"]


def selects(selector: dict, labels: dict) -> bool:
    """Kubernetes label-selector semantics (matchLabels and matchExpressions)."""
    for k, v in selector.get("matchLabels", {}).items():
        if labels.get(k) != v:
            return False
    for expr in selector.get("matchExpressions", []):
        key, op, vals = expr["key"], expr["operator"], expr.get("values", [])
        if (
            (op == "In" and labels.get(key) not in vals)
            or (op == "NotIn" and labels.get(key) in vals)
            or (op == "Exists" and key not in labels)
            or (op == "DoesNotExist" and key in labels)
        ):
            return False
    return True


def env_of(container: dict) -> dict[str, dict]:
    return {e["name"]: e for e in container.get("env", [])}
