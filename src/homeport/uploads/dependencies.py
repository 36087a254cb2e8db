"""The upload service of a request: short units of work, the app's storage, digests and known
uploads."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends

from homeport.state import StateDep, unit_of_work
from homeport.uploads.service import UploadService


async def upload_service(state: StateDep) -> UploadService:
    return UploadService(
        lambda: unit_of_work(state, durable=False),
        lambda: unit_of_work(state),
        state.settings,
        state.storage,
        state.secret_key,
        state.upload_digests,
        state.known_uploads,
    )


UploadServiceDep = Annotated[UploadService, Depends(upload_service)]
