"""``GET /v1/model``: what is loaded."""

from __future__ import annotations

from fastapi import APIRouter

from txanomaly.service.deps import AuthorizedRuntime
from txanomaly.service.responses import json_response
from txanomaly.service.schemas import ModelInfo, error_responses

router = APIRouter(prefix="/v1", tags=["model"])


@router.get("/model", response_model=ModelInfo, responses=error_responses(401),
            summary="The loaded model")
async def model(runtime: AuthorizedRuntime) -> object:
    return json_response(runtime.scorer.describe())
