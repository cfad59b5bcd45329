"""Reading transactions a chunk at a time, in time order, in memory that does not grow with rows.

:func:`time_ordered_chunks` yields the valid records of a transactions file as frames of at
most ``chunk_rows`` rows (plus ``_index``, the record's position in the input), in time order
(ties in input order), after the same validation and with the same rejects as
:func:`txanomaly.io.load_transactions`. It reads the file twice, or three times when the input
is not in time order:

1. a survey of two columns (``transaction_id``, ``timestamp``): the 64-bit hashes of the ids
   go into a hash set sized from the row count (8 bytes a slot, at most 3/4 full: about
   11 bytes a row, freed before step 2), which finds the hashes seen more than once; and
   whether the timestamps already ascend;
2. the records, chunk by chunk: validated (:func:`txanomaly.io.tables.validate_flat`), and
   only the records whose id hash repeats are checked for repeats, exactly (the id text and
   a hash of the whole record, kept for those ids alone: a 64-bit hash collision costs a
   string comparison, never a wrong answer). A repeat with the same content is counted once,
   one with different content is rejected naming the record kept, as ``load_transactions``
   does;
3. only for an input not in time order: the valid records of step 2 go to temporary files
   (Arrow IPC, LZ4), with one timestamp in 64 kept; the sample's quantiles cut the time range
   into buckets of about ``chunk_rows`` records; each file's rows go to their bucket's folder
   (:func:`bucket_sort`), and each bucket in turn is read, sorted by (timestamp, input
   position) in memory and cut into chunks. Sorting out of core rather than refusing: exports
   are often in id or insertion order, and sorting them is what any user would do next; the
   temporary files (about twice the size of the needed columns) go to ``TMPDIR``.

A timestamp that is not an integer in the file (an ISO string in a CSV) cannot be compared
before it is parsed, so such a file takes the sorting path (the result is the same).
JSON and JSON Lines go through the same steps after one more, step 0
(:func:`flat_json_table`): a streaming pass parses and validates every record (the reader
:func:`txanomaly.io.load_transactions` uses, 65,536 records at a time) into a temporary
Parquet file in ``TMPDIR`` (the flat columns, ``extra`` and ``_index``, the record's position
in the input), and keeps the records it rejects. Steps 1-3 then read that file as they read a
Parquet input, with two differences: its records are validated already, so step 2 does not
validate them again; and ``_index`` is the file's own column, carried through, so the rejects
and positions are the JSON input's. The rejects of step 0 join those of step 2 in input
order. Why a file rather than memory: a record held as Python objects costs hundreds of
bytes, and the features need the records in time order, which a JSON export need not be in;
why Parquet: the table path already reads it a slice of row groups at a time, a column at a
time for the survey, with its row count in the metadata.
"""

from __future__ import annotations

import bisect
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from txanomaly.errors import FieldError, InputFormatError
from txanomaly.io.formats import format_for
from txanomaly.io.json_read import raw_records, record_chunks
from txanomaly.io.result import Rejected
from txanomaly.io.tables import validate_flat
from txanomaly.schema import EXTRA_COLUMN, FLAT_COLUMNS, FLAT_SCHEMA

#: Rows per chunk by default: a few hundred MB of working memory for the standard features
#: (measured: about 1 GB peak for 10M rows, docs/features.md), and large enough that the
#: per-chunk costs (a Polars query, the compiled passes) stay small.
DEFAULT_CHUNK_ROWS = 500_000


@dataclass
class ReadCounts:
    """What a chunked read saw, filled in as the chunks are read (complete at the end)."""

    records: int = 0
    accepted: int = 0
    rejected: int = 0
    exact_duplicates: int = 0
    #: Whether the input had to be sorted (step 3).
    sorted_out_of_core: bool = False


def check_input(path: str | Path) -> str:
    """Refuse an input whose extension names no format, or that does not exist (the errors
    :func:`count_rows` raises); return its format's name."""
    path = Path(path)
    kind = format_for(path).name
    if not path.exists():
        raise InputFormatError(f"{path}: no such file")
    return kind


