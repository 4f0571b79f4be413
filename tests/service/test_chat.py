"""The OpenAI-compatible API with the official `openai` client, unchanged."""

from __future__ import annotations

import base64

import openai
import pytest

from videoqa.video.testing import make_test_video


@pytest.fixture(scope="module")
def gw(start_gateway):
    return start_gateway()


@pytest.fixture(scope="module")
def client(gw) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gw.url}/v1", api_key="unused", max_retries=0, timeout=120)


@pytest.fixture(scope="module")
def file_id(client, videos) -> str:
    with open(videos["short"], "rb") as f:
        import httpx

        r = httpx.post(f"{client.base_url}files", files={"file": ("v.mp4", f, "video/mp4")}, timeout=60)
    return r.json()["id"]


def _messages(url: str, text: str = "What happens in this video?") -> list[dict]:
    return [
        {"role": "user", "content": [{"type": "video_url", "video_url": {"url": url}}, {"type": "text", "text": text}]}
    ]


def test_models_lists_the_served_checkpoint(client) -> None:
    models = client.models.list().data
    assert len(models) == 1 and models[0].id


def test_chat_plain_and_streaming_give_the_same_text(client, file_id) -> None:
    model = client.models.list().data[0].id
    extra = {"num_frames": 8, "policy": "exact"}
    plain = client.chat.completions.create(
        model=model, messages=_messages(f"videoqa://files/{file_id}"), max_tokens=12, temperature=0, extra_body=extra
    )
    text = plain.choices[0].message.content
    assert plain.usage.prompt_tokens > 8 * 20 and 1 <= plain.usage.completion_tokens <= 12
    assert plain.choices[0].finish_reason in ("stop", "length")
    stream = client.chat.completions.create(
        model=model,
        messages=_messages(f"videoqa://files/{file_id}"),
        max_tokens=12,
        temperature=0,
        extra_body=extra,
        stream=True,
        stream_options={"include_usage": True},
    )
    pieces, usage, finish = [], None, None
    for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            pieces.append(choice.delta.content or "")
            finish = choice.finish_reason or finish
    assert "".join(pieces) == text
    assert usage is not None and usage.completion_tokens == plain.usage.completion_tokens
    assert finish == plain.choices[0].finish_reason


def test_chat_with_a_data_url_video_and_a_system_prompt(client, videos, tmp_path) -> None:
    """The video's frames reach vLLM: its prefix cache (keyed by the frames' content hash) serves the video's tokens
    again for the same video, and not for another video of the same length (identical prompt text)."""
    # Same duration, size and frame count as "other" (so the same time instruction), different pixels.
    plain = make_test_video(tmp_path / "plain.mp4", seconds=6, fps=10, gop=20, size=(128, 96), pattern=False)

    def ask(path) -> openai.types.CompletionUsage:  # noqa: ANN001
        data = base64.b64encode(path.read_bytes()).decode()
        messages = [{"role": "system", "content": "Answer briefly."}, *_messages(f"data:video/mp4;base64,{data}")]
        out = client.chat.completions.create(
            model=client.models.list().data[0].id, messages=messages, max_tokens=4, extra_body={"num_frames": 4}
        )
        assert out.usage.completion_tokens >= 1
        return out.usage

    visual = 4 * 4 * 5  # tiny grid 9 pooled to 4x4, a newline closing each row, 4 frames
    first, again, other = ask(videos["other"]), ask(videos["other"]), ask(plain)
    assert first.prompt_tokens == again.prompt_tokens == other.prompt_tokens > visual
    assert again.prompt_tokens_details.cached_tokens >= visual  # the video's tokens, in whole KV blocks
    assert other.prompt_tokens_details.cached_tokens < visual  # different frames: the video's blocks are not reused


def test_text_only_chat_works(client) -> None:
    out = client.chat.completions.create(
        model=client.models.list().data[0].id, messages=[{"role": "user", "content": "hello"}], max_tokens=3
    )
    assert out.usage.prompt_tokens > 0


def test_openai_errors_have_the_openai_shape(client, file_id) -> None:
    with pytest.raises(openai.NotFoundError) as err:
        client.chat.completions.create(model="no-such-model", messages=_messages(f"videoqa://files/{file_id}"))
    assert err.value.body["code"] == "model_not_found"
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(
            model=client.models.list().data[0].id,
            messages=[
                {
                    "role": "user",
                    "content": [
                        {"type": "video_url", "video_url": {"url": f"videoqa://files/{file_id}"}},
                        {"type": "video_url", "video_url": {"url": f"videoqa://files/{file_id}"}},
                    ],
                }
            ],
        )
    assert "one video" in err.value.message and err.value.body["param"] == "messages"
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(
            model=client.models.list().data[0].id,
            messages=[
                {"role": "user", "content": [{"type": "input_audio", "input_audio": {"data": "", "format": "wav"}}]}
            ],
        )
    assert "input_audio" in err.value.message
