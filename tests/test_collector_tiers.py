"""The Collector configs of every role (one Collector, agent, gateway: docs/scaling.md) validate with the built
binary, and the opt-in compose file for two tiers runs exactly those configs."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from harness import ROOT
from harness.backends import COLLECTOR_ROLES, COLLECTORS_DNS_NAME
from test_compose import compose_schema
from tools import collector_binary

pytestmark = pytest.mark.unit

TWO_TIER_COMPOSE = ROOT / "docker-compose.two-tier.yml"
# The resolvers agent.yaml takes from OTELCOL_GATEWAY_RESOLVER: static (compose, tests), DNS (Kubernetes).
RESOLVERS: dict[str, dict[str, Any]] = {
    "static": {"static": {"hostnames": ["otel-gateway-1:4317", "otel-gateway-2:4317"]}},
    "dns": {"dns": {"hostname": "otel-gateway-headless.shop.svc.cluster.local", "port": "4317"}},
}
ROLE_ENV: dict[str, list[dict[str, str]]] = {
    "single": [{}],
    "agent": [{"OTELCOL_GATEWAY_RESOLVER": json.dumps(resolver)} for resolver in RESOLVERS.values()],
    "gateway": [{"HOSTNAME": "otel-gateway-1"}],
}
CASES = [(role, env) for role, envs in ROLE_ENV.items() for env in envs]


def validate(configs: tuple[Path, ...], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [collector_binary(), "validate", *(f"--config={config}" for config in configs)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={"PATH": "/usr/bin:/bin", **env},
    )


@pytest.mark.parametrize(("role", "env"), CASES, ids=[f"{role}-{i}" for i, (role, _) in enumerate(CASES)])
def test_every_role_validates(role: str, env: dict[str, str]) -> None:
    result = validate(COLLECTOR_ROLES[role], env)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(("role", "missing"), [("agent", "no resolvers"), ("gateway", "collector.instance.id")])
def test_a_tier_refuses_to_start_without_its_variable(role: str, missing: str) -> None:
    """No gateways to route to, or no name to tell a gateway's series apart: an error, not a silent default."""
    result = validate(COLLECTOR_ROLES[role], {})
    assert result.returncode != 0
    assert missing in result.stderr


@pytest.fixture(scope="module")
def two_tier() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(TWO_TIER_COMPOSE.read_text())
    return loaded


def test_two_tier_compose_file_follows_the_specification(two_tier: dict[str, Any]) -> None:
    jsonschema.validate(two_tier, compose_schema())


def test_two_tier_compose_runs_the_role_configs(two_tier: dict[str, Any]) -> None:
    services = two_tier["services"]
    roles = {
        "otel-collector": "agent",
        "otel-agent-b": "agent",
        "otel-gateway-1": "gateway",
        "otel-gateway-2": "gateway",
    }
    queue_volumes = {"otel-collector": "otelcol-queues"}  # the default stack's, from docker-compose.yml
    for name, role in roles.items():
        service = services[name]
        mounted = {f"./{path.relative_to(ROOT)}:/etc/otelcol/{path.name}:ro" for path in COLLECTOR_ROLES[role]}
        assert {volume for volume in service["volumes"] if volume.startswith("./")} == mounted, name
        # Each Collector's exporter queues in a volume of its own, owned by the Collector's user first.
        queues = [volume for volume in service["volumes"] if volume.endswith(":/var/lib/otelcol/queues")]
        if name != "otel-collector":
            assert len(queues) == 1, name
            queue_volumes[name] = queues[0].split(":")[0]
        assert (
            service["depends_on"].get("otelcol-queues-owner", {}).get("condition") == ("service_completed_successfully")
            or name == "otel-collector"
        ), name
        assert service["command"] == [f"--config=/etc/otelcol/{path.name}" for path in COLLECTOR_ROLES[role]], name
        assert COLLECTORS_DNS_NAME in service["networks"]["default"]["aliases"], name
        assert service["deploy"]["resources"]["limits"]["memory"], name
        assert "ports" not in service, f"{name}: only the default stack's otel-collector publishes ports"
    resolver = yaml.safe_load(services["otel-collector"]["environment"]["OTELCOL_GATEWAY_RESOLVER"])
    gateways = [name for name, role in roles.items() if role == "gateway"]
    assert resolver == {"static": {"hostnames": [f"{name}:4317" for name in gateways]}}
    for name in gateways:
        assert services[name]["hostname"] == name, "the host name is the gateway's collector.instance.id"
    assert len(set(queue_volumes.values())) == len(roles)
    owner = services["otelcol-queues-owner"]
    chowned = dict(volume.split(":") for volume in owner["volumes"])
    assert set(chowned) == set(queue_volumes.values())
    assert owner["command"][:2] == ["chown", "10001:10001"]
    assert set(owner["command"][2:]) == set(chowned.values())


def test_prometheus_finds_every_collector_under_one_name() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert COLLECTORS_DNS_NAME in compose["services"]["otel-collector"]["networks"]["default"]["aliases"]
    prometheus = yaml.safe_load((ROOT / "prometheus" / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in prometheus["scrape_configs"]}
    for job, port in (("otel-collector", 8889), ("otel-collector-internal", 8888)):
        [dns] = jobs[job]["dns_sd_configs"]
        assert (dns["names"], dns["type"], dns["port"]) == ([COLLECTORS_DNS_NAME], "A", port)