def count_rows(path: str | Path) -> int | None:
    """The number of records in ``path``, cheaply: Parquet's metadata, a CSV's rows (one
    streaming count), a JSON Lines file's non-blank lines; None for a JSON array (counting
    would mean parsing it)."""
    path = Path(path)
    kind = check_input(path)
    if kind == "Parquet":
        import pyarrow.parquet as pq

        return int(pq.ParquetFile(path).metadata.num_rows)
    if kind == "CSV":
        return int(pl.scan_csv(path, infer_schema=False).select(pl.len()).collect().item())
    with path.open("rb") as fh:
        if kind == "JSON" and fh.read(4096).lstrip()[:1] == b"[":
            return None
        fh.seek(0)
        return sum(1 for line in fh if line.strip())


def time_ordered_chunks(path: str | Path, chunk_rows: int = DEFAULT_CHUNK_ROWS,
                        columns: list[str] | None = None, rejects: list[Rejected] | None = None,
                        counts: ReadCounts | None = None) -> Iterator[pl.DataFrame]:
    """The valid records of ``path`` in time order, ``chunk_rows`` at most at a time.

    Each chunk holds ``columns`` (default: every flat column and ``extra``; ``transaction_id``
    and ``timestamp`` are always there) and ``_index`` (Int64, the record's position in the
    input, as in the rejects). ``rejects`` receives the rejected records in input order,
    ``counts`` the totals; both are complete once the iterator is exhausted (for an input not
    in time order, before the first chunk).
    """
    path = Path(path)
    if chunk_rows < 1:
        raise InputFormatError(f"chunk_rows must be at least 1, got {chunk_rows}")
    if not path.exists():
        raise InputFormatError(f"{path}: no such file")
    keep = _kept(columns)
    counts = counts if counts is not None else ReadCounts()
    rejects = rejects if rejects is not None else []
    kind = format_for(path).name
    if kind not in ("JSON", "JSON Lines"):
        yield from _table_chunks(path, chunk_rows, keep, rejects, counts)
        return
    with tempfile.TemporaryDirectory(prefix="txanomaly-json-") as folder:
        parsed: list[Rejected] = []
        table = flat_json_table(path, kind == "JSON Lines", Path(folder, "records.parquet"),
                                parsed)
        yield from _table_chunks(table, chunk_rows, keep, rejects, counts, parsed)


