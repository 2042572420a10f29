"""``make bench``: what full telemetry costs, side by side with telemetry off, in one run on this machine.

For each setup the three services run as processes (simulated processor latency 0, so CPU is what is
measured) and take: a closed-loop load from wrk (throughput, latency, CPU seconds per 1,000 orders),
then an open-loop load at a fixed, moderate rate (latency without queueing). With full telemetry every
span is sampled and exported, with metrics and logs, to the real Collector built by `make collector`,
whose Tempo and Loki exporters go to recording receivers; the span count is checked end to end.
Each setup runs on each engine of the order store: SQLite, as `make run` has it, and PostgreSQL, as
compose runs it (a private server from the machine's binaries, whose own CPU is counted apart).
Beside ours, the stock setup a user would otherwise run: the same services instrumented zero-code by
`opentelemetry-instrument` with the SDK's defaults, to the same Collector.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import math
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path

import aiohttp
from opentelemetry.proto.trace.v1.trace_pb2 import Span

import profiles
from harness.backends import COLLECTOR_BINARY, Collector, collector_with_stand_ins
from harness.database import order_count
from harness.orders import order_body
from harness.otlp_sink import OtlpSink
from harness.postgres import PostgresServer, find_postgres_bin
from harness.processes import SERVICE_NAMES, Shop, http
from shop.telemetry import OTEL_ENV_DEFAULTS

# otel-collector/config.yaml: the span_metrics connector's metrics_flush_interval is 5 s.
SPAN_METRICS_FLUSH_S = 6.0
SPANS_PER_ORDER = 9  # a paid order's trace: docs/telemetry.md
ENGINES = ("sqlite", "postgresql")
SERVICE_REQUESTS_PER_ORDER = 3  # gateway, order-service, payment-service: one server request each
# The stock setup: opentelemetry-instrument (opentelemetry-distro) with only these instrumentations.
OPENTELEMETRY_INSTRUMENT = Path(sys.executable).with_name("opentelemetry-instrument")
STOCK_INSTRUMENTATIONS = {"aiohttp-server", "aiohttp-client", "logging"}
SETUPS = ("telemetry off", "full telemetry", "sampled", "stock full", "stock sampled")
DB_SYSTEM_NAME = "db.system.name"  # on each DB client span (docs/telemetry.md#the-database)
WRK_SCRIPT = """wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{body}'
"""


@dataclass
class Result:
    setup: str
    throughput_rps: float
    closed_p50_ms: float
    closed_p99_ms: float
    cpu_s_per_1000: float
    fixed_p50_ms: float
    fixed_p95_ms: float
    fixed_p99_ms: float
    errors: int
    orders: int
    spans_expected: int | None = None
    spans_accepted: float | None = None
    spans_exported: float | None = None
    spans_received: int | None = None
    # The gateway's server spans as span metrics count them (extrapolated by 1/p when sampled).
    span_metric_calls: float | None = None
    # The PostgreSQL server's own CPU under the closed-loop load (None on SQLite, which runs in-process).
    db_server_cpu_s_per_1000: float | None = None
    # The DB client spans' time as a share of the gateway's server spans' time, over the kept traces.
    db_span_share: float | None = None
    profile: dict[str, Path] | None = None


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU of these processes so far, from /proc."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / ticks


def wrk_duration_ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m|h)", text)
    if match is None:
        raise ValueError(f"unexpected wrk duration {text!r}")
    value, unit = match.groups()
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0, "h": 3600000.0}[unit]


def run_wrk(url: str, seconds: int, connections: int, workdir: Path) -> tuple[float, float, float, int, int]:
    """Closed loop: (requests/s, p50 ms, p99 ms, non-2xx responses, requests)."""
    script = workdir / "order.lua"
    script.write_text(WRK_SCRIPT.format(body=json.dumps(order_body())))
    command = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", str(script), url]
    output = subprocess.run(  # noqa: S603 (wrk was found on PATH at start; fixed arguments)
        command,
        capture_output=True,
        text=True,
        check=True,
        timeout=seconds + 60,
    ).stdout
    (workdir / "wrk.txt").write_text(output)
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))  # type: ignore[union-attr]
    p50 = wrk_duration_ms(re.search(r"^\s*50%\s+(\S+)", output, re.M).group(1))  # type: ignore[union-attr]
    p99 = wrk_duration_ms(re.search(r"^\s*99%\s+(\S+)", output, re.M).group(1))  # type: ignore[union-attr]
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    requests = int(re.search(r"(\d+) requests in", output).group(1))  # type: ignore[union-attr]
    return rps, p50, p99, int(bad.group(1)) if bad else 0, requests


async def fixed_rate(url: str, rate: float, seconds: float) -> tuple[list[float], int]:
    """Open loop: one request every 1/rate s, whatever the answers do; latencies in ms and errors."""
    latencies: list[float] = []
    errors = 0
    body = order_body()

    async def one(session: aiohttp.ClientSession) -> None:
        nonlocal errors
        started = time.perf_counter()
        async with session.post(url, json=body) as response:
            await response.read()
            if response.status != 201:
                errors += 1
        latencies.append((time.perf_counter() - started) * 1000)

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        tasks = []
        start = time.perf_counter()
        for n in range(int(rate * seconds)):
            delay = start + n / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(session)))
        await asyncio.gather(*tasks)
    return latencies, errors


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[round(q * 100) - 1]


@contextmanager
def telemetry_backend(
    workdir: Path, enabled: bool
) -> Iterator[tuple[dict[str, str], Collector | None, OtlpSink | None]]:
    if not enabled:
        yield {"OTEL_SDK_DISABLED": "true"}, None, None
        return
    with collector_with_stand_ins(workdir) as (collector, tempo, _):
        yield {"OTEL_EXPORTER_OTLP_ENDPOINT": collector.otlp_http_endpoint}, collector, tempo


def bench_shop(workdir: Path, args: argparse.Namespace, env: dict[str, str]) -> Shop:
    """The three services with the simulated processor latency at 0, so that CPU is what is measured."""
    return Shop(
        workdir,
        PAYMENTS_LATENCY_MIN_MS="0",
        PAYMENTS_LATENCY_MAX_MS="0",
        **{"LOG_LEVEL": args.log_level, **args.set, **env},
    )


def stock_env(ratio: float | None) -> dict[str, str]:
    """The zero-code setup's whole environment, given up front: the distro reads it as the process starts,
    before the services' own start-up could set a default. Our providers are off (TELEMETRY_INSTRUMENTATION);
    the SDK's own batch delays and sampler (``ratio`` None: every trace); our semconv opt-in and excluded URLs."""
    disabled = sorted(
        point.name
        for point in entry_points(group="opentelemetry_instrumentor")
        if point.name not in STOCK_INSTRUMENTATIONS
    )
    sampler = {"OTEL_TRACES_SAMPLER": "parentbased_always_on"}
    if ratio is not None:
        sampler = {"OTEL_TRACES_SAMPLER": "parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG": str(ratio)}
    return {
        "TELEMETRY_INSTRUMENTATION": "zero-code",
        "OTEL_TRACES_EXPORTER": "otlp",
        "OTEL_METRICS_EXPORTER": "otlp",
        "OTEL_LOGS_EXPORTER": "otlp",
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        "OTEL_PYTHON_DISABLED_INSTRUMENTATIONS": ",".join(disabled),
        "OTEL_SEMCONV_STABILITY_OPT_IN": OTEL_ENV_DEFAULTS["OTEL_SEMCONV_STABILITY_OPT_IN"],
        "OTEL_PYTHON_AIOHTTP_SERVER_EXCLUDED_URLS": OTEL_ENV_DEFAULTS["OTEL_PYTHON_AIOHTTP_SERVER_EXCLUDED_URLS"],
        "OTEL_BSP_SCHEDULE_DELAY": "5000",
        "OTEL_BLRP_SCHEDULE_DELAY": "1000",
        **sampler,
    }


