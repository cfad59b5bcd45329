"""``txanomaly features`` through a CLI runner."""

from __future__ import annotations

import json

import polars as pl
from typer.testing import CliRunner

from txanomaly.cli import app

runner = CliRunner()
TS = 1662358419786


def records() -> list[dict]:
    good = [{"transactionId": f"t{i}", "timestamp": TS + i * 60_000, "originUserId": "u",
             "destinationAmountDetails": {"transactionAmount": 10.0 * (i + 1)}}
            for i in range(4)]
    bad = {"transactionId": "bad", "timestamp": "soon",
           "destinationAmountDetails": {"transactionAmount": 1}}
    return [*good[:2], bad, *good[2:]]


def test_features_writes_rows_in_input_order_and_a_rejects_file(tmp_path):
    src = tmp_path / "tx.json"
    src.write_text(json.dumps(records()))
    out = tmp_path / "feat.parquet"
    result = runner.invoke(app, ["features", str(src), "-o", str(out), "--feature-set", "seed"])
    assert result.exit_code == 0, result.output
    assert "1 rejected" in result.output
    frame = pl.read_parquet(out)
    assert frame.get_column("transaction_id").to_list() == ["t0", "t1", "t2", "t3"]
    assert frame.get_column("origin_prefix_mean_diff").to_list() == [0.0, 5.0, 10.0, 15.0]
    rejects = (tmp_path / "feat.rejects.jsonl").read_text().splitlines()
    assert json.loads(rejects[0])["transactionId"] == "bad"


