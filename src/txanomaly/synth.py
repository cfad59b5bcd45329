"""Labelled synthetic transactions: the demo data, and the ground truth for evaluation.

:func:`generate` makes ``n`` transactions by ``users`` account holders over ``days`` days, in
the flat record shape of :mod:`txanomaly.schema`, and labels a share of them as anomalies of
five kinds (:data:`ANOMALY_KINDS`). Everything is vectorised NumPy drawn from one
``np.random.default_rng(seed)``: the same arguments give the same data, on any machine.

Each user has a home country (hence a currency and payment-method habits), an amount level
(log-normal across users), a daily rhythm (most are active in the daytime only), an activity
level, and a few favourite counterparties. Every transaction has an *actor*, the user whose
habits it follows: the origin user, or the destination user of a deposit. About a third of the
records lack the origin user id (deposits from outside), and a third the destination user id
(payments and withdrawals to outside accounts), as in real exports (DESIGN section 2).

Anomalies are extra transactions of users with history, each unusual in one way a per-user
feature can see; docs/synthetic-data.md describes them and how the rate is shared out.

>>> result = generate(2_000, users=50, days=7, anomaly_rate=0.05, seed=1)
>>> result.transactions.height, result.labels["is_anomaly"].sum()
(2000, 100)
>>> result.transactions.columns == [*FLAT_COLUMNS, "extra"]
True
>>> counts = result.anomaly_counts()
>>> list(counts), sum(counts.values())
(['amount_spike', 'burst', 'unusual_hour', 'new_counterparty_large', 'cross_border'], 100)
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from datetime import UTC, date, datetime
from pathlib import Path

import numpy as np
import orjson
import polars as pl

from txanomaly.errors import TxAnomalyError
from txanomaly.schema import EXTRA_COLUMN, FLAT_COLUMNS, RAW_PATHS, TRANSACTION_STATES, to_raw

logger = logging.getLogger(__name__)

ANOMALY_KINDS: tuple[str, ...] = ("amount_spike", "burst", "unusual_hour",
                                  "new_counterparty_large", "cross_border")
OUTPUT_SUFFIXES: tuple[str, ...] = (".json", ".jsonl", ".parquet")
LABEL_COLUMNS: tuple[str, ...] = ("transactionId", "is_anomaly", "kind")
DEFAULT_START = date(2024, 1, 1)  # a Monday

HOUR_MS = 3_600_000
DAY_MS = 86_400_000

# Country: (currency, share of users, payment-method weights).
_COUNTRY_TABLE: dict[str, tuple[str, float, dict[str, float]]] = {
    "US": ("USD", 0.22, {"CARD": 0.5, "ACH": 0.3, "WALLET": 0.15, "CHECK": 0.05}),
    "GB": ("GBP", 0.14, {"CARD": 0.55, "GENERIC_BANK_ACCOUNT": 0.35, "WALLET": 0.1}),
    "DE": ("EUR", 0.14, {"CARD": 0.4, "IBAN": 0.5, "WALLET": 0.05, "CASH": 0.05}),
    "FR": ("EUR", 0.08, {"CARD": 0.5, "IBAN": 0.4, "WALLET": 0.1}),
    "ES": ("EUR", 0.06, {"CARD": 0.5, "IBAN": 0.35, "WALLET": 0.1, "CASH": 0.05}),
    "NL": ("EUR", 0.04, {"CARD": 0.3, "IBAN": 0.6, "WALLET": 0.1}),
    "IN": ("INR", 0.16, {"UPI": 0.6, "CARD": 0.25, "WALLET": 0.15}),
    "KE": ("KES", 0.08, {"MPESA": 0.75, "CARD": 0.2, "CASH": 0.05}),
    "BR": ("BRL", 0.08, {"CARD": 0.45, "GENERIC_BANK_ACCOUNT": 0.35, "WALLET": 0.2}),
}
#: Units per US dollar (rounded 2024 averages): amounts are converted between currencies with
#: these, and each user's amount level is drawn in dollars and converted to the home currency.
_USD_RATE = {"USD": 1.0, "GBP": 0.79, "EUR": 0.92, "INR": 83.0, "KES": 130.0, "BRL": 5.0}
_COUNTRIES = tuple(_COUNTRY_TABLE)
_CURRENCIES = tuple(_USD_RATE)
_METHODS = ("CARD", "IBAN", "ACH", "UPI", "GENERIC_BANK_ACCOUNT", "SWIFT", "WALLET", "MPESA",
            "CHECK", "CASH")
_TYPES = ("DEPOSIT", "TRANSFER", "EXTERNAL_PAYMENT", "WITHDRAWAL", "REFUND", "OTHER")

# Which user ids a record has. The actor is the origin user except in ORIGIN_MISSING (a deposit
# into the actor's account from outside), where it is the destination user.
BOTH, ORIGIN_MISSING, DEST_MISSING, NEITHER = range(4)
_TYPE_WEIGHTS = (  # per pattern, over _TYPES
    {"TRANSFER": 0.9, "REFUND": 0.05, "OTHER": 0.05},
    {"DEPOSIT": 0.95, "REFUND": 0.03, "OTHER": 0.02},
    {"EXTERNAL_PAYMENT": 0.6, "WITHDRAWAL": 0.35, "OTHER": 0.05},
    {"OTHER": 0.5, "DEPOSIT": 0.25, "WITHDRAWAL": 0.25},
)
_STATE_WEIGHTS = {"SUCCESSFUL": 0.9, "CREATED": 0.015, "PROCESSING": 0.015, "SENT": 0.02,
                  "DECLINED": 0.02, "SUSPENDED": 0.005, "REFUNDED": 0.01, "EXPIRED": 0.005,
                  "REVERSED": 0.01}
_WEEKDAY_WEIGHT = (1.0, 1.0, 1.0, 1.05, 1.15, 0.8, 0.6)  # Monday first: quieter weekends

NIGHT_OWL_SHARE = 0.1  # users whose rhythm may fall anywhere in the day
#: Daytime users' activity centres and spreads (hours); times are centre + spread * z with z
#: clipped to +-2, so daytime users only ever transact between 06:00 and 21:00.
DAYTIME_CENTER = (10.0, 17.0)
DAYTIME_SPREAD = (0.75, 2.0)
INTERNATIONAL_SHARE = 0.15  # users who sometimes deal abroad; the rest are strictly domestic
FOREIGN_SHARE = 0.3  # of an international user's new counterparties and outside accounts
EXPLORE_SHARE = 0.1  # of transfers that go to someone outside the user's favourites
MAX_FAVOURITES = 8
MIN_HISTORY = 5  # origin-side transactions a user has before any of their anomalies
BURST_SIZES = (4, 10)  # inclusive
BURST_WINDOW_MS = 5 * 60_000
UNUSUAL_HOURS = (2.5, 3.5)  # the unusual_hour anomalies fall between 02:30 and 03:30 UTC
SPIKE_FACTOR = (10.0, 30.0)  # x the user's median amount
NEW_COUNTERPARTY_FACTOR = (5.0, 15.0)
CROSS_BORDER_FACTOR = (1.0, 3.0)


@dataclass(frozen=True)
class SynthResult:
    """Generated transactions and their labels, row for row, in timestamp order.

    Attributes
    ----------
    transactions : polars.DataFrame
        Flat records: the columns of :data:`txanomaly.schema.FLAT_COLUMNS` plus ``extra``.
    labels : polars.DataFrame
        ``transaction_id``, ``is_anomaly`` (0/1) and ``kind`` (null for normal transactions).
    """

    transactions: pl.DataFrame
    labels: pl.DataFrame

    def anomaly_counts(self) -> dict[str, int]:
        """Return the number of labelled transactions of each kind (every kind, zeros too)."""
        counts = dict.fromkeys(ANOMALY_KINDS, 0)
        for kind, count in self.labels["kind"].drop_nulls().value_counts().iter_rows():
            counts[kind] = count
        return counts


@dataclass(frozen=True)
class _Population:
    """Per-user habits; every array has one entry per user."""

    country: np.ndarray
    log_level: np.ndarray  # mean log amount, home currency
    log_spread: np.ndarray
    hour_center: np.ndarray
    hour_spread: np.ndarray
    daytime: np.ndarray
    international: np.ndarray
    activity: np.ndarray  # probability that a transaction is this user's
    favourites: np.ndarray  # (users, MAX_FAVOURITES)
    n_favourites: np.ndarray
    method: np.ndarray  # preferred payment method

    @property
    def size(self) -> int:
        return len(self.country)


@dataclass(frozen=True)
class _Plan:
    """Transactions before they become records: one entry per transaction."""

    actor: np.ndarray
    pattern: np.ndarray
    counterparty: np.ndarray  # destination user when pattern == BOTH, else -1
    other_country: np.ndarray  # country of the side that is not the actor
    time: np.ndarray  # ms since the start
    amount: np.ndarray  # in the actor's home currency
    kind: np.ndarray  # 0 normal, i + 1 for ANOMALY_KINDS[i]

    @staticmethod
    def concat(plans: Sequence[_Plan]) -> _Plan:
        return _Plan(*(np.concatenate([getattr(p, f.name) for p in plans]) for f in fields(_Plan)))

    def take(self, index: np.ndarray) -> _Plan:
        return _Plan(*(getattr(self, f.name)[index] for f in fields(_Plan)))


def generate(n: int, *, users: int = 1_000, days: int = 30, anomaly_rate: float = 0.01,
             seed: int = 0, start: date = DEFAULT_START, missing_origin: float = 0.35,
             missing_destination: float = 0.30, missing_both: float = 0.01) -> SynthResult:
    """Generate ``n`` labelled synthetic transactions.

    Parameters
    ----------
    n : int
        Number of transactions, anomalies included.
    users : int
        Number of account holders (>= 2). Once ``n >= users`` each of them has a transaction.
        New-counterparty anomalies pay fresh ids beyond these.
    days : int
        Length of the period; timestamps fall in ``[start, start + days)``.
    anomaly_rate : float
        Share of transactions labelled anomalous, in [0, 0.5]; ``round(anomaly_rate * n)``
        transactions are labelled, shared out across :data:`ANOMALY_KINDS`.
    seed : int
        Seed of the random generator: equal arguments give equal output.
    start : datetime.date
        First day (from midnight UTC); an aware datetime counts by its UTC date.
    missing_origin, missing_destination, missing_both : float
        Shares of normal records without an origin user id, without a destination user id, and
        without either (included in both of the first two).

    Returns
    -------
    SynthResult
        The transactions in timestamp order and their labels.
    """
    began = time.perf_counter()
    pattern_p = _check_arguments(n, users, days, anomaly_rate, missing_origin,
                                 missing_destination, missing_both)
    rng = np.random.default_rng(seed)
    population = _make_population(rng, users)
    n_anomalies = round(anomaly_rate * n)
    normal = _normal_plan(rng, population, n - n_anomalies, days, _start_ms(start), pattern_p)
    anomalies = _anomaly_plans(rng, population, normal, n_anomalies, days, pattern_p)
    plan = _Plan.concat([normal, *anomalies])
    plan = plan.take(np.argsort(plan.time, kind="stable"))
    transactions = _records(rng, population, plan, _start_ms(start))
    labels = _labels(transactions["transaction_id"], plan.kind)
    logger.info("generated %d transactions (%d anomalous) in %.2f s", n, n_anomalies,
                time.perf_counter() - began)
    return SynthResult(transactions, labels)


def _check_arguments(n: int, users: int, days: int, anomaly_rate: float, missing_origin: float,
                     missing_destination: float, missing_both: float) -> np.ndarray:
    """Validate :func:`generate`'s arguments; return the probabilities of the four patterns."""
    for name, count, low in (("n", n, 1), ("users", users, 2), ("days", days, 1)):
        if isinstance(count, bool) or not isinstance(count, int | np.integer) or count < low:
            raise TxAnomalyError(f"{name} must be an integer >= {low}, got {count!r}")
    if not 0.0 <= anomaly_rate <= 0.5:
        raise TxAnomalyError(f"anomaly_rate must be between 0 and 0.5, got {anomaly_rate!r}")
    shares = {"missing_origin": missing_origin, "missing_destination": missing_destination,
              "missing_both": missing_both}
    for name, value in shares.items():
        if not 0.0 <= value <= 1.0:
            raise TxAnomalyError(f"{name} must be between 0 and 1, got {value!r}")
    either = missing_origin + missing_destination - missing_both
    if missing_both > min(missing_origin, missing_destination) or either > 1.0:
        raise TxAnomalyError("missing_both must be <= missing_origin and missing_destination, "
                             "and missing_origin + missing_destination - missing_both <= 1")
    return np.array([1.0 - either, missing_origin - missing_both,
                     missing_destination - missing_both, missing_both])


