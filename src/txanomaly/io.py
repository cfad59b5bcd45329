"""Read transactions from .json (array or lines), .jsonl, .csv and .parquet files.

Every reader yields the same thing: a Polars frame of flat records (:data:`FLAT_COLUMNS` +
``extra``) in input order, the rejected records with their reasons, and the number of exact
repeats dropped. Nothing valid is dropped and nothing is invented:

- a record that fails validation is rejected with every reason, naming its index, its
  transactionId and the field;
- a repeated transactionId with the same content is counted once; with different content the
  later record is rejected (the first one wins).

Large JSON arrays are streamed (ijson) and converted to columns chunk by chunk, so memory stays
a small multiple of the file size.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import ijson
import orjson
import polars as pl

from txanomaly.errors import FieldError, InputFormatError, RecordError
from txanomaly.schema import (
    AMOUNT_COLUMNS,
    CATEGORICAL_COLUMNS,
    EXTRA_COLUMN,
    FLAT_COLUMNS,
    MAX_AMOUNT,
    MAX_STRING_LENGTH,
    MAX_TIMESTAMP_MS,
    MIN_TIMESTAMP_MS,
    STRING_COLUMNS,
    parse_record,
    parse_timestamp,
)

log = logging.getLogger(__name__)

#: Polars dtypes of the flat frame.
FLAT_SCHEMA: dict[str, Any] = {
    **{c: pl.String for c in FLAT_COLUMNS},
    "timestamp": pl.Int64,
    "origin_amount": pl.Float64,
    "destination_amount": pl.Float64,
    EXTRA_COLUMN: pl.String,
}
SUPPORTED = (".json", ".jsonl", ".ndjson", ".csv", ".parquet")
_CHUNK = 65_536


@dataclass(frozen=True)
class Rejected:
    """A record that was not accepted, with every reason."""

    index: int
    transaction_id: str | None
    errors: list[FieldError]
    record: Any

    def to_json(self) -> dict[str, Any]:
        return {"index": self.index, "transactionId": self.transaction_id,
                "errors": [{"field": e.field, "message": e.message} for e in self.errors],
                "record": self.record}


@dataclass
class ReadResult:
    """What a reader returns: the valid records, the rejected ones and the repeats dropped."""

    frame: pl.DataFrame
    rejects: list[Rejected] = field(default_factory=list)
    exact_duplicates: int = 0

    @property
    def n_records(self) -> int:
        """Records in the input: accepted + rejected + exact repeats."""
        return self.frame.height + len(self.rejects) + self.exact_duplicates


def empty_frame() -> pl.DataFrame:
    return pl.DataFrame(schema=FLAT_SCHEMA)


def read_transactions(path: str | Path) -> pl.DataFrame:
    """Read a file of transactions; raise :class:`RecordError` on the first invalid record.

    Use :func:`load_transactions` to collect rejects instead of failing.
    """
    result = load_transactions(path)
    if result.rejects:
        first = result.rejects[0]
        raise RecordError(first.index, first.transaction_id, first.errors)
    return result.frame


def load_transactions(path: str | Path, columns: Sequence[str] | None = None,
                      categorical: bool = False) -> ReadResult:
    """Read a file of transactions, collecting invalid records as rejects.

    ``columns``: keep only these flat columns (``transaction_id`` is always kept). Every
    record is still validated whole; from a CSV or Parquet file the other columns are checked
    in a streaming pass and never held in memory (``txanomaly features`` reads only what its
    feature set needs).

    ``categorical``: return the text columns other than ``transaction_id`` and ``extra``
    (user ids, countries, currencies, ...) as ``pl.Categorical``: 4 bytes a row instead of 16
    or more, and the feature engine groups users on the codes as they are. The values are
    the same strings.
    """
    path = Path(path)
    if not path.exists():
        raise InputFormatError(f"{path}: no such file")
    suffix = path.suffix.lower()
    if suffix not in SUPPORTED:
        raise InputFormatError(f"{path}: unsupported extension {suffix!r}; expected one of "
                               f"{', '.join(SUPPORTED)}")
    keep = None if columns is None else _kept_columns(columns)
    if suffix in (".csv", ".parquet"):
        frame, rejects = _read_table(path, suffix, keep, categorical)
    else:
        with path.open("rb") as fh:
            frame, rejects = records_to_frame(_iter_json(fh, path, lines=suffix != ".json"))
    if keep is None:
        result = deduplicate(frame, rejects)
    elif _has_repeats(frame):  # telling exact repeats from conflicting ones needs every column
        result = load_transactions(path)
        result.frame = result.frame.select(keep)
    else:
        if frame.columns != [*keep, "_index"]:  # JSON: every column was parsed
            frame = frame.select(*keep, "_index")
        frame.drop_in_place("_index")
        result = ReadResult(frame, sorted(rejects, key=lambda r: r.index), 0)
    if categorical:  # a no-op for columns the streaming read already made categorical
        result.frame = result.frame.with_columns(
            pl.col(c).cast(pl.Categorical) for c in CATEGORICAL_COLUMNS if c in result.frame)
    return result


def _kept_columns(columns: Sequence[str]) -> list[str]:
    unknown = [c for c in columns if c not in FLAT_SCHEMA]
    if unknown:
        raise InputFormatError(f"unknown column(s) {', '.join(unknown)}; the flat columns are "
                               f"{', '.join([*FLAT_COLUMNS, EXTRA_COLUMN])}")
    return ["transaction_id", *[c for c in dict.fromkeys(columns) if c != "transaction_id"]]


def records_to_frame(records: Iterable[tuple[int, Any]]) -> tuple[pl.DataFrame, list[Rejected]]:
    """Validate raw (index, record) pairs into a flat frame with an ``_index`` column."""
    columns: dict[str, list[Any]] = {c: [] for c in (*FLAT_COLUMNS, EXTRA_COLUMN)}
    indexes: list[int] = []
    chunks: list[pl.DataFrame] = []
    rejects: list[Rejected] = []
    for index, raw in records:
        if isinstance(raw, _Unparseable):
            rejects.append(Rejected(index, None, [FieldError("$", f"invalid JSON: {raw.message}")],
                                    raw.text))
            continue
        try:
            flat = parse_record(raw, index)
        except RecordError as exc:
            rejects.append(Rejected(index, exc.transaction_id, exc.errors, raw))
            continue
        for name, values in columns.items():
            values.append(flat[name])
        indexes.append(index)
        if len(indexes) >= _CHUNK:
            chunks.append(_columns_to_frame(columns, indexes))
    if indexes or not chunks:
        chunks.append(_columns_to_frame(columns, indexes))
    return pl.concat(chunks, how="vertical"), rejects


def _columns_to_frame(columns: dict[str, list[Any]], indexes: list[int]) -> pl.DataFrame:
    frame = pl.DataFrame({**columns, "_index": indexes},
                         schema={**FLAT_SCHEMA, "_index": pl.Int64})
    for values in columns.values():
        values.clear()
    indexes.clear()
    return frame


def _iter_json(fh: IO[bytes], path: Path, lines: bool) -> Iterator[tuple[int, Any]]:
    head = fh.read(4096).lstrip()
    fh.seek(0)
    if not head:
        return
    if head[:1] == b"[" and not lines:
        yield from _iter_json_array(fh, path)
    elif head[:1] in (b"{", b"[") or lines:
        yield from _iter_json_lines(fh)
    else:
        raise InputFormatError(f"{path}: not JSON (expected a JSON array or one object per line)")


def _iter_json_array(fh: IO[bytes], path: Path) -> Iterator[tuple[int, Any]]:
    index = -1
    try:
        for index, raw in enumerate(ijson.items(fh, "item", use_float=True)):
            yield index, raw
    except ijson.JSONError as exc:
        raise InputFormatError(f"{path}: invalid JSON after record {index}: {exc}") from None


def _iter_json_lines(fh: IO[bytes]) -> Iterator[tuple[int, Any]]:
    index = 0
    for line in fh:
        if not line.strip():
            continue
        try:
            raw = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            text = line.decode("utf-8", "replace").rstrip("\n")
            yield index, _Unparseable(text, str(exc))
        else:
            yield index, raw
        index += 1


@dataclass(frozen=True)
class _Unparseable:
    """A JSON line that did not parse: rejected with the parser's message, text kept."""

    text: str
    message: str