def test_features_json_summary_and_csv_output(tmp_path):
    src = tmp_path / "tx.jsonl"
    src.write_text("\n".join(json.dumps(r) for r in records()))
    out = tmp_path / "feat.csv"
    rej = tmp_path / "elsewhere" / "rej.jsonl"
    result = runner.invoke(app, ["features", str(src), "-o", str(out), "--rejects", str(rej),
                                 "--json", "--quiet"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["rows"] == 4 and summary["rejected"] == 1
    assert pl.read_csv(out).height == 4 and rej.exists()


def test_features_errors_exit_1_with_a_message(tmp_path):
    result = runner.invoke(app, ["features", str(tmp_path / "missing.json"), "-o",
                                 str(tmp_path / "f.parquet")])
    assert result.exit_code == 1 and "no such file" in result.output
    src = tmp_path / "tx.json"
    src.write_text(json.dumps(records()))
    result = runner.invoke(app, ["features", str(src), "-o", str(tmp_path / "f.parquet"),
                                 "-f", "nope"])
    assert result.exit_code == 1 and "unknown feature set" in result.output


def test_features_bad_output_extension_is_a_usage_error(tmp_path):
    src = tmp_path / "tx.json"
    src.write_text(json.dumps(records()))
    result = runner.invoke(app, ["features", str(src), "-o", str(tmp_path / "f.xlsx")])
    assert result.exit_code == 2


def test_help_shows_an_example_and_version():
    assert "Example" in runner.invoke(app, ["features", "--help"]).output
    assert runner.invoke(app, ["--version"]).output.startswith("txanomaly ")


def test_no_rejects_file_when_nothing_is_rejected_unless_asked(tmp_path):
    src = tmp_path / "tx.json"
    src.write_text(json.dumps([r for r in records() if r["transactionId"] != "bad"]))
    result = runner.invoke(app, ["features", str(src), "-o", str(tmp_path / "f.parquet")])
    assert result.exit_code == 0 and "0 rejected" in result.output
    assert not (tmp_path / "f.rejects.jsonl").exists()
    asked = tmp_path / "asked.jsonl"
    runner.invoke(app, ["features", str(src), "-o", str(tmp_path / "f.parquet"),
                        "--rejects", str(asked)])
    assert asked.exists() and asked.read_text() == ""


def test_the_features_command_loads_no_model_libraries():
    """``txanomaly features`` imports only its own module: no PyTorch, scikit-learn or
    matplotlib (seconds of start-up and hundreds of MB)."""
    import subprocess
    import sys

    code = ("import atexit, sys\n"
            "atexit.register(lambda: print(sorted(m for m in ('torch', 'sklearn', 'matplotlib')"
            " if m in sys.modules)))\n"
            "sys.argv = ['txanomaly', 'features', '--help']\n"
            "from txanomaly.cli import main\n"
            "main()\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=False)
    assert done.returncode == 0, done.stderr
    assert "--feature-set" in done.stdout
    assert done.stdout.strip().splitlines()[-1] == "[]"


def test_options_are_coerced_as_typer_does_without_loading_pydantic(tmp_path):
    """Typer coerces through Pydantic (a tenth of a second of start-up); the values it would
    return unchanged (text, an in-range default, nothing) skip it, the others still get its
    checks and messages."""
    import subprocess
    import sys

    src = tmp_path / "tx.jsonl"
    src.write_text("\n".join(json.dumps(r) for r in records()))
    code = ("import atexit, sys\n"
            "atexit.register(lambda: print('pydantic' in sys.modules))\n"
            f"sys.argv = ['txanomaly', 'features', {str(src)!r}, '-o', "
            f"{str(tmp_path / 'f.csv')!r}, '-f', 'seed', '--json']\n"
            "from txanomaly.cli import main\n"
            "main()\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "False"
    assert pl.read_csv(tmp_path / "f.csv").height == 4
    out = str(tmp_path / "g.csv")
    refused = runner.invoke(app, ["features", str(src), "-o", out, "--chunk-rows", "0"])
    assert refused.exit_code == 2 and "greater than or equal to 1" in refused.output
    by_env = runner.invoke(app, ["features", str(src), "-o", out, "--json"],
                           env={"TXANOMALY_CHUNK_ROWS": "2"})
    assert by_env.exit_code == 0, by_env.output
    assert json.loads(by_env.stdout)["rows"] == 4


def test_features_in_small_chunks_keep_input_order_even_when_the_input_is_not_in_time_order(
        tmp_path):
    """An input not in time order is sorted on disk, the features computed in time-ordered
    chunks, and the output rewritten in input order: the same table as one whole-table pass."""
    from txanomaly.features.batch import compute_features
    from txanomaly.io import load_transactions, write_table
    from txanomaly.synth import generate

    frame = generate(700, users=15, days=3, anomaly_rate=0.02, seed=6).transactions
    for name, table in (("sorted", frame),
                        ("shuffled", frame.sample(fraction=1.0, shuffle=True, seed=2))):
        src = write_table(table, tmp_path / f"{name}.parquet")
        want = compute_features(load_transactions(src).frame, "standard")
        for suffix in (".parquet", ".csv", ".jsonl", ".json"):
            out = tmp_path / f"features-{name}{suffix}"
            result = runner.invoke(app, ["features", str(src), "-o", str(out),
                                         "--chunk-rows", "64", "--json", "--quiet"])
            assert result.exit_code == 0, result.output
            assert json.loads(result.stdout)["sorted_by_time_first"] == (name == "shuffled")
            got = {".parquet": pl.read_parquet, ".csv": pl.read_csv, ".jsonl": pl.read_ndjson,
                   ".json": pl.read_json}[suffix](out)
            assert got.columns == want.columns and got.height == want.height
            assert got.get_column("transaction_id").to_list() == want.get_column(
                "transaction_id").to_list()
            if suffix == ".parquet":  # text formats round floats' last digits
                assert got.equals(want)


def test_features_of_an_input_with_no_valid_record_is_an_empty_table(tmp_path):
    src = tmp_path / "tx.csv"
    src.write_text("transaction_id,timestamp,destination_amount\nt1,soon,1\n")
    out = tmp_path / "f.parquet"
    result = runner.invoke(app, ["features", str(src), "-o", str(out), "-f", "seed"])
    assert result.exit_code == 0 and "1 rejected" in result.output
    assert pl.read_parquet(out).height == 0


def test_a_missing_or_unknown_input_is_refused_the_same_with_or_without_a_progress_bar(
        tmp_path):
    """The bar's total is counted only when a bar is drawn; the input is checked either way."""
    out = str(tmp_path / "f.parquet")
    for quiet in ([], ["--quiet"]):
        missing = runner.invoke(app, ["features", str(tmp_path / "none.csv"), "-o", out, *quiet])
        assert missing.exit_code == 1 and "none.csv: no such file" in missing.output
        unknown = runner.invoke(app, ["features", str(tmp_path / "tx.xyz"), "-o", out, *quiet])
        assert unknown.exit_code == 1 and "unknown extension '.xyz'" in unknown.output
