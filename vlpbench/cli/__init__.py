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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
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
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except VlpbenchError as exc:
        print(f"vlpbench {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"vlpbench {args.command}: interrupted; completed records are kept, run again to resume", file=sys.stderr)
        return 130
