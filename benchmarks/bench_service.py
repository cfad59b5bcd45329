"""Benchmark of the scoring service: a real uvicorn server, driven from this process.

Starts ``txanomaly serve`` (a real server process) on loopback for each database (a SQLite file;
PostgreSQL when a URL is given), then drives it at a fixed concurrency with a lean keep-alive
HTTP/1.1 client (raw asyncio streams, so that the client costs the shared CPUs as little as
possible), and prints throughput and p50/p95/p99 latency for

* single-transaction requests (``POST /v1/transactions`` with one object), and
* batches of 100 transactions.

Every request carries new transactions (a synthetic log in timestamp order); at the end the
stored row count is checked against the acknowledged transactions.

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
from dataclasses import dataclass
from pathlib import Path

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


def train_model(directory: Path, seed: int) -> Path:
    data = generate(20_000, users=500, days=20, anomaly_rate=0.01, seed=seed).transactions
    features = compute_features(data, "standard").drop("transaction_id").to_numpy()
    model = TransactionModel("standard", AnomalyDetector(map_size="10x10", epochs=5))
    return model.fit(features).save(directory)


def request_bodies(n_single: int, n_batches: int, batch: int, seed: int) -> list[Phase]:
    total = n_single + n_batches * batch
    frame = generate(total, users=max(1000, total // 50), days=30, seed=seed).transactions
    raws = [to_raw(r) for r in frame.to_dicts()]
    single = [orjson.dumps(r) for r in raws[:n_single]]
    rest = raws[n_single:]
    batches = [orjson.dumps(rest[i:i + batch]) for i in range(0, len(rest), batch)]
    return [Phase("single", single, 1), Phase(f"batch of {batch}", batches, batch)]


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


async def drive(port: int, bodies: list[bytes], concurrency: int
                ) -> tuple[np.ndarray, int, float]:
    """Send every body once over ``concurrency`` keep-alive connections (closed loop)."""
    latencies: list[float] = []
    errors = 0
    queue = iter(bodies)

    async def worker() -> None:
        nonlocal errors
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
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
    await asyncio.gather(*[worker() for _ in range(concurrency)])
    return np.array(latencies), errors, time.perf_counter() - began


def report(backend: str, phase: Phase, lat: np.ndarray, errors: int, seconds: float) -> None:
    n = len(lat)
    p50, p95, p99 = np.percentile(lat, [50, 95, 99]) * 1000
    print(f"{backend:10s} {phase.name:13s} {n:7d} req {n / seconds:9.0f} req/s "
          f"{n * phase.per_request / seconds:9.0f} tx/s   p50 {p50:6.2f} ms  p95 {p95:6.2f} ms"
          f"  p99 {p99:6.2f} ms  errors {errors}", flush=True)


def run_backend(backend: str, db: str, schema: str | None, model: Path, phases: list[Phase],
                args: argparse.Namespace, tmp: Path) -> None:
    port = free_port()
    proc = start_server(model, db, port, args.workers, schema, tmp / f"{backend}.log")
    acknowledged = 0
    try:
        for phase in phases:
            k = min(args.warmup, len(phase.bodies) // 10)
            warm, rest = phase.bodies[:k], phase.bodies[k:]
            asyncio.run(drive(port, warm, args.concurrency))
            lat, errors, seconds = asyncio.run(drive(port, rest, args.concurrency))
            report(backend, phase, lat, errors, seconds)
            acknowledged += len(phase.bodies) * phase.per_request
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    store = SqlStorage(db, schema=schema)
    stored = store.count()
    if schema:
        store.drop_tables()
    store.close()
    print(f"{backend:10s} stored {stored} of {acknowledged} acknowledged transactions"
          f"{'' if stored == acknowledged else '  MISMATCH'}", flush=True)


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
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-service-") as tmp_name:
        tmp = Path(tmp_name)
        model = args.model or train_model(tmp / "model", args.seed)
        print(f"server: uvicorn, {args.workers} worker(s); client: {args.concurrency} "
              f"connections, closed loop; {os.cpu_count()} CPUs shared by both", flush=True)
        backends = [("sqlite", f"sqlite:///{tmp}/bench.db", None)]
        if args.postgres and not args.sqlite_only:
            backends.append(("postgresql", args.postgres, f"bench_{uuid.uuid4().hex[:10]}"))
        for backend, db, schema in backends:
            phases = request_bodies(args.single, args.batches, args.batch_size,
                                    args.seed + len(backend))
            run_backend(backend, db, schema, model, phases, args, tmp)


if __name__ == "__main__":
    main()
