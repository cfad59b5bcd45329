"""A Kohonen Self-Organizing Map in PyTorch: tensors and update rules, nothing else.

:class:`SelfOrganizingMap` holds the prototype vectors of a ``rows x cols`` rectangular grid and
the rules that move them. It knows nothing about scaling, thresholds or files; that is
:class:`txanomaly.detector.AnomalyDetector`'s job. The maths lives in small pure functions
(:func:`exponential_decay`, :func:`grid_coordinates`, :func:`gaussian_neighbourhood`) that are
tested on their own.

Three training algorithms:

``batch`` (the default)
    Kohonen's batch map: each epoch assigns every row to its best-matching unit (BMU) and sets
    each prototype to the neighbourhood-weighted mean of the rows, with a Gaussian radius that
    decays from ``sigma`` to ``sigma_end``. Rows are processed in chunks that stay in cache.
``online``
    Per-sample Kohonen updates ``w += lr * h * (x - w)`` with both the radius and the learning
    rate decaying exponentially; :meth:`SelfOrganizingMap.online_pass` serves ``partial_fit``.
``seed``
    The prototype this project replaces: ``randn`` initialisation, winner-only updates with a
    fixed learning rate of 0.1, one sample at a time, rows in input order. Kept for comparison.

>>> import torch
>>> som = SelfOrganizingMap(2, 3, n_features=2, seed=0)
>>> X = torch.tensor([[0.0, 0.0], [0.1, 0.0], [5.0, 5.0], [5.1, 5.0]])
>>> _ = som.initialize(X, "sample")
>>> som = som.fit(X, epochs=5, sigma=1.0, sigma_end=0.3)
>>> bool(som.quantization_error(X) < 0.2)
True
"""

from __future__ import annotations

import logging
import math
import os
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from typing import TypeVar

import numpy as np
import torch

logger = logging.getLogger(__name__)

ALGORITHMS = ("batch", "online", "seed")
INITIALIZATIONS = ("pca", "sample", "randn")
#: The prototype's fixed learning rate (winner-only updates).
SEED_LEARNING_RATE = 0.1
#: The batch kernel's chunk holds ``chunk x units`` float32 distances; ~1.6 MB keeps them in
#: the L2/L3 cache of the machines we measured (benchmarks/bench_som.py picks 4096 rows for a
#: 10x10 map).
_CHUNK_BYTES = 1_600_000
#: On a GPU the chunk is as large as this (bench_device.py): launches, not cache, limit there.
_GPU_CHUNK_BYTES = 256 * 2**20
#: Rows from which the compiled kernels (:mod:`txanomaly.som_kernels`: the same winners,
#: sums and scores) take over from PyTorch/NumPy on the CPU; fewer (a scoring request, a
#: small fit) do not load them (Numba, ~0.5 s).
COMPILED_MIN_ROWS = 1024
#: Rows used to estimate the principal components for PCA initialisation.
_PCA_MAX_ROWS = 100_000

Callback = Callable[[int, int], None]
T = TypeVar("T")
A = TypeVar("A")


# --------------------------------------------------------------------------- pure maths
def exponential_decay(start: float, end: float, step: int, total: int) -> float:
    """Value at ``step`` of ``total`` on a geometric path from ``start`` to ``end``.

    >>> exponential_decay(4.0, 1.0, 0, 3), exponential_decay(4.0, 1.0, 1, 3)
    (4.0, 2.0)
    >>> exponential_decay(4.0, 1.0, 2, 3)
    1.0
    """
    if total <= 1:
        return float(end)
    return float(start * (end / start) ** (step / (total - 1)))


def grid_coordinates(rows: int, cols: int) -> torch.Tensor:
    """``(rows * cols, 2)`` float32 (row, col) positions of the units, row-major.

    >>> grid_coordinates(2, 2).tolist()
    [[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]]
    """
    r, c = torch.meshgrid(torch.arange(rows), torch.arange(cols), indexing="ij")
    return torch.stack([r.reshape(-1), c.reshape(-1)], dim=1).to(torch.float32)


def grid_sq_distances(coords: torch.Tensor) -> torch.Tensor:
    """Squared Euclidean distances between all pairs of grid positions."""
    diff = coords[:, None, :] - coords[None, :, :]
    return (diff * diff).sum(-1)