def keeps_some_traces(env: dict[str, str]) -> bool:
    """A sampled setup, ours or stock: its spans are counted for the traces Tempo received, not every order's."""
    return "TRACES_SAMPLE_RATIO" in env or "OTEL_TRACES_SAMPLER_ARG" in env


def db_span_share(spans: list[Span]) -> float:
    """How much of the gateway's time the database's client spans take, summed over every trace received."""

    def duration(span: Span) -> int:
        return int(span.end_time_unix_nano - span.start_time_unix_nano)

    database = sum(duration(span) for span in spans if any(a.key == DB_SYSTEM_NAME for a in span.attributes))
    gateway = sum(duration(span) for span in spans if span.name == "POST /api/order")
    return database / gateway if gateway else 0.0


class Databases:
    """Where each setup keeps its orders: a SQLite file in its own directory, or a new database of its own
    on one PostgreSQL server started for the run."""

    def __init__(self, workdir: Path, engines: tuple[str, ...]) -> None:
        self.server: PostgresServer | None = None
        if "postgresql" in engines:
            self.server = PostgresServer.start(workdir / "postgres", bin_dir=find_postgres_bin())
        self._count = 0

    def env(self, engine: str) -> dict[str, str]:
        """``ORDERS_DATABASE_URL`` for one setup; SQLite's is Shop's default, a file in the setup's directory."""
        if engine == "sqlite":
            return {}
        if self.server is None:
            raise RuntimeError("no PostgreSQL server was started for this run")
        self._count += 1
        return {"ORDERS_DATABASE_URL": self.server.create_database(f"bench_{self._count}")}

    def close(self) -> None:
        if self.server is not None:
            self.server.close()


