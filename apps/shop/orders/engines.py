"""The two engines under the order store: SQLite embedded, PostgreSQL as a server.

Everything that differs between them is here: connecting, the placeholder style, what a lost
connection or a duplicate key looks like, how start-up migrations are kept to one at a time, and
the connection pool. The statements, the spans and the order logic are written once, in
``shop.orders.store``. Statements use ``:name`` placeholders; PostgreSQL's ``$n`` are made from them.
"""

from __future__ import annotations

import re
import sqlite3
import time
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import aiosqlite
import asyncpg
from asyncpg import Record
from asyncpg.pool import PoolConnectionProxy
from opentelemetry import metrics
from opentelemetry.metrics import CallbackOptions, Observation

from shop.settings import SQLITE_URL_PREFIX, OrdersSettings

Row = dict[str, Any]

# Semantic-convention names of the pool's metrics and their attributes.
POOL_NAME = "db.client.connection.pool.name"
CONNECTION_STATE = "db.client.connection.state"


class UniqueViolation(Exception):
    """A row with this key exists already."""


class DatabaseUnavailable(Exception):
    """The database cannot be reached in time: down, restarting, or every pooled connection busy."""


class Engine(ABC):
    """One database, as the store uses it: run a statement, get its rows as dicts."""

    system: str  # db.system.name
    namespace: str  # db.namespace
    pool_name: str
    # server.address and server.port, where there is a server.
    server: dict[str, str | int]
    # Whether a statement can wait inside the database without holding up every other order.
    supports_delay = False

    @abstractmethod
    async def fetch(self, statement: str, params: Mapping[str, Any]) -> list[Row]:
        """Run one statement (autocommitted) and return its rows."""

    @abstractmethod
    async def migrate(self, statements: Sequence[str]) -> None:
        """Run the schema statements once, whoever else starts at the same moment."""

    @abstractmethod
    async def columns(self, table: str) -> set[str]:
        """The columns ``table`` has; empty when there is no such table."""

    @abstractmethod
    async def ping(self) -> None: ...

    @abstractmethod
    async def close(self) -> None: ...

    @abstractmethod
    def pool_state(self) -> tuple[int, int, int, int]:
        """(used, idle, max, pending) connections and requests, for the pool's metrics."""


class SqliteEngine(Engine):
    system = "sqlite"
    server: dict[str, str | int] = {}  # noqa: RUF012  # nothing to reach: the file is local

    def __init__(self, connection: aiosqlite.Connection, path: Path) -> None:
        self._db = connection
        self.namespace = self.pool_name = path.name
        # aiosqlite runs one statement at a time on its thread: the rest queue behind it.
        self._running = 0

    @classmethod
    async def open(cls, path: Path) -> SqliteEngine:
        path.parent.mkdir(parents=True, exist_ok=True)
        # Autocommit: every statement here is a single atomic write, so nothing is left half-done.
        connection = await aiosqlite.connect(path, isolation_level=None)
        connection.row_factory = sqlite3.Row
        # WAL survives a killed process without losing committed rows, and lets readers run beside the writer.
        await connection.execute("PRAGMA journal_mode=WAL")
        await connection.execute("PRAGMA synchronous=NORMAL")
        return cls(connection, path)

    async def fetch(self, statement: str, params: Mapping[str, Any]) -> list[Row]:
        self._running += 1
        try:
            async with self._db.execute(statement, params) as cursor:
                return [dict(row) for row in await cursor.fetchall()]
        except sqlite3.IntegrityError as exc:
            raise UniqueViolation(str(exc)) from None
        finally:
            self._running -= 1

    async def migrate(self, statements: Sequence[str]) -> None:
        # One process owns the file (ORDERS_DATABASE_URL=sqlite:/// means one replica): no lock needed.
        await self._db.execute("BEGIN IMMEDIATE")
        try:
            for statement in statements:
                await self._db.execute(statement)
        except BaseException:
            await self._db.execute("ROLLBACK")
            raise
        await self._db.execute("COMMIT")

    async def columns(self, table: str) -> set[str]:
        async with self._db.execute("SELECT name FROM pragma_table_info(?)", (table,)) as cursor:
            return {row[0] for row in await cursor.fetchall()}

    async def ping(self) -> None:
        await self._db.execute("SELECT 1")

    async def close(self) -> None:
        OPEN_ENGINES.discard(self)
        await self._db.close()

    def pool_state(self) -> tuple[int, int, int, int]:
        used = min(self._running, 1)
        return used, 1 - used, 1, max(self._running - 1, 0)


