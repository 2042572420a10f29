"""The lean instrumentation path (shop.lean) emits what contrib's emits: the differential test, the proof that its
comparison can fail, the sampler's fast path against the composite sampler, the formatter, bounded caches, the
way back; and the stock zero-code setup that make bench measures beside ours."""

from __future__ import annotations

import copy
import json
import logging
import os
import re
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry import trace
from opentelemetry.sdk.trace.sampling import SamplingResult
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags, TraceState

from bench import OPENTELEMETRY_INSTRUMENT, SPANS_PER_ORDER, stock_env
from conftest import Served, ServeFn
from harness import ROOT
from harness.orders import order_body
from harness.otlp_sink import OtlpSink
from harness.processes import SERVICE_NAMES, Shop, http
from shop.lean import MAX_CLIENT_ENDPOINTS, LeanClientInstrumentor, LeanServerInstrumentor
from shop.orders.app import create_app as create_orders
from shop.sampling import ShopSampler
from shop.settings import OrdersSettings
from shop.telemetry import json_log_formatter

# Order and payment IDs (UUIDs, with or without dashes), trace and span IDs (as traceresponse writes them).
RANDOM_ID = re.compile(r"\b([0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}|[0-9a-f]{16})\b")
Output = dict[str, Any]


def emitted(mode: str, scenario: str, tmp_path: Path) -> Output:
    """One side's spans, metrics and log records (tests/lean_diff.py in a process of its own)."""
    output = tmp_path / f"{mode}-{scenario}.json"
    completed = subprocess.run(
        [sys.executable, str(ROOT / "tests" / "lean_diff.py"), mode, scenario, str(output)],
        check=True,
        timeout=120,
        capture_output=True,
        text=True,
        env=subprocess_env(),
    )
    # And the JSON lines the services wrote on stdout.
    return {**json.loads(output.read_text()), "lines": [json.loads(line) for line in completed.stdout.splitlines()]}


def subprocess_env() -> dict[str, str]:
    """This environment without the OTEL_* variables a test may have set (each process sets its own), and with
    the services and the harness importable."""
    kept = {key: value for key, value in os.environ.items() if not key.startswith("OTEL_")}
    return {**kept, "PYTHONPATH": f"{ROOT / 'apps'}:{ROOT}"}


def normalised(output: Output) -> dict[str, list[str]]:
    """Each signal as a sorted list of canonical records: span IDs become the path of span names from the
    trace's root, and ephemeral ports and order IDs placeholders; nothing else changes."""
    ports = {str(port) for port in output["ports"]}

    def clean(value: Any) -> Any:
        if isinstance(value, dict):
            return {key: clean(item) for key, item in value.items()}
        if isinstance(value, list):
            return [clean(item) for item in value]
        if isinstance(value, int) and not isinstance(value, bool) and str(value) in ports:
            return "<port>"
        if isinstance(value, str):
            value = RANDOM_ID.sub("<id>", value)
            return re.sub(r"(?<=[:\s])(\d+)", lambda m: "<port>" if m.group(1) in ports else m.group(1), value)
        return value

    spans = {span["span"]: span for span in output["spans"]}

    def label(span_id: str | None) -> str | None:
        if span_id is None:
            return None
        span = spans.get(span_id)
        if span is None:
            return f"remote {span_id}"  # the caller's, set by the driver: the same on both sides
        return f"{label(span['parent'])} > {span['kind']} {span['name']}"

    canonical_spans = [
        {**clean({k: v for k, v in span.items() if k not in ("span", "parent")}), "at": label(span["span"])}
        for span in output["spans"]
    ]
    canonical_logs = [
        {**clean({k: v for k, v in r.items() if k != "span"}), "at": label(r["span"])} for r in output["logs"]
    ]
    return {
        "spans": sorted(json.dumps(span, sort_keys=True) for span in canonical_spans),
        "metrics": sorted(json.dumps(clean(point), sort_keys=True) for point in output["metrics"]),
        "logs": sorted(json.dumps(record, sort_keys=True) for record in canonical_logs),
        "lines": sorted(json.dumps(clean({**line, "timestamp": "<time>"})) for line in output["lines"]),
    }


