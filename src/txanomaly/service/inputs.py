"""Reading request bodies: size limits, content types, JSON, and transaction validation.

Transactions are checked by :func:`txanomaly.schema.parse_record`: the same rules as files.
Everything here raises :class:`~txanomaly.service.errors.ApiError` with a 4xx status; a batch
with any invalid transaction is rejected whole, listing every error.
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

import orjson
from starlette.requests import Request

from txanomaly.errors import RecordError
from txanomaly.schema import parse_record
from txanomaly.service.errors import ApiError


def media_type(request: Request) -> str:
    """The request's media type, lower-case, without parameters (``""`` if none)."""
    return request.headers.get("content-type", "").split(";", 1)[0].strip().lower()


async def read_body(request: Request, limit: int) -> bytes:
    """The raw body, refusing (413) more than ``limit`` bytes before reading them all."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise ApiError(400, "invalid Content-Length header")
        if int(declared) > limit:
            raise ApiError(413, f"request body larger than {limit} bytes")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise ApiError(413, f"request body larger than {limit} bytes")
    return bytes(body)


async def read_json(request: Request, limit: int) -> Any:
    """The parsed JSON body of an ``application/json`` request."""
    if media_type(request) != "application/json":
        raise ApiError(415, "send the body as application/json")
    body = await read_body(request, limit)
    return parse_json(body)


def parse_json(body: bytes) -> Any:
    """Parse JSON (orjson: rejects NaN/Infinity, numbers beyond float range, nesting deeper
    than 1024) or raise a 400; a key repeated in one object is a 422 naming it.

    orjson keeps the last of repeated keys silently. Looking for them costs one re-encoding
    in C: every ``:`` of the body separates a key from its value or lies inside a string, so
    the body has more of them than the re-encoded value exactly when a pair was dropped
    (``\\u003a``, an escaped colon, is the one way to hide one: such bodies take the slow path).
    """
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise ApiError(400, f"the body is not valid JSON: {exc}") from None
    try:
        colons = orjson.dumps(value).count(b":")
    except orjson.JSONEncodeError:
        colons = -1  # nested too deeply to re-encode: parse_record names the field
    if colons != body.count(b":") or b"\\u003" in body:
        _refuse_repeated_keys(body)
    return value


class _Repeated:
    """Stands for an object that repeats ``key`` (the slow path's parse)."""

    def __init__(self, key: str):
        self.key = key


def _pairs(pairs: list[tuple[str, Any]]) -> Any:
    value = dict(pairs)
    if len(value) == len(pairs):
        return value
    counts = Counter(key for key, _ in pairs)
    return _Repeated(next(key for key, _ in pairs if counts[key] > 1))


def _refuse_repeated_keys(body: bytes) -> None:
    """Raise a 422 naming the first repeated key (with its path), if there is one."""
    try:
        parsed = json.loads(body, object_pairs_hook=_pairs)
        path = _repeated_path(parsed)
    except (RecursionError, ValueError):
        # Deeper than Python's parser goes (orjson reads 1,024 levels): far too deep to
        # store, and parse_record refuses it naming the field.
        return
    if path is None:
        return
    index = path.pop(0) if isinstance(parsed, list) else None
    field = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path).lstrip(".")
    raise ApiError(422, f"the key {field!r} is repeated in one object; nothing was stored",
                   [{"index": index, "transactionId": None, "field": field,
                     "message": "repeated key: JSON readers disagree on which one counts"}])


def _repeated_path(value: Any) -> list[str | int] | None:
    """The path to the first repeated key (depth first), or None."""
    if isinstance(value, _Repeated):
        return [value.key]
    items = (value.items() if isinstance(value, dict)
             else enumerate(value) if isinstance(value, list) else ())
    for key, inner in items:
        path = _repeated_path(inner)
        if path is not None:
            return [key, *path]
    return None


def parse_transactions(payload: Any, max_batch: int) -> tuple[list[dict[str, Any]], bool]:
    """Validate one transaction object or a list of them.

    Returns
    -------
    (records, single)
        The flat records, and whether the payload was a single object.
    """
    single = isinstance(payload, dict)
    if single:
        items = [payload]
    elif isinstance(payload, list):
        items = payload
        if len(items) > max_batch:
            raise ApiError(413, f"{len(items)} transactions in one request; the limit is "
                                f"{max_batch}")
        if not items:
            raise ApiError(422, "the list of transactions is empty",
                           [{"index": None, "transactionId": None, "field": "$",
                             "message": "at least one transaction is required"}])
    else:
        raise ApiError(422, "expected a transaction object or a list of them",
                       [{"index": None, "transactionId": None, "field": "$",
                         "message": f"got {type(payload).__name__}"}])
    records: list[dict[str, Any]] = []
    errors: list[dict[str, Any]] = []
    for i, raw in enumerate(items):
        index = None if single else i
        try:
            records.append(parse_record(raw, i))
        except RecordError as exc:
            errors.extend({"index": index, "transactionId": exc.transaction_id,
                           "field": e.field, "message": e.message} for e in exc.errors)
    if errors:
        count = len({e["index"] for e in errors})
        what = "the transaction is" if single else f"{count} transaction(s) are"
        raise ApiError(422, f"{what} invalid; nothing was stored", errors)
    return records, single
