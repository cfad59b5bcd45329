"""The transaction record: parse, validate and flatten raw (Flagright-shaped) JSON.

A raw record is the nested camelCase object payment platforms such as Flagright export::

    {"transactionId": "t1", "timestamp": {"$numberLong": "1662358419786"},
     "originUserId": "u1", "destinationUserId": "u2",
     "originAmountDetails": {"transactionAmount": 12.5, "transactionCurrency": "EUR",
                             "country": "DE"},
     "destinationAmountDetails": {"transactionAmount": 12.5, "transactionCurrency": "EUR"},
     "originPaymentDetails": {"method": "CARD"}}

It flattens to the snake_case record of :data:`FLAT_COLUMNS` plus ``extra``: a JSON object with
every field the model does not use (unknown top-level fields and unknown sub-fields of known
objects), so nothing is lost.

>>> rec = parse_record({"transactionId": "t1", "timestamp": "2022-09-05T06:13:39.786Z",
...                     "destinationAmountDetails": {"transactionAmount": 10}, "note": "x"})
>>> rec["timestamp"], rec["destination_amount"], rec["origin_amount"], rec["extra"]
(1662358419786, 10.0, None, '{"note":"x"}')
>>> parse_record({"transactionId": "t2", "timestamp": "yesterday"}, index=7)
Traceback (most recent call last):
...
txanomaly.errors.RecordError: record 7 (transactionId='t2'): timestamp: ...
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import orjson

from txanomaly.errors import FieldError, RecordError

#: Columns of the flattened record, in order (DESIGN section 2). ``extra`` follows them.
FLAT_COLUMNS: tuple[str, ...] = (
    "transaction_id",
    "timestamp",
    "type",
    "state",
    "origin_user_id",
    "destination_user_id",
    "origin_amount",
    "origin_currency",
    "origin_country",
    "destination_amount",
    "destination_currency",
    "destination_country",
    "origin_method",
    "destination_method",
)
EXTRA_COLUMN = "extra"
STRING_COLUMNS = tuple(c for c in FLAT_COLUMNS if c not in ("timestamp", "origin_amount",
                                                            "destination_amount"))
#: The text columns with few distinct values per row (ids, codes, enums): what
#: ``load_transactions(..., categorical=True)`` holds as categoricals.
CATEGORICAL_COLUMNS = tuple(c for c in STRING_COLUMNS if c != "transaction_id")
AMOUNT_COLUMNS = ("origin_amount", "destination_amount")

TRANSACTION_TYPES = ("DEPOSIT", "TRANSFER", "EXTERNAL_PAYMENT", "WITHDRAWAL", "REFUND", "OTHER")
TRANSACTION_STATES = ("CREATED", "PROCESSING", "SENT", "EXPIRED", "DECLINED", "SUSPENDED",
                      "REFUNDED", "SUCCESSFUL", "REVERSED")

#: Timestamps are ms since the epoch (UTC); outside [1970, 10000) they are almost surely a
#: unit mistake or garbage, and the datetime conversions downstream could not represent them.
MIN_TIMESTAMP_MS = 0
MAX_TIMESTAMP_MS = 253_402_300_800_000  # 10000-01-01T00:00:00Z
MAX_STRING_LENGTH = 256
#: Amounts above this (1e15, more than any real payment in any currency) are rejected: they
#: are overflows or garbage and would dominate every sum they enter.
MAX_AMOUNT = 1e15

# Raw path -> flat column, for the scalar fields at the top level.
_TOP_LEVEL = {
    "transactionId": "transaction_id",
    "type": "type",
    "transactionState": "state",
    "originUserId": "origin_user_id",
    "destinationUserId": "destination_user_id",
}
# Raw nested object -> {sub-field: flat column}.
_NESTED = {
    "originAmountDetails": {"transactionAmount": "origin_amount",
                            "transactionCurrency": "origin_currency",
                            "country": "origin_country"},
    "destinationAmountDetails": {"transactionAmount": "destination_amount",
                                 "transactionCurrency": "destination_currency",
                                 "country": "destination_country"},
    "originPaymentDetails": {"method": "origin_method"},
    "destinationPaymentDetails": {"method": "destination_method"},
}
#: Flat column -> the raw field path that error messages name.
RAW_PATHS: dict[str, str] = {
    **{flat: raw for raw, flat in _TOP_LEVEL.items()},
    "timestamp": "timestamp",
    **{flat: f"{obj}.{sub}" for obj, subs in _NESTED.items() for sub, flat in subs.items()},
}


def parse_timestamp(value: Any) -> int:
    """Return ms since the epoch (UTC) from any accepted timestamp form, or raise ValueError.

    Accepted: an integer (ms), an integral float, ``{"$numberLong": "..."}`` (MongoDB
    export), a numeric string, or an ISO-8601 string (naive means UTC).

    >>> parse_timestamp({"$numberLong": "1662358419786"})
    1662358419786
    >>> parse_timestamp("2022-09-05T06:13:39.786+00:00")
    1662358419786
    """
    if isinstance(value, dict):
        if set(value) != {"$numberLong"}:
            raise ValueError(f"expected {{'$numberLong': '<ms>'}}, got keys {sorted(value)}")
        value = value["$numberLong"]
        if not isinstance(value, str | int) or isinstance(value, bool):
            raise ValueError("$numberLong must hold a string of digits")
    ms: int
    if isinstance(value, bool) or value is None:
        raise ValueError(f"expected ms since epoch or an ISO-8601 string, got {value!r}")
    if isinstance(value, int):
        ms = value
    elif isinstance(value, float):
        if not math.isfinite(value) or value != int(value):
            raise ValueError(f"expected whole milliseconds, got {value!r}")
        ms = int(value)
    elif isinstance(value, str):
        text = value.strip()
        if text.lstrip("-").isdigit():
            ms = int(text)
        else:
            try:
                dt = datetime.fromisoformat(text)
            except ValueError:
                raise ValueError(
                    f"cannot parse {value[:64]!r}: expected ms since epoch or ISO-8601"
                ) from None
            if dt.tzinfo is None:
                dt = dt.replace(tzinfo=UTC)
            delta = dt - datetime(1970, 1, 1, tzinfo=UTC)
            ms = (delta.days * 86_400 + delta.seconds) * 1000 + delta.microseconds // 1000
    else:
        raise ValueError("expected ms since epoch or an ISO-8601 string, "
                         f"got {type(value).__name__}")
    if not MIN_TIMESTAMP_MS <= ms < MAX_TIMESTAMP_MS:
        raise ValueError(f"{ms} ms is outside 1970..9999")
    return ms


def check_amount(value: Any) -> float:
    """Return a valid amount as float or raise ValueError (finite, >= 0, a JSON number)."""
    if isinstance(value, dict) and len(value) == 1:
        (key, inner), = value.items()
        if key in ("$numberDecimal", "$numberDouble", "$numberInt", "$numberLong"):
            try:
                value = float(inner)
            except (TypeError, ValueError):
                raise ValueError(f"{key} holds {inner!r}, not a number") from None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"expected a number, got {type(value).__name__}")
    try:
        amount = float(value)
    except OverflowError:
        raise ValueError("number too large") from None
    if not math.isfinite(amount):
        raise ValueError(f"must be finite, got {amount}")
    if amount < 0:
        raise ValueError(f"must be >= 0, got {amount}")
    if amount > MAX_AMOUNT:
        raise ValueError(f"{amount:g} is larger than {MAX_AMOUNT:g}")
    return amount


def check_string(value: Any) -> str:
    """Return a valid non-empty string of at most MAX_STRING_LENGTH characters."""
    if not isinstance(value, str):
        raise ValueError(f"expected a string, got {type(value).__name__}")
    if not value:
        raise ValueError("must not be empty")
    if len(value) > MAX_STRING_LENGTH:
        raise ValueError(f"longer than {MAX_STRING_LENGTH} characters")
    return value


def parse_record(raw: Any, index: int | None = None) -> dict[str, Any]:
    """Validate and flatten one raw record; raise :class:`RecordError` listing every bad field."""
    if not isinstance(raw, dict):
        raise RecordError(index, None, [FieldError("$", f"expected a JSON object, got "
                                                        f"{type(raw).__name__}")])
    errors: list[FieldError] = []
    flat: dict[str, Any] = dict.fromkeys(FLAT_COLUMNS)
    extra: dict[str, Any] = {}
    tid = raw.get("transactionId")
    for key, value in raw.items():
        if key in _TOP_LEVEL:
            if value is None and key != "transactionId":
                continue
            try:
                flat[_TOP_LEVEL[key]] = check_string(value)
            except ValueError as exc:
                errors.append(FieldError(key, str(exc)))
        elif key == "timestamp":
            try:
                flat["timestamp"] = parse_timestamp(value)
            except ValueError as exc:
                errors.append(FieldError(key, str(exc)))
        elif key in _NESTED:
            _parse_nested(key, value, flat, extra, errors)
        else:
            extra[key] = value
    if "transactionId" not in raw:
        errors.append(FieldError("transactionId", "required"))
    if "timestamp" not in raw:
        errors.append(FieldError("timestamp", "required"))
    has_amount = flat["origin_amount"] is not None or flat["destination_amount"] is not None
    if not has_amount and not any(e.field.endswith("transactionAmount") for e in errors):
        errors.append(FieldError("originAmountDetails.transactionAmount",
                                 "at least one of originAmountDetails / destinationAmountDetails "
                                 "with a transactionAmount is required"))
    if errors:
        raise RecordError(index, tid if isinstance(tid, str) else None, errors)
    flat[EXTRA_COLUMN] = orjson.dumps(extra).decode() if extra else None
    return flat


def _parse_nested(key: str, value: Any, flat: dict[str, Any], extra: dict[str, Any],
                  errors: list[FieldError]) -> None:
    if value is None:
        return
    if not isinstance(value, dict):
        errors.append(FieldError(key, f"expected an object, got {type(value).__name__}"))
        return
    subs = _NESTED[key]
    rest: dict[str, Any] = {}
    for sub, sub_value in value.items():
        column = subs.get(sub)
        if column is None:
            rest[sub] = sub_value
            continue
        if sub_value is None:
            continue
        try:
            if column in AMOUNT_COLUMNS:
                flat[column] = check_amount(sub_value)
            else:
                flat[column] = check_string(sub_value)
        except ValueError as exc:
            errors.append(FieldError(f"{key}.{sub}", str(exc)))
    if "AmountDetails" in key and "transactionAmount" not in value:
        errors.append(FieldError(f"{key}.transactionAmount", "required when " + key + " is given"))
    if rest:
        extra[key] = rest


def to_raw(flat: Mapping[str, Any]) -> dict[str, Any]:
    """Rebuild the raw camelCase record from a flat one (inverse of :func:`parse_record`).

    >>> raw = {"transactionId": "t1", "timestamp": 5, "originUserId": "u",
    ...        "originAmountDetails": {"transactionAmount": 2.0, "transactionCurrency": "EUR"}}
    >>> to_raw(parse_record(raw)) == raw
    True
    """
    raw: dict[str, Any] = {}
    for raw_key, column in _TOP_LEVEL.items():
        if flat.get(column) is not None:
            raw[raw_key] = flat[column]
    raw["timestamp"] = flat["timestamp"]
    extra = orjson.loads(flat[EXTRA_COLUMN]) if flat.get(EXTRA_COLUMN) else {}
    for obj, subs in _NESTED.items():
        inner = {sub: flat[col] for sub, col in subs.items() if flat.get(col) is not None}
        inner.update(extra.pop(obj, {}) or {})
        if inner:
            raw[obj] = inner
    raw.update(extra)
    return raw