# --- flat tables -----------------------------------------------------------------------------

def _read_table(path: Path, suffix: str, columns: list[str] | None, categorical: bool
                ) -> tuple[pl.DataFrame, list[Rejected]]:
    try:
        raw = pl.scan_csv(path, infer_schema=False) if suffix == ".csv" else pl.scan_parquet(path)
        raw.collect_schema()
    except (pl.exceptions.PolarsError, OSError) as exc:
        raise InputFormatError(f"{path}: cannot read {suffix[1:]}: {exc}") from None
    try:
        return validate_flat(raw, str(path), columns, categorical)
    except (pl.exceptions.ComputeError, OSError) as exc:  # a corrupt file shows when read
        raise InputFormatError(f"{path}: cannot read {suffix[1:]}: {exc}") from None


def validate_flat(raw: pl.DataFrame | pl.LazyFrame, source: str = "table",
                  columns: list[str] | None = None, categorical: bool = False
                  ) -> tuple[pl.DataFrame, list[Rejected]]:
    """Validate a flat (snake_case) table; fast vectorised checks, per-row reasons on failure.

    Every column is checked, but only ``columns`` (default: all flat columns and ``extra``)
    are kept. A lazy ``raw`` (a scanned file) is checked in one streaming pass, so a column
    that is checked but not kept is never held in memory whole; with ``categorical``, the
    kept :data:`CATEGORICAL_COLUMNS` are held as categoricals, never as text.
    """
    lazy = raw.lazy()
    schema = lazy.collect_schema()
    missing = [c for c in ("transaction_id", "timestamp") if c not in schema]
    if missing or not any(c in schema for c in AMOUNT_COLUMNS):
        need = missing or ["origin_amount or destination_amount"]
        raise InputFormatError(f"{source}: missing column(s) {', '.join(need)}; a flat table "
                               f"needs the snake_case columns {', '.join(FLAT_COLUMNS)}")
    keep = list(columns) if columns is not None else [*FLAT_COLUMNS, EXTRA_COLUMN]
    unknown = [c for c in schema if c not in FLAT_SCHEMA]
    indexed = lazy.with_row_index("_index").with_columns(pl.col("_index").cast(pl.Int64))
    values = {c: _coerce(schema, c) for c in FLAT_COLUMNS}
    values[EXTRA_COLUMN] = _extra_expr(schema, unknown)
    kept = {c: values[c].cast(pl.Categorical) if categorical and c in CATEGORICAL_COLUMNS
            else values[c] for c in keep}
    table = indexed.select(
        "_index", *[kept[c].alias(c) for c in keep],
        _invalid(values, schema).alias("_bad"),
    ).collect(engine="streaming" if isinstance(raw, pl.LazyFrame) else "auto")
    bad = table.get_column("_bad")
    if not bad.any():
        table.drop_in_place("_bad")
        return table.select(*keep, "_index"), []
    good = table.filter(~bad).drop("_bad")
    bad_index = table.get_column("_index").filter(bad)
    rows = indexed.filter(pl.col("_index").is_in(bad_index.implode())).collect()
    rejects: list[Rejected] = []
    fixed: list[dict[str, Any]] = []
    for row in rows.iter_rows(named=True):
        index = int(row.pop("_index"))
        try:
            record = _check_flat_row(row, index, unknown)
        except RecordError as exc:
            rejects.append(Rejected(index, exc.transaction_id, exc.errors, _jsonable(row)))
        else:
            fixed.append({**{c: record[c] for c in keep}, "_index": index})
    if fixed:
        good = pl.concat([good, pl.DataFrame(fixed, schema=good.schema)]).sort("_index")
    return good.select(*keep, "_index"), rejects


