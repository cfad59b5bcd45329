"""Feature sets in JSON and TOML files: round trips, errors that name the line and the field,
and ``--feature-set PATH`` through the CLI into the model, ``score`` and the service."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import polars as pl
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from txanomaly.artifact import load
from txanomaly.cli import app
from txanomaly.errors import TxAnomalyError
from txanomaly.features import SEED, STANDARD, Feature, FeatureSet
from txanomaly.features.files import (
    FeatureSetFileError,
    dump_feature_set,
    format_window,
    load_feature_set,
    parse_feature_set,
    parse_window,
    resolve_feature_set,
)
from txanomaly.features.spec import DAY_MS, HOUR_MS
from txanomaly.service import Settings, create_app

runner = CliRunner()


# --------------------------------------------------------------------------- round trips
@pytest.mark.parametrize("fs", [SEED, STANDARD], ids=lambda fs: fs.name)
@pytest.mark.parametrize("suffix", [".json", ".toml"])
def test_built_in_sets_round_trip_through_files(fs: FeatureSet, suffix: str, tmp_path: Path):
    path = tmp_path / f"set{suffix}"
    path.write_text(dump_feature_set(fs, suffix[1:]))  # type: ignore[arg-type]
    loaded = load_feature_set(path)
    assert loaded == fs
    assert loaded.to_dict() == fs.to_dict()  # what the model file stores


def test_every_feature_field_is_accepted_by_its_own_name():
    """A file may spell out every field of ``Feature`` (window_ms included, defaults too):
    the allowed fields are the dataclass's, so a field added to ``Feature`` works at once."""
    features = [{k: v for k, v in dataclasses.asdict(f).items() if v is not None}
                for f in STANDARD.features]
    document = {**{k: v for k, v in STANDARD.to_dict().items() if k != "features"},
                "features": features}
    assert parse_feature_set(json.dumps(document), "json") == STANDARD


@pytest.mark.parametrize("text, ms", [("15m", 15 * 60_000), ("1h", HOUR_MS), ("24h", DAY_MS),
                                      ("30d", 30 * DAY_MS), ("90s", 90_000), ("250ms", 250)])
def test_readable_windows(text: str, ms: int):
    assert parse_window(text) == ms
    assert parse_window(format_window(ms)) == ms


def test_window_forms_give_the_same_feature():
    head = 'name = "w"\n[[features]]\nname = "c"\nop = "count"\nkey = "origin"\n'
    by_name = parse_feature_set(head + 'window = "24h"\n', "toml")
    by_ms = parse_feature_set(head + f"window_ms = {DAY_MS}\n", "toml")
    assert by_name == by_ms and by_name.features[0].window_ms == DAY_MS
    everything = parse_feature_set(head + 'window = "all"\n', "toml")
    assert everything == parse_feature_set(head, "toml")
    assert everything.features[0].window_ms is None
    as_json = parse_feature_set(json.dumps({"name": "w", "features": [
        {"name": "c", "op": "count", "key": "origin", "window": None}]}), "json")
    assert as_json == everything


def test_optional_set_fields_and_transforms_are_read():
    fs = parse_feature_set('''
name = "mine"
description = "two features"
version = 3
scaling = "robust"

[[features]]
name = "amount"
op = "amount"
transform = "log1p"
clip = [0, 12.5]
weight = 2

[[features]]
name = "z"
op = "log_amount_zscore"
key = "origin"
''', "toml")
    assert fs == FeatureSet("mine", (
        Feature("amount", "amount", transform="log1p", clip=(0.0, 12.5), weight=2.0),
        Feature("z", "log_amount_zscore", "origin")), description="two features", version=3,
        scaling="robust")


# --------------------------------------------------------------------------- errors
TOML = '''# my feature set
name = "mine"
description = """
[[features]] in a string is not a table
"""
scaling = "standard"

[[features]]
name = "amount"
op = "amount"
transform = "log1p"

[[features]]
name = "origin_count_1h"
op = "count"
key = "origin"
window = "1h"
weight = 1.5
'''
# line numbers in TOML:       [[features]] 8 and 13; op 15, key 16, window 17, weight 18

