"""order-service's store on each engine: exact money, one client span per statement, the claim on a charge,
the slow-database fault, and a pool that answers 503 instead of hanging. Most tests run once per engine
(the ``engine`` fixture); those that compare the two, or need a server, say so."""

from __future__ import annotations

import asyncio
import sqlite3
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.metrics.export import Metric, NumberDataPoint
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.semconv.attributes.db_attributes import (
    DB_COLLECTION_NAME,
    DB_NAMESPACE,
    DB_OPERATION_NAME,
    DB_QUERY_TEXT,
    DB_SYSTEM_NAME,
)
from opentelemetry.trace import SpanKind

from conftest import TEST_TELEMETRY, Capture, Stack, StackFactory
from harness.database import order_count, query, sqlite_url
from harness.orders import DB_DELAY_HEADER, DECLINED_CARD, FAIL_HEADER, GOOD_CARD, order_body
from shop.orders.store import OrderStore
from shop.settings import OrdersSettings

pytestmark = pytest.mark.inprocess

FAULTS = {"allow_fault_headers": True}


def db_spans(capture: Capture) -> list[ReadableSpan]:
    return [s for s in capture.spans() if s.attributes is not None and DB_SYSTEM_NAME in s.attributes]


@pytest.mark.parametrize(
    ("unit_price", "quantity", "total"),
    [
        (0.1, 3, "0.30"),  # 0.30000000000000004 in binary floating point
        (19.99, 3, "59.97"),
        (0.005, 1, "0.01"),  # half a cent rounds up
        (1_000_000, 1000, "1000000000.00"),
        (33.333, 3, "100.00"),
    ],
)
async def test_totals_are_exact_to_the_cent(
    stack: Stack, database_url: str, unit_price: float, quantity: int, total: str
) -> None:
    status, placed = await stack.place_order(order_body(unit_price=unit_price, quantity=quantity))
    assert status == 201, placed
    assert placed["total"] == float(total)
    stored = await (await stack.gateway.get(f"/api/order/{placed['order_id']}")).json()
    assert (stored["unit_price"], stored["total"]) == (unit_price, float(total))
    [(cents, price)] = query(database_url, "SELECT total_cents, unit_price FROM orders")
    assert Decimal(cents) / 100 == Decimal(total)
    assert float(price) == unit_price, "the price is kept exactly as sent"


# One request of each kind the API documents, in an order that exercises idempotency and retries.
SCRIPT: list[tuple[str, str, dict[str, Any] | None, dict[str, str]]] = [
    ("POST", "/api/order", order_body(), {}),
    ("POST", "/api/order", order_body(unit_price=0.1, quantity=7), {"Idempotency-Key": "a"}),
    ("POST", "/api/order", order_body(unit_price=0.1, quantity=7), {"Idempotency-Key": "a"}),
    ("POST", "/api/order", order_body(quantity=9), {"Idempotency-Key": "a"}),
    ("POST", "/api/order", order_body(card_number=DECLINED_CARD), {"Idempotency-Key": "d"}),
    ("POST", "/api/order", order_body(card_number=DECLINED_CARD), {"Idempotency-Key": "d"}),
    ("POST", "/api/order", order_body(), {"Idempotency-Key": "f", FAIL_HEADER: "true"}),
    ("POST", "/api/order", order_body(), {"Idempotency-Key": "f"}),
    ("POST", "/api/order", order_body(quantity=0, unit_price=-1), {}),
    ("POST", "/api/order", order_body(item="\x00"), {}),
    ("GET", "/api/order/{last}", None, {}),
    ("GET", "/api/order/" + "0" * 32, None, {}),
]
# Different on every run, whatever the engine.
VOLATILE = {"order_id", "trace_id", "payment_id", "created_by_trace_id", "created_at", "updated_at"}


def comparable(body: Any) -> Any:
    if isinstance(body, dict):
        return {k: ("<volatile>" if k in VOLATILE else comparable(v)) for k, v in body.items()}
    return body


