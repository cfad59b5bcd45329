"""Helpers every CLI command shares: console, output modes, error -> exit code mapping."""

from __future__ import annotations

import functools
import json
import re
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from typer.core import TyperCommand, TyperGroup

from txanomaly.errors import TxAnomalyError

F = TypeVar("F", bound=Callable[..., Any])

#: Exit codes: 0 ok, 1 a txanomaly error (bad input, bad model...), 2 usage error (Typer's).
EXIT_ERROR = 1

err_console = Console(stderr=True)

Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="Print nothing but errors.")]
JsonOut = Annotated[bool, typer.Option("--json", help="Print a machine-readable JSON summary.")]


def print_error(message: str) -> None:
    """Print ``error: MESSAGE`` on stderr, as text: square brackets in it are kept."""
    err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False,
                      soft_wrap=True)


def handle_errors(func: F) -> F:
    """Turn the errors a user can fix into a one-line message on stderr and exit code 1.

    Those are a :class:`TxAnomalyError`, a file that cannot be opened, and an optional
    dependency that is not installed (the message names the extra that installs it).
    """

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except (TxAnomalyError, FileNotFoundError, IsADirectoryError, PermissionError) as exc:
            print_error(str(exc))
        except ModuleNotFoundError as exc:
            if not exc.name or exc.name.split(".")[0] == "txanomaly":
                raise  # a missing module of our own is a bug: keep the traceback
            print_error(missing_module_message(func.__name__.replace("_", "-"), exc.name))
        raise typer.Exit(EXIT_ERROR)

    return wrapper  # type: ignore[return-value]


def missing_module_message(command: str, module: str) -> str:
    """What to install when ``command`` fails to import ``module``.

    >>> missing_module_message("serve", "uvicorn.config")
    "txanomaly serve needs the [serve] extra: pip install 'txanomaly[serve]' (uvicorn is missing)"
    """
    top = module.split(".")[0]
    extra = extra_providing(top)
    if extra is None:
        return f"txanomaly {command} needs the Python package {top}, which is not installed"
    return (f"txanomaly {command} needs the [{extra}] extra: "
            f"pip install 'txanomaly[{extra}]' ({top} is missing)")


_REQUIREMENT = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*).*;.*extra\s*==\s*['\"]([\w-]+)['\"]")


def extra_providing(module: str) -> str | None:
    """The extra of txanomaly's package metadata (pyproject.toml) that installs ``module``.

    Distribution names map to module names as ours do (``prometheus-client`` ->
    ``prometheus_client``). ``dev`` is never named: it is for working on txanomaly.
    """
    from importlib.metadata import PackageNotFoundError, requires

    try:
        requirements = requires("txanomaly") or []
    except PackageNotFoundError:  # running from a source tree that was never installed
        return None
    for requirement in requirements:
        match = _REQUIREMENT.match(requirement)
        if match and match[2] != "dev" and _module_name(match[1]) == module:
            return match[2]
    return None


def _module_name(distribution: str) -> str:
    return distribution.lower().replace("-", "_").replace(".", "_")


def check_exists(*paths: Path | None, what: str = "file") -> None:
    """Refuse a missing input (``what``: file, model directory...) before any slow import.

    The readers say the same, but only after ``train`` or ``score`` has spent seconds
    loading PyTorch.
    """
    for path in paths:
        if path is not None and not path.exists():
            raise TxAnomalyError(f"{path}: no such {what}")


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

    @property
    def shows_progress(self) -> bool:
        """Whether :meth:`progress` draws a bar (not with ``--quiet``, nor off a terminal)."""
        return not self.quiet and self.console.is_terminal

    def progress(self) -> Progress:
        return Progress(
            TextColumn("[progress.description]{task.description}"),
            BarColumn(),
            TextColumn("{task.completed:,.0f}/{task.total:,.0f}"),
            TimeElapsedColumn(),
            console=self.console,
            disable=not self.shows_progress,
            transient=True,
        )


def default_rejects_path(output: Path) -> Path:
    """The rejects file next to an output: ``out.parquet`` -> ``out.rejects.jsonl``."""
    return output.with_name(output.stem + ".rejects.jsonl")


# --------------------------------------------------------------------------- help
def _hide_flag_types(params: Iterable[Any]) -> None:
    """Leave the type column of a flag blank in ``--help``.

    Typer's rich help prints every option's type, ``<bool>`` after a flag too, as if it took a
    value; an option's own metavar replaces that text, so an empty one leaves nothing.
    """
    for param in params:
        if getattr(param, "is_flag", False) and param.metavar is None:
            param.metavar = ""


class _Direct:
    """Typer's coercion of one parameter's value, without Pydantic where it changes nothing.

    Typer 0.29 coerces every value through a Pydantic ``TypeAdapter``: importing Pydantic and
    building the adapters costs a process about 0.15 s of CPU before any work (a tenth of
    ``txanomaly features --feature-set seed`` on 2M rows). A ``str`` option's text, an
    ``int`` option's default within its bounds and a missing value come out of that
    coercion unchanged, so they are returned as they are; any other value (``--chunk-rows``
    typed on the command line, a path) goes through Typer's own coercion, built on first
    use, with its checks and messages.
    """

    def __init__(self, descriptor: Any) -> None:
        self.descriptor = descriptor
        self._typer: Any = None

    def coerce(self, value: Any, param: Any, ctx: Any) -> Any:
        info = self.descriptor.parameter_info
        annotation = self.descriptor.annotation
        if value is None:  # as Typer's RuntimeParam.coerce
            return () if param.multiple or param.nargs == -1 else None
        if info.parser is None and self.descriptor.file_annotation is None and (
                (annotation is str and type(value) is str) or (
                    annotation is int and type(value) is int and not info.clamp
                    and (info.min is None or value >= info.min)
                    and (info.max is None or value <= info.max))):
            return value
        if self._typer is None:
            from typer._coercion import build_runtime_param

            self._typer = build_runtime_param(self.descriptor)
        return self._typer.coerce(value, param, ctx)


def _direct_coercion(params: Iterable[Any]) -> None:
    """Give each parameter :class:`_Direct` coercion (where Typer's internals are as known)."""
    for param in params:
        if getattr(param, "_runtime_param", False) is None and hasattr(param, "type_descriptor"):
            param._runtime_param = _Direct(param.type_descriptor)


class _FlagsWithoutType:
    """Mixin for Typer's command classes: flags are shown without a type in ``--help``; values
    are coerced without Pydantic where that changes nothing (:class:`_Direct`)."""

    params: list[Any]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        _hide_flag_types(self.params)
        _direct_coercion(self.params)

    def get_help_option(self, ctx: Any) -> Any:
        option = super().get_help_option(ctx)  # type: ignore[misc]  # built on first use
        _hide_flag_types([option])
        _direct_coercion([option])
        return option


class FlagCommand(_FlagsWithoutType, TyperCommand):
    """A command whose ``--help`` shows flags (``--quiet``, ``--help``) without ``<bool>``."""


class FlagGroup(_FlagsWithoutType, TyperGroup):
    """The ``txanomaly`` group, with flags shown as in :class:`FlagCommand`."""


def add_group(app: typer.Typer, name: str, help: str, epilog: str,
              commands: dict[str, Callable[..., Any]]) -> None:
    """Add a command group ``name`` (``txanomaly NAME COMMAND``) to ``app``: each command
    with the example ``epilog``, flags shown without their type, help when called bare."""
    group = typer.Typer(name=name, no_args_is_help=True, cls=FlagGroup, help=help)
    for command, func in commands.items():
        group.command(command, cls=FlagCommand, epilog=epilog)(func)
    app.add_typer(group)
