"""The detector on a CUDA GPU agrees with the CPU (skipped where no GPU is present).

These run on a machine with a GPU (the project's device checks); CI machines have none, where
``tests/test_detector.py`` checks that asking for CUDA is a clear error instead.

What is compared, and how close it must be: the map is trained in float32 on both devices,
and a GPU sums the augmented rows in another order than the CPU (atomic adds in the scatter),
so prototypes differ by float32 rounding, which grows a little over the epochs. The prototypes
must agree to 1e-3 (the inputs are standardised: units of one standard deviation); the scores
to 1e-3 relative on at least 99.9 % of the rows (a row whose two nearest prototypes are nearly
tied may take the other one on the other device), the flags on 99.9 % and the top 1 % on 99 %.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from txanomaly.detector import AnomalyDetector
from txanomaly.features.batch import feature_matrix
from txanomaly.pipeline import TransactionModel
from txanomaly.synth import generate

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU here")


def _mixture(n: int = 20_000, d: int = 8, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 3, (5, d))
    X = rng.standard_normal((n, d)) + centres[rng.integers(0, 5, n)]
    X[: n // 100] += rng.normal(0, 8, (n // 100, d))  # a few far rows
    return X


def _agree(cpu: np.ndarray, gpu: np.ndarray, threshold: float) -> None:
    """Scores equal to float32 rounding on all but a few rows; the same flags and top 1 %."""
    close = np.isclose(gpu, cpu, rtol=1e-3, atol=1e-4)
    # A row whose two nearest prototypes are nearly tied may take the other one on the other
    # device (the winner is exact to about 1e-5 relative in the squared distance, and the
    # prototypes differ by float32 summation order): its score then differs.
    assert close.mean() >= 0.999, f"{(~close).sum()} of {len(cpu)} scores differ"
    assert ((gpu > threshold) == (cpu > threshold)).mean() >= 0.999
    k = max(1, len(cpu) // 100)
    top_cpu, top_gpu = set(np.argsort(-cpu)[:k]), set(np.argsort(-gpu)[:k])
    assert len(top_cpu & top_gpu) >= 0.99 * k


@pytest.mark.parametrize("algorithm", ["batch", "online", "seed"])
def test_cuda_detector_matches_the_cpu(algorithm):
    X = _mixture(4_000 if algorithm != "batch" else 20_000)
    epochs = 20 if algorithm == "batch" else 2
    cpu = AnomalyDetector(algorithm=algorithm, epochs=epochs, device="cpu").fit(X)
    gpu = AnomalyDetector(algorithm=algorithm, epochs=epochs, device="cuda").fit(X)
    assert gpu.som_.weights.device.type == "cuda"
    np.testing.assert_allclose(gpu.som_.weights.cpu().numpy(), cpu.som_.weights.numpy(),
                               atol=1e-3)
    assert gpu.threshold_ == pytest.approx(cpu.threshold_, rel=1e-3)
    _agree(cpu.anomaly_score(X), gpu.anomaly_score(X), cpu.threshold_)


def test_cuda_directed_scores_and_explanations_match_the_cpu():
    X = _mixture()
    directions = [1, -1, 0, 1, 1, 0, -1, 1]
    cpu = AnomalyDetector(feature_directions=directions).fit(X)
    gpu = AnomalyDetector(feature_directions=directions, device="cuda").fit(X)
    _agree(cpu.anomaly_score(X), gpu.anomaly_score(X), cpu.threshold_)
    e_cpu, e_gpu = cpu.explain(X[:500], top=2), gpu.explain(X[:500], top=2)
    np.testing.assert_allclose(e_gpu.anomaly_score, e_cpu.anomaly_score, rtol=1e-3, atol=1e-4)
    np.testing.assert_array_equal(e_gpu.top_features()[:, 0], e_cpu.top_features()[:, 0])


def test_a_model_trained_on_the_gpu_loads_and_scores_on_the_cpu(tmp_path):
    data = generate(20_000, users=300, days=10, seed=3)
    X = feature_matrix(data.transactions, "standard")
    model = TransactionModel("standard", AnomalyDetector(device="cuda")).fit(X[:15_000])
    model.save(tmp_path / "model")
    on_cpu = TransactionModel.load(tmp_path / "model", device="cpu")
    on_gpu = TransactionModel.load(tmp_path / "model", device="cuda")
    s_cpu, s_gpu = on_cpu.anomaly_score(X), on_gpu.anomaly_score(X)
    # The same prototypes on both devices: only the distance arithmetic differs.
    np.testing.assert_allclose(s_gpu, s_cpu, rtol=1e-4, atol=1e-5)
    assert on_cpu.detector_.threshold_ == model.detector_.threshold_
