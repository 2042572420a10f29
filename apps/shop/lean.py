"""The lean instrumentation path: contrib's aiohttp server and client instrumentation, minus the work that
contrib 0.66b1 repeats on every request.

What each request pays in contrib, and what this module does instead (docs/performance.md has the
file:line of each at 0.66b1, and what it costs):
- the span name, the sanitized method and ``http.route`` are fixed per route and method: computed once;
- the environment (captured headers, sanitized fields, "capture all methods") is read once, at start;
- the request's span attributes are built only when the span records (never in a trace that is dropped),
  with contrib's own ``collect_request_attributes``;
- the metric attribute sets are built from what is fixed per route plus the status, not filtered from
  the span's attributes on each request;
- ``http.server.active_requests``: the same instrument name, unit, description, attributes and values,
  counted in a dict and observed at collection rather than added to twice per request through the SDK
  (its data points carry no exemplars: an in-flight count has no trace to point at once it is read);
- the client skips ``redact_url``'s two ``urlparse`` calls for a URL with no credentials and no query
  (where it returns the URL as it is) and builds no header dict when no header is captured.

Only the stable HTTP conventions (``OTEL_SEMCONV_STABILITY_OPT_IN=http``, which the shop sets) and the
contrib release that tests/test_lean.py compares against take this path: ``lean_path_problem`` says why
any other setup falls back to contrib's own instrumentation.

Caches are keyed by route resource (its canonical path) and method (server) and by method, scheme, host and
port (client), never by URL or order ID, and are bounded; a method outside the standard ones is never cached.
"""

from __future__ import annotations

import threading
import types
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from importlib.metadata import version
from timeit import default_timer
from typing import Any, cast
from urllib.parse import urlparse

import aiohttp
import wrapt
from aiohttp import web
from opentelemetry import context as context_api
from opentelemetry import metrics, trace
from opentelemetry.instrumentation import aiohttp_client as contrib_client
from opentelemetry.instrumentation import aiohttp_server as contrib_server
from opentelemetry.instrumentation._semconv import (
    HTTP_DURATION_HISTOGRAM_BUCKETS_NEW,
    _get_schema_url,
    _OpenTelemetrySemanticConventionStability,
    _OpenTelemetryStabilitySignalType,
    _set_http_method,
    _StabilityMode,
)
from opentelemetry.instrumentation.aiohttp_client.version import __version__ as CLIENT_RELEASE
from opentelemetry.instrumentation.aiohttp_server.version import __version__ as SERVER_RELEASE
from opentelemetry.instrumentation.utils import is_http_instrumentation_enabled
from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.propagate import extract, inject
from opentelemetry.semconv.attributes.error_attributes import ERROR_TYPE
from opentelemetry.semconv.attributes.http_attributes import (
    HTTP_REQUEST_METHOD,
    HTTP_ROUTE,
)
from opentelemetry.semconv.attributes.network_attributes import NETWORK_PROTOCOL_VERSION
from opentelemetry.semconv.attributes.server_attributes import SERVER_ADDRESS, SERVER_PORT
from opentelemetry.semconv.attributes.url_attributes import URL_FULL, URL_SCHEME
from opentelemetry.semconv.metrics import MetricInstruments
from opentelemetry.semconv.metrics.http_metrics import HTTP_CLIENT_REQUEST_DURATION, HTTP_SERVER_REQUEST_DURATION
from opentelemetry.trace import SpanKind
from opentelemetry.util.http import (
    OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_CLIENT_REQUEST,
    OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_CLIENT_RESPONSE,
    OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SANITIZE_FIELDS,
    OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_REQUEST,
    OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_RESPONSE,
    SanitizeValue,
    get_custom_headers,
    get_excluded_urls,
    normalise_request_header_name,
    normalise_response_header_name,
    redact_url,
    sanitize_method,
)
from opentelemetry.util.types import AttributeValue