def gaussian_neighbourhood(grid_sq: torch.Tensor, sigma: float) -> torch.Tensor:
    """Gaussian neighbourhood weights ``exp(-d^2 / (2 sigma^2))`` from squared grid distances.

    >>> gaussian_neighbourhood(torch.tensor([0.0, 1.0]), 1.0).tolist()
    [1.0, 0.6065306663513184]
    """
    return torch.exp(-grid_sq / (2.0 * sigma * sigma))


def chunk_rows(n_units: int, device: str | torch.device = "cpu") -> int:
    """Rows per chunk so that a ``chunk x n_units`` float32 block stays in cache (CPU), or
    is large enough to fill a GPU (CUDA: blocks of about 256 MB, where a CPU-sized block
    leaves the GPU waiting on each kernel launch).

    >>> chunk_rows(100), chunk_rows(900), chunk_rows(100, "cuda")
    (4096, 512, 524288)
    """
    budget = _GPU_CHUNK_BYTES if torch.device(device).type == "cuda" else _CHUNK_BYTES
    rows = max(256, budget // (4 * n_units))
    return int(2 ** round(math.log2(rows)))


# --------------------------------------------------------------------------- the module
class SelfOrganizingMap(torch.nn.Module):
    """A rectangular Kohonen map: ``rows * cols`` prototypes of ``n_features`` float32 values.

    Parameters
    ----------
    rows, cols : int
        Grid shape. Units are numbered row-major: unit ``i`` sits at ``divmod(i, cols)``.
    n_features : int
        Length of each prototype vector.
    seed : int
        Seeds this map's own :class:`torch.Generator` (initialisation, shuffling); no global
        random state is touched.
    device : str or torch.device
        Where the prototypes live (``"cpu"`` or ``"cuda"``).
    """

    weights: torch.Tensor
    coords: torch.Tensor
    grid_sq: torch.Tensor

    def __init__(self, rows: int, cols: int, n_features: int, *, seed: int = 0,
                 device: str | torch.device = "cpu"):
        super().__init__()
        for name, value in (("rows", rows), ("cols", cols), ("n_features", n_features)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        self.rows, self.cols, self.n_features = rows, cols, n_features
        self.generator = torch.Generator().manual_seed(int(seed))
        coords = grid_coordinates(rows, cols)
        self.register_buffer("weights", torch.zeros(rows * cols, n_features, device=device))
        self.register_buffer("coords", coords.to(device))
        self.register_buffer("grid_sq", grid_sq_distances(coords).to(device))

    @property
    def n_units(self) -> int:
        return self.rows * self.cols

    @property
    def device(self) -> torch.device:
        return self.weights.device

    def extra_repr(self) -> str:
        return f"rows={self.rows}, cols={self.cols}, n_features={self.n_features}"

    # ------------------------------------------------------------------ initialisation
    def initialize(self, X: torch.Tensor, method: str = "pca") -> SelfOrganizingMap:
        """Set the prototypes from data: ``pca``, ``sample`` or ``randn``; returns ``self``.

        ``pca`` spreads the grid over the plane of the two leading principal components
        (+-1 standard deviation around the mean), ``sample`` copies random rows, ``randn``
        draws standard normal values (the prototype's initialisation).
        """
        X = self._check(X)
        rows = self.initial_rows(len(X), method)
        return self.initialize_from(None if rows is None else X[rows], method)

    def initial_rows(self, n: int, method: str) -> torch.Tensor | None:
        """Which of ``n`` rows :meth:`initialize` reads, in the order it reads them, drawn
        from the map's generator (None for ``randn``, which reads none). A distributed
        trainer draws them here and fetches those rows (:mod:`txanomaly.spark`)."""
        if method not in INITIALIZATIONS:
            raise ValueError(f"init must be one of {INITIALIZATIONS}, got {method!r}")
        if method == "randn":
            return None
        return self._draw_rows(n, self.n_units if method == "sample" else min(n, _PCA_MAX_ROWS))

    def initialize_from(self, rows: torch.Tensor | None, method: str) -> SelfOrganizingMap:
        """:meth:`initialize` from the rows :meth:`initial_rows` chose; returns ``self``."""
        if method == "randn":
            w = torch.randn(self.n_units, self.n_features, generator=self.generator)
        elif rows is None:
            raise ValueError(f"init {method!r} needs the rows initial_rows chose")
        elif method == "sample":
            w = rows.cpu()
        else:
            w = self._pca_weights(rows)
        self.weights.copy_(w.to(self.device, torch.float32))
        return self

    def _draw_rows(self, n: int, k: int) -> torch.Tensor:
        if k <= n:
            return torch.randperm(n, generator=self.generator)[:k]
        return torch.randint(n, (k,), generator=self.generator)

    def _pca_weights(self, X: torch.Tensor) -> torch.Tensor:
        Xd = X.cpu().to(torch.float64)
        mean = Xd.mean(0)
        centred = Xd - mean
        cov = centred.T @ centred / max(len(Xd) - 1, 1)
        eigval, eigvec = torch.linalg.eigh(cov)  # ascending order
        axes = [eigvec[:, -i] * eigval[-i].clamp(min=0).sqrt() if i <= self.n_features
                else torch.zeros(self.n_features, dtype=torch.float64) for i in (1, 2)]
        a = torch.linspace(-1, 1, self.rows, dtype=torch.float64) if self.rows > 1 else \
            torch.zeros(1, dtype=torch.float64)
        b = torch.linspace(-1, 1, self.cols, dtype=torch.float64) if self.cols > 1 else \
            torch.zeros(1, dtype=torch.float64)
        w = mean + a[:, None, None] * axes[0] + b[None, :, None] * axes[1]
        return w.reshape(self.n_units, self.n_features).to(torch.float32)

    # ------------------------------------------------------------------ training
    def fit(self, X: torch.Tensor, *, algorithm: str = "batch", epochs: int = 20,
            sigma: float = 1.0, sigma_end: float = 0.5, learning_rate: float = 0.5,
            learning_rate_end: float = 0.01, chunk_size: int | None = None,
            callback: Callback | None = None) -> SelfOrganizingMap:
        """Train on ``X`` for ``epochs`` passes with the chosen algorithm; returns ``self``.

        ``sigma`` decays to ``sigma_end`` (``batch``, ``online``) and ``learning_rate`` to
        ``learning_rate_end`` (``online``) exponentially. ``seed`` ignores all four.
        ``callback(epoch, epochs)`` is called after each epoch (progress bars).
        """
        if algorithm not in ALGORITHMS:
            raise ValueError(f"algorithm must be one of {ALGORITHMS}, got {algorithm!r}")
        X = self._check(X)
        if algorithm == "batch":
            data = augment_rows(X)
        for epoch in range(epochs):
            if algorithm == "batch":
                self.batch_epoch(data, exponential_decay(sigma, sigma_end, epoch, epochs),
                                 chunk_size)
            elif algorithm == "online":
                order = torch.randperm(len(X), generator=self.generator)
                start, stop = epoch * len(X), (epoch + 1) * len(X)
                total = epochs * len(X)
                sigmas = _decay_path(sigma, sigma_end, start, stop, total)
                rates = _decay_path(learning_rate, learning_rate_end, start, stop, total)
                self.online_pass(X[order], sigmas, rates)
            else:
                self.seed_pass(X)
            if callback is not None:
                callback(epoch + 1, epochs)
        return self

    def batch_epoch(self, data: torch.Tensor, sigma: float, chunk_size: int | None = None) -> None:
        """One batch-map epoch over ``data`` from :func:`augment_rows`.

        Each prototype becomes the mean of all rows weighted by the Gaussian neighbourhood
        (radius ``sigma``) of their BMU; a unit with zero total weight keeps its prototype.
        """
        step = chunk_size or chunk_rows(self.n_units, self.device)
        self.apply_bmu_sums(accumulate_bmu_sums(data, self.weights, step), sigma)

    def apply_bmu_sums(self, sums: torch.Tensor, sigma: float) -> None:
        """The batch-map update from per-BMU sums (:func:`accumulate_bmu_sums`, or their
        total over the partitions of a distributed table: :mod:`txanomaly.spark`)."""
        d = self.n_features
        h = gaussian_neighbourhood(self.grid_sq, sigma)
        numer = h @ sums[:d].T                     # (units, d)
        denom = h @ sums[d + 1]                    # (units,): the row of ones counts hits
        ok = denom > 0
        self.weights[ok] = (numer[ok] / denom[ok, None]).to(torch.float32)

    def smoothed_prototypes(self, sigma: float, units: torch.Tensor | None = None
                            ) -> torch.Tensor:
        """``(units, d)`` float32: each unit's mean of the prototypes of ``units`` (every unit
        when None), weighted by the Gaussian neighbourhood ``exp(-d^2 / (2 sigma^2))`` of
        their grid distance ``d`` from it (computed in float64); ``sigma <= 0``: the
        prototypes themselves. A unit's own prototype weighs 1 when it is among ``units``.

        >>> som = SelfOrganizingMap(1, 3, 1)
        >>> _ = som.weights.copy_(torch.tensor([[0.0], [3.0], [6.0]]))
        >>> [round(v, 3) for v in som.smoothed_prototypes(1.0).flatten().tolist()]
        [1.511, 3.0, 4.489]
        >>> two = som.smoothed_prototypes(1.0, torch.tensor([0, 2]))
        >>> [round(v, 3) for v in two.flatten().tolist()]
        [0.715, 3.0, 5.285]
        """
        if sigma <= 0:
            return self.weights.detach().clone()
        h = gaussian_neighbourhood(self.grid_sq.double(), sigma)
        if units is not None:
            mask = torch.zeros(self.n_units, dtype=torch.float64, device=h.device)
            mask[units] = 1.0
            h = h * mask[None, :]
        w = self.weights.detach().double()
        return ((h @ w) / h.sum(1, keepdim=True)).to(torch.float32)

    def online_pass(self, X: torch.Tensor, sigmas: np.ndarray, rates: np.ndarray) -> None:
        """Per-sample Kohonen updates over the rows of ``X`` in order.

        Row ``i`` moves every prototype by ``rates[i] * h_i * (x_i - w)`` where ``h_i`` is the
        Gaussian neighbourhood of its BMU with radius ``sigmas[i]``. Runs in NumPy on a CPU
        copy: per-sample work is tiny and dispatch overhead, not arithmetic, dominates.
        """
        X = self._check(X)
        w = self.weights.detach().cpu().numpy().astype(np.float64)
        grid_sq = self.grid_sq.cpu().numpy().astype(np.float64)
        inv_two_sigma_sq = 1.0 / (2.0 * np.asarray(sigmas, dtype=np.float64) ** 2)
        rates = np.asarray(rates, dtype=np.float64)
        for i, x in enumerate(X.cpu().numpy().astype(np.float64)):
            diff = x - w
            bmu = int(np.einsum("ij,ij->i", diff, diff).argmin())
            h = np.exp(-grid_sq[bmu] * inv_two_sigma_sq[i]) * rates[i]
            w += h[:, None] * diff
        self.weights.copy_(torch.from_numpy(w).to(self.device, torch.float32))

    def seed_pass(self, X: torch.Tensor, learning_rate: float = SEED_LEARNING_RATE) -> None:
        """The prototype's epoch: winner-only updates, one sample at a time, in input order."""
        X = self._check(X)
        w = self.weights.detach().cpu().numpy()
        for x in X.cpu().numpy():
            diff = x - w
            bmu = int(np.einsum("ij,ij->i", diff, diff).argmin())
            w[bmu] += np.float32(learning_rate) * diff[bmu]
        self.weights.copy_(torch.from_numpy(w).to(self.device))

    # ------------------------------------------------------------------ queries (read-only)
    @torch.no_grad()
    def bmu_distances(self, X: torch.Tensor, chunk_size: int | None = None,
                      units: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``(distance, bmu)`` for every row: Euclidean distance to the best-matching unit.

        The BMU comes from the ``|x|^2 - 2 x.w + |w|^2`` expansion (see :func:`argmin_rows`);
        the distance is then recomputed directly from ``x - w_bmu`` so that it carries no
        cancellation error and does not depend on how the rows were chunked. ``units``
        (unit indices, ascending): the BMU is the nearest of these; ``bmu`` still numbers
        units on the whole map.
        """
        return self._nearest(X, chunk_size, units, True)

    @torch.no_grad()
    def best_units(self, X: torch.Tensor, chunk_size: int | None = None,
                   units: torch.Tensor | None = None) -> torch.Tensor:
        """The ``bmu`` of :meth:`bmu_distances` (the same units), without the distances."""
        return self._nearest(X, chunk_size, units, False)[1]

    def _nearest(self, X: torch.Tensor, chunk_size: int | None, units: torch.Tensor | None,
                 distances: bool) -> tuple[torch.Tensor, torch.Tensor]:
        w = self.weights
        X = self._check(X, w.device)
        dist = torch.empty(len(X) if distances else 0, dtype=torch.float32, device=w.device)
        bmu = torch.empty(len(X), dtype=torch.int64, device=w.device)
        w_sq = self._unit_norms(w)
        search, search_sq = (w, w_sq) if units is None else self._subset(w, w_sq, units)
        step = chunk_size or chunk_rows(len(search), self.device)

        def chunk(start: int) -> None:
            x = X[start:start + step]
            sq = torch.addmm(search_sq, x, search.T, alpha=-2.0).add_((x * x).sum(1, keepdim=True))
            b = _winners(sq)
            if units is not None:
                b = units.index_select(0, b)
            if distances:
                dist[start:start + len(x)] = torch.linalg.vector_norm(
                    x - w.index_select(0, b), dim=1)
            bmu[start:start + len(x)] = b

        _each_chunk(len(X), step, w.device, chunk)
        return dist, bmu

    @torch.no_grad()
    def bmu_distances_and_far(self, X: torch.Tensor, chunk_size: int | None = None
                              ) -> tuple[torch.Tensor, torch.Tensor, int]:
        """:meth:`bmu_distances` over every unit, and how many rows' two nearest units are
        not grid neighbours (:meth:`topographic_error` times the rows), from one distance
        matrix per chunk instead of two (the same values as the two calls)."""
        w = self.weights
        X = self._check(X, w.device)
        dist = torch.empty(len(X), dtype=torch.float32, device=w.device)
        bmu = torch.empty(len(X), dtype=torch.int64, device=w.device)
        w_sq = self._unit_norms(w)
        step = chunk_size or chunk_rows(self.n_units, self.device)

        def chunk(start: int) -> int:
            x = X[start:start + step]
            sq = torch.addmm(w_sq, x, w.T, alpha=-2.0).add_((x * x).sum(1, keepdim=True))
            far = 0
            if self.n_units < 2:
                b = argmin_rows(sq)
            else:
                b, second = _two_winners(sq)
                far = int(((self.coords[b] - self.coords[second]).abs().amax(1) > 1).sum())
            dist[start:start + len(x)] = torch.linalg.vector_norm(x - w.index_select(0, b),
                                                                   dim=1)
            bmu[start:start + len(x)] = b
            return far

        return dist, bmu, sum(_each_chunk(len(X), step, w.device, chunk))

    def quantization_error(self, X: torch.Tensor) -> float:
        """Mean distance of the rows to their BMU."""
        return float(self.bmu_distances(X)[0].mean())

    @torch.no_grad()
    def topographic_error(self, X: torch.Tensor, chunk_size: int | None = None) -> float:
        """Share of rows whose first and second BMUs are not neighbours (8-neighbourhood)."""
        X = self._check(X)
        if self.n_units < 2:
            return 0.0
        w = self.weights
        w_sq = (w * w).sum(1)
        far = 0
        step = chunk_size or chunk_rows(self.n_units, self.device)
        for start in range(0, len(X), step):
            x = X[start:start + step]
            sq = torch.addmm(w_sq, x, w.T, alpha=-2.0).add_((x * x).sum(1, keepdim=True))
            first, second = two_smallest_rows(sq)
            apart = (self.coords[first] - self.coords[second]).abs().amax(1)
            far += int((apart > 1).sum())
        return far / len(X)

    @torch.no_grad()
    def u_matrix(self) -> torch.Tensor:
        """``(rows, cols)`` mean distance of each prototype to its 8 grid neighbours."""
        step = (self.coords[:, None, :] - self.coords[None, :, :]).abs().amax(-1)
        adjacent = (step == 1).to(torch.float32)
        dist = torch.cdist(self.weights, self.weights)
        return ((dist * adjacent).sum(1) / adjacent.sum(1).clamp(min=1)).reshape(
            self.rows, self.cols)

    def hit_counts(self, X: torch.Tensor) -> torch.Tensor:
        """``(rows, cols)`` number of rows whose BMU is each unit."""
        bmu = self.bmu_distances(X)[1]
        return torch.bincount(bmu, minlength=self.n_units).reshape(self.rows, self.cols)

    def unit_position(self, bmu: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Grid ``(row, col)`` of flat unit indices."""
        return bmu // self.cols, bmu % self.cols

    def _check(self, X: torch.Tensor, device: torch.device | None = None) -> torch.Tensor:
        if X.ndim != 2 or X.shape[1] != self.n_features:
            raise ValueError(f"X must have shape (n, {self.n_features}), got {tuple(X.shape)}")
        if len(X) == 0:
            raise ValueError("X has no rows")
        return X.to(device if device is not None else self.device, torch.float32)

    def _subset(self, w: torch.Tensor, w_sq: torch.Tensor, units: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """The prototypes and norms of ``units``, kept like :meth:`_unit_norms` (a one-row
        request would otherwise gather them on every call)."""
        key = (w.data_ptr(), w._version, units.data_ptr(), len(units))
        if self.__dict__.get("_subset_key") != key:
            self.__dict__["_subset_value"] = (w.index_select(0, units),
                                              w_sq.index_select(0, units))
            self.__dict__["_subset_key"] = key
        return self.__dict__["_subset_value"]

    def _unit_norms(self, w: torch.Tensor) -> torch.Tensor:
        """``|w|^2`` per unit, kept until the prototypes change (a scoring service asks for
        it on every request; in-place updates bump the tensor's version counter)."""
        key = (w.data_ptr(), w._version)
        if self.__dict__.get("_norms_key") != key:
            self.__dict__["_norms"] = (w * w).sum(1)
            self.__dict__["_norms_key"] = key
        return self.__dict__["_norms"]


# --------------------------------------------------------------------------- batch kernel
def augment_rows(X: torch.Tensor, chunk_size: int = 65_536) -> torch.Tensor:
    """``(d + 2, n)`` float32 matrix ``[X.T; |x|^2; 1]`` built chunk by chunk.

    With prototypes augmented as ``[-2 w, 1, |w|^2]`` one matrix product gives
    ``|x - w|^2`` (non-negative up to rounding), and summing the columns per BMU gives the
    row sums, the sums of ``|x|^2`` and the hit counts in one :meth:`torch.Tensor.index_add_`.
    """
    n, d = X.shape
    out = torch.empty(d + 2, n, dtype=torch.float32, device=X.device)
    for start in range(0, n, chunk_size):
        x = X[start:start + chunk_size].to(torch.float32)
        out[:d, start:start + len(x)] = x.T
        out[d, start:start + len(x)] = (x * x).sum(1)
    out[d + 1] = 1.0
    return out


def accumulate_bmu_sums(data: torch.Tensor, weights: torch.Tensor, chunk_size: int,
                        out: torch.Tensor | None = None) -> torch.Tensor:
    """``(d + 2, units)`` per-BMU sums of the columns of ``data`` (see :func:`augment_rows`).

    The fused kernel: squared distances by one ``mm`` per chunk into a reused buffer, the
    winners by :func:`argmin_rows`, the sums by one ``index_add_`` (on the CPU both in one
    compiled pass, :func:`txanomaly.som_kernels.add_to_winners`, with the same winners and
    the same float32 additions in the same order). ``out``: sums to add to
    (the blocks of a table read from disk: :meth:`AnomalyDetector.fit_stored`);
    blocks whose lengths are multiples of ``chunk_size`` add in the same order as one call.
    """
    n_units = len(weights)
    aug = torch.cat([-2.0 * weights, torch.ones_like(weights[:, :1]),
                     (weights * weights).sum(1, keepdim=True)], dim=1).T.contiguous()
    sums = out if out is not None else torch.zeros(data.shape[0], n_units,
                                                   dtype=torch.float32, device=weights.device)
    buf = torch.empty(chunk_size, n_units, dtype=torch.float32, device=weights.device)
    if _compiled_ok(data, sums):
        threads = torch.get_num_threads()
        if threads > 1 and data.shape[1] > chunk_size:
            _threaded_sums(data, aug, chunk_size, sums, threads)
            return sums
        # The winners and the sums in one compiled pass over the block (som_kernels):
        # the same unit wins and the same float32 additions happen in the same order.
        from txanomaly.som_kernels import add_to_winners

        keys, won = buf.view(torch.int32).numpy(), np.empty(chunk_size, dtype=np.int64)
        low = _index_mask(n_units)
        values, totals = data.numpy(), sums.numpy()
        for start in range(0, data.shape[1], chunk_size):
            cols = data[:, start:start + chunk_size]
            rows = cols.shape[1]
            torch.mm(cols.T, aug, out=buf[:rows])
            add_to_winners(keys[:rows], low, values, start, totals, won[:rows])
        return sums
    for start in range(0, data.shape[1], chunk_size):
        cols = data[:, start:start + chunk_size]
        sq = torch.mm(cols.T, aug, out=buf[:cols.shape[1]])
        sums.index_add_(1, argmin_rows(sq), cols)
    return sums


#: Chunks of rows whose winners the threads of :func:`_threaded_sums` find before the sums
#: are added (a span of 64 chunks of 4,096 rows: 2 MB of winners).
_SPAN_CHUNKS = 64
_POOL: list[tuple[int, ThreadPoolExecutor]] = []


def _threaded_sums(data: torch.Tensor, aug: torch.Tensor, chunk_size: int,
                   sums: torch.Tensor, threads: int) -> None:
    """:func:`accumulate_bmu_sums` on ``threads`` CPU threads, the same sums bit for bit.

    A span of chunks at a time, each thread takes every ``threads``-th chunk: its distance
    product (PyTorch on one thread: the same values, the product's sums run over the same
    features in the same order) and its winners (:func:`txanomaly.som_kernels.winners`);
    then each thread adds the span's rows, in row order, into the sums of its share of the
    features (:func:`txanomaly.som_kernels.add_rows`). Every sum sees the same float32
    additions in the same order as one thread would make. PyTorch's own threads are set to
    one meanwhile: the chunks are small, and its team of threads waiting for each other on
    every product costs more than the product on a shared machine."""
    from txanomaly.som_kernels import add_rows, winners

    pool = _pool()
    n, n_units = data.shape[1], aug.shape[1]
    low = _index_mask(n_units)
    values, totals = data.numpy(), sums.numpy()
    span = chunk_size * _SPAN_CHUNKS
    won = np.empty(min(span, n), dtype=np.int64)
    bufs = [torch.empty(chunk_size, n_units, dtype=torch.float32) for _ in range(threads)]
    cuts = np.linspace(0, values.shape[0], threads + 1).astype(int).tolist()

    def find(part: int, first: int, stop: int) -> None:
        buf = bufs[part]
        keys = buf.view(torch.int32).numpy()
        for start in range(first + part * chunk_size, stop, threads * chunk_size):
            rows = min(chunk_size, stop - start)
            torch.mm(data[:, start:start + rows].T, aug, out=buf[:rows])
            winners(keys[:rows], low, won[start - first:start - first + rows])

    def add(part: int, first: int, stop: int) -> None:
        add_rows(won[:stop - first], values[:, first:stop], totals, cuts[part], cuts[part + 1])

    with _one_torch_thread():
        for first in range(0, n, span):
            stop = min(first + span, n)
            for step in (find, add):
                done = [pool.submit(step, part, first, stop) for part in range(1, threads)]
                step(0, first, stop)
                for future in done:
                    future.result()


def _each_chunk(n: int, step: int, device: torch.device, work: Callable[[int], T]
                ) -> list[T]:
    """``work(start)`` for each chunk of ``step`` of ``n`` rows, the results in row order.

    On the CPU, rows of more than one chunk are shared by the kernel's threads, a chunk at
    a time, with PyTorch on one thread meanwhile: a chunk's values do not depend on the
    thread that computes it, and PyTorch's own team of threads meeting at the end of every
    small product and reduction cost up to 25 times the work on a busy machine (a process
    that also computes features in other threads is one: ``txanomaly score``). A single
    chunk (a scoring request) and a GPU run as they are, in order."""
    starts = range(0, n, step)
    if device.type != "cpu" or n <= step:
        return [work(start) for start in starts]
    with _one_torch_thread():
        return list(_pool().map(work, starts))


def map_in_threads(function: Callable[[A], T], items: Iterable[A], ahead: int = 2
                   ) -> Iterator[T]:
    """``function(item)`` for each of ``items``, computed by the kernel's threads with at
    most ``ahead`` items in flight beyond the one whose result is awaited, yielded in order;
    PyTorch on one thread meanwhile (see :func:`_each_chunk`). ``items`` is consumed from
    this thread."""
    pending: deque[Future[T]] = deque()
    with _one_torch_thread():
        for item in items:
            pending.append(_pool().submit(function, item))
            if len(pending) > ahead:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


def _pool() -> ThreadPoolExecutor:
    """The kernel's worker threads, made on first use (again in a forked child, which has
    none of its parent's threads)."""
    if not _POOL or _POOL[0][0] != os.getpid():
        _POOL[:] = [(os.getpid(), ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 2),
                                                     thread_name_prefix="txanomaly-som"))]
    return _POOL[0][1]


_TORCH_THREADS = threading.Lock()
_HELD: list[int] = [0, 1]  # how many callers hold one thread; the count to restore


@contextmanager
def _one_torch_thread() -> Iterator[None]:
    """PyTorch on one thread meanwhile, its thread count restored after the last of several
    concurrent callers is done."""
    with _TORCH_THREADS:
        if _HELD[0] == 0:
            _HELD[1] = torch.get_num_threads()
            torch.set_num_threads(1)
        _HELD[0] += 1
    try:
        yield
    finally:
        with _TORCH_THREADS:
            _HELD[0] -= 1
            if _HELD[0] == 0:
                torch.set_num_threads(_HELD[1])


def _compiled_ok(data: torch.Tensor, sums: torch.Tensor) -> bool:
    """Whether :func:`accumulate_bmu_sums` can hand its blocks to the compiled CPU kernel
    (float32 CPU tensors it can view as NumPy arrays, enough rows to be worth loading them;
    on a GPU the PyTorch path runs: the same sums)."""
    return (data.shape[1] >= COMPILED_MIN_ROWS
            and data.device.type == "cpu" and sums.device.type == "cpu"
            and data.dtype == torch.float32 and sums.dtype == torch.float32
            and data.is_contiguous() and sums.is_contiguous()
            and not (data.requires_grad or sums.requires_grad))


def _index_mask(n_units: int) -> int:
    """The low bits :func:`argmin_rows` writes a unit's index into."""
    return (1 << max(1, (n_units - 1).bit_length())) - 1


def argmin_rows(sq: torch.Tensor) -> torch.Tensor:
    """Column of the minimum of each row of a ``(n, units)`` float32 matrix of squared distances.

    Overwrites ``sq``. Non-negative float32 values order like their int32 bit patterns, so the
    column index is written into the low mantissa bits and one integer ``amin`` finds value
    and index together; PyTorch's CPU ``argmin`` over short rows is about three times slower.
    A winner is exact up to ``2**-(23 - log2(units))`` relative (about 1.5e-5 for 100
    units); closer ties go to the lower index. Tiny negative rounding residues count as 0.

    >>> argmin_rows(torch.tensor([[3.0, 1.0, 2.0], [0.5, 4.0, 0.25]])).tolist()
    [1, 2]
    """
    n_units = sq.shape[1]
    low = _index_mask(n_units)
    index = torch.arange(n_units, dtype=torch.int32, device=sq.device)
    keys = sq.view(torch.int32).bitwise_and_(~low).bitwise_or_(index)
    return keys.amin(1).bitwise_and_(low).long()


def _winners(sq: torch.Tensor) -> torch.Tensor:
    """:func:`argmin_rows` of ``sq`` (which it may overwrite), compiled on large CPU blocks."""
    if sq.device.type != "cpu" or len(sq) < COMPILED_MIN_ROWS or not sq.is_contiguous():
        return argmin_rows(sq)
    from txanomaly.som_kernels import winners

    out = np.empty(len(sq), dtype=np.int64)
    winners(sq.view(torch.int32).numpy(), _index_mask(sq.shape[1]), out)
    return torch.from_numpy(out)


def _two_winners(sq: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`two_smallest_rows` of ``sq`` (which it may overwrite), compiled on large CPU
    blocks."""
    if sq.device.type != "cpu" or len(sq) < COMPILED_MIN_ROWS or not sq.is_contiguous():
        return two_smallest_rows(sq)
    from txanomaly.som_kernels import two_winners

    first, second = np.empty(len(sq), dtype=np.int64), np.empty(len(sq), dtype=np.int64)
    two_winners(sq.view(torch.int32).numpy(), _index_mask(sq.shape[1]), first, second)
    return torch.from_numpy(first), torch.from_numpy(second)


def two_smallest_rows(sq: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Columns of the smallest and second-smallest value of each row (see :func:`argmin_rows`).

    Overwrites ``sq``.

    >>> [t.tolist() for t in two_smallest_rows(torch.tensor([[3.0, 1.0, 2.0], [0.5, 4.0, 0.25]]))]
    [[1, 2], [2, 0]]
    """
    first = argmin_rows(sq)
    keys = sq.view(torch.int32)  # argmin_rows left the keys in place
    keys[torch.arange(len(keys), device=keys.device), first] = torch.iinfo(torch.int32).max
    low = _index_mask(sq.shape[1])
    return first, keys.amin(1).bitwise_and_(low).long()


def _decay_path(start: float, end: float, first: int, stop: int, total: int) -> np.ndarray:
    """Exponential decay values for steps ``first..stop-1`` of ``total`` (vectorised)."""
    steps = np.arange(first, stop, dtype=np.float64)
    if total <= 1:
        return np.full(len(steps), float(end))
    return start * (end / start) ** (steps / (total - 1))
