"""The analysts' review in the SQL store: the queue of flagged transactions and the feedback
on them (SQLite or PostgreSQL, beside :class:`~txanomaly.storage.sql.SqlStorage`'s tables).

Tables:

* ``feedback``: every decision ever made (id ascending = the order they were recorded),
  with the transaction id, the decision (``fraud``, ``not_fraud``, ``escalate``), a note, who
  made it and when. Nothing is updated or deleted: the history is kept whole.
* ``feedback_latest``: per transaction, the decision in force: the one with the highest
  feedback id. It is written by an upsert that only moves forward (``WHERE feedback_id <
  excluded.feedback_id``), in the same database transaction as the history row, so two
  analysts deciding at once leave exactly one decision in force, the later one, and both in
  the history: nothing lost, nothing counted twice.
* ``review_queue``: one narrow, indexed row per flagged transaction (time, score, risk level,
  the two user ids, its state: ``open`` or the decision in force). A trigger on
  ``transactions`` adds the row when a flagged transaction is stored, whatever stores it
  (the service, ``txanomaly history load``); :meth:`ReviewStore.install` creates the tables and
  the trigger and adds the flagged transactions stored before it existed. The queue's pages and
  counts read only this table, so they stay fast with millions of stored transactions.

The user's history is read through ``key_history`` (the per-user keys the features keep),
joined to ``transactions`` by arrival number.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import orjson
import sqlalchemy as sa

from txanomaly.errors import TxAnomalyError
from txanomaly.storage.base import StorageError
from txanomaly.storage.sql import SqlStorage, key_history, transactions

#: The decisions an analyst can make. ``escalate`` asks someone else to look: it leaves the
#: open queue but labels nothing.
DECISIONS = ("fraud", "not_fraud", "escalate")
#: Queue states to filter on: ``open`` (no decision yet), ``decided`` (any decision), ``any``,
#: or one decision.
QUEUE_STATES = ("open", "decided", "any", *DECISIONS)
QUEUE_ORDERS = ("newest", "riskiest")
#: Key kinds of ``key_history`` that hold a user's own transactions (not the pairs').
USER_KINDS = ("origin", "origin:own", "destination")
MAX_NOTE = 2000
MAX_AUTHOR = 200

metadata = sa.MetaData()
_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
feedback = sa.Table(
    "feedback", metadata,
    sa.Column("id", _ID, primary_key=True, autoincrement=True),
    sa.Column("transaction_id", sa.Text, nullable=False),
    sa.Column("decision", sa.Text, nullable=False),
    sa.Column("note", sa.Text, nullable=False),
    sa.Column("author", sa.Text, nullable=False),
    sa.Column("created_at", sa.BigInteger, nullable=False),  # ms since epoch (UTC)
    sa.Index("ix_feedback_transaction", "transaction_id", "id"),
    sa.Index("ix_feedback_created", "created_at", "id"),
)
feedback_latest = sa.Table(
    "feedback_latest", metadata,
    sa.Column("transaction_id", sa.Text, primary_key=True),
    sa.Column("feedback_id", sa.BigInteger, nullable=False),
    sa.Column("decision", sa.Text, nullable=False),
    sa.Index("ix_feedback_latest_id", "feedback_id"),
)
review_queue = sa.Table(
    "review_queue", metadata,
    sa.Column("seq", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True,
              autoincrement=False),
    sa.Column("transaction_id", sa.Text, nullable=False, unique=True),
    sa.Column("ts", sa.BigInteger, nullable=False),
    sa.Column("anomaly_score", sa.Double, nullable=False),
    sa.Column("risk_level", sa.Text),
    sa.Column("origin_user", sa.Text),
    sa.Column("destination_user", sa.Text),
    sa.Column("state", sa.Text, nullable=False),
    sa.Index("ix_review_state_ts", "state", "ts", "transaction_id"),
    sa.Index("ix_review_state_score", "state", "anomaly_score", "transaction_id"),
    sa.Index("ix_review_ts", "ts", "transaction_id"),
    sa.Index("ix_review_score", "anomaly_score", "transaction_id"),
    sa.Index("ix_review_origin", "origin_user", "ts"),
    sa.Index("ix_review_destination", "destination_user", "ts"),
    sa.Index("ix_review_counts", "state", "risk_level"),
)

_QUEUE_COLUMNS = "seq, transaction_id, ts, anomaly_score, risk_level, origin_user, " \
                 "destination_user, state"
_TRIGGER = "txanomaly_review_queue_add"
_SQLITE_TRIGGER = f"""
CREATE TRIGGER IF NOT EXISTS {_TRIGGER} AFTER INSERT ON transactions WHEN NEW.is_anomaly
BEGIN
  INSERT OR IGNORE INTO review_queue ({_QUEUE_COLUMNS}) VALUES (
    NEW.seq, NEW.transaction_id, NEW.ts, NEW.anomaly_score,
    json_extract(NEW.result, '$.riskLevel'), json_extract(NEW.record, '$.origin_user_id'),
    json_extract(NEW.record, '$.destination_user_id'), 'open');
