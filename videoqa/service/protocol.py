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


class GenerationFields(BaseModel):
    max_tokens: int = Field(default=256, ge=1, le=8192)
    temperature: float = Field(default=0.0, ge=0.0, le=2.0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    seed: int | None = None


class VideoSource(BaseModel):
    file_id: str | None = Field(default=None, description="An uploaded file's id.")
    video_url: str | None = Field(default=None, description="https URL or data: URL of a video.")

    @model_validator(mode="after")
    def _one_source(self) -> VideoSource:
        if (self.file_id is None) == (self.video_url is None):
            raise ValueError("give exactly one of file_id or video_url")
        return self


class QARequest(VideoSource, SamplingFields, GenerationFields):
    question: str = Field(min_length=1, max_length=8000)


class CaptionRequest(VideoSource, SamplingFields, GenerationFields):
    max_tokens: int = Field(default=512, ge=1, le=8192)
    prompt: str | None = Field(default=None, description="Override the captioning instruction.")


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    visual_tokens: int = 0
    cached_tokens: int = 0

    @classmethod
    def of(cls, last: Any, visual: int) -> Usage:
        """Usage from a generation's final chunk (videoqa.model.engine.GenerationChunk)."""
        return cls(
            prompt_tokens=last.prompt_tokens,
            completion_tokens=last.completion_tokens,
            total_tokens=last.prompt_tokens + last.completion_tokens,
            visual_tokens=visual,
            cached_tokens=last.cached_tokens,
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


# --- OpenAI chat completions --------------------------------------------------------------------------


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: Literal["system", "user", "assistant"]
    content: str | list[dict[str, Any]] | None = None


class StreamOptions(BaseModel):
    include_usage: bool = False


class ChatCompletionRequest(SamplingFields):
    model_config = ConfigDict(extra="ignore")
    model: str | None = None
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int | None = Field(default=None, ge=1, le=8192)
    max_completion_tokens: int | None = Field(default=None, ge=1, le=8192)
    temperature: float = Field(default=0.0, ge=0.0, le=2.0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    seed: int | None = None
    stop: str | list[str] | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: int = Field(default=1, ge=1, le=1)


class ChatChoiceMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class ChatChoice(BaseModel):
    index: int = 0
    message: ChatChoiceMessage
    finish_reason: str | None


class ChatCompletion(BaseModel):
    id: str = Field(default_factory=lambda: f"chatcmpl-{uuid.uuid4().hex}")
    object: Literal["chat.completion"] = "chat.completion"
    created: int = Field(default_factory=lambda: int(time.time()))
    model: str
    choices: list[ChatChoice]
    usage: Usage


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
    status: Literal["queued", "running", "succeeded", "failed"]
    attempts: int
    result: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    created: float
    updated: float
