"""Online shopping: shoppers in nine countries pay web shops, mostly at home.

Each shopper has a home country (hence a currency), a payment method (card, wallet, UPI in
India), a few favourite shops in their country, an amount level and usual hours. Shops have a
country, a popularity (a few big shops serve most shoppers) and a price level. International
shoppers (15 %) sometimes buy abroad, paying in their own currency what the shop receives in
its own. The planted fraud: card testing (many tiny payments within minutes at one shop,
half of them declined), account takeover (a strictly domestic shopper suddenly paying a shop
abroad, in another currency, several times their usual amount, at any hour) and a single
large purchase at a usual shop.
"""

from __future__ import annotations

import numpy as np

from txanomaly.schema import TRANSACTION_STATES, TRANSACTION_TYPES
from txanomaly.synth.anomalies import ready_day
from txanomaly.synth.domains.common import (
    Payments,
    Vocabulary,
    episode_sizes,
    hours_between,
    payments,
    pick_ready,
    split_counts,
    time_in_rhythm,
    to_result,
)
from txanomaly.synth.generator import SynthResult
from txanomaly.synth.plan import day_weights
from txanomaly.synth.population import (
    _COUNTRY_P,
    COUNTRIES,
    CURRENCY_OF_COUNTRY,
    RATE,
    choose_rows,
    log_uniform,
)

MINUTE_MS = 60_000
KINDS: tuple[str, ...] = ("card_testing", "account_takeover", "large_amount")
SHARES = {"card_testing": 0.4, "account_takeover": 0.3, "large_amount": 0.3}
METHODS = ("CARD", "WALLET", "UPI", "GENERIC_BANK_ACCOUNT")
TESTING_SIZES = (5, 20)
TESTING_MINUTES = (2.0, 10.0)  # a card test lasts this long
TESTING_AMOUNT = (0.5, 3.0)  # USD, in the card's currency
TESTING_DECLINED = 0.5
TAKEOVER_FACTOR = (3.0, 10.0)  # x the shopper's usual amount
LARGE_FACTOR = (10.0, 30.0)
INTERNATIONAL_SHARE = 0.15
ABROAD_SHARE = 0.3  # of an international shopper's purchases
FAVOURITES = 4
FAVOURITE_SHARE = 0.7
_VOCABULARY = Vocabulary("c-", "m-", COUNTRIES, METHODS)
_DECLINED = TRANSACTION_STATES.index("DECLINED")
_SUCCESSFUL = TRANSACTION_STATES.index("SUCCESSFUL")


class _World:
    def __init__(self, rng: np.random.Generator, users: int, shops: int) -> None:
        self.rng = rng
        n_c = len(COUNTRIES)
        self.country = rng.choice(n_c, users, p=_COUNTRY_P)
        self.shop_country = np.concatenate([np.arange(n_c),
                                            rng.choice(n_c, max(0, shops - n_c), p=_COUNTRY_P)])
        popularity = rng.lognormal(0.0, 1.2, len(self.shop_country))
        self.price = rng.lognormal(np.log(40.0), 0.6, len(self.shop_country))  # USD
        home = (self.shop_country[None, :] == np.arange(n_c)[:, None]) * popularity
        self.home_p = home / home.sum(axis=1, keepdims=True)  # a country's shops
        self.any_p = (popularity / popularity.sum())[None, :]
        self.favourites = self.shop_in(np.repeat(self.country, FAVOURITES)).reshape(
            users, FAVOURITES)
        self.international = rng.random(users) < INTERNATIONAL_SHARE
        self.level = rng.lognormal(0.0, 0.5, users)
        self.centre, self.spread = rng.uniform(10.0, 22.0, users), rng.uniform(1.0, 2.5, users)
        india = self.country == COUNTRIES.index("IN")
        method = np.where(rng.random(users) < 0.7, 0, 1)
        self.method = np.where(india & (rng.random(users) < 0.5), 2, method)
        activity = rng.lognormal(0.0, 0.7, users)
        self.activity = activity / activity.sum()

    def shop_in(self, country: np.ndarray) -> np.ndarray:
        return choose_rows(self.rng, self.home_p, country)

    def any_shop(self, k: int) -> np.ndarray:
        return choose_rows(self.rng, self.any_p, np.zeros(k, dtype=np.int64))

    def usual_shop(self, shopper: np.ndarray) -> np.ndarray:
        k = len(shopper)
        slot = (FAVOURITES * self.rng.random(k) ** 2).astype(np.int64)
        shop = np.where(self.rng.random(k) < FAVOURITE_SHARE, self.favourites[shopper, slot],
                        self.shop_in(self.country[shopper]))
        abroad = self.international[shopper] & (self.rng.random(k) < ABROAD_SHARE)
        return np.where(abroad, self.any_shop(k), shop)

    def usual_amount(self, shopper: np.ndarray, shop: np.ndarray) -> np.ndarray:
        """In the shopper's currency."""
        z = np.clip(self.rng.standard_normal(len(shopper)), -3.0, 3.0)
        return self.median(shopper, shop) * np.exp(0.45 * z)

    def median(self, shopper: np.ndarray, shop: np.ndarray) -> np.ndarray:
        return (self.price[shop] * self.level[shopper]
                * RATE[CURRENCY_OF_COUNTRY[self.country[shopper]]])

    def plan(self, shopper: np.ndarray, shop: np.ndarray, when: np.ndarray,
             amount: np.ndarray, kind: int) -> Payments:
        home, there = self.country[shopper], self.shop_country[shop]
        return payments(shopper, shop, when, amount, origin_country=home,
                        destination_country=there, origin_currency=CURRENCY_OF_COUNTRY[home],
                        destination_currency=CURRENCY_OF_COUNTRY[there],
                        origin_method=self.method[shopper],
                        destination_method=METHODS.index("GENERIC_BANK_ACCOUNT"),
                        type_=TRANSACTION_TYPES.index("EXTERNAL_PAYMENT"), kind=kind)


