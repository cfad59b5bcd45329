"""The online feature engine: evaluates a :class:`FeatureSet` one transaction at a time.

Per key (an origin user, a destination user, an (origin, destination) pair) it keeps a
:class:`KeyLog`: that key's transactions in (timestamp, arrival) order with the running sums the
batch engine computes (amount sum before and after each row, shifted log-amount moments). A new
transaction's features come from the last row at or before its timestamp (all-history
aggregates) and from the rows in (t - W, t] (windows), with the same arithmetic as the batch
engine (:mod:`txanomaly.features.formulas`), so a stream that arrives in timestamp order gets
exactly the batch features.

A transaction that arrives **out of order** (its timestamp is before the key's latest one) is
scored against the stored history with timestamps at or before its own, then inserted at its
place in the log; the running sums of the later rows are recomputed, so every transaction that
arrives after it sees the same history the batch engine would. Transactions scored before it
keep the scores they were given.

>>> eng = OnlineFeatures("seed")
>>> rec = {"timestamp": 0, "origin_user_id": "u", "destination_user_id": None,
...        "origin_amount": 10.0, "destination_amount": None}
>>> eng.process(rec)[-1].item(), eng.process({**rec, "origin_amount": 20.0})[-1].item()
(0.0, 5.0)
"""

from __future__ import annotations

import bisect
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from txanomaly.errors import InputFormatError
from txanomaly.features import formulas as fx
from txanomaly.features.spec import FeatureSet, get_feature_set

KeyId = tuple[str, str]  # (key kind, key value): ("origin", "u1"), ("pair", "u1\x1fu2")


@dataclass
class KeyLog:
    """One key's transactions in (timestamp, arrival) order, with their running sums.

    A log may hold only the tail of a key's history (a store need not load all of it): the
    rows from the last one at or before ``t - max_window`` on suffice to score a transaction at
    ``t`` (see :meth:`OnlineFeatures.history_since`).
    """

    shift: float                                   # log(1 + the key's first amount)
    ts: list[int] = field(default_factory=list)
    seq: list[int] = field(default_factory=list)   # arrival number (ties keep arrival order)
    pos: list[int] = field(default_factory=list)   # 0 for the key's first transaction...
    amount: list[float] = field(default_factory=list)
    cum_before: list[float] = field(default_factory=list)  # sum of amounts before this row
    cum: list[float] = field(default_factory=list)          # ... including this row
    d1: list[float] = field(default_factory=list)  # running sum of log1p(amount) - shift
    d2: list[float] = field(default_factory=list)  # running sum of its square

    def __len__(self) -> int:
        return len(self.ts)

    def insert_at(self, ts: int) -> int:
        """Index a new transaction at ``ts`` takes: after every stored one with ts <= it."""
        return bisect.bisect_right(self.ts, ts)

    def state_before(self, p: int) -> tuple[int, float, float, float, int | None]:
        """(n, amount sum, d1, d2, previous ts) of the history before index ``p``."""
        if p == 0:
            return 0, 0.0, 0.0, 0.0, None
        i = p - 1
        return self.pos[i] + 1, self.cum[i], self.d1[i], self.d2[i], self.ts[i]

    def insert(self, p: int, ts: int, seq: int, amount: float) -> None:
        """Insert a transaction at index ``p`` and recompute the running sums from there."""
        for column, value in ((self.ts, ts), (self.seq, seq), (self.amount, amount),
                              (self.pos, 0), (self.cum_before, 0.0), (self.cum, 0.0),
                              (self.d1, 0.0), (self.d2, 0.0)):
            column.insert(p, value)  # type: ignore[arg-type]
        for i in range(p, len(self.ts)):
            n, cum, d1, d2, _ = self.state_before(i)
            d = float(np.log1p(self.amount[i])) - self.shift
            self.pos[i] = n
            self.cum_before[i] = cum
            self.cum[i] = cum + self.amount[i]
            self.d1[i] = d1 + d
            self.d2[i] = d2 + d * d


