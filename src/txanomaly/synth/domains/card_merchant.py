"""Card payments at merchants, after the Sparkov generator (Brandon Harris's
``Sparkov_Data_Generation``, the Kaggle "credit card transactions fraud detection" data).

US card holders pay merchants of 14 Sparkov categories. Each card uses some of the categories,
mostly at two favourite merchants per category (popular merchants serve many cards), in its
own hours, with amounts around the category's typical amount times the card's own level. The
planted fraud: Sparkov's spending spree on a compromised card (mostly at night, at new
merchants, large amounts in shopping categories, small ones at gas stations), a single
purchase many times the card's usual, and a purchase at night in a category the card never
uses.
"""

from __future__ import annotations

import numpy as np

from txanomaly.schema import TRANSACTION_TYPES
from txanomaly.synth.anomalies import ready_day
from txanomaly.synth.domains.common import (
    Payments,
    Vocabulary,
    episode_sizes,
    hours_between,
    payments,
    pick_ready,
    rhythm,
    split_counts,
    time_in_rhythm,
    to_result,
)
from txanomaly.synth.generator import SynthResult
from txanomaly.synth.plan import day_weights
from txanomaly.synth.population import CURRENCIES, HOUR_MS, choose_rows, log_uniform

KINDS: tuple[str, ...] = ("card_spree", "large_amount", "unusual_category_night")
#: Category: (share of purchases, typical amount in USD), after Sparkov's category means.
CATEGORY_TABLE: dict[str, tuple[float, float]] = {
    "gas_transport": (0.10, 55.0), "grocery_pos": (0.095, 90.0), "home": (0.095, 45.0),
    "shopping_pos": (0.09, 55.0), "kids_pets": (0.087, 45.0), "shopping_net": (0.075, 60.0),
    "entertainment": (0.072, 45.0), "food_dining": (0.07, 35.0), "personal_care": (0.07, 30.0),
    "health_fitness": (0.066, 40.0), "misc_pos": (0.061, 40.0), "misc_net": (0.049, 50.0),
    "grocery_net": (0.035, 45.0), "travel": (0.031, 90.0),
}
CATEGORIES = tuple(CATEGORY_TABLE)
#: Where a spree spends (Sparkov's fraud profiles): mostly online and shopping categories.
SPREE_CATEGORIES = {"shopping_net": 0.25, "shopping_pos": 0.2, "misc_net": 0.15,
                    "grocery_pos": 0.15, "gas_transport": 0.1, "entertainment": 0.05,
                    "home": 0.05, "misc_pos": 0.05}
SPREE_LARGE = (150.0, 1200.0)  # USD, log-uniform; gas_transport gets SPREE_SMALL
SPREE_SMALL = (5.0, 30.0)
SPREE_SIZES = (3, 12)
SPREE_HOURS = (1.0, 8.0)  # a spree lasts this long
SPREE_NIGHT = 0.75  # share of sprees that start between 22:00 and 04:00
LARGE_FACTOR = (8.0, 25.0)  # x the card's usual amount in the category
FAVOURITE_SHARE = 0.8
SHARES = {"card_spree": 0.5, "large_amount": 0.25, "unusual_category_night": 0.25}
_SHARE_P = np.array([v[0] for v in CATEGORY_TABLE.values()])
_SHARE_P = _SHARE_P / _SHARE_P.sum()
_TYPICAL = np.array([v[1] for v in CATEGORY_TABLE.values()])
_VOCABULARY = Vocabulary("c-", "m-", ("US",), ("CARD", "GENERIC_BANK_ACCOUNT"), CATEGORIES)
_USD = CURRENCIES.index("USD")


