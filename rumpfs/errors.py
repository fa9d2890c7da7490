"""The one exception type the command line turns into ``rumpfs: error: ...``."""


class RumpfsError(Exception):
    """Bad input or a limit exceeded; the message names the path and the limit."""
