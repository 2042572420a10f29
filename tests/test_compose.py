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

from compose_file import COMPOSE, InterpolationError, interpolate, load_compose, raw_compose
from grafana_queries import DATASOURCES, datasources, referenced_datasource_uids
from harness import ROOT
from harness.backends import COLLECTOR_ROLES
from harness.compose import BACKEND_ADDRESS, PUBLIC_ADDRESS, PUBLIC_SERVICES, address_variable, dotenv
from shop import grafana_check
from shop.settings import GatewaySettings, OrdersSettings
from tools import collector_binary

pytestmark = pytest.mark.unit

MANIFEST = ROOT / "otel-collector" / "builder-config.yaml"
COMPONENT_KINDS = ("receivers", "processors", "exporters", "connectors", "extensions")
LONG_RUNNING_WITHOUT_HEALTHCHECK = {"otel-collector"}  # distroless: gated by otel-collector-ready instead


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return load_compose(dotenv())


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


def published(service: dict[str, Any]) -> list[tuple[str, int]]:
    """(host address, host port) of each port an interpolated service publishes."""
    pairs = []
    for mapping in service.get("ports", []):
        host, port, _target = str(mapping).rsplit(":", 2)
        pairs.append((host, int(port)))
    return pairs


def with_env(**overrides: str) -> dict[str, Any]:
    """The compose file as compose reads it with ``.env`` and these variables (the shell's win over .env)."""
    return load_compose({**dotenv(), **overrides})


def test_every_variable_the_compose_file_reads_is_set_in_dotenv() -> None:
    names = set(re.findall(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)", COMPOSE.read_text()))
    assert names, "the pattern found nothing"
    assert names - dotenv().keys() == set()


ENV = {"SET": "v", "EMPTY": ""}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("${SET}", "v"),
        ("$SET/x", "v/x"),
        ("${UNSET}", ""),
        ("${SET:-d}", "v"),
        ("${UNSET:-d}", "d"),
        ("${EMPTY:-d}", "d"),
        ("${UNSET-d}", "d"),
        ("${EMPTY-d}", ""),
        ("${SET?e}", "v"),
        ("${EMPTY?e}", ""),
        ("${SET:+r}", "r"),
        ("${EMPTY:+r}", ""),
        ("${EMPTY+r}", "r"),
        ("${UNSET+r}", ""),
        ("${UNSET:-${SET}}", "v"),
        ("${UNSET:-${ALSO_UNSET:-deep}}/x", "deep/x"),
        ("${SET:?${UNSET?not evaluated}}", "v"),
        ("$$SET and $${SET}", "$SET and ${SET}"),
        ("${SET:-a}:8000:8000", "v:8000:8000"),
    ],
)
def test_interpolation_follows_the_compose_specification(text: str, expected: str) -> None:
    assert interpolate(text, ENV) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("${UNSET?must be set}", "required variable UNSET is missing a value: must be set"),
        ("${UNSET:?must be set}", "required variable UNSET is missing a value: must be set"),
        ("${EMPTY:?is ${SET}}", "required variable EMPTY is missing a value: is v"),
        ("costs $5", "a lone \\$"),
        ("${SET", "no closing brace"),
        ("${SET:x}", "invalid interpolation format"),
    ],
)
def test_interpolation_refuses_what_compose_refuses(text: str, message: str) -> None:
    with pytest.raises(InterpolationError, match=message):
        interpolate(text, ENV)


def test_interpolation_applies_to_parsed_values_not_keys_nor_yaml_text() -> None:
    # Interpolated before parsing, this password would become a mapping and a comment.
    password = "a: b #c $d"
    services = with_env(GRAFANA_ADMIN_PASSWORD=password)["services"]
    assert services["grafana"]["environment"]["GF_SECURITY_ADMIN_PASSWORD"] == password
    assert "GF_SECURITY_ADMIN_PASSWORD" in raw_compose()["services"]["grafana"]["environment"]


# Documentation addresses (RFC 5737) standing in for one of this machine's network addresses.
LAN = "192.0.2.10"
EVERYWHERE = "0.0.0.0"
LOOPBACK = "127.0.0.1"


