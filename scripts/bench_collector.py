"""``make bench-collector``: how many spans per second one Collector core takes, one tier against two.

The load is OTLP/HTTP: protobuf requests of shop-shaped traces (an order's 9 spans over the three services,
docs/telemetry.md) built once with distinct trace IDs, then replayed by sender threads as fast as the
Collector answers, for ``--seconds``. Setups, each with the real configs and the built binary:
- one Collector (config.yaml), as compose runs it, its exporters' queues on disk;
- the same with those queues in memory: what the disk costs (docs/performance.md);
- two tiers: one agent routing by trace ID to one gateway (agent.yaml, gateway.yaml): the per-span cost of
  each tier. More agents or gateways divide the same spans between more cores. The agent's queue blocks
  when full (OTELCOL_GATEWAY_QUEUE_BLOCK=true), so it pushes back on the senders instead of dropping.
The figure is spans accepted per CPU-second of each Collector process (from /proc, until it is idle
again): what one fully busy core takes. The senders and the stand-ins (Tempo's discards what it gets) run
on the same machine, so wall-clock rates say less than the CPU figures.
"""

from __future__ import annotations

import argparse
import http.client
import os
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import yaml
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span, Status

from bench import SPANS_PER_ORDER, cpu_seconds
from harness.backends import COLLECTOR_BINARY, COLLECTOR_CONFIG, Collector
from harness.otlp_sink import OtlpSink
from harness.tiers import two_tiers

TRACES_PER_REQUEST = 100
DISTINCT_REQUESTS = 50
SERVICES = ("gateway", "order-service", "payment-service")
SPAN_KIND = Span.SpanKind


def attributes(**values: str | int) -> list[KeyValue]:
    def value(v: str | int) -> AnyValue:
        return AnyValue(int_value=v) if isinstance(v, int) else AnyValue(string_value=v)

    return [KeyValue(key=key.replace("__", "."), value=value(v)) for key, v in values.items()]


def order_trace(start_ns: int) -> dict[str, list[Span]]:
    """One paid order's spans by service, shaped and named as the services make them."""
    trace_id = os.urandom(16)
    ids = {name: os.urandom(8) for name in ("gw", "gw_c", "ord", "place", "db1", "ord_c", "db2", "pay", "proc")}

    def span(key: str, parent: str | None, name: str, kind: int, offset_ms: int, ms: int, **attrs: str | int) -> Span:
        return Span(
            trace_id=trace_id,
            span_id=ids[key],
            parent_span_id=ids[parent] if parent else b"",
            name=name,
            kind=kind,  # type: ignore[arg-type]  # the enum's int value
            start_time_unix_nano=start_ns + offset_ms * 1_000_000,
            end_time_unix_nano=start_ns + (offset_ms + ms) * 1_000_000,
            attributes=attributes(**attrs),
            status=Status(code=Status.STATUS_CODE_UNSET),
        )

    http_server: dict[str, str | int] = {"http__request__method": "POST", "http__response__status_code": 201}
    database: dict[str, str | int] = {"db__system__name": "postgresql", "db__namespace": "shop"}
    return {
        "gateway": [
            span(
                "gw",
                None,
                "POST /api/order",
                SPAN_KIND.SPAN_KIND_SERVER,
                0,
                30,
                http__route="/api/order",
                **http_server,
            ),
            span(
                "gw_c", "gw", "POST", SPAN_KIND.SPAN_KIND_CLIENT, 1, 28, http__request__method="POST", server__port=8001
            ),
        ],
        "order-service": [
            span(
                "ord", "gw_c", "POST /orders", SPAN_KIND.SPAN_KIND_SERVER, 2, 26, http__route="/orders", **http_server
            ),
            span("place", "ord", "place_order", SPAN_KIND.SPAN_KIND_INTERNAL, 3, 24, order__status="paid"),
            span("db1", "place", "INSERT orders", SPAN_KIND.SPAN_KIND_CLIENT, 3, 2, **database),
            span(
                "ord_c",
                "place",
                "POST",
                SPAN_KIND.SPAN_KIND_CLIENT,
                6,
                18,
                http__request__method="POST",
                server__port=8002,
            ),
            span("db2", "place", "UPDATE orders", SPAN_KIND.SPAN_KIND_CLIENT, 25, 2, **database),
        ],
        "payment-service": [
            span(
                "pay",
                "ord_c",
                "POST /payments",
                SPAN_KIND.SPAN_KIND_SERVER,
                7,
                16,
                http__route="/payments",
                **http_server,
            ),
            span(
                "proc", "pay", "processor.authorize", SPAN_KIND.SPAN_KIND_INTERNAL, 8, 14, payment__outcome="authorized"
            ),
        ],
    }


