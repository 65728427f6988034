"""The shared command-line runner: one parser of every option, one error policy.

Bad input the toolkit can name (:class:`core.errors.ToolkitError`: configuration, data,
trial-list, checkpoint and output errors) ends with ``error: <message>`` on stderr and exit
status 2, without a traceback. Any other exception is a bug and keeps its traceback.
"""
from __future__ import annotations

import argparse
from typing import Any, Callable, Dict, Optional, Sequence, TypeVar

from core.config import PRECEDENCE, add_options, load_config
from core.errors import ConfigError, ToolkitError
from core.logs import setup_logging

Result = TypeVar("Result")
# The options of data-parallel processes (core.distributed), and the commands where they do something.
DISTRIBUTED_OPTIONS = ("distributed", "nproc_per_node", "dist_timeout", "port")
DATA_PARALLEL_COMMANDS = ("trainSpeakerNet.py", "trainSpeakerNet_Eval.py --eval", "python -m tools.embed")


def build_parser(description: str) -> argparse.ArgumentParser:
    """A parser with --config and every option of the table (grouped by section in --help)."""
    parser = argparse.ArgumentParser(description=f"{description}\n{PRECEDENCE}",
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_options(parser)
    return parser


def check_distributed_options(config: Dict[str, Any], data_parallel: bool) -> None:
    """The options of data-parallel processes written on the command line where they would do nothing are a
    ConfigError naming the option: any of them in a command that runs in one process (``data_parallel`` false),
    and their settings without ``distributed`` in one that can run data-parallel. From a YAML (shared by
    training and the other commands) they pass."""
    given = [name for name in DISTRIBUTED_OPTIONS if name in getattr(config, "cli", ())]
    if given and not data_parallel:
        raise ConfigError(f"--{given[0]}: this command runs in one process, so --{given[0]} would do nothing; "
                          f"remove it (data-parallel processes run in {', '.join(DATA_PARALLEL_COMMANDS)}).")
    settings = [name for name in given if name != "distributed"]
    if settings and not config["distributed"]:
        raise ConfigError(f"--{settings[0]} sets up data-parallel processes, which run only with --distributed: "
                          f"add --distributed, or remove --{settings[0]}.")


def run_cli(parser: argparse.ArgumentParser, action: Callable[[Dict[str, Any]], Result],
            argv: Optional[Sequence[str]] = None,
            show: Optional[Callable[[Result], str]] = None, data_parallel: bool = False) -> Optional[Result]:
    """Merge the configuration, run ``action`` on it and print ``show(result)`` (when given and
    the result is not None) on stdout. Toolkit errors exit with status 2 and a one-line message.
    ``data_parallel``: the command can run in data-parallel processes (``--distributed``); in one that cannot,
    the distributed options on the command line are errors (:func:`check_distributed_options`)."""
    try:
        config = load_config(parser, argv)
        check_distributed_options(config, data_parallel)
        result = action(config)
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
