"""Two Collector tiers, proven with real processes (docs/scaling.md): 2 agents, 2 gateways, the real
Prometheus with the real config and rules, one Tempo stand-in per gateway and a Loki stand-in, and the three
services. gateway and payment-service export to agent A, order-service to agent B, so every call between
services crosses agents.

With routing by trace ID, every span of an order meets one gateway: server calls summed over the gateways
and the service-graph edges equal the orders placed. The control runs the same configs with each agent
sending to a gateway of its own (plain forwarding): the same checks then find broken edges and split traces.
Database spans and the SQLite edge repeat within an order, so they stay out of the equalities.
"""

from __future__ import annotations

import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from grafana_queries import promql_expressions
from harness.backends import Prometheus, scrape_targets
from harness.orders import order_body
from harness.processes import Shop, http
from harness.tiers import Tiers, two_tiers
from tools import collector_binary, prometheus_binary

pytestmark = pytest.mark.backends

ORDERS = 300
CONTROL_ORDERS = 60
RESTART_ORDERS = 50  # before, during and after the restart
# The Collector's own counters of spans it gave up on (as own_counters() names them: no _total).
LOSS_COUNTERS = ("_send_failed_spans", "_enqueue_failed_spans", "_refused_spans")
SERVER_SPANS = {"gateway": "POST /api/order", "order-service": "POST /orders", "payment-service": "POST /payments"}
EDGES = [("gateway", "order-service"), ("order-service", "payment-service")]
# The service_graph connector's request counter as Prometheus stores it (renamed at scrape time, since
# the service map Grafana reads is recorded from every call): the one place that names it.
SERVICE_GRAPH_REQUESTS = "traces_service_graph_sampled_request_total"
# The servicegraph connector's own counter of edges that timed out waiting for their other half.
EXPIRED_EDGES = "otelcol_connector_servicegraph_expired_edges"
CALLS = (
    "sum by (service_name, span_name, collector_instance_id) "
    '(traces_span_metrics_calls_total{span_kind="SPAN_KIND_SERVER"})'
)
EDGE_REQUESTS = f"sum by (client, server, connection_type, collector_instance_id) ({SERVICE_GRAPH_REQUESTS})"
SCRAPE_INTERVAL_S = 5  # prometheus/prometheus.yml
# The services' own HTTP server metric (SDK), by service: through the agents' Prometheus exporters.
SDK_SERVER_REQUESTS = "count by (job) (http_server_request_duration_seconds_count)"

Series = dict[tuple[str, ...], float]


@dataclass
class Run:
    orders: int
    trace_ids: list[str]
    tiers: Tiers
    calls: Series  # (service, span name, gateway) -> server calls
    edges: Series  # (client, server, connection type, gateway) -> requests
    expired_edges: float  # summed over the gateways
    per_gateway: dict[str, list[dict[str, str]]]  # dashboard or rule query -> its series that name a gateway
    agent_counters: list[dict[str, float]]  # each Collector's own metrics at the end
    gateway_counters: list[dict[str, float]]
    sdk_metric_jobs: set[str]  # the services whose own HTTP metrics reached Prometheus

    def server_calls(self, service: str) -> dict[str, float]:
        """Per gateway (its collector.instance.id)."""
        found: dict[str, float] = defaultdict(float)
        for (name, span, gateway), value in self.calls.items():
            if name == service and span == SERVER_SPANS[service]:
                found[gateway] += value
        return dict(found)

    def requests(self, client: str, server: str) -> float:
        return sum(value for (c, s, *_), value in self.edges.items() if (c, s) == (client, server))


def place(gateway: str) -> str:
    status, answer, _ = http("POST", f"{gateway}/api/order", order_body(), {"Content-Type": "application/json"})
    assert status == 201, answer
    trace_id: str = answer["trace_id"]
    return trace_id


def read(prometheus: Prometheus, expr: str, labels: tuple[str, ...]) -> Series:
    return {tuple(s["metric"].get(label, "") for label in labels): float(s["value"][1]) for s in prometheus.query(expr)}


def settled(prometheus: Prometheus, timeout_s: float = 90) -> tuple[Series, Series]:
    """Calls and edges once three reads a scrape apart agree: the gateways flush every 5 s, and an edge
    waits up to its 5 s TTL for its other half (otel-collector/config.yaml)."""
    deadline = time.monotonic() + timeout_s
    reads: list[tuple[Series, Series]] = []
    while time.monotonic() < deadline:
        reads.append(
            (
                read(prometheus, CALLS, ("service_name", "span_name", "collector_instance_id")),
                read(prometheus, EDGE_REQUESTS, ("client", "server", "connection_type", "collector_instance_id")),
            )
        )
        if len(reads) >= 3 and all(reads[-1]) and reads[-1] == reads[-2] == reads[-3]:
            return reads[-1]
        time.sleep(SCRAPE_INTERVAL_S)
    raise TimeoutError(f"the derived metrics did not settle: {reads[-3:]}")


