"""Contract tests for deploy/kubernetes, since no cluster runs here.

The manifests are validated offline and strictly against the Kubernetes 1.35 schemas, then checked
against the rest of the repository: the settings the services read, their ports and probes, the pinned
images of .env, the Collector configs they mount, and the Prometheus jobs of compose. The Helm values are
rendered by hand (docs/scaling.md#kubernetes); here they are checked for the pins and names they share.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from dataclasses import fields, is_dataclass
from functools import cache
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml

from harness import ROOT
from harness.compose import dotenv
from harness.kubernetes import (
    CHARTS,
    CLOUDNATIVE_PG_VERSION,
    HELM_VALUES,
    KUBERNETES_VERSION,
    NAMESPACE,
    Outcome,
    documents,
    manifest_documents,
    operator_crd_schemas,
    operator_module,
    operator_release,
    prometheus_rule,
    validate,
    validate_manifest,
)
from k8s_charts import helm_template
from shop.settings import DEFAULT_PORTS, GatewaySettings, OrdersSettings, PaymentsSettings
from tools import collector_binary, require

pytestmark = pytest.mark.unit

ENV = dotenv()

SHOP_SETTINGS = {"gateway": GatewaySettings, "order-service": OrdersSettings, "payment-service": PaymentsSettings}
COLLECTORS = ("otel-agent", "otel-gateway")
# Variables the OpenTelemetry SDK reads itself (apps/shop/settings.py leaves them to it).
SDK_VARIABLES = {"OTEL_RESOURCE_ATTRIBUTES", "OTEL_METRIC_EXPORT_INTERVAL"}
# Reachable from the namespace only (network-policy.yaml): the Collectors' ingest, the internal services
# and the backends. The gateway and Grafana are the two doors, as in compose.
INTERNAL = {"otel-gateway", "order-service", "payment-service", "tempo", "loki", "prometheus"}


def objects(kind: str) -> dict[str, dict[str, Any]]:
    return {doc["metadata"]["name"]: doc for _, doc in manifest_documents() if doc["kind"] == kind}


def workloads() -> dict[str, dict[str, Any]]:
    return objects("Deployment") | objects("DaemonSet")


def container(workload: dict[str, Any]) -> dict[str, Any]:
    containers = workload["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1, f"{workload['metadata']['name']}: one container expected"
    result: dict[str, Any] = containers[0]
    return result


def env_of(workload: dict[str, Any]) -> dict[str, str]:
    """The container's variables, from its ConfigMaps first, then its own env (which wins, as in Kubernetes)."""
    configmaps = objects("ConfigMap")
    spec = container(workload)
    values: dict[str, str] = {}
    for source in spec.get("envFrom", []):
        values |= configmaps[source["configMapRef"]["name"]]["data"]
    # A variable from a Secret stands as "secret NAME/KEY": its value is the cluster's.
    values |= {
        item["name"]: item["value"] if "value" in item else secret_reference(item["valueFrom"])
        for item in spec.get("env", [])
    }
    return values


def secret_reference(value_from: dict[str, Any]) -> str:
    reference = value_from["secretKeyRef"]
    return f"secret {reference['name']}/{reference['key']}"


@cache
def cloudnative_pg() -> Path:
    """CloudNativePG's Go module at the pinned release (Go fetches it: CI has Go)."""
    go = require(shutil.which("go"), "Go fetches CloudNativePG's CRDs and release manifest, which the manifests meet")
    return operator_module(go)


@cache
def crd_schemas() -> dict[tuple[str, str], dict[str, Any]]:
    return operator_crd_schemas(cloudnative_pg())


def settings_variables(settings: Any) -> set[str]:
    """The variables a settings instance reads, nested settings included (as read_env walks them)."""
    names = set()
    for settings_field in fields(settings):
        if "variable" in settings_field.metadata:
            names.add(settings_field.metadata["variable"])
        elif is_dataclass(value := getattr(settings, settings_field.name)):
            names |= settings_variables(value)
    return names


def helm_values(release: str) -> dict[str, Any]:
    values: dict[str, Any] = yaml.safe_load((HELM_VALUES / f"{release}.yaml").read_text())
    return values


def image_tag(image: str) -> str:
    return image.rpartition(":")[2]


