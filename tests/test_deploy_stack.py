"""The AWS CDK stack, synthesized in process (once per history choice, for the module) and
checked with ``aws_cdk.assertions``: resources and their key properties, every IAM statement
exactly, the API key on every method, no wildcard CORS, the Lambda's runtime, handler and
environment, cdk-nag's AWS Solutions rules clean (or suppressed with a reason), and cfn-lint
on the templates."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")

import aws_cdk as cdk
from aws_cdk.assertions import Annotations, Match, Template

from service_fixtures import model_dir
from txanomaly.deploy.aws import TxAnomalyStack, add_checks, model_archive
from txanomaly.deploy.aws_config import (
    DeployConfig,
    DeployConfigError,
    container_environment,
)

__all__ = ["model_dir"]  # the fixture, imported for pytest

ROOT = Path(__file__).resolve().parents[1]
SECRET = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:txanomaly-db-AbCdEf"
ORIGIN = "https://console.example.com"
CONTEXTS = {
    "none": {"history": "none", "allowed_origins": ORIGIN, "max_batch": 250},
    "secret": {"history": "secret", "database_secret": SECRET, "db_schema": "scoring"},
    "rds": {"history": "rds", "log_retention": 90},
}


class Synth:
    """One synthesized stack: its template (JSON and assertions), nag annotations, outdir."""

    def __init__(self, stack: TxAnomalyStack, outdir: Path):
        self.stack, self.outdir = stack, outdir
        self.template = Template.from_stack(stack)
        self.json: dict[str, Any] = self.template.to_json()
        self.annotations = Annotations.from_stack(stack)

    def resources(self, kind: str) -> dict[str, dict[str, Any]]:
        return {k: v for k, v in self.json["Resources"].items() if v["Type"] == kind}

    def one(self, kind: str) -> tuple[str, dict[str, Any]]:
        (item,) = self.resources(kind).items()
        return item[0], item[1]["Properties"]

    def logical_id(self, kind: str, prefix: str) -> str:
        (found,) = [k for k in self.resources(kind) if k.startswith(prefix)]
        return found

    def role_statements(self, prefix: str) -> list[dict[str, Any]]:
        role = self.json["Resources"][self.logical_id("AWS::IAM::Role", prefix)]["Properties"]
        return [s for p in role.get("Policies", []) for s in p["PolicyDocument"]["Statement"]]


@pytest.fixture(scope="module")
def synths(model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Synth]:
    out = {}
    for name, context in CONTEXTS.items():
        outdir = tmp_path_factory.mktemp(f"cdk-{name}")
        app = cdk.App(outdir=str(outdir), context={"model_dir": str(model_dir), **context})
        config = DeployConfig.from_context(app.node.try_get_context)
        stack = TxAnomalyStack(app, "TxAnomaly", config=config, repo_root=ROOT)
        add_checks(app)
        out[name] = Synth(stack, outdir)
    return out


def arn_of(logical_id: str) -> dict[str, Any]:
    return {"Fn::GetAtt": [logical_id, "Arn"]}


ACCOUNT_S3 = "cdk-hnb659fds-assets-${AWS::AccountId}-${AWS::Region}"


def test_cdk_nag_finds_nothing_unsuppressed(synths):
    for name, synth in synths.items():
        for finder in (synth.annotations.find_error, synth.annotations.find_warning):
            found = finder("*", Match.any_value())
            assert found == [], (name, [(m.id, str(m.entry.data)[:200]) for m in found])
    report = (synths["rds"].outdir / "AwsSolutions--TxAnomaly-NagReport.csv").read_text()
    rows = [line for line in report.splitlines()[1:] if line]
    assert rows and not [r for r in rows if '"Non-Compliant"' in r]
    suppressed = [r for r in rows if '"Suppressed"' in r]
    assert suppressed and all(len(r.split('","')[3]) > 40 for r in suppressed)  # a reason


def test_cfn_lint_is_clean_on_the_other_templates(synths):
    """``none`` and ``secret``; the ``rds`` template is linted after the CLI's synth
    (tests/test_deploy_cdk_cli.py)."""
    paths = [str(synths[name].outdir / "TxAnomaly.template.json") for name in ("none", "secret")]
    out = subprocess.run([str(Path(sys.executable).parent / "cfn-lint"), *paths],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr


def test_forwarder_lambda_runtime_handler_environment(synths):
    synth = synths["none"]
    endpoint = synth.logical_id("AWS::SageMaker::Endpoint", "Endpoint")
    synth.template.has_resource_properties("AWS::Lambda::Function", {
        "Runtime": "python3.14", "Handler": "lambda_function.handler",
        "Architectures": ["arm64"], "Timeout": 29, "MemorySize": 256,
        "Role": arn_of(synth.logical_id("AWS::IAM::Role", "ForwarderRole")),
        "LoggingConfig": {"LogGroup": {"Ref": synth.logical_id("AWS::Logs::LogGroup",
                                                               "ForwarderLogs")}},
        "Environment": {"Variables": {
            "ENDPOINT_NAME": {"Fn::GetAtt": [endpoint, "EndpointName"]},
            "MAX_BODY_BYTES": "1048576", "MAX_BATCH": "250", "READ_TIMEOUT_S": "25",
            "STORE_HISTORY": "0", "ALLOWED_ORIGINS": ORIGIN}}})
    assert synths["secret"].one("AWS::Lambda::Function")[1]["Environment"]["Variables"][
        "STORE_HISTORY"] == "1"
    # The code asset is the forwarder's one file, nothing of the package.
    _, function = synth.one("AWS::Lambda::Function")
    asset = synth.outdir / f"asset.{function['Code']['S3Key'].removesuffix('.zip')}"
    assert sorted(p.name for p in asset.iterdir()) == ["lambda_function.py"]


def test_forwarder_role_invokes_only_that_endpoint_and_writes_its_logs(synths):
    for synth in synths.values():
        assert synth.role_statements("ForwarderRole") == [
            {"Sid": "InvokeTheEndpoint", "Effect": "Allow", "Action": "sagemaker:InvokeEndpoint",
             "Resource": {"Ref": synth.logical_id("AWS::SageMaker::Endpoint", "Endpoint")}},
            {"Sid": "WriteItsLogs", "Effect": "Allow",
             "Action": ["logs:CreateLogStream", "logs:PutLogEvents"],
             "Resource": arn_of(synth.logical_id("AWS::Logs::LogGroup", "ForwarderLogs"))}]
        role = synth.json["Resources"][synth.logical_id("AWS::IAM::Role", "ForwarderRole")]
        assert "ManagedPolicyArns" not in role["Properties"]


def sagemaker_statements(synth: Synth) -> list[dict[str, Any]]:
    model_url = synth.one("AWS::SageMaker::Model")[1]["PrimaryContainer"]["ModelDataUrl"]
    key = model_url["Fn::Sub"].rsplit("/", 1)[1]
    return [
        {"Sid": "PullTheImage", "Effect": "Allow", "Action": [
            "ecr:BatchCheckLayerAvailability", "ecr:BatchGetImage",
            "ecr:GetDownloadUrlForLayer"], "Resource": {"Fn::Join": ["", [
                "arn:", {"Ref": "AWS::Partition"}, ":ecr:", {"Ref": "AWS::Region"}, ":",
                {"Ref": "AWS::AccountId"}, ":repository/", {"Fn::Sub":
                "cdk-hnb659fds-container-assets-${AWS::AccountId}-${AWS::Region}"}]]}},
        {"Sid": "EcrLogin", "Effect": "Allow", "Action": "ecr:GetAuthorizationToken",
         "Resource": "*"},
        {"Sid": "ReadTheModel", "Effect": "Allow", "Action": "s3:GetObject",
         "Resource": {"Fn::Join": ["", ["arn:", {"Ref": "AWS::Partition"}, ":s3:::",
                                        {"Fn::Sub": ACCOUNT_S3}, f"/{key}"]]}},
        {"Sid": "WriteItsLogs", "Effect": "Allow", "Action": [
            "logs:CreateLogStream", "logs:DescribeLogStreams", "logs:PutLogEvents"],
         "Resource": arn_of(synth.logical_id("AWS::Logs::LogGroup", "EndpointLogs"))},
        {"Sid": "EndpointMetrics", "Effect": "Allow", "Action": "cloudwatch:PutMetricData",
         "Resource": "*", "Condition": {"StringEquals": {
             "cloudwatch:namespace": "/aws/sagemaker/Endpoints"}}}]


def test_sagemaker_role_pulls_that_image_reads_that_model_writes_its_logs(synths):
    assert synths["none"].role_statements("SageMakerRole") == sagemaker_statements(
        synths["none"])
    secret = synths["secret"]
    assert secret.role_statements("SageMakerRole") == [*sagemaker_statements(secret), {
        "Sid": "ReadTheDatabaseSecret", "Effect": "Allow",
        "Action": "secretsmanager:GetSecretValue", "Resource": SECRET}]
    rds = synths["rds"]
    vpc = rds.logical_id("AWS::EC2::VPC", "Vpc")
    attachment = rds.logical_id("AWS::SecretsManager::SecretTargetAttachment", "Database")
    assert rds.role_statements("SageMakerRole") == [*sagemaker_statements(rds), {
        "Sid": "ReadTheDatabaseSecret", "Effect": "Allow",
        "Action": "secretsmanager:GetSecretValue", "Resource": {"Ref": attachment}}, {
        "Sid": "DescribeTheNetwork", "Effect": "Allow", "Action": [
            "ec2:DescribeDhcpOptions", "ec2:DescribeNetworkInterfaces",
            "ec2:DescribeSecurityGroups", "ec2:DescribeSubnets", "ec2:DescribeVpcs"],
        "Resource": "*"}, {
        "Sid": "NetworkInterfacesInTheVpc", "Effect": "Allow", "Action": [
            "ec2:CreateNetworkInterface", "ec2:CreateNetworkInterfacePermission",
            "ec2:DeleteNetworkInterface", "ec2:DeleteNetworkInterfacePermission"],
        "Resource": "*", "Condition": {"ArnEquals": {"ec2:Vpc": {"Fn::Join": ["", [
            "arn:", {"Ref": "AWS::Partition"}, ":ec2:", {"Ref": "AWS::Region"}, ":",
            {"Ref": "AWS::AccountId"}, ":vpc/", {"Ref": vpc}]]}}}}]


#: The statements allowed Resource "*": AWS offers nothing narrower for their actions.
WILDCARD_SIDS = {"EcrLogin", "EndpointMetrics", "DescribeTheNetwork",
                 "NetworkInterfacesInTheVpc"}


def test_no_action_wildcard_and_resource_wildcards_only_where_aws_allows_nothing_narrower(
        synths):
    for synth in synths.values():
        documents = [p["PolicyDocument"] for r in synth.resources("AWS::IAM::Role").values()
                     for p in r["Properties"].get("Policies", [])]
        documents += [r["Properties"]["PolicyDocument"]
                      for r in synth.resources("AWS::IAM::Policy").values()]
        for document in documents:
            for statement in document["Statement"]:
                actions = statement["Action"]
                actions = [actions] if isinstance(actions, str) else actions
                assert "*" not in actions and all(not a.endswith(":*") for a in actions)
                if statement.get("Resource") == "*":
                    assert statement.get("Sid") in WILDCARD_SIDS, statement
        managed = [arn for r in synth.resources("AWS::IAM::Role").values()
                   for arn in r["Properties"].get("ManagedPolicyArns", [])]
        assert managed == [{"Fn::Join": ["", ["arn:", {"Ref": "AWS::Partition"},
                                              ":iam::aws:policy/service-role/"
                                              "AmazonAPIGatewayPushToCloudWatchLogs"]]}]


def test_api_key_required_on_every_method_and_cors_only_for_the_origins(synths):
    for name, synth in synths.items():
        methods = synth.resources("AWS::ApiGateway::Method").values()
        posts = [m["Properties"] for m in methods if m["Properties"]["HttpMethod"] != "OPTIONS"]
        assert len(posts) == 2
        assert all(m["ApiKeyRequired"] is True and m["HttpMethod"] == "POST" for m in posts)
        options = [m["Properties"] for m in methods
                   if m["Properties"]["HttpMethod"] == "OPTIONS"]
        if name != "none":  # no origins configured: no preflight, no CORS header anywhere
            assert options == []
            assert "Access-Control-Allow-Origin" not in json.dumps(synth.json)
            continue
        assert options
        for option in options:
            (answer,) = option["Integration"]["IntegrationResponses"]
            assert answer["ResponseParameters"][
                "method.response.header.Access-Control-Allow-Origin"] == f"'{ORIGIN}'"
        assert "'*'" not in json.dumps(synth.json)


def test_request_validation_routes_and_batch_limit(synths):
    synth = synths["none"]
    validator = synth.logical_id("AWS::ApiGateway::RequestValidator", "ApiBodyValidator")
    synth.template.has_resource_properties("AWS::ApiGateway::RequestValidator", {
        "ValidateRequestBody": True, "ValidateRequestParameters": True})
    paths = {r["Properties"]["PathPart"] for r in
             synth.resources("AWS::ApiGateway::Resource").values()}
    assert paths == {"v1", "transactions", "batch"}
    for method in synth.resources("AWS::ApiGateway::Method").values():
        props = method["Properties"]
        if props["HttpMethod"] == "POST":
            assert props["RequestValidatorId"] == {"Ref": validator}
            assert props["Integration"]["Type"] == "AWS_PROXY"
            assert set(props["RequestModels"]) == {"application/json"}
    schemas = {m["Properties"]["Name"]: m["Properties"]["Schema"]
               for m in synth.resources("AWS::ApiGateway::Model").values()}
    assert schemas["TransactionBatch"]["maxItems"] == 250
    assert schemas["TransactionBatch"]["minItems"] == 1
    assert schemas["Transaction"]["required"] == ["transactionId", "timestamp"]
    kinds = {r["Properties"]["ResponseType"]: r["Properties"]["StatusCode"]
             for r in synth.resources("AWS::ApiGateway::GatewayResponse").values()}
    assert kinds == {"BAD_REQUEST_BODY": "422", "INVALID_API_KEY": "403",
                     "MISSING_AUTHENTICATION_TOKEN": "404", "THROTTLED": "429",
                     "QUOTA_EXCEEDED": "429", "REQUEST_TOO_LARGE": "413"}


def test_usage_plan_key_and_access_logging(synths):
    synth = synths["none"]
    api = synth.logical_id("AWS::ApiGateway::RestApi", "Api")
    stage = synth.logical_id("AWS::ApiGateway::Stage", "ApiDeploymentStage")
    synth.template.has_resource_properties("AWS::ApiGateway::UsagePlan", {
        "Throttle": {"RateLimit": {"Ref": "ThrottleRate"}, "BurstLimit": {"Ref": "ThrottleBurst"}},
        "Quota": {"Limit": {"Ref": "QuotaLimit"}, "Period": {"Ref": "QuotaPeriod"}},
        "ApiStages": [{"ApiId": {"Ref": api}, "Stage": {"Ref": stage}, "Throttle": {}}]})
    synth.template.resource_count_is("AWS::ApiGateway::ApiKey", 1)
    synth.template.resource_count_is("AWS::ApiGateway::UsagePlanKey", 1)
    _, props = synth.one("AWS::ApiGateway::Stage")
    assert props["AccessLogSetting"]["DestinationArn"] == arn_of(
        synth.logical_id("AWS::Logs::LogGroup", "ApiAccessLogs"))
    assert props["MethodSettings"] == [{"DataTraceEnabled": False, "HttpMethod": "*",
                                        "LoggingLevel": "ERROR", "MetricsEnabled": True,
                                        "ResourcePath": "/*"}]
    _, rest = synth.one("AWS::ApiGateway::RestApi")
    assert rest["EndpointConfiguration"] == {"Types": ["REGIONAL"]}
    assert rest["ApiKeySourceType"] == "HEADER"
    retentions = {p["Properties"].get("RetentionInDays") for p in
                  synths["rds"].resources("AWS::Logs::LogGroup").values()}
    assert retentions == {90}


def test_sagemaker_model_endpoint_config_and_endpoint(synths, model_dir):
    none = synths["none"]
    _, model = none.one("AWS::SageMaker::Model")
    config = DeployConfig(model_dir, "none", allowed_origins=(ORIGIN,), max_batch=250)
    assert model["PrimaryContainer"]["Environment"] == container_environment(config)
    assert model["EnableNetworkIsolation"] is True and "VpcConfig" not in model
    image = model["PrimaryContainer"]["Image"]["Fn::Sub"]
    assert image.startswith("${AWS::AccountId}.dkr.ecr.${AWS::Region}.${AWS::URLSuffix}/")
    assert model["PrimaryContainer"]["ModelDataUrl"]["Fn::Sub"].endswith(".gz")
    model_id = none.logical_id("AWS::SageMaker::Model", "Model")
    none.template.has_resource_properties("AWS::SageMaker::EndpointConfig", {
        "ProductionVariants": [{"VariantName": "AllTraffic", "InitialVariantWeight": 1,
                                "InitialInstanceCount": {"Ref": "InstanceCount"},
                                "InstanceType": {"Ref": "InstanceType"},
                                "ModelName": {"Fn::GetAtt": [model_id, "ModelName"]}}]})
    none.template.has_resource_properties("AWS::SageMaker::Endpoint", {
        "EndpointName": "txanomaly-scoring"})
    none.template.has_resource_properties("AWS::Logs::LogGroup", {
        "LogGroupName": "/aws/sagemaker/Endpoints/txanomaly-scoring", "RetentionInDays": 30})
    params = none.json["Parameters"]
    assert params["InstanceType"]["Default"] == "ml.m5.large"
    assert (params["InstanceCount"]["Default"], params["InstanceCount"]["MinValue"]) == (1, 1)
    assert params["QuotaPeriod"]["AllowedValues"] == ["DAY", "WEEK", "MONTH"]
    secret_env = synths["secret"].one("AWS::SageMaker::Model")[1]
    assert secret_env["PrimaryContainer"]["Environment"]["TXANOMALY_DB_SECRET"] == SECRET
    assert secret_env["PrimaryContainer"]["Environment"]["TXANOMALY_DB_SCHEMA"] == "scoring"
    assert "TXANOMALY_DB" not in secret_env["PrimaryContainer"]["Environment"]
    assert secret_env["EnableNetworkIsolation"] is False


def test_rds_history_in_a_private_vpc(synths):
    rds = synths["rds"]
    db_sg = rds.logical_id("AWS::EC2::SecurityGroup", "DatabaseSecurityGroup")
    model_sg = rds.logical_id("AWS::EC2::SecurityGroup", "ModelSecurityGroup")
    rds.template.has_resource_properties("AWS::RDS::DBInstance", {
        "Engine": "postgres", "StorageEncrypted": True, "MultiAZ": True,
        "DeletionProtection": True, "Port": "5433", "PubliclyAccessible": False,
        "StorageType": "gp3",
        "VPCSecurityGroups": [{"Fn::GetAtt": [db_sg, "GroupId"]}]})
    rds.template.has_resource_properties("AWS::EC2::SecurityGroupIngress", {
        "GroupId": {"Fn::GetAtt": [db_sg, "GroupId"]}, "FromPort": 5433, "ToPort": 5433,
        "SourceSecurityGroupId": {"Fn::GetAtt": [model_sg, "GroupId"]}})
    subnets = rds.resources("AWS::EC2::Subnet").values()
    assert all(s["Properties"]["MapPublicIpOnLaunch"] is False for s in subnets)
    rds.template.resource_count_is("AWS::EC2::InternetGateway", 0)
    rds.template.resource_count_is("AWS::EC2::NatGateway", 0)
    _, model = rds.one("AWS::SageMaker::Model")
    assert model["VpcConfig"]["SecurityGroupIds"] == [{"Fn::GetAtt": [model_sg, "GroupId"]}]
    assert len(model["VpcConfig"]["Subnets"]) == 2
    endpoints = {json.dumps(e["Properties"]["ServiceName"]) for e in
                 rds.resources("AWS::EC2::VPCEndpoint").values()}
    assert any("secretsmanager" in e for e in endpoints) and any(".s3" in e for e in endpoints)


def test_no_account_region_or_arn_is_hard_coded(synths):
    for name, synth in synths.items():
        text = json.dumps(synth.json)
        if name == "secret":  # the one ARN the user gave, as context
            text = text.replace(SECRET, "")
        assert not re.search(r"\b\d{12}\b", text)
        assert not re.search(r"\b(us|eu|ap|sa|ca|me|af)-(east|west|north|south|central|"
                             r"northeast|southeast)-\d\b", text)
        assert not re.search(r'"arn:aws', text)


def test_model_archive_is_reproducible(model_dir, tmp_path):
    first = model_archive(model_dir, tmp_path / "a" if (tmp_path / "a").mkdir() is None
                          else tmp_path)
    second = model_archive(model_dir, tmp_path / "b" if (tmp_path / "b").mkdir() is None
                           else tmp_path)
    assert first.read_bytes() == second.read_bytes()
    with tarfile.open(first) as tar:
        assert sorted(tar.getnames()) == sorted(p.name for p in model_dir.iterdir())
        assert {m.mtime for m in tar.getmembers()} == {0}


def test_context_errors_name_the_key(model_dir, tmp_path):
    def ctx(**values):
        return DeployConfig.from_context({"model_dir": str(model_dir), **values}.get)

    with pytest.raises(DeployConfigError, match="context 'history' is required"):
        ctx()
    with pytest.raises(DeployConfigError, match="'history' must be one of none, secret, rds"):
        ctx(history="sqlite")
    with pytest.raises(DeployConfigError, match="needs context 'database_secret'"):
        ctx(history="secret")
    with pytest.raises(DeployConfigError, match="'allowed_origins': '\\*'"):
        ctx(history="none", allowed_origins="*")
    with pytest.raises(DeployConfigError, match="'max_batch' must be an integer"):
        ctx(history="none", max_batch="lots")
    with pytest.raises(DeployConfigError, match="'log_retention' must be one of"):
        ctx(history="none", log_retention=31)
    with pytest.raises(DeployConfigError, match="not a txanomaly model directory"):
        DeployConfig.from_context({"model_dir": str(tmp_path), "history": "none"}.get)
    with pytest.raises(DeployConfigError, match="context 'model_dir' is required"):
        DeployConfig.from_context({"history": "none"}.get)
    assert ctx(history="none", allowed_origins="https://a.example,https://b.example:8443"
               ).allowed_origins == ("https://a.example", "https://b.example:8443")
