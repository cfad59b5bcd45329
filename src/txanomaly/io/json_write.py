"""Writing flat records as raw (Flagright-shaped, camelCase) JSON: an array or JSON Lines.

The encoding is vectorised in Polars (about a million records a second); records that carry
``extra`` fields go through :func:`txanomaly.schema.to_raw`. What is written parses back, with
:func:`txanomaly.schema.parse_record`, to the same flat record.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import orjson
import polars as pl

from txanomaly.schema import EXTRA_COLUMN, FLAT_COLUMNS, RAW_PATHS, to_raw

#: Records encoded at a time: bounds the memory the text takes.
CHUNK_ROWS = 200_000


def write_json(frame: pl.DataFrame, path: Path, number_long: np.ndarray | None = None) -> None:
    """Write a JSON array of raw records, one per line (see :func:`raw_json_lines`)."""
    _write_lines(frame, path, number_long, as_array=True)


def write_json_lines(frame: pl.DataFrame, path: Path,
                     number_long: np.ndarray | None = None) -> None:
    """Write one raw record per line (see :func:`raw_json_lines`)."""
    _write_lines(frame, path, number_long, as_array=False)


def _write_lines(frame: pl.DataFrame, path: Path, number_long: np.ndarray | None,
                 as_array: bool) -> None:
    mask = np.zeros(frame.height, dtype=bool) if number_long is None else number_long
    with path.open("wb") as out:
        out.write(b"[\n" if as_array else b"")
        for offset in range(0, frame.height, CHUNK_ROWS):
            chunk = frame.slice(offset, CHUNK_ROWS)
            lines = raw_json_lines(chunk, mask[offset: offset + chunk.height])
            if as_array:  # a comma after every record but the last
                last = offset + chunk.height == frame.height
                lines = lines + "," if not last else pl.concat([lines.head(-1) + ",",
                                                               lines.tail(1)])
            # Polars writes the lines straight to the file; JSON text needs no CSV quoting.
            lines.to_frame().write_csv(out, include_header=False, quote_style="never")
        out.write(b"]\n" if as_array else b"")


def raw_json_lines(frame: pl.DataFrame, number_long: np.ndarray | None = None) -> pl.Series:
    """Encode each flat record as the JSON text of its raw record (as :func:`schema.to_raw`).

    ``number_long``: where True, the timestamp is written as a MongoDB export writes it,
    ``{"$numberLong": "<ms>"}``.

    >>> frame = pl.DataFrame({"transaction_id": ["t1"], "timestamp": [5],
    ...                       "origin_amount": [2.5], "origin_currency": ["EUR"]})
    >>> raw_json_lines(frame).item()
    '{"transactionId":"t1","timestamp":5,"originAmountDetails":{"transactionAmount":2.5,"transactionCurrency":"EUR"}}'
    """
    mask = np.zeros(frame.height, dtype=bool) if number_long is None else number_long
    top, nested = _raw_layout(frame.columns)
    pieces = [_json_member(raw, pl.col(column)) for raw, column in top]
    if mask.any():
        as_number_long = pl.concat_str([pl.lit('"timestamp":{"$numberLong":"'),
                                        pl.col("timestamp").cast(pl.Utf8), pl.lit('"}')])
        where = [raw for raw, _ in top].index("timestamp")
        pieces[where] = pl.when(pl.lit(pl.Series(mask))).then(as_number_long).otherwise(
            pieces[where])
    for obj, members in nested.items():
        inner = pl.concat_str([_json_member(sub, pl.col(column)) for sub, column in members],
                              separator=",", ignore_nulls=True)
        present = pl.any_horizontal([pl.col(column).is_not_null() for _, column in members])
        pieces.append(pl.when(present).then(
            pl.concat_str([pl.lit(_json_key(obj) + "{"), inner, pl.lit("}")])))
    body = pl.concat_str(pieces, separator=",", ignore_nulls=True)
    lines = frame.select(pl.concat_str([pl.lit("{"), body, pl.lit("}")]).alias("json"))
    result = lines.to_series()
    if EXTRA_COLUMN in frame.columns and frame[EXTRA_COLUMN].null_count() < frame.height:
        result = _encode_extra_rows(frame, result, mask)
    return result


def _raw_layout(columns: Sequence[str]) -> tuple[list[tuple[str, str]],
                                                 dict[str, list[tuple[str, str]]]]:
    """The raw record's shape from :data:`schema.RAW_PATHS`: top-level members, then objects."""
    top: list[tuple[str, str]] = []
    nested: dict[str, list[tuple[str, str]]] = {}
    for column in FLAT_COLUMNS:
        if column not in columns:
            continue
        obj, _, member = RAW_PATHS[column].rpartition(".")
        if obj:
            nested.setdefault(obj, []).append((member, column))
        else:
            top.append((member, column))
    return top, nested


def _json_key(name: str) -> str:
    return orjson.dumps(name).decode() + ":"


def _json_member(name: str, value: pl.Expr) -> pl.Expr:
    """``"name":<value as JSON>``, or null where the value is null (the member is left out)."""
    encoded = pl.struct(value.alias("v")).struct.json_encode()
    # '{"v":<value>}' -> '<value>': JSON encoding by Polars, escapes included.
    inner = encoded.str.slice(5, encoded.str.len_chars() - 6)
    return pl.when(value.is_not_null()).then(pl.concat_str([pl.lit(_json_key(name)), inner]))


def _encode_extra_rows(frame: pl.DataFrame, lines: pl.Series, number_long: np.ndarray) -> pl.Series:
    """Re-encode the records that carry ``extra`` fields with :func:`schema.to_raw`."""
    index = np.flatnonzero(frame[EXTRA_COLUMN].is_not_null().to_numpy())
    encoded = []
    for i, row in zip(index, frame[index].iter_rows(named=True), strict=True):
        raw = to_raw(row)
        if number_long[i]:
            raw["timestamp"] = {"$numberLong": str(row["timestamp"])}
        encoded.append(orjson.dumps(raw).decode())
    return lines.scatter(index, encoded)
