"""Files, QA, caption, cache and the 4xx cases, over real HTTP against a split-mode gateway."""

from __future__ import annotations

import re

import httpx
import pytest


@pytest.fixture(scope="module")
def gw(start_gateway):
    return start_gateway(max_upload_bytes=str(2_000_000), max_frames="32")


def _metric(url: str, name: str) -> float:
    """A counter's value; a metric missing from /metrics fails the test (it must not read as 0)."""
    text = httpx.get(f"{url}/metrics").text
    m = re.search(rf"^{name} ([0-9.e+]+)$", text, re.M)
    assert m is not None, f"{name} is not exported by /metrics"
    return float(m.group(1))


def _upload(url: str, path, name="clip.mp4") -> dict:
    with open(path, "rb") as f:
        r = httpx.post(f"{url}/v1/files", files={"file": (name, f, "video/mp4")}, timeout=60)
    assert r.status_code == 200, r.text
    return r.json()


def test_upload_describe_and_delete(gw, videos) -> None:
    obj = _upload(gw.url, videos["short"], name="../../etc/passwd")  # the user's name never touches the disk
    assert len(obj["id"]) == 64 and obj["duration"] == pytest.approx(4.0, abs=0.1)
    assert (obj["width"], obj["height"], obj["codec"]) == (160, 120, "h264")
    assert _upload(gw.url, videos["short"])["id"] == obj["id"]  # content-addressed
    assert httpx.get(f"{gw.url}/v1/files/{obj['id']}").json()["fps"] == pytest.approx(12.0)
    other = _upload(gw.url, videos["other"])
    assert httpx.delete(f"{gw.url}/v1/files/{other['id']}").json()["deleted"] is True
    gone = httpx.get(f"{gw.url}/v1/files/{other['id']}")
    assert gone.status_code == 404 and gone.json()["error"]["code"] == "file_not_found"


def test_qa_then_repeat_question_hits_the_frame_cache(gw, videos) -> None:
    file_id = _upload(gw.url, videos["long"])["id"]
    hits_before = _metric(gw.url, "videoqa_frame_cache_hits_total")
    decoded_before = _metric(gw.url, "videoqa_frames_decoded_total")
    body = {
        "file_id": file_id,
        "question": "What is in the video?",
        "num_frames": 16,
        "policy": "exact",
        "max_tokens": 8,
    }
    misses_before = _metric(gw.url, "videoqa_frame_cache_misses_total")
    first = httpx.post(f"{gw.url}/v1/video/qa", json=body, timeout=120)
    second = httpx.post(f"{gw.url}/v1/video/qa", json=body | {"question": "What moves?"}, timeout=120)
    assert first.status_code == 200, first.text
    a, b = first.json(), second.json()
    assert a["frames"] == 16 and len(a["timestamps"]) == 16 and a["timestamps"] == sorted(a["timestamps"])
    assert a["usage"]["visual_tokens"] == 16 * 4 * 5 and a["usage"]["completion_tokens"] >= 1
    assert a["cache_hit"] is False and b["cache_hit"] is True
    # The first request decodes (one miss); the repeat is served from the cache without decoding (one hit).
    assert _metric(gw.url, "videoqa_frame_cache_hits_total") == hits_before + 1
    # 16 exact frames need at least 16 decoded, and a cache hit decodes none.
    assert _metric(gw.url, "videoqa_frames_decoded_total") >= decoded_before + 16
    assert _metric(gw.url, "videoqa_frame_cache_misses_total") == misses_before + 1
    assert b["timestamps"] == a["timestamps"]


def test_multipart_qa_and_caption(gw, videos) -> None:
    with open(videos["other"], "rb") as f:
        r = httpx.post(
            f"{gw.url}/v1/video/qa",
            files={"file": ("v.mp4", f, "video/mp4")},
            data={"question": "How many frames?", "num_frames": "4", "max_tokens": "4"},
            timeout=120,
        )
    assert r.status_code == 200, r.text
    assert r.json()["frames"] == 4
    file_id = _upload(gw.url, videos["other"])["id"]
    cap = httpx.post(
        f"{gw.url}/v1/video/caption", json={"file_id": file_id, "num_frames": 2, "max_tokens": 6}, timeout=120
    )
    assert cap.status_code == 200 and cap.json()["usage"]["completion_tokens"] >= 1


