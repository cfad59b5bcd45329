"""What a transaction's counterparty is: a merchant, or a person. Detected from the data.

In card and e-commerce logs the destination is a merchant or a shop terminal: many customers pay
it and it never pays anyone; its velocity is its trade, not a customer's behaviour, and a payment
when it is usually quiet is the odd one. In P2P and AML logs the destination is an account that
also sends: a burst of inflow is a mule's. A feature set declares a feature's direction for each
(:attr:`~txanomaly.features.spec.Feature.merchant_direction`); :func:`resolve_counterparty`
picks the role, from the data unless the user says, and the chosen set is saved in the model.

The rule: the destination is a **merchant** when fewer than :data:`MERCHANT_MAX_SHARE` of the
transactions that name a destination name one that also appears as an origin, or when the
(origin, destination) pairs are paid the other way round no more often than chance says
(:data:`MERCHANT_MAX_RECIPROCITY`: the share of pairs also seen reversed, over the share of all
possible pairs that occur). The second test catches ids drawn from one number range for
customers and terminals (customer 17 and terminal 17 look like one account that pays and is
paid, but terminals do not pay customers back): on a handbook-style card log with such ids 50 %
of the payees also "pay" and reversed pairs come 0.5 times as often as chance; on the P2P and AML
synthetic logs 8 and 39 times. Pass ``counterparty="merchant"`` or ``"person"``
(``--counterparty``) to decide yourself.

>>> import polars as pl
>>> card = pl.DataFrame({"origin_user_id": ["c1", "c2", "c1"],
...                      "destination_user_id": ["shop", "shop", "cafe"]})
>>> detect_counterparty(card)
Counterparty(role='merchant', share=0.0, rows=3, reciprocity=0.0, chosen=False)
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import polars as pl

from txanomaly.errors import TxAnomalyError
from txanomaly.features.spec import COUNTERPARTIES, FeatureSet, get_feature_set

logger = logging.getLogger(__name__)

#: Below this share of destination-named transactions whose destination also pays, the
#: destinations are merchants.
MERCHANT_MAX_SHARE = 0.05
#: Below this many times the chance rate of reversed pairs, the destinations are merchants too.
MERCHANT_MAX_RECIPROCITY = 2.0
CHOICES = ("auto", *COUNTERPARTIES)


@dataclass(frozen=True)
class Counterparty:
    """The detected role, the share it was decided on, and the rows that share counts."""

    role: str
    share: float
    rows: int
    #: How many times more often than chance a pair is also paid the other way round.
    reciprocity: float = float("nan")
    #: Given by the user (``--counterparty``), not detected.
    chosen: bool = False

    def describe(self) -> str:
        """One line for the terminal and logs."""
        if self.chosen:
            return f"counterparty: {self.role} (as asked)"
        if self.rows == 0:
            return f"counterparty: {self.role} (no transaction names a destination)"
        return (f"counterparty: {self.role} ({self.share:.1%} of the {self.rows:,} transactions "
                f"with a destination pay an account that also sends; pairs are paid both ways "
                f"{self.reciprocity:.1f} times as often as chance)")


def detect_counterparty(frame: pl.DataFrame) -> Counterparty:
    """Whether ``frame``'s destinations are merchants or persons (see the module's rule)."""
    if "destination_user_id" not in frame.columns or "origin_user_id" not in frame.columns:
        return Counterparty("person", float("nan"), 0)
    ids = frame.select(pl.col("origin_user_id").cast(pl.String).alias("o"),
                       pl.col("destination_user_id").cast(pl.String).alias("d"))
    dest = ids.get_column("d").drop_nulls()
    if dest.len() == 0:
        return Counterparty("person", float("nan"), 0)
    origins = ids.get_column("o").drop_nulls().unique()
    share = float(dest.is_in(origins.implode()).cast(pl.Float64).mean() or 0.0)  # type: ignore[arg-type]
    return decide(share, dest.len(), ids.drop_nulls().unique())


def decide(share: float, rows: int, pairs: pl.DataFrame) -> Counterparty:
    """The rule, from the share of destination-named rows whose destination also pays and the
    distinct (origin, destination) pairs (columns ``o``, ``d``, of any one id type)."""
    back = pairs.select(pl.col("d").alias("o"), pl.col("o").alias("d"))
    reversed_share = pairs.join(back, on=["o", "d"], how="semi").height / max(pairs.height, 1)
    possible = pairs["o"].n_unique() * pairs["d"].n_unique()
    reciprocity = reversed_share / (pairs.height / possible) if pairs.height else 0.0
    merchant = share < MERCHANT_MAX_SHARE or reciprocity < MERCHANT_MAX_RECIPROCITY
    return Counterparty("merchant" if merchant else "person", share, rows, reciprocity)


def resolve_counterparty(feature_set: str | FeatureSet, frame: pl.DataFrame | None,
                         choice: str = "auto") -> tuple[FeatureSet, Counterparty | None]:
    """``feature_set`` with its directions resolved for ``choice`` (``auto``: detected from
    ``frame``). A set already resolved, or whose directions do not depend on the role, is
    returned as it is (with None as the evidence)."""
    fs = get_feature_set(feature_set)
    if choice not in CHOICES:
        raise TxAnomalyError(f"counterparty must be one of {CHOICES}, got {choice!r}")
    if fs.counterparty is not None or all(f.merchant_direction is None for f in fs.features):
        return fs, None
    if choice != "auto":
        evidence = Counterparty(choice, float("nan"), 0, chosen=True)
    elif frame is None:
        raise TxAnomalyError("counterparty='auto' needs the transactions to detect it from")
    else:
        evidence = detect_counterparty(frame)
    logger.info("%s", evidence.describe())
    return fs.for_counterparty(evidence.role), evidence
