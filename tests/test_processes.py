"""The services as real processes: started like ``make run``, with no Collector listening."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness import ROOT
from harness.database import sqlite_url
from harness.orders import GOOD_CARD, order_body
from harness.otlp_sink import OtlpSink
from harness.processes import SERVICE_NAMES, STOP_TIMEOUT_S, Shop, free_port, http, process_env, start_service

pytestmark = pytest.mark.processes


@pytest.fixture
def shop(tmp_path: Path) -> Iterator[Shop]:
    # Nothing listens on this port: every export fails, and the services must not care.
    dead_collector = f"http://127.0.0.1:{free_port()}"
    shop = Shop(tmp_path, OTEL_EXPORTER_OTLP_ENDPOINT=dead_collector, OTEL_BSP_SCHEDULE_DELAY="200")
    yield shop
    shop.kill_all()


def test_processes_serve_orders_and_log_json_with_no_collector_listening(shop: Shop) -> None:
    shop.start_all()
    statuses = [http("POST", f"{shop.gateway}/api/order", order_body())[0] for _ in range(20)]
    assert statuses == [201] * 20
    status, body, headers = http("POST", f"{shop.gateway}/api/order", order_body())
    assert status == 201
    assert headers["traceresponse"].split("-")[1] == body["trace_id"]

    exit_codes = shop.stop_all()
    assert exit_codes == dict.fromkeys(SERVICE_NAMES, 0)
    for module, service in shop.running.items():
        lines = service.log_lines()
        assert {line["service.name"] for line in lines} == {SERVICE_NAMES[module]}
        traced = [line for line in lines if line.get("trace_id") == body["trace_id"]]
        assert traced, f"{module} logged nothing for the order"
        assert all(len(line["span_id"]) == 16 for line in traced)
        assert GOOD_CARD not in service.stdout_path.read_text()
        assert "Traceback" not in service.stderr_path.read_text()


def test_orders_survive_a_restart_and_a_kill(shop: Shop) -> None:
    shop.start_all()
    _, first, _ = http("POST", f"{shop.gateway}/api/order", order_body())
    assert shop.running["shop.orders"].stop(signal.SIGTERM) == 0
    shop.start("shop.orders")
    _, second, _ = http("POST", f"{shop.gateway}/api/order", order_body())
    assert shop.running["shop.orders"].stop(signal.SIGKILL) == -signal.SIGKILL
    shop.start("shop.orders")

    for placed in (first, second):
        status, stored, _ = http("GET", f"{shop.gateway}/api/order/{placed['order_id']}")
        assert status == 200
        assert stored["status"] == "paid"


def test_telemetry_off_still_serves_orders(tmp_path: Path) -> None:
    shop = Shop(tmp_path, OTEL_SDK_DISABLED="true")
    try:
        shop.start_all()
        status, body, headers = http("POST", f"{shop.gateway}/api/order", order_body())
        assert status == 201
        assert body["trace_id"] == "0" * 32
        assert "traceresponse" not in headers
    finally:
        assert shop.stop_all() == dict.fromkeys(SERVICE_NAMES, 0)


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("PORT", "eighty", "PORT='eighty' is not a whole number"),
        ("OTEL_SDK_DISABLED", "maybe", "OTEL_SDK_DISABLED='maybe' is not a boolean (use true or false)"),
        ("ORDERS_URL", "localhost:8001", "ORDERS_URL='localhost:8001' must start with http:// or https://"),
        # The SDK would ignore it beside the shop's own sampler, so it is refused rather than ignored.
        (
            "OTEL_TRACES_SAMPLER",
            "parentbased_traceidratio",
            "OTEL_TRACES_SAMPLER is not read here: set TRACES_SAMPLE_RATIO (0 < p <= 1)",
        ),
        # Read and checked by the SDK itself, not by shop.settings: an error it raises, or a warning
        # it logs before going on without the value or with its own default, stops start-up.
        (
            "OTEL_BSP_MAX_QUEUE_SIZE",
            "100",
            "OTEL_BSP_*: max_export_batch_size must be less than or equal to max_queue_size.",
        ),
        ("OTEL_BSP_SCHEDULE_DELAY", "0", "OTEL_BSP_*: schedule_delay_millis must be positive."),
        (
            "OTEL_BLRP_SCHEDULE_DELAY",
            "soon",
            "OTEL_BLRP_*: Unable to parse value for OTEL_BLRP_SCHEDULE_DELAY as integer. Defaulting to 1000.",
        ),
        (
            "OTEL_RESOURCE_ATTRIBUTES",
            "novalue",
            "OTEL_RESOURCE_ATTRIBUTES: Invalid key value resource attribute pair novalue: "
            "not enough values to unpack (expected 2, got 1)",
        ),
    ],
)
def test_bad_configuration_exits_2_with_one_clear_line(variable: str, value: str, message: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "shop.gateway"],
        env=process_env(**{variable: value}),
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr.decode().strip() == f"configuration error: {message}"


def test_log_lines_name_the_service_as_the_sdk_read_it_from_the_environment(tmp_path: Path) -> None:
    payments = start_service(
        "shop.payments",
        free_port(),
        tmp_path,
        OTEL_SDK_DISABLED="true",
        OTEL_RESOURCE_ATTRIBUTES="service.name=card%20processor",  # percent-decoded by the SDK
    )
    assert payments.stop() == 0
    assert {line["service.name"] for line in payments.log_lines()} == {"card processor"}


def test_make_run_launcher_stops_all_three_on_ctrl_c(tmp_path: Path) -> None:
    ports = {name: free_port() for name in ("GATEWAY_PORT", "ORDERS_PORT", "PAYMENTS_PORT")}
    env = process_env(
        ORDERS_DATABASE_URL=sqlite_url(tmp_path / "orders.sqlite3"),
        OTEL_SDK_DISABLED="true",
        **{name: str(port) for name, port in ports.items()},
    )
    launcher = subprocess.Popen(
        [sys.executable, "-m", "shop.devrun"],
        env=env,
        cwd=ROOT,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        gateway = f"http://127.0.0.1:{ports['GATEWAY_PORT']}"
        orders = f"http://127.0.0.1:{ports['ORDERS_PORT']}"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if http("GET", f"{gateway}/readyz")[0] == http("GET", f"{orders}/readyz")[0] == 200:
                    break
            except OSError:
                pass
            time.sleep(0.2)
        assert http("POST", f"{gateway}/api/order", order_body())[0] == 201

        os.killpg(launcher.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
        assert launcher.wait(STOP_TIMEOUT_S) == 0
    finally:
        if launcher.poll() is None:
            os.killpg(launcher.pid, signal.SIGKILL)
            launcher.wait()
    for port in ports.values():
        with pytest.raises(urllib.error.URLError, match="Connection refused"):
            http("GET", f"http://127.0.0.1:{port}/healthz")


def test_shutdown_flushes_buffered_telemetry_to_a_listening_receiver(tmp_path: Path) -> None:
    with OtlpSink() as sink:
        # Nothing would be exported for a minute: whatever arrives was flushed by the shutdown.
        shop = Shop(
            tmp_path,
            OTEL_EXPORTER_OTLP_ENDPOINT=sink.endpoint,
            OTEL_BSP_SCHEDULE_DELAY="60000",
            OTEL_BLRP_SCHEDULE_DELAY="60000",
            OTEL_METRIC_EXPORT_INTERVAL="60000",
        )
        shop.start_all()
        status, body, _ = http("POST", f"{shop.gateway}/api/order", order_body())
        assert status == 201
        assert sink.spans() == []
        assert shop.stop_all() == dict.fromkeys(SERVICE_NAMES, 0)

    trace_id = bytes.fromhex(body["trace_id"])
    services = {resource["service.name"] for resource, span in sink.spans() if span.trace_id == trace_id}
    assert services == set(SERVICE_NAMES.values())
    logged = {resource["service.name"] for resource, record in sink.log_records() if record.trace_id == trace_id}
    assert logged == set(SERVICE_NAMES.values())
    assert {"http.server.request.duration", "orders.placed", "payments.authorizations"} <= sink.metric_names()