def _start_ms(start: date) -> int:
    if isinstance(start, datetime):
        start = start.astimezone(UTC).date() if start.tzinfo else start.date()
    return int(datetime(start.year, start.month, start.day, tzinfo=UTC).timestamp()) * 1000


def _weights(rows: Sequence[Mapping[str, float]], vocabulary: Sequence[str]) -> np.ndarray:
    """Turn ``{name: weight}`` rows into a row-normalised matrix over ``vocabulary``."""
    matrix = np.array([[row.get(name, 0.0) for name in vocabulary] for row in rows])
    return matrix / matrix.sum(axis=1, keepdims=True)


def _choose_rows(rng: np.random.Generator, probs: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Draw one column index per entry of ``rows`` from the distribution ``probs[row]``."""
    cum = np.cumsum(probs, axis=1)
    cum[:, -1] = 1.0
    # Row r's cumulative weights shifted to [r, r + 1]: one searchsorted serves every row.
    flat = (cum + np.arange(len(probs))[:, None]).ravel()
    picks = np.searchsorted(flat, rows + rng.random(len(rows)), side="right")
    return picks - rows * probs.shape[1]


def _log_uniform(rng: np.random.Generator, bounds: tuple[float, float], size: int) -> np.ndarray:
    return np.exp(rng.uniform(np.log(bounds[0]), np.log(bounds[1]), size))


_CURRENCY_OF_COUNTRY = np.array([_CURRENCIES.index(v[0]) for v in _COUNTRY_TABLE.values()])
_RATE = np.array([_USD_RATE[c] for c in _CURRENCIES])
_COUNTRY_P = np.array([v[1] for v in _COUNTRY_TABLE.values()])
_METHOD_P = _weights([v[2] for v in _COUNTRY_TABLE.values()], _METHODS)
_TYPE_P = _weights(_TYPE_WEIGHTS, _TYPES)
_STATE_P = _weights([_STATE_WEIGHTS], TRANSACTION_STATES)[0]


def _make_population(rng: np.random.Generator, users: int) -> _Population:
    """Draw every user's habits."""
    country = rng.choice(len(_COUNTRIES), users, p=_COUNTRY_P)
    # Amount levels: median 40 USD across users, a factor e^0.9 ~ 2.5 either way (one sd).
    log_level = rng.normal(np.log(40.0), 0.9, users) + np.log(_RATE[_CURRENCY_OF_COUNTRY[country]])
    daytime = rng.random(users) >= NIGHT_OWL_SHARE
    hour_center = np.where(daytime, rng.uniform(*DAYTIME_CENTER, users), rng.uniform(0, 24, users))
    hour_spread = np.where(daytime, rng.uniform(*DAYTIME_SPREAD, users), rng.uniform(1.5, 4, users))
    # A user alone in their country can only deal abroad.
    alone = np.bincount(country, minlength=len(_COUNTRIES))[country] < 2
    international = (rng.random(users) < INTERNATIONAL_SHARE) | alone
    activity = rng.lognormal(0.0, 0.75, users)
    actors = np.repeat(np.arange(users), MAX_FAVOURITES).reshape(users, MAX_FAVOURITES)
    foreign = international[actors] & (rng.random(actors.shape) < FOREIGN_SHARE)
    return _Population(
        country=country, log_level=log_level, log_spread=rng.uniform(0.25, 0.6, users),
        hour_center=hour_center, hour_spread=hour_spread, daytime=daytime,
        international=international, activity=activity / activity.sum(),
        favourites=_pick_counterparties(rng, country, actors, foreign),
        n_favourites=rng.integers(2, MAX_FAVOURITES + 1, users),
        method=_choose_rows(rng, _METHOD_P, country))


def _pick_counterparties(rng: np.random.Generator, country_of: np.ndarray, actors: np.ndarray,
                         foreign: np.ndarray) -> np.ndarray:
    """Pick another user for each actor: anyone where ``foreign``, else one of the same country.

    ``country_of`` holds every user's country. A user alone in their country (only ever an
    international one) gets the next user in country order as a "compatriot".
    """
    users = len(country_of)
    anyone = rng.integers(0, users - 1, actors.shape)
    anyone += anyone >= actors  # skip the actor itself
    order = np.argsort(country_of, kind="stable")
    counts = np.bincount(country_of, minlength=len(_COUNTRIES))
    starts = np.cumsum(counts) - counts
    rank = np.empty(users, dtype=np.int64)  # each user's position among their compatriots
    rank[order] = np.arange(users) - starts[country_of[order]]
    country = country_of[actors]
    offset = (rng.random(actors.shape) * (counts[country] - 1)).astype(np.int64)
    offset += offset >= rank[actors]  # skip the actor itself
    compatriot = order[np.minimum(starts[country] + offset, users - 1)]
    return np.where(foreign, anyone, compatriot)


def _normal_plan(rng: np.random.Generator, population: _Population, n: int, days: int,
                 start_ms: int, pattern_p: np.ndarray) -> _Plan:
    """Ordinary transactions: each user's habits, favourite counterparties, and some novelty."""
    users = population.size
    first = rng.permutation(users)[: min(n, users)]  # everyone appears once n >= users
    actor = np.concatenate([first, rng.choice(users, n - len(first), p=population.activity)])
    pattern = rng.choice(4, n, p=pattern_p)
    foreign = population.international[actor] & (rng.random(n) < FOREIGN_SHARE)
    counterparty = np.where(rng.random(n) < EXPLORE_SHARE,
                            _pick_counterparties(rng, population.country, actor, foreign),
                            _favourite(rng, population, actor))
    counterparty = np.where(pattern == BOTH, counterparty, -1)
    home = population.country[actor]
    abroad = (home + rng.integers(1, len(_COUNTRIES), n)) % len(_COUNTRIES)
    outside_country = np.where(foreign, abroad, home)
    other_country = np.where(pattern == BOTH, population.country[counterparty], outside_country)
    day = rng.choice(days, n, p=_day_weights(days, start_ms))
    when = day * DAY_MS + _time_of_day(rng, population, actor)
    amount = _usual_amount(rng, population, actor)
    return _Plan(actor, pattern, counterparty, other_country, when, amount,
                 np.zeros(n, dtype=np.int8))


def _favourite(rng: np.random.Generator, population: _Population, actor: np.ndarray) -> np.ndarray:
    # Squaring the uniform draw makes the first favourites the most frequent.
    slot = (population.n_favourites[actor] * rng.random(len(actor)) ** 2).astype(np.int64)
    return population.favourites[actor, slot]


def _day_weights(days: int, start_ms: int) -> np.ndarray:
    first_weekday = (start_ms // DAY_MS + 3) % 7  # 1970-01-01 was a Thursday
    weights = np.array(_WEEKDAY_WEIGHT)[(first_weekday + np.arange(days)) % 7]
    return weights / weights.sum()


def _time_of_day(rng: np.random.Generator, population: _Population,
                 actor: np.ndarray) -> np.ndarray:
    """Milliseconds after midnight in each actor's daily rhythm."""
    z = np.clip(rng.standard_normal(len(actor)), -2.0, 2.0)
    hours = (population.hour_center[actor] + population.hour_spread[actor] * z) % 24.0
    return np.minimum((hours * HOUR_MS).astype(np.int64), DAY_MS - 1)


def _usual_amount(rng: np.random.Generator, population: _Population,
                  actor: np.ndarray) -> np.ndarray:
    """Amounts in each actor's home currency, within 3 of their spreads of their level."""
    z = np.clip(rng.standard_normal(len(actor)), -3.0, 3.0)
    return np.exp(population.log_level[actor] + population.log_spread[actor] * z)


def _anomaly_plans(rng: np.random.Generator, population: _Population, normal: _Plan,
                   n_anomalies: int, days: int, pattern_p: np.ndarray) -> list[_Plan]:
    """The labelled transactions, about an equal share of ``n_anomalies`` per kind."""
    burst_sizes, singles = _allocate(rng, n_anomalies)
    ready_day = _ready_day(normal, population.size, days)
    context = _Context(rng, population, ready_day, days, pattern_p)
    return [
        _amount_spike(context, singles[0]),
        _burst(context, burst_sizes),
        _unusual_hour(context, singles[1]),
        _new_counterparty_large(context, singles[2]),
        _cross_border(context, singles[3]),
    ]


def _allocate(rng: np.random.Generator, total: int) -> tuple[np.ndarray, list[int]]:
    """Split ``total`` into burst sizes and counts of the four single-transaction kinds.

    Bursts get about a fifth of the total; the rest is split evenly. The sizes never exceed the
    total: a burst exists only from a total of 18 up, and a fifth plus one burst of 10 fits.
    """
    mean_size = sum(BURST_SIZES) / 2
    n_bursts = round(total / len(ANOMALY_KINDS) / mean_size)
    sizes = rng.integers(BURST_SIZES[0], BURST_SIZES[1] + 1, n_bursts)
    rest = total - int(sizes.sum())
    return sizes, [rest // 4 + (i < rest % 4) for i in range(4)]


def _ready_day(normal: _Plan, users: int, days: int) -> np.ndarray:
    """Each user's day of their MIN_HISTORY-th origin-side transaction (``days`` if none)."""
    origin_side = (normal.pattern == BOTH) | (normal.pattern == DEST_MISSING)
    actor, when = normal.actor[origin_side], normal.time[origin_side]
    order = np.lexsort((when, actor))
    counts = np.bincount(actor, minlength=users)
    first = np.cumsum(counts) - counts
    ready = np.full(users, days, dtype=np.int64)
    has = counts >= MIN_HISTORY
    ready[has] = when[order][first[has] + MIN_HISTORY - 1] // DAY_MS
    return ready


@dataclass(frozen=True)
class _Context:
    """What every anomaly builder draws from."""

    rng: np.random.Generator
    population: _Population
    ready_day: np.ndarray
    days: int
    pattern_p: np.ndarray

    def actors(self, k: int, among: np.ndarray | None = None) -> np.ndarray:
        """``k`` users with history (and in ``among``, where any such user exists)."""
        eligible = self.ready_day < self.days - 1
        if not eligible.any():  # too few days or transactions: relax, then give up
            logger.warning("no user has %d transactions before the last day", MIN_HISTORY)
            eligible = self.ready_day < self.days
            if not eligible.any():
                eligible = np.ones(self.population.size, dtype=bool)
        if among is not None and (eligible & among).any():
            eligible = eligible & among
        return self.rng.choice(np.flatnonzero(eligible), k)

    def day(self, actor: np.ndarray) -> np.ndarray:
        """A day after the actor's history is built (the last day at the latest)."""
        low = np.minimum(self.ready_day[actor] + 1, self.days - 1)
        return low + (self.rng.random(len(actor)) * (self.days - low)).astype(np.int64)

    def origin_pattern(self, k: int) -> np.ndarray:
        """BOTH or DEST_MISSING in their usual proportion: the actor is a known origin."""
        p = self.pattern_p[[BOTH, DEST_MISSING]]
        return np.where(self.rng.random(k) * p.sum() < p[0], BOTH, DEST_MISSING)

    def plan(self, kind: str, actor: np.ndarray, pattern: np.ndarray, when: np.ndarray,
             amount: np.ndarray, counterparty: np.ndarray | None = None,
             other_country: np.ndarray | None = None) -> _Plan:
        """A plan whose counterparty is a favourite and other country home unless given."""
        if counterparty is None:
            counterparty = _favourite(self.rng, self.population, actor)
        counterparty = np.where(pattern == BOTH, counterparty, -1)
        home = self.population.country[actor]
        if other_country is None:
            cp_country = self.population.country[np.maximum(counterparty, 0)]
            other_country = np.where(pattern == BOTH, cp_country, home)
        code = np.full(len(actor), ANOMALY_KINDS.index(kind) + 1, dtype=np.int8)
        return _Plan(actor, pattern, counterparty, other_country, when, amount, code)

    def usual_time(self, actor: np.ndarray) -> np.ndarray:
        return self.day(actor) * DAY_MS + _time_of_day(self.rng, self.population, actor)

    def median_amount(self, actor: np.ndarray) -> np.ndarray:
        return np.exp(self.population.log_level[actor])


def _amount_spike(c: _Context, k: int) -> _Plan:
    """A usual payment of many times (SPIKE_FACTOR) the user's median amount."""
    actor = c.actors(k)
    amount = c.median_amount(actor) * _log_uniform(c.rng, SPIKE_FACTOR, k)
    return c.plan("amount_spike", actor, c.origin_pattern(k), c.usual_time(actor), amount)


def _burst(c: _Context, sizes: np.ndarray) -> _Plan:
    """Bursts of BURST_SIZES usual payments by one user within BURST_WINDOW_MS."""
    burst_actor = c.actors(len(sizes))
    # Start early enough in the day for the whole burst to fit in it.
    time_of_day = np.minimum(_time_of_day(c.rng, c.population, burst_actor),
                             DAY_MS - BURST_WINDOW_MS - 1)
    start = c.day(burst_actor) * DAY_MS + time_of_day
    actor = np.repeat(burst_actor, sizes)
    when = np.repeat(start, sizes) + c.rng.integers(0, BURST_WINDOW_MS, len(actor))
    amount = _usual_amount(c.rng, c.population, actor)
    return c.plan("burst", actor, c.origin_pattern(len(actor)), when, amount)


def _unusual_hour(c: _Context, k: int) -> _Plan:
    """A usual payment around 03:00 by a user who is only ever active in the daytime."""
    actor = c.actors(k, among=c.population.daytime)
    hours = c.rng.uniform(*UNUSUAL_HOURS, k)
    when = c.day(actor) * DAY_MS + (hours * HOUR_MS).astype(np.int64)
    amount = _usual_amount(c.rng, c.population, actor)
    return c.plan("unusual_hour", actor, c.origin_pattern(k), when, amount)


def _new_counterparty_large(c: _Context, k: int) -> _Plan:
    """A large domestic transfer to a destination id never seen before (a fresh id)."""
    actor = c.actors(k)
    fresh = c.population.size + np.arange(k)
    amount = c.median_amount(actor) * _log_uniform(c.rng, NEW_COUNTERPARTY_FACTOR, k)
    return c.plan("new_counterparty_large", actor, np.full(k, BOTH), c.usual_time(actor), amount,
                  counterparty=fresh, other_country=c.population.country[actor])


def _cross_border(c: _Context, k: int) -> _Plan:
    """A strictly domestic user paying an account abroad, in another currency."""
    actor = c.actors(k, among=~c.population.international)
    home_currency = _CURRENCY_OF_COUNTRY[c.population.country[actor]]
    abroad = c.rng.integers(0, len(_COUNTRIES), k)
    while (redraw := _CURRENCY_OF_COUNTRY[abroad] == home_currency).any():
        abroad[redraw] = c.rng.integers(0, len(_COUNTRIES), int(redraw.sum()))
    amount = _usual_amount(c.rng, c.population, actor) * _log_uniform(c.rng, CROSS_BORDER_FACTOR, k)
    return c.plan("cross_border", actor, np.full(k, DEST_MISSING), c.usual_time(actor), amount,
                  other_country=abroad)


def _records(rng: np.random.Generator, population: _Population, plan: _Plan,
             start_ms: int) -> pl.DataFrame:
    """Turn a (time-ordered) plan into flat records."""
    n = len(plan.actor)
    actor_is_origin = plan.pattern != ORIGIN_MISSING
    home = population.country[plan.actor]
    origin_country = np.where(actor_is_origin, home, plan.other_country)
    destination_country = np.where(actor_is_origin, plan.other_country, home)
    origin_amount, destination_amount = _amounts(plan, home, origin_country, destination_country)
    origin_user = np.where(actor_is_origin & (plan.pattern != NEITHER), plan.actor, -1)
    destination_user = np.where(plan.pattern == ORIGIN_MISSING, plan.actor, plan.counterparty)
    origin_method = np.where(actor_is_origin & (rng.random(n) < 0.8), population.method[plan.actor],
                             _choose_rows(rng, _METHOD_P, origin_country))
    destination_method = _choose_rows(rng, _METHOD_P, destination_country)
    # Half of the payments abroad go by SWIFT.
    swift = (origin_country != destination_country) & (rng.random(n) < 0.5)
    destination_method = np.where(swift, _METHODS.index("SWIFT"), destination_method)
    width = max(6, len(str(max(int(plan.counterparty.max(initial=0)), population.size))))
    columns = {
        "transaction_id": _ids("tx-", np.arange(n), max(9, len(str(n - 1)))),
        "timestamp": pl.Series(plan.time + start_ms, dtype=pl.Int64),
        "type": _pick(_TYPES, _choose_rows(rng, _TYPE_P, plan.pattern)),
        "state": _pick(TRANSACTION_STATES, rng.choice(len(TRANSACTION_STATES), n, p=_STATE_P)),
        "origin_user_id": _ids("u-", origin_user, width),
        "destination_user_id": _ids("u-", destination_user, width),
        "origin_amount": pl.Series(origin_amount),
        "origin_currency": _pick(_CURRENCIES, _CURRENCY_OF_COUNTRY[origin_country]),
        "origin_country": _pick(_COUNTRIES, origin_country),
        "destination_amount": pl.Series(destination_amount),
        "destination_currency": _pick(_CURRENCIES, _CURRENCY_OF_COUNTRY[destination_country]),
        "destination_country": _pick(_COUNTRIES, destination_country),
        "origin_method": _pick(_METHODS, origin_method),
        "destination_method": _pick(_METHODS, destination_method),
    }
    frame = pl.DataFrame({name: columns[name].alias(name) for name in FLAT_COLUMNS})
    return frame.with_columns(pl.lit(None, dtype=pl.Utf8).alias(EXTRA_COLUMN))


def _amounts(plan: _Plan, home: np.ndarray, origin_country: np.ndarray,
             destination_country: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both sides' amounts, to the cent: the actor's side as planned, the other converted."""
    home_rate = _RATE[_CURRENCY_OF_COUNTRY[home]]
    origin_rate = _RATE[_CURRENCY_OF_COUNTRY[origin_country]]
    destination_rate = _RATE[_CURRENCY_OF_COUNTRY[destination_country]]
    origin = np.maximum(np.round(plan.amount * origin_rate / home_rate, 2), 0.01)
    destination = np.maximum(np.round(plan.amount * destination_rate / home_rate, 2), 0.01)
    same = origin_rate == destination_rate  # same currency: exactly the same amount
    return origin, np.where(same, origin, destination)


def _pick(vocabulary: Sequence[str], index: np.ndarray) -> pl.Series:
    return pl.Series(vocabulary, dtype=pl.Utf8).gather(index)


def _ids(prefix: str, number: np.ndarray, width: int) -> pl.Series:
    """``prefix`` + zero-padded ``number``; null where ``number`` is negative."""
    numbers = pl.Series(number)
    text = pl.concat_str(pl.lit(prefix), numbers.cast(pl.Utf8).str.zfill(width))
    return pl.select(pl.when(numbers >= 0).then(text)).to_series()


def _labels(transaction_id: pl.Series, kind: np.ndarray) -> pl.DataFrame:
    return pl.DataFrame({
        "transaction_id": transaction_id,
        "is_anomaly": pl.Series((kind > 0).astype(np.int8)),
        "kind": pl.Series([None, *ANOMALY_KINDS], dtype=pl.Utf8).gather(kind.astype(np.int64)),
    })


def output_suffix(path: str | Path) -> str:
    """Return the output format of ``path`` (its suffix) or raise :class:`TxAnomalyError`.

    >>> output_suffix("data/tx.JSONL")
    '.jsonl'
    """
    suffix = Path(path).suffix.lower()
    if suffix not in OUTPUT_SUFFIXES:
        raise TxAnomalyError(f"cannot write {str(path)!r}: unknown extension {suffix or '(none)'!r}"
                             f"; expected one of {', '.join(OUTPUT_SUFFIXES)}")
    return suffix


def write_transactions(frame: pl.DataFrame, path: str | Path, *,
                       number_long_share: float = 0.0, seed: int = 0,
                       chunk_rows: int = 200_000) -> Path:
    """Write flat records to ``path`` in the format its extension names.

    Parameters
    ----------
    frame : polars.DataFrame
        Flat records (the :data:`~txanomaly.schema.FLAT_COLUMNS`, optionally ``extra``).
    path : str or pathlib.Path
        ``.json``: a JSON array of raw camelCase records; ``.jsonl``: one raw record per line;
        ``.parquet``: the flat columns (and ``extra`` only when some record has extra fields).
    number_long_share : float
        JSON only: the share of records whose timestamp is written as a MongoDB export writes
        it, ``{"$numberLong": "<ms>"}``, rather than a plain integer; which ones is drawn from
        ``seed``.
    chunk_rows : int
        JSON only: records encoded at a time (bounds the memory used).

    Returns
    -------
    pathlib.Path
        The path written.
    """
    path = Path(path)
    suffix = output_suffix(path)
    if suffix == ".parquet":
        keep = [*FLAT_COLUMNS]
        if EXTRA_COLUMN in frame.columns and frame[EXTRA_COLUMN].null_count() < frame.height:
            keep.append(EXTRA_COLUMN)
        frame.select(keep).write_parquet(path)
        return path
    number_long = np.random.default_rng(seed).random(frame.height) < number_long_share
    as_array = suffix == ".json"
    with path.open("wb") as out:
        out.write(b"[\n" if as_array else b"")
        for offset in range(0, frame.height, chunk_rows):
            chunk = frame.slice(offset, chunk_rows)
            lines = raw_json_lines(chunk, number_long[offset: offset + chunk.height])
            if as_array:  # a comma after every record but the last
                last = offset + chunk.height == frame.height
                lines = lines + "," if not last else pl.concat([lines.head(-1) + ",",
                                                               lines.tail(1)])
            # Polars writes the lines straight to the file; JSON text needs no CSV quoting.
            lines.to_frame().write_csv(out, include_header=False, quote_style="never")
        out.write(b"]\n" if as_array else b"")
    return path


def raw_json_lines(frame: pl.DataFrame, number_long: np.ndarray | None = None) -> pl.Series:
    """Encode each flat record as the JSON text of its raw record (as :func:`schema.to_raw`).

    Vectorised in Polars; records with ``extra`` fields go through :func:`schema.to_raw`.

    >>> frame = pl.DataFrame({"transaction_id": ["t1"], "timestamp": [5],
    ...                       "origin_amount": [2.5], "origin_currency": ["EUR"]})
    >>> raw_json_lines(frame).item()
    '{"transactionId":"t1","timestamp":5,"originAmountDetails":{"transactionAmount":2.5,"transactionCurrency":"EUR"}}'
    """
    mask = np.zeros(frame.height, dtype=bool) if number_long is None else number_long
    top, nested = _raw_layout(frame.columns)
    pieces = [_json_member(raw, pl.col(column)) for raw, column in top]
    if mask.any():
        as_number_long = pl.concat_str([pl.lit('"timestamp":{"$numberLong":"'),
                                        pl.col("timestamp").cast(pl.Utf8), pl.lit('"}')])
        where = [raw for raw, _ in top].index("timestamp")
        pieces[where] = pl.when(pl.lit(pl.Series(mask))).then(as_number_long).otherwise(
            pieces[where])
    for obj, members in nested.items():
        inner = pl.concat_str([_json_member(sub, pl.col(column)) for sub, column in members],
                              separator=",", ignore_nulls=True)
        present = pl.any_horizontal([pl.col(column).is_not_null() for _, column in members])
        pieces.append(pl.when(present).then(
            pl.concat_str([pl.lit(_json_key(obj) + "{"), inner, pl.lit("}")])))
    body = pl.concat_str(pieces, separator=",", ignore_nulls=True)
    lines = frame.select(pl.concat_str([pl.lit("{"), body, pl.lit("}")]).alias("json"))
    result = lines.to_series()
    if EXTRA_COLUMN in frame.columns and frame[EXTRA_COLUMN].null_count() < frame.height:
        result = _encode_extra_rows(frame, result, mask)
    return result


def _raw_layout(columns: Sequence[str]) -> tuple[list[tuple[str, str]],
                                                 dict[str, list[tuple[str, str]]]]:
    """The raw record's shape from :data:`schema.RAW_PATHS`: top-level members, then objects."""
    top: list[tuple[str, str]] = []
    nested: dict[str, list[tuple[str, str]]] = {}
    for column in FLAT_COLUMNS:
        if column not in columns:
            continue
        obj, _, member = RAW_PATHS[column].rpartition(".")
        if obj:
            nested.setdefault(obj, []).append((member, column))
        else:
            top.append((member, column))
    return top, nested


def _json_key(name: str) -> str:
    return orjson.dumps(name).decode() + ":"


def _json_member(name: str, value: pl.Expr) -> pl.Expr:
    """``"name":<value as JSON>``, or null where the value is null (the member is left out)."""
    encoded = pl.struct(value.alias("v")).struct.json_encode()
    # '{"v":<value>}' -> '<value>': JSON encoding by Polars, escapes included.
    inner = encoded.str.slice(5, encoded.str.len_chars() - 6)
    return pl.when(value.is_not_null()).then(pl.concat_str([pl.lit(_json_key(name)), inner]))


def _encode_extra_rows(frame: pl.DataFrame, lines: pl.Series, number_long: np.ndarray) -> pl.Series:
    """Re-encode the records that carry ``extra`` fields with :func:`schema.to_raw`."""
    index = np.flatnonzero(frame[EXTRA_COLUMN].is_not_null().to_numpy())
    encoded = []
    for i, row in zip(index, frame[index].iter_rows(named=True), strict=True):
        raw = to_raw(row)
        if number_long[i]:
            raw["timestamp"] = {"$numberLong": str(row["timestamp"])}
        encoded.append(orjson.dumps(raw).decode())
    return lines.scatter(index, encoded)


def write_labels(labels: pl.DataFrame, path: str | Path) -> Path:
    """Write labels as CSV with the header ``transactionId,is_anomaly,kind``.

    ``kind`` is empty for normal transactions.
    """
    path = Path(path)
    renamed = labels.rename({"transaction_id": "transactionId"})
    renamed.select(LABEL_COLUMNS).write_csv(path)
    return path


def default_labels_path(output: str | Path) -> Path:
    """The labels file next to an output: ``tx.parquet`` -> ``tx.labels.csv``."""
    output = Path(output)
    return output.with_name(output.stem + ".labels.csv")
