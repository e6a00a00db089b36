"""The shared default ``Redactor`` (kept apart so the wiring modules can use it)."""

from __future__ import annotations

from functools import cache

from .redactor import Redactor

__all__ = ["default_redactor"]


@cache
def default_redactor() -> Redactor:
    """The shared default ``Redactor``: typed tokens, built-in detectors and keys.

    Created on first use and never reconfigured (its settings are read-only),
    so sharing it between threads and libraries is safe.
    """
    return Redactor()