END"""
_PG_FUNCTION = f"""
CREATE OR REPLACE FUNCTION {_TRIGGER}() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO review_queue ({_QUEUE_COLUMNS}) VALUES (
    NEW.seq, NEW.transaction_id, NEW.ts, NEW.anomaly_score,
    (NEW.result::jsonb) ->> 'riskLevel', (NEW.record::jsonb) ->> 'origin_user_id',
    (NEW.record::jsonb) ->> 'destination_user_id', 'open')
  ON CONFLICT DO NOTHING;
  RETURN NULL;
END $$"""
_PG_TRIGGER = (f"CREATE TRIGGER {_TRIGGER} AFTER INSERT ON transactions FOR EACH ROW "
               f"WHEN (NEW.is_anomaly) EXECUTE FUNCTION {_TRIGGER}()")
_PG_HAS_TRIGGER = ("SELECT count(*) FROM pg_trigger WHERE tgname = %s "
                   "AND tgrelid = 'transactions'::regclass")
#: Flagged transactions stored before the trigger existed (or while the table was missing).
_BACKFILL = """
{insert} INTO review_queue ({columns})
SELECT t.seq, t.transaction_id, t.ts, t.anomaly_score, {risk}, {origin}, {destination},
       COALESCE(l.decision, 'open')
FROM transactions t LEFT JOIN feedback_latest l ON l.transaction_id = t.transaction_id
WHERE t.is_anomaly AND NOT EXISTS (SELECT 1 FROM review_queue r WHERE r.seq = t.seq) {tail}"""
_SQL_EXISTS = "SELECT 1 FROM transactions WHERE transaction_id = ?"
_SQL_ADD = ("INSERT INTO feedback (transaction_id, decision, note, author, created_at) "
            "VALUES (?, ?, ?, ?, ?) RETURNING id")
_SQL_LATEST = ("INSERT INTO feedback_latest (transaction_id, feedback_id, decision) "
               "VALUES (?, ?, ?) ON CONFLICT (transaction_id) DO UPDATE SET "
               "feedback_id = excluded.feedback_id, decision = excluded.decision "
               "WHERE feedback_latest.feedback_id < excluded.feedback_id")
_SQL_STATE = ("UPDATE review_queue SET state = (SELECT decision FROM feedback_latest "
              "WHERE transaction_id = ?) WHERE transaction_id = ?")


class UnknownTransaction(TxAnomalyError):
    """Feedback names a transaction the store does not hold."""


class FeedbackError(TxAnomalyError):
    """Feedback that breaks the rules (decision, note or author); the message names the
    field."""


@dataclass(frozen=True)
class FeedbackRow:
    """One recorded decision. ``current`` is True while it is the decision in force."""

    id: int
    transaction_id: str
    decision: str
    note: str
    author: str
    created_at: int
    current: bool = True

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "transactionId": self.transaction_id, "decision": self.decision,
                "note": self.note, "author": self.author, "createdAt": self.created_at,
                "current": self.current}


@dataclass(frozen=True)
class QueueFilter:
    """Which flagged transactions a queue page shows (every field optional but ``state``)."""

    state: str = "open"
    risk: str | None = None
    user: str | None = None
    start: int | None = None  # inclusive, ms
    end: int | None = None    # exclusive, ms
    order: str = "newest"

    def __post_init__(self) -> None:
        if self.state not in QUEUE_STATES:
            raise FeedbackError(f"state must be one of {', '.join(QUEUE_STATES)}, "
                                f"got {self.state!r}")
        if self.order not in QUEUE_ORDERS:
            raise FeedbackError(f"order must be one of {', '.join(QUEUE_ORDERS)}, "
                                f"got {self.order!r}")


@dataclass(frozen=True)
class QueueItem:
    """A flagged transaction in the queue, with its stored record and verdict."""

    transaction_id: str
    timestamp: int
    anomaly_score: float
    risk_level: str | None
    state: str
    record: dict[str, Any]
    result: dict[str, Any]


@dataclass(frozen=True)
class UserTransaction:
    """One of a user's transactions: time, amount, score, flag and decision in force."""

    transaction_id: str
    timestamp: int
    amount: float | None
    currency: str | None
    anomaly_score: float
    is_anomaly: bool
    decision: str | None


