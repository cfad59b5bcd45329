"""The counterparty rule of :mod:`txanomaly.features.roles`, computed on Spark.

The same two measures over the same rows (the share of destination-named transactions whose
destination also sends; how many times more often than chance a pair is also paid the other
way round), as aggregations and joins on the cluster; the decision is the same rule.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from txanomaly.features.roles import MERCHANT_MAX_RECIPROCITY, MERCHANT_MAX_SHARE, Counterparty

if TYPE_CHECKING:
    from pyspark.sql import DataFrame


def detect_counterparty(frame: DataFrame) -> Counterparty:
    """Whether ``frame``'s destinations are merchants or persons
    (:func:`txanomaly.features.roles.detect_counterparty`, on Spark)."""
    from pyspark.sql import functions as F

    if "destination_user_id" not in frame.columns or "origin_user_id" not in frame.columns:
        return Counterparty("person", float("nan"), 0)
    ids = frame.select(F.col("origin_user_id").cast("string").alias("o"),
                       F.col("destination_user_id").cast("string").alias("d"))
    dest = ids.filter(F.col("d").isNotNull())
    rows = dest.count()
    if rows == 0:
        return Counterparty("person", float("nan"), 0)
    origins = ids.select(F.col("o").alias("d")).filter(F.col("d").isNotNull()).distinct()
    sending = dest.join(origins, "d", "left_semi").count()
    share = sending / rows
    pairs = ids.dropna().distinct()
    n_pairs = pairs.count()
    back = pairs.select(F.col("d").alias("o"), F.col("o").alias("d"))
    reversed_share = pairs.join(back, ["o", "d"], "left_semi").count() / max(n_pairs, 1)
    if n_pairs:
        row = pairs.agg(F.countDistinct("o").alias("o"), F.countDistinct("d").alias("d")).first()
        assert row is not None
        reciprocity = reversed_share / (n_pairs / (row["o"] * row["d"]))
    else:
        reciprocity = 0.0
    merchant = share < MERCHANT_MAX_SHARE or reciprocity < MERCHANT_MAX_RECIPROCITY
    return Counterparty("merchant" if merchant else "person", share, rows, reciprocity)
