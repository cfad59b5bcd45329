"""What the non-P2P domains share: splitting the labelled total into kinds and episodes,
customers' history and rhythm, and turning arrays of payments into flat records and labels.

Every domain builds a :class:`Payments` (one entry per transaction, in any order) and hands it
to :func:`to_result`, which sorts it by time, numbers the transactions and writes the records.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields

import numpy as np
import polars as pl

from txanomaly.schema import EXTRA_COLUMN, FLAT_COLUMNS, TRANSACTION_STATES, TRANSACTION_TYPES
from txanomaly.synth.generator import SynthResult
from txanomaly.synth.labels import labels_frame
from txanomaly.synth.population import CURRENCIES, DAY_MS, HOUR_MS, RATE, weights
from txanomaly.synth.records import _ids, _pick

_STATE_P = weights([{"SUCCESSFUL": 0.95, "DECLINED": 0.03, "REVERSED": 0.01,
                     "REFUNDED": 0.01}], TRANSACTION_STATES)[0]


@dataclass(frozen=True)
class Payments:
    """Transactions before they become records: one entry per transaction.

    Ids are numbers, written with their side's prefix (``c-`` card holders, ``m-`` merchants,
    ...). ``amount`` is on the origin side, in the origin currency; the destination amount is
    converted at the fixed rates of :mod:`~txanomaly.synth.population` when the currencies
    differ. ``category`` indexes the domain's merchant categories (-1: none), written to
    ``extra`` as ``destinationPaymentDetails.merchantDetails.category``.
    """

    origin: np.ndarray
    destination: np.ndarray
    time: np.ndarray  # ms since the start
    amount: np.ndarray
    origin_country: np.ndarray  # indexes into the domain's country codes
    destination_country: np.ndarray
    origin_currency: np.ndarray  # indexes into CURRENCIES
    destination_currency: np.ndarray
    origin_method: np.ndarray  # indexes into the domain's method names
    destination_method: np.ndarray
    type: np.ndarray  # indexes into TRANSACTION_TYPES
    category: np.ndarray
    kind: np.ndarray  # 0 normal, i + 1 for the domain's kinds[i]

    @staticmethod
    def concat(parts: Sequence[Payments]) -> Payments:
        return Payments(*(np.concatenate([getattr(p, f.name) for p in parts])
                          for f in fields(Payments)))

    def take(self, index: np.ndarray) -> Payments:
        return Payments(*(getattr(self, f.name)[index] for f in fields(Payments)))

    def replace(self, **changes: np.ndarray) -> Payments:
        return Payments(**{f.name: changes.get(f.name, getattr(self, f.name))
                           for f in fields(Payments)})


@dataclass(frozen=True)
class Vocabulary:
    """How a domain's numbers become text: id prefixes, countries, methods, categories."""

    origin_prefix: str
    destination_prefix: str
    countries: tuple[str, ...]
    methods: tuple[str, ...]
    categories: tuple[str, ...] = ()


def payments(origin: np.ndarray, destination: np.ndarray, time: np.ndarray, amount: np.ndarray,
             *, origin_country: np.ndarray | int, destination_country: np.ndarray | int,
             origin_currency: np.ndarray | int, destination_currency: np.ndarray | int,
             origin_method: np.ndarray | int, destination_method: np.ndarray | int,
             type_: np.ndarray | int, kind: np.ndarray | int = 0,
             category: np.ndarray | int = -1) -> Payments:
    """A :class:`Payments`, broadcasting the scalar fields."""
    n = len(origin)

    def full(value: np.ndarray | int, dtype: type = np.int64) -> np.ndarray:
        return np.broadcast_to(np.asarray(value, dtype=dtype), (n,)).copy()

    return Payments(full(origin), full(destination), full(time), full(amount, np.float64),
                    full(origin_country), full(destination_country), full(origin_currency),
                    full(destination_currency), full(origin_method), full(destination_method),
                    full(type_), full(category), full(kind, np.int8))


def split_counts(total: int, shares: Sequence[float]) -> list[int]:
    """Split ``total`` by ``shares`` into whole numbers that sum to it (largest remainders)."""
    raw = np.asarray(shares, dtype=np.float64) / sum(shares) * total
    counts = np.floor(raw).astype(np.int64)
    for i in np.argsort(-(raw - counts), kind="stable")[: total - int(counts.sum())]:
        counts[i] += 1
    return [int(c) for c in counts]


