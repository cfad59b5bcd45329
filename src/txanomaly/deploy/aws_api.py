"""The stack's REST API: API Gateway in front of the forwarding Lambda.

Two routes (one transaction, a batch), both requiring an API key tied to a usage plan whose
throttle and quota are the stack's parameters; the JSON shape checked by API Gateway before the
function runs; API Gateway's own refusals in the service's error body; access and error logs;
CORS only for the configured origins (none, so no CORS headers, by default).
"""

from __future__ import annotations

import aws_cdk as cdk
from aws_cdk import aws_apigateway as apigw
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from cdk_nag import NagPackSuppression, NagSuppressions

from txanomaly.deploy.aws_config import DeployConfig

SINGLE_ROUTE = "v1/transactions"


def scoring_api(stack: cdk.Stack, function: lambda_.IFunction, config: DeployConfig,
                retention: logs.RetentionDays, params: dict[str, cdk.CfnParameter]
                ) -> tuple[apigw.RestApi, apigw.IApiKey]:
    """The REST API (constructs made in ``stack``'s scope) and its API key."""
    access_logs = logs.LogGroup(stack, "ApiAccessLogs", retention=retention,
                                removal_policy=cdk.RemovalPolicy.DESTROY)
    origins = list(config.allowed_origins)
    api = apigw.RestApi(
        stack, "Api", rest_api_name=f"{stack.stack_name}-api",
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
                caller=False, http_method=True, ip=True, protocol=True, request_time=True,
                resource_path=True, response_length=True, status=True, user=True)))
    validator = api.add_request_validator("BodyValidator", validate_request_body=True,
                                          validate_request_parameters=True)
    one = api.add_model("Transaction", content_type="application/json",
                        model_name="Transaction", schema=transaction_schema())
    many = api.add_model("TransactionBatch", content_type="application/json",
                         model_name="TransactionBatch", schema=apigw.JsonSchema(
                             schema=apigw.JsonSchemaVersion.DRAFT4,
                             type=apigw.JsonSchemaType.ARRAY, min_items=1,
                             max_items=config.max_batch, items=transaction_schema()))
    integration = apigw.LambdaIntegration(function, proxy=True)
    single = api.root.resource_for_path(SINGLE_ROUTE)
    single.add_method("POST", integration, request_validator=validator,
                      request_models={"application/json": one})
    single.add_resource("batch").add_method("POST", integration, request_validator=validator,
                                            request_models={"application/json": many})
    _gateway_responses(api)
    key = _usage_plan(stack, api, params)
    _suppressions(api)
    return api, key


def _usage_plan(stack: cdk.Stack, api: apigw.RestApi, params: dict[str, cdk.CfnParameter]
                ) -> apigw.IApiKey:
    """The plan (throttle and quota from the parameters) and the key it covers."""
    plan = api.add_usage_plan(
        "UsagePlan", name=f"{stack.stack_name}-plan",
        throttle=apigw.ThrottleSettings(rate_limit=params["rate"].value_as_number,
                                        burst_limit=params["burst"].value_as_number),
        quota=apigw.QuotaSettings(limit=params["quota"].value_as_number,
                                  period=apigw.Period.MONTH),
        api_stages=[apigw.UsagePlanPerApiStage(api=api, stage=api.deployment_stage)])
    # The period is a parameter too; the L2 construct takes only its enum.
    cfn_plan = plan.node.default_child
    assert isinstance(cfn_plan, apigw.CfnUsagePlan)
    cfn_plan.add_property_override("Quota.Period", params["quota_period"].value_as_string)
    key = api.add_api_key("ApiKey", description="txanomaly client key")
    plan.add_api_key(key)
    return key


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


def _suppressions(api: apigw.RestApi) -> None:
    """The cdk-nag findings on the API this design accepts, each with its reason."""
    NagSuppressions.add_resource_suppressions(api, [
        NagPackSuppression(id="AwsSolutions-APIG4", reason=(
            "Callers are authorised by API key + usage plan (issue 14's contract); an IAM or "
            "Cognito authorizer is the place to add per-user identity.")),
        NagPackSuppression(id="AwsSolutions-COG4", reason=(
            "No Cognito user pool: API keys identify the calling systems.")),
        NagPackSuppression(id="AwsSolutions-APIG3", reason=(
            "WAF is an account-level choice with its own cost; the usage plan throttles and "
            "caps each key (docs/deploy-aws.md says how to attach a web ACL).")),
        NagPackSuppression(id="AwsSolutions-IAM4", reason=(
            "The account-level API Gateway CloudWatch role uses AWS's managed "
            "AmazonAPIGatewayPushToCloudWatchLogs, the documented way to enable execution "
            "and access logging."),
            applies_to=["Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/"
                        "AmazonAPIGatewayPushToCloudWatchLogs"]),
    ], apply_to_children=True)
