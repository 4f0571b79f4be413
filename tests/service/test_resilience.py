"""Jobs survive a worker killed mid-job; the gateway survives Redis going away and recovers when it returns."""

from __future__ import annotations

import subprocess
import time

import httpx
import pytest


def _upload(url: str, path) -> str:
    with open(path, "rb") as f:
        return httpx.post(f"{url}/v1/files", files={"file": ("v.mp4", f)}, timeout=60).json()["id"]


def _wait_job(url: str, job_id: str, statuses: set[str], timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = httpx.get(f"{url}/v1/jobs/{job_id}", timeout=10).json()
        if job["status"] in statuses:
            return job
        time.sleep(0.05)
    raise TimeoutError(f"job {job_id} never reached {statuses}: {job}")


def test_jobs_run_and_are_idempotent(start_gateway, redis_server, videos) -> None:
    gw = start_gateway(redis_url=redis_server.url, redis_namespace="jobs-basic")
    file_id = _upload(gw.url, videos["short"])
    body = {
        "task": "qa",
        "question": "What is shown?",
        "file_id": file_id,
        "num_frames": 4,
        "max_tokens": 6,
        "idempotency_key": "order-42",
    }
    first = httpx.post(f"{gw.url}/v1/jobs", json=body)
    assert first.status_code == 202 and first.headers["Location"].endswith(first.json()["id"])
    again = httpx.post(f"{gw.url}/v1/jobs", json=body)
    assert again.json()["id"] == first.json()["id"]  # same key, same job: no duplicate work
    done = _wait_job(gw.url, first.json()["id"], {"succeeded", "failed"})
    assert done["status"] == "succeeded" and done["attempts"] == 1
    assert done["result"]["frames"] == 4 and done["result"]["usage"]["completion_tokens"] >= 1
    missing = httpx.get(f"{gw.url}/v1/jobs/job-nope")
    assert missing.status_code == 404
    bad = httpx.post(f"{gw.url}/v1/jobs", json={"task": "qa", "file_id": file_id})
    assert bad.status_code == 400


def test_a_job_whose_worker_is_killed_mid_job_is_finished_by_another(
    start_gateway, redis_server, videos, tmp_path
) -> None:
    ns = "jobs-kill"
    shared = str(tmp_path / "shared-data")  # gateways on one Redis share the video store too
    a = start_gateway(redis_url=redis_server.url, redis_namespace=ns, job_lease_s="2", data_dir=shared)
    file_id = _upload(a.url, videos["long"])
    body = {"task": "caption", "file_id": file_id, "num_frames": 16, "max_tokens": 1500}
    job_id = httpx.post(f"{a.url}/v1/jobs", json=body).json()["id"]
    running = _wait_job(a.url, job_id, {"running", "succeeded"})
    assert running["status"] == "running", "the job finished before the worker could be killed"
    owner = subprocess.run(
        ["redis-cli", "-p", str(redis_server.port), "HGET", f"{ns}:job:{job_id}", "worker"],
        capture_output=True,
        text=True,
    ).stdout.strip()
    assert owner.endswith(f":{a.proc.pid}:0")
    a.kill()  # SIGKILL mid-job: no cleanup, no goodbye
    b = start_gateway(redis_url=redis_server.url, redis_namespace=ns, job_lease_s="2", data_dir=shared)
    done = _wait_job(b.url, job_id, {"succeeded", "failed"}, timeout=180)
    assert done["status"] == "succeeded", done
    assert done["attempts"] == 2  # delivered again after the lease lapsed, completed once
    assert done["result"]["frames"] == 16


def test_redis_stopped_mid_test_then_restarted(start_gateway, redis_server, videos) -> None:
    gw = start_gateway(redis_url=redis_server.url, redis_namespace="outage")
    file_id = _upload(gw.url, videos["other"])
    ask = {"file_id": file_id, "question": "What moves?", "num_frames": 4, "max_tokens": 4}
    assert httpx.post(f"{gw.url}/v1/video/qa", json=ask, timeout=120).status_code == 200
    redis_server.stop()
    try:
        r = httpx.post(f"{gw.url}/v1/video/qa", json=ask | {"question": "And now?"}, timeout=120)
        assert r.status_code == 200, r.text  # keeps answering: cache miss, local file registry
        assert httpx.get(f"{gw.url}/readyz").status_code == 503
        jobs = httpx.post(f"{gw.url}/v1/jobs", json={"task": "caption", "file_id": file_id})
        assert jobs.status_code == 503 and jobs.json()["error"]["code"] == "state_unavailable"  # never silently lost
        assert jobs.headers["Retry-After"] == "1"
    finally:
        redis_server.start()
    # The first submission after Redis is back is accepted: no cooldown, nothing waited for first.
    back = httpx.post(f"{gw.url}/v1/jobs", json={"task": "caption", "file_id": file_id, "max_tokens": 2}, timeout=30)
    assert back.status_code == 202, back.text
    deadline = time.monotonic() + 30
    while httpx.get(f"{gw.url}/readyz").status_code != 200:  # polling a condition, with a deadline
        assert time.monotonic() < deadline, "gateway did not notice Redis coming back"
        time.sleep(0.2)
    again = httpx.post(f"{gw.url}/v1/video/qa", json=ask | {"question": "Once more?"}, timeout=120)
    assert again.status_code == 200
    cached = httpx.post(f"{gw.url}/v1/video/qa", json=ask | {"question": "And again?"}, timeout=120)
    assert cached.json()["cache_hit"] is True  # Redis is used again after recovery


@pytest.mark.parametrize("workers", [0])
def test_a_gateway_without_workers_only_queues(start_gateway, redis_server, videos, workers, tmp_path) -> None:
    ns, shared = "queue-only", str(tmp_path / "shared-data")
    gw = start_gateway(redis_url=redis_server.url, redis_namespace=ns, job_workers=str(workers), data_dir=shared)
    file_id = _upload(gw.url, videos["short"])
    job = httpx.post(f"{gw.url}/v1/jobs", json={"task": "caption", "file_id": file_id, "max_tokens": 2}).json()
    assert httpx.get(f"{gw.url}/v1/jobs/{job['id']}").json()["status"] == "queued"
    # A gateway with workers on the same queue takes it: the job was really waiting for a worker, not stuck.
    other = start_gateway(redis_url=redis_server.url, redis_namespace=ns, data_dir=shared)
    done = _wait_job(other.url, job["id"], {"succeeded", "failed"})
    assert done["status"] == "succeeded" and done["attempts"] == 1
    owner = subprocess.run(
        ["redis-cli", "-p", str(redis_server.port), "HGET", f"{ns}:job:{job['id']}", "worker"],
        capture_output=True,
        text=True,
    ).stdout.strip()
    assert owner.endswith(f":{other.proc.pid}:0")  # the worker-less gateway, up since submission, never took it
