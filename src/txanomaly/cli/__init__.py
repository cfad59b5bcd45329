"""The ``txanomaly`` command. Thin: parse options, call the core, map errors to exit codes.

Each concept registers its commands from its own module (``synth``: synthetic data,
``data``: features, ``model``: train/score, ``analysis``: report/evaluate/tune/demo,
``serve``: the API server).
"""

from __future__ import annotations

import importlib
import sys

import typer
from typer.core import TyperCommand

from txanomaly.cli._common import FlagCommand, FlagGroup


def _version(value: bool) -> None:
    if value:
        from txanomaly import __version__

        typer.echo(f"txanomaly {__version__}")
        raise typer.Exit()


def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                 help="Print the version and exit."),
) -> None:
    """Find anomalous financial transactions with a Self-Organizing Map.

    Start with [bold]txanomaly demo[/]; every command's --help shows an example.
    """


# Modules that add commands to the app; each defines ``register(app)``.
_COMMAND_MODULES = ("synth", "data", "model", "analysis", "serve", "history", "model_file",
                    "feature_set", "calibrate")
#: The module of each command: running one command imports only its module, so that
#: ``txanomaly features`` does not load PyTorch, scikit-learn or matplotlib (seconds and
#: hundreds of MB).
_MODULE_OF = {"synth": "synth", "features": "data", "train": "model", "score": "model",
              "report": "analysis", "evaluate": "analysis", "tune": "analysis",
              "demo": "analysis", "serve": "serve", "history": "history",
              "model": "model_file", "feature-set": "feature_set", "calibrate": "calibrate"}


def build_app(modules: tuple[str, ...] = _COMMAND_MODULES) -> typer.Typer:
    """The ``txanomaly`` app with the commands of ``modules`` (default: every command)."""
    app = typer.Typer(
        name="txanomaly",
        help="Find anomalous financial transactions with a Self-Organizing Map.",
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_enable=False,
        rich_markup_mode="rich",
        cls=FlagGroup,
    )
    app.callback()(_root)
    for name in modules:
        try:
            module = importlib.import_module(f"txanomaly.cli.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"txanomaly.cli.{name}":
                continue  # that group of commands is not part of this build yet
            raise
        module.register(app)
    for command in app.registered_commands:
        if command.cls in (None, TyperCommand):  # Typer's default: give it ours
            command.cls = FlagCommand
    return app


def __getattr__(name: str) -> typer.Typer:
    """``txanomaly.cli.app``: the app with every command, built on first use."""
    if name == "app":
        globals()["app"] = built = build_app()
        return built
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def main() -> None:
    """Entry point of the ``txanomaly`` console script."""
    command = next((arg for arg in sys.argv[1:] if not arg.startswith("-")), None)
    module = _MODULE_OF.get(command or "")
    build_app((module,) if module else _COMMAND_MODULES)()
