"""The shared harness: its copies of the app's facts are the app's, and what the user scripts import of it
is standard library only (``make demo`` and ``make smoke`` run on a bare ``python3``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from harness import ROOT, orders
from harness.compose import PUBLISHED_PORTS, dotenv, published_url
from shop.gateway import edge
from shop.payments import processor

pytestmark = pytest.mark.unit

# What a bare python3 may load for these: the standard library, the harness, and the scripts themselves.
OWN_MODULES = {"__main__", "harness", "demo", "smoke", "shop"}
LIST_MODULES = "import json, sys; print(json.dumps(sorted(sys.modules)))"


def test_the_declined_card_and_fault_headers_are_the_apps_own() -> None:
    # The app cannot import the harness (its image has no tests), nor the scripts the app: so two
    # constants, kept equal here.
    assert orders.DECLINED_CARD == processor.DECLINED_CARD
    assert orders.GOOD_CARD != processor.DECLINED_CARD
    assert (orders.DELAY_HEADER, orders.FAIL_HEADER, orders.DB_DELAY_HEADER) == (
        edge.DELAY_HEADER,
        edge.FAIL_HEADER,
        edge.DB_DELAY_HEADER,
    )


def test_published_ports_are_the_compose_files() -> None:
    services = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    for name, port in PUBLISHED_PORTS.items():
        host_ports = {int(mapping.split(":")[-2]) for mapping in services[name]["ports"]}
        assert port in host_ports, (name, services[name]["ports"])


def test_dotenv_reads_key_value_lines_and_skips_comments(tmp_path: Path) -> None:
    env = tmp_path / ".env"
    env.write_text("# a comment\nA=1\n B = two words \nnot a pair\n#C=3\n")
    assert dotenv(env) == {"A": "1", "B": "two words"}
    assert dotenv(env.with_name("missing")) == {}


def test_dotenv_reads_quoted_values_and_comments_after_a_value_as_compose_does(tmp_path: Path) -> None:
    env = tmp_path / ".env"
    env.write_text('A="pa ss #1" # why\nB=\'x\'\nC=plain # why\nD=no#comment\nE=""\n')
    assert dotenv(env) == {"A": "pa ss #1", "B": "x", "C": "plain", "D": "no#comment", "E": ""}


@pytest.mark.parametrize(
    ("env", "gateway", "tempo"),
    [
        ({}, "http://127.0.0.1:8000", "http://127.0.0.1:3200"),
        ({"PUBLIC_BIND_ADDRESS": "0.0.0.0"}, "http://127.0.0.1:8000", "http://127.0.0.1:3200"),
        (
            {"PUBLIC_BIND_ADDRESS": "192.0.2.10", "BACKEND_BIND_ADDRESS": "::1"},
            "http://192.0.2.10:8000",
            "http://[::1]:3200",
        ),
    ],
)
def test_the_scripts_reach_each_service_where_dotenv_publishes_it(
    env: dict[str, str], gateway: str, tempo: str
) -> None:
    assert (published_url("gateway", env), published_url("tempo", env)) == (gateway, tempo)


@pytest.mark.parametrize(
    "imports", ["import harness", "import harness.orders, harness.compose, harness.postgres", "import demo, smoke"]
)
def test_what_the_user_scripts_import_is_standard_library_only(imports: str) -> None:
    """Under ``python -S`` no site-packages is on the path, so a third-party import would fail; and every
    module loaded is checked against the interpreter's list of standard-library modules."""
    result = subprocess.run(
        [sys.executable, "-S", "-c", f"{imports}; {LIST_MODULES}"],
        env={"PYTHONPATH": f"{ROOT}:{ROOT / 'apps'}:{ROOT / 'scripts'}"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    modules = set(json.loads(result.stdout))
    loaded = {name.split(".")[0] for name in modules}
    assert loaded - sys.stdlib_module_names - OWN_MODULES == set()
    # Of the services' package, only the Grafana links the demo prints (standard library only, like the page's).
    assert {name for name in modules if name.split(".")[0] == "shop"} <= {"shop", "shop.grafana_links"}
    assert {"harness"} <= loaded


def test_a_test_without_exactly_one_tier_is_refused(tmp_path: Path) -> None:
    (tmp_path / "test_tiers.py").write_text(
        "import pytest\n\n"
        "def test_untiered() -> None:\n    pass\n\n"
        "@pytest.mark.unit\n@pytest.mark.inprocess\ndef test_two_tiers() -> None:\n    pass\n\n"
        "@pytest.mark.unit\ndef test_tiered() -> None:\n    pass\n"
    )
    # This suite's conftest as a plugin, so that its hooks apply to a file outside tests/.
    command = [
        sys.executable,
        "-m",
        "pytest",
        "-p",
        "conftest",
        "-c",
        str(ROOT / "pyproject.toml"),
        "--rootdir",
        str(ROOT),
    ]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(str(ROOT / path) for path in ("tests", ".", "apps"))}

    def pytest_run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*command, "-p", "no:cacheprovider", "-q", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    refused = pytest_run(str(tmp_path / "test_tiers.py"))
    assert refused.returncode == pytest.ExitCode.USAGE_ERROR, refused.stdout + refused.stderr
    assert "test_untiered" in refused.stderr
    assert "test_two_tiers" in refused.stderr
    assert "test_tiered" not in refused.stderr.replace("test_tiers.py", "")
    accepted = pytest_run(f"{tmp_path / 'test_tiers.py'}::test_tiered")
    assert accepted.returncode == pytest.ExitCode.OK, accepted.stdout + accepted.stderr
