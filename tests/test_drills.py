"""Failure drills with real processes: the Collector killed and restarted under load, order-service
killed with SIGKILL under load. Bounded in count and time; loopback only."""

from __future__ import annotations

import signal
import threading
import time
from collections import Counter
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from harness.backends import collector_with_stand_ins
from harness.database import order_count, query
from harness.orders import order_body
from harness.postgres import PostgresServer
from harness.processes import SERVICE_NAMES, Shop, free_port, http, rss_kib
from tools import collector_binary, postgres_bin

MAX_ORDERS = 400
MAX_SECONDS = 20.0


class Load:
    """Orders placed one after another from a thread until stopped (or the bounds are reached)."""

    def __init__(self, gateway: str, keyed: bool = False) -> None:
        self.gateway = gateway
        self.keyed = keyed
        self.results: list[tuple[float, int, dict[str, Any], str]] = []
        self.retry_after: dict[str, str | None] = {}  # by key: what each answer's Retry-After said
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        deadline = time.monotonic() + MAX_SECONDS
        for n in range(MAX_ORDERS):
            if self._stop.is_set() or time.monotonic() > deadline:
                return
            key = f"drill-{n}"
            headers = {"Idempotency-Key": key} if self.keyed else {}
            try:
                status, body, answer_headers = http("POST", f"{self.gateway}/api/order", order_body(), headers)
                self.retry_after[key] = answer_headers.get("Retry-After")
            except OSError as error:  # the gateway itself never goes down in these drills
                status, body = 0, {"error": str(error)}
            self.results.append((time.monotonic(), status, body, key))
            time.sleep(0.02)

    def wait_until_done(self) -> None:
        """Until the bounds end the run (MAX_ORDERS or MAX_SECONDS, whichever comes first)."""
        self._thread.join(MAX_SECONDS + 15)

    def __enter__(self) -> Load:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(MAX_SECONDS + 15)


def complete_with_key(gateway: str, key: str) -> tuple[int, dict[str, Any]]:
    """What a client does with an order that failed: send it again with its key, waiting as each answer says
    (a 409 while another request holds the charge, a 503 while the database is away), for at most 20 s."""
    deadline = time.monotonic() + 20
    while True:
        status, body, headers = http("POST", f"{gateway}/api/order", order_body(), {"Idempotency-Key": key})
        if status not in (409, 502, 503, 504) or time.monotonic() > deadline:
            return status, body
        time.sleep(float(headers.get("Retry-After") or 0.5))


def charges_per_order(shop: Shop) -> Counter[str]:
    """Real charges by order ID, as payment-service logged each (a replay is logged as a duplicate)."""
    return Counter(
        line["order.id"]
        for line in shop.running["shop.payments"].log_lines()
        if line.get("message") == "payment authorized" and line.get("payment.duplicate") is False
    )


def resident_memory(shop: Shop) -> dict[str, int]:
    return {module: rss_kib(service.process.pid) for module, service in shop.running.items()}


def assert_memory_bounded(before: dict[str, int], after: dict[str, int]) -> None:
    for module, kib in before.items():
        assert after[module] - kib < 50 * 1024, f"{module} grew {after[module] - kib} KiB"


@pytest.mark.backends
def test_collector_killed_and_restarted_under_load(tmp_path: Path) -> None:
    collector_binary()  # skips (or fails in CI) without a built Collector
    with collector_with_stand_ins(tmp_path) as (collector, tempo, _):
        shop = Shop(
            tmp_path / "shop",
            OTEL_EXPORTER_OTLP_ENDPOINT=collector.otlp_http_endpoint,
            OTEL_BSP_SCHEDULE_DELAY="500",
            OTEL_BLRP_SCHEDULE_DELAY="500",
        )
        try:
            shop.start_all()
            for _ in range(20):
                http("POST", f"{shop.gateway}/api/order", order_body())
            rss_before = resident_memory(shop)
            with Load(shop.gateway) as load:
                time.sleep(2)
                collector.process.process.kill()  # SIGKILL: no goodbye
                collector.process.process.wait()
                time.sleep(4)
                collector.start()
                restarted = time.monotonic()
                time.sleep(6)
            rss_after = resident_memory(shop)

            assert len(load.results) > 50
            assert Counter(status for _, status, _, _ in load.results) == {201: len(load.results)}
            # Traces of orders placed after the restart arrive within 10 s of it.
            after = {bytes.fromhex(body["trace_id"]) for at, _, body, _ in load.results if at > restarted}
            deadline = restarted + 10
            while time.monotonic() < deadline and not after <= {span.trace_id for _, span in tempo.spans()}:
                time.sleep(0.5)
            assert after, "orders were placed after the restart"
            assert after <= {span.trace_id for _, span in tempo.spans()}
            assert_memory_bounded(rss_before, rss_after)
            # SIGTERM still ends every service promptly (stop() waits at most 15 s).
            assert shop.stop_all() == dict.fromkeys(SERVICE_NAMES, 0)
        finally:
            shop.kill_all()


