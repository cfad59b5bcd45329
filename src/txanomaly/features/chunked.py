"""The batch engine a chunk at a time: memory that grows with keys and the chunk, not rows.

API. :func:`feature_chunks` reads a transactions file (CSV or Parquet streamed; JSON
through a temporary Parquet file) in time-ordered chunks of at most ``chunk_rows`` records
(:data:`DEFAULT_CHUNK_ROWS`, 500,000) and yields one :class:`FeatureChunk` per chunk:
``records``, the chunk's validated flat records (``transaction_id``, ``timestamp`` and the
columns the feature set reads, plus any ``columns`` asked for), ``values``, their features
as float64 (rows x features), equal bit for bit to :func:`~txanomaly.features.batch.feature_matrix`
of the whole input for the same rows, and ``index``, each record's position in the input
(as in the rejects). The chunks come in time order (ties in input order), which is the input
order whenever the input is already in time order; an input that is not is sorted out of core
first (:mod:`txanomaly.io.chunks`). ``rejects`` (a list) receives the rejected records, with
the rules and messages of :func:`~txanomaly.io.load_transactions` (a repeated transactionId:
counted once if identical, else rejected naming the record kept), and ``counts`` the totals;
both are complete once the iterator is exhausted. :func:`count_rows` gives the total for a
progress bar cheaply.

How: each key (origin, destination, pair) keeps a
:class:`~txanomaly.features.kernel.ChunkedKeyPass`: the per-value state the whole-table
pass keeps (counts, running sums, last timestamp, log-amount moments; one row per value),
plus the rows a finite window still trails. User ids
get stable codes from one growing table keyed by two 64-bit hashes of the id
(:class:`~txanomaly.features.interning.IdCodes`); pairs from the same kind of table keyed by
their two codes (:class:`~txanomaly.features.interning.PairSlots`). So memory grows with the
distinct ids and pairs and with the rows inside the longest window, and the arithmetic is the
whole-table pass's, in the same order.

>>> import polars as pl, tempfile
>>> from txanomaly.features.batch import feature_matrix
>>> frame = pl.DataFrame({"transaction_id": ["a", "b", "c"],
...                       "timestamp": [0, 3_600_000, 90_000_000],
...                       "origin_user_id": ["u", "u", "u"],
...                       "destination_amount": [10.0, 20.0, 60.0]})
>>> with tempfile.TemporaryDirectory() as folder:
...     frame.write_parquet(f"{folder}/tx.parquet")
...     chunks = list(feature_chunks(f"{folder}/tx.parquet", "seed", chunk_rows=2))
>>> [c.records.height for c in chunks]
[2, 1]
>>> bool((np.vstack([c.values for c in chunks]) == feature_matrix(frame, "seed")).all())
True
"""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from txanomaly.features.batch import (
    _evaluate_into,
    _id_columns,
    _Table,
    finish_key_features,
    key_amounts,
)
from txanomaly.features.spec import FeatureSet, get_feature_set
from txanomaly.io.chunks import DEFAULT_CHUNK_ROWS, ReadCounts, count_rows, time_ordered_chunks
from txanomaly.io.prefetch import prefetch
from txanomaly.io.result import Rejected
from txanomaly.jit import prepare

#: The code of a missing id (``kernel.MISSING``; kept here so that importing this module does
#: not load Numba: the CLI imports it at start-up).
MISSING = 0xFFFFFFFF

__all__ = ["DEFAULT_CHUNK_ROWS", "ChunkedFeatures", "FeatureChunk", "ReadCounts",
           "count_rows", "feature_chunks"]


@dataclass(frozen=True)
class FeatureChunk:
    """One chunk of records and their features."""

    #: The chunk's validated flat records, in output (time) order.
    records: pl.DataFrame
    #: float64 (rows, features): the whole input's ``feature_matrix`` for these rows.
    values: np.ndarray
    #: int64 (rows,): each record's position in the input file.
    index: np.ndarray


