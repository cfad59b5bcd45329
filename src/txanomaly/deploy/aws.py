"""The AWS CDK v2 stack: the prototype's topology done properly (docs/deploy-aws.md).

API Gateway (REST, API key + usage plan, request validation, access logs, CORS only for the
configured origins) -> the forwarding Lambda (:mod:`txanomaly.deploy.forwarder`) ->
``sagemaker-runtime:InvokeEndpoint`` -> a SageMaker endpoint running the image built from the
repository's Dockerfile, the model directory as an S3 asset. Every role may do only what its
part needs; the history lives where the ``history`` context says (``none``, ``secret``,
``rds``; :mod:`txanomaly.deploy.aws_config`). cdk-nag's AWS Solutions checks run on every
synth (:func:`add_checks`); each finding the design accepts is suppressed with its reason
where the construct is made. The API: :mod:`~txanomaly.deploy.aws_api`; the ``rds`` database:
:mod:`~txanomaly.deploy.aws_history`.

Needs the ``[aws]`` extra. The app: ``deploy/aws/app.py``.
"""

from __future__ import annotations

import gzip
import io
import tarfile
import tempfile
from pathlib import Path
from typing import Any

import aws_cdk as cdk
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_ecr_assets as ecr_assets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3_assets as s3_assets
from aws_cdk import aws_sagemaker as sagemaker
from aws_cdk import aws_secretsmanager as secretsmanager
from cdk_nag import AwsSolutionsChecks, NagPackSuppression, NagSuppressions
from constructs import Construct

from txanomaly.deploy import forwarder
from txanomaly.deploy.aws_api import scoring_api
from txanomaly.deploy.aws_config import LOG_RETENTION_DAYS, DeployConfig, container_environment
from txanomaly.deploy.aws_history import private_postgres

FORWARDER_DIR = Path(forwarder.__file__).resolve().parent
#: The forwarder's InvokeEndpoint read timeout: under API Gateway's 29 s integration limit.
READ_TIMEOUT_S = 25


_RETENTION_NAMES = ("ONE_DAY", "THREE_DAYS", "FIVE_DAYS", "ONE_WEEK", "TWO_WEEKS", "ONE_MONTH",
                    "TWO_MONTHS", "THREE_MONTHS", "FOUR_MONTHS", "FIVE_MONTHS", "SIX_MONTHS",
                    "ONE_YEAR", "THIRTEEN_MONTHS", "EIGHTEEN_MONTHS", "TWO_YEARS", "THREE_YEARS",
                    "FIVE_YEARS", "SIX_YEARS", "SEVEN_YEARS", "EIGHT_YEARS", "NINE_YEARS",
                    "TEN_YEARS")


def retention_days(days: int) -> logs.RetentionDays:
    """CloudWatch's retention period of ``days`` (one of :data:`LOG_RETENTION_DAYS`)."""
    days_name = dict(zip(LOG_RETENTION_DAYS, _RETENTION_NAMES, strict=True))[days]
    retention: logs.RetentionDays = getattr(logs.RetentionDays, days_name)
    return retention


def add_checks(app: cdk.App) -> None:
    """Run cdk-nag's AWS Solutions rules on every stack of ``app`` at synth."""
    cdk.Aspects.of(app).add(AwsSolutionsChecks(verbose=True))


