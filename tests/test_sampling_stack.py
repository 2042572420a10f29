"""Head sampling at p = 0.25, proven through the built Collector and the real Prometheus.

One module-scoped run places 2,000 orders of a known mix (paid, declined, failing), a quarter of them
with hostile trace headers, and every assertion reads what that run left. Counts that sampling makes
random are held within 4 standard deviations of their binomial distribution (the issue's bound).
"""

from __future__ import annotations

import math
import secrets
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import pytest

from harness.backends import Collector, Prometheus, observed_shop
from harness.orders import DECLINED_CARD, FAIL_HEADER, order_body
from harness.otlp_sink import OtlpSink
from harness.processes import http
from tools import collector_binary, prometheus_binary

pytestmark = pytest.mark.backends

P = 0.25
ORDERS = 2000
MIX = {"paid": 0.70, "declined": 0.15, "failing": 0.15}
EXPECTED_STATUS = {"paid": 201, "declined": 402, "failing": 502}
SERVER_SPANS = {"gateway": "POST /api/order", "order-service": "POST /orders", "payment-service": "POST /payments"}
# Sent with every fourth order: a sampled flag and an ot entry that claims "keep me, count me once"
# (or a tiny p that would multiply every count); the gateway must decide as if they were absent.
HOSTILE = ["ot=th:0;rv:ffffffffffffff", "ot=th:fffffffffffff;rv:ffffffffffffff"]
SERVICE_EDGES = [("user", "gateway"), ("gateway", "order-service"), ("order-service", "payment-service")]


# Every server span's extrapolated count, by service and status: what the assertions read.
SERVER_CALLS = (
    'sum by (service_name, span_name, status_code) (traces_span_metrics_calls_total{span_kind="SPAN_KIND_SERVER"})'
)
# The service map's edges, as Grafana reads them (prometheus/rules/service-graph.yml).
EDGES = "sum by (client, server) (traces_service_graph_request_total)"
FAILED_EDGES = "sum by (client, server) (traces_service_graph_request_failed_total)"
Calls = dict[tuple[str, ...], float]


@dataclass
class Run:
    tempo: OtlpSink
    loki: OtlpSink
    prometheus: Prometheus
    kinds: Counter[str]
    answers: list[dict[str, object]]
    calls: Calls
    edges: Calls
    failed_edges: Calls

    def server_calls(self, service: str, status: str | None = None) -> float:
        return sum(
            value
            for (name, span, code), value in self.calls.items()
            if name == service and span == SERVER_SPANS[service] and status in (None, code)
        )


