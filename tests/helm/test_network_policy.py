"""NetworkPolicies on the rendered objects: who may reach engines and Redis, and where gateways may connect."""

from __future__ import annotations

import ipaddress

import pytest

from tests.helm.conftest import find, one, pod_templates, selects

PUBLIC = "93.184.216.34"  # a public address: video URLs live there
BLOCKED = ("169.254.169.254", "10.0.0.12", "172.20.1.1", "192.168.1.5", "127.0.0.1", "100.64.3.4")


def _pod_labels(objs: list[dict]) -> dict[str, dict]:
    """component -> pod labels, for every pod the release runs (test pods included)."""
    out = {}
    for obj in objs:
        for _, pod in pod_templates(obj):
            labels = pod["metadata"]["labels"]
            out[labels["app.kubernetes.io/component"]] = labels
    return out


def _policy_for(objs: list[dict], labels: dict) -> list[dict]:
    return [p for p in find(objs, "NetworkPolicy") if selects(p["spec"]["podSelector"], labels)]


def _allowed_sources(policy: dict, pods: dict[str, dict]) -> set[str]:
    allowed = set()
    for rule in policy["spec"].get("ingress", []):
        peers = rule.get("from")
        if peers is None:  # no `from`: every source
            return set(pods) | {"anywhere"}
        for peer in peers:
            assert set(peer) == {"podSelector"}, f"unexpected peer {peer}"
            allowed |= {c for c, labels in pods.items() if selects(peer["podSelector"], labels)}
    return allowed


def _egress_allows_ip(policy: dict, ip: str) -> bool:
    addr = ipaddress.ip_address(ip)
    for rule in policy["spec"].get("egress", []):
        for peer in rule.get("to", []):
            block = peer.get("ipBlock")
            if (
                block
                and addr in ipaddress.ip_network(block["cidr"])
                and not any(addr in ipaddress.ip_network(e) for e in block.get("except", []))
            ):
                return True
    return False


@pytest.mark.parametrize("values_file", ["gpu-7b-values.yaml", "cpu-dev-values.yaml"])
def test_only_gateways_reach_engines_and_redis(rendered, values_file: str) -> None:
    objs = rendered[values_file]
    pods = _pod_labels(objs)
    assert {"engine", "gateway", "redis", "test"} <= set(pods)
    for target in ("engine", "redis"):
        (policy,) = _policy_for(objs, pods[target])
        assert "Ingress" in policy["spec"]["policyTypes"]
        # The policy is about this component only, and lets in gateways only
        assert {c for c, labels in pods.items() if selects(policy["spec"]["podSelector"], labels)} == {target}
        assert _allowed_sources(policy, pods) == {"gateway"}, target
    (redis_policy,) = _policy_for(objs, pods["redis"])
    assert not _egress_allows_ip(redis_policy, PUBLIC)


def test_gateway_egress_is_the_internet_but_no_private_range(rendered) -> None:
    objs = rendered["gpu-7b-values.yaml"]
    pods = _pod_labels(objs)
    (policy,) = _policy_for(objs, pods["gateway"])
    assert "Egress" in policy["spec"]["policyTypes"]
    assert _egress_allows_ip(policy, PUBLIC)
    for ip in BLOCKED:
        assert not _egress_allows_ip(policy, ip), f"gateways may reach {ip}"
    assert not _egress_allows_ip(policy, "fd00:ec2::254")  # IPv6 metadata (unique-local)
    # Engine and Redis are reached by pod selector, not by address
    reached = {
        c
        for rule in policy["spec"]["egress"]
        for peer in rule.get("to", [])
        if "podSelector" in peer
        for c, labels in pods.items()
        if selects(peer["podSelector"], labels)
    }
    assert reached == {"engine", "redis"}
    # Clients (ingress controller, helm test pod) reach the gateway
    assert _allowed_sources(policy, pods) >= {"test"}


def test_external_redis_range_is_let_through(rendered) -> None:
    objs = rendered["external-redis-values.yaml"]
    pods = _pod_labels(objs)
    assert "redis" not in pods
    (policy,) = _policy_for(objs, pods["gateway"])
    assert _egress_allows_ip(policy, "10.20.0.7")  # redis.externalCIDRs
    assert not _egress_allows_ip(policy, "10.20.1.7")
    assert not _egress_allows_ip(policy, "169.254.169.254")


def test_engine_may_download_only_when_asked(rendered) -> None:
    with_download = one(rendered["gpu-7b-values.yaml"], "NetworkPolicy", "engine")
    without = one(rendered["external-redis-values.yaml"], "NetworkPolicy", "engine")
    assert _egress_allows_ip(with_download, PUBLIC)
    assert not _egress_allows_ip(with_download, "169.254.169.254")
    assert not _egress_allows_ip(without, PUBLIC)
