"""The app factory: ``create_app(settings)`` -> a FastAPI app; the model loads at startup.

``uvicorn --factory txanomaly.service.app:create_app`` reads the settings from the
environment (see :mod:`txanomaly.service.settings`). The factory cannot know the address
uvicorn binds, so it never trusts one: without an API key it builds no app unless
unauthenticated access is allowed explicitly.
"""

from __future__ import annotations

import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from pydantic.json_schema import models_json_schema

import txanomaly
from txanomaly.service import errors
from txanomaly.service.metrics import Metrics, MetricsMiddleware
from txanomaly.service.routers import (
    anomalies,
    console,
    feedback,
    health,
    model,
    sagemaker,
    score,
    transactions,
)
from txanomaly.service.runtime import Runtime
from txanomaly.service.schemas import AnomalyIndex, TransactionIn, Verdict
from txanomaly.service.settings import Settings, get_settings

logger = logging.getLogger(__name__)

DESCRIPTION = """Scores financial transactions as they arrive: per-user behavioural features
from the stored history, a Self-Organizing Map, a verdict with reasons. See docs/service.md."""


def create_app(settings: Settings | None = None, runtime: Runtime | None = None) -> FastAPI:
    """Build the app.

    Parameters
    ----------
    settings : Settings, optional
        Default: :func:`get_settings` (the environment).
    runtime : Runtime, optional
        An already opened runtime (the Lambda handler opens one at cold start); by default the
        app's lifespan opens one at startup and closes it at shutdown.

    Raises
    ------
    SettingsError
        No API key is configured and unauthenticated access is not allowed.
    """
    settings = settings if settings is not None else get_settings()
    settings.check_access()
    logger.info("settings in force: %s", settings.describe())
    if not settings.api_keys:
        logger.warning("unauthenticated access is allowed (no API key, "
                       "allow_unauthenticated=True): every data route answers anyone who "
                       "reaches this server")
    # Metrics live as long as the app; the runtime opened at startup reports into them.
    metrics = runtime.metrics if runtime is not None else Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        owned = getattr(app.state, "runtime", None) is None
        if owned:
            app.state.runtime = Runtime.open(settings, metrics)
        # The model, torch and the imports are long-lived: keep the collector from
        # re-scanning them on every full collection (measurable at 1,000 requests/s).
        gc.collect()
        gc.freeze()
        try:
            yield
        finally:
            if owned:
                app.state.runtime.close()
                app.state.runtime = None

    app = FastAPI(title="txanomaly", version=txanomaly.__version__, description=DESCRIPTION,
                  lifespan=lifespan)
    app.state.runtime = runtime
    # The authorisation rule reads the app's settings (deps.require_api_key).
    app.state.settings = settings
    errors.install(app)
    app.include_router(health.router)
    app.include_router(sagemaker.register(settings.max_batch))
    if settings.serve_v1:
        app.include_router(transactions.register(settings.max_batch))
        app.include_router(score.register(settings.max_batch))
        app.include_router(anomalies.router)
        app.include_router(model.router)
        app.include_router(feedback.router)
        console.install(app)  # the analysts' console at /console (docs/console.md)
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    app.openapi = lambda: _openapi(app, settings)  # type: ignore[method-assign]
    return app


def _openapi(app: FastAPI, settings: Settings) -> dict[str, Any]:
    """FastAPI's schema plus the models that the hand-written request bodies refer to;
    the API-key scheme only when keys are configured (the document says what is enforced)."""
    if app.openapi_schema is not None:
        return app.openapi_schema
    from fastapi.openapi.utils import get_openapi

    schema = get_openapi(title=app.title, version=app.version, description=app.description,
                         routes=app.routes)
    _, defs = models_json_schema(
        [(m, "validation") for m in (TransactionIn, Verdict, AnomalyIndex)],
        ref_template="#/components/schemas/{model}")
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    for name, definition in defs.get("$defs", {}).items():
        components.setdefault(name, definition)
    if not settings.auth_required:
        schema["components"].pop("securitySchemes", None)
        for operations in schema.get("paths", {}).values():
            for operation in operations.values():
                operation.pop("security", None)
    app.openapi_schema = schema
    return schema
