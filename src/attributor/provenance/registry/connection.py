"""How the registry's connections behave: SQLite's lock wait, WAL mode and explicit ``BEGIN``,
and which database errors are transient (retried) rather than reported."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

SQLITE_BUSY_TIMEOUT_S = 30.0
_RETRIES = 4  # attempts for "database is locked" / serialization failures / deadlocks


def _sqlite_on_connect(dbapi_connection: Any, _record: Any) -> None:
    dbapi_connection.isolation_level = None  # transactions are begun explicitly (see _sqlite_on_begin)
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute(f"PRAGMA busy_timeout = {int(SQLITE_BUSY_TIMEOUT_S * 1000)}")
        cursor.execute("PRAGMA foreign_keys = ON")
        try:
            cursor.execute("PRAGMA journal_mode = WAL")  # persistent; lets readers and one writer overlap
        except Exception:  # a read-only file keeps its journal mode; its writes are refused later, in one line
            pass
    finally:
        cursor.close()


def _sqlite_on_begin(conn: Connection) -> None:
    mode = conn.get_execution_options().get("attributor_sqlite_begin", "DEFERRED")
    conn.exec_driver_sql(f"BEGIN {mode}")


def _retryable(err: sa.exc.DBAPIError) -> bool:
    orig = err.orig
    state = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None) or ""
    return state in ("40001", "40P01") or "database is locked" in str(orig).lower()
