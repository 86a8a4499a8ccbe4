"""The `tts` command: serve, benchmark, make data and train, with test-time compute."""

# `tts --help` answers at once: building the parser imports no command. A command's module
# (tts.commands.NAME) is imported when that command is the one parsed, and adds its arguments
# then, generated from its config, whose module may import the engine; it imports what it runs
# when it runs (benchmarks/cli_startup.py measures it).

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

from tts import __version__
from tts.errors import TTSError

# name -> what `tts --help` says of it, in the order it lists them.
COMMANDS = {
    "bench": "accuracy of a strategy on a dataset at several budgets",
    "compare": "several strategies at the same budgets: accuracy against tokens and time",
    "model": "make model folders",
    "serve": "an OpenAI-compatible server where a request can ask for more thinking",
    "train": "training loops",
    "data": "make training data",
}


class CommandParser(argparse.ArgumentParser):
    """A (sub)command's parser whose arguments `add_arguments` adds only when it is parsed."""

    def __init__(
        self, *args: Any, add_arguments: Callable[[Any], None] | None = None, **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self.add_arguments = add_arguments

    def parse_known_args(
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        if self.add_arguments is not None:
            add_arguments, self.add_arguments = self.add_arguments, None
            add_arguments(self)
        return super().parse_known_args(args, namespace)


def add_command(name: str, parser: argparse.ArgumentParser) -> None:
    importlib.import_module(f"tts.commands.{name}").add_arguments(parser)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tts", description=__doc__)
    parser.add_argument("--version", action="version", version=f"tts {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=CommandParser)
    for name, what in COMMANDS.items():
        commands.add_parser(name, help=what, add_arguments=partial(add_command, name))
    return parser


def main(argv: list[str] | None = None) -> None:
    # Parsing is inside: a flag's value can be a file that fails to read (`--init SIZES.yaml`).
    try:
        args = build_parser().parse_args(argv)
        args.run(args)
    except TTSError as error:
        sys.exit(f"tts: error: {error}")
    except KeyboardInterrupt:
        sys.exit("tts: interrupted; run the same command again to continue")


if __name__ == "__main__":
    main()
