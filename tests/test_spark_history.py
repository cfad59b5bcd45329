"""From the lake to the real-time service: the store's history built by Spark, bulk-loaded
(PostgreSQL: COPY) into the service's database, then new transactions scored by the service:
batch scoring's verdicts. Through the API and through ``txanomaly history load --engine
spark``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

import spark_support  # noqa: F401  (skips without PySpark or Java)
from service_fixtures import postgres_url, raw_records, unique_schema
from txanomaly import spark as txs
from txanomaly.cli import app
from txanomaly.detector import AnomalyDetector
from txanomaly.features.batch import compute_features
from txanomaly.ingest import ingest, ingest_history
from txanomaly.io import write_table
from txanomaly.pipeline import TransactionModel
from txanomaly.scoring import Scorer
from txanomaly.service.app import create_app
from txanomaly.service.settings import Settings
from txanomaly.spark.history import load_history
from txanomaly.storage import MemoryStorage, sql_storage
from txanomaly.synth import generate

runner = CliRunner()


@pytest.fixture(scope="session")
def spark():
    return txs.session("local[2]", config={"spark.sql.shuffle.partitions": "3",
                                           "spark.default.parallelism": "2"})


@pytest.fixture(scope="module")
def stream() -> pl.DataFrame:
    """700 transactions in timestamp order, timestamps rounded to the minute (ties)."""
    return generate(700, users=40, days=4, seed=8).transactions.with_columns(
        pl.col("timestamp") // 60_000 * 60_000)


@pytest.fixture(scope="module")
def model_dir(stream: pl.DataFrame, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model trained on the first 600 (the history)."""
    model = TransactionModel("standard", AnomalyDetector(map_size="3x3", epochs=3)).fit(
        compute_features(stream.head(600), "standard").drop("transaction_id"))
    return model.save(tmp_path_factory.mktemp("model"))


def history(rows):
    """Key rows without their arrival numbers, sorted."""
    return sorted(r[:2] + r[3:] for r in rows)


def batch_verdicts(stream: pl.DataFrame, model_dir: Path, tail: int) -> pl.DataFrame:
    model = TransactionModel.load(model_dir)
    return model.score_frame(compute_features(stream, "standard")).tail(tail)


@pytest.mark.postgres
def test_spark_history_in_postgres_gives_the_service_batch_verdicts(spark, stream, model_dir,
                                                                   tmp_path):
    url = postgres_url()
    past, new = stream.head(600), stream.tail(100)
    scorer = Scorer.load(model_dir)
    read = txs.read_transactions(spark, str(write_table(past, tmp_path / "past.jsonl")))

    storage = sql_storage(url, schema=unique_schema())
    try:
        loaded = load_history(read.frame, scorer, storage, batch_size=250)
        assert (loaded.transactions, loaded.copy) == (600, True)
        # The key history is what ingestion writes, running sums to the last bit.
        reference = MemoryStorage()
        for _ in ingest_history(past, scorer, reference, batch_size=200):
            pass
        assert history(storage.key_rows()) == history(reference.key_rows())
        assert loaded.key_rows == len(reference.key_rows())
        # New transactions, as the service ingests them: batch scoring's verdicts.
        outcomes = [o for start in range(0, 100, 30)
                    for o in ingest(new.slice(start, 30).to_dicts(), scorer, storage)]
        batch = batch_verdicts(stream, model_dir, 100)
        scores = np.array([o.result["anomalyScore"] for o in outcomes])
        np.testing.assert_allclose(scores, batch["anomaly_score"].to_numpy(), rtol=1e-9)
        assert [o.result["isAnomaly"] for o in outcomes] == batch["is_anomaly"].to_list()
        assert loaded.flagged == sum(
            storage.get(t).result["isAnomaly"] for t in past["transaction_id"])  # type: ignore
        # A loaded transaction sent again is a replay of its stored verdict.
        again = ingest(past.slice(5, 1).to_dicts(), scorer, storage)[0]
        assert again.replayed and again.result["transactionId"] == past["transaction_id"][5]
        # The arrival counter was moved past the loaded range (one setval, not n nextvals).
        assert max(r[2] for r in storage.key_rows()) >= loaded.first_seq + 599
    finally:
        storage.drop_tables()
        storage.close()


def cli_load(path: Path, model_dir: Path, db: str, *extra: str):
    return runner.invoke(app, ["history", "load", str(path), "--model", str(model_dir),
                               "--db", db, "--engine", "spark", "--master", "local[2]",
                               *extra])


@pytest.mark.parametrize("backend", ["postgresql", pytest.param("sqlite")])
def test_history_load_engine_spark_then_the_service_answers_batch_scoring(
        spark, stream, model_dir, tmp_path, backend):
    past, new = stream.head(600), stream.slice(600, 40)
    data = write_table(past, tmp_path / "past.jsonl")
    data.write_text(data.read_text() + '{"transactionId": "bad", "timestamp": "soon"}\n')
    schema = unique_schema()
    db, extra = ((postgres_url(), ["--db-schema", schema]) if backend == "postgresql"
                 else (f"sqlite:///{tmp_path}/api.db", []))
    try:
        result = cli_load(data, model_dir, db, *extra, "--batch-size", "170", "--json", "-q")
        assert result.exit_code == 0, result.output
        summary = json.loads(result.stdout)
        assert (summary["stored"], summary["replayed"], summary["rejected"]) == (600, 0, 1)
        assert summary["bulk"] == ("copy" if backend == "postgresql" else "insert")
        rejected = (tmp_path / "past.rejects.jsonl").read_text().splitlines()
        assert [json.loads(line)["transactionId"] for line in rejected] == ["bad"]

        # The service on that database: new transactions get batch scoring's verdicts.
        settings = Settings(model_dir=model_dir, db_url=db, db_schema=extra[1] if extra
                            else None, allow_unauthenticated=True)
        with TestClient(create_app(settings)) as client:
            answers = []
            for rec in raw_records(new):
                r = client.post("/v1/transactions", json=rec)
                assert r.status_code == 200, r.text
                answers.append(r.json())
        batch = batch_verdicts(stream.head(640), model_dir, 40)
        np.testing.assert_allclose([a["anomalyScore"] for a in answers],
                                   batch["anomaly_score"].to_numpy(), rtol=1e-9)
        assert [a["isAnomaly"] for a in answers] == batch["is_anomaly"].to_list()

        # A database that holds transactions is refused in one line, before Spark reads.
        again = cli_load(data, model_dir, db, *extra)
        assert again.exit_code == 1
        assert "already holds 640 transaction(s)" in again.output
        assert "Traceback" not in again.output
        missing = cli_load(tmp_path / "nothing.jsonl", model_dir, db, *extra)
        assert missing.exit_code == 1 and "no such file" in missing.output
    finally:
        if backend == "postgresql":
            storage = sql_storage(db, schema=schema)
            storage.drop_tables()
            storage.close()
