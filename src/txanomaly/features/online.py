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
place in the log, and each later row's running sums move by its contribution (one addition per
row: ``pos + 1``, ``cum + amount``...; a store does it with one ``UPDATE`` statement, without
reading the rows). Every transaction that arrives after it sees the history the batch engine
would, to rounding: the batch engine adds in timestamp order, a late arrival is added last, so
the later sums may differ from the batch's in their last bits (exact for in-order streams).
Transactions scored before it keep the scores they were given.

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
import orjson

from txanomaly.errors import InputFormatError
from txanomaly.features import formulas as fx
from txanomaly.features.spec import FeatureSet, get_feature_set

KeyId = tuple[str, str]  # (key kind, key value): ("origin", "u1"), ("pair", "u1\x1fu2")
#: How a late arrival moves a key's later rows: (kind, key, ts, amount, d, d * d, hour sine,
#: hour cosine); every row with a later timestamp gets ``pos + 1``, ``cum_before``/``cum +
#: amount``, ``d1 + d``, ``d2 + d * d``, ``hour_sin_sum + sine``, ``hour_cos_sum + cosine``
#: (see :meth:`KeyLog.shift_from`).
KeyShift = tuple[str, str, int, float, float, float, float, float]


@dataclass
class KeyLog:
    """One key's transactions in (timestamp, arrival) order, with their running sums.

    A log may hold only some of a key's rows (a store need not load all of it); ``pos`` and
    the running sums are the whole log's. To score a transaction at ``t`` it needs the last row
    at or before ``t`` and, per window ``W``, the last row at or before ``t - W`` (each with
    the rows tied with it): :meth:`OnlineFeatures.history_points`. A window's sum is then a
    difference of two running sums, whatever the number of rows in between.
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
    #: Running sums of the sine and cosine of 2 pi hour / 24 (formulas.CYCLIC's table).
    hour_sin_sum: list[float] = field(default_factory=list)
    hour_cos_sum: list[float] = field(default_factory=list)

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

    def hours_before(self, p: int) -> tuple[float, float]:
        """The sums of the hours' sines and cosines of the history before index ``p``."""
        if p == 0:
            return 0.0, 0.0
        return self.hour_sin_sum[p - 1], self.hour_cos_sum[p - 1]

    def insert(self, p: int, ts: int, seq: int, amount: float) -> float:
        """Insert a transaction at index ``p``; the rows after it move by its contribution.

        Returns ``d`` = log1p(amount) - shift, what the later rows' ``d1`` moved by.
        """
        n, cum, d1, d2, _ = self.state_before(p)
        sin_sum, cos_sum = self.hours_before(p)
        d = float(np.log1p(amount)) - self.shift
        h_sin, h_cos = hour_vector(ts)
        self.shift_from(p, amount, d, h_sin, h_cos)
        for column, value in ((self.ts, ts), (self.seq, seq), (self.amount, amount),
                              (self.pos, n), (self.cum_before, cum), (self.cum, cum + amount),
                              (self.d1, d1 + d), (self.d2, d2 + d * d),
                              (self.hour_sin_sum, sin_sum + h_sin),
                              (self.hour_cos_sum, cos_sum + h_cos)):
            column.insert(p, value)  # type: ignore[arg-type]
        return d

    def shift_from(self, p: int, amount: float, d: float, h_sin: float, h_cos: float) -> None:
        """Add a transaction inserted before index ``p`` to the running sums from ``p`` on
        (``h_sin``, ``h_cos``: its :func:`hour_vector`).

        One addition per row, the same a database does with ``SET cum = cum + ?``, so a store
        that moves the rows it did not load in SQL holds exactly what this log holds.
        """
        dd = d * d
        pos, cum_before, cum, d1, d2 = self.pos, self.cum_before, self.cum, self.d1, self.d2
        sin_sum, cos_sum = self.hour_sin_sum, self.hour_cos_sum
        for i in range(p, len(pos)):
            pos[i] += 1
            cum_before[i] += amount
            cum[i] += amount
            d1[i] += d
            d2[i] += dd
            sin_sum[i] += h_sin
            cos_sum[i] += h_cos


#: (sine, cosine) of 2 pi hour / 24 per hour, as Python floats: the values of the table both
#: engines read (:data:`txanomaly.features.formulas.CYCLIC`), without a NumPy scalar per call.
_HOUR_VECTORS = tuple(zip(fx.CYCLIC["hour_sin"].tolist(), fx.CYCLIC["hour_cos"].tolist(),
                          strict=True))


def hour_vector(ts: int) -> tuple[float, float]:
    """The sine and cosine of 2 pi hour / 24 of a timestamp (ms), from the table both engines
    read (:data:`txanomaly.features.formulas.CYCLIC`)."""
    return _HOUR_VECTORS[fx.hour_of_day(ts)]


