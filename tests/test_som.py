"""The SOM module: pure maths, the fused batch kernel, and each algorithm vs a plain reference."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from txanomaly.som import (
    SelfOrganizingMap,
    accumulate_bmu_sums,
    argmin_rows,
    augment_rows,
    chunk_rows,
    exponential_decay,
    gaussian_neighbourhood,
    grid_coordinates,
    grid_sq_distances,
    two_smallest_rows,
)


def clustered(n: int = 600, d: int = 4, centres: int = 6, seed: int = 0) -> torch.Tensor:
    """Tight, well-separated clusters: every row's BMU is unambiguous."""
    rng = np.random.default_rng(seed)
    c = rng.normal(scale=10.0, size=(centres, d))
    x = c[rng.integers(centres, size=n)] + rng.normal(scale=0.3, size=(n, d))
    return torch.tensor(x, dtype=torch.float32)


# --------------------------------------------------------------------------- pure functions
def test_exponential_decay_runs_from_start_to_end_geometrically():
    values = [exponential_decay(5.0, 0.5, t, 11) for t in range(11)]
    assert values[0] == pytest.approx(5.0)
    assert values[-1] == pytest.approx(0.5)
    ratios = np.array(values[1:]) / np.array(values[:-1])
    assert np.allclose(ratios, ratios[0]) and ratios[0] < 1


def test_exponential_decay_single_step_is_the_end_value():
    assert exponential_decay(5.0, 0.5, 0, 1) == 0.5


def test_grid_coordinates_and_distances():
    coords = grid_coordinates(2, 3)
    assert coords.shape == (6, 2)
    assert coords[4].tolist() == [1.0, 1.0]  # unit 4 = row 1, col 1 (row-major)
    sq = grid_sq_distances(coords)
    assert sq[0, 5].item() == 1.0 + 4.0  # (0,0) to (1,2)
    assert torch.equal(sq, sq.T)


def test_gaussian_neighbourhood_is_one_at_the_winner_and_falls_with_distance():
    h = gaussian_neighbourhood(torch.tensor([0.0, 1.0, 4.0]), sigma=2.0)
    assert torch.allclose(h, torch.exp(-torch.tensor([0.0, 1.0, 4.0]) / 8.0))
    assert h[0] == 1.0 and h[0] > h[1] > h[2]


def test_chunk_rows_shrinks_for_bigger_maps():
    assert chunk_rows(100) > chunk_rows(900) >= 256


# --------------------------------------------------------------------------- fast argmin
def test_argmin_rows_matches_argmin_on_distinct_values():
    gen = torch.Generator().manual_seed(1)
    sq = torch.rand(500, 37, generator=gen) * 100
    expected = sq.argmin(1)
    assert torch.equal(argmin_rows(sq.clone()), expected)


def test_argmin_rows_winner_is_within_its_documented_tolerance():
    gen = torch.Generator().manual_seed(2)
    sq = 20 + torch.rand(2000, 100, generator=gen) * 1e-3  # many near-ties
    got = argmin_rows(sq.clone())
    best = sq.min(1).values
    chosen = sq.gather(1, got[:, None])[:, 0]
    assert torch.all((chosen - best) / best <= 2.0 ** -(23 - 7))


def test_argmin_rows_treats_negative_rounding_residue_as_zero_distance():
    sq = torch.tensor([[3.0, -1e-7, 2.0]])
    assert argmin_rows(sq).item() == 1


def test_two_smallest_rows_matches_topk():
    gen = torch.Generator().manual_seed(3)
    sq = torch.rand(300, 50, generator=gen) * 10
    expected = sq.topk(2, dim=1, largest=False).indices
    first, second = two_smallest_rows(sq.clone())
    assert torch.equal(first, expected[:, 0]) and torch.equal(second, expected[:, 1])


# --------------------------------------------------------------------------- batch update
def numpy_batch_update(x: np.ndarray, w: np.ndarray, rows: int, cols: int,
                       sigma: float) -> np.ndarray:
    """Kohonen's batch map, written plainly."""
    r, c = np.divmod(np.arange(rows * cols), cols)
    grid_sq = (r[:, None] - r[None, :]) ** 2 + (c[:, None] - c[None, :]) ** 2
    h = np.exp(-grid_sq / (2 * sigma**2))
    bmu = ((x[:, None, :] - w[None, :, :]) ** 2).sum(-1).argmin(1)
    weight = h[:, bmu]  # (units, n): neighbourhood of unit j around row i's BMU
    return (weight @ x) / weight.sum(1, keepdims=True)