def differences(lean: Output, contrib: Output) -> list[str]:
    """What one side emitted and the other did not, signal by signal; empty when they are the same."""
    found = []
    for signal, records in normalised(lean).items():
        theirs = normalised(contrib)[signal]
        only_lean = sorted(set(records) - set(theirs))
        only_contrib = sorted(set(theirs) - set(records))
        if only_lean or only_contrib or len(records) != len(theirs):
            found.append(f"{signal}: lean only {only_lean[:3]}, contrib only {only_contrib[:3]}")
    return found


@pytest.fixture(scope="module", params=["plain", "headers"])
def both_sides(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[Output, Output]:
    workdir = tmp_path_factory.mktemp(f"lean-{request.param}")
    return emitted("lean", request.param, workdir), emitted("contrib", request.param, workdir)


@pytest.mark.processes
def test_lean_emits_what_contrib_emits(both_sides: tuple[Output, Output]) -> None:
    lean, contrib = both_sides
    # The driver's requests reached every branch worth comparing.
    spans = lean["spans"]
    assert {s["attributes"].get("http.response.status_code") for s in spans} >= {201, 200, 402, 404, 405, 422, 400}
    assert any(s["attributes"].get("http.request.method") == "_OTHER" for s in spans)
    assert any(s["attributes"].get("error.type") == "TimeoutError" for s in spans)
    assert any(s["attributes"].get("error.type") == "ClientConnectorError" for s in spans)
    assert any(s["attributes"].get("http.route") == "" for s in spans)
    assert not any(s["attributes"].get("url.path") in ("/healthz", "/metrics") for s in spans)
    dropped = [m for m in lean["metrics"] if m["name"] == "http.server.request.duration"]
    assert sum(m["value"] for m in dropped) > len({s["trace"] for s in spans if s["kind"] == "SERVER"})
    assert differences(lean, contrib) == []


def mutations(output: Output) -> Iterator[tuple[str, Output]]:
    """The lean side with one thing changed each: a span attribute, a metric attribute value, the ot=th entry."""
    changed = copy.deepcopy(output)
    span = next(s for s in changed["spans"] if "http.route" in s["attributes"])
    span["attributes"]["http.route"] += "x"
    yield "a span attribute", changed
    changed = copy.deepcopy(output)
    point = next(m for m in changed["metrics"] if m["name"] == "http.server.request.duration")
    point["attributes"]["http.request.method"] = "PATCH"
    yield "a metric attribute value", changed
    changed = copy.deepcopy(output)
    span = next(s for s in changed["spans"] if s["trace_state"])
    span["trace_state"] = [["ot", "th:8;rv:" + dict(span["trace_state"])["ot"].split("rv:")[1]]]
    yield "the ot=th entry", changed


@pytest.mark.processes
def test_the_comparison_fails_on_each_mutation(both_sides: tuple[Output, Output]) -> None:
    lean, contrib = both_sides
    for what, mutated in mutations(lean):
        assert differences(mutated, contrib), f"changing {what} went unnoticed"


HEX14 = st.integers(0, (1 << 56) - 1).map(lambda n: f"{n:014x}")
OT_ENTRIES = st.one_of(
    st.builds(lambda rv: f"rv:{rv}", HEX14),  # what the gateway writes for a trace it drops
    st.builds(lambda th, rv: f"th:{th.rstrip('0') or '0'};rv:{rv}", HEX14, HEX14),
    st.builds(lambda rv: f"rv:{rv.upper()}", HEX14),
    st.builds(lambda rv, x: f"rv:{rv};x:{x}", HEX14, st.sampled_from(["1", "abc"])),
    st.sampled_from(["rv:123", "th:", "th:zz", "rv:00000000000000", "junk"]),
)


@st.composite
def parents(draw: st.DrawFn) -> tuple[SpanContext, bool]:
    """A parent span context of any kind the shop can meet, and whether the sampler decides at the edge."""
    entries = draw(st.lists(st.tuples(st.sampled_from(["vendor", "acme", "x"]), st.just("v")), max_size=3))
    ot = draw(st.none() | OT_ENTRIES)
    if ot is not None:
        entries.insert(draw(st.integers(0, len(entries))), ("ot", ot))
    context = SpanContext(
        trace_id=draw(st.integers(1, (1 << 128) - 1)),
        span_id=draw(st.integers(1, (1 << 64) - 1)),
        is_remote=draw(st.booleans()),
        trace_flags=TraceFlags(draw(st.sampled_from([TraceFlags.DEFAULT, TraceFlags.SAMPLED]))),
        trace_state=TraceState(list(dict(entries).items())),
    )
    return context, draw(st.booleans())


def sampling(sampler: ShopSampler, parent: SpanContext) -> tuple[Any, ...]:
    result: SamplingResult = sampler.should_sample(
        trace.set_span_in_context(NonRecordingSpan(parent)),
        parent.trace_id,
        "GET /x",
        attributes={"http.request.method": "GET"},
    )
    state = None if result.trace_state is None else list(result.trace_state.items())
    return result.decision, dict(result.attributes), state


@pytest.mark.unit
@settings(max_examples=3000, deadline=None)
@given(parents(), st.sampled_from([1.0, 0.5, 0.1, 0.001]))
def test_the_sampler_fast_path_decides_as_the_composite_sampler(parent: tuple[SpanContext, bool], ratio: float) -> None:
    context, decides = parent
    if decides and context.is_remote:
        return  # the edge's own decision: random, and no fast path there
    fast = ShopSampler(ratio, decides=decides, fast_path=True)
    composite = ShopSampler(ratio, decides=decides, fast_path=False)
    assert sampling(fast, context) == sampling(composite, context)


@pytest.mark.inprocess
async def test_the_caches_stay_bounded_over_many_order_ids_and_paths(serve: ServeFn, tmp_path: Path) -> None:
    orders: Served = await serve(
        create_orders(
            OrdersSettings(database_url=f"sqlite:///{tmp_path / 'orders.sqlite3'}", payments_url="http://127.0.0.1:9")
        )
    )
    server, client = LeanServerInstrumentor().server, LeanClientInstrumentor().client
    # This process's instrumentation serves every in-process test: count what this one adds.
    routes_before, endpoints_before = set(server.routes), set(client.endpoints)
    statuses = set()
    async with aiohttp.ClientSession() as session:  # instrumented: the lean client's cache is exercised too
        for n in range(11_000):  # 10,000 order IDs, then 1,000 paths no route matches
            path = f"/orders/{uuid.uuid4().hex}" if n < 10_000 else f"/{uuid.uuid4().hex}/{n}"
            async with session.get(orders.url + path) as response:
                statuses.add(response.status)
        for method in ("PURGE", "MKCOL", "LOCK", "PROPFIND", "COPY"):
            async with session.request(method, orders.url + "/orders") as response:
                statuses.add(response.status)
    assert statuses == {404, 405}
    # Per route template and standard method (no route: ""); methods outside the standard ones never.
    assert set(server.routes) - routes_before <= {("/orders/{order_id}", "GET"), ("", "GET")}
    # Per method and endpoint: this server's port, GET (the other methods are not standard).
    assert len(set(client.endpoints) - endpoints_before) <= 1
    assert len(client.endpoints) <= MAX_CLIENT_ENDPOINTS


START_UP = """
import sys
import shop.lean
from aiohttp import web
from shop.common.startup import prepare_process
from shop.settings import TelemetrySettings, read_env
shop.lean.VERIFIED_CONTRIB = sys.argv[1]
prepare_process(read_env(TelemetrySettings("way-back"), {"TELEMETRY_INSTRUMENTATION": sys.argv[2]}))
print(web.Application.__module__)
"""


def start_up(verified: str, instrumentation: str) -> tuple[str, list[dict[str, Any]]]:
    """Which middleware a process installs (the module of the web.Application it leaves), and its log lines."""
    completed = subprocess.run(
        [sys.executable, "-c", START_UP, verified, instrumentation],
        check=True,
        timeout=60,
        capture_output=True,
        text=True,
        env={**subprocess_env(), "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9"},
    )
    *lines, module = completed.stdout.splitlines()
    return module, [json.loads(line) for line in lines]


@pytest.mark.processes
def test_the_way_back_to_contrib() -> None:
    from shop.lean import VERIFIED_CONTRIB

    # As shipped: the lean path, without a word.
    assert start_up(VERIFIED_CONTRIB, "lean") == ("shop.lean", [])
    # The setting: contrib's instrumentation as it is.
    assert start_up(VERIFIED_CONTRIB, "contrib") == ("opentelemetry.instrumentation.aiohttp_server", [])
    # A contrib release the differential test did not verify: contrib's, and one warning that says why.
    module, lines = start_up("0.99b0", "lean")
    assert module == "opentelemetry.instrumentation.aiohttp_server"
    assert [(line["level"], line["message"]) for line in lines] == [
        ("WARNING", "the lean instrumentation path is off; contrib's instrumentation runs instead")
    ]
    assert "verified against 0.99b0 only" in lines[0]["reason"]


def log_records() -> Iterator[logging.LogRecord]:
    """Records of every shape the services log: extras of several types, a dict message, an exception."""
    yield logging.LogRecord("shop.orders", logging.INFO, __file__, 1, "order paid", None, None)
    record = logging.LogRecord("shop.gateway", logging.WARNING, __file__, 2, "café %s", ("naïve",), None)
    record.__dict__.update(
        {"order.total": Decimal("25.10"), "at": datetime(2026, 1, 2, tzinfo=UTC), "n": [1, {"k": None}]}
    )
    yield record
    yield logging.LogRecord("shop.payments", logging.INFO, __file__, 3, {"event": "dict", "value": 1.5}, None, None)
    try:
        raise ValueError("broken")
    except ValueError:
        yield logging.LogRecord("shop.orders", logging.ERROR, __file__, 4, "failed", None, sys.exc_info())


@pytest.mark.unit
def test_the_lean_formatter_writes_the_same_lines() -> None:
    for record in log_records():
        stock, lean = (json_log_formatter("order-service", lean).format(record) for lean in (False, True))
        assert lean == stock


@pytest.mark.processes
def test_the_stock_setup_is_opentelemetry_instrument_alone(tmp_path: Path) -> None:
    """make bench's stock columns: the services under `opentelemetry-instrument` with our providers off."""
    with OtlpSink() as sink:
        shop = Shop(
            tmp_path, [str(OPENTELEMETRY_INSTRUMENT)], OTEL_EXPORTER_OTLP_ENDPOINT=sink.endpoint, **stock_env(None)
        )
        shop.per_service = {module: {"OTEL_SERVICE_NAME": name} for module, name in SERVICE_NAMES.items()}
        try:
            shop.start_all()
            status, _, _ = http("POST", f"{shop.gateway}/api/order", order_body())
        finally:
            shop.stop_all()  # the distro's providers flush at exit
            shop.kill_all()
        assert status == 201
        spans = sink.spans()
        log_records = sink.log_records()
    assert {resource["service.name"] for resource, _ in spans} == set(SERVICE_NAMES.values())
    assert len(spans) == SPANS_PER_ORDER
    assert len({span.trace_id for _, span in spans}) == 1
    assert {span.trace_state for _, span in spans} == {""}  # the SDK's own sampler: no OTEP 235 entry
    # Log records exported by the logging instrumentation's handler on the root logger, from all three.
    assert {resource["service.name"] for resource, _ in log_records} == set(SERVICE_NAMES.values())
    assert "order answered" in {record.body.string_value for _, record in log_records}
    # Our JSON lines on stdout stay.
    assert all(any(line.get("message") for line in service.log_lines()) for service in shop.running.values())
