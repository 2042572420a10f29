"""The shop's Grafana dashboards as code, written with grafana-foundation-sdk.

``make dashboards`` runs this and writes grafana/dashboards/*.json, which Grafana provisions; a test
fails when the committed JSON is not what this produces. Every PromQL expression here uses the metric
names the pinned Collector really emits (tests/test_stack.py runs them against a real Prometheus).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path

from grafana_foundation_sdk.builders import dashboard, logs, nodegraph, prometheus, stat, table, tempo, timeseries
from grafana_foundation_sdk.builders.loki import Dataquery as LokiQuery
from grafana_foundation_sdk.cog.builder import Builder
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.dashboard import Dashboard as DashboardModel
from grafana_foundation_sdk.models.dashboard import DataSourceRef, GridPos, Panel, RowPanel, VariableRefresh
from grafana_foundation_sdk.models.tempo import TempoQueryType

OUTPUT = Path(__file__).resolve().parent / "dashboards"

PROMETHEUS = DataSourceRef(type_val="prometheus", uid="prometheus")
TEMPO = DataSourceRef(type_val="tempo", uid="tempo")
LOKI = DataSourceRef(type_val="loki", uid="loki")

SERVER = 'service_name=~"$service", span_kind="SPAN_KIND_SERVER"'
CALLS = f"traces_span_metrics_calls_total{{{SERVER}}}"
ERRORS = f'traces_span_metrics_calls_total{{{SERVER}, status_code="STATUS_CODE_ERROR"}}'
DURATION = f"traces_span_metrics_duration_milliseconds_bucket{{{SERVER}}}"
# Statements: order-service's CLIENT span per SQL statement (the engine in db_system_name).
STATEMENT = 'span_kind="SPAN_KIND_CLIENT", db_system_name!=""'
STATEMENTS = f"traces_span_metrics_calls_total{{{STATEMENT}}}"
FAILED_STATEMENTS = f'traces_span_metrics_calls_total{{{STATEMENT}, status_code="STATUS_CODE_ERROR"}}'
STATEMENT_DURATION = f"traces_span_metrics_duration_milliseconds_bucket{{{STATEMENT}}}"
# What a person waits through (the shop page's "click to answer" span, docs/browser.md) beside what the
# gateway serves of it: the difference is the network and the browser.
CLICK_TO_ANSWER = (
    'traces_span_metrics_duration_milliseconds_bucket{service_name="shop-web", span_name="click to answer"}'
)
GATEWAY_ORDERS = (
    'traces_span_metrics_duration_milliseconds_bucket{service_name="gateway", span_kind="SPAN_KIND_SERVER", '
    'span_name="POST /api/order"}'
)


def rate(selector: str, by: str) -> str:
    return f"sum by ({by}) (rate({selector}[$__rate_interval]))"


def error_ratio(by: str, calls: str = CALLS, errors: str = ERRORS) -> str:
    # "or ... * 0": a route without errors shows 0 rather than no line.
    return f"({rate(errors, by)} or {rate(calls, by)} * 0) / {rate(calls, by)}"


def quantile(q: float, by: str, buckets: str = DURATION) -> str:
    return f"histogram_quantile({q}, sum by (le, {by}) (rate({buckets}[$__rate_interval])))"


def promql(expr: str, legend: str, *, exemplars: bool = False) -> prometheus.Dataquery:
    query = prometheus.Dataquery().expr(expr).legend_format(legend).datasource(PROMETHEUS)
    return query.exemplar(True) if exemplars else query


def at(x: int, y: int, w: int, h: int) -> GridPos:
    return GridPos(h=h, w=w, x=x, y=y)


def graph(title: str, unit: str, position: GridPos, *queries: prometheus.Dataquery) -> timeseries.Panel:
    panel = timeseries.Panel().title(title).unit(unit).datasource(PROMETHEUS).grid_pos(position).min(0)
    for ref, query in zip("ABCDEFGH", queries, strict=False):
        panel = panel.with_target(query.ref_id(ref))
    return panel


def service_variable() -> dashboard.QueryVariable:
    return (
        dashboard.QueryVariable("service")
        .label("Service")
        .datasource(PROMETHEUS)
        .query("label_values(traces_span_metrics_calls_total, service_name)")
        .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
        .multi(True)
        .include_all(True)
        # "All" must not match the empty string: Loki refuses a selector such as {service_name=~".*"}
        # ("queries require at least one regexp or equality matcher that does not have an
        # empty-compatible value"). ".+" selects every service in Loki, Prometheus and TraceQL alike.
        .all_value(".+")
    )


def base(uid: str, title: str, description: str) -> dashboard.Dashboard:
    return (
        dashboard.Dashboard(title)
        .uid(uid)
        .description(description)
        .tags(["shop", "opentelemetry"])
        .refresh("10s")
        .time("now-30m", "now")
        .timezone("browser")
        .editable()
    )


def red_dashboard() -> dashboard.Dashboard:
    """Rate, errors and duration of every route, from the Collector's span metrics; then the database."""
    built = (
        base("shop-red", "Shop / RED by route", "Span metrics from the Collector: server spans per service and route.")
        .with_variable(service_variable())
        .with_panel(
            graph(
                "Requests per second",
                "reqps",
                at(0, 0, 12, 8),
                promql(rate(CALLS, "service_name, http_route"), "{{service_name}} {{http_route}}"),
            )
        )
        .with_panel(
            graph(
                "Error ratio",
                "percentunit",
                at(12, 0, 12, 8),
                promql(error_ratio("service_name, http_route"), "{{service_name}} {{http_route}}"),
            )
        )
        .with_panel(
            graph(
                "Latency p50 / p95 / p99 (exemplars link to traces)",
                "ms",
                at(0, 8, 24, 10),
                promql(quantile(0.5, "service_name"), "p50 {{service_name}}", exemplars=True),
                promql(quantile(0.95, "service_name"), "p95 {{service_name}}", exemplars=True),
                promql(quantile(0.99, "service_name"), "p99 {{service_name}}", exemplars=True),
            )
        )
        .with_panel(
            graph(
                "p95 by route",
                "ms",
                at(0, 18, 12, 8),
                promql(quantile(0.95, "service_name, http_route"), "{{service_name}} {{http_route}}", exemplars=True),
            )
        )
        .with_panel(
            graph(
                "Responses by status code",
                "reqps",
                at(12, 18, 12, 8),
                promql(
                    rate(CALLS, "service_name, http_response_status_code"),
                    "{{service_name}} {{http_response_status_code}}",
                ),
            )
        )
    )
    # An expanded row holds no panels in Grafana's model: the panels below it are its own.
    built = built.with_row(dashboard.Row("Database").grid_pos(at(0, 26, 24, 1)))
    for panel in database_panels():
        built = built.with_panel(panel)
    return built


