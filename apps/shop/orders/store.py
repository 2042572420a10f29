"""Orders in a database, one traced client span per statement, the same on SQLite and PostgreSQL.

The statements are written once (``:name`` placeholders) and run on either engine
(``shop.orders.engines``). Money is exact on both: the total in integer cents, the unit price as the
decimal text of the number the client sent. The right to charge an order is a row of its own state
(``charge_claimed_until``), taken by a conditional write, so that however many replicas a retry
reaches, one charge request at a time leaves order-service.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
import uuid
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from opentelemetry import trace
from opentelemetry.semconv.attributes.db_attributes import (
    DB_COLLECTION_NAME,
    DB_NAMESPACE,
    DB_OPERATION_NAME,
    DB_QUERY_TEXT,
    DB_SYSTEM_NAME,
)
from opentelemetry.semconv.attributes.error_attributes import ERROR_TYPE
from opentelemetry.trace import SpanKind, StatusCode

from shop.common.faults import DB_DELAY_MS
from shop.common.orders_api import PENDING, OrderRequest
from shop.orders.engines import DatabaseUnavailable, Engine, Row, UniqueViolation, open_engine
from shop.settings import OrdersSettings

log = logging.getLogger(__name__)
tracer = trace.get_tracer(__name__)

TABLE = "orders"  # the one table; its name is written out in the statements below
COLUMNS = (
    "order_id",
    "idempotency_key",
    "request_fingerprint",
    "customer_id",
    "item",
    "quantity",
    "unit_price",
    "total_cents",
    "card_last4",
    "status",
    "payment_id",
    "trace_id",
    "charge_claimed_until",
    "created_at",
    "updated_at",
)
# The same text on both engines: each accepts these types (SQLite by affinity).
SCHEMA = """
CREATE TABLE IF NOT EXISTS orders (
    order_id TEXT PRIMARY KEY,
    idempotency_key TEXT UNIQUE,
    request_fingerprint TEXT NOT NULL,
    customer_id TEXT NOT NULL,
    item TEXT NOT NULL,
    quantity INTEGER NOT NULL,
    unit_price TEXT NOT NULL,
    total_cents BIGINT NOT NULL,
    card_last4 TEXT NOT NULL,
    status TEXT NOT NULL,
    payment_id TEXT,
    trace_id TEXT,
    charge_claimed_until BIGINT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
)
"""
INSERT_ORDER = f"INSERT INTO orders ({', '.join(COLUMNS)}) SELECT {', '.join(f':{c}' for c in COLUMNS)}"
# The slow-database fault: the same INSERT, waiting inside PostgreSQL first, so its own span is the slow one.
INSERT_ORDER_AFTER_DELAY = f"{INSERT_ORDER} FROM pg_sleep(:delay_s)"
SELECT_BY_ID = "SELECT * FROM orders WHERE order_id = :order_id"
SELECT_BY_IDEMPOTENCY_KEY = "SELECT * FROM orders WHERE idempotency_key = :idempotency_key"
# Taken only while no one else holds it (or their hold ran out: that replica died mid-charge), and only
# for an order still to be charged. RETURNING says whether this request got it.
CLAIM_CHARGE = """
UPDATE orders SET charge_claimed_until = :claimed_until, updated_at = :updated_at
WHERE order_id = :order_id AND status IN ('pending', 'payment_failed')
    AND (charge_claimed_until IS NULL OR charge_claimed_until < :now_ms)
