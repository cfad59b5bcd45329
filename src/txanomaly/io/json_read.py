"""Reading raw (Flagright-shaped) records from a JSON array or JSON Lines.

A JSON array is streamed (ijson), JSON Lines a line at a time (orjson), and the records are
validated into flat columns 65,536 at a time (:func:`record_chunks`): :func:`read_json` joins
those frames into one, while the chunked reader (:mod:`txanomaly.io.chunks`) writes them to a
temporary Parquet file as they come, so it holds one of them at a time. A line of JSON Lines
that does not parse is rejected with the line number; an array broken half-way cannot be read
on, so it stops the read with one line saying where.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import ijson
import orjson
import polars as pl

from txanomaly.errors import FieldError, InputFormatError, RecordError
from txanomaly.io.result import Rejected
from txanomaly.schema import EXTRA_COLUMN, FLAT_COLUMNS, FLAT_SCHEMA, parse_record

_CHUNK = 65_536
# orjson's "<what>: line 1 column 29 (char 28)": a line is parsed alone, so line is always 1.
_ORJSON_WHERE = re.compile(r"^(?P<what>.*): line \d+ column (?P<column>\d+) \(char \d+\)$")


def read_json(path: Path, columns: list[str] | None = None, categorical: bool = False
              ) -> tuple[pl.DataFrame, list[Rejected]]:
    """Read a ``.json`` file: a JSON array of records, or one record per line.

    Returns every flat column and ``_index`` (``columns`` and ``categorical`` are applied by
    the caller: a JSON record is parsed whole anyway).
    """
    return records_to_frame(raw_records(path, lines=False))


def read_json_lines(path: Path, columns: list[str] | None = None, categorical: bool = False
                    ) -> tuple[pl.DataFrame, list[Rejected]]:
    """Read a JSON Lines file (one record per line; blank lines are skipped)."""
    return records_to_frame(raw_records(path, lines=True))


def raw_records(path: Path, lines: bool) -> Iterator[tuple[int, Any]]:
    """The (index, raw record) pairs of a JSON file, streamed; the file is open while they are.

    ``lines``: one record per line (JSON Lines); else a JSON array or, if the file starts with
    an object, one record per line. A line that does not parse comes as an unparseable record
    (rejected by :func:`record_chunks`); an array broken half-way raises
    :class:`InputFormatError` saying where.
    """
    with path.open("rb") as fh:
        if lines:
            yield from _iter_json_lines(fh)
            return
        head = fh.read(4096).lstrip()
        fh.seek(0)
        if not head:
            return
        if head[:1] == b"[":
            yield from _iter_json_array(fh, path)
            return
        if head[:1] != b"{":
            raise InputFormatError(f"{path}: not JSON (expected a JSON array or one object per "
                                   "line)")
        yield from _iter_json_lines(fh)


def records_to_frame(records: Iterable[tuple[int, Any]]) -> tuple[pl.DataFrame, list[Rejected]]:
    """Validate raw (index, record) pairs into a flat frame with an ``_index`` column."""
    rejects: list[Rejected] = []
    chunks = list(record_chunks(records, rejects))
    if not chunks:
        return pl.DataFrame(schema={**FLAT_SCHEMA, "_index": pl.Int64}), rejects
    return pl.concat(chunks, how="vertical"), rejects


def record_chunks(records: Iterable[tuple[int, Any]], rejects: list[Rejected],
                  rows: int = _CHUNK) -> Iterator[pl.DataFrame]:
    """Validate raw (index, record) pairs into flat frames of ``rows`` valid records at most
    (every flat column, ``extra`` and ``_index``, in input order); the invalid records go to
    ``rejects`` as they are met, so in input order. No empty frame is yielded."""
    columns: dict[str, list[Any]] = {c: [] for c in (*FLAT_COLUMNS, EXTRA_COLUMN)}
    indexes: list[int] = []
    for index, raw in records:
        if isinstance(raw, _Unparseable):
            rejects.append(Rejected(index, None, [FieldError("$", raw.message)], raw.text))
            continue
        try:
            flat = parse_record(raw, index)
        except RecordError as exc:
            rejects.append(Rejected(index, exc.transaction_id, exc.errors, raw))
            continue
        for name, values in columns.items():
            values.append(flat[name])
        indexes.append(index)
        if len(indexes) >= rows:
            yield _columns_to_frame(columns, indexes)
    if indexes:
        yield _columns_to_frame(columns, indexes)


def _columns_to_frame(columns: dict[str, list[Any]], indexes: list[int]) -> pl.DataFrame:
    frame = pl.DataFrame({**columns, "_index": indexes},
                         schema={**FLAT_SCHEMA, "_index": pl.Int64})
    for values in columns.values():
        values.clear()
    indexes.clear()
    return frame


def _iter_json_array(fh: IO[bytes], path: Path) -> Iterator[tuple[int, Any]]:
    index = -1
    try:
        for index, raw in enumerate(ijson.items(fh, "item", use_float=True)):
            yield index, raw
    except ijson.JSONError as exc:
        raise InputFormatError(_array_problem(path, index + 1, exc)) from None


def _array_problem(path: Path, complete: int, exc: Exception) -> str:
    """One line for a JSON array that breaks after ``complete`` records.

    yajl's own message spans three lines, the last a caret under a snippet ("(right here)
    ------^"); the first line says what, the second holds the text it points at.
    """
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    what = (lines[0] if lines else type(exc).__name__).split("error: ", 1)[-1].rstrip(".")
    if what in ("premature EOF", "Incomplete JSON content"):
        return (f"{path}: truncated JSON: the file ends before the array is closed, after "
                f"{complete:,} complete record(s)")
    near = [line for line in lines[1:] if "(right here)" not in line]
    at = f" near {near[0][-40:]!r}" if near else ""
    return f"{path}: invalid JSON after {complete:,} complete record(s): {what}{at}"


def _iter_json_lines(fh: IO[bytes]) -> Iterator[tuple[int, Any]]:
    index = 0
    for line_number, line in enumerate(fh, start=1):
        if not line.strip():
            continue
        try:
            raw = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            text = line.decode("utf-8", "replace").rstrip("\r\n")
            yield index, _Unparseable(text, _line_problem(line_number, exc))
        else:
            yield index, raw
        index += 1


def _line_problem(line_number: int, exc: orjson.JSONDecodeError) -> str:
    """One line of JSON Lines that does not parse: the file's line number, column and what."""
    where = _ORJSON_WHERE.match(str(exc))
    if where is None:
        return f"invalid JSON on line {line_number}: {exc}"
    return (f"invalid JSON on line {line_number}, column {where['column']}: "
            f"{where['what']}")


@dataclass(frozen=True)
class _Unparseable:
    """A JSON line that did not parse: rejected with the reason, its text kept."""

    text: str
    message: str
