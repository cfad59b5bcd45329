"""One record through the rules: a raw (JSON) record, a flat table's row, and back to raw."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import orjson

from txanomaly.errors import FieldError, RecordError
from txanomaly.schema.columns import (
    EXTRA_COLUMN,
    FLAT_COLUMNS,
    NESTED_FIELDS,
    RAW_PATHS,
    TOP_LEVEL_FIELDS,
)
from txanomaly.schema.rules import RULES, check_required

_Check = tuple[str, Callable[[Any], Any]]  # (flat column, the rule's check)
# The rules looked up by raw field once, not per value: this loop runs per record.
_SCALAR_CHECKS: dict[str, _Check] = {
    raw: (column, RULES[column].check)
    for raw, column in {**TOP_LEVEL_FIELDS, "timestamp": "timestamp"}.items()}
_NESTED_CHECKS: dict[str, dict[str, _Check]] = {
    obj: {sub: (column, RULES[column].check) for sub, column in subs.items()}
    for obj, subs in NESTED_FIELDS.items()}
_raw_path = RAW_PATHS.__getitem__
# The order the JSON writer uses too: transactionId, timestamp, then the other scalars.
_TOP_LEVEL_ORDER = [(RAW_PATHS[c], c) for c in FLAT_COLUMNS if "." not in RAW_PATHS[c]]


def parse_record(raw: Any, index: int | None = None) -> dict[str, Any]:
    """Validate and flatten one raw record; raise :class:`RecordError` listing every bad field.

    A null or empty ("") field is a missing one, as an empty cell is in a CSV. Fields are
    named by their raw path (``originAmountDetails.transactionAmount``).

    >>> parse_record({"transactionId": "t1", "timestamp": 5,
    ...               "originAmountDetails": {"transactionAmount": -1}}, index=3)
    Traceback (most recent call last):
    ...
    txanomaly.errors.RecordError: record 3 (transactionId='t1'): origin...: must be >= 0...
    """
    if not isinstance(raw, dict):
        raise RecordError(index, None, [FieldError("$", f"expected a JSON object, got "
                                                        f"{type(raw).__name__}")])
    errors: list[FieldError] = []
    flat: dict[str, Any] = dict.fromkeys(FLAT_COLUMNS)
    extra: dict[str, Any] = {}
    for key, value in raw.items():
        scalar = _SCALAR_CHECKS.get(key)
        if scalar is None:
            if key in _NESTED_CHECKS:
                _parse_nested(key, value, flat, extra, errors)
            else:
                extra[key] = value
            continue
        if value is None or value == "":
            continue
        column, check = scalar
        try:
            flat[column] = check(value)
        except ValueError as exc:
            errors.append(FieldError(key, str(exc)))
    check_required(flat, errors, _raw_path)
    if errors:
        tid = raw.get("transactionId")
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
    checks = _NESTED_CHECKS[key]
    rest: dict[str, Any] = {}
    for sub, sub_value in value.items():
        known = checks.get(sub)
        if known is None:
            rest[sub] = sub_value
        elif sub_value is not None and sub_value != "":
            column, check = known
            try:
                flat[column] = check(sub_value)
            except ValueError as exc:
                errors.append(FieldError(f"{key}.{sub}", str(exc)))
    if rest:
        extra[key] = rest


def parse_flat_row(row: Mapping[str, Any], index: int | None = None) -> dict[str, Any]:
    """Validate one row of a flat table; raise :class:`RecordError` naming every bad column.

    Cells are as the table holds them (text in a CSV); an empty cell is a missing value. The
    same rules as :func:`parse_record`, with fields named by their column. Returns the flat
    columns without ``extra`` (a table's other columns, which the caller encodes).

    >>> parse_flat_row({"transaction_id": "t1", "timestamp": "2022-09-05T06:13:39.786Z",
    ...                 "origin_amount": "12.5"})["origin_amount"]
    12.5
    """
    errors: list[FieldError] = []
    flat: dict[str, Any] = dict.fromkeys(FLAT_COLUMNS)
    for column in FLAT_COLUMNS:
        value = row.get(column)
        if value is None or value == "":
            continue
        try:
            flat[column] = RULES[column].from_cell(value)
        except ValueError as exc:
            errors.append(FieldError(column, str(exc)))
    check_required(flat, errors, str)
    if errors:
        tid = row.get("transaction_id")
        raise RecordError(index, None if tid is None else str(tid), errors)
    return flat


def to_raw(flat: Mapping[str, Any]) -> dict[str, Any]:
    """Rebuild the raw camelCase record from a flat one (inverse of :func:`parse_record`).

    The ``extra`` fields come back in their order, so that parsing the result gives the same
    ``extra`` text.

    >>> raw = {"transactionId": "t1", "timestamp": 5, "originUserId": "u",
    ...        "originAmountDetails": {"transactionAmount": 2.0, "transactionCurrency": "EUR"}}
    >>> to_raw(parse_record(raw)) == raw
    True
    """
    raw: dict[str, Any] = {}
    for raw_key, column in _TOP_LEVEL_ORDER:
        if flat.get(column) is not None:
            raw[raw_key] = flat[column]
    nested = {obj: {sub: flat[col] for sub, col in subs.items() if flat.get(col) is not None}
              for obj, subs in NESTED_FIELDS.items()}
    extra = orjson.loads(flat[EXTRA_COLUMN]) if flat.get(EXTRA_COLUMN) else {}
    for key, value in extra.items():
        if key in nested and isinstance(value, dict):
            raw[key] = {**nested.pop(key), **value}
        else:
            raw[key] = value
    raw.update((obj, inner) for obj, inner in nested.items() if inner)
    return raw