class _World:
    """Cards and merchants: who uses which categories and merchants, how much and when."""

    def __init__(self, rng: np.random.Generator, users: int, merchants: int) -> None:
        self.rng = rng
        n_cat = len(CATEGORIES)
        # Every category has a merchant; the rest follow the categories' shares.
        self.merchant_category = np.concatenate([
            np.arange(n_cat), rng.choice(n_cat, max(0, merchants - n_cat), p=_SHARE_P)])
        popularity = rng.lognormal(0.0, 1.0, len(self.merchant_category))
        self.by_category = [np.flatnonzero(self.merchant_category == c) for c in range(n_cat)]
        width = max(len(m) for m in self.by_category)
        self.table = np.zeros((n_cat, width), dtype=np.int64)
        self.popular = np.zeros((n_cat, width))
        for c, members in enumerate(self.by_category):
            self.table[c, : len(members)] = members
            self.popular[c, : len(members)] = popularity[members] / popularity[members].sum()
        # Each card uses 6 to 11 categories, weighted by their shares and its own taste.
        keys = rng.random((users, n_cat))
        rank = np.argsort(np.argsort(keys, axis=1), axis=1)
        self.active = rank < rng.integers(6, 12, users)[:, None]
        taste = _SHARE_P * rng.gamma(2.0, 1.0, (users, n_cat)) * self.active
        self.taste = taste / taste.sum(axis=1, keepdims=True)
        cats = np.tile(np.arange(n_cat), users * 2)
        self.favourites = self.merchant_in(cats).reshape(users, 2, n_cat).transpose(0, 2, 1)
        self.level = rng.lognormal(0.0, 0.35, users)
        self.centre, self.spread = rhythm(rng, users)
        activity = rng.lognormal(0.0, 0.6, users)
        self.activity = activity / activity.sum()

    def merchant_in(self, category: np.ndarray) -> np.ndarray:
        """A merchant of each category, the popular ones more often."""
        return self.table[category, choose_rows(self.rng, self.popular, category)]

    def usual_merchant(self, card: np.ndarray, category: np.ndarray) -> np.ndarray:
        slot = (self.rng.random(len(card)) < 0.35).astype(np.int64)
        favourite = self.favourites[card, category, slot]
        return np.where(self.rng.random(len(card)) < FAVOURITE_SHARE, favourite,
                        self.merchant_in(category))

    def usual_amount(self, card: np.ndarray, category: np.ndarray) -> np.ndarray:
        z = np.clip(self.rng.standard_normal(len(card)), -3.0, 3.0)
        return _TYPICAL[category] * self.level[card] * np.exp(0.5 * z)


