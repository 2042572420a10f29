"""``make bench-db-clients``: the PostgreSQL client paths order-service could take, side by side in one run.

- ours: asyncpg's pool under order-service's own store (``shop.orders.store``), one client span per
  statement written by our code with the stable attribute names;
- contrib asyncpg: the same pool instrumented by opentelemetry-instrumentation-asyncpg, in its default
  mode (old attribute names) and with ``OTEL_SEMCONV_STABILITY_OPT_IN=database`` (the stable ones);
- SQLAlchemy Core async over asyncpg, instrumented by opentelemetry-instrumentation-sqlalchemy.

Each path runs an order's statements (SELECT by idempotency key, INSERT, UPDATE of the status) from 8
concurrent tasks, under a real SDK TracerProvider, in a process of its own (contrib instrumentors patch
modules globally), on a new database of one private PostgreSQL server. Printed per path: orders/s, the
client's CPU and the server's per order, spans per statement, and the attribute names of its DB spans.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from harness.postgres import PostgresServer, find_postgres_bin

PATHS = ("ours", "contrib asyncpg", "contrib asyncpg, stable names", "sqlalchemy")
CONCURRENCY = 8
STATEMENTS_PER_ORDER = 3


def warmup_orders(orders: int) -> int:
    """Orders placed before the measured ones (connections opened, statements prepared)."""
    return orders // 10


CARD_DIGITS = "4242424242424242"  # never sent: a query text holding it would be a leak


def order_params(n: int) -> dict[str, Any]:
    now = "2026-12-04T00:00:00.000+00:00"
    return {
        "order_id": uuid.uuid4().hex,
        "idempotency_key": f"key-{n}-{uuid.uuid4().hex}",
        "request_fingerprint": "f" * 64,
        "customer_id": "c-1",
        "item": "book",
        "quantity": 2,
        "unit_price": "12.5",
        "total_cents": 2500,
        "card_last4": CARD_DIGITS[-4:],
        "status": "pending",
        "payment_id": None,
        "trace_id": None,
        "charge_claimed_until": None,
        "created_at": now,
        "updated_at": now,
    }


Run = Callable[[str, str, dict[str, Any]], Awaitable[None]]


async def open_path(path: str, url: str) -> tuple[Run, Callable[[], Awaitable[None]]]:
    """(run one statement, close) for a path; the schema is created first."""
    from shop.orders import store

    if path == "ours":
        from shop.settings import OrdersSettings

        opened = await store.OrderStore.open(OrdersSettings.from_env({"ORDERS_DATABASE_URL": url}))

        async def run_ours(operation: str, statement: str, params: dict[str, Any]) -> None:
            await opened._execute(operation, statement, params)

        return run_ours, opened.close
    if path.startswith("contrib asyncpg"):
        import asyncpg
        from opentelemetry.instrumentation.asyncpg import AsyncPGInstrumentor

        from shop.orders.engines import positional

        AsyncPGInstrumentor().instrument()  # type: ignore[no-untyped-call]
        pool = await asyncpg.create_pool(url, min_size=CONCURRENCY, max_size=CONCURRENCY)
        await pool.execute(store.SCHEMA)

        async def run_asyncpg(operation: str, statement: str, params: dict[str, Any]) -> None:
            text, names = positional(statement)
            await pool.fetch(text, *(params[name] for name in names))

        return run_asyncpg, pool.close
    from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor
    from sqlalchemy import text as sql_text
    from sqlalchemy.ext.asyncio import create_async_engine

    # Autocommitted statements, as order-service runs them: no BEGIN and COMMIT around each.
    engine = create_async_engine(
        url.replace("postgresql://", "postgresql+asyncpg://", 1),
        pool_size=CONCURRENCY,
        max_overflow=0,
        isolation_level="AUTOCOMMIT",
    )
    SQLAlchemyInstrumentor().instrument(engine=engine.sync_engine)
    async with engine.begin() as connection:
        await connection.execute(sql_text(store.SCHEMA))

    async def run_sqlalchemy(operation: str, statement: str, params: dict[str, Any]) -> None:
        async with engine.connect() as connection:
            await connection.execute(sql_text(statement), params)

    return run_sqlalchemy, engine.dispose


async def place_orders(run: Run, orders: int) -> None:
    from shop.orders import store

    queue = iter(range(orders))

    async def worker() -> None:
        for n in queue:
            params = order_params(n)
            await run("SELECT", store.SELECT_BY_IDEMPOTENCY_KEY, {"idempotency_key": params["idempotency_key"]})
            await run("INSERT", store.INSERT_ORDER, params)
            status = {"status": "paid", "payment_id": "p-1", "updated_at": params["updated_at"]}
            await run("UPDATE", store.SET_STATUS, {"order_id": params["order_id"], **status})

    await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))


async def one_path(path: str, url: str, orders: int) -> dict[str, Any]:
    """In the child process: warm up, then the measured orders; the figures and the spans' shape."""
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    run, close = await open_path(path, url)
    try:
        await place_orders(run, warmup_orders(orders))
        exporter.clear()
        cpu, started = time.process_time(), time.perf_counter()
        await place_orders(run, orders)
        elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    finally:
        await close()
    spans = [span for span in exporter.get_finished_spans() if span.kind == trace.SpanKind.CLIENT]
    names = [span.name for span in spans]
    texts = [str(value) for span in spans for value in (span.attributes or {}).values()]
    return {
        "orders_per_s": orders / elapsed,
        "client_cpu_ms_per_order": cpu / orders * 1000,
        "spans_per_statement": len(spans) / (orders * STATEMENTS_PER_ORDER),
        # Per order, by name: what a trace of one order would hold.
        "spans_per_order": {name: round(count / orders, 2) for name, count in sorted(Counter(names).items())},
        "attributes": sorted({key for span in spans for key in (span.attributes or {})}),
        "values_in_attributes": any("c-1" in text or "key-" in text for text in texts),
    }