def export_request() -> bytes:
    """TRACES_PER_REQUEST orders' spans, one ResourceSpans per service, as an SDK's exporter sends them."""
    by_service: dict[str, list[Span]] = {service: [] for service in SERVICES}
    now = time.time_ns()
    for _ in range(TRACES_PER_REQUEST):
        for service, spans in order_trace(now).items():
            by_service[service].extend(spans)
    request = ExportTraceServiceRequest(
        resource_spans=[
            ResourceSpans(
                resource=Resource(
                    attributes=attributes(
                        service__name=service, service__namespace="shop", service__instance__id=f"{service}-1"
                    )
                ),
                scope_spans=[ScopeSpans(spans=spans)],
            )
            for service, spans in by_service.items()
        ]
    )
    body: bytes = request.SerializeToString()
    return body


SPANS_PER_REQUEST = TRACES_PER_REQUEST * SPANS_PER_ORDER


def send(port: int, bodies: list[bytes], stop: threading.Event, answers: dict[int, int], lock: threading.Lock) -> None:
    """Replay the bodies over one kept-alive connection until told to stop; count the answers by status."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    counts: dict[int, int] = {}
    index = 0
    while not stop.is_set():
        connection.request(
            "POST", "/v1/traces", bodies[index % len(bodies)], {"Content-Type": "application/x-protobuf"}
        )
        response = connection.getresponse()
        response.read()
        counts[response.status] = counts.get(response.status, 0) + 1
        index += 1
    connection.close()
    with lock:
        for status, count in counts.items():
            answers[status] = answers.get(status, 0) + count


@dataclass
class Measured:
    accepted: float  # spans the receiving Collector accepted
    refused: float
    wall_s: float
    cpu_s: dict[str, float]  # per Collector process, until idle again
    sent_to_tempo: float


def load(receiver: Collector, everyone: list[Collector], bodies: list[bytes], seconds: float, senders: int) -> Measured:
    pids = {collector.workdir.name: collector.process.process.pid for collector in everyone}
    before = {name: cpu_seconds([pid]) for name, pid in pids.items()}
    stop, lock, answers = threading.Event(), threading.Lock(), dict[int, int]()
    port = int(receiver.otlp_http_endpoint.rsplit(":", 1)[1])
    threads = [threading.Thread(target=send, args=(port, bodies, stop, answers, lock)) for _ in range(senders)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    time.sleep(seconds)
    stop.set()
    for thread in threads:
        thread.join()
    wall = time.monotonic() - started
    for collector in everyone:
        collector.wait_until_idle(timeout_s=120)
    cpu = {name: cpu_seconds([pid]) - before[name] for name, pid in pids.items()}
    counters = receiver.own_counters()
    sent = sum(c.own_counters().get("otelcol_exporter_sent_spans", 0.0) for c in everyone if c is not receiver)
    if len(everyone) == 1:
        sent = counters.get("otelcol_exporter_sent_spans", 0.0)
    return Measured(
        counters.get("otelcol_receiver_accepted_spans", 0.0),
        counters.get("otelcol_receiver_refused_spans", 0.0),
        wall,
        cpu,
        sent,
    )


def one_tier(workdir: Path, bodies: list[bytes], args: argparse.Namespace, queues_on_disk: bool = True) -> Measured:
    configs = (COLLECTOR_CONFIG,) if queues_on_disk else (in_memory_queues(workdir),)
    with OtlpSink(record=False) as tempo, OtlpSink(record=False) as loki:
        collector = Collector(workdir / "single", tempo.endpoint, f"{loki.endpoint}/otlp", configs)
        try:
            return load(collector, [collector], bodies, args.seconds, args.senders)
        finally:
            collector.process.stop()


def in_memory_queues(workdir: Path) -> Path:
    """config.yaml with its exporters' queues in memory (no storage): what the disk costs, by difference."""
    config = yaml.safe_load(COLLECTOR_CONFIG.read_text())
    for exporter in config["exporters"].values():
        exporter.get("sending_queue", {}).pop("storage", None)
    path = workdir / "in-memory-queues.yaml"
    workdir.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config))
    return path


