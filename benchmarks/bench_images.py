"""Image sizes and cold starts (container start -> /readyz 200) for the images `make images` builds.

    make images && python benchmarks/bench_images.py            # sizes, engine-cpu embedded cold start
    make stack-up && python benchmarks/bench_images.py --stack  # + gateway and split engine cold starts in the stack

Prints one table; numbers depend on the machine (and on what else runs on it).
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
IMAGES = ["videoqa-gateway", "videoqa-engine-cpu", "videoqa-engine", "videoqa-train", "videoqa-redis"]


def containers() -> tuple[str, dict[str, str]]:
    """The engine scripts/containers.sh picks (docker or podman) and its environment."""
    out = subprocess.run(
        ["bash", "-c", 'source scripts/containers.sh && echo "$CTR" && echo "${CONTAINERS_CONF:-}"'],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split("\n")
    env = dict(os.environ)
    if out[1]:
        env["CONTAINERS_CONF"] = out[1]
    return out[0], env


def until_ready(url: str, timeout: float = 900) -> float:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        try:
            r = httpx.get(url, timeout=5)
            if r.status_code == 200:
                return time.monotonic() - start
            error = r.json().get("error")
            if error:  # the engine failed to start: it will not become ready, say why now
                raise SystemExit(f"{url}: the engine failed to start: {error}")
        except (httpx.HTTPError, ValueError):
            pass
        time.sleep(0.2)
    raise TimeoutError(url)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stack", action="store_true", help="also time gateway/engine restarts in the running stack")
    parser.add_argument("--tag", default="dev")
    opts = parser.parse_args()
    ctr, env = containers()

    def run(*args: str, check: bool = True) -> str:
        return subprocess.run([ctr, *args], env=env, capture_output=True, text=True, check=check).stdout.strip()

    rows: list[tuple[str, str, str]] = []
    for name in IMAGES:
        image = f"localhost/{name}:{opts.tag}"
        size = run("image", "inspect", "--format", "{{.Size}}", image, check=False)
        if size:
            rows.append((name, f"{int(size) / 1e6:,.0f} MB", ""))

    # engine-cpu alone, embedded mode (`videoqa serve`, the default model): start -> /readyz.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    start = time.monotonic()
    # vLLM passes frames between its processes in /dev/shm: the 64 MB container default is too small (compose
    # sets 1 GB too).
    cid = run(
        "run",
        "-d",
        "--rm",
        "--shm-size",
        "1g",
        "-p",
        f"127.0.0.1:{port}:8000",
        f"localhost/videoqa-engine-cpu:{opts.tag}",
    )
    try:
        until_ready(f"http://127.0.0.1:{port}/readyz")
        took = time.monotonic() - start
        rows.append(("engine-cpu, embedded `videoqa serve`", "", f"{took:.1f} s"))
    finally:
        run("rm", "-f", cid, check=False)

    if opts.stack:
        restarts = (("videoqa-gateway-1", "gateway (split mode)"), ("videoqa-engine", "engine-cpu (split mode)"))
        for container, what in restarts:
            run("stop", container)
            start = time.monotonic()
            run("start", container)
            until_ready("http://127.0.0.1:8001/readyz")
            rows.append((what, "", f"{time.monotonic() - start:.1f} s"))

    print("| image | size | cold start to /readyz |\n|---|---:|---:|")
    for row in rows:
        print(f"| {' | '.join(row)} |")


if __name__ == "__main__":
    main()
