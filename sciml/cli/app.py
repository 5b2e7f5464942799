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
from ..errors import SciMLError

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
    from . import evaluate, generate, info, models, plot, run, solve, train

    for module in (generate, info, train, evaluate, solve, run, plot, models):
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
        sys.stderr.write(f"error: {exc}\n")
        sys.exit(1)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except (click.exceptions.Abort, KeyboardInterrupt):
        sys.stderr.write("interrupted\n")
        sys.exit(130)
    sys.exit(rv if isinstance(rv, int) else 0)
