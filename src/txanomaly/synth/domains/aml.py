"""Transfers between bank accounts with money-laundering typologies, after AMLSim (IBM) and
SAML-D (Oztas et al.).

Accounts are the p2p population's (home countries, currencies, rhythms, favourite
counterparties), with amounts eight times larger, and every record has both account ids:
each account sends and receives. A few accounts (3 %, at least one per country) are
businesses: a quarter of private transfers pay one of them (a shop, a landlord, a utility),
so businesses receive from many accounts, and they pay many accounts in turn (payroll,
suppliers). Normal data therefore has fan-in and fan-out of its own. The planted typologies:
a mule's fan-in (many accounts pay one, which forwards the money on), fan-out (one account
receives a large sum and spreads it over many), cycles (money returns to its first account
through 3 to 6 hops, hours apart, a small fee taken at each) and structuring (several
transfers just under a 10,000 reporting limit within days).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from txanomaly.synth.domains.common import episode_sizes, fold_times, split_counts
from txanomaly.synth.generator import SynthResult
from txanomaly.synth.labels import labels_frame
from txanomaly.synth.plan import BOTH, Plan, normal_plan
from txanomaly.synth.population import (
    CURRENCIES,
    CURRENCY_OF_COUNTRY,
    DAY_MS,
    HOUR_MS,
    RATE,
    Population,
    choose_rows,
    log_uniform,
    make_population,
    pick_counterparties,
)
from txanomaly.synth.records import flat_records

KINDS: tuple[str, ...] = ("fan_in", "fan_out", "cycle", "structuring")
LEVEL_FACTOR = 8.0  # account amounts: the p2p levels times this (median about 320 USD)
BUSINESS_SHARE = 0.03
BUSINESS_ACTIVITY = 15.0  # x a private account's activity
BUSINESS_LEVEL = 3.0
TO_BUSINESS_SHARE = 0.25  # of private accounts' transfers
FAN_SIZES = (4, 16)  # transfers per fan-in or fan-out, its forwarding or funding included
FAN_IN_AMOUNT = (500.0, 3_000.0)  # USD per incoming transfer
FAN_OUT_AMOUNT = (10_000.0, 50_000.0)  # USD received, then spread
CYCLE_SIZES = (3, 6)
CYCLE_AMOUNT = (2_000.0, 20_000.0)
CYCLE_FEE = (0.01, 0.05)
REPORTING_LIMIT = 10_000.0  # in the account's currency (USD, EUR or GBP accounts)
STRUCTURING_RANGE = (9_000.0, 9_999.0)
STRUCTURING_SIZES = (3, 8)
STRUCTURING_DAYS = (1.0, 5.0)
_LIMIT_CURRENCIES = [CURRENCIES.index(c) for c in ("USD", "EUR", "GBP")]


def generate(rng: np.random.Generator, n: int, *, users: int, days: int, anomaly_rate: float,
             start_ms: int, counterparties: int | None) -> SynthResult:
    """``n`` transfers between ``users`` accounts (``counterparties`` is not used)."""
    del counterparties  # the counterparties are the accounts
    population = make_population(rng, users)
    business = _businesses(rng, population.country)
    activity = population.activity * np.where(business, BUSINESS_ACTIVITY, 1.0)
    population = dataclasses.replace(
        population, activity=activity / activity.sum(),
        log_level=population.log_level + np.log(LEVEL_FACTOR)
        + np.where(business, np.log(BUSINESS_LEVEL), 0.0))
    n_anomalies = round(anomaly_rate * n)
    normal = normal_plan(rng, population, n - n_anomalies, days, start_ms,
                         np.array([1.0, 0.0, 0.0, 0.0]))
    normal = _with_businesses(rng, population, business, normal)
    episodes = _Episodes(rng, population, days)
    counts = split_counts(n_anomalies, [1, 1, 1, 1])
    plan = Plan.concat([normal, episodes.fan_in(counts[0]), episodes.fan_out(counts[1]),
                        episodes.cycle(counts[2]), episodes.structuring(counts[3])])
    plan = dataclasses.replace(plan, time=fold_times(plan.time, days))
    plan = plan.take(np.argsort(plan.time, kind="stable"))
    transactions = flat_records(rng, population, plan, start_ms)
    return SynthResult(transactions, labels_frame(transactions["transaction_id"], plan.kind,
                                                  KINDS), KINDS)


def _businesses(rng: np.random.Generator, country: np.ndarray) -> np.ndarray:
    business = rng.random(len(country)) < BUSINESS_SHARE
    for c in np.unique(country):
        members = np.flatnonzero(country == c)
        if len(members) >= 2 and not business[members].any():
            business[members[0]] = True
    if not business.any():  # every account alone in its country: one business anyway
        business[0] = True
    return business


def _with_businesses(rng: np.random.Generator, population: Population, business: np.ndarray,
                     plan: Plan) -> Plan:
    """Private accounts pay businesses of their country; businesses pay many accounts."""
    firms = np.flatnonzero(business)
    popularity = rng.lognormal(0.0, 1.0, len(firms))
    n_countries = int(population.country.max()) + 1
    p = (population.country[firms][None, :] == np.arange(n_countries)[:, None]) * popularity
    p[p.sum(axis=1) == 0] = popularity  # a country without a business: any business
    p /= p.sum(axis=1, keepdims=True)
    home = population.country[plan.actor]
    counterparty = plan.counterparty.copy()
    to_firm = ~business[plan.actor] & (rng.random(len(home)) < TO_BUSINESS_SHARE)
    counterparty[to_firm] = firms[choose_rows(rng, p, home[to_firm])]
    payroll = business[plan.actor]
    counterparty[payroll] = pick_counterparties(rng, population.country, plan.actor[payroll],
                                                np.zeros(int(payroll.sum()), dtype=bool))
    return dataclasses.replace(plan, counterparty=counterparty,
                               other_country=population.country[counterparty])


class _Rows:
    """Transfers collected one episode at a time: actor, counterparty, time, amount."""

    def __init__(self) -> None:
        self.actor: list[int] = []
        self.counterparty: list[int] = []
        self.when: list[int] = []
        self.amount: list[float] = []

    def add(self, actor: int | np.ndarray, counterparty: int | np.ndarray,
            when: int | np.ndarray, amount: float | np.ndarray) -> None:
        sizes = [np.size(actor), np.size(counterparty), np.size(when), np.size(amount)]
        if min(sizes) == 0:
            return
        size = max(sizes)
        for column, value in ((self.actor, actor), (self.counterparty, counterparty),
                              (self.when, when), (self.amount, amount)):
            column.extend(np.broadcast_to(np.asarray(value), (size,)).tolist())


class _Episodes:
    """Builds each typology's transfers, one episode at a time (episodes are few)."""

    def __init__(self, rng: np.random.Generator, population: Population, days: int) -> None:
        self.rng, self.population, self.days = rng, population, days

    def _accounts(self, k: int, among: np.ndarray | None = None) -> np.ndarray:
        pool = np.arange(self.population.size) if among is None else among
        return self.rng.choice(pool, k, replace=k > len(pool))

    def _start(self, span_ms: float) -> int:
        period = self.days * DAY_MS
        return int(self.rng.integers(0, max(1, int(period - span_ms))))

    def _plan(self, kind: str, rows: _Rows, local: bool = False) -> Plan:
        """The rows' transfers; amounts in USD, or already in the actor's currency (``local``)."""
        actor = np.asarray(rows.actor, dtype=np.int64)
        cp = np.asarray(rows.counterparty, dtype=np.int64)
        amount = np.asarray(rows.amount, dtype=np.float64)
        if not local:
            amount = amount * RATE[CURRENCY_OF_COUNTRY[self.population.country[actor]]]
        k = len(actor)
        return Plan(actor, np.full(k, BOTH), cp, self.population.country[cp],
                    np.asarray(rows.when, dtype=np.int64), amount,
                    np.full(k, KINDS.index(kind) + 1, dtype=np.int8))

    def fan_in(self, total: int) -> Plan:
        """Many accounts pay a mule within two days; the mule forwards 90-97 % on."""
        rows, rng = _Rows(), self.rng
        for size in episode_sizes(rng, total, FAN_SIZES):
            forwards = 1 if size < 8 else 2
            ids = self._accounts(size + 1)
            mule, senders, collectors = int(ids[0]), ids[1:-forwards], ids[-forwards:]
            start = self._start(3 * DAY_MS)
            paid = log_uniform(rng, FAN_IN_AMOUNT, len(senders))
            times = start + rng.integers(0, 2 * DAY_MS, len(senders))
            rows.add(senders, mule, times, paid)
            received = paid.sum() if len(paid) else FAN_IN_AMOUNT[1]  # a tiny rate's 1-episode
            rows.add(mule, collectors,
                     int(times.max(initial=start)) + rng.integers(HOUR_MS, 24 * HOUR_MS, forwards),
                     received * rng.uniform(0.9, 0.97) / forwards)
        return self._plan("fan_in", rows)

    def fan_out(self, total: int) -> Plan:
        """An account receives a large sum and pays it out to many within two days."""
        rows, rng = _Rows(), self.rng
        for size in episode_sizes(rng, total, FAN_SIZES):
            ids = self._accounts(size + 1)
            source, hub, recipients = int(ids[0]), int(ids[1]), ids[2:]
            start = self._start(3 * DAY_MS)
            received = float(log_uniform(rng, FAN_OUT_AMOUNT, 1)[0])
            rows.add(source, hub, start, received)
            spread = max(len(recipients), 1)  # none in a tiny rate's 1-transfer episode
            rows.add(hub, recipients,
                     start + rng.integers(HOUR_MS, 48 * HOUR_MS, len(recipients)),
                     received * 0.95 / spread * rng.uniform(0.85, 1.15, len(recipients)))
        return self._plan("fan_out", rows)

    def cycle(self, total: int) -> Plan:
        """A -> B -> ... -> A, each hop 1-24 hours after the last, a small fee taken each time."""
        rows, rng = _Rows(), self.rng
        for size in episode_sizes(rng, total, CYCLE_SIZES):
            ids = self._accounts(size)
            start = self._start(size * 24 * HOUR_MS)
            hops = start + np.cumsum(rng.integers(HOUR_MS, 24 * HOUR_MS, size))
            sent = float(log_uniform(rng, CYCLE_AMOUNT, 1)[0])
            kept = np.concatenate([[1.0], np.cumprod(1.0 - rng.uniform(*CYCLE_FEE, size - 1))])
            rows.add(ids, np.roll(ids, -1), hops, sent * kept)
        return self._plan("cycle", rows)

    def structuring(self, total: int) -> Plan:
        """Several transfers just under the reporting limit, to one to three accounts."""
        rows, rng = _Rows(), self.rng
        currency = CURRENCY_OF_COUNTRY[self.population.country]
        eligible = np.flatnonzero(np.isin(currency, _LIMIT_CURRENCIES))
        for size in episode_sizes(rng, total, STRUCTURING_SIZES):
            who = int(self._accounts(1, eligible if len(eligible) else None)[0])
            targets = self._accounts(int(rng.integers(1, 4)))
            targets = np.where(targets == who, (targets + 1) % self.population.size, targets)
            span = rng.uniform(*STRUCTURING_DAYS) * DAY_MS
            start = self._start(span)
            rows.add(who, rng.choice(targets, size), start + rng.integers(0, int(span), size),
                     rng.uniform(*STRUCTURING_RANGE, size).round(2))
        return self._plan("structuring", rows, local=True)
