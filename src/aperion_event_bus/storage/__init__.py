"""Storage: the redacted JSONL audit log and the embedded durable SQLite store."""

from .audit_log import AuditLogger, RedactorLike
from .sqlite import (
    CompactionReport,
    SQLiteDLQBackend,
    SQLiteStore,
    StoreClosedError,
    StoreCorruptError,
    StoreError,
    StoreStats,
)

__all__ = [
    "AuditLogger",
    "CompactionReport",
    "RedactorLike",
    "SQLiteDLQBackend",
    "SQLiteStore",
    "StoreClosedError",
    "StoreCorruptError",
    "StoreError",
    "StoreStats",
]
