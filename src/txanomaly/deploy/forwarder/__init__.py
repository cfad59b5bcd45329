"""The forwarding Lambda function (API Gateway -> SageMaker endpoint): the files of this folder
are the function's code asset. See :mod:`txanomaly.deploy.forwarder.lambda_function`."""
