"""report --data and evaluate on inputs above --max-rows: a uniform sample, read in chunks,
whose features come from the whole input's history."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from labelled_workdir import labelled_workdir
from txanomaly.cli import app
from txanomaly.cli._common import Output
from txanomaly.cli.analysis import read_sample
from txanomaly.features.batch import feature_matrix
from txanomaly.features.spec import get_feature_set
from txanomaly.io import load_transactions

runner = CliRunner()


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return labelled_workdir(tmp_path_factory.mktemp("large"), epochs=3)


def test_a_sample_is_uniform_in_input_order_with_the_whole_history_features(workdir):
    fs = get_feature_set("standard")
    whole = load_transactions(workdir / "tx.parquet").frame
    X = feature_matrix(whole, fs)
    out = Output(quiet=True)
    everything = read_sample(workdir / "tx.parquet", workdir / "o.html", fs, None, out, 0, 0)
    assert everything.valid == 3000
    assert everything.frame["transaction_id"].equals(whole["transaction_id"])
    assert np.array_equal(everything.X, X)
    sample = read_sample(workdir / "tx.parquet", workdir / "o.html", fs, None, out, 400, 7)
    assert sample.valid == 3000 and sample.frame.height == 400 and len(sample.X) == 400
    rows = {tid: i for i, tid in enumerate(whole["transaction_id"].to_list())}
    where = np.array([rows[t] for t in sample.frame["transaction_id"].to_list()])
    assert (np.diff(where) > 0).all()  # input order, no repeats
    assert np.array_equal(sample.X, X[where])  # features from the whole history
    assert 800 < where.mean() < 2200  # spread over the file, not its start
    again = read_sample(workdir / "tx.parquet", workdir / "o.html", fs, None, out, 400, 7)
    assert again.frame.equals(sample.frame)


def test_report_and_evaluate_say_they_used_a_sample(workdir):
    result = runner.invoke(app, ["report", "--model", str(workdir / "model"), "--data",
                                 str(workdir / "tx.parquet"), "-o", str(workdir / "r.html"),
                                 "--max-rows", "500"])
    assert result.exit_code == 0, result.output
    assert "500 transactions (a uniform sample of the 3,000 valid)" in result.output
    result = runner.invoke(app, ["evaluate", str(workdir / "tx.parquet"), "--labels",
                                 str(workdir / "tx.labels.csv"), "--baselines", "none",
                                 "--map", "3x3", "--epochs", "2", "--max-rows", "1000",
                                 "--json", "-q"])
    assert result.exit_code == 0, result.output
    setup = json.loads(result.stdout)["setup"]
    assert setup["train_rows"] + setup["test_rows"] == 1000