def test_every_manifest_validates_strictly_against_kubernetes_1_35_or_its_operators_crd() -> None:
    checked = [(path.name, validate_manifest(document, crd_schemas())) for path, document in manifest_documents()]
    assert len(checked) >= 10, "deploy/kubernetes holds the services, both Collector tiers and the policy"
    problems = [
        f"{file}: {result.name}: {result.outcome.value} {result.message}"
        for file, result in checked
        if result.outcome is not Outcome.PASSED
    ]
    assert problems == []
    assert {document["metadata"].get("namespace", NAMESPACE) for _, document in manifest_documents()} == {NAMESPACE}


def test_strict_validation_refuses_an_unknown_field() -> None:
    deployment = next(doc for _, doc in manifest_documents() if doc["kind"] == "Deployment")
    typo = deployment | {"spec": deployment["spec"] | {"replica": 1}}
    result = validate(typo)
    assert result.outcome == Outcome.INVALID
    assert "replica" in result.message


def test_strict_validation_refuses_an_unknown_field_of_the_database_cluster() -> None:
    (cluster,) = objects("Cluster").values()
    typo = cluster | {"spec": cluster["spec"] | {"instance": 2}}
    result = validate_manifest(typo, crd_schemas())
    assert result.outcome == Outcome.INVALID
    assert "instance" in result.message
    nested = cluster | {"spec": cluster["spec"] | {"bootstrap": {"initdb": {"databse": "shop"}}}}
    assert validate_manifest(nested, crd_schemas()).outcome == Outcome.INVALID
    # A custom resource of a kind no operator here defines is not taken as checked.
    unknown = {"apiVersion": "example.com/v1", "kind": "Database", "metadata": {"name": "orders"}}
    assert validate_manifest(unknown, crd_schemas()).outcome == Outcome.NO_SCHEMA


@pytest.mark.parametrize("name", sorted(SHOP_SETTINGS))
def test_each_service_gets_only_variables_its_settings_read(name: str) -> None:
    env = env_of(workloads()[name])
    unknown = set(env) - settings_variables(SHOP_SETTINGS[name]()) - SDK_VARIABLES
    assert unknown == set(), f"{name} sets variables nothing reads"
    assert env["PORT"] == str(DEFAULT_PORTS[name])
    assert env["SERVICE_VERSION"] == ENV["SHOP_VERSION"]


