"""``cdk synth`` of deploy/aws/app.py through the real CDK CLI (npm package ``aws-cdk`` on
this machine's Node.js; .ci/run installs it), then cfn-lint on the template it wrote and
cdk-nag's report (the app runs the AWS Solutions checks on every synth: an unsuppressed
finding makes the synth fail)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from service_fixtures import model_dir

__all__ = ["model_dir"]  # the fixture, imported for pytest

ROOT = Path(__file__).resolve().parents[1]
APP_DIR = ROOT / "deploy" / "aws"
QUIET = {"JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION": "20",
         "CDK_DISABLE_VERSION_CHECK": "1", "CDK_DISABLE_CLI_TELEMETRY": "true"}


def cdk_cli() -> str:
    found = shutil.which("cdk")
    if found:
        return found
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail("the CDK CLI is missing under CI=true: .ci/run installs it "
                    "(npm install -g aws-cdk@2)")
    pytest.skip("the CDK CLI is not installed: npm install -g aws-cdk@2")


def test_cdk_synth_then_cfn_lint_and_nag_clean(model_dir: Path, tmp_path: Path):
    out = tmp_path / "cdk.out"
    env = {**os.environ, **QUIET}
    result = subprocess.run(
        [cdk_cli(), "synth", "--app", f"{sys.executable} app.py", "--output", str(out),
         "--no-notices", "--quiet", "-c", f"model_dir={model_dir}", "-c", "history=rds",
         "-c", "allowed_origins=https://console.example.com"],
        cwd=APP_DIR, env=env, capture_output=True, text=True, timeout=400)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    template = out / "TxAnomaly.template.json"
    assert template.is_file()
    lint = subprocess.run([str(Path(sys.executable).parent / "cfn-lint"), str(template)],
                          capture_output=True, text=True, timeout=300)
    assert lint.returncode == 0, lint.stdout + lint.stderr
    report = (out / "AwsSolutions--TxAnomaly-NagReport.csv").read_text().splitlines()
    assert len(report) > 10 and not [r for r in report if '"Non-Compliant"' in r]
    # The image's build context as staged: only what .dockerignore lets through.
    (context,) = [p for p in out.iterdir() if p.is_dir() and (p / "Dockerfile").is_file()]
    assert sorted(p.name for p in context.iterdir()) == [
        ".dockerignore", "Dockerfile", "README.md", "pyproject.toml", "src"]
    assert not list(context.rglob("__pycache__")) and not list(context.rglob("*.egg-info"))


def test_the_app_refuses_an_unsaid_history_choice(model_dir: Path, tmp_path: Path):
    """Without ``-c history=...`` the app stops with the reason, before building anything."""
    env = {**os.environ, **QUIET, "CDK_OUTDIR": str(tmp_path),
           "CDK_CONTEXT_JSON": f'{{"model_dir": "{model_dir}"}}'}
    result = subprocess.run([sys.executable, "app.py"], cwd=APP_DIR, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode != 0
    assert "context 'history' is required" in result.stderr
