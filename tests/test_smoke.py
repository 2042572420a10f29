"""``make smoke`` outside a running stack: one clear failure, not a traceback. (Its Prometheus half runs
against the real Prometheus in test_stack.py; its Tempo and Loki halves were run by hand, see README.)"""

from __future__ import annotations

import subprocess
import sys

from conftest import free_port
from processes import ROOT, process_env


def test_smoke_says_the_stack_is_down_and_exits_1() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "smoke.py")],
        env=process_env(GATEWAY_URL=f"http://127.0.0.1:{free_port()}"),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    assert result.stdout.startswith("[FAIL] place an order through the gateway: HTTP 0")
    assert "is the stack up (docker compose up -d)?" in result.stderr
    assert "Traceback" not in result.stderr