def database_panels() -> list[timeseries.Panel]:
    """The database's share of an order: its statements from span metrics, and order-service's pool
    (db.client.connection.* from the SDK, per replica: instance is its service.instance.id)."""
    by = "db_system_name, span_name"
    legend = "{{db_system_name}} {{span_name}}"
    return [
        graph("Statements per second", "ops", at(0, 27, 8, 8), promql(rate(STATEMENTS, by), legend)),
        graph(
            "Statement error ratio",
            "percentunit",
            at(8, 27, 8, 8),
            promql(error_ratio(by, STATEMENTS, FAILED_STATEMENTS), legend),
        ),
        graph(
            "Statement latency p50 / p99 (exemplars link to traces)",
            "ms",
            at(16, 27, 8, 8),
            promql(quantile(0.5, by, STATEMENT_DURATION), f"p50 {legend}", exemplars=True),
            promql(quantile(0.99, by, STATEMENT_DURATION), f"p99 {legend}", exemplars=True),
        ),
        graph(
            "Connection pool per replica",
            "short",
            at(0, 35, 12, 8),
            promql(
                "sum by (instance, db_client_connection_state) (db_client_connection_count)",
                "{{instance}} {{db_client_connection_state}}",
            ),
            promql("sum by (instance) (db_client_connection_max)", "{{instance}} max"),
            promql("sum by (instance) (db_client_connection_pending_requests)", "{{instance}} waiting"),
        ),
        graph(
            "Waiting for a connection",
            "s",
            at(12, 35, 12, 8),
            promql(
                "histogram_quantile(0.99, sum by (le, instance) "
                "(rate(db_client_connection_wait_time_seconds_bucket[$__rate_interval])))",
                "p99 wait {{instance}}",
            ),
            # Timeouts (answered 503) appear at the first one: draw 0 until then.
            promql(
                "sum by (instance) (rate(db_client_connection_timeouts_total[$__rate_interval])) or vector(0)",
                "timeouts/s {{instance}}",
            ),
        ),
    ]


