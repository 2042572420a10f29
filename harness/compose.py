"""Facts of the compose stack that scripts and tests share: the ports it publishes and its ``.env``.

Standard library only (``make smoke`` and ``make demo`` run on a bare ``python3``).
"""

from __future__ import annotations

from pathlib import Path

from harness import ROOT

# Host ports docker-compose.yml publishes (tests/test_compose.py checks them against the file).
PUBLISHED_PORTS = {"gateway": 8000, "grafana": 3000, "prometheus": 9090, "tempo": 3200, "loki": 3100}


def dotenv(path: Path = ROOT / ".env") -> dict[str, str]:
    """``KEY=value`` lines of a compose ``.env`` file (no quoting or interpolation: this repository uses none)."""
    values: dict[str, str] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            key, sep, value = line.partition("=")
            if sep and not key.lstrip().startswith("#"):
                values[key.strip()] = value.strip()
    return values
