"""Flat tables (CSV, Parquet): the snake_case columns of the flat record, one row a record.

Reading validates every column in one streaming pass: the rules' vectorised form
(:func:`txanomaly.schema.bulk_check`) finds the rows that may break a rule, and only those go
through the per-row parser (:func:`txanomaly.schema.parse_flat_row`), which accepts them (an
ISO timestamp, say) or names every bad column. Columns that are not flat columns are kept, as
a JSON object, in ``extra``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import polars as pl

from txanomaly.errors import InputFormatError, RecordError
from txanomaly.io.result import Rejected
from txanomaly.schema import (
    AMOUNT_COLUMNS,
    CATEGORICAL_COLUMNS,
    EXTRA_COLUMN,
    FLAT_COLUMNS,
    FLAT_SCHEMA,
    RAW_PATHS,
    REQUIRED_COLUMNS,
    bulk_check,
    parse_flat_row,
)

_Frame = pl.DataFrame | pl.LazyFrame


def read_csv(path: Path, columns: list[str] | None = None, categorical: bool = False
             ) -> tuple[pl.DataFrame, list[Rejected]]:
    """Read and validate a CSV file (a header row; every cell read as text)."""
    return _read(path, "CSV", lambda: pl.scan_csv(path, infer_schema=False), columns,
                 categorical)


def read_parquet(path: Path, columns: list[str] | None = None, categorical: bool = False
                 ) -> tuple[pl.DataFrame, list[Rejected]]:
    """Read and validate a Parquet file."""
    return _read(path, "Parquet", lambda: pl.scan_parquet(path), columns, categorical)


def _read(path: Path, kind: str, scan: Callable[[], pl.LazyFrame], columns: list[str] | None,
          categorical: bool) -> tuple[pl.DataFrame, list[Rejected]]:
    try:
        raw = scan()
        raw.collect_schema()
    except (pl.exceptions.PolarsError, OSError) as exc:
        raise InputFormatError(f"{path}: cannot read {kind}: {exc}") from None
    try:
        return validate_flat(raw, str(path), columns, categorical)
    except (pl.exceptions.ComputeError, OSError) as exc:  # a corrupt file shows when read
        raise InputFormatError(f"{path}: cannot read {kind}: {exc}") from None


def write_csv(frame: pl.DataFrame, path: Path, number_long: np.ndarray | None = None) -> None:
    """Write the flat columns as CSV (``number_long`` is for JSON: a table's are integers)."""
    _flat_table(frame).write_csv(path)


def write_parquet(frame: pl.DataFrame, path: Path,
                  number_long: np.ndarray | None = None) -> None:
    """Write the flat columns as Parquet (``number_long``: as :func:`write_csv`)."""
    _flat_table(frame).write_parquet(path)


def _flat_table(frame: pl.DataFrame) -> pl.DataFrame:
    """The flat columns in order, and ``extra`` only when some record has extra fields."""
    keep = [c for c in FLAT_COLUMNS if c in frame.columns]
    if EXTRA_COLUMN in frame.columns and frame[EXTRA_COLUMN].null_count() < frame.height:
        keep.append(EXTRA_COLUMN)
    return frame.select(keep)


def validate_flat(raw: _Frame, source: str = "table", columns: list[str] | None = None,
                  categorical: bool = False, compiled: bool = False
                  ) -> tuple[pl.DataFrame, list[Rejected]]:
    """Validate a flat (snake_case) table; fast vectorised checks, per-row reasons on failure.

    Every column is checked, but only ``columns`` (default: all flat columns and ``extra``)
    are kept, followed by ``_index`` (the row's position). A lazy ``raw`` (a scanned file) is
    checked in one streaming pass, so a column that is checked but not kept is never held in
    memory whole; with ``categorical``, the kept :data:`CATEGORICAL_COLUMNS` are held as
    categoricals, never as text. ``compiled``: NUL characters are looked for by Numba
    (:mod:`txanomaly.io.nul_scan`: all text columns in one pass, a third of the time; the same
    rows), for a caller that loads Numba anyway.
    """
    lazy = raw.lazy()
    schema = lazy.collect_schema()
    _check_columns(schema, source)
    keep = list(columns) if columns is not None else [*FLAT_COLUMNS, EXTRA_COLUMN]
    indexed = lazy.with_row_index("_index").with_columns(pl.col("_index").cast(pl.Int64))
    values = {c: _coerce(schema, c) for c in FLAT_COLUMNS}
    values[EXTRA_COLUMN] = _extra_expr(schema)
    kept = {c: values[c].cast(pl.Categorical) if categorical and c in CATEGORICAL_COLUMNS
            else values[c] for c in keep}
    nul = None
    if compiled:
        from txanomaly.io.nul_scan import nul_rows

        # A text column's own cells (an empty one, null in ``values``, holds no NUL either).
        nul = nul_rows([pl.col(c) if schema[c] == pl.String else values[c]
                        for c in FLAT_COLUMNS if c in schema and FLAT_SCHEMA[c] == pl.String])
    suspect = bulk_check(values, nul) | _unconverted(schema, values)
    table = indexed.select(
        "_index", *[kept[c].alias(c) for c in keep], suspect.alias("_bad"),
    ).collect(engine="streaming" if isinstance(raw, pl.LazyFrame) else "auto")
    bad = table.drop_in_place("_bad")
    if not bad.any():
        return table.select(*keep, "_index"), []
    good = table.filter(~bad)
    rows = indexed.filter(pl.col("_index").is_in(table.get_column("_index").filter(bad)
                                                  .implode()))
    rejects, fixed = _check_rows(rows.select(pl.all(), values[EXTRA_COLUMN].alias("_extra"))
                                 .collect(), keep)
    if fixed:
        good = pl.concat([good, pl.DataFrame(fixed, schema=good.schema)]).sort("_index")
    return good.select(*keep, "_index"), rejects


def _check_columns(schema: pl.Schema, source: str) -> None:
    """Refuse a table without the required columns, saying which are required and missing."""
    missing = [c for c in REQUIRED_COLUMNS if c not in schema]
    if not any(c in schema for c in AMOUNT_COLUMNS):
        missing.append(" or ".join(AMOUNT_COLUMNS))
    if not missing:
        return
    camel = [c for c in schema if c in RAW_PATHS.values() and c not in FLAT_SCHEMA]
    hint = (f" (it has camelCase column(s) {', '.join(camel[:3])}: flat tables use the "
            "snake_case names)" if camel else "")
    raise InputFormatError(
        f"{source}: missing required column(s) {', '.join(missing)}{hint}; a flat table needs "
        f"{', '.join(REQUIRED_COLUMNS)} and at least one of {' / '.join(AMOUNT_COLUMNS)}; the "
        "other flat columns are optional and any other column is kept in extra")


def _coerce(schema: pl.Schema, column: str) -> pl.Expr:
    dtype = FLAT_SCHEMA[column]
    if column not in schema:
        return pl.lit(None, dtype=dtype)
    expr = pl.col(column)
    if dtype == pl.String:
        expr = expr.cast(pl.String, strict=False)
        return pl.when(expr == "").then(None).otherwise(expr)
    return expr.cast(dtype, strict=False)


def _extra_expr(schema: pl.Schema) -> pl.Expr:
    unknown = [c for c in schema if c not in FLAT_SCHEMA]
    if not unknown:
        if EXTRA_COLUMN in schema:
            return pl.col(EXTRA_COLUMN).cast(pl.String, strict=False)
        return pl.lit(None, dtype=pl.String)
    if EXTRA_COLUMN in schema:
        unknown = [*unknown, EXTRA_COLUMN]
    return pl.struct(unknown).struct.json_encode()


def _unconverted(schema: pl.Schema, values: dict[str, pl.Expr]) -> pl.Expr:
    """True where a cell held something that did not convert to its column's type (an
    amount of "abc", an ISO timestamp): the per-row parser decides."""
    checks = [pl.lit(False)]
    for c in ("timestamp", *AMOUNT_COLUMNS):
        if c in schema and schema[c] != FLAT_SCHEMA[c]:
            original = pl.col(c)
            if schema[c] == pl.String:
                original = original.replace("", None)
            checks.append(original.is_not_null() & values[c].is_null())
    return pl.any_horizontal(checks)


def _check_rows(rows: pl.DataFrame, keep: list[str]
                ) -> tuple[list[Rejected], list[dict[str, Any]]]:
    """The per-row parser over the suspect rows: the rejects, and the rows it accepts."""
    rejects: list[Rejected] = []
    fixed: list[dict[str, Any]] = []
    for row in rows.iter_rows(named=True):
        index, extra = int(row.pop("_index")), row.pop("_extra")
        try:
            flat = parse_flat_row(row, index)
        except RecordError as exc:
            rejects.append(Rejected(index, exc.transaction_id, exc.errors, _jsonable(row)))
        else:
            flat[EXTRA_COLUMN] = extra
            fixed.append({**{c: flat[c] for c in keep}, "_index": index})
    return rejects, fixed


def _jsonable(row: dict[str, Any]) -> dict[str, Any]:
    return orjson.loads(orjson.dumps(row, default=str, option=orjson.OPT_SERIALIZE_NUMPY))