RETURNING order_id
"""
# The outcome, and the claim given back.
SET_STATUS = """
UPDATE orders SET status = :status, payment_id = :payment_id, charge_claimed_until = NULL, updated_at = :updated_at
WHERE order_id = :order_id
"""

# Before PostgreSQL, money was REAL in SQLite: such a file is upgraded in place, in one transaction, at
# start-up (each total was rounded to the cent when stored, so ROUND gives it back exactly).
UPGRADE_FROM_REAL_MONEY = [
    "ALTER TABLE orders RENAME TO orders_real_money",
    SCHEMA,
    # The column names are the constants above: no request data is ever formatted into a statement.
    f"""INSERT INTO orders ({", ".join(COLUMNS)})
    SELECT order_id, idempotency_key, request_fingerprint, customer_id, item, quantity, CAST(unit_price AS TEXT),
        CAST(ROUND(total * 100) AS INTEGER), card_last4, status, payment_id, trace_id, NULL, created_at, updated_at
    FROM orders_real_money""",  # noqa: S608
    "DROP TABLE orders_real_money",
]

CENT = Decimal("0.01")
# How long start-up waits for a database server that is still starting.
STARTUP_WAIT_S = 30.0


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
    # The price exactly as the client sent it (the shortest decimal text of its JSON number).
    unit_price: str
    total_cents: int
    card_last4: str
    status: str
    payment_id: str | None
    # The trace of the request that created the order; None once that trace may not have been kept.
    trace_id: str | None
    # Until when (ms since the epoch) one request holds the right to charge the order; None when none does.
    charge_claimed_until: int | None
    created_at: str
    updated_at: str

    @property
    def total(self) -> float:
        return self.total_cents / 100

    def public(self) -> dict[str, Any]:
        """What ``GET /orders/{id}`` shows: the order without its idempotency and charging internals, and the
        trace that placed it under a name that says so (``trace_id`` is each answer's own)."""
        return {
            "order_id": self.order_id,
            "customer_id": self.customer_id,
            "item": self.item,
            "quantity": self.quantity,
            "unit_price": float(self.unit_price),
            "total": self.total,
            "card_last4": self.card_last4,
            "status": self.status,
            "payment_id": self.payment_id,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "created_by_trace_id": self.trace_id,
        }


@functools.cache
def query_text(statement: str) -> str:
    """The statement on one line, once per statement (they are this module's constants, so the cache is
    bounded). Parameterised: the text never holds values, so no customer data reaches the span."""
    return " ".join(statement.split())


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def _order(row: Row) -> Order:
    return Order(**row)


class OrderStore:
    def __init__(self, engine: Engine, claim_s: float) -> None:
        self._engine = engine
        self._claim_ms = round(claim_s * 1000)
        self._span_attributes = {
            DB_SYSTEM_NAME: engine.system,
            DB_NAMESPACE: engine.namespace,
            DB_COLLECTION_NAME: TABLE,
            **engine.server,
        }

    @classmethod
    async def open(cls, settings: OrdersSettings) -> OrderStore:
        """Connect and create or upgrade the schema, waiting a bounded time for a server still starting."""
        engine = await open_engine(settings)
        deadline = time.monotonic() + STARTUP_WAIT_S
        while True:
            try:
                columns = await engine.columns(TABLE)
                await engine.migrate(UPGRADE_FROM_REAL_MONEY if columns and "total_cents" not in columns else [SCHEMA])
                break
            except (DatabaseUnavailable, OSError) as exc:
                if time.monotonic() > deadline:
                    await engine.close()
                    raise DatabaseUnavailable(f"no database within {STARTUP_WAIT_S:g} s: {exc}") from None
                log.warning("database not reachable yet, retrying", extra={"error.type": type(exc).__name__})
                await asyncio.sleep(1)
        # A payment call may run for its whole timeout: the claim outlasts it, so no second charge starts
        # while the first may still be in flight; it runs out only for a replica that died mid-charge.
        return cls(engine, settings.payments_timeout_s + settings.db_statement_timeout_s + 1)

    @property
    def supports_delay(self) -> bool:
        return self._engine.supports_delay

    async def close(self) -> None:
        await self._engine.close()

    async def ping(self) -> None:
        await self._engine.ping()

    async def _execute(
        self, operation: str, statement: str, params: dict[str, Any], fault: dict[str, int] | None = None
    ) -> list[Row]:
        with tracer.start_as_current_span(
            f"{operation} {TABLE}",
            kind=SpanKind.CLIENT,
            # Set below, with the kind of failure rather than the message (which may quote a value).
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            if span.is_recording():  # in a trace that is dropped, nothing to build
                span.set_attributes(
                    {
                        **self._span_attributes,
                        DB_OPERATION_NAME: operation,
                        DB_QUERY_TEXT: query_text(statement),
                        **(fault or {}),
                    }
                )
            try:
                return await self._engine.fetch(statement, params)
            except (UniqueViolation, DatabaseUnavailable) as exc:
                span.set_attribute(ERROR_TYPE, type(exc).__name__)
                span.set_status(StatusCode.ERROR, type(exc).__name__)
                raise

    async def create(
        self, request: OrderRequest, idempotency_key: str | None, trace_id: str | None, delay_ms: int = 0
    ) -> Order:
        """Store a new pending order, its charge claimed by the request creating it."""
        now = _now()
        order = Order(
            order_id=uuid.uuid4().hex,
            idempotency_key=idempotency_key,
            request_fingerprint=request.fingerprint(),
            customer_id=request.customer_id,
            item=request.item,
            quantity=request.quantity,
            unit_price=repr(request.unit_price),
            total_cents=int(request.exact_total / CENT),
            card_last4=request.card_last4,
            status=PENDING,
            payment_id=None,
            trace_id=trace_id,
            charge_claimed_until=round(time.time() * 1000) + self._claim_ms,
            created_at=now,
            updated_at=now,
        )
        params = {column: getattr(order, column) for column in COLUMNS}
        try:
            if delay_ms:
                await self._execute(
                    "INSERT",
                    INSERT_ORDER_AFTER_DELAY,
                    {**params, "delay_s": delay_ms / 1000},
                    fault={DB_DELAY_MS: delay_ms},
                )
            else:
                await self._execute("INSERT", INSERT_ORDER, params)
        except UniqueViolation as exc:
            raise DuplicateIdempotencyKey(str(exc)) from None
        return order

    async def get(self, order_id: str) -> Order | None:
        rows = await self._execute("SELECT", SELECT_BY_ID, {"order_id": order_id})
        return _order(rows[0]) if rows else None

    async def find_by_idempotency_key(self, key: str) -> Order | None:
        rows = await self._execute("SELECT", SELECT_BY_IDEMPOTENCY_KEY, {"idempotency_key": key})
        return _order(rows[0]) if rows else None

    async def claim_charge(self, order: Order) -> Order | None:
        """The order with its charge claimed by this request, or None when another request holds it or
        it is charged already."""
        now_ms, now = round(time.time() * 1000), _now()
        claimed_until = now_ms + self._claim_ms
        params = {"order_id": order.order_id, "claimed_until": claimed_until, "updated_at": now, "now_ms": now_ms}
        rows = await self._execute("UPDATE", CLAIM_CHARGE, params)
        return replace(order, charge_claimed_until=claimed_until, updated_at=now) if rows else None

    async def set_status(self, order: Order, status: str, payment_id: str | None) -> Order:
        now = _now()
        params = {"status": status, "payment_id": payment_id, "updated_at": now, "order_id": order.order_id}
        await self._execute("UPDATE", SET_STATUS, params)
        return replace(order, status=status, payment_id=payment_id, charge_claimed_until=None, updated_at=now)