_PLACEHOLDER = re.compile(r"(?<![:\w]):([a-z_][a-z0-9_]*)")

# A fixed key for pg_advisory_xact_lock: replicas starting together migrate one after the other.
_MIGRATION_LOCK = 0x5340_0001

# asyncpg's errors for a connection that is gone or never came: the server is down, restarting or full.
_CONNECTION_ERRORS = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,  # SQLSTATE class 08
    asyncpg.InterfaceError,
    # A connection that the server dropped while asyncpg was between two protocol states ("cannot switch to
    # state 12; another operation is in progress"): seen when PostgreSQL stops in the middle of orders.
    asyncpg.InternalClientError,
    asyncpg.exceptions.OperatorInterventionError,  # class 57: admin_shutdown, crash_shutdown, cannot_connect_now
    asyncpg.exceptions.InsufficientResourcesError,  # class 53: too_many_connections, disk_full
)


def positional(statement: str) -> tuple[str, tuple[str, ...]]:
    """``:name`` placeholders as PostgreSQL's ``$1, $2, ...``, and the names in that order."""
    names: list[str] = []

    def number(match: re.Match[str]) -> str:
        if match[1] not in names:
            names.append(match[1])
        return f"${names.index(match[1]) + 1}"

    return _PLACEHOLDER.sub(number, statement), tuple(names)


class PostgresEngine(Engine):
    system = "postgresql"
    supports_delay = True

    def __init__(self, pool: asyncpg.Pool, settings: OrdersSettings, host: str, port: int, database: str) -> None:
        self._pool = pool
        self._acquire_timeout_s = settings.db_acquire_timeout_s
        self.namespace = database
        self.server = {"server.address": host, "server.port": port}
        self.pool_name = f"{host}:{port}/{database}"
        self._pending = 0
        self._compiled: dict[str, tuple[str, tuple[str, ...]]] = {}

    @classmethod
    async def open(cls, settings: OrdersSettings) -> PostgresEngine:
        url = urlsplit(settings.database_url)
        host, port, database = url.hostname or "localhost", url.port or 5432, unquote(url.path.lstrip("/"))
        pool = asyncpg.create_pool(
            settings.database_url,
            # Nothing is opened before the first order: a server that is still starting is not an error yet.
            min_size=0,
            max_size=settings.db_pool_size,
            # Connecting counts against the acquire timeout too: a server that is down answers in time.
            timeout=settings.db_acquire_timeout_s,
            command_timeout=settings.db_statement_timeout_s,
        )
        await pool
        return cls(pool, settings, host, port, database)

    @asynccontextmanager
    async def _connection(self) -> AsyncIterator[PoolConnectionProxy[Record]]:
        self._pending += 1
        started = time.perf_counter()
        try:
            connection = await self._pool.acquire(timeout=self._acquire_timeout_s)
        except TimeoutError:
            POOL_TIMEOUTS.add(1, {POOL_NAME: self.pool_name})
            raise DatabaseUnavailable(f"no connection within {self._acquire_timeout_s:g} s") from None
        except (*_CONNECTION_ERRORS, asyncpg.PostgresError) as exc:
            # Whatever stops a connection being made (a wrong password too) leaves the order unserved: a 503
            # and a failing /readyz, with the reason in the span, never a 500.
            raise DatabaseUnavailable(type(exc).__name__) from None
        finally:
            self._pending -= 1
            POOL_WAIT_TIME.record(time.perf_counter() - started, {POOL_NAME: self.pool_name})
        try:
            yield connection
        finally:
            await self._pool.release(connection)

    async def fetch(self, statement: str, params: Mapping[str, Any]) -> list[Row]:
        compiled = self._compiled.get(statement)
        if compiled is None:
            compiled = self._compiled[statement] = positional(statement)
        text, names = compiled
        async with self._connection() as connection:
            try:
                records = await connection.fetch(text, *(params[name] for name in names))
            except asyncpg.UniqueViolationError as exc:
                raise UniqueViolation(str(exc)) from None
            except _CONNECTION_ERRORS as exc:
                raise DatabaseUnavailable(type(exc).__name__) from None
        return [dict(record) for record in records]

    async def migrate(self, statements: Sequence[str]) -> None:
        async with self._connection() as connection, connection.transaction():
            # CREATE ... IF NOT EXISTS is not safe against itself: two replicas at once can both try.
            await connection.execute("SELECT pg_advisory_xact_lock($1)", _MIGRATION_LOCK)
            for statement in statements:
                await connection.execute(statement)

    async def columns(self, table: str) -> set[str]:
        query = (
            "SELECT column_name FROM information_schema.columns"
            " WHERE table_schema = current_schema() AND table_name = $1"
        )
        async with self._connection() as connection:
            return {record[0] for record in await connection.fetch(query, table)}

    async def ping(self) -> None:
        async with self._connection() as connection:
            await connection.fetchval("SELECT 1")

    async def close(self) -> None:
        OPEN_ENGINES.discard(self)
        await self._pool.close()

    def pool_state(self) -> tuple[int, int, int, int]:
        idle = self._pool.get_idle_size()
        return self._pool.get_size() - idle, idle, self._pool.get_max_size(), self._pending