def generate(rng: np.random.Generator, n: int, *, users: int, days: int, anomaly_rate: float,
             start_ms: int, counterparties: int | None) -> SynthResult:
    """``n`` purchases by ``users`` cards at ``counterparties`` merchants (users // 20)."""
    merchants = counterparties if counterparties is not None else max(
        2 * len(CATEGORIES), users // 20)
    world = _World(rng, users, merchants)
    n_anomalies = round(anomaly_rate * n)
    n_normal = n - n_anomalies
    first = rng.permutation(users)[: min(n_normal, users)]
    card = np.concatenate([first, rng.choice(users, n_normal - len(first), p=world.activity)])
    category = choose_rows(rng, world.taste, card)
    day = rng.choice(days, n_normal, p=day_weights(days, start_ms))
    when = time_in_rhythm(rng, world.centre[card], world.spread[card], day)
    normal = _plan(card, world.usual_merchant(card, category), when,
                   world.usual_amount(card, category), category, 0)
    ready = ready_day(card, when, users, days)
    counts = split_counts(n_anomalies, list(SHARES.values()))
    known = np.unique(normal.origin * len(world.merchant_category) + normal.destination)
    parts = [normal, _spree(world, ready, days, counts[0], known),
             _large(world, ready, days, counts[1]),
             _night_category(world, ready, days, counts[2])]
    return to_result(rng, Payments.concat(parts), _VOCABULARY, KINDS, start_ms, days)


def _plan(card: np.ndarray, merchant: np.ndarray, when: np.ndarray, amount: np.ndarray,
          category: np.ndarray, kind: int) -> Payments:
    return payments(card, merchant, when, amount, origin_country=0, destination_country=0,
                    origin_currency=_USD, destination_currency=_USD, origin_method=0,
                    destination_method=1, type_=TRANSACTION_TYPES.index("EXTERNAL_PAYMENT"),
                    kind=kind, category=category)


def _spree(w: _World, ready: np.ndarray, days: int, total: int,
           known: np.ndarray) -> Payments:
    """Bursts of purchases at merchants new to the card, over a few hours, mostly at night."""
    rng = w.rng
    sizes = episode_sizes(rng, total, SPREE_SIZES)
    victim, day = pick_ready(rng, ready, days, len(sizes))
    night = rng.random(len(sizes)) < SPREE_NIGHT
    start = np.where(night, hours_between(rng, day, 22.0, 28.0),
                     time_in_rhythm(rng, w.centre[victim], w.spread[victim], day))
    length = rng.uniform(*SPREE_HOURS, len(sizes)) * HOUR_MS
    card = np.repeat(victim, sizes)
    when = np.repeat(start, sizes) + (rng.random(len(card)) * np.repeat(length, sizes)).astype(
        np.int64)
    category, merchant = _new_merchant(w, card, _spree_categories(rng, len(card)), known)
    small = category == CATEGORIES.index("gas_transport")
    amount = np.where(small, rng.uniform(*SPREE_SMALL, len(card)),
                      log_uniform(rng, SPREE_LARGE, len(card)))
    return _plan(card, merchant, when, amount, category, KINDS.index("card_spree") + 1)


def _new_merchant(w: _World, card: np.ndarray, category: np.ndarray,
                  known: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A category and merchant for each purchase, the merchant new to the card where possible.

    ``known`` holds the card's normal (card, merchant) pairs as sorted codes
    ``card * merchants + merchant``; a known merchant is redrawn, with its category.
    """
    sizes = np.array([len(m) for m in w.by_category])
    merchants = len(w.merchant_category)
    category = category.copy()
    pick = np.zeros(len(card), dtype=np.int64)
    redraw = np.ones(len(card), dtype=bool)
    for _ in range(10):
        k = int(redraw.sum())
        if not k:
            break
        if k < len(card):
            category[redraw] = _spree_categories(w.rng, k)
        pick[redraw] = w.table[category[redraw],
                               (w.rng.random(k) * sizes[category[redraw]]).astype(np.int64)]
        code = card * merchants + pick
        at = np.minimum(np.searchsorted(known, code), max(len(known) - 1, 0))
        redraw = (known[at] == code) if len(known) else np.zeros(len(card), dtype=bool)
    return category, pick


def _spree_categories(rng: np.random.Generator, k: int) -> np.ndarray:
    p = np.array(list(SPREE_CATEGORIES.values()))
    codes = np.array([CATEGORIES.index(c) for c in SPREE_CATEGORIES])
    return codes[rng.choice(len(codes), k, p=p / p.sum())]


def _large(w: _World, ready: np.ndarray, days: int, k: int) -> Payments:
    """One purchase of LARGE_FACTOR x the card's usual, at a usual merchant and hour."""
    card, day = pick_ready(w.rng, ready, days, k)
    category = choose_rows(w.rng, w.taste, card)
    amount = (_TYPICAL[category] * w.level[card] * log_uniform(w.rng, LARGE_FACTOR, k))
    when = time_in_rhythm(w.rng, w.centre[card], w.spread[card], day)
    return _plan(card, w.usual_merchant(card, category), when, amount, category,
                 KINDS.index("large_amount") + 1)


def _night_category(w: _World, ready: np.ndarray, days: int, k: int) -> Payments:
    """A usual-sized purchase between 00:00 and 04:00 in a category the card never uses."""
    card, day = pick_ready(w.rng, ready, days, k)
    unused = ~w.active[card]
    category = choose_rows(w.rng, unused / unused.sum(axis=1, keepdims=True), np.arange(k))
    when = hours_between(w.rng, day, 0.0, 4.0)
    return _plan(card, w.merchant_in(category), when, w.usual_amount(card, category), category,
                 KINDS.index("unusual_category_night") + 1)
