"""``make bench-parts``: what each part of the per-request telemetry path costs, contrib's and the lean one's
(shop.lean), side by side in one process, in µs per call, for a request whose trace is not kept.

Microbenchmarks of the project's own code with the real SDK setup: each part is called in a loop on a real
aiohttp request (built by aiohttp's ``make_mocked_request``, routed by the app's router) or a real client
trace config; the medians of ``--repeat`` rounds. ``make bench`` measures the whole path end to end.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import statistics
import time
import types
import warnings
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
from aiohttp import web
from aiohttp.test_utils import make_mocked_request
from multidict import CIMultiDict
from opentelemetry import metrics, trace
from opentelemetry.instrumentation import aiohttp_client as contrib_client
from opentelemetry.instrumentation import aiohttp_server as contrib_server
from opentelemetry.instrumentation._semconv import _StabilityMode
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.util.types import AttributeValue
from yarl import URL

from shop.lean import LeanClient, LeanServer
from shop.sampling import ShopSampler
from shop.telemetry import OTEL_ENV_DEFAULTS, json_log_formatter

# A request of a trace the gateway dropped, as order-service receives it.
DROPPED = {
    "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00",
    "tracestate": "ot=rv:5a1b2c3d4e5f60",
    "Content-Type": "application/json",
    "User-Agent": "Python/3.11 aiohttp/3.14.5",
}
Part = Callable[[], Awaitable[None]]


def per_call_us(part: Part, calls: int, repeat: int) -> float:
    """The median over ``repeat`` rounds of the mean µs per call of ``calls`` calls."""

    async def rounds() -> list[float]:
        for _ in range(calls // 10):  # warm caches and code paths
            await part()
        results = []
        for _ in range(repeat):
            start = time.perf_counter()
            for _ in range(calls):
                await part()
            results.append((time.perf_counter() - start) / calls * 1e6)
        return results

    return statistics.median(asyncio.run(rounds()))


async def routed_request(app: web.Application) -> web.Request:
    request = make_mocked_request("POST", "/orders", headers=DROPPED, app=app)
    match_info = await app.router.resolve(request)
    match_info.add_app(app)
    request._match_info = match_info
    return request


def server_parts(providers: dict[str, TracerProvider]) -> dict[str, Part]:
    """The aiohttp server middleware, contrib's and the lean one, around a handler that returns at once."""
    response = web.json_response({"ok": True}, status=201)

    async def handler(_request: web.Request) -> web.StreamResponse:
        return response

    app = web.Application()
    app.router.add_post("/orders", handler)
    request = asyncio.run(routed_request(app))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # contrib's instrumentor subclasses web.Application, with a warning
        contrib_server.AioHttpServerInstrumentor().instrument(tracer_provider=providers["contrib"])
    contrib = contrib_server.create_aiohttp_middleware(tracer_provider=providers["contrib"])
    lean = LeanServer(
        providers["lean"].get_tracer(contrib_server.__name__), metrics.get_meter("bench-parts.lean")
    ).middleware()

    def call(middleware: Any) -> Part:
        async def part() -> None:
            await middleware(request, handler)

        return part

    return {"contrib": call(contrib), "lean": call(lean)}


def client_parts(providers: dict[str, TracerProvider], meters: MeterProvider) -> dict[str, Part]:
    """One client call's callbacks (start, then end), contrib's trace config and the lean one."""
    url = URL("http://127.0.0.1:8002/payments")
    response = types.SimpleNamespace(status=200, headers=CIMultiDict({"Content-Type": "application/json"}))
    contrib = contrib_client.create_trace_config(
        tracer_provider=providers["contrib"], meter_provider=meters, sem_conv_opt_in_mode=_StabilityMode.HTTP
    )
    lean = LeanClient(providers["lean"], meters).trace_config()

    def call(config: aiohttp.TraceConfig) -> Part:
        async def part() -> None:
            # Each call in the context of a dropped server span, as order-service calls payment-service.
            parent = trace.NonRecordingSpan(
                trace.SpanContext(1, 2, is_remote=False, trace_state=trace.TraceState([("ot", "rv:5a1b2c3d4e5f60")]))
            )
            with trace.use_span(parent):
                headers: CIMultiDict[str] = CIMultiDict({"Content-Type": "application/json"})
                ctx = config.trace_config_ctx()
                start = aiohttp.TraceRequestStartParams("POST", url, headers)
                for callback in config.on_request_start:
                    await callback(None, ctx, start)  # type: ignore[arg-type]  # no session is used
                end = aiohttp.TraceRequestEndParams("POST", url, headers, response)  # type: ignore[arg-type]
                for end_callback in config.on_request_end:
                    await end_callback(None, ctx, end)  # type: ignore[arg-type]

        return part

    return {"contrib": call(contrib), "lean": call(lean)}