def test_fps_sampling_reports_real_timestamps(gw, videos) -> None:
    file_id = _upload(gw.url, videos["other"])["id"]
    r = httpx.post(
        f"{gw.url}/v1/video/qa",
        json={"file_id": file_id, "question": "q", "fps": 1, "policy": "exact", "max_tokens": 2},
        timeout=120,
    )
    assert r.status_code == 200, r.text
    assert r.json()["timestamps"] == pytest.approx([0, 1, 2, 3, 4, 5], abs=1e-3)


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"question": "q"}, 400, "invalid_request"),  # no video
        ({"file_id": "0" * 64, "question": "q"}, 404, "file_not_found"),
        ({"file_id": "not-a-hash", "question": "q"}, 404, "file_not_found"),
        ({"video_url": "ftp://example.com/v.mp4", "question": "q"}, 400, "invalid_url"),
        ({"video_url": "data:video/mp4;base64,AAAA", "question": "q"}, 415, "not_a_video"),
        ({"video_url": "data:video/mp4;base64,%%%", "question": "q"}, 400, "invalid_url"),
    ],
)
def test_bad_requests_get_clear_errors(gw, body, status, code) -> None:
    r = httpx.post(f"{gw.url}/v1/video/qa", json=body, timeout=60)
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert err["code"] == code and len(err["message"]) > 5


def test_too_many_frames_and_over_budget_are_400_with_numbers(gw, videos) -> None:
    file_id = _upload(gw.url, videos["short"])["id"]
    over = httpx.post(f"{gw.url}/v1/video/qa", json={"file_id": file_id, "question": "q", "num_frames": 33})
    assert over.status_code == 400 and over.json()["error"]["code"] == "too_many_frames"
    # 32 frames x 20 tokens fit in 4096, but not with max_tokens 3800: refused before any decoding.
    misses = _metric(gw.url, "videoqa_frame_cache_misses_total")
    big = httpx.post(
        f"{gw.url}/v1/video/qa", json={"file_id": file_id, "question": "q", "num_frames": 32, "max_tokens": 3800}
    )
    assert big.status_code == 400, big.text
    err = big.json()["error"]
    assert (
        err["code"] == "context_length_exceeded" and "640 visual tokens" in err["message"] and "4096" in err["message"]
    )
    assert _metric(gw.url, "videoqa_frame_cache_misses_total") == misses


def test_upload_limits_413_and_415(gw, tmp_path) -> None:
    big = tmp_path / "big.mp4"
    big.write_bytes(b"\0" * 2_500_000)
    with big.open("rb") as f:
        r = httpx.post(f"{gw.url}/v1/files", files={"file": ("big.mp4", f, "video/mp4")}, timeout=60)
    assert r.status_code == 413 and r.json()["error"]["code"] == "request_too_large"
    text = tmp_path / "notes.mp4"
    text.write_text("not a video " * 100)
    with text.open("rb") as f:
        r = httpx.post(f"{gw.url}/v1/files", files={"file": ("notes.mp4", f, "video/mp4")}, timeout=60)
    assert r.status_code == 415 and r.json()["error"]["code"] == "not_a_video"
    # The service is still fine afterwards.
    assert httpx.get(f"{gw.url}/readyz").status_code == 200


def test_openapi_describes_every_endpoint_and_its_errors(gw) -> None:
    spec = httpx.get(f"{gw.url}/openapi.json").json()
    paths = spec["paths"]
    for path, method in [
        ("/v1/files", "post"),
        ("/v1/files/{file_id}", "get"),
        ("/v1/files/{file_id}", "delete"),
        ("/v1/video/qa", "post"),
        ("/v1/video/caption", "post"),
        ("/v1/chat/completions", "post"),
        ("/v1/models", "get"),
        ("/v1/jobs", "post"),
        ("/v1/jobs/{job_id}", "get"),
        ("/healthz", "get"),
        ("/readyz", "get"),
        ("/metrics", "get"),
    ]:
        assert method in paths[path], (path, method)
        if path.startswith("/v1"):
            responses = paths[path][method]["responses"]
            assert {"401", "413", "415", "422", "429", "503"} <= set(responses), path
    qa_body = paths["/v1/video/qa"]["post"]["requestBody"]["content"]
    assert {"application/json", "multipart/form-data"} <= set(qa_body)
    assert "ErrorResponse" in spec["components"]["schemas"]
