"""The external programs some tests need: present, or the test skips (and fails in CI, where .ci/run installs them)."""

from __future__ import annotations

import os
import shutil

import pytest

from harness import ROOT
from harness.backends import COLLECTOR_BINARY


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


def prometheus_binary() -> str:
    return require(shutil.which("prometheus"), "no prometheus on PATH: run `make prometheus` (Debian's package)")


def promtool_binary() -> str:
    return require(shutil.which("promtool"), "no promtool on PATH: run `make prometheus` (Debian's package)")
