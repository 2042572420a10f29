"""Head sampling that keeps every figure true: one decision per trace, made at the edge.

The gateway decides for each trace that enters the shop, with probability ``ratio``, from a random value
it draws itself; order-service and payment-service follow their parent. The decision travels in W3C
``tracestate`` as OpenTelemetry's consistent-probability entry (OTEP 235, ``ot=th:…;rv:…``): ``th`` is
the threshold a trace's randomness ``rv`` must reach. The Collector's span_metrics connector reads ``th``
and counts each kept span 1/p times, so request rates and error ratios stay right at p < 1.

A caller steers none of it: the gateway drops an inbound ``ot`` entry (a forged ``th`` would inflate
every extrapolated count; a chosen ``rv`` would force sampling) and ignores the inbound sampled flag.
The one exception is the operator's switch ``GATEWAY_ALLOW_FORCED_SAMPLING``: then a request whose
``traceparent`` says "sampled" is kept with threshold 0, which counts it exactly once.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Sequence

from opentelemetry.context import Context
from opentelemetry.sdk.trace._sampling_experimental import (
    composable_parent_threshold,
    composable_traceid_ratio_based,
    composite_sampler,
)
from opentelemetry.sdk.trace.sampling import Decision, Sampler, SamplingResult
from opentelemetry.trace import Link, SpanContext, SpanKind, TraceState, get_current_span
from opentelemetry.util.types import Attributes

OT_KEY = "ot"  # OpenTelemetry's own tracestate entry
RANDOM_BITS = 56
MAX_THRESHOLD = 1 << RANDOM_BITS  # th for p = 0; th = 0 is p = 1
MAX_TRACESTATE_ENTRIES = 32  # W3C; the SDK's TraceState.add refuses a 33rd
# The entry the gateway writes for a trace it drops: randomness and no threshold.
DROPPED_ENTRY = re.compile(r"rv:[0-9a-f]{14}")


def threshold(ratio: float) -> int:
    """OTEP 235: a span is kept when its 56-bit randomness is at least this."""
    return MAX_THRESHOLD - round(ratio * MAX_THRESHOLD)


def encode_threshold(value: int) -> str:
    """``th`` as tracestate writes it: 14 hex digits with trailing zeros dropped ("0" for p = 1)."""
    return f"{value:014x}".rstrip("0") or "0"


class ShopSampler(Sampler):
    """Decides at the edge (``decides=True``: a span without a local parent), follows the parent elsewhere."""

    def __init__(self, ratio: float, *, decides: bool, allow_forced: bool = False, fast_path: bool = True) -> None:
        if not 0 < ratio <= 1:
            raise ValueError(f"the sampling ratio must be in (0, 1], not {ratio}")
        self.ratio = ratio
        self._threshold = threshold(ratio)
        self._decides = decides
        self._allow_forced = allow_forced
        self._fast_path = fast_path
        # The SDK's consistent follower. Its root branch decides only where this service does not
        # decide and a span has no parent at all (an internal service called directly), from the
        # trace ID's low 56 bits, as the SDK's ratio sampler does.
        self._follow = composite_sampler(composable_parent_threshold(composable_traceid_ratio_based(ratio)))

    def should_sample(
        self,
        parent_context: Context | None,
        trace_id: int,
        name: str,
        kind: SpanKind | None = None,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
        trace_state: TraceState | None = None,
    ) -> SamplingResult:
        parent = get_current_span(parent_context).get_span_context()
        if self._decides and (not parent.is_valid or parent.is_remote):
            return self._decide(parent.trace_state if parent.is_valid else None, self._forced(parent), attributes)
        if trace_state is None and parent.is_valid:
            # opentelemetry-sdk 1.45.1: Tracer.start_span calls should_sample without trace_state, and
            # the composable samplers read the parent's threshold only from that argument, so without
            # this every child would lose ot=th and the next service would count it once, not 1/p times.
            trace_state = parent.trace_state
            if self._fast_path and not parent.trace_flags.sampled:
                dropped = self._child_of_dropped(trace_state)
                if dropped is not None:
                    return SamplingResult(Decision.DROP, {**(attributes or {})}, dropped or None)
        result = self._follow.should_sample(parent_context, trace_id, name, kind, attributes, links, trace_state)
        # opentelemetry-sdk 1.45.1 again: the span takes its attributes from the sampling result, and
        # the composite sampler returns only its own (none), which would drop every attribute given at
        # span start (http.request.method, order.id, ...). Keep them, as the SDK's other samplers do.
        kept = {**(attributes or {}), **dict(result.attributes or {})}
        return SamplingResult(result.decision, kept, result.trace_state)

    @staticmethod
    def _child_of_dropped(state: TraceState) -> TraceState | None:
        """The composite sampler's tracestate for a child of a parent that was not sampled, where it is this
        one as it stands (empty for none), else None (then the composite sampler runs).

        For such a parent with no ``th``, the composite sampler drops the span and rewrites ``ot`` with what
        it parsed and moved to the front (``TraceState.update``): the same entry when ``ot`` is first and as
        the gateway writes it for a dropped trace, and nothing at all when there is no ``ot``. It costs about
        as much as the rest of the span's start; most spans at p < 1 are such children.
        """
        entry = state.get(OT_KEY)
        if entry is None:
            return state
        if DROPPED_ENTRY.fullmatch(entry) and next(iter(state)) == OT_KEY:
            return state
        return None

    def _forced(self, parent: SpanContext) -> bool:
        return self._allow_forced and parent.is_valid and parent.trace_flags.sampled

    def _decide(self, inbound: TraceState | None, forced: bool, attributes: Attributes) -> SamplingResult:
        # Our own randomness, whatever the caller sent or the trace ID's bits happen to be.
        randomness = secrets.randbits(RANDOM_BITS)
        limit = 0 if forced else self._threshold
        sampled = randomness >= limit
        entry = f"th:{encode_threshold(limit)};rv:{randomness:014x}" if sampled else f"rv:{randomness:014x}"
        # The caller's other vendors' entries go on; ours goes first, room made for it if need be.
        others = [(key, value) for key, value in (inbound or {}).items() if key != OT_KEY]
        state = TraceState([(OT_KEY, entry), *others[: MAX_TRACESTATE_ENTRIES - 1]])
        return SamplingResult(Decision.RECORD_AND_SAMPLE if sampled else Decision.DROP, attributes, state)

    def get_description(self) -> str:
        return f"ShopSampler{{ratio={self.ratio}, decides={self._decides}, allow_forced={self._allow_forced}}}"
