"""User-facing errors: one line on stderr, exit code 2, no traceback."""

from __future__ import annotations

import sys
from typing import Callable, Sequence


class UserError(Exception):
    """Bad input from the user (a file, record, key or option). Its message is the whole report."""


EXIT_USER_ERROR = 2


def one_line(err: BaseException) -> str:
    """An exception's message on one line (its type's name where it has none)."""
    return " ".join(str(err).split()) or type(err).__name__


def run_cli(main: Callable[[Sequence[str] | None], int | None], argv: Sequence[str] | None = None) -> int:
    """Run a command's main(); turn UserError into one line on stderr and exit code 2."""
    try:
        return int(main(argv) or 0)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