# The contrib release whose output tests/test_lean.py proves this path reproduces, attribute for attribute.
VERIFIED_CONTRIB = "0.66b1"
CONTRIB_PACKAGES = ("opentelemetry-instrumentation-aiohttp-server", "opentelemetry-instrumentation-aiohttp-client")
# sanitize_method's fixed list (opentelemetry-util-http 0.66b1): only these are cached, so the caches stay
# bounded whatever methods callers invent.
STANDARD_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH", "QUERY"})
MAX_CLIENT_ENDPOINTS = 256  # distinct (method, scheme, host, port) the client caches; beyond it, computed each time

Attributes = dict[str, AttributeValue]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def lean_path_problem() -> str | None:
    """Why this process cannot take the lean path (then contrib's own instrumentation runs), or None."""
    for package in CONTRIB_PACKAGES:
        installed = version(package)
        if installed != VERIFIED_CONTRIB:
            return f"{package} is {installed}; the lean path is verified against {VERIFIED_CONTRIB} only"
    if semconv_mode() is not _StabilityMode.HTTP:
        return "OTEL_SEMCONV_STABILITY_OPT_IN is not 'http'; the lean path writes the stable HTTP conventions only"
    return None


def semconv_mode() -> _StabilityMode:
    _OpenTelemetrySemanticConventionStability._initialize()  # type: ignore[no-untyped-call]  # untyped upstream
    return _OpenTelemetrySemanticConventionStability._get_opentelemetry_stability_opt_in_mode(
        _OpenTelemetryStabilitySignalType.HTTP
    )


class HeaderCapture:
    """The OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_* lists and the sanitizer, read and built once (contrib
    reads them, and compiles the sanitizer, per request)."""

    def __init__(self, request_variable: str, response_variable: str) -> None:
        self.request = get_custom_headers(request_variable)
        self.response = get_custom_headers(response_variable)
        self._sanitizer = SanitizeValue(get_custom_headers(OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SANITIZE_FIELDS))

    def attributes(self, headers: Any, captured: list[str], normalise: Callable[[str], str]) -> dict[str, list[str]]:
        """contrib's captured-header attributes (server and client alike), nothing when no header is captured."""
        if not captured:
            return {}
        return self._sanitizer.sanitize_header_values(headers, captured, normalise)


class ActiveRequests:
    """``http.server.active_requests``: in-flight requests per attribute set, observed at collection."""

    def __init__(self, meter: metrics.Meter) -> None:
        self._counts: dict[tuple[str, str], int] = {}
        self._lock = threading.Lock()
        meter.create_observable_up_down_counter(
            name=MetricInstruments.HTTP_SERVER_ACTIVE_REQUESTS,
            callbacks=[self._observe],
            unit="{request}",
            description="Number of active HTTP server requests.",
        )

    def add(self, key: tuple[str, str], delta: int) -> None:
        # The event loop's thread adds; the metric reader's thread observes.
        with self._lock:
            self._counts[key] = self._counts.get(key, 0) + delta

    def _observe(self, _options: CallbackOptions) -> Iterable[Observation]:
        with self._lock:
            counts = list(self._counts.items())
        return [
            Observation(count, {HTTP_REQUEST_METHOD: method, URL_SCHEME: scheme}) for (method, scheme), count in counts
        ]


@dataclass(frozen=True)
class ServerRoute:
    """What contrib computes on every request but is fixed for one route and method."""

    span_name: str
    method: str  # sanitized
    route: str  # http.route: the resource's canonical path, "" without one (contrib's value for a 404)

    @classmethod
    def of(cls, request: web.Request) -> ServerRoute:
        method = sanitize_method(request.method)
        return cls(contrib_server.get_default_span_name(request), method, contrib_server._get_canonical_path(request))


def set_server_status(span: trace.Span, status: int | str, metric_attributes: Attributes) -> None:
    """contrib's own: the span's status and status attributes, and the status into ``metric_attributes``."""
    contrib_server.set_status_code(span, status, metric_attributes, _StabilityMode.HTTP)  # type: ignore[arg-type]


