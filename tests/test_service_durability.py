"""Durability: a real server (``txanomaly serve``, uvicorn) is killed with SIGKILL right after
acknowledging writes; after a restart every acknowledged transaction and the per-user state
are there, unchanged."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import polars as pl
import pytest

from service_fixtures import model_dir, raw_records, stream
from txanomaly.features.online import OnlineFeatures
from txanomaly.schema import parse_record
from txanomaly.storage.sql import SqlStorage

__all__ = ["model_dir", "stream"]  # fixtures, imported for pytest

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """``txanomaly serve`` in a child process on a loopback port."""

    def __init__(self, model_dir: Path, db: Path, log: Path):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        cmd = [sys.executable, "-c", "from txanomaly.cli import main; main()", "serve",
               "--model", str(model_dir), "--db", f"sqlite:///{db}", "--port", str(self.port),
               "--log-level", "warning"]
        env = {k: v for k, v in os.environ.items() if not k.startswith("TXANOMALY_")}
        self.log = log.open("ab")
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=self.log, env=env)
        self._wait_ready(log)

    def _wait_ready(self, log: Path, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited: {log.read_text()[-2000:]}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=1.0).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"server not ready after {timeout} s: {log.read_text()[-2000:]}")

    def kill9(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)
        self.log.close()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if not self.log.closed:
            self.log.close()


@pytest.fixture
def servers() -> Iterator[list[Server]]:
    started: list[Server] = []
    yield started
    for server in started:
        server.stop()


def key_state(db: Path) -> list[tuple[Any, ...]]:
    store = SqlStorage(f"sqlite:///{db}", create=False)
    try:
        return store.key_rows()
    finally:
        store.close()


def test_acknowledged_writes_survive_kill_9(model_dir: Path, tmp_path: Path,
                                            stream: pl.DataFrame, servers: list[Server]):
    db = tmp_path / "durable.db"
    records = raw_records(stream)[:60]
    servers.append(Server(model_dir, db, tmp_path / "server.log"))
    url = servers[0].url
    acknowledged: dict[str, Any] = {}
    with httpx.Client(base_url=url, timeout=10.0) as client:
        for rec in records[:20]:
            r = client.post("/v1/transactions", json=rec)
            assert r.status_code == 200
            acknowledged[rec["transactionId"]] = r.json()
        r = client.post("/v1/transactions", json=records[20:50])
        assert r.status_code == 200
        acknowledged.update({v["transactionId"]: v for v in r.json()})
    before = key_state(db)
    servers[0].kill9()  # straight after the last acknowledgement

    assert key_state(db) == before
    engine = OnlineFeatures("standard")  # what an uninterrupted server would hold
    for rec in records[:50]:
        engine.process(parse_record(rec))
    by_key: dict[tuple[str, str], list[tuple[Any, ...]]] = {}
    for kind, key, _, ts, pos, amount, _, cum, *_ in before:
        by_key.setdefault((kind, key), []).append((ts, pos, amount, cum))
    assert by_key == {kid: list(zip(log.ts, log.pos, log.amount, log.cum, strict=True))
                      for kid, log in engine.logs.items()}

    servers.append(Server(model_dir, db, tmp_path / "server2.log"))
    with httpx.Client(base_url=servers[1].url, timeout=10.0) as client:
        for tid, verdict in acknowledged.items():
            stored = client.get(f"/v1/transactions/{tid}").json()
            assert {k: stored[k] for k in verdict} == verdict
        again = client.post("/v1/transactions", json=records[5])
        assert again.json() == acknowledged[records[5]["transactionId"]]
        assert key_state(db) == before  # the repeat changed nothing
        nxt = client.post("/v1/transactions", json=records[50])
        assert nxt.status_code == 200
        features = client.get(f"/v1/transactions/{records[50]['transactionId']}").json()
    expected = engine.process(parse_record(records[50]))
    got = np.array([features["features"][n] for n in engine.feature_set.names])
    np.testing.assert_array_equal(got, expected)
