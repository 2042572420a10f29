"""Liveness, readiness and Prometheus metrics: the endpoints every service has, none of them traced."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping

from aiohttp import web
from prometheus_client import (
    CollectorRegistry,
    GCCollector,
    PlatformCollector,
    ProcessCollector,
)
from prometheus_client.exposition import choose_encoder

from shop.telemetry import kept_trace_id

# A readiness check returns normally when its dependency is usable and raises otherwise.
ReadinessCheck = Callable[[], Awaitable[None]]

REGISTRY = web.AppKey("registry", CollectorRegistry)
READINESS_CHECKS = web.AppKey("readiness_checks", dict[str, ReadinessCheck])
READINESS_TIMEOUT_S = 1.0


def new_registry() -> CollectorRegistry:
    """A registry per app (not the global one), with the process and runtime collectors.

    No ``*_created`` series once ``shop.common.startup.prepare_process`` ran.
    """
    registry = CollectorRegistry()
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    return registry


def trace_exemplar() -> dict[str, str] | None:
    """An exemplar label set pointing at the active trace, for prometheus-client counters: only a kept
    trace, since an exemplar is a link to open."""
    trace_id = kept_trace_id()
    return None if trace_id is None else {"trace_id": trace_id}


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def _run_check(check: ReadinessCheck) -> str:
    try:
        await asyncio.wait_for(check(), READINESS_TIMEOUT_S)
    except Exception as exc:  # any failure means "not ready"; say which kind
        return f"failed: {type(exc).__name__}"
    return "ok"


async def readyz(request: web.Request) -> web.Response:
    checks = request.app[READINESS_CHECKS]
    outcomes = await asyncio.gather(*(_run_check(check) for check in checks.values()))
    results = dict(zip(checks, outcomes, strict=True))
    ready = all(result == "ok" for result in results.values())
    body = {"status": "ready" if ready else "not_ready", "checks": results}
    return web.json_response(body, status=200 if ready else 503)


async def metrics(request: web.Request) -> web.Response:
    # OpenMetrics when the scraper asks for it: only that format carries exemplars.
    encode, content_type = choose_encoder(request.headers.get("Accept", ""))
    return web.Response(body=encode(request.app[REGISTRY]), headers={"Content-Type": content_type})


def setup_ops(app: web.Application, registry: CollectorRegistry, checks: Mapping[str, ReadinessCheck]) -> None:
    app[REGISTRY] = registry
    app[READINESS_CHECKS] = dict(checks)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
