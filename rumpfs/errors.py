"""The one exception type the command line turns into ``rumpfs: error: ...``."""


class RumpfsError(Exception):
    """Bad input or a limit exceeded; the message names the path and the limit."""


class OptionError(RumpfsError, ValueError):
    """An option out of range, unknown, or contradicting another one, found
    before any work (the Python API sees a ValueError)."""