JSON = '''{
  "name": "mine",
  "scaling": "standard",
  "features": [
    {"name": "amount", "op": "amount", "transform": "log1p"},
    {
      "name": "origin_count_1h",
      "op": "count",
      "key": "origin",
      "window": "1h",
      "weight": 1.5
    }
  ]
}
'''
# line numbers in JSON: features 4; second feature 6, op 8, key 9, window 10, weight 11


def test_the_examples_are_valid():
    toml, as_json = parse_feature_set(TOML, "toml"), parse_feature_set(JSON, "json")
    assert toml.names == as_json.names == ["amount", "origin_count_1h"]
    assert toml.features == as_json.features


def _error(text: str, fmt: str, name: str) -> FeatureSetFileError:
    with pytest.raises(FeatureSetFileError) as caught:
        parse_feature_set(text, fmt, name)  # type: ignore[arg-type]
    return caught.value


ONE = "feature 'origin_count_1h'"


@pytest.mark.parametrize("old, new, message", [
    ('window = "1h"', 'windw = "1h"',
     f"f.toml:17: {ONE}: field 'windw': unknown field; did you mean 'window'?"),
    ("weight = 1.5", 'weight = "heavy"',
     f"f.toml:18: {ONE}: field 'weight': expected a number, got 'heavy' (a string)"),
    ("weight = 1.5", "weight = 0",
     f"f.toml:18: {ONE}: field 'weight': weight must be a number > 0"),
    ('op = "count"', 'op = "cont"',
     f"f.toml:15: {ONE}: field 'op': unknown op 'cont'; expected one of ['amount', 'count', "
     "'cross_border', 'currency_mismatch', 'day_cos', 'day_sin', 'hour_cos', "
     "'hour_deviation', 'hour_sin', 'is_first_pair', 'log_amount', 'log_amount_to_mean', "
     "'log_amount_zscore', 'log_seconds_since_prev', 'mean_diff']; did you mean 'count'?"),
    ('key = "origin"', 'key = "orign"',
     f"f.toml:16: {ONE}: field 'key': key must be one of ('origin', 'destination', 'pair'); "
     "did you mean 'origin'?"),
    ('key = "origin"', "",
     f"f.toml:15: {ONE}: field 'op': op 'count' needs a key"),
    ('window = "1h"', 'window = "1 hour"',
     f"f.toml:17: {ONE}: field 'window': window '1 hour' is not a number and a unit (ms, s, "
     "m, h, d), e.g. '15m', '1h', '30d'"),
    ('window = "1h"', 'window = "1h"\nwindow_ms = 3600000',
     f"f.toml:17: {ONE}: field 'window': give window or window_ms, not both"),
    ('transform = "log1p"', 'transform = "log"',
     "f.toml:11: feature 'amount': field 'transform': transform must be one of ('none', "
     "'log1p', 'signed_log1p', 'scaled_signed_log1p'); did you mean "
     "'log1p'?"),
    ('name = "origin_count_1h"', 'name = "amount"',
     "f.toml:14: feature 'amount': field 'name': the same name as feature #1 (line 8); every "
     "feature needs its own name"),
    ('name = "origin_count_1h"\n', "",
     "f.toml:13: feature #2: field 'name': missing (every feature needs one)"),
    ('scaling = "standard"', 'scaling = "robst"',
     "f.toml:6: field 'scaling': scaling must be one of ('standard', 'robust', 'none'); did "
     "you mean 'robust'?"),
    ('scaling = "standard"', 'scalng = "robust"',
     "f.toml:6: field 'scalng': unknown field; did you mean 'scaling'?"),
    ('name = "mine"', "version = 2",
     "f.toml:1: field 'name': missing (every feature set needs one)"),
])
def test_toml_errors_name_the_line_and_the_field(old: str, new: str, message: str):
    assert old in TOML
    error = _error(TOML.replace(old, new, 1), "toml", "f.toml")
    assert str(error) == message
    assert isinstance(error, TxAnomalyError)  # the CLI's exit code 1 and one line


