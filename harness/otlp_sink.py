"""A recording OTLP/HTTP receiver: decodes what arrives with opentelemetry-proto and keeps it.

It stands in for Tempo and Loki, which cannot run here.
"""

from __future__ import annotations

import gzip
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord
from opentelemetry.proto.trace.v1.trace_pb2 import Span


def resource_attributes(resource: object) -> dict[str, str]:
    return {kv.key: kv.value.string_value for kv in getattr(resource, "attributes", [])}


class OtlpSink:
    """Listens on 127.0.0.1 on a free port; use as a context manager. ``record=False`` answers without
    decoding or keeping anything (a benchmark's Tempo)."""

    def __init__(self, record: bool = True) -> None:
        self.traces: list[ExportTraceServiceRequest] = []
        self.metrics: list[ExportMetricsServiceRequest] = []
        self.logs: list[ExportLogsServiceRequest] = []
        self.paths: list[str] = []
        self._lock = threading.Lock()
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                if not record:
                    self.send_response(200)
                    self.end_headers()
                    return
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                with sink._lock:
                    sink.paths.append(self.path)
                    # Suffixes, so that a base path such as Loki's /otlp works too.
                    if self.path.endswith("/v1/traces"):
                        sink.traces.append(ExportTraceServiceRequest.FromString(body))
                    elif self.path.endswith("/v1/metrics"):
                        sink.metrics.append(ExportMetricsServiceRequest.FromString(body))
                    elif self.path.endswith("/v1/logs"):
                        sink.logs.append(ExportLogsServiceRequest.FromString(body))
                    else:
                        self.send_response(404)
                        self.end_headers()
                        return
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:
                """Quiet: the tests read what was recorded instead."""

        self._handler = Handler
        self._server: ThreadingHTTPServer | None = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._port = self._server.server_address[1]
        self._running = False

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self._port}"

    def start(self) -> None:
        """Listen (again, after ``stop()``: on the same port)."""
        if self._server is None:
            self._server = ThreadingHTTPServer(("127.0.0.1", self._port), self._handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        self._running = True

    def stop(self) -> None:
        """Stop listening, as a backend that went down: connections are refused until ``start()``."""
        if self._server is not None:
            if self._running:
                self._server.shutdown()
            self._server.server_close()
            self._server = None
            self._running = False

    def __enter__(self) -> OtlpSink:
        self.start()
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.stop()

    def spans(self) -> list[tuple[dict[str, str], Span]]:
        with self._lock:
            return [
                (resource_attributes(rs.resource), span)
                for request in self.traces
                for rs in request.resource_spans
                for ss in rs.scope_spans
                for span in ss.spans
            ]

    def log_records(self) -> list[tuple[dict[str, str], LogRecord]]:
        with self._lock:
            return [
                (resource_attributes(rl.resource), record)
                for request in self.logs
                for rl in request.resource_logs
                for sl in rl.scope_logs
                for record in sl.log_records
            ]

    def metric_names(self) -> set[str]:
        with self._lock:
            return {
                metric.name
                for request in self.metrics
                for rm in request.resource_metrics
                for sm in rm.scope_metrics
                for metric in sm.metrics
            }
