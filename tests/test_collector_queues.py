"""Nothing the Collector acknowledged is lost (docs/reliability.md#the-collectors-queues): its exporters' queues
are on disk, so a Collector SIGKILLed under load and started again on the same queue directory sends what it
had accepted. Every order is looked up, not a sample: its trace must be whole in the Tempo stand-in (the span
count of the same order placed before the drill) and its log records in the Loki stand-in.

The built Collector with the real config, the services as processes; bounded in count and time, loopback only.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from harness.backends import Collector, collector_with_stand_ins
from harness.orders import order_body
from harness.otlp_sink import OtlpSink
from harness.processes import Shop, http, rss_kib
from tools import collector_binary

pytestmark = pytest.mark.backends

RATE = 25  # orders per second, above the 20
KILL_AFTER_S = 4
DOWN_S = 10
RUN_ON_S = 6
TEMPO_DOWN_S = 60
MAX_ORDERS = RATE * (KILL_AFTER_S + TEMPO_DOWN_S + RUN_ON_S) + 50


class PacedLoad:
    """Paid orders at ``rate`` a second from one thread (each waits for its answer), until stopped."""

    def __init__(self, gateway: str, rate: float) -> None:
        self.gateway = gateway
        self.interval_s = 1 / rate
        self.answers: list[tuple[int, dict[str, Any]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        next_at = time.monotonic()
        while not self._stop.is_set() and len(self.answers) < MAX_ORDERS:
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
    """What the stand-ins hold per trace: distinct spans, and distinct log records (a retried export may
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


def place_reference_order(shop: Shop, collector: Collector, tempo: OtlpSink, loki: OtlpSink) -> tuple[int, int]:
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


def incomplete(trace_ids: list[str], expected: tuple[int, int], tempo: OtlpSink, loki: OtlpSink) -> dict[str, Any]:
    received = Received.of(tempo, loki)
    return {
        trace_id: (received.spans[trace_id], received.log_records[trace_id])
        for trace_id in trace_ids
        if (received.spans[trace_id], received.log_records[trace_id]) != expected
    }


@contextmanager
def drill_shop(tmp_path: Path, **collector_env: str) -> Iterator[Drill]:
    collector_binary()
    with collector_with_stand_ins(tmp_path, **collector_env) as (collector, tempo, loki):
        shop = Shop(
            tmp_path / "shop",
            OTEL_EXPORTER_OTLP_ENDPOINT=collector.otlp_http_endpoint,
            PAYMENTS_LATENCY_MIN_MS="0",
            PAYMENTS_LATENCY_MAX_MS="2",
        )
        try:
            shop.start_all()
            expected = place_reference_order(shop, collector, tempo, loki)
            yield Drill(shop, collector, tempo, loki, expected)
        finally:
            shop.kill_all()


@dataclass
class Drill:
    shop: Shop
    collector: Collector
    tempo: OtlpSink
    loki: OtlpSink
    expected: tuple[int, int]  # one paid order's spans and log records

    def orders_during(self, outage: Callable[[], None]) -> list[str]:
        """Paid orders at RATE while ``outage`` runs (it returns once the outage is over) and RUN_ON_S after;
        every answer 201, at least 20 a second; their trace IDs."""
        started = time.monotonic()
        with PacedLoad(self.shop.gateway, RATE) as load:
            outage()
            time.sleep(RUN_ON_S)
        seconds = time.monotonic() - started
        print(f"{len(load.answers)} orders in {seconds:.0f} s; each: {self.expected[0]} spans, {self.expected[1]} logs")
        assert len(load.answers) >= 20 * seconds
        assert Counter(status for status, _ in load.answers) == {201: len(load.answers)}
        return [str(body["trace_id"]) for _, body in load.answers]

    def assert_every_order_whole(self, trace_ids: list[str], timeout_s: float = 90) -> None:
        deadline = time.monotonic() + timeout_s
        while incomplete(trace_ids, self.expected, self.tempo, self.loki) and time.monotonic() < deadline:
            time.sleep(2)
        broken = incomplete(trace_ids, self.expected, self.tempo, self.loki)
        print(f"orders whose trace or logs are incomplete: {len(broken)} of {len(trace_ids)}")
        assert broken == {}, dict(list(broken.items())[:5])


def test_a_collector_killed_under_load_loses_nothing_it_accepted(tmp_path: Path) -> None:
    with drill_shop(tmp_path) as drill:

        def kill_and_restart() -> None:
            time.sleep(KILL_AFTER_S)
            drill.collector.process.process.kill()  # SIGKILL: whatever it held in memory is gone
            drill.collector.process.process.wait()
            time.sleep(DOWN_S)
            drill.collector.start()  # the same ports and the same queue directory

        drill.assert_every_order_whole(drill.orders_during(kill_and_restart))


def test_tempo_down_for_a_minute_loses_nothing(tmp_path: Path) -> None:
    with drill_shop(tmp_path) as drill:

        def tempo_away() -> None:
            time.sleep(KILL_AFTER_S)
            drill.tempo.stop()
            time.sleep(TEMPO_DOWN_S)
            drill.tempo.start()

        drill.assert_every_order_whole(drill.orders_during(tempo_away))
        # The queue held the minute's spans on disk, not in memory.
        assert drill.collector.own_counters().get("otelcol_exporter_enqueue_failed_spans", 0) == 0


# A queue that holds about 4 s of the drill's spans, so that a 30 s outage of Tempo overflows it.
SMALL_QUEUE_BYTES = 256 * 1024
OVERFLOW_DOWN_S = 30


def directory_bytes(path: Path) -> int:
    return sum(file.stat().st_size for file in path.rglob("*") if file.is_file())


def test_an_outage_longer_than_the_queue_holds_is_counted_bounded_and_recovered_from(tmp_path: Path) -> None:
    with drill_shop(tmp_path, OTELCOL_QUEUE_BYTES=str(SMALL_QUEUE_BYTES)) as drill:
        collector = drill.collector
        rss_limit_kib = 400 * 1024  # config.yaml's memory_limiter

        def tempo_away_too_long() -> None:
            time.sleep(KILL_AFTER_S)
            drill.tempo.stop()
            time.sleep(OVERFLOW_DOWN_S)
            counters = collector.own_counters()
            queued = collector.own_value("otelcol_exporter_queue_size", exporter="otlp_http/tempo")
            print(
                f"during: queue {queued} of {SMALL_QUEUE_BYTES} bytes, enqueue failed spans "
                f"{counters.get('otelcol_exporter_enqueue_failed_spans', 0):.0f}"
            )
            assert queued <= SMALL_QUEUE_BYTES
            assert directory_bytes(tmp_path / "otelcol" / "queues") < 64 * 1024 * 1024
            assert rss_kib(collector.process.process.pid) < rss_limit_kib
            drill.tempo.start()

        trace_ids = drill.orders_during(tempo_away_too_long)
        failed = collector.own_counters().get("otelcol_exporter_enqueue_failed_spans", 0)
        print(f"the Collector refused {failed:.0f} spans (the services were told to retry)")
        assert failed > 0, "the loss is counted where the Collector dashboard reads it"
        # ... and recovers by itself: the orders of the last seconds, placed after Tempo came back, are whole.
        drill.assert_every_order_whole(trace_ids[-RATE * 3 :])
        # What the services could not deliver in the end is counted too, by their SDK's own metrics.
        undelivered = sum(
            sample.value
            for sample in collector.samples(collector.prometheus_target)
            if sample.name == "otel_sdk_exporter_span_exported_total" and sample.labels.get("error_type")
        )
        print(f"spans the services' exporters gave up on: {undelivered:.0f}")
