"""1.x import path ``aperion_event_bus.audit``: ``AuditLogger`` and ``Redactor``.

Kept as a thin re-export; the implementations live in
``aperion_event_bus.storage.audit_log`` and ``aperion_event_bus.redaction``.
"""

from __future__ import annotations

from .redaction import Redactor
from .storage.audit_log import AuditLogger

__all__ = ["AuditLogger", "Redactor"]
