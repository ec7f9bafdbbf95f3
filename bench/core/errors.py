"""Errors a user can act on: the CLI prints their message alone and exits with code 2."""

from __future__ import annotations


class UsageError(Exception):
    """A user error: printed as one message, exit code 2, no traceback."""
