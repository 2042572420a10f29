"""Baggage from the caller, made current for internal services.

The aiohttp server instrumentation (0.66b1) parents its span on the inbound
``traceparent`` but does not make the inbound ``baggage`` part of the active
context, so without this middleware baggage would stop at the first hop.
Only internal services use it; the gateway decides at the edge what baggage exists.
"""

from __future__ import annotations

from aiohttp import web
from aiohttp.typedefs import Handler
from opentelemetry import context
from opentelemetry.baggage.propagation import W3CBaggagePropagator

from shop.common.propagation import TextOnlyPropagator

_propagator = TextOnlyPropagator(W3CBaggagePropagator())


@web.middleware
async def inbound_baggage_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    # Extracting into the current context keeps the server span current and adds the baggage.
    token = context.attach(_propagator.extract(request.headers))
    try:
        return await handler(request)
    finally:
        context.detach(token)
