"""Helpers every CLI command shares: console, output modes, error -> exit code mapping."""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from txanomaly.errors import TxAnomalyError

F = TypeVar("F", bound=Callable[..., Any])

#: Exit codes: 0 ok, 1 a txanomaly error (bad input, bad model...), 2 usage error (Typer's).
EXIT_ERROR = 1

err_console = Console(stderr=True)

Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="Print nothing but errors.")]
JsonOut = Annotated[bool, typer.Option("--json", help="Print a machine-readable JSON summary.")]


def handle_errors(func: F) -> F:
    """Turn a :class:`TxAnomalyError` into a one-line message on stderr and exit code 1."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except TxAnomalyError as exc:
            err_console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
            raise typer.Exit(EXIT_ERROR) from None
        except (FileNotFoundError, IsADirectoryError, PermissionError) as exc:
            err_console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
            raise typer.Exit(EXIT_ERROR) from None

    return wrapper  # type: ignore[return-value]


class Output:
    """Where a command's human output goes, honouring ``--quiet`` and ``--json``."""

    def __init__(self, quiet: bool = False, as_json: bool = False):
        self.quiet = quiet
        self.as_json = as_json
        self.console = Console(stderr=as_json, quiet=quiet, soft_wrap=True)

    def print(self, *objects: Any, **kwargs: Any) -> None:
        self.console.print(*objects, **kwargs)

    def summary(self, data: dict[str, Any]) -> None:
        """Emit the closing summary: JSON on stdout in --json mode (even with --quiet)."""
        if self.as_json:
            sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")

    def progress(self) -> Progress:
        return Progress(
            TextColumn("[progress.description]{task.description}"),
            BarColumn(),
            TextColumn("{task.completed:,.0f}/{task.total:,.0f}"),
            TimeElapsedColumn(),
            console=self.console,
            disable=self.quiet or not self.console.is_terminal,
            transient=True,
        )


def default_rejects_path(output: Path) -> Path:
    """The rejects file next to an output: ``out.parquet`` -> ``out.rejects.jsonl``."""
    return output.with_name(output.stem + ".rejects.jsonl")
