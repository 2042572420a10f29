"""Contract tests for what docker compose runs, since no Docker engine runs here.

They check the compose file against the Compose specification's schema and against the rest of the
repository: mounted files, pinned images, the Collector release, health checks, bound ports, and the
Grafana provisioning that ties the data sources together.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from grafana_queries import DATASOURCES, datasources, referenced_datasource_uids
from harness import ROOT
from harness.backends import COLLECTOR_ROLES
from harness.compose import dotenv
from tools import collector_binary

pytestmark = pytest.mark.unit

COMPOSE = ROOT / "docker-compose.yml"
MANIFEST = ROOT / "otel-collector" / "builder-config.yaml"
COMPONENT_KINDS = ("receivers", "processors", "exporters", "connectors", "extensions")
LONG_RUNNING_WITHOUT_HEALTHCHECK = {"otel-collector"}  # distroless: gated by otel-collector-ready instead


def interpolate(text: str, env: dict[str, str]) -> str:
    def value(match: re.Match[str]) -> str:
        name = match.group(1)
        assert name in env, f"${{{name}}} is not set in .env"
        return env[name]

    return re.sub(r"\$\{([A-Z0-9_]+)\}", value, text)


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(interpolate(COMPOSE.read_text(), dotenv()))
    return loaded


def compose_schema() -> dict[str, Any]:
    schema_file = resources.files("check_jsonschema.builtin_schemas.vendor") / "compose-spec.json"
    loaded: dict[str, Any] = json.loads(schema_file.read_text())
    return loaded


def test_compose_file_follows_the_compose_specification(compose: dict[str, Any]) -> None:
    jsonschema.validate(yaml.safe_load(COMPOSE.read_text()), compose_schema())
    jsonschema.validate(compose, compose_schema())


def test_every_mounted_file_and_build_context_exists(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (ROOT / source).exists(), f"{name} mounts missing {source}"
            else:
                assert source in compose["volumes"], f"{name} uses undeclared volume {source}"
        if "build" in service:
            assert (ROOT / service["build"]["context"] / "Dockerfile").exists()


def test_every_image_is_pinned(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        image = service["image"]
        repository, _, tag = image.rpartition(":")
        assert repository, f"{name}: {image} has no tag"
        assert tag not in {"", "latest"}, f"{name}: {image}"
        assert re.search(r"\d", tag), f"{name}: {image} is not a version"
    dockerfile = (ROOT / "apps" / "Dockerfile").read_text()
    assert "FROM ${PYTHON_IMAGE}" in dockerfile
    assert re.fullmatch(r"python:3\.11\.\d+-slim-\w+", dotenv()["PYTHON_IMAGE"])


def test_collector_image_is_the_release_built_here(compose: dict[str, Any]) -> None:
    manifest = yaml.safe_load(MANIFEST.read_text())
    release = manifest["dist"]["version"]
    assert compose["services"]["otel-collector"]["image"] == f"otel/opentelemetry-collector-contrib:{release}"
    for kind in COMPONENT_KINDS:
        for component in manifest[kind]:
            assert component["gomod"].endswith(f" v{release}"), component


def test_builder_manifest_has_exactly_the_components_the_configs_use() -> None:
    configs = {path for paths in COLLECTOR_ROLES.values() for path in paths}
    used = {
        (kind, name.split("/")[0])
        for config in map(yaml.safe_load, (path.read_text() for path in configs))
        for kind in COMPONENT_KINDS
        for name in config.get(kind) or {}
    }
    listing = subprocess.run(
        [collector_binary(), "components"], capture_output=True, text=True, timeout=60, check=True
    ).stdout
    components = yaml.safe_load(listing)
    built = {(kind, entry["name"]) for kind in COMPONENT_KINDS for entry in components.get(kind) or []}
    assert built == used


def test_published_ports_bind_to_loopback_by_default(compose: dict[str, Any]) -> None:
    assert dotenv()["BIND_ADDRESS"] == "127.0.0.1"
    raw = yaml.safe_load(COMPOSE.read_text())
    for name, service in raw["services"].items():
        for port in service.get("ports", []):
            assert port.startswith("${BIND_ADDRESS}:"), f"{name}: {port}"


def test_services_start_in_order_with_limits(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name, service in services.items():
        one_shot = service.get("restart") == "no"
        if not one_shot:
            assert service["deploy"]["resources"]["limits"]["memory"], name
        if not one_shot and name not in LONG_RUNNING_WITHOUT_HEALTHCHECK:
            assert "healthcheck" in service, name
        for dependency, condition in service.get("depends_on", {}).items():
            assert dependency in services, f"{name} depends on unknown {dependency}"
            target = services[dependency]
            expected = (
                "service_completed_successfully"
                if target.get("restart") == "no"
                else "service_healthy"
                if "healthcheck" in target
                else "service_started"
            )
            assert condition["condition"] == expected, f"{name} -> {dependency}"
    for app in ("gateway", "order-service", "payment-service"):
        assert "otel-collector-ready" in services[app]["depends_on"]


def test_grafana_anonymous_access_is_read_only_and_the_password_comes_from_dotenv() -> None:
    raw = yaml.safe_load(COMPOSE.read_text())["services"]["grafana"]["environment"]
    assert raw["GF_SECURITY_ADMIN_PASSWORD"] == "${GRAFANA_ADMIN_PASSWORD}"
    assert raw["GF_AUTH_ANONYMOUS_ORG_ROLE"] == "Viewer"
    assert dotenv()["GRAFANA_ADMIN_PASSWORD"]


def test_every_referenced_datasource_uid_exists() -> None:
    uids = {source["uid"] for source in datasources()}
    assert uids == {"prometheus", "tempo", "loki"}
    assert referenced_datasource_uids() <= uids


def test_provisioning_writes_literal_dollars_as_double_dollars() -> None:
    # Grafana expands $VAR and ${VAR} from its environment in provisioning files.
    text = DATASOURCES.read_text()
    single = re.findall(r"(?<!\$)\$(?!\$)\{?\w", text)
    assert single == [], single


def test_loki_derived_field_matches_the_trace_id_label() -> None:
    [loki] = [source for source in datasources() if source["uid"] == "loki"]
    [field] = loki["jsonData"]["derivedFields"]
    assert field["matcherType"] == "label"
    assert field["matcherRegex"] == "trace_id"
    assert field["datasourceUid"] == "tempo"
    [prometheus] = [source for source in datasources() if source["uid"] == "prometheus"]
    assert prometheus["jsonData"]["exemplarTraceIdDestinations"] == [{"name": "trace_id", "datasourceUid": "tempo"}]


def test_committed_dashboards_are_what_the_generator_makes(tmp_path: Path) -> None:
    generator = [sys.executable, str(ROOT / "grafana" / "dashboards.py"), str(tmp_path)]
    subprocess.run(generator, check=True, timeout=60, capture_output=True)
    committed = sorted(path.name for path in (ROOT / "grafana" / "dashboards").glob("*.json"))
    assert committed == sorted(path.name for path in tmp_path.glob("*.json"))
    for name in committed:
        assert (ROOT / "grafana" / "dashboards" / name).read_text() == (tmp_path / name).read_text(), (
            f"{name} is stale: run `make dashboards`"
        )


def test_tempo_and_loki_configs_match_the_design() -> None:
    tempo = yaml.safe_load((ROOT / "tempo" / "tempo.yaml").read_text())
    protocols = tempo["distributor"]["receivers"]["otlp"]["protocols"]
    assert protocols["grpc"]["endpoint"].startswith("0.0.0.0:")
    assert protocols["http"]["endpoint"].startswith("0.0.0.0:")
    assert "metrics_generator" not in tempo, "span metrics come from the Collector"
    assert tempo.get("stream_over_http_enabled") is True
    loki = yaml.safe_load((ROOT / "loki" / "loki.yaml").read_text())
    assert loki["limits_config"]["allow_structured_metadata"] is True
    assert any(config["schema"] == "v13" and config["store"] == "tsdb" for config in loki["schema_config"]["configs"])


def test_load_service_is_opt_in_and_runs_the_locust_release_make_load_uses(compose: dict[str, Any]) -> None:
    load = compose["services"]["load"]
    assert load["profiles"] == ["load"], "docker compose up -d must stay lean"
    pinned = re.search(r"^locust==(\S+)", (ROOT / "requirements-dev.txt").read_text(), re.M)
    assert pinned is not None
    assert load["image"] == f"locustio/locust:{pinned.group(1)}"
    assert "./load/locustfile.py:/mnt/load/locustfile.py:ro" in load["volumes"]
    assert "./harness:/mnt/load/harness:ro" in load["volumes"]
    assert load["environment"]["PYTHONPATH"] == "/mnt/load", "the locustfile imports harness.orders"
    assert load["command"][:2] == ["-f", "/mnt/load/locustfile.py"]
    assert "http://gateway:8000" in load["command"]