class OnlineFeatures:
    """Evaluate a feature set one transaction at a time over per-key logs.

    By default the logs live in memory (``self.logs``); a store (the API server's database)
    can instead load the logs a transaction needs, call :meth:`compute` and :meth:`insert`, and
    write them back in the same database transaction.
    """

    def __init__(self, feature_set: str | FeatureSet = "standard"):
        self.feature_set = get_feature_set(feature_set)
        self.keys = sorted({f.key for f in self.feature_set.features if f.key is not None})
        windows = [f.window_ms for f in self.feature_set.features if f.window_ms is not None]
        self.max_window_ms = max(windows, default=0)
        self.logs: dict[KeyId, KeyLog] = {}
        self._seq = 0

    def key_ids(self, record: Mapping[str, Any]) -> list[KeyId]:
        """The keys a record has (a missing user id gives no key)."""
        ids: list[KeyId] = []
        origin, dest = record.get("origin_user_id"), record.get("destination_user_id")
        for kind in self.keys:
            if kind == "pair":
                if origin is not None and dest is not None:
                    ids.append(("pair", f"{origin}\x1f{dest}"))
            elif (value := record.get(f"{kind}_user_id")) is not None:
                ids.append((kind, value))
        return ids

    def history_since(self, ts: int) -> int:
        """Rows a store must load for a transaction at ``ts``: the last one at or before this
        time, and every later row."""
        return ts - self.max_window_ms

    def compute(self, record: Mapping[str, Any], logs: Mapping[KeyId, KeyLog]) -> np.ndarray:
        """The transaction's features (raw, unscaled) given its keys' logs; changes nothing."""
        ts, amount = _timestamp(record), _amount(record)
        views = {kind: _KeyView(logs.get((kind, key)), ts, amount)
                 for kind, key in self.key_ids(record)}
        out: list[float] = []
        for feat in self.feature_set.features:
            if feat.key is None:
                out.append(_plain(feat.op, record, ts, amount))
            elif (view := views.get(feat.key)) is None:
                out.append(fx.SINGLETON[feat.op])  # missing id: no history
            else:
                out.append(view.feature(feat.op, feat.window_ms))
        return np.array(out, dtype=np.float64)

    def insert(self, record: Mapping[str, Any], logs: dict[KeyId, KeyLog], seq: int) -> None:
        """Add the transaction to its keys' logs (creating a log for a new key)."""
        ts, amount = _timestamp(record), _amount(record)
        for kid in self.key_ids(record):
            log = logs.get(kid)
            if log is None:
                log = logs[kid] = KeyLog(shift=float(np.log1p(amount)))
            log.insert(log.insert_at(ts), ts, seq, amount)

    def process(self, record: Mapping[str, Any]) -> np.ndarray:
        """Compute the features of a transaction and add it to the in-memory logs."""
        features = self.compute(record, self.logs)
        self._seq += 1
        self.insert(record, self.logs, self._seq)
        return features


def _timestamp(record: Mapping[str, Any]) -> int:
    ts = record.get("timestamp")
    if not isinstance(ts, int | np.integer):
        raise InputFormatError("online features need a parsed record with an int timestamp "
                               "(use txanomaly.schema.parse_record)")
    return int(ts)


def _amount(record: Mapping[str, Any]) -> float:
    amount = record.get("destination_amount")
    if amount is None:
        amount = record.get("origin_amount")
    if amount is None:
        raise InputFormatError("a transaction needs origin_amount or destination_amount")
    return float(amount)


def _plain(op: str, record: Mapping[str, Any], ts: int, amount: float) -> float:
    if op == "amount":
        return amount
    if op == "log_amount":
        return float(np.log1p(amount))
    if op in fx.CYCLIC:
        return float(fx.cyclic(op, ts))
    sides = {"cross_border": ("origin_country", "destination_country"),
             "currency_mismatch": ("origin_currency", "destination_currency")}[op]
    left, right = record.get(sides[0]), record.get(sides[1])
    return float(left is not None and right is not None and left != right)


class _KeyView:
    """One key's history as seen by a transaction at ``ts``: looked up once, shared by all of
    the key's features. Plain float arithmetic is IEEE-identical to the batch engine's NumPy
    arithmetic (+ - * /, sqrt); log1p goes through NumPy like the batch engine."""

    def __init__(self, log: KeyLog | None, ts: int, amount: float):
        self.log = log if log is not None else KeyLog(shift=float(np.log1p(amount)))
        self.ts, self.amount = ts, amount
        self.p = self.log.insert_at(ts)
        self.n_prev, self.cum_prev, self.d1, self.d2, self.prev_ts = self.log.state_before(
            self.p)
        self._windows: dict[int | None, tuple[float, int]] = {}

    def window(self, window_ms: int | None) -> tuple[float, int]:
        """(sum of amounts, count) over the window, the transaction itself included."""
        if window_ms not in self._windows:
            cum = self.cum_prev + self.amount  # the running sum including this transaction
            if window_ms is None:
                self._windows[window_ms] = (cum, self.n_prev + 1)
            else:
                log, p = self.log, self.p
                first = bisect.bisect_right(log.ts, self.ts - window_ms, 0, p)  # ts > t - W
                before = log.cum_before[first] if first < p else self.cum_prev
                start = log.pos[first] if first < p else self.n_prev
                self._windows[window_ms] = (cum - before, self.n_prev + 1 - start)
        return self._windows[window_ms]

    def feature(self, op: str, window_ms: int | None) -> float:
        if op == "is_first_pair":
            return float(self.n_prev == 0)
        if op == "log_seconds_since_prev":
            if self.prev_ts is None:
                return fx.LOG_GAP_CAP
            return float(fx.log_gap_with_history(self.ts, self.prev_ts))
        if op == "log_amount_zscore":
            if self.n_prev == 0:
                return 0.0
            return float(fx.log_zscore_with_history(float(np.log1p(self.amount)),
                                                    self.log.shift, self.d1, self.d2,
                                                    self.n_prev))
        total, count = self.window(window_ms)
        if op == "count":
            return float(count)
        if op == "mean_diff":
            return fx.mean_diff(self.amount, total, count)
        if op == "log_amount_to_mean":
            return float(fx.log_amount_to_mean(self.amount, total, count))
        raise AssertionError(f"unhandled op {op}")
