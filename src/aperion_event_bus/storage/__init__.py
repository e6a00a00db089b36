"""Storage: the JSONL audit log (and, beside it, the embedded SQLite store)."""

from .audit_log import AuditLogger, RedactorLike

__all__ = ["AuditLogger", "RedactorLike"]
