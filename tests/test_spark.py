"""txanomaly.spark in local mode: equal to the single-machine engine, stage by stage.

One SparkSession (``local[2]``) for the whole test run; small tables, several partitions each,
so that every per-key shuffle and every per-partition reduction is exercised.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import orjson
import polars as pl
import pytest

import spark_support  # noqa: F401  (skips without PySpark or Java)
from txanomaly import spark as txs
from txanomaly.detector import AnomalyDetector
from txanomaly.features.batch import compute_features
from txanomaly.features.spec import DAY_MS, HOUR_MS, Feature, FeatureSet
from txanomaly.io import FLAT_SCHEMA, load_transactions, write_table
from txanomaly.pipeline import TransactionModel
from txanomaly.spark import quantiles as qx
from txanomaly.synth import generate

T0 = 1_662_336_000_000  # a Monday
#: A set beyond the built-in two: other windows, the pair's count, every op once.
CUSTOM = FeatureSet("custom", (
    Feature("amount", "amount"),
    Feature("pair_count_2h", "count", "pair", 2 * HOUR_MS),
    Feature("origin_mean_diff_3d", "mean_diff", "origin", 3 * DAY_MS),
    Feature("destination_gap", "log_seconds_since_prev", "destination"),
    Feature("origin_z", "log_amount_zscore", "origin"),
    Feature("first_pair", "is_first_pair", "pair"),
    Feature("cross_border", "cross_border"),
), amount_side="own")


@pytest.fixture(scope="session")
def spark():
    """The one Spark session of the test run (local mode, two cores)."""
    return txs.session("local[2]", config={"spark.sql.shuffle.partitions": "3",
                                           "spark.default.parallelism": "2"})


def indexed(frame: pl.DataFrame) -> pl.DataFrame:
    """The flat records with ``_index``, their input order (as the Spark readers give it)."""
    return frame.with_row_index("_index").with_columns(pl.col("_index").cast(pl.Int64))


def to_spark(spark, frame: pl.DataFrame, parts: int = 3):
    return spark.createDataFrame(indexed(frame).to_arrow()).repartition(parts)


def ordered(df) -> pl.DataFrame:
    out = pl.from_arrow(df.orderBy("_index").toArrow())
    assert isinstance(out, pl.DataFrame)
    return out


def hand_table() -> pl.DataFrame:
    """Ties (equal timestamps, in input order), a window boundary, missing ids, one user in
    several roles, a pair repeated, the origin amount differing from the destination's."""
    rows = [
        (T0, "u", "v", 10.0, 10.0), (T0, "u", "v", 20.0, 22.0), (T0, "u", None, 60.0, None),
        (T0 + DAY_MS, "u", "w", 30.0, 30.0), (T0 + DAY_MS, None, "u", 5.0, 5.0),
        (T0 + DAY_MS + 1, "v", "u", 1.0, 2.0), (T0 + 2 * HOUR_MS, None, None, 7.0, 7.0),
        (T0 + 2 * HOUR_MS, "w", "v", None, 3.0), (T0 - 1, "u", "v", 4.0, 4.0),
    ]
    cols = {c: [None] * len(rows) for c in FLAT_SCHEMA}
    cols.update(transaction_id=[f"h{i}" for i in range(len(rows))],
                timestamp=[r[0] for r in rows], origin_user_id=[r[1] for r in rows],
                destination_user_id=[r[2] for r in rows], origin_amount=[r[3] for r in rows],
                destination_amount=[r[4] for r in rows],
                origin_country=["DE", "DE", None, "FR", "DE", "DE", None, "ES", "DE"],
                destination_country=["DE", "FR", None, "FR", None, "DE", None, "ES", "IT"])
    return pl.DataFrame(cols, schema=FLAT_SCHEMA)


