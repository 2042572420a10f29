"""Settings come from the standard and documented variables, and bad values fail with a clear message."""

from __future__ import annotations

from pathlib import Path

import pytest
from opentelemetry.sdk.resources import Resource

from shop.settings import GatewaySettings, OrdersSettings, PaymentsSettings, SettingsError, TelemetrySettings
from shop.telemetry import build_resource

pytestmark = pytest.mark.unit


def test_defaults_match_the_documented_ports_and_names() -> None:
    gateway, orders, payments = GatewaySettings.from_env({}), OrdersSettings.from_env({}), PaymentsSettings.from_env({})
    assert (gateway.server.port, orders.server.port, payments.server.port) == (8000, 8001, 8002)
    assert (gateway.telemetry.service_name, orders.telemetry.service_name, payments.telemetry.service_name) == (
        "gateway",
        "order-service",
        "payment-service",
    )
    assert orders.database_path == Path("data/orders.sqlite3")
    assert gateway.allow_fault_headers is False
    assert orders.payments_timeout_s < gateway.orders_timeout_s
    assert (gateway.telemetry.span_export_delay_ms, gateway.telemetry.log_export_delay_ms) == (200, 200)


def test_standard_otel_variables_shape_the_resource() -> None:
    settings = TelemetrySettings.from_env(
        "gateway",
        {
            "OTEL_SERVICE_NAME": "edge",
            "OTEL_RESOURCE_ATTRIBUTES": "service.namespace=demo,deployment.environment.name=staging,team=obs",
            "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318/",
            "OTEL_SDK_DISABLED": "true",
        },
    )
    assert settings.service_name == "edge"
    assert settings.otlp_endpoint == "http://collector:4318"
    assert settings.sdk_disabled is True
    attributes = build_resource(settings).attributes
    assert attributes["service.name"] == "edge"
    assert attributes["service.namespace"] == "demo"
    assert attributes["deployment.environment.name"] == "staging"
    assert attributes["service.version"] == "0.1.0"
    assert attributes["team"] == "obs"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"PORT": "70000"}, "PORT=70000 is outside 0..65535"),
        ({"PAYMENTS_FAILURE_RATE": "2"}, "PAYMENTS_FAILURE_RATE=2.0 is outside 0.0..1.0"),
        ({"PAYMENTS_LATENCY_MIN_MS": "90", "PAYMENTS_LATENCY_MAX_MS": "10"}, "is above PAYMENTS_LATENCY_MAX_MS=10"),
        ({"OTEL_RESOURCE_ATTRIBUTES": "novalue"}, "expected key=value"),
        ({"LOG_LEVEL": "loud"}, "LOG_LEVEL='LOUD' must be"),
        ({"OTEL_BSP_SCHEDULE_DELAY": "0"}, "OTEL_BSP_SCHEDULE_DELAY=0 is outside 1..600000"),
        ({"OTEL_BLRP_SCHEDULE_DELAY": "soon"}, "OTEL_BLRP_SCHEDULE_DELAY='soon' is not a whole number"),
    ],
)
def test_bad_values_are_rejected_with_the_variable_named(env: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError, match=message.replace("(", r"\(").replace(".", r"\.")):
        PaymentsSettings.from_env(env)


def test_the_resource_hashes_and_compares_like_the_sdks_own() -> None:
    resource = build_resource(TelemetrySettings(service_name="gateway"))
    plain = Resource(dict(resource.attributes), resource.schema_url)
    assert type(resource) is not Resource  # the one that caches its hash
    assert hash(resource) == hash(plain)
    assert resource == plain
    assert {plain: "spans"}[resource] == "spans"  # how the OTLP encoders group by resource
