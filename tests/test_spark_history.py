"""From the lake to the real-time service: the store's history built by Spark, bulk-loaded
into PostgreSQL on loopback, then new transactions ingested as the service does."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

import spark_support  # noqa: F401  (skips without PySpark or Java)
from service_fixtures import postgres_url, unique_schema
from txanomaly import spark as txs
from txanomaly.detector import AnomalyDetector
from txanomaly.features.batch import compute_features
from txanomaly.ingest import ingest, ingest_history
from txanomaly.io import write_table
from txanomaly.pipeline import TransactionModel
from txanomaly.scoring import Scorer
from txanomaly.spark.history import load_history
from txanomaly.storage import MemoryStorage, sql_storage
from txanomaly.synth import generate


@pytest.fixture(scope="session")
def spark():
    return txs.session("local[2]", config={"spark.sql.shuffle.partitions": "3",
                                           "spark.default.parallelism": "2"})


@pytest.mark.postgres
def test_spark_history_in_postgres_gives_the_service_batch_verdicts(spark, tmp_path):
    url = postgres_url()
    stream = generate(700, users=40, days=4, seed=8).transactions.with_columns(
        pl.col("timestamp") // 60_000 * 60_000)  # ties
    past, new = stream.head(600), stream.tail(100)
    model = TransactionModel("standard", AnomalyDetector(map_size="3x3", epochs=3)).fit(
        compute_features(past, "standard").drop("transaction_id"))
    model.save(tmp_path / "model")
    scorer = Scorer.load(tmp_path / "model")
    read = txs.read_transactions(spark, str(write_table(past, tmp_path / "past.jsonl")))

    storage = sql_storage(url, schema=unique_schema())
    try:
        assert load_history(read.frame, scorer, storage, batch_size=250) == 600
        # The key history is what ingestion writes, running sums to the last bit.
        reference = MemoryStorage()
        for _ in ingest_history(past, scorer, reference, batch_size=200):
            pass

        def history(rows):
            return sorted(r[:2] + r[3:] for r in rows)  # all but the arrival numbers
        assert history(storage.key_rows()) == history(reference.key_rows())
        # New transactions, as the service ingests them: batch scoring's verdicts.
        outcomes = [o for start in range(0, 100, 30)
                    for o in ingest(new.slice(start, 30).to_dicts(), scorer, storage)]
        batch = model.score_frame(compute_features(stream, "standard")).tail(100)
        scores = np.array([o.result["anomalyScore"] for o in outcomes])
        np.testing.assert_allclose(scores, batch["anomaly_score"].to_numpy(), rtol=1e-9)
        assert [o.result["isAnomaly"] for o in outcomes] == batch["is_anomaly"].to_list()
        # A loaded transaction sent again is a replay of its stored verdict.
        again = ingest(past.slice(5, 1).to_dicts(), scorer, storage)[0]
        assert again.replayed and again.result["transactionId"] == past["transaction_id"][5]
    finally:
        storage.drop_tables()
        storage.close()