class LeanServer:
    """The middleware's state: tracer, instruments, caches and the settings read once."""

    def __init__(self, tracer: trace.Tracer, meter: metrics.Meter) -> None:
        self.tracer = tracer
        self.duration = meter.create_histogram(
            name=HTTP_SERVER_REQUEST_DURATION,
            unit="s",
            description="Duration of HTTP server requests.",
            explicit_bucket_boundaries_advisory=HTTP_DURATION_HISTOGRAM_BUCKETS_NEW,
        )
        self.active = ActiveRequests(meter)
        self.excluded = get_excluded_urls("AIOHTTP_SERVER")
        self.headers = HeaderCapture(
            OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_REQUEST,
            OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_RESPONSE,
        )
        # (the route resource's canonical path, "" without one; method) -> ServerRoute: all it depends on.
        # Bounded by the route templates x STANDARD_METHODS, and it holds no app's objects alive.
        self.routes: dict[tuple[str, str], ServerRoute] = {}

    def route(self, request: web.Request) -> ServerRoute:
        method = request.method
        if method not in STANDARD_METHODS:
            return ServerRoute.of(request)
        resource = getattr(request.match_info.route, "resource", None)
        key = (getattr(resource, "canonical", ""), method)
        cached = self.routes.get(key)
        if cached is None:
            cached = self.routes[key] = ServerRoute.of(request)
        return cached

    def is_excluded(self, request: web.Request) -> bool:
        path = request.rel_url.path
        # contrib matches request.url.path, which resolves dot segments; the same, without building a URL.
        if "/." in path:
            path = request.url.path
        return self.excluded.url_disabled(path)

    def middleware(self) -> Callable[[web.Request, Handler], Awaitable[web.StreamResponse]]:
        @web.middleware
        async def lean_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
            if not is_http_instrumentation_enabled() or self.is_excluded(request):
                return await handler(request)
            route = self.route(request)
            version = request.version
            scheme = request.scheme
            # contrib's duration attributes, in the stable conventions, before the status is known.
            metric_attributes: Attributes = {HTTP_REQUEST_METHOD: route.method}
            if scheme:
                metric_attributes[URL_SCHEME] = scheme
            metric_attributes[NETWORK_PROTOCOL_VERSION] = f"{version.major}.{version.minor}"
            metric_attributes[HTTP_ROUTE] = route.route
            active_key = (route.method, scheme)
            with self.tracer.start_as_current_span(
                route.span_name,
                context=extract(request, getter=contrib_server.getter),
                kind=SpanKind.SERVER,
                set_status_on_exception=False,
                record_exception=False,
            ) as span:
                if span.is_recording():
                    span.set_attributes(contrib_server.collect_request_attributes(request, _StabilityMode.HTTP))
                    span.set_attributes(
                        self.headers.attributes(request.headers, self.headers.request, normalise_request_header_name)
                    )
                start = default_timer()
                self.active.add(active_key, 1)
                try:
                    response = await handler(request)
                    set_server_status(span, response.status, metric_attributes)
                    if span.is_recording():
                        span.set_attributes(
                            self.headers.attributes(
                                response.headers, self.headers.response, normalise_response_header_name
                            )
                        )
                except web.HTTPServerError as error:
                    set_server_status(span, error.status_code, metric_attributes)
                    span.record_exception(error)
                    raise
                except web.HTTPException as error:
                    set_server_status(span, error.status_code, metric_attributes)
                    raise
                except Exception as error:
                    # contrib passes the exception's type name as the status: error.type then says it.
                    set_server_status(span, type(error).__qualname__, metric_attributes)
                    span.record_exception(error)
                    raise
                finally:
                    self.duration.record(max(default_timer() - start, 0), metric_attributes)
                    self.active.add(active_key, -1)
                return response

        return lean_middleware


