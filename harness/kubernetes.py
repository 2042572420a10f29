"""The Kubernetes deployment (deploy/kubernetes): its manifests, the charts its Helm values are for, and
offline validation against the Kubernetes JSON schemas that the PyPI package kubernetes-validate ships.

``tests/test_kubernetes.py`` validates the manifests in CI; ``scripts/k8s_charts.py`` renders the Helm
values with a helm binary and charts fetched by hand and validates the output the same way.
"""

from __future__ import annotations

import copy
import enum
import json
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import yaml

from harness import ROOT

# The Kubernetes release the manifests and the rendered charts are checked against (and helm's --kube-version).
KUBERNETES_VERSION = "1.35.0"
# Everything of the stack lives in one namespace (deploy/kubernetes/namespace.yaml).
NAMESPACE = "shop"
MANIFESTS = ROOT / "deploy" / "kubernetes"
HELM_VALUES = MANIFESTS / "helm"
# The CloudNativePG operator that runs the orders database (deploy/kubernetes/postgres.yaml). Its CRDs are
# in its Go module (config/crd/bases), which the Go module proxy serves: the manifests are validated
# against them at exactly this release.
CLOUDNATIVE_PG_MODULE = "github.com/cloudnative-pg/cloudnative-pg"
CLOUDNATIVE_PG_VERSION = "1.30.1"


@dataclass(frozen=True)
class Chart:
    """One ``helm template`` of a values file in deploy/kubernetes/helm."""

    release: str
    chart: str
    version: str
    # Where the chart's source was fetched from (GitHub owner/name; the tag is <chart>-<version>).
    repository: str
    # --set-file KEY=PATH: the repository's own config files, so that they stay the one copy.
    set_files: dict[str, str] = field(default_factory=dict)
    # A command that edits the rendered manifests (helm --post-renderer), with its arguments.
    post_renderer: tuple[str, ...] = ()
    include_crds: bool = False

    @property
    def values(self) -> Path:
        return HELM_VALUES / f"{self.release}.yaml"


OTEL_CHARTS = "open-telemetry/opentelemetry-helm-charts"
GRAFANA_CHARTS = "grafana-community/helm-charts"
PROMETHEUS_CHARTS = "prometheus-community/helm-charts"

CHARTS = (
    Chart("otel-agent", "opentelemetry-collector", "0.170.0", OTEL_CHARTS),
    Chart("otel-gateway", "opentelemetry-collector", "0.170.0", OTEL_CHARTS),
    # The chart passes -mem-ballast-size-mbs, which Tempo 3 no longer has (helm/tempo.yaml says more).
    Chart(
        "tempo",
        "tempo",
        "2.2.4",
        GRAFANA_CHARTS,
        set_files={"config": "tempo/tempo.yaml"},
        post_renderer=("sed", "/-mem-ballast-size-mbs=/d"),
    ),
    Chart("loki", "loki", "18.11.0", GRAFANA_CHARTS, set_files={"loki.config": "loki/loki.yaml"}),
    Chart("grafana", "grafana", "12.11.1", GRAFANA_CHARTS),
    Chart("kube-prometheus-stack", "kube-prometheus-stack", "88.5.3", PROMETHEUS_CHARTS, include_crds=True),
)


class Outcome(enum.Enum):
    PASSED = "passed"
    INVALID = "invalid"
    # A custom resource: kubernetes-validate has schemas for Kubernetes' own kinds only.
    NO_SCHEMA = "no schema"


@dataclass(frozen=True)
class Validation:
    document: dict[str, Any]
    outcome: Outcome
    message: str = ""

    @property
    def name(self) -> str:
        return f"{self.document.get('kind')}/{self.document.get('metadata', {}).get('name')}"


class _Loader(yaml.SafeLoader):
    """YAML 1.1 reads a lone "=" as the "value" type, which PyYAML cannot construct; in a CRD's enum it is text."""


def _text(loader: yaml.SafeLoader, node: yaml.Node) -> Any:
    assert isinstance(node, yaml.ScalarNode), "only a scalar can be the value type"
    return loader.construct_scalar(node)


_Loader.add_constructor("tag:yaml.org,2002:value", _text)


def documents(text: str) -> list[dict[str, Any]]:
    """The non-empty YAML documents of a manifest file."""
    # _Loader is a SafeLoader: no arbitrary objects.
    return [document for document in yaml.load_all(text, Loader=_Loader) if document]


def manifest_documents() -> Iterator[tuple[Path, dict[str, Any]]]:
    """Every document of deploy/kubernetes/*.yaml (not the Helm values beneath it), with its file."""
    for path in sorted(MANIFESTS.glob("*.yaml")):
        for document in documents(path.read_text()):
            yield path, document


