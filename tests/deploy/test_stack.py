"""docker/compose.yaml's stack in real containers, checked from outside: what an operator relies on."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from openai import OpenAI

from tests.deploy.conftest import Stack, status, wait_for
from videoqa.video.testing import make_test_video

pytestmark = pytest.mark.deploy


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_test_video(tmp_path_factory.mktemp("clips") / "clip.mp4", seconds=4, fps=12, gop=12)


def upload(gateway: str, path: Path) -> str:
    with path.open("rb") as f:
        resp = httpx.post(f"{gateway}/v1/files", files={"file": (path.name, f, "video/mp4")}, timeout=120)
    assert resp.status_code == 200, resp.text
    return resp.json()["id"]


@pytest.mark.parametrize("module", ["torch", "vllm"])
def test_gateway_image_has_no_torch_or_vllm(stack: Stack, module: str) -> None:
    run = stack.run("run", "--rm", "localhost/videoqa-gateway:dev", "python", "-c", f"import {module}", check=False)
    assert run.returncode != 0
    assert f"No module named '{module}'" in run.stderr


def test_gateway_image_is_under_1_gb(stack: Stack) -> None:
    size = int(stack.run("image", "inspect", "--format", "{{.Size}}", "localhost/videoqa-gateway:dev").stdout)
    assert size < 1024**3, f"gateway image is {size / 1e6:.0f} MB"


def test_upload_through_one_gateway_ask_through_the_other(stack: Stack, clip: Path) -> None:
    first, second = stack.gateways
    file_id = upload(first, clip)
    client = OpenAI(base_url=f"{second}/v1", api_key="unused", timeout=300)
    model = client.models.list().data[0].id
    reply = client.chat.completions.create(
        model=model,
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "video_url", "video_url": {"url": f"videoqa://files/{file_id}"}},
                    {"type": "text", "text": "What colour is the background?"},
                ],
            }
        ],
        max_tokens=8,
        temperature=0,
    )
    assert reply.choices[0].finish_reason in ("stop", "length")
    assert reply.usage is not None and reply.usage.completion_tokens > 0
    qa = httpx.post(
        f"{second}/v1/video/qa", json={"file_id": file_id, "question": "What happens?", "max_tokens": 8}, timeout=300
    )
    assert qa.status_code == 200, qa.text
    assert qa.json()["frames"] > 0 and qa.json()["usage"]["completion_tokens"] > 0


def test_metrics_on_both_gateways(stack: Stack) -> None:
    for gateway in stack.gateways:
        resp = httpx.get(f"{gateway}/metrics", timeout=30)
        assert resp.status_code == 200
        assert "videoqa_" in resp.text


def test_hostile_input_at_the_container_boundary(stack: Stack, tmp_path: Path) -> None:
    gateway = stack.gateways[0]
    fake = tmp_path / "fake.mp4"
    fake.write_bytes(b"this is not a video" * 100)
    with fake.open("rb") as f:
        refused = httpx.post(f"{gateway}/v1/files", files={"file": ("fake.mp4", f, "video/mp4")}, timeout=60)
    assert refused.status_code == 415, refused.text
    assert refused.json()["error"]["type"] == "invalid_request_error"
    # SSRF: the gateway container must not fetch from loopback or the container network's private ranges.
    for url in ("http://127.0.0.1:8000/healthz", "http://10.88.0.1/", "http://engine:8100/internal/health"):
        ssrf = httpx.post(f"{gateway}/v1/video/caption", json={"video_url": url}, timeout=60)
        assert 400 <= ssrf.status_code < 500, (url, ssrf.status_code, ssrf.text)


def test_sigterm_lets_the_in_flight_request_finish(stack: Stack, clip: Path) -> None:
    gateway, container = stack.gateways[1], "videoqa-gateway-2"
    boundary = "videoqa-deploy-test"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="clip.mp4"\r\n'
        "Content-Type: video/mp4\r\n\r\n"
    ).encode()
    data = clip.read_bytes()
    tail = f"\r\n--{boundary}--\r\n".encode()
    half_sent, terminated = threading.Event(), threading.Event()

    def body() -> Iterator[bytes]:
        yield head + data[: len(data) // 2]
        half_sent.set()
        assert terminated.wait(120), "the test never sent SIGTERM"
        yield data[len(data) // 2 :] + tail

    result: dict[str, httpx.Response] = {}

    def post() -> None:
        result["response"] = httpx.post(
            f"{gateway}/v1/files",
            content=body(),
            headers={"content-type": f"multipart/form-data; boundary={boundary}"},
            timeout=120,
        )

    started = stack.started_at(container)
    sender = threading.Thread(target=post)
    sender.start()
    try:
        assert half_sent.wait(60)
        stack.run("kill", "--signal", "TERM", container)
        # uvicorn (behind dumb-init) got the signal once it says so; only then send the rest of the body.
        wait_for(lambda: "Shutting down" in stack.logs(container), 60, "the gateway did not log its shutdown")
    finally:
        terminated.set()
        sender.join(180)
    response = result["response"]
    assert response.status_code == 200, response.text
    assert len(response.json()["id"]) == 64
    # Then it exits (and its restart policy may start it again).
    wait_for(
        lambda: stack.state(container) != "running" or stack.started_at(container) != started,
        120,
        "the gateway did not exit after SIGTERM",
    )
    stack.ensure_running(container)
    stack.wait_ready()


def test_readyz_follows_the_engine_container(stack: Stack) -> None:
    stack.run("stop", "videoqa-engine", timeout=120)
    try:
        for gateway in stack.gateways:
            wait_for(lambda g=gateway: status(f"{g}/readyz") == 503, 60, f"{gateway}/readyz did not turn 503")
    finally:
        stack.run("start", "videoqa-engine")
    stack.wait_ready()


def test_caption_job_finishes_although_its_gateway_is_killed(stack: Stack, clip: Path) -> None:
    first, second = stack.gateways
    file_id = upload(first, clip)
    # Only gateway 1 may claim the job, and the engine holds its generation (paused, so still reachable), so the
    # job is mid-flight on gateway 1 when that container is killed.
    stack.run("stop", "videoqa-gateway-2", timeout=120)
    stack.run("pause", "videoqa-engine")
    try:
        job = httpx.post(f"{first}/v1/jobs", json={"task": "caption", "file_id": file_id, "max_tokens": 16}, timeout=60)
        assert job.status_code == 202, job.text
        job_url = f"{first}/v1/jobs/{job.json()['id']}"
        wait_for(lambda: httpx.get(job_url, timeout=10).json()["status"] == "running", 120, "job never claimed")
        stack.run("kill", "--signal", "KILL", "videoqa-gateway-1")
    finally:
        stack.run("unpause", "videoqa-engine", check=False)
        stack.ensure_running("videoqa-gateway-2")
    job_url = f"{second}/v1/jobs/{job.json()['id']}"
    wait_for(lambda: status(f"{second}/readyz") == 200, 600, "gateway 2 did not come back")
    wait_for(lambda: httpx.get(job_url, timeout=10).json()["status"] in ("succeeded", "failed"), 600, "job not done")
    done = httpx.get(job_url, timeout=10).json()
    assert done["status"] == "succeeded", done
    assert done["attempts"] >= 2, done  # the killed gateway's attempt, then another gateway's
    assert done["result"]["answer"]
    stack.ensure_running("videoqa-gateway-1")
    stack.wait_ready()