def test_every_port_is_published_on_loopback_by_default(compose: dict[str, Any]) -> None:
    assert dotenv()[PUBLIC_ADDRESS] == dotenv()[BACKEND_ADDRESS] == LOOPBACK
    for name, service in compose["services"].items():
        for host, port in published(service):
            assert host == LOOPBACK, f"{name}: {port}"


def test_the_gateway_and_grafana_follow_the_public_address_and_every_other_port_the_backend_one() -> None:
    services = with_env(**{PUBLIC_ADDRESS: LAN, BACKEND_ADDRESS: LOOPBACK})["services"]
    where = {(name, host, port) for name, service in services.items() for host, port in published(service)}
    assert where == {
        ("gateway", LAN, 8000),
        ("grafana", LAN, 3000),
        ("prometheus", LOOPBACK, 9090),
        ("tempo", LOOPBACK, 3200),
        ("loki", LOOPBACK, 3100),
        ("otel-collector", LOOPBACK, 4317),
        ("otel-collector", LOOPBACK, 4318),
        ("load", LOOPBACK, 8089),  # Locust's UI starts and steers load: a backend
        ("postgres", LOOPBACK, 5432),
    }
    # The scripts (make smoke) find each service where the harness says compose puts it.
    for name, service in raw_compose()["services"].items():
        for port in service.get("ports", []):
            assert port.startswith("${" + address_variable(name) + ":"), f"{name}: {port}"


@pytest.mark.parametrize(("public", "backend"), [(EVERYWHERE, LOOPBACK), (LAN, LOOPBACK), (LOOPBACK, LAN)])
def test_no_backend_port_follows_the_public_address(public: str, backend: str) -> None:
    services = with_env(**{PUBLIC_ADDRESS: public, BACKEND_ADDRESS: backend})["services"]
    for name, service in services.items():
        expected = public if name in PUBLIC_SERVICES else backend
        assert {host for host, _ in published(service)} <= {expected}, name
    assert {name for name, service in services.items() if published(service)} > PUBLIC_SERVICES


@pytest.mark.parametrize("variable", [PUBLIC_ADDRESS, BACKEND_ADDRESS])
def test_an_empty_address_is_refused_rather_than_read_as_every_interface(variable: str) -> None:
    with pytest.raises(InterpolationError, match=f"required variable {variable} is missing a value"):
        with_env(**{variable: ""})


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


def test_grafana_anonymous_access_is_read_only_and_the_password_comes_from_dotenv(compose: dict[str, Any]) -> None:
    grafana = compose["services"]["grafana"]["environment"]
    assert grafana["GF_SECURITY_ADMIN_PASSWORD"] == dotenv()["GRAFANA_ADMIN_PASSWORD"]
    assert grafana["GF_AUTH_ANONYMOUS_ORG_ROLE"] == "Viewer"
    # The repository prints its default: the check must know it (the app cannot read .env).
    assert dotenv()["GRAFANA_ADMIN_PASSWORD"] in grafana_check.KNOWN_PASSWORDS
    assert grafana_check.ADDRESS_VARIABLE == PUBLIC_ADDRESS


def password_check_env(services: dict[str, Any]) -> dict[str, str]:
    check = services["grafana-password-check"]
    assert check["image"] == services["gateway"]["image"], "the services' image holds shop.grafana_check"
    assert check["command"] == ["python", "-m", "shop.grafana_check"]
    return {name: str(value) for name, value in check["environment"].items()}


def test_grafana_starts_only_after_the_check_passed_on_what_grafana_gets() -> None:
    services = with_env(**{PUBLIC_ADDRESS: LAN, "GRAFANA_ADMIN_PASSWORD": "a password of my own"})["services"]
    grafana = services["grafana"]
    assert grafana["depends_on"]["grafana-password-check"] == {"condition": "service_completed_successfully"}
    env = password_check_env(services)
    assert env[grafana_check.PASSWORD_VARIABLE] == grafana["environment"]["GF_SECURITY_ADMIN_PASSWORD"]
    assert {env[grafana_check.ADDRESS_VARIABLE]} == {host for host, _ in published(grafana)} == {LAN}