@pytest.mark.processes
def test_collector_down_for_the_whole_run(tmp_path: Path) -> None:
    """Nothing listens for OTLP: orders still succeed, the export queues cap memory, SIGTERM ends it all."""
    shop = Shop(
        tmp_path,
        OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{free_port()}",
        # Queues this run overflows many times over, so that dropping is what is exercised.
        OTEL_BSP_MAX_QUEUE_SIZE="256",
        OTEL_BSP_MAX_EXPORT_BATCH_SIZE="128",
        OTEL_BLRP_MAX_QUEUE_SIZE="256",
        OTEL_BLRP_MAX_EXPORT_BATCH_SIZE="128",
        PAYMENTS_LATENCY_MIN_MS="0",
        PAYMENTS_LATENCY_MAX_MS="0",
        # Each export may retry for a minute: far longer than stop_all() waits (STOP_TIMEOUT_S).
        OTEL_EXPORTER_OTLP_TIMEOUT="60",
    )
    try:
        shop.start_all()
        for _ in range(50):
            http("POST", f"{shop.gateway}/api/order", order_body())
        rss_before = resident_memory(shop)
        with Load(shop.gateway) as load:
            load.wait_until_done()  # up to 400 orders, about 2,000 spans in order-service alone
        rss_after = resident_memory(shop)

        assert len(load.results) > 200
        assert Counter(status for _, status, _, _ in load.results) == {201: len(load.results)}
        assert_memory_bounded(rss_before, rss_after)
        # The queues did overflow: the SDK said so (once per kind of record: it deduplicates the warning).
        order_log = shop.running["shop.orders"].log_lines()
        assert any(line["message"].startswith("Queue full, dropping") for line in order_log)
        # The SDK alone could wait its full export timeout per signal here; OTEL_SHUTDOWN_TIMEOUT_S bounds it,
        # so every service exits 0 before stop_all() gives up waiting (a minute's retries would not).
        assert shop.stop_all() == dict.fromkeys(SERVICE_NAMES, 0)
    finally:
        shop.kill_all()


@pytest.mark.processes
def test_order_service_killed_under_load_keeps_every_acknowledged_order(tmp_path: Path) -> None:
    shop = Shop(tmp_path, OTEL_SDK_DISABLED="true")
    try:
        shop.start_all()
        with Load(shop.gateway, keyed=True) as load:
            time.sleep(1.5)
            shop.running["shop.orders"].stop(signal.SIGKILL)
            time.sleep(1)
            shop.start("shop.orders")
            time.sleep(1.5)
        statuses = Counter(status for _, status, _, _ in load.results)
        assert statuses[201] > 20
        assert set(statuses) <= {201, 502, 503, 504}, statuses

        for _, status, body, key in load.results:
            if status == 201:
                code, stored, _ = http("GET", f"{shop.gateway}/api/order/{body['order_id']}")
                assert (code, stored["status"]) == (200, "paid"), key
            else:  # the client retries with its key: the order completes
                code, retried = complete_with_key(shop.gateway, key)
                assert code == 201, (key, retried)
    finally:
        shop.stop_all()
        shop.kill_all()

    # No order was charged twice: payment-service logged each real charge once.
    charged = charges_per_order(shop)
    assert charged
    assert max(charged.values()) == 1