class LeanServerInstrumentor(contrib_server.AioHttpServerInstrumentor):
    """contrib's instrumentor (it replaces ``web.Application`` with a subclass adding the middleware first),
    with the lean middleware."""

    def _instrument(self, **kwargs: Any) -> None:
        tracer_provider = kwargs.get("tracer_provider")
        name, release = contrib_server.__name__, SERVER_RELEASE
        schema_url = _get_schema_url(_StabilityMode.HTTP)
        # As contrib: a given provider's tracer has no schema URL, the global one's has.
        tracer = (
            tracer_provider.get_tracer(name, release)
            if tracer_provider
            else trace.get_tracer(name, release, schema_url=schema_url)
        )
        server = self.server = LeanServer(tracer, metrics.get_meter(name, release, schema_url=schema_url))
        middleware = server.middleware()
        original = self._original_app = web.Application

        class _InstrumentedApplication(original):  # type: ignore[misc,valid-type]
            def __init__(self, *args: Any, **options: Any) -> None:
                options["middlewares"] = [middleware, *options.pop("middlewares", [])]
                super().__init__(*args, **options)

        web.Application = _InstrumentedApplication  # type: ignore[misc]


def every_value(headers: Any) -> dict[str, list[str]]:
    """A multidict as contrib's client hands it to the sanitizer: each name with all its values."""
    return {key: headers.getall(key) for key in headers}


@dataclass(frozen=True)
class ClientEndpoint:
    """What contrib computes on every call but is fixed for one method, scheme, host and port."""

    span_name: str
    method_attributes: Attributes  # http.request.method (and _original)
    address_attributes: Attributes  # server.address, server.port (from the URL, as contrib parses it)

    @classmethod
    def of(cls, method: str, request_url: str) -> ClientEndpoint:
        method_attributes: Attributes = {}
        _set_http_method(method_attributes, method, sanitize_method(method), _StabilityMode.HTTP)
        address: Attributes = {}
        try:
            parsed = urlparse(request_url)
            if parsed.hostname:
                address[SERVER_ADDRESS] = parsed.hostname
            if parsed.port:
                address[SERVER_PORT] = parsed.port
        except ValueError:
            pass
        return cls(contrib_client._get_span_name(method), method_attributes, address)


