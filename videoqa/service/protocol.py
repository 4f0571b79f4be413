"""Typed request/response models of the public API."""

from __future__ import annotations

import time
import uuid
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class FileObject(BaseModel):
    id: str = Field(description="Content hash (sha256) of the video; the same bytes always get the same id.")
    object: Literal["file"] = "file"
    bytes: int
    duration: float
    width: int
    height: int
    fps: float
    codec: str
    container: str
    num_frames: int
    has_audio: bool
    created_at: int


class DeletedFile(BaseModel):
    id: str
    object: Literal["file"] = "file"
    deleted: bool


class SamplingFields(BaseModel):
    num_frames: int | None = Field(default=None, ge=1, description="Uniform frames (default: the model's 64).")
    fps: float | None = Field(default=None, gt=0, description="Sample at this rate instead (capped by max_frames).")
    max_frames: int | None = Field(default=None, ge=1, description="Cap for fps sampling.")
    policy: Literal["fast", "exact"] | None = Field(default=None, description="fast: nearest keyframe; exact.")

    def sampling_fields(self) -> SamplingFields:
        """Just these fields of a request model that has more (QA, caption, job, chat)."""
        return SamplingFields(**{k: getattr(self, k) for k in SamplingFields.model_fields})


class GenerationFields(BaseModel):
    max_tokens: int = Field(default=256, ge=1, le=8192)
    temperature: float = Field(default=0.0, ge=0.0, le=2.0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    top_k: int = Field(default=0, ge=0, description="Sample from the k likeliest tokens; 0 for all.")
    presence_penalty: float = Field(default=0.0, ge=-2.0, le=2.0)
    frequency_penalty: float = Field(default=0.0, ge=-2.0, le=2.0)
    seed: int | None = None
    stop: list[str] = Field(default_factory=list, max_length=4, description="Stop strings.")
    return_token_ids: bool = Field(
        default=False, description="Include the prompt token ids the engine saw (vLLM's extension of the same name)."
    )

    def generation_fields(self) -> GenerationFields:
        """Just these fields of a request model that has more (QA, caption, job)."""
        return GenerationFields(**{k: getattr(self, k) for k in GenerationFields.model_fields})


class VideoSource(BaseModel):
    file_id: str | None = Field(default=None, description="An uploaded file's id.")
    video_url: str | None = Field(default=None, description="https URL or data: URL of a video.")

    @model_validator(mode="after")
    def _one_source(self) -> VideoSource:
        if (self.file_id is None) == (self.video_url is None):
            raise ValueError("give exactly one of file_id or video_url")
        return self

    def video_source(self) -> VideoSource:
        """Just these fields of a request model that has more (QA, caption, job)."""
        return VideoSource(file_id=self.file_id, video_url=self.video_url)


class QARequest(VideoSource, SamplingFields, GenerationFields):
    # Unknown fields are refused (400 unknown_parameter naming them), as in chat: a misspelt field silently
    # dropped would answer with defaults the client did not ask for.
    model_config = ConfigDict(extra="forbid")
    question: str = Field(min_length=1, max_length=8000)


class CaptionRequest(VideoSource, SamplingFields, GenerationFields):
    model_config = ConfigDict(extra="forbid")  # unknown fields refused, as QARequest
    max_tokens: int = Field(default=512, ge=1, le=8192)
    prompt: str | None = Field(default=None, description="Override the captioning instruction.")


class PromptTokensDetails(BaseModel):
    cached_tokens: int = Field(default=0, description="Prompt tokens served from the engine's prefix cache.")


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    prompt_tokens_details: PromptTokensDetails = Field(default_factory=PromptTokensDetails)
    visual_tokens: int = Field(default=0, description="Prompt tokens that carry the video.")

    @classmethod
    def of(cls, last: Any, visual: int, completion_tokens: int | None = None) -> Usage:
        """Usage from a generation's final chunk (videoqa.model.engine.GenerationChunk); `completion_tokens`
        overrides the chunk's count (n choices: their sum)."""
        completion = last.completion_tokens if completion_tokens is None else completion_tokens
        return cls(
            prompt_tokens=last.prompt_tokens,
            completion_tokens=completion,
            total_tokens=last.prompt_tokens + completion,
            prompt_tokens_details=PromptTokensDetails(cached_tokens=last.cached_tokens),
            visual_tokens=visual,
        )


class QAResponse(BaseModel):
    answer: str
    frames: int
    timestamps: list[float]
    duration: float
    finish_reason: str | None
    usage: Usage
    model: str
    cache_hit: bool = Field(description="Whether decoded frames came from the cache.")
    prompt_token_ids: list[int] | None = Field(default=None, description="With return_token_ids.")


# --- OpenAI chat completions --------------------------------------------------------------------------


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[dict[str, Any]] | None = None


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    include_usage: bool = False


class JSONSchemaFormat(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    name: str = Field(min_length=1, max_length=64)
    description: str | None = None
    json_schema: dict[str, Any] = Field(default_factory=dict, alias="schema")
    strict: bool | None = None


class ResponseFormat(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JSONSchemaFormat | None = None

    @model_validator(mode="after")
    def _schema_for_json_schema(self) -> ResponseFormat:
        if self.type == "json_schema" and self.json_schema is None:
            raise ValueError("type json_schema needs a json_schema object with the schema")
        return self


REFUSED_CHAT_FIELDS: dict[str, str] = {
    "tools": "this model has no tool calling (its chat template has no tool format)",
    "tool_choice": "this model has no tool calling (its chat template has no tool format)",
    "parallel_tool_calls": "this model has no tool calling (its chat template has no tool format)",
    "functions": "this model has no function calling",
    "function_call": "this model has no function calling",
    "audio": "this model has no audio output",
    "prediction": "predicted outputs are not supported",
    "reasoning_effort": "this is not a reasoning model",
    "verbosity": "this model has no verbosity control",
    "web_search_options": "this server has no web search",
    "metadata": "metadata is for stored completions and this server does not store completions",
    "logit_bias": "logit_bias is not supported (token ids differ between checkpoints)",
}
"""OpenAI chat fields this server refuses (400 naming the field) when given a value, and why."""


class ChatCompletionRequest(SamplingFields):
    """OpenAI's chat completion request: every field is honoured, or refused with 400 naming it; unknown fields
    are refused too (docs/service.md has the table)."""

    model_config = ConfigDict(extra="forbid")
    model: str | None = None
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    temperature: float = Field(default=1.0, ge=0.0, le=2.0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    top_k: int = Field(default=0, ge=0, description="vLLM extension: sample from the k likeliest tokens; 0 for all.")
    presence_penalty: float = Field(default=0.0, ge=-2.0, le=2.0)
    frequency_penalty: float = Field(default=0.0, ge=-2.0, le=2.0)
    seed: int | None = None
    stop: str | list[str] | None = Field(default=None)
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: int = Field(default=1, ge=1, le=8)
    logprobs: bool = False
    top_logprobs: int | None = Field(default=None, ge=0, le=20)
    response_format: ResponseFormat | None = None
    user: str | None = Field(default=None, description="End-user id: logged with the request.")
    safety_identifier: str | None = Field(default=None, description="End-user id: logged with the request.")
    prompt_cache_key: str | None = Field(default=None, description="Accepted: prefix caching is automatic.")
    store: bool | None = Field(default=None, description="Only false: completions are not stored.")
    service_tier: Literal["auto", "default"] | None = None
    modalities: list[Literal["text"]] | None = None
    return_token_ids: bool | None = Field(default=None, description="vLLM extension: the prompt's token ids.")
    tools: Any = None
    tool_choice: Any = None
    parallel_tool_calls: Any = None
    functions: Any = None
    function_call: Any = None
    audio: Any = None
    prediction: Any = None
    reasoning_effort: Any = None
    verbosity: Any = None
    web_search_options: Any = None
    metadata: Any = None
    logit_bias: Any = None

    @model_validator(mode="after")
    def _stop_list(self) -> ChatCompletionRequest:
        stops = [self.stop] if isinstance(self.stop, str) else (self.stop or [])
        if len(stops) > 4:
            raise ValueError("stop takes at most 4 sequences")
        return self


class ChatChoiceMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class ChoiceLogprobs(BaseModel):
    content: list[dict[str, Any]] | None = None
    refusal: list[dict[str, Any]] | None = None


class ChatChoice(BaseModel):
    index: int = 0
    message: ChatChoiceMessage
    finish_reason: str | None
    logprobs: ChoiceLogprobs | None = None


class ChatCompletion(BaseModel):
    id: str = Field(default_factory=lambda: f"chatcmpl-{uuid.uuid4().hex}")
    object: Literal["chat.completion"] = "chat.completion"
    created: int = Field(default_factory=lambda: int(time.time()))
    model: str
    choices: list[ChatChoice]
    usage: Usage
    prompt_token_ids: list[int] | None = None


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "videoqa"
    max_model_len: int
    max_frames: int
    video_layout: dict[str, Any]


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


# --- jobs ---------------------------------------------------------------------------------------------


class JobRequest(VideoSource, SamplingFields, GenerationFields):
    model_config = ConfigDict(extra="forbid")  # unknown fields refused, as QARequest
    task: Literal["qa", "caption"] = "caption"
    question: str | None = Field(default=None, max_length=8000)
    idempotency_key: str | None = Field(default=None, max_length=200, description="Same key -> same job.")

    @model_validator(mode="after")
    def _question_for_qa(self) -> JobRequest:
        if self.task == "qa" and not self.question:
            raise ValueError("task 'qa' needs a question")
        return self


class JobObject(BaseModel):
    id: str
    object: Literal["job"] = "job"
    status: Literal["queued", "running", "succeeded", "failed", "cancelled"]
    attempts: int
    result: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    created: float
    updated: float
    tenant: str
    """The tenant that submitted it (its own name for a tenant; operators see whose job it is)."""


class JobListQuery(BaseModel):
    """`GET /v1/jobs` query parameters; any other is refused by name (400), as unknown body fields are."""

    model_config = ConfigDict(extra="forbid")
    status: Literal["queued", "running", "succeeded", "failed", "cancelled"] | None = None
    tenant: str | None = Field(default=None, description="Operators only: one tenant's jobs.")
    limit: int = Field(default=100, ge=1, le=1000)


class JobList(BaseModel):
    object: Literal["list"] = "list"
    data: list[JobObject]