def place(gateway: str, n: int) -> tuple[str, int, dict[str, object]]:
    kind = "paid" if n % 20 < 14 else "declined" if n % 20 < 17 else "failing"
    body = order_body(card_number=DECLINED_CARD) if kind == "declined" else order_body()
    headers = {"Content-Type": "application/json", **({FAIL_HEADER: "true"} if kind == "failing" else {})}
    if n % 4 == 0:
        headers["traceparent"] = f"00-{secrets.token_hex(16)}-{secrets.token_hex(8)}-01"
        headers["tracestate"] = HOSTILE[n // 4 % 2]
    status, answer, _ = http("POST", f"{gateway}/api/order", body, headers)
    assert status == EXPECTED_STATUS[kind], (kind, status, answer)
    return kind, status, answer


def settled(prometheus: Prometheus, query: str, timeout_s: float = 120) -> Calls:
    """The query's values by label values, once three reads a scrape apart agree (the Collector flushes
    span metrics every 5 s, the services export theirs every 5 s here)."""
    deadline = time.monotonic() + timeout_s
    reads: list[Calls] = []
    while time.monotonic() < deadline:
        reads.append({tuple(s["metric"].values()): float(s["value"][1]) for s in prometheus.query(query)})
        if len(reads) >= 3 and reads[-1] and reads[-1] == reads[-2] == reads[-3]:
            return reads[-1]
        time.sleep(6)
    raise TimeoutError(f"{query} did not settle: {reads[-3:]}")


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    collector_binary()
    prometheus_binary()
    workdir = tmp_path_factory.mktemp("sampling")
    with observed_shop(
        workdir,
        TRACES_SAMPLE_RATIO=str(P),
        GATEWAY_ALLOW_FAULT_HEADERS="true",
        PAYMENTS_LATENCY_MIN_MS="0",
        PAYMENTS_LATENCY_MAX_MS="2",
        LOG_LEVEL="INFO",
        OTEL_METRIC_EXPORT_INTERVAL="5000",
    ) as observed:
        with ThreadPoolExecutor(8) as pool:
            placed = list(pool.map(lambda n: place(observed.shop.gateway, n), range(ORDERS)))
        wait_until_exported(observed.collector)
        kinds = Counter(kind for kind, _, _ in placed)
        answers = [answer for _, _, answer in placed]
        calls = settled(observed.prometheus, SERVER_CALLS)
        edges = settled(observed.prometheus, EDGES)
        failed_edges = settled(observed.prometheus, FAILED_EDGES)
        yield Run(observed.tempo, observed.loki, observed.prometheus, kinds, answers, calls, edges, failed_edges)


def wait_until_exported(collector: Collector) -> None:
    time.sleep(2)  # the services' 200 ms batches, then the Collector's own
    collector.wait_until_idle()


def count_bound(n: int) -> float:
    return 4 * math.sqrt(n * (1 - P) / P)


@pytest.mark.parametrize("service", sorted(SERVER_SPANS))
def test_server_span_counts_are_extrapolated_within_the_binomial_bound(run: Run, service: str) -> None:
    counted = run.server_calls(service)
    print(
        f"{service}: {counted:.0f} counted for {ORDERS} ({counted / ORDERS - 1:+.1%}, bound ±{count_bound(ORDERS):.0f})"
    )
    # Unadjusted counts would be near N·p = 500, far outside ±310 around 2,000.
    assert abs(counted - ORDERS) <= count_bound(ORDERS), (service, counted, count_bound(ORDERS))


def test_the_error_ratio_is_right_within_its_bound(run: Run) -> None:
    errors, calls = run.server_calls("gateway", "STATUS_CODE_ERROR"), run.server_calls("gateway")
    true_ratio = run.kinds["failing"] / ORDERS
    bound = 4 * math.sqrt(true_ratio * (1 - true_ratio) * (1 - P) / (ORDERS * P))
    print(f"error ratio {errors / calls:.4f}, true {true_ratio:.4f} (bound ±{bound:.4f})")
    assert abs(errors / calls - true_ratio) <= bound, (errors, calls, true_ratio, bound)


def test_the_service_map_counts_every_call_exactly(run: Run) -> None:
    """Recorded from the services' HTTP metrics, which count every call whatever the sampling: the edges
    equal the true counts, where the connector's own (traces_service_graph_sampled_*) read about p times
    them. The database edge (span metrics, several statements per order) is only required to exist."""
    failed = run.kinds["declined"] + run.kinds["failing"]  # a 4xx or 5xx fails a client span
    print(f"edges {run.edges}, failed {run.failed_edges}")
    assert {edge: run.edges.get(edge) for edge in SERVICE_EDGES} == dict.fromkeys(SERVICE_EDGES, ORDERS)
    assert run.failed_edges.get(("gateway", "order-service")) == failed
    assert run.failed_edges.get(("order-service", "payment-service")) == failed
    # The public edge fails on a 5xx only, as a server span does.
    assert run.failed_edges.get(("user", "gateway")) == run.kinds["failing"]
    assert run.edges.get(("order-service", "sqlite"), 0) > 0
    sampled = run.prometheus.query('sum(traces_service_graph_sampled_request_total{client="gateway"})')
    print(f"the connector's sampled gateway -> order-service edge: {sampled[0]['value'][1]}")
    assert abs(float(sampled[0]["value"][1]) - ORDERS * P) <= 4 * math.sqrt(ORDERS * P * (1 - P))


def traces(tempo: OtlpSink) -> dict[str, dict[str, int]]:
    """Spans per service in each trace the Tempo stand-in received."""
    found: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for resource, span in tempo.spans():
        found[span.trace_id.hex()][resource["service.name"]] += 1
    return found


def test_kept_traces_are_complete_and_as_many_as_p_says(run: Run) -> None:
    kept = traces(run.tempo)
    bound = 4 * math.sqrt(ORDERS * P * (1 - P))
    print(f"traces kept {len(kept)}, expected {ORDERS * P:.0f} (bound ±{bound:.0f})")
    assert abs(len(kept) - ORDERS * P) <= bound, (len(kept), ORDERS * P, bound)
    incomplete = {trace_id: dict(spans) for trace_id, spans in kept.items() if set(spans) != set(SERVER_SPANS)}
    assert not incomplete, list(incomplete.items())[:3]
    # ... and each answer said whether its trace was kept.
    said_kept = {str(answer["trace_id"]) for answer in run.answers if answer["trace_sampled"] is True}
    assert said_kept == set(kept)


def test_no_log_record_links_to_a_trace_tempo_lacks(run: Run) -> None:
    kept = set(traces(run.tempo))
    linked = {record.trace_id.hex() for _, record in run.loki.log_records() if any(record.trace_id)}
    assert linked, "no log record carried a trace link at all"
    assert linked <= kept, sorted(linked - kept)[:3]
    # The failing payments' errors are exported whether or not their trace was kept.
    errors = [record for _, record in run.loki.log_records() if record.severity_number >= 17]
    assert len(errors) >= run.kinds["failing"], (len(errors), run.kinds["failing"])


def test_exemplars_point_only_at_kept_traces(run: Run) -> None:
    kept = set(traces(run.tempo))
    exemplars = run.prometheus.exemplars("traces_span_metrics_duration_milliseconds_bucket")
    linked = {e["labels"]["trace_id"] for series in exemplars for e in series["exemplars"]}
    assert linked, "no exemplar"
    assert linked <= kept, sorted(linked - kept)[:3]


def test_the_orders_were_all_placed(run: Run) -> None:
    assert sum(run.kinds.values()) == ORDERS
    assert {kind: round(count / ORDERS, 2) for kind, count in run.kinds.items()} == MIX
