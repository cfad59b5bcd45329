"""Per-feature scalers, written once: the detector, evaluation and the peers all use these.

A scaler is a ``(center, scale)`` pair of per-column arrays fitted on training rows; a row is
scaled as ``(x - center) / scale``.

>>> X = np.array([[1.0, 5.0], [3.0, 5.0]])
>>> center, scale = fit_scaler(X, "standard")
>>> center.tolist(), scale.tolist()
([2.0, 5.0], [1.0, 1.0])
>>> apply_scaler(X, center, scale).tolist()
[[-1.0, 0.0], [1.0, 0.0]]
"""

from __future__ import annotations

import numpy as np

#: ``standard``: mean and (population) standard deviation; ``robust``: median and
#: interquartile range (the standard deviation where the IQR is 0); ``none``: identity.
SCALERS = ("standard", "robust", "none")


def fit_scaler(X: np.ndarray, scaling: str) -> tuple[np.ndarray, np.ndarray]:
    """``(center, scale)`` per column; a zero spread becomes 1 so constants stay finite."""
    if scaling not in SCALERS:
        raise ValueError(f"scaling must be one of {SCALERS}, got {scaling!r}")
    d = X.shape[1]
    if scaling == "none":
        return np.zeros(d), np.ones(d)
    if scaling == "robust":
        q25, center, q75 = np.quantile(X, [0.25, 0.5, 0.75], axis=0)
        scale = q75 - q25
        fallback = X.std(axis=0)
        scale = np.where(scale > 0, scale, fallback)
    else:
        center, scale = mean_std(X)
    return np.asarray(center, dtype=np.float64), np.where(scale > 0, scale, 1.0)


def apply_scaler(X: np.ndarray, center: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """``(X - center) / scale`` in float64."""
    return (np.asarray(X, dtype=np.float64) - center) / scale


def mean_std(X: np.ndarray, chunk: int = 262_144) -> tuple[np.ndarray, np.ndarray]:
    """Column mean and (population) std in float64, chunk by chunk: no full-size temporary."""
    total = np.zeros(X.shape[1])
    for start in range(0, len(X), chunk):
        total += X[start:start + chunk].sum(axis=0, dtype=np.float64)
    mean = total / len(X)
    squares = np.zeros(X.shape[1])
    for start in range(0, len(X), chunk):
        squares += ((X[start:start + chunk] - mean) ** 2).sum(axis=0)
    return mean, np.sqrt(squares / len(X))


__all__ = ["SCALERS", "apply_scaler", "fit_scaler", "mean_std"]
