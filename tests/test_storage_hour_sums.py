"""The key history's hour sums (``hour_deviation``): kept through late arrivals by every
storage, and added to SQL databases made before them.

Real SQLite files and a real PostgreSQL server (when TXANOMALY_TEST_POSTGRES_URL names one).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from test_features_batch import DAY, HOUR, T0
from test_ingest import StorageFactory, flat, make_storage, run
from txanomaly.features.online import OnlineFeatures
from txanomaly.storage import sql as sql_storage
from txanomaly.storage.sql import SqlStorage

__all__ = ["make_storage"]  # the fixture, imported for pytest


def records(n: int, users: int = 3) -> list[dict[str, Any]]:
    """``n`` in-order transactions of a few users and pairs at hours spread over the day."""
    rng = np.random.default_rng(5)
    ts = np.sort(T0 + rng.integers(0, 6 * DAY, n) // 1000 * 1000)
    return flat([{"transaction_id": f"t{i}", "timestamp": int(t),
                  "origin_user_id": f"u{rng.integers(users)}",
                  "destination_user_id": f"v{rng.integers(users)}",
                  "destination_amount": float(rng.integers(1, 500))}
                 for i, t in enumerate(ts)])


def test_a_key_history_made_before_the_hour_sums_gets_them_on_opening(
        make_storage: StorageFactory, monkeypatch: pytest.MonkeyPatch):
    storage = make_storage()
    if not isinstance(storage, SqlStorage):
        pytest.skip("only SQL databases are upgraded")
    history = records(60)
    for start in range(0, 50, 10):
        run(storage, history[start:start + 10])
    want = storage.key_rows()
    with storage.engine.begin() as conn:  # the table as it was before the hour sums
        for column in ("hour_sin_sum", "hour_cos_sum"):
            conn.exec_driver_sql(f"ALTER TABLE key_history DROP COLUMN {column}")
    monkeypatch.setattr(sql_storage, "_UPGRADE_PAGE", 7)  # pages end inside keys
    upgraded = make_storage()  # opening it upgrades it
    assert upgraded.key_rows() == want
    got = np.array([r.features for r in run(upgraded, history[50:])])
    engine = OnlineFeatures("standard")
    expected = np.array([engine.process(r) for r in history])[50:]
    np.testing.assert_array_equal(got, expected)


def test_late_arrivals_move_the_hour_sums_of_the_rows_after_them(make_storage: StorageFactory):
    storage = make_storage()
    history = records(40, users=1)
    late = flat([{"transaction_id": f"late{i}", "timestamp": T0 + i * DAY + 3 * HOUR,
                  "origin_user_id": "u0", "destination_user_id": "v0",
                  "destination_amount": 20.0} for i in range(3)])
    run(storage, history)
    run(storage, late)
    engine = OnlineFeatures("standard")
    for r in [*history, *late]:
        engine.process(r)
    stored = {(kind, key, pos): (hs, hc) for kind, key, _, _, pos, *_, hs, hc, _
              in storage.key_rows()}
    kept = {(kind, key, pos): (log.hour_sin_sum[i], log.hour_cos_sum[i])
            for (kind, key), log in engine.logs.items() for i, pos in enumerate(log.pos)}
    assert stored == kept
