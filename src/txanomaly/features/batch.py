"""The batch feature engine: evaluates a :class:`FeatureSet` over a whole table at once.

Per key (origin user, destination user, pair) the rows that have the key are sorted by
(key, time order); every window aggregate is then a difference of per-key running sums, found
with one ``searchsorted`` per window length. Running sums are sequential per key (Polars
``cum_sum().over``), the same arithmetic the online engine does one transaction at a time, so the
two agree to the last bit on in-order streams.

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
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import polars as pl

from txanomaly.errors import InputFormatError
from txanomaly.features import formulas as fx
from txanomaly.features.spec import Feature, FeatureSet, get_feature_set

_INT63 = 2**62  # headroom below int64's limit for composite keys
#: Rows of one key's history processed at a time (whole groups): bounds peak memory.
HISTORY_CHUNK_ROWS = 1_000_000


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

    def run(key: str | None) -> None:
        if key is None:
            for j in by_key[key]:
                out[j] = _evaluate(fs.features[j], ctx)
            return
        for j in by_key[key]:  # rows without the key: no history (DESIGN section 3)
            out[j] = fx.SINGLETON[fs.features[j].op]
        # Groups (one per id) are independent: a chunk of whole groups at a time bounds the
        # key's working arrays by the chunk, not the table.
        for hist in ctx.histories(key):
            for j in by_key[key]:
                out[j][hist.rows] = _user_op(fs.features[j], hist)

    ctx.time_order  # computed once, before the threads share it  # noqa: B018
    # Each key's sort / running sums / searchsorted release the GIL: one thread per key.
    workers = min(len(by_key), os.cpu_count() or 1)
    if workers > 1 and frame.height > 50_000:
        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(run, by_key))
    else:
        for key in by_key:
            run(key)
    return out.T


def _evaluate(feat: Feature, ctx: _Table) -> np.ndarray:
    op = feat.op
    if op == "amount":
        return ctx.amount
    if op == "log_amount":
        return np.log1p(ctx.amount)
    if op in ("hour_sin", "hour_cos", "day_sin", "day_cos"):
        angle = ctx.hour_angle if op.startswith("hour") else ctx.day_angle
        return np.sin(angle) if op.endswith("sin") else np.cos(angle)
    if op == "cross_border":
        return ctx.differs("origin_country", "destination_country")
    if op == "currency_mismatch":
        return ctx.differs("origin_currency", "destination_currency")
    raise AssertionError(f"{op} is evaluated per key (feature_matrix)")


def _user_op(feat: Feature, h: _KeyHistory) -> np.ndarray:
    """The feature over the rows that have the key, in (key, time) order."""
    a = h.amount
    if feat.op == "mean_diff":
        return fx.mean_diff(a, *h.window(feat.window_ms))
    if feat.op == "count":
        return h.window(feat.window_ms)[1].astype(np.float64)
    if feat.op == "log_amount_to_mean":
        return fx.log_amount_to_mean(a, *h.window(feat.window_ms))
    if feat.op == "log_amount_zscore":
        d, d2 = h.log_moments
        la = np.log1p(a)
        return fx.log_zscore(la, la[h.start], h.previous(d), h.previous(d2), h.n_prev)
    if feat.op == "log_seconds_since_prev":
        return fx.log_gap(h.ts, h.previous(h.ts), h.n_prev > 0)
    if feat.op == "is_first_pair":
        return (h.n_prev == 0).astype(np.float64)
    raise AssertionError(f"unhandled op {feat.op}")


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
    def hour_angle(self) -> np.ndarray:
        return fx.hour_angle(self.ts)

    @cached_property
    def day_angle(self) -> np.ndarray:
        return fx.day_angle(self.ts)

    @cached_property
    def in_time_order(self) -> bool:
        return self.n < 2 or bool(np.all(self.ts[1:] >= self.ts[:-1]))

    @cached_property
    def time_order(self) -> np.ndarray:
        """Row indices ordered by timestamp, ties in input order."""
        if self.in_time_order:
            return np.arange(self.n, dtype=np.int64)
        return np.argsort(self.ts, kind="stable")

    def column(self, name: str) -> pl.Series:
        if name in self.frame.columns:
            return self.frame.get_column(name).cast(pl.String)
        return pl.Series(name, [None] * self.n, dtype=pl.String)

    def differs(self, left: str, right: str) -> np.ndarray:
        a, b = self.column(left), self.column(right)
        return (a.is_not_null() & b.is_not_null() & (a != b)).fill_null(False).to_numpy(
        ).astype(np.float64)

    def group_rows(self, key: str) -> tuple[np.ndarray, np.ndarray]:
        """Rows that have ``key``, grouped by its value and in time order within a group, and
        the length of each group.

        One multithreaded hash group-by of the ids (in time order) gives both; rows whose id is
        missing are left out (they have no history).
        """
        id_columns = ["origin_user_id", "destination_user_id"] if key == "pair" else [
            f"{key}_user_id"]
        ids = {c: self.column(c) for c in id_columns}
        if not self.in_time_order:
            ids = {c: v.gather(self.time_order) for c, v in ids.items()}
        frame = pl.DataFrame({**ids, "_r": np.arange(self.n, dtype=np.int64)})
        groups = (frame.drop_nulls(id_columns).group_by(id_columns)
                  .agg(pl.col("_r"), pl.len().alias("_n")))
        positions = groups.get_column("_r").explode().to_numpy()
        lengths = groups.get_column("_n").to_numpy().astype(np.int64)
        rows = positions if self.in_time_order else self.time_order[positions]
        return rows, lengths

    def histories(self, key: str) -> Iterator[_KeyHistory]:
        """The key's history in chunks of whole groups of about HISTORY_CHUNK_ROWS rows."""
        chunk_rows = HISTORY_CHUNK_ROWS
        rows, lengths = self.group_rows(key)
        ends = np.cumsum(lengths)
        lo = 0  # group index
        while lo < lengths.size:
            base = int(ends[lo - 1]) if lo else 0
            hi = max(int(np.searchsorted(ends, base + chunk_rows, side="right")), lo + 1)
            yield _KeyHistory.build(self, rows[base:int(ends[hi - 1])], lengths[lo:hi])
            lo = hi


