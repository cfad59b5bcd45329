"""The compiled kernels (txanomaly.som_kernels) against the PyTorch and NumPy code they
replace: the same winners, sums, scores and reasons, bit for bit, including near ties."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
import torch

from txanomaly import som_kernels
from txanomaly.detector import AnomalyDetector
from txanomaly.features.spec import get_feature_set
from txanomaly.pipeline import TransactionModel
from txanomaly.som import accumulate_bmu_sums, argmin_rows, augment_rows, two_smallest_rows
from txanomaly.threshold import RISK_LEVELS, risk_level_codes


def near_ties(n: int, d: int, units: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows and prototypes where many rows sit almost halfway between two prototypes (the
    winner then turns on the last bits of the distances) and some on a prototype."""
    rng = np.random.default_rng(seed)
    w = rng.normal(size=(units, d)).astype(np.float32)
    a, b = rng.integers(units, size=n), rng.integers(units, size=n)
    t = rng.choice([0.0, 0.5, 0.5 + 1e-6, 0.5 - 1e-6, 1.0], size=n)[:, None]
    x = (1 - t) * w[a] + t * w[b] + rng.normal(scale=1e-3, size=(n, d)) * (rng.random(n) < 0.5
                                                                          )[:, None]
    return torch.tensor(x, dtype=torch.float32), torch.from_numpy(w)


def reference_sums(data: torch.Tensor, weights: torch.Tensor, chunk: int,
                   out: torch.Tensor | None = None) -> torch.Tensor:
    """accumulate_bmu_sums as PyTorch alone computed it: argmin_rows, then index_add_."""
    aug = torch.cat([-2.0 * weights, torch.ones_like(weights[:, :1]),
                     (weights * weights).sum(1, keepdim=True)], dim=1).T.contiguous()
    sums = out if out is not None else torch.zeros(data.shape[0], len(weights))
    for start in range(0, data.shape[1], chunk):
        cols = data[:, start:start + chunk]
        sums.index_add_(1, argmin_rows(torch.mm(cols.T, aug)), cols)
    return sums


@pytest.mark.parametrize(("units", "chunk"), [(100, 4096), (100, 333), (7, 64), (2, 50),
                                              (900, 512)])
def test_epoch_sums_equal_the_pytorch_kernel_bit_for_bit(units, chunk):
    X, w = near_ties(5_000, 6, units, seed=units)
    data = augment_rows(X)
    got = accumulate_bmu_sums(data, w, chunk)
    assert torch.equal(got, reference_sums(data, w, chunk))
    # Added onto earlier sums (the blocks of a stored table), too.
    start = torch.rand(data.shape[0], units)
    assert torch.equal(accumulate_bmu_sums(data, w, chunk, out=start.clone()),
                       reference_sums(data, w, chunk, out=start.clone()))


@pytest.mark.parametrize(("threads", "chunk"), [(1, 64), (2, 64), (2, 4096), (3, 100)])
def test_epoch_sums_on_threads_equal_the_pytorch_kernel_bit_for_bit(threads, chunk):
    """Several spans of chunks (64 chunks each), chunks split over the threads, the sums
    over the features; then the threads PyTorch had are restored."""
    X, w = near_ties(9_000, 6, 30, seed=threads)
    data = augment_rows(X)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        got = accumulate_bmu_sums(data, w, chunk)
        assert torch.get_num_threads() == threads
    finally:
        torch.set_num_threads(before)
    assert torch.equal(got, reference_sums(data, w, chunk))


def test_concurrent_epoch_sums_are_right_and_leave_pytorch_s_threads_as_they_were():
    from concurrent.futures import ThreadPoolExecutor

    X, w = near_ties(6_000, 5, 20, seed=7)
    data = augment_rows(X)
    expected = reference_sums(data, w, 64)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with ThreadPoolExecutor(4) as pool:
            results = list(pool.map(lambda _: accumulate_bmu_sums(data, w, 64), range(8)))
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
    assert all(torch.equal(r, expected) for r in results)


def test_epoch_sums_of_a_strided_block_take_the_pytorch_path():
    X, w = near_ties(1_000, 4, 10, seed=3)
    data = augment_rows(X)
    wide = torch.zeros(data.shape[0], 2 * data.shape[1])
    wide[:, ::2] = data
    assert torch.equal(accumulate_bmu_sums(wide[:, ::2], w, 100), reference_sums(data, w, 100))