def stat_panel(title: str, unit: str, expr: str, position: GridPos) -> stat.Panel:
    query = promql(expr, "{{service_name}}").instant().ref_id("A")
    return stat.Panel().title(title).unit(unit).datasource(PROMETHEUS).grid_pos(position).with_target(query)


def overview_dashboard() -> dashboard.Dashboard:
    """Where to start: the service map, each service's RED figures, its logs and its recent traces."""
    recent_traces = (
        tempo.TempoQuery()
        .ref_id("A")
        .datasource(TEMPO)
        .query_type(TempoQueryType.TRACEQL)
        .query('{resource.service.name=~"$service"}')
        .limit(20)
    )
    service_logs = LokiQuery().ref_id("A").datasource(LOKI).expr('{service_name=~"$service"}').max_lines(200)
    return (
        base("shop-overview", "Shop / Overview", "Service map, RED per service, logs and recent traces.")
        .with_variable(service_variable())
        .with_panel(
            nodegraph.Panel()
            .title("Service map (Collector service graph)")
            .datasource(TEMPO)
            .grid_pos(at(0, 0, 12, 12))
            .with_target(tempo.TempoQuery().ref_id("A").datasource(TEMPO).query_type(TempoQueryType.SERVICE_MAP))
        )
        .with_panel(
            stat_panel(
                "Requests per second (5m)",
                "reqps",
                'service:traces_span_metrics_calls:rate5m{service_name=~"$service"}',
                at(12, 0, 12, 4),
            )
        )
        .with_panel(
            stat_panel(
                "Error ratio (5m)",
                "percentunit",
                'service:traces_span_metrics_errors:ratio_rate5m{service_name=~"$service"}',
                at(12, 4, 12, 4),
            )
        )
        .with_panel(
            stat_panel(
                "p95 latency (5m)",
                "ms",
                'service:traces_span_metrics_duration_milliseconds:p95_5m{service_name=~"$service"}',
                at(12, 8, 12, 4),
            )
        )
        .with_panel(
            table.Panel()
            .title("Recent traces")
            .datasource(TEMPO)
            .grid_pos(at(0, 12, 12, 12))
            .with_target(recent_traces)
        )
        .with_panel(
            logs.Panel()
            .title("Logs (open a line to jump to its trace)")
            .datasource(LOKI)
            .grid_pos(at(12, 12, 12, 12))
            .show_time(True)
            # The SDK writes every option it models, so an unset flag reaches Grafana as false; the panel's
            # own default is true. The derived-field link to the trace lives in log details.
            .enable_log_details(True)
            .with_target(service_logs)
        )
        .with_panel(
            graph(
                "Click to answer (the shop page) vs the gateway's POST /api/order",
                "ms",
                at(0, 24, 24, 8),
                *(
                    promql(quantile(q, "service_name", buckets), f"{name} p{round(q * 100)}")
                    for q in (0.5, 0.95, 0.99)
                    for name, buckets in (("click to answer", CLICK_TO_ANSWER), ("gateway", GATEWAY_ORDERS))
                ),
            )
        )
    )


def per_second(metric: str, legend: str, *, zero_if_absent: bool = False) -> prometheus.Dataquery:
    expr = f"sum by (job) (rate({metric}[$__rate_interval]))"
    # The Collector creates send_failed series only at the first failure: draw 0 until then.
    return promql(f"{expr} or vector(0)" if zero_if_absent else expr, legend)


