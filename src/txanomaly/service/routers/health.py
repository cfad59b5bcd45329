"""Probes and metrics: ``/healthz`` (alive), ``/readyz`` (model + database), ``/metrics``."""

from __future__ import annotations

import logging

from fastapi import APIRouter, Request
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.responses import Response

from txanomaly.service.deps import AuthorizedRuntime
from txanomaly.service.responses import json_response
from txanomaly.service.schemas import Status, error_responses

router = APIRouter(tags=["health"])
logger = logging.getLogger(__name__)


@router.get("/healthz", response_model=Status, summary="Liveness")
async def healthz() -> object:
    return json_response({"status": "ok"})


async def is_ready(request: Request) -> bool:
    """The model is loaded and the database answers."""
    runtime = getattr(request.app.state, "runtime", None)
    if runtime is None:
        return False
    try:
        await runtime.call(runtime.store.ping)
    except Exception:  # any database failure means "not ready", never a 500
        logger.warning("readiness check: the database does not answer", exc_info=True)
        return False
    return True


@router.get("/readyz", response_model=Status, responses={503: {"model": Status}},
            summary="Readiness")
async def readyz(request: Request) -> object:
    if await is_ready(request):
        return json_response({"status": "ready"})
    return json_response({"status": "not ready"}, status=503)


@router.get("/metrics", response_class=Response, responses=error_responses(401),
            summary="Prometheus metrics")
async def metrics(runtime: AuthorizedRuntime) -> Response:
    return Response(generate_latest(runtime.metrics.registry), media_type=CONTENT_TYPE_LATEST)
