"""The ``txanomaly`` command. Thin: parse options, call the core, map errors to exit codes.

Each concept registers its commands from its own module (``synth``: synthetic data,
``data``: features, ``model``: train/score, ``analysis``: report/evaluate/tune/demo,
``serve``: the API server).
"""

from __future__ import annotations

import importlib

import typer

app = typer.Typer(
    name="txanomaly",
    help="Find anomalous financial transactions with a Self-Organizing Map.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)

def _version(value: bool) -> None:
    if value:
        from txanomaly import __version__

        typer.echo(f"txanomaly {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                 help="Print the version and exit."),
) -> None:
    """Find anomalous financial transactions with a Self-Organizing Map.

    Start with [bold]txanomaly demo[/]; every command's --help shows an example.
    """


# Modules that add commands to ``app``; each defines ``register(app)``.
_COMMAND_MODULES = ("synth", "data", "model", "analysis", "serve")


def _register_all() -> None:
    for name in _COMMAND_MODULES:
        try:
            module = importlib.import_module(f"txanomaly.cli.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"txanomaly.cli.{name}":
                continue  # that group of commands is not part of this build yet
            raise
        module.register(app)


_register_all()


def main() -> None:
    """Entry point of the ``txanomaly`` console script."""
    app()
