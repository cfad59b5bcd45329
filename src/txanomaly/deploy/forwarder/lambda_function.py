"""The forwarding Lambda: API Gateway (REST API, proxy integration) -> SageMaker endpoint.

Handler ``lambda_function.handler``. This file is the whole function: standard library and
boto3 (which the Lambda Python runtime ships), nothing of txanomaly, so the function stays a
few kilobytes and starts in milliseconds; the model and the history live behind the endpoint.

Routes (the CDK stack creates them; API Gateway checks the API key and the JSON schema first):

* ``POST /v1/transactions``: one raw transaction (a JSON object) -> its verdict;
* ``POST /v1/transactions/batch``: a JSON array of 1..``MAX_BATCH`` transactions -> verdicts.

Each is sent to the endpoint with ``sagemaker-runtime:InvokeEndpoint`` (``application/json``,
answered as the container's ``/invocations``). Errors are the service's error body
``{"error", "message", "errors"}`` with these statuses:

====  ===============================================================================
400   the body is missing, not UTF-8 or not JSON
413   the body is larger than ``MAX_BODY_BYTES``, or the batch longer than ``MAX_BATCH``
415   the Content-Type is not application/json
422   the JSON is not a transaction (an object) / a non-empty array; or the container
      refused a transaction (its own 4xx is passed on: 409, 413, 422 with the fields)
429   the endpoint is throttling (``Retry-After``)
502   the endpoint failed (its container answered 5xx, it does not exist, or the call
      was refused)
503   the endpoint is not ready yet (being created or updated; ``Retry-After``)
504   the endpoint did not answer within ``READ_TIMEOUT_S``
====  ===============================================================================

Environment: ``ENDPOINT_NAME`` (required), ``MAX_BODY_BYTES`` (1048576), ``MAX_BATCH``
(1000), ``READ_TIMEOUT_S`` (25: below API Gateway's 29 s integration limit),
``STORE_HISTORY`` (1: ask the container to store each transaction in the shared history,
via InvokeEndpoint's CustomAttributes ``store=1``; 0: score only), ``ALLOWED_ORIGINS``
(comma-separated; CORS headers only for those, none by default).
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

# A named logger at INFO: Lambda's handler on the root logger writes its records, and
# importing this module elsewhere (tests) leaves the root logger's level alone.
logger = logging.getLogger("txanomaly.forwarder")
logger.setLevel(logging.INFO)

SINGLE_ROUTE = "/v1/transactions"
BATCH_ROUTE = "/v1/transactions/batch"
#: What the container reads from SageMaker's X-Amzn-SageMaker-Custom-Attributes header.
STORE_ATTRIBUTE = "store=1"
#: Seconds a client should wait before retrying a throttled or not-ready endpoint.
RETRY_AFTER_S = "1"

_CODES = {400: "bad_request", 404: "not_found", 405: "method_not_allowed", 409: "conflict",
          413: "payload_too_large", 415: "unsupported_media_type", 422: "validation_error",
          429: "too_many_requests", 502: "bad_gateway", 503: "unavailable",
          504: "gateway_timeout"}


class RequestError(Exception):
    """An answer other than 200: its status, message and per-item errors."""

    def __init__(self, status: int, message: str, errors: list[dict[str, Any]] | None = None,
                 headers: Mapping[str, str] | None = None):
        super().__init__(message)
        self.status, self.message = status, message
        self.errors, self.headers = errors or [], dict(headers or {})


@dataclass(frozen=True)
class Config:
    """The function's settings (:meth:`from_env` reads the environment variables)."""

    endpoint_name: str
    max_body_bytes: int = 1 << 20
    max_batch: int = 1000
    read_timeout_s: float = 25.0
    store_history: bool = True
    allowed_origins: tuple[str, ...] = ()

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Config:
        env = os.environ if environ is None else environ
        name = env.get("ENDPOINT_NAME", "").strip()
        if not name:
            raise ValueError("ENDPOINT_NAME is not set: the SageMaker endpoint to call")

        def number(var: str, default: float) -> float:
            text = env.get(var, "").strip()
            try:
                value = float(text) if text else default
            except ValueError:
                raise ValueError(f"{var} must be a number, got {text!r}") from None
            if value <= 0:
                raise ValueError(f"{var} must be > 0, got {text!r}")
            return value

        return cls(endpoint_name=name,
                   max_body_bytes=int(number("MAX_BODY_BYTES", cls.max_body_bytes)),
                   max_batch=int(number("MAX_BATCH", cls.max_batch)),
                   read_timeout_s=number("READ_TIMEOUT_S", cls.read_timeout_s),
                   store_history=env.get("STORE_HISTORY", "1").strip() not in ("0", "false"),
                   allowed_origins=tuple(o.strip() for o in env.get("ALLOWED_ORIGINS", "")
                                         .split(",") if o.strip()))


