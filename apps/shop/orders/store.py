"""Orders in SQLite, one traced span per statement."""

from __future__ import annotations

import sqlite3
import uuid
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiosqlite
from opentelemetry import trace
from opentelemetry.semconv.attributes.db_attributes import (
    DB_COLLECTION_NAME,
    DB_NAMESPACE,
    DB_OPERATION_NAME,
    DB_QUERY_TEXT,
    DB_SYSTEM_NAME,
)
from opentelemetry.trace import SpanKind

from shop.common.orders_api import PENDING, OrderRequest

tracer = trace.get_tracer(__name__)

TABLE = "orders"  # the one table; its name is written out in the statements below
SCHEMA = """
CREATE TABLE IF NOT EXISTS orders (
    order_id TEXT PRIMARY KEY,
    idempotency_key TEXT UNIQUE,
    request_fingerprint TEXT NOT NULL,
    customer_id TEXT NOT NULL,
    item TEXT NOT NULL,
    quantity INTEGER NOT NULL,
    unit_price REAL NOT NULL,
    total REAL NOT NULL,
    card_last4 TEXT NOT NULL,
    status TEXT NOT NULL,
    payment_id TEXT,
    trace_id TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
)
"""
INSERT_ORDER = """
INSERT INTO orders (order_id, idempotency_key, request_fingerprint, customer_id, item, quantity,
    unit_price, total, card_last4, status, payment_id, trace_id, created_at, updated_at)
VALUES (:order_id, :idempotency_key, :request_fingerprint, :customer_id, :item, :quantity,
    :unit_price, :total, :card_last4, :status, :payment_id, :trace_id, :created_at, :updated_at)
"""
SELECT_BY_ID = "SELECT * FROM orders WHERE order_id = ?"
SELECT_BY_IDEMPOTENCY_KEY = "SELECT * FROM orders WHERE idempotency_key = ?"
UPDATE_STATUS = "UPDATE orders SET status = ?, payment_id = ?, updated_at = ? WHERE order_id = ?"


class DuplicateIdempotencyKey(Exception):
    """Another request stored an order with this key first."""


@dataclass(frozen=True)
class Order:
    order_id: str
    idempotency_key: str | None
    request_fingerprint: str
    customer_id: str
    item: str
    quantity: int
    unit_price: float
    total: float
    card_last4: str
    status: str
    payment_id: str | None
    # The trace of the request that created the order; None once that trace may not have been kept.
    trace_id: str | None
    created_at: str
    updated_at: str

    def public(self) -> dict[str, Any]:
        """What ``GET /orders/{id}`` shows: everything but the idempotency internals, and the
        trace that placed the order under a name that says so (``trace_id`` is each answer's own)."""
        shown = asdict(self)
        del shown["idempotency_key"], shown["request_fingerprint"]
        shown["created_by_trace_id"] = shown.pop("trace_id")
        return shown


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


class OrderStore:
    def __init__(self, connection: aiosqlite.Connection, path: Path) -> None:
        self._db = connection
        self._namespace = path.name

    @classmethod
    async def open(cls, path: Path) -> OrderStore:
        path.parent.mkdir(parents=True, exist_ok=True)
        # Autocommit: every statement here is a single atomic write, so nothing is left half-done.
        connection = await aiosqlite.connect(path, isolation_level=None)
        connection.row_factory = sqlite3.Row
        # WAL survives a killed process without losing committed rows, and lets readers run beside the writer.
        await connection.execute("PRAGMA journal_mode=WAL")
        await connection.execute("PRAGMA synchronous=NORMAL")
        await connection.execute(SCHEMA)
        return cls(connection, path)

    async def close(self) -> None:
        await self._db.close()

    async def _execute(self, operation: str, query: str, params: Any) -> list[sqlite3.Row]:
        with tracer.start_as_current_span(
            f"{operation} {TABLE}",
            kind=SpanKind.CLIENT,
            attributes={
                DB_SYSTEM_NAME: "sqlite",
                DB_NAMESPACE: self._namespace,
                DB_OPERATION_NAME: operation,
                DB_COLLECTION_NAME: TABLE,
                # Parameterised: the text never holds values, so no customer data reaches the span.
                DB_QUERY_TEXT: " ".join(query.split()),
            },
        ):
            async with self._db.execute(query, params) as cursor:
                return list(await cursor.fetchall())

    async def ping(self) -> None:
        await self._db.execute("SELECT 1")

    async def create(self, request: OrderRequest, idempotency_key: str | None, trace_id: str | None) -> Order:
        now = _now()
        order = Order(
            order_id=uuid.uuid4().hex,
            idempotency_key=idempotency_key,
            request_fingerprint=request.fingerprint(),
            customer_id=request.customer_id,
            item=request.item,
            quantity=request.quantity,
            unit_price=request.unit_price,
            total=request.total,
            card_last4=request.card_last4,
            status=PENDING,
            payment_id=None,
            trace_id=trace_id,
            created_at=now,
            updated_at=now,
        )
        try:
            await self._execute("INSERT", INSERT_ORDER, asdict(order))
        except sqlite3.IntegrityError as exc:
            raise DuplicateIdempotencyKey(str(exc)) from None
        return order

    async def get(self, order_id: str) -> Order | None:
        rows = await self._execute("SELECT", SELECT_BY_ID, (order_id,))
        return Order(**dict(rows[0])) if rows else None

    async def find_by_idempotency_key(self, key: str) -> Order | None:
        rows = await self._execute("SELECT", SELECT_BY_IDEMPOTENCY_KEY, (key,))
        return Order(**dict(rows[0])) if rows else None

    async def set_status(self, order: Order, status: str, payment_id: str | None) -> Order:
        now = _now()
        await self._execute("UPDATE", UPDATE_STATUS, (status, payment_id, now, order.order_id))
        return replace(order, status=status, payment_id=payment_id, updated_at=now)
