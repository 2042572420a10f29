"""Render deploy/kubernetes/helm's values with helm and validate the output offline; or print the
PrometheusRules made from prometheus/rules.

``render`` runs ``helm template`` for each chart of harness.kubernetes.CHARTS from a directory holding the
charts at their exact versions (subcharts copied in: docs/scaling.md#kubernetes), always with
``--kube-version``, and validates every rendered object strictly against the Kubernetes schemas. Custom
resources have none there: they are checked against the CustomResourceDefinitions that the same
rendering installs, where it installs them, and listed otherwise. Exits 1 if anything failed.

``rules`` prints prometheus/rules/*.yml as PrometheusRule objects, for ``kubectl apply -f -``.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import yaml

from harness import ROOT
from harness.kubernetes import (
    CHARTS,
    KUBERNETES_VERSION,
    NAMESPACE,
    Chart,
    Outcome,
    Validation,
    custom_resource_schemas,
    documents,
    prometheus_rule,
    validate,
    validate_custom_resource,
)

RULES = ROOT / "prometheus" / "rules"


def helm_template(helm: str, chart: Chart, chart_dir: Path) -> list[str]:
    command = [helm, "template", chart.release, str(chart_dir), "--namespace", NAMESPACE]
    command += ["--kube-version", KUBERNETES_VERSION, "--values", str(chart.values)]
    for key, path in chart.set_files.items():
        command += ["--set-file", f"{key}={ROOT / path}"]
    if chart.post_renderer:
        command += ["--post-renderer", chart.post_renderer[0]]
        command += [f"--post-renderer-args={arg}" for arg in chart.post_renderer[1:]]
    if chart.include_crds:
        command.append("--include-crds")
    return command


def chart_version(chart_dir: Path) -> str:
    version: str = yaml.safe_load((chart_dir / "Chart.yaml").read_text())["version"]
    return version


def check(
    rendered: list[dict[str, Any]], schemas: dict[tuple[str, str], dict[str, Any]]
) -> list[tuple[Validation, bool]]:
    """Each object's validation, and whether it is a custom resource."""
    results = []
    for document in rendered:
        result = validate(document)
        custom = result.outcome is Outcome.NO_SCHEMA
        schema = schemas.get((document.get("apiVersion", ""), document.get("kind", "")))
        if custom and schema is not None:
            result = validate_custom_resource(document, schema)
        results.append((result, custom))
    return results


def render(args: argparse.Namespace) -> int:
    failed = False
    all_schemas: dict[tuple[str, str], dict[str, Any]] = {}
    rendered_by_chart: list[tuple[Chart, list[dict[str, Any]], float]] = []
    for chart in CHARTS:
        chart_dir = args.charts / chart.chart
        if chart_version(chart_dir) != chart.version:
            print(f"{chart_dir}: version {chart_version(chart_dir)}, expected {chart.version}", file=sys.stderr)
            return 2
        started = time.perf_counter()
        output = subprocess.run(  # noqa: S603 (the operator's helm, the repository's arguments)
            helm_template(args.helm, chart, chart_dir), capture_output=True, text=True, check=False
        )
        seconds = time.perf_counter() - started
        if output.returncode != 0:
            print(f"{chart.release}: helm template failed:\n{output.stderr}", file=sys.stderr)
            failed = True
            continue
        if args.out:
            args.out.mkdir(parents=True, exist_ok=True)
            (args.out / f"{chart.release}.yaml").write_text(output.stdout)
        rendered = documents(output.stdout)
        all_schemas |= custom_resource_schemas(rendered)
        rendered_by_chart.append((chart, rendered, seconds))
    # The project's rules, as the PrometheusRules docs/scaling.md applies, against the chart's CRD.
    rules = [prometheus_rule(path) for path in sorted(RULES.glob("*.yml"))]
    print(f"{'release':<22} {'chart':<32} {'objects':>7} {'passed':>6} {'custom':>6} {'render s':>8}")
    rows = [
        (chart.release, f"{chart.chart} {chart.version}", rendered, f"{seconds:.2f}")
        for chart, rendered, seconds in rendered_by_chart
    ]
    for name, label, rendered, seconds_text in [*rows, ("(prometheus/rules)", "", rules, "-")]:
        results = check(rendered, all_schemas)
        outcomes = Counter(result.outcome for result, _ in results)
        custom = sum(1 for _, is_custom in results if is_custom)
        print(f"{name:<22} {label:<32} {len(results):>7} {outcomes[Outcome.PASSED]:>6} {custom:>6} {seconds_text:>8}")
        for result, _ in results:
            if result.outcome is Outcome.INVALID:
                failed = True
                print(f"  INVALID {result.name}: {result.message}")
            elif result.outcome is Outcome.NO_SCHEMA:
                print(f"  not checked (custom resource without a CRD here) {result.name}")
    return 1 if failed else 0


def print_rules(args: argparse.Namespace) -> int:
    print(yaml.safe_dump_all([prometheus_rule(path) for path in sorted(RULES.glob("*.yml"))], sort_keys=False))
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(prog="k8s_charts.py", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(required=True)
    render_parser = commands.add_parser("render", help="helm template each chart, then validate")
    render_parser.add_argument("--charts", type=Path, required=True, help="directory holding each chart by name")
    render_parser.add_argument("--helm", default=shutil.which("helm") or "helm", help="the helm binary")
    render_parser.add_argument("--out", type=Path, help="also write each rendering to OUT/<release>.yaml")
    render_parser.set_defaults(run=render)
    rules_parser = commands.add_parser("rules", help="prometheus/rules/*.yml as PrometheusRule objects")
    rules_parser.set_defaults(run=print_rules)
    args = parser.parse_args()
    run = args.run
    result: int = run(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
