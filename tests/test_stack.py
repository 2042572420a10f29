"""The Collector fan-out, proven with real processes: the built Collector with the real config, the real
Prometheus with the real config and rules, the three services, and recording OTLP receivers standing in
for Tempo and Loki (which cannot run here).

One module-scoped stack takes a mix of orders; each test then asserts on one route of the telemetry.
"""

from __future__ import annotations

import os
import time
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import yaml

import smoke
from grafana_queries import datasources, promql_expressions
from harness.backends import (
    PROMETHEUS_CONFIG,
    PROMETHEUS_RULES,
    Collector,
    Prometheus,
    dump,
    observed_shop,
)
from harness.orders import DB_DELAY_HEADER, DECLINED_CARD, DELAY_HEADER, FAIL_HEADER, GOOD_CARD, order_body
from harness.otlp_json import json_span, traces_document
from harness.otlp_sink import OtlpSink
from harness.postgres import PostgresServer
from harness.processes import SERVICE_NAMES, Shop, http
from tools import collector_binary, prometheus_binary, prometheus_install

pytestmark = pytest.mark.backends

SERVICES = set(SERVICE_NAMES.values())
SLOW = {DELAY_HEADER: "800"}
FAIL = {FAIL_HEADER: "true"}
SLOW_DATABASE_MS = 600
SLOW_DATABASE = {DB_DELAY_HEADER: str(SLOW_DATABASE_MS)}
# The service map's node for the stack's database (the rules name it by db.system.name).
DATABASE_NODE = "postgresql"
# Orders that reach payment-service, and so log in all three services.
CHARGED = {"paid", "declined", "failed", "slow", "slow database"}


@dataclass
class Order:
    kind: str
    status: int
    body: dict[str, Any]

    @property
    def trace_id(self) -> str:
        trace_id: str = self.body["trace_id"]
        return trace_id


@dataclass
class Stack:
    tempo: OtlpSink
    loki: OtlpSink
    collector: Collector
    shop: Shop
    prometheus: Prometheus
    orders: list[Order]


def post_page_spans(gateway: str) -> None:
    """ "click to answer" spans as the shop page exports them, through the gateway's ingest, for the Overview's
    click-to-answer panel (tests/test_browser.py has the real page in a real browser send its own)."""
    spans = [json_span(os.urandom(16).hex(), "click to answer", trace_state="ot=th:0") for _ in range(3)]
    status, answer, _ = http(
        "POST", f"{gateway}/otlp/v1/traces", traces_document({}, spans), {"Content-Type": "application/json"}
    )
    assert status == 200, answer


def place_orders(gateway: str, round_name: str) -> list[Order]:
    """A mix with every outcome: paid (one retried with its Idempotency-Key), declined, failed, slow, invalid."""
    key = {"Idempotency-Key": f"stack-replay-{round_name}"}
    plan: list[tuple[str, dict[str, Any], dict[str, str]]] = [
        *[("paid", order_body(), {}) for _ in range(5)],
        ("paid", order_body(item="lamp"), key),
        ("replay", order_body(item="lamp"), key),
        *[("declined", order_body(card_number=DECLINED_CARD), {}) for _ in range(2)],
        *[("failed", order_body(), FAIL) for _ in range(2)],
        *[("slow", order_body(), SLOW) for _ in range(2)],
        ("slow database", order_body(), SLOW_DATABASE),
        ("invalid", order_body(quantity=0), {}),
    ]
    orders = []
    for kind, body, headers in plan:
        status, answer, _ = http("POST", f"{gateway}/api/order", body, {"Content-Type": "application/json", **headers})
        orders.append(Order(kind, status, answer))
    expected = {
        "paid": 201,
        "replay": 201,
        "declined": 402,
        "failed": 502,
        "slow": 201,
        "slow database": 201,
        "invalid": 422,
    }
    assert [(o.kind, o.status) for o in orders] == [(o.kind, expected[o.kind]) for o in orders]
    return orders


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, postgres_server: PostgresServer) -> Iterator[Stack]:
    collector_binary()  # each skips on a user's machine without it, saying why (and fails in CI)
    prometheus_binary()
    workdir = tmp_path_factory.mktemp("stack")
    with observed_shop(
        workdir,
        # As compose runs it: orders in PostgreSQL.
        ORDERS_DATABASE_URL=postgres_server.create_database("stack"),
        OTEL_BSP_SCHEDULE_DELAY="500",
        OTEL_BLRP_SCHEDULE_DELAY="500",
        # Longer than the 5 s scrape interval: the SDK sends exemplars only with the export that
        # follows a measurement, so each export must stay exposed for at least one scrape.
        OTEL_METRIC_EXPORT_INTERVAL="10000",
        GATEWAY_ALLOW_FAULT_HEADERS="true",
    ) as observed:
        shop, collector, prometheus = observed.shop, observed.collector, observed.prometheus
        # Prometheus computes rates from increases it has seen: a counter series whose first
        # sample already holds every event shows no rate. So a first round creates the series,
        # and a second one, once they are scraped, makes them grow.
        orders = place_orders(shop.gateway, "first")
        post_page_spans(shop.gateway)
        for expr in (
            'traces_span_metrics_calls_total{service_name="payment-service", status_code="STATUS_CODE_ERROR"}',
            'traces_span_metrics_duration_milliseconds_bucket{service_name="payment-service", le="1000.0"}',
            "orders_idempotent_replays_total > 0",
        ):
            assert prometheus.wait_for(expr), f"no data for {expr} within the time limit"
        orders += place_orders(shop.gateway, "second")
        post_page_spans(shop.gateway)
        charged = sum(1 for order in orders if order.kind in CHARGED)
        # Wait (bounded) until Prometheus has scraped all of the second round, and the rules saw it.
        for expr in (
            f'sum(traces_span_metrics_calls_total{{span_name="POST /api/order"}}) >= {len(orders)}',
            f'sum(traces_span_metrics_calls_total{{span_name="POST /payments"}}) >= {charged}',
            f'sum(http_server_request_duration_seconds_count{{job="shop/gateway"}}) >= {len(orders)}',
            'sum(traces_span_metrics_calls_total{service_name="shop-web", span_name="click to answer"}) >= 6',
            "orders_idempotent_replays_total >= 2",
            'ALERTS{alertname="ShopServiceErrorRatioHigh", service_name="payment-service"}',
            'ALERTS{alertname="ShopServiceLatencyP95High", service_name="payment-service"}',
        ):
            assert prometheus.wait_for(expr), f"no data for {expr} within the time limit"
        collector.wait_until_idle()
        yield Stack(observed.tempo, observed.loki, collector, shop, prometheus, orders)