def measure(
    setup: str,
    telemetry: bool,
    args: argparse.Namespace,
    workdir: Path,
    extra_env: dict[str, str] | None = None,
    profile: bool = True,
    account: bool = False,
    database: PostgresServer | None = None,
    stock: bool = False,
) -> Result:
    """One setup's figures; ``account`` also checks its spans end to end and its span metrics. ``extra_env``
    may name the database; ``database`` is the PostgreSQL server it is on, whose CPU is then counted.
    ``stock``: the services run under ``opentelemetry-instrument``, each named by OTEL_SERVICE_NAME."""
    print(f"==> {setup}: starting the services", file=sys.stderr, flush=True)
    with telemetry_backend(workdir / setup.replace(" ", "-"), telemetry) as (env, collector, tempo):
        shop = bench_shop(workdir / setup.replace(" ", "-") / "shop", args, {**env, **(extra_env or {})})
        if stock:
            shop.launcher = [str(OPENTELEMETRY_INSTRUMENT)]
            shop.per_service = {module: {"OTEL_SERVICE_NAME": name} for module, name in SERVICE_NAMES.items()}
        try:
            shop.start_all()
            url = f"{shop.gateway}/api/order"
            for _ in range(args.warmup):
                http("POST", url, order_body())
            pids = [service.process.pid for service in shop.running.values()]
            print(f"==> {setup}: wrk, {args.connections} connections, {args.seconds} s", file=sys.stderr, flush=True)
            cpu_before = cpu_seconds(pids)
            server_cpu_before = database.cpu_seconds() if database else 0.0
            rps, p50, p99, bad, requests = run_wrk(url, args.seconds, args.connections, workdir)
            cpu = cpu_seconds(pids) - cpu_before
            server_cpu = database.cpu_seconds() - server_cpu_before if database else None
            print(f"==> {setup}: {args.rate:g} orders/s for {args.seconds} s", file=sys.stderr, flush=True)
            latencies, errors = asyncio.run(fixed_rate(url, args.rate, args.seconds))
            result = Result(
                setup,
                rps,
                p50,
                p99,
                cpu / requests * 1000,
                percentile(latencies, 0.50),
                percentile(latencies, 0.95),
                percentile(latencies, 0.99),
                bad + errors,
                requests + len(latencies) + args.warmup,
                db_server_cpu_s_per_1000=None if server_cpu is None else server_cpu / requests * 1000,
            )
            # Not for the sampled or the breakdown's setups: only what differs in the database is allowed.
            if profile and args.profile and telemetry and not set(extra_env or {}) - {"ORDERS_DATABASE_URL"}:
                # A phase of its own: the profiler's CPU must not distort the figures above.
                print(f"==> {setup}: wrk again under py-spy for {args.seconds} s", file=sys.stderr, flush=True)
                names = {name.removeprefix("shop."): service.process.pid for name, service in shop.running.items()}
                with profiles.recording(names, args.seconds, args.profile) as profile_files:
                    run_wrk(url, args.seconds, args.connections, workdir)
                result.profile = profile_files
        finally:
            shop.stop_all()  # flushes what the SDKs still buffer
        if collector is not None and tempo is not None and account:
            collector.wait_until_idle(timeout_s=60)
            counters = collector.own_counters()
            # wrk cuts off with requests in flight that still complete: count the orders actually stored.
            result.orders = order_count(shop.env["ORDERS_DATABASE_URL"])
            # Spans of kept traces only: every order's when all are kept; else every trace Tempo got one of.
            kept = (
                len({span.trace_id for _, span in tempo.spans()})
                if keeps_some_traces(extra_env or {})
                else result.orders
            )
            result.spans_expected = kept * SPANS_PER_ORDER
            result.spans_accepted = counters.get("otelcol_receiver_accepted_spans", 0)
            result.spans_exported = counters.get("otelcol_exporter_sent_spans", 0)
            result.spans_received = len(tempo.spans())
            result.db_span_share = db_span_share([span for _, span in tempo.spans()])
            time.sleep(SPAN_METRICS_FLUSH_S)
            result.span_metric_calls = collector.exported_sum(
                "traces_span_metrics_calls_total",
                service_name="gateway",
                span_name="POST /api/order",
                span_kind="SPAN_KIND_SERVER",
            )
        return result


