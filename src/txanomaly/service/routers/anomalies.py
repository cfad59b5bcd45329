"""``GET /v1/anomalies``: flagged transactions in a time range, paginated by cursor."""

from __future__ import annotations

import base64
import binascii
from typing import Annotated

import orjson
from fastapi import APIRouter, Query

from txanomaly.schema import check_string, parse_timestamp
from txanomaly.service.deps import AuthorizedRuntime
from txanomaly.service.errors import ApiError
from txanomaly.service.responses import json_response
from txanomaly.service.schemas import AnomalyPage, error_responses
from txanomaly.storage import StoredTransaction

router = APIRouter(prefix="/v1", tags=["anomalies"])


def _time(name: str, value: str | None) -> int | None:
    if value is None:
        return None
    try:
        return parse_timestamp(value)
    except ValueError as exc:
        raise ApiError(422, f"invalid {name}", [{"field": name, "message": str(exc)}]
                       ) from None


def encode_cursor(row: StoredTransaction) -> str:
    return base64.urlsafe_b64encode(orjson.dumps([row.timestamp, row.transaction_id])).decode()


def decode_cursor(cursor: str) -> tuple[int, str]:
    """The (timestamp, transactionId) a cursor holds, checked by the input rules (a timestamp
    in range, an id that could be stored) before it reaches the database; 422 otherwise.

    >>> decode_cursor("WzUsInQxIl0=")
    (5, 't1')
    """
    try:
        ts, tid = orjson.loads(base64.urlsafe_b64decode(cursor.encode("ascii")))
        # bool is an int to Python; the rules reject it as a timestamp.
        if not isinstance(ts, int) or isinstance(ts, bool):
            raise ValueError
        return parse_timestamp(ts), check_string(tid)
    except (ValueError, TypeError, binascii.Error):
        raise ApiError(422, "invalid cursor", [{"field": "cursor", "message":
                                                "pass nextCursor from the previous page"}]
                       ) from None


@router.get("/anomalies", response_model=AnomalyPage, responses=error_responses(401, 422),
            summary="Flagged transactions, by timestamp")
async def anomalies(
    runtime: AuthorizedRuntime,
    start: Annotated[str | None, Query(alias="from", max_length=64,
                                       description="inclusive; ms since epoch or ISO-8601")
                     ] = None,
    end: Annotated[str | None, Query(alias="to", max_length=64,
                                     description="exclusive; ms since epoch or ISO-8601")
                   ] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: Annotated[str | None, Query(max_length=1024)] = None,
) -> object:
    after = decode_cursor(cursor) if cursor is not None else None
    rows = await runtime.call(runtime.store.anomalies, _time("from", start), _time("to", end),
                              limit, after)
    items = [{**r.result, "timestamp": r.timestamp} for r in rows]
    next_cursor = encode_cursor(rows[-1]) if len(rows) == limit else None
    return json_response({"items": items, "nextCursor": next_cursor})
