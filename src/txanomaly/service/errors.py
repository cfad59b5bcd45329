"""Error responses: one JSON shape for every 4xx/5xx, never a stack trace.

Every error body is ``{"error": CODE, "message": TEXT, "errors": [...]}``; ``errors`` lists
per-item problems (``index``, ``transactionId``, ``field``, ``message``) when there are any.
"""

from __future__ import annotations

import logging
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from txanomaly.ingest import ConflictError

logger = logging.getLogger(__name__)

_CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
          405: "method_not_allowed", 409: "conflict", 413: "payload_too_large",
          415: "unsupported_media_type", 422: "validation_error", 500: "internal_error",
          503: "unavailable"}


class ApiError(Exception):
    """An error the API answers with ``status`` and the standard error body."""

    def __init__(self, status: int, message: str, errors: list[dict[str, Any]] | None = None,
                 code: str | None = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.errors = errors or []
        self.code = code or _CODES.get(status, "error")
        self.headers = headers


def error_response(status: int, message: str, errors: list[dict[str, Any]] | None = None,
                   code: str | None = None, headers: dict[str, str] | None = None) -> Response:
    """The standard error body as a response."""
    body = {"error": code or _CODES.get(status, "error"), "message": message,
            "errors": errors or []}
    return Response(orjson.dumps(body), status_code=status, media_type="application/json",
                    headers=headers)


def install(app: FastAPI) -> None:
    """Register the exception handlers on ``app``."""

    async def api_error(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, ApiError)
        return error_response(exc.status, exc.message, exc.errors, exc.code, exc.headers)

    async def conflict(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, ConflictError)
        errors = [{"index": i, "transactionId": tid, "field": "transactionId",
                   "message": "already used with different content"}
                  for i, tid in exc.conflicts]
        return error_response(409, str(exc), errors)

    async def invalid_request(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        errors = [{"field": ".".join(str(p) for p in e.get("loc", ())),
                   "message": str(e.get("msg", "invalid"))} for e in exc.errors()]
        return error_response(422, "invalid request parameters", errors)

    async def http_error(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        return error_response(exc.status_code, str(exc.detail),
                              headers=dict(exc.headers) if exc.headers else None)

    app.add_exception_handler(ApiError, api_error)
    app.add_exception_handler(ConflictError, conflict)
    app.add_exception_handler(RequestValidationError, invalid_request)
    app.add_exception_handler(StarletteHTTPException, http_error)
    # Not add_exception_handler(Exception, ...): Starlette runs that handler in its outermost
    # middleware and then re-raises, and uvicorn answers a re-raised exception by closing the
    # keep-alive connection without "Connection: close" (the client's next request is lost)
    # and by logging the trace a second time.
    app.add_middleware(UnexpectedErrors)


class UnexpectedErrors:
    """Pure ASGI middleware: an exception no handler took becomes the standard 500 answer on a
    connection that stays open, logged once with its trace; a client that went away before
    its request was read is one log line.
    """

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def send_started(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, send_started)
        except ClientDisconnect:
            # Nobody is left to answer and the request did nothing (bodies are read whole
            # first). A warning: many of them mean clients time out, but no trace to read.
            logger.warning("client disconnected before sending its whole request: %s %s",
                           scope["method"], scope["path"])
        except Exception:
            if started:
                raise  # half an answer is out: only closing the connection can say so
            logger.exception("unhandled error on %s %s", scope["method"], scope["path"])
            await error_response(500, "internal error; the server log has the details")(
                scope, receive, send)
