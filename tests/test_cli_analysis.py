"""``txanomaly report / evaluate / tune / demo`` through Typer's CLI runner, on small data."""

from __future__ import annotations

import base64
import json
import re

import polars as pl
import pytest
from typer.testing import CliRunner

from labelled_workdir import labelled_workdir
from txanomaly import synth
from txanomaly.cli import app

PNG = b"\x89PNG\r\n\x1a\n"
runner = CliRunner()


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """3,000 labelled transactions, their labels and a small model trained on them."""
    return labelled_workdir(tmp_path_factory.mktemp("analysis"), epochs=5)


def run(*args: str):
    return runner.invoke(app, [str(a) for a in args])


# --------------------------------------------------------------------------- evaluate
def test_evaluate_prints_a_table_writes_json_and_draws_pr_curves(workdir):
    out, plot = workdir / "metrics.json", workdir / "pr.png"
    result = run("evaluate", workdir / "tx.parquet", "--labels", workdir / "tx.labels.csv",
                 "--baselines", "iforest,knn", "--map", "3x3", "--epochs", "3",
                 "-o", out, "--plot", plot)
    assert result.exit_code == 0, result.output
    assert "ROC-AUC" in result.output and "iforest" in result.output
    assert "recall per anomaly kind" in result.output
    metrics = json.loads(out.read_text())
    assert list(metrics["detectors"]) == ["som", "iforest", "knn"]
    assert metrics["setup"]["test_rows"] == 1_200
    assert set(metrics["detectors"]["som"]["by_kind"]) <= set(synth.ANOMALY_KINDS)
    assert plot.read_bytes().startswith(PNG)


def test_evaluate_json_mode_prints_only_json_on_stdout(workdir):
    result = run("evaluate", workdir / "tx.parquet", "--labels", workdir / "tx.labels.csv",
                 "--model", workdir / "model", "--baselines", "none", "--json", "--quiet")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["setup"]["model"] == "given"
    assert data["setup"]["feature_set"] == "seed"  # the model's, not the default
    assert list(data["detectors"]) == ["som"]


def test_evaluate_unknown_baseline_is_a_usage_error(workdir):
    result = run("evaluate", workdir / "tx.parquet", "--labels", workdir / "tx.labels.csv",
                 "--baselines", "iforest,magic")
    assert result.exit_code == 2
    assert "magic" in result.output


def test_evaluate_missing_labels_file_exits_1(workdir):
    result = run("evaluate", workdir / "tx.parquet", "--labels", workdir / "nope.csv")
    assert result.exit_code == 1
    assert "nope.csv" in result.output


def test_evaluate_without_pyod_names_the_peers_extra_with_its_brackets(workdir, monkeypatch):
    """Regression: Rich read ``[peers]`` as markup; the hint said ``pip install 'txanomaly'``."""
    from txanomaly import baselines

    monkeypatch.setattr(baselines, "installed", lambda module: module is None)
    result = run("evaluate", workdir / "tx.parquet", "--labels", workdir / "tx.labels.csv",
                 "--baselines", "ecod", "--epochs", "1")
    assert result.exit_code == 1
    assert "pip install 'txanomaly[peers]'" in result.output


def test_evaluate_bad_map_is_a_usage_error(workdir):
    result = run("evaluate", workdir / "tx.parquet", "--labels", workdir / "tx.labels.csv",
                 "--map", "ten")
    assert result.exit_code == 2


# --------------------------------------------------------------------------- tune
def test_tune_writes_table_and_plot_and_recommends(workdir):
    table, plot = workdir / "tune.csv", workdir / "tune.png"
    result = run("tune", workdir / "tx.parquet", "--labels", workdir / "tx.labels.csv",
                 "--maps", "2x2,4x4", "--epochs", "3", "-f", "seed", "-o", table, "--plot", plot)
    assert result.exit_code == 0, result.output
    assert "recommended:" in result.output and "PR-AUC" in result.output
    rows = pl.read_csv(table)
    assert rows["map_size"].to_list() == ["2x2", "4x4"]
    assert rows["recommended"].sum() == 1
    assert plot.read_bytes().startswith(PNG)


