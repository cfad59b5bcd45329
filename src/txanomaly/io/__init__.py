"""Reading and writing transactions: .json (array or lines), .jsonl/.ndjson, .csv, .parquet.

Every reader yields the same thing: a Polars frame of flat records (:data:`FLAT_COLUMNS` +
``extra``) in input order, the rejected records with their reasons, and the number of exact
repeats dropped. Nothing valid is dropped and nothing is invented:

- a record that fails the input rules (:mod:`txanomaly.schema`, the same for every format and
  for the API) is rejected with every reason, naming its index, its transactionId and the
  field;
- a repeated transactionId with the same content is counted once; with different content the
  later record is rejected (the first one wins).

Every writer mirrors its reader: :func:`write_table` writes flat records that
:func:`load_transactions` reads back to the same records (JSON in the Flagright camelCase
shape, CSV and Parquet in the flat snake_case columns). :func:`write_results` writes other
tables (features, scores) as they are. The formats are a registry (:mod:`txanomaly.io.formats`).

>>> import tempfile, polars as pl
>>> frame = pl.DataFrame({"transaction_id": ["t1"], "timestamp": [1662358419786],
...                       "destination_amount": [10.0]})
>>> with tempfile.TemporaryDirectory() as folder:
...     back = read_transactions(write_table(frame, f"{folder}/tx.jsonl"))
>>> back.select(frame.columns).equals(frame)
True
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import polars as pl

from txanomaly.errors import InputFormatError, RecordError
from txanomaly.io.formats import FORMATS, SUFFIXES, Format, format_for
from txanomaly.io.json_read import records_to_frame
from txanomaly.io.json_write import raw_json_lines
from txanomaly.io.result import (
    ReadResult,
    Rejected,
    deduplicate,
    empty_frame,
    has_repeats,
    write_rejects,
)
from txanomaly.io.tables import validate_flat
from txanomaly.schema import (
    CATEGORICAL_COLUMNS,
    EXTRA_COLUMN,
    FLAT_COLUMNS,
    FLAT_SCHEMA,
    REQUIRED_COLUMNS,
)

__all__ = [
    "FLAT_SCHEMA", "FORMATS", "SUFFIXES", "Format", "ReadResult", "Rejected", "deduplicate",
    "empty_frame", "format_for", "load_transactions", "raw_json_lines", "read_transactions",
    "records_to_frame", "validate_flat", "write_rejects", "write_results", "write_table",
]


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
    fmt = format_for(path)
    if not path.exists():
        raise InputFormatError(f"{path}: no such file")
    keep = None if columns is None else _kept_columns(columns)
    frame, rejects = fmt.read(path, keep, categorical)
    if keep is None:
        result = deduplicate(frame, rejects)
    elif has_repeats(frame):  # telling exact repeats from conflicting ones needs every column
        result = load_transactions(path)
        result.frame = result.frame.select(keep)
    else:
        if frame.columns != [*keep, "_index"]:  # the reader parsed every column
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


def write_table(frame: pl.DataFrame, path: str | Path, *, number_long_share: float = 0.0,
                seed: int = 0) -> Path:
    """Write flat records so that :func:`load_transactions` reads them back unchanged.

    Parameters
    ----------
    frame : polars.DataFrame
        Flat records: ``transaction_id``, ``timestamp`` and any other of the
        :data:`FLAT_COLUMNS` and ``extra`` (text or categorical). Other columns are refused:
        write result tables with :func:`write_results`.
    path : str or pathlib.Path
        The format follows the extension (:data:`SUFFIXES`): ``.json`` a JSON array and
        ``.jsonl``/``.ndjson`` one record per line, both in the Flagright camelCase shape;
        ``.csv`` and ``.parquet`` the flat columns (``extra`` only when some record has
        extra fields).
    number_long_share : float
        JSON only: the share of records whose timestamp is written as a MongoDB export writes
        it, ``{"$numberLong": "<ms>"}``, rather than a plain integer; which ones is drawn from
        ``seed``. Tables hold timestamps as integers.

    Returns
    -------
    pathlib.Path
        The path written.
    """
    path = Path(path)
    fmt = format_for(path)
    _check_flat(frame, path)
    frame = frame.with_columns(pl.col(pl.Categorical).cast(pl.String))
    number_long = None
    if number_long_share > 0:
        number_long = np.random.default_rng(seed).random(frame.height) < number_long_share
    path.parent.mkdir(parents=True, exist_ok=True)
    fmt.write(frame, path, number_long)
    return path


def _check_flat(frame: pl.DataFrame, path: Path) -> None:
    other = [c for c in frame.columns if c not in FLAT_SCHEMA]
    missing = [c for c in REQUIRED_COLUMNS if c not in frame.columns]
    if other or missing:
        problem = (f"column(s) {', '.join(other)} are not flat record columns (use "
                   "write_results for other tables)" if other else
                   f"missing column(s) {', '.join(missing)}")
        raise InputFormatError(f"cannot write {path} as transactions: {problem}")


def write_results(frame: pl.DataFrame, path: str | Path) -> Path:
    """Write a result table (features, scores) with its columns as they are.

    The format follows the extension, as for :func:`write_table`: ``.json`` an array of row
    objects, ``.jsonl`` one row object per line, ``.csv``, ``.parquet``.
    """
    path = Path(path)
    fmt = format_for(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fmt.write_results(frame, path)
    return path
