"""``GET /v1/anomalies``: flagged transactions in a time range, paginated by cursor;
``GET /v1/flag-rate``: the share of stored transactions flagged per time bucket."""

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
from txanomaly.service.schemas import AnomalyPage, FlagRate, error_responses
from txanomaly.storage import StoredTransaction

#: ``GET /v1/flag-rate`` without ``from``: this many days before ``to``.
DEFAULT_RATE_DAYS = 7

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


@router.get("/flag-rate", response_model=FlagRate, responses=error_responses(401, 422),
            summary="Transactions stored and flagged per time bucket")
async def flag_rate(
    runtime: AuthorizedRuntime,
    start: Annotated[str | None, Query(
        alias="from", max_length=64, description="inclusive; ms since epoch or ISO-8601; "
        f"default {DEFAULT_RATE_DAYS} days before `to`")] = None,
    end: Annotated[str | None, Query(
        alias="to", max_length=64, description="exclusive; ms since epoch or ISO-8601; "
        "default the end of the bucket of the latest stored transaction")] = None,
    bucket: Annotated[int, Query(alias="bucketSeconds", ge=1, le=366 * 86_400,
                                 description="bucket length; buckets are aligned to "
                                             "multiples of it since the epoch")] = 3600,
) -> object:
    """By transaction time, over every stored transaction (all workers and replicas write
    the same database). Buckets without a stored transaction are left out; at most 10,000
    buckets a request."""
    bucket_ms = bucket * 1000
    lo, hi = _time("from", start), _time("to", end)
    if hi is None:
        last = await runtime.call(runtime.store.last_timestamp)
        if last is None:
            return json_response({"start": lo, "end": None, "bucketSeconds": bucket,
                                  "stored": 0, "flagged": 0, "flagRate": None, "items": []})
        hi = (last // bucket_ms + 1) * bucket_ms
    if lo is None:
        lo = hi - DEFAULT_RATE_DAYS * 86_400_000
    try:
        rows = await runtime.call(runtime.store.flag_rate, lo, hi, bucket_ms)
    except ValueError as exc:
        raise ApiError(422, "invalid range", [{"field": "from", "message": str(exc)}]
                       ) from None
    stored, flagged = sum(r[1] for r in rows), sum(r[2] for r in rows)
    return json_response({
        "start": lo, "end": hi, "bucketSeconds": bucket, "stored": stored, "flagged": flagged,
        "flagRate": flagged / stored if stored else None,
        "items": [{"start": s, "stored": n, "flagged": f, "flagRate": f / n}
                  for s, n, f in rows]})
