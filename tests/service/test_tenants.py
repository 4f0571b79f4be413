"""Two tenants on one gateway (in-process state) and on two gateways sharing one Redis: neither can see the
other's files, jobs, idempotency keys or answers (a foreign id is a 404, like an unknown one); an operator key
sees and cancels both; the request log names the tenant, never the key."""

from __future__ import annotations

import time
from dataclasses import dataclass

import httpx
import pytest

from videoqa.service.tenants import hash_key

ALICE_KEY, BOB_KEY, ADMIN_KEY = "alice-secret-1", "bob-plain-dev-key", "ops-secret"
# alice and the operator are configured by hash (production); bob by plain key (development).
API_KEYS = f"alice:{hash_key(ALICE_KEY)},{BOB_KEY}"
ADMIN_KEYS = f"ops:{hash_key(ADMIN_KEY)}"
BOB = f"key-{hash_key(BOB_KEY)[:8]}"


@dataclass
class Client:
    """One caller: a key, and the gateway it talks to."""

    url: str
    key: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}

    def get(self, path: str, **kw) -> httpx.Response:
        return httpx.get(f"{self.url}{path}", headers=self.headers, timeout=60, **kw)

    def post(self, path: str, **kw) -> httpx.Response:
        headers = self.headers | kw.pop("headers", {})
        return httpx.post(f"{self.url}{path}", headers=headers, timeout=120, **kw)

    def delete(self, path: str) -> httpx.Response:
        return httpx.delete(f"{self.url}{path}", headers=self.headers, timeout=60)

    def upload(self, path) -> str:
        with open(path, "rb") as f:
            r = self.post("/v1/files", files={"file": ("clip.mp4", f, "video/mp4")})
        assert r.status_code == 200, r.text
        return r.json()["id"]


@dataclass
class Setup:
    backend: str
    alice: Client
    bob: Client
    admin: Client
    logs: list
    workers: bool  # whether jobs run (False: they stay queued, so cancelling is deterministic)


@pytest.fixture(scope="module", params=["memory", "redis"])
def setup(request, start_gateway) -> Setup:
    common = {"api_keys": API_KEYS, "admin_keys": ADMIN_KEYS}
    if request.param == "memory":
        # One gateway; per-tenant frame cache; no job workers, so jobs stay queued for the cancel checks.
        gw = start_gateway(**common, frame_cache_scope="tenant", job_workers="0")
        return Setup(
            "memory",
            Client(gw.url, ALICE_KEY),
            Client(gw.url, BOB_KEY),
            Client(gw.url, ADMIN_KEY),
            [gw.log],
            workers=False,
        )
    # Two gateways on one Redis (one data_dir, as the docs require): alice uses one, bob the other.
    redis_url = request.getfixturevalue("redis_server").url
    first = start_gateway(**common, redis_url=redis_url, redis_namespace="tenants")
    data_dir = first.log.parent / "data"
    second = start_gateway(**common, redis_url=redis_url, redis_namespace="tenants", data_dir=str(data_dir))
    return Setup(
        "redis",
        Client(first.url, ALICE_KEY),
        Client(second.url, BOB_KEY),
        Client(second.url, ADMIN_KEY),
        [first.log, second.log],
        workers=True,
    )


def _not_found(r: httpx.Response, code: str) -> None:
    assert r.status_code == 404, r.text
    assert r.json()["error"]["code"] == code


def _wait_done(client: Client, job_id: str, timeout: float = 180) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        job = client.get(f"/v1/jobs/{job_id}").json()
        if job["status"] in ("succeeded", "failed"):
            return job
        assert time.monotonic() < deadline, f"job {job_id} still {job['status']}"
        time.sleep(0.2)


def test_files_are_per_tenant(setup: Setup, videos) -> None:
    alice, bob = setup.alice, setup.bob
    secret = alice.upload(videos["short"])
    shared = alice.upload(videos["other"])
    assert bob.upload(videos["other"]) == shared  # same content, same id: but each tenant has its own entry
    assert alice.get(f"/v1/files/{secret}").status_code == 200
    unknown = "0" * 64
    _not_found(bob.get(f"/v1/files/{secret}"), "file_not_found")  # foreign: exactly like...
    _not_found(bob.get(f"/v1/files/{unknown}"), "file_not_found")  # ...an id nobody has
    _not_found(bob.delete(f"/v1/files/{secret}"), "file_not_found")
    assert alice.get(f"/v1/files/{secret}").status_code == 200  # bob's delete did nothing
    # alice deletes her entry of the shared content; bob's entry (and so the bytes) stays.
    assert alice.delete(f"/v1/files/{shared}").json()["deleted"] is True
    _not_found(alice.get(f"/v1/files/{shared}"), "file_not_found")
    assert bob.get(f"/v1/files/{shared}").status_code == 200
    answer = bob.post("/v1/video/qa", json={"file_id": shared, "question": "q", "num_frames": 4, "max_tokens": 2})
    assert answer.status_code == 200, answer.text


