"""How every command ends: errors about the user's input as one message and a non-zero exit status, other errors
with their traceback.

A run with `--debug` on its command line, or with `QDROP_DEBUG=1` in the environment, shows the traceback of user
errors too.
"""

import argparse
import os
import sys
from collections.abc import Sequence
from typing import Callable, Optional

from mmdet.utils.errors import UserError

DEBUG_ENV = "QDROP_DEBUG"
DEBUG_FLAG = "--debug"
USER_ERROR_STATUS = 2


def add_debug_flag(parser: argparse.ArgumentParser) -> None:
    """Document and accept `--debug` (read by `run_command` before the arguments are parsed)."""
    parser.add_argument(
        DEBUG_FLAG, action="store_true", help=f"show the traceback of errors about the input too (or {DEBUG_ENV}=1)"
    )


def message(error: BaseException) -> str:
    """The error's message as written (a KeyError's str() would quote it)."""
    if len(error.args) == 1 and isinstance(error.args[0], str):
        return error.args[0]
    return str(error)


def run_command(main: Callable[[Optional[Sequence[str]]], object], argv: Optional[Sequence[str]] = None) -> int:
    """Run a command's `main(argv)`; returns its exit status.

    Args:
        main: the command, taking its arguments.
        argv: the arguments (default: sys.argv[1:]).

    Returns:
        0 when `main` completes, 2 after an error about the user's input (printed as `error: <message>` on stderr,
        without traceback unless debugging). Any other error propagates with its traceback.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = DEBUG_FLAG in argv or os.environ.get(DEBUG_ENV, "0") not in ("", "0")
    try:
        main(argv)
    except UserError as error:
        if debug:
            raise
        print(f"error: {message(error)}", file=sys.stderr)
        return USER_ERROR_STATUS
    return 0
