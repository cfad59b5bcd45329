"""The batch feature engine: hand-computed values, edge cases, and a property test."""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reference_features import close, reference_features
from txanomaly.features import SEED, STANDARD
from txanomaly.features.batch import compute_features, feature_matrix
from txanomaly.features.spec import GAP_CAP_SECONDS, Feature, FeatureSet
from txanomaly.io import FLAT_SCHEMA

DAY = 86_400_000
HOUR = 3_600_000
T0 = 1_662_336_000_000  # 2022-09-05 00:00 UTC, a Monday


def table(rows: list[dict]) -> pl.DataFrame:
    cols = {c: [r.get(c) for r in rows] for c in FLAT_SCHEMA}
    cols["transaction_id"] = [r.get("transaction_id", f"t{i}") for i, r in enumerate(rows)]
    return pl.DataFrame(cols, schema=FLAT_SCHEMA)


def tx(ts: int, amount: float, origin: str | None = None, dest: str | None = None, **kw):
    return {"timestamp": ts, "destination_amount": amount, "origin_user_id": origin,
            "destination_user_id": dest, **kw}


def col(frame: pl.DataFrame, name: str) -> list[float]:
    return frame.get_column(name).to_list()


def test_seed_names_and_order_are_the_reference_notebooks():
    assert SEED.names == [
        "destination_amount", "hour_sin", "day_sin", "hour_cos", "day_cos",
        "destination_sliding_mean_diff", "destination_prefix_mean_diff",
        "origin_sliding_mean_diff", "origin_prefix_mean_diff"]
    out = compute_features(table([tx(T0, 1.0, "u")]), "seed")
    assert out.columns == ["transaction_id", *SEED.names]


def test_window_excludes_a_transaction_exactly_one_day_earlier():
    rows = [tx(T0, 10.0, "u"), tx(T0 + DAY, 30.0, "u"), tx(T0 + DAY + 1, 50.0, "u")]
    out = compute_features(table(rows), "seed")
    # window (t - 1 day, t]: at T0+DAY the T0 transaction is out; at T0+DAY+1 too.
    assert col(out, "origin_sliding_mean_diff") == [0.0, 0.0, 10.0]
    assert col(out, "origin_prefix_mean_diff") == [0.0, 30.0 - 20.0, 50.0 - 30.0]


def test_ties_follow_input_order_and_include_the_current_transaction():
    rows = [tx(T0, 10.0, "u"), tx(T0, 20.0, "u"), tx(T0, 60.0, "u")]
    out = compute_features(table(rows), "seed")
    assert col(out, "origin_sliding_mean_diff") == [0.0, 5.0, 30.0]
    std = compute_features(table(rows), "standard")
    assert col(std, "origin_count_1h") == [1.0, 2.0, 3.0]
    assert col(std, "origin_log_seconds_since_prev")[1:] == [0.0, 0.0]


def test_input_not_in_time_order_is_ordered_by_timestamp_but_output_keeps_input_order():
    rows = [tx(T0 + 2 * HOUR, 60.0, "u"), tx(T0, 10.0, "u"), tx(T0 + HOUR, 20.0, "u")]
    out = compute_features(table(rows), "seed")
    assert col(out, "transaction_id") == ["t0", "t1", "t2"]
    assert col(out, "origin_prefix_mean_diff") == [60.0 - 30.0, 0.0, 5.0]


def test_missing_user_id_has_no_history_and_is_never_pooled():
    rows = [tx(T0, 10.0, None, "d"), tx(T0 + 1, 100.0, None, "d"), tx(T0 + 2, 7.0, "u", None)]
    out = compute_features(table(rows), "standard")
    assert col(out, "origin_prefix_mean_diff")[:2] == [0.0, 0.0]
    assert col(out, "origin_count_24h")[:2] == [1.0, 1.0]
    assert col(out, "destination_prefix_mean_diff")[:2] == [0.0, 45.0]
    assert col(out, "destination_sliding_mean_diff")[2] == 0.0
    assert col(out, "is_first_pair") == [1.0, 1.0, 1.0]
    gap = math.log1p(GAP_CAP_SECONDS)
    assert col(out, "origin_log_seconds_since_prev") == [gap, gap, gap]


def test_first_transaction_of_a_user():
    out = compute_features(table([tx(T0, 42.0, "a", "b")]), "standard")
    row = out.row(0, named=True)
    assert row["origin_sliding_mean_diff"] == 0.0
    assert row["origin_log_amount_zscore"] == 0.0
    assert row["origin_log_amount_to_mean_24h"] == 0.0
    assert row["is_first_pair"] == 1.0
    assert row["log_amount"] == pytest.approx(math.log1p(42.0))