def median_of(results: list[Result]) -> Result:
    """One Result from several rounds of one setup: each figure's median; counts summed over the rounds."""
    if len(results) == 1:
        return results[0]
    counts = {
        "errors",
        "orders",
        "spans_expected",
        "spans_accepted",
        "spans_exported",
        "spans_received",
        "span_metric_calls",
    }
    merged: dict[str, object] = {"setup": results[0].setup, "profile": results[-1].profile}
    for spec in dataclasses.fields(Result):
        if spec.name in merged:
            continue
        values = [getattr(result, spec.name) for result in results]
        if any(value is None for value in values):
            merged[spec.name] = None
        else:
            merged[spec.name] = sum(values) if spec.name in counts else statistics.median(values)
    return Result(**merged)  # type: ignore[arg-type]


def report(results: list[Result], rate: float, ratio: float) -> None:
    """The five setups side by side (SETUPS' order), then the lines the targets are judged by."""
    off, on, sampled, stock_on, stock_sampled = results
    rows = [
        ("throughput (orders/s, closed loop)", [f"{r.throughput_rps:.0f}" for r in results]),
        ("  p50 / p99 under that load (ms)", [f"{r.closed_p50_ms:.1f} / {r.closed_p99_ms:.1f}" for r in results]),
        ("CPU s per 1,000 orders (3 services)", [f"{r.cpu_s_per_1000:.2f}" for r in results]),
        (f"p50 at {rate:g} orders/s (ms)", [f"{r.fixed_p50_ms:.2f}" for r in results]),
        (f"p95 at {rate:g} orders/s (ms)", [f"{r.fixed_p95_ms:.2f}" for r in results]),
        (f"p99 at {rate:g} orders/s (ms)", [f"{r.fixed_p99_ms:.2f}" for r in results]),
        ("failed orders", [str(r.errors) for r in results]),
    ]
    width = max(len(name) for name, _ in rows)
    columns = ("telemetry off", "full telemetry", f"sampled p={ratio:.2f}", "stock full", f"stock p={ratio:.2f}")
    print(f"{'':{width}}" + "".join(f"  {column:>15}" for column in columns))
    for name, values in rows:
        print(f"{name:{width}}" + "".join(f"  {value:>15}" for value in values))
    print()
    ours_and_stock = [("full", on), ("sampled", sampled), ("stock full", stock_on), ("stock sampled", stock_sampled)]
    print(
        "CPU per order vs telemetry off: "
        + ", ".join(f"{name} {r.cpu_s_per_1000 / off.cpu_s_per_1000:.2f}" for name, r in ours_and_stock)
    )
    print(
        "telemetry CPU per service request: "
        + ", ".join(f"{name} {per_service_request_us(r, off):+.0f} µs" for name, r in ours_and_stock)
    )
    print(f"throughput full/off: {on.throughput_rps / off.throughput_rps:.2f} (target >= 0.50)")
    print(f"throughput sampled/off: {sampled.throughput_rps / off.throughput_rps:.2f} (p={ratio:.2f}, target >= 0.75)")
    print(
        f"throughput stock full/off: {stock_on.throughput_rps / off.throughput_rps:.2f},"
        f" stock sampled/off: {stock_sampled.throughput_rps / off.throughput_rps:.2f}"
    )
    print(
        f"p99 delta at {rate:g} orders/s: full {on.fixed_p99_ms - off.fixed_p99_ms:+.2f} ms,"
        f" sampled {sampled.fixed_p99_ms - off.fixed_p99_ms:+.2f} ms (target sampled <= +2 ms),"
        f" stock full {stock_on.fixed_p99_ms - off.fixed_p99_ms:+.2f} ms,"
        f" stock sampled {stock_sampled.fixed_p99_ms - off.fixed_p99_ms:+.2f} ms"
    )
    orders, counted = sampled.orders, sampled.span_metric_calls or 0.0
    bound = 4 * math.sqrt(orders * (1 - ratio) / ratio) / orders
    print(
        f"span metrics at p={ratio:.2f}: {counted:.0f} counted for {orders} orders"
        f" (error {counted / orders - 1:+.1%}, bound {bound:.1%})"
    )
    stock_counted = stock_sampled.span_metric_calls or 0.0
    print(
        f"span metrics, stock at p={ratio:.2f}: {stock_counted:.0f} counted for {stock_sampled.orders} orders"
        f" (reported, not judged: stock sampling writes no threshold, so each kept span counts once)"
    )
    # Spans of kept traces only (at full telemetry every trace is kept); ours and the stock setup apart.
    for name, pair in (("spans", (on, sampled)), ("spans, stock", (stock_on, stock_sampled))):
        created = sum(r.spans_expected or 0 for r in pair)
        received = sum(r.spans_received or 0 for r in pair)
        print(
            f"{name}: created {created}, Collector accepted {sum(r.spans_accepted or 0 for r in pair):.0f},"
            f" exported {sum(r.spans_exported or 0 for r in pair):.0f}, Tempo stand-in received {received}"
            f" -> lost {created - received}"
        )


