"""Benchmark of the analysts' console over a large store: queue queries and page loads.

Fills a database (a SQLite file; PostgreSQL when ``--postgres`` is given, in a fresh schema
dropped at the end) with ``--rows`` stored transactions (default 1,000,000; 5 % flagged,
10,000 users over 30 days), written straight into the tables in the service's row format
(bulk, not through scoring: filling is not what is measured) with the users' history keys; the
review queue is filled by its trigger as the service's writes fill it. Then, for each
query, the median and p95 of ``--repeat`` runs:

* the queue's first page (50 items): open, newest first (the default view); riskiest first;
  one risk level; one user; a one-day range; the 20th page through cursors;
* the queue's counts (per state and risk level);
* the page loads through the app (ASGI, in process; the whole request: session check,
  queries, HTML): the queue, a transaction page, a user page, the transaction's timeline PNG.

The issue's target: the queue's first page well under 100 ms on SQLite and PostgreSQL.

Run (on a shared machine, under the benchmark lock)::

    flock /tmp/txanomaly-bench.lock .venv/bin/python benchmarks/bench_console.py \\
        --postgres postgresql://postgres@127.0.0.1:5432/test
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from fastapi.testclient import TestClient

from txanomaly.detector import AnomalyDetector
from txanomaly.features.batch import feature_matrix
from txanomaly.pipeline import TransactionModel
from txanomaly.service import Settings, create_app
from txanomaly.storage.sql import SqlStorage
from txanomaly.storage.sql_review import QueueFilter, ReviewStore, queue_key
from txanomaly.synth import generate

KEY = "bench-key"
DAY_MS = 86_400_000
START_MS = 1_700_000_000_000
CHUNK = 50_000


def train_model(root: Path) -> TransactionModel:
    data = generate(3_000, users=60, days=5, anomaly_rate=0.03, seed=1).transactions
    model = TransactionModel("standard", AnomalyDetector(map_size="6x6", epochs=3))
    model.fit(feature_matrix(data, "standard"))
    model.save(root / "model")
    return model


def rows(n: int, users: int, names: list[str], threshold: float, seed: int = 0
         ) -> Iterator[tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]]:
    """Chunks of (transaction rows, key-history rows) in the service's format."""
    rng = np.random.default_rng(seed)
    ts = np.sort(START_MS + rng.integers(0, 30 * DAY_MS, n))
    for start in range(0, n, CHUNK):
        stop = min(start + CHUNK, n)
        m = stop - start
        origin = rng.integers(0, users, m)
        dest = rng.integers(0, users, m)
        amount = np.round(rng.lognormal(3.5, 1.0, m), 2)
        flagged = rng.random(m) < 0.05
        score = np.where(flagged, threshold * rng.uniform(1.0001, 3.0, m),
                         threshold * rng.uniform(0.1, 1.0, m))
        tx, keys = [], []
        for i in range(m):
            seq = start + i + 1
            tid = f"t{seq:08d}"
            o, d = f"u{origin[i]:05d}", f"u{dest[i]:05d}"
            t = int(ts[start + i])
            record = {"transaction_id": tid, "timestamp": t, "type": "TRANSFER",
                      "state": "SUCCESSFUL", "origin_user_id": o, "destination_user_id": d,
                      "origin_amount": float(amount[i]), "origin_currency": "EUR",
                      "destination_amount": float(amount[i]), "destination_currency": "EUR"}
            s = float(score[i])
            level = ("CRITICAL" if s > 2 * threshold else "HIGH" if s > threshold else
                     "MEDIUM" if s > 0.75 * threshold else "LOW")
            reasons = [{"feature": names[(i + k) % len(names)], "share": 0.5 / (k + 1),
                        "value": float(amount[i]), "prototype": 40.0} for k in range(3)]
            result = {"transactionId": tid, "anomalyScore": s, "isAnomaly": bool(flagged[i]),
                      "verdict": "FLAG" if flagged[i] else "ALLOW", "riskLevel": level,
                      "threshold": threshold, "reasons": reasons, "modelVersion": "bench"}
            features = [round(float(amount[i]), 3)] * len(names)
            tx.append((seq, tid, t, "h", orjson.dumps(record).decode(),
                       orjson.dumps(features).decode(), s, bool(flagged[i]),
                       orjson.dumps(result).decode()))
            for kind, key in (("origin:own", o), ("destination", d)):
                keys.append((kind, key, seq, t, 0, float(amount[i]), 0.0, 0.0, 0.0, 0.0, 0.0))
        yield tx, keys


def fill(store: SqlStorage, n: int, users: int, names: list[str], threshold: float) -> float:
    started = time.perf_counter()
    insert_tx = ("INSERT INTO transactions (seq, transaction_id, ts, content_hash, record, "
                 "features, anomaly_score, is_anomaly, result) VALUES "
                 "(?, ?, ?, ?, ?, ?, ?, ?, ?)")
    insert_key = ("INSERT INTO key_history (kind, key, seq, ts, pos, amount, cum_before, cum, "
                  "d1, d2, shift) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")
    for tx, keys in rows(n, users, names, threshold):
        with store.transaction(write=True) as t:
            if store.dialect == "postgresql":  # COPY: the row-by-row inserts took 6 minutes
                for sql, chunk in ((insert_tx, tx), (insert_key, keys)):
                    head = sql.split(" VALUES")[0].replace("INSERT INTO", "COPY")
                    with t.cur.copy(f"{head} FROM STDIN") as copy:
                        for row in chunk:
                            copy.write_row(row)
            else:
                t.cur.executemany(insert_tx, tx)
                t.cur.executemany(insert_key, keys)
        print(f"  stored {tx[-1][0]:,} rows ({time.perf_counter() - started:.0f} s)",
              end="\r", flush=True)
    if store.dialect == "postgresql":  # what autovacuum does to a running service's tables
        with store.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql("VACUUM ANALYZE")
    print()
    return time.perf_counter() - started


