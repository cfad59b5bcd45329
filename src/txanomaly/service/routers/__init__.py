"""One router per resource: transactions, score, anomalies, model, health, sagemaker."""