@pytest.mark.parametrize("chunk", [7, 64, 4096])
def test_batch_epoch_matches_numpy_reference(chunk):
    X = clustered()
    som = SelfOrganizingMap(3, 4, 4, seed=0).initialize(X, "sample")
    before = som.weights.double().numpy()
    som.batch_epoch(augment_rows(X), sigma=1.3, chunk_size=chunk)
    expected = numpy_batch_update(X.double().numpy(), before, 3, 4, 1.3)
    np.testing.assert_allclose(som.weights.numpy(), expected, rtol=1e-4, atol=1e-4)


def test_accumulated_sums_hold_row_sums_squared_norms_and_counts():
    X = clustered(n=300)
    som = SelfOrganizingMap(2, 3, 4, seed=1).initialize(X, "sample")
    sums = accumulate_bmu_sums(augment_rows(X), som.weights, chunk_size=50)
    bmu = torch.cdist(X, som.weights).argmin(1)
    for unit in range(6):
        rows = X[bmu == unit]
        assert torch.allclose(sums[:4, unit], rows.sum(0), atol=1e-3)
        assert torch.allclose(sums[4, unit], (rows * rows).sum(), rtol=1e-5)
        assert sums[5, unit].item() == len(rows)


def test_batch_training_lowers_quantization_error():
    X = clustered()
    som = SelfOrganizingMap(4, 4, 4, seed=0).initialize(X, "pca")
    before = som.quantization_error(X)
    som.fit(X, epochs=10, sigma=2.0, sigma_end=0.5)
    assert som.quantization_error(X) < 0.5 * before


# --------------------------------------------------------------------------- seed and online
def test_seed_pass_matches_plain_per_sample_reference():
    X = clustered(n=200)
    som = SelfOrganizingMap(3, 3, 4, seed=3).initialize(X, "randn")
    w = som.weights.numpy().copy()
    for x in X.numpy():  # the prototype: winner-only, lr 0.1, input order
        winner = np.linalg.norm(w - x, axis=1).argmin()
        w[winner] += 0.1 * (x - w[winner])
    som.seed_pass(X)
    np.testing.assert_allclose(som.weights.numpy(), w, rtol=1e-5, atol=1e-5)


def test_seed_algorithm_updates_only_winners():
    X = clustered(n=50)
    som = SelfOrganizingMap(5, 5, 4, seed=0).initialize(X, "randn")
    before = som.weights.clone()
    som.fit(X, algorithm="seed", epochs=1)
    moved = (som.weights != before).any(1).sum().item()
    assert 0 < moved < 25


def test_online_pass_matches_plain_kohonen_reference():
    X = clustered(n=150)
    som = SelfOrganizingMap(2, 3, 4, seed=0).initialize(X, "sample")
    w = som.weights.double().numpy().copy()
    sigmas = np.linspace(1.5, 0.5, len(X))
    rates = np.linspace(0.5, 0.05, len(X))
    grid = grid_sq_distances(grid_coordinates(2, 3)).double().numpy()
    for i, x in enumerate(X.double().numpy()):
        winner = np.linalg.norm(w - x, axis=1).argmin()
        h = np.exp(-grid[winner] / (2 * sigmas[i] ** 2))
        w += rates[i] * h[:, None] * (x - w)
    som.online_pass(X, sigmas, rates)
    np.testing.assert_allclose(som.weights.numpy(), w, rtol=1e-5, atol=1e-5)


# --------------------------------------------------------------------------- initialisation
def test_pca_init_spans_the_leading_component_around_the_mean():
    gen = torch.Generator().manual_seed(0)
    X = torch.randn(2000, 3, generator=gen) * torch.tensor([5.0, 1.0, 0.1])
    som = SelfOrganizingMap(5, 3, 3, seed=0).initialize(X, "pca")
    grid = som.weights.reshape(5, 3, 3)
    assert torch.allclose(grid[2, 1], X.mean(0), atol=1e-4)  # the centre unit is the mean
    first_axis = grid[-1, 1] - grid[0, 1]  # rows follow the largest-variance direction
    assert abs(first_axis[0].item()) == pytest.approx(2 * X[:, 0].std().item(), rel=0.05)


def test_sample_init_copies_distinct_rows():
    X = clustered(n=100)
    som = SelfOrganizingMap(3, 3, 4, seed=0).initialize(X, "sample")
    matches = (som.weights[:, None, :] == X[None, :, :]).all(-1)
    assert matches.any(1).all()
    assert len({int(i) for i in matches.float().argmax(1)}) == 9