def feature_chunks(path: str | Path, feature_set: str | FeatureSet, *,
                   chunk_rows: int = DEFAULT_CHUNK_ROWS, rejects: list[Rejected] | None = None,
                   columns: list[str] | None = None, counts: ReadCounts | None = None,
                   read_ahead: bool = False) -> Iterator[FeatureChunk]:
    """The features of every valid record of ``path``, a time-ordered chunk at a time (see
    the module's docstring). ``columns``: more flat columns to keep in ``records``;
    ``read_ahead``: the next chunk is read and validated in a thread while this one's
    features are computed (one chunk's records more in memory)."""
    fs = get_feature_set(feature_set)
    keep = list(dict.fromkeys([*fs.input_columns, *(columns or [])]))
    # Numba first (the survey loads a compiled function too, and the first load decides how
    # Numba starts: txanomaly/jit.py); then the compiled kernels load from its cache in a
    # thread while the file is surveyed and the first chunk read (Polars and compiled code,
    # outside the GIL).
    prepare()
    loading = ThreadPoolExecutor(1, thread_name_prefix="txanomaly-kernels")
    pending = loading.submit(ChunkedFeatures, fs)
    loading.shutdown(wait=False)
    chunks = time_ordered_chunks(path, chunk_rows, keep, rejects, counts)
    if read_ahead:
        chunks = prefetch(chunks)
    try:
        for chunk in chunks:
            index = chunk.get_column("_index").to_numpy()
            records = chunk.drop("_index")
            yield FeatureChunk(records, pending.result().matrix(records), index)
        pending.result()  # a failed load is an error even when no record was valid
    finally:
        close = getattr(chunks, "close", None)
        if close is not None:
            close()  # stops the read-ahead thread first
        if pending.exception() is None:  # waits for the load; its error, if any, came above
            pending.result().close()


class ChunkedFeatures:
    """A feature set evaluated over consecutive time-ordered chunks of one table.

    ``matrix(chunk)`` for each chunk in turn gives the rows of ``feature_matrix(table)``.
    """

    def __init__(self, feature_set: str | FeatureSet):
        self.fs = get_feature_set(feature_set)
        self.by_key: dict[str, list[int]] = defaultdict(list)
        for j, feat in enumerate(self.fs.features):
            if feat.key is not None:
                self.by_key[feat.key].append(j)
        from txanomaly.features import kernel  # Numba: loaded when an engine is made
        from txanomaly.features.interning import IdCodes, PairSlots

        self.passes: dict[str, kernel.ChunkedKeyPass] = {}
        for key, columns in self.by_key.items():
            feats = [self.fs.features[j] for j in columns]
            windows = sorted({-1 if f.window_ms is None else f.window_ms for f in feats})
            self.passes[key] = kernel.ChunkedKeyPass(
                windows, columns, [kernel.OPS[f.op] for f in feats],
                [windows.index(-1 if f.window_ms is None else f.window_ms) for f in feats])
        self.id_columns = list(dict.fromkeys(c for key in self.by_key for c in _id_columns(key)))
        self._ids = IdCodes()  # id -> code, shared by both id columns
        self._pairs = PairSlots()
        self._last = np.iinfo(np.int64).min
        workers = min(len(self.by_key), os.cpu_count() or 1)
        self._pool = ThreadPoolExecutor(workers) if workers > 1 else None

    def close(self) -> None:
        """Stop the worker threads."""
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None

    def matrix(self, frame: pl.DataFrame) -> np.ndarray:
        """The features of the next chunk (rows in time order, none before the last chunk's)."""
        fs = self.fs
        out = np.empty((len(fs.features), frame.height), dtype=np.float64)
        own = {f.op: j for j, f in reversed(list(enumerate(fs.features)))
               if f.op in ("amount", "log_amount")}
        ctx = _Table(frame, self.id_columns, **{op: out[j] for op, j in own.items()})
        if ctx.n and (ctx.ts[0] < self._last or not ctx.in_time_order):
            raise ValueError("chunks must come in time order (sort the table by timestamp)")
        if ctx.n:
            self._last = int(ctx.ts[-1])
        for j, feat in enumerate(fs.features):
            if feat.key is None and j not in own.values():
                _evaluate_into(feat, ctx, out[j])
        ids = self._id_codes(frame)
        codes = {key: ids[cols[0]] if len(cols) == 1 else self._pairs(*(ids[c] for c in cols))
                 for key in self.by_key for cols in [_id_columns(key)]}
        if "log_amount" in own:  # computed straight into its column
            ctx.log_amount  # noqa: B018
        feats = {key: [fs.features[j] for j in columns] for key, columns in self.by_key.items()}
        amounts = {key: key_amounts(ctx, feats[key], fs.amount_source(key) == "origin")
                   for key in self.by_key}  # computed once, before the threads share them

        def run(key: str) -> None:
            amount, log_amount = amounts[key]
            self.passes[key].run(codes[key], ctx.ts, amount, log_amount, out)
            finish_key_features(feats[key], self.by_key[key], out, codes[key], log_amount)

        if self._pool is None or frame.height <= 50_000:
            for key in self.by_key:
                run(key)
        else:
            list(self._pool.map(run, self.by_key))
        return out.T

    def _id_codes(self, frame: pl.DataFrame) -> dict[str, np.ndarray]:
        """A stable uint32 code per id (the same id, the same code, in every chunk)."""
        return {c: self._ids(frame.get_column(c)) if c in frame.columns
                else np.full(frame.height, MISSING, np.uint32) for c in self.id_columns}
