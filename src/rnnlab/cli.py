"""The ``rnnlab`` command line.

Sub-commands are registered in :data:`COMMANDS` as ``name -> (help, add_arguments, run)``
so that each part of the library (experiments, training, analysis, benchmarks) plugs in its
own without touching the others.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from . import __version__

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
    # Importing these modules registers their commands.
    from . import analyze as _analyze  # noqa: F401
    from . import bench as _bench  # noqa: F401
    from . import demo  # noqa: F401
    from . import run as _run  # noqa: F401
    from . import train_cli as _train  # noqa: F401


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