async def open_engine(settings: OrdersSettings) -> Engine:
    url = settings.database_url
    engine: Engine
    if url.startswith(SQLITE_URL_PREFIX):
        engine = await SqliteEngine.open(Path(url.removeprefix(SQLITE_URL_PREFIX)))
    else:
        engine = await PostgresEngine.open(settings)
    OPEN_ENGINES.add(engine)
    return engine


# The engines whose pools the metrics below report (SQLite's is its one connection).
OPEN_ENGINES: set[Engine] = set()


def _observe(pick: int, state: str | None = None) -> Callable[[CallbackOptions], Iterable[Observation]]:
    def observe(options: CallbackOptions) -> Iterable[Observation]:
        for engine in tuple(OPEN_ENGINES):  # a snapshot: the metric reader runs on its own thread
            attributes = {POOL_NAME: engine.pool_name}
            if state is not None:
                attributes[CONNECTION_STATE] = state
            yield Observation(engine.pool_state()[pick], attributes)

    return observe


_meter = metrics.get_meter("shop.orders.database")
_meter.create_observable_up_down_counter(
    "db.client.connection.count",
    callbacks=[_observe(0, "used"), _observe(1, "idle")],
    unit="{connection}",
    description="Open connections of the pool, by state (used, idle).",
)
_meter.create_observable_up_down_counter(
    "db.client.connection.max",
    callbacks=[_observe(2)],
    unit="{connection}",
    description="The most connections the pool may open.",
)
_meter.create_observable_up_down_counter(
    "db.client.connection.pending_requests",
    callbacks=[_observe(3)],
    unit="{request}",
    description="Statements waiting for a connection of the pool.",
)
POOL_TIMEOUTS = _meter.create_counter(
    "db.client.connection.timeouts",
    unit="{timeout}",
    description="Waits for a connection that gave up (the order answered 503).",
)
POOL_WAIT_TIME = _meter.create_histogram(
    "db.client.connection.wait_time",
    unit="s",
    description="Time to get a connection from the pool.",
    explicit_bucket_boundaries_advisory=[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5],
)