def per_service_request_us(result: Result, off: Result) -> float:
    """What telemetry adds to each service request: the CPU per order above telemetry off's, over the three
    services' requests of an order."""
    return (result.cpu_s_per_1000 - off.cpu_s_per_1000) / 1000 / SERVICE_REQUESTS_PER_ORDER * 1e6


# Where full telemetry's cost goes: each setup switches one part off.
BREAKDOWN: list[tuple[str, bool, dict[str, str]]] = [
    ("telemetry off", False, {}),
    ("full telemetry", True, {}),
    ("full, logs at WARNING", True, {"LOG_LEVEL": "WARNING"}),
    # TRACES_SAMPLE_RATIO must be above 0; at one in a million no trace of a run is kept.
    ("no span sampled, WARNING", True, {"LOG_LEVEL": "WARNING", "TRACES_SAMPLE_RATIO": "0.000001"}),
    # What the log lines cost once traces are sampled: INFO lines still go to stdout for every order.
    ("sampled p=0.1", True, {"TRACES_SAMPLE_RATIO": "0.1"}),
    ("sampled p=0.1, WARNING", True, {"LOG_LEVEL": "WARNING", "TRACES_SAMPLE_RATIO": "0.1"}),
]


def compare_engines(args: argparse.Namespace, workdir: Path) -> list[Result]:
    """Off, full and sampled on each engine, interleaved in every round; the report of each, then the engines
    side by side."""
    databases = Databases(workdir, args.engines)
    rounds: dict[str, list[list[Result]]] = {engine: [] for engine in args.engines}
    try:
        for round_number in range(1, args.repeat + 1):
            if args.repeat > 1:
                print(f"==> round {round_number} of {args.repeat}", file=sys.stderr, flush=True)
            round_dir = workdir / f"round-{round_number}"
            # One profile is enough, and each takes a phase of its own: the last round's, on the last engine.
            last = round_number == args.repeat
            for engine in args.engines:
                profile = last and engine == args.engines[-1]
                rounds[engine].append(engine_round(engine, args, round_dir, databases, profile))
    finally:
        databases.close()
    medians: dict[str, list[Result]] = {}
    for engine, engine_rounds in rounds.items():
        medians[engine] = [median_of([r[column] for r in engine_rounds]) for column in range(len(SETUPS))]
        print(f"== {engine}")
        report(medians[engine], args.rate, args.sample_ratio)
        if args.repeat > 1:
            report_rounds(engine_rounds, args.repeat)
        print()
    report_engines(medians, args.sample_ratio)
    return [result for results in medians.values() for result in results]


