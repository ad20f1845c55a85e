"""The `microtrain` command. Each verb lives in microtrain/commands/<verb>.py and exposes
`register(subparsers)`; this file only lists them, so adding a verb touches nothing else."""
from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys

from . import __version__
from .cli_checks import join_negative_values
from .errors import MicrotrainError

VERBS = ("demo", "info", "predict", "train", "plan", "compile", "run", "export", "bench", "fleet")


class Parser(argparse.ArgumentParser):
    """argparse with one-line usage errors (`microtrain VERB: error: ...; see microtrain VERB --help`);
    its sub-parsers are of this class too (argparse's default parser_class)."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="microtrain",
        description="On-device training of int8 CNNs inside 256 KB of SRAM: load, train, plan, compile, run, export.",
    )
    parser.add_argument("--version", action="version", version=f"microtrain {__version__}")
    sub = parser.add_subparsers(dest="verb", metavar="COMMAND")
    for verb in VERBS:
        name = f"microtrain.commands.{verb}"
        if importlib.util.find_spec(name) is not None:
            importlib.import_module(name).register(sub)
    return parser


def value_options(parser: argparse.ArgumentParser) -> set[str]:
    """Every option string, of any verb, that takes one value."""
    out = set()
    for p in [parser, *next((a.choices.values() for a in parser._actions
                              if isinstance(a, argparse._SubParsersAction)), [])]:
        for a in p._actions:
            if a.option_strings and a.nargs is None:
                out.update(a.option_strings)
    return out


def main(argv=None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(join_negative_values(argv, value_options(parser)))
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except MicrotrainError as e:
        print(f"microtrain {args.verb}: error: " + "; ".join(str(e).splitlines()), file=sys.stderr)
        return 1
    except BrokenPipeError:  # output piped into `head`: not an error of the command
        sys.stderr.close()
        return 141
    except OSError as e:  # last line of defence: commands check their paths first (cli_checks); this one changed since
        where = f"{e.filename}: " if e.filename else ""
        print(f"microtrain {args.verb}: error: {where}{e.strerror or e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
