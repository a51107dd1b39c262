"""Known failures reported as one `error: ...` line and a non-zero exit.

The entry points (`train_net.py`, `demo/demo.py`, `tools/*`) run their `main` through
`run_reporting_errors` (or decorate it with `reporting_errors`): a mistake in the user's files, config, data or checkpoint, or a
failing disk (permission denied, disk full), ends with one line that names the file or
config key instead of a traceback. Other exceptions are bugs and keep their traceback.
"""
import functools
import sys
from typing import Any, Callable

__all__ = ["UserInputError", "KNOWN_ERRORS", "error_line", "reporting_errors", "run_reporting_errors"]


class UserInputError(ValueError):
    """A problem with the user's files, config, data or checkpoint; the message names the
    file or config key and, where it is not obvious, how to fix it."""


# The project's checks raise ValueError/KeyError naming the file or key (as yacs does for
# config keys); OSError covers missing files, permissions and a full disk.
KNOWN_ERRORS = (UserInputError, ValueError, KeyError, OSError)


def _worker_message(message: str, type_name: str) -> str:
    """torch's DataLoader re-raises a worker's exception with the worker's traceback in
    the message; keep only the original message."""
    if "Original Traceback" not in message:
        return message
    lines = message.rstrip().splitlines()
    for i in range(len(lines) - 1, -1, -1):
        head, sep, rest = lines[i].partition(": ")
        if sep and not lines[i].startswith(" ") and head.split(".")[-1] == type_name:
            return "\n".join([rest] + lines[i + 1 :])
    return lines[-1]


def error_line(exc: BaseException) -> str:
    """The exception as one line (without the `error: ` prefix)."""
    if isinstance(exc, OSError) and exc.filename is not None and exc.strerror:
        message = f"{exc.strerror}: '{exc.filename}'"
    elif isinstance(exc, KeyError) and len(exc.args) == 1 and isinstance(exc.args[0], str):
        message = exc.args[0]  # str(KeyError) quotes its message
    else:
        message = str(exc) or type(exc).__name__
    message = _worker_message(message, type(exc).__name__)
    return " ".join(line.strip() for line in message.splitlines() if line.strip())


def run_reporting_errors(main: Callable[..., Any], *args: Any, **kwargs: Any) -> int:
    """Call `main(*args, **kwargs)`; returns its int result (0 for None), or 1 after
    printing `error: ...` to stderr for a known failure."""
    try:
        result = main(*args, **kwargs)
    except KNOWN_ERRORS as e:
        print(f"error: {error_line(e)}", file=sys.stderr, flush=True)
        return 1
    return result if isinstance(result, int) else 0


def reporting_errors(main: Callable[..., Any]) -> Callable[..., int]:
    """Decorator: `main` run through `run_reporting_errors`."""

    @functools.wraps(main)
    def wrapper(*args: Any, **kwargs: Any) -> int:
        return run_reporting_errors(main, *args, **kwargs)

    return wrapper
