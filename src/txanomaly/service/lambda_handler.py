"""AWS Lambda entry point (API Gateway REST/HTTP APIs and Function URLs), via Mangum.

Handler: ``txanomaly.service.lambda_handler.handler``. Settings come from the ``TXANOMALY_*``
environment variables; a Lambda function is reachable beyond loopback, so an API key
(``TXANOMALY_API_KEYS``) is required. The model and the database open at the first invocation
of a container (cold start) and are reused by the next ones. Use PostgreSQL
(``TXANOMALY_DB=postgresql://...``): a SQLite file in /tmp lives only as long as the container.
"""

from __future__ import annotations

import os
from typing import Any

from mangum import Mangum

from txanomaly.service.app import create_app
from txanomaly.service.runtime import Runtime
from txanomaly.service.settings import Settings

_handler: Mangum | None = None


def build_handler(settings: Settings) -> Mangum:
    """A Mangum handler over an app whose runtime is already open (no per-call lifespan)."""
    runtime = Runtime.open(settings)
    return Mangum(create_app(settings, runtime=runtime), lifespan="off")


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """The Lambda handler: builds the app at the first call, then reuses it."""
    global _handler
    if _handler is None:
        env = dict(os.environ)
        env.setdefault("TXANOMALY_HOST", "0.0.0.0")  # reachable: keys required
        env.setdefault("TXANOMALY_DB", "sqlite:////tmp/txanomaly.db")
        _handler = build_handler(Settings.from_env(env))
    return _handler(event, context)
