""":func:`txanomaly.features.roles.detect_counterparty` over a file read in chunks.

The rule needs three things from the whole file, each as large as the number of distinct
ids, not rows: the origins, how many transactions name each destination, and the distinct
(origin, destination) pairs. :class:`CounterpartyTally` keeps them from chunk to chunk as
64-bit hashes of the ids (16 bytes a distinct pair: 1.2M pairs of the 10M-row synthetic set
took ~0.4 GB as text) and gives the role :func:`detect_counterparty` gives on the whole frame
(a test checks it); two ids would have to share a hash to change a count by one (about one
chance in 10^7 for ten million distinct ids).

>>> import polars as pl
>>> tally = CounterpartyTally()
>>> tally.add(pl.DataFrame({"origin_user_id": ["c1", "c2"], "destination_user_id": ["shop"] * 2}))
>>> tally.add(pl.DataFrame({"origin_user_id": ["c1"], "destination_user_id": ["cafe"]}))
>>> tally.result()
Counterparty(role='merchant', share=0.0, rows=3, reciprocity=0.0, chosen=False)
"""

from __future__ import annotations

import polars as pl

from txanomaly.features.roles import Counterparty, decide

_ID_COLUMNS = ("origin_user_id", "destination_user_id")


class CounterpartyTally:
    """Origins, destination counts and distinct pairs of the chunks seen so far."""

    def __init__(self) -> None:
        self.seen_ids = False
        self._origins = pl.Series("o", [], dtype=pl.UInt64)
        self._destinations = pl.DataFrame(schema={"d": pl.UInt64, "n": pl.UInt64})
        self._pairs = pl.DataFrame(schema={"o": pl.UInt64, "d": pl.UInt64})

    def add(self, records: pl.DataFrame) -> None:
        """Count one chunk of flat records."""
        if not all(c in records.columns for c in _ID_COLUMNS):
            return
        self.seen_ids = True
        ids = records.select(_hashed(_ID_COLUMNS[0]).alias("o"),
                             _hashed(_ID_COLUMNS[1]).alias("d"))
        self._origins = pl.concat([self._origins, ids.get_column("o").drop_nulls()]).unique()
        counts = ids.drop_nulls("d").group_by("d").agg(pl.len().cast(pl.UInt64).alias("n"))
        self._destinations = pl.concat([self._destinations, counts]).group_by("d").agg(
            pl.col("n").sum())
        self._pairs = pl.concat([self._pairs, ids.drop_nulls()]).unique()

    def result(self) -> Counterparty:
        """The role, by :mod:`txanomaly.features.roles`' rule."""
        rows = int(self._destinations.get_column("n").sum() or 0)
        if not self.seen_ids or rows == 0:
            return Counterparty("person", float("nan"), 0)
        paying = self._destinations.filter(pl.col("d").is_in(self._origins.implode()))
        return decide(int(paying.get_column("n").sum() or 0) / rows, rows, self._pairs)


def _hashed(column: str) -> pl.Expr:
    """The id's text hashed to 64 bits (the same in every chunk); null stays null."""
    text = pl.col(column).cast(pl.String)
    return pl.when(text.is_null()).then(None).otherwise(text.hash(seed=0))


__all__ = ["CounterpartyTally"]
