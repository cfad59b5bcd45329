"""Card payments at shop terminals, after the simulator of the handbook *Reproducible Machine
Learning for Credit Card Fraud Detection* (Le Borgne et al.).

Customers and terminals sit on a 100 x 100 grid; a customer pays at the terminals nearest
home, amounts drawn around the customer's own mean (5 to 100 EUR, sd half the mean). A
terminal serves many customers. The handbook's three fraud scenarios are its kinds: a payment
above a fixed limit, every payment at a compromised terminal for some days, and a third of a
compromised card's payments over 14 days with their amounts multiplied by 5. The last two
relabel (and, for cards, change) normal payments rather than add new ones.
"""

from __future__ import annotations

import numpy as np

from txanomaly.schema import TRANSACTION_TYPES
from txanomaly.synth.domains.common import (
    Vocabulary,
    payments,
    rhythm,
    split_counts,
    time_in_rhythm,
    to_result,
)
from txanomaly.synth.generator import SynthResult
from txanomaly.synth.plan import day_weights
from txanomaly.synth.population import CURRENCIES

KINDS: tuple[str, ...] = ("large_amount", "compromised_terminal", "compromised_card")
LARGE_LIMIT = 220.0  # every payment above it is fraud; normal payments never exceed it
LARGE_RANGE = (LARGE_LIMIT + 0.01, 450.0)
USUAL_TERMINALS = 8  # a customer pays at the nearest ones, the nearest most often
TERMINAL_DAYS = 28  # a compromised terminal's payments are fraud for this many days (at most)
CARD_DAYS = 14  # a compromised card's window
CARD_FACTOR = 5.0
GRID = 100.0
_VOCABULARY = Vocabulary("c-", "t-", ("FR",), ("CARD", "GENERIC_BANK_ACCOUNT"))
_EUR = CURRENCIES.index("EUR")


def generate(rng: np.random.Generator, n: int, *, users: int, days: int, anomaly_rate: float,
             start_ms: int, counterparties: int | None) -> SynthResult:
    """``n`` payments by ``users`` customers at ``counterparties`` terminals (users // 10)."""
    terminals = counterparties if counterparties is not None else max(5, users // 10)
    customer_xy = rng.uniform(0.0, GRID, (users, 2))
    terminal_xy = rng.uniform(0.0, GRID, (terminals, 2))
    usual = _nearest(customer_xy, terminal_xy, min(USUAL_TERMINALS, terminals))
    mean = rng.uniform(5.0, 100.0, users)
    activity = rng.uniform(0.1, 4.0, users)  # the handbook's daily rate, up to 4 a day
    centre, spread = rhythm(rng, users)

    first = rng.permutation(users)[: min(n, users)]
    customer = np.concatenate([first, rng.choice(users, n - len(first),
                                                 p=activity / activity.sum())])
    slot = (usual.shape[1] * rng.random(n) ** 2).astype(np.int64)
    terminal = usual[customer, slot]
    day = rng.choice(days, n, p=day_weights(days, start_ms))
    when = time_in_rhythm(rng, centre[customer], spread[customer], day)
    amount = rng.normal(mean[customer], mean[customer] / 2)
    redraw = (amount <= 0) | (amount > LARGE_LIMIT)  # the handbook redraws negative amounts
    amount[redraw] = rng.uniform(0.0, 2 * mean[customer[redraw]])
    amount = np.maximum(np.round(amount, 2), 0.01)

    kind = np.zeros(n, dtype=np.int8)
    target = split_counts(round(anomaly_rate * n), [1, 1, 1])
    _compromise_terminals(rng, terminal, day, kind, terminals, days, target[1])
    amount = _compromise_cards(rng, customer, day, kind, amount, users, days, target[2])
    free = np.flatnonzero(kind == 0)
    large = rng.choice(free, min(target[0], len(free)), replace=False)
    kind[large] = KINDS.index("large_amount") + 1
    amount[large] = np.round(rng.uniform(*LARGE_RANGE, len(large)), 2)

    plan = payments(customer, terminal, when, amount, origin_country=0, destination_country=0,
                    origin_currency=_EUR, destination_currency=_EUR, origin_method=0,
                    destination_method=1, type_=TRANSACTION_TYPES.index("EXTERNAL_PAYMENT"),
                    kind=kind)
    return to_result(rng, plan, _VOCABULARY, KINDS, start_ms, days)


def _nearest(points: np.ndarray, sites: np.ndarray, k: int) -> np.ndarray:
    """The ``k`` nearest sites of each point, nearest first (in chunks of points)."""
    out = np.empty((len(points), k), dtype=np.int64)
    step = max(1, 4_000_000 // len(sites))
    for lo in range(0, len(points), step):
        d = ((points[lo:lo + step, None, :] - sites[None, :, :]) ** 2).sum(axis=2)
        part = np.argpartition(d, k - 1, axis=1)[:, :k] if k < len(sites) else \
            np.tile(np.arange(len(sites)), (len(d), 1))
        order = np.argsort(np.take_along_axis(d, part, axis=1), axis=1)
        out[lo:lo + step] = np.take_along_axis(part, order, axis=1)
    return out


def _compromise_terminals(rng: np.random.Generator, terminal: np.ndarray, day: np.ndarray,
                          kind: np.ndarray, terminals: int, days: int, target: int) -> None:
    """Mark every payment at random terminals for a window of days until ``target`` is met.

    The count is approximate: the last window is cut short once the target is met, so it
    passes the target by at most one terminal's payments of one day.
    """
    if target <= 0:
        return
    length = max(1, min(TERMINAL_DAYS, days // 4))
    per_day = np.zeros((terminals, days), dtype=np.int64)
    np.add.at(per_day, (terminal, day), 1)
    marked = np.zeros((terminals, days), dtype=bool)
    total = 0
    for _ in range(10 * terminals * days):
        t, start = int(rng.integers(terminals)), int(rng.integers(days))
        for d in range(start, min(start + length, days)):  # the last window may end early
            if not marked[t, d]:
                marked[t, d] = True
                total += int(per_day[t, d])
            if total >= target:
                break
        if total >= target:
            break
    kind[marked[terminal, day]] = KINDS.index("compromised_terminal") + 1


def _compromise_cards(rng: np.random.Generator, customer: np.ndarray, day: np.ndarray,
                      kind: np.ndarray, amount: np.ndarray, users: int, days: int,
                      target: int) -> np.ndarray:
    """A third of a card's payments in CARD_DAYS days, amounts x CARD_FACTOR, until ``target``.

    Returns the new amounts; ``kind`` is marked in place. Approximate: the last card passes
    the target by at most a third of its payments in the window.
    """
    amount = amount.copy()
    if target <= 0:
        return amount
    order = np.lexsort((day, customer))
    counts = np.bincount(customer, minlength=users)
    starts = np.cumsum(counts) - counts
    code = KINDS.index("compromised_card") + 1
    total = 0
    for _ in range(10 * users):
        c, start = int(rng.integers(users)), int(rng.integers(days))
        rows = order[starts[c]:starts[c] + counts[c]]
        rows = rows[(day[rows] >= start) & (day[rows] < start + CARD_DAYS) & (kind[rows] == 0)]
        chosen = rng.permutation(rows)[: len(rows) // 3]
        if len(chosen) == 0:
            continue
        kind[chosen] = code
        amount[chosen] = np.round(amount[chosen] * CARD_FACTOR, 2)
        total += len(chosen)
        if total >= target:
            break
    return amount
