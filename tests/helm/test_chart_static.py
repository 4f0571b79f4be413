"""helm lint --strict, the values schema, Kubernetes schema validation of every rendered object, the README's values
table and the chart's appVersion."""

from __future__ import annotations

import sys
import tomllib

import jsonschema
import kubernetes_validate
import pytest
import yaml

from tests.helm.conftest import CHART, CI_FILES, KUBE_VERSION, ROOT, helm

# Custom resources: kubernetes-validate has only the built-in kinds' schemas, and no CRD schema ships with the
# project; these are checked structurally in test_workloads.py / test_jobs.py instead.
CUSTOM = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"),
    ("monitoring.coreos.com/v1", "PrometheusRule"),
    ("keda.sh/v1alpha1", "ScaledObject"),
    ("kubeflow.org/v1", "PyTorchJob"),
}


@pytest.mark.parametrize("values_file", CI_FILES)
def test_lint_strict(values_file: str) -> None:
    helm("lint", "--strict", str(CHART), "-f", str(CHART / "ci" / values_file))


@pytest.mark.parametrize("values_file", CI_FILES)
def test_rendered_objects_validate_against_kubernetes(rendered: dict[str, list[dict]], values_file: str) -> None:
    checked = 0
    for obj in rendered[values_file]:
        key = (obj["apiVersion"], obj["kind"])
        if key in CUSTOM:
            continue
        try:
            kubernetes_validate.validate(obj, KUBE_VERSION, strict=True)
        except jsonschema.ValidationError as err:  # what kubernetes_validate.validate raises
            pytest.fail(f"{obj['kind']} {obj['metadata']['name']} ({values_file}): {err.message} at {list(err.path)}")
        checked += 1
    assert checked >= 10  # the workloads, Services, policies... were there to validate


def test_custom_resources_have_no_schema_here(rendered: dict[str, list[dict]]) -> None:
    """A visible note: which custom resources were rendered but not schema-validated (no schema at hand)."""
    kinds = {(o["apiVersion"], o["kind"]) for objs in rendered.values() for o in objs}
    groups = {(api, kind): api.split("/")[0] for api, kind in kinds}
    custom = {key for key, group in groups.items() if "." in group and not group.endswith("k8s.io")}
    assert custom <= CUSTOM, f"custom resources this test does not know about: {sorted(custom - CUSTOM)}"
    seen = sorted(custom)
    pytest.skip("not schema-validated (no CRD schema available offline): " + ", ".join(f"{a} {k}" for a, k in seen))


@pytest.mark.parametrize(
    ("setting", "complaint"),
    [
        ("gateway.replicas=two", "/gateway/replicas"),  # a string where a number belongs
        ("engine.tensorParallelSize=0", "/engine/tensorParallelSize"),
        ("engine.tensorParalelSize=8", "tensorParalelSize"),  # a misspelt key is refused, not ignored
        ("engine.resources.limits.nvidia\\.com/gpu=2", "/engine/resources"),  # GPUs come from tensorParallelSize
        ("redis.mode=sentinel", "/redis/mode"),
        ("podSecurityContext.runAsUser=0", "/podSecurityContext/runAsUser"),
        ("containerSecurityContext.allowPrivilegeEscalation=true", "/containerSecurityContext"),
    ],
)
def test_values_schema_rejects_bad_values(setting: str, complaint: str) -> None:
    proc = helm("lint", "--strict", str(CHART), "--set", setting, check=False)
    assert proc.returncode != 0, f"helm lint accepted --set {setting}"
    assert complaint in proc.stdout + proc.stderr


def test_values_readme_table_is_current() -> None:
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import helm_values_table
    finally:
        sys.path.pop(0)
    values_text = (CHART / "values.yaml").read_text()
    assert helm_values_table.undescribed(values_text) == [], "every value needs a `# --` comment"
    readme = (CHART / "README.md").read_text()
    assert helm_values_table.readme_with_table(readme, values_text) == readme, (
        "helm/videoqa/README.md's values table is stale: run scripts/helm_values_table.py --write"
    )


def test_app_version_is_the_package_version() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert chart["appVersion"] == project["version"]