def test_questions_cannot_use_another_tenants_file(setup: Setup, videos) -> None:
    alice, bob = setup.alice, setup.bob
    secret = alice.upload(videos["short"])
    body = {"file_id": secret, "question": "What happens?", "num_frames": 4, "max_tokens": 2}
    assert alice.post("/v1/video/qa", json=body).status_code == 200
    _not_found(bob.post("/v1/video/qa", json=body), "file_not_found")
    caption = {k: v for k, v in body.items() if k != "question"}  # caption refuses a question by name
    _not_found(bob.post("/v1/video/caption", json=caption), "file_not_found")
    chat = {
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "video_url", "video_url": {"url": f"videoqa://files/{secret}"}},
                    {"type": "text", "text": "What happens?"},
                ],
            }
        ],
        "max_tokens": 2,
        "num_frames": 4,
    }
    assert alice.post("/v1/chat/completions", json=chat).status_code == 200
    _not_found(bob.post("/v1/chat/completions", json=chat), "file_not_found")
    _not_found(bob.post("/v1/chat/completions", json=chat | {"stream": True}), "file_not_found")
    _not_found(bob.post("/v1/jobs", json={"file_id": secret, "task": "caption"}), "file_not_found")


def test_same_idempotency_key_gives_each_tenant_its_own_job(setup: Setup, videos) -> None:
    alice, bob, admin = setup.alice, setup.bob, setup.admin
    key = {"Idempotency-Key": f"report-1-{setup.backend}"}
    a_file, b_file = alice.upload(videos["short"]), bob.upload(videos["long"])
    a = alice.post(
        "/v1/jobs",
        json={"file_id": a_file, "task": "qa", "question": "A?", "max_tokens": 4, "num_frames": 4},
        headers=key,
    )
    b = bob.post(
        "/v1/jobs",
        json={"file_id": b_file, "task": "qa", "question": "B?", "max_tokens": 4, "num_frames": 4},
        headers=key,
    )
    assert a.status_code == b.status_code == 202, (a.text, b.text)
    a_job, b_job = a.json(), b.json()
    assert a_job["id"] != b_job["id"]
    assert (a_job["tenant"], b_job["tenant"]) == ("alice", BOB)
    # Idempotency still holds within a tenant.
    again = alice.post("/v1/jobs", json={"file_id": a_file, "task": "caption"}, headers=key)
    assert again.json()["id"] == a_job["id"]

    _not_found(bob.get(f"/v1/jobs/{a_job['id']}"), "job_not_found")
    _not_found(alice.get(f"/v1/jobs/{b_job['id']}"), "job_not_found")
    _not_found(alice.get("/v1/jobs/job-00000000000000000000000000000000"), "job_not_found")
    if setup.workers:
        done_a, done_b = _wait_done(alice, a_job["id"]), _wait_done(bob, b_job["id"])
        assert done_a["status"] == done_b["status"] == "succeeded", (done_a, done_b)
        assert done_a["result"]["frames"] == done_b["result"]["frames"] == 4
        # Each result is the tenant's own video: different durations in the timestamps.
        assert done_a["result"]["timestamps"] != done_b["result"]["timestamps"]
        _not_found(bob.get(f"/v1/jobs/{a_job['id']}"), "job_not_found")  # finished: still not bob's

    # Listing: each tenant sees its own jobs only; `tenant=` cannot widen a tenant's view.
    a_ids = {j["id"] for j in alice.get("/v1/jobs").json()["data"]}
    b_ids = {j["id"] for j in bob.get("/v1/jobs", params={"tenant": "alice"}).json()["data"]}
    assert a_job["id"] in a_ids and b_job["id"] not in a_ids
    assert b_job["id"] in b_ids and a_job["id"] not in b_ids
    # The operator sees both, and can narrow to one tenant.
    everyone = admin.get("/v1/jobs", params={"limit": 1000}).json()["data"]
    assert {a_job["id"], b_job["id"]} <= {j["id"] for j in everyone}
    assert {j["tenant"] for j in admin.get("/v1/jobs", params={"tenant": BOB}).json()["data"]} == {BOB}
    assert admin.get(f"/v1/jobs/{a_job['id']}").json()["tenant"] == "alice"


