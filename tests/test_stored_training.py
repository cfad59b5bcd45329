"""Training from rows on disk (RowStore or TrainingRows -> fit_stored) equals training in
memory; the chunked counterparty tally equals the whole-frame rule."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
import torch

from txanomaly.counterparty_tally import CounterpartyTally
from txanomaly.detector import AnomalyDetector
from txanomaly.errors import TxAnomalyError
from txanomaly.features.roles import detect_counterparty
from txanomaly.features.spec import Feature, FeatureSet
from txanomaly.pipeline import TrainingRows, TransactionModel, columns_to_fit
from txanomaly.rowstore import BLOCK_ROWS, RowStore
from txanomaly.scaling import BlockSums, fit_scaler, fit_scaler_blocks, mean_std_blocks

# More rows than one block, so that every pass crosses a block border.
ROWS = BLOCK_ROWS + 37_851


@pytest.fixture(scope="module")
def rows() -> np.ndarray:
    rng = np.random.default_rng(5)
    X = rng.normal(size=(ROWS, 4)) * [1.0, 3.0, 0.5, 2.0] + [0.0, 10.0, -1.0, 0.0]
    X[::97, 1] += 25.0  # a far cluster
    X[:, 3] = np.abs(X[:, 3]) * 100  # amounts, for a fitted log transform
    return X


def _store(tmp_path, X, pieces=(100_000, 1, 250_000)) -> RowStore:
    """``X`` appended in uneven pieces (as chunks of a file arrive)."""
    store = RowStore(tmp_path / "rows.f64", X.shape[1])
    start, k = 0, 0
    while start < len(X):
        step = pieces[k % len(pieces)]
        store.append(X[start:start + step])
        start, k = start + step, k + 1
    return store


def test_row_store_reads_back_what_was_appended(tmp_path):
    X = np.arange(30.0).reshape(10, 3)
    store = _store(tmp_path, X, pieces=(3, 1, 4))
    assert store.n_rows == 10
    assert np.array_equal(np.concatenate(list(store.blocks(4))), X)
    assert np.array_equal(store.load(), X)
    assert np.array_equal(store.take(np.array([9, 0, 9, 4]), rows=3), X[[9, 0, 9, 4]])
    assert np.array_equal(store.column(2), X[:, 2])
    with pytest.raises(IndexError):
        store.take(np.array([10]))
    with pytest.raises(ValueError, match="rows of 3 values"):
        store.append(np.zeros((2, 2)))


def test_row_store_keeps_columns_apart_and_rewrites_in_place(tmp_path):
    X = np.arange(30.0).reshape(10, 3)
    store = RowStore(tmp_path / "rows.f64", 3, keep_columns=[2, 0])
    for start in (0, 3, 4):
        store.append(X[start:{0: 3, 3: 4, 4: 10}[start]])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rows.f64", "rows.f64.col0",
                                                           "rows.f64.col2"]
    assert (tmp_path / "rows.f64.col2").stat().st_size == 10 * 8  # that column alone
    assert np.array_equal(store.column(2), X[:, 2])
    assert np.array_equal(store.column(1), X[:, 1])  # from the table
    store.rewrite(lambda block: block * 2 + 1, rows=4)
    assert np.array_equal(store.load(), X * 2 + 1)
    assert np.array_equal(store.column(0), X[:, 0] * 2 + 1)  # the stale copies are gone
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rows.f64"]
    with pytest.raises(ValueError, match="changed a block's shape"):
        store.rewrite(lambda block: block[:, :2])


@pytest.mark.parametrize("params", [
    {"scaling": "standard"},
    {"scaling": "robust", "feature_directions": [1, 0, -1, 0], "feature_weights": [1, 2, 1, 1],
     "min_unit_share": 0.5},
])
def test_batch_training_from_disk_equals_training_in_memory_bit_for_bit(tmp_path, rows,
                                                                         params):
    # column-major, as TransactionModel passes a DataFrame's values
    memory = AnomalyDetector(map_size="4x3", epochs=3, **params).fit(np.asfortranarray(rows))
    disk = AnomalyDetector(map_size="4x3", epochs=3, **params).fit_stored(_store(tmp_path, rows))
    assert torch.equal(memory.som_.weights, disk.som_.weights)
    assert np.array_equal(memory.center_, disk.center_)
    assert np.array_equal(memory.scale_, disk.scale_)
    assert memory.threshold_ == disk.threshold_
    assert np.array_equal(memory.decision_scores_, disk.decision_scores_)
    assert np.array_equal(memory.active_units_, disk.active_units_)
    for key in ("rows", "topographic_error", "scoring_units", "score_quantiles"):
        assert memory.training_summary_[key] == disk.training_summary_[key]
    assert disk.training_summary_["quantization_error"] == pytest.approx(
        memory.training_summary_["quantization_error"], rel=1e-12)
    assert np.array_equal(memory.anomaly_score(rows[:1000]), disk.anomaly_score(rows[:1000]))
    assert list(tmp_path.iterdir()) == [tmp_path / "rows.f64"]  # the scaled copy is gone


def test_online_training_from_disk_equals_training_in_memory(tmp_path, rows):
    X = rows[:3000]
    memory = AnomalyDetector(map_size="3x3", epochs=2, algorithm="online").fit(X)
    disk = AnomalyDetector(map_size="3x3", epochs=2, algorithm="online").fit_stored(
        _store(tmp_path, X, pieces=(700,)))
    assert torch.equal(memory.som_.weights, disk.som_.weights)
    assert memory.threshold_ == disk.threshold_


def test_a_sample_trains_the_map_and_every_row_sets_the_scaler_and_threshold(tmp_path, rows):
    store = _store(tmp_path, rows)
    sampled = AnomalyDetector(map_size="4x3", epochs=3, scaling="standard").fit_stored(
        store, sample=20_000)
    full = AnomalyDetector(map_size="4x3", epochs=3, scaling="standard").fit_stored(store)
    assert np.array_equal(sampled.center_, full.center_)
    assert np.array_equal(sampled.scale_, full.scale_)
    assert sampled.training_summary_["rows"] == ROWS
    assert sampled.samples_seen_ == 20_000 * 3
    assert sampled.threshold_ == np.quantile(sampled.anomaly_score(rows), 0.95)
    assert not torch.equal(sampled.som_.weights, full.som_.weights)
    # a map trained on 20k of 300k rows is nearly as good
    assert sampled.training_summary_["quantization_error"] < (
        1.05 * full.training_summary_["quantization_error"])


def test_stored_transaction_model_equals_fit_with_fitted_transforms(tmp_path, rows):
    fs = FeatureSet("demo", (Feature("a", "amount"), Feature("b", "amount", transform="log1p"),
                             Feature("c", "amount"),
                             Feature("d", "amount", transform="scaled_signed_log1p")))
    detector = AnomalyDetector(map_size="3x3", epochs=2)
    memory = TransactionModel(fs, detector).fit(pl.DataFrame(rows, schema=list("abcd")))
    store = RowStore(tmp_path / "kept.f64", 4, keep_columns=columns_to_fit(fs))
    store.append(rows)
    disk = TransactionModel(fs, detector).fit_stored(store)
    assert disk.feature_set_ == memory.feature_set_
    assert disk.feature_set_.features[3].transform_scale is not None
    assert torch.equal(memory.detector_.som_.weights, disk.detector_.som_.weights)
    assert memory.threshold == disk.threshold
    scored = [m.score_frame(pl.DataFrame(rows[:500], schema=list("abcd")).with_columns(
        transaction_id=pl.int_range(500).cast(pl.String))) for m in (memory, disk)]
    assert scored[0].equals(scored[1])


def test_stored_inputs_must_be_finite(tmp_path, rows):
    X = rows[:100].copy()
    X[42, 2] = np.nan
    with pytest.raises(ValueError, match="row 42: input 2 is nan"):
        AnomalyDetector(map_size="2x2", epochs=1).fit_stored(_store(tmp_path, X))


def test_row_major_rows_train_the_same_model_within_rounding(tmp_path, rows):
    memory = AnomalyDetector(map_size="4x3", epochs=3, scaling="standard").fit(rows)
    disk = AnomalyDetector(map_size="4x3", epochs=3, scaling="standard").fit_stored(
        _store(tmp_path, rows))
    assert np.allclose(memory.scale_, disk.scale_, rtol=1e-13, atol=0)
    assert np.allclose(memory.anomaly_score(rows[:2000]), disk.anomaly_score(rows[:2000]),
                       rtol=1e-5, atol=1e-6)


def test_scaler_from_blocks_equals_the_whole_matrix(rows):
    for scaling in ("standard", "none"):
        whole = fit_scaler(rows, scaling)
        blocks = fit_scaler_blocks(lambda: (rows[s:s + BLOCK_ROWS]
                                            for s in range(0, ROWS, BLOCK_ROWS)), 4, scaling)
        assert all(np.array_equal(a, b) for a, b in zip(whole, blocks, strict=True))
    robust = fit_scaler_blocks(lambda: iter([rows[:1000], rows[1000:]]), 4, "robust")
    assert np.allclose(fit_scaler(rows, "robust"), robust, rtol=1e-12, atol=0)


def test_counterparty_tally_equals_the_whole_frame_rule():
    rng = np.random.default_rng(1)
    for persons in (False, True):
        n = 5000
        origin = rng.integers(0, 300, n).astype(str)
        dest = (rng.integers(0, 300, n).astype(str) if persons
                else np.char.add("shop", rng.integers(0, 40, n).astype(str)))
        if persons:  # the second half pays the first half's payers back
            origin[n // 2:], dest[n // 2:] = dest[:n // 2], origin[:n // 2]
        frame = pl.DataFrame({"origin_user_id": origin, "destination_user_id": dest}).with_columns(
            pl.when(pl.int_range(pl.len()) % 17 == 0).then(None)
            .otherwise(pl.col("destination_user_id")).alias("destination_user_id"),
            pl.when(pl.int_range(pl.len()) % 23 == 0).then(None)
            .otherwise(pl.col("origin_user_id")).cast(pl.Categorical).alias("origin_user_id"))
        tally = CounterpartyTally()
        for start in range(0, n, 1234):
            tally.add(frame.slice(start, 1234))
        whole, chunked = detect_counterparty(frame), tally.result()
        assert chunked.role == whole.role == ("person" if persons else "merchant")
        assert chunked.rows == whole.rows
        assert chunked.share == pytest.approx(whole.share, rel=1e-12)
        assert chunked.reciprocity == pytest.approx(whole.reciprocity, rel=1e-12)
    empty = CounterpartyTally().result()
    assert (empty.role, empty.rows) == ("person", 0) == (
        detect_counterparty(pl.DataFrame()).role, detect_counterparty(pl.DataFrame()).rows)


def test_row_store_reads_a_transformed_column_from_its_file(tmp_path):
    X = np.arange(30.0).reshape(10, 3)
    store = RowStore(tmp_path / "rows.f64", 3, keep_columns=[1])
    store.append(X[:4])
    store.append(X[4:])
    store.transform_column(1, np.negative)
    expected = X.copy()
    expected[:, 1] *= -1
    assert np.array_equal(np.concatenate(list(store.blocks(3, start=2))), expected[2:])
    column_major = list(store.blocks(4, order="F"))
    assert all(block.flags.f_contiguous for block in column_major)
    assert np.array_equal(np.concatenate(column_major), expected)
    assert np.array_equal(store.load(), expected)
    assert np.array_equal(store.column(1), expected[:, 1])
    assert np.array_equal(store.take(np.array([9, 0]), rows=4), expected[[9, 0]])
    store.rewrite(lambda block: block + 1, rows=4)
    assert np.array_equal(store.load(), expected + 1)
    with pytest.raises(ValueError, match="not one of the kept columns"):
        store.transform_column(0, np.negative)


def test_block_sums_equal_the_scaler_first_pass(rows):
    sums = BlockSums(4)
    for start, stop in ((0, 1), (1, 200_000), (200_000, ROWS)):
        sums.add(rows[start:stop])
    sums.set_column(3, rows[:, 3] * 2)
    expected = rows.copy()
    expected[:, 3] *= 2
    blocks = [np.asfortranarray(expected[s:s + BLOCK_ROWS]) for s in range(0, ROWS, BLOCK_ROWS)]
    assert all(np.array_equal(a, b) for a, b in zip(
        mean_std_blocks(lambda: iter(blocks), 4),
        mean_std_blocks(lambda: iter(blocks), 4, sums.result()), strict=True))


@pytest.mark.parametrize("scaling", ["standard", "robust"])
def test_training_rows_transformed_as_they_come_train_the_same_model(tmp_path, rows, scaling):
    fs = FeatureSet("demo", (Feature("a", "amount"), Feature("b", "amount", transform="log1p"),
                             Feature("c", "amount", clip=(-2.0, 0.5)),
                             Feature("d", "amount", transform="scaled_signed_log1p"),
                             Feature("e", "amount", transform="scaled_signed_log1p",
                                     clip=(0.0, 1.5))), scaling=scaling)
    X = np.column_stack([rows, rows[:, 3] * -0.5])
    detector = AnomalyDetector(map_size="3x3", epochs=2)
    store = RowStore(tmp_path / "kept.f64", 5, keep_columns=columns_to_fit(fs))
    incoming = TrainingRows(tmp_path / "incoming.f64", fs)
    for start in range(0, ROWS, 123_457):
        store.append(X[start:start + 123_457])
        incoming.append(X[start:start + 123_457])
    stored = TransactionModel(fs, detector).fit_stored(store)
    streamed = TransactionModel(fs, detector).fit_stored(incoming)
    assert streamed.feature_set_ == stored.feature_set_
    for name in ("center_", "scale_", "decision_scores_"):
        assert np.array_equal(getattr(stored.detector_, name), getattr(streamed.detector_, name))
    assert torch.equal(stored.detector_.som_.weights, streamed.detector_.som_.weights)
    assert stored.threshold == streamed.threshold
    with pytest.raises(TxAnomalyError, match="transforms differ"):
        TransactionModel(FeatureSet("other", (*fs.features[:4], Feature("e", "amount"))),
                         detector).fit_stored(incoming)
