"""``POST /v1/score``: verdicts without storing anything."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from txanomaly.service.deps import AuthorizedRuntime
from txanomaly.service.responses import VERDICT_RESPONSES, verdicts_response
from txanomaly.service.schemas import error_responses, transactions_body_schema


def register(max_batch: int) -> APIRouter:
    """The router, with the body schema's batch limit filled in."""
    router = APIRouter(prefix="/v1", tags=["score"])

    @router.post("/score", response_model=None,
                 openapi_extra={"requestBody": transactions_body_schema(max_batch)},
                 responses={**VERDICT_RESPONSES, **error_responses(400, 401, 409, 413, 415, 422)},
                 summary="Score transactions without storing them",
                 description="Features come from the stored history (a list is treated as a "
                             "stream: later items see earlier ones); nothing is stored.")
    async def score(request: Request, runtime: AuthorizedRuntime) -> Response:
        return await verdicts_response(request, runtime, persist=False)

    return router
