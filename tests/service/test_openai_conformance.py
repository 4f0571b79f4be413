"""OpenAI conformance with the official `openai` client: each honoured field changes what comes back as
OpenAI documents it; each refused field is a 400 naming it; errors have OpenAI's statuses and shape."""

from __future__ import annotations

import base64
import io
import json
import time

import httpx
import numpy as np
import openai
import pytest
from PIL import Image


@pytest.fixture(scope="module")
def gw(start_gateway):
    return start_gateway()


@pytest.fixture(scope="module")
def client(gw) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gw.url}/v1", api_key="unused", max_retries=0, timeout=180)


@pytest.fixture(scope="module")
def model(client) -> str:
    return client.models.list().data[0].id


HI = [{"role": "user", "content": "Describe a red circle that moves left."}]


def _ask(client, model, **fields):
    return client.chat.completions.create(model=model, messages=fields.pop("messages", HI), **fields)


def test_validation_errors_are_400_with_the_field_as_param(client, model) -> None:
    with pytest.raises(openai.BadRequestError) as err:
        _ask(client, model, temperature=5, max_tokens=2)
    assert err.value.body["param"] == "temperature" and err.value.body["code"] == "invalid_request"
    with pytest.raises(openai.BadRequestError) as err:
        _ask(client, model, max_tokens=2, extra_body={"bogus_field": 1})
    assert err.value.body["param"] == "bogus_field" and "unknown field" in err.value.message
    with pytest.raises(openai.BadRequestError) as err:
        _ask(client, model, messages=[{"role": "tool", "content": "x", "tool_call_id": "1"}], max_tokens=2)
    assert err.value.body["param"].startswith("messages.0")


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("tools", [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]),
        ("tool_choice", "auto"),
        ("parallel_tool_calls", True),
        ("functions", [{"name": "f"}]),
        ("function_call", "auto"),
        ("audio", {"voice": "alloy", "format": "wav"}),
        ("prediction", {"type": "content", "content": "x"}),
        ("reasoning_effort", "low"),
        ("verbosity", "low"),
        ("web_search_options", {}),
        ("metadata", {"a": "b"}),
        ("logit_bias", {"1": 5}),
        ("store", True),
    ],
)
def test_fields_the_model_cannot_honour_are_refused_by_name(client, model, field: str, value) -> None:
    with pytest.raises(openai.BadRequestError) as err:
        _ask(client, model, max_tokens=2, **{field: value})
    assert err.value.body["param"] == field and field in err.value.message
    assert err.value.body["code"] == "unsupported_parameter"


def test_unknown_model_is_404_and_context_overflow_is_400_context_length_exceeded(client, model) -> None:
    with pytest.raises(openai.NotFoundError) as err:
        client.chat.completions.create(model="nope", messages=HI, max_tokens=2)
    assert err.value.body["code"] == "model_not_found"
    with pytest.raises(openai.BadRequestError) as err:
        _ask(client, model, max_completion_tokens=5000)
    assert err.value.body["code"] == "context_length_exceeded" and "4096" in err.value.message


def test_max_completion_tokens_and_stop(client, model) -> None:
    plain = _ask(client, model, max_completion_tokens=12, temperature=0)
    text = plain.choices[0].message.content
    assert plain.usage.completion_tokens <= 12
    assert len(text) >= 4, text
    stop = text[2:4]
    cut = _ask(client, model, max_completion_tokens=12, temperature=0, stop=[stop])
    assert cut.choices[0].message.content == text[: text.index(stop)]
    assert cut.choices[0].finish_reason == "stop"


def test_top_k_1_and_tiny_top_p_sample_the_greedy_answer(client, model) -> None:
    greedy = _ask(client, model, max_tokens=10, temperature=0).choices[0].message.content
    assert (
        _ask(client, model, max_tokens=10, temperature=1.5, extra_body={"top_k": 1}).choices[0].message.content
        == greedy
    )
    assert _ask(client, model, max_tokens=10, temperature=1.5, top_p=1e-9).choices[0].message.content == greedy