def test_a_file_the_parser_refuses_names_its_line_and_column():
    """The parser's own words follow (they vary with the Python version)."""
    toml = _error(TOML.replace("weight = 1.5", "weight = 1.5 +"), "toml", "f.toml")
    assert str(toml).startswith("f.toml:18:14: not valid TOML: ")
    assert (toml.line, toml.column) == (18, 14)
    as_json = _error(JSON.replace('"weight": 1.5\n', '"weight": 1.5,\n'), "json", "f.json")
    assert str(as_json).startswith("f.json:12:5: not valid JSON: ")
    assert (as_json.line, as_json.column) == (12, 5)


def test_toml_error_fields_are_attributes():
    error = _error(TOML.replace("window =", "windw ="), "toml", "f.toml")
    assert (error.path, error.line, error.feature, error.field) == (
        "f.toml", 17, "'origin_count_1h'", "windw")


@pytest.mark.parametrize("text, message", [
    ('name = "mine"\nfeatures = []\n',
     "f.toml:2: field 'features': empty: declare at least one feature"),
    ('name = "mine"\n',
     "f.toml:1: field 'features': missing: declare at least one feature ([[features]] in "
     "TOML, \"features\": [...] in JSON)"),
])
def test_toml_without_features(text: str, message: str):
    assert str(_error(text, "toml", "f.toml")) == message


@pytest.mark.parametrize("old, new, message", [
    ('"window": "1h"', '"windw": "1h"',
     f"f.json:10: {ONE}: field 'windw': unknown field; did you mean 'window'?"),
    ('"weight": 1.5', '"weight": [1.5]',
     f"f.json:11: {ONE}: field 'weight': expected a number, got a list"),
    ('"key": "origin"', '"key": 7',
     f"f.json:9: {ONE}: field 'key': expected a string or null, got 7 (an integer)"),
    ('"op": "count"', '"op": "count", "op": "mean_diff"',
     f"f.json:8: {ONE}: field 'op': given twice"),
    ('"op": "amount",', '"op": "amount", "clip": [1, "x"],',
     "f.json:5: feature 'amount': field 'clip': expected a list of 2 numbers or null, "
     "got a list"),
    ('"name": "origin_count_1h"', '"name": "amount"',
     "f.json:7: feature 'amount': field 'name': the same name as feature #1 (line 5); every "
     "feature needs its own name"),
    ('"scaling": "standard"', '"scaling": "standard", "window": "1h"',
     "f.json:3: field 'window': unknown field"),
])
def test_json_errors_name_the_line_and_the_field(old: str, new: str, message: str):
    assert old in JSON
    assert str(_error(JSON.replace(old, new, 1), "json", "f.json")) == message


@pytest.mark.parametrize("text, message", [
    ('{"name": "x", "features": []}', "f.json:1: field 'features': empty: declare at least "
                                      "one feature"),
    ('{"name": "x",\n "features": {"a": 1}}', "f.json:2: field 'features': expected a list "
                                              "of features, got a table"),
    ('{"name": "x",\n "features": [\n 3]}', "f.json:3: feature #1: expected a table (an "
                                            "object) of fields, got 3 (an integer)"),
    ("[1]", "f.json:1: the file must hold a table (an object) with a name and features"),
])
def test_json_shape_errors(text: str, message: str):
    assert str(_error(text, "json", "f.json")) == message


def test_load_names_the_file(tmp_path: Path):
    path = tmp_path / "bad.toml"
    path.write_text(TOML.replace("window =", "windw ="))
    expected = "^" + re.escape(f"{path}:17: {ONE}: field 'windw'")
    with pytest.raises(FeatureSetFileError, match=expected):
        load_feature_set(path)
    with pytest.raises(TxAnomalyError, match=r"must end in \.json or \.toml"):
        load_feature_set(tmp_path / "set.yaml")
    with pytest.raises(TxAnomalyError, match="no such feature-set file"):
        load_feature_set(tmp_path / "missing.json")