def test_origin_features_use_the_destination_amount_falling_back_to_origin():
    rows = [tx(T0, 10.0, "u"), {"timestamp": T0 + 1, "origin_amount": 30.0,
                                "destination_amount": None, "origin_user_id": "u"}]
    out = compute_features(table(rows), "seed")
    assert col(out, "destination_amount") == [10.0, 30.0]
    assert col(out, "origin_prefix_mean_diff") == [0.0, 10.0]


def test_cyclical_time_features_in_utc_monday_is_zero():
    out = compute_features(table([tx(T0 + 6 * HOUR, 1.0)]), "seed").row(0, named=True)
    assert out["hour_sin"] == pytest.approx(1.0)  # 06:00 -> quarter of the day
    assert out["day_sin"] == pytest.approx(0.0) and out["day_cos"] == pytest.approx(1.0)


def test_velocity_zscore_pair_and_flags_by_hand():
    rows = [
        tx(T0, 100.0, "u", "v", origin_country="DE", destination_country="DE",
           origin_currency="EUR", destination_currency="EUR"),
        tx(T0 + 10 * 60_000, 100.0, "u", "v", origin_country="DE", destination_country="FR"),
        tx(T0 + 2 * HOUR, 1000.0, "u", "w", origin_currency="EUR", destination_currency="USD"),
    ]
    out = compute_features(table(rows), "standard")
    assert col(out, "origin_count_1h") == [1.0, 2.0, 1.0]
    assert col(out, "origin_count_24h") == [1.0, 2.0, 3.0]
    assert col(out, "is_first_pair") == [1.0, 0.0, 1.0]
    assert col(out, "cross_border") == [0.0, 1.0, 0.0]
    assert col(out, "currency_mismatch") == [0.0, 0.0, 1.0]
    z = col(out, "origin_log_amount_zscore")
    assert z[1] == pytest.approx(0.0)  # same as the only previous amount
    # two previous amounts of 100: variance 0, shrunk to (2*0 + 5*0.5^2) / (2 + 5)
    assert z[2] == pytest.approx((math.log1p(1000) - math.log1p(100)) / math.sqrt(1.25 / 7))
    assert col(out, "origin_log_seconds_since_prev")[1] == pytest.approx(math.log1p(600))
    ratio = col(out, "origin_log_amount_to_mean_24h")[2]
    assert ratio == pytest.approx(math.log1p(1000) - math.log1p(400))


def test_hour_deviation_by_hand():
    # Four payments at 09:00, one at 21:00 (the opposite hour), one at 09:00 again.
    days = [T0 + d * DAY + 9 * HOUR for d in range(4)]
    rows = [tx(t, 10.0, "u") for t in days] + [
        tx(T0 + 4 * DAY + 21 * HOUR, 10.0, "u"), tx(T0 + 5 * DAY + 9 * HOUR, 10.0, "u"),
        tx(T0 + 5 * DAY + 21 * HOUR, 10.0, None)]
    fs = FeatureSet("h", (Feature("origin_hour_deviation", "hour_deviation", "origin"),))
    got = feature_matrix(table(rows), fs)[:, 0]
    # (|V| - V.u) / (n + 5): the usual hour gives 0; the opposite hour after four at 09:00:
    # |V| = 4, V.u = -4, so 8 / 9; then V = 3 u at 09:00 again: 0; no user id: 0.
    assert got == pytest.approx([0.0, 0.0, 0.0, 0.0, 8 / 9, 0.0, 0.0], abs=1e-12)
    assert (got >= 0).all()


def test_empty_table_gives_empty_features():
    out = compute_features(table([]), "standard")
    assert out.height == 0 and out.columns == ["transaction_id", *STANDARD.names]


# --- property test against the brute-force reference -------------------------------------

users = st.sampled_from(["a", "b", "c", None])
row_strategy = st.fixed_dictionaries({
    "timestamp": st.integers(T0, T0 + 3 * DAY).map(lambda t: t - t % 1000)
    | st.sampled_from([T0, T0 + DAY, T0 + 2 * DAY, T0 + HOUR]),
    "destination_amount": st.one_of(
        st.none(), st.floats(0, 1e6, allow_nan=False, allow_infinity=False)),
    "origin_amount": st.floats(0, 1e6, allow_nan=False, allow_infinity=False),
    "origin_user_id": users,
    "destination_user_id": users,
    "origin_country": st.sampled_from(["DE", "FR", None]),
    "destination_country": st.sampled_from(["DE", "FR", None]),
    "origin_currency": st.sampled_from(["EUR", None]),
    "destination_currency": st.sampled_from(["EUR", "USD", None]),
})