@pytest.mark.parametrize("name", sorted(SHOP_SETTINGS))
def test_each_service_listens_where_its_probes_and_service_point(name: str) -> None:
    spec = container(workloads()[name])
    assert image_tag(spec["image"]) == ENV["SHOP_VERSION"]
    (port,) = spec["ports"]
    assert (port["name"], port["containerPort"]) == ("http", DEFAULT_PORTS[name])
    assert spec["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert spec["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    (service_port,) = objects("Service")[name]["spec"]["ports"]
    assert (service_port["port"], service_port["targetPort"]) == (DEFAULT_PORTS[name], "http")


def test_services_call_each_other_by_their_service_names() -> None:
    assert env_of(workloads()["gateway"])["ORDERS_URL"] == f"http://order-service:{DEFAULT_PORTS['order-service']}"
    assert env_of(workloads()["order-service"])["PAYMENTS_URL"] == (
        f"http://payment-service:{DEFAULT_PORTS['payment-service']}"
    )
    # The agent's Service, on the OTLP/HTTP port the SDK's exporter uses, and the one for browser spans.
    agent = objects("Service")["otel-agent"]
    assert agent["spec"]["internalTrafficPolicy"] == "Local"
    assert {port["port"] for port in agent["spec"]["ports"]} == {4317, 4318, 4319}
    assert env_of(workloads()["gateway"])["BROWSER_OTLP_ENDPOINT"] == "http://otel-agent:4319"
    for name in SHOP_SETTINGS:
        assert env_of(workloads()[name])["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://otel-agent:4318"


@pytest.mark.parametrize("name", sorted(workloads()))
def test_every_pod_runs_as_non_root_with_the_restricted_settings_and_bounded_memory(name: str) -> None:
    pod = workloads()[name]["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False
    spec = container(workloads()[name])
    assert spec["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
    }
    assert {"cpu", "memory"} <= set(spec["resources"]["requests"])
    assert "memory" in spec["resources"]["limits"]
    assert all("hostPort" not in port for port in spec["ports"])


def test_order_service_runs_replicas_on_the_operators_database() -> None:
    orders = workloads()["order-service"]
    (cluster,) = objects("Cluster").values()
    name = cluster["metadata"]["name"]
    assert orders["spec"]["replicas"] >= 2
    assert orders["spec"]["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1},
    }
    # The operator writes the application's credentials to the Secret <cluster>-app; uri is the whole URL.
    assert env_of(orders)["ORDERS_DATABASE_URL"] == f"secret {name}-app/uri"
    operator_uri = f"postgresql://shop:{'x' * 64}@{name}-rw.{NAMESPACE}:5432/shop"
    assert OrdersSettings.from_env({"ORDERS_DATABASE_URL": operator_uri}).database_url == operator_uri
    assert cluster["spec"]["bootstrap"]["initdb"] == {"database": "shop", "owner": "shop"}
    # No state of its own: the only volume is the scratch /tmp.
    assert [volume["name"] for volume in orders["spec"]["template"]["spec"]["volumes"]] == ["tmp"]
    (budget,) = objects("PodDisruptionBudget").values()
    assert budget["spec"]["selector"] == orders["spec"]["selector"]
    assert 1 <= budget["spec"]["minAvailable"] < orders["spec"]["replicas"]
    # And the gateway opens a connection per call, which the Service balances over the replicas.
    assert env_of(workloads()["gateway"])["ORDERS_SPREAD_OVER_REPLICAS"] == "true"


def test_the_database_cluster_is_replicated_and_runs_the_postgresql_of_compose() -> None:
    (cluster,) = objects("Cluster").values()
    assert cluster["spec"]["instances"] >= 2
    assert cluster["spec"]["enablePDB"] is True
    image, _, tag = cluster["spec"]["imageName"].rpartition(":")
    assert image == "ghcr.io/cloudnative-pg/postgresql"
    assert tag.split("-")[0] == ENV["POSTGRES_VERSION"].split("-")[0]
    assert re.fullmatch(r"\d+\.\d+\.\d+", CLOUDNATIVE_PG_VERSION)


def test_only_order_service_the_operator_and_the_instances_reach_the_database() -> None:
    (cluster,) = objects("Cluster").values()
    instances = {"cnpg.io/cluster": cluster["metadata"]["name"]}
    policy = objects("NetworkPolicy")["orders-db"]
    assert policy["spec"]["podSelector"] == {"matchLabels": instances}
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    admitted = {
        (json_key(source), port["port"])
        for rule in policy["spec"]["ingress"]
        for source in rule["from"]
        for port in rule["ports"]
    }
    order_service = {"podSelector": {"matchLabels": {"app.kubernetes.io/name": "order-service"}}}
    # The operator's pods as its release manifest installs them.
    (manager,) = (document for document in operator_release(cloudnative_pg()) if document["kind"] == "Deployment")
    operator = {
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": manager["metadata"]["namespace"]}},
        "podSelector": {"matchLabels": manager["spec"]["template"]["metadata"]["labels"]},
    }
    assert admitted == {
        (json_key(order_service), 5432),
        (json_key(operator), 5432),
        (json_key(operator), 8000),
        (json_key({"podSelector": {"matchLabels": instances}}), 5432),
        (json_key({"podSelector": {"matchLabels": instances}}), 8000),
    }
    # The namespace-wide policy does not select the database's pods, so it admits nothing more to them.
    internal = objects("NetworkPolicy")["internal-from-namespace-only"]
    (expression,) = internal["spec"]["podSelector"]["matchExpressions"]
    assert expression["key"] not in instances


def json_key(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


def test_the_gateway_tier_is_headless_and_the_agents_resolve_it_by_dns() -> None:
    service = objects("Service")["otel-gateway"]
    assert service["spec"]["clusterIP"] == "None"
    assert service["spec"]["selector"] == {"app.kubernetes.io/name": "otel-gateway"}
    # The port as text: the resolver refuses a number ("expected type 'string', got unconvertible type 'int'").
    expected = {"dns": {"hostname": f"otel-gateway.{NAMESPACE}.svc.cluster.local", "port": "4317"}}
    assert yaml.safe_load(env_of(workloads()["otel-agent"])["OTELCOL_GATEWAY_RESOLVER"]) == expected
    assert 4317 in {port["port"] for port in service["spec"]["ports"]}
    # The chart's way: the same name, the same resolver.
    assert helm_values("otel-gateway")["fullnameOverride"] == "otel-gateway"
    assert helm_values("otel-gateway")["service"]["clusterIP"] == "None"
    (resolver,) = helm_values("otel-agent")["extraEnvs"]
    assert (resolver["name"], yaml.safe_load(resolver["value"])) == ("OTELCOL_GATEWAY_RESOLVER", expected)


def collector_configs(args: list[str]) -> list[Path]:
    return [ROOT / "otel-collector" / PurePosixPath(arg.removeprefix("--config=")).name for arg in args]


@pytest.mark.parametrize("name", COLLECTORS)
def test_each_collector_tier_mounts_the_repository_configs_and_sets_what_they_require(name: str) -> None:
    workload = workloads()[name]
    spec = container(workload)
    assert image_tag(spec["image"]) == ENV["OTELCOL_VERSION"]
    assert helm_values(name)["image"]["tag"] == ENV["OTELCOL_VERSION"]
    assert helm_values(name)["command"]["extraArgs"] == spec["args"]
    configs = collector_configs(spec["args"])
    assert configs[0].name == "config.yaml"
    missing = [path.name for path in configs if not path.exists()]
    if missing:
        pytest.skip(f"otel-collector/{', '.join(missing)} not in this tree (the two-tier configs, issue 13)")
    # A variable with no default in a config the tier loads must be set (HOSTNAME is the pod's name).
    required = {
        name for path in configs for name in re.findall(r"\$\{env:([A-Za-z_][A-Za-z0-9_]*)\}", path.read_text())
    }
    assert required - set(env_of(workload)) - {"HOSTNAME"} == set()
    # And the built Collector takes the tier's configs with exactly that environment.
    env = {"PATH": "/usr/bin:/bin", "HOSTNAME": f"{name}-0"} | env_of(workload)
    config_args = [f"--config={path}" for path in configs]
    validation = subprocess.run(
        [collector_binary(), "validate", *config_args], capture_output=True, text=True, env=env, timeout=60, check=False
    )
    assert validation.returncode == 0, validation.stderr[-2000:]


def test_the_network_policy_admits_only_the_namespace_to_the_internal_parts() -> None:
    policy = objects("NetworkPolicy")["internal-from-namespace-only"]
    (expression,) = policy["spec"]["podSelector"]["matchExpressions"]
    assert (expression["key"], expression["operator"]) == ("app.kubernetes.io/name", "In")
    assert set(expression["values"]) == INTERNAL
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    assert policy["spec"]["ingress"] == [{"from": [{"podSelector": {}}]}]
    # The labels it selects are those the pods carry.
    for name in INTERNAL & set(workloads()):
        assert workloads()[name]["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/name"] == name
    assert all(
        service["spec"]["type"] == "ClusterIP" for service in objects("Service").values() if "type" in service["spec"]
    )


def test_the_agents_take_browser_spans_from_the_gateway_only() -> None:
    ingress = objects("NetworkPolicy")["otel-agent-ingest"]["spec"]["ingress"]
    agent_ports = {port["name"] for port in container(workloads()["otel-agent"])["ports"]}
    from_namespace = {port["port"] for port in ingress[0]["ports"]}
    assert ingress[0]["from"] == [{"podSelector": {}}]
    assert from_namespace == agent_ports - {"otlp-browser"}
    assert ingress[1] == {
        "from": [{"podSelector": {"matchLabels": {"app.kubernetes.io/name": "gateway"}}}],
        "ports": [{"port": "otlp-browser"}],
    }


def test_helm_values_pin_the_images_of_env() -> None:
    assert helm_values("tempo")["tempo"]["tag"] == ENV["TEMPO_VERSION"]
    assert helm_values("loki")["loki"]["image"]["tag"] == ENV["LOKI_VERSION"]
    assert helm_values("grafana")["image"]["tag"] == ENV["GRAFANA_VERSION"]
    prometheus = helm_values("kube-prometheus-stack")["prometheus"]["prometheusSpec"]
    assert prometheus["image"]["tag"] == ENV["PROMETHEUS_VERSION"]
    assert {chart.values.name for chart in CHARTS} == {path.name for path in HELM_VALUES.glob("*.yaml")}
    for chart in CHARTS:
        assert all((ROOT / path).is_file() for path in chart.set_files.values())


def test_prometheus_is_reached_by_the_name_grafana_provisioning_uses() -> None:
    service = objects("Service")["prometheus"]
    values = helm_values("kube-prometheus-stack")
    # kube-prometheus-stack names the Prometheus resource <fullname>-prometheus; the operator labels its pods so.
    assert service["spec"]["selector"]["operator.prometheus.io/name"] == f"{values['fullnameOverride']}-prometheus"
    assert service["spec"]["ports"][0]["port"] == 9090
    datasources = (ROOT / "grafana" / "provisioning" / "datasources" / "datasources.yaml").read_text()
    assert {"http://prometheus:9090", "http://tempo:3200", "http://loki:3100"} <= set(
        re.findall(r"url: (\S+)", datasources)
    )
    assert helm_values("tempo")["fullnameOverride"] == "tempo"
    assert helm_values("loki")["fullnameOverride"] == "loki"


def test_prometheus_in_kubernetes_has_the_jobs_of_compose() -> None:
    compose_config = yaml.safe_load((ROOT / "prometheus" / "prometheus.yml").read_text())
    compose = {job["job_name"]: job for job in compose_config["scrape_configs"]}
    spec = helm_values("kube-prometheus-stack")["prometheus"]["prometheusSpec"]
    kubernetes = {job["job_name"]: job for job in spec["additionalScrapeConfigs"]}
    # Prometheus's own job is the chart's (a ServiceMonitor).
    assert set(kubernetes) == set(compose) - {"prometheus"}
    for name, job in kubernetes.items():
        for key in ("honor_labels", "metric_relabel_configs", "metrics_path", "scrape_interval"):
            assert job.get(key) == compose[name].get(key), f"{name}: {key}"
    assert spec["scrapeInterval"] == compose_config["global"]["scrape_interval"]
    assert "exemplar-storage" in spec["enableFeatures"]


def test_loki_chart_checks_the_schema_loki_reads() -> None:
    loki = yaml.safe_load((ROOT / "loki" / "loki.yaml").read_text())["schema_config"]
    for config in loki["configs"]:
        config["from"] = str(config["from"])
    assert helm_values("loki")["loki"]["schemaConfig"] == loki


def test_documents_skips_empty_documents() -> None:
    assert documents("---\n# a comment only\n---\nkind: A\n") == [{"kind": "A"}]


def test_prometheus_rules_become_prometheus_rule_objects_unchanged() -> None:
    paths = sorted((ROOT / "prometheus" / "rules").glob("*.yml"))
    assert paths
    for path in paths:
        rule = prometheus_rule(path)
        # A custom resource: scripts/k8s_charts.py checks it against kube-prometheus-stack's CRD.
        assert validate(rule).outcome is Outcome.NO_SCHEMA
        assert rule["spec"] == yaml.safe_load(path.read_text())
        assert rule["metadata"]["namespace"] == NAMESPACE


def test_helm_template_is_always_told_the_kubernetes_version_and_the_repository_files() -> None:
    for chart in CHARTS:
        command = helm_template("helm", chart, Path("charts") / chart.chart)
        assert command[command.index("--kube-version") + 1] == KUBERNETES_VERSION
        assert command[command.index("--values") + 1] == str(chart.values)
        assert command.count("--set-file") == len(chart.set_files)


def test_the_tempo_post_renderer_drops_only_the_flag_tempo_3_refuses() -> None:
    (tempo,) = (chart for chart in CHARTS if chart.release == "tempo")
    rendered = "      - args:\n        - -config.file=/conf/tempo.yaml\n        - -mem-ballast-size-mbs=1024\n"
    kept = subprocess.run(tempo.post_renderer, input=rendered, capture_output=True, text=True, check=True).stdout
    assert kept == "      - args:\n        - -config.file=/conf/tempo.yaml\n"
