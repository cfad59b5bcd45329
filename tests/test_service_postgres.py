"""The API over a real PostgreSQL server (and the same checks over SQLite): the stream
property, and concurrent requests for the same users losing no update."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import polars as pl
import pytest

from service_fixtures import (
    assert_close,
    model,
    model_dir,
    postgres_url,
    raw_records,
    stream,
    unique_schema,
)
from txanomaly.features.batch import feature_matrix
from txanomaly.features.online import OnlineFeatures
from txanomaly.pipeline import TransactionModel
from txanomaly.schema import parse_record
from txanomaly.service import Settings, create_app
from txanomaly.service.runtime import Runtime

__all__ = ["model", "model_dir", "stream"]  # fixtures, imported for pytest


@pytest.fixture(params=[pytest.param("postgresql", marks=pytest.mark.postgres), "sqlite"])
def runtime(request: pytest.FixtureRequest, model_dir: Path, tmp_path: Path
            ) -> Iterator[Runtime]:
    if request.param == "postgresql":
        settings = Settings(model_dir=model_dir, db_url=postgres_url(),
                            db_schema=unique_schema(), max_batch=100, allow_unauthenticated=True)
    else:
        settings = Settings(model_dir=model_dir, db_url=f"sqlite:///{tmp_path}/c.db",
                            max_batch=100, allow_unauthenticated=True)
    opened = Runtime.open(settings)
    yield opened
    if opened.store.dialect == "postgresql":
        opened.store.drop_tables()
    opened.close()


def client_for(runtime: Runtime) -> httpx.AsyncClient:
    app = create_app(runtime.settings, runtime=runtime)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api")


def test_stream_through_the_api_gives_batch_features_and_scores(
        runtime: Runtime, model: TransactionModel, stream: pl.DataFrame):
    records = raw_records(stream)

    async def run() -> tuple[list[float], list[dict[str, Any]]]:
        async with client_for(runtime) as c:
            scores: list[float] = []
            for start in range(0, len(records), 25):
                r = await c.post("/v1/transactions", json=records[start:start + 25])
                assert r.status_code == 200, r.text
                scores.extend(v["anomalyScore"] for v in r.json())
            stored = [(await c.get(f"/v1/transactions/{r['transactionId']}")).json()
                      for r in records]
        return scores, stored

    scores, stored = asyncio.run(run())
    batch = feature_matrix(stream, "standard")
    online = np.array([[s["features"][n] for n in model.feature_names] for s in stored])
    assert_close(online, batch)
    assert_close(np.array(scores), model.anomaly_score(batch))


def test_concurrent_requests_for_the_same_users_lose_no_update(runtime: Runtime):
    rng = np.random.default_rng(9)
    times = 1_700_000_000_000 + rng.permutation(60) * 60_000
    records = [{"transactionId": f"c{i}", "timestamp": int(t), "originUserId": "ab"[i % 2],
                "destinationUserId": "shared",
                "originAmountDetails": {"transactionAmount": float(i + 1)}}
               for i, t in enumerate(times)]

    async def run() -> list[int]:
        async with client_for(runtime) as c:
            responses = await asyncio.gather(*[c.post("/v1/transactions", json=r)
                                               for r in records])
        return [r.status_code for r in responses]

    assert asyncio.run(run()) == [200] * len(records)
    engine = OnlineFeatures("standard")
    for rec in sorted(records, key=lambda r: r["timestamp"]):
        engine.process(parse_record(rec))
    got: dict[tuple[str, str], list[tuple[Any, ...]]] = {}
    for kind, key, _, ts, pos, amount, cum_before, cum, *_ in runtime.store.key_rows():
        got.setdefault((kind, key), []).append((ts, pos, amount, cum_before, cum))
    assert got == {kid: list(zip(log.ts, log.pos, log.amount, log.cum_before, log.cum,
                                 strict=True)) for kid, log in engine.logs.items()}
    assert runtime.store.count() == len(records)
