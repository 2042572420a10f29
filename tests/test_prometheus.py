"""Prometheus as compose runs it: the release built here, its config, and the rules' unit tests.

Each rules file in prometheus/rules/ has a promtool unit test file in prometheus/tests/ of the same name
(``span-metrics.yml`` -> ``span-metrics.test.yml``), run here by the promtool of the release compose runs.
A rules file without one fails, and so does a rule that no test exercises.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from harness import ROOT
from harness.backends import (
    COMPOSE_FILE,
    PROMETHEUS_CONFIG,
    PROMETHEUS_RELEASE,
    PROMETHEUS_RULES,
    compose_feature_flags,
)
from tools import prometheus_install, promtool_binary

pytestmark = pytest.mark.unit

RULE_TESTS = ROOT / "prometheus" / "tests"
RULE_FILES = sorted(PROMETHEUS_RULES.glob("*.yml"))  # what prometheus.yml's rule_files glob loads


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([promtool_binary(), *args], capture_output=True, text=True, timeout=120, check=False)


def test_the_built_prometheus_is_the_release_compose_runs() -> None:
    """make prometheus reads the release from .env (the image tag) and derives the Go module version from it."""
    compose = yaml.safe_load(COMPOSE_FILE.read_text())
    assert compose["services"]["prometheus"]["image"] == "prom/prometheus:${PROMETHEUS_VERSION}"
    install = prometheus_install()
    if not install.built:
        pytest.skip(f"{install} is not the release compose runs: `make prometheus` builds it (needs Go)")
    for binary, name in ((install.prometheus, "prometheus"), (install.promtool, "promtool")):
        banner = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=30, check=True).stdout
        assert banner.startswith(f"{name}, version {PROMETHEUS_RELEASE} "), banner


def test_exemplar_storage_is_on_where_compose_and_the_tests_start_prometheus() -> None:
    """In 3.14 exemplar storage is still off unless --enable-feature=exemplar-storage (cmd/prometheus/main.go)."""
    assert "--enable-feature=exemplar-storage" in compose_feature_flags()


def test_the_config_and_its_rules_load() -> None:
    checked = promtool("check", "config", str(PROMETHEUS_CONFIG))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    for rules in RULE_FILES:
        assert rules.name in checked.stdout, f"prometheus.yml does not load {rules.name}"


def rule_tests_of(rules: Path) -> Path:
    return RULE_TESTS / f"{rules.stem}.test.yml"


def test_every_rule_test_file_tests_a_rules_file() -> None:
    assert RULE_FILES, f"no rules in {PROMETHEUS_RULES}"
    orphans = set(RULE_TESTS.glob("*.yml")) - {rule_tests_of(rules) for rules in RULE_FILES}
    assert not orphans, f"tests for rules files that do not exist: {sorted(path.name for path in orphans)}"


@pytest.mark.parametrize("rules", RULE_FILES, ids=[rules.name for rules in RULE_FILES])
def test_every_rule_passes_its_promtool_unit_tests(rules: Path) -> None:
    tests = rule_tests_of(rules)
    assert tests.exists(), f"{rules.relative_to(ROOT)} has no promtool unit tests: write {tests.relative_to(ROOT)}"
    suite: dict[str, Any] = yaml.safe_load(tests.read_text())
    assert [(tests.parent / name).resolve() for name in suite["rule_files"]] == [rules.resolve()]

    groups = yaml.safe_load(rules.read_text())["groups"]
    records = {rule["record"] for group in groups for rule in group["rules"] if "record" in rule}
    alerts = {rule["alert"] for group in groups for rule in group["rules"] if "alert" in rule}
    queried = " ".join(case["expr"] for test in suite["tests"] for case in test.get("promql_expr_test", []))
    alerted = {case["alertname"] for test in suite["tests"] for case in test.get("alert_rule_test", [])}
    assert {record for record in records if record not in queried} == set(), "recording rules without a test"
    assert alerts - alerted == set(), "alerts without a test"

    result = promtool("test", "rules", str(tests))
    assert result.returncode == 0, result.stdout + result.stderr
