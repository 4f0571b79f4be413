"""Upload-then-query: POST /v1/files, GET/DELETE /v1/files/{id}."""

from __future__ import annotations

from fastapi import APIRouter, Depends, File, UploadFile

from videoqa.service.deps import get_service, rate_limit
from videoqa.service.errors import COMMON_ERRORS
from videoqa.service.protocol import DeletedFile, FileObject
from videoqa.service.serving import VideoQAService

router = APIRouter(prefix="/v1/files", tags=["files"], dependencies=[Depends(rate_limit)], responses=COMMON_ERRORS)


@router.post("", response_model=FileObject, status_code=200, summary="Upload a video (multipart field 'file')")
async def upload(file: UploadFile = File(...), service: VideoQAService = Depends(get_service)) -> FileObject:
    return await service.save_upload(file)


@router.get("/{file_id}", response_model=FileObject, summary="Describe an uploaded video")
async def get_file(file_id: str, service: VideoQAService = Depends(get_service)) -> FileObject:
    return service.file_object(await service.get_file(file_id))


@router.delete("/{file_id}", response_model=DeletedFile, summary="Delete an uploaded video")
async def delete_file(file_id: str, service: VideoQAService = Depends(get_service)) -> DeletedFile:
    return DeletedFile(id=file_id, deleted=await service.delete_file(file_id))