def check_feedback(decision: str, note: str, author: str) -> None:
    """The rules of one decision; :class:`FeedbackError` naming the field otherwise."""
    if decision not in DECISIONS:
        raise FeedbackError(f"decision must be one of {', '.join(DECISIONS)}, got {decision!r}")
    if len(note) > MAX_NOTE or "\x00" in note:
        raise FeedbackError(f"note must be at most {MAX_NOTE} characters, without NUL")
    if not author.strip() or len(author) > MAX_AUTHOR or "\x00" in author:
        raise FeedbackError(f"author must be 1 to {MAX_AUTHOR} characters, without NUL")


class ReviewStore:
    """The queue and the feedback over an open :class:`SqlStorage` (its engine and locks).

    Creating it installs the tables and the trigger (idempotent; see :meth:`install`).
    """

    def __init__(self, store: SqlStorage, install: bool = True):
        self.store = store
        self.dialect = store.dialect
        if install:
            self.install()

    # ------------------------------------------------------------------ setup
    @classmethod
    def open_existing(cls, url: str, schema: str | None = None) -> ReviewStore:
        """The review of a database the service has used; creates nothing.

        Raises
        ------
        StorageError
            The database cannot be opened or holds no review tables (no ``txanomaly serve``
            ran on it).
        """
        store = SqlStorage(url, schema=schema, create=False)
        try:
            names = set(sa.inspect(store.engine).get_table_names(schema=schema))
        except sa.exc.SQLAlchemyError as exc:
            store.close()
            raise StorageError(f"cannot open the database {store.location}: {exc}") from None
        missing = {"transactions", *metadata.tables} - names
        if missing:
            store.close()
            raise StorageError(f"{store.location} holds no analysts' feedback (missing "
                               f"table(s) {', '.join(sorted(missing))}): it is the database "
                               "txanomaly serve --db writes")
        return cls(store, install=False)

    def close(self) -> None:
        """Close the storage underneath."""
        self.store.close()

    def install(self) -> int:
        """Create the review tables and the trigger if missing, and queue the flagged
        transactions that are not queued yet. Returns how many were added."""
        with self.store.engine.connect().execution_options(txanomaly_write=True) as conn:
            if self.dialect == "postgresql":
                conn.exec_driver_sql("SELECT pg_advisory_xact_lock(7386412)")  # replicas
            metadata.create_all(conn)
            if self.dialect == "sqlite":
                conn.exec_driver_sql(_SQLITE_TRIGGER)
                sql = _BACKFILL.format(
                    insert="INSERT OR IGNORE", columns=_QUEUE_COLUMNS,
                    risk="json_extract(t.result, '$.riskLevel')",
                    origin="json_extract(t.record, '$.origin_user_id')",
                    destination="json_extract(t.record, '$.destination_user_id')", tail="")
            else:
                if not conn.exec_driver_sql(_PG_HAS_TRIGGER, (_TRIGGER,)).scalar():
                    conn.exec_driver_sql(_PG_FUNCTION)
                    conn.exec_driver_sql(_PG_TRIGGER)
                sql = _BACKFILL.format(
                    insert="INSERT", columns=_QUEUE_COLUMNS,
                    risk="(t.result::jsonb) ->> 'riskLevel'",
                    origin="(t.record::jsonb) ->> 'origin_user_id'",
                    destination="(t.record::jsonb) ->> 'destination_user_id'",
                    tail="ON CONFLICT DO NOTHING")
            added = conn.exec_driver_sql(sql).rowcount
            conn.commit()
        return max(int(added or 0), 0)

    def drop(self) -> None:
        """Drop the review tables and the trigger (tests clean up with this)."""
        with self.store.engine.connect().execution_options(txanomaly_write=True) as conn:
            conn.exec_driver_sql(f"DROP TRIGGER IF EXISTS {_TRIGGER}"
                                 + (" ON transactions" if self.dialect == "postgresql" else ""))
            if self.dialect == "postgresql":
                conn.exec_driver_sql(f"DROP FUNCTION IF EXISTS {_TRIGGER}()")
            metadata.drop_all(conn)
            conn.commit()

    # ------------------------------------------------------------------ writing
    def record(self, transaction_id: str, decision: str, note: str = "", author: str = "",
               at: int | None = None) -> FeedbackRow:
        """Record one decision on a stored transaction; it is in force from now on.

        Raises
        ------
        UnknownTransaction
            No transaction with this id is stored (nothing is written).
        FeedbackError
            The decision, note or author breaks the rules.
        """
        check_feedback(decision, note, author)
        created = int(time.time() * 1000) if at is None else int(at)
        with self.store.transaction(write=True) as tx:
            cur = tx.cur
            cur.execute(self._sql(_SQL_EXISTS), (transaction_id,))
            if cur.fetchone() is None:
                raise UnknownTransaction(f"no stored transaction {transaction_id!r}")
            cur.execute(self._sql(_SQL_ADD), (transaction_id, decision, note, author, created))
            feedback_id = int(cur.fetchone()[0])
            cur.execute(self._sql(_SQL_LATEST), (transaction_id, feedback_id, decision))
            cur.execute(self._sql(_SQL_STATE), (transaction_id, transaction_id))
        return FeedbackRow(feedback_id, transaction_id, decision, note, author, created)

    def _sql(self, sql: str) -> str:
        return sql if self.dialect == "sqlite" else sql.replace("?", "%s")

    # ------------------------------------------------------------------ the queue
    def queue(self, where: QueueFilter, limit: int = 50,
              after: tuple[float | int, str] | None = None) -> list[QueueItem]:
        """One page of the queue: ``newest`` (time, then id, descending) or ``riskiest``
        (score, then id, descending). ``after`` is the (time or score, id) of the previous
        page's last item (:func:`queue_cursor`)."""
        q = _queue_rows(where.user)
        key = q.ts if where.order == "newest" else q.anomaly_score
        t = transactions
        query = (sa.select(q.transaction_id, q.ts, q.anomaly_score, q.risk_level, q.state,
                           t.c.record, t.c.result)
                 .join(t, t.c.seq == q.seq)
                 .where(*_conditions(q, where, risk=True, state=True))
                 .order_by(key.desc(), q.transaction_id.desc()).limit(limit))
        if after is not None:
            literal = sa.literal(after[0], key.type)
            query = query.where(sa.or_(key < literal, sa.and_(
                key == literal, q.transaction_id < sa.literal(after[1], sa.Text))))
        with self.store.engine.connect() as conn:
            rows = conn.execute(query).all()
        return [QueueItem(tid, int(ts), float(score), risk, state, orjson.loads(record),
                          orjson.loads(result))
                for tid, ts, score, risk, state, record, result in rows]

    def counts(self, where: QueueFilter) -> dict[str, Any]:
        """Counts for the queue's filters: ``states`` (per state, under the risk filter),
        ``risks`` (per risk level, under the state filter) and ``total`` (under both);
        user and time filters apply to all."""
        q = _queue_rows(where.user)
        query = (sa.select(q.state, q.risk_level, sa.func.count())
                 .where(*_conditions(q, where, risk=False, state=False))
                 .group_by(q.state, q.risk_level))
        with self.store.engine.connect() as conn:
            rows = conn.execute(query).all()
        states = dict.fromkeys(("open", *DECISIONS), 0)
        risks: dict[str, int] = {"HIGH": 0, "CRITICAL": 0}
        total = 0
        for state, risk, n in rows:
            in_risk = where.risk is None or risk == where.risk
            in_state = _state_matches(where.state, state)
            if in_risk:
                states[state] = states.get(state, 0) + int(n)
            if in_state:
                risks[str(risk)] = risks.get(str(risk), 0) + int(n)
            if in_risk and in_state:
                total += int(n)
        return {"states": states, "risks": risks, "total": total}

    # ------------------------------------------------------------------ feedback
    def history(self, transaction_id: str) -> list[FeedbackRow]:
        """Every decision on one transaction, oldest first."""
        return self.feedback(transaction_id=transaction_id, limit=10_000)

    def feedback(self, *, transaction_id: str | None = None, decision: str | None = None,
                 author: str | None = None, start: int | None = None, end: int | None = None,
                 current_only: bool = False, limit: int = 100, after: int | None = None
                 ) -> list[FeedbackRow]:
        """Recorded decisions in the order they were recorded (keyset by ``after``, the
        previous page's last id). ``start``/``end`` bound the time recorded (ms, end
        exclusive); ``current_only`` keeps the decisions in force."""
        f, latest = feedback.c, feedback_latest.c
        current = (latest.feedback_id == f.id)
        query = (sa.select(f.id, f.transaction_id, f.decision, f.note, f.author, f.created_at,
                           current.label("current"))
                 .select_from(feedback.outerjoin(feedback_latest,
                                                 latest.transaction_id == f.transaction_id))
                 .order_by(f.id).limit(limit))
        for column, value in ((f.transaction_id, transaction_id), (f.decision, decision),
                              (f.author, author)):
            if value is not None:
                query = query.where(column == value)
        if start is not None:
            query = query.where(f.created_at >= start)
        if end is not None:
            query = query.where(f.created_at < end)
        if current_only:
            query = query.where(current)
        if after is not None:
            query = query.where(f.id > after)
        with self.store.engine.connect() as conn:
            rows = conn.execute(query).all()
        return [FeedbackRow(int(i), tid, d, n, a, int(c), bool(cur))
                for i, tid, d, n, a, c, cur in rows]

    def decisions(self) -> dict[str, str]:
        """The decision in force per transaction id."""
        latest = feedback_latest.c
        with self.store.engine.connect() as conn:
            return dict(conn.execute(sa.select(latest.transaction_id, latest.decision)).all())

    def labelled_scores(self) -> list[tuple[str, int, float, str]]:
        """``(transactionId, timestamp, stored anomaly score, decision in force)`` of every
        decided transaction, escalations included."""
        latest, t = feedback_latest.c, transactions.c
        query = (sa.select(t.transaction_id, t.ts, t.anomaly_score, latest.decision)
                 .join_from(feedback_latest, transactions,
                            t.transaction_id == latest.transaction_id)
                 .order_by(t.ts, t.transaction_id))
        with self.store.engine.connect() as conn:
            return [(tid, int(ts), float(s), d) for tid, ts, s, d in conn.execute(query)]

    def scores(self) -> tuple[list[int], list[float]]:
        """Timestamps and stored anomaly scores of every stored transaction (alert volumes)."""
        t = transactions.c
        with self.store.engine.connect() as conn:
            result = conn.execute(sa.select(t.ts, t.anomaly_score)).all()
        return [int(r[0]) for r in result], [float(r[1]) for r in result]

    def recent_features(self, n: int) -> tuple[list[list[float]], list[bool]]:
        """Raw feature vectors and flags of the ``n`` latest stored transactions (arrival
        order): where live traffic lands on the map."""
        t = transactions.c
        with self.store.engine.connect() as conn:
            rows = conn.execute(sa.select(t.features, t.is_anomaly)
                                .order_by(t.seq.desc()).limit(n)).all()
        return [orjson.loads(f) for f, _ in rows], [bool(a) for _, a in rows]

    # ------------------------------------------------------------------ users
    def user_transactions(self, user: str, limit: int = 200, before: int | None = None
                          ) -> list[UserTransaction]:
        """The user's latest ``limit`` transactions (sent or received), newest first, with
        their scores, flags and decisions in force. Read through the per-user history keys,
        so it covers the feature sets that keep per-user keys (both built-in sets do)."""
        t = transactions.c
        h = key_history.c
        latest = feedback_latest.c
        seqs = (sa.select(h.seq, h.ts).where(h.kind.in_(USER_KINDS), h.key == user)
                .distinct())
        if before is not None:
            seqs = seqs.where(h.ts < before)
        inner = seqs.order_by(h.ts.desc(), h.seq.desc()).limit(limit).subquery()
        query = (sa.select(t.transaction_id, t.ts, t.record, t.anomaly_score, t.is_anomaly,
                           latest.decision)
                 .select_from(inner.join(transactions, t.seq == inner.c.seq)
                              .outerjoin(feedback_latest,
                                         latest.transaction_id == t.transaction_id))
                 .order_by(t.ts.desc(), t.seq.desc()))
        with self.store.engine.connect() as conn:
            rows = conn.execute(query).all()
        out = []
        for tid, ts, record, score, flag, decision in rows:
            rec = orjson.loads(record)
            amount = rec.get("destination_amount")
            currency = rec.get("destination_currency")
            if amount is None:
                amount, currency = rec.get("origin_amount"), rec.get("origin_currency")
            out.append(UserTransaction(tid, int(ts), amount, currency, float(score), bool(flag),
                                       decision))
        return out


