"""Ingestion, written once: parsed records in, verdicts out, the keys' history written back.

:func:`ingest` runs every step for every storage (:mod:`txanomaly.storage`), inside one
database transaction of that storage:

1. content hashes; a transactionId repeated in the batch with other content is a conflict;
2. (storing, on a storage with concurrent writers) lock the batch's keys and transactionIds, in
   ascending order of their 64-bit hashes: one consistent order, so two batches never deadlock;
3. (storing) the ids already stored: the same content is a replay (its stored result comes
   back, ``replayed=True``, and nothing changes); other content is a :class:`ConflictError`
   and nothing of the batch is stored;
4. the keys' history: per key, the last row at or before ``min(ts) - longest window`` and every
   later row (:meth:`OnlineFeatures.history_since
   <txanomaly.features.online.OnlineFeatures.history_since>`);
5. online features, in arrival order; each transaction then joins its keys' logs, so a later
   one in the batch sees it. A late arrival (before its key's latest row) takes its place in
   the log and the running sums of the rows after it are recomputed;
6. the verdicts: one call to the scorer (:meth:`txanomaly.scoring.Scorer.verdicts`) for the
   whole batch;
7. (storing) the transactions, the new key rows and the rows a late arrival moved are written;
   the database transaction commits.

Data goes one way: the storage is only called (to lock, find, load, number and write); it
never calls back up.

>>> from txanomaly.features.online import OnlineFeatures
>>> from txanomaly.scoring import Verdict
>>> from txanomaly.storage import MemoryStorage
>>> class Amount:  # a stand-in scorer: the score is the amount
...     online = OnlineFeatures("seed")
...     def verdicts(self, features, ids):
...         return [Verdict(f[0], f[0] > 100, {"id": i, "score": f[0]})
...                 for f, i in zip(features.tolist(), ids)]
>>> storage = MemoryStorage()
>>> rec = {"transaction_id": "t1", "timestamp": 0, "origin_user_id": "u",
...        "destination_user_id": None, "origin_amount": 10.0, "destination_amount": None}
>>> [(r.result, r.replayed) for r in ingest([rec, rec], Amount(), storage)]
[({'id': 't1', 'score': 10.0}, False), ({'id': 't1', 'score': 10.0}, False)]
>>> ingest([rec], Amount(), storage)[0].replayed
True
>>> ingest([{**rec, "origin_amount": 11.0}], Amount(), storage)
Traceback (most recent call last):
...
txanomaly.ingest.ConflictError: transactionId already used with different content: 't1'
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import orjson
import polars as pl

from txanomaly.errors import TxAnomalyError
from txanomaly.features.online import KeyId, KeyLog, OnlineFeatures
from txanomaly.storage.base import KeyRow, Storage, StorageTransaction, TransactionRow

if TYPE_CHECKING:
    from txanomaly.scoring import Scorer, Verdict


class ConflictError(TxAnomalyError):
    """Transaction ids already stored (or repeated in the batch) with different content.

    ``conflicts`` lists ``(index in the batch, transactionId)``.
    """

    def __init__(self, conflicts: list[tuple[int, str]]):
        self.conflicts = conflicts
        ids = ", ".join(repr(tid) for _, tid in conflicts[:5])
        super().__init__(f"transactionId already used with different content: {ids}")


@dataclass(frozen=True)
class Ingested:
    """One transaction's outcome: its result, and whether it was already stored.

    ``features`` are the raw features computed now (None for a replay).
    """

    result: dict[str, Any]
    replayed: bool
    features: np.ndarray | None = None


def content_hash(record: Mapping[str, Any]) -> str:
    """A canonical hash of a flat record (key order of its ``extra`` fields does not matter)."""
    canonical = dict(record)
    if canonical.get("extra"):
        canonical["extra"] = orjson.loads(canonical["extra"])
    blob = orjson.dumps(canonical, option=orjson.OPT_SORT_KEYS)
    return hashlib.blake2b(blob, digest_size=16).hexdigest()


def ingest(records: Sequence[Mapping[str, Any]], scorer: Scorer, storage: Storage, *,
           persist: bool = True) -> list[Ingested]:
    """Score a batch of parsed (flat) records in arrival order and store them.

    Parameters
    ----------
    records : sequence of dict
        Flat records from :func:`txanomaly.schema.parse_record` (or a file's rows).
    scorer : Scorer
        The model: its ``online`` feature engine and its ``verdicts(features, ids)``.
    storage : Storage
        Where the history is read from and the results are written.
    persist : bool
        False: compute and score against the stored history, store nothing (ids already
        stored are scored again, not replayed).

    Returns
    -------
    list of Ingested
        One per record, in order.

    Raises
    ------
    ConflictError
        A transactionId is stored, or repeated in the batch, with different content;
        nothing is stored.
    """
    hashes = [content_hash(r) for r in records]
    first = _first_occurrences(records, hashes)
    with storage.transaction(write=persist) as tx:
        if persist and storage.locks_keys:
            tx.lock(lock_order(records, scorer.online))
        stored = tx.existing(list(first)) if persist else {}
        conflicts = [(i, r["transaction_id"]) for i, r in enumerate(records)
                     if r["transaction_id"] in stored
                     and stored[r["transaction_id"]][0] != hashes[i]]
        if conflicts:
            raise ConflictError(conflicts)
        todo = [i for i in first.values() if records[i]["transaction_id"] not in stored]
        fresh = _score(tx, scorer, [records[i] for i in todo], [hashes[i] for i in todo],
                       persist)
    by_id = {tid: Ingested(orjson.loads(result), True) for tid, (_, result) in stored.items()}
    by_id.update({records[i]["transaction_id"]: out for i, out in zip(todo, fresh, strict=True)})
    return [by_id[r["transaction_id"]] for r in records]


def ingest_history(frame: pl.DataFrame, scorer: Scorer, storage: Storage,
                   batch_size: int = 1000) -> Iterator[list[Ingested]]:
    """Store a table of flat records in timestamp order (ties in row order), in batches.

    The batch engine orders a table the same way, so afterwards the storage holds exactly the
    history batch scoring builds, and a new transaction gets the batch engine's features and
    score. Each batch is one :func:`ingest` (``persist=True``): running it again replays.

    Yields
    ------
    list of Ingested
        Each batch's outcomes, as it is committed.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    ordered = frame.sort("timestamp", maintain_order=True)
    for start in range(0, ordered.height, batch_size):
        yield ingest(ordered.slice(start, batch_size).to_dicts(), scorer, storage)


def _score(tx: StorageTransaction, scorer: Scorer, recs: list[Mapping[str, Any]],
           hashes: list[str], persist: bool) -> list[Ingested]:
    """Steps 4-7 for the transactions not stored yet."""
    if not recs:
        return []
    online = scorer.online
    logs = tx.key_logs(history_bounds(recs, online))
    # Not stored: negative arrival numbers, which no stored row has.
    seqs = tx.next_seqs(len(recs)) if persist else list(range(-len(recs), 0))
    features, dirty = _features(recs, online, logs, seqs)
    verdicts = scorer.verdicts(features, [r["transaction_id"] for r in recs])
    if persist:
        tx.write(_transaction_rows(recs, hashes, seqs, features, verdicts),
                 *_key_rows(logs, dirty, set(seqs)))
    return [Ingested(v.result, False, features[j]) for j, v in enumerate(verdicts)]


def _features(recs: list[Mapping[str, Any]], online: OnlineFeatures,
              logs: dict[KeyId, KeyLog], seqs: list[int]
              ) -> tuple[np.ndarray, dict[KeyId, int]]:
    """Each record's features, then its insertion into its keys' logs (in arrival order).

    Returns the ``(n, d)`` features and, per key touched, the first log index that changed.
    """
    features = np.empty((len(recs), len(online.feature_set.features)), dtype=np.float64)
    dirty: dict[KeyId, int] = {}
    for j, rec in enumerate(recs):
        features[j] = online.compute(rec, logs)
        ts = int(rec["timestamp"])
        for kid in online.key_ids(rec):
            log = logs.get(kid)
            p = log.insert_at(ts) if log is not None else 0
            dirty[kid] = min(dirty.get(kid, p), p)
        online.insert(rec, logs, seqs[j])
    return features, dirty


def _transaction_rows(recs: list[Mapping[str, Any]], hashes: list[str], seqs: list[int],
                      features: np.ndarray, verdicts: Sequence[Verdict]) -> list[TransactionRow]:
    dumps = orjson.dumps
    return [(seqs[j], rec["transaction_id"], rec["timestamp"], hashes[j], dumps(rec).decode(),
             dumps(features[j].tolist()).decode(), float(v.anomaly_score), bool(v.is_anomaly),
             dumps(v.result).decode())
            for j, (rec, v) in enumerate(zip(recs, verdicts, strict=True))]


def _key_rows(logs: dict[KeyId, KeyLog], dirty: dict[KeyId, int], new_seqs: set[int]
              ) -> tuple[list[KeyRow], list[KeyRow]]:
    """The key rows to write: (new, changed); per key, every row from its first change on."""
    new: list[KeyRow] = []
    changed: list[KeyRow] = []
    for (kind, key), start in dirty.items():
        log = logs[(kind, key)]
        for i in range(start, len(log)):
            row = (kind, key, log.seq[i], log.ts[i], log.pos[i], log.amount[i],
                   log.cum_before[i], log.cum[i], log.d1[i], log.d2[i], log.shift)
            # A stored row after a late arrival moved: its position and running sums changed.
            (new if log.seq[i] in new_seqs else changed).append(row)
    return new, changed


def history_bounds(recs: Sequence[Mapping[str, Any]], online: OnlineFeatures
                   ) -> dict[KeyId, int]:
    """Per key of the batch, the time from which its history must be loaded."""
    since: dict[KeyId, int] = {}
    for rec in recs:
        bound = online.history_since(int(rec["timestamp"]))
        for kid in online.key_ids(rec):
            since[kid] = min(since.get(kid, bound), bound)
    return since


def lock_order(records: Sequence[Mapping[str, Any]], online: OnlineFeatures) -> list[int]:
    """The 64-bit hashes of the batch's keys and transactionIds, ascending and unique.

    Every writer locks in this one order, so two batches that share keys never deadlock.
    """
    names = {f"tx\x1e{r['transaction_id']}" for r in records}
    for rec in records:
        names.update(f"{kind}\x1e{key}" for kind, key in online.key_ids(rec))
    return sorted({_lock_hash(n) for n in names})


def _first_occurrences(records: Sequence[Mapping[str, Any]], hashes: list[str]
                       ) -> dict[str, int]:
    """Each transactionId's first index; a repeat with other content is a conflict."""
    first: dict[str, int] = {}
    conflicts = []
    for i, rec in enumerate(records):
        tid = rec["transaction_id"]
        if tid not in first:
            first[tid] = i
        elif hashes[first[tid]] != hashes[i]:
            conflicts.append((i, tid))
    if conflicts:
        raise ConflictError(conflicts)
    return first


def _lock_hash(name: str) -> int:
    """A signed 64-bit hash (PostgreSQL advisory locks take a bigint)."""
    return int.from_bytes(hashlib.blake2b(name.encode(), digest_size=8).digest(), "big",
                          signed=True)


__all__ = ["ConflictError", "Ingested", "content_hash", "history_bounds", "ingest",
           "ingest_history", "lock_order"]