def two_tier(workdir: Path, bodies: list[bytes], args: argparse.Namespace) -> Measured:
    # Blocking when the gateway's queue is full: the senders slow down instead of the agent dropping.
    with two_tiers(workdir, agents=1, gateways=1, record=False, OTELCOL_GATEWAY_QUEUE_BLOCK="true") as tiers:
        return load(tiers.agents[0], tiers.collectors, bodies, args.seconds, args.senders)


SETUPS: dict[str, Callable[[Path, list[bytes], argparse.Namespace], Measured]] = {
    "one Collector": one_tier,
    "one, queues in memory": lambda workdir, bodies, args: one_tier(workdir, bodies, args, queues_on_disk=False),
    "two tiers": two_tier,
}


def rows(setup: str, runs: list[Measured]) -> list[tuple[str, float, float, float, float]]:
    """(row, spans accepted per wall second, CPU-s, spans per CPU-second, spans to Tempo / accepted), medians."""
    found = []
    for process in runs[0].cpu_s:
        label = setup if len(runs[0].cpu_s) == 1 else f"{setup}: {process.split('-')[0]}"
        found.append(
            (
                label,
                statistics.median(run.accepted / run.wall_s for run in runs),
                statistics.median(run.cpu_s[process] for run in runs),
                statistics.median(run.accepted / run.cpu_s[process] for run in runs),
                statistics.median(run.sent_to_tempo / run.accepted for run in runs),
            )
        )
    if len(runs[0].cpu_s) > 1:
        found.append(
            (
                f"{setup}: both",
                found[0][1],
                statistics.median(sum(run.cpu_s.values()) for run in runs),
                statistics.median(run.accepted / sum(run.cpu_s.values()) for run in runs),
                found[0][4],
            )
        )
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=15, help="load per round and setup (default 15)")
    parser.add_argument("--repeat", type=int, default=1, help="rounds; figures are medians (default 1)")
    parser.add_argument("--senders", type=int, default=2, help="sender threads (default 2)")
    args = parser.parse_args()
    if not COLLECTOR_BINARY.exists():
        print(f"no Collector at {COLLECTOR_BINARY}: run `make collector` first", file=sys.stderr)
        return 1
    bodies = [export_request() for _ in range(DISTINCT_REQUESTS)]
    results: dict[str, list[Measured]] = {setup: [] for setup in SETUPS}
    with tempfile.TemporaryDirectory(prefix="bench-collector-") as tmp:
        for round_number in range(1, args.repeat + 1):
            for setup, run in SETUPS.items():
                print(f"==> round {round_number} of {args.repeat}: {setup}", file=sys.stderr, flush=True)
                measured = run(Path(tmp) / f"{round_number}-{setup.replace(' ', '-')}", bodies, args)
                results[setup].append(measured)
                print(
                    f"    {measured.accepted:.0f} spans accepted, {measured.refused:.0f} refused, "
                    f"{measured.sent_to_tempo:.0f} sent to Tempo, CPU-s "
                    + ", ".join(f"{name} {cpu:.2f}" for name, cpu in measured.cpu_s.items()),
                    file=sys.stderr,
                    flush=True,
                )
    print(
        f"Spans per CPU-second of each Collector (= spans/s one fully busy core takes), medians of "
        f"{args.repeat} round(s) of {args.seconds:g} s, {SPANS_PER_REQUEST} spans per request, {os.cpu_count()} cores:"
    )
    print(f"{'setup':<28}{'spans/s (wall)':>16}{'CPU-s':>9}{'spans per CPU-s':>17}{'to Tempo':>10}")
    for setup, runs in results.items():
        for label, wall_rate, cpu, per_cpu, to_tempo in rows(setup, runs):
            print(f"{label:<28}{wall_rate:>16,.0f}{cpu:>9.2f}{per_cpu:>17,.0f}{to_tempo:>10.1%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