def series_naming_a_gateway(prometheus: Prometheus, tiers: Tiers) -> dict[str, list[dict[str, str]]]:
    """Every query Grafana runs (dashboard variables aside: they only list label values) and every recorded
    rule, with the series it returns that carry a gateway's collector_instance_id or scrape target."""
    targets = {gateway.prometheus_target for gateway in tiers.gateways}
    queries = {name: expr for name, expr in promql_expressions().items() if ": variable " not in name}
    for rule in prometheus.rules():
        if rule["type"] != "recording":
            continue
        # The service map's series copy their source series one to one, so that rate() sees each
        # counter's resets; Grafana reads them only summed by edge, as its service map query does.
        service_map = rule["name"].startswith("traces_service_graph_")
        expr = f"sum by (client, server) (rate({rule['name']}[5m]))" if service_map else rule["name"]
        queries[f"rule {rule['name']}"] = expr
    found = {}
    for name, expr in queries.items():
        series = [
            s["metric"]
            for s in prometheus.query(expr)
            if "collector_instance_id" in s["metric"] or s["metric"].get("instance") in targets
        ]
        if series:
            found[name] = series
    return found


def across_agents(workdir: Path, tiers: Tiers) -> Shop:
    """The services, not started: gateway and payment-service export to agent A, order-service to agent B."""
    agent_a, agent_b = ({"OTEL_EXPORTER_OTLP_ENDPOINT": agent.otlp_http_endpoint} for agent in tiers.agents)
    shop = Shop(
        workdir / "shop", PAYMENTS_LATENCY_MIN_MS="0", PAYMENTS_LATENCY_MAX_MS="2", OTEL_METRIC_EXPORT_INTERVAL="5000"
    )
    shop.per_service = {"shop.gateway": agent_a, "shop.payments": agent_a, "shop.orders": agent_b}
    return shop


def observe(workdir: Path, orders: int, trace_routing: bool) -> Run:
    collector_binary()
    prometheus_binary()
    with two_tiers(workdir, trace_routing=trace_routing) as tiers:
        shop = across_agents(workdir, tiers)
        prometheus = None
        try:
            shop.start_all()
            prometheus = Prometheus(workdir / "prometheus", scrape_targets(tiers.collectors, shop.ports))
            with ThreadPoolExecutor(8) as pool:
                trace_ids = list(pool.map(lambda _: place(shop.gateway), range(orders)))
            time.sleep(2)  # the services' 200 ms batches, then the Collectors' own
            tiers.wait_until_idle()
            calls, edges = settled(prometheus)
            expired = sum(gateway.own_counters().get(EXPIRED_EDGES, 0.0) for gateway in tiers.gateways)
            prometheus.wait_for("service:traces_span_metrics_calls:rate5m")  # the rules have run
            per_gateway = series_naming_a_gateway(prometheus, tiers)
            return Run(
                orders,
                trace_ids,
                tiers,
                calls,
                edges,
                expired,
                per_gateway,
                [agent.own_counters() for agent in tiers.agents],
                [gateway.own_counters() for gateway in tiers.gateways],
                {s["metric"]["job"] for s in prometheus.query(SDK_SERVER_REQUESTS)},
            )
        finally:
            shop.kill_all()
            if prometheus is not None:
                prometheus.process.stop()


@pytest.fixture(scope="module")
def routed(tmp_path_factory: pytest.TempPathFactory) -> Run:
    return observe(tmp_path_factory.mktemp("two-tier"), ORDERS, trace_routing=True)


@pytest.fixture(scope="module")
def forwarded(tmp_path_factory: pytest.TempPathFactory) -> Run:
    return observe(tmp_path_factory.mktemp("two-tier-control"), CONTROL_ORDERS, trace_routing=False)


def count_problems(run: Run) -> list[str]:
    """Server calls summed over the gateways equal the orders, per service; both gateways took a share, and
    named it on span metrics and service-graph edges alike."""
    problems = []
    for service in SERVER_SPANS:
        per_gateway = run.server_calls(service)
        if sum(per_gateway.values()) != run.orders:
            problems.append(f"{service}: {per_gateway} server calls for {run.orders} orders")
    expected = {f"gateway-{i}" for i in range(len(run.tiers.gateways))}
    for family, series in (("span metrics", run.calls), ("edges", run.edges)):
        if {key[-1] for key in series} != expected:
            problems.append(f"{family} came from {sorted({key[-1] for key in series})}")
    return problems


def edge_problems(run: Run) -> list[str]:
    """Each call between services is one edge; no edge ends in `unknown`; the only edges that expire
    unpaired are the roots' (virtual `user` clients)."""
    problems = [
        f"{client} -> {server}: {run.requests(client, server)} requests for {run.orders} orders"
        for client, server in EDGES
        if run.requests(client, server) != run.orders
    ]
    problems += [f"edge {key}" for key in run.edges if "unknown" in key[:2]]
    virtual = {key: value for key, value in run.edges.items() if key[2] == "virtual_node"}
    problems += [f"unpaired non-root edge {key}" for key in virtual if key[0] != "user"]
    if sum(virtual.values()) != run.expired_edges:
        problems.append(f"{run.expired_edges} expired edges, {sum(virtual.values())} of them roots")
    return problems