class LeanClient:
    """One trace config's callbacks (contrib's ``create_trace_config``), with what is fixed per endpoint cached."""

    def __init__(self, tracer_provider: trace.TracerProvider | None, meter_provider: Any) -> None:
        schema_url = _get_schema_url(_StabilityMode.HTTP)
        name, release = contrib_client.__name__, CLIENT_RELEASE
        self.tracer = trace.get_tracer(name, release, tracer_provider, schema_url=schema_url)
        meter = metrics.get_meter(name, release, meter_provider, schema_url)
        self.duration = meter.create_histogram(
            name=HTTP_CLIENT_REQUEST_DURATION,
            unit="s",
            description="Duration of HTTP client requests.",
            explicit_bucket_boundaries_advisory=HTTP_DURATION_HISTOGRAM_BUCKETS_NEW,
        )
        self.excluded = get_excluded_urls("AIOHTTP_CLIENT")
        self.headers = HeaderCapture(
            OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_CLIENT_REQUEST,
            OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_CLIENT_RESPONSE,
        )
        self.endpoints: dict[tuple[str, str, str | None], ClientEndpoint] = {}

    def endpoint(self, method: str, url: Any, request_url: str) -> ClientEndpoint:
        if method not in STANDARD_METHODS:
            return ClientEndpoint.of(method, request_url)
        key = (method, url.scheme, url.raw_authority)
        cached = self.endpoints.get(key)
        if cached is None:
            cached = ClientEndpoint.of(method, request_url)
            if len(self.endpoints) < MAX_CLIENT_ENDPOINTS:
                self.endpoints[key] = cached
        return cached

    async def on_request_start(
        self, _session: aiohttp.ClientSession, ctx: types.SimpleNamespace, params: aiohttp.TraceRequestStartParams
    ) -> None:
        if not is_http_instrumentation_enabled():
            return
        url = str(params.url)
        if self.excluded.url_disabled(url):
            return
        ctx.start_time = default_timer()
        # redact_url returns a URL with no "@" and no "?" as it is; it parses it twice to find that out.
        request_url = url if "@" not in url and "?" not in url else redact_url(url)
        endpoint = self.endpoint(params.method, params.url, request_url)
        ctx.metric_attributes = {**endpoint.method_attributes, **endpoint.address_attributes}
        span = ctx.span = self.tracer.start_span(endpoint.span_name, kind=SpanKind.CLIENT)
        if span.is_recording():
            span.set_attributes({**endpoint.method_attributes, URL_FULL: request_url, **endpoint.address_attributes})
            if self.headers.request:  # else no header dict to build
                span.set_attributes(
                    self.headers.attributes(
                        every_value(params.headers), self.headers.request, normalise_request_header_name
                    )
                )
        ctx.token = context_api.attach(trace.set_span_in_context(span))
        inject(params.headers)

    async def on_request_end(
        self, _session: aiohttp.ClientSession, ctx: types.SimpleNamespace, params: aiohttp.TraceRequestEndParams
    ) -> None:
        if ctx.span is None:
            return
        contrib_client._set_http_status_code_attribute(
            ctx.span, params.response.status, ctx.metric_attributes, _StabilityMode.HTTP
        )
        if self.headers.response and ctx.span.is_recording():
            ctx.span.set_attributes(
                self.headers.attributes(
                    every_value(params.response.headers), self.headers.response, normalise_response_header_name
                )
            )
        self.end(ctx)

    async def on_request_exception(
        self, _session: aiohttp.ClientSession, ctx: types.SimpleNamespace, params: aiohttp.TraceRequestExceptionParams
    ) -> None:
        if ctx.span is None:
            return
        if ctx.span.is_recording() and params.exception:
            error_type = type(params.exception).__qualname__
            ctx.span.set_attribute(ERROR_TYPE, error_type)
            ctx.metric_attributes[ERROR_TYPE] = error_type
            ctx.span.set_status(trace.Status(trace.StatusCode.ERROR, error_type))
            ctx.span.record_exception(params.exception)
        self.end(ctx)

    def end(self, ctx: types.SimpleNamespace) -> None:
        elapsed = max(default_timer() - ctx.start_time, 0)
        if ctx.token:
            context_api.detach(ctx.token)
        ctx.span.end()
        # contrib's _client_duration_attrs_new: everything set above is among them.
        self.duration.record(elapsed, attributes=ctx.metric_attributes)

    def trace_config(self) -> aiohttp.TraceConfig:
        def context_factory(**kwargs: Any) -> types.SimpleNamespace:
            kwargs.setdefault("trace_request_ctx", {})
            return types.SimpleNamespace(span=None, token=None, metric_attributes={}, start_time=0, **kwargs)

        config = aiohttp.TraceConfig(trace_config_ctx_factory=cast(type[types.SimpleNamespace], context_factory))
        config.on_request_start.append(self.on_request_start)
        config.on_request_end.append(self.on_request_end)
        config.on_request_exception.append(self.on_request_exception)
        return config


class LeanClientInstrumentor(contrib_client.AioHttpClientInstrumentor):
    """contrib's instrumentor (it wraps ``ClientSession.__init__`` to add a trace config), with the lean one.
    One LeanClient serves every session: its caches and instruments are per process."""

    def _instrument(self, **kwargs: Any) -> None:
        client = self.client = LeanClient(kwargs.get("tracer_provider"), kwargs.get("meter_provider"))

        def instrumented_init(wrapped: Callable[..., None], _instance: Any, args: Any, options: Any) -> None:
            config = client.trace_config()
            config._is_instrumented_by_opentelemetry = True  # type: ignore[attr-defined]  # contrib's marker
            options["trace_configs"] = [*(options.get("trace_configs") or []), config]
            wrapped(*args, **options)

        wrapt.wrap_function_wrapper(aiohttp.ClientSession, "__init__", instrumented_init)