def timed(fn: Callable[[], Any], repeat: int) -> tuple[float, float]:
    fn()  # warm: plans and pages cached as a running service has them
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000)
    times.sort()
    return statistics.median(times), times[min(len(times) - 1, int(0.95 * len(times)))]


def queries(review: ReviewStore, repeat: int) -> list[tuple[str, float, float]]:
    first = review.queue(QueueFilter(), 50)
    user = first[0].record["origin_user_id"]
    day = (first[0].timestamp - DAY_MS, first[0].timestamp)
    last = review.store.last_timestamp() or 0

    def page20() -> None:
        after = None
        for _ in range(20):
            page = review.queue(QueueFilter(), 50, after)
            after = queue_key(page[-1], "newest")

    cases: list[tuple[str, Callable[[], Any]]] = [
        ("queue, first page (open, newest)", lambda: review.queue(QueueFilter(), 50)),
        ("queue, first page (riskiest)", lambda: review.queue(QueueFilter(order="riskiest"),
                                                              50)),
        ("queue, first page (CRITICAL)", lambda: review.queue(QueueFilter(risk="CRITICAL"),
                                                              50)),
        ("queue, first page (one user)", lambda: review.queue(QueueFilter(user=user), 50)),
        ("queue, first page (one day)", lambda: review.queue(
            QueueFilter(start=day[0], end=day[1]), 50)),
        ("queue, pages 1-20 (cursor)", page20),
        ("queue counts", lambda: review.counts(QueueFilter())),
        ("queue counts (one day)", lambda: review.counts(QueueFilter(start=day[0],
                                                                     end=day[1]))),
        ("user history (200)", lambda: review.user_transactions(user, 200)),
        ("flag rate, 7 days hourly (store)", lambda: review.store.flag_rate(
            last - 7 * DAY_MS, last + 1, 3_600_000)),
        ("flag rate, 30 days daily (store)", lambda: review.store.flag_rate(
            last - 30 * DAY_MS, last + 1, DAY_MS)),
    ]
    return [(name, *timed(fn, repeat)) for name, fn in cases]


def pages(settings: Settings, tid: str, user: str, repeat: int) -> list[tuple[str, float, float]]:
    out = []
    with TestClient(create_app(settings), base_url="http://127.0.0.1") as client:
        client.post("/console/login", data={"name": "bench", "key": KEY})
        for name, path in (("page: queue", "/console/"),
                           ("page: transaction", f"/console/transactions/{tid}"),
                           ("page: user", f"/console/users/{user}"),
                           ("page: model (flag rate cached 60 s)", "/console/model"),
                           ("picture: timeline PNG", f"/console/transactions/{tid}/timeline.png")):
            def get(path: str = path) -> None:
                assert client.get(path).status_code == 200, path
            out.append((name, *timed(get, max(3, repeat // 4) if "PNG" in name else repeat)))
    return out


def run(label: str, url: str, schema: str | None, model_root: Path, args: argparse.Namespace,
        names: list[str], threshold: float) -> None:
    store = SqlStorage(url, schema=schema)
    try:
        review = ReviewStore(store)
        print(f"{label}: filling {args.rows:,} transactions ...")
        seconds = fill(store, args.rows, args.users, names, threshold)
        queued = review.counts(QueueFilter(state="any"))["total"]
        print(f"{label}: {store.count():,} stored, {queued:,} in the queue; filled in "
              f"{seconds:.0f} s")
        results = queries(review, args.repeat)
        first = review.queue(QueueFilter(), 1)[0]
        settings = Settings(model_dir=model_root / "model", db_url=url, db_schema=schema,
                            api_keys=(KEY,))
        results += pages(settings, first.transaction_id, first.record["origin_user_id"],
                         args.repeat)
        print(f"\n{label}, {args.rows:,} stored transactions ({args.repeat} runs each)")
        print(f"{'':40} {'median ms':>10} {'p95 ms':>10}")
        for name, median, p95 in results:
            print(f"{name:40} {median:10.2f} {p95:10.2f}")
        print()
    finally:
        if schema is not None:
            store.drop_tables()
        store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=30)
    parser.add_argument("--postgres", help="also run on this PostgreSQL URL (fresh schema)")
    parser.add_argument("--skip-sqlite", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        model = train_model(root)
        names, threshold = model.feature_names, float(model.threshold)
        if not args.skip_sqlite:
            run("SQLite", f"sqlite:///{root}/bench.db", None, root, args, names, threshold)
        if args.postgres:
            run("PostgreSQL", args.postgres, f"bench_{uuid.uuid4().hex[:10]}", root, args,
                names, threshold)


if __name__ == "__main__":
    main()
