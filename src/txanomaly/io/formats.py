"""The file formats, one entry each: adding a format is adding a :class:`Format` to FORMATS.

Every format reads transactions (:func:`txanomaly.io.load_transactions`), writes them back so
that they read to the same records (:func:`txanomaly.io.write_table`: JSON in the Flagright
camelCase shape, tables in the flat snake_case columns), and writes result tables (features,
scores) as they are (:func:`txanomaly.io.write_results`). The format is chosen by the file's
extension, in one place: :func:`format_for`.

>>> format_for("data/tx.NDJSON").name
'JSON Lines'
>>> format_for("tx.xlsx")
Traceback (most recent call last):
...
txanomaly.errors.InputFormatError: tx.xlsx: unknown extension '.xlsx'; the formats are .json, ...
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from txanomaly.errors import InputFormatError
from txanomaly.io.json_read import read_json, read_json_lines
from txanomaly.io.json_write import write_json, write_json_lines
from txanomaly.io.result import Rejected
from txanomaly.io.tables import read_csv, read_parquet, write_csv, write_parquet

#: (path, columns to keep or None, categorical) -> (flat frame with ``_index``, rejects).
Reader = Callable[[Path, "list[str] | None", bool], tuple[pl.DataFrame, list[Rejected]]]
#: (flat frame, path, where to write timestamps as {"$numberLong": ...} or None) -> None.
Writer = Callable[[pl.DataFrame, Path, "np.ndarray | None"], None]


@dataclass(frozen=True)
class Format:
    """One file format.

    Attributes
    ----------
    name : str
        What users call it, for messages and docs.
    suffixes : tuple of str
        Lower-case extensions, dot included; the first is the usual one.
    read : callable
        Reads and validates transactions (see :data:`Reader`).
    write : callable
        Writes flat records so that ``read`` gives them back (see :data:`Writer`).
    write_results : callable
        Writes a result table (features, scores) with its columns as they are.
    content : str
        What a file holds, in a few words (the docs' table).
    """

    name: str
    suffixes: tuple[str, ...]
    read: Reader
    write: Writer
    write_results: Callable[[pl.DataFrame, Path], None]
    content: str


FORMATS: tuple[Format, ...] = (
    Format("JSON", (".json",), read_json, write_json, pl.DataFrame.write_json,
           "a JSON array of Flagright records (reading also takes one record per line)"),
    Format("JSON Lines", (".jsonl", ".ndjson"), read_json_lines, write_json_lines,
           pl.DataFrame.write_ndjson, "one Flagright record per line"),
    Format("CSV", (".csv",), read_csv, write_csv, pl.DataFrame.write_csv,
           "the flat snake_case columns, a header row"),
    Format("Parquet", (".parquet",), read_parquet, write_parquet, pl.DataFrame.write_parquet,
           "the flat snake_case columns"),
)
#: Every extension a format claims, in FORMATS order.
SUFFIXES: tuple[str, ...] = tuple(s for fmt in FORMATS for s in fmt.suffixes)
_BY_SUFFIX = {suffix: fmt for fmt in FORMATS for suffix in fmt.suffixes}


def format_for(path: str | Path) -> Format:
    """The format of ``path``, by its extension (any case); a clear error if there is none."""
    suffix = Path(path).suffix.lower()
    try:
        return _BY_SUFFIX[suffix]
    except KeyError:
        shown = repr(suffix) if suffix else "(none)"
        raise InputFormatError(f"{path}: unknown extension {shown}; the formats are "
                               f"{', '.join(SUFFIXES)}") from None
