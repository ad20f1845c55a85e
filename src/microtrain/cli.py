"""The `microtrain` command. Each verb lives in microtrain/commands/<verb>.py and exposes
`register(subparsers)`; this file only lists them, so adding a verb touches nothing else."""
from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys

from . import __version__
from .errors import MicrotrainError

VERBS = ("demo", "info", "predict", "train", "plan", "compile", "run", "bench", "fleet")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="microtrain",
        description="On-device training of int8 CNNs inside 256 KB of SRAM: load, train, plan, compile, run.",
    )
    parser.add_argument("--version", action="version", version=f"microtrain {__version__}")
    sub = parser.add_subparsers(dest="verb", metavar="COMMAND")
    for verb in VERBS:
        name = f"microtrain.commands.{verb}"
        if importlib.util.find_spec(name) is not None:
            importlib.import_module(name).register(sub)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except MicrotrainError as e:
        print(f"microtrain {args.verb}: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