@pytest.fixture(scope="module")
def mixed() -> pl.DataFrame:
    """The hand-made rows, then synthetic ones with timestamps rounded to 10 minutes (ties)."""
    synth = generate(1_500, users=60, days=5, seed=4).transactions.with_columns(
        pl.col("timestamp") // 600_000 * 600_000)
    return pl.concat([hand_table(), synth.select(list(FLAT_SCHEMA))])


@pytest.mark.parametrize("feature_set", ["seed", "standard", CUSTOM], ids=["seed", "standard",
                                                                            "custom"])
def test_features_equal_the_batch_engine_bit_for_bit(spark, mixed, feature_set):
    got = ordered(txs.compute_features(to_spark(spark, mixed), feature_set, partitions=3))
    want = compute_features(mixed, feature_set)
    assert got["transaction_id"].to_list() == want["transaction_id"].to_list()
    assert np.array_equal(got.select(want.columns[1:]).to_numpy(),
                          want.drop("transaction_id").to_numpy())


def test_hand_made_ties_and_missing_ids_have_the_hand_computed_values(spark):
    got = ordered(txs.compute_features(to_spark(spark, hand_table()), "seed"))
    # u's 1-day window at T0: T0-1 (4), then the ties at T0 in input order (10, 22, 60;
    # seed reads the destination amount, else the origin one).
    assert got["origin_sliding_mean_diff"].to_list()[:3] == [10 - 7.0, 22 - 12.0, 60 - 24.0]
    # h6 has neither id: no history, every per-user difference is 0.
    assert got.row(6, named=True)["destination_prefix_mean_diff"] == 0.0


def flagright_lines(frame: pl.DataFrame, tmp_path: Path) -> Path:
    """JSON Lines with a blank line, unparseable and invalid records, an exact repeat and a
    repeat with other content."""
    path = write_table(frame, tmp_path / "clean.jsonl", number_long_share=0.5, seed=1)
    lines = path.read_text().splitlines()
    changed = json.loads(lines[12])
    changed["destinationUserId"] = "someone else"
    lines[3:3] = [""]
    lines[6:6] = ['{"transactionId": "bad", "timestamp": "yesterday", '
                  '"originAmountDetails": {"transactionAmount": -1}}']
    lines[9:9] = ['{"transactionId": broken']
    lines += [lines[20], json.dumps(changed), "   "]
    out = tmp_path / "tx.jsonl"
    out.write_text("\n".join(lines) + "\n")
    return out


def rejects_of(read) -> list[dict]:
    lines = [orjson.loads(r["line"]) for r in read.rejects.orderBy("index").collect()]
    for line in lines:
        assert line.pop("file")
    return lines


def same_read(read, path: Path) -> None:
    local = load_transactions(path)
    got = ordered(read.frame)
    assert got.drop("_index").select(local.frame.columns).equals(local.frame)
    assert read.exact_duplicates == local.exact_duplicates
    assert rejects_of(read) == [orjson.loads(orjson.dumps(r.to_json(), default=str))
                                for r in local.rejects]


def test_json_lines_read_with_the_same_rules_rejects_and_repeats(spark, tmp_path):
    frame = generate(300, users=30, days=3, seed=5).transactions
    path = flagright_lines(frame, tmp_path)
    spark.conf.set("spark.sql.files.maxPartitionBytes", "32768")  # several blocks per file
    try:
        read = txs.read_transactions(spark, str(path))
        same_read(read, path)
    finally:
        spark.conf.unset("spark.sql.files.maxPartitionBytes")
    assert read.exact_duplicates == 1
    reasons = [e["message"] for r in rejects_of(read) for e in r["errors"]]
    assert any("invalid JSON on line 10" in m for m in reasons)
    assert any("duplicate transactionId with different content" in m for m in reasons)
    written = read.write_rejects(str(tmp_path / "rejects.jsonl"))
    assert written == 3 == len((tmp_path / "rejects.jsonl").read_text().splitlines())


def test_the_seed_export_shape_and_parquet_read_and_featurise_as_on_one_machine(spark,
                                                                                 tmp_path):
    frame = generate(400, users=40, days=3, seed=6).transactions
    export = write_table(frame, tmp_path / "export.json", number_long_share=1.0)  # $numberLong
    bad = frame.with_columns(pl.when(pl.int_range(pl.len()) == 7).then(-1.0)
                             .otherwise(pl.col("origin_amount")).alias("origin_amount"))
    table = tmp_path / "tx.parquet"
    bad.write_parquet(table)
    for path in (export, table):
        read = txs.read_transactions(spark, str(path))
        same_read(read, path)
        features = ordered(txs.compute_features(read.frame, "seed"))
        want = compute_features(load_transactions(path).frame, "seed")
        assert np.array_equal(features.select(want.columns[1:]).to_numpy(),
                              want.drop("transaction_id").to_numpy())
    assert [r["errors"][0]["field"] for r in rejects_of(read)] == ["origin_amount"]


def test_exact_quantiles_equal_numpy_with_the_bracket_and_with_collecting(spark):
    rng = np.random.default_rng(0)
    values = np.round(rng.lognormal(0, 1, 5_000), 2)  # many ties
    df = spark.createDataFrame([(float(v),) for v in values], "v double").repartition(3)
    qs = [0.0, 0.25, 0.5, 0.95, 0.999, 1.0]
    for collect_rows in (0, 10_000):  # the approxQuantile bracket; the whole column
        got = qx.quantiles(df, "v", qs, len(values), collect_rows=collect_rows)
        assert got == [float(q) for q in np.quantile(values, qs)]
        assert qx.median(df, "v", len(values), collect_rows) == float(np.median(values))


#: Distributed training adds per partition, then across partitions: the tolerances below
#: are float summation error (measured: prototypes 4e-6 apart, threshold 1e-7 relative).
WEIGHTS_ATOL = 1e-4       # scaled units (float32 sums of thousands of rows)
STATS_RTOL = 1e-12        # the scaler's mean and std (float64 sums)
THRESHOLD_RTOL = 1e-5


@pytest.fixture(scope="module")
def trained(spark):
    frame = generate(3_000, users=120, days=10, seed=7).transactions
    features = txs.compute_features(to_spark(spark, frame), "standard").cache()
    detector = AnomalyDetector(map_size="4x4", epochs=4, random_state=3)
    model = txs.fit(features, "standard", detector)
    local_features = compute_features(frame, "standard")
    local = TransactionModel("standard", detector).fit(local_features.select(model.feature_names))
    yield frame, features, model, local, local_features
    features.unpersist()


def test_distributed_training_matches_the_single_machine_model(trained, tmp_path):
    frame, _, model, local, _ = trained
    det, ref = model.detector_, local.detector_
    assert [f.transform_scale for f in model.feature_set_.features] == [
        f.transform_scale for f in local.feature_set_.features]  # exact medians
    np.testing.assert_allclose(det.center_, ref.center_, rtol=STATS_RTOL, atol=1e-15)
    np.testing.assert_allclose(det.scale_, ref.scale_, rtol=STATS_RTOL)
    np.testing.assert_allclose(det.som_.weights.numpy(), ref.som_.weights.numpy(),
                               rtol=0, atol=WEIGHTS_ATOL)
    assert model.threshold == pytest.approx(local.threshold, rel=THRESHOLD_RTOL)
    summary, reference = det.training_summary_, ref.training_summary_
    assert summary["rows"] == reference["rows"] == frame.height
    assert summary["topographic_error"] == pytest.approx(reference["topographic_error"],
                                                         abs=2 / frame.height)
    assert summary["quantization_error"] == pytest.approx(reference["quantization_error"],
                                                          rel=1e-5)
    model.save(tmp_path / "model")  # the same model file, loaded as any other
    again = TransactionModel.load(tmp_path / "model")
    assert again.threshold == model.threshold
    assert again.feature_set_ == model.feature_set_


def test_the_threshold_is_the_exact_quantile_of_the_training_scores(trained):
    _, _, model, _, local_features = trained
    scores = model.anomaly_score(local_features.select(model.feature_names))
    assert model.threshold == float(np.quantile(scores, 0.95))
    assert model.detector_.training_summary_["score_quantiles"]["max"] == float(scores.max())


def test_broadcast_scoring_equals_single_machine_scoring(spark, trained):
    _, features, model, local, local_features = trained
    got = ordered(txs.score(features, model)).drop("_index")
    want = model.score_frame(local_features)  # the same model on one machine
    assert got.columns == want.columns
    assert got.equals(want)
    # Against the model trained on one machine: equal verdicts but for rows whose score
    # sits within the training tolerance of the threshold.
    theirs = local.score_frame(local_features)
    np.testing.assert_allclose(got["anomaly_score"], theirs["anomaly_score"], rtol=1e-4)
    near = np.abs(theirs["anomaly_score"].to_numpy() / local.threshold - 1) < 1e-4
    assert (got["is_anomaly"].to_numpy() == theirs["is_anomaly"].to_numpy())[~near].all()


def test_scoring_raw_records_computes_their_features_first(spark, trained):
    frame, _, model, _, _ = trained
    got = ordered(txs.score(to_spark(spark, frame.head(500)), model))
    want = model.score_frame(compute_features(frame.head(500), model.feature_set_))
    assert got.drop("_index").equals(want)


def test_training_refuses_a_non_finite_feature_and_the_online_algorithm(spark):
    rows = [(i, float(i), float("nan") if i == 3 else 1.0) for i in range(6)]
    df = spark.createDataFrame(rows, "_index long, a double, b double")
    fs = FeatureSet("two", (Feature("a", "amount"), Feature("b", "log_amount")))
    with pytest.raises(Exception, match="_index 3: feature 'b' is nan"):
        txs.fit(df, fs, AnomalyDetector(map_size="2x2", epochs=1))
    with pytest.raises(Exception, match="batch algorithm only"):
        txs.fit(df, fs, AnomalyDetector(map_size="2x2", epochs=1, algorithm="online"))


def test_robust_scaling_on_spark_equals_the_single_machine_scaler(spark):
    """``robust`` scaling (a feature set that declares it, the detector's ``auto``): the
    median and IQR are exact order statistics on the cluster, so equal bit for bit; where a
    column's IQR is 0 the scale is its standard deviation (float64 sums: STATS_RTOL)."""
    from dataclasses import replace

    fs = replace(CUSTOM, name="custom_robust", scaling="robust")
    frame = generate(2_000, users=80, days=6, seed=12).transactions
    features = txs.compute_features(to_spark(spark, frame), fs)
    detector = AnomalyDetector(map_size="3x3", epochs=3, random_state=5)
    model = txs.fit(features, fs, detector)
    local = TransactionModel(fs, detector).fit(compute_features(frame, fs).drop(
        "transaction_id"))
    det, ref = model.detector_, local.detector_
    assert det.scaling == ref.scaling == "robust"
    assert np.array_equal(det.center_, ref.center_)  # exact medians
    X = local.feature_set_.transform(compute_features(frame, fs).drop("transaction_id")
                                     .to_numpy())
    q25, q75 = np.quantile(X, [0.25, 0.75], axis=0)
    iqr = q75 > q25
    assert iqr.any() and not iqr.all()  # both rules are exercised
    assert np.array_equal(det.scale_[iqr], ref.scale_[iqr])  # exact quartiles
    np.testing.assert_allclose(det.scale_[~iqr], ref.scale_[~iqr], rtol=STATS_RTOL)
    np.testing.assert_allclose(det.som_.weights.numpy(), ref.som_.weights.numpy(), rtol=0,
                               atol=WEIGHTS_ATOL)
    assert model.threshold == pytest.approx(local.threshold, rel=THRESHOLD_RTOL)
