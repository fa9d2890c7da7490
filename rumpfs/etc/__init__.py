"""Generated /etc content: password databases and the launch configuration."""

from __future__ import annotations


def finish(tree, opts, byteorder: str, policy) -> None:
    """Complete /etc once every layer is applied (filled in by the stubetc work)."""
