"""The review queue and the feedback table, on a real SQLite file and real PostgreSQL.

Transactions go in through the one ingestion path with a trained model; the queue is filled
by the database trigger, feedback supersedes earlier feedback with its history kept, and
concurrent decisions lose nothing and count nothing twice.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import polars as pl
import pytest

from service_fixtures import flat_rows, model_dir, postgres_url, stream, unique_schema
from txanomaly.ingest import ingest
from txanomaly.scoring import Scorer
from txanomaly.storage.sql import SqlStorage
from txanomaly.storage.sql_review import (
    FeedbackError,
    QueueFilter,
    ReviewStore,
    UnknownTransaction,
    queue_key,
)

__all__ = ["model_dir", "stream"]  # fixtures, imported for pytest


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SqlStorage]:
    if request.param == "sqlite":
        storage = SqlStorage(f"sqlite:///{tmp_path}/review.db")
    else:
        storage = SqlStorage(postgres_url(), schema=unique_schema())
    try:
        yield storage
    finally:
        if storage.dialect == "postgresql":
            storage.drop_tables()  # the schema, with everything in it
        storage.close()


@pytest.fixture
def loaded(store: SqlStorage, model_dir: Path, stream: pl.DataFrame
           ) -> tuple[SqlStorage, ReviewStore, list[str]]:
    """The first half stored before the review tables exist (backfilled), the rest after
    (added by the trigger); returns the flagged ids."""
    scorer = Scorer.load(model_dir)
    rows = flat_rows(stream)
    half = len(rows) // 2
    first = ingest(rows[:half], scorer, store)
    review = ReviewStore(store)
    second = ingest(rows[half:], scorer, store)
    flagged = [r.result["transactionId"] for r in first + second if r.result["isAnomaly"]]
    assert len(flagged) >= 5, "the stream must have flagged transactions"
    return store, review, flagged


def test_queue_holds_exactly_the_flagged_transactions(loaded):
    store, review, flagged = loaded
    everything = QueueFilter(state="any")
    items = review.queue(everything, limit=10_000)
    assert sorted(i.transaction_id for i in items) == sorted(flagged)
    assert all(i.state == "open" and i.risk_level in ("HIGH", "CRITICAL") for i in items)
    stored = store.get(items[0].transaction_id)
    assert stored is not None and items[0].result == stored.result
    assert review.install() == 0  # idempotent: nothing queued twice
    assert review.counts(everything)["total"] == len(flagged)


def test_keyset_pages_cover_the_queue_once_in_order(loaded):
    _, review, flagged = loaded
    for order in ("newest", "riskiest"):
        where = QueueFilter(state="any", order=order)
        seen, after = [], None
        while True:
            page = review.queue(where, limit=3, after=after)
            seen += page
            if len(page) < 3:
                break
            after = queue_key(page[-1], order)
        assert sorted(i.transaction_id for i in seen) == sorted(flagged)
        keys = [queue_key(i, order) for i in seen]
        assert keys == sorted(keys, reverse=True)


def test_filters_and_counts_agree(loaded):
    _, review, _flagged = loaded
    items = review.queue(QueueFilter(state="any"), limit=10_000)
    user = next(i.record["origin_user_id"] for i in items if i.record.get("origin_user_id"))
    by_user = review.queue(QueueFilter(state="any", user=user), limit=10_000)
    assert by_user and all(user in (i.record.get("origin_user_id"),
                                    i.record.get("destination_user_id")) for i in by_user)
    mid = sorted(i.timestamp for i in items)[len(items) // 2]
    late = review.queue(QueueFilter(state="any", start=mid), limit=10_000)
    assert {i.transaction_id for i in late} == {i.transaction_id for i in items
                                                if i.timestamp >= mid}
    for risk in ("HIGH", "CRITICAL"):
        page = review.queue(QueueFilter(state="any", risk=risk), limit=10_000)
        assert all(i.risk_level == risk for i in page)
        counts = review.counts(QueueFilter(state="any", risk=risk))
        assert counts["total"] == len(page) == counts["risks"][risk]


def test_a_later_decision_supersedes_and_the_history_is_kept(loaded):
    _store, review, flagged = loaded
    tid = flagged[0]
    first = review.record(tid, "escalate", "looks odd", "alice")
    second = review.record(tid, "fraud", "card reported stolen", "bob")
    assert second.id > first.id
    history = review.history(tid)
    assert [(h.decision, h.author, h.current) for h in history] == [
        ("escalate", "alice", False), ("fraud", "bob", True)]
    assert review.decisions() == {tid: "fraud"}
    # A decided item leaves the open queue and shows under its decision.
    assert tid not in {i.transaction_id for i in review.queue(QueueFilter(), limit=10_000)}
    assert [i.transaction_id for i in review.queue(QueueFilter(state="fraud"))] == [tid]
    counts = review.counts(QueueFilter())
    assert counts["states"]["fraud"] == 1 and counts["states"]["open"] == len(flagged) - 1
    current = review.feedback(current_only=True)
    assert [(f.transaction_id, f.decision) for f in current] == [(tid, "fraud")]
    assert [f.decision for f in review.feedback(decision="escalate")] == ["escalate"]


def test_feedback_for_an_unknown_id_or_a_bad_decision_writes_nothing(loaded):
    _, review, flagged = loaded
    with pytest.raises(UnknownTransaction, match="no stored transaction 'nope'"):
        review.record("nope", "fraud", "", "alice")
    with pytest.raises(FeedbackError, match="decision must be one of"):
        review.record(flagged[0], "maybe", "", "alice")
    with pytest.raises(FeedbackError, match="author"):
        review.record(flagged[0], "fraud", "", " ")
    assert review.feedback() == []


def test_concurrent_decisions_lose_nothing_and_count_nothing_twice(loaded):
    _store, review, flagged = loaded
    targets = flagged[:3]
    decisions = ["fraud", "not_fraud", "escalate"]
    errors: list[BaseException] = []

    def analyst(k: int) -> None:
        try:
            for i in range(8):
                review.record(targets[i % len(targets)], decisions[(k + i) % 3], f"{k}/{i}",
                              f"analyst-{k}")
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=analyst, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    rows = review.feedback(limit=1000)
    assert len(rows) == 32 and len({r.id for r in rows}) == 32
    in_force = review.decisions()
    for tid in targets:
        last = max((r for r in rows if r.transaction_id == tid), key=lambda r: r.id)
        assert in_force[tid] == last.decision
        assert sum(1 for r in rows if r.transaction_id == tid and r.current) == 1
    queued = {i.transaction_id: i.state for i in review.queue(QueueFilter(state="any"),
                                                              limit=10_000)}
    assert all(queued[tid] == in_force[tid] for tid in targets)
    assert review.counts(QueueFilter(state="decided"))["total"] == 3


def test_user_history_lists_sent_and_received_with_decisions(loaded):
    store, review, flagged = loaded
    tid = flagged[0]
    rec = store.get(tid)
    assert rec is not None
    user = rec.record.get("origin_user_id") or rec.record.get("destination_user_id")
    review.record(tid, "not_fraud", "", "carol")
    history = review.user_transactions(user)
    assert tid in {h.transaction_id for h in history}
    assert [h.timestamp for h in history] == sorted((h.timestamp for h in history),
                                                    reverse=True)
    mine = next(h for h in history if h.transaction_id == tid)
    assert mine.decision == "not_fraud" and mine.is_anomaly
    assert len({h.transaction_id for h in history}) == len(history)
