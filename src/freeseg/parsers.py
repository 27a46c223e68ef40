"""Command-line parsers whose errors read as one message, with no usage text before it.

jsonargparse prints the whole usage (about 80 lines for a trainer subcommand) before a parse
error; here the error comes alone, last, with a pointer to ``--help``.
"""

from __future__ import annotations

import sys
from typing import Any, NoReturn

from jsonargparse import ArgumentParser


class OneLineErrors:
    """Mixin for a jsonargparse parser: ``prog: error: message`` on stderr, exit code 2."""

    def error(self, message: str, ex: Exception | None = None) -> NoReturn:
        parser: Any = getattr(ex, "subcommand_parser", None) or self
        if not getattr(self, "exit_on_error", True):
            super().error(message, ex)  # type: ignore[misc]
        prog = str(parser.prog).replace(" [options]", "")
        sys.stderr.write(f"({prog} --help lists the options)\n{prog}: error: {message}\n")
        raise SystemExit(2)


class ToolParser(OneLineErrors, ArgumentParser):
    """The parser of the tool subcommands (``synth``, ``segment``, ``convert-coco``)."""