@pytest.fixture
def postgres(tmp_path: Path) -> Iterator[PostgresServer]:
    """A server of this test's own, since the drill stops or kills it."""
    with PostgresServer.start(tmp_path / "postgres", bin_dir=postgres_bin()) as server:
        yield server


def readiness(url: str) -> int:
    try:
        return http("GET", f"{url}/readyz")[0]
    except OSError:
        return 0


def assert_every_order_whole(database_url: str) -> None:
    """No half-written order: each row has a known status, a paid one its payment, and its exact total."""
    rows = query(database_url, "SELECT status, payment_id, quantity, unit_price, total_cents FROM orders")
    assert rows
    for status, payment_id, quantity, unit_price, total_cents in rows:
        assert status in {"pending", "paid", "payment_declined", "payment_failed"}
        assert (payment_id is not None) == (status in {"paid", "payment_declined"})
        assert total_cents == round(Decimal(unit_price) * quantity * 100)


@pytest.mark.processes
def test_postgresql_stopped_under_load(tmp_path: Path, postgres: PostgresServer) -> None:
    """Down for 10 s: each order answers at once (503 with Retry-After), /readyz says so, and it all comes back."""
    shop = Shop(tmp_path / "shop", OTEL_SDK_DISABLED="true", ORDERS_DATABASE_URL=postgres.url())
    try:
        shop.start_all()
        orders = shop.running["shop.orders"]
        with Load(shop.gateway, keyed=True) as load:
            time.sleep(2)
            postgres.stop()
            stopped = time.monotonic()
            time.sleep(1)
            assert readiness(orders.url) == 503, "not ready while the database is away"
            time.sleep(9)
            postgres.start_again()
            while readiness(orders.url) != 200 and time.monotonic() < stopped + 25:
                time.sleep(0.2)
            assert readiness(orders.url) == 200, "ready again by itself"
            time.sleep(2)

        statuses = Counter(status for _, status, _, _ in load.results)
        assert statuses[201] > 20
        assert statuses[503] > 20, statuses
        assert set(statuses) <= {201, 503}, statuses
        for _, status, body, key in load.results:
            if status == 503:
                assert body["error"]["code"] in {"database_unavailable", "order_service_unavailable"}, body
                assert load.retry_after[key] == "1", key
        for _, status, body, key in load.results:
            if status == 201:  # acknowledged: stored and paid
                code, stored, _ = http("GET", f"{shop.gateway}/api/order/{body['order_id']}")
                assert (code, stored["status"]) == (200, "paid"), key
            else:  # the client retries with its key: the order completes, once
                code, retried = complete_with_key(shop.gateway, key)
                assert code == 201, (key, retried)
        keys = {key for _, _, _, key in load.results}
        assert order_count(postgres.url()) == len(keys), "one order per key"
        assert_every_order_whole(postgres.url())
    finally:
        shop.stop_all()
        shop.kill_all()
    assert max(charges_per_order(shop).values()) == 1, "no order charged twice"


@pytest.mark.processes
def test_postgresql_killed_in_the_middle_of_orders(tmp_path: Path, postgres: PostgresServer) -> None:
    """SIGKILL, then a restart that recovers from its write-ahead log: every acknowledged order is there and
    no order is half-written."""
    shop = Shop(tmp_path / "shop", OTEL_SDK_DISABLED="true", ORDERS_DATABASE_URL=postgres.url())
    try:
        shop.start_all()
        with Load(shop.gateway, keyed=True) as load:
            time.sleep(2)
            postgres.kill()
            time.sleep(1)
            postgres.start_again()
            time.sleep(3)
        statuses = Counter(status for _, status, _, _ in load.results)
        assert statuses[201] > 20
        assert set(statuses) <= {201, 503}, statuses
        for _, status, body, key in load.results:
            if status == 201:
                code, stored, _ = http("GET", f"{shop.gateway}/api/order/{body['order_id']}")
                assert (code, stored["status"]) == (200, "paid"), key
        assert_every_order_whole(postgres.url())
    finally:
        shop.stop_all()
        shop.kill_all()
