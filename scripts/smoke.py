"""``make smoke``: against a running compose stack, follow every link a person would click.

Places one order, then checks: its trace in Tempo by ID and by a TraceQL search on its order.id (with how
long the search took to find it), its logs in Loki by trace_id, span metrics and an exemplar in Prometheus
whose trace Tempo has, Grafana's health and each data source's health.
Prints a checklist; exits 1 on any miss, 2 if the gateway cannot be reached at all. Addresses and the
Grafana password come from the environment (defaults: the compose ports where .env publishes them, and
GRAFANA_ADMIN_PASSWORD from .env). Standard library only, with the harness's standard-library modules on
PYTHONPATH (``make smoke`` sets it): a bare ``python3`` runs it.
"""

from __future__ import annotations

import base64
import json
import os
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from harness.compose import PUBLISHED_PORTS, dotenv, published_url
from harness.orders import order_body

SERVICES = {"gateway", "order-service", "payment-service"}
# What Grafana's service map reads (prometheus/rules/service-graph.yml), and the edges one order makes.
SERVICE_MAP = "sum by (client, server) (traces_service_graph_request_total)"
ORDER_PATH = {("user", "gateway"), ("gateway", "order-service"), ("order-service", "payment-service")}
ORDER = order_body(item="smoke test", quantity=1, unit_price=1.5, customer_id="smoke")
TIMEOUT_S = 10.0