def collector_dashboard() -> dashboard.Dashboard:
    """Is the Collector keeping up? What it accepted, sent, refused and failed, and its queues."""
    built = base(
        "otel-collector", "OpenTelemetry Collector", "The Collector's own metrics (job otel-collector-internal)."
    )
    y = 0
    for signal, unit in (("spans", "spans/s"), ("metric_points", "points/s"), ("log_records", "records/s")):
        built = built.with_panel(
            graph(
                f"{signal.replace('_', ' ')}: accepted and sent",
                unit,
                at(0, y, 12, 8),
                per_second(f"otelcol_receiver_accepted_{signal}", "accepted"),
                per_second(f"otelcol_exporter_sent_{signal}", "sent"),
            )
        ).with_panel(
            graph(
                f"{signal.replace('_', ' ')}: refused and failed",
                unit,
                at(12, y, 12, 8),
                per_second(f"otelcol_receiver_refused_{signal}", "refused"),
                per_second(f"otelcol_receiver_failed_{signal}", "receive failed"),
                per_second(f"otelcol_exporter_send_failed_{signal}", "send failed", zero_if_absent=True),
                # Refused because an exporter's queue was full: the sender was told to retry, and drops it
                # once its own retries run out (docs/reliability.md#the-collectors-queues).
                per_second(f"otelcol_exporter_enqueue_failed_{signal}", "queue full", zero_if_absent=True),
            )
        )
        y += 8
    undelivered = [
        promql(
            f'sum by (job) (rate(otel_sdk_{kind}_{item}_total{{error_type!=""}}[$__rate_interval])) or vector(0)',
            f"{{{{job}}}} {item}s {what}",
        )
        for item in ("span", "log")
        for kind, what in (("processor", "dropped (queue full)"), ("exporter", "export failed"))
    ]
    return (
        built.with_panel(
            graph(
                "Exporter queues (Tempo's and Loki's in bytes, on disk)",
                "short",
                at(0, y, 12, 8),
                promql("sum by (exporter) (otelcol_exporter_queue_size)", "{{exporter}} size"),
                promql("sum by (exporter) (otelcol_exporter_queue_capacity)", "{{exporter}} capacity"),
            )
        )
        .with_panel(
            graph(
                "Memory (RSS)",
                "bytes",
                at(12, y, 12, 8),
                promql("sum by (job) (otelcol_process_memory_rss)", "rss"),
            )
        )
        .with_panel(
            graph(
                "What the services could not deliver (their SDK's own counts)",
                "short",
                at(0, y + 8, 24, 8),
                *undelivered,
            )
        )
    )


DASHBOARDS: dict[str, Callable[[], Builder[DashboardModel]]] = {
    "shop-red.json": red_dashboard,
    "shop-overview.json": overview_dashboard,
    "otel-collector.json": collector_dashboard,
}


def number_panels(model: DashboardModel) -> DashboardModel:
    """Give every panel, rows and the panels inside them too, a unique ``id`` in layout order.

    The SDK leaves ``id`` unset (and a row's at 0); Grafana 13 converts v1 dashboards on load and has
    dropped id-less panels in that conversion before.
    """
    panels: list[Panel | RowPanel] = []
    for panel in model.panels or []:
        panels.append(panel)
        if isinstance(panel, RowPanel):
            panels.extend(panel.panels)
    for number, panel in enumerate(panels, start=1):
        panel.id_val = number
    return model


def render(build: Callable[[], Builder[DashboardModel]]) -> str:
    return json.dumps(number_panels(build().build()), cls=JSONEncoder, indent=2, sort_keys=True) + "\n"


def main(argv: list[str]) -> int:
    output = Path(argv[1]) if len(argv) > 1 else OUTPUT
    output.mkdir(parents=True, exist_ok=True)
    for name, build in DASHBOARDS.items():
        (output / name).write_text(render(build))
        print(f"wrote {output / name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
