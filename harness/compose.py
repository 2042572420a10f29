"""Facts of the compose stack that scripts and tests share: the ports it publishes, where, and its ``.env``.

Standard library only (``make smoke`` and ``make demo`` run on a bare ``python3``).
"""

from __future__ import annotations

from pathlib import Path

from harness import ROOT

# Host ports docker-compose.yml publishes for the scripts (tests/test_compose.py checks them against the file).
PUBLISHED_PORTS = {"gateway": 8000, "grafana": 3000, "prometheus": 9090, "tempo": 3200, "loki": 3100}
# The two host addresses ports are published on (.env; docs/configuration.md#running-it-on-a-shared-machine):
# the one other machines may be given, for these services only, and the one every other port stays on.
PUBLIC_ADDRESS = "PUBLIC_BIND_ADDRESS"
BACKEND_ADDRESS = "BACKEND_BIND_ADDRESS"
PUBLIC_SERVICES = frozenset({"gateway", "grafana"})
# What a client dials for a port bound to every interface.
WILDCARD_TO_LOOPBACK = {"0.0.0.0": "127.0.0.1", "::": "::1"}  # noqa: S104 (a client, not a bind)


def address_variable(service: str) -> str:
    """The ``.env`` variable naming the host address compose publishes ``service``'s ports on."""
    return PUBLIC_ADDRESS if service in PUBLIC_SERVICES else BACKEND_ADDRESS


def published_url(service: str, env: dict[str, str]) -> str:
    """Where this machine reaches ``service`` of a running stack started with ``env`` (``.env`` values)."""
    address = env.get(address_variable(service)) or "127.0.0.1"
    host = WILDCARD_TO_LOOPBACK.get(address, address)
    return f"http://{f'[{host}]' if ':' in host else host}:{PUBLISHED_PORTS[service]}"


def dotenv(path: Path = ROOT / ".env") -> dict[str, str]:
    """``KEY=value`` lines of a compose ``.env`` file: a value may be quoted, and an unquoted value ends
    at `` #`` (a comment), as compose reads them. No interpolation: this repository's ``.env`` uses none."""
    values: dict[str, str] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            key, sep, value = line.partition("=")
            if sep and not key.lstrip().startswith("#"):
                values[key.strip()] = _unquote(value.strip())
    return values


def _unquote(value: str) -> str:
    if value[:1] in {"'", '"'} and (end := value.find(value[0], 1)) > 0:
        return value[1:end]
    return value.split(" #", 1)[0].rstrip()
