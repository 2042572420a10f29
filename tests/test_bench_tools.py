"""The pieces of `make bench` that turn raw output into figures (the timings themselves are never tested)."""

from __future__ import annotations

import argparse
import dataclasses
from collections import defaultdict
from importlib.metadata import entry_points
from pathlib import Path

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import Span

import bench_collector
import profiles
from bench import (
    Result,
    db_span_share,
    engine_list,
    environment_setting,
    median_of,
    per_service_request_us,
    stock_env,
    wrk_duration_ms,
)
from harness.otlp_sink import resource_attributes

pytestmark = pytest.mark.unit

SITE = "/app/.venv/lib/python3.11/site-packages"
# Folded stacks as py-spy --full-filenames --threads writes them: thread;root;...;running frame count
FOLDED = f"""\
thread (1): MainThread;run_app ({SITE}/aiohttp/web.py:502) 50
thread (1): MainThread;run_app ({SITE}/aiohttp/web.py:502);place_order (/app/shop/orders/handlers.py:98);\
info (/usr/lib/python3.11/logging/__init__.py:1489);format ({SITE}/pythonjsonlogger/core.py:300);\
dumps (/usr/lib/python3.11/json/__init__.py:238) 20
thread (2): OtelBatchSpanRecordProcessor;worker ({SITE}/opentelemetry/sdk/_shared_internal/__init__.py:162);\
_encode_span ({SITE}/opentelemetry/exporter/otlp/proto/common/_internal/trace_encoder/__init__.py:90) 15
thread (1): MainThread;place_order (/app/shop/orders/handlers.py:98);\
start_span ({SITE}/opentelemetry/sdk/trace/__init__.py:1100) 10
thread (1): MainThread;place_order (/app/shop/orders/handlers.py:98);total (/app/shop/common/orders_api.py:40) 5
"""


def test_samples_are_charged_to_the_code_that_was_running(tmp_path: Path) -> None:
    folded = tmp_path / "orders.folded"
    folded.write_text(FOLDED)
    total, share = profiles.shares(folded)
    assert total == 100
    # json.dumps called by the log formatter is logging; the C event loop is the web stack.
    assert share["web stack"] == 0.50
    assert share["logging"] == 0.20
    assert share["export"] == 0.15
    assert share["tracing"] == 0.10
    assert share["our code"] == 0.05
    assert sum(share.values()) == pytest.approx(1.0)


@pytest.mark.parametrize(("text", "ms"), [("812.00us", 0.812), ("5.43ms", 5.43), ("1.02s", 1020.0)])
def test_wrk_durations_are_read_in_milliseconds(text: str, ms: float) -> None:
    assert wrk_duration_ms(text) == pytest.approx(ms)


def test_settings_for_the_services_must_be_name_equals_value() -> None:
    assert environment_setting("OTEL_BSP_MAX_QUEUE_SIZE=512") == ("OTEL_BSP_MAX_QUEUE_SIZE", "512")
    with pytest.raises(argparse.ArgumentTypeError, match="NAME=VALUE"):
        environment_setting("otel_bsp=1")


def test_rounds_merge_into_medians_and_summed_counts() -> None:
    rounds = [
        Result("full", rps, 1.0, 2.0, cpu, 3.0, 4.0, p99, errors=0, orders=100, spans_expected=900, spans_received=900)
        for rps, cpu, p99 in [(400.0, 3.5, 12.0), (300.0, 4.0, 20.0), (500.0, 3.0, 11.0)]
    ]
    merged = median_of(rounds)
    assert (merged.throughput_rps, merged.cpu_s_per_1000, merged.fixed_p99_ms) == (400.0, 3.5, 12.0)
    assert (merged.orders, merged.spans_expected, merged.spans_received) == (300, 2700, 2700)
    assert merged.spans_accepted is None  # not measured in these rounds


def test_bench_collector_replays_whole_shop_traces() -> None:
    """What `make bench-collector` sends: complete traces of the three services, as the shop makes them."""
    request = ExportTraceServiceRequest.FromString(bench_collector.export_request())
    traces: dict[bytes, list[tuple[str, Span]]] = defaultdict(list)
    for resource_spans in request.resource_spans:
        service = resource_attributes(resource_spans.resource)["service.name"]
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                traces[span.trace_id].append((service, span))
    assert len(traces) == bench_collector.TRACES_PER_REQUEST
    assert sum(map(len, traces.values())) == bench_collector.SPANS_PER_REQUEST
    for spans in traces.values():
        ids = {span.span_id for _, span in spans}
        assert [span.name for _, span in spans if not span.parent_span_id] == ["POST /api/order"]
        assert all(span.parent_span_id in ids for _, span in spans if span.parent_span_id)
        assert {service for service, _ in spans} == set(bench_collector.SERVICES)


def test_the_db_share_is_the_db_client_spans_time_over_the_gateways() -> None:
    def span(name: str, start: int, end: int, **attributes: str) -> Span:
        made = Span(name=name, start_time_unix_nano=start, end_time_unix_nano=end)
        for key, value in attributes.items():
            made.attributes.add(key=key.replace("_", "."), value={"string_value": value})
        return made

    spans = [
        span("POST /api/order", 0, 100),
        span("POST /orders", 10, 90),
        span("INSERT orders", 20, 40, db_system_name="postgresql"),
        span("UPDATE orders", 60, 65, db_system_name="postgresql"),
        span("POST /api/order", 200, 300),
        span("INSERT orders", 210, 215, db_system_name="postgresql"),
    ]
    assert db_span_share(spans) == pytest.approx(30 / 200)
    assert db_span_share([]) == 0.0


def test_engines_are_a_list_of_known_names_without_repeats() -> None:
    assert engine_list("postgresql,sqlite,postgresql") == ("postgresql", "sqlite")
    with pytest.raises(argparse.ArgumentTypeError):
        engine_list("mysql")


def test_the_stock_setup_is_the_three_instrumentations_and_the_sdk_defaults() -> None:
    installed = {point.name for point in entry_points(group="opentelemetry_instrumentor")}
    for ratio, sampler in ((None, "parentbased_always_on"), (0.1, "parentbased_traceidratio")):
        env = stock_env(ratio)
        disabled = set(env["OTEL_PYTHON_DISABLED_INSTRUMENTATIONS"].split(","))
        assert installed - disabled == {"aiohttp-server", "aiohttp-client", "logging"}
        assert env["OTEL_TRACES_SAMPLER"] == sampler
        assert env.get("OTEL_TRACES_SAMPLER_ARG") == (None if ratio is None else "0.1")
        assert (env["OTEL_BSP_SCHEDULE_DELAY"], env["OTEL_EXPORTER_OTLP_PROTOCOL"]) == ("5000", "http/protobuf")
        assert env["TELEMETRY_INSTRUMENTATION"] == "zero-code"  # our own providers off


def test_telemetry_cpu_per_service_request() -> None:
    off = Result("off", 1000, 1, 2, 0.90, 1, 2, 3, 0, 1000)
    sampled = dataclasses.replace(off, setup="sampled", cpu_s_per_1000=1.50)
    # 0.60 CPU s per 1,000 orders over three service requests an order: 200 µs each.
    assert per_service_request_us(sampled, off) == pytest.approx(200)
