"""The `duet` Typer app: registers the subcommands and maps every DuetError to one line on stderr."""

from __future__ import annotations

import os
import sys
from typing import Annotated

import typer

from duet_cli.commands import eval_cmd
from duet_cli.commands import infer as infer_cmd
from duet_cli.commands import profile as profile_cmd
from duet_cli.commands import profiles as profiles_cmd
from duet_cli.commands import train as train_cmd
from duet_cli.commands import visualize as visualize_cmd

app = typer.Typer(
    name="duet",
    help="Cheaper vision-language models: two-stage visual token reduction (VisionZip + PyramidDrop).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version_line() -> str:
    """duet's version and the torch / transformers it runs on, read from package metadata (no imports)."""
    from importlib import metadata

    from duet_cli import __version__
    from duet_cli.compat import TESTED_RANGE

    def installed(dist: str) -> str:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            return "not installed"

    return (
        f"duet {__version__} (torch {installed('torch')}, transformers {installed('transformers')}; "
        f"tested with transformers{TESTED_RANGE})"
    )


def _show_version(value: bool) -> None:
    if value:
        typer.echo(_version_line())  # one line at any terminal width
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version",
            help="Print duet's, torch's and transformers' versions and exit.",
            callback=_show_version,
            is_eager=True,
        ),
    ] = False,
) -> None:
    """Cheaper vision-language models: two-stage visual token reduction (VisionZip + PyramidDrop)."""


app.command("infer")(infer_cmd.infer)
app.command("eval")(eval_cmd.eval_cmd)
app.add_typer(profiles_cmd.app, name="profiles")
app.command("visualize")(visualize_cmd.visualize)
app.command("profile")(profile_cmd.profile)
app.command("train")(train_cmd.train)


def main() -> None:
    """Console-script entry point: run the app, turning DuetError (and stray failures) into one line."""
    from rich.markup import escape

    from duet_cli.console import err
    from duet_cli.errors import DuetError

    debug = bool(os.environ.get("DUET_DEBUG"))
    try:
        app(standalone_mode=True)
    except DuetError as exc:
        if debug:
            raise
        err.print(f"[bold red]error:[/] {escape(str(exc))}")
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        err.print("[red]interrupted[/]")
        sys.exit(130)
    except Exception as exc:  # a bug, not bad input: still one line, traceback on request
        if debug:
            raise
        err.print(
            f"[bold red]internal error:[/] {escape(type(exc).__name__)}: {escape(str(exc))} "
            "(set DUET_DEBUG=1 for the traceback)"
        )
        sys.exit(1)
