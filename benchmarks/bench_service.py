"""Benchmark of the scoring service: a real uvicorn server, driven from this process.

Starts ``txanomaly serve`` (a real server process) on loopback for each database (a SQLite file;
PostgreSQL when a URL is given), then drives it at a fixed concurrency with a lean keep-alive
HTTP/1.1 client (raw asyncio streams, so that the client costs the shared CPUs as little as
possible), and prints throughput and p50/p95/p99 latency for

* single-transaction requests (``POST /v1/transactions`` with one object),
* batches of 100 transactions,
* late arrivals: single transactions back-dated into a user with a long history (``--history``
  transactions, stored first in timestamp order and not measured), and one request of 200
  of them (refused with 429 when it exceeds the late-arrival work budget), and
* a high-volume counterparty: one destination that received ``--history`` transactions from
  distinct users in the last day (stored first), then single transactions to it.

Every request carries new transactions (a synthetic log in timestamp order); at the end the
stored row count is checked against the acknowledged transactions. With PostgreSQL, each
``--replicas`` count (default 1 and 2) runs as that many server processes on one database,
the client spreading its connections over them, and the tables' live and dead row versions
and (HOT) updates are printed after each PostgreSQL run. ``--repeats N`` splits each phase's
measured requests into N consecutive runs (median throughput and range: the noise of a shared
machine). The load average is printed at the start and after each database.

Run (on a shared machine, under the benchmark lock)::

    flock /tmp/txanomaly-bench.lock .venv/bin/python benchmarks/bench_service.py \\
        --postgres postgresql://postgres@127.0.0.1:5432/test
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from txanomaly.detector import AnomalyDetector
from txanomaly.features.batch import compute_features
from txanomaly.pipeline import TransactionModel
from txanomaly.schema import to_raw
from txanomaly.storage.sql import SqlStorage
from txanomaly.synth import generate


@dataclass
class Phase:
    name: str
    bodies: list[bytes]
    per_request: int
    setup: list[bytes] = field(default_factory=list)  # sent first, in order, not measured


def train_model(directory: Path, seed: int) -> Path:
    data = generate(20_000, users=500, days=20, anomaly_rate=0.01, seed=seed).transactions
    features = compute_features(data, "standard").drop("transaction_id").to_numpy()
    model = TransactionModel("standard", AnomalyDetector(map_size="10x10", epochs=5))
    return model.fit(features).save(directory)


def request_bodies(args: argparse.Namespace, seed: int) -> list[Phase]:
    batch = args.batch_size
    total = args.single + args.batches * batch
    frame = generate(total, users=max(1000, total // 50), days=30, seed=seed).transactions
    rows = frame.to_dicts()
    raws = [to_raw(r) for r in rows]
    single = [orjson.dumps(r) for r in raws[:args.single]]
    rest = raws[args.single:]
    batches = [orjson.dumps(rest[i:i + batch]) for i in range(0, len(rest), batch)]
    phases = [Phase("single", single, 1), Phase(f"batch of {batch}", batches, batch)]
    if args.history:
        phases += history_phases(rows[0], args.history, args.late, seed)
    return phases


def history_phases(template: dict[str, Any], history: int, n_late: int, seed: int
                   ) -> list[Phase]:
    """The late-arrival and high-volume counterparty phases (their histories as setup)."""
    rng = np.random.default_rng(seed)
    t0 = int(template["timestamp"]) - 40 * 86_400_000  # before the other phases' log
    run = uuid.uuid4().hex[:6]

    def tx(tid: str, ts: int, origin: str, dest: str) -> dict[str, Any]:
        return to_raw({**template, "transaction_id": f"{run}-{tid}", "timestamp": ts,
                       "origin_user_id": origin, "destination_user_id": dest,
                       "origin_amount": float(rng.integers(5, 500)), "destination_amount": None})

    def batches(rows: list[dict[str, Any]]) -> list[bytes]:
        return [orjson.dumps(rows[i:i + 1000]) for i in range(0, len(rows), 1000)]

    long_user = [tx(f"h{i}", t0 + i * 60_000, f"{run}-long", f"{run}-d{i % 997}")
                 for i in range(history)]
    late_ts = np.sort(rng.integers(t0, t0 + history * 60_000, n_late + 200))
    late = [tx(f"l{i}", int(t), f"{run}-long", f"{run}-d{i % 997}")
            for i, t in enumerate(late_ts)]
    # One destination, paid by distinct users every 4 s: `history` rows within its 24 h window.
    t1 = t0 + history * 60_000
    merchant = [tx(f"m{i}", t1 + i * 4_000, f"{run}-o{i}", f"{run}-merchant")
                for i in range(history + n_late)]
    return [Phase(f"late, {history // 1000}k hist", [orjson.dumps(r) for r in late[:n_late]], 1,
                  setup=batches(long_user)),
            Phase("late x200 in 1", [orjson.dumps(late[n_late:])], 200),
            Phase(f"counterparty {history // 1000}k/24h",
                  [orjson.dumps(r) for r in merchant[history:]], 1,
                  setup=batches(merchant[:history]))]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(model: Path, db: str, port: int, workers: int, schema: str | None,
                 log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "TXANOMALY_MAX_BATCH": "1000"}
    if schema:
        env["TXANOMALY_DB_SCHEMA"] = schema
    cmd = [sys.executable, "-c", "from txanomaly.cli import main; main()", "serve",
           "--model", str(model), "--db", db, "--port", str(port), "--workers", str(workers),
           "--log-level", "warning"]
    proc = subprocess.Popen(cmd, stdout=log.open("wb"), stderr=subprocess.STDOUT, env=env)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited:\n{log.read_text()[-3000:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
                s.sendall(b"GET /readyz HTTP/1.1\r\nHost: b\r\n\r\n")
                if b" 200 " in s.recv(200):
                    return proc
        except OSError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise SystemExit("server did not become ready")


async def drive(ports: list[int], bodies: list[bytes], concurrency: int
                ) -> tuple[np.ndarray, int, float]:
    """Send every body once over ``concurrency`` keep-alive connections (closed loop),
    spread over the servers' ports."""
    latencies: list[float] = []
    errors = 0
    queue = iter(bodies)

    async def worker(k: int) -> None:
        nonlocal errors
        reader, writer = await asyncio.open_connection("127.0.0.1", ports[k % len(ports)])
        for body in queue:
            head = (f"POST /v1/transactions HTTP/1.1\r\nHost: bench\r\n"
                    f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n")
            started = time.perf_counter()
            writer.write(head.encode() + body)
            header = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in header.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            await reader.readexactly(length)
            latencies.append(time.perf_counter() - started)
            if not header.startswith(b"HTTP/1.1 200"):
                errors += 1
        writer.close()

    began = time.perf_counter()
    await asyncio.gather(*[worker(k) for k in range(concurrency)])
    return np.array(latencies), errors, time.perf_counter() - began


def report(backend: str, phase: Phase, runs: list[tuple[np.ndarray, float]], errors: int
           ) -> None:
    """One line per phase: throughput and latency percentiles over all its runs; with
    several runs (``--repeats``), the median throughput and the runs' range."""
    lat = np.concatenate([r[0] for r in runs])
    n, seconds = len(lat), sum(r[1] for r in runs)
    p50, p95, p99 = np.percentile(lat, [50, 95, 99]) * 1000
    tx = [len(r[0]) * phase.per_request / r[1] for r in runs]
    spread = f"  runs {min(tx):.0f}-{max(tx):.0f} tx/s" if len(runs) > 1 else ""
    print(f"{backend:13s} {phase.name:20s} {n:6d} req {n / seconds:7.0f} req/s "
          f"{float(np.median(tx)):7.0f} tx/s  p50 {p50:7.2f} ms  p95 {p95:7.2f} ms"
          f"  p99 {p99:7.2f} ms  non-200 {errors}{spread}", flush=True)


def run_phase(backend: str, ports: list[int], phase: Phase, args: argparse.Namespace) -> int:
    """Setup (in order), warm-up and the measured run; returns the transactions answered 200."""
    _, setup_errors, _ = asyncio.run(drive(ports, phase.setup, 1))
    if setup_errors:
        raise SystemExit(f"{phase.name}: {setup_errors} setup requests failed")
    k = min(args.warmup, len(phase.bodies) // 10)
    warm, rest = phase.bodies[:k], phase.bodies[k:]
    _, warm_errors, _ = asyncio.run(drive(ports, warm, args.concurrency))
    parts = max(1, min(args.repeats, len(rest) // 10))
    runs, errors = [], 0
    size = len(rest) // parts
    for i in range(parts):  # consecutive runs (in time order): their spread is the noise
        part = rest[i * size:(i + 1) * size if i < parts - 1 else len(rest)]
        lat, part_errors, seconds = asyncio.run(drive(ports, part, args.concurrency))
        runs.append((lat, seconds))
        errors += part_errors
    report(backend, phase, runs, errors)
    stored = sum(len(orjson.loads(b)) for b in phase.setup)
    return stored + (len(phase.bodies) - errors - warm_errors) * phase.per_request


def run_backend(backend: str, db: str, schema: str | None, model: Path, phases: list[Phase],
                args: argparse.Namespace, tmp: Path, replicas: int = 1) -> None:
    ports = [free_port() for _ in range(replicas)]
    procs = []
    acknowledged = 0
    try:
        for i, port in enumerate(ports):
            procs.append(start_server(model, db, port, args.workers, schema,
                                      tmp / f"{backend}-{i}.log"))
        for phase in phases:
            acknowledged += run_phase(backend, ports, phase, args)
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)
    store = SqlStorage(db, schema=schema)
    stored = store.count()
    if schema:
        dead_rows(backend, store, schema)
        store.drop_tables()
    store.close()
    print(f"{backend:13s} stored {stored} of {acknowledged} acknowledged transactions"
          f"{'' if stored == acknowledged else '  MISMATCH'}", flush=True)


def dead_rows(backend: str, store: SqlStorage, schema: str) -> None:
    """PostgreSQL: live and dead row versions and (HOT) updates per table after the run (the
    servers have exited, so their statistics are flushed)."""
    with store.engine.connect() as conn:
        rows = conn.exec_driver_sql(
            "SELECT relname, n_live_tup, n_dead_tup, n_tup_upd, n_tup_hot_upd, "
            "coalesce(autovacuum_count, 0) FROM pg_stat_user_tables WHERE schemaname = %s "
            "AND relname IN ('transactions', 'key_history', 'review_queue') ORDER BY relname",
            (schema,)).all()
    for name, live, dead, upd, hot, vacuums in rows:
        print(f"{backend:13s} {name:13s} live {live:8d}  dead {dead:7d}  updates {upd:7d} "
              f"(HOT {hot:7d})  autovacuums {vacuums}", flush=True)


def load() -> str:
    return "load average " + ", ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, help="model directory (default: train one)")
    parser.add_argument("--single", type=int, default=6000, help="single-transaction requests")
    parser.add_argument("--batches", type=int, default=300, help="requests of --batch-size")
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=200, help="requests not measured")
    parser.add_argument("--workers", type=int, default=1, help="server worker processes")
    parser.add_argument("--postgres", default=os.environ.get("TXANOMALY_TEST_POSTGRES_URL"),
                        help="PostgreSQL URL (default: $TXANOMALY_TEST_POSTGRES_URL)")
    parser.add_argument("--sqlite-only", action="store_true")
    parser.add_argument("--postgres-only", action="store_true")
    parser.add_argument("--history", type=int, default=20_000,
                        help="history of the late-arrival user and of the counterparty "
                             "(0: skip those phases)")
    parser.add_argument("--late", type=int, default=200,
                        help="back-dated single requests (and counterparty ones)")
    parser.add_argument("--replicas", default="1,2",
                        help="PostgreSQL: server processes on one database, comma-separated")
    parser.add_argument("--repeats", type=int, default=1,
                        help="split each phase's measured requests into this many consecutive "
                             "runs: median throughput and the runs' range")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-service-") as tmp_name:
        tmp = Path(tmp_name)
        model = args.model or train_model(tmp / "model", args.seed)
        print(f"server: uvicorn, {args.workers} worker(s); client: {args.concurrency} "
              f"connections, closed loop; {os.cpu_count()} CPUs shared by both; {load()}",
              flush=True)
        backends: list[tuple[str, str, str | None, int]] = [] if args.postgres_only else [
            ("sqlite", f"sqlite:///{tmp}/bench.db", None, 1)]
        if args.postgres and not args.sqlite_only:
            backends += [(f"postgresql x{n}", args.postgres, f"bench_{uuid.uuid4().hex[:10]}",
                          int(n)) for n in args.replicas.split(",")]
        for backend, db, schema, replicas in backends:
            phases = request_bodies(args, args.seed + len(backend))
            run_backend(backend, db, schema, model, phases, args, tmp, replicas)
            print(f"{backend:13s} done; {load()}", flush=True)


if __name__ == "__main__":
    main()
