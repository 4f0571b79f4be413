"""REST video QA: POST /v1/video/qa (JSON or multipart) and POST /v1/video/caption."""

from __future__ import annotations

import json

from fastapi import APIRouter, Depends, Request
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError

from videoqa.service.deps import get_service, rate_limit
from videoqa.service.errors import COMMON_ERRORS, APIError
from videoqa.service.protocol import CaptionRequest, QARequest, QAResponse
from videoqa.service.serving import CAPTION_PROMPT, Answer, VideoQAService, cancel_on_disconnect
from videoqa.service.tenants import Principal

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


async def _parse_qa(request: Request, service: VideoQAService, tenant: str) -> QARequest:
    if request.headers.get("content-type", "").startswith("multipart/form-data"):
        form = await request.form()
        upload = form.get("file")
        if upload is None or isinstance(upload, str):
            raise APIError(400, "multipart QA needs a 'file' field with the video", "missing_file", "file")
        obj = await service.save_upload(upload, tenant)
        fields = {k: v for k, v in form.items() if k != "file" and isinstance(v, str)}
        data: dict = {"file_id": obj.id, **fields}
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
async def qa(
    request: Request, service: VideoQAService = Depends(get_service), principal: Principal = Depends(rate_limit)
) -> QAResponse:
    body = await _parse_qa(request, service, principal.tenant)
    answer = await cancel_on_disconnect(request, service.ask(body, body.question, body, body, tenant=principal.tenant))
    return _response(answer, service.engine.model_name, body.return_token_ids)


@router.post("/caption", response_model=QAResponse, summary="Describe a video in detail")
async def caption(
    body: CaptionRequest,
    request: Request,
    service: VideoQAService = Depends(get_service),
    principal: Principal = Depends(rate_limit),
) -> QAResponse:
    prompt = body.prompt or CAPTION_PROMPT
    answer = await cancel_on_disconnect(request, service.ask(body, prompt, body, body, tenant=principal.tenant))
    return _response(answer, service.engine.model_name, body.return_token_ids)