def engine_round(
    engine: str, args: argparse.Namespace, round_dir: Path, databases: Databases, profile: bool
) -> list[Result]:
    """Each of SETUPS on one engine, each on a database of its own."""
    server = databases.server if engine == "postgresql" else None
    ratio = args.sample_ratio

    def setup(name: str, telemetry: bool, env: dict[str, str], **options: bool) -> Result:
        extra_env = {**env, **databases.env(engine)}
        return measure(f"{engine} {name}", telemetry, args, round_dir, extra_env, database=server, **options)

    return [
        setup("telemetry off", False, {}),
        setup("full telemetry", True, {}, profile=profile, account=True),
        setup("sampled", True, {"TRACES_SAMPLE_RATIO": str(ratio)}, profile=False, account=True),
        setup("stock full", True, stock_env(None), profile=False, account=True, stock=True),
        setup("stock sampled", True, stock_env(ratio), profile=False, account=True, stock=True),
    ]


def report_rounds(rounds: list[list[Result]], repeat: int) -> None:
    """Each round's figures, for the setups' spread: CPU per order against off's, throughput, p99."""
    for index, name in enumerate(SETUPS[1:], start=1):
        ratios = ", ".join(f"{r[index].cpu_s_per_1000 / r[0].cpu_s_per_1000:.2f}" for r in rounds)
        print(f"  {name}: CPU per order vs off per round: {ratios}")
    full = ", ".join(f"{r[1].throughput_rps / r[0].throughput_rps:.2f}" for r in rounds)
    kept = ", ".join(f"{r[2].throughput_rps / r[0].throughput_rps:.2f}" for r in rounds)
    deltas = ", ".join(
        f"{r[1].fixed_p99_ms - r[0].fixed_p99_ms:+.2f}/{r[2].fixed_p99_ms - r[0].fixed_p99_ms:+.2f}" for r in rounds
    )
    print(f"(medians of {repeat} rounds; throughput full/off per round: {full}; sampled/off: {kept};")
    print(f" p99 delta full/sampled per round: {deltas} ms; counts summed over the rounds)")


def report_engines(medians: dict[str, list[Result]], ratio: float) -> None:
    """Each engine's three setups in one table: the services' CPU and the database server's, apart."""
    columns = [
        (f"{engine} {name}", result)
        for engine, results in medians.items()
        for name, result in zip(
            ("off", "full", f"p={ratio:.2f}", "stock", f"stock p={ratio:.2f}"), results, strict=True
        )
    ]
    rows = [
        ("orders/s (closed loop)", [f"{r.throughput_rps:.0f}" for _, r in columns]),
        ("CPU s per 1,000 orders, 3 services", [f"{r.cpu_s_per_1000:.2f}" for _, r in columns]),
        ("CPU s per 1,000 orders, DB server", [optional(r.db_server_cpu_s_per_1000, "{:.2f}") for _, r in columns]),
        ("DB spans' share of the gateway's time", [optional(r.db_span_share, "{:.1%}") for _, r in columns]),
    ]
    width = max(len(name) for name, _ in rows)
    column_width = max(15, *(len(name) for name, _ in columns))
    print("Engines side by side (SQLite runs inside order-service: its CPU is in the services' figure)")
    print(f"{'':{width}}" + "".join(f"  {name:>{column_width}}" for name, _ in columns))
    for name, values in rows:
        print(f"{name:{width}}" + "".join(f"  {value:>{column_width}}" for value in values))


def optional(value: float | None, form: str) -> str:
    return "-" if value is None else form.format(value)


def report_breakdown(results: list[Result], rate: float) -> None:
    width = max(len(r.setup) for r in results)
    print(f"{'':{width}}  {'orders/s':>9}  {'CPU s/1000':>10}  {f'p99 at {rate:g}/s':>13}")
    for r in results:
        print(f"{r.setup:{width}}  {r.throughput_rps:9.0f}  {r.cpu_s_per_1000:10.2f}  {r.fixed_p99_ms:10.2f} ms")