def sampler_parts() -> dict[str, Part]:
    parent = trace.set_span_in_context(
        trace.NonRecordingSpan(
            trace.SpanContext(1, 2, is_remote=True, trace_state=trace.TraceState([("ot", "rv:5a1b2c3d4e5f60")]))
        )
    )

    def call(sampler: ShopSampler) -> Part:
        async def part() -> None:
            sampler.should_sample(parent, 1, "POST /orders")

        return part

    return {
        "contrib": call(ShopSampler(0.1, decides=False, fast_path=False)),
        "lean": call(ShopSampler(0.1, decides=False, fast_path=True)),
    }


def formatter_parts() -> dict[str, Part]:
    """One JSON stdout line, python-json-logger's way and the lean formatter's."""
    record = logging.LogRecord("shop.orders.handlers", logging.INFO, __file__, 1, "order paid", None, None)
    record.__dict__.update({"order.id": "0af7651916cd43dd8448eb211c80319c", "order.total": 25.0})

    def call(lean: bool) -> Part:
        formatter = json_log_formatter("order-service", lean)

        async def part() -> None:
            formatter.format(record)

        return part

    return {"contrib": call(False), "lean": call(True)}


def sdk_parts(meters: MeterProvider) -> dict[str, Part]:
    """What the lean path keeps as it is: one histogram record, one counter add."""
    meter = meters.get_meter("bench-parts")
    histogram = meter.create_histogram("bench.parts.duration", unit="s")
    counter = meter.create_counter("bench.parts.count")
    attributes: dict[str, AttributeValue] = {
        "http.request.method": "POST",
        "http.route": "/orders",
        "http.response.status_code": 201,
    }

    async def record_histogram() -> None:
        histogram.record(0.004, attributes)

    async def add_counter() -> None:
        counter.add(1, attributes)

    return {"SDK histogram record": record_histogram, "SDK counter add": add_counter}


def main() -> int:
    parser = argparse.ArgumentParser(prog="make bench-parts", description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=20_000, help="calls per round (default 20,000)")
    parser.add_argument("--repeat", type=int, default=5, help="rounds, reported as medians (default 5)")
    args = parser.parse_args()
    # The services' defaults (the stable HTTP conventions); metrics kept in memory, never exported.
    for name, value in OTEL_ENV_DEFAULTS.items():
        os.environ.setdefault(name, value)
    meters = MeterProvider(metric_readers=[InMemoryMetricReader()])
    metrics.set_meter_provider(meters)
    providers = {
        side: TracerProvider(sampler=ShopSampler(0.1, decides=False, fast_path=side == "lean"))
        for side in ("contrib", "lean")
    }
    compared = {
        "aiohttp server middleware (with its span's sampler)": server_parts(providers),
        "aiohttp client, one call (with its span's sampler)": client_parts(providers, meters),
        "the follower sampler, child of a dropped trace": sampler_parts(),
        "the JSON stdout line (python-json-logger / lean)": formatter_parts(),
    }
    width = max(len(name) for name in compared)
    print(f"µs per call, trace not kept; medians of {args.repeat} rounds of {args.calls:,} calls")
    print(f"{'part':{width}}  {'contrib':>8}  {'lean':>8}  {'saved':>8}")
    for name, sides in compared.items():
        contrib, lean = (per_call_us(sides[side], args.calls, args.repeat) for side in ("contrib", "lean"))
        print(f"{name:{width}}  {contrib:8.1f}  {lean:8.1f}  {contrib - lean:8.1f}")
    for name, part in sdk_parts(meters).items():
        print(f"{name:{width}}  {per_call_us(part, args.calls, args.repeat):8.1f}  {'(same)':>8}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