def test_tune_without_labels_decides_by_silhouette_in_json(workdir):
    result = run("tune", workdir / "tx.parquet", "--maps", "2x2,3x3", "--epochs", "2",
                 "-f", "seed", "-o", workdir / "t.json", "--plot", workdir / "t.png", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["recommendation"]["metric"] == "silhouette"
    assert data["candidates"][0]["pr_auc"] is None


def test_tune_bad_maps_is_a_usage_error(workdir):
    result = run("tune", workdir / "tx.parquet", "--maps", "10by10")
    assert result.exit_code == 2


# --------------------------------------------------------------------------- report
def test_report_is_self_contained_html_with_pngs(workdir):
    out = workdir / "report.html"
    result = run("report", "--model", workdir / "model", "--data", workdir / "tx.parquet",
                 "-o", out, "--top", "10")
    assert result.exit_code == 0, result.output
    text = out.read_text()
    images = re.findall(r"src='data:image/png;base64,([A-Za-z0-9+/=]+)'", text)
    assert len(images) == 6
    assert all(base64.b64decode(b).startswith(PNG) for b in images)
    assert "Top anomalies" in text and text.count("<tr><td>") >= 10


def test_report_with_labels_shows_each_top_anomalys_label(workdir):
    out = workdir / "labelled.html"
    result = run("report", "--model", workdir / "model", "--data", workdir / "tx.parquet",
                 "--labels", workdir / "tx.labels.csv", "-o", out, "--top", "10")
    assert result.exit_code == 0, result.output
    text = out.read_text()
    assert "<th>label</th>" in text
    assert re.search(r"<td>(normal|anomaly|[a-z_]+)</td><td><span title=", text)


def test_report_labels_without_data_is_a_usage_error(workdir):
    result = run("report", "--model", workdir / "model", "--labels",
                 workdir / "tx.labels.csv", "-o", workdir / "x.html")
    assert result.exit_code == 2
    assert "--labels needs --data" in result.output


def test_report_on_a_missing_model_exits_1(workdir):
    result = run("report", "--model", workdir / "no-model", "-o", workdir / "r.html")
    assert result.exit_code == 1
    assert "no-model" in result.output


# --------------------------------------------------------------------------- demo
def test_demo_runs_end_to_end_and_prints_where_the_report_is(tmp_path):
    target = tmp_path / "demo"
    result = run("demo", "--dir", target, "-n", "3000", "--baselines", "iforest", "--top", "3",
                 "-f", "seed")
    assert result.exit_code == 0, result.output
    for name in ("transactions.parquet", "labels.csv", "model/model.json", "scores.parquet",
                 "metrics.json", "pr_curves.png", "report.html"):
        assert (target / name).exists(), name
    assert str(target / "report.html") in result.output
    assert "top 3 anomalies" in result.output
    assert " = " in result.output and "typical" in result.output  # reasons
    kinds = "|".join(("normal", *synth.ANOMALY_KINDS))
    assert re.search(rf"\[({kinds})\]", result.output)  # the synthetic ground truth
    scores = pl.read_parquet(target / "scores.parquet")
    assert scores.height == 3_000 and set(scores["split"].unique()) == {"train", "test"}
    assert {"bmu", "reason_1", "reason_3_prototype"} <= set(scores.columns)  # as `score` writes


def test_demo_json_summary(tmp_path):
    result = run("demo", "--dir", tmp_path / "d", "-n", "2000", "--baselines", "none", "-f", "seed",
                 "--json", "-q")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["rows"] == 2_000 and data["top_anomalies"]
    assert set(data["seconds"]) == {"synthesise", "features", "train", "score", "evaluate",
                                    "report"}


@pytest.mark.parametrize("command", ["report", "evaluate", "tune", "demo"])
def test_every_command_help_shows_an_example(command):
    result = run(command, "--help")
    assert result.exit_code == 0
    assert "Example" in result.output


def test_evaluate_refuses_a_feature_set_other_than_the_models(workdir):
    result = run("evaluate", workdir / "tx.parquet", "--labels", workdir / "tx.labels.csv",
                 "--model", workdir / "model", "-f", "standard")
    assert result.exit_code == 2
    assert "seed" in result.output


def test_report_with_only_rejected_records_still_writes_the_map(workdir):
    bad = workdir / "bad.jsonl"
    bad.write_text('{"transactionId": "x", "timestamp": "not a time"}\n')
    out = workdir / "empty.html"
    result = run("report", "--model", workdir / "model", "--data", bad, "-o", out)
    assert result.exit_code == 0, result.output
    assert "1 rejected" in result.output
    assert "U-matrix" in out.read_text() and "--data INPUT" in out.read_text()
