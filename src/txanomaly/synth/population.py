"""The synthetic world: countries, currencies, payment methods, and each user's habits.

Each user has a home country (hence a currency and payment-method habits), an amount level
(log-normal across users), a daily rhythm (most are active in the daytime only), an activity
level, and a few favourite counterparties. The helpers here draw from those habits; everything
is vectorised NumPy drawn from the caller's generator.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

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
COUNTRIES = tuple(_COUNTRY_TABLE)
CURRENCIES = tuple(_USD_RATE)
METHODS = ("CARD", "IBAN", "ACH", "UPI", "GENERIC_BANK_ACCOUNT", "SWIFT", "WALLET", "MPESA",
           "CHECK", "CASH")

NIGHT_OWL_SHARE = 0.1  # users whose rhythm may fall anywhere in the day
#: Daytime users' activity centres and spreads (hours); times are centre + spread * z with z
#: clipped to +-2, so daytime users only ever transact between 06:00 and 21:00.
DAYTIME_CENTER = (10.0, 17.0)
DAYTIME_SPREAD = (0.75, 2.0)
INTERNATIONAL_SHARE = 0.15  # users who sometimes deal abroad; the rest are strictly domestic
FOREIGN_SHARE = 0.3  # of an international user's new counterparties and outside accounts
MAX_FAVOURITES = 8


@dataclass(frozen=True)
class Population:
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


def weights(rows: Sequence[Mapping[str, float]], vocabulary: Sequence[str]) -> np.ndarray:
    """Turn ``{name: weight}`` rows into a row-normalised matrix over ``vocabulary``."""
    matrix = np.array([[row.get(name, 0.0) for name in vocabulary] for row in rows])
    return matrix / matrix.sum(axis=1, keepdims=True)


def choose_rows(rng: np.random.Generator, probs: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Draw one column index per entry of ``rows`` from the distribution ``probs[row]``."""
    cum = np.cumsum(probs, axis=1)
    cum[:, -1] = 1.0
    # Row r's cumulative weights shifted to [r, r + 1]: one searchsorted serves every row.
    flat = (cum + np.arange(len(probs))[:, None]).ravel()
    picks = np.searchsorted(flat, rows + rng.random(len(rows)), side="right")
    return picks - rows * probs.shape[1]


def log_uniform(rng: np.random.Generator, bounds: tuple[float, float], size: int) -> np.ndarray:
    return np.exp(rng.uniform(np.log(bounds[0]), np.log(bounds[1]), size))


CURRENCY_OF_COUNTRY = np.array([CURRENCIES.index(v[0]) for v in _COUNTRY_TABLE.values()])
RATE = np.array([_USD_RATE[c] for c in CURRENCIES])
_COUNTRY_P = np.array([v[1] for v in _COUNTRY_TABLE.values()])
METHOD_P = weights([v[2] for v in _COUNTRY_TABLE.values()], METHODS)


def make_population(rng: np.random.Generator, users: int) -> Population:
    """Draw every user's habits."""
    country = rng.choice(len(COUNTRIES), users, p=_COUNTRY_P)
    # Amount levels: median 40 USD across users, a factor e^0.9 ~ 2.5 either way (one sd).
    log_level = rng.normal(np.log(40.0), 0.9, users) + np.log(RATE[CURRENCY_OF_COUNTRY[country]])
    daytime = rng.random(users) >= NIGHT_OWL_SHARE
    hour_center = np.where(daytime, rng.uniform(*DAYTIME_CENTER, users), rng.uniform(0, 24, users))
    hour_spread = np.where(daytime, rng.uniform(*DAYTIME_SPREAD, users), rng.uniform(1.5, 4, users))
    # A user alone in their country can only deal abroad.
    alone = np.bincount(country, minlength=len(COUNTRIES))[country] < 2
    international = (rng.random(users) < INTERNATIONAL_SHARE) | alone
    activity = rng.lognormal(0.0, 0.75, users)
    actors = np.repeat(np.arange(users), MAX_FAVOURITES).reshape(users, MAX_FAVOURITES)
    foreign = international[actors] & (rng.random(actors.shape) < FOREIGN_SHARE)
    return Population(
        country=country, log_level=log_level, log_spread=rng.uniform(0.25, 0.6, users),
        hour_center=hour_center, hour_spread=hour_spread, daytime=daytime,
        international=international, activity=activity / activity.sum(),
        favourites=pick_counterparties(rng, country, actors, foreign),
        n_favourites=rng.integers(2, MAX_FAVOURITES + 1, users),
        method=choose_rows(rng, METHOD_P, country))


def pick_counterparties(rng: np.random.Generator, country_of: np.ndarray, actors: np.ndarray,
                        foreign: np.ndarray) -> np.ndarray:
    """Pick another user for each actor: anyone where ``foreign``, else one of the same country.

    ``country_of`` holds every user's country. A user alone in their country (only ever an
    international one) gets the next user in country order as a "compatriot".
    """
    users = len(country_of)
    anyone = rng.integers(0, users - 1, actors.shape)
    anyone += anyone >= actors  # skip the actor itself
    order = np.argsort(country_of, kind="stable")
    counts = np.bincount(country_of, minlength=len(COUNTRIES))
    starts = np.cumsum(counts) - counts
    rank = np.empty(users, dtype=np.int64)  # each user's position among their compatriots
    rank[order] = np.arange(users) - starts[country_of[order]]
    country = country_of[actors]
    offset = (rng.random(actors.shape) * (counts[country] - 1)).astype(np.int64)
    offset += offset >= rank[actors]  # skip the actor itself
    compatriot = order[np.minimum(starts[country] + offset, users - 1)]
    return np.where(foreign, anyone, compatriot)


def favourite(rng: np.random.Generator, population: Population, actor: np.ndarray) -> np.ndarray:
    # Squaring the uniform draw makes the first favourites the most frequent.
    slot = (population.n_favourites[actor] * rng.random(len(actor)) ** 2).astype(np.int64)
    return population.favourites[actor, slot]


def time_of_day(rng: np.random.Generator, population: Population,
                actor: np.ndarray) -> np.ndarray:
    """Milliseconds after midnight in each actor's daily rhythm."""
    z = np.clip(rng.standard_normal(len(actor)), -2.0, 2.0)
    hours = (population.hour_center[actor] + population.hour_spread[actor] * z) % 24.0
    return np.minimum((hours * HOUR_MS).astype(np.int64), DAY_MS - 1)


def usual_amount(rng: np.random.Generator, population: Population,
                 actor: np.ndarray) -> np.ndarray:
    """Amounts in each actor's home currency, within 3 of their spreads of their level."""
    z = np.clip(rng.standard_normal(len(actor)), -3.0, 3.0)
    return np.exp(population.log_level[actor] + population.log_spread[actor] * z)