def test_every_order_reaches_tempo_as_one_complete_trace(stack: Stack) -> None:
    spans_by_trace: dict[bytes, list[tuple[str, Any]]] = defaultdict(list)
    for resource, span in stack.tempo.spans():
        spans_by_trace[span.trace_id].append((resource["service.name"], span))
    assert set(stack.tempo.paths) == {"/v1/traces"}, "only traces go to Tempo"

    for order in stack.orders:
        spans = spans_by_trace[bytes.fromhex(order.trace_id)]
        names = {(service, span.name) for service, span in spans}
        if order.kind == "invalid":
            assert names == {("gateway", "POST /api/order")}
            continue
        expected = {("gateway", "POST /api/order"), ("gateway", "POST"), ("order-service", "POST /orders")}
        if order.kind != "replay":
            expected |= {("order-service", "place_order"), ("payment-service", "POST /payments")}
            expected |= {("payment-service", "processor.authorize"), ("order-service", "INSERT orders")}
        assert expected <= names, (order.kind, names)
        ids = {span.span_id for _, span in spans}
        roots = [span for _, span in spans if not span.parent_span_id]
        assert len(roots) == 1, order.kind
        assert roots[0].name == "POST /api/order"
        assert all(span.parent_span_id in ids for _, span in spans if span.parent_span_id), "no orphans"


def test_the_slow_database_order_shows_its_slow_db_span(stack: Stack) -> None:
    """The trace the demo's slow-database order leaves in Tempo: its INSERT is the slow span, inside PostgreSQL."""
    [order] = [o for o in stack.orders if o.kind == "slow database"][-1:]
    spans = [span for _, span in stack.tempo.spans() if span.trace_id == bytes.fromhex(order.trace_id)]
    [insert] = [span for span in spans if span.name == "INSERT orders"]
    attributes = {kv.key: kv.value for kv in insert.attributes}
    assert attributes["db.system.name"].string_value == "postgresql"
    assert attributes["fault.db.delay_ms"].int_value == SLOW_DATABASE_MS
    assert "pg_sleep" in attributes["db.query.text"].string_value
    duration_ms = (insert.end_time_unix_nano - insert.start_time_unix_nano) / 1e6
    assert duration_ms >= SLOW_DATABASE_MS
    children = [span for span in spans if span.parent_span_id == insert.parent_span_id]
    slowest = max(children, key=lambda span: span.end_time_unix_nano - span.start_time_unix_nano)
    assert slowest.name == "INSERT orders", "the database is where this order's time went"


