"""Loads the optional C accelerator (``_speedups``), unless disabled.

Every accelerated function has a pure-Python twin that stays the reference; the
modules that use one pick the C version at import when ``speedups`` is not None.
``APERION_EVENT_BUS_NO_EXTENSIONS=1`` (any value but empty or ``0``) keeps the
package in pure Python even when the extension is built.
"""

from __future__ import annotations

import os
from types import ModuleType

__all__ = ["ACCELERATED", "DISABLED", "speedups"]

DISABLED = os.environ.get("APERION_EVENT_BUS_NO_EXTENSIONS", "") not in ("", "0")

speedups: ModuleType | None = None
if not DISABLED:
    try:
        from . import _speedups as speedups
    except ImportError:  # not built (no compiler, or an sdist install without one)
        speedups = None

ACCELERATED = speedups is not None