class OnlineFeatures:
    """Evaluate a feature set one transaction at a time over per-key logs.

    By default the logs live in memory (``self.logs``); a store (the API server's database)
    can instead load the logs a transaction needs, call :meth:`compute` and :meth:`insert`, and
    write them back in the same database transaction.
    """

    def __init__(self, feature_set: str | FeatureSet = "standard"):
        self.feature_set = get_feature_set(feature_set)
        fs = self.feature_set
        self.keys = sorted({f.key for f in fs.features if f.key is not None})
        windows = [f.window_ms for f in fs.features if f.window_ms is not None]
        self.max_window_ms = max(windows, default=0)
        #: Per key, the kind its history is kept under (``FeatureSet.history_kind``), and back.
        self.kinds = {key: fs.history_kind(key) for key in self.keys}
        self._key_of = {kind: key for key, kind in self.kinds.items()}
        #: The kinds whose histories hold the origin amount (``FeatureSet.amount_source``).
        self._payer_kinds = frozenset(kind for key, kind in self.kinds.items()
                                      if fs.amount_source(key) == "origin")
        #: Per key kind, its features' windows (ms), shortest first.
        self.windows = {self.kinds[key]: sorted({f.window_ms for f in fs.features
                                                 if f.key == key and f.window_ms is not None})
                        for key in self.keys}
        self.logs: dict[KeyId, KeyLog] = {}
        self._seq = 0

    def key_ids(self, record: Mapping[str, Any]) -> list[KeyId]:
        """The keys a record has (a missing user id gives no key)."""
        ids: list[KeyId] = []
        origin, dest = record.get("origin_user_id"), record.get("destination_user_id")
        for key in self.keys:
            if key == "pair":
                if origin is not None and dest is not None:
                    ids.append((self.kinds[key], pair_key(origin, dest)))
            elif (value := record.get(f"{key}_user_id")) is not None:
                ids.append((self.kinds[key], value))
        return ids

    def history_points(self, kind: str, ts: int) -> list[int]:
        """The times whose last row (at or before it, with its ties) a store must load for a
        transaction at ``ts`` on a key of this kind: ``ts`` and ``ts - W`` for each of the
        kind's windows. Not the rows between, nor the rows after ``ts`` (they only move when
        it is inserted: :meth:`insert` says how).

        >>> OnlineFeatures("standard").history_points("origin:own", 100_000_000)
        [100000000, 96400000, 13600000]
        """
        return [ts, *(ts - w for w in self.windows[kind])]

    def compute(self, record: Mapping[str, Any], logs: Mapping[KeyId, KeyLog]) -> np.ndarray:
        """The transaction's features (raw, unscaled) given its keys' logs; changes nothing."""
        ts, amount = _timestamp(record), _amount(record)
        views = {self._key_of[kind]: _KeyView(logs.get((kind, key)), ts,
                                              self._amount_for(kind, record, amount))
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

    def insert(self, record: Mapping[str, Any], logs: dict[KeyId, KeyLog], seq: int
               ) -> list[KeyShift]:
        """Add the transaction to its keys' logs (creating a log for a new key).

        Returns a :data:`KeyShift` for each key where it is a late arrival (rows after it
        in the log), which a store applies to the rows it did not load.
        """
        ts, row_amount = _timestamp(record), _amount(record)
        shifts: list[KeyShift] = []
        for kid in self.key_ids(record):
            amount = self._amount_for(kid[0], record, row_amount)
            log = logs.get(kid)
            if log is None:
                log = logs[kid] = KeyLog(shift=float(np.log1p(amount)))
            p = log.insert_at(ts)
            d = log.insert(p, ts, seq, amount)
            if p + 1 < len(log):
                shifts.append((kid[0], kid[1], ts, amount, d, d * d, *hour_vector(ts)))
        return shifts

    def _amount_for(self, kind: str, record: Mapping[str, Any], row_amount: float) -> float:
        """The amount a key kind's history holds: the row's, or the origin amount first."""
        if kind not in self._payer_kinds:
            return row_amount
        payer = record.get("origin_amount")
        return row_amount if payer is None else float(payer)

    def process(self, record: Mapping[str, Any]) -> np.ndarray:
        """Compute the features of a transaction and add it to the in-memory logs."""
        features = self.compute(record, self.logs)
        self._seq += 1
        self.insert(record, self.logs, self._seq)
        return features


def pair_key(origin: str, destination: str) -> str:
    r"""The key of an (origin, destination) pair, unambiguous for any two ids.

    ``origin + U+001F + destination`` (the form stored so far) is kept when the origin has no
    U+001F: it then splits at its first U+001F. Otherwise (``"a\x1fb", "c"`` would be the key
    of ``"a", "b\x1fc"``) the pair is a JSON array, which never holds a raw U+001F (JSON escapes
    control characters), so it equals no key of the first form.

    >>> pair_key("alice", "bob\x1fcarol") == pair_key("alice\x1fbob", "carol")
    False
    >>> pair_key("alice\x1fbob", "carol")
    '["alice\\u001fbob","carol"]'
    """
    if "\x1f" not in origin:
        return f"{origin}\x1f{destination}"
    return orjson.dumps([origin, destination]).decode()


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
                # The window starts after the last row at or before t - W: its running sum
                # and position say what came before (cum_before of a row is bit for bit the
                # cum of the one before it), so the rows in the window need not be loaded.
                log = self.log
                last = bisect.bisect_right(log.ts, self.ts - window_ms, 0, self.p) - 1
                before = log.cum[last] if last >= 0 else 0.0
                start = log.pos[last] + 1 if last >= 0 else 0
                self._windows[window_ms] = (cum - before, self.n_prev + 1 - start)
        return self._windows[window_ms]

    def feature(self, op: str, window_ms: int | None) -> float:
        if op == "is_first_pair":
            return float(self.n_prev == 0)
        if op == "log_seconds_since_prev":
            if self.prev_ts is None:
                return fx.LOG_GAP_CAP
            return float(fx.log_gap_with_history(self.ts, self.prev_ts))
        if op == "hour_deviation":
            h_sin, h_cos = hour_vector(self.ts)
            sin_sum, cos_sum = self.log.hours_before(self.p)
            return float(fx.hour_deviation(h_sin, h_cos, sin_sum, cos_sum, self.n_prev))
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
