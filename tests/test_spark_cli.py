"""``txanomaly features / train / score --engine spark`` through a CLI runner, on real files."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest
from typer.testing import CliRunner

import spark_support  # noqa: F401  (skips without PySpark or Java)
from txanomaly import spark as txs
from txanomaly.cli import app
from txanomaly.io import write_table
from txanomaly.pipeline import TransactionModel
from txanomaly.synth import generate

runner = CliRunner()
SPARK = ["--engine", "spark", "--master", "local[2]"]


@pytest.fixture(scope="session")
def spark():
    return txs.session("local[2]", config={"spark.sql.shuffle.partitions": "3",
                                           "spark.default.parallelism": "2"})


def parts(path: Path) -> pl.DataFrame:
    """A Spark output directory of Parquet part files, in order."""
    return pl.read_parquet(sorted(path.glob("part-*.parquet")))


def test_features_train_score_with_the_spark_engine_equal_the_local_commands(spark, tmp_path):
    frame = generate(600, users=40, days=4, seed=9).transactions
    data = write_table(frame, tmp_path / "tx.jsonl")
    data.write_text(data.read_text() + '{"transactionId": "x", "timestamp": "soon"}\n')

    def run(*args: str) -> dict:
        result = runner.invoke(app, [*args, "--json", "-q"])
        assert result.exit_code == 0, result.output
        return json.loads(result.stdout)

    spark_out, local_out = tmp_path / "spark.parquet", tmp_path / "local.parquet"
    summary = run("features", str(data), "-o", str(spark_out), *SPARK)
    run("features", str(data), "-o", str(local_out))
    assert (summary["rows"], summary["rejected"], summary["engine"]) == (600, 1, "spark")
    assert parts(spark_out).equals(pl.read_parquet(local_out))
    rejected = (tmp_path / "spark.rejects.jsonl").read_text().splitlines()
    assert [json.loads(line)["transactionId"] for line in rejected] == ["x"]

    model_dir = tmp_path / "model"
    trained = run("train", str(data), "-o", str(model_dir), "--map", "3x3", "--epochs", "2",
                  *SPARK)
    assert trained["engine"] == "spark" and trained["rows"] == 600
    assert trained["counterparty"] == "person"  # p2p: detected on the cluster
    model = TransactionModel.load(model_dir)

    scores = tmp_path / "scores.parquet"
    scored = run("score", str(data), "--model", str(model_dir), "-o", str(scores), *SPARK)
    local = tmp_path / "local-scores.parquet"
    run("score", str(data), "--model", str(model_dir), "-o", str(local))
    assert scored["rows"] == 600 and scored["threshold"] == model.threshold
    assert parts(scores).equals(pl.read_parquet(local))


def test_an_unknown_engine_is_a_usage_error_and_csv_input_is_refused(spark, tmp_path):
    result = runner.invoke(app, ["features", "x.jsonl", "-o", "f.parquet", "--engine", "dask"])
    assert result.exit_code == 2 and "local, spark" in result.output
    table = write_table(generate(20, users=5, seed=1).transactions, tmp_path / "tx.csv")
    result = runner.invoke(app, ["features", str(table), "-o", str(tmp_path / "f.parquet"),
                                 *SPARK])
    assert result.exit_code == 1 and "convert CSV to Parquet" in result.output


def test_file_urls_work_end_to_end_and_rejects_go_next_to_the_local_file(spark, tmp_path):
    frame = generate(200, users=15, days=3, seed=4).transactions
    data = write_table(frame, tmp_path / "tx.jsonl")
    data.write_text(data.read_text() + '{"transactionId": "y", "timestamp": "later"}\n')
    url = data.as_uri()  # file:///...: a Path would fold it to file:/...

    def run(*args: str) -> dict:
        result = runner.invoke(app, [*args, "--json", "-q"])
        assert result.exit_code == 0, result.output
        return json.loads(result.stdout)

    features = tmp_path / "features.parquet"
    summary = run("features", url, "-o", features.as_uri(), *SPARK)
    assert (summary["input"], summary["rows"], summary["rejected"]) == (url, 200, 1)
    assert (tmp_path / "features.rejects.jsonl").exists()  # next to the file the URL names
    run("features", str(data), "-o", str(tmp_path / "local.parquet"))
    assert parts(features).equals(pl.read_parquet(tmp_path / "local.parquet"))

    model_dir = tmp_path / "model"
    assert run("train", url, "-o", str(model_dir), "--map", "2x2", "--epochs", "1",
               *SPARK)["rows"] == 200
    scores = tmp_path / "scores.parquet"
    run("score", url, "--model", str(model_dir), "-o", scores.as_uri(), *SPARK)
    run("score", str(data), "--model", str(model_dir), "-o", str(tmp_path / "local-s.parquet"))
    assert parts(scores).equals(pl.read_parquet(tmp_path / "local-s.parquet"))


def test_an_s3_url_reaches_spark_with_both_slashes(spark, tmp_path, monkeypatch):
    # No S3 connector here: the s3 scheme is served by Hadoop's local file system, which
    # names any other file system's path in its error; a Path would have sent "s3:/lake/...".
    monkeypatch.chdir(tmp_path)
    hadoop = spark.sparkContext._jsc.hadoopConfiguration()
    hadoop.set("fs.s3.impl", "org.apache.hadoop.fs.RawLocalFileSystem")
    hadoop.set("fs.s3.impl.disable.cache", "true")
    try:
        for command in (["features", "s3://lake/tx/2026.jsonl", "-o", "s3://lake/f.parquet"],
                        ["train", "s3://lake/tx/2026.jsonl", "-o", "model"]):
            result = runner.invoke(app, [*command, *SPARK])
            assert result.exit_code == 1, result.output
            assert "Wrong FS: s3://lake/tx/2026.jsonl" in " ".join(result.output.split())
    finally:
        hadoop.unset("fs.s3.impl")
        hadoop.unset("fs.s3.impl.disable.cache")


def test_a_missing_local_input_is_one_line_and_a_url_needs_the_spark_engine(spark, tmp_path):
    missing = tmp_path / "nope.jsonl"
    for args in (["features", str(missing), "-o", str(tmp_path / "f.parquet")],
                 ["train", missing.as_uri(), "-o", str(tmp_path / "m")],
                 ["score", str(missing), "--model", str(tmp_path), "-o",
                  str(tmp_path / "s.parquet")]):
        result = runner.invoke(app, [*args, *SPARK])
        assert result.exit_code == 1 and "no such file" in result.output, result.output
    result = runner.invoke(app, ["features", "s3://lake/tx.jsonl", "-o", "f.parquet"])
    assert result.exit_code == 1 and "--engine spark" in result.output, result.output
