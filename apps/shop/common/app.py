"""What every service's application shares: its middlewares, body limit and client sessions."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence

import aiohttp
from aiohttp import web
from aiohttp.typedefs import Middleware

from shop.common.errors import MAX_BODY_BYTES, error_middleware, trace_response_middleware


def new_application(inner_middlewares: Sequence[Middleware] = ()) -> web.Application:
    """An application with JSON errors and ``traceresponse`` on every answer.

    ``web.Application`` is looked up at call time: the OpenTelemetry server instrumentor has
    replaced it by then with a subclass whose tracing middleware runs outside all of these.
    Parser-level errors are answered in JSON once ``shop.common.startup.prepare_process`` ran.
    """
    return web.Application(
        middlewares=[trace_response_middleware, error_middleware, *inner_middlewares],
        client_max_size=MAX_BODY_BYTES,
    )


def client_session_ctx(
    key: web.AppKey[aiohttp.ClientSession], *, connection_per_request: bool = False
) -> Callable[[web.Application], AsyncIterator[None]]:
    """A cleanup context holding one ClientSession for the application's lifetime.

    ``connection_per_request`` closes each connection after its request: kept-alive connections would pin
    the calls to whichever replica each one reached, while new ones are spread by what balances
    connections (aiohttp rotates over the addresses a name resolves to; a Kubernetes Service picks one).
    """

    async def session_ctx(app: web.Application) -> AsyncIterator[None]:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=connection_per_request)) as session:
            app[key] = session
            yield

    return session_ctx
