"""What a read gives back: the valid records, the rejected ones with reasons, the repeats."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import polars as pl

from txanomaly.errors import FieldError
from txanomaly.schema import EXTRA_COLUMN, FLAT_COLUMNS, FLAT_SCHEMA

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Rejected:
    """A record that was not accepted, with every reason."""

    index: int
    transaction_id: str | None
    errors: list[FieldError]
    record: Any

    def to_json(self) -> dict[str, Any]:
        """The line of the rejects file: index, transactionId, errors and the record."""
        return {"index": self.index, "transactionId": self.transaction_id,
                "errors": [{"field": e.field, "message": e.message} for e in self.errors],
                "record": self.record}


@dataclass
class ReadResult:
    """What a reader returns: the valid records, the rejected ones and the repeats dropped."""

    frame: pl.DataFrame
    rejects: list[Rejected] = field(default_factory=list)
    exact_duplicates: int = 0

    @property
    def n_records(self) -> int:
        """Records in the input: accepted + rejected + exact repeats."""
        return self.frame.height + len(self.rejects) + self.exact_duplicates


def empty_frame() -> pl.DataFrame:
    """A frame of flat records with no rows."""
    return pl.DataFrame(schema=FLAT_SCHEMA)


def has_repeats(frame: pl.DataFrame) -> bool:
    """Whether a transactionId may repeat. Distinct hashes prove distinct ids (3x cheaper in
    time and memory than n_unique on the strings); a collision takes the exact path."""
    return frame.height > 0 and frame.get_column("transaction_id").hash(
        seed=0).n_unique() != frame.height


def deduplicate(frame: pl.DataFrame, rejects: list[Rejected], keep_index: bool = False
                ) -> ReadResult:
    """Drop exact repeats of a transactionId; reject repeats with different content.

    ``frame`` holds every flat column and ``_index`` (the record's position in the input);
    ``keep_index``: leave ``_index`` in the result (last), else drop it.
    """
    if not has_repeats(frame):
        # In place: drop()/select() would re-align the chunks, copying the whole frame.
        if not keep_index:
            frame.drop_in_place("_index")
        return ReadResult(frame, sorted(rejects, key=lambda r: r.index), 0)
    content = pl.struct([*FLAT_COLUMNS, EXTRA_COLUMN]).hash(seed=0)
    tagged = frame.with_columns(
        _hash=content,
        _first=pl.col("_index").first().over("transaction_id"),
        _first_hash=content.first().over("transaction_id"),
    )
    repeat = pl.col("_index") != pl.col("_first")
    exact = tagged.filter(repeat & (pl.col("_hash") == pl.col("_first_hash"))).height
    conflicting = tagged.filter(repeat & (pl.col("_hash") != pl.col("_first_hash")))
    for row in conflicting.iter_rows(named=True):
        error = FieldError("transactionId", "duplicate transactionId with different content; "
                                            f"record {row['_first']} was kept")
        record = {k: row[k] for k in (*FLAT_COLUMNS, EXTRA_COLUMN)}
        rejects.append(Rejected(row["_index"], row["transaction_id"], [error], record))
    kept = tagged.filter(~repeat).select(*FLAT_COLUMNS, EXTRA_COLUMN,
                                         *(["_index"] if keep_index else []))
    if exact:
        log.info("dropped %d exact repeat(s) of a transactionId", exact)
    return ReadResult(kept, sorted(rejects, key=lambda r: r.index), exact)


def write_rejects(path: str | Path, rejects: list[Rejected]) -> Path:
    """Write rejected records, one JSON object per line: index, transactionId, errors, record."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as fh:
        for rej in rejects:
            fh.write(orjson.dumps(rej.to_json(), default=str) + b"\n")
    return path
