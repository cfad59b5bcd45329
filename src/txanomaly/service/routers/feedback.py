"""Analysts' feedback through the API: ``POST /v1/transactions/{id}/feedback`` records a
decision, ``GET /v1/feedback`` lists them (filters, keyset pages) or exports the decisions in
force as the labels CSV ``txanomaly evaluate --labels`` reads. Authorised as every data route.
"""

from __future__ import annotations

import base64
import binascii
import csv
import io
from typing import Annotated, Literal

import orjson
from fastapi import APIRouter, Path, Query, Request
from pydantic import BaseModel, Field
from starlette.responses import Response

from txanomaly.calibrate import LABELS
from txanomaly.schema import MAX_STRING_LENGTH, check_string
from txanomaly.service.console.auth import fingerprint
from txanomaly.service.deps import AuthorizedRuntime
from txanomaly.service.errors import ApiError
from txanomaly.service.responses import checked_path_id, json_response
from txanomaly.service.routers.anomalies import _time
from txanomaly.service.runtime import Runtime
from txanomaly.service.schemas import error_responses
from txanomaly.service.settings import API_KEY_HEADER
from txanomaly.storage.sql_review import (
    DECISIONS,
    MAX_NOTE,
    FeedbackError,
    QueueItem,
    UnknownTransaction,
    queue_key,
)

router = APIRouter(prefix="/v1", tags=["feedback"])
Decision = Literal["fraud", "not_fraud", "escalate"]
_EXPORT_PAGE = 10_000


class FeedbackIn(BaseModel):
    decision: Decision
    note: str = Field(default="", max_length=MAX_NOTE)
    analyst: str | None = Field(default=None, min_length=1, max_length=80,
                                description="who decided; recorded with the key's "
                                            "fingerprint")


class FeedbackOut(BaseModel):
    id: int = Field(description="ascending in the order decisions were recorded")
    transactionId: str
    decision: Decision
    note: str
    author: str
    createdAt: int = Field(description="ms since epoch (UTC)")
    current: bool = Field(description="true while it is the decision in force")


class FeedbackPage(BaseModel):
    items: list[FeedbackOut]
    nextCursor: str | None = Field(description="pass as `cursor` for the next page")


def author(request: Request, analyst: str | None) -> str:
    """Who made a decision through the API: the name given and the key's fingerprint."""
    key = request.headers.get(API_KEY_HEADER)
    name = " ".join((analyst or "api client").split())
    if request.app.state.settings.api_keys and key:
        return f"{name} (key {fingerprint(key)})"
    return f"{name} (no key)"


@router.post("/transactions/{transaction_id:path}/feedback", status_code=201,
             response_model=FeedbackOut, responses=error_responses(401, 404, 422),
             summary="Record an analyst's decision on a stored transaction",
             description="fraud, not_fraud or escalate, with an optional note. A later "
                         "decision supersedes an earlier one; every decision is kept "
                         "(GET /v1/feedback).")
async def post_feedback(
    request: Request, runtime: AuthorizedRuntime, body: FeedbackIn,
    transaction_id: Annotated[str, Path(min_length=1, max_length=MAX_STRING_LENGTH)],
) -> Response:
    checked_path_id(transaction_id)
    try:
        row = await runtime.call(runtime.review.record, transaction_id, body.decision,
                                 body.note, author(request, body.analyst))
    except UnknownTransaction as exc:
        raise ApiError(404, str(exc)) from None
    except FeedbackError as exc:
        raise ApiError(422, str(exc)) from None
    return json_response(row.to_dict(), status=201)


@router.get("/feedback", response_model=FeedbackPage, responses={
    **error_responses(401, 422),
    200: {"content": {"text/csv": {"schema": {"type": "string"}}},
          "description": "JSON pages, or with format=csv the labels file"}},
    summary="Analysts' decisions, by the order they were recorded")
