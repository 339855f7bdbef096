"""The ``rnnlab`` command line.

Sub-commands are registered in :data:`COMMANDS` as ``name -> (help, add_arguments, run)``.
Each command module (analyze, bench, demo, run, train_cli) declares its own table
``COMMANDS`` and never imports this module; :func:`_load_commands` reads those tables, so
the registry lives here alone and there is no import circle (issue 16). Code outside rnnlab
may still register with :func:`command`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from ._version import __version__

AddArgs = Callable[[argparse.ArgumentParser], None]
Run = Callable[[argparse.Namespace], int]
COMMANDS: dict[str, tuple[str, AddArgs, Run]] = {}


def command(name: str, help: str) -> Callable[[AddArgs], Callable[[Run], Run]]:
    """Register ``rnnlab NAME``: decorate the add-arguments function, then the run function."""

    def with_args(add: AddArgs) -> Callable[[Run], Run]:
        def with_run(run: Run) -> Run:
            COMMANDS[name] = (help, add, run)
            return run

        return with_run

    return with_args


def _load_commands() -> None:
    # The command modules' tables; a command registered with command() keeps its entry.
    from . import analyze, bench, demo, run, train_cli

    for module in (analyze, bench, demo, run, train_cli):
        for name, entry in module.COMMANDS.items():
            COMMANDS.setdefault(name, entry)


def build_parser() -> argparse.ArgumentParser:
    _load_commands()
    parser = argparse.ArgumentParser(
        prog="rnnlab",
        description="Recurrent neural networks of the lecture: real, fast and analysable.",
    )
    parser.add_argument("--version", action="version", version=f"rnnlab {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (help_text, add, _) in sorted(COMMANDS.items()):
        p = sub.add_parser(
            name,
            help=help_text,
            description=help_text,
            formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        )
        add(p)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    if args.command is None:
        parser.print_help()
        return 0
    _, _, run = COMMANDS[args.command]
    return int(run(args) or 0)
