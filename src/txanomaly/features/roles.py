"""What a transaction's counterparty is: a merchant, or a person. Detected from the data.

In card and e-commerce logs the destination is a merchant or a shop terminal: many customers pay
it and it never pays anyone; its velocity is its trade, not a customer's behaviour, and a payment
when it is usually quiet is the odd one. In P2P and AML logs the destination is an account that
also sends: a burst of inflow is a mule's. A feature set declares a feature's direction for each
(:attr:`~txanomaly.features.spec.Feature.merchant_direction`); :func:`resolve_counterparty`
picks the role, from the data unless the user says, and the chosen set is saved in the model.

The rule: the destination is a **merchant** when fewer than :data:`MERCHANT_MAX_SHARE` of the
transactions that name a destination name one that also appears as an origin. Its limit: ids
drawn from one number range for both customers and terminals (customer 17, terminal 17) look
like people; pass ``counterparty="merchant"`` (``--counterparty merchant``) then.

>>> import polars as pl
>>> card = pl.DataFrame({"origin_user_id": ["c1", "c2", "c1"],
...                      "destination_user_id": ["shop", "shop", "cafe"]})
>>> detect_counterparty(card)
Counterparty(role='merchant', share=0.0, rows=3)
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
CHOICES = ("auto", *COUNTERPARTIES)


@dataclass(frozen=True)
class Counterparty:
    """The detected role, the share it was decided on, and the rows that share counts."""

    role: str
    share: float
    rows: int

    def describe(self) -> str:
        """One line for the terminal and logs."""
        if self.rows == 0:
            return f"counterparty: {self.role} (no transaction names a destination)"
        return (f"counterparty: {self.role} ({self.share:.1%} of the {self.rows:,} transactions "
                "with a destination pay an account that also sends)")


def detect_counterparty(frame: pl.DataFrame) -> Counterparty:
    """Whether ``frame``'s destinations are merchants or persons (see the module's rule)."""
    if "destination_user_id" not in frame.columns or "origin_user_id" not in frame.columns:
        return Counterparty("person", float("nan"), 0)
    dest = frame.get_column("destination_user_id").cast(pl.String).drop_nulls()
    if dest.len() == 0:
        return Counterparty("person", float("nan"), 0)
    origins = frame.get_column("origin_user_id").cast(pl.String).drop_nulls().unique()
    share = float(dest.is_in(origins.implode()).cast(pl.Float64).mean() or 0.0)  # type: ignore[arg-type]
    role = "merchant" if share < MERCHANT_MAX_SHARE else "person"
    return Counterparty(role, share, dest.len())


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
        evidence = Counterparty(choice, float("nan"), 0)
    elif frame is None:
        raise TxAnomalyError("counterparty='auto' needs the transactions to detect it from")
    else:
        evidence = detect_counterparty(frame)
    logger.info("%s", evidence.describe())
    return fs.for_counterparty(evidence.role), evidence