@pytest.mark.parametrize(
    ("anonymous", "refusal"),
    [("false", None), ("true", "GRAFANA_ANONYMOUS_VIEWERS is true and Grafana is published on 0.0.0.0")],
)
def test_grafana_beyond_loopback_refuses_anonymous_viewers(anonymous: str, refusal: str | None) -> None:
    services = with_env(
        **{
            PUBLIC_ADDRESS: EVERYWHERE,
            "GRAFANA_ADMIN_PASSWORD": "a password of my own",
            "GRAFANA_ANONYMOUS_VIEWERS": anonymous,
        }
    )["services"]
    env = password_check_env(services)
    assert env["GRAFANA_ANONYMOUS_VIEWERS"] == services["grafana"]["environment"]["GF_AUTH_ANONYMOUS_ENABLED"]
    reason = grafana_check.refusal(env)
    assert reason == refusal if refusal is None else str(reason).startswith(refusal), reason


@pytest.mark.parametrize(
    ("address", "password", "refusal"),
    [
        (LOOPBACK, "change-me", None),  # one laptop: as before
        (LOOPBACK, "", None),
        (EVERYWHERE, "change-me", "GRAFANA_ADMIN_PASSWORD is a published default and Grafana is published on 0.0.0.0"),
        (LAN, "admin", "GRAFANA_ADMIN_PASSWORD is a published default"),
        (LAN, "eleven char", "GRAFANA_ADMIN_PASSWORD is shorter than 12 characters"),
        (LAN, "", "GRAFANA_ADMIN_PASSWORD is shorter than 12 characters"),
        (EVERYWHERE, "twelve chars", "GRAFANA_ANONYMOUS_VIEWERS is true and Grafana is published on 0.0.0.0"),
        ("everywhere", "a password of my own", "PUBLIC_BIND_ADDRESS='everywhere' is not an IP address"),
    ],
)
def test_grafana_beyond_loopback_refuses_a_known_or_short_password_in_one_line(
    address: str, password: str, refusal: str | None
) -> None:
    services = with_env(**{PUBLIC_ADDRESS: address, "GRAFANA_ADMIN_PASSWORD": password})["services"]
    assert password_check_env(services)["GRAFANA_ANONYMOUS_VIEWERS"] == "true", "as .env ships it"
    assert_check_answers("shop.grafana_check", password_check_env(services), refusal)