def compare_trees(args: argparse.Namespace, workdir: Path) -> None:
    """Telemetry off and sampled for each named apps/ tree, interleaved in every round, so that one run compares
    code: a change to the telemetry path against the tree before it. Every other round takes the trees in
    reverse order, so that the machine's drift within a round favours none of them."""
    trees: dict[str, Path] = dict(args.apps)
    modes = {"off": (False, {}), "sampled": (True, {"TRACES_SAMPLE_RATIO": str(args.sample_ratio)})}
    rounds: dict[tuple[str, str], list[Result]] = {(name, mode): [] for name in trees for mode in modes}
    for round_number in range(1, args.repeat + 1):
        if args.repeat > 1:
            print(f"==> round {round_number} of {args.repeat}", file=sys.stderr, flush=True)
        order = list(trees.items())
        for name, tree in order if round_number % 2 else reversed(order):
            for mode, (telemetry, env) in modes.items():
                rounds[name, mode].append(
                    measure(
                        f"{mode} {name}",
                        telemetry,
                        args,
                        workdir / f"round-{round_number}",
                        {**env, "PYTHONPATH": str(tree)},
                        profile=False,
                    )
                )
    medians = {key: median_of(results) for key, results in rounds.items()}
    first = next(iter(trees))
    width = max(len(name) for name in trees)
    p99 = f"p99 at {args.rate:g}/s"
    print(f"Medians of {args.repeat} round(s); ratios against {first}; sampled at p={args.sample_ratio:.2f}:")
    print(
        f"{'':{width}}  {'mode':>7}  {'orders/s':>9}  {'ratio':>6}  {'CPU s/1000':>10}  {'ratio':>6}"
        f"  {p99:>13}  {'failed':>6}"
    )
    for (name, mode), r in medians.items():
        base = medians[first, mode]
        print(
            f"{name:{width}}  {mode:>7}  {r.throughput_rps:9.0f}  {r.throughput_rps / base.throughput_rps:6.3f}"
            f"  {r.cpu_s_per_1000:10.2f}  {r.cpu_s_per_1000 / base.cpu_s_per_1000:6.3f}"
            f"  {r.fixed_p99_ms:10.2f} ms  {r.errors:6d}"
        )
    for name in trees:
        off, sampled = medians[name, "off"], medians[name, "sampled"]
        print(f"{name}: sampled CPU per order vs its own off: {sampled.cpu_s_per_1000 / off.cpu_s_per_1000:.2f}")
    for name in list(trees)[1:]:
        per_round = [
            ours.cpu_s_per_1000 / theirs.cpu_s_per_1000
            for ours, theirs in zip(rounds[name, "sampled"], rounds[first, "sampled"], strict=True)
        ]
        print(
            f"{name}/{first} sampled CPU per 1,000 orders per round: {', '.join(f'{x:.3f}' for x in per_round)}"
            f" (median {statistics.median(per_round):.3f})"
        )


def latency_row(name: str, latencies: list[float], errors: int, normal_p99: float | None) -> str:
    p50, p95, p99 = (percentile(latencies, q) for q in (0.50, 0.95, 0.99))
    versus = f"{p99 / normal_p99 - 1:+.0%}" if normal_p99 else ""
    return f"{name:<34}  {p50:7.2f}  {p95:7.2f}  {p99:7.2f}  {versus:>9}  {errors:6d}"


def drills(args: argparse.Namespace, workdir: Path) -> None:
    """Full telemetry at the fixed rate with the Collector up, down, and killed then restarted mid-phase."""
    print("==> drills: starting the Collector and the services", file=sys.stderr, flush=True)
    with telemetry_backend(workdir / "drills", True) as (env, collector, _):
        if collector is None:
            raise RuntimeError("the drills need the Collector, and telemetry_backend started none")
        shop = bench_shop(workdir / "drills" / "shop", args, env)
        try:
            shop.start_all()
            url = f"{shop.gateway}/api/order"
            for _ in range(args.warmup):
                http("POST", url, order_body())
            phases: list[tuple[str, list[float], int]] = []
            print(f"==> drills: Collector up, {args.rate:g} orders/s for {args.seconds} s", file=sys.stderr)
            phases.append(("Collector up", *asyncio.run(fixed_rate(url, args.rate, args.seconds))))
            collector.process.process.kill()
            collector.process.process.wait()
            print(f"==> drills: Collector down for {args.seconds} s", file=sys.stderr)
            phases.append(("Collector down", *asyncio.run(fixed_rate(url, args.rate, args.seconds))))
            print(f"==> drills: Collector restarted {args.seconds / 2:g} s into the phase", file=sys.stderr)
            restart = threading.Timer(args.seconds / 2, collector.start)
            restart.start()
            phases.append(("Collector back mid-phase", *asyncio.run(fixed_rate(url, args.rate, args.seconds))))
            restart.join()
        finally:
            shop.stop_all()
    print(f"Full telemetry at {args.rate:g} orders/s, latency in ms ('p99 vs up': against the first row):")
    print(f"{'':<34}  {'p50':>7}  {'p95':>7}  {'p99':>7}  {'p99 vs up':>9}  {'failed':>6}")
    normal_p99 = percentile(phases[0][1], 0.99)
    for index, (name, latencies, errors) in enumerate(phases):
        print(latency_row(name, latencies, errors, normal_p99 if index else None))


