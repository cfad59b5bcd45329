"""The SageMaker container contract: ``GET /ping`` and ``POST /invocations`` (port 8080).

``/invocations`` takes

* ``text/csv``: rows of raw feature values in the model's feature order (a header row with
  the feature names is allowed) and answers ``[{"anomaly_index": i}, ...]`` for the rows the
  model flags, as the prototype did;
* ``application/json``: transactions, answered as ``POST /v1/score`` does; stored too, as
  ``POST /v1/transactions`` does, when the request carries SageMaker's custom attribute
  ``store=1`` (InvokeEndpoint's ``CustomAttributes``, which the AWS deployment's forwarding
  Lambda sends when the stack keeps a shared history: docs/deploy-aws.md).

Both go through the same scoring path: the CSV rows are scored by ``Scorer.verdicts``, the
function that scores the JSON transactions after their features are computed.
"""

from __future__ import annotations

import math

import numpy as np
from fastapi import APIRouter, Request
from starlette.responses import Response

from txanomaly.service.deps import AuthorizedRuntime
from txanomaly.service.errors import ApiError
from txanomaly.service.inputs import media_type, read_body
from txanomaly.service.responses import VERDICT_SCHEMA, json_response, verdicts_response
from txanomaly.service.routers.health import is_ready
from txanomaly.service.schemas import Status, error_responses

#: SageMaker hands InvokeEndpoint's ``CustomAttributes`` to the container in this header.
CUSTOM_ATTRIBUTES_HEADER = "x-amzn-sagemaker-custom-attributes"


def wants_store(request: Request) -> bool:
    """True when the custom attributes (``;``- or ``,``-separated) hold ``store=1``."""
    attributes = request.headers.get(CUSTOM_ATTRIBUTES_HEADER, "").replace(",", ";")
    return "store=1" in (part.strip().lower() for part in attributes.split(";"))


async def ping(request: Request) -> object:
    if await is_ready(request):
        return json_response({"status": "ok"})
    return json_response({"status": "not ready"}, status=503)


def parse_csv(body: bytes, names: list[str], max_rows: int) -> np.ndarray:
    """Rows of floats; a 4xx :class:`ApiError` naming the row and column otherwise."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise ApiError(400, "the CSV body is not UTF-8") from None
    lines = [line for line in text.splitlines() if line.strip()]
    if lines and [c.strip() for c in lines[0].split(",")] == names:
        lines = lines[1:]
    if not lines:
        raise ApiError(422, "no rows in the CSV body", [{"index": None, "field": "$", "message":
                                                          "at least one row is required"}])
    if len(lines) > max_rows:
        raise ApiError(413, f"{len(lines)} rows in one request; the limit is {max_rows}")
    rows = np.empty((len(lines), len(names)), dtype=np.float64)
    errors = []
    for i, line in enumerate(lines):
        cells = line.split(",")
        if len(cells) != len(names):
            errors.append({"index": i, "field": "$", "message":
                           f"{len(cells)} values, expected {len(names)} ({', '.join(names)})"})
            continue
        for j, cell in enumerate(cells):
            try:
                value = float(cell)
            except ValueError:
                value = math.nan
            if not math.isfinite(value):
                errors.append({"index": i, "field": names[j],
                               "message": f"expected a finite number, got {cell.strip()[:32]!r}"})
            rows[i, j] = value
        if len(errors) >= 100:
            break
    if errors:
        raise ApiError(422, "invalid CSV rows; nothing was scored", errors)
    return rows


def register(max_batch: int) -> APIRouter:
    """The routes: ``/ping`` open, ``/invocations`` (CSV and JSON alike) authorised as every
    data route is, since JSON transactions are scored against the stored user history."""
    body = {"requestBody": {"required": True, "content": {
        "text/csv": {"schema": {"type": "string"}},
        "application/json": {"schema": {"oneOf": [
            {"$ref": "#/components/schemas/TransactionIn"},
            {"type": "array", "items": {"$ref": "#/components/schemas/TransactionIn"},
             "minItems": 1, "maxItems": max_batch}]}}}}}
    csv_answer = {"type": "array", "items": {"$ref": "#/components/schemas/AnomalyIndex"}}
    json_answer = VERDICT_SCHEMA
    responses = {200: {"description": "CSV in: flagged row indices; JSON in: verdicts",
                       "content": {"application/json": {"schema": {"oneOf": [
                           csv_answer, json_answer]}}}},
                 **error_responses(400, 401, 413, 415, 422)}
    router = APIRouter(tags=["sagemaker"])
    router.add_api_route("/ping", ping, response_model=Status, methods=["GET"],
                         responses={503: {"model": Status}}, summary="SageMaker health check")

    @router.post("/invocations", response_model=None, openapi_extra=body,
                 responses=responses, summary="SageMaker inference")
    async def invocations(request: Request, runtime: AuthorizedRuntime) -> Response:
        kind = media_type(request)
        if kind == "application/json":
            return await verdicts_response(request, runtime, persist=wants_store(request))
        if kind != "text/csv":
            raise ApiError(415, "send text/csv feature rows or application/json transactions")
        body = await read_body(request, runtime.settings.max_body_bytes)
        scorer = runtime.scorer
        rows = parse_csv(body, scorer.feature_names, runtime.settings.max_csv_rows)
        verdicts = scorer.verdicts(rows, [None] * len(rows))
        runtime.metrics.count("scored", len(rows))
        return json_response([{"anomaly_index": i} for i, v in enumerate(verdicts)
                              if v.is_anomaly])

    return router

