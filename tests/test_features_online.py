"""The online engine gives exactly the batch features on in-order streams."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from test_features_batch import DAY, MIXED, T0, row_strategy, table
from txanomaly.features import SEED, STANDARD
from txanomaly.features.batch import feature_matrix
from txanomaly.features.online import OnlineFeatures
from txanomaly.synth import generate


def stream(rows: list[dict], fs=STANDARD) -> np.ndarray:
    engine = OnlineFeatures(fs)
    return np.array([engine.process(r) for r in rows]).reshape(len(rows), len(fs.features))


def in_time_order(rows: list[dict]) -> list[dict]:
    return sorted(rows, key=lambda r: r["timestamp"])  # stable: ties keep arrival order


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(row_strategy, min_size=1, max_size=30))
def test_online_equals_batch_bit_for_bit_on_in_order_streams(rows):
    rows = in_time_order(rows)
    batch = feature_matrix(table(rows), STANDARD)
    online = stream(rows)
    np.testing.assert_array_equal(online, batch)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(row_strategy, min_size=1, max_size=30))
def test_online_equals_batch_for_the_ops_standard_does_not_combine(rows):
    """Counts without sums, a pair's windowed mean and z-score, the hour deviation of the
    sender and of the pair."""
    rows = in_time_order(rows)
    np.testing.assert_array_equal(stream(rows, MIXED), feature_matrix(table(rows), MIXED))


def test_online_equals_batch_on_synthetic_data():
    frame = generate(3000, users=60, days=5, anomaly_rate=0.02, seed=3).transactions
    rows = frame.sort("timestamp", maintain_order=True).to_dicts()
    batch = feature_matrix(pl.DataFrame(rows), STANDARD)
    online = stream(rows)
    np.testing.assert_array_equal(online, batch)


def test_late_transaction_sees_history_at_or_before_its_own_time():
    rows = [
        {"timestamp": T0, "origin_user_id": "u", "destination_amount": 10.0},
        {"timestamp": T0 + 2 * DAY, "origin_user_id": "u", "destination_amount": 30.0},
        {"timestamp": T0 + DAY, "origin_user_id": "u", "destination_amount": 20.0},  # late
        {"timestamp": T0 + 3 * DAY, "origin_user_id": "u", "destination_amount": 40.0},
    ]
    online = stream(rows, SEED)
    col = SEED.names.index("origin_prefix_mean_diff")
    # The late one is scored against T0 only: 20 - mean(10, 20).
    assert online[2, col] == 5.0
    # Later arrivals see the log in timestamp order, exactly as the batch engine does.
    batch = feature_matrix(table(in_time_order(rows)), SEED)
    np.testing.assert_array_equal(online[3], batch[3])


def test_scoring_does_not_change_the_logs():
    engine = OnlineFeatures(STANDARD)
    rec = {"timestamp": T0, "origin_user_id": "u", "destination_user_id": "v",
           "destination_amount": 5.0}
    engine.process(rec)
    before = {k: (len(v), v.cum[-1]) for k, v in engine.logs.items()}
    engine.compute({**rec, "timestamp": T0 + 1}, engine.logs)
    assert {k: (len(v), v.cum[-1]) for k, v in engine.logs.items()} == before


def test_missing_user_id_never_creates_a_key():
    engine = OnlineFeatures(STANDARD)
    engine.process({"timestamp": T0, "origin_user_id": None, "destination_user_id": "v",
                    "destination_amount": 5.0})
    assert set(engine.logs) == {("destination", "v")}


def test_unparsed_record_is_refused_with_a_message():
    with pytest.raises(Exception, match="parse_record"):
        OnlineFeatures().process({"timestamp": "2022-01-01", "destination_amount": 1.0})