def positive_int(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1, got {text!r}")
    return int(text)


def environment_setting(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not re.fullmatch(r"[A-Z][A-Z0-9_]*", name):
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE with an upper-case NAME, got {text!r}")
    return name, value


def engine_list(text: str) -> tuple[str, ...]:
    engines = tuple(dict.fromkeys(name.strip() for name in text.split(",")))
    if not engines or not set(engines) <= set(ENGINES):
        raise argparse.ArgumentTypeError(f"expected a comma-separated list of {', '.join(ENGINES)}, got {text!r}")
    return engines


def apps_tree(text: str) -> tuple[str, Path]:
    name, sep, directory = text.partition("=")
    tree = Path(directory).resolve()
    if not sep or not re.fullmatch(r"[\w.-]+", name) or not (tree / "shop").is_dir():
        raise argparse.ArgumentTypeError(f"expected NAME=DIR with DIR an apps/ tree (holding shop/), got {text!r}")
    return name, tree


def main() -> int:
    parser = argparse.ArgumentParser(prog="make bench", description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=15, help="length of each load phase (default 15)")
    parser.add_argument("--connections", type=int, default=8, help="wrk connections (default 8)")
    parser.add_argument("--rate", type=float, default=50, help="fixed rate, orders/s (default 50)")
    parser.add_argument("--breakdown", action="store_true", help="instead: setups that switch one part off each")
    parser.add_argument(
        "--repeat", type=positive_int, default=1, help="rounds of every setup, reported as medians (default 1)"
    )
    parser.add_argument("--warmup", type=int, default=200, help="orders before measuring (default 200)")
    parser.add_argument(
        "--drills", action="store_true", help="instead: latency with the Collector up, down, killed and restarted"
    )
    parser.add_argument(
        "--profile",
        type=Path,
        metavar="DIR",
        help="also profile each service under full load with py-spy; folded stacks go to DIR",
    )
    parser.add_argument(
        "--apps",
        type=apps_tree,
        action="append",
        default=[],
        metavar="NAME=DIR",
        help="instead: telemetry off and sampled for each of these apps/ trees, interleaved in rounds (repeatable)",
    )
    parser.add_argument(
        "--sample-ratio",
        type=float,
        default=0.1,
        help="TRACES_SAMPLE_RATIO of the third setup, sampled with production settings (default 0.1)",
    )
    parser.add_argument("--log-level", default="INFO", help="services LOG_LEVEL (default INFO: logs are part of it)")
    parser.add_argument(
        "--engines",
        type=engine_list,
        default=ENGINES,
        metavar="LIST",
        help="the order store's engines, each with every setup (default sqlite,postgresql; "
        "--breakdown, --drills and --apps run on SQLite)",
    )
    parser.add_argument(
        "--set",
        type=environment_setting,
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="an environment variable for the services in every setup, to try a setting (repeatable)",
    )
    args = parser.parse_args()
    args.set = dict(args.set)
    if not 0 < args.sample_ratio <= 1:
        parser.error(f"--sample-ratio must be above 0 and at most 1, not {args.sample_ratio}")
    needs = [("wrk", shutil.which("wrk") is not None), ("the Collector", COLLECTOR_BINARY.exists())]
    if "postgresql" in args.engines and not (args.drills or args.apps or args.breakdown):
        needs.append(("PostgreSQL's server binaries", find_postgres_bin() is not None))
    missing = [what for what, found in needs if not found]
    if missing:
        print(
            f"make bench needs {' and '.join(missing)}: apt-get install wrk postgresql; make collector",
            file=sys.stderr,
        )
        return 2
    with tempfile.TemporaryDirectory(prefix="shop-bench-") as tmp:
        workdir = Path(tmp)
        if args.drills:
            drills(args, workdir)
            return 0
        if args.apps:
            compare_trees(args, workdir)
            return 0
        if args.breakdown:
            results = [measure(name, telemetry, args, workdir, env) for name, telemetry, env in BREAKDOWN]
            report_breakdown(results, args.rate)
        else:
            results = compare_engines(args, workdir)
    for result in results:
        if result.profile:
            print()
            profiles.report(result.profile)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
