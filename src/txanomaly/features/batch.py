"""The batch feature engine: evaluates a :class:`FeatureSet` over a whole table at once.

Per key (origin user, destination user, pair), one Polars group-by puts the rows that have the
key in (key, time order); a compiled pass (:mod:`txanomaly.features.kernel`) then walks each
group once with the state the online engine keeps per key (running sums added one by one, a
start pointer per window), so the two engines agree to the last bit on in-order streams. Keys
run in parallel threads.

>>> import polars as pl
>>> frame = pl.DataFrame({"transaction_id": ["a", "b", "c"],
...                       "timestamp": [0, 3_600_000, 90_000_000],
...                       "origin_user_id": ["u", "u", "u"], "destination_user_id": [None] * 3,
...                       "origin_amount": [10.0, 20.0, 60.0], "destination_amount": [None] * 3})
>>> compute_features(frame, "seed")["origin_sliding_mean_diff"].to_list()
[0.0, 5.0, 0.0]
>>> compute_features(frame, "seed")["origin_prefix_mean_diff"].to_list()
[0.0, 5.0, 30.0]
"""

from __future__ import annotations

import os
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from functools import cached_property

import numpy as np
import polars as pl

from txanomaly.errors import InputFormatError
from txanomaly.features import formulas as fx
from txanomaly.features.spec import Feature, FeatureSet, get_feature_set


def compute_features(frame: pl.DataFrame, feature_set: str | FeatureSet = "standard"
                     ) -> pl.DataFrame:
    """Return ``transaction_id`` and the (unscaled) features of every row, in input order.

    ``frame`` holds flat records (see :mod:`txanomaly.schema`): at least transaction_id,
    timestamp (int ms), and origin_amount / destination_amount; the user id, country and
    currency columns are optional (missing = null).
    """
    fs = get_feature_set(feature_set)
    values = feature_matrix(frame, fs)
    columns = [pl.Series(name, values[:, j]) for j, name in enumerate(fs.names)]
    if "transaction_id" in frame.columns:
        columns.insert(0, frame.get_column("transaction_id"))
    return pl.DataFrame(columns)


def feature_matrix(frame: pl.DataFrame, feature_set: str | FeatureSet = "standard"
                   ) -> np.ndarray:
    """The features of every row as a float64 array (rows in input order, columns in spec order)."""
    fs = get_feature_set(feature_set)
    ctx = _Table(frame)
    # Column-major: each feature is written as one contiguous column.
    out = np.empty((len(fs.features), frame.height), dtype=np.float64)
    by_key: dict[str | None, list[int]] = defaultdict(list)
    for j, feat in enumerate(fs.features):
        by_key[feat.key].append(j)

    keys = [key for key in by_key if key is not None]
    ctx.log_amount  # computed once, before the threads share it  # noqa: B018

    def row_features() -> None:
        # Touch every page of ``out`` in order first: the compiled passes write it at random,
        # and page faults taken at random cost much more than one sequential sweep.
        out.fill(0.0)
        for j in by_key.get(None, []):
            out[j] = _evaluate(fs.features[j], ctx)

    def key_features(key: str, groups: tuple[np.ndarray, np.ndarray]) -> None:
        _key_features(ctx, key, groups, [fs.features[j] for j in by_key[key]], by_key[key], out)

    if frame.height <= 50_000 or (os.cpu_count() or 1) < 2:
        row_features()
        for key, groups in zip(keys, ctx.group_rows(keys), strict=True):
            key_features(key, groups)
        return out.T
    # Threads (NumPy, Polars and the compiled pass release the GIL): the row-level features
    # while one Polars query groups every key (it uses all cores), then one thread per key.
    with ThreadPoolExecutor(max(len(keys), 1)) as pool:
        rows_done = pool.submit(row_features)
        grouped = ctx.group_rows(keys)
        rows_done.result()
        list(pool.map(key_features, keys, grouped))
    return out.T


def _key_features(ctx: _Table, key: str, groups: tuple[np.ndarray, np.ndarray],
                  feats: list[Feature], columns: list[int], out: np.ndarray) -> None:
    """Write one key's features into ``out`` (rows x features are columns x rows there)."""
    from txanomaly.features import kernel  # Numba: imported when features are computed

    windows = sorted({-1 if f.window_ms is None else f.window_ms for f in feats})
    rows, lengths = groups
    kernel.key_pass(rows, lengths, ctx.ts, ctx.amount, ctx.log_amount, windows, columns,
                    [kernel.OPS[f.op] for f in feats],
                    [windows.index(-1 if f.window_ms is None else f.window_ms) for f in feats],
                    out)
    keyless = ~ctx.has_key(key)  # no history (DESIGN section 3); not written by the pass
    with np.errstate(divide="ignore", invalid="ignore"):  # keyless rows: overwritten below
        for j, feat in zip(columns, feats, strict=True):
            column = out[j]
            if feat.op == "log_amount_to_mean":  # the pass wrote the window mean
                np.log1p(column, out=column)
                np.subtract(ctx.log_amount, column, out=column)
            elif feat.op == "log_seconds_since_prev":  # ... the capped gap in seconds
                first = column == kernel.NO_PREVIOUS
                np.log1p(column, out=column)
                column[first] = fx.LOG_GAP_CAP
            column[keyless] = fx.SINGLETON[feat.op]


