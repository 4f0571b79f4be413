"""Jobs for long videos and batch captioning: POST /v1/jobs (202) and GET /v1/jobs/{id}."""

from __future__ import annotations

import hashlib
import uuid

from fastapi import APIRouter, Depends, Header, Request
from fastapi.responses import JSONResponse

from videoqa.service.deps import get_service, rate_limit
from videoqa.service.errors import COMMON_ERRORS, APIError
from videoqa.service.protocol import JobObject, JobRequest
from videoqa.service.serving import VideoQAService

router = APIRouter(prefix="/v1/jobs", tags=["jobs"], dependencies=[Depends(rate_limit)], responses=COMMON_ERRORS)


@router.post("", response_model=JobObject, status_code=202, summary="Queue a QA or caption job")
async def submit(
    body: JobRequest,
    request: Request,
    idempotency_key: str | None = Header(default=None),
    service: VideoQAService = Depends(get_service),
) -> JSONResponse:
    if body.file_id is not None:
        await service.get_file(body.file_id)  # 404 now rather than a failed job later
    key = body.idempotency_key or idempotency_key
    job_id = "job-" + (hashlib.sha256(key.encode()).hexdigest()[:32] if key else uuid.uuid4().hex)
    record = await request.app.state.state.job_submit(job_id, body.model_dump())
    request.app.state.metrics.jobs.labels("submitted").inc()
    return JSONResponse(
        JobObject(**record.public()).model_dump(), status_code=202, headers={"Location": f"/v1/jobs/{job_id}"}
    )


@router.get("/{job_id}", response_model=JobObject, summary="A job's status and result")
async def get_job(job_id: str, request: Request) -> JobObject:
    record = await request.app.state.state.job_get(job_id)
    if record is None:
        raise APIError(404, f"no job with id {job_id!r}", "job_not_found", "job_id")
    return JobObject(**record.public())
