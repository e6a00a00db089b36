"""Lazy access to the optional extras (OpenTelemetry, prometheus_client, structlog).

Nothing in ``aperion_event_bus.observability`` imports an extra at module import
time; code that needs one calls a helper here, which imports it on first use and
turns a missing package into :class:`~aperion_event_bus.errors.MissingExtraError`
(an ``ImportError``) whose message names the extra to install.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from types import ModuleType

from ..errors import MissingExtraError

__all__ = ["is_installed", "is_loaded", "require"]

_installed: dict[str, bool] = {}


def require(module: str, feature: str, extra: str) -> ModuleType:
    """Import ``module`` or raise ``MissingExtraError(feature, extra)``."""
    mod = sys.modules.get(module)
    if mod is not None:
        return mod
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingExtraError(feature, extra) from exc


def is_installed(module: str) -> bool:
    """Whether ``module`` can be imported (checked once, without importing it fully)."""
    if module in sys.modules:  # imported already, or blocked with None (tests)
        return sys.modules[module] is not None
    found = _installed.get(module)
    if found is None:
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):
            found = False
        _installed[module] = found
    return found


def is_loaded(module: str) -> bool:
    """Whether ``module`` was already imported by someone (a dict lookup, no import).

    Used as a fast path: if ``opentelemetry.trace`` was never imported, no span
    can be current, so the tracing helpers can return immediately.
    """
    return sys.modules.get(module) is not None