def measure(path: str, server: PostgresServer, database: str, orders: int) -> dict[str, Any]:
    env = {**os.environ, "OTEL_SEMCONV_STABILITY_OPT_IN": "database" if "stable" in path else ""}
    cpu = server.cpu_seconds()
    child = subprocess.run(  # noqa: S603 (this script, with fixed arguments)
        [sys.executable, __file__, "--child", path, "--url", server.create_database(database), "--orders", str(orders)],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        check=True,
    )
    result: dict[str, Any] = json.loads(child.stdout)
    # The server is measured from outside the child: over every order it served, the warm-up's included.
    served = orders + warmup_orders(orders)
    result["server_cpu_ms_per_order"] = (server.cpu_seconds() - cpu) / served * 1000
    return result


def report(rounds: dict[str, list[dict[str, Any]]], repeat: int) -> None:
    def median(path: str, key: str) -> float:
        return float(statistics.median(result[key] for result in rounds[path]))

    width = max(len(path) for path in PATHS)
    print(f"PostgreSQL client paths, {CONCURRENCY} concurrent tasks, medians of {repeat} round(s):")
    print(
        f"{'':{width}}  {'orders/s':>9}  {'client CPU ms/order':>19}  {'server CPU ms/order':>19}  {'spans/stmt':>10}"
    )
    for path in PATHS:
        print(
            f"{path:{width}}  {median(path, 'orders_per_s'):9.0f}  {median(path, 'client_cpu_ms_per_order'):19.2f}"
            f"  {median(path, 'server_cpu_ms_per_order'):19.2f}  {median(path, 'spans_per_statement'):10.2f}"
        )
    print()
    for path in PATHS:
        last = rounds[path][-1]
        per_order = ", ".join(f"{name} x{count:g}" for name, count in last["spans_per_order"].items())
        print(f"{path}: client spans per order: {per_order}")
        print(f"{'':{len(path)}}  attributes {', '.join(last['attributes'])}")
        print(f"{'':{len(path)}}  parameter values in an attribute: {'yes' if last['values_in_attributes'] else 'no'}")


def main() -> int:
    parser = argparse.ArgumentParser(prog="make bench-db-clients", description=__doc__.splitlines()[0])
    parser.add_argument("--orders", type=int, default=2000, help="orders per path and round (default 2000)")
    parser.add_argument("--repeat", type=int, default=1, help="rounds, each path once per round (default 1)")
    parser.add_argument("--child", choices=PATHS, help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(asyncio.run(one_path(args.child, args.url, args.orders))))
        return 0
    if find_postgres_bin() is None:
        print("make bench-db-clients needs PostgreSQL's server binaries: apt-get install postgresql", file=sys.stderr)
        return 2
    rounds: dict[str, list[dict[str, Any]]] = {path: [] for path in PATHS}
    with tempfile.TemporaryDirectory(prefix="shop-db-clients-") as tmp, PostgresServer.start(Path(tmp)) as server:
        for round_number in range(1, args.repeat + 1):
            for index, path in enumerate(PATHS):
                print(f"==> round {round_number}: {path}", file=sys.stderr, flush=True)
                rounds[path].append(measure(path, server, f"clients_{round_number}_{index}", args.orders))
    report(rounds, args.repeat)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