async def run_script(stack: Stack) -> list[tuple[int, Any]]:
    answers: list[tuple[int, Any]] = []
    last = ""
    for method, path, body, headers in SCRIPT:
        response = await stack.gateway.request(method, path.format(last=last), json=body, headers=headers)
        answer = await response.json()
        last = answer.get("order_id", last)
        answers.append((response.status, comparable(answer)))
    return answers


@pytest.mark.parametrize("engine", ["postgresql"])  # the test holds both: one stack on each
async def test_the_api_answers_the_same_on_both_engines(
    start_stack: StackFactory, postgres_url: str, tmp_path: Path
) -> None:
    on_sqlite = await start_stack(gateway=FAULTS, database_url=sqlite_url(tmp_path / "compare.sqlite3"))
    on_postgresql = await start_stack(gateway=FAULTS, database_url=postgres_url)
    sqlite_answers = await run_script(on_sqlite)
    assert [status for status, _ in sqlite_answers] == [201, 201, 201, 409, 402, 402, 502, 201, 422, 422, 200, 404]
    assert await run_script(on_postgresql) == sqlite_answers


async def test_each_statement_is_one_client_span_with_stable_names(stack: Stack, capture: Capture, engine: str) -> None:
    status, placed = await stack.place_order(order_body(), **{"Idempotency-Key": "spans"})
    assert status == 201
    spans = db_spans(capture)
    # Look the key up, insert the order, record the outcome: three statements, three spans, no BEGIN/COMMIT.
    assert [(s.name, s.kind) for s in spans] == [
        ("SELECT orders", SpanKind.CLIENT),
        ("INSERT orders", SpanKind.CLIENT),
        ("UPDATE orders", SpanKind.CLIENT),
    ]
    place_order = next(s for s in capture.spans() if s.name == "place_order")
    for span in spans:
        attributes = dict(span.attributes or {})
        assert attributes[DB_SYSTEM_NAME] == engine
        assert attributes[DB_COLLECTION_NAME] == "orders"
        assert attributes[DB_OPERATION_NAME] == span.name.split()[0]
        assert attributes[DB_NAMESPACE]
        assert span.parent is not None
        assert span.parent.span_id == place_order.context.span_id
        assert not {"db.system", "db.statement", "db.name", "db.operation"} & set(attributes), "old names"
        text = str(attributes[DB_QUERY_TEXT])
        assert GOOD_CARD[-4:] not in text, "no value reaches the text"
        assert placed["order_id"] not in text
        if engine == "postgresql":
            assert attributes["server.address"] == "127.0.0.1"
            assert isinstance(attributes["server.port"], int)


async def test_concurrent_requests_with_one_key_charge_once(stack: Stack, capture: Capture) -> None:
    answers = await asyncio.gather(*(stack.place_order(order_body(), **{"Idempotency-Key": "race"}) for _ in range(10)))
    statuses = sorted(status for status, _ in answers)
    assert set(statuses) <= {201, 409}, answers
    assert len({body["order_id"] for _, body in answers}) == 1
    in_progress = [body for status, body in answers if status == 409]
    assert all(body["error"]["code"] == "idempotency_key_in_progress" for body in in_progress)
    assert capture.charges(answers[0][1]["order_id"]) == 1


async def test_the_slow_database_fault_slows_the_insert_inside_postgresql(
    start_stack: StackFactory, capture: Capture, engine: str, database_url: str
) -> None:
    stack = await start_stack(gateway=FAULTS)
    status, answer = await stack.place_order(order_body(), **{DB_DELAY_HEADER: "300"})
    if engine == "sqlite":
        # One statement at a time on SQLite: a slow one would hold up every order, so it is refused.
        assert status == 422, answer
        assert answer["error"]["code"] == "fault_not_supported"
        assert order_count(database_url) == 0
        return
    assert status == 201, answer
    [insert] = [s for s in db_spans(capture) if s.name == "INSERT orders"]
    assert insert.end_time is not None
    assert insert.start_time is not None
    assert (insert.end_time - insert.start_time) / 1e9 >= 0.3
    assert (insert.attributes or {})["fault.db.delay_ms"] == 300
    assert "pg_sleep" in str((insert.attributes or {})[DB_QUERY_TEXT])