def _coerce(schema: pl.Schema, column: str) -> pl.Expr:
    dtype = FLAT_SCHEMA[column]
    if column not in schema:
        return pl.lit(None, dtype=dtype)
    expr = pl.col(column)
    if dtype == pl.String:
        expr = expr.cast(pl.String, strict=False)
        return pl.when(expr == "").then(None).otherwise(expr)
    return expr.cast(dtype, strict=False)


def _extra_expr(schema: pl.Schema, unknown: list[str]) -> pl.Expr:
    if not unknown:
        if EXTRA_COLUMN in schema:
            return pl.col(EXTRA_COLUMN).cast(pl.String, strict=False)
        return pl.lit(None, dtype=pl.String)
    if EXTRA_COLUMN in schema:
        unknown = [*unknown, EXTRA_COLUMN]
    return pl.struct(unknown).struct.json_encode()


def _invalid(values: dict[str, pl.Expr], schema: pl.Schema) -> pl.Expr:
    """True for rows the fast path cannot accept as they are (they go through the slow path)."""
    checks = [
        values["transaction_id"].is_null(),
        values["timestamp"].is_null(),
        ~values["timestamp"].is_between(MIN_TIMESTAMP_MS, MAX_TIMESTAMP_MS - 1),
        values["origin_amount"].is_null() & values["destination_amount"].is_null(),
    ]
    for c in AMOUNT_COLUMNS:
        amount = values[c]
        checks.append(amount.is_not_null() & ~(amount.is_finite() & amount.is_between(0.0,
                                                                                 MAX_AMOUNT)))
    for c in STRING_COLUMNS:  # bytes >= characters: a cheap bound, exact on the slow path
        checks.append(values[c].str.len_bytes() > MAX_STRING_LENGTH)
    # A value that was there but did not convert (e.g. "abc" as an amount) is an error too.
    for c in ("timestamp", *AMOUNT_COLUMNS):
        if c in schema and schema[c] != FLAT_SCHEMA[c]:
            original = pl.col(c)
            if schema[c] == pl.String:
                original = original.replace("", None)
            checks.append(original.is_not_null() & values[c].is_null())
    # A check that is null (a comparison with a missing value) is not a failure.
    return pl.any_horizontal(*(c.fill_null(False) for c in checks))