#: Ops on keys the standard set does not combine them with: counts without sums, a pair's
#: windowed mean and z-score, a destination gap.
MIXED = FeatureSet("mixed", (
    Feature("origin_count_1h", "count", "origin", HOUR),
    Feature("origin_count", "count", "origin"),
    Feature("destination_gap", "log_seconds_since_prev", "destination"),
    Feature("pair_mean_diff_1d", "mean_diff", "pair", DAY),
    Feature("pair_zscore", "log_amount_zscore", "pair"),
    Feature("origin_hour_deviation", "hour_deviation", "origin"),
    Feature("pair_hour_deviation", "hour_deviation", "pair"),
))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(row_strategy, min_size=1, max_size=25), st.sampled_from([STANDARD, MIXED]),
       st.booleans())
def test_batch_features_equal_the_brute_force_reference(rows, fs, categorical):
    frame = table(rows)
    if categorical:  # as load_transactions(..., categorical=True) gives them
        frame = frame.with_columns(pl.col(c).cast(pl.Categorical) for c in (
            "origin_user_id", "destination_user_id", "origin_country", "destination_country",
            "origin_currency", "destination_currency"))
    got = feature_matrix(frame, fs)
    want = reference_features(rows, fs)
    for i, r in enumerate(rows):
        amount = r["destination_amount"] if r["destination_amount"] is not None else (
            r["origin_amount"])
        for j, name in enumerate(fs.names):
            # scale: mean-differences combine the amount with a mean of the user's amounts.
            scale = max(abs(amount), max(abs(x["origin_amount"]) for x in rows))
            assert close(got[i, j], want[i][j], scale), (i, name, got[i, j], want[i][j])


def test_large_id_space_and_long_time_range_still_exact():
    rng = np.random.default_rng(1)
    n = 2000
    ts = rng.integers(0, 200 * 365 * DAY, n)  # two centuries: exercises the block fallback
    rows = [tx(int(t), float(a), f"u{u}", None) for t, a, u in
            zip(ts, rng.lognormal(3, 1, n), rng.integers(0, 40, n), strict=True)]
    got = feature_matrix(table(rows), SEED)
    want = reference_features(rows, SEED)
    assert np.allclose(got, np.array(want), rtol=1e-9, atol=1e-6)


def test_every_feature_is_documented_in_docs_features_md():
    from pathlib import Path

    doc = (Path(__file__).parents[1] / "docs" / "features.md").read_text()
    for name in {*SEED.names, *STANDARD.names}:
        assert f"`{name}`" in doc, name


def test_feature_weights_round_trip_and_validation():
    from txanomaly.errors import TxAnomalyError
    from txanomaly.features.spec import Feature, FeatureSet

    assert STANDARD.weights is not None and SEED.weights is None
    assert FeatureSet.from_dict(STANDARD.to_dict()).weights == STANDARD.weights
    old = STANDARD.to_dict()
    for f in old["features"]:
        del f["weight"]  # a model file written before weights existed loads with weight 1
    assert FeatureSet.from_dict(old).weights is None
    with pytest.raises(TxAnomalyError, match="weight"):
        Feature("x", "amount", weight=0)


def test_keys_in_parallel_threads_and_categorical_ids_give_the_same_features(monkeypatch):
    import txanomaly.features.batch as batch
    from txanomaly.synth import generate

    frame = generate(60_000, users=300, days=5, anomaly_rate=0.02, seed=5).transactions
    threaded = feature_matrix(frame, STANDARD)  # above 50,000 rows: one thread per key
    coded = frame.with_columns(pl.col(pl.String).exclude("transaction_id", "extra")
                               .cast(pl.Categorical))
    np.testing.assert_array_equal(feature_matrix(coded, STANDARD), threaded)
    monkeypatch.setattr(batch.os, "cpu_count", lambda: 1)
    np.testing.assert_array_equal(feature_matrix(frame, STANDARD), threaded)


