"""The AWS CDK v2 stack: the prototype's topology done properly (docs/deploy-aws.md).

API Gateway (REST, API key + usage plan, request validation, access logs, CORS only for the
configured origins) -> the forwarding Lambda (:mod:`txanomaly.deploy.forwarder`) ->
``sagemaker-runtime:InvokeEndpoint`` -> a SageMaker endpoint running the image built from the
repository's Dockerfile, the model directory as an S3 asset. Every role may do only what its
part needs; the history lives where the ``history`` context says (``none``, ``secret``,
``rds``; :mod:`txanomaly.deploy.aws_config`). cdk-nag's AWS Solutions checks run on every
synth (:func:`add_checks`); each finding the design accepts is suppressed below with its reason.

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
from aws_cdk import aws_apigateway as apigw
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_ecr_assets as ecr_assets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_rds as rds
from aws_cdk import aws_s3_assets as s3_assets
from aws_cdk import aws_sagemaker as sagemaker
from aws_cdk import aws_secretsmanager as secretsmanager
from cdk_nag import AwsSolutionsChecks, NagPackSuppression, NagSuppressions
from constructs import Construct

from txanomaly.deploy import forwarder
from txanomaly.deploy.aws_config import LOG_RETENTION_DAYS, DeployConfig, container_environment

FORWARDER_DIR = Path(forwarder.__file__).resolve().parent
SINGLE_ROUTE, BATCH_ROUTE = "v1/transactions", "v1/transactions/batch"
#: The forwarder's InvokeEndpoint read timeout: under API Gateway's 29 s integration limit.
READ_TIMEOUT_S = 25
DB_PORT = 5433  # not PostgreSQL's default 5432: scanners probing the default miss it


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
        self.api, self.api_key = self._api(params)
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
        vpc = self.vpc = ec2.Vpc(
            self, "Vpc", max_azs=2, nat_gateways=0, subnet_configuration=[
                ec2.SubnetConfiguration(name="private", cidr_mask=24,
                                        subnet_type=ec2.SubnetType.PRIVATE_ISOLATED)])
        vpc.add_flow_log("FlowLog", destination=ec2.FlowLogDestination.to_cloud_watch_logs(
            logs.LogGroup(self, "FlowLogs", retention=self.retention,
                          removal_policy=cdk.RemovalPolicy.DESTROY)))
        # No NAT: the model reaches S3 (its archive) and Secrets Manager through endpoints.
        vpc.add_gateway_endpoint("S3", service=ec2.GatewayVpcEndpointAwsService.S3)
        model_sg = ec2.SecurityGroup(self, "ModelSecurityGroup", vpc=vpc,
                                     allow_all_outbound=False,
                                     description="txanomaly SageMaker model")
        endpoint_sg = ec2.SecurityGroup(self, "EndpointsSecurityGroup", vpc=vpc,
                                        allow_all_outbound=False,
                                        description="VPC interface endpoints")
        endpoint_sg.add_ingress_rule(model_sg, ec2.Port.tcp(443), "the model reads its secret")
        # HTTPS anywhere from isolated subnets (no route out) reaches only the VPC endpoints:
        # Secrets Manager, and S3 through the gateway (its addresses are a prefix list).
        model_sg.add_egress_rule(ec2.Peer.any_ipv4(), ec2.Port.tcp(443),
                                 "VPC endpoints only (isolated subnets)")
        vpc.add_interface_endpoint(
            "SecretsManager", service=ec2.InterfaceVpcEndpointAwsService.SECRETS_MANAGER,
            security_groups=[endpoint_sg], private_dns_enabled=True)
        db_sg = ec2.SecurityGroup(self, "DatabaseSecurityGroup", vpc=vpc,
                                  allow_all_outbound=False, description="txanomaly history")
        db_sg.add_ingress_rule(model_sg, ec2.Port.tcp(DB_PORT), "the model's containers")
        model_sg.add_egress_rule(db_sg, ec2.Port.tcp(DB_PORT), "the history database")
        identifier = f"{self.stack_name.lower()}-history"[:63]
        database = rds.DatabaseInstance(
            self, "Database",
            engine=rds.DatabaseInstanceEngine.postgres(
                version=rds.PostgresEngineVersion.VER_17_9),
            instance_type=ec2.InstanceType("t4g.small"), vpc=vpc,
            vpc_subnets=ec2.SubnetSelection(subnet_type=ec2.SubnetType.PRIVATE_ISOLATED),
            security_groups=[db_sg], port=DB_PORT, database_name="txanomaly",
            credentials=rds.Credentials.from_generated_secret("txanomaly"),
            storage_encrypted=True, multi_az=True, allocated_storage=20,
            max_allocated_storage=200, storage_type=rds.StorageType.GP3,
            backup_retention=cdk.Duration.days(7),
            deletion_protection=True, removal_policy=cdk.RemovalPolicy.SNAPSHOT,
            enable_performance_insights=False, auto_minor_version_upgrade=True,
            instance_identifier=identifier, cloudwatch_logs_exports=["postgresql"])
        # The log group RDS would create, made here with its retention (CDK's own retention
        # setting deploys a custom-resource Lambda with broad rights for that).
        database.node.add_dependency(logs.LogGroup(
            self, "DatabaseLogs", log_group_name=f"/aws/rds/instance/{identifier}/postgresql",
            retention=self.retention, removal_policy=cdk.RemovalPolicy.DESTROY))
        NagSuppressions.add_resource_suppressions(endpoint_sg, [NagPackSuppression(
            id="CdkNagValidationFailure", reason=(
                "AwsSolutions-EC23 cannot read an ingress whose source is a security group "
                "(a reference); the only ingress is HTTPS from the model's group."))])
        assert database.secret is not None
        return database.secret, model_sg

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
    def _api(self, params: dict[str, cdk.CfnParameter]) -> tuple[apigw.RestApi, apigw.IApiKey]:
        access_logs = logs.LogGroup(self, "ApiAccessLogs", retention=self.retention,
                                    removal_policy=cdk.RemovalPolicy.DESTROY)
        origins = list(self.config.allowed_origins)
        api = apigw.RestApi(
            self, "Api", rest_api_name=f"{self.stack_name}-api",
            description="txanomaly: score transactions (API key required)",
            endpoint_types=[apigw.EndpointType.REGIONAL], cloud_watch_role=True,
            api_key_source_type=apigw.ApiKeySourceType.HEADER,
            default_method_options=apigw.MethodOptions(api_key_required=True),
            default_cors_preflight_options=apigw.CorsOptions(
                allow_origins=origins, allow_methods=["POST", "OPTIONS"],
                allow_headers=["Content-Type", "X-Api-Key"], max_age=cdk.Duration.hours(1))
            if origins else None,
            deploy_options=apigw.StageOptions(
                stage_name="prod", metrics_enabled=True,
                logging_level=apigw.MethodLoggingLevel.ERROR, data_trace_enabled=False,
                access_log_destination=apigw.LogGroupLogDestination(access_logs),
                access_log_format=apigw.AccessLogFormat.json_with_standard_fields(
                    caller=False, http_method=True, ip=True, protocol=True,
                    request_time=True, resource_path=True, response_length=True,
                    status=True, user=True)))
        validator = api.add_request_validator("BodyValidator", validate_request_body=True,
                                              validate_request_parameters=True)
        one = api.add_model("Transaction", content_type="application/json",
                            model_name="Transaction", schema=transaction_schema())
        many = api.add_model("TransactionBatch", content_type="application/json",
                             model_name="TransactionBatch", schema=apigw.JsonSchema(
                                 schema=apigw.JsonSchemaVersion.DRAFT4,
                                 type=apigw.JsonSchemaType.ARRAY, min_items=1,
                                 max_items=self.config.max_batch,
                                 items=transaction_schema()))
        integration = apigw.LambdaIntegration(self.function, proxy=True)
        single = api.root.resource_for_path(SINGLE_ROUTE)
        single.add_method("POST", integration, request_validator=validator,
                          request_models={"application/json": one})
        single.add_resource("batch").add_method("POST", integration, request_validator=validator,
                                                request_models={"application/json": many})
        _gateway_responses(api)
        plan = api.add_usage_plan(
            "UsagePlan", name=f"{self.stack_name}-plan",
            throttle=apigw.ThrottleSettings(rate_limit=params["rate"].value_as_number,
                                            burst_limit=params["burst"].value_as_number),
            quota=apigw.QuotaSettings(limit=params["quota"].value_as_number,
                                      period=apigw.Period.MONTH),
            api_stages=[apigw.UsagePlanPerApiStage(api=api, stage=api.deployment_stage)])
        cfn_plan = plan.node.default_child
        assert isinstance(cfn_plan, apigw.CfnUsagePlan)
        cfn_plan.add_property_override("Quota.Period", params["quota_period"].value_as_string)
        key = api.add_api_key("ApiKey", description="txanomaly client key")
        plan.add_api_key(key)
        return api, key

    # ---- cdk-nag -----------------------------------------------------------------------
    def _suppressions(self) -> None:
        """The AWS Solutions findings this design accepts, each with its reason."""
        suppress = NagSuppressions.add_resource_suppressions
        suppress(self.api, [
            NagPackSuppression(id="AwsSolutions-APIG4", reason=(
                "Callers are authorised by API key + usage plan (issue 14's contract); an "
                "IAM or Cognito authorizer is the place to add per-user identity.")),
            NagPackSuppression(id="AwsSolutions-COG4", reason=(
                "No Cognito user pool: API keys identify the calling systems.")),
            NagPackSuppression(id="AwsSolutions-APIG3", reason=(
                "WAF is an account-level choice with its own cost; the usage plan throttles "
                "and caps each key (docs/deploy-aws.md says how to attach a web ACL).")),
        ], apply_to_children=True)
        suppress(self.api, [NagPackSuppression(
            id="AwsSolutions-IAM4", reason=(
                "The account-level API Gateway CloudWatch role uses AWS's managed "
                "AmazonAPIGatewayPushToCloudWatchLogs, the documented way to enable "
                "execution and access logging."),
            applies_to=["Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/"
                        "AmazonAPIGatewayPushToCloudWatchLogs"])], apply_to_children=True)
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
        if self.config.history == "rds":
            suppress(self.node.find_child("Database"), [
                NagPackSuppression(id="AwsSolutions-SMG4", reason=(
                    "The container reads the secret when it starts; a rotation would cut "
                    "running instances off until they are replaced (docs/deploy-aws.md).")),
            ], apply_to_children=True)


def transaction_schema() -> apigw.JsonSchema:
    """The shape API Gateway checks before the function runs; the container checks every
    field's value (and names it) after."""
    string = apigw.JsonSchema(type=apigw.JsonSchemaType.STRING, max_length=1024)
    amount = apigw.JsonSchema(type=apigw.JsonSchemaType.OBJECT,
                              required=["transactionAmount", "transactionCurrency"],
                              properties={"transactionAmount": apigw.JsonSchema(
                                  type=apigw.JsonSchemaType.NUMBER, minimum=0),
                                  "transactionCurrency": string})
    return apigw.JsonSchema(
        schema=apigw.JsonSchemaVersion.DRAFT4, type=apigw.JsonSchemaType.OBJECT,
        required=["transactionId", "timestamp"],
        properties={
            "transactionId": apigw.JsonSchema(type=apigw.JsonSchemaType.STRING, min_length=1,
                                              max_length=1024),
            "timestamp": apigw.JsonSchema(type=[apigw.JsonSchemaType.NUMBER,
                                                apigw.JsonSchemaType.STRING,
                                                apigw.JsonSchemaType.OBJECT]),
            "originUserId": string, "destinationUserId": string,
            "originAmountDetails": amount, "destinationAmountDetails": amount})


def _gateway_responses(api: apigw.RestApi) -> None:
    """API Gateway's own refusals in the service's error body."""
    for kind, status, code, message in (
            (apigw.ResponseType.BAD_REQUEST_BODY, "422", "validation_error",
             "$context.error.validationErrorString"),
            (apigw.ResponseType.INVALID_API_KEY, "403", "forbidden",
             "a valid API key is required in the X-Api-Key header"),
            (apigw.ResponseType.MISSING_AUTHENTICATION_TOKEN, "404", "not_found",
             "no such route: POST /v1/transactions or /v1/transactions/batch"),
            (apigw.ResponseType.THROTTLED, "429", "too_many_requests",
             "this API key's rate limit is exceeded; retry shortly"),
            (apigw.ResponseType.QUOTA_EXCEEDED, "429", "quota_exceeded",
             "this API key's quota for the period is used up"),
            (apigw.ResponseType.REQUEST_TOO_LARGE, "413", "payload_too_large",
             "the request body is too large")):
        api.add_gateway_response(
            f"{code}-{status}-{kind.response_type}", type=kind, status_code=status,
            templates={"application/json": (
                f'{{"error": "{code}", "message": "{message}", "errors": [], '
                '"requestId": "$context.requestId"}')})