def test_cancel_is_scoped_and_operators_cancel_anyones(setup: Setup, videos) -> None:
    if setup.workers:
        pytest.skip("jobs run at once on this setup; cancelling queued jobs is checked on the worker-less one")
    alice, bob, admin = setup.alice, setup.bob, setup.admin
    file_id = alice.upload(videos["short"])
    jobs = [alice.post("/v1/jobs", json={"file_id": file_id, "task": "caption"}).json()["id"] for _ in range(2)]
    _not_found(bob.post(f"/v1/jobs/{jobs[0]}/cancel"), "job_not_found")
    assert alice.get(f"/v1/jobs/{jobs[0]}").json()["status"] == "queued"
    assert alice.post(f"/v1/jobs/{jobs[0]}/cancel").json()["status"] == "cancelled"
    assert admin.post(f"/v1/jobs/{jobs[1]}/cancel").json()["status"] == "cancelled"
    assert {j["id"] for j in alice.get("/v1/jobs", params={"status": "cancelled"}).json()["data"]} >= set(jobs)
    assert not {j["id"] for j in alice.get("/v1/jobs", params={"status": "queued"}).json()["data"]} & set(jobs)
    again = alice.post(f"/v1/jobs/{jobs[0]}/cancel")
    assert again.status_code == 200 and again.json()["status"] == "cancelled"  # cancelling twice is harmless


def test_frame_cache_scope(setup: Setup, videos) -> None:
    """Shared by content (Redis setup, the default) or per tenant (memory setup: scope `tenant`)."""
    alice, bob = setup.alice, setup.bob
    body = {"question": "q", "num_frames": 6, "max_tokens": 2, "policy": "exact"}
    a_id, b_id = alice.upload(videos["long"]), bob.upload(videos["long"])
    assert a_id == b_id
    first = alice.post("/v1/video/qa", json=body | {"file_id": a_id}).json()
    assert alice.post("/v1/video/qa", json=body | {"file_id": a_id}).json()["cache_hit"] is True
    other = bob.post("/v1/video/qa", json=body | {"file_id": b_id}).json()
    assert other["timestamps"] == first["timestamps"]
    assert other["cache_hit"] is (setup.backend == "redis")


def test_wrong_keys_and_log_lines(setup: Setup) -> None:
    assert httpx.get(f"{setup.alice.url}/v1/jobs").status_code == 401
    wrong = httpx.get(f"{setup.alice.url}/v1/jobs", headers={"Authorization": f"Bearer {hash_key(ALICE_KEY)}"})
    assert wrong.status_code == 401  # the stored hash is not a key
    assert setup.alice.get("/v1/models").status_code == 200
    text = "".join(log.read_text() for log in setup.logs)
    assert "tenant=alice" in text and f"tenant={BOB}" in text and "tenant=ops" in text
    for key in (ALICE_KEY, BOB_KEY, ADMIN_KEY):
        assert key not in text


def test_key_configuration() -> None:
    from videoqa.service.settings import Settings
    from videoqa.service.tenants import parse_keys

    ring = parse_keys(f"alice:{hash_key('k1')}, alice:{hash_key('k2').upper()} ,devkey")
    assert ring == {
        hash_key("k1"): "alice",
        hash_key("k2"): "alice",
        hash_key("devkey"): f"key-{hash_key('devkey')[:8]}",
    }
    with pytest.raises(ValueError, match="tenant name '-x'"):
        parse_keys(f"-x:{hash_key('k')}")
    with pytest.raises(ValueError, match="both api_keys and admin_keys"):
        Settings(api_keys="same", admin_keys="same")
    with pytest.raises(ValueError, match="reuse tenant name"):
        Settings(api_keys=f"ops:{hash_key('a')}", admin_keys=f"ops:{hash_key('b')}")
    with pytest.raises(ValueError, match="reserved"):
        Settings(api_keys=f"anonymous:{hash_key('a')}")
