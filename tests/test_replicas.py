"""order-service as several processes on one PostgreSQL, as compose and Kubernetes run it: a charge leaves
once per key whichever replica a retry reaches, and the gateway's calls are spread over the replicas."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from harness.database import order_count
from harness.orders import order_body
from harness.processes import BackgroundProcess, free_port, http, start_service

pytestmark = pytest.mark.processes

QUIET = {"OTEL_SDK_DISABLED": "true"}  # the telemetry is not what these tests look at


@pytest.fixture
def started(tmp_path: Path) -> Iterator[list[BackgroundProcess]]:
    """The processes a test starts, stopped after it whatever happens."""
    processes: list[BackgroundProcess] = []
    yield processes
    for process in reversed(processes):
        process.kill()


def start(started: list[BackgroundProcess], module: str, workdir: Path, port: int, **env: str) -> BackgroundProcess:
    process = start_service(module, port, workdir, **QUIET, **env)
    started.append(process)
    return process


def charges(payments: list[BackgroundProcess]) -> Counter[str]:
    """Real charges by order, across payment processes: each logs a decision once, a duplicate as such."""
    return Counter(
        line["order.id"]
        for process in payments
        for line in process.log_lines()
        if line.get("message") in ("payment authorized", "payment declined") and line.get("payment.duplicate") is False
    )


def test_thirty_concurrent_requests_with_one_key_charge_once_across_replicas(
    tmp_path: Path, postgres_url: str, started: list[BackgroundProcess]
) -> None:
    """Two gateways, two order-services on one PostgreSQL, two payment-services: one key, 30 requests at once."""
    gateways, payments = [], []
    for n in range(2):
        workdir = tmp_path / f"replica-{n}"
        payment = start(started, "shop.payments", workdir, free_port())
        orders = start(
            started, "shop.orders", workdir, free_port(), ORDERS_DATABASE_URL=postgres_url, PAYMENTS_URL=payment.url
        )
        gateways.append(start(started, "shop.gateway", workdir, free_port(), ORDERS_URL=orders.url))
        payments.append(payment)

    answers: list[tuple[int, dict[str, Any]]] = []
    barrier = threading.Barrier(30)

    def place(n: int) -> None:
        barrier.wait()
        status, body, _ = http("POST", f"{gateways[n % 2].url}/api/order", order_body(), {"Idempotency-Key": "one-key"})
        answers.append((status, body))

    threads = [threading.Thread(target=place, args=(n,)) for n in range(30)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)

    assert len(answers) == 30
    assert order_count(postgres_url) == 1
    [order_id] = {body["order_id"] for _, body in answers}
    assert charges(payments) == {order_id: 1}, "one charge request left order-service, across both replicas"
    by_status = Counter(status for status, _ in answers)
    assert set(by_status) <= {201, 409}, answers
    assert by_status[201] >= 1
    for status, body in answers:  # the first answer, replays of it, or "still in progress"
        if status == 409:
            assert body["error"]["code"] == "idempotency_key_in_progress", body
        else:
            assert (body["status"], body["total"]) == ("paid", 25.0), body


def served_by(replicas: list[BackgroundProcess]) -> list[int]:
    return [sum(1 for line in replica.log_lines() if line.get("message") == "order paid") for replica in replicas]


@pytest.mark.parametrize("spread", [True, False])
def test_the_gateway_spreads_orders_over_replicas(
    tmp_path: Path, postgres_url: str, started: list[BackgroundProcess], spread: bool
) -> None:
    """Two order-services share one port (SO_REUSEPORT): the kernel picks one per new connection, as a
    Kubernetes Service does. With ORDERS_SPREAD_OVER_REPLICAS each order is a new connection, so each
    replica serves about half; kept-alive connections (the control) stay on the replica they reached."""
    payment = start(
        started, "shop.payments", tmp_path, free_port(), PAYMENTS_LATENCY_MIN_MS="1", PAYMENTS_LATENCY_MAX_MS="5"
    )
    port = free_port()
    replicas = [
        start(
            started,
            "shop.orders",
            tmp_path / f"orders-{n}",
            port,
            ORDERS_DATABASE_URL=postgres_url,
            PAYMENTS_URL=payment.url,
            REUSE_PORT="true",
        )
        for n in range(2)
    ]
    gateway = start(
        started,
        "shop.gateway",
        tmp_path,
        free_port(),
        ORDERS_URL=f"http://127.0.0.1:{port}",
        ORDERS_SPREAD_OVER_REPLICAS=str(spread).lower(),
    )
    orders = 100
    for _ in range(orders):
        assert http("POST", f"{gateway.url}/api/order", order_body())[0] == 201
    shares = [served / orders for served in served_by(replicas)]
    assert sum(served_by(replicas)) == orders
    # Each new connection lands on either replica with probability 1/2: 4 sigma of 100 draws is +-0.20.
    evenly = all(0.30 <= share <= 0.70 for share in shares)
    assert evenly is spread, shares
