"""The ``sciml`` command: a thin Typer layer over the library, one module per command.

Every :class:`~sciml.errors.SciMLError` becomes one line on stderr and exit code 1
(``--debug`` shows the traceback instead).
"""

from __future__ import annotations

import sys
from typing import Annotated, Optional

import click
import typer

from .. import __version__
from ..errors import Preempted, SciMLError

try:  # typer >= 0.20 vendors its own click: its exceptions are not click's
    from typer._click import exceptions as _typer_click
except ImportError:  # pragma: no cover - older typer uses click itself
    _typer_click = click.exceptions

_EXIT = (click.exceptions.Exit, typer.Exit)
_USAGE = (click.ClickException, _typer_click.ClickException)
_ABORT = (click.exceptions.Abort, typer.Abort)
_HELP = tuple(c for c in (getattr(_typer_click, "NoArgsIsHelpError", None), getattr(click.exceptions, "NoArgsIsHelpError", None)) if c)

app = typer.Typer(
    name="sciml",
    help="Operator learning and scientific ML: generate PDE data, train neural operators, "
    "evaluate them against classical solvers, solve systems.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode=None,
)


def _version(value: bool) -> None:
    if value:
        print(f"sciml {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        Optional[bool], typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = None,
    debug: Annotated[bool, typer.Option("--debug", help="Show full tracebacks for errors.")] = False,
) -> None:
    """sciml: PDE datasets, neural operators, learned and classical solvers."""


def _register() -> None:
    from . import evaluate, generate, info, models, plot, run, solve, sweep, train

    for module in (generate, info, train, evaluate, solve, run, sweep, plot, models):
        module.register(app)
    from . import import_; import_.register(app)


_register()


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    command = typer.main.get_command(app)
    try:
        rv = command.main(args=argv, prog_name="sciml", standalone_mode=False)
    except SciMLError as exc:
        if debug:
            raise
        if isinstance(exc, Preempted):  # the work is saved: say how to continue, not "error"
            sys.stderr.write(f"{exc}\n")
            sys.exit(exc.exit_code)
        sys.stderr.write(f"error: {exc}\n")
        sys.exit(1)
    except _EXIT as exc:
        sys.exit(exc.exit_code)
    except _HELP as exc:  # a command run without arguments prints its help
        exc.show()
        sys.exit(0)
    except _USAGE as exc:
        # bad command-line input (unknown option, missing value): one line, exit code 1
        where = exc.ctx.command_path if getattr(exc, "ctx", None) is not None else "sciml"
        sys.stderr.write(f"error: {exc.format_message()} (see `{where} --help`)\n")
        sys.exit(1)
    except (*_ABORT, KeyboardInterrupt):
        sys.stderr.write("interrupted\n")
        sys.exit(130)
    sys.exit(rv if isinstance(rv, int) else 0)