@dataclass
class _KeyHistory:
    """The rows that have a key, sorted by (key, time order), and their running aggregates."""

    rows: np.ndarray        # table row of each sorted position
    group: np.ndarray       # dense group id (0..G-1) per sorted position
    start: np.ndarray       # sorted position of the first row of the same group
    ts: np.ndarray
    amount: np.ndarray
    _windows: dict[int | None, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)

    @classmethod
    def build(cls, table: _Table, rows: np.ndarray, lengths: np.ndarray) -> _KeyHistory:
        """From rows grouped by key value (time order within a group) and the group lengths."""
        group = np.repeat(np.arange(lengths.size, dtype=np.int64), lengths)
        starts = np.cumsum(lengths) - lengths
        return cls(rows, group, starts[group], table.ts[rows], table.amount[rows])

    @cached_property
    def first_of_group(self) -> np.ndarray:
        return np.flatnonzero(self.start == np.arange(self.rows.size))

    @cached_property
    def position(self) -> np.ndarray:
        """0 for a key's first transaction, 1 for its second..."""
        return np.arange(self.rows.size, dtype=np.int64) - self.start

    @property
    def n_prev(self) -> np.ndarray:
        return self.position

    def _running_sum(self, values: np.ndarray) -> np.ndarray:
        """Per-group inclusive running sums, added one by one as the online engine adds them."""
        frame = pl.DataFrame({"g": self.group, "v": values})
        return frame.select(pl.col("v").cum_sum().over("g")).to_series().to_numpy()

    @cached_property
    def prefix_sum(self) -> np.ndarray:
        return self._running_sum(self.amount)

    @cached_property
    def log_moments(self) -> tuple[np.ndarray, np.ndarray]:
        """Running sums of d and d^2, d = log(1+amount) - the group's first log(1+amount).

        Shifted data keep the variance formula stable (Chan, Golub & LeVeque, 1983).
        """
        la = np.log1p(self.amount)
        d = la - la[self.start]
        frame = pl.DataFrame({"g": self.group, "d": d, "d2": d * d})
        run = frame.select(pl.col("d", "d2").cum_sum().over("g"))
        return run.get_column("d").to_numpy(), run.get_column("d2").to_numpy()

    def window(self, window_ms: int | None) -> tuple[np.ndarray, np.ndarray]:
        """(sum of amounts, count) over each row's window (all history when ``None``).

        Cached per window length: several features share the same window.
        """
        if window_ms not in self._windows:
            self._windows[window_ms] = self._window(window_ms)
        return self._windows[window_ms]

    def _window(self, window_ms: int | None) -> tuple[np.ndarray, np.ndarray]:
        cum = self.prefix_sum
        if window_ms is None:
            return cum, self.position + 1
        first = _window_start(self.group, self.ts, window_ms)
        idx = np.arange(self.rows.size, dtype=np.int64)
        return cum - self.previous(cum)[first], idx - first + 1

    def previous(self, values: np.ndarray) -> np.ndarray:
        """Each row's value at the previous position of its group (0 for a first row).

        For running sums this is the exclusive sum: exactly the state the online engine holds
        before it adds the row.
        """
        prev = np.empty_like(values)
        prev[:1] = 0
        prev[1:] = values[:-1]
        prev[self.first_of_group] = 0
        return prev


def _window_start(group: np.ndarray, ts: np.ndarray, window_ms: int) -> np.ndarray:
    """First sorted position of each row's window (t - W, t] within its group.

    Groups are laid side by side on one axis (group * span + t) so a single searchsorted
    serves all of them; span exceeds the time range plus W, so no window crosses a group.
    """
    if ts.size == 0:
        return np.zeros(0, dtype=np.int64)
    t0 = int(ts.min())
    span = int(ts.max()) - t0 + window_ms + 1
    per_block = max(_INT63 // span, 1)
    out = np.empty(ts.size, dtype=np.int64)
    lo = 0
    while lo < ts.size:  # one block unless the ids x time range overflow int64
        g0 = int(group[lo])
        hi = int(np.searchsorted(group, g0 + per_block, side="left"))
        axis = (group[lo:hi] - g0) * span + (ts[lo:hi] - t0)
        out[lo:hi] = lo + np.searchsorted(axis, axis - window_ms, side="right")
        lo = hi
    return out
