"""``history=rds``: a PostgreSQL instance for the per-user history, in a VPC of its own.

Two isolated subnets (no internet route, no NAT), the database reachable only from the
SageMaker model's security group, on a non-default port; the model reaches its archive in S3
through a gateway endpoint and the generated credentials through a Secrets Manager interface
endpoint. Flow logs and the database's logs go to log groups with the stack's retention.
"""

from __future__ import annotations

from dataclasses import dataclass

import aws_cdk as cdk
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_logs as logs
from aws_cdk import aws_rds as rds
from aws_cdk import aws_secretsmanager as secretsmanager
from cdk_nag import NagPackSuppression, NagSuppressions

DB_PORT = 5433  # not PostgreSQL's default 5432: scanners probing the default miss it


@dataclass(frozen=True)
class PrivateDatabase:
    """What the model needs: the network to join, its security group, the secret."""

    vpc: ec2.Vpc
    model_security_group: ec2.SecurityGroup
    secret: secretsmanager.ISecret


def private_postgres(stack: cdk.Stack, retention: logs.RetentionDays) -> PrivateDatabase:
    """The VPC, its endpoints and the database (constructs made in ``stack``'s scope)."""
    vpc = ec2.Vpc(stack, "Vpc", max_azs=2, nat_gateways=0, subnet_configuration=[
        ec2.SubnetConfiguration(name="private", cidr_mask=24,
                                subnet_type=ec2.SubnetType.PRIVATE_ISOLATED)])
    vpc.add_flow_log("FlowLog", destination=ec2.FlowLogDestination.to_cloud_watch_logs(
        logs.LogGroup(stack, "FlowLogs", retention=retention,
                      removal_policy=cdk.RemovalPolicy.DESTROY)))
    # No NAT: the model reaches S3 (its archive) and Secrets Manager through endpoints.
    vpc.add_gateway_endpoint("S3", service=ec2.GatewayVpcEndpointAwsService.S3)
    model_sg = ec2.SecurityGroup(stack, "ModelSecurityGroup", vpc=vpc, allow_all_outbound=False,
                                 description="txanomaly SageMaker model")
    endpoint_sg = ec2.SecurityGroup(stack, "EndpointsSecurityGroup", vpc=vpc,
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
    db_sg = ec2.SecurityGroup(stack, "DatabaseSecurityGroup", vpc=vpc, allow_all_outbound=False,
                              description="txanomaly history")
    db_sg.add_ingress_rule(model_sg, ec2.Port.tcp(DB_PORT), "the model's containers")
    model_sg.add_egress_rule(db_sg, ec2.Port.tcp(DB_PORT), "the history database")
    database = _instance(stack, vpc, db_sg, retention)
    NagSuppressions.add_resource_suppressions(endpoint_sg, [NagPackSuppression(
        id="CdkNagValidationFailure", reason=(
            "AwsSolutions-EC23 cannot read an ingress whose source is a security group (a "
            "reference); the only ingress is HTTPS from the model's group."))])
    assert database.secret is not None
    return PrivateDatabase(vpc, model_sg, database.secret)


def _instance(stack: cdk.Stack, vpc: ec2.Vpc, db_sg: ec2.SecurityGroup,
              retention: logs.RetentionDays) -> rds.DatabaseInstance:
    """PostgreSQL 17: Multi-AZ, encrypted, gp3, 7-day backups, deletion protection."""
    identifier = f"{stack.stack_name.lower()}-history"[:63]
    database = rds.DatabaseInstance(
        stack, "Database",
        engine=rds.DatabaseInstanceEngine.postgres(version=rds.PostgresEngineVersion.VER_17_9),
        instance_type=ec2.InstanceType("t4g.small"), vpc=vpc,
        vpc_subnets=ec2.SubnetSelection(subnet_type=ec2.SubnetType.PRIVATE_ISOLATED),
        security_groups=[db_sg], port=DB_PORT, database_name="txanomaly",
        credentials=rds.Credentials.from_generated_secret("txanomaly"),
        storage_encrypted=True, multi_az=True, allocated_storage=20, max_allocated_storage=200,
        storage_type=rds.StorageType.GP3, backup_retention=cdk.Duration.days(7),
        deletion_protection=True, removal_policy=cdk.RemovalPolicy.SNAPSHOT,
        enable_performance_insights=False, auto_minor_version_upgrade=True,
        instance_identifier=identifier, cloudwatch_logs_exports=["postgresql"])
    # The log group RDS would create, made here with its retention (CDK's own retention
    # setting deploys a custom-resource Lambda with broad rights for that).
    database.node.add_dependency(logs.LogGroup(
        stack, "DatabaseLogs", log_group_name=f"/aws/rds/instance/{identifier}/postgresql",
        retention=retention, removal_policy=cdk.RemovalPolicy.DESTROY))
    NagSuppressions.add_resource_suppressions(database, [NagPackSuppression(
        id="AwsSolutions-SMG4", reason=(
            "The container reads the secret when it starts; a rotation would cut running "
            "instances off until they are replaced (docs/deploy-aws.md)."))],
        apply_to_children=True)
    return database