def generate(rng: np.random.Generator, n: int, *, users: int, days: int, anomaly_rate: float,
             start_ms: int, counterparties: int | None) -> SynthResult:
    """``n`` purchases by ``users`` shoppers at ``counterparties`` shops (users // 20)."""
    shops = counterparties if counterparties is not None else max(3 * len(COUNTRIES),
                                                                  users // 20)
    world = _World(rng, users, shops)
    n_anomalies = round(anomaly_rate * n)
    n_normal = n - n_anomalies
    first = rng.permutation(users)[: min(n_normal, users)]
    shopper = np.concatenate([first, rng.choice(users, n_normal - len(first),
                                                p=world.activity)])
    shop = world.usual_shop(shopper)
    day = rng.choice(days, n_normal, p=day_weights(days, start_ms))
    when = time_in_rhythm(rng, world.centre[shopper], world.spread[shopper], day)
    normal = world.plan(shopper, shop, when, world.usual_amount(shopper, shop), 0)
    ready = ready_day(shopper, when, users, days)
    counts = split_counts(n_anomalies, list(SHARES.values()))
    testing = _card_testing(world, ready, days, counts[0])
    parts = [normal, testing, _takeover(world, ready, days, counts[1]),
             _large(world, ready, days, counts[2])]
    plan = Payments.concat(parts)
    state = rng.choice([_SUCCESSFUL, _DECLINED], len(plan.time), p=[0.97, 0.03])
    is_testing = plan.kind == KINDS.index("card_testing") + 1
    state[is_testing] = np.where(rng.random(int(is_testing.sum())) < TESTING_DECLINED,
                                 _DECLINED, _SUCCESSFUL)
    return to_result(rng, plan, _VOCABULARY, KINDS, start_ms, days, state=state)


def _card_testing(w: _World, ready: np.ndarray, days: int, total: int) -> Payments:
    """Many tiny payments by one card at one domestic shop within minutes, at any hour."""
    rng = w.rng
    sizes = episode_sizes(rng, total, TESTING_SIZES)
    victim, day = pick_ready(rng, ready, days, len(sizes))
    start = hours_between(rng, day, 0.0, 24.0)
    length = rng.uniform(*TESTING_MINUTES, len(sizes)) * MINUTE_MS
    shopper = np.repeat(victim, sizes)
    shop = np.repeat(w.shop_in(w.country[victim]), sizes)
    when = np.repeat(start, sizes) + (rng.random(len(shopper)) * np.repeat(length, sizes)
                                      ).astype(np.int64)
    amount = (rng.uniform(*TESTING_AMOUNT, len(shopper))
              * RATE[CURRENCY_OF_COUNTRY[w.country[shopper]]])
    return w.plan(shopper, shop, when, amount, KINDS.index("card_testing") + 1)


def _takeover(w: _World, ready: np.ndarray, days: int, k: int) -> Payments:
    """A domestic shopper paying a shop abroad, in another currency, several times as much."""
    rng = w.rng
    shopper, day = pick_ready(rng, ready, days, k, among=~w.international)
    shop = w.any_shop(k)
    home_currency = CURRENCY_OF_COUNTRY[w.country[shopper]]
    for _ in range(50):
        same = CURRENCY_OF_COUNTRY[w.shop_country[shop]] == home_currency
        if not same.any():
            break
        shop[same] = w.any_shop(int(same.sum()))
    amount = w.median(shopper, shop) * log_uniform(rng, TAKEOVER_FACTOR, k)
    when = hours_between(rng, day, 0.0, 24.0)
    return w.plan(shopper, shop, when, amount, KINDS.index("account_takeover") + 1)


def _large(w: _World, ready: np.ndarray, days: int, k: int) -> Payments:
    """One purchase of LARGE_FACTOR x the usual at one of the shopper's favourite shops."""
    shopper, day = pick_ready(w.rng, ready, days, k)
    shop = w.favourites[shopper, 0]
    amount = w.median(shopper, shop) * log_uniform(w.rng, LARGE_FACTOR, k)
    when = time_in_rhythm(w.rng, w.centre[shopper], w.spread[shopper], day)
    return w.plan(shopper, shop, when, amount, KINDS.index("large_amount") + 1)