def validate(document: dict[str, Any]) -> Validation:
    """Strict validation (unknown fields are errors) against the schemas of KUBERNETES_VERSION."""
    try:
        kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.SchemaNotFoundError as error:
        return Validation(document, Outcome.NO_SCHEMA, error.message)
    except kubernetes_validate.ValidationError as error:
        path = ".".join(str(part) for part in error.path)
        return Validation(document, Outcome.INVALID, f"{path}: {error.message}")
    return Validation(document, Outcome.PASSED)


def custom_resource_schemas(rendered: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    """The openAPIV3Schema of each (apiVersion, kind) that the CustomResourceDefinitions among ``rendered`` define."""
    schemas = {}
    for document in rendered:
        if document.get("kind") == "CustomResourceDefinition":
            spec = document["spec"]
            for version in spec["versions"]:
                if "schema" in version:
                    api_version = f"{spec['group']}/{version['name']}"
                    schemas[api_version, spec["names"]["kind"]] = version["schema"]["openAPIV3Schema"]
    return schemas


def validate_custom_resource(document: dict[str, Any], schema: dict[str, Any]) -> Validation:
    """A custom resource against its CRD's schema, as the API server checks it (unknown fields aside: the
    API server prunes them, so this is not strict)."""
    errors = sorted(jsonschema.Draft202012Validator(schema).iter_errors(document), key=str)
    if errors:
        path = ".".join(str(part) for part in errors[0].path)
        return Validation(document, Outcome.INVALID, f"{path}: {errors[0].message}")
    return Validation(document, Outcome.PASSED)


def strict_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """A CRD schema that refuses unknown fields, as ``kubectl apply`` does by default (server-side field
    validation "Strict"), rather than pruning them silently: a typo in a custom resource fails here."""
    strict = copy.deepcopy(schema)

    def close(node: Any) -> None:
        if isinstance(node, dict):
            open_by_design = "additionalProperties" in node or node.get("x-kubernetes-preserve-unknown-fields")
            if "properties" in node and not open_by_design:
                node["additionalProperties"] = False
            for value in node.values():
                close(value)
        elif isinstance(node, list):
            for value in node:
                close(value)

    close(strict)
    return strict


def go_module_dir(module: str, version: str, go: str = "go") -> Path:
    """A module's source from the Go module proxy (or Go's module cache), read-only."""
    download = subprocess.run(
        [go, "mod", "download", "-json", f"{module}@v{version}"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        cwd="/",
    )
    answer = json.loads(download.stdout or "{}")
    if download.returncode != 0 or "Dir" not in answer:
        raise RuntimeError(f"go mod download {module}@v{version}: {answer.get('Error') or download.stderr[-500:]}")
    return Path(answer["Dir"])


def operator_module(go: str = "go") -> Path:
    """CloudNativePG's source at the pinned release (fetched once; read with the two functions below)."""
    return go_module_dir(CLOUDNATIVE_PG_MODULE, CLOUDNATIVE_PG_VERSION, go)


def operator_release(module: Path) -> list[dict[str, Any]]:
    """The manifest that installs the operator at the pinned release (releases/cnpg-VERSION.yaml), as users apply it."""
    return documents((module / "releases" / f"cnpg-{CLOUDNATIVE_PG_VERSION}.yaml").read_text())


def operator_crd_schemas(module: Path) -> dict[tuple[str, str], dict[str, Any]]:
    """The strict schema of each custom resource the manifests may use: CloudNativePG's, at its pinned release."""
    crds = module / "config" / "crd" / "bases"
    rendered = [document for path in sorted(crds.glob("*.yaml")) for document in documents(path.read_text())]
    return {key: strict_schema(schema) for key, schema in custom_resource_schemas(rendered).items()}


def validate_manifest(document: dict[str, Any], crd_schemas: dict[tuple[str, str], dict[str, Any]]) -> Validation:
    """A manifest against Kubernetes' schemas, or a custom resource against its operator's CRD; a kind that
    neither knows is NO_SCHEMA, which the tests count as a failure."""
    schema = crd_schemas.get((document.get("apiVersion", ""), document.get("kind", "")))
    if schema is not None:
        return validate_custom_resource(document, schema)
    return validate(document)


def prometheus_rule(path: Path) -> dict[str, Any]:
    """A Prometheus rules file (prometheus/rules/*.yml) as the PrometheusRule the Prometheus Operator loads."""
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {"name": path.stem, "namespace": NAMESPACE, "labels": {"app.kubernetes.io/part-of": "shop"}},
        "spec": yaml.safe_load(path.read_text()),
    }
