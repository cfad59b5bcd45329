"""The input rules, per field, written once: for one value, a flat table's cell, a column.

There are three kinds of field (:data:`RULES`): text (:func:`check_string`), the timestamp
(:func:`parse_timestamp`) and amounts (:func:`check_amount`). Each :class:`Rule` says how a
value is checked, how a flat table's cell is read first (a CSV holds text), and which rows of a
whole Polars column may break it. On top of them: ``transaction_id`` and ``timestamp`` are
required, and at least one amount (:func:`check_required`, :func:`bulk_check`).

>>> check_amount(12)
12.0
>>> check_string("a\\x00b")
Traceback (most recent call last):
...
ValueError: must not contain NUL characters
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import polars as pl

from txanomaly.errors import FieldError
from txanomaly.schema.columns import AMOUNT_COLUMNS, EXTRA_COLUMN, FLAT_COLUMNS, REQUIRED_COLUMNS

#: Timestamps are ms since the epoch (UTC); outside [1970, 10000) they are almost surely a
#: unit mistake or garbage, and the datetime conversions downstream could not represent them.
MIN_TIMESTAMP_MS = 0
MAX_TIMESTAMP_MS = 253_402_300_800_000  # 10000-01-01T00:00:00Z
MAX_STRING_LENGTH = 256
#: Amounts above this (1e15, more than any real payment in any currency) are rejected: they
#: are overflows or garbage and would dominate every sum they enter.
MAX_AMOUNT = 1e15

# --- one value -------------------------------------------------------------------------------

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
    if isinstance(value, bool) or value is None:
        raise ValueError(f"expected ms since epoch or an ISO-8601 string, got {value!r}")
    if isinstance(value, int):
        ms = value
    elif isinstance(value, float):
        if not math.isfinite(value) or value != int(value):
            raise ValueError(f"expected whole milliseconds, got {value!r}")
        ms = int(value)
    elif isinstance(value, str):
        ms = _timestamp_from_text(value)
    else:
        raise ValueError("expected ms since epoch or an ISO-8601 string, "
                         f"got {type(value).__name__}")
    if not MIN_TIMESTAMP_MS <= ms < MAX_TIMESTAMP_MS:
        raise ValueError(f"{ms} ms is outside 1970..9999")
    return ms


def _timestamp_from_text(value: str) -> int:
    text = value.strip()
    if text.lstrip("-").isdigit():
        return int(text)
    try:
        dt = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"cannot parse {value[:64]!r}: expected ms since epoch or ISO-8601"
                         ) from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    delta = dt - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * 1000 + delta.microseconds // 1000


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
    """Return a valid string: non-empty, at most MAX_STRING_LENGTH characters, no NUL.

    NUL is refused because PostgreSQL text cannot hold it and C-based tools cut strings there.
    """
    if not isinstance(value, str):
        raise ValueError(f"expected a string, got {type(value).__name__}")
    if not value:
        raise ValueError("must not be empty")
    if len(value) > MAX_STRING_LENGTH:
        raise ValueError(f"longer than {MAX_STRING_LENGTH} characters")
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    return value


def _string_from_cell(value: Any) -> str:
    """A table column has a type: an id column of integers holds ids all the same."""
    return check_string(str(value) if isinstance(value, int | float) else value)


def _amount_from_cell(value: Any) -> float:
    """A CSV cell is text: its amount is the number the text spells."""
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            raise ValueError(f"expected a number, got {value[:32]!r}") from None
    return check_amount(value)


# --- whole columns ---------------------------------------------------------------------------

def _string_too_long(values: pl.Expr) -> pl.Expr:
    # Bytes >= characters: a cheap bound, made exact by the per-row check.
    return values.str.len_bytes() > MAX_STRING_LENGTH


def _string_breaks(values: pl.Expr) -> pl.Expr:
    # NUL is looked for in the bytes: 8 ns a value, half the time of str.contains (Polars 2.1,
    # 1M ids).
    return _string_too_long(values) | values.cast(pl.Binary).bin.contains(b"\x00")


def _timestamp_breaks(values: pl.Expr) -> pl.Expr:
    return ~values.is_between(MIN_TIMESTAMP_MS, MAX_TIMESTAMP_MS - 1)


def _amount_breaks(values: pl.Expr) -> pl.Expr:
    return ~(values.is_finite() & values.is_between(0.0, MAX_AMOUNT))


@dataclass(frozen=True)
class Rule:
    """How one kind of field is checked: a value, a flat table's cell, a whole column.

    Attributes
    ----------
    dtype : polars data type
        The flat column's type.
    check : callable
        A JSON value -> the clean value; raises ValueError with the reason.
    from_cell : callable
        A flat table's cell (text, in a CSV) -> the clean value, by the same rule.
    breaks : callable
        A column of values already cast to ``dtype`` -> True where a value may break the rule
        (a superset: :func:`parse_flat_row` decides).
    """

    dtype: type[pl.DataType]
    check: Callable[[Any], Any]
    from_cell: Callable[[Any], Any]
    breaks: Callable[[pl.Expr], pl.Expr]


TEXT = Rule(pl.String, check_string, _string_from_cell, _string_breaks)
TIMESTAMP = Rule(pl.Int64, parse_timestamp, parse_timestamp, _timestamp_breaks)
AMOUNT = Rule(pl.Float64, check_amount, _amount_from_cell, _amount_breaks)
#: Flat column -> its rule.
RULES: dict[str, Rule] = {c: TEXT for c in FLAT_COLUMNS} | {"timestamp": TIMESTAMP} | {
    c: AMOUNT for c in AMOUNT_COLUMNS}
#: Polars types of the flat frame.
FLAT_SCHEMA: dict[str, Any] = {**{c: RULES[c].dtype for c in FLAT_COLUMNS},
                               EXTRA_COLUMN: pl.String}


def bulk_check(values: Mapping[str, pl.Expr], nul: pl.Expr | None = None) -> pl.Expr:
    """True for the rows of a flat table that may break a rule (a superset).

    Only the rows it finds go through the per-row check, which decides and names the field.

    ``values`` holds an expression per flat column, already cast to its :data:`FLAT_SCHEMA`
    type (null where a cell was missing or did not convert). ``nul``: an expression true for
    the rows with a NUL in any text column (at least), found by the caller at once
    (:func:`txanomaly.io.nul_scan.nul_rows`); the text columns' own checks then leave NUL out.
    """
    checks = [_string_too_long(values[c]) if nul is not None and RULES[c] is TEXT
              else RULES[c].breaks(values[c]) for c in FLAT_COLUMNS]
    if nul is not None:
        checks.append(nul)
    checks += [values[c].is_null() for c in REQUIRED_COLUMNS]
    checks.append(pl.all_horizontal([values[c].is_null() for c in AMOUNT_COLUMNS]))
    # A check that is null (a comparison with a missing value) is not a failure.
    return pl.any_horizontal([check.fill_null(False) for check in checks])


_ID, _TIME = REQUIRED_COLUMNS
_AMOUNT_A, _AMOUNT_B = AMOUNT_COLUMNS


def check_required(flat: Mapping[str, Any], errors: list[FieldError],
                   name: Callable[[str], str]) -> None:
    """Add an error for each missing required field; ``name`` turns a column into its field."""
    if (flat[_ID] is not None and flat[_TIME] is not None
            and (flat[_AMOUNT_A] is not None or flat[_AMOUNT_B] is not None)):
        return  # the common case, without loops: this runs for every record
    failed = {e.field for e in errors}
    for column in REQUIRED_COLUMNS:
        if flat[column] is None and name(column) not in failed:
            errors.append(FieldError(name(column), "required"))
    amounts = [name(c) for c in AMOUNT_COLUMNS]
    if all(flat[c] is None for c in AMOUNT_COLUMNS) and failed.isdisjoint(amounts):
        errors.append(FieldError(amounts[0], f"at least one of {' / '.join(amounts)} is "
                                             "required"))