def test_same_seed_gives_same_map_and_other_seed_another():
    X = clustered()
    a = SelfOrganizingMap(3, 3, 4, seed=7).initialize(X, "sample").fit(X, algorithm="online",
                                                                         epochs=1)
    b = SelfOrganizingMap(3, 3, 4, seed=7).initialize(X, "sample").fit(X, algorithm="online",
                                                                         epochs=1)
    c = SelfOrganizingMap(3, 3, 4, seed=8).initialize(X, "sample")
    assert torch.equal(a.weights, b.weights)
    assert not torch.equal(SelfOrganizingMap(3, 3, 4, seed=7).initialize(X, "sample").weights,
                           c.weights)


# --------------------------------------------------------------------------- map quality
def line_map() -> SelfOrganizingMap:
    som = SelfOrganizingMap(1, 3, 1)
    som.weights.copy_(torch.tensor([[0.0], [1.0], [3.0]]))
    return som


def test_bmu_distances_and_quantization_error_by_hand():
    som = line_map()
    dist, bmu = som.bmu_distances(torch.tensor([[0.2], [2.9], [-1.0]]))
    assert bmu.tolist() == [0, 2, 0]
    assert torch.allclose(dist, torch.tensor([0.2, 0.1, 1.0]))
    assert som.quantization_error(torch.tensor([[0.5], [3.0]])) == pytest.approx(0.25)


def test_bmu_distances_do_not_depend_on_chunking():
    X = clustered(n=1000)
    som = SelfOrganizingMap(4, 4, 4, seed=0).initialize(X, "pca")
    d1, b1 = som.bmu_distances(X, chunk_size=1000)
    d2, b2 = som.bmu_distances(X, chunk_size=33)
    assert torch.equal(b1, b2) and torch.equal(d1, d2)


def test_topographic_error_counts_non_adjacent_first_and_second_bmus():
    som = line_map()
    # 1.9: first BMU 1, second 2 (adjacent); 0.1: first 0, second 1 (adjacent).
    assert som.topographic_error(torch.tensor([[1.9], [0.1]])) == 0.0
    # With unit 1 moved far away, 1.6 has first BMU 2 and second 0: not neighbours;
    # 9.0 has first BMU 1 and second 2: neighbours.
    som.weights.copy_(torch.tensor([[0.0], [10.0], [3.0]]))
    assert som.topographic_error(torch.tensor([[1.6], [9.0]])) == 0.5


@pytest.mark.parametrize("shape", [(1, 1), (4, 4)])
def test_bmu_distances_and_far_equal_the_two_separate_queries(shape):
    X = clustered(n=1000)
    som = SelfOrganizingMap(*shape, 4, seed=0).initialize(X, "pca")
    # Units shuffled on the grid: many rows' two nearest units are then not neighbours.
    order = torch.randperm(som.n_units, generator=torch.Generator().manual_seed(0))
    som.weights.copy_(som.weights[order])
    dist, bmu, far = som.bmu_distances_and_far(X, chunk_size=77)
    d, b = som.bmu_distances(X)
    assert torch.equal(dist, d) and torch.equal(bmu, b)
    assert far / len(X) == som.topographic_error(X)
    assert shape == (1, 1) or far > 0


def test_u_matrix_and_hit_counts_by_hand():
    som = line_map()
    assert som.u_matrix().tolist() == [[1.0, 1.5, 2.0]]
    hits = som.hit_counts(torch.tensor([[0.1], [0.2], [2.8]]))
    assert hits.tolist() == [[2, 0, 1]]
    assert som.unit_position(torch.tensor([2]))[1].item() == 2


def test_wrong_shapes_and_unknown_names_are_refused():
    som = SelfOrganizingMap(2, 2, 3)
    with pytest.raises(ValueError, match=r"shape \(n, 3\)"):
        som.bmu_distances(torch.zeros(4, 2))
    with pytest.raises(ValueError, match="algorithm"):
        som.fit(torch.zeros(4, 3), algorithm="fast")
    with pytest.raises(ValueError, match="init"):
        som.initialize(torch.zeros(4, 3), "kmeans")
    with pytest.raises(ValueError, match="rows"):
        SelfOrganizingMap(0, 2, 3)


def test_cached_unit_norms_follow_every_change_of_the_prototypes():
    """bmu_distances keeps |w|^2 between calls; an in-place update or a restore must not
    leave it stale."""
    som = SelfOrganizingMap(3, 3, 2, seed=0)
    X = torch.randn(50, 2, generator=torch.Generator().manual_seed(1))
    som.initialize(X, "sample")
    first = som.bmu_distances(X)
    som.weights.mul_(2.0)  # in place: the version counter moves
    fresh = SelfOrganizingMap(3, 3, 2, seed=0)
    fresh.weights.copy_(som.weights)
    for got, want in zip(som.bmu_distances(X), fresh.bmu_distances(X), strict=True):
        assert torch.equal(got, want)
    assert not torch.equal(first[0], som.bmu_distances(X)[0])