def test_resolve_takes_a_name_or_a_path(tmp_path: Path):
    assert resolve_feature_set("seed") is SEED
    assert resolve_feature_set(STANDARD) is STANDARD
    path = tmp_path / "mine.json"
    path.write_text(JSON)
    assert resolve_feature_set(str(path)).names == ["amount", "origin_count_1h"]
    with pytest.raises(TxAnomalyError, match=re.escape(
            "unknown feature set 'standrd'; expected one of seed, standard or a .json or "
            ".toml file")):
        resolve_feature_set("standrd")


# --------------------------------------------------------------------------- the CLI
def test_show_writes_a_built_in_set_that_reads_back(tmp_path: Path):
    shown = runner.invoke(app, ["feature-set", "show", "standard", "--format", "toml"])
    assert shown.exit_code == 0, shown.output
    assert parse_feature_set(shown.stdout, "toml") == STANDARD
    out = tmp_path / "seed.json"
    written = runner.invoke(app, ["feature-set", "show", "seed", "-o", str(out)])
    assert written.exit_code == 0, written.output
    assert load_feature_set(out) == SEED
    wrong = runner.invoke(app, ["feature-set", "show", "seed", "--format", "yaml"])
    assert wrong.exit_code == 2


def test_check_reports_the_line_and_field(tmp_path: Path):
    good, bad = tmp_path / "good.toml", tmp_path / "bad.toml"
    good.write_text(TOML)
    bad.write_text(TOML.replace("window =", "windw ="))
    ok = runner.invoke(app, ["feature-set", "check", str(good)])
    assert ok.exit_code == 0, ok.output
    assert "feature set 'mine', 2 features" in ok.output
    assert "origin_count_1h: sender's transactions in the last 1 h" in ok.output
    failed = runner.invoke(app, ["feature-set", "check", str(bad)])
    assert failed.exit_code == 1
    assert f"bad.toml:17: {ONE}: field 'windw': unknown field; did you mean 'window'?" in (
        " ".join(failed.output.split()))


MY_SET = '''name = "my_velocity"
description = "amount, velocity and recency per sender"

[[features]]
name = "log_amount"
op = "log_amount"

[[features]]
name = "origin_count_1h"
op = "count"
key = "origin"
window = "1h"
transform = "log1p"

[[features]]
name = "origin_count_30d"
op = "count"
key = "origin"
window = "30d"
transform = "log1p"

[[features]]
name = "origin_zscore"
op = "log_amount_zscore"
key = "origin"
clip = [-10, 10]
weight = 1.5

[[features]]
name = "origin_gap"
op = "log_seconds_since_prev"
key = "origin"
'''


