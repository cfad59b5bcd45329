"""Generating labelled transactions: the arguments, then population -> plans -> records."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import UTC, date, datetime

import numpy as np
import polars as pl

from txanomaly.errors import TxAnomalyError
from txanomaly.synth.anomalies import ANOMALY_KINDS, anomaly_plans
from txanomaly.synth.labels import labels_frame
from txanomaly.synth.plan import Plan, normal_plan
from txanomaly.synth.population import make_population
from txanomaly.synth.records import flat_records

logger = logging.getLogger(__name__)

DEFAULT_START = date(2024, 1, 1)  # a Monday


@dataclass(frozen=True)
class SynthResult:
    """Generated transactions and their labels, row for row, in timestamp order.

    Attributes
    ----------
    transactions : polars.DataFrame
        Flat records: the columns of :data:`txanomaly.schema.FLAT_COLUMNS` plus ``extra``.
    labels : polars.DataFrame
        ``transaction_id``, ``is_anomaly`` (0/1) and ``kind`` (null for normal transactions).
    kinds : tuple of str
        The anomaly kinds of the domain the data was made in (:func:`domain_kinds`).
    """

    transactions: pl.DataFrame
    labels: pl.DataFrame
    kinds: tuple[str, ...] = ANOMALY_KINDS

    def anomaly_counts(self) -> dict[str, int]:
        """Return the number of labelled transactions of each kind (every kind, zeros too)."""
        counts = dict.fromkeys(self.kinds, 0)
        for kind, count in self.labels["kind"].drop_nulls().value_counts().iter_rows():
            counts[kind] = count
        return counts


def generate(n: int, *, users: int = 1_000, days: int = 30, anomaly_rate: float = 0.01,
             seed: int = 0, start: date = DEFAULT_START, missing_origin: float = 0.35,
             missing_destination: float = 0.30, missing_both: float = 0.01,
             domain: str = "p2p", counterparties: int | None = None) -> SynthResult:
    """Generate ``n`` labelled synthetic transactions in one of :data:`DOMAINS`.

    Parameters
    ----------
    n : int
        Number of transactions, anomalies included.
    users : int
        Number of account holders (>= 2): the people who pay, card holders in the card and
        e-commerce domains, accounts in ``p2p`` and ``aml``. Once ``n >= users`` each of them
        has a transaction. New-counterparty anomalies (p2p) pay fresh ids beyond these.
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
        without either (included in both of the first two). The ``p2p`` domain only.
    domain : str
        One of :data:`DOMAINS` (docs/synthetic-data.md describes each): ``p2p`` (the default,
        wallet transfers, this function's output since its first version), ``card_merchant``,
        ``card_terminal``, ``ecommerce`` or ``aml``.
    counterparties : int, optional
        Merchants (``card_merchant``, ``ecommerce``) or terminals (``card_terminal``); by default
        derived from ``users`` (a tenth of them, a twentieth for merchants, at least a few).
        Ignored by ``p2p`` and ``aml``, whose counterparties are the account holders.

    Returns
    -------
    SynthResult
        The transactions in timestamp order and their labels.
    """
    began = time.perf_counter()
    pattern_p = _check_arguments(n, users, days, anomaly_rate, missing_origin,
                                 missing_destination, missing_both)
    if domain != "p2p":
        from txanomaly.synth.domains import generate_domain  # the domains build on this module

        return generate_domain(domain, n, users=users, days=days, anomaly_rate=anomaly_rate,
                               seed=seed, start_ms=_start_ms(start),
                               counterparties=counterparties)
    rng = np.random.default_rng(seed)
    population = make_population(rng, users)
    n_anomalies = round(anomaly_rate * n)
    normal = normal_plan(rng, population, n - n_anomalies, days, _start_ms(start), pattern_p)
    anomalies = anomaly_plans(rng, population, normal, n_anomalies, days, pattern_p)
    plan = Plan.concat([normal, *anomalies])
    plan = plan.take(np.argsort(plan.time, kind="stable"))
    transactions = flat_records(rng, population, plan, _start_ms(start))
    labels = labels_frame(transactions["transaction_id"], plan.kind)
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
