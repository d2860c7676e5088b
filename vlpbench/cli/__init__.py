"""The ``vlpbench`` command line: it parses arguments and calls the API; nothing imports it.

Each subcommand lives in a module of this package exposing ``register(subparsers)``, which adds its
parser with ``set_defaults(func=...)``.  A user mistake (:class:`VlpbenchError`) is printed as one
line, without a traceback, and exits with status 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from vlpbench import __version__
from vlpbench.errors import VlpbenchError

# Subcommand modules, in the order their commands appear in --help.
COMMAND_MODULES = (
    "measure",
    "reporting",
    "training",
)


class Parser(argparse.ArgumentParser):
    """argparse with the project's error shape: one line on stderr (no usage block), exit status 2."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message}; see `{self.prog} --help`\n")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="vlpbench",
        description="Where the time goes in vision-and-language pretraining architectures (ViLT taxonomy).",
    )
    parser.add_argument("--version", action="version", version=f"vlpbench {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for mod in COMMAND_MODULES:
        importlib.import_module(f"{__name__}.{mod}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, or a parse error already printed as one line
        return exc.code if isinstance(exc.code, int) else 2
    args.argv = list(sys.argv[1:] if argv is None else argv)  # recorded in run.json by the measuring commands
    if not getattr(args, "func", None):
        commands = ", ".join(parser._subparsers._group_actions[0].choices)  # type: ignore[union-attr]
        print(f"vlpbench: error: no command given; accepted: {commands} (see `vlpbench --help`)", file=sys.stderr)
        return 2
    try:
        return int(args.func(args) or 0)
    except VlpbenchError as exc:
        print(f"vlpbench {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # a path the checks up front could not foresee (a disk filling, a race)
        where = f" {exc.filename!r}" if exc.filename else ""
        print(f"vlpbench {args.command}: error: {exc.strerror or exc}{where}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"vlpbench {args.command}: interrupted; completed records are kept, run again to resume", file=sys.stderr)
        return 130