def make_client(config: Config) -> Any:
    """A sagemaker-runtime client whose worst case fits API Gateway's 29 s: no retries (the
    caller gets 429/502/504 and decides), a short connect timeout."""
    import boto3
    from botocore.config import Config as BotoConfig

    return boto3.client("sagemaker-runtime", config=BotoConfig(
        connect_timeout=3, read_timeout=config.read_timeout_s,
        retries={"mode": "standard", "total_max_attempts": 1}))


class Forwarder:
    """Turns API Gateway proxy events into InvokeEndpoint calls and their answers."""

    def __init__(self, config: Config, client: Any):
        self.config, self.client = config, client

    def handle(self, event: Mapping[str, Any]) -> dict[str, Any]:
        started = time.perf_counter()
        request_id = (event.get("requestContext") or {}).get("requestId", "")
        try:
            body, status = self.forward(event), 200
            answer = response(status, body)
        except RequestError as exc:
            status = exc.status
            answer = error(exc.status, exc.message, exc.errors, exc.headers, request_id)
        logger.info(json.dumps({"requestId": request_id, "route": event.get("resource"),
                                "status": status,
                                "ms": round((time.perf_counter() - started) * 1000, 1)}))
        answer["headers"].update(self.cors_headers(event))
        return answer

    def forward(self, event: Mapping[str, Any]) -> bytes:
        route, method = event.get("resource"), event.get("httpMethod")
        if route not in (SINGLE_ROUTE, BATCH_ROUTE):
            raise RequestError(404, f"no route {event.get('path')!r}")
        if method != "POST":
            raise RequestError(405, f"{method} is not allowed on {route}; use POST")
        payload = self.read(event)
        self.check_shape(payload, batch=route == BATCH_ROUTE)
        return self.invoke(json.dumps(payload, separators=(",", ":")).encode())

    def read(self, event: Mapping[str, Any]) -> Any:
        """The body's JSON; 400/413/415 for what the caller sent wrong."""
        headers = {k.lower(): v for k, v in (event.get("headers") or {}).items()}
        kind = headers.get("content-type", "").split(";", 1)[0].strip().lower()
        if kind != "application/json":
            raise RequestError(415, "send the body as application/json")
        body = event.get("body")
        if body is None or body == "":
            raise RequestError(400, "the request has no body: send a transaction as JSON")
        raw = body.encode() if isinstance(body, str) else bytes(body)
        if event.get("isBase64Encoded"):
            try:
                raw = base64.b64decode(raw, validate=True)
            except binascii.Error:
                raise RequestError(400, "the body is not valid base64") from None
        if len(raw) > self.config.max_body_bytes:
            raise RequestError(413, f"request body larger than {self.config.max_body_bytes} "
                                    "bytes")
        try:
            return json.loads(raw.decode("utf-8"), parse_constant=_refuse_constant)
        except UnicodeDecodeError:
            raise RequestError(400, "the body is not UTF-8") from None
        except ValueError as exc:
            raise RequestError(400, f"the body is not valid JSON: {exc}") from None

    def check_shape(self, payload: Any, batch: bool) -> None:
        """One object, or a non-empty array of at most ``max_batch`` objects (the container
        checks every field, and names it, after this)."""
        if not batch:
            if not isinstance(payload, dict):
                raise RequestError(422, f"{SINGLE_ROUTE} takes one transaction (a JSON object); "
                                        f"send lists to {BATCH_ROUTE}",
                                   [{"index": None, "field": "$", "message": "expected an object"}])
            return
        if not isinstance(payload, list) or not payload:
            raise RequestError(422, f"{BATCH_ROUTE} takes a non-empty JSON array of "
                                    "transactions", [{"index": None, "field": "$",
                                                      "message": "expected a non-empty array"}])
        if len(payload) > self.config.max_batch:
            raise RequestError(413, f"{len(payload)} transactions in one request; the limit "
                                    f"is {self.config.max_batch}")
        wrong = [{"index": i, "field": "$", "message": "expected an object"}
                 for i, item in enumerate(payload) if not isinstance(item, dict)]
        if wrong:
            raise RequestError(422, "every item of the batch must be a transaction (a JSON "
                                    "object); nothing was scored", wrong[:100])

    def invoke(self, body: bytes) -> bytes:
        """The endpoint's answer, or the RequestError its failure maps to."""
        from botocore.exceptions import (
            ClientError,
            ConnectTimeoutError,
            EndpointConnectionError,
            ReadTimeoutError,
        )

        options: dict[str, Any] = {"EndpointName": self.config.endpoint_name, "Body": body,
                                   "ContentType": "application/json",
                                   "Accept": "application/json"}
        if self.config.store_history:
            options["CustomAttributes"] = STORE_ATTRIBUTE
        try:
            answer = self.client.invoke_endpoint(**options)
        except ClientError as exc:
            raise endpoint_error(exc) from None
        except (ReadTimeoutError, ConnectTimeoutError):
            raise RequestError(504, "the model endpoint did not answer within "
                                    f"{self.config.read_timeout_s:g} s") from None
        except EndpointConnectionError:
            raise RequestError(502, "the model endpoint cannot be reached") from None
        data: bytes = answer["Body"].read()
        return data

    def cors_headers(self, event: Mapping[str, Any]) -> dict[str, str]:
        """CORS headers for an allowed origin only (never ``*``)."""
        headers = {k.lower(): v for k, v in (event.get("headers") or {}).items()}
        origin = headers.get("origin")
        if origin and origin in self.config.allowed_origins:
            return {"Access-Control-Allow-Origin": origin, "Vary": "Origin"}
        return {}