@pytest.fixture(scope="module")
def transactions(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("data") / "tx.jsonl"
    result = runner.invoke(app, ["synth", "-o", str(path), "-n", "1500", "--users", "60",
                                 "--days", "6", "--seed", "5", "-q"])
    assert result.exit_code == 0, result.output
    return path


def test_features_command_takes_a_file(transactions: Path, tmp_path: Path):
    spec = tmp_path / "mine.toml"
    spec.write_text(MY_SET)
    out = tmp_path / "features.parquet"
    result = runner.invoke(app, ["features", str(transactions), "-o", str(out),
                                 "--feature-set", str(spec), "-q"])
    assert result.exit_code == 0, result.output
    assert pl.read_parquet(out).columns == ["transaction_id", *load_feature_set(spec).names]


def test_train_with_a_file_then_score_and_serve_without_it(transactions: Path,
                                                           tmp_path: Path):
    spec = tmp_path / "mine.toml"
    spec.write_text(MY_SET)
    declared = load_feature_set(spec)
    model_dir = tmp_path / "model"
    trained = runner.invoke(app, ["train", str(transactions), "-o", str(model_dir), "--map",
                                  "4x4", "--epochs", "3", "--feature-set", str(spec), "-q"])
    assert trained.exit_code == 0, trained.output
    spec.unlink()  # scoring and serving use the set saved in the model

    saved = load(model_dir).feature_set
    assert saved == declared and saved is not None
    assert saved.to_dict() == declared.to_dict()
    assert saved.features[1].window_ms == HOUR_MS and saved.features[3].weight == 1.5

    scores = tmp_path / "scores.csv"
    scored = runner.invoke(app, ["score", str(transactions), "--model", str(model_dir), "-o",
                                 str(scores), "-q"])
    assert scored.exit_code == 0, scored.output
    table = pl.read_csv(scores)
    assert table.height == 1500
    assert set(table["reason_1"].drop_nulls().unique()) <= set(declared.names)

    settings = Settings(model_dir=model_dir, db_url=f"sqlite:///{tmp_path}/api.db",
                        allow_unauthenticated=True)
    with TestClient(create_app(settings)) as client:
        response = client.post("/v1/transactions", json={
            "transactionId": "t1", "timestamp": 1_700_000_000_000, "originUserId": "u1",
            "destinationUserId": "u2",
            "originAmountDetails": {"transactionAmount": 12.5, "transactionCurrency": "EUR"}})
    assert response.status_code == 200, response.text
    reasons = [r["feature"] for r in response.json()["reasons"]]
    assert reasons and set(reasons) <= set(declared.names)


def test_evaluate_takes_a_file(transactions: Path, tmp_path: Path):
    spec = tmp_path / "mine.json"
    spec.write_text(dump_feature_set(parse_feature_set(MY_SET, "toml"), "json"))
    labels = transactions.with_name("tx.labels.csv")
    result = runner.invoke(app, ["evaluate", str(transactions), "--labels", str(labels),
                                 "--feature-set", str(spec), "--baselines", "none", "--map",
                                 "3x3", "--epochs", "2", "--json", "-q"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["setup"]["feature_set"] == "my_velocity"
    assert summary["setup"]["features"] == load_feature_set(spec).names


def test_a_bad_file_stops_train_before_any_work(transactions: Path, tmp_path: Path):
    spec = tmp_path / "bad.toml"
    spec.write_text(MY_SET.replace('op = "count"', 'op = "cnt"', 1))
    result = runner.invoke(app, ["train", str(transactions), "-o", str(tmp_path / "m"),
                                 "--feature-set", str(spec)])
    assert result.exit_code == 1
    assert "bad.toml:10: feature 'origin_count_1h': field 'op': unknown op 'cnt'" in (
        " ".join(result.output.split()))
    assert not (tmp_path / "m").exists()


def _doc_examples() -> tuple[str, str]:
    doc = (Path(__file__).parents[1] / "docs" / "features.md").read_text()
    section = doc[doc.index("## Your own feature set in a file"):]
    toml = re.search(r"```toml\n(.*?)```", section, re.S)
    as_json = re.search(r"```json\n(.*?)```", section, re.S)
    assert toml is not None and as_json is not None
    return toml[1], as_json[1]


def test_the_docs_examples_declare_the_same_set_and_give_the_errors_shown():
    toml, as_json = _doc_examples()
    fs = parse_feature_set(toml, "toml")
    assert parse_feature_set(as_json, "json") == fs and len(fs.features) == 7
    error = _error(toml.replace('window = "1h"', 'windw = "1h"'), "toml", "my_features.toml")
    assert str(error) == ("my_features.toml:15: feature 'origin_count_1h': field 'windw': "
                          "unknown field; did you mean 'window'?")
    error = _error(toml.replace('name = "is_first_pair"', 'name = "log_amount"'), "toml",
                   "my_features.toml")
    assert str(error).startswith("my_features.toml:44: feature 'log_amount': field 'name': "
                                 "the same name as feature #1 (line 7)")
