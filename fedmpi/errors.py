"""The one exception type for bad input (config, data, paths, traces).

A `UsageError` is the user's to fix: fedmpi prints its message as one line,
without a traceback, and exits with status 2. Everything else is a bug or a
failure and ends the whole MPI job with the failing rank's traceback.
"""


class UsageError(Exception):
    """Bad input: the message says what is wrong and how to fix it."""
