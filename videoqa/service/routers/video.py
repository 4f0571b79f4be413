"""REST video QA: POST /v1/video/qa (JSON or multipart) and POST /v1/video/caption."""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from starlette.datastructures import FormData

from videoqa.service.deps import Caller, Files, Service, rate_limit
from videoqa.service.errors import COMMON_ERRORS, APIError, check_form
from videoqa.service.filestore import FileStore
from videoqa.service.protocol import CaptionRequest, QARequest, QAResponse
from videoqa.service.serving import CAPTION_PROMPT, Answer, cancel_on_disconnect

router = APIRouter(prefix="/v1/video", tags=["video"], dependencies=[Depends(rate_limit)], responses=COMMON_ERRORS)

_QA_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": {"$ref": "#/components/schemas/QARequest"}},
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file", "question"],
                    "properties": {
                        "file": {"type": "string", "format": "binary"},
                        "question": {"type": "string"},
                        "num_frames": {"type": "integer"},
                        "fps": {"type": "number"},
                        "policy": {"type": "string", "enum": ["fast", "exact"]},
                        "max_tokens": {"type": "integer"},
                        "temperature": {"type": "number"},
                    },
                }
            },
        },
    }
}


def _response(answer: Answer, model: str, return_token_ids: bool = False) -> QAResponse:
    frames = answer.frames
    assert frames is not None
    return QAResponse(
        answer=answer.text,
        frames=len(frames.timestamps),
        timestamps=frames.timestamps,
        duration=frames.duration,
        finish_reason=answer.finish_reason,
        usage=answer.usage,
        model=model,
        cache_hit=frames.cache_hit,
        prompt_token_ids=answer.prompt_token_ids if return_token_ids else None,
    )


def _check_form(form: FormData) -> None:
    """The multipart QA form: QARequest's fields (refused by name otherwise, see check_form), with its video as the
    upload, so a file_id or video_url field cannot replace the uploaded video."""
    check_form(form, QARequest.model_fields)
    for name in ("file_id", "video_url"):
        if name in form:
            message = f"multipart QA takes its video as the 'file' upload; {name} is for JSON bodies"
            raise APIError(400, message, "invalid_request", name)


async def _parse_qa(request: Request, files: FileStore, tenant: str) -> QARequest:
    if request.headers.get("content-type", "").startswith("multipart/form-data"):
        form = await request.form()
        _check_form(form)  # before the upload is stored: a refused request keeps nothing
        upload = form.get("file")
        if upload is None or isinstance(upload, str):
            raise APIError(400, "multipart QA needs a 'file' field with the video", "missing_file", "file")
        obj = await files.save_upload(upload, tenant)
        fields = {k: v for k, v in form.multi_items() if k != "file"}
        data: dict[str, Any] = {"file_id": obj.id, **fields}
    else:
        try:
            data = json.loads(await request.body())
        except json.JSONDecodeError as err:
            raise APIError(400, f"the body is not valid JSON: {err}", "invalid_json") from err
    try:
        return QARequest.model_validate(data)
    except ValidationError as err:
        raise RequestValidationError(err.errors()) from err


@router.post("/qa", response_model=QAResponse, summary="Answer a question about a video", openapi_extra=_QA_BODY)
async def qa(request: Request, service: Service, files: Files, caller: Caller) -> QAResponse:
    body = await _parse_qa(request, files, caller.tenant)
    answer = await cancel_on_disconnect(
        request,
        service.ask(
            body.video_source(),
            body.question,
            body.sampling_fields(),
            body.generation_fields(),
            tenant=caller.tenant,
        ),
    )
    return _response(answer, service.engine.model_name, body.return_token_ids)


@router.post("/caption", response_model=QAResponse, summary="Describe a video in detail")
async def caption(body: CaptionRequest, request: Request, service: Service, caller: Caller) -> QAResponse:
    answer = await cancel_on_disconnect(
        request,
        service.ask(
            body.video_source(),
            body.prompt or CAPTION_PROMPT,
            body.sampling_fields(),
            body.generation_fields(),
            tenant=caller.tenant,
        ),
    )
    return _response(answer, service.engine.model_name, body.return_token_ids)
