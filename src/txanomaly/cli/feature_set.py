"""``txanomaly feature-set show`` and ``check``: feature sets as files.

``show`` writes a built-in set (or a file's) in the file format, as a start for one's own;
``check`` reads a file as ``--feature-set PATH`` will and says what it declares, or where it is
wrong (file, line, field). The format and its errors: :mod:`txanomaly.features.files` and
docs/features.md ("Your own feature set in a file").
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, cast

import typer
from rich.markup import escape

from txanomaly.cli._common import JsonOut, Output, Quiet, add_group, handle_errors
from txanomaly.features import FEATURE_SETS
from txanomaly.features.files import (
    FORMATS,
    Format,
    dump_feature_set,
    load_feature_set,
    resolve_feature_set,
)

EXAMPLE = ("Example: [bold]txanomaly feature-set show standard -o mine.toml[/], edit it, "
           "[bold]txanomaly feature-set check mine.toml[/], then [bold]txanomaly train tx.json "
           "-o model/ --feature-set mine.toml[/]")


def register(app: typer.Typer) -> None:
    """Add the ``feature-set`` group (``show``, ``check``) to ``app``."""
    add_group(app, "feature-set", "Feature sets as JSON or TOML files: write one, check one.",
              EXAMPLE, {"show": show, "check": check})


@handle_errors
def show(
    feature_set: Annotated[str, typer.Argument(
        help=f"A built-in set ({', '.join(FEATURE_SETS)}) or a .json/.toml file.")] = "standard",
    format: Annotated[str | None, typer.Option(
        "--format", help="toml or json (default: the output's extension, else toml).")] = None,
    output: Annotated[Path | None, typer.Option(
        "--output", "-o", help="Write here (.toml or .json) instead of printing.")] = None,
) -> None:
    """Print a feature set in the file format that --feature-set PATH reads."""
    fmt = format.lower() if format is not None else (
        FORMATS.get(output.suffix.lower(), "toml") if output is not None else "toml")
    if fmt not in FORMATS.values():
        raise typer.BadParameter(f"{format!r}: expected toml or json", param_hint="--format")
    if output is not None and FORMATS.get(output.suffix.lower()) != fmt:
        raise typer.BadParameter(f"{output} does not end in .{fmt}", param_hint="--output")
    text = dump_feature_set(resolve_feature_set(feature_set), cast(Format, fmt))
    if output is None:
        typer.echo(text, nl=False)
        return
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(text, encoding="utf-8")
    typer.echo(f"wrote {output}", err=True)


@handle_errors
def check(
    path: Annotated[Path, typer.Argument(help="A feature-set file: .json or .toml.")],
    quiet: Quiet = False,
    json_out: JsonOut = False,
) -> None:
    """Check a feature-set file; print its features, or the line and field that is wrong."""
    out = Output(quiet, json_out)
    fs = load_feature_set(path)
    out.print(f"{escape(str(path))}: feature set {escape(repr(fs.name))}, "
              f"{len(fs.features)} feature{'s' * (len(fs.features) != 1)}, scaling "
              f"{fs.scaling}", highlight=False)
    for feature in fs.features:
        out.print(f"  {escape(feature.name)}: {escape(feature.label)}", highlight=False)
    out.summary({"path": str(path), **fs.to_dict()})