@pytest.mark.parametrize("units", [2, 3, 100, 128, 129])
def test_winners_and_two_winners_equal_argmin_rows_and_two_smallest_rows(units):
    X, w = near_ties(3_000, 5, units, seed=units)
    sq = torch.cdist(X, w).square()
    sq[::7] -= 1e-9  # tiny negative residues on some rows
    low = (1 << max(1, (units - 1).bit_length())) - 1
    keys = sq.clone().view(torch.int32).numpy()
    one = np.empty(len(X), dtype=np.int64)
    som_kernels.winners(keys, low, one)
    assert np.array_equal(one, argmin_rows(sq.clone()).numpy())
    first, second = np.empty_like(one), np.empty_like(one)
    som_kernels.two_winners(keys, low, first, second)
    expected = two_smallest_rows(sq.clone())
    assert np.array_equal(first, expected[0].numpy())
    assert np.array_equal(second, expected[1].numpy())


@pytest.mark.parametrize("d", [1, 7, 8, 9, 16, 23, 24, 25, 40])
def test_directed_scores_equal_numpy(d):
    rng = np.random.default_rng(d)
    x = rng.normal(scale=3, size=(2_000, d)).astype(np.float32)
    w = rng.normal(size=(10, d)).astype(np.float32)
    bmu = rng.integers(10, size=len(x))
    directions = rng.choice([-1.0, 0.0, 1.0], size=d)
    diff = x.astype(np.float64) - w[bmu].astype(np.float64)
    diff = np.where(directions == 0, diff, np.maximum(diff * directions, 0.0))
    expected = np.sqrt((diff * diff).sum(1))
    got = np.empty(len(x))
    som_kernels.directed_scores(x, w, bmu, directions, got)
    assert np.array_equal(got, expected)


# --------------------------------------------------------------------------- explanations
def reference_table(model, ids: pl.Series, X: np.ndarray, top: int) -> pl.DataFrame:
    """score_rows' table as it was built from the full explanation (rows x features)."""
    exp = model.explanation(X, top=top)
    levels = pl.Series(RISK_LEVELS, dtype=pl.String)
    columns = {"transaction_id": ids, "anomaly_score": exp.anomaly_score,
               "is_anomaly": exp.is_anomaly,
               "risk_level": levels.gather(risk_level_codes(exp.anomaly_score, exp.threshold)),
               "bmu": exp.bmu.astype(np.int64)}
    rows = np.arange(len(X))
    names = pl.Series(exp.feature_names, dtype=pl.String)
    for rank, idx in enumerate(exp.top_features().T, start=1):
        columns[f"reason_{rank}"] = names.gather(idx)
        columns[f"reason_{rank}_share"] = exp.share[rows, idx]
        columns[f"reason_{rank}_value"] = exp.value[rows, idx]
        columns[f"reason_{rank}_prototype"] = exp.prototype[rows, idx]
    return pl.DataFrame(columns)


def raw_rows(fs, n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    X = rng.lognormal(0, 1.5, size=(n, len(fs.names))) * rng.choice([-1, 1, 1, 1], (n, 1))
    X[rng.random(X.shape) < 0.2] = 0.0  # features at their prototype's value, ties in shares
    X[: n // 10] = X[0]                 # repeated rows
    return X


@pytest.mark.parametrize(("feature_set", "min_unit_share", "top"),
                         [("standard", 1.0, 3), ("standard", 0.0, 5), ("seed", 1.0, 3),
                          ("seed", 0.5, 30)])
def test_score_rows_equal_the_full_explanation_bit_for_bit(feature_set, min_unit_share, top):
    fs = get_feature_set(feature_set)
    model = TransactionModel(fs, AnomalyDetector(map_size="4x5", epochs=3,
                                                 min_unit_share=min_unit_share))
    model.fit(raw_rows(fs, 3_000, 0))
    X = raw_rows(fs, 5_000, 1)
    ids = pl.Series("transaction_id", [f"t{i}" for i in range(len(X))])
    got = model.score_rows(ids, X, top=top)
    assert got.equals(reference_table(model, ids, X, top))
    # A few rows (a request): the same values by the plain path.
    assert model.score_rows(ids[:5], X[:5], top=top).equals(
        reference_table(model, ids[:5], X[:5], top))


def test_score_values_equal_score_frame_in_parts_and_empty():
    fs = get_feature_set("standard")
    model = TransactionModel(fs, AnomalyDetector(map_size="3x3", epochs=2))
    model.fit(raw_rows(fs, 2_000, 2))
    X = raw_rows(fs, 2_500, 3)
    ids = pl.Series("transaction_id", [f"t{i}" for i in range(len(X))])
    frame = pl.DataFrame([ids, *(pl.Series(n, X[:, j]) for j, n in enumerate(fs.names))])
    expected = model.score_frame(frame, chunk_size=1_100)
    assert model.score_values(ids, X, chunk_size=1_100).equals(expected)
    assert model.score_values(ids, X).equals(expected)
    empty = model.score_values(ids[:0], X[:0])
    assert empty.height == 0 and empty.columns == model.score_frame(frame[:0]).columns
