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
#: Levels of objects and arrays a record may nest, itself the first. Unknown fields are kept
#: as JSON, and orjson writes at most 254 levels (it reads 1,024); the stored record and the
#: answers that carry it add a few, so the rule leaves ample spare.
MAX_DEPTH = 128
_ORJSON_DEPTH = 254  # measured (orjson 3.x): 254 nested arrays are written, 255 are refused
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
    flat[EXTRA_COLUMN] = _encode_extra(extra, raw, index) if extra else None
    return flat


def _encode_extra(extra: dict[str, Any], raw: dict[str, Any], index: int | None) -> str:
    """The unknown fields as JSON text, if they nest at most :data:`MAX_DEPTH` levels."""
    try:
        encoded = orjson.dumps(extra)
    except orjson.JSONEncodeError:
        encoded = b""
    # Nesting d levels takes at least 2d bytes: short text (most records) is within the limit.
    if not encoded or (len(encoded) > 2 * MAX_DEPTH and not _within_depth(extra)):
        tid = raw.get("transactionId")
        raise RecordError(index, tid if isinstance(tid, str) else None, [_unstorable(extra)])
    return encoded.decode()


def _within_depth(value: Any) -> bool:
    """``value`` nests at most MAX_DEPTH levels: orjson's own limit, with the spare levels
    taken up by wrappers (one C pass instead of a walk in Python)."""
    for _ in range(_ORJSON_DEPTH - MAX_DEPTH):
        value = [value]
    try:
        orjson.dumps(value)
    except orjson.JSONEncodeError:
        return False
    return True


def _unstorable(extra: dict[str, Any]) -> FieldError:
    """The first unknown field that nests too deeply or is not JSON (an error path only).

    Each field is checked at the depth it has in the record, under its raw path.
    """
    for key, value in extra.items():
        nested = key in NESTED_FIELDS and isinstance(value, dict)
        for path, alone in ([(f"{key}.{sub}", {key: {sub: v}}) for sub, v in value.items()]
                            if nested else [(key, {key: value})]):
            if not _within_depth(alone):
                return FieldError(path, f"nests deeper than {MAX_DEPTH} levels of objects "
                                        "and arrays")
            try:
                orjson.dumps(alone)
            except orjson.JSONEncodeError as exc:
                return FieldError(path, f"cannot be stored as JSON ({exc})")
    return FieldError("$", "cannot be stored as JSON")


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