def endpoint_error(exc: Any) -> RequestError:
    """The answer for a botocore ClientError of InvokeEndpoint."""
    err = exc.response.get("Error", {})
    code = err.get("Code", "")
    if code == "ModelError":
        original = int(exc.response.get("OriginalStatusCode") or 500)
        if 400 <= original < 500 and original not in (401, 403):
            # The container refused the transactions: the caller's mistake, said by the
            # container with the record and the field; passed on as it is.
            return container_refusal(original, exc.response.get("OriginalMessage", ""))
        logger.error("the endpoint's container answered %s: %s", original,
                     exc.response.get("OriginalMessage", "")[:500])
        return RequestError(502, f"the model endpoint failed (its container answered "
                                 f"{original})")
    if code in ("ThrottlingException", "TooManyRequestsException"):
        return RequestError(429, "the model endpoint is busy; retry shortly",
                            headers={"Retry-After": RETRY_AFTER_S})
    if code == "ModelNotReadyException":
        return RequestError(503, "the model endpoint is not ready (being created or updated); "
                                 "retry shortly", headers={"Retry-After": RETRY_AFTER_S})
    # ValidationError (no such endpoint, a request SageMaker refuses), AccessDenied,
    # InternalFailure, ServiceUnavailable: not something the caller can fix.
    logger.error("InvokeEndpoint failed: %s: %s", code, err.get("Message", ""))
    return RequestError(502, f"the model endpoint refused the call ({code or 'unknown error'})")


def container_refusal(status: int, message: str) -> RequestError:
    """The container's own 4xx error body, kept (its ``errors`` name record and field)."""
    try:
        body = json.loads(message)
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("message"), str):
        errors = body.get("errors") if isinstance(body.get("errors"), list) else []
        return RequestError(status, body["message"], errors)
    return RequestError(status, message[:1000] or "the model endpoint refused the request")


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def response(status: int, body: bytes) -> dict[str, Any]:
    return {"statusCode": status, "headers": {"Content-Type": "application/json"},
            "body": body.decode("utf-8"), "isBase64Encoded": False}


def error(status: int, message: str, errors: list[dict[str, Any]],
          headers: Mapping[str, str], request_id: str) -> dict[str, Any]:
    """The service's error body, with API Gateway's request id to quote to support."""
    body = {"error": _CODES.get(status, "error"), "message": message, "errors": errors,
            "requestId": request_id}
    answer = response(status, json.dumps(body).encode())
    answer["headers"].update(headers)
    return answer


_forwarder: Forwarder | None = None


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """The Lambda entry point; the client and settings are made once per container."""
    global _forwarder
    if _forwarder is None:
        config = Config.from_env()
        _forwarder = Forwarder(config, make_client(config))
    return _forwarder.handle(event)
