"""Peer detectors to compare the SOM with: scikit-learn's always, PyOD's when installed.

Each :class:`Baseline` is one function ``fit_score(X_fit, X_test, seed) -> (fit_scores,
test_scores)``: it fits on ``X_fit`` and returns anomaly scores (**higher = more anomalous**)
of the rows it was fitted on (for the threshold) and of ``X_test``. Inputs are already
transformed and standardised by :func:`txanomaly.evaluate.evaluate`.

>>> sorted(BASELINES)[:3]
['copod', 'ecod', 'hbos']
>>> "iforest" in default_baselines()
True
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from txanomaly.errors import TxAnomalyError

#: Neighbour-based baselines are fitted on at most this many (seeded, random) training rows:
#: their cost grows with train x test rows, and 20k rows keep a 200k-row evaluation to seconds.
MAX_FIT_ROWS = 20_000
#: Neighbours used by LOF (scikit-learn's default) and by the k-NN distance (PyOD's default).
LOF_NEIGHBOURS = 20
KNN_NEIGHBOURS = 5


@dataclass(frozen=True)
class Baseline:
    """A peer detector: ``fit_score(X_fit, X_test, seed) -> (fit_scores, test_scores)``.

    Both score arrays are anomaly scores (higher = more anomalous); ``subsample`` says whether
    it is fitted on at most :data:`MAX_FIT_ROWS` training rows.
    """

    name: str
    description: str
    fit_score: Callable[[np.ndarray, np.ndarray, int], tuple[np.ndarray, np.ndarray]]
    subsample: bool = False
    requires: str | None = None


def _iforest(X_fit: np.ndarray, X_test: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.ensemble import IsolationForest

    model = IsolationForest(random_state=seed).fit(X_fit)
    return -model.score_samples(X_fit), -model.score_samples(X_test)


def _lof(X_fit: np.ndarray, X_test: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.neighbors import LocalOutlierFactor

    model = LocalOutlierFactor(n_neighbors=LOF_NEIGHBOURS, novelty=True).fit(X_fit)
    return -model.negative_outlier_factor_, -model.score_samples(X_test)


def _knn(X_fit: np.ndarray, X_test: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.neighbors import NearestNeighbors

    k = min(KNN_NEIGHBOURS, len(X_fit) - 1)
    index = NearestNeighbors(n_neighbors=k + 1).fit(X_fit)
    fit_dist = index.kneighbors(X_fit)[0][:, k]  # column 0 is the row itself
    test_dist = index.kneighbors(X_test, n_neighbors=k)[0][:, k - 1]
    return fit_dist, test_dist


def _pyod(module: str, cls: str) -> Callable[[np.ndarray, np.ndarray, int],
                                              tuple[np.ndarray, np.ndarray]]:
    def fit_score(X_fit: np.ndarray, X_test: np.ndarray, seed: int
                  ) -> tuple[np.ndarray, np.ndarray]:
        model = getattr(importlib.import_module(module), cls)().fit(X_fit)
        return np.asarray(model.decision_scores_), np.asarray(model.decision_function(X_test))

    return fit_score


BASELINES: dict[str, Baseline] = {b.name: b for b in (
    Baseline("iforest", "scikit-learn IsolationForest (100 trees)", _iforest),
    Baseline("lof", f"scikit-learn LocalOutlierFactor (novelty, {LOF_NEIGHBOURS} neighbours)",
             _lof, subsample=True),
    Baseline("knn", f"distance to the {KNN_NEIGHBOURS}th nearest training row", _knn,
             subsample=True),
    Baseline("ecod", "PyOD ECOD (empirical-CDF outlier detection)",
             _pyod("pyod.models.ecod", "ECOD"), requires="pyod"),
    Baseline("copod", "PyOD COPOD (copula-based)", _pyod("pyod.models.copod", "COPOD"),
             requires="pyod"),
    Baseline("hbos", "PyOD HBOS (histogram-based)", _pyod("pyod.models.hbos", "HBOS"),
             requires="pyod"),
    Baseline("pca", "PyOD PCA (reconstruction error)", _pyod("pyod.models.pca", "PCA"),
             requires="pyod"),
)}


def installed(module: str | None) -> bool:
    """Whether ``module`` can be imported (``None``: nothing needed)."""
    if module is None:
        return True
    try:
        importlib.import_module(module)
    except ImportError:
        return False
    return True


def default_baselines() -> tuple[str, ...]:
    """scikit-learn's three always; ECOD too when PyOD is installed."""
    return ("iforest", "lof", "knn") + (("ecod",) if installed("pyod") else ())


def check_baselines(names: Sequence[str]) -> list[Baseline]:
    """Look baselines up by name; unknown or not-installed ones raise a clear error."""
    out = []
    for name in names:
        if name not in BASELINES:
            raise TxAnomalyError(f"unknown baseline {name!r}; expected some of "
                                 f"{', '.join(BASELINES)}")
        base = BASELINES[name]
        if not installed(base.requires):
            raise TxAnomalyError(f"baseline {name!r} needs {base.requires}, which is not "
                                 "installed: pip install 'txanomaly[peers]'")
        out.append(base)
    return out


__all__ = ["BASELINES", "MAX_FIT_ROWS", "Baseline", "check_baselines", "default_baselines",
           "installed"]