def _check_flat_row(row: dict[str, Any], index: int, unknown: list[str]) -> dict[str, Any]:
    """Slow path for one flat row: accept it (e.g. an ISO timestamp) or name every bad field."""
    errors: list[FieldError] = []
    out: dict[str, Any] = {}
    tid = row.get("transaction_id")
    for column in FLAT_COLUMNS:
        value = row.get(column)
        if value is None or value == "":
            out[column] = None
            continue
        try:
            out[column] = _check_flat_value(column, value)
        except ValueError as exc:
            out[column] = None
            errors.append(FieldError(column, str(exc)))
    for column in ("transaction_id", "timestamp"):
        if out[column] is None and not any(e.field == column for e in errors):
            errors.append(FieldError(column, "required"))
    if out["origin_amount"] is None and out["destination_amount"] is None and not any(
            e.field in AMOUNT_COLUMNS for e in errors):
        errors.append(FieldError("destination_amount",
                                 "at least one of origin_amount / destination_amount is required"))
    if errors:
        raise RecordError(index, tid if isinstance(tid, str) else None, errors)
    extra = {c: row[c] for c in unknown if row.get(c) is not None}
    out[EXTRA_COLUMN] = orjson.dumps(extra, default=str).decode() if extra else None
    return out


def _check_flat_value(column: str, value: Any) -> Any:
    from txanomaly.schema import check_amount, check_string

    if column == "timestamp":
        return parse_timestamp(value)
    if column in AMOUNT_COLUMNS:
        if isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                raise ValueError(f"expected a number, got {value[:32]!r}") from None
        return check_amount(value)
    return check_string(str(value) if isinstance(value, int | float) else value)


def _jsonable(row: dict[str, Any]) -> dict[str, Any]:
    return orjson.loads(orjson.dumps(row, default=str, option=orjson.OPT_SERIALIZE_NUMPY))


# --- duplicates ------------------------------------------------------------------------------

def _has_repeats(frame: pl.DataFrame) -> bool:
    """Whether a transactionId may repeat. Distinct hashes prove distinct ids (3x cheaper in
    time and memory than n_unique on the strings); a collision takes the exact path."""
    return frame.height > 0 and frame.get_column("transaction_id").hash(
        seed=0).n_unique() != frame.height


def deduplicate(frame: pl.DataFrame, rejects: list[Rejected]) -> ReadResult:
    """Drop exact repeats of a transactionId; reject repeats with different content."""
    if not _has_repeats(frame):
        # In place: drop()/select() would re-align the chunks, copying the whole frame.
        frame.drop_in_place("_index")
        return ReadResult(frame, sorted(rejects, key=lambda r: r.index), 0)
    content = pl.struct([*FLAT_COLUMNS, EXTRA_COLUMN]).hash(seed=0)
    tagged = frame.with_columns(
        _hash=content,
        _first=pl.col("_index").first().over("transaction_id"),
        _first_hash=content.first().over("transaction_id"),
    )
    repeat = pl.col("_index") != pl.col("_first")
    exact = tagged.filter(repeat & (pl.col("_hash") == pl.col("_first_hash"))).height
    conflicting = tagged.filter(repeat & (pl.col("_hash") != pl.col("_first_hash")))
    for row in conflicting.iter_rows(named=True):
        error = FieldError("transactionId", "duplicate transactionId with different content; "
                                            f"record {row['_first']} was kept")
        record = {k: row[k] for k in (*FLAT_COLUMNS, EXTRA_COLUMN)}
        rejects.append(Rejected(row["_index"], row["transaction_id"], [error], record))
    kept = tagged.filter(~repeat).select(*FLAT_COLUMNS, EXTRA_COLUMN)
    if exact:
        log.info("dropped %d exact repeat(s) of a transactionId", exact)
    return ReadResult(kept, sorted(rejects, key=lambda r: r.index), exact)


def write_rejects(path: str | Path, rejects: list[Rejected]) -> Path:
    """Write rejected records, one JSON object per line: index, transactionId, errors, record."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as fh:
        for rej in rejects:
            fh.write(orjson.dumps(rej.to_json(), default=str) + b"\n")
    return path


def write_table(frame: pl.DataFrame, path: str | Path) -> Path:
    """Write a frame as .parquet, .csv or .jsonl (by extension)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    writers: dict[str, Callable[[Path], None]] = {
        ".parquet": frame.write_parquet, ".csv": frame.write_csv, ".jsonl": frame.write_ndjson,
    }
    suffix = path.suffix.lower()
    if suffix not in writers:
        raise InputFormatError(f"{path}: unsupported output extension {suffix!r}; expected one "
                               f"of {', '.join(writers)}")
    writers[suffix](path)
    return path