def assert_check_answers(module: str, env: dict[str, str], refusal: str | None) -> None:
    """As compose runs a one-shot check: ``python -m MODULE`` with the service's environment; nothing on
    stdout, and either success or exit status 2 with one line that starts with ``refusal``."""
    result = subprocess.run(
        [sys.executable, "-m", module],
        env={"PYTHONPATH": str(ROOT / "apps"), **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.stdout == ""
    if refusal is None:
        assert (result.returncode, result.stderr) == (0, "")
    else:
        assert result.returncode == 2
        (line,) = result.stderr.splitlines()
        assert line.startswith(f"configuration error: {refusal}"), line


def gateway_env(services: dict[str, Any]) -> dict[str, str]:
    """What the gateway's process sees in compose: its image's ENV, then the service's environment."""
    dockerfile = (ROOT / "apps" / "Dockerfile").read_text().replace("\\\n", " ")
    image = {
        name: value
        for line in dockerfile.splitlines()
        if line.startswith("ENV ")
        for name, value in re.findall(r"(\w+)=(\S+)", line)
    }
    return {**image, **{name: str(value) for name, value in services["gateway"]["environment"].items()}}


@pytest.mark.parametrize(
    ("overrides", "honoured"),
    [
        ({}, True),  # one laptop: the demo keeps them
        ({BACKEND_ADDRESS: LAN}, True),
        ({PUBLIC_ADDRESS: EVERYWHERE}, False),
        ({PUBLIC_ADDRESS: LAN}, False),
        ({PUBLIC_ADDRESS: LAN, "GATEWAY_ALLOW_FAULT_HEADERS_OFF_LOOPBACK": "true"}, True),
        (
            {
                PUBLIC_ADDRESS: LAN,
                "GATEWAY_ALLOW_FAULT_HEADERS_OFF_LOOPBACK": "true",
                "GATEWAY_ALLOW_FAULT_HEADERS": "false",
            },
            False,
        ),
    ],
)
def test_fault_headers_beyond_loopback_need_the_second_switch(overrides: dict[str, str], honoured: bool) -> None:
    services = with_env(**overrides)["services"]
    env = gateway_env(services)
    settings = GatewaySettings.from_env(env)
    assert settings.honours_fault_headers is honoured
    # The gateway judges the address its port is really published on...
    assert {settings.public_address} == {host for host, _ in published(services["gateway"])}
    # ...since in its container it listens on every interface: without that address it counts as exposed.
    assert settings.server.host == EVERYWHERE
    del env[PUBLIC_ADDRESS]
    assert GatewaySettings.from_env(env).reachable_beyond_loopback


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


def test_order_service_runs_replicas_on_one_unpublished_postgresql(compose: dict[str, Any]) -> None:
    services = compose["services"]
    orders, postgres = services["order-service"], services["postgres"]
    assert int(orders["deploy"]["replicas"]) >= 2
    # Several containers of one service: compose names them, and none can claim a host port.
    assert "container_name" not in orders
    assert "ports" not in orders
    assert orders["depends_on"]["postgres"] == {"condition": "service_healthy"}
    database = postgres["environment"]
    url = orders["environment"]["ORDERS_DATABASE_URL"]
    expected = f"postgresql://{database['POSTGRES_USER']}:{database['POSTGRES_PASSWORD']}@postgres:5432/"
    assert url == expected + database["POSTGRES_DB"]
    assert OrdersSettings.from_env({"ORDERS_DATABASE_URL": url}).database_url == url
    assert postgres["image"] == f"postgres:{dotenv()['POSTGRES_VERSION']}"
    assert any(volume.endswith(":/var/lib/postgresql/data") for volume in postgres["volumes"])
    # The gateway opens a connection per call, so that its calls reach every replica.
    assert services["gateway"]["environment"]["ORDERS_SPREAD_OVER_REPLICAS"] == "true"


def test_prometheus_scrapes_each_order_service_replica_as_its_own_target() -> None:
    prometheus = yaml.safe_load((ROOT / "prometheus" / "prometheus.yml").read_text())
    (job,) = (job for job in prometheus["scrape_configs"] if job["job_name"] == "shop-services")
    (dns,) = job["dns_sd_configs"]
    assert (dns["names"], dns["type"], dns["port"]) == (["order-service"], "A", 8001)
    (relabel,) = job["relabel_configs"]
    assert (relabel["source_labels"], relabel["regex"]) == (["__meta_dns_name"], "order-service")
    assert (relabel["target_label"], relabel["replacement"]) == ("service_name", "order-service")


@pytest.mark.parametrize(
    ("address", "password", "refusal"),
    [
        (LOOPBACK, "change-me", None),
        (LAN, "change-me", "POSTGRES_PASSWORD is a published default and PostgreSQL is published on 192.0.2.10"),
        (EVERYWHERE, "short", "POSTGRES_PASSWORD is shorter than 12 characters"),
        (LAN, "a password of my own", None),
    ],
)
def test_postgresql_beyond_loopback_refuses_a_known_or_short_password(
    address: str, password: str, refusal: str | None
) -> None:
    services = with_env(**{BACKEND_ADDRESS: address, "POSTGRES_PASSWORD": password})["services"]
    check = services["postgres-password-check"]
    assert services["postgres"]["depends_on"]["postgres-password-check"] == {
        "condition": "service_completed_successfully"
    }
    assert check["command"] == ["python", "-m", "shop.postgres_check"]
    env = {name: str(value) for name, value in check["environment"].items()}
    assert env["POSTGRES_PASSWORD"] == services["postgres"]["environment"]["POSTGRES_PASSWORD"]
    assert {env["BACKEND_BIND_ADDRESS"]} == {host for host, _ in published(services["postgres"])}
    assert_check_answers("shop.postgres_check", env, refusal)