async def list_feedback(
    runtime: AuthorizedRuntime,
    transaction_id: Annotated[str | None, Query(alias="transactionId", min_length=1,
                                                max_length=MAX_STRING_LENGTH)] = None,
    decision: Decision | None = None,
    author_: Annotated[str | None, Query(alias="author", min_length=1, max_length=200)] = None,
    start: Annotated[str | None, Query(alias="from", max_length=64,
                                       description="recorded at or after; ms or ISO-8601")
                     ] = None,
    end: Annotated[str | None, Query(alias="to", max_length=64,
                                     description="recorded before; ms or ISO-8601")] = None,
    current: Annotated[bool, Query(description="only the decisions in force")] = False,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: Annotated[str | None, Query(max_length=64)] = None,
    format: Annotated[Literal["json", "csv"], Query(
        description="csv: the decisions in force (fraud = 1, not fraud = 0; escalations "
                    "left out) as transactionId,is_anomaly, every page at once")] = "json",
) -> Response:
    for value in (transaction_id, author_):
        if value is not None:
            _checked(value)
    if format == "csv":
        return await feedback_csv(runtime)
    after = _read_id(cursor) if cursor is not None else None
    rows = await runtime.call(lambda: runtime.review.feedback(
        transaction_id=transaction_id, decision=decision, author=author_,
        start=_time("from", start), end=_time("to", end), current_only=current, limit=limit,
        after=after))
    next_cursor = _write_id(rows[-1].id) if len(rows) == limit else None
    return json_response({"items": [r.to_dict() for r in rows], "nextCursor": next_cursor})


async def feedback_csv(runtime: Runtime) -> Response:
    """The decisions in force as a labels CSV (``transactionId,is_anomaly``)."""
    def build() -> str:
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(["transactionId", "is_anomaly"])
        after = None
        while True:
            rows = runtime.review.feedback(current_only=True, limit=_EXPORT_PAGE, after=after)
            writer.writerows((r.transaction_id, LABELS[r.decision]) for r in rows
                             if r.decision in LABELS)
            if len(rows) < _EXPORT_PAGE:
                return out.getvalue()
            after = rows[-1].id

    text = await runtime.call(build)
    return Response(text, media_type="text/csv; charset=utf-8", headers={
        "Content-Disposition": "attachment; filename=feedback-labels.csv"})


def _checked(value: str) -> None:
    try:
        check_string(value)
    except ValueError as exc:
        raise ApiError(422, "invalid filter", [{"field": "query", "message": str(exc)}]
                       ) from None


def _write_id(value: int) -> str:
    return base64.urlsafe_b64encode(orjson.dumps([value])).decode()


def _read_id(cursor: str) -> int:
    try:
        (value,) = orjson.loads(base64.urlsafe_b64decode(cursor.encode("ascii")))
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise ValueError
        return value
    except (ValueError, TypeError, binascii.Error, UnicodeEncodeError):
        raise ApiError(422, "invalid cursor", [{"field": "cursor", "message":
                                                "pass nextCursor from the previous page"}]
                       ) from None


def queue_cursor(item: QueueItem, order: str) -> str:
    """The console queue's next-page cursor after ``item``."""
    return base64.urlsafe_b64encode(orjson.dumps(list(queue_key(item, order)))).decode()


def read_queue_cursor(cursor: str, order: str) -> tuple[float | int, str]:
    """The (time or score, id) a queue cursor holds; 422 when it is not one."""
    try:
        key, tid = orjson.loads(base64.urlsafe_b64decode(cursor.encode("ascii")))
        numeric = isinstance(key, int | float) and not isinstance(key, bool)
        if not numeric or (order == "newest" and not isinstance(key, int)):
            raise ValueError
        return key, check_string(tid)
    except (ValueError, TypeError, binascii.Error, UnicodeEncodeError):
        raise ApiError(422, "invalid cursor", [{"field": "cursor", "message":
                                                "follow the Next page link"}]) from None


__all__ = ["DECISIONS", "feedback_csv", "queue_cursor", "read_queue_cursor", "router"]
