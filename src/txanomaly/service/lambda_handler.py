"""AWS Lambda entry point (API Gateway REST/HTTP APIs and Function URLs), via Mangum.

Handler: ``txanomaly.service.lambda_handler.handler``. Settings come from the ``TXANOMALY_*``
environment variables by the rule every entry point follows (environment over defaults; a
Lambda function has no command line); the one default of its own is the database, a SQLite
file in /tmp. Authorisation is the service's one rule: an API key (``TXANOMALY_API_KEYS``) is
required unless ``TXANOMALY_ALLOW_UNAUTHENTICATED=1`` says something else guards the function
(e.g. a Function URL with ``AuthType: AWS_IAM``). The model and the database open at the
first invocation of a container (cold start) and are reused by the next ones. Use PostgreSQL
(``TXANOMALY_DB=postgresql://...``): a SQLite file in /tmp lives only as long as the container.
"""

from __future__ import annotations

from typing import Any

from mangum import Mangum

from txanomaly.service.app import create_app
from txanomaly.service.runtime import Runtime
from txanomaly.service.settings import Settings

#: The Lambda function's own defaults, below the environment: /tmp is its only writable disk.
LAMBDA_DEFAULTS = {"db_url": "sqlite:////tmp/txanomaly.db"}

_handler: Mangum | None = None


def build_handler(settings: Settings) -> Mangum:
    """A Mangum handler over an app whose runtime is already open (no per-call lifespan)."""
    settings.check_access()  # before the model and the database are opened
    runtime = Runtime.open(settings)
    return Mangum(create_app(settings, runtime=runtime), lifespan="off")


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """The Lambda handler: builds the app at the first call, then reuses it."""
    global _handler
    if _handler is None:
        _handler = build_handler(Settings.load(defaults=LAMBDA_DEFAULTS))
    return _handler(event, context)
