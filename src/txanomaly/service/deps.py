"""Dependencies written once: the runtime of the app, and API-key authorisation."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Request, Security
from fastapi.security import APIKeyHeader

from txanomaly.service.errors import ApiError
from txanomaly.service.runtime import Runtime
from txanomaly.service.settings import API_KEY_HEADER, Settings

_api_key_header = APIKeyHeader(name=API_KEY_HEADER, auto_error=False,
                               description="Required on every data route when keys are "
                                           "configured.")


def get_runtime(request: Request) -> Runtime:
    """The app's runtime (model, store, metrics); 503 while it is not loaded."""
    runtime: Runtime | None = getattr(request.app.state, "runtime", None)
    if runtime is None:
        raise ApiError(503, "the service is starting or stopping")
    return runtime


async def require_api_key(request: Request,
                          key: Annotated[str | None, Security(_api_key_header)] = None
                          ) -> Runtime:
    """The runtime, once the request is authorised: the ``X-API-Key`` header holds one of the
    configured keys, or no key is configured and the operator allowed unauthenticated access.

    The one authorisation rule of every data route. Async and flat on purpose: FastAPI runs
    a plain ``def`` dependency in the thread pool, and every nested level is solved per
    request; together they cost ~0.1 ms a request.
    """
    settings: Settings = request.app.state.settings
    keys = settings.api_keys
    if keys:
        if key is None or not any(hmac.compare_digest(key.encode(), k.encode())
                                  for k in keys):
            raise ApiError(401, f"missing or invalid API key (header {API_KEY_HEADER})",
                           headers={"WWW-Authenticate": "ApiKey"})
    elif not settings.allow_unauthenticated:
        # create_app refuses these settings; this keeps the rule whole if it is bypassed.
        raise ApiError(403, "no API key is configured and unauthenticated access is not "
                            "allowed (TXANOMALY_ALLOW_UNAUTHENTICATED)")
    return get_runtime(request)


AuthorizedRuntime = Annotated[Runtime, Depends(require_api_key)]
