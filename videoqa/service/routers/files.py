"""Upload-then-query: POST /v1/files, GET/DELETE /v1/files/{id}."""

from __future__ import annotations

from fastapi import APIRouter, Depends, File, UploadFile

from videoqa.service.deps import get_service, rate_limit
from videoqa.service.errors import COMMON_ERRORS
from videoqa.service.protocol import DeletedFile, FileObject
from videoqa.service.serving import VideoQAService
from videoqa.service.tenants import Principal

router = APIRouter(prefix="/v1/files", tags=["files"], dependencies=[Depends(rate_limit)], responses=COMMON_ERRORS)


@router.post("", response_model=FileObject, status_code=200, summary="Upload a video (multipart field 'file')")
async def upload(
    file: UploadFile = File(...),
    service: VideoQAService = Depends(get_service),
    principal: Principal = Depends(rate_limit),
) -> FileObject:
    return await service.save_upload(file, principal.tenant)


@router.get("/{file_id}", response_model=FileObject, summary="Describe an uploaded video (the caller's own)")
async def get_file(
    file_id: str, service: VideoQAService = Depends(get_service), principal: Principal = Depends(rate_limit)
) -> FileObject:
    return service.file_object(await service.get_file(file_id, principal.tenant))


@router.delete("/{file_id}", response_model=DeletedFile, summary="Delete an uploaded video (the caller's own)")
async def delete_file(
    file_id: str, service: VideoQAService = Depends(get_service), principal: Principal = Depends(rate_limit)
) -> DeletedFile:
    return DeletedFile(id=file_id, deleted=await service.delete_file(file_id, principal.tenant))
