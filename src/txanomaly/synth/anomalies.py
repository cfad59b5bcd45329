"""The five kinds of planted anomaly: extra transactions of users with history, each unusual
in one way a per-user feature can see (docs/synthetic-data.md describes them and how the rate
is shared out).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from txanomaly.synth.plan import BOTH, DEST_MISSING, Plan
from txanomaly.synth.population import (
    COUNTRIES,
    CURRENCY_OF_COUNTRY,
    DAY_MS,
    HOUR_MS,
    Population,
    favourite,
    log_uniform,
    time_of_day,
    usual_amount,
)

logger = logging.getLogger(__name__)

ANOMALY_KINDS: tuple[str, ...] = ("amount_spike", "burst", "unusual_hour",
                                  "new_counterparty_large", "cross_border")
MIN_HISTORY = 5  # origin-side transactions a user has before any of their anomalies
BURST_SIZES = (4, 10)  # inclusive
BURST_WINDOW_MS = 5 * 60_000
UNUSUAL_HOURS = (2.5, 3.5)  # the unusual_hour anomalies fall between 02:30 and 03:30 UTC
SPIKE_FACTOR = (10.0, 30.0)  # x the user's median amount
NEW_COUNTERPARTY_FACTOR = (5.0, 15.0)
CROSS_BORDER_FACTOR = (1.0, 3.0)


def anomaly_plans(rng: np.random.Generator, population: Population, normal: Plan,
                  n_anomalies: int, days: int, pattern_p: np.ndarray) -> list[Plan]:
    """The labelled transactions, about an equal share of ``n_anomalies`` per kind."""
    burst_sizes, singles = _allocate(rng, n_anomalies)
    ready_day = _ready_day(normal, population.size, days)
    context = Context(rng, population, ready_day, days, pattern_p)
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


def _ready_day(normal: Plan, users: int, days: int) -> np.ndarray:
    """Each user's day of their MIN_HISTORY-th origin-side transaction (``days`` if none)."""
    origin_side = (normal.pattern == BOTH) | (normal.pattern == DEST_MISSING)
    return ready_day(normal.actor[origin_side], normal.time[origin_side], users, days)


def ready_day(actor: np.ndarray, when: np.ndarray, users: int, days: int) -> np.ndarray:
    """Each of ``users`` actors' day of their MIN_HISTORY-th transaction (``days`` if none)."""
    order = np.lexsort((when, actor))
    counts = np.bincount(actor, minlength=users)
    first = np.cumsum(counts) - counts
    ready = np.full(users, days, dtype=np.int64)
    has = counts >= MIN_HISTORY
    ready[has] = when[order][first[has] + MIN_HISTORY - 1] // DAY_MS
    return ready


@dataclass(frozen=True)
class Context:
    """What every anomaly builder draws from."""

    rng: np.random.Generator
    population: Population
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
             other_country: np.ndarray | None = None) -> Plan:
        """A plan whose counterparty is a favourite and other country home unless given."""
        if counterparty is None:
            counterparty = favourite(self.rng, self.population, actor)
        counterparty = np.where(pattern == BOTH, counterparty, -1)
        home = self.population.country[actor]
        if other_country is None:
            cp_country = self.population.country[np.maximum(counterparty, 0)]
            other_country = np.where(pattern == BOTH, cp_country, home)
        code = np.full(len(actor), ANOMALY_KINDS.index(kind) + 1, dtype=np.int8)
        return Plan(actor, pattern, counterparty, other_country, when, amount, code)

    def usual_time(self, actor: np.ndarray) -> np.ndarray:
        return self.day(actor) * DAY_MS + time_of_day(self.rng, self.population, actor)

    def median_amount(self, actor: np.ndarray) -> np.ndarray:
        return np.exp(self.population.log_level[actor])


def _amount_spike(c: Context, k: int) -> Plan:
    """A usual payment of many times (SPIKE_FACTOR) the user's median amount."""
    actor = c.actors(k)
    amount = c.median_amount(actor) * log_uniform(c.rng, SPIKE_FACTOR, k)
    return c.plan("amount_spike", actor, c.origin_pattern(k), c.usual_time(actor), amount)


def _burst(c: Context, sizes: np.ndarray) -> Plan:
    """Bursts of BURST_SIZES usual payments by one user within BURST_WINDOW_MS."""
    burst_actor = c.actors(len(sizes))
    # Start early enough in the day for the whole burst to fit in it.
    time_in_day = np.minimum(time_of_day(c.rng, c.population, burst_actor),
                             DAY_MS - BURST_WINDOW_MS - 1)
    start = c.day(burst_actor) * DAY_MS + time_in_day
    actor = np.repeat(burst_actor, sizes)
    when = np.repeat(start, sizes) + c.rng.integers(0, BURST_WINDOW_MS, len(actor))
    amount = usual_amount(c.rng, c.population, actor)
    return c.plan("burst", actor, c.origin_pattern(len(actor)), when, amount)


def _unusual_hour(c: Context, k: int) -> Plan:
    """A usual payment around 03:00 by a user who is only ever active in the daytime."""
    actor = c.actors(k, among=c.population.daytime)
    hours = c.rng.uniform(*UNUSUAL_HOURS, k)
    when = c.day(actor) * DAY_MS + (hours * HOUR_MS).astype(np.int64)
    amount = usual_amount(c.rng, c.population, actor)
    return c.plan("unusual_hour", actor, c.origin_pattern(k), when, amount)


def _new_counterparty_large(c: Context, k: int) -> Plan:
    """A large domestic transfer to a destination id never seen before (a fresh id)."""
    actor = c.actors(k)
    fresh = c.population.size + np.arange(k)
    amount = c.median_amount(actor) * log_uniform(c.rng, NEW_COUNTERPARTY_FACTOR, k)
    return c.plan("new_counterparty_large", actor, np.full(k, BOTH), c.usual_time(actor), amount,
                  counterparty=fresh, other_country=c.population.country[actor])


def _cross_border(c: Context, k: int) -> Plan:
    """A strictly domestic user paying an account abroad, in another currency."""
    actor = c.actors(k, among=~c.population.international)
    home_currency = CURRENCY_OF_COUNTRY[c.population.country[actor]]
    abroad = c.rng.integers(0, len(COUNTRIES), k)
    while (redraw := CURRENCY_OF_COUNTRY[abroad] == home_currency).any():
        abroad[redraw] = c.rng.integers(0, len(COUNTRIES), int(redraw.sum()))
    amount = usual_amount(c.rng, c.population, actor) * log_uniform(c.rng, CROSS_BORDER_FACTOR, k)
    return c.plan("cross_border", actor, np.full(k, DEST_MISSING), c.usual_time(actor), amount,
                  other_country=abroad)
