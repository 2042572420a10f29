"""Telemetry-loss drills: paid orders at a steady rate while the Collector or Tempo goes away, then every order
looked up in the Tempo and Loki stand-ins. Shared by tests/test_collector_queues.py (which asserts that nothing
is lost) and scripts/collector_drills.py (which counts what is lost, before and after a change)."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.backends import COLLECTOR_CONFIG, Collector, collector_with_stand_ins
from harness.orders import order_body
from harness.otlp_sink import OtlpSink
from harness.processes import Shop, http

# How long the services place orders before an outage begins, and after it ends before every order is
# looked up.
OUTAGE_AFTER_S = 4
RUN_ON_S = 6
# The Collector's exporters wait up to 30 s between retries (retry_on_failure's default max_interval).
SETTLE_S = 35


class PacedLoad:
    """Paid orders at ``rate`` a second from one thread (each waits for its answer), until stopped or
    ``max_orders`` are placed."""

    def __init__(self, gateway: str, rate: float, max_orders: int) -> None:
        self.gateway = gateway
        self.interval_s = 1 / rate
        self.max_orders = max_orders
        self.answers: list[tuple[int, dict[str, Any]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        next_at = time.monotonic()
        while not self._stop.is_set() and len(self.answers) < self.max_orders:
            status, body, _ = http("POST", f"{self.gateway}/api/order", order_body())
            self.answers.append((status, body))
            next_at += self.interval_s
            time.sleep(max(0.0, next_at - time.monotonic()))

    def __enter__(self) -> PacedLoad:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)


@dataclass(frozen=True)
class Received:
    """What the stand-ins hold per trace: distinct spans and distinct log records (a retried export may
    deliver the same record twice: duplicates are not losses)."""

    spans: Counter[str]
    log_records: Counter[str]

    @classmethod
    def of(cls, tempo: OtlpSink, loki: OtlpSink) -> Received:
        spans = {(span.trace_id.hex(), span.span_id) for _, span in tempo.spans()}
        records = {
            (record.trace_id.hex(), record.span_id, record.time_unix_nano, record.body.SerializeToString())
            for _, record in loki.log_records()
        }
        return cls(Counter(trace for trace, _ in spans), Counter(trace for trace, *_ in records))


@dataclass(frozen=True)
class Losses:
    orders: int
    traces_broken: int  # orders whose trace lacks spans
    log_records_lost: int

    @classmethod
    def of(cls, trace_ids: list[str], expected: tuple[int, int], received: Received) -> Losses:
        return cls(
            len(trace_ids),
            sum(received.spans[trace_id] < expected[0] for trace_id in trace_ids),
            sum(max(0, expected[1] - received.log_records[trace_id]) for trace_id in trace_ids),
        )


@dataclass
class Drill:
    shop: Shop
    collector: Collector
    tempo: OtlpSink
    loki: OtlpSink
    expected: tuple[int, int]  # one paid order's spans and log records

    def orders_during(self, outage: Callable[[], None], rate: float, max_orders: int) -> list[str]:
        """Paid orders at ``rate`` while ``outage`` runs (it returns once the outage is over) and RUN_ON_S
        after; their trace IDs. Every one must be answered 201."""
        started = time.monotonic()
        with PacedLoad(self.shop.gateway, rate, max_orders) as load:
            outage()
            time.sleep(RUN_ON_S)
        seconds = time.monotonic() - started
        print(f"{len(load.answers)} orders in {seconds:.0f} s; each: {self.expected[0]} spans, {self.expected[1]} logs")
        statuses = Counter(status for status, _ in load.answers)
        assert statuses == {201: len(load.answers)}, statuses
        return [str(body["trace_id"]) for _, body in load.answers]

    def losses(self, trace_ids: list[str], timeout_s: float = 150) -> Losses:
        """What is missing: at once when nothing is, else once nothing more arrived for SETTLE_S (longer than
        the Collector's longest wait between retries, so that a backlog still draining is not counted), or
        when ``timeout_s`` has passed."""
        deadline = time.monotonic() + timeout_s
        previous, since = None, time.monotonic()
        while True:
            losses = Losses.of(trace_ids, self.expected, Received.of(self.tempo, self.loki))
            if losses.traces_broken == losses.log_records_lost == 0 or time.monotonic() > deadline:
                return losses
            if losses != previous:
                previous, since = losses, time.monotonic()
            elif time.monotonic() - since >= SETTLE_S:
                return losses
            time.sleep(2)

    def kill_collector_for(self, seconds: float) -> None:
        """OUTAGE_AFTER_S into the load, for ``seconds``."""
        time.sleep(OUTAGE_AFTER_S)
        self.collector.process.process.kill()  # SIGKILL: whatever it held in memory is gone
        self.collector.process.process.wait()
        time.sleep(seconds)
        self.collector.start()  # the same ports and the same queue directory

    def stop_tempo_for(self, seconds: float) -> None:
        """OUTAGE_AFTER_S into the load, for ``seconds``."""
        time.sleep(OUTAGE_AFTER_S)
        self.tempo.stop()
        time.sleep(seconds)
        self.tempo.start()


def place_reference_order(shop: Shop, tempo: OtlpSink, loki: OtlpSink) -> tuple[int, int]:
    """The spans and log records of one paid order, placed while everything runs."""
    status, body, _ = http("POST", f"{shop.gateway}/api/order", order_body())
    assert status == 201, body
    deadline = time.monotonic() + 30
    previous = (-1, -1)
    while time.monotonic() < deadline:
        time.sleep(1.5)
        received = Received.of(tempo, loki)
        counts = (received.spans[body["trace_id"]], received.log_records[body["trace_id"]])
        if counts == previous and counts[0] > 0:
            return counts
        previous = counts
    raise TimeoutError("the reference order's telemetry did not settle")


@contextmanager
def drill_shop(
    workdir: Path,
    collector: type[Collector] = Collector,
    collector_config: Path = COLLECTOR_CONFIG,
    service_env: Mapping[str, str] | None = None,
    **collector_env: str,
) -> Iterator[Drill]:
    """The services (payments answering at once) exporting to a Collector (``collector``'s build, running
    ``collector_config``) with Tempo and Loki stand-ins."""
    with collector_with_stand_ins(workdir, collector, (collector_config,), collector_env) as (running, tempo, loki):
        shop = Shop(
            workdir / "shop",
            OTEL_EXPORTER_OTLP_ENDPOINT=running.otlp_http_endpoint,
            PAYMENTS_LATENCY_MIN_MS="0",
            PAYMENTS_LATENCY_MAX_MS="2",
            **(service_env or {}),
        )
        try:
            shop.start_all()
            yield Drill(shop, running, tempo, loki, place_reference_order(shop, tempo, loki))
        finally:
            shop.kill_all()
