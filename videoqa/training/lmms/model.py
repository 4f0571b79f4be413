"""`VideoQAService`: a running videoqa gateway as an lmms-eval "simple" model.

Loaded by lmms-eval in its own environment (see the package docstring). Each request's video is uploaded once
(`POST /v1/files`) and asked about with `POST /v1/video/qa`, so frames are sampled, the prompt is built and the
answer is generated exactly as the service does for any client. lmms-eval video tasks hand the model local file
paths (`doc_to_visual`), which is what this class uploads.
"""

from __future__ import annotations

import os
from typing import Any

import httpx
from lmms_eval.api.instance import Instance
from lmms_eval.api.model import lmms
from tqdm import tqdm

# lmms-eval generation_kwargs -> what the gateway does with them. Anything else a task asks for is refused by name
# rather than dropped: a silently ignored setting would change what the benchmark measures.
KNOWN_GEN_KWARGS = {"max_new_tokens", "temperature", "top_p", "do_sample", "until", "num_beams"}
MAX_STOPS = 4  # the gateway's limit on stop strings (videoqa.service.protocol.GenerationFields.stop)


class GatewayError(RuntimeError):
    """The gateway refused or failed a request; the message carries its status and error body."""


class VideoQAService(lmms):
    is_simple = True  # requests carry (context, gen_kwargs, doc_to_visual, doc_id, task, split)

    def __init__(
        self,
        base_url: str = "http://127.0.0.1:8000",
        api_key: str = "",
        num_frames: int | str | None = None,
        policy: str | None = None,
        timeout: float | str = 600.0,
        **kwargs: Any,  # lmms-eval always passes batch_size, max_batch_size and device; a remote model needs none
    ) -> None:
        super().__init__()
        key = api_key or os.environ.get("VIDEOQA_API_KEY", "")
        self.client = httpx.Client(
            base_url=str(base_url).rstrip("/"),
            headers={"Authorization": f"Bearer {key}"} if key else {},
            timeout=float(timeout),
        )
        # --model_args values arrive as strings
        self.sampling: dict[str, Any] = {}
        if num_frames is not None and str(num_frames) not in ("", "None"):
            self.sampling["num_frames"] = int(num_frames)
        if policy is not None and policy not in ("", "None"):
            self.sampling["policy"] = policy
        self._file_ids: dict[str, str] = {}

    def _post(self, path: str, what: str, **kwargs: Any) -> dict[str, Any]:
        response = self.client.post(path, **kwargs)
        if response.status_code >= 400:
            raise GatewayError(f"{what}: {path} answered {response.status_code}: {response.text[:500]}")
        body: dict[str, Any] = response.json()
        return body

    def _file_id(self, path: str, what: str) -> str:
        if path not in self._file_ids:
            with open(path, "rb") as f:
                got = self._post("/v1/files", what, files={"file": (os.path.basename(path), f, "video/mp4")})
            self._file_ids[path] = got["id"]
        return self._file_ids[path]

    @staticmethod
    def generation(gen_kwargs: dict[str, Any], what: str) -> dict[str, Any]:
        """The gateway's generation fields for a task's lmms-eval generation_kwargs (greedy unless do_sample)."""
        unknown = sorted(set(gen_kwargs) - KNOWN_GEN_KWARGS)
        if unknown:
            raise ValueError(f"{what}: generation settings the videoqa gateway has no equivalent for: {unknown}")
        if int(gen_kwargs.get("num_beams") or 1) != 1:
            raise ValueError(f"{what}: num_beams={gen_kwargs['num_beams']}: the gateway does not beam-search")
        stops = [s for s in (gen_kwargs.get("until") or []) if s]
        if len(stops) > MAX_STOPS:
            raise ValueError(f"{what}: {len(stops)} stop strings {stops}; the gateway takes at most {MAX_STOPS}")
        sample = bool(gen_kwargs.get("do_sample", False))
        return {
            "max_tokens": int(gen_kwargs.get("max_new_tokens") or 256),
            "temperature": float(gen_kwargs.get("temperature") or 0.0) if sample else 0.0,
            "top_p": float(gen_kwargs.get("top_p") or 1.0) if sample else 1.0,
            "stop": stops,
        }

    def generate_until(self, requests: list[Instance]) -> list[str]:
        answers: list[str] = []
        for request in tqdm(requests, disable=self.rank != 0, desc="videoqa gateway", unit="question"):
            context, gen_kwargs, doc_to_visual, doc_id, task, split = request.args
            what = f"{task}/{split}/{doc_id}"
            visuals = doc_to_visual(self.task_dict[task][split][doc_id]) or []
            videos = [v for v in visuals if isinstance(v, str)]
            if len(videos) != 1 or len(visuals) != 1:
                raise ValueError(f"{what}: the videoqa gateway answers about one video file, got {visuals!r}")
            body = {
                "file_id": self._file_id(videos[0], what),
                "question": context,
                **self.sampling,
                **self.generation(dict(gen_kwargs), what),
            }
            answer = str(self._post("/v1/video/qa", what, json=body)["answer"])
            answers.append(answer)
            self.cache_hook.add_partial("generate_until", (context, gen_kwargs), answer)
        return answers

    def loglikelihood(self, requests: list[Instance]) -> list[tuple[float, bool]]:
        raise NotImplementedError(
            "the videoqa gateway returns generated text, not log-likelihoods: use a task with "
            "output_type: generate_until (multiple choice scored by the generated letter)"
        )

    def generate_until_multi_round(self, requests: list[Instance]) -> list[str]:
        raise NotImplementedError("multi-round tasks are not supported by the videoqa gateway model")
