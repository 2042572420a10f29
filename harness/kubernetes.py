"""The Kubernetes deployment (deploy/kubernetes): its manifests, the charts its Helm values are for, and
offline validation against the Kubernetes JSON schemas that the PyPI package kubernetes-validate ships.

``tests/test_kubernetes.py`` validates the manifests in CI; ``scripts/k8s_charts.py`` renders the Helm
values with a helm binary and charts fetched by hand and validates the output the same way.
"""

from __future__ import annotations

import enum
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import kubernetes_validate
import yaml

from harness import ROOT

# The Kubernetes release the manifests and the rendered charts are checked against (and helm's --kube-version).
KUBERNETES_VERSION = "1.35.0"
MANIFESTS = ROOT / "deploy" / "kubernetes"
HELM_VALUES = MANIFESTS / "helm"


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


def documents(text: str) -> list[dict[str, Any]]:
    """The non-empty YAML documents of a manifest file."""
    return [document for document in yaml.safe_load_all(text) if document]


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
