"""The external programs some tests need: present, or the test skips (and fails in CI, where .ci/run installs them)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from harness import ROOT
from harness.backends import COLLECTOR_BINARY, PROMETHEUS_RELEASE, PrometheusInstall, find_prometheus
from harness.postgres import find_postgres_bin


def require(found: str | None, reason: str) -> str:
    """A missing tool skips on a user's machine and fails in CI, where .ci/run installs everything."""
    if found:
        return found
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (CI=true: a missing dependency is a failure)")
    pytest.skip(reason)


def collector_binary() -> str:
    found = str(COLLECTOR_BINARY) if COLLECTOR_BINARY.exists() else None
    return require(found, f"no Collector at {COLLECTOR_BINARY.relative_to(ROOT)}: run `make collector` (needs Go)")


def prometheus_install() -> PrometheusInstall:
    """The release compose runs, built by ``make prometheus``; Debian's older one on PATH only as a user's
    fallback (conftest's summary says which ran). CI must run the built one."""
    found = find_prometheus()
    wanted = f"`make prometheus` builds {PROMETHEUS_RELEASE}, the release compose runs (needs Go)"
    if found is not None and not found.built and os.environ.get("CI") == "true":
        pytest.fail(f"CI found only {found}: {wanted}")
    require(str(found) if found else None, f"no Prometheus built or on PATH: {wanted}")
    assert found is not None
    return found


def prometheus_binary() -> str:
    return prometheus_install().prometheus


def promtool_binary() -> str:
    return prometheus_install().promtool


def postgres_bin() -> Path:
    """The directory of the machine's PostgreSQL server binaries (harness.postgres.find_postgres_bin)."""
    found = find_postgres_bin()
    where = f"PG_BIN={os.environ['PG_BIN']}" if os.environ.get("PG_BIN") else "pg_config or /usr/lib/postgresql"
    reason = f"no PostgreSQL server binaries (initdb) in {where}: `apt-get install postgresql`, or set PG_BIN"
    return Path(require(str(found) if found else None, reason))