def test_logs_reach_loki_with_trace_context_and_no_card_number(stack: Stack) -> None:
    assert set(stack.loki.paths) == {"/otlp/v1/logs"}, "only logs go to Loki's OTLP path"
    records = stack.loki.log_records()
    services_by_trace: dict[bytes, set[str]] = defaultdict(set)
    for resource, record in records:
        assert resource["service.name"] in SERVICES
        assert GOOD_CARD not in str(record)
        assert DECLINED_CARD not in str(record)
        if record.trace_id:
            assert len(record.trace_id) == 16
            assert len(record.span_id) == 8
            services_by_trace[record.trace_id].add(resource["service.name"])

    for order in stack.orders:
        logged = services_by_trace[bytes.fromhex(order.trace_id)]
        expected = {"gateway"} if order.kind == "invalid" else {"gateway", "order-service"}
        if order.kind in CHARGED:
            expected = SERVICES
        assert logged == expected, (order.kind, logged)


def test_span_metrics_cover_every_service_with_error_status(stack: Stack) -> None:
    calls = stack.prometheus.query("sum by (service_name, status_code) (traces_span_metrics_calls_total)")
    seen = {(r["metric"]["service_name"], r["metric"]["status_code"]) for r in calls}
    assert {(s, "STATUS_CODE_UNSET") for s in SERVICES} <= seen
    assert ("payment-service", "STATUS_CODE_ERROR") in seen, dump(calls)

    server_buckets = 'traces_span_metrics_duration_milliseconds_bucket{le="+Inf", span_kind="SPAN_KIND_SERVER"}'
    buckets = stack.prometheus.query(f"sum by (service_name) ({server_buckets})")
    assert {r["metric"]["service_name"] for r in buckets} == SERVICES
    routes = stack.prometheus.query(
        'count by (http_route) (traces_span_metrics_calls_total{span_kind="SPAN_KIND_SERVER"})'
    )
    assert {r["metric"]["http_route"] for r in routes} == {"/api/order", "/orders", "/payments"}


def edges(prometheus: Prometheus, metric: str) -> dict[tuple[str, str], float]:
    result = prometheus.query(f"sum by (client, server) ({metric})")
    return {(r["metric"]["client"], r["metric"]["server"]): float(r["value"][1]) for r in result}


def test_service_graph_has_the_order_path(stack: Stack) -> None:
    """The map Grafana reads (recorded from every call) holds the order path, its failures and the
    database; at p = 1 it equals, edge by edge, what the connector paired from the traces."""
    pairs = edges(stack.prometheus, "traces_service_graph_request_total")
    path = {("user", "gateway"), ("gateway", "order-service"), ("order-service", "payment-service")}
    assert path <= set(pairs), pairs
    assert ("order-service", DATABASE_NODE) in pairs, "database calls are a node of their own"
    failed = edges(stack.prometheus, "traces_service_graph_request_failed_total")
    assert failed.get(("order-service", "payment-service"), 0) > 0, "failed payment calls are counted on their edge"
    # The two sources settle at their own pace (the services export every 10 s, the connector every 5 s).
    deadline = time.monotonic() + 60
    while (sampled := edges(stack.prometheus, "traces_service_graph_sampled_request_total")) != pairs:
        if time.monotonic() > deadline:
            break
        time.sleep(2)
        pairs = edges(stack.prometheus, "traces_service_graph_request_total")
    assert pairs == sampled


def test_sdk_http_metrics_and_business_counters_reach_prometheus(stack: Stack) -> None:
    server = stack.prometheus.query("sum by (job, http_route) (http_server_request_duration_seconds_count)")
    assert {(r["metric"]["job"], r["metric"]["http_route"]) for r in server} >= {
        ("shop/gateway", "/api/order"),
        ("shop/order-service", "/orders"),
        ("shop/payment-service", "/payments"),
    }
    assert stack.prometheus.query("http_client_request_duration_seconds_count")
    assert stack.prometheus.query('orders_placed_total{order_status="paid"}')
    assert stack.prometheus.query('payments_authorizations_total{payment_outcome="declined"}')
    scraped = {
        "gateway_validation_failures_total": "gateway",
        "orders_idempotent_replays_total": "order-service",
        "payments_injected_faults_total": "payment-service",
        "process_cpu_seconds_total": "payment-service",
    }
    for metric, service in scraped.items():
        result = stack.prometheus.query(f'{metric}{{job="shop-services", service_name="{service}"}}')
        assert result, metric


def test_exemplars_lead_to_traces_that_tempo_received(stack: Stack) -> None:
    received = {span.trace_id.hex() for _, span in stack.tempo.spans()}
    for expr in (
        "traces_span_metrics_duration_milliseconds_bucket",
        "http_server_request_duration_seconds_bucket",
        "orders_idempotent_replays_total",
    ):
        series = stack.prometheus.exemplars(expr)
        trace_ids = {e["labels"]["trace_id"] for s in series for e in s["exemplars"]}
        assert trace_ids, f"no exemplars for {expr}"
        assert trace_ids <= received, expr
    replays = {o.trace_id for o in stack.orders if o.kind == "replay"}
    exemplars = stack.prometheus.exemplars("orders_idempotent_replays_total")
    assert replays & {e["labels"]["trace_id"] for s in exemplars for e in s["exemplars"]}, "a replay's own trace"


