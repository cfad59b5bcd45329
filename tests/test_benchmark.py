"""The detection benchmark: its top-1 % metrics, and the script run end to end on small logs."""

from __future__ import annotations

import gzip
import importlib.util
import json
import shutil
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

from txanomaly.benchmark import precision_at_fraction, top_count, top_fraction_composition
from txanomaly.detector import AnomalyDetector
from txanomaly.errors import TxAnomalyError
from txanomaly.evaluate import prepare
from txanomaly.io import write_table
from txanomaly.pipeline import TransactionModel
from txanomaly.synth import generate, write_labels

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_detection.py"


def test_top_count_rounds_up_and_keeps_one_row() -> None:
    assert [top_count(n) for n in (0, 1, 99, 100, 101, 80_000)] == [0, 1, 1, 1, 2, 800]
    assert top_count(10, 0.25) == 3
    with pytest.raises(TxAnomalyError, match="fraction"):
        top_count(10, 0.0)


def test_precision_at_fraction_counts_the_top_rows_ties_by_row_order() -> None:
    y = np.array([0, 1, 1, 0, 0, 1, 0, 0, 0, 0])
    scores = np.array([5.0, 5.0, 1.0, 9.0, 0.0, 8.0, 0.0, 0.0, 0.0, 0.0])
    # top 3: rows 3 (9.0), 5 (8.0), then row 0 before row 1 on the tie at 5.0 -> 1 anomaly
    assert precision_at_fraction(y, scores, 0.3) == pytest.approx(1 / 3)
    # top 4 adds row 1 -> 2 of 4
    assert precision_at_fraction(y, scores, 0.4) == pytest.approx(0.5)
    assert np.isnan(precision_at_fraction(np.array([]), np.array([])))
    with pytest.raises(TxAnomalyError, match="shape"):
        precision_at_fraction(y, scores[:5])


def test_composition_groups_the_top_rows_by_leading_feature() -> None:
    y = np.array([1, 0, 1, 1, 0, 0, 1, 0])
    scores = np.array([8.0, 7.0, 6.0, 5.0, 4.0, 3.0, 2.0, 1.0])
    lead = np.array(["count", "amount", "amount", "count", "amount", "hour", "hour", "hour"])
    groups = top_fraction_composition(y, scores, lead, 0.75)  # top 6 rows
    assert [(g.feature, g.count, g.anomalies) for g in groups] == [
        ("amount", 3, 1), ("count", 2, 2), ("hour", 1, 0)]
    assert [g.precision for g in groups] == pytest.approx([1 / 3, 1.0, 0.0])
    assert groups[0].to_dict(6) == {"feature": "amount", "count": 3, "share": 0.5,
                                    "anomalies": 1, "precision": pytest.approx(1 / 3)}
    with pytest.raises(TxAnomalyError, match="one feature name per row"):
        top_fraction_composition(y, scores, lead[:3])


def test_composition_of_a_fitted_model_matches_a_hand_count() -> None:
    data = generate(3_000, users=60, days=10, anomaly_rate=0.03, seed=4)
    prepared = prepare(data.transactions, data.labels, "standard", 0.6)
    train, test = prepared.split.train, prepared.split.test
    model = TransactionModel("standard", AnomalyDetector(map_size="4x4", epochs=3))
    exp = model.fit(prepared.X[train]).explanation(prepared.X[test], top=1)
    leading = np.asarray(exp.feature_names)[exp.top_features()[:, 0]]
    y = prepared.y[test]
    groups = top_fraction_composition(y, exp.anomaly_score, leading, 0.05)

    k = top_count(len(test), 0.05)
    assert k == 60 and sum(g.count for g in groups) == k
    order = sorted(range(len(test)), key=lambda i: (-exp.anomaly_score[i], i))[:k]
    by_hand: dict[str, list[int]] = {}
    for i in order:
        by_hand.setdefault(str(leading[i]), []).append(int(y[i]))
    assert {g.feature: (g.count, g.anomalies) for g in groups} == {
        name: (len(v), sum(v)) for name, v in by_hand.items()}
    assert sum(g.anomalies for g in groups) / k == pytest.approx(
        precision_at_fraction(y, exp.anomaly_score, 0.05))


# --------------------------------------------------------------------------- the script
def _script(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_detection", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "bench_detection", module)  # dataclasses look it up
    monkeypatch.syspath_prepend(str(SCRIPT.parent))  # it imports bench_adbench beside it
    spec.loader.exec_module(module)
    return module


def test_bench_detection_quick_runs_p2p_and_a_gzipped_log(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    data = generate(6_000, users=120, days=20, anomaly_rate=0.02, seed=2)
    plain = write_table(data.transactions, tmp_path / "extra.json")
    with plain.open("rb") as src, gzip.open(tmp_path / "extra.json.gz", "wb") as dst:
        shutil.copyfileobj(src, dst)
    plain.unlink()
    labels = write_labels(data.labels, tmp_path / "extra-labels.csv")
    out_json, out_md = tmp_path / "r.json", tmp_path / "r.md"

    assert _script(monkeypatch).main([
        "--quick", "--only", "p2p,extra,sparkov", "--skip-adbench",
        "--rows", "6000", "--users", "120", "--map-seeds", "2",
        "--sparkov", str(tmp_path / "no-sparkov"),
        "--log", f"{tmp_path / 'extra.json.gz'}:{labels}",
        "--json", str(out_json), "--markdown", str(out_md)]) == 0

    printed = capsys.readouterr().out
    results = {r["name"]: r for r in json.loads(out_json.read_text())["results"]}
    assert list(results) == ["p2p", "extra"]
    extra = results["extra"]
    assert extra["rows"] == 6_000 and extra["train_rows"] == 3_600
    assert extra["test_anomalies"] == int(data.labels["is_anomaly"].to_numpy()[
        np.argsort(data.transactions["timestamp"].to_numpy(), kind="stable")[3_600:]].sum())
    assert list(extra["detectors"]) == ["txanomaly", "iforest", "ecod", "prototype",
                                        "raw amount", "origin z-score"]
    for res in results.values():
        assert res["top_1pct"] == 24
        assert sum(g["count"] for g in res["composition"]) == 24
        ours = res["detectors"]["txanomaly"]
        # the composition's hits are the product's top 1 %: its precision at 1 %
        assert sum(g["anomalies"] for g in res["composition"]) / 24 == pytest.approx(
            ours["precision_at_1pct"])
        assert 0.5 < ours["roc_auc"] <= 1.0
        assert set(ours["by_kind"]) <= set(data.anomaly_counts())
        spread = res["map_seeds"]  # the default seed first: the product's own figures
        assert spread["seeds"] == [0, 1] and len(spread["pr_auc"]) == 2
        assert spread["pr_auc"][0] == pytest.approx(ours["pr_auc"])
        assert spread["precision_at_1pct"][0] == pytest.approx(ours["precision_at_1pct"])
    markdown = out_md.read_text()
    for heading in ("## Summary", "### p2p", "### extra", "Recall per anomaly kind",
                    "leading feature", "txanomaly over map seeds 0-1: PR-AUC",
                    "over map seeds: mean [min-max]"):
        assert heading in markdown
    assert "sparkov: skipped" in printed and "| extra |" in printed
