"""Jobs for long videos and batch captioning: POST /v1/jobs (202), GET /v1/jobs[/{id}], POST /v1/jobs/{id}/cancel.

Every job belongs to the tenant that submitted it: ids (and so idempotency keys) are per tenant, and another
tenant's job id answers 404 exactly like an unknown one. Operators (admin keys) see and cancel every tenant's.
"""

from __future__ import annotations

import hashlib
import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.responses import JSONResponse

from videoqa.service.deps import get_service, rate_limit
from videoqa.service.errors import COMMON_ERRORS, APIError
from videoqa.service.protocol import JobList, JobListQuery, JobObject, JobRequest
from videoqa.service.serving import VideoQAService
from videoqa.service.state import JobRecord
from videoqa.service.tenants import Principal

router = APIRouter(prefix="/v1/jobs", tags=["jobs"], dependencies=[Depends(rate_limit)], responses=COMMON_ERRORS)


def job_id_for(tenant: str, idempotency_key: str | None) -> str:
    """Same tenant + same key -> same job; the tenant is part of the hash, so two tenants never share a job."""
    if not idempotency_key:
        return "job-" + uuid.uuid4().hex
    return "job-" + hashlib.sha256(f"{tenant}\n{idempotency_key}".encode()).hexdigest()[:32]


async def _visible_job(request: Request, job_id: str, principal: Principal) -> JobRecord:
    record: JobRecord | None = await request.app.state.state.job_get(job_id)  # app.state is untyped
    if record is None or not principal.can_see(record.tenant):
        raise APIError(404, f"no job with id {job_id!r}", "job_not_found", "job_id")
    return record


@router.post("", response_model=JobObject, status_code=202, summary="Queue a QA or caption job")
async def submit(
    body: JobRequest,
    request: Request,
    idempotency_key: str | None = Header(default=None),
    service: VideoQAService = Depends(get_service),
    principal: Principal = Depends(rate_limit),
) -> JSONResponse:
    if body.file_id is not None:
        await service.files.get(body.file_id, principal.tenant)  # 404 now rather than a failed job later
    job_id = job_id_for(principal.tenant, body.idempotency_key or idempotency_key)
    record = await request.app.state.state.job_submit(job_id, body.model_dump(), principal.tenant)
    request.app.state.metrics.jobs.labels("submitted").inc()
    return JSONResponse(
        JobObject(**record.public()).model_dump(), status_code=202, headers={"Location": f"/v1/jobs/{job_id}"}
    )


@router.get("", response_model=JobList, summary="The caller's jobs, newest first (operators: every tenant's)")
async def list_jobs(
    request: Request,
    query: Annotated[JobListQuery, Query()],
    principal: Principal = Depends(rate_limit),
) -> JobList:
    scope = query.tenant if principal.admin else principal.tenant  # a tenant's `tenant=` cannot widen its view
    records = await request.app.state.state.job_list(scope, query.status, query.limit)
    return JobList(data=[JobObject(**r.public()) for r in records])


@router.get("/{job_id}", response_model=JobObject, summary="A job's status and result")
async def get_job(job_id: str, request: Request, principal: Principal = Depends(rate_limit)) -> JobObject:
    return JobObject(**(await _visible_job(request, job_id, principal)).public())


@router.post("/{job_id}/cancel", response_model=JobObject, summary="Cancel a queued or running job")
async def cancel_job(job_id: str, request: Request, principal: Principal = Depends(rate_limit)) -> JobObject:
    record = await _visible_job(request, job_id, principal)
    if record.status in ("succeeded", "failed"):
        raise APIError(
            409,
            f"job {job_id!r} already {record.status}; only queued or running jobs can be cancelled",
            "job_not_cancellable",
            "job_id",
        )
    cancelled = await request.app.state.state.job_cancel(job_id)
    if cancelled is None:  # its record expired in between
        raise APIError(404, f"no job with id {job_id!r}", "job_not_found", "job_id")
    if cancelled.status != "cancelled":  # it finished in between
        raise APIError(
            409,
            f"job {job_id!r} already {cancelled.status}; only queued or running jobs can be cancelled",
            "job_not_cancellable",
            "job_id",
        )
    request.app.state.metrics.jobs.labels("cancelled").inc()
    return JobObject(**cancelled.public())