def flat_json_table(path: Path, lines: bool, target: Path, rejects: list[Rejected]) -> Path:
    """Step 0 for JSON: every record of ``path`` parsed and validated, in one streaming pass,
    into the Parquet file ``target`` (the flat columns, ``extra`` and ``_index``, the record's
    position in the input; one row group per 65,536 valid records); the invalid ones go to
    ``rejects``, in input order. Memory: one row group's records."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pl.DataFrame(schema={**FLAT_SCHEMA, "_index": pl.Int64}).to_arrow().schema
    # LZ4: written once and read two or three times, where a stronger codec costs more time
    # than the disk it saves.
    with pq.ParquetWriter(target, schema, compression="lz4") as writer:
        for frame in record_chunks(raw_records(path, lines), rejects):
            writer.write_table(pa.Table.from_batches(frame.to_arrow().to_batches(), schema))
    return target


def _table_chunks(path: Path, chunk_rows: int, keep: list[str], rejects: list[Rejected],
                  counts: ReadCounts, parsed: list[Rejected] | None = None
                  ) -> Iterator[pl.DataFrame]:
    """Steps 1-3 over a CSV or Parquet file, or (``parsed``: its rejects) a JSON input's
    validated records from :func:`flat_json_table`."""
    scan = _scan(path)
    rows = count_rows(path) or 0  # a table's count: never None
    parquet = format_for(path).name == "Parquet"
    repeated, ordered = _survey(scan, rows, chunk_rows, parquet)
    valid = _valid_chunks(path, _batches(scan, chunk_rows, rows, parquet), keep, repeated,
                          rejects, counts, parsed)
    if ordered:
        yield from valid
        return
    counts.sorted_out_of_core = True
    with tempfile.TemporaryDirectory(prefix="txanomaly-sort-") as folder:
        parts = Path(folder, "parts")
        parts.mkdir()
        samples = []
        files = []
        for i, chunk in enumerate(valid):  # validated once, kept on disk meanwhile
            files.append(parts / f"{i:08d}.arrow")
            chunk.write_ipc(files[-1], compression="lz4")
            samples.append(chunk.get_column("timestamp").gather_every(_SAMPLE_EVERY).to_numpy())
        bounds = bucket_bounds(np.concatenate([np.empty(0, np.int64), *samples]),
                               counts.accepted, chunk_rows)
        for bucket in bucket_sort(_read_and_delete(files), "timestamp", "_index", bounds,
                                  Path(folder, "buckets")):
            for start in range(0, bucket.height, chunk_rows):
                yield bucket.slice(start, chunk_rows)


#: One timestamp in this many is kept to place the sort's bucket boundaries (quantiles).
_SAMPLE_EVERY = 64


def bucket_bounds(sample: np.ndarray, rows: int, bucket_rows: int) -> np.ndarray:
    """Boundaries that cut ``rows`` values, of which ``sample`` is a uniform sample, into
    buckets of about ``bucket_rows`` (quantiles of the sample; equal values never split)."""
    buckets = -(-rows // max(bucket_rows, 1))
    if buckets <= 1 or sample.size == 0:
        return np.empty(0, sample.dtype)
    cuts = np.quantile(np.sort(sample), np.linspace(0, 1, buckets + 1)[1:-1], method="lower")
    return np.unique(cuts)


def bucket_sort(chunks: Iterator[pl.DataFrame], by: str, then: str | None, bounds: np.ndarray,
                folder: Path) -> Iterator[pl.DataFrame]:
    """The rows of ``chunks`` sorted by (``by``, ``then``), on disk: one bucket at a time.

    Each chunk's rows go to the bucket of their ``by`` value (bucket b: ``bounds[b - 1] <=
    value < bounds[b]``), one Arrow IPC file per chunk and bucket under ``folder``; then each
    bucket in turn is read, sorted in memory, its files deleted, and yielded. Memory: one
    chunk while splitting, one bucket while sorting (about ``rows / (len(bounds) + 1)``).
    """
    folder.mkdir(parents=True, exist_ok=True)
    used: set[int] = set()
    for i, chunk in enumerate(chunks):
        which = np.searchsorted(bounds, chunk.get_column(by).to_numpy(), side="right")
        tagged = chunk.with_columns(pl.Series("_bucket", which, dtype=pl.Int64))
        for (bucket,), part in tagged.partition_by("_bucket", as_dict=True,
                                                   include_key=False).items():
            where = folder / f"{bucket:06d}"
            if bucket not in used:
                where.mkdir()
                used.add(int(bucket))
            part.write_ipc(where / f"{i:08d}.arrow", compression="lz4")
    for bucket in sorted(used):
        where = folder / f"{bucket:06d}"
        pieces = sorted(where.iterdir())
        frame = pl.concat([pl.read_ipc(p) for p in pieces]).sort(by, *[then] if then else [])
        for piece in pieces:
            piece.unlink()
        yield frame


def _read_and_delete(files: list[Path]) -> Iterator[pl.DataFrame]:
    for file in files:
        frame = pl.read_ipc(file)
        file.unlink()
        yield frame


def _kept(columns: list[str] | None) -> list[str]:
    if columns is None:
        return [*FLAT_COLUMNS, EXTRA_COLUMN]
    return list(dict.fromkeys(["transaction_id", "timestamp", *columns]))


def _scan(path: Path) -> pl.LazyFrame:
    """A lazy scan of a table file (Parquet or CSV), every cell of a CSV as text."""
    kind = format_for(path).name
    try:
        scan = (pl.scan_parquet(path) if kind == "Parquet"
                else pl.scan_csv(path, infer_schema=False))
        scan.collect_schema()
    except (pl.exceptions.PolarsError, OSError) as exc:
        raise InputFormatError(f"{path}: cannot read {kind}: {exc}") from None
    return scan


def _batches(scan: pl.LazyFrame, chunk_rows: int, rows: int, parquet: bool
             ) -> Iterator[tuple[pl.LazyFrame, int]]:
    """``scan`` a chunk at a time, with the chunk's row count. Parquet: a lazy slice of rows
    (its query reads only the row groups it needs, nothing ahead). CSV: Polars' batches of
    one streaming query (a CSV cannot be entered in the middle; the engine may read a few
    batches ahead)."""
    if not parquet:
        for batch in scan.collect_batches(chunk_size=chunk_rows):
            yield batch.lazy(), batch.height
        return
    for start in range(0, rows, chunk_rows):
        yield scan.slice(start, chunk_rows), min(chunk_rows, rows - start)


def _id_hash(expr: pl.Expr) -> pl.Expr:
    return expr.cast(pl.String, strict=False).hash(seed=0)


def _survey(scan: pl.LazyFrame, rows: int, chunk_rows: int, parquet: bool
            ) -> tuple[pl.Series, bool]:
    """Step 1: the id hashes seen more than once, and whether the timestamps ascend."""
    schema = scan.collect_schema()
    if "transaction_id" not in schema or "timestamp" not in schema:
        return pl.Series([], dtype=pl.UInt64), True  # validate_flat names what is missing
    raw = pl.col("timestamp")
    ts = raw.cast(pl.Int64, strict=False)
    if schema["timestamp"] == pl.String:
        raw = raw.replace("", None)
    unknown = raw.is_not_null() & ts.is_null()
    seen = _HashSet(rows)
    repeated: list[np.ndarray] = []
    ordered = True
    seen_zero_or_one = False
    last = np.iinfo(np.int64).min
    survey = scan.select(_id_hash(pl.col("transaction_id")).alias("h"), ts.alias("t"),
                         unknown.alias("u"))
    for lazy, _ in _batches(survey, max(chunk_rows, 1 << 20), rows, parquet):
        batch = lazy.collect()
        hashes = batch.get_column("h").to_numpy()
        repeated.append(seen.add(hashes))
        seen_zero_or_one = seen_zero_or_one or bool((hashes <= 1).any())
        if ordered:
            t = batch.get_column("t").drop_nulls().to_numpy()
            ordered = not batch.get_column("u").any() and (t.size == 0 or (
                t[0] >= last and bool(np.all(t[1:] >= t[:-1]))))
            if t.size:
                last = int(t[-1])
    del seen
    # Hashes 0 and 1 share a slot (0 marks an empty one): ids with either are always checked.
    found = np.concatenate([np.array([0, 1], np.uint64), *repeated]) if any(
        r.size for r in repeated) or seen_zero_or_one else np.empty(0, np.uint64)
    return pl.Series(np.unique(found), dtype=pl.UInt64), ordered


class _HashSet:
    """A set of 64-bit hashes in one open-addressing table sized for ``rows`` (Lemire's
    multiply-shift maps a hash to a slot of any table size, so no power-of-two rounding)."""

    def __init__(self, rows: int):
        self.table = np.zeros(max(16, rows * 4 // 3 + 1), np.uint64)  # 0 = empty slot
        self.count = 0

    def add(self, hashes: np.ndarray) -> np.ndarray:
        """Add ``hashes``; return those that were already in (or repeat among themselves)."""
        if 4 * (self.count + hashes.size) > 3 * self.table.size:  # more rows than counted
            old = self.table
            self.table = np.zeros(2 * old.size + 4 * hashes.size // 3, np.uint64)
            _compiled_insert()(self.table, old[old != 0])
        repeats, added = _compiled_insert()(self.table, np.ascontiguousarray(hashes, np.uint64))
        self.count += added
        return repeats


@cache
def _compiled_insert() -> Callable[..., Any]:
    """:func:`_insert` compiled (Numba is imported when a chunked read starts, not with io)."""
    import numba

    return numba.njit(nogil=True, cache=True)(_insert)


def _insert(table: np.ndarray, hashes: np.ndarray) -> tuple[np.ndarray, int]:  # pragma: no cover
    """Insert ``hashes`` into ``table`` (0 = empty; a hash of 0 is stored as 1, and the
    caller checks both exactly); return the repeats found (in no particular order) and how
    many were added.

    The hashes go in grouped by their top 8 bits (a counting sort): a hash's slot grows with
    its top bits, so each group fills one 1/256 of the table, which stays in cache, instead
    of a cache miss a hash (the survey's inserts took half the time at 2M rows)."""
    starts = np.zeros(257, np.int64)
    for i in range(hashes.size):
        starts[np.int64(hashes[i] >> np.uint64(56)) + 1] += 1
    for d in range(256):
        starts[d + 1] += starts[d]
    grouped = np.empty_like(hashes)
    for i in range(hashes.size):
        b = np.int64(hashes[i] >> np.uint64(56))
        grouped[starts[b]] = hashes[i]
        starts[b] += 1
    repeats = np.empty(hashes.size, np.uint64)
    found = 0
    added = 0
    size = np.uint64(table.size)
    for i in range(grouped.size):
        h = grouped[i] if grouped[i] != 0 else np.uint64(1)
        at = np.int64(((h >> np.uint64(32)) * size) >> np.uint64(32))
        while table[at] != 0 and table[at] != h:
            at += 1
            if at == table.size:
                at = np.int64(0)
        if table[at] == h:
            repeats[found] = h
            found += 1
        else:
            table[at] = h
            added += 1
    return repeats[:found], added


def _valid_chunks(path: Path, batches: Iterator[tuple[pl.LazyFrame, int]], keep: list[str],
                  repeated: pl.Series, rejects: list[Rejected], counts: ReadCounts,
                  parsed: list[Rejected] | None = None) -> Iterator[pl.DataFrame]:
    """Step 2: each chunk validated, repeats of a transactionId resolved.

    ``parsed``: the batches are a JSON input's records, validated already and with their
    ``_index``; ``parsed`` holds the rejects of that validation (in input order), which go to
    ``rejects`` beside the repeats, in input order.
    """
    first: dict[str, tuple[int, int]] = {}  # id -> (index, content hash) of suspects only
    offset = 0
    released = 0  # parsed[:released] are in rejects
    for raw, height in batches:
        if parsed is None:
            try:
                frame, bad = validate_flat(raw, str(path), keep, compiled=True)
            except pl.exceptions.ComputeError as exc:
                raise InputFormatError(f"{path}: cannot read: {exc}") from None
            bad = [replace(r, index=r.index + offset) for r in bad]
            frame = frame.with_columns(pl.col("_index") + offset)
        else:
            frame, bad = raw.select(*keep, "_index").collect(), []
            last = int(frame.get_column("_index")[-1])
            upto = bisect.bisect_left(parsed, last, lo=released, key=lambda r: r.index)
            bad.extend(parsed[released:upto])
            counts.records += upto - released
            released = upto
        if repeated.len():
            frame, exact = _drop_repeats(frame, raw, offset, path, repeated, first, bad,
                                         parsed is not None)
            counts.exact_duplicates += exact
        counts.records += height
        counts.rejected += len(bad)
        counts.accepted += frame.height
        rejects.extend(sorted(bad, key=lambda r: r.index))
        offset += height
        if frame.height:
            yield frame
    if parsed is not None and released < len(parsed):  # after the last valid record
        rejects.extend(parsed[released:])
        counts.records += len(parsed) - released
        counts.rejected += len(parsed) - released


def _drop_repeats(frame: pl.DataFrame, raw: pl.LazyFrame, offset: int, path: Path,
                  repeated: pl.Series, first: dict[str, tuple[int, int]],
                  bad: list[Rejected], validated: bool) -> tuple[pl.DataFrame, int]:
    """The chunk without the repeats of an id kept earlier (exact ones counted, others
    rejected as :func:`txanomaly.io.result.deduplicate` rejects them). ``validated``: ``raw``
    holds validated records and their ``_index`` (a JSON input's)."""
    suspect = frame.select(_id_hash(pl.col("transaction_id")).is_in(repeated.implode())
                           ).to_series()
    if not suspect.any():
        return frame, 0
    indexes = frame.get_column("_index").filter(suspect)
    if validated:
        whole = raw.filter(pl.col("_index").is_in(indexes.implode())).collect()
    else:
        whole = _revalidated(raw, indexes - offset, path).with_columns(_index=indexes)
    if whole.height != indexes.len():
        raise AssertionError("a record validated twice gave two answers")
    content = whole.select(pl.struct([*FLAT_COLUMNS, EXTRA_COLUMN]).hash(seed=0)).to_series()
    drop: list[int] = []
    exact = 0
    for row, digest in zip(whole.iter_rows(named=True), content, strict=True):
        tid, index = row["transaction_id"], row["_index"]
        if tid not in first:
            first[tid] = (index, digest)
            continue
        drop.append(index)
        kept, kept_digest = first[tid]
        if digest == kept_digest:
            exact += 1
            continue
        error = FieldError("transactionId", "duplicate transactionId with different content; "
                                            f"record {kept} was kept")
        bad.append(Rejected(index, tid, [error],
                            {k: row[k] for k in (*FLAT_COLUMNS, EXTRA_COLUMN)}))
    return frame.filter(~pl.col("_index").is_in(drop)), exact


def _revalidated(raw: pl.LazyFrame, positions: pl.Series, path: Path) -> pl.DataFrame:
    """Every column of the rows of ``raw`` at ``positions`` (in order), validated."""
    whole, _ = validate_flat(raw.with_row_index("_raw").filter(
        pl.col("_raw").is_in(positions.cast(pl.UInt32).implode())).drop("_raw"), str(path))
    return whole