def request(url: str, body: Any = None, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    data = json.dumps(body).encode() if body is not None else None
    all_headers = {"Content-Type": "application/json", **(headers or {})} if data else dict(headers or {})
    req = urllib.request.Request(url, data=data, headers=all_headers, method="POST" if data else "GET")  # noqa: S310
    try:
        with urllib.request.urlopen(req, timeout=TIMEOUT_S) as response:  # noqa: S310 (operator's URLs)
            status, raw = response.status, response.read()
    except urllib.error.HTTPError as error:
        status, raw = error.code, error.read()
    except OSError as error:  # refused, timed out, unknown host: status 0 and the reason
        return 0, {"error": str(getattr(error, "reason", error))}
    try:
        return status, json.loads(raw)
    except json.JSONDecodeError:
        return status, raw.decode(errors="replace")


def eventually(probe: Callable[[], Any], timeout_s: float) -> Any:
    """The first truthy result of probe(), retried every 2 s until the deadline (telemetry is batched)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            result = probe()
        except (OSError, ValueError, KeyError):
            result = None
        if result or time.monotonic() >= deadline:
            return result
        time.sleep(2)


@dataclass
class Checklist:
    failures: int = 0
    lines: list[str] = field(default_factory=list)

    def check(self, ok: bool, what: str, detail: str = "") -> bool:
        mark = "ok  " if ok else "FAIL"
        line = f"[{mark}] {what}" + (f": {detail}" if detail else "")
        print(line, flush=True)
        self.lines.append(line)
        self.failures += 0 if ok else 1
        return ok


def tempo_trace_services(tempo_url: str, trace_id: str) -> set[str]:
    """The service names in one trace, read from Tempo's trace-by-ID API (OTLP JSON)."""
    status, body = request(f"{tempo_url}/api/v2/traces/{trace_id}")
    if status != 200 or not isinstance(body, dict):
        return set()
    batches = body.get("trace", body).get("resourceSpans", [])
    names = set()
    for batch in batches:
        for attribute in batch.get("resource", {}).get("attributes", []):
            if attribute["key"] == "service.name":
                names.add(attribute["value"]["stringValue"])
    return names


def tempo_search_finds(tempo_url: str, order_id: str, trace_id: str, since_s: int = 3600) -> bool:
    """Whether a TraceQL search on the order's ID (as the Recent traces panel searches) lists its trace."""
    now = int(time.time())
    query = f'{{ span.order.id = "{order_id}" }}'
    params = urllib.parse.urlencode({"q": query, "start": str(now - since_s), "end": str(now + 60), "limit": "20"})
    status, body = request(f"{tempo_url}/api/search?{params}")
    if status != 200 or not isinstance(body, dict):
        return False
    # Tempo's search answers may drop a trace ID's leading zeros: compare the numbers.
    return any(int(found["traceID"], 16) == int(trace_id, 16) for found in body.get("traces") or [])


def loki_trace_services(loki_url: str, trace_id: str, since_s: int = 3600) -> set[str]:
    """The services whose log lines carry this trace_id (structured metadata), from Loki's query API."""
    now_ns = time.time_ns()
    params = urllib.parse.urlencode(
        {
            "query": f'{{service_name=~".+"}} | trace_id="{trace_id}"',
            "start": str(now_ns - since_s * 1_000_000_000),
            "end": str(now_ns),
            "limit": "100",
        }
    )
    status, body = request(f"{loki_url}/loki/api/v1/query_range?{params}")
    if status != 200:
        return set()
    return {stream["stream"].get("service_name", "") for stream in body["data"]["result"]}


def prometheus_query(prometheus_url: str, expr: str) -> list[dict[str, Any]]:
    status, body = request(f"{prometheus_url}/api/v1/query?{urllib.parse.urlencode({'query': expr})}")
    result: list[dict[str, Any]] = body["data"]["result"] if status == 200 else []
    return result


def prometheus_exemplar_trace_ids(prometheus_url: str, expr: str, since_s: int = 3600) -> set[str]:
    now = time.time()
    params = urllib.parse.urlencode({"query": expr, "start": str(now - since_s), "end": str(now)})
    status, body = request(f"{prometheus_url}/api/v1/query_exemplars?{params}")
    if status != 200:
        return set()
    return {
        e["labels"]["trace_id"] for series in body["data"] for e in series["exemplars"] if "trace_id" in e["labels"]
    }


def check_prometheus(checks: Checklist, prometheus_url: str, timeout_s: float) -> set[str]:
    """Span metrics for every service and exemplars with trace IDs; returns those trace IDs."""
    series = eventually(
        lambda: prometheus_query(prometheus_url, "sum by (service_name) (traces_span_metrics_calls_total)"), timeout_s
    )
    found = {s["metric"]["service_name"] for s in series or []}
    checks.check(found >= SERVICES, "span metrics in Prometheus for every service", ", ".join(sorted(found)))
    trace_ids: set[str] = (
        eventually(
            lambda: prometheus_exemplar_trace_ids(prometheus_url, "traces_span_metrics_duration_milliseconds_bucket"),
            timeout_s,
        )
        or set()
    )
    checks.check(bool(trace_ids), "exemplars with trace IDs on the span-metrics histogram", f"{len(trace_ids)} found")

    def edges() -> set[tuple[str, str]]:
        return {(s["metric"]["client"], s["metric"]["server"]) for s in prometheus_query(prometheus_url, SERVICE_MAP)}

    def whole_path() -> set[tuple[str, str]] | None:
        found = edges()
        return found if found >= ORDER_PATH else None

    # The services export their HTTP metrics every 10 s: wait for the whole path, not the first edge.
    pairs: set[tuple[str, str]] = eventually(whole_path, timeout_s) or edges()
    checks.check(
        pairs >= ORDER_PATH,
        "the service map's edges, recorded from every call",
        ", ".join(f"{client} -> {server}" for client, server in sorted(pairs)),
    )
    return trace_ids


def main() -> int:
    env = {**dotenv(), **os.environ}
    urls = {name: env.get(f"{name.upper()}_URL") or published_url(name, env) for name in PUBLISHED_PORTS}
    timeout_s = float(env.get("SMOKE_TIMEOUT_S", "60"))
    checks = Checklist()

    status, order = request(f"{urls['gateway']}/api/order", ORDER)
    if status == 0:  # no HTTP answer at all
        print(
            f"smoke: cannot reach the gateway at {urls['gateway']} ({order['error']}); start the stack: "
            "docker compose up -d",
            file=sys.stderr,
        )
        return 2
    if not checks.check(status == 201, "place an order through the gateway", f"HTTP {status}"):
        return 1
    answered = time.monotonic()
    trace_id = order["trace_id"]
    print(f"       trace_id {trace_id}")

    in_tempo = eventually(lambda: tempo_trace_services(urls["tempo"], trace_id), timeout_s) or set()
    checks.check(in_tempo == SERVICES, "the trace in Tempo by ID, spans from all three services", str(sorted(in_tempo)))
    found = eventually(lambda: tempo_search_finds(urls["tempo"], order["order_id"], trace_id), timeout_s)
    waited = f"after {time.monotonic() - answered:.0f} s (polled every 2 s)" if found else f"not in {timeout_s:g} s"
    checks.check(bool(found), "the trace found by TraceQL search on its order.id", waited)
    in_loki = eventually(lambda: loki_trace_services(urls["loki"], trace_id), timeout_s) or set()
    checks.check(in_loki == SERVICES, "its logs in Loki by trace_id, from all three services", str(sorted(in_loki)))

    exemplar_traces = check_prometheus(checks, urls["prometheus"], timeout_s)
    sample = sorted(exemplar_traces)[:5]
    linked = any(tempo_trace_services(urls["tempo"], t) for t in sample)
    checks.check(linked, "an exemplar's trace opens in Tempo", ", ".join(sample[:1]))

    status, health = request(f"{urls['grafana']}/api/health")
    checks.check(status == 200 and health.get("database") == "ok", "Grafana is healthy", str(health)[:80])
    password = env.get("GRAFANA_ADMIN_PASSWORD", "")
    auth = {"Authorization": "Basic " + base64.b64encode(f"admin:{password}".encode()).decode()}
    for uid in ("prometheus", "tempo", "loki"):
        status, body = request(f"{urls['grafana']}/api/datasources/uid/{uid}/health", headers=auth)
        detail = str(body.get("message") or body.get("error") or "") if isinstance(body, dict) else str(body)[:80]
        checks.check(status == 200 and body.get("status") == "OK", f"Grafana data source {uid!r} is healthy", detail)

    print(f"{len(checks.lines) - checks.failures} of {len(checks.lines)} checks passed")
    return 1 if checks.failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
