"""A time-ordered :class:`~txanomaly.synth.plan.Plan` becomes flat records (ids, types,
states, both sides' amounts, currencies, countries and payment methods).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import polars as pl

from txanomaly.schema import EXTRA_COLUMN, FLAT_COLUMNS, TRANSACTION_STATES, TRANSACTION_TYPES
from txanomaly.synth.plan import NEITHER, ORIGIN_MISSING, Plan
from txanomaly.synth.population import (
    COUNTRIES,
    CURRENCIES,
    CURRENCY_OF_COUNTRY,
    METHOD_P,
    METHODS,
    RATE,
    Population,
    choose_rows,
    weights,
)

_TYPE_WEIGHTS = (  # per pattern, over TRANSACTION_TYPES
    {"TRANSFER": 0.9, "REFUND": 0.05, "OTHER": 0.05},
    {"DEPOSIT": 0.95, "REFUND": 0.03, "OTHER": 0.02},
    {"EXTERNAL_PAYMENT": 0.6, "WITHDRAWAL": 0.35, "OTHER": 0.05},
    {"OTHER": 0.5, "DEPOSIT": 0.25, "WITHDRAWAL": 0.25},
)
_STATE_WEIGHTS = {"SUCCESSFUL": 0.9, "CREATED": 0.015, "PROCESSING": 0.015, "SENT": 0.02,
                  "DECLINED": 0.02, "SUSPENDED": 0.005, "REFUNDED": 0.01, "EXPIRED": 0.005,
                  "REVERSED": 0.01}
_TYPE_P = weights(_TYPE_WEIGHTS, TRANSACTION_TYPES)
_STATE_P = weights([_STATE_WEIGHTS], TRANSACTION_STATES)[0]


def flat_records(rng: np.random.Generator, population: Population, plan: Plan,
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
                             choose_rows(rng, METHOD_P, origin_country))
    destination_method = choose_rows(rng, METHOD_P, destination_country)
    # Half of the payments abroad go by SWIFT.
    swift = (origin_country != destination_country) & (rng.random(n) < 0.5)
    destination_method = np.where(swift, METHODS.index("SWIFT"), destination_method)
    width = max(6, len(str(max(int(plan.counterparty.max(initial=0)), population.size))))
    columns = {
        "transaction_id": _ids("tx-", np.arange(n), max(9, len(str(n - 1)))),
        "timestamp": pl.Series(plan.time + start_ms, dtype=pl.Int64),
        "type": _pick(TRANSACTION_TYPES, choose_rows(rng, _TYPE_P, plan.pattern)),
        "state": _pick(TRANSACTION_STATES, rng.choice(len(TRANSACTION_STATES), n, p=_STATE_P)),
        "origin_user_id": _ids("u-", origin_user, width),
        "destination_user_id": _ids("u-", destination_user, width),
        "origin_amount": pl.Series(origin_amount),
        "origin_currency": _pick(CURRENCIES, CURRENCY_OF_COUNTRY[origin_country]),
        "origin_country": _pick(COUNTRIES, origin_country),
        "destination_amount": pl.Series(destination_amount),
        "destination_currency": _pick(CURRENCIES, CURRENCY_OF_COUNTRY[destination_country]),
        "destination_country": _pick(COUNTRIES, destination_country),
        "origin_method": _pick(METHODS, origin_method),
        "destination_method": _pick(METHODS, destination_method),
    }
    frame = pl.DataFrame({name: columns[name].alias(name) for name in FLAT_COLUMNS})
    return frame.with_columns(pl.lit(None, dtype=pl.Utf8).alias(EXTRA_COLUMN))


def _amounts(plan: Plan, home: np.ndarray, origin_country: np.ndarray,
             destination_country: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both sides' amounts, to the cent: the actor's side as planned, the other converted."""
    home_rate = RATE[CURRENCY_OF_COUNTRY[home]]
    origin_rate = RATE[CURRENCY_OF_COUNTRY[origin_country]]
    destination_rate = RATE[CURRENCY_OF_COUNTRY[destination_country]]
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
