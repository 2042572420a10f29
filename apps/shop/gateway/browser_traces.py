"""``POST /otlp/v1/traces``: the shop page's spans, forwarded to the Collector's receiver for browser spans.

The browser is an untrusted caller and this is public ingest, so it is bounded here before anything reaches
the Collector: JSON (the JS exporter's default) or protobuf only, no compressed bodies, a size limit, and a
rate limit per client address. What the body says is the Collector's to judge (a malformed body gets its
400), and its browser pipeline overwrites ``service.name`` and keeps only allowed attributes
(docs/browser.md). The forwarding itself is not traced: it would start a trace of its own per export.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from dataclasses import dataclass, field

import aiohttp
from aiohttp import web
from opentelemetry.instrumentation.utils import suppress_http_instrumentation

from shop.common.downstream import retry_after
from shop.common.errors import ApiError, payload_too_large
from shop.gateway.keys import BROWSER_TRACES_SESSION, SETTINGS

TRACES_PATH = "/otlp/v1/traces"
CONTENT_TYPES = ("application/json", "application/x-protobuf")
COLLECTOR_TIMEOUT_S = 5.0
RETRY_AFTER_S = 5
# Client addresses remembered at once; the least recently seen is forgotten first (it starts afresh).
MAX_CLIENTS = 10_000


@dataclass
class Bucket:
    tokens: float
    updated: float


@dataclass
class RateLimit:
    """A token bucket per client address: ``per_minute`` on average, up to ten seconds' worth at once."""

    per_minute: int
    buckets: OrderedDict[str, Bucket] = field(default_factory=OrderedDict)

    @property
    def burst(self) -> float:
        return max(1.0, self.per_minute / 6)

    def wait_s(self, client: str, now: float | None = None) -> float:
        """0 and one request taken if ``client`` may send now, else the seconds until it may."""
        now = time.monotonic() if now is None else now
        bucket = self.buckets.pop(client, None) or Bucket(self.burst, now)
        self.buckets[client] = bucket
        while len(self.buckets) > MAX_CLIENTS:
            self.buckets.popitem(last=False)
        bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.updated) * self.per_minute / 60)
        bucket.updated = now
        if bucket.tokens >= 1:
            bucket.tokens -= 1
            return 0.0
        return (1 - bucket.tokens) * 60 / self.per_minute


RATE_LIMIT = web.AppKey("browser_traces_rate_limit", RateLimit)


def check_headers(request: web.Request, max_bytes: int) -> None:
    if request.content_type not in CONTENT_TYPES:
        raise ApiError(415, "unsupported_media_type", f"Send OTLP traces as {' or '.join(CONTENT_TYPES)}.")
    if request.headers.get("Content-Encoding", "identity").strip().lower() != "identity":
        raise ApiError(415, "compressed_body", "Compressed bodies are refused: send the spans uncompressed.")
    if request.content_length is not None and request.content_length > max_bytes:
        raise payload_too_large(max_bytes)


async def read_bounded(request: web.Request, max_bytes: int) -> bytes:
    """The body, or a 413 as soon as it passes ``max_bytes`` (a chunked body has no Content-Length)."""
    body = bytearray()
    async for chunk in request.content.iter_chunked(64 * 1024):
        body += chunk
        if len(body) > max_bytes:
            raise payload_too_large(max_bytes)
    return bytes(body)


def collector_unavailable(retry_after_s: int = RETRY_AFTER_S) -> ApiError:
    return ApiError(
        503, "collector_unavailable", "The trace Collector is not taking spans now.", retry_after_s=retry_after_s
    )


async def forward_browser_traces(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS]
    check_headers(request, settings.browser_traces_max_bytes)
    wait_s = request.app[RATE_LIMIT].wait_s(request.remote or "")
    if wait_s:
        raise ApiError(
            429, "rate_limited", "Too many trace exports from this address.", retry_after_s=math.ceil(wait_s)
        )
    body = await read_bounded(request, settings.browser_traces_max_bytes)
    try:
        with suppress_http_instrumentation():
            async with request.app[BROWSER_TRACES_SESSION].post(
                f"{settings.browser_otlp_endpoint}/v1/traces",
                data=body,
                headers={"Content-Type": request.content_type},
                timeout=aiohttp.ClientTimeout(total=COLLECTOR_TIMEOUT_S),
            ) as answer:
                payload = await answer.read()
    except (TimeoutError, aiohttp.ClientError):
        raise collector_unavailable() from None
    if answer.status == 429 or answer.status >= 500:  # the Collector's "retry later" (memory limiter, queue full)
        raise collector_unavailable(retry_after(answer.headers.get("Retry-After")) or RETRY_AFTER_S)
    if answer.status >= 400:
        raise ApiError(400, "invalid_otlp", "The Collector refused the body as OTLP traces.")
    return web.Response(body=payload, status=answer.status, content_type=answer.content_type)


def setup_browser_traces(app: web.Application, per_minute: int) -> None:
    app[RATE_LIMIT] = RateLimit(per_minute)
    app.router.add_post(TRACES_PATH, forward_browser_traces)
