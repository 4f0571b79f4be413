"""The gateway's own logic in the fast tier: the real app (routers, validation, sampling, budgets, prompts, error
layer) in this process, with tests/utils/fake_engine.py in place of vLLM. What only a real engine can show (its
answers, aborts, prefix cache) is tested against the session engine in the other tests/service modules."""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from transformers import AutoTokenizer

from tests.utils.fake_engine import FakeEngine
from videoqa.model.layout import num_video_tokens
from videoqa.service.app import create_app
from videoqa.service.settings import Settings
from videoqa.video.testing import make_test_video, read_pattern


class Gateway:
    def __init__(self, client: TestClient, engine: FakeEngine) -> None:
        self.client, self.engine = client, engine

    def upload(self, path: Path) -> str:
        with path.open("rb") as f:
            r = self.client.post("/v1/files", files={"file": (path.name, f, "video/mp4")})
        assert r.status_code == 200, r.text
        return r.json()["id"]


@pytest.fixture(scope="module")
def gw(tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    engine = FakeEngine(tiny_checkpoint)
    data_dir = tmp_path_factory.mktemp("gateway-logic")
    settings = Settings(data_dir=data_dir, decode_workers=1, max_frames=32, job_workers=0)
    # raise_server_exceptions=False: a client sees the 500 response, as over the network, not the exception.
    with TestClient(create_app(settings, engine=engine), raise_server_exceptions=False) as client:
        deadline = time.monotonic() + 60
        while client.get("/readyz").status_code != 200:  # the engine starts in the background
            assert time.monotonic() < deadline, client.get("/readyz").text
            time.sleep(0.05)
        yield Gateway(client, engine)


@pytest.fixture(autouse=True)
def _fresh_engine(gw: Gateway) -> Iterator[None]:
    gw.engine.requests.clear()
    yield
    gw.engine.up, gw.engine.fail, gw.engine.fail_after = True, None, 0


def test_qa_sends_the_sampled_frames_and_a_prompt_with_their_times(gw: Gateway, videos, tiny_checkpoint) -> None:
    file_id = gw.upload(videos["short"])  # 4 s at 12 fps: frame i shows i
    r = gw.client.post(
        "/v1/video/qa", json={"file_id": file_id, "question": "What moves?", "num_frames": 4, "policy": "exact"}
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["answer"] == "a fake answer" and body["frames"] == 4
    [req] = gw.engine.requests
    size = gw.engine.config.image_size
    assert req.frames is not None and req.frames.shape == (4, size, size, 3)
    # The frames the engine got are the ones at the reported times (frame i of a 12 fps video is at i/12 s).
    shown = [read_pattern(frame) for frame in req.frames]
    assert shown == [round(t * 12) for t in body["timestamps"]]
    # One video placeholder in the prompt, and the question and the real times in its text.
    tok = AutoTokenizer.from_pretrained(tiny_checkpoint)
    assert req.prompt.count(tok.convert_tokens_to_ids("<video>")) == 1
    text = tok.decode(req.prompt)
    assert "What moves?" in text and f"{body['timestamps'][1]:.2f}s" in text
    cfg = gw.engine.config
    assert body["usage"]["visual_tokens"] == num_video_tokens(cfg.layout, 4, cfg.grid)


def test_over_the_context_is_refused_before_decoding_or_the_engine(gw: Gateway, videos) -> None:
    file_id = gw.upload(videos["long"])
    # 32 frames x 20 tokens (tiny layout: 2x2 pooled grid + newline... = 20 per frame) + max_tokens 3800 > 4096.
    r = gw.client.post("/v1/video/qa", json={"file_id": file_id, "question": "q", "num_frames": 32, "max_tokens": 3800})
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["code"] == "context_length_exceeded" and err["param"] == "num_frames" and "4096" in err["message"]
    assert gw.engine.requests == []
    over = gw.client.post("/v1/video/qa", json={"file_id": file_id, "question": "q", "num_frames": 33})
    assert over.status_code == 400 and over.json()["error"]["code"] == "too_many_frames"
    assert gw.engine.requests == []


@pytest.mark.parametrize(
    ("body", "status", "code", "param"),
    [
        ({"question": "q"}, 400, "invalid_request", None),  # no video
        ({"file_id": "0" * 64, "question": "q", "temperature": 7}, 400, "invalid_request", "temperature"),
        ({"file_id": "0" * 64, "question": "q"}, 404, "file_not_found", "file_id"),
        ({"video_url": "ftp://example.com/v.mp4", "question": "q"}, 400, "invalid_url", "video_url"),
        ({"video_url": "data:video/mp4;base64,AAAA", "question": "q"}, 415, "not_a_video", "video"),
    ],
)
def test_bad_requests_get_clear_errors_and_reach_no_engine(gw: Gateway, body, status, code, param) -> None:
    r = gw.client.post("/v1/video/qa", json=body)
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert (err["code"], err["param"]) == (code, param) and len(err["message"]) > 10, err
    assert gw.engine.requests == []


def test_chat_refuses_fields_it_does_not_know_by_name(gw: Gateway) -> None:
    body = {"messages": [{"role": "user", "content": "hi"}], "colour": "red"}
    r = gw.client.post("/v1/chat/completions", json=body)
    assert r.status_code == 400, r.text
    assert (r.json()["error"]["code"], r.json()["error"]["param"]) == ("unknown_parameter", "colour")
    assert gw.engine.requests == []


def test_an_engine_that_is_not_ready_is_a_503_with_retry_after(gw: Gateway, videos) -> None:
    file_id = gw.upload(videos["short"])
    gw.engine.up = False
    r = gw.client.post("/v1/video/qa", json={"file_id": file_id, "question": "q", "num_frames": 2})
    assert r.status_code == 503 and r.json()["error"]["code"] == "engine_not_ready"
    assert int(r.headers["retry-after"]) >= 1
    assert gw.client.get("/readyz").status_code == 503
    assert gw.engine.requests == []


def test_an_engine_error_is_a_500_in_the_error_shape_with_the_request_id(gw: Gateway) -> None:
    gw.engine.fail = RuntimeError("engine blew up")
    r = gw.client.post(
        "/v1/chat/completions",
        json={"messages": [{"role": "user", "content": "hi"}], "max_tokens": 4},
        headers={"x-request-id": "req-123"},
    )
    assert r.status_code == 500, r.text
    err = r.json()["error"]
    assert err["code"] == "internal_error" and err["request_id"] == "req-123"
    assert r.headers["x-request-id"] == "req-123"
    assert "blew up" not in err["message"]  # internals stay in the log


# Every REST JSON endpoint with a body that is valid but for one misspelt field (max_tokens): the kind of mistake
# that, silently dropped, would answer with defaults the client never asked for.
REST_JSON = [
    ("/v1/video/qa", {"question": "q"}),
    ("/v1/video/caption", {}),
    ("/v1/jobs", {"task": "caption"}),
]


@pytest.mark.parametrize(("path", "body"), REST_JSON)
def test_rest_endpoints_refuse_fields_they_do_not_know_by_name(gw: Gateway, videos, path, body) -> None:
    file_id = gw.upload(videos["short"])
    r = gw.client.post(path, json={"file_id": file_id, **body, "max_token": 5})
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert (err["code"], err["param"]) == ("unknown_parameter", "max_token") and "max_token" in err["message"], err
    assert gw.engine.requests == []


@pytest.mark.parametrize(("path", "body"), REST_JSON)
def test_rest_endpoints_honour_the_fields_they_know(gw: Gateway, videos, path, body) -> None:
    file_id = gw.upload(videos["short"])
    r = gw.client.post(path, json={"file_id": file_id, **body, "num_frames": 2, "max_tokens": 2, "seed": 7})
    assert r.status_code in (200, 202), r.text
    if path == "/v1/jobs":  # this gateway runs no job workers: the job waits in the queue, with what was asked
        assert r.json()["status"] == "queued"
        assert gw.client.portal is not None
        record = gw.client.portal.call(gw.client.app.state.state.job_get, r.json()["id"])
        assert {k: record.payload[k] for k in ("num_frames", "max_tokens", "seed")} == {
            "num_frames": 2,
            "max_tokens": 2,
            "seed": 7,
        }
        return
    assert r.json()["frames"] == 2 and r.json()["answer"] == "a fake"
    [req] = gw.engine.requests
    assert (req.max_tokens, req.seed) == (2, 7)


def test_job_listing_refuses_query_parameters_it_does_not_know_by_name(gw: Gateway, videos) -> None:
    file_id = gw.upload(videos["short"])
    for _ in range(2):
        assert gw.client.post("/v1/jobs", json={"file_id": file_id, "task": "caption"}).status_code == 202
    r = gw.client.get("/v1/jobs", params={"stauts": "queued"})  # silently dropped, it would list every state
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert (err["code"], err["param"]) == ("unknown_parameter", "stauts"), err
    listed = gw.client.get("/v1/jobs", params={"status": "queued", "limit": 1})
    assert listed.status_code == 200 and [j["status"] for j in listed.json()["data"]] == ["queued"]
    assert gw.client.get("/v1/jobs", params={"status": "done"}).json()["error"]["param"] == "status"


def test_the_access_log_line_carries_the_requests_timings(gw: Gateway, tmp_path: Path, caplog) -> None:
    # A data: URL goes through the fetcher like any URL (the fake engine has no prefill to time: the engine tier,
    # test_openai_conformance.py, checks prefill_seconds in the JSON line). A video no other test sends, so its
    # frames are decoded here, not served from the module's frame cache (decode_seconds is a miss's field).
    video = make_test_video(tmp_path / "access_log.mp4", seconds=2, fps=6, size=(112, 80))
    url = "data:video/mp4;base64," + base64.b64encode(video.read_bytes()).decode()
    with caplog.at_level(logging.INFO, logger="videoqa.access"):
        r = gw.client.post("/v1/video/qa", json={"video_url": url, "question": "What moves?", "num_frames": 2})
    assert r.status_code == 200, r.text
    [fields] = [rec.fields for rec in caplog.records if rec.name == "videoqa.access" and rec.fields["status"] == 200]
    assert fields["route"] == "/v1/video/qa" and fields["frames"] == 2 and fields["visual_tokens"] > 0
    assert fields["fetch_seconds"] >= 0 and fields["decode_seconds"] >= 0 and fields["seconds"] > 0


def _multipart_qa(gw: Gateway, path: Path, data: dict[str, str], extra_files: dict | None = None):
    with path.open("rb") as f:
        files = {"file": (path.name, f, "video/mp4"), **(extra_files or {})}
        return gw.client.post("/v1/video/qa", files=files, data=data)


def test_multipart_qa_honours_its_form_fields(gw: Gateway, videos) -> None:
    r = _multipart_qa(gw, videos["other"], {"question": "q", "num_frames": "3", "max_tokens": "1"})
    assert r.status_code == 200, r.text
    assert r.json()["frames"] == 3 and r.json()["answer"] == "a"


@pytest.mark.parametrize(
    ("data", "extra_files", "code", "param"),
    [
        ({"question": "q", "max_token": "1"}, None, "unknown_parameter", "max_token"),
        # A file_id beside the upload would have replaced the uploaded video.
        ({"question": "q", "file_id": "0" * 64}, None, "invalid_request", "file_id"),
        # A second upload under another known name would have been dropped.
        ({}, {"question": ("q.txt", b"what moves?", "text/plain")}, "invalid_request", "question"),
    ],
)
def test_multipart_qa_refuses_form_fields_it_cannot_use_by_name_and_keeps_no_upload(
    gw: Gateway, videos, data, extra_files, code, param
) -> None:
    video = videos["other"]
    file_id = hashlib.sha256(video.read_bytes()).hexdigest()
    gw.client.delete(f"/v1/files/{file_id}")  # another test may have stored it
    r = _multipart_qa(gw, video, data, extra_files)
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert (err["code"], err["param"]) == (code, param) and param in err["message"], err
    assert gw.client.get(f"/v1/files/{file_id}").status_code == 404  # refused before the upload was stored
    assert gw.engine.requests == []


def test_upload_refuses_form_fields_other_than_file_by_name(gw: Gateway, videos) -> None:
    with videos["short"].open("rb") as f:
        r = gw.client.post("/v1/files", files={"file": ("v.mp4", f, "video/mp4")}, data={"purpose": "vision"})
    assert r.status_code == 400, r.text
    assert (r.json()["error"]["code"], r.json()["error"]["param"]) == ("unknown_parameter", "purpose")


def test_an_engine_failing_mid_stream_ends_the_stream_with_an_error_event_then_done(gw: Gateway) -> None:
    gw.engine.fail, gw.engine.fail_after = RuntimeError("engine blew up"), 1  # one word, then the failure
    body = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 4, "stream": True}
    with gw.client.stream("POST", "/v1/chat/completions", json=body) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        events = [line.removeprefix("data: ") for line in r.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]", events
    *chunks, error = events[:-1]
    err = json.loads(error)["error"]
    assert err["code"] == "engine_error" and err["type"] == "server_error", err
    assert err["request_id"] and err["request_id"] == r.headers["x-request-id"]
    deltas = [c["choices"][0]["delta"].get("content", "") for c in map(json.loads, chunks)]
    assert "".join(deltas) == "a"  # what the engine made before it failed reached the client
    # The failed stream gave its admission slot back, and the next request is answered as usual.
    assert gw.client.app.state.service.admission.inflight == 0
    gw.engine.fail = None
    again = gw.client.post("/v1/chat/completions", json={**body, "stream": False})
    assert again.status_code == 200, again.text
    assert again.json()["choices"][0]["message"]["content"] == "a fake answer"
