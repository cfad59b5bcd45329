"""Deployment adapters: the container image's entry point (:mod:`txanomaly.deploy.container`),
the AWS forwarding Lambda (:mod:`txanomaly.deploy.forwarder`) and the AWS CDK stack
(:mod:`txanomaly.deploy.aws`, needs the ``[aws]`` extra). See docs/deploy-aws.md.

Nothing here is imported by the core library or the service.
"""
