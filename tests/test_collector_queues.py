"""Nothing the Collector acknowledged is lost (docs/reliability.md#the-collectors-queues): its exporters' queues
are on disk, so a Collector SIGKILLed under load and started again on the same queue directory sends what it
had accepted, and a minute without Tempo is held on disk. Every order is looked up, not a sample: its trace
must be whole in the Tempo stand-in (the span count of the same order placed before the drill) and its log
records in the Loki stand-in (harness/drills.py). An outage longer than the queue holds is counted, bounded,
and recovered from.

The built Collector with the real config, the services as processes; bounded in count and time, loopback only.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from harness.drills import OUTAGE_AFTER_S, Drill, Losses, drill_shop
from harness.processes import rss_kib
from tools import collector_binary

pytestmark = pytest.mark.backends

RATE = 25  # orders per second, above the 20
COLLECTOR_DOWN_S = 10
TEMPO_DOWN_S = 60
MAX_ORDERS = RATE * (OUTAGE_AFTER_S + TEMPO_DOWN_S + 10)
# A queue that holds about 4 s of the drill's spans, so that a 30 s outage of Tempo overflows it.
SMALL_QUEUE_BYTES = 256 * 1024
OVERFLOW_DOWN_S = 30
MEMORY_LIMIT_KIB = 400 * 1024  # config.yaml's memory_limiter


def assert_nothing_lost(drill: Drill, trace_ids: list[str]) -> None:
    losses = drill.losses(trace_ids)
    print(losses)
    assert losses == Losses(len(trace_ids), 0, 0)


def test_a_collector_killed_under_load_loses_nothing_it_accepted(tmp_path: Path) -> None:
    collector_binary()
    with drill_shop(tmp_path) as drill:
        trace_ids = drill.orders_during(lambda: drill.kill_collector_for(COLLECTOR_DOWN_S), RATE, MAX_ORDERS)
        assert len(trace_ids) >= 20 * (OUTAGE_AFTER_S + COLLECTOR_DOWN_S)
        assert_nothing_lost(drill, trace_ids)


def test_tempo_down_for_a_minute_loses_nothing(tmp_path: Path) -> None:
    collector_binary()
    with drill_shop(tmp_path) as drill:
        trace_ids = drill.orders_during(lambda: drill.stop_tempo_for(TEMPO_DOWN_S), RATE, MAX_ORDERS)
        assert len(trace_ids) >= 20 * (OUTAGE_AFTER_S + TEMPO_DOWN_S)
        assert_nothing_lost(drill, trace_ids)
        # The queue held the minute's spans (on disk), refusing none.
        assert drill.collector.own_counters().get("otelcol_exporter_enqueue_failed_spans", 0) == 0


def directory_bytes(path: Path) -> int:
    return sum(file.stat().st_size for file in path.rglob("*") if file.is_file())


def test_an_outage_longer_than_the_queue_holds_is_counted_bounded_and_recovered_from(tmp_path: Path) -> None:
    collector_binary()
    with drill_shop(tmp_path, OTELCOL_QUEUE_BYTES=str(SMALL_QUEUE_BYTES)) as drill:
        collector = drill.collector

        def tempo_away_too_long() -> None:
            time.sleep(OUTAGE_AFTER_S)
            drill.tempo.stop()
            time.sleep(OVERFLOW_DOWN_S)
            queued = collector.own_value("otelcol_exporter_queue_size", exporter="otlp_http/tempo")
            refused = collector.own_counters().get("otelcol_exporter_enqueue_failed_spans", 0)
            print(
                f"after {OVERFLOW_DOWN_S} s: queue {queued:.0f} of {SMALL_QUEUE_BYTES} bytes,",
                f"{refused:.0f} spans refused",
            )
            assert queued <= SMALL_QUEUE_BYTES
            assert refused > 0, "the loss is counted where the Collector dashboard reads it"
            assert directory_bytes(tmp_path / "otelcol" / "queues") < 64 * 1024 * 1024
            assert rss_kib(collector.process.process.pid) < MEMORY_LIMIT_KIB
            drill.tempo.start()

        drill.orders_during(tempo_away_too_long, RATE, MAX_ORDERS)
        # It recovers by itself: its queue drains once its exporter's next retry finds Tempo back (within the
        # retries' longest wait, 30 s), and the orders placed then are whole again.
        deadline = time.monotonic() + 90
        while collector.own_value("otelcol_exporter_queue_size", exporter="otlp_http/tempo") > 0:
            assert time.monotonic() < deadline, "the queue did not drain once Tempo was back"
            time.sleep(1)
        assert_nothing_lost(drill, drill.orders_during(lambda: None, RATE, MAX_ORDERS))
