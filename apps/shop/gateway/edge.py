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
DB_DELAY_HEADER = "X-Fault-DB-Delay-Ms"
FAULT_HEADERS = (DELAY_HEADER, FAIL_HEADER, DB_DELAY_HEADER)


def _milliseconds(request: web.Request, header: str, maximum: int) -> str | None:
    raw = request.headers.get(header)
    if raw is None:
        return None
    # ASCII only: str.isdigit() is also true for "²", which int() refuses, and for other scripts' digits.
    if not (raw.isascii() and raw.isdigit()) or int(raw) > maximum:
        raise ApiError(
            422,
            "invalid_fault_header",
            f"{header} must be a whole number of milliseconds from 0 to {maximum}.",
            details={"fields": {header: "invalid"}},
        )
    return str(int(raw))


def _fault_baggage(request: web.Request) -> dict[str, str]:
    entries: dict[str, str] = {}
    delay = _milliseconds(request, DELAY_HEADER, faults.MAX_DELAY_MS)
    if delay is not None:
        entries[faults.DELAY_MS] = delay
    db_delay = _milliseconds(request, DB_DELAY_HEADER, faults.MAX_DB_DELAY_MS)
    if db_delay is not None:
        entries[faults.DB_DELAY_MS] = db_delay
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
    if any(header in request.headers for header in FAULT_HEADERS):
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
