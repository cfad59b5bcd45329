"""Shared fixtures of the ingestion and service tests (imported by them; not a conftest).

A small model is trained once per session on synthetic data (5x5 map, 3 epochs), so every
service test runs against a real model directory.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest

from txanomaly.detector import AnomalyDetector
from txanomaly.features.batch import compute_features
from txanomaly.pipeline import TransactionModel
from txanomaly.schema import to_raw
from txanomaly.storage.sql import SqlStorage
from txanomaly.synth import generate

POSTGRES_ENV = "TXANOMALY_TEST_POSTGRES_URL"
API_KEY = "test-key-5f2c"


def postgres_url() -> str:
    """The test PostgreSQL URL; skips (fails under CI=true) when the variable is unset."""
    url = os.environ.get(POSTGRES_ENV)
    if url:
        return url
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{POSTGRES_ENV} is unset under CI=true: the PostgreSQL tests must run")
    pytest.skip(f"{POSTGRES_ENV} is unset: set it (e.g. postgresql://postgres@127.0.0.1:5432/"
                "test) to run the PostgreSQL tests")


def unique_schema() -> str:
    """A schema name no other test run uses."""
    return f"txa_test_{uuid.uuid4().hex[:12]}"


def flat_rows(frame: pl.DataFrame) -> list[dict[str, Any]]:
    """Flat records (dicts) of a synth frame, in order."""
    return frame.to_dicts()


def raw_records(frame: pl.DataFrame) -> list[dict[str, Any]]:
    """The raw (camelCase) records of a synth frame, in order."""
    return [to_raw(r) for r in frame.to_dicts()]


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small trained ``standard`` model directory."""
    data = generate(800, users=40, days=5, anomaly_rate=0.03, seed=3).transactions
    features = compute_features(data, "standard")
    model = TransactionModel("standard", AnomalyDetector(map_size="5x5", epochs=3))
    model.fit(features.drop("transaction_id").to_numpy())
    return model.save(tmp_path_factory.mktemp("model"))


@pytest.fixture(scope="session")
def model(model_dir: Path) -> TransactionModel:
    return TransactionModel.load(model_dir)


@pytest.fixture(scope="session")
def stream() -> pl.DataFrame:
    """A transaction log in timestamp order (ties and missing user ids included)."""
    frame = generate(240, users=12, days=2, anomaly_rate=0.05, seed=11).transactions
    # Force exact timestamp ties between different transactions of the same users.
    ts = frame["timestamp"].to_numpy().copy()
    ts[5::17] = ts[4::17][: len(ts[5::17])]
    return frame.with_columns(pl.Series("timestamp", ts))


@pytest.fixture
def pg_store() -> Iterator[SqlStorage]:
    """A SQL storage in a fresh PostgreSQL schema, dropped afterwards."""
    store = SqlStorage(postgres_url(), schema=unique_schema())
    try:
        yield store
    finally:
        store.drop_tables()
        store.close()


def assert_close(actual: np.ndarray, expected: np.ndarray, rtol: float = 1e-9) -> None:
    """Relative error <= rtol (absolute 1e-12 around zero)."""
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=1e-12)
