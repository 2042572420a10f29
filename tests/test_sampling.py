"""Head sampling: one decision per trace at the edge, followed downstream, and no caller can steer it.

Counts that sampling makes random are asserted within 4 standard deviations of the binomial.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator

import pytest
from opentelemetry import context, trace
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import Decision, SamplingResult
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags, TraceState

from shop.sampling import ShopSampler, encode_threshold, threshold
from shop.telemetry import SampledLoggingHandler

pytestmark = pytest.mark.unit

TRIALS = 4000
P = 0.25
HOSTILE_STATES = [
    TraceState([("ot", "th:0;rv:ffffffffffffff")]),  # "always sampled, count once": would deflate counts
    TraceState([("ot", "th:fffffffffffff;rv:ffffffffffffff")]),  # a tiny p: would inflate every count
    TraceState([("vendor", "keep-me"), ("ot", "rv:ffffffffffffff")]),  # a chosen randomness
]


def kept(result: SamplingResult) -> bool:
    return result.decision is Decision.RECORD_AND_SAMPLE


def within_binomial(count: int, trials: int, p: float) -> bool:
    return abs(count - trials * p) <= 4 * math.sqrt(trials * p * (1 - p))


def remote_parent(trace_id: int, sampled: bool, state: TraceState | None = None) -> context.Context:
    span_context = SpanContext(
        trace_id, 0x1111, is_remote=True, trace_flags=TraceFlags(int(sampled)), trace_state=state or TraceState()
    )
    return trace.set_span_in_context(NonRecordingSpan(span_context))


def ot_entry(state: TraceState | None) -> dict[str, str]:
    entry = (state or TraceState()).get("ot", "")
    return dict(member.split(":", 1) for member in entry.split(";") if member)


@pytest.fixture
def spans() -> Iterator[tuple[trace.Tracer, InMemorySpanExporter, TracerProvider]]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(sampler=ShopSampler(P, decides=False))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield provider.get_tracer("test"), exporter, provider
    provider.shutdown()


def test_the_threshold_is_otep_235s() -> None:
    assert encode_threshold(threshold(1.0)) == "0"
    assert encode_threshold(threshold(0.25)) == "c"
    assert encode_threshold(threshold(0.5)) == "8"


@pytest.mark.parametrize("state", [None, *HOSTILE_STATES])
@pytest.mark.parametrize("inbound_sampled", [True, False])
def test_the_edge_decides_with_its_own_randomness_whatever_the_caller_sends(
    state: TraceState | None, inbound_sampled: bool
) -> None:
    edge = ShopSampler(P, decides=True)
    results = [
        # A trace ID whose low 56 bits are all ones: a caller's attempt to be sampled by the ID.
        edge.should_sample(remote_parent(n << 64 | 0x00FFFFFFFFFFFFFF, inbound_sampled, state), n, "POST /api/order")
        for n in range(1, TRIALS + 1)
    ]
    sampled = [r for r in results if kept(r)]
    assert within_binomial(len(sampled), TRIALS, P), len(sampled)
    # Every kept trace says p = 0.25 (th:c), so the Collector counts each 4 times, never more or less.
    assert {ot_entry(r.trace_state)["th"] for r in sampled} == {"c"}
    randomness = {ot_entry(r.trace_state)["rv"] for r in results}
    assert len(randomness) == TRIALS  # drawn anew each time, not taken from the caller
    if state is not None and "vendor" in state:
        assert all(r.trace_state is not None and r.trace_state.get("vendor") == "keep-me" for r in results)


def test_a_full_tracestate_still_gets_the_edges_entry() -> None:
    full = TraceState([(f"v{n}", "x") for n in range(32)])
    result = ShopSampler(1.0, decides=True).should_sample(remote_parent(7, False, full), 7, "POST /api/order")
    assert result.trace_state is not None
    assert ot_entry(result.trace_state)["th"] == "0"
    assert len(result.trace_state) == 32


@pytest.mark.parametrize("allowed", [True, False])
def test_forced_sampling_only_when_the_operator_allows_it_and_counted_once(allowed: bool) -> None:
    edge = ShopSampler(P, decides=True, allow_forced=allowed)
    results = [edge.should_sample(remote_parent(n, True), n, "POST /api/order") for n in range(1, TRIALS + 1)]
    sampled = [r for r in results if kept(r)]
    if allowed:
        assert len(sampled) == TRIALS
        assert {ot_entry(r.trace_state)["th"] for r in sampled} == {"0"}  # adjusted count 1: exact
    else:
        assert within_binomial(len(sampled), TRIALS, P), len(sampled)
    unsampled_caller = [edge.should_sample(remote_parent(n, False), n, "x") for n in range(1, TRIALS + 1)]
    assert within_binomial(sum(kept(r) for r in unsampled_caller), TRIALS, P)


def test_downstream_services_follow_the_edge_and_keep_its_threshold(
    spans: tuple[trace.Tracer, InMemorySpanExporter, TracerProvider],
) -> None:
    """A remote parent decided at the edge; its local children must carry th and rv on to the next
    service. This fails without the workaround for opentelemetry-sdk 1.45.1 not passing trace_state."""
    tracer, exporter, _ = spans
    edge = ShopSampler(P, decides=True)
    decided = {True: 0, False: 0}
    for n in range(1, 400):
        decision = edge.should_sample(None, n, "POST /api/order")
        parent = remote_parent(n, kept(decision), decision.trace_state)
        with tracer.start_as_current_span("POST /orders", context=parent) as server:
            with tracer.start_as_current_span("POST") as client:
                assert client.get_span_context().trace_flags.sampled == kept(decision)
                if kept(decision):
                    assert ot_entry(client.get_span_context().trace_state) == ot_entry(decision.trace_state)
            assert server.get_span_context().trace_flags.sampled == kept(decision)
        decided[kept(decision)] += 1
    assert decided[True]
    assert decided[False]
    assert len(exporter.get_finished_spans()) == 2 * decided[True]


def test_attributes_given_at_span_start_are_kept(
    spans: tuple[trace.Tracer, InMemorySpanExporter, TracerProvider],
) -> None:
    """opentelemetry-sdk 1.45.1's composite sampler returns no attributes, and the span takes its
    attributes from the sampler: without the wrapper every start attribute would be lost."""
    tracer, exporter, _ = spans
    parent = remote_parent(42, True, TraceState([("ot", "th:0;rv:00000000000001")]))
    with tracer.start_as_current_span("processor.authorize", context=parent, attributes={"order.id": "o-1"}):
        pass
    [span] = exporter.get_finished_spans()
    assert span.attributes is not None
    assert span.attributes["order.id"] == "o-1"


def emitted(level: int, sampled: bool | None) -> list[tuple[str, int]]:
    """What the OTLP log handler exports for one record: (body, trace_id) pairs."""
    exporter = InMemoryLogRecordExporter()  # type: ignore[no-untyped-call]  # untyped upstream
    provider = LoggerProvider(shutdown_on_exit=False)
    provider.add_log_record_processor(SimpleLogRecordProcessor(exporter))
    logger = logging.Logger("shop.test")
    logger.addHandler(SampledLoggingHandler(logger_provider=provider))
    token = None
    if sampled is not None:
        span_context = SpanContext(0xABC, 0xDEF, is_remote=False, trace_flags=TraceFlags(int(sampled)))
        token = context.attach(trace.set_span_in_context(NonRecordingSpan(span_context)))
    try:
        logger.log(level, "a line")
    finally:
        if token is not None:
            context.detach(token)
    return [(str(r.log_record.body), r.log_record.trace_id or 0) for r in exporter.get_finished_logs()]


def test_logs_of_kept_traces_link_to_them() -> None:
    assert emitted(logging.INFO, sampled=True) == [("a line", 0xABC)]


def test_info_logs_of_dropped_traces_are_not_exported() -> None:
    assert emitted(logging.INFO, sampled=False) == []


def test_warnings_of_dropped_traces_are_exported_without_a_trace_link() -> None:
    assert emitted(logging.WARNING, sampled=False) == [("a line", 0)]
    assert emitted(logging.ERROR, sampled=False) == [("a line", 0)]


def test_logs_outside_any_request_are_exported() -> None:
    assert emitted(logging.INFO, sampled=None) == [("a line", 0)]
