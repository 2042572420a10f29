"""The one place where traces, metrics and logs are set up.

``configure_telemetry`` must run before any ``web.Application`` is built: the
aiohttp server instrumentor works by replacing ``web.Application`` with a
subclass that adds its tracing middleware.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import uuid
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from opentelemetry import _logs, context, metrics, trace
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.instrumentation.aiohttp_client import AioHttpClientInstrumentor
from opentelemetry.instrumentation.aiohttp_server import AioHttpServerInstrumentor
from opentelemetry.instrumentation.logging.handler import LoggingHandler
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor, LogRecordExporter, SimpleLogRecordProcessor
from opentelemetry.sdk.environment_variables import (
    OTEL_PYTHON_SDK_INTERNAL_METRICS_ENABLED as INTERNAL_METRICS,
)
from opentelemetry.sdk.environment_variables import OTEL_RESOURCE_ATTRIBUTES, OTEL_SERVICE_NAME
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricReader, PeriodicExportingMetricReader
from opentelemetry.sdk.resources import OTELResourceDetector, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor, SpanExporter
from opentelemetry.semconv.attributes.service_attributes import SERVICE_NAME, SERVICE_VERSION
from opentelemetry.trace import format_span_id, format_trace_id
from opentelemetry.util.types import AttributeValue
from pythonjsonlogger.json import JsonEncoder, JsonFormatter

from shop.lean import LeanClientInstrumentor, LeanServerInstrumentor, lean_path_problem
from shop.sampling import ShopSampler
from shop.settings import SettingsError, TelemetrySettings

# Loggers of our own code; only these are exported over OTLP. The SDK's exporters log
# through other loggers, so a failing export never feeds itself more records to export.
APP_LOGGER = "shop"

# Defaults for variables that the SDK and the instrumentations read only from the environment;
# the start-up step (shop.common.startup) sets each one the operator has not. Chosen here:
# - the stable HTTP conventions (http.server.request.duration in seconds);
# - no spans (and no HTTP metrics) for probes and scrapes, nor for the shop page, its files and the
#   forwarding of its spans: loading the page leaves the request rate and the user -> gateway edge as they were;
# - spans and log records exported every 200 ms. The SDK's 5 s (1 s for logs) lets a batch grow
#   to hundreds of records whose encoding holds the GIL for tens of ms and stalls requests behind
#   it; 200 ms exports small batches often (make bench: p99 at a fixed rate drops by about half).
# - each export retried for up to 30 s (the SDK's 10 s gives up about 7 s into a Collector outage, losing
#   the batch in flight): retries after 1, 2, 4 and 8 s carry a batch through an outage of about 15 s
#   (docs/reliability.md#what-the-services-ride-out).
OTEL_ENV_DEFAULTS = {
    "OTEL_SEMCONV_STABILITY_OPT_IN": "http",
    "OTEL_EXPORTER_OTLP_TIMEOUT": "30",
    "OTEL_PYTHON_AIOHTTP_SERVER_EXCLUDED_URLS": "^/healthz$,^/readyz$,^/metrics$,^/$,^/static/,^/otlp/",
    "OTEL_BSP_SCHEDULE_DELAY": "200",
    "OTEL_BLRP_SCHEDULE_DELAY": "200",
}

# Attribute names without a constant in the stable semantic-conventions package.
SERVICE_NAMESPACE = "service.namespace"
DEPLOYMENT_ENVIRONMENT_NAME = "deployment.environment.name"
SERVICE_INSTANCE_ID = "service.instance.id"


@dataclass(frozen=True)
class TelemetryExporters:
    """Where the signals go. Defaults to OTLP/HTTP; tests pass in-memory ones."""

    span_exporter: SpanExporter
    metric_reader: MetricReader
    log_exporter: LogRecordExporter
    # Batching keeps export off the request path; tests export synchronously to assert at once.
    batch: bool = True

    @classmethod
    def otlp(cls, endpoint: str) -> TelemetryExporters:
        return cls(
            span_exporter=OTLPSpanExporter(endpoint=f"{endpoint}/v1/traces"),
            metric_reader=PeriodicExportingMetricReader(OTLPMetricExporter(endpoint=f"{endpoint}/v1/metrics")),
            log_exporter=OTLPLogExporter(endpoint=f"{endpoint}/v1/logs"),
        )


class Telemetry:
    """A handle on what ``configure_telemetry`` installed; ``shutdown()`` flushes it all."""

    def __init__(
        self,
        settings: TelemetrySettings,
        tracer_provider: TracerProvider | None = None,
        meter_provider: MeterProvider | None = None,
        logger_provider: LoggerProvider | None = None,
    ) -> None:
        self.settings = settings
        self.tracer_provider = tracer_provider
        self.meter_provider = meter_provider
        self.logger_provider = logger_provider

    @property
    def enabled(self) -> bool:
        return self.tracer_provider is not None

    def _shutdown_providers(self) -> None:
        for provider in (self.tracer_provider, self.meter_provider, self.logger_provider):
            if provider is not None:
                provider.shutdown()

    def shutdown(self) -> bool:
        """Flush and stop every provider; returns False if that took longer than allowed.

        The SDK's own shutdown can block for its full export timeout per signal when
        the Collector is unreachable, so it runs in a daemon thread with one deadline.
        """
        worker = threading.Thread(target=self._shutdown_providers, name="telemetry-shutdown", daemon=True)
        worker.start()
        worker.join(self.settings.shutdown_timeout_s)
        if worker.is_alive():
            logging.getLogger(__name__).warning(
                "telemetry shutdown timed out; unsent telemetry dropped",
                extra={"timeout_s": self.settings.shutdown_timeout_s},
            )
            return False
        return True


class TraceContextJsonFormatter(JsonFormatter):
    """JSON lines with the active span's IDs, added at format time so the record itself is untouched."""

    def add_fields(self, log_data: dict[str, Any], record: logging.LogRecord, message_dict: dict[str, Any]) -> None:
        super().add_fields(log_data, record, message_dict)
        span_context = trace.get_current_span().get_span_context()
        if span_context.is_valid:
            log_data["trace_id"] = format_trace_id(span_context.trace_id)
            log_data["span_id"] = format_span_id(span_context.span_id)


