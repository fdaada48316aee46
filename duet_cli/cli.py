"""The `duet` Typer app: registers the subcommands and maps every DuetError to one line on stderr."""

from __future__ import annotations

import errno
import os
import sys
from typing import Annotated, NoReturn

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


# an uncaught OSError with one of these is a full or read-only disk, not a bug
_WRITE_ERRNOS = frozenset(
    getattr(errno, name) for name in ("ENOSPC", "EFBIG", "EROFS", "EDQUOT") if hasattr(errno, name)
)


def _write_failure(exc: OSError) -> str:
    """The line for a write fault that no command caught: the file when the error names one; standard
    output when the fault came from inside the results console (`> file` on a full disk)."""
    from duet_cli.console import out, stdout_failed

    if exc.filename:
        return f"cannot write {exc.filename}: {exc.strerror or exc}"
    tb = exc.__traceback__
    while tb is not None:  # Rich's write names no file: find its stdout console among the frames
        if tb.tb_frame.f_locals.get("self") is out:
            return str(stdout_failed(exc))
        tb = tb.tb_next
    return f"cannot write an output file: {exc.strerror or exc}"


def main() -> None:
    """Console-script entry point: run the app, turning DuetError (and stray failures) into one line."""
    from rich.markup import escape

    from duet_cli.console import err, sanitize_width_env
    from duet_cli.errors import DuetError

    sanitize_width_env()  # before Typer builds its own consoles: COLUMNS=0 would blank help and errors
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
    except OSError as exc:
        if debug or exc.errno not in _WRITE_ERRNOS:
            _internal_error(exc, debug)
        err.print(f"[bold red]error:[/] {escape(_write_failure(exc))}")
        sys.exit(1)
    except Exception as exc:  # a bug, not bad input: still one line, traceback on request
        _internal_error(exc, debug)


def _internal_error(exc: Exception, debug: bool) -> NoReturn:
    from rich.markup import escape

    from duet_cli.console import err

    if debug:
        raise exc
    err.print(
        f"[bold red]internal error:[/] {escape(type(exc).__name__)}: {escape(str(exc))} "
        "(set DUET_DEBUG=1 for the traceback)"
    )
    sys.exit(1)
