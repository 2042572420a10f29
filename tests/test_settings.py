"""Settings come from the standard and documented variables, and bad values fail with a clear message.

The resource tests set OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES with ``monkeypatch``: the
SDK parses those two, and it reads them only from ``os.environ``.
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
from dataclasses import MISSING, fields

import pytest
from opentelemetry.sdk.resources import Resource

from harness import ROOT
from shop.settings import (
    DEFAULT_PORTS,
    GatewaySettings,
    OrdersSettings,
    PaymentsSettings,
    ServerSettings,
    SettingsError,
    TelemetrySettings,
    is_loopback,
)
from shop.telemetry import OTEL_ENV_DEFAULTS, build_resource

SERVICE_SETTINGS = (GatewaySettings, OrdersSettings, PaymentsSettings)

pytestmark = pytest.mark.unit


def test_defaults_match_the_documented_ports_and_names() -> None:
    gateway, orders, payments = GatewaySettings.from_env({}), OrdersSettings.from_env({}), PaymentsSettings.from_env({})
    assert (gateway.server.port, orders.server.port, payments.server.port) == (8000, 8001, 8002)
    assert (gateway.telemetry.service_name, orders.telemetry.service_name, payments.telemetry.service_name) == (
        "gateway",
        "order-service",
        "payment-service",
    )
    assert gateway.orders_url == f"http://127.0.0.1:{orders.server.port}"
    assert orders.payments_url == f"http://127.0.0.1:{payments.server.port}"
    assert orders.database_url == "sqlite:///data/orders.sqlite3"
    assert gateway.allow_fault_headers is False
    assert orders.payments_timeout_s < gateway.orders_timeout_s


@pytest.mark.parametrize("settings_class", SERVICE_SETTINGS)
def test_from_env_of_an_empty_environment_is_the_declared_defaults(
    settings_class: type[GatewaySettings | OrdersSettings | PaymentsSettings],
) -> None:
    # Each default is written once, in its field: from_env({}) adds nothing of its own.
    assert settings_class.from_env({}) == settings_class()
    for settings_field in fields(settings_class):
        assert settings_field.default is not MISSING, f"{settings_field.name} has no default"


def test_every_service_listens_on_its_own_default_port() -> None:
    ports = {
        settings_class().telemetry.service_name: settings_class().server.port for settings_class in SERVICE_SETTINGS
    }
    assert ports == DEFAULT_PORTS


def test_variables_replace_the_defaults_and_blank_ones_do_not() -> None:
    settings = OrdersSettings.from_env(
        {
            "PORT": "9001",
            "HOST": " ",
            "ORDERS_DATABASE_URL": "postgresql://shop:secret@db:5432/shop",
            "PAYMENTS_URL": "http://payments:8002/",
            "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318/",
            "OTEL_SDK_DISABLED": "true",
            "LOG_LEVEL": "debug",
            "SERVICE_VERSION": "2.0.0",
        }
    )
    assert settings.server == ServerSettings(9001, "127.0.0.1")
    assert settings.database_url == "postgresql://shop:secret@db:5432/shop"
    assert settings.payments_url == "http://payments:8002"
    assert settings.telemetry == TelemetrySettings(
        "order-service",
        service_version="2.0.0",
        sdk_disabled=True,
        otlp_endpoint="http://collector:4318",
        log_level="DEBUG",
    )


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"PORT": "70000"}, "PORT=70000 is outside 0..65535"),
        ({"TRACES_SAMPLE_RATIO": "0"}, "TRACES_SAMPLE_RATIO=0 would keep no trace at all"),
        ({"TRACES_SAMPLE_RATIO": "1.5"}, "TRACES_SAMPLE_RATIO=1.5 is outside 0.0..1.0"),
        ({"TRACES_SAMPLE_RATIO": "tenth"}, "TRACES_SAMPLE_RATIO='tenth' is not a number"),
        ({"PAYMENTS_FAILURE_RATE": "2"}, "PAYMENTS_FAILURE_RATE=2.0 is outside 0.0..1.0"),
        ({"PAYMENTS_LATENCY_MIN_MS": "90", "PAYMENTS_LATENCY_MAX_MS": "10"}, "is above PAYMENTS_LATENCY_MAX_MS=10"),
        ({"LOG_LEVEL": "loud"}, "LOG_LEVEL='LOUD' must be"),
        ({"PAYMENTS_EXTRA_DELAY_MS": "soon"}, "PAYMENTS_EXTRA_DELAY_MS='soon' is not a whole number"),
        ({"OTEL_SHUTDOWN_TIMEOUT_S": "never"}, "OTEL_SHUTDOWN_TIMEOUT_S='never' is not a number"),
    ],
)
def test_bad_values_are_rejected_with_the_variable_named(env: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError, match=message.replace("(", r"\(").replace(".", r"\.")):
        PaymentsSettings.from_env(env)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("mysql://shop:s3cret@db/shop", "must start with sqlite:/// (a file) or postgresql:// (a server)"),
        ("sqlite:///", "must start with sqlite:///"),
        ("data/orders.sqlite3", "must start with sqlite:///"),
        ("postgresql://shop:s3cret@db:port/shop", "the port is not a number"),
        ("postgresql://shop:s3cret@db:5432/", "needs a host and a database name"),
        ("postgresql://shop:s3cret@/shop", "needs a host and a database name"),
    ],
)
def test_a_bad_database_url_is_refused_without_echoing_it(url: str, message: str) -> None:
    with pytest.raises(SettingsError, match=re.escape(message)) as refused:
        OrdersSettings.from_env({"ORDERS_DATABASE_URL": url})
    assert "s3cret" not in str(refused.value), "the password stays out of the message"


@pytest.mark.parametrize(
    ("address", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.0.1.1", True),  # Debian's /etc/hosts name for the machine itself
        ("::1", True),
        ("[::1]", True),
        ("localhost", True),
        ("0.0.0.0", False),  # every interface
        ("::", False),
        ("192.168.1.20", False),
        ("shop.example", False),  # a name is not resolved: unknown counts as reachable
        ("", False),
    ],
)
def test_only_loopback_addresses_count_as_this_machine_alone(address: str, loopback: bool) -> None:
    assert is_loopback(address) is loopback


@pytest.mark.parametrize(
    ("env", "honoured"),
    [
        ({"GATEWAY_ALLOW_FAULT_HEADERS": "true"}, True),  # make run: HOST is 127.0.0.1
        ({"GATEWAY_ALLOW_FAULT_HEADERS": "true", "HOST": "0.0.0.0"}, False),
        ({"GATEWAY_ALLOW_FAULT_HEADERS": "true", "HOST": "0.0.0.0", "PUBLIC_BIND_ADDRESS": "127.0.0.1"}, True),
        ({"GATEWAY_ALLOW_FAULT_HEADERS": "true", "PUBLIC_BIND_ADDRESS": "10.0.0.5"}, False),
        (
            {"GATEWAY_ALLOW_FAULT_HEADERS": "true", "HOST": "::", "GATEWAY_ALLOW_FAULT_HEADERS_OFF_LOOPBACK": "yes"},
            True,
        ),
        ({"GATEWAY_ALLOW_FAULT_HEADERS_OFF_LOOPBACK": "true"}, False),  # the second switch alone turns nothing on
    ],
)
def test_fault_headers_are_honoured_beyond_loopback_only_with_the_second_switch(
    env: dict[str, str], honoured: bool
) -> None:
    assert GatewaySettings.from_env(env).honours_fault_headers is honoured


def test_a_gateway_given_a_public_address_that_is_no_ip_address_refuses_to_start_in_one_line() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "shop.gateway"],
        env={"PYTHONPATH": str(ROOT / "apps"), "PUBLIC_BIND_ADDRESS": "everywhere", "PORT": "0"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "configuration error: PUBLIC_BIND_ADDRESS='everywhere' is not an IP address (e.g. 127.0.0.1 or 0.0.0.0)"
    ]


def test_the_start_up_step_put_the_otel_defaults_where_the_sdk_reads_them() -> None:
    # The session's telemetry came from shop.common.startup.prepare_process, as in production.
    assert {name: os.environ[name] for name in OTEL_ENV_DEFAULTS} == OTEL_ENV_DEFAULTS
    assert OTEL_ENV_DEFAULTS["OTEL_BSP_SCHEDULE_DELAY"] == OTEL_ENV_DEFAULTS["OTEL_BLRP_SCHEDULE_DELAY"] == "200"


def test_the_resource_has_the_services_defaults_where_the_environment_is_silent(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("OTEL_SERVICE_NAME", raising=False)
    monkeypatch.delenv("OTEL_RESOURCE_ATTRIBUTES", raising=False)
    attributes = build_resource(GatewaySettings().telemetry).attributes
    assert attributes["service.name"] == "gateway"
    assert attributes["service.namespace"] == "shop"
    assert attributes["deployment.environment.name"] == "local"
    assert attributes["service.version"] == "0.1.0"
    assert attributes["telemetry.sdk.language"] == "python"  # the SDK's own attributes are kept


def test_standard_otel_variables_shape_the_resource_as_the_sdk_parses_them(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_SERVICE_NAME", "edge")
    monkeypatch.setenv(
        "OTEL_RESOURCE_ATTRIBUTES",
        "service.name=ignored,service.namespace=demo, deployment.environment.name=staging,team=obs%20%26%20ops",
    )
    attributes = build_resource(GatewaySettings().telemetry).attributes
    assert attributes["service.name"] == "edge"  # OTEL_SERVICE_NAME wins, as the spec says
    assert attributes["service.namespace"] == "demo"
    assert attributes["deployment.environment.name"] == "staging"
    assert attributes["service.version"] == "0.1.0"
    assert attributes["team"] == "obs & ops"  # percent-decoded, as the spec requires


def test_service_name_in_the_resource_attributes_names_the_service(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OTEL_SERVICE_NAME", raising=False)
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "service.name=edge")
    assert build_resource(GatewaySettings().telemetry).attributes["service.name"] == "edge"


@pytest.mark.parametrize(
    ("value", "message"),
    [
        # The SDK logs a warning and drops the pair.
        ("team=obs,novalue", "OTEL_RESOURCE_ATTRIBUTES: Invalid key value resource attribute pair novalue"),
        # The SDK decodes it to U+FFFD, silently.
        ("team=%FF", "OTEL_RESOURCE_ATTRIBUTES: the value of team is not percent-encoded UTF-8"),
    ],
)
def test_resource_attributes_the_sdk_refuses_stop_start_up_with_one_message(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, value: str, message: str
) -> None:
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", value)
    with caplog.at_level(logging.DEBUG), pytest.raises(SettingsError, match=message):
        build_resource(GatewaySettings().telemetry)
    assert caplog.records == []  # the error is the one report; the SDK's warning is not logged too


def test_the_resource_hashes_and_compares_like_the_sdks_own() -> None:
    resource = build_resource(TelemetrySettings(service_name="gateway"))
    plain = Resource(dict(resource.attributes), resource.schema_url)
    assert type(resource) is not Resource  # the one that caches its hash
    assert hash(resource) == hash(plain)
    assert resource == plain
    assert {plain: "spans"}[resource] == "spans"  # how the OTLP encoders group by resource
