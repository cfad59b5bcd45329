"""What the routers share: fast JSON responses, the verdict schema, and the one handler that
turns a request body of raw transactions into verdicts.

Each router module holds only its own routes; the helpers two or more of them use live here.
"""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from txanomaly.schema import check_string
from txanomaly.service.errors import ApiError
from txanomaly.service.inputs import parse_transactions, read_json
from txanomaly.service.runtime import Runtime

#: The 200 answer of every route that returns verdicts: one, or a list for a list.
VERDICT_SCHEMA: dict[str, Any] = {"oneOf": [
    {"$ref": "#/components/schemas/Verdict"},
    {"type": "array", "items": {"$ref": "#/components/schemas/Verdict"}}]}
VERDICT_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"description": "A verdict, or a list of verdicts for a list",
          "content": {"application/json": {"schema": VERDICT_SCHEMA}}}}


def checked_path_id(transaction_id: str) -> str:
    """A transaction id from a route's path, by the input rules for ids: one that could never
    be stored (a NUL, which PostgreSQL text cannot hold) is a 422 here, not a database error.
    """
    try:
        return check_string(transaction_id)
    except ValueError as exc:
        raise ApiError(422, "invalid transaction id", [{"field": "path.transaction_id",
                                                        "message": str(exc)}]) from None


def json_response(data: Any, status: int = 200) -> Response:
    """An orjson-encoded response (faster than FastAPI's encoder, exact floats)."""
    return Response(orjson.dumps(data), status_code=status, media_type="application/json")


async def verdicts_response(request: Request, runtime: Runtime, persist: bool) -> Response:
    """Validate the body's transactions, ingest them (``persist``: store them too) and answer
    their verdicts: one object for one object, a list for a list.

    Used by ``POST /v1/transactions``, ``POST /v1/score`` and SageMaker's JSON
    ``/invocations``.
    """
    settings = runtime.settings
    payload = await read_json(request, settings.max_body_bytes)
    records, single = parse_transactions(payload, settings.max_batch)
    out = await runtime.ingest_request(records, persist)
    results = [r.result for r in out]
    return json_response(results[0] if single else results)
