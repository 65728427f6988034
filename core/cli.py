"""The shared command-line runner: one parser of every option, one error policy.

Bad input the toolkit can name (:class:`core.errors.ToolkitError`: configuration, data,
trial-list, checkpoint and output errors) ends with ``error: <message>`` on stderr and exit
status 2, without a traceback. Any other exception is a bug and keeps its traceback.
"""
from __future__ import annotations

import argparse
from typing import Any, Callable, Dict, Optional, Sequence, TypeVar

from core.config import PRECEDENCE, add_options, load_config
from core.errors import ToolkitError
from core.logs import setup_logging

Result = TypeVar("Result")


def build_parser(description: str) -> argparse.ArgumentParser:
    """A parser with --config and every option of the table (grouped by section in --help)."""
    parser = argparse.ArgumentParser(description=f"{description}\n{PRECEDENCE}",
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_options(parser)
    return parser


def run_cli(parser: argparse.ArgumentParser, action: Callable[[Dict[str, Any]], Result],
            argv: Optional[Sequence[str]] = None,
            show: Optional[Callable[[Result], str]] = None) -> Optional[Result]:
    """Merge the configuration, run ``action`` on it and print ``show(result)`` (when given and
    the result is not None) on stdout. Toolkit errors exit with status 2 and a one-line message."""
    try:
        result = action(load_config(parser, argv))
    except ToolkitError as err:
        parser.exit(getattr(err, "exit_code", 2), f"error: {err}\n")
    if show is not None and result is not None:
        print(show(result), flush=True)
    return result


def run_tool(parser: argparse.ArgumentParser, action: Callable[[argparse.Namespace], Result],
             argv: Optional[Sequence[str]] = None) -> Optional[Result]:
    """A tool with its own arguments (not the option table): log to stderr, run ``action(args)``; toolkit
    errors exit with status 2 and a one-line message."""
    args = parser.parse_args(argv)
    setup_logging()
    try:
        return action(args)
    except ToolkitError as err:
        parser.exit(2, f"error: {err}\n")
