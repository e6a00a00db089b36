"""Database layout of the event store, its version, and the migrations between versions.

The store marks its files with ``PRAGMA application_id`` and a ``meta`` table
holding ``schema_version``, so a foreign SQLite file is recognised before anything
is written to it. A new database is created by running the version-1 layout and
then every migration in order: the upgrade path an old file takes is the same
code every new file runs, so it is exercised by every test.

Tables (current version):

* ``events``: one row per stored event; ``seq`` is publish order, ``body`` the
  envelope as JSON (``Event.to_jsonl()``), ``size`` its length in UTF-8 bytes.
* ``deliveries``: one row per unacknowledged (event, durable subscription name).
* ``dead_deliveries``: deliveries given up on (moved out of pending for the DLQ).
* ``dlq``: dead-letter entries as JSON of ``FailedEvent.to_dict()``; ``pos`` is put order.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable

from ._errors import StoreCorruptError, StoreError

__all__ = ["APPLICATION_ID", "MIGRATIONS", "SCHEMA_VERSION", "ensure_schema"]

APPLICATION_ID = 0x41504542  # "APEB": aperion event bus

_V1 = (
    "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    "CREATE TABLE events ("
    " seq INTEGER PRIMARY KEY AUTOINCREMENT,"
    " event_id TEXT NOT NULL UNIQUE,"
    " event_type TEXT NOT NULL,"
    " timestamp REAL NOT NULL,"
    " correlation_id TEXT,"
    " body TEXT NOT NULL)",
    "CREATE INDEX events_timestamp ON events(timestamp)",
    "CREATE INDEX events_correlation ON events(correlation_id) WHERE correlation_id IS NOT NULL",
    "CREATE TABLE deliveries ("
    " name TEXT NOT NULL,"
    " seq INTEGER NOT NULL,"
    " attempts INTEGER NOT NULL DEFAULT 0,"
    " PRIMARY KEY (name, seq)) WITHOUT ROWID",
    "CREATE TABLE dlq ("
    " pos INTEGER PRIMARY KEY AUTOINCREMENT,"
    " id TEXT NOT NULL UNIQUE,"
    " timestamp REAL NOT NULL,"
    " event_type TEXT NOT NULL,"
    " reason TEXT NOT NULL,"
    " body TEXT NOT NULL)",
    "CREATE INDEX dlq_timestamp ON dlq(timestamp)",
    "INSERT INTO meta(key, value) VALUES ('schema_version', '1')",
)


def _v1_to_v2(conn: sqlite3.Connection) -> None:
    """v2: ``events.size`` for byte-budget retention, and the ``dead_deliveries`` table."""
    conn.execute("ALTER TABLE events ADD COLUMN size INTEGER NOT NULL DEFAULT 0")
    conn.execute("UPDATE events SET size = length(CAST(body AS BLOB))")
    conn.execute(
        "CREATE TABLE dead_deliveries ("
        " name TEXT NOT NULL,"
        " seq INTEGER NOT NULL,"
        " event_id TEXT NOT NULL,"
        " attempts INTEGER NOT NULL,"
        " error TEXT NOT NULL,"
        " failed_at REAL NOT NULL,"
        " PRIMARY KEY (name, seq)) WITHOUT ROWID"
    )


Migration = Callable[[sqlite3.Connection], None]

#: ``MIGRATIONS[i]`` upgrades a database from version ``i + 1`` to ``i + 2``.
MIGRATIONS: list[Migration] = [_v1_to_v2]
SCHEMA_VERSION = len(MIGRATIONS) + 1


def ensure_schema(conn: sqlite3.Connection, path: str) -> int:
    """Create or upgrade the schema of ``conn`` inside one write transaction.

    Returns the version the file had before (0 for a new file). Raises
    ``StoreCorruptError`` for a foreign SQLite file and ``StoreError`` for a file
    written by a newer version of the package.
    """
    conn.execute("BEGIN IMMEDIATE")
    try:
        found = _current_version(conn, path)
        if found > SCHEMA_VERSION:
            raise StoreError(
                f"the event store {path} has schema version {found}, but this version of "
                f"aperion-event-bus understands up to {SCHEMA_VERSION}; upgrade the package",
                path,
            )
        if found == 0:
            for statement in _V1:
                conn.execute(statement)
            conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
            version = 1
        else:
            version = found
        while version < SCHEMA_VERSION:
            MIGRATIONS[version - 1](conn)
            version += 1
            conn.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(version),))
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return found


def _current_version(conn: sqlite3.Connection, path: str) -> int:
    app_id = conn.execute("PRAGMA application_id").fetchone()[0]
    tables = {
        row[0]
        for row in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
        )
    }
    if app_id == 0 and not tables:
        return 0  # an empty database: ours to initialise
    if app_id != APPLICATION_ID or "meta" not in tables:
        listed = ", ".join(sorted(tables)) or "none"
        raise StoreCorruptError(
            f"{path} is an SQLite database but not an aperion event store "
            f"(application_id={app_id:#x}, tables: {listed}); "
            "point the store at a new file instead",
            path,
        )
    row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    try:
        return int(row[0])
    except (TypeError, ValueError):
        raise StoreCorruptError(
            f"the event store {path} has no valid schema_version in its meta table", path
        ) from None