def _evaluate(feat: Feature, ctx: _Table) -> np.ndarray:
    op = feat.op
    if op == "amount":
        return ctx.amount
    if op == "log_amount":
        return ctx.log_amount
    if op in fx.CYCLIC:
        return fx.CYCLIC[op][ctx.hour_weekday[0 if op.startswith("hour") else 1]]
    if op == "cross_border":
        return ctx.differs("origin_country", "destination_country")
    if op == "currency_mismatch":
        return ctx.differs("origin_currency", "destination_currency")
    raise AssertionError(f"{op} is evaluated per key (feature_matrix)")


class _Table:
    """The columns every feature needs, computed once per call."""

    def __init__(self, frame: pl.DataFrame):
        if "timestamp" not in frame.columns:
            raise InputFormatError("features need a 'timestamp' column (int ms since epoch)")
        self.frame = frame
        self.n = frame.height
        self.ts = frame.get_column("timestamp").cast(pl.Int64).to_numpy()
        amounts = [pl.col(c) for c in ("destination_amount", "origin_amount") if c in frame.columns]
        if not amounts:
            raise InputFormatError("features need origin_amount or destination_amount")
        self.amount = frame.select(pl.coalesce(amounts).cast(pl.Float64)).to_series().to_numpy()
        if np.isnan(self.amount).any():
            bad = int(np.flatnonzero(np.isnan(self.amount))[0])
            raise InputFormatError(f"record {bad}: no amount (validate input with "
                                   "txanomaly.io.load_transactions first)")

    @cached_property
    def log_amount(self) -> np.ndarray:
        return np.log1p(self.amount)

    @cached_property
    def hour_weekday(self) -> tuple[np.ndarray, np.ndarray]:
        """Hour of day and weekday of each row (see formulas.hour_of_day / weekday)."""
        from txanomaly.features import kernel

        return kernel.hour_and_weekday(np.ascontiguousarray(self.ts, dtype=np.int64))

    @cached_property
    def in_time_order(self) -> bool:
        return self.n < 2 or bool(np.all(self.ts[1:] >= self.ts[:-1]))

    @cached_property
    def time_order(self) -> np.ndarray:
        """Row indices ordered by timestamp, ties in input order (needed only when the input
        is not in time order)."""
        return np.argsort(self.ts, kind="stable")

    def column(self, name: str) -> pl.Series:
        if name in self.frame.columns:
            return self.frame.get_column(name).cast(pl.String)
        return pl.Series(name, [None] * self.n, dtype=pl.String)

    def differs(self, left: str, right: str) -> np.ndarray:
        a, b = self.column(left), self.column(right)
        return (a.is_not_null() & b.is_not_null() & (a != b)).fill_null(False).to_numpy(
        ).astype(np.float64)

    def has_key(self, key: str) -> np.ndarray:
        """True for the rows that have the key (its user id(s) are there)."""
        present = [self.column(c).is_not_null() for c in _id_columns(key)]
        return (present[0] & present[1] if len(present) > 1 else present[0]).to_numpy()

    def group_rows(self, keys: list[str]) -> list[tuple[np.ndarray, np.ndarray]]:
        """Per key: the rows that have it, grouped by its value and in time order within a
        group, and the length of each group.

        One multithreaded hash group-by per key (run together) gives both; rows whose id is
        missing are left out (they have no history).
        """
        queries = []
        for key in keys:
            id_columns = _id_columns(key)
            ids = {c: self.column(c) for c in id_columns}
            if not self.in_time_order:
                ids = {c: v.gather(self.time_order) for c, v in ids.items()}
            queries.append(pl.LazyFrame(ids).with_row_index("_r").drop_nulls(id_columns)
                           .group_by(id_columns).agg(pl.col("_r"), pl.len().alias("_n")))
        out = []
        for groups in pl.collect_all(queries):
            positions = groups.get_column("_r").explode().to_numpy()  # UInt32: no copy
            lengths = groups.get_column("_n").to_numpy().astype(np.int64)
            out.append((positions if self.in_time_order else self.time_order[positions],
                        lengths))
        return out

def _id_columns(key: str) -> list[str]:
    return ["origin_user_id", "destination_user_id"] if key == "pair" else [f"{key}_user_id"]
