"""The one user-facing error type and the exit codes of the CLI."""

EXIT_OK = 0
EXIT_CHECK_FAILED = 1
EXIT_BAD_INPUT = 2


class OnnxPruneError(Exception):
    """A user error: a one-line message and the exit code the CLI returns.

    ``exit_code`` is 2 for bad input or usage, 1 for a check or threshold that failed.
    """

    def __init__(self, message: str, exit_code: int = EXIT_BAD_INPUT):
        message = " ".join(str(message).split())  # always one line
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code


def check_failed(message: str) -> OnnxPruneError:
    """A failed check or threshold (exit code 1)."""
    return OnnxPruneError(message, exit_code=EXIT_CHECK_FAILED)