def trace_problems(trace_ids: list[str], tiers: Tiers) -> list[str]:
    """Every order's trace complete at Tempo (each parent present, one root, all three services), and all of
    it sent by one gateway."""
    gateways_of: dict[bytes, set[int]] = defaultdict(set)
    spans: dict[bytes, list[tuple[str, bytes, bytes]]] = defaultdict(list)
    for index, tempo in enumerate(tiers.tempos):
        for resource, span in tempo.spans():
            gateways_of[span.trace_id].add(index)
            spans[span.trace_id].append((resource["service.name"], span.span_id, span.parent_span_id))
    problems = []
    for trace_id in map(bytes.fromhex, trace_ids):
        ids = {span_id for _, span_id, _ in spans[trace_id]}
        roots = [span_id for _, span_id, parent in spans[trace_id] if not parent]
        orphans = [span_id for _, span_id, parent in spans[trace_id] if parent and parent not in ids]
        services = {service for service, _, _ in spans[trace_id]}
        if len(roots) != 1 or orphans or services != set(SERVER_SPANS):
            problems.append(f"{trace_id.hex()}: {len(roots)} roots, {len(orphans)} orphans, {sorted(services)}")
        if len(gateways_of[trace_id]) != 1:
            problems.append(f"{trace_id.hex()} went through gateways {sorted(gateways_of[trace_id])}")
    return problems


def test_server_calls_summed_over_the_gateways_equal_the_orders(routed: Run) -> None:
    assert count_problems(routed) == []


def test_every_call_between_services_is_one_edge(routed: Run) -> None:
    assert edge_problems(routed) == []


def test_every_trace_is_complete_and_went_through_one_gateway(routed: Run) -> None:
    assert trace_problems(routed.trace_ids, routed.tiers) == []


def test_dashboards_and_rules_sum_the_gateways_away(routed: Run) -> None:
    """No panel, data-source link or rule shows a gateway's share: they read the same with one or two."""
    assert routed.per_gateway == {}


def test_logs_and_metrics_take_the_agents_direct_paths(routed: Run) -> None:
    assert {resource["service.name"] for resource, _ in routed.tiers.loki.log_records()} == set(SERVER_SPANS)
    for tempo in routed.tiers.tempos:
        assert set(tempo.paths) == {"/v1/traces"}, "only traces go to Tempo"
    for counters in routed.agent_counters:
        assert counters["otelcol_exporter_sent_spans"] == counters["otelcol_receiver_accepted_spans"] > 0
    assert routed.sdk_metric_jobs == {f"shop/{service}" for service in SERVER_SPANS}
    for counters in routed.gateway_counters:
        assert counters.get("otelcol_receiver_accepted_metric_points", 0) == 0, "metrics skip the gateways"
        assert counters.get("otelcol_receiver_accepted_log_records", 0) == 0, "logs skip the gateways"


def test_control_plain_forwarding_breaks_the_edges_and_splits_the_traces(forwarded: Run) -> None:
    """Without trace-ID routing the checks above fail where the service graph needs a whole trace. Span
    counts, summed over the gateways, stay right: a span is counted wherever it lands."""
    assert count_problems(forwarded) == []
    problems = edge_problems(forwarded)
    for client, server in EDGES:
        assert any(problem.startswith(f"{client} -> {server}:") for problem in problems), problems
    assert any(problem.startswith("edge (") and "unknown" in problem for problem in problems), problems
    assert any("went through gateways" in problem for problem in trace_problems(forwarded.trace_ids, forwarded.tiers))


def test_a_gateway_restart_loses_no_span(tmp_path: Path) -> None:
    """While a gateway restarts, the agents' bounded queue holds its share and retries: every trace placed
    before, during and after still reaches Tempo whole, and no agent counts a failed or refused span."""
    collector_binary()
    with two_tiers(tmp_path) as tiers:
        shop = across_agents(tmp_path, tiers)
        try:
            shop.start_all()
            restarted = tiers.gateways[1]
            with ThreadPoolExecutor(4) as pool:
                trace_ids = list(pool.map(lambda _: place(shop.gateway), range(RESTART_ORDERS)))
                restarted.process.stop()
                trace_ids += pool.map(lambda _: place(shop.gateway), range(RESTART_ORDERS))
                restarted.start()
                trace_ids += pool.map(lambda _: place(shop.gateway), range(RESTART_ORDERS))
            time.sleep(2)  # the services' 200 ms batches, then the Collectors' own
            tiers.wait_until_idle()
            counters = [agent.own_counters() for agent in tiers.agents]
        finally:
            shop.kill_all()
    assert trace_problems(trace_ids, tiers) == []
    for agent in counters:
        lost = {name: value for name, value in agent.items() if name.endswith(LOSS_COUNTERS) and value}
        assert lost == {}
        assert agent["otelcol_exporter_sent_spans"] == agent["otelcol_receiver_accepted_spans"]
