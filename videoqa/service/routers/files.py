"""Upload-then-query: POST /v1/files, GET/DELETE /v1/files/{id}."""

from __future__ import annotations

from fastapi import APIRouter, Depends, File, Request, UploadFile

from videoqa.service.deps import Caller, Files, rate_limit
from videoqa.service.errors import COMMON_ERRORS, check_form
from videoqa.service.protocol import DeletedFile, FileObject

router = APIRouter(prefix="/v1/files", tags=["files"], dependencies=[Depends(rate_limit)], responses=COMMON_ERRORS)


@router.post("", response_model=FileObject, status_code=200, summary="Upload a video (multipart field 'file')")
async def upload(request: Request, files: Files, caller: Caller, file: UploadFile = File(...)) -> FileObject:
    # FastAPI reads only `file` from the form (the form is parsed already, and cached on the request): any other
    # field, or a second file, is refused by name rather than dropped.
    check_form(await request.form(), allowed=())
    return await files.save_upload(file, caller.tenant)


@router.get("/{file_id}", response_model=FileObject, summary="Describe an uploaded video (the caller's own)")
async def get_file(file_id: str, files: Files, caller: Caller) -> FileObject:
    return files.file_object(await files.get(file_id, caller.tenant))


@router.delete("/{file_id}", response_model=DeletedFile, summary="Delete an uploaded video (the caller's own)")
async def delete_file(file_id: str, files: Files, caller: Caller) -> DeletedFile:
    return DeletedFile(id=file_id, deleted=await files.delete(file_id, caller.tenant))