def number_values(metrics: list[Metric]) -> list[float]:
    """The values of a counter's or gauge's points (a histogram has none to give)."""
    return [
        point.value for metric in metrics for point in metric.data.data_points if isinstance(point, NumberDataPoint)
    ]


@pytest.mark.parametrize("engine", ["postgresql"])  # SQLite has one connection and no pool to exhaust
async def test_an_exhausted_pool_answers_503_with_retry_after(start_stack: StackFactory, capture: Capture) -> None:
    stack = await start_stack(
        gateway=FAULTS, orders={"db_pool_size": 1, "db_acquire_timeout_s": 0.2, "db_statement_timeout_s": 5.0}
    )
    slow = asyncio.ensure_future(stack.place_order(order_body(), **{DB_DELAY_HEADER: "1500"}))
    await asyncio.sleep(0.5)  # the slow INSERT holds the only connection
    response = await stack.gateway.post("/api/order", json=order_body())
    assert response.status == 503
    assert response.headers["Retry-After"] == "1"
    assert (await response.json())["error"]["code"] == "database_unavailable"
    assert (await slow)[0] == 201
    timeouts = capture.metrics()["db.client.connection.timeouts"]
    assert sum(number_values(timeouts)) >= 1


async def test_the_pool_is_measured(stack: Stack, capture: Capture, engine: str) -> None:
    await stack.place_order(order_body())
    found = capture.metrics()
    for name in ("db.client.connection.count", "db.client.connection.max", "db.client.connection.pending_requests"):
        assert name in found, name
    maximum = set(number_values(found["db.client.connection.max"]))
    assert maximum == ({1} if engine == "sqlite" else {10})


async def test_replicas_starting_together_create_the_schema_once(postgres_url: str) -> None:
    settings = OrdersSettings(telemetry=TEST_TELEMETRY, database_url=postgres_url)
    stores = await asyncio.gather(*(OrderStore.open(settings) for _ in range(4)))
    for store in stores:
        await store.ping()
        await store.close()
    assert order_count(postgres_url) == 0


async def test_an_sqlite_file_from_before_postgresql_is_upgraded_in_place(stack_before: Path) -> None:
    settings = OrdersSettings(telemetry=TEST_TELEMETRY, database_url=sqlite_url(stack_before))
    store = await OrderStore.open(settings)
    try:
        order = await store.get("a" * 32)
    finally:
        await store.close()
    assert order is not None
    assert (order.total_cents, order.unit_price, order.status) == (2500, "12.5", "paid")
    assert order.public()["total"] == 25.0


@pytest.fixture
def stack_before(tmp_path: Path) -> Path:
    """An orders file as order-service wrote it before PostgreSQL: money in REAL columns."""
    path = tmp_path / "orders.sqlite3"
    with sqlite3.connect(path) as db:
        db.execute(
            "CREATE TABLE orders (order_id TEXT PRIMARY KEY, idempotency_key TEXT UNIQUE, request_fingerprint TEXT"
            " NOT NULL, customer_id TEXT NOT NULL, item TEXT NOT NULL, quantity INTEGER NOT NULL, unit_price REAL NOT"
            " NULL, total REAL NOT NULL, card_last4 TEXT NOT NULL, status TEXT NOT NULL, payment_id TEXT, trace_id"
            " TEXT, created_at TEXT NOT NULL, updated_at TEXT NOT NULL)"
        )
        db.execute(
            "INSERT INTO orders VALUES (?, NULL, 'f', 'c', 'book', 2, 12.5, 25.0, '4242', 'paid', 'p', NULL, 't', 't')",
            ("a" * 32,),
        )
    return path
