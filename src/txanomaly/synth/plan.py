"""Transactions before they become records (:class:`Plan`), and the normal ones.

Every transaction has an *actor*, the user whose habits it follows: the origin user, or the
destination user of a deposit. Its id pattern says which user ids the record has.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields

import numpy as np

from txanomaly.synth.population import (
    COUNTRIES,
    DAY_MS,
    FOREIGN_SHARE,
    Population,
    favourite,
    pick_counterparties,
    time_of_day,
    usual_amount,
)

# Which user ids a record has. The actor is the origin user except in ORIGIN_MISSING (a deposit
# into the actor's account from outside), where it is the destination user.
BOTH, ORIGIN_MISSING, DEST_MISSING, NEITHER = range(4)
_WEEKDAY_WEIGHT = (1.0, 1.0, 1.0, 1.05, 1.15, 0.8, 0.6)  # Monday first: quieter weekends
EXPLORE_SHARE = 0.1  # of transfers that go to someone outside the user's favourites


@dataclass(frozen=True)
class Plan:
    """Transactions before they become records: one entry per transaction."""

    actor: np.ndarray
    pattern: np.ndarray
    counterparty: np.ndarray  # destination user when pattern == BOTH, else -1
    other_country: np.ndarray  # country of the side that is not the actor
    time: np.ndarray  # ms since the start
    amount: np.ndarray  # in the actor's home currency
    kind: np.ndarray  # 0 normal, i + 1 for ANOMALY_KINDS[i]

    @staticmethod
    def concat(plans: Sequence[Plan]) -> Plan:
        return Plan(*(np.concatenate([getattr(p, f.name) for p in plans]) for f in fields(Plan)))

    def take(self, index: np.ndarray) -> Plan:
        return Plan(*(getattr(self, f.name)[index] for f in fields(Plan)))


def normal_plan(rng: np.random.Generator, population: Population, n: int, days: int,
                start_ms: int, pattern_p: np.ndarray) -> Plan:
    """Ordinary transactions: each user's habits, favourite counterparties, and some novelty."""
    users = population.size
    first = rng.permutation(users)[: min(n, users)]  # everyone appears once n >= users
    actor = np.concatenate([first, rng.choice(users, n - len(first), p=population.activity)])
    pattern = rng.choice(4, n, p=pattern_p)
    foreign = population.international[actor] & (rng.random(n) < FOREIGN_SHARE)
    counterparty = np.where(rng.random(n) < EXPLORE_SHARE,
                            pick_counterparties(rng, population.country, actor, foreign),
                            favourite(rng, population, actor))
    counterparty = np.where(pattern == BOTH, counterparty, -1)
    home = population.country[actor]
    abroad = (home + rng.integers(1, len(COUNTRIES), n)) % len(COUNTRIES)
    outside_country = np.where(foreign, abroad, home)
    other_country = np.where(pattern == BOTH, population.country[counterparty], outside_country)
    day = rng.choice(days, n, p=day_weights(days, start_ms))
    when = day * DAY_MS + time_of_day(rng, population, actor)
    amount = usual_amount(rng, population, actor)
    return Plan(actor, pattern, counterparty, other_country, when, amount,
                np.zeros(n, dtype=np.int8))


def day_weights(days: int, start_ms: int) -> np.ndarray:
    first_weekday = (start_ms // DAY_MS + 3) % 7  # 1970-01-01 was a Thursday
    weights = np.array(_WEEKDAY_WEIGHT)[(first_weekday + np.arange(days)) % 7]
    return weights / weights.sum()