def model_archive(model_dir: Path, out_dir: Path) -> Path:
    """``model.tar.gz`` of the model directory's files, byte-for-byte reproducible (sorted
    names, zero times and owners), as SageMaker unpacks it into /opt/ml/model."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path in sorted(p for p in model_dir.rglob("*") if p.is_file()):
            info = tarfile.TarInfo(path.relative_to(model_dir).as_posix())
            info.size, info.mode, info.mtime = path.stat().st_size, 0o644, 0
            with path.open("rb") as handle:
                tar.addfile(info, handle)
    target = out_dir / "model.tar.gz"
    with target.open("wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0,
                                                 filename="") as gz:
        gz.write(buffer.getvalue())
    return target


class TxAnomalyStack(cdk.Stack):
    """The deployment; ``config`` holds the context choices, ``repo_root`` the Dockerfile."""

    def __init__(self, scope: Construct, construct_id: str, *, config: DeployConfig,
                 repo_root: Path, **kwargs: Any):
        super().__init__(scope, construct_id, **kwargs)
        self.config = config
        self.retention = retention_days(config.log_retention)
        self.endpoint_name = f"{self.stack_name.lower()}-scoring"[:63]
        params = self._parameters()
        image = ecr_assets.DockerImageAsset(
            self, "Image", directory=str(repo_root), file="Dockerfile",
            platform=ecr_assets.Platform.LINUX_AMD64)
        archive = s3_assets.Asset(self, "ModelArchive", path=str(model_archive(
            config.model_dir, Path(tempfile.mkdtemp(prefix="txanomaly-model-")))))
        self.vpc: ec2.Vpc | None = None
        secret, model_sg = self._history()
        role = self._sagemaker_role(image, archive, secret)
        self.endpoint = self._endpoint(params, image, archive, role, secret, model_sg)
        self.function = self._forwarder()
        self.api, self.api_key = scoring_api(self, self.function, config, self.retention, params)
        cdk.CfnOutput(self, "ApiUrl", value=self.api.url,
                      description="Base URL: POST {ApiUrl}v1/transactions (or /batch)")
        cdk.CfnOutput(self, "ApiKeyId", value=self.api_key.key_id,
                      description="aws apigateway get-api-key --include-value --api-key ID")
        cdk.CfnOutput(self, "EndpointName", value=self.endpoint.attr_endpoint_name)
        self._suppressions()

    # ---- parameters --------------------------------------------------------------------
    def _parameters(self) -> dict[str, cdk.CfnParameter]:
        number = "Number"
        return {
            "instance_type": cdk.CfnParameter(
                self, "InstanceType", type="String", default="ml.m5.large",
                allowed_pattern=r"^ml\.[a-z0-9]+\.[a-z0-9]+$",
                description="SageMaker instance type of the endpoint (docs/deploy-aws.md, "
                            "cost notes)"),
            "instance_count": cdk.CfnParameter(
                self, "InstanceCount", type=number, default=1, min_value=1, max_value=20,
                description="Instances behind the endpoint (2+ for availability)"),
            "rate": cdk.CfnParameter(self, "ThrottleRate", type=number, default=50,
                                     min_value=1, description="Usage plan: requests/s"),
            "burst": cdk.CfnParameter(self, "ThrottleBurst", type=number, default=100,
                                      min_value=1, description="Usage plan: burst requests"),
            "quota": cdk.CfnParameter(self, "QuotaLimit", type=number, default=1_000_000,
                                      min_value=1, description="Usage plan: requests/period"),
            "quota_period": cdk.CfnParameter(
                self, "QuotaPeriod", type="String", default="MONTH",
                allowed_values=["DAY", "WEEK", "MONTH"], description="Usage plan: period"),
        }

    # ---- history -----------------------------------------------------------------------
    def _history(self) -> tuple[secretsmanager.ISecret | None, ec2.SecurityGroup | None]:
        """The database secret (and the model's security group for ``rds``)."""
        if self.config.history == "none":
            return None, None
        if self.config.history == "secret":
            assert self.config.database_secret is not None
            return secretsmanager.Secret.from_secret_complete_arn(
                self, "DatabaseSecret", self.config.database_secret), None
        database = private_postgres(self, self.retention)
        self.vpc = database.vpc
        return database.secret, database.model_security_group

    # ---- SageMaker ---------------------------------------------------------------------
    def _sagemaker_role(self, image: ecr_assets.DockerImageAsset, archive: s3_assets.Asset,
                        secret: secretsmanager.ISecret | None) -> iam.Role:
        """Pull that image, read that archive, write that endpoint's logs (and read the
        database secret; manage its network interfaces in the VPC)."""
        self.endpoint_logs = logs.LogGroup(
            self, "EndpointLogs", log_group_name=f"/aws/sagemaker/Endpoints/{self.endpoint_name}",
            retention=self.retention, removal_policy=cdk.RemovalPolicy.DESTROY)
        statements = [
            iam.PolicyStatement(sid="PullTheImage", actions=[
                "ecr:BatchCheckLayerAvailability", "ecr:BatchGetImage",
                "ecr:GetDownloadUrlForLayer"], resources=[image.repository.repository_arn]),
            # ecr:GetAuthorizationToken has no resource-level permissions: AWS allows only *.
            iam.PolicyStatement(sid="EcrLogin", actions=["ecr:GetAuthorizationToken"],
                                resources=["*"]),
            iam.PolicyStatement(sid="ReadTheModel", actions=["s3:GetObject"],
                                resources=[archive.bucket.arn_for_objects(archive.s3_object_key)]),
            iam.PolicyStatement(sid="WriteItsLogs", actions=[
                "logs:CreateLogStream", "logs:DescribeLogStreams", "logs:PutLogEvents"],
                resources=[self.endpoint_logs.log_group_arn]),
            # cloudwatch:PutMetricData has no resource-level permissions (AWS allows only *);
            # the condition keeps it to SageMaker's endpoint namespace.
            iam.PolicyStatement(sid="EndpointMetrics", actions=["cloudwatch:PutMetricData"],
                                resources=["*"], conditions={"StringEquals": {
                                    "cloudwatch:namespace": "/aws/sagemaker/Endpoints"}}),
        ]
        if secret is not None:
            statements.append(iam.PolicyStatement(
                sid="ReadTheDatabaseSecret", actions=["secretsmanager:GetSecretValue"],
                resources=[secret.secret_arn]))
        if self.vpc is not None:
            # SageMaker attaches the endpoint's instances to the VPC through network
            # interfaces. The Describe* actions have no resource-level permissions (AWS
            # allows only *); the others are held to this VPC by the condition.
            statements.append(iam.PolicyStatement(sid="DescribeTheNetwork", actions=[
                "ec2:DescribeDhcpOptions", "ec2:DescribeNetworkInterfaces",
                "ec2:DescribeSecurityGroups", "ec2:DescribeSubnets", "ec2:DescribeVpcs"],
                resources=["*"]))
            statements.append(iam.PolicyStatement(sid="NetworkInterfacesInTheVpc", actions=[
                "ec2:CreateNetworkInterface", "ec2:CreateNetworkInterfacePermission",
                "ec2:DeleteNetworkInterface", "ec2:DeleteNetworkInterfacePermission"],
                resources=["*"], conditions={"ArnEquals": {"ec2:Vpc": self.format_arn(
                    service="ec2", resource="vpc", resource_name=self.vpc.vpc_id)}}))
        return iam.Role(self, "SageMakerRole",
                        assumed_by=iam.ServicePrincipal("sagemaker.amazonaws.com"),
                        description="txanomaly endpoint: its image, its model, its logs",
                        inline_policies={"endpoint": iam.PolicyDocument(statements=statements)})

    def _endpoint(self, params: dict[str, cdk.CfnParameter],
                  image: ecr_assets.DockerImageAsset, archive: s3_assets.Asset, role: iam.Role,
                  secret: secretsmanager.ISecret | None,
                  model_sg: ec2.SecurityGroup | None) -> sagemaker.CfnEndpoint:
        environment = container_environment(self.config,
                                            secret.secret_arn if secret is not None else None)
        vpc_config = None
        if self.vpc is not None and model_sg is not None:
            vpc_config = sagemaker.CfnModel.VpcConfigProperty(
                security_group_ids=[model_sg.security_group_id],
                subnets=self.vpc.select_subnets(
                    subnet_type=ec2.SubnetType.PRIVATE_ISOLATED).subnet_ids)
        model = sagemaker.CfnModel(
            self, "Model", execution_role_arn=role.role_arn,
            primary_container=sagemaker.CfnModel.ContainerDefinitionProperty(
                image=image.image_uri, model_data_url=archive.s3_object_url,
                environment=environment),
            # Without a database the container needs no network at all.
            enable_network_isolation=self.config.history == "none", vpc_config=vpc_config)
        endpoint_config = sagemaker.CfnEndpointConfig(
            self, "EndpointConfig", production_variants=[
                sagemaker.CfnEndpointConfig.ProductionVariantProperty(
                    variant_name="AllTraffic", model_name=model.attr_model_name,
                    initial_variant_weight=1,
                    initial_instance_count=params["instance_count"].value_as_number,
                    instance_type=params["instance_type"].value_as_string)])
        endpoint = sagemaker.CfnEndpoint(
            self, "Endpoint", endpoint_name=self.endpoint_name,
            endpoint_config_name=endpoint_config.attr_endpoint_config_name)
        endpoint.node.add_dependency(self.endpoint_logs)
        return endpoint

    # ---- Lambda ------------------------------------------------------------------------
    def _forwarder(self) -> lambda_.Function:
        """The function may invoke that endpoint and write its own log group, nothing else."""
        log_group = logs.LogGroup(self, "ForwarderLogs", retention=self.retention,
                                  removal_policy=cdk.RemovalPolicy.DESTROY)
        role = iam.Role(self, "ForwarderRole",
                        assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
                        description="txanomaly forwarder: invoke the endpoint, write its logs",
                        inline_policies={"forwarder": iam.PolicyDocument(statements=[
                            iam.PolicyStatement(sid="InvokeTheEndpoint",
                                                actions=["sagemaker:InvokeEndpoint"],
                                                resources=[self.endpoint.ref]),
                            iam.PolicyStatement(sid="WriteItsLogs", actions=[
                                "logs:CreateLogStream", "logs:PutLogEvents"],
                                resources=[log_group.log_group_arn])])})
        function = lambda_.Function(
            self, "Forwarder", runtime=lambda_.Runtime.PYTHON_3_14,
            architecture=lambda_.Architecture.ARM_64, handler="lambda_function.handler",
            code=lambda_.Code.from_asset(str(FORWARDER_DIR), exclude=[
                "__init__.py", "__pycache__", "*.pyc"]),
            role=role, log_group=log_group, memory_size=256,
            timeout=cdk.Duration.seconds(READ_TIMEOUT_S + 4),
            description="txanomaly: API Gateway -> SageMaker endpoint",
            environment={
                "ENDPOINT_NAME": self.endpoint.attr_endpoint_name,
                "MAX_BODY_BYTES": str(self.config.max_body_bytes),
                "MAX_BATCH": str(self.config.max_batch),
                "READ_TIMEOUT_S": str(READ_TIMEOUT_S),
                "STORE_HISTORY": "1" if self.config.stores_history else "0",
                "ALLOWED_ORIGINS": ",".join(self.config.allowed_origins)})
        # The role's rights are inline (its own property) and "Role" is a GetAtt: CDK's extra
        # DependsOn on the role says nothing more (cfn-lint W3005).
        cfn_function = function.node.default_child
        assert isinstance(cfn_function, cdk.CfnResource)
        cfn_function.add_deletion_override("DependsOn")
        return function

    # ---- API Gateway -------------------------------------------------------------------
    # ---- cdk-nag -----------------------------------------------------------------------
    def _suppressions(self) -> None:
        """The AWS Solutions findings this design accepts, each with its reason."""
        suppress = NagSuppressions.add_resource_suppressions
        endpoint_logs = self.endpoint_logs.node.default_child
        assert isinstance(endpoint_logs, cdk.CfnElement)
        wildcard_reasons = {
            "Resource::*": "ecr:GetAuthorizationToken, cloudwatch:PutMetricData and the EC2 "
                           "network-interface actions have no resource-level permissions; "
                           "PutMetricData is held to SageMaker's namespace and the network "
                           "interfaces to this VPC by conditions.",
            f"Resource::<{self.get_logical_id(endpoint_logs)}"
            ".Arn>": "the ':*' of a log group ARN names its log streams: this group only."}
        suppress(self.node.find_child("SageMakerRole"), [
            NagPackSuppression(id="AwsSolutions-IAM5", reason=reason, applies_to=[pattern])
            for pattern, reason in wildcard_reasons.items()])
        forwarder_logs = self.node.find_child("ForwarderLogs").node.default_child
        assert isinstance(forwarder_logs, cdk.CfnElement)
        suppress(self.node.find_child("ForwarderRole"), [NagPackSuppression(
            id="AwsSolutions-IAM5", reason="the ':*' of a log group ARN names its log "
                                           "streams: the function's own group only.",
            applies_to=[f"Resource::<{self.get_logical_id(forwarder_logs)}.Arn>"])])