def test_seed_makes_sampling_reproducible_and_n_gives_that_many_choices(client, model) -> None:
    a = _ask(client, model, max_tokens=10, temperature=1.0, seed=7)
    b = _ask(client, model, max_tokens=10, temperature=1.0, seed=7)
    assert a.choices[0].message.content == b.choices[0].message.content
    two = _ask(client, model, max_tokens=10, temperature=1.0, seed=7, n=2)
    assert [c.index for c in two.choices] == [0, 1]
    assert two.choices[0].message.content == a.choices[0].message.content  # choice i samples with seed + i
    assert two.usage.completion_tokens == sum(
        _ask(client, model, max_tokens=10, temperature=1.0, seed=7 + i).usage.completion_tokens for i in range(2)
    )


def test_penalties_change_a_greedy_answer(client, model) -> None:
    plain = _ask(client, model, max_tokens=24, temperature=0).choices[0].message.content
    for field in ("presence_penalty", "frequency_penalty"):
        penalised = _ask(client, model, max_tokens=24, temperature=0, **{field: 2.0}).choices[0].message.content
        assert penalised != plain, field


def test_logprobs_and_top_logprobs(client, model) -> None:
    out = _ask(client, model, max_tokens=6, temperature=0, logprobs=True, top_logprobs=3)
    content = out.choices[0].logprobs.content
    assert len(content) == out.usage.completion_tokens
    assert "".join(t.token for t in content) == out.choices[0].message.content
    for entry in content:
        assert len(entry.top_logprobs) == 3 and entry.logprob <= 0
        assert entry.top_logprobs[0].logprob == pytest.approx(entry.logprob, abs=1e-4)  # greedy: the top token
    assert _ask(client, model, max_tokens=2).choices[0].logprobs is None


def test_response_format_json_schema_and_json_object(client, model) -> None:
    schema = {
        "type": "object",
        # Bounded values: a random tiny model would write digits forever into an unbounded integer.
        "properties": {"colour": {"type": "string", "enum": ["red", "blue"]}, "moving": {"type": "boolean"}},
        "required": ["colour", "moving"],
        "additionalProperties": False,
    }
    out = _ask(
        client,
        model,
        max_tokens=60,
        temperature=0,
        response_format={"type": "json_schema", "json_schema": {"name": "answer", "schema": schema}},
    )
    value = json.loads(out.choices[0].message.content)
    assert set(value) == {"colour", "moving"} and value["colour"] in ("red", "blue")
    assert isinstance(value["moving"], bool)
    obj = _ask(client, model, max_tokens=60, temperature=0, response_format={"type": "json_object"})
    text = obj.choices[0].message.content
    assert text.lstrip().startswith("{")
    if obj.choices[0].finish_reason == "stop":
        assert isinstance(json.loads(text), dict)


def test_streaming_with_n_choices_logprobs_and_usage(client, model) -> None:
    stream = _ask(
        client,
        model,
        max_tokens=6,
        temperature=0,
        n=2,
        logprobs=True,
        stream=True,
        stream_options={"include_usage": True},
    )
    texts: dict[int, str] = {0: "", 1: ""}
    usage = None
    for chunk in stream:
        usage = chunk.usage or usage
        for c in chunk.choices:
            texts[c.index] += c.delta.content or ""
    plain = _ask(client, model, max_tokens=6, temperature=0)
    assert texts[0] == texts[1] == plain.choices[0].message.content
    assert usage is not None and usage.completion_tokens == 2 * plain.usage.completion_tokens


def test_cached_tokens_are_in_prompt_tokens_details(client, model) -> None:
    # Long enough to fill whole KV blocks (the prefix cache shares blocks, not single tokens).
    long = [{"role": "user", "content": "Describe a red circle that moves left. " * 60}]
    _ask(client, model, messages=long, max_tokens=1, temperature=0)
    again = _ask(client, model, messages=long, max_tokens=1, temperature=0)
    assert again.usage.prompt_tokens_details.cached_tokens > 0
    assert "cached_tokens" not in again.usage.model_extra