def test_collector_lost_nothing(stack: Stack) -> None:
    def total(expr: str) -> float:
        result = stack.prometheus.query(f"sum({expr})")
        return float(result[0]["value"][1]) if result else 0.0

    for signal in ("spans", "metric_points", "log_records"):
        assert total(f"otelcol_receiver_accepted_{signal}") > 0, signal
        for loss in ("receiver_refused", "receiver_failed", "exporter_send_failed", "exporter_enqueue_failed"):
            assert total(f"otelcol_{loss}_{signal}") == 0, f"{loss} {signal}"
    # Everything accepted went out (metric points are more: the connectors add their own).
    assert total("otelcol_exporter_sent_spans") == total("otelcol_receiver_accepted_spans")
    assert total("otelcol_exporter_sent_log_records") == total("otelcol_receiver_accepted_log_records")
    assert total("otelcol_exporter_sent_metric_points") >= total("otelcol_receiver_accepted_metric_points")
    assert total("otelcol_exporter_queue_size") == 0
    # And it is what the stand-ins for Tempo and Loki received.
    assert total("otelcol_exporter_sent_spans") == len(stack.tempo.spans())
    assert total("otelcol_exporter_sent_log_records") == len(stack.loki.log_records())


def test_prometheus_is_the_release_found_and_scrapes_every_target_cleanly(stack: Stack) -> None:
    """Prometheus 3 fails a scrape whose Content-Type it cannot parse (2 fell back to the text format)."""
    assert stack.prometheus.api("status/buildinfo")["version"] == prometheus_install().version
    targets = stack.prometheus.api("targets")["activeTargets"]
    jobs = {job["job_name"] for job in yaml.safe_load(PROMETHEUS_CONFIG.read_text())["scrape_configs"]}
    assert {target["scrapePool"] for target in targets} == jobs
    failing = [
        (t["scrapeUrl"], t["health"], t["lastError"]) for t in targets if (t["health"], t["lastError"]) != ("up", "")
    ]
    assert failing == []


# No request here makes a SQLite statement fail.
NEVER_HAPPENS_HERE = ("traces_service_graph_request_failed_total", {"connection_type": "database"})


def test_rules_load_and_every_expression_returns_data(stack: Stack) -> None:
    """Every rule of every file loads (promtool checks and unit-tests them: tests/test_prometheus.py)."""
    written = [yaml.safe_load(path.read_text()) for path in PROMETHEUS_RULES.glob("*.yml")]
    rules = stack.prometheus.rules()
    assert len(rules) == sum(len(group["rules"]) for file in written for group in file["groups"])
    for rule in rules:
        assert rule["health"] == "ok", rule
        if (rule["name"], rule.get("labels")) == NEVER_HAPPENS_HERE:
            continue
        assert stack.prometheus.query(rule["query"]), f"no data for {rule['name']}: {rule['query']}"
    alerting = {
        (a["labels"]["alertname"], a["labels"]["service_name"]) for a in stack.prometheus.api("alerts")["alerts"]
    }
    assert ("ShopServiceErrorRatioHigh", "payment-service") in alerting
    assert ("ShopServiceLatencyP95High", "payment-service") in alerting


def test_every_grafana_query_returns_data(stack: Stack) -> None:
    """Dashboards and the Tempo data source's metric links, Grafana's variables filled in."""
    expressions = promql_expressions()
    assert len(expressions) > 20
    empty = [name for name, expr in expressions.items() if not stack.prometheus.query(expr)]
    assert empty == [], "\n".join(f"{name}: {expressions[name]}" for name in empty)


def test_logs_carry_trace_context_where_lokis_derived_field_looks_for_it(stack: Stack) -> None:
    """Loki's OTLP ingestion stores a record's trace_id field as structured metadata ``trace_id``:
    the Grafana derived field matches that label (checked by hand against Loki 3.7.6, see docs/verification.md).
    Here: every record the Collector sent carries the field, and no attribute shadows the name."""
    [loki] = [source for source in datasources() if source["uid"] == "loki"]
    label = loki["jsonData"]["derivedFields"][0]["matcherRegex"]
    for _, record in stack.loki.log_records():
        attribute_names = {kv.key for kv in record.attributes}
        assert label not in attribute_names
        assert "span_id" not in attribute_names
    with_trace = [record for _, record in stack.loki.log_records() if record.trace_id]
    assert len(with_trace) >= len(stack.orders) * 2


def test_smoke_scripts_prometheus_checks_pass_here(stack: Stack) -> None:
    checks = smoke.Checklist()
    trace_ids = smoke.check_prometheus(checks, stack.prometheus.process.url, timeout_s=5)
    assert checks.failures == 0, checks.lines
    assert trace_ids <= {span.trace_id.hex() for _, span in stack.tempo.spans()}
