# The txanomaly image: SageMaker's container contract and a plain scoring service.
# See docs/deploy-aws.md. Build from the repository root:
#   docker build -t txanomaly .
#   docker run -v "$PWD/model:/opt/ml/model:ro" -e TXANOMALY_ALLOW_UNAUTHENTICATED=1 \
#       -p 8080:8080 txanomaly serve                       # SageMaker's contract
#   docker run -v "$PWD/model:/opt/ml/model:ro" -e TXANOMALY_API_KEYS=... \
#       -p 8000:8000 txanomaly txanomaly serve              # a plain service
# Settings: the TXANOMALY_* variables of docs/service.md (TXANOMALY_DB, TXANOMALY_API_KEYS...),
# TXANOMALY_WORKERS (worker processes of `serve`), TXANOMALY_DB_SECRET (a Secrets Manager
# secret holding the database URL).

# ---- build: a virtual environment with the CPU build of torch and the package --------------
FROM python:3.11-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/venv/bin:$PATH
# The CPU wheel first, from PyTorch's CPU index: PyPI's default torch pulls several GB of CUDA.
RUN python -m venv /opt/venv \
    && pip install --index-url https://download.pytorch.org/whl/cpu torch==2.13.0
WORKDIR /build
COPY pyproject.toml README.md ./
COPY src ./src
# Not editable: the final stage copies the environment, not the sources. boto3 reads the
# database secret (TXANOMALY_DB_SECRET) at start.
RUN pip install "/build[serve]" "boto3>=1.34,<2" \
    && pip uninstall --yes pip setuptools wheel \
    && find /opt/venv -name "__pycache__" -type d -prune -exec rm -rf {} +

# ---- final: the environment alone, a non-root user, no compilers -----------------------------
FROM python:3.11-slim-bookworm
LABEL org.opencontainers.image.title="txanomaly" \
      org.opencontainers.image.description="Anomalous transaction scoring (SOM): SageMaker container and REST service" \
      org.opencontainers.image.licenses="MIT"
RUN groupadd --system --gid 10001 txanomaly \
    && useradd --system --uid 10001 --gid txanomaly --create-home --home-dir /srv/txanomaly \
       --shell /usr/sbin/nologin txanomaly
COPY --from=build /opt/venv /opt/venv
# TXANOMALY_HOST=0.0.0.0: a container is reached from outside it, so `txanomaly serve` there
# requires an API key (or TXANOMALY_ALLOW_UNAUTHENTICATED=1 where IAM guards it: SageMaker).
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    TXANOMALY_MODEL=/opt/ml/model \
    TXANOMALY_HOST=0.0.0.0
# The SQLite default (sqlite:///txanomaly.db) lands in the user's own directory.
WORKDIR /srv/txanomaly
USER 10001:10001
EXPOSE 8080 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-m", "txanomaly.deploy.container", "healthcheck"]
ENTRYPOINT ["python", "-m", "txanomaly.deploy.container"]
CMD ["serve"]
