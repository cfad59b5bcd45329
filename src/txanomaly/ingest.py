"""Ingestion, written once: parsed records in, verdicts out, the keys' history written back.

:func:`ingest` runs every step for every storage (:mod:`txanomaly.storage`), inside one
database transaction of that storage:

1. content hashes; a transactionId repeated in the batch with other content is a conflict;
2. (storing, on a storage with concurrent writers) lock the batch's keys and transactionIds, in
   ascending order of their 64-bit hashes: one consistent order, so two batches never deadlock;
3. (storing) the ids already stored: the same content is a replay (its stored result comes
   back, ``replayed=True``, and nothing changes); other content is a :class:`ConflictError`
   and nothing of the batch is stored;
4. the keys' history: per key and transaction at ``t``, the last row at or before ``t`` and
   at or before the start of each window, and the key's last row (:func:`history_spans`):
   never the rows inside a window or after a late arrival;
5. online features, in arrival order; each transaction then joins its keys' logs, so a later
   one in the batch sees it. A late arrival (before its key's latest row) takes its place in
   the log and moves the running sums of the rows after it by its own contribution (a
   :data:`~txanomaly.features.online.KeyShift`);
6. the verdicts: one call to the scorer (:meth:`txanomaly.scoring.Scorer.verdicts`) for the
   whole batch;
7. (storing) the transactions and the new key rows are written, and the storage moves the
   stored rows after each late arrival (one statement each, whether loaded or not); the
   database transaction commits. A batch whose late arrivals would move more rows than
   ``max_moved_rows`` is refused (:class:`WorkBudgetError`) before anything is written.

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
from txanomaly.features.online import KeyId, KeyLog, KeyShift, OnlineFeatures
from txanomaly.storage.base import END, KeyRow, Storage, StorageTransaction, TransactionRow

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


class WorkBudgetError(TxAnomalyError):
    """A batch's late arrivals would move more stored key rows than the budget allows."""

    def __init__(self, late: int, moved: int, budget: int):
        self.late, self.moved, self.budget = late, moved, budget
        super().__init__(f"{late} back-dated transaction(s) would move {moved} stored key rows "
                         f"(at most {budget} per request): send fewer per request")


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
           persist: bool = True, max_moved_rows: int | None = None,
           wait: bool = True) -> list[Ingested]:
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
    max_moved_rows : int, optional
        The work budget of late arrivals: the most stored key rows (after them in their
        keys' logs) the batch may move; more raises :class:`WorkBudgetError` and stores
        nothing. None: no limit.

    Returns
    -------
    list of Ingested
        One per record, in order.

    Raises
    ------
    ConflictError
        A transactionId is stored, or repeated in the batch, with different content;
        nothing is stored.
    WorkBudgetError
        Its late arrivals would move more than ``max_moved_rows`` key rows.
    StorageBusy
        ``wait=False`` and another writer holds the storage: nothing was done.
    """
    hashes = [content_hash(r) for r in records]
    first = _first_occurrences(records, hashes)
    with storage.transaction(write=persist, wait=wait) as tx:
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
                       persist, max_moved_rows)
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
           hashes: list[str], persist: bool, max_moved_rows: int | None) -> list[Ingested]:
    """Steps 4-7 for the transactions not stored yet."""
    if not recs:
        return []
    online = scorer.online
    logs = tx.key_logs(history_spans(recs, online))
    # Not stored: negative arrival numbers, which no stored row has.
    seqs = tx.next_seqs(len(recs)) if persist else list(range(-len(recs), 0))
    features, shifts, moved = _features(recs, online, logs, seqs)
    if persist and max_moved_rows is not None and moved > max_moved_rows:
        raise WorkBudgetError(len(shifts), moved, max_moved_rows)
    verdicts = scorer.verdicts(features, [r["transaction_id"] for r in recs])
    if persist:
        tx.write(_transaction_rows(recs, hashes, seqs, features, verdicts),
                 _new_key_rows(logs, set(seqs)), shifts)
    return [Ingested(v.result, False, features[j]) for j, v in enumerate(verdicts)]


def _features(recs: list[Mapping[str, Any]], online: OnlineFeatures,
              logs: dict[KeyId, KeyLog], seqs: list[int]
              ) -> tuple[np.ndarray, list[KeyShift], int]:
    """Each record's features, then its insertion into its keys' logs (in arrival order).

    Returns the ``(n, d)`` features, the late arrivals' shifts (in arrival order: the order
    the storage must apply them in, so its sums are the logs' bit for bit) and how many key
    rows they move at most (every row after each, batch rows included).
    """
    features = np.empty((len(recs), len(online.feature_set.features)), dtype=np.float64)
    shifts: list[KeyShift] = []
    moved = 0
    for j, rec in enumerate(recs):
        features[j] = online.compute(rec, logs)
        for shift in online.insert(rec, logs, seqs[j]):
            log = logs[(shift[0], shift[1])]
            # The key's last row is always loaded: its pos says how many rows follow.
            moved += log.pos[-1] - log.pos[log.insert_at(shift[2]) - 1]
            shifts.append(shift)
    return features, shifts, moved


def _transaction_rows(recs: list[Mapping[str, Any]], hashes: list[str], seqs: list[int],
                      features: np.ndarray, verdicts: Sequence[Verdict]) -> list[TransactionRow]:
    dumps = orjson.dumps
    return [(seqs[j], rec["transaction_id"], rec["timestamp"], hashes[j], dumps(rec).decode(),
             dumps(features[j].tolist()).decode(), float(v.anomaly_score), bool(v.is_anomaly),
             dumps(v.result).decode())
            for j, (rec, v) in enumerate(zip(recs, verdicts, strict=True))]


def _new_key_rows(logs: dict[KeyId, KeyLog], new_seqs: set[int]) -> list[KeyRow]:
    """The batch's rows of every key, with their final positions and sums.

    Stored rows a late arrival moved are not among them: the storage moves those itself
    (the shifts), loaded or not.
    """
    return [(kind, key, log.seq[i], log.ts[i], log.pos[i], log.amount[i], log.cum_before[i],
             log.cum[i], log.d1[i], log.d2[i], log.hour_sin_sum[i], log.hour_cos_sum[i],
             log.shift)
            for (kind, key), log in logs.items()
            for i in range(len(log)) if log.seq[i] in new_seqs]


#: Points per key above which :func:`history_spans` loads one span instead: a few
#: transactions of the key (each needs its own time and its windows' starts).
_MAX_POINTS = 12


def history_spans(recs: Sequence[Mapping[str, Any]], online: OnlineFeatures
                  ) -> dict[KeyId, list[tuple[int, int]]]:
    """Per key of the batch, the spans ``(since, until)`` whose rows must be loaded.

    Each is a point ``(x, x)``: the key's last row at or before ``x`` (with its ties), for
    the times :meth:`OnlineFeatures.history_points
    <txanomaly.features.online.OnlineFeatures.history_points>` gives (the transaction's own
    and its windows' starts), and ``(END, END)``, the key's last row (its position says how
    many rows a late arrival moves). Neither the rows inside a window nor those after a late
    arrival are loaded: the cost does not grow with them. A key with many transactions in
    the batch gets one span from its first point to its last instead.
    """
    points: dict[KeyId, set[int]] = {}
    for rec in recs:
        ts = int(rec["timestamp"])
        for kid in online.key_ids(rec):
            points.setdefault(kid, set()).update(online.history_points(kid[0], ts))
    return {kid: _spans(xs) for kid, xs in points.items()}


def _spans(points: set[int]) -> list[tuple[int, int]]:
    """Points, or one span over them when a key has many (a batch of one user's
    transactions): one range scan costs less than a lookup per point (PostgreSQL planned a
    lookup per point of 1,000 as a scan of the key per point)."""
    if len(points) <= _MAX_POINTS:
        return [*((x, x) for x in sorted(points)), (END, END)]
    return [(min(points), max(points)), (END, END)]


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


__all__ = ["ConflictError", "Ingested", "WorkBudgetError", "content_hash", "history_spans",
           "ingest", "ingest_history", "lock_order"]
