"""Liveness while work runs, and the late-arrival work budget (issue 12, finding 5).

``/healthz`` is asked of a real server (``txanomaly serve`` on loopback) while one of its
requests is stuck on the database; the budget is checked through the app.
"""

from __future__ import annotations

import sqlite3
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

from service_fixtures import model_dir
from test_service import make_client, tx
from test_service_durability import Server, servers

__all__ = ["model_dir", "servers"]  # fixtures, imported for pytest


def test_health_answered_while_a_slow_request_runs(model_dir: Path, tmp_path: Path,
                                                   servers: list[Server]):
    """A write waits on a database lock another process holds; meanwhile ``/healthz`` (and
    ``/metrics``) answer at once. Before, SQLite work ran on the event loop: every probe
    waited behind the stuck request (up to the 30 s busy timeout), and a liveness probe
    would have restarted a healthy server."""
    db = tmp_path / "tx.db"
    servers.append(Server(model_dir, db, tmp_path / "server.log"))
    url = servers[0].url
    blocker = sqlite3.connect(db, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")  # the server's write now waits for this lock
    with ThreadPoolExecutor(1) as pool:
        post = pool.submit(httpx.post, f"{url}/v1/transactions", json=tx(0), timeout=60)
        time.sleep(0.5)  # let the request reach the database (not asserted on)
        health = httpx.get(f"{url}/healthz", timeout=5)
        assert health.status_code == 200
        assert not post.done()  # still stuck: health was answered while it ran
        blocker.execute("ROLLBACK")
        assert post.result().status_code == 200
    blocker.close()


def back_dated(i: int) -> dict[str, Any]:
    return tx(i, timestamp=1_600_000_000_000 + i)


def test_late_arrivals_beyond_the_work_budget_are_a_429_and_store_nothing(
        model_dir: Path, tmp_path: Path):
    with make_client(model_dir, tmp_path, max_moved_rows=10) as client:
        assert client.post("/v1/transactions", json=[tx(i) for i in range(1, 9)]
                           ).status_code == 200
        # Each moves the 8 stored rows of each of its 3 keys (origin, destination, pair).
        refused = client.post("/v1/transactions", json=back_dated(100))
        assert refused.status_code == 429
        assert refused.json()["error"] == "work_budget_exceeded"
        assert "would move 24 stored key rows" in refused.json()["message"]
        assert client.get("/v1/transactions/t100").status_code == 404
        # Scoring without storing moves nothing: never refused.
        assert client.post("/v1/score", json=back_dated(100)).status_code == 200
    # The budget is a setting (TXANOMALY_MAX_MOVED_ROWS, --max-moved-rows): the same
    # database served with a budget of 24 takes the same request.
    with make_client(model_dir, tmp_path, max_moved_rows=24) as client:
        assert client.post("/v1/transactions", json=back_dated(100)).status_code == 200
