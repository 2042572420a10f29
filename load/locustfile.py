"""Traffic that brings the dashboards to life: a realistic mix of shop actions, driven by Locust.

    make load                                   headless: 10 actions/s for 1 minute, live progress, summary
    make load RATE=30 DURATION=5m MIX=paid=90,declined=10
    docker compose --profile load up -d         Locust's web UI on http://localhost:8089

One action is one task: an order of some kind, a look-up of a recent order, or an order retried with
the same Idempotency-Key. Every answer is checked against what the shop documents for that kind (a
declined card must get 402 payment_declined, and so on); only answers that differ count as failures,
so a clean run exits 0. It needs Locust and the harness's standard-library orders module only: the
compose service runs it in Locust's own image with that module mounted beside it.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable, Mapping
from typing import Any

import gevent
from locust import HttpUser, TaskSet, events
from locust.argument_parser import LocustArgumentParser
from locust.clients import ResponseContextManager
from locust.env import Environment
from locust.runners import WorkerRunner

from harness import orders
from harness.orders import DECLINED_CARD, DELAY_HEADER, FAIL_HEADER, GOOD_CARD

ITEMS = [("book", 12.5), ("lamp", 40.0), ("mug", 8.0), ("desk", 180.0), ("pen", 2.5)]
DEFAULT_MIX = "paid=70,declined=8,slow=5,failing=3,invalid=4,lookup=7,retry=3"
PROGRESS_EVERY_S = 2.0

# (kind, "expected" or the reason it was not), for the summary; a look-up needs a recent order.
OUTCOMES: Counter[tuple[str, str]] = Counter()
RECENT_ORDERS: deque[str] = deque(maxlen=200)


def order_body(card: str = GOOD_CARD, **overrides: Any) -> dict[str, Any]:
    """The harness's order, with a random item, quantity and customer."""
    item, price = random.choice(ITEMS)
    randomized = {
        "item": item,
        "quantity": random.randint(1, 3),
        "unit_price": price,
        "customer_id": f"c-{random.randint(1, 500)}",
        "card_number": card,
    }
    return orders.order_body(**{**randomized, **overrides})


def parse_mix(text: str) -> dict[str, int]:
    """``kind=weight,...`` into weights; kinds left out get weight 0."""
    weights: dict[str, int] = {}
    for part in filter(None, (piece.strip() for piece in text.split(","))):
        kind, _, weight = part.partition("=")
        if kind not in ACTIONS:
            raise ValueError(f"unknown kind {kind!r} in --mix (kinds: {', '.join(ACTIONS)})")
        if not weight.isdigit():
            raise ValueError(f"--mix needs kind=whole-number, got {part!r}")
        weights[kind] = int(weight)
    if not any(weights.values()):
        raise ValueError("--mix gives every kind weight 0")
    return weights


def check(
    response: ResponseContextManager, kind: str, http_status: int, waited_for_the_fault: bool = True, **fields: Any
) -> dict[str, Any]:
    """Pass if the answer has the documented status and fields; fail with what differed otherwise."""
    try:
        decoded = response.json()
    except ValueError:  # not JSON at all
        decoded = None
    body: dict[str, Any] = decoded if isinstance(decoded, dict) else {}
    error = body.get("error")
    got = {
        "HTTP status": response.status_code,
        **{
            name: error.get("code") if name == "error_code" and isinstance(error, dict) else body.get(name)
            for name in fields
        },
    }
    want = {"HTTP status": http_status, **fields}
    problems = [f"{name} {got[name]!r} (expected {want[name]!r})" for name in want if got[name] != want[name]]
    if not waited_for_the_fault and response.status_code == http_status:
        problems.append("answered before the fault delay: the gateway ignores fault headers")
    if problems:
        response.failure(", ".join(problems))
        OUTCOMES[kind, ", ".join(problems)] += 1
    else:
        response.success()
        OUTCOMES[kind, "expected"] += 1
    return body


def options(environment: Environment) -> argparse.Namespace:
    parsed: argparse.Namespace | None = environment.parsed_options
    if parsed is None:
        raise RuntimeError("the shop's load options were not parsed")
    return parsed


