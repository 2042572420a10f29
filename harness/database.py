"""Reading order-service's database from the outside, whichever engine ``ORDERS_DATABASE_URL`` names.

For the tests and the bench, to check what was stored; asyncpg only for a PostgreSQL URL.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from typing import Any

SQLITE_PREFIX = "sqlite:///"


def sqlite_url(path: object) -> str:
    """The ``ORDERS_DATABASE_URL`` of a SQLite file (an absolute path gives the four slashes)."""
    return f"{SQLITE_PREFIX}{path}"


def query(database_url: str, statement: str) -> list[tuple[Any, ...]]:
    """Run one read-only statement and return its rows as tuples; callable with or without a running loop."""
    if database_url.startswith(SQLITE_PREFIX):
        with sqlite3.connect(database_url.removeprefix(SQLITE_PREFIX)) as connection:
            found: list[tuple[Any, ...]] = connection.execute(statement).fetchall()
            return found
    rows: list[tuple[Any, ...]] = _in_thread(_postgres_query(database_url, statement))
    return rows


async def _postgres_query(database_url: str, statement: str) -> list[tuple[Any, ...]]:
    import asyncpg  # only where a PostgreSQL URL is read

    connection = await asyncpg.connect(database_url, timeout=10)
    try:
        return [tuple(record) for record in await connection.fetch(statement)]
    finally:
        await connection.close()


def _in_thread(coroutine: Any) -> Any:
    """Run ``coroutine`` on a loop of its own in another thread: an async test's loop is busy with this call."""
    result: list[Any] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            result.append(asyncio.run(coroutine))
        except BaseException as exc:  # handed to the caller below
            errors.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(30)
    if errors:
        raise errors[0]
    if not result:
        raise TimeoutError("the database did not answer within 30 s")
    return result[0]


def order_count(database_url: str) -> int:
    count: int = query(database_url, "SELECT count(*) FROM orders")[0][0]
    return count


def order_statuses(database_url: str) -> dict[str, int]:
    return {
        status: count for status, count in query(database_url, "SELECT status, count(*) FROM orders GROUP BY status")
    }
