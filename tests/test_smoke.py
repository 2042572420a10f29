"""``make smoke`` outside a running stack: one clear line, not a traceback. (Its Prometheus half runs
against the real Prometheus in test_stack.py; its Tempo and Loki halves were run by hand, see docs/verification.md.)"""

from __future__ import annotations

import subprocess
import sys

import pytest

from harness import ROOT
from harness.processes import free_port, process_env

pytestmark = pytest.mark.processes


def test_smoke_with_the_stack_down_says_so_in_one_line_and_exits_2() -> None:
    gateway = f"http://127.0.0.1:{free_port()}"
    result = subprocess.run(
        # As ``make smoke`` runs it, but with no site-packages at all (-S): the standard library only.
        [sys.executable, "-S", str(ROOT / "scripts" / "smoke.py")],
        env=process_env(GATEWAY_URL=gateway, PYTHONPATH=str(ROOT)),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert result.stdout == ""
    (error,) = result.stderr.splitlines()
    assert error.startswith(f"smoke: cannot reach the gateway at {gateway} (")
    assert error.endswith("start the stack: docker compose up -d")