class LeanJsonFormatter(TraceContextJsonFormatter):
    """The same lines, cheaper (tests/test_lean.py compares them): the timestamp written as the text the
    encoder's ``default`` would make of it (``isoformat``), and one encoder for every line where
    ``json.dumps`` builds one per call."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._encoder = JsonEncoder(ensure_ascii=self.json_ensure_ascii, indent=self.json_indent)

    def add_fields(self, log_data: dict[str, Any], record: logging.LogRecord, message_dict: dict[str, Any]) -> None:
        super().add_fields(log_data, record, message_dict)
        stamp = log_data.get("timestamp")
        if isinstance(stamp, datetime):
            log_data["timestamp"] = stamp.isoformat()

    def jsonify_log_record(self, log_data: dict[str, Any]) -> str:
        return self._encoder.encode(log_data)


def json_log_formatter(service_name: str, lean: bool = True) -> TraceContextJsonFormatter:
    return (LeanJsonFormatter if lean else TraceContextJsonFormatter)(
        ["levelname", "name", "message"],
        rename_fields={"levelname": "level", "name": "logger"},
        static_fields={"service.name": service_name},
        timestamp=True,
    )


def configure_logging(service_name: str, level: str, lean: bool = True) -> None:
    """JSON lines on stdout for every logger; replaces whatever handlers were there but OpenTelemetry's
    (which `opentelemetry-instrument` puts on the root logger to export every record)."""
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(json_log_formatter(service_name, lean))
    root = logging.getLogger()
    for old in list(root.handlers):
        if not isinstance(old, LoggingHandler):
            root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    # aiosqlite logs every statement with its parameters at DEBUG; those are customer data.
    logging.getLogger("aiosqlite").setLevel(logging.INFO)


class _Complaints(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@contextmanager
def refused_by_sdk(variables: str) -> Iterator[None]:
    """Stop start-up with a SettingsError when the SDK refuses one of the ``variables`` it reads.

    For some bad values the SDK raises ValueError; for others it only logs a warning and goes on
    without the value ("novalue" in OTEL_RESOURCE_ATTRIBUTES) or with its own default ("soon" in
    OTEL_BLRP_SCHEDULE_DELAY). Here both become one error in the SDK's words, and the warning is
    not logged as well.
    """
    sdk_logger = logging.getLogger("opentelemetry")
    complaints = _Complaints()
    saved = sdk_logger.level, sdk_logger.propagate
    sdk_logger.addHandler(complaints)
    sdk_logger.setLevel(logging.WARNING)
    sdk_logger.propagate = False
    try:
        yield
    except ValueError as exc:
        raise SettingsError(f"{variables}: {exc}") from None
    finally:
        sdk_logger.removeHandler(complaints)
        sdk_logger.setLevel(saved[0])
        sdk_logger.propagate = saved[1]
    if complaints.messages:
        raise SettingsError(f"{variables}: {complaints.messages[0]}")


class SampledLoggingHandler(LoggingHandler):
    """OTLP log records that follow the trace's sampling decision (trace-based log filtering).

    In a trace that was not kept, records below WARNING are not exported at all, and WARNING and
    above are exported without trace context: no line in Loki offers a link to a trace that Tempo
    never received. At a ratio of 1.0 every trace is kept and nothing changes.
    """

    def emit(self, record: logging.LogRecord) -> None:
        span_context = trace.get_current_span().get_span_context()
        if not span_context.is_valid or span_context.trace_flags.sampled:
            super().emit(record)
        elif record.levelno >= logging.WARNING:
            token = context.attach(trace.set_span_in_context(trace.INVALID_SPAN))
            try:
                super().emit(record)
            finally:
                context.detach(token)


class FrozenResource(Resource):
    """A Resource that computes its hash once.

    ``Resource.__hash__`` JSON-encodes every attribute, and the OTLP encoders hash the resource
    of every span and log record they group (1-2 % of each service's CPU under load, py-spy).
    The attributes cannot change after construction, so neither can the hash.
    """

    def __init__(self, attributes: Mapping[str, AttributeValue], schema_url: str | None = None) -> None:
        super().__init__(attributes, schema_url)
        self._hash = super().__hash__()

    def __hash__(self) -> int:
        return self._hash


def build_resource(settings: TelemetrySettings) -> Resource:
    """This service's Resource: what OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES set, over ``settings``.

    The SDK's own detector parses (and percent-decodes) both variables, from ``os.environ``: it
    reads nothing else, so neither can this. It runs here first to catch a pair it refuses, then
    again inside ``Resource.create``, last among the detectors, so the environment still wins there.
    """
    with refused_by_sdk(OTEL_RESOURCE_ATTRIBUTES):
        from_env = OTELResourceDetector().detect().attributes
    # The SDK decodes bytes that are not UTF-8 to U+FFFD without a word; refuse that too.
    written = os.environ.get(OTEL_RESOURCE_ATTRIBUTES, "") + os.environ.get(OTEL_SERVICE_NAME, "")
    for key, value in from_env.items():
        if isinstance(value, str) and "\ufffd" in value and "\ufffd" not in written:
            raise SettingsError(f"{OTEL_RESOURCE_ATTRIBUTES}: the value of {key} is not percent-encoded UTF-8")
    defaults: dict[str, AttributeValue] = {
        SERVICE_NAME: settings.service_name,
        SERVICE_VERSION: settings.service_version,
        SERVICE_NAMESPACE: settings.service_namespace,
        DEPLOYMENT_ENVIRONMENT_NAME: settings.deployment_environment,
        # Each process its own, so that replicas of one service stay apart in every metric (Prometheus's
        # `instance`); OTEL_RESOURCE_ATTRIBUTES may name it instead (e.g. the pod).
        SERVICE_INSTANCE_ID: str(uuid.uuid4()),
    }
    resource = Resource.create({**defaults, **from_env})
    return FrozenResource(resource.attributes, resource.schema_url)


@contextmanager
def sdk_delivery_metrics() -> Iterator[None]:
    """The SDK's own metrics for what is built inside: its exporters' (items exported, and failed by error
    type) and its batch processors' (items processed, and dropped from a full queue), so that what a service
    could not deliver is counted. Each component reads OTEL_PYTHON_SDK_INTERNAL_METRICS_ENABLED when built,
    and so does each tracer and logger, which would then count every span and log record (three counter
    adds per span); hence set only while these are built, unless the operator set it."""
    if INTERNAL_METRICS in os.environ:
        yield
        return
    os.environ[INTERNAL_METRICS] = "true"
    try:
        yield
    finally:
        del os.environ[INTERNAL_METRICS]


def configure_telemetry(settings: TelemetrySettings, exporters: TelemetryExporters | None = None) -> Telemetry:
    """Install logging, the three providers and the aiohttp instrumentors; call once per process.

    It reads the OTEL_* defaults that ``shop.common.startup.prepare_process`` puts in the
    environment, and raises SettingsError when the SDK refuses an OTEL_* value.
    """
    resource = build_resource(settings)
    problem = lean_path_problem() if settings.instrumentation == "lean" else None
    lean = settings.instrumentation == "lean" and problem is None
    configure_logging(str(resource.attributes[SERVICE_NAME]), settings.log_level, lean)
    if settings.sdk_disabled or settings.instrumentation == "zero-code":
        # No providers and no instrumentation middleware: the cheapest path this code has, or the one
        # `opentelemetry-instrument` has already set up (the spans this code starts itself go to its provider).
        return Telemetry(settings)
    if problem is not None:
        logging.getLogger(__name__).warning(
            "the lean instrumentation path is off; contrib's instrumentation runs instead", extra={"reason": problem}
        )

    if exporters is None:
        with refused_by_sdk("OTEL_EXPORTER_OTLP_*, OTEL_METRIC_EXPORT_*"), sdk_delivery_metrics():
            exporters = TelemetryExporters.otlp(settings.otlp_endpoint)

    # No atexit hooks: their shutdown blocks for the full export timeout when the Collector is
    # down. Telemetry.shutdown() is the one shutdown, and it has a deadline.
    if os.environ.get("OTEL_TRACES_SAMPLER"):
        # The SDK would ignore it beside the sampler given here: say so rather than sample otherwise.
        raise SettingsError("OTEL_TRACES_SAMPLER is not read here: set TRACES_SAMPLE_RATIO (0 < p <= 1)")
    sampler = ShopSampler(
        settings.sample_ratio,
        decides=settings.decides_sampling,
        allow_forced=settings.allow_forced_sampling,
        fast_path=lean,
    )
    tracer_provider = TracerProvider(resource=resource, sampler=sampler, shutdown_on_exit=False)
    with refused_by_sdk("OTEL_BSP_*"), sdk_delivery_metrics():
        span_processor = (
            BatchSpanProcessor(exporters.span_exporter)
            if exporters.batch
            else SimpleSpanProcessor(exporters.span_exporter)
        )
    tracer_provider.add_span_processor(span_processor)

    meter_provider = MeterProvider(resource=resource, metric_readers=[exporters.metric_reader], shutdown_on_exit=False)

    logger_provider = LoggerProvider(resource=resource, shutdown_on_exit=False)
    with refused_by_sdk("OTEL_BLRP_*"), sdk_delivery_metrics():
        log_processor = (
            BatchLogRecordProcessor(exporters.log_exporter)
            if exporters.batch
            else SimpleLogRecordProcessor(exporters.log_exporter)
        )
    logger_provider.add_log_record_processor(log_processor)

    trace.set_tracer_provider(tracer_provider)
    metrics.set_meter_provider(meter_provider)
    _logs.set_logger_provider(logger_provider)

    logging.getLogger(APP_LOGGER).addHandler(SampledLoggingHandler(logger_provider=logger_provider))
    with warnings.catch_warnings():
        # The instrumentor subclasses web.Application by design (aiohttp < 4 allows it, with this warning).
        warnings.filterwarnings("ignore", "Inheritance class _InstrumentedApplication", DeprecationWarning)
        (LeanServerInstrumentor() if lean else AioHttpServerInstrumentor()).instrument(tracer_provider=tracer_provider)
    client = LeanClientInstrumentor() if lean else AioHttpClientInstrumentor()
    client.instrument(tracer_provider=tracer_provider, meter_provider=meter_provider)
    return Telemetry(settings, tracer_provider, meter_provider, logger_provider)


def trace_fields() -> dict[str, str | bool]:
    """How every answer names its trace: the ID, and whether the trace was kept (sampled), so that a
    caller knows whether Tempo will have it."""
    span_context = trace.get_current_span().get_span_context()
    return {"trace_id": format_trace_id(span_context.trace_id), "trace_sampled": span_context.trace_flags.sampled}


def kept_trace_id() -> str | None:
    """The active trace's ID if it is being kept, else None (there will be no trace to open)."""
    span_context = trace.get_current_span().get_span_context()
    return format_trace_id(span_context.trace_id) if span_context.trace_flags.sampled else None
