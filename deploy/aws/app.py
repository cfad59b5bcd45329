#!/usr/bin/env python3
"""The txanomaly CDK app (docs/deploy-aws.md): ``cdk deploy -c model_dir=... -c history=...``.

Run from this folder (cdk.json says how); the image is built from the repository's Dockerfile.
"""

from __future__ import annotations

import os
from pathlib import Path

import aws_cdk as cdk

from txanomaly.deploy.aws import TxAnomalyStack, add_checks
from txanomaly.deploy.aws_config import DeployConfig

REPO_ROOT = Path(__file__).resolve().parents[2]


def main() -> None:
    app = cdk.App()
    config = DeployConfig.from_context(app.node.try_get_context)
    name = app.node.try_get_context("stack_name") or "TxAnomaly"
    # The account and region come from the caller's AWS profile, never from this file.
    env = cdk.Environment(account=os.environ.get("CDK_DEFAULT_ACCOUNT"),
                          region=os.environ.get("CDK_DEFAULT_REGION"))
    TxAnomalyStack(app, name, config=config, repo_root=REPO_ROOT, env=env,
                   description="txanomaly: API Gateway -> Lambda -> SageMaker endpoint")
    add_checks(app)
    app.synth()


if __name__ == "__main__":
    main()