def test_models_created_is_stable(client) -> None:
    assert client.models.list().data[0].created == client.models.list().data[0].created
    first = client.models.list().data[0].created
    assert httpx.get(f"{client.base_url}models").json()["data"][0]["created"] == first


def test_request_ids_are_accepted_echoed_generated_and_in_error_bodies(gw) -> None:
    r = httpx.get(f"{gw.url}/v1/models", headers={"x-request-id": "my-req-42"})
    assert r.headers["x-request-id"] == "my-req-42"
    generated = httpx.get(f"{gw.url}/v1/models").headers["x-request-id"]
    assert generated.startswith("req-") and len(generated) > 10
    bad = httpx.post(f"{gw.url}/v1/chat/completions", json={"messages": []}, headers={"x-request-id": "bad-1"})
    assert bad.status_code == 400
    assert bad.json()["error"]["request_id"] == "bad-1" and bad.headers["x-request-id"] == "bad-1"
    # The request's log line carries its id (text format: "[id]").
    _wait_for(lambda: "[bad-1]" in gw.log.read_text())


def _wait_for(condition, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def test_image_url_parts_are_one_frame_videos(client, model) -> None:
    buf = io.BytesIO()
    Image.fromarray(np.full((48, 64, 3), 200, np.uint8)).save(buf, format="PNG")
    url = "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()
    content = [{"type": "image_url", "image_url": {"url": url}}, {"type": "text", "text": "What colour?"}]
    out = _ask(client, model, messages=[{"role": "user", "content": content}], max_tokens=2, temperature=0)
    assert out.usage.visual_tokens == 20  # one frame: 4x4 pooled tokens + 4 row newlines (tiny layout)
    not_image = [
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
        {"type": "text", "text": "?"},
    ]
    with pytest.raises(openai.APIStatusError) as err:
        _ask(client, model, messages=[{"role": "user", "content": not_image}], max_tokens=2)
    assert err.value.status_code == 415


def test_metrics_serve_the_engines_own_vllm_series(gw, client, model) -> None:
    _ask(client, model, max_tokens=1, temperature=0)
    text = httpx.get(f"{gw.url}/metrics").text
    assert "videoqa_requests_total" in text  # the gateway's own
    for series in ("vllm:num_requests_running", "vllm:kv_cache_usage_perc", "vllm:prompt_tokens_total"):
        assert f"\n{series}" in text, series


def test_json_logs_have_one_line_per_request_with_its_facts(start_gateway, videos) -> None:
    jgw = start_gateway(log_format="json")
    with open(videos["short"], "rb") as f:
        file_id = httpx.post(f"{jgw.url}/v1/files", files={"file": ("v.mp4", f, "video/mp4")}, timeout=60).json()["id"]
    body = {"file_id": file_id, "question": "What moves?", "num_frames": 4, "max_tokens": 2}
    r = httpx.post(f"{jgw.url}/v1/video/qa", json=body, headers={"x-request-id": "json-log-1"}, timeout=120)
    assert r.status_code == 200, r.text

    def line() -> dict | None:
        for raw in jgw.log.read_text().splitlines():
            if raw.startswith("{"):
                entry = json.loads(raw)
                if entry.get("request_id") == "json-log-1" and entry.get("logger") == "videoqa.access":
                    return entry
        return None

    _wait_for(lambda: line() is not None)
    entry = line()
    assert entry["route"] == "/v1/video/qa" and entry["status"] == 200 and entry["seconds"] > 0
    assert entry["frames"] == 4 and entry["visual_tokens"] == r.json()["usage"]["visual_tokens"]
    assert entry["decode_seconds"] >= 0 and entry["prefill_seconds"] > 0