def episode_sizes(rng: np.random.Generator, total: int, sizes: tuple[int, int]) -> np.ndarray:
    """Sizes in ``sizes`` (inclusive) summing to ``total``; a short remainder joins the last.

    With ``total`` below the smallest size there is one episode of ``total`` (none for 0).
    """
    if total <= 0:
        return np.zeros(0, dtype=np.int64)
    drawn = rng.integers(sizes[0], sizes[1] + 1, total // sizes[0] + 1)
    ends = np.cumsum(drawn)
    k = int(np.searchsorted(ends, total))  # the episode that reaches the total
    out = drawn[: k + 1].copy()
    out[k] = total - (int(ends[k - 1]) if k else 0)
    if out[k] < sizes[0] and k:
        out[k - 1] += out[k]
        out = out[:k]
    return out


def pick_ready(rng: np.random.Generator, ready: np.ndarray, days: int, k: int,
               among: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``k`` actors with history (in ``among`` where possible) and a day after it for each.

    ``ready`` is each actor's :func:`~txanomaly.synth.anomalies.ready_day`: the day of their
    MIN_HISTORY-th transaction.
    """
    eligible = ready < days - 1
    if not eligible.any():
        eligible = np.ones(len(ready), dtype=bool)
    if among is not None and (eligible & among).any():
        eligible &= among
    actor = rng.choice(np.flatnonzero(eligible), k)
    low = np.minimum(ready[actor] + 1, days - 1)
    day = low + (rng.random(k) * (days - low)).astype(np.int64)
    return actor, day


def rhythm(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Each customer's usual hour (centre, spread): daytime, a few late risers."""
    return rng.uniform(9.0, 19.0, size), rng.uniform(1.0, 2.5, size)


def time_in_rhythm(rng: np.random.Generator, centre: np.ndarray, spread: np.ndarray,
                   day: np.ndarray) -> np.ndarray:
    """A time on ``day`` within two spreads of the centre hour (cut to the day)."""
    z = np.clip(rng.standard_normal(len(day)), -2.0, 2.0)
    hours = np.clip(centre + spread * z, 0.0, 23.99)
    return day * DAY_MS + (hours * HOUR_MS).astype(np.int64)


def hours_between(rng: np.random.Generator, day: np.ndarray, low: float,
                  high: float) -> np.ndarray:
    """A time on ``day`` between the hours ``low`` and ``high`` (high may pass midnight)."""
    hours = rng.uniform(low, high, len(day))
    return day * DAY_MS + (hours * HOUR_MS).astype(np.int64)


def fold_times(time: np.ndarray, days: int) -> np.ndarray:
    """Times past the period's end moved into its last hour (episodes that run over)."""
    end = days * DAY_MS - 1
    return np.where(time > end, end - (time % HOUR_MS), time)


def to_result(rng: np.random.Generator, plan: Payments, vocabulary: Vocabulary,
              kinds: tuple[str, ...], start_ms: int, days: int,
              state: np.ndarray | None = None) -> SynthResult:
    """Sort by time and write the flat records and their labels.

    Times past the period (an episode that runs over the last midnight) are folded back
    into its last hour (:func:`fold_times`), so every timestamp falls in
    ``[start, start + days)``.
    """
    plan = plan.replace(time=fold_times(plan.time, days))
    order = np.argsort(plan.time, kind="stable")
    plan = plan.take(order)
    n = len(plan.time)
    state = (rng.choice(len(TRANSACTION_STATES), n, p=_STATE_P) if state is None
             else state[order])
    origin_rate = RATE[plan.origin_currency]
    destination_rate = RATE[plan.destination_currency]
    origin_amount = np.maximum(np.round(plan.amount, 2), 0.01)
    destination_amount = np.where(
        plan.origin_currency == plan.destination_currency, origin_amount,
        np.maximum(np.round(origin_amount * destination_rate / origin_rate, 2), 0.01))
    width = max(6, len(str(max(int(plan.origin.max(initial=0)),
                               int(plan.destination.max(initial=0))))))
    columns = {
        "transaction_id": _ids("tx-", np.arange(n), max(9, len(str(n - 1)))),
        "timestamp": pl.Series(plan.time + start_ms, dtype=pl.Int64),
        "type": _pick(TRANSACTION_TYPES, plan.type),
        "state": _pick(TRANSACTION_STATES, state),
        "origin_user_id": _ids(vocabulary.origin_prefix, plan.origin, width),
        "destination_user_id": _ids(vocabulary.destination_prefix, plan.destination, width),
        "origin_amount": pl.Series(origin_amount),
        "origin_currency": _pick(CURRENCIES, plan.origin_currency),
        "origin_country": _pick(vocabulary.countries, plan.origin_country),
        "destination_amount": pl.Series(destination_amount),
        "destination_currency": _pick(CURRENCIES, plan.destination_currency),
        "destination_country": _pick(vocabulary.countries, plan.destination_country),
        "origin_method": _pick(vocabulary.methods, plan.origin_method),
        "destination_method": _pick(vocabulary.methods, plan.destination_method),
    }
    frame = pl.DataFrame({name: columns[name].alias(name) for name in FLAT_COLUMNS})
    frame = frame.with_columns(_extra(plan.category, vocabulary.categories))
    labels = labels_frame(frame["transaction_id"], plan.kind, kinds)
    return SynthResult(frame, labels, kinds)


def _extra(category: np.ndarray, categories: tuple[str, ...]) -> pl.Series:
    """The merchant category as the raw record's extra field (null where there is none)."""
    if not categories:
        return pl.Series(EXTRA_COLUMN, [None] * len(category), dtype=pl.Utf8)
    texts = [f'{{"destinationPaymentDetails":{{"merchantDetails":{{"category":"{c}"}}}}}}'
             for c in categories]
    codes = pl.Series(np.maximum(category, 0))
    text = pl.Series(texts, dtype=pl.Utf8).gather(codes)
    return pl.select(pl.when(pl.Series(category) >= 0).then(text)).to_series().alias(
        EXTRA_COLUMN)
