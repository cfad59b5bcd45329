"""``txanomaly model sign`` and ``txanomaly model verify``: the model file's signature.

A server given a model key (``serve --model-key-file``, ``TXANOMALY_MODEL_KEY``) serves only
a model signed with that key; ``sign`` signs one, ``verify`` checks one as the server will
before it is deployed. docs/service.md (Model file threat model) says what a signature adds.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from txanomaly.cli._common import (
    JsonOut,
    Output,
    Quiet,
    add_group,
    check_exists,
    handle_errors,
)

EXAMPLE = ("Example: [bold]openssl rand -hex 32 > model.key; txanomaly model sign model/ "
           "--key-file model.key[/] then [bold]txanomaly serve --model model/ "
           "--model-key-file model.key[/]")

ModelArg = Annotated[Path, typer.Argument(help="Model directory (txanomaly train output).")]


def register(app: typer.Typer) -> None:
    """Add the ``model`` group (``model sign``, ``model verify``) to ``app``."""
    add_group(app, "model", "The model file: sign it, check it.", EXAMPLE,
              {"sign": sign, "verify": verify})


@handle_errors
def sign(
    model: ModelArg,
    key_file: Annotated[Path, typer.Option(
        "--key-file", help="The key: a text file, e.g. 64 hex digits from openssl rand -hex "
                           "32 (surrounding whitespace is ignored).")],
    quiet: Quiet = False,
    json_out: JsonOut = False,
) -> None:
    """Sign a model with a key (HMAC-SHA256 over everything that decides a verdict).

    The model is checked first. A format 1 model.json becomes format 2 (its version changes).
    """
    out = Output(quiet, json_out)
    check_exists(model, what="model directory")
    check_exists(key_file)
    from txanomaly import artifact  # PyTorch: only once the paths are known to exist

    version = artifact.sign(model, artifact.read_key(key_file))
    out.print(f"signed {escape(str(model))}: model version {version}", highlight=False)
    out.summary({"model": str(model), "modelVersion": version, "signed": True})


@handle_errors
def verify(
    model: ModelArg,
    key_file: Annotated[Path | None, typer.Option(
        "--key-file", help="Check the signature with this key, as the server given it will; "
                           "without it, every other check.")] = None,
    quiet: Quiet = False,
    json_out: JsonOut = False,
) -> None:
    """Check a model as the server will load it; exit code 1 with the reason if refused.

    Every field of model.json, its version, the tensors' hash, and the signature (--key-file).
    """
    out = Output(quiet, json_out)
    check_exists(model, what="model directory")
    check_exists(key_file)
    from txanomaly import artifact  # PyTorch: only once the paths are known to exist

    key = artifact.read_key(key_file) if key_file is not None else None
    loaded = artifact.load(model, key=key)
    signed = "signature" in loaded.metadata
    state = ("signature verified" if loaded.verified else
             "signed, signature not checked (no key)" if signed else "not signed")
    out.print(f"{escape(str(model))}: model version {loaded.version}, {state}",
              highlight=False)
    out.summary({"model": str(model), "modelVersion": loaded.version, "signed": signed,
                 "verified": loaded.verified})