class ShopCustomer(HttpUser):
    """One customer; together they perform ``--rate`` actions per second in the ``--mix`` proportions."""

    def wait_time(self) -> float:
        """Poisson arrivals at --rate in total: exponential gaps, less the time the last action took."""
        users = self.environment.runner.user_count if self.environment.runner else 1
        gap = random.expovariate(options(self.environment).rate / max(users, 1))
        now = time.monotonic()
        took = now - getattr(self, "action_started", now)
        wait = max(0.0, gap - took)
        self.action_started = now + wait
        return wait

    def on_start(self) -> None:
        weights = parse_mix(options(self.environment).mix)
        self.kinds = [kind for kind in weights if weights[kind]]
        self.weights = [weights[kind] for kind in self.kinds]

    # Locust's own @task weights are fixed at import; --mix sets them per run instead.
    def run_one(self) -> None:
        kind = random.choices(self.kinds, self.weights)[0]
        ACTIONS[kind](self)

    tasks: list[TaskSet | Callable[..., Any]] = [run_one]  # noqa: RUF012 (Locust's own declaration)

    def place(self, kind: str, body: Mapping[str, Any], headers: Mapping[str, str] | None = None) -> Any:
        return self.client.post(
            "/api/order",
            json=body,
            headers=dict(headers or {}),
            name=f"POST /api/order [{kind}]",
            catch_response=True,
        )

    def paid(self) -> None:
        with self.place("paid", order_body()) as response:
            body = check(response, "paid", 201, status="paid")
        if "order_id" in body:
            RECENT_ORDERS.append(body["order_id"])

    def declined(self) -> None:
        with self.place("declined", order_body(DECLINED_CARD)) as response:
            check(response, "declined", 402, error_code="payment_declined")

    def slow(self) -> None:
        delay_ms = options(self.environment).slow_ms
        started = time.monotonic()
        with self.place("slow", order_body(), {DELAY_HEADER: str(delay_ms)}) as response:
            # Faster than the delay means the gateway ignored the header (GATEWAY_ALLOW_FAULT_HEADERS=false).
            waited = time.monotonic() - started >= delay_ms / 1000
            check(response, "slow", 201, status="paid", waited_for_the_fault=waited)

    def failing(self) -> None:
        with self.place("failing", order_body(), {FAIL_HEADER: "true"}) as response:
            check(response, "failing", 502, error_code="payment_failed")

    def invalid(self) -> None:
        if random.random() < 0.5:
            with self.place("invalid", order_body(quantity=0, card_number="1234")) as response:
                check(response, "invalid", 422, error_code="validation_failed")
        else:
            with self.client.post(
                "/api/order",
                data=b'{"item": "book",',
                headers={"Content-Type": "application/json"},
                name="POST /api/order [invalid]",
                catch_response=True,
            ) as response:
                check(response, "invalid", 400, error_code="malformed_json")

    def lookup(self) -> None:
        if not RECENT_ORDERS:
            self.paid()
            return
        order_id = random.choice(RECENT_ORDERS)
        with self.client.get(
            f"/api/order/{order_id}", name="GET /api/order/{order_id}", catch_response=True
        ) as response:
            check(response, "lookup", 200, order_id=order_id)

    def retry(self) -> None:
        """An order sent twice with one Idempotency-Key, as a client does after a timeout: one charge."""
        body, key = order_body(), f"load-{uuid.uuid4().hex}"
        with self.place("retry", body, {"Idempotency-Key": key}) as first:
            order_id = check(first, "retry", 201, status="paid").get("order_id")
        with self.place("retry", body, {"Idempotency-Key": key}) as second:
            check(second, "retry", 201, order_id=order_id, idempotent_replay=True)


ACTIONS: dict[str, Callable[[ShopCustomer], None]] = {
    "paid": ShopCustomer.paid,
    "declined": ShopCustomer.declined,
    "slow": ShopCustomer.slow,
    "failing": ShopCustomer.failing,
    "invalid": ShopCustomer.invalid,
    "lookup": ShopCustomer.lookup,
    "retry": ShopCustomer.retry,
}


@events.init_command_line_parser.add_listener
def add_options(parser: LocustArgumentParser) -> None:
    parser.add_argument(
        "--rate", type=float, default=10.0, env_var="SHOP_LOAD_RATE", help="actions per second, all users together"
    )
    parser.add_argument(
        "--mix", default=DEFAULT_MIX, env_var="SHOP_LOAD_MIX", help=f"kind=weight,... (default {DEFAULT_MIX})"
    )
    parser.add_argument(
        "--slow-ms", type=int, default=1500, env_var="SHOP_LOAD_SLOW_MS", help="payment delay of a slow order"
    )


@events.init.add_listener
def validate_and_report(environment: Environment, **_: Any) -> None:
    parsed = environment.parsed_options
    if parsed is None:
        return
    try:
        parse_mix(parsed.mix)
        if not 0 < parsed.rate <= 10_000:
            raise ValueError(f"--rate must be above 0 and at most 10000, got {parsed.rate:g}")
        if not 0 <= parsed.slow_ms <= 60_000:
            raise ValueError(f"--slow-ms must be 0..60000 (the gateway's limit), got {parsed.slow_ms}")
    except ValueError as error:
        print(f"make load: {error}", file=sys.stderr)
        sys.exit(2)
    if parsed.headless and not isinstance(environment.runner, WorkerRunner):
        gevent.spawn(progress, environment)


def progress(environment: Environment) -> None:
    """One line, rewritten in place on a terminal (a new line every 10 s otherwise)."""
    tty = sys.stderr.isatty()
    started = time.monotonic()
    last_printed = float("-inf")
    while True:
        gevent.sleep(PROGRESS_EVERY_S)
        total = environment.stats.total
        if total.num_requests == 0:
            continue
        elapsed = time.monotonic() - started
        line = (
            f"[{elapsed:5.0f} s] {total.num_requests} requests, {total.current_rps:5.1f}/s now,"
            f" {total.num_failures} unexpected, p95 {total.get_current_response_time_percentile(0.95) or 0:.0f} ms"
        )
        if tty:
            print(f"\r{line}   ", end="", file=sys.stderr, flush=True)
        elif elapsed - last_printed >= 10:
            print(line, file=sys.stderr, flush=True)
            last_printed = elapsed


@events.quitting.add_listener
def summary(environment: Environment, **_: Any) -> None:
    if isinstance(environment.runner, WorkerRunner) or not OUTCOMES:
        return
    print(file=sys.stderr)
    print("Shop load summary (answers per kind):", file=sys.stderr)
    for kind in ACTIONS:
        expected = OUTCOMES[kind, "expected"]
        other = {reason: n for (k, reason), n in OUTCOMES.items() if k == kind and reason != "expected"}
        if expected or other:
            print(f"  {kind:<9} {expected:6d} as documented", file=sys.stderr)
        for reason, count in sorted(other.items()):
            print(f"  {'':<9} {count:6d} {reason}", file=sys.stderr)
