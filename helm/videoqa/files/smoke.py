"""`helm test` for a videoqa release (runs in the gateway image): readiness, a clip made here uploaded and asked
about through REST and the OpenAI-compatible chat API, then the metrics those requests left.

Environment: GATEWAY_URL, API_KEYS (comma-separated; the first is used, empty = open), READY_TIMEOUT_S, QUESTION.
Exits non-zero with a message naming the step that failed.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

import httpx

from videoqa.video.testing import make_test_video


def fail(step: str, detail: object) -> None:
    print(f"FAILED at {step}: {detail}", file=sys.stderr)
    sys.exit(1)


def expect(step: str, resp: httpx.Response, status: int = 200) -> dict:
    if resp.status_code != status:
        fail(step, f"HTTP {resp.status_code} (wanted {status}): {resp.text[:500]}")
    print(f"ok: {step}")
    return resp.json() if resp.headers.get("content-type", "").startswith("application/json") else {}


def main() -> None:
    url = os.environ["GATEWAY_URL"].rstrip("/")
    key = next((k.strip() for k in os.environ.get("API_KEYS", "").split(",") if k.strip()), "")
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    question = os.environ.get("QUESTION", "What is shown in this video?")
    deadline = time.monotonic() + float(os.environ.get("READY_TIMEOUT_S", "600"))
    with httpx.Client(base_url=url, headers=headers, timeout=httpx.Timeout(300.0, connect=10.0)) as client:
        while True:  # the engine may still be loading: wait on readiness with a deadline
            try:
                if client.get("/readyz").status_code == 200:
                    print("ok: /readyz")
                    break
            except httpx.HTTPError as err:
                last = err
            else:
                last = "503"
            if time.monotonic() > deadline:
                fail("/readyz", f"not ready before the deadline (last: {last})")
            time.sleep(5)

        clip = make_test_video(Path(tempfile.mkdtemp()) / "smoke.mp4", seconds=3, fps=8)
        with clip.open("rb") as f:
            file_id = expect("POST /v1/files", client.post("/v1/files", files={"file": ("smoke.mp4", f, "video/mp4")}))[
                "id"
            ]
        qa = expect(
            "POST /v1/video/qa",
            client.post("/v1/video/qa", json={"file_id": file_id, "question": question, "num_frames": 4}),
        )
        if not qa.get("answer", "").strip() and qa.get("finish_reason") != "length":
            fail("POST /v1/video/qa", f"empty answer: {qa}")
        model = expect("GET /v1/models", client.get("/v1/models"))["data"][0]["id"]
        chat = expect(
            "POST /v1/chat/completions",
            client.post(
                "/v1/chat/completions",
                json={
                    "model": model,
                    "max_tokens": 32,
                    "messages": [
                        {
                            "role": "user",
                            "content": [
                                {"type": "video_url", "video_url": {"url": f"videoqa://files/{file_id}"}},
                                {"type": "text", "text": question},
                            ],
                        }
                    ],
                    "num_frames": 4,
                },
            ),
        )
        if chat["choices"][0]["message"].get("content") is None:
            fail("POST /v1/chat/completions", f"no message content: {chat}")
        # The Service may route this scrape to another gateway than the one that answered above; every gateway
        # has counted at least its own probes by now.
        metrics = client.get("/metrics")
        expect("GET /metrics", metrics)
        if "videoqa_requests_total{" not in metrics.text or "videoqa_engine_queue_depth" not in metrics.text:
            fail("GET /metrics", f"videoqa series missing: {metrics.text[:300]}")
        print("ok: /metrics serves the videoqa series")
    print(f"videoqa smoke test passed against {url}: {qa['answer'][:80]!r}")


if __name__ == "__main__":
    main()
