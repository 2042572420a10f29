"""What the gateway trusts from the outside world.

Inbound ``traceparent`` is honoured, so a caller's own trace continues through the
shop. Inbound ``baggage`` is dropped: it would otherwise flow to every service and
could steer internal behaviour. Fault headers become baggage only when the operator
sets GATEWAY_ALLOW_FAULT_HEADERS=true and the gateway is on loopback, or the second switch is
set too (``GatewaySettings.honours_fault_headers``).
"""

from __future__ import annotations

from aiohttp import web
from aiohttp.typedefs import Handler
from opentelemetry import baggage, context

from shop.common import faults
from shop.common.errors import ApiError
from shop.common.ops import trace_exemplar
from shop.gateway.keys import METRICS, SETTINGS

DELAY_HEADER = "X-Fault-Payment-Delay-Ms"
FAIL_HEADER = "X-Fault-Payment-Fail"


def _fault_baggage(request: web.Request) -> dict[str, str]:
    entries: dict[str, str] = {}
    delay = request.headers.get(DELAY_HEADER)
    if delay is not None:
        # ASCII only: str.isdigit() is also true for "²", which int() refuses, and for other scripts' digits.
        if not (delay.isascii() and delay.isdigit()) or int(delay) > faults.MAX_DELAY_MS:
            raise ApiError(
                422,
                "invalid_fault_header",
                f"{DELAY_HEADER} must be a whole number of milliseconds from 0 to {faults.MAX_DELAY_MS}.",
                details={"fields": {DELAY_HEADER: "invalid"}},
            )
        entries[faults.DELAY_MS] = str(int(delay))
    fail = request.headers.get(FAIL_HEADER)
    if fail is not None:
        if fail.lower() not in {"true", "false"}:
            raise ApiError(
                422,
                "invalid_fault_header",
                f"{FAIL_HEADER} must be true or false.",
                details={"fields": {FAIL_HEADER: "invalid"}},
            )
        entries[faults.FAIL] = fail.lower()
    return entries


@web.middleware
async def edge_context_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    ctx = baggage.clear()
    if DELAY_HEADER in request.headers or FAIL_HEADER in request.headers:
        if request.app[SETTINGS].honours_fault_headers:
            for key, value in _fault_baggage(request).items():
                ctx = baggage.set_baggage(key, value, ctx)
            request.app[METRICS].fault_headers.labels(outcome="applied").inc(exemplar=trace_exemplar())
        else:
            request.app[METRICS].fault_headers.labels(outcome="ignored").inc(exemplar=trace_exemplar())
    token = context.attach(ctx)
    try:
        return await handler(request)
    finally:
        context.detach(token)