def _queue_rows(user: str | None) -> Any:
    """The queue's rows, or one user's: a union of the sender and the recipient index
    lookups (see :func:`_conditions` for the state)."""
    q = review_queue.c
    if user is None:
        return q
    sent = sa.select(review_queue).where(q.origin_user == user)
    received = sa.select(review_queue).where(
        q.destination_user == user, sa.or_(q.origin_user.is_(None), q.origin_user != user))
    return sa.union_all(sent, received).subquery("user_queue").c


def _conditions(q: Any, where: QueueFilter, risk: bool, state: bool) -> list[Any]:
    """The filter's WHERE terms on the queue rows ``q`` (the user is chosen by
    :func:`_queue_rows`)."""
    out: list[Any] = []
    # For one user, the state is compared as an expression (state || ''), which no index
    # serves: SQLite, without statistics, otherwise took the state index for its time order
    # and scanned the whole queue (84-100 ms at 1M stored transactions) instead of the
    # user's few rows.
    column = q.state if where.user is None else q.state.concat("")
    if state and where.state == "open":
        out.append(column == "open")
    elif state and where.state == "decided":
        out.append(column != "open")
    elif state and where.state in DECISIONS:
        out.append(column == where.state)
    if risk and where.risk is not None:
        out.append(q.risk_level == where.risk)
    if where.start is not None:
        out.append(q.ts >= where.start)
    if where.end is not None:
        out.append(q.ts < where.end)
    return out


def _state_matches(wanted: str, state: str) -> bool:
    if wanted == "any":
        return True
    if wanted == "decided":
        return state != "open"
    return state == wanted


def queue_key(item: QueueItem, order: str) -> tuple[float | int, str]:
    """The keyset position of ``item`` in a queue of ``order``."""
    return (item.timestamp if order == "newest" else item.anomaly_score, item.transaction_id)


__all__ = ["DECISIONS", "QUEUE_ORDERS", "QUEUE_STATES", "FeedbackError", "FeedbackRow",
           "QueueFilter", "QueueItem", "ReviewStore", "UnknownTransaction", "UserTransaction",
           "check_feedback", "queue_key"]
