"""The batch engine: evaluates a :class:`FeatureSet` over a whole table at once.

Each user id column is coded once as uint32 (Polars categoricals; a pair key's codes come from
one radix sort, :func:`kernel.pair_codes`). Per key (origin user, destination user, pair), a
compiled pass (:mod:`txanomaly.features.kernel`) then walks the table once in time order with
the state the online engine keeps per key value (running sums added one by one, a trailing
pointer per window), so the two engines agree to the last bit on in-order streams. Keys run
in parallel threads.

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
    # Column-major: each feature is written as one contiguous column. The amount and its log
    # are computed straight into their columns when the set has them.
    out = np.empty((len(fs.features), frame.height), dtype=np.float64)
    own = {f.op: j for j, f in reversed(list(enumerate(fs.features)))
           if f.op in ("amount", "log_amount")}
    ctx = _Table(frame, list(dict.fromkeys(
        c for f in fs.features if f.key is not None for c in _id_columns(f.key))),
        **{op: out[j] for op, j in own.items()})
    by_key: dict[str | None, list[int]] = defaultdict(list)
    for j, feat in enumerate(fs.features):
        by_key[feat.key].append(j)

    keys = [key for key in by_key if key is not None]
    if "log_amount" in own:  # computed straight into its column
        ctx.log_amount  # noqa: B018
    for key in keys:  # computed once, before the threads share them
        key_amounts(ctx, [fs.features[j] for j in by_key[key]], fs.amount_source(key) == "origin")

    def row_features() -> None:
        for j, feat in enumerate(fs.features):
            if j in own.values():
                continue
            if feat.key is None:
                _evaluate_into(feat, ctx, out[j])
            else:  # Touch every page in order: page faults taken at random cost much more.
                out[j].fill(0.0)
        ctx.__dict__.pop("hour_weekday", None)

    def key_features(key: str) -> None:
        _key_features(ctx, key, [fs.features[j] for j in by_key[key]], by_key[key], out,
                      payer=fs.amount_source(key) == "origin")

    workers = min(len(keys), os.cpu_count() or 1)
    if frame.height <= 50_000 or workers < 2:
        row_features()
        for key in keys:
            key_features(key)
        return out.T
    # Threads (NumPy, Polars and the compiled code release the GIL): the row-level features
    # while one Polars query codes every id column (it uses all cores), then the keys.
    with ThreadPoolExecutor(workers) as pool:
        rows_done = pool.submit(row_features)
        for key in keys:  # meanwhile: the pair's sort is done before ``out`` is all touched
            ctx.key_codes(key)
        rows_done.result()
        list(pool.map(key_features, keys))
    return out.T


def _key_features(ctx: _Table, key: str, feats: list[Feature], columns: list[int],
                  out: np.ndarray, payer: bool = False) -> None:
    """Write one key's features into ``out`` (rows x features are columns x rows there);
    ``payer``: they read the origin amount first (``FeatureSet.amount_source``)."""
    from txanomaly.features import kernel  # Numba: imported when features are computed

    codes = ctx.key_codes(key)
    amount, log_amount = key_amounts(ctx, feats, payer)
    windows = sorted({-1 if f.window_ms is None else f.window_ms for f in feats})
    kernel.key_pass(codes, None if ctx.in_time_order else ctx.time_order, ctx.ts, amount,
                    log_amount, windows, columns, [kernel.OPS[f.op] for f in feats],
                    [windows.index(-1 if f.window_ms is None else f.window_ms) for f in feats],
                    out)
    finish_key_features(feats, columns, out, codes, log_amount)


#: The ops that read log(1 + amount); the others never look at it.
_LOG_OPS = frozenset({"log_amount", "log_amount_zscore", "log_amount_to_mean"})


def key_amounts(ctx: _Table, feats: list[Feature], payer: bool
                ) -> tuple[np.ndarray, np.ndarray]:
    """The amount and log(1 + amount) a key's features read (``payer``: the origin amount
    first). When none of them reads the log, it is not computed (``log1p`` is most of a
    ``seed`` chunk's NumPy time) and the amount stands in for it, unread."""
    amount = ctx.payer_amount if payer else ctx.amount
    if not any(f.op in _LOG_OPS for f in feats):
        return amount, amount
    return amount, ctx.payer_log_amount if payer else ctx.log_amount


def finish_key_features(feats: list[Feature], columns: list[int], out: np.ndarray,
                        codes: np.ndarray, log_amount: np.ndarray) -> None:
    """What the compiled pass leaves to NumPy (``log1p``), and the value of the rows without
    the key; ``out`` is features x rows, ``codes`` the key's code per row."""
    from txanomaly.features import kernel

    keyless = codes == kernel.MISSING  # no history (DESIGN section 3): not written by the pass
    with np.errstate(divide="ignore", invalid="ignore"):  # keyless rows: overwritten below
        for j, feat in zip(columns, feats, strict=True):
            column = out[j]
            if feat.op == "log_amount_to_mean":  # the pass wrote the window mean
                np.log1p(column, out=column)
                np.subtract(log_amount, column, out=column)
            elif feat.op == "log_seconds_since_prev":  # ... the capped gap in seconds
                first = column == kernel.NO_PREVIOUS
                np.log1p(column, out=column)
                column[first] = fx.LOG_GAP_CAP
            column[keyless] = fx.SINGLETON[feat.op]


def _evaluate_into(feat: Feature, ctx: _Table, target: np.ndarray) -> None:
    """Write a row-level feature into ``target`` (one column of the output)."""
    op = feat.op
    if op == "amount":
        target[:] = ctx.amount
    elif op == "log_amount":
        target[:] = ctx.log_amount
    elif op in fx.CYCLIC:
        # Indexing, then a copy: a third of np.take's time with ``out`` and int8 indices.
        target[:] = fx.CYCLIC[op][ctx.hour_weekday[0 if op.startswith("hour") else 1]]
    elif op == "cross_border":
        ctx.differs_into("origin_country", "destination_country", target)
    elif op == "currency_mismatch":
        ctx.differs_into("origin_currency", "destination_currency", target)
    else:
        raise AssertionError(f"{op} is evaluated per key (feature_matrix)")


#: Rows that Polars evaluates at a time when a result is copied into NumPy: its temporaries
#: stay small instead of costing a whole column more.
_SLICE_ROWS = 1 << 20


def _copy_into(frame: pl.DataFrame, expr: pl.Expr, target: np.ndarray) -> None:
    """Evaluate ``expr`` over ``frame`` into ``target``, a slice of rows at a time."""
    for start in range(0, frame.height, _SLICE_ROWS):
        part = frame.slice(start, _SLICE_ROWS).select(expr).to_series().to_numpy()
        target[start:start + part.size] = part


class _Table:
    """The columns every feature needs, computed once per call."""

    def __init__(self, frame: pl.DataFrame, id_columns: list[str],
                 amount: np.ndarray | None = None, log_amount: np.ndarray | None = None):
        """``amount``, ``log_amount``: where to put those columns (default: new arrays)."""
        if "timestamp" not in frame.columns:
            raise InputFormatError("features need a 'timestamp' column (int ms since epoch)")
        self.frame = frame
        self.n = frame.height
        self.id_columns = id_columns
        ts = frame.get_column("timestamp")
        if ts.dtype == pl.Int64 and ts.n_chunks() == 1 and not ts.has_nulls():
            self.ts = ts.to_numpy()  # no copy
        else:
            self.ts = np.empty(self.n, np.int64)
            _copy_into(frame, pl.col("timestamp").cast(pl.Int64), self.ts)
        amounts = [pl.col(c) for c in ("destination_amount", "origin_amount") if c in frame.columns]
        if not amounts:
            raise InputFormatError("features need origin_amount or destination_amount")
        self.amount = np.empty(self.n) if amount is None else amount
        _copy_into(frame, pl.coalesce(amounts).cast(pl.Float64).fill_null(np.nan), self.amount)
        if np.isnan(self.amount).any():
            bad = int(np.flatnonzero(np.isnan(self.amount))[0])
            raise InputFormatError(f"record {bad}: no amount (validate input with "
                                   "txanomaly.io.load_transactions first)")
        self._log_amount_into = log_amount
        self._key_codes: dict[str, np.ndarray] = {}

    @cached_property
    def log_amount(self) -> np.ndarray:
        return np.log1p(self.amount, out=self._log_amount_into)

    @cached_property
    def payer_amount(self) -> np.ndarray:
        """The origin amount, falling back to the destination amount."""
        if "origin_amount" not in self.frame.columns:
            return self.amount
        out = np.empty(self.n)
        _copy_into(self.frame, pl.coalesce([c for c in ("origin_amount", "destination_amount")
                                            if c in self.frame.columns]).cast(pl.Float64), out)
        return out

    @cached_property
    def payer_log_amount(self) -> np.ndarray:
        return self.log_amount if self.payer_amount is self.amount else np.log1p(
            self.payer_amount)

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
        return np.argsort(self.ts, kind="stable").astype(np.uint32)

    @cached_property
    def id_codes(self) -> dict[str, np.ndarray]:
        """A uint32 code per row of each user id column the keys need (equal ids, equal
        codes; ``kernel.MISSING`` for a missing id), from one Polars query.

        A Categorical column's codes are used as they are, unless they are sparse (categories
        shared with much other data: the pass keeps state per code); a String column is coded
        through fresh categories of its own, so its codes stay below its number of ids.
        """
        from txanomaly.features import kernel

        missing = pl.lit(kernel.MISSING, dtype=pl.UInt32)
        exprs = []
        for name in self.id_columns:
            if name not in self.frame.columns:
                exprs.append(pl.repeat(missing, self.n).alias(name))
                continue
            column = pl.col(name)
            coded = isinstance(self.frame.schema[name], pl.Categorical | pl.Enum)
            if not coded or (self.frame.select(column.to_physical().max()).item() or 0) > (
                    2 * self.n + 1024):
                column = column.cast(pl.String).cast(pl.Categorical(pl.Categories.random()))
            exprs.append(column.to_physical().cast(pl.UInt32).fill_null(missing))
        codes = self.frame.select(exprs)
        return {name: codes.get_column(name).to_numpy() for name in codes.columns}

    def key_codes(self, key: str) -> np.ndarray:
        """The key's uint32 code per row (``kernel.MISSING``: the row has no such key)."""
        from txanomaly.features import kernel

        if key not in self._key_codes:
            ids = [self.id_codes[c] for c in _id_columns(key)]
            self._key_codes[key] = ids[0] if len(ids) == 1 else kernel.pair_codes(*ids)
        return self._key_codes[key]

    def differs_into(self, left: str, right: str, target: np.ndarray) -> None:
        """1.0 where both columns are known and differ, else 0.0."""
        if left not in self.frame.columns or right not in self.frame.columns:
            target.fill(0.0)
            return
        a, b = pl.col(left), pl.col(right)
        if self.frame.schema[left] != self.frame.schema[right]:  # e.g. text and categorical
            a, b = a.cast(pl.String), b.cast(pl.String)
        _copy_into(self.frame, (a != b).fill_null(False).cast(pl.Float64), target)


def _id_columns(key: str) -> list[str]:
    return ["origin_user_id", "destination_user_id"] if key == "pair" else [f"{key}_user_id"]