@pytest.mark.parametrize("fs", [SEED, STANDARD])
def test_the_input_columns_a_feature_set_declares_are_all_it_reads(fs):
    from txanomaly.synth import generate

    frame = generate(2000, users=30, days=5, anomaly_rate=0.02, seed=2).transactions
    np.testing.assert_array_equal(
        feature_matrix(frame.select("transaction_id", *fs.input_columns), fs),
        feature_matrix(frame, fs))


def test_the_compiled_pass_refuses_codes_or_an_order_that_do_not_fit_the_table():
    from txanomaly.features import kernel

    ts, amount = np.arange(3), np.ones(3)
    out = np.zeros((1, 3))
    codes = np.array([7, kernel.MISSING, 7], dtype=np.uint32)
    for bad_codes, bad_order in ((codes[:2], None), (codes, np.array([0, 1, 3])),
                                 (codes, np.array([0, 1]))):
        with pytest.raises(ValueError, match="one entry per table row"):
            kernel.key_pass(bad_codes, bad_order, ts, amount, amount, [-1], [0],
                            [kernel.COUNT], [0], out)
    kernel.key_pass(codes, np.array([2, 1, 0]), ts, amount, amount, [-1], [0],
                    [kernel.COUNT], [0], out)
    assert out.tolist() == [[2.0, 0.0, 1.0]]  # row 1 has no key: left as it was


def test_pair_codes_are_equal_exactly_for_equal_pairs():
    from txanomaly.features import kernel

    rng = np.random.default_rng(3)
    # Small codes take the one-sort path; codes near 2**31 need more than 64 bits with the
    # row index and take the column-by-column path.
    for top in (5, 2**31):
        first = rng.integers(0, top, 500).astype(np.uint32)
        second = rng.integers(0, 3 if top == 5 else top, 500).astype(np.uint32)
        first[:5], second[5:8] = kernel.MISSING, kernel.MISSING
        codes = kernel.pair_codes(first, second)
        missing = (first == kernel.MISSING) | (second == kernel.MISSING)
        assert (codes[missing] == kernel.MISSING).all()
        pairs = {(a, b): code for a, b, code in zip(first[~missing], second[~missing],
                                                    codes[~missing], strict=True)}
        assert sorted(pairs.values()) == list(range(len(pairs)))  # one code per pair
        for a, b, code in zip(first[~missing], second[~missing], codes[~missing], strict=True):
            assert pairs[a, b] == code


def test_sparse_categorical_codes_are_recoded():
    """Ids whose categories are shared with much other data (large codes) give the same
    features: the engine recodes them rather than keep state for every code."""
    from txanomaly.synth import generate

    frame = generate(300, users=10, days=3, anomaly_rate=0.0, seed=4).transactions
    shared = pl.Categorical(pl.Categories.random())
    keep_alive = pl.Series([f"other-{i}" for i in range(5000)], dtype=shared)  # codes 0..4999
    coded = frame.with_columns(pl.col("origin_user_id", "destination_user_id").cast(shared))
    assert coded.get_column("origin_user_id").to_physical().min() >= 5000
    np.testing.assert_array_equal(feature_matrix(coded, STANDARD),
                                  feature_matrix(frame, STANDARD))
    assert keep_alive.len() == 5000


def test_the_payers_features_read_the_payers_own_amount():
    """Standard: the origin user's and the pair's features read the origin amount (the payer's
    currency), the recipient's and the row's the destination amount; seed: all destination."""
    from txanomaly.features.online import OnlineFeatures

    rows = [{"timestamp": T0 + i * DAY, "origin_user_id": "u", "destination_user_id": "v",
             "origin_amount": eur, "destination_amount": eur * 150.0,
             "origin_currency": "EUR", "destination_currency": "JPY"}
            for i, eur in enumerate([10.0, 20.0])]
    frame = pl.DataFrame(rows)
    got = feature_matrix(frame, STANDARD)
    names = STANDARD.names
    assert got[1, names.index("origin_prefix_mean_diff")] == 5.0           # 20 - mean(10, 20)
    assert got[1, names.index("destination_prefix_mean_diff")] == 750.0    # in yen
    assert got[1, names.index("destination_amount")] == 3000.0
    seed = feature_matrix(frame, "seed")
    assert seed[1, SEED.names.index("origin_prefix_mean_diff")] == 750.0
    engine = OnlineFeatures(STANDARD)
    online = np.array([engine.process(r) for r in rows])
    np.testing.assert_array_equal(online, got)
    assert {kind for kind, _ in engine.logs} == {"origin:own", "destination", "pair:own"}
