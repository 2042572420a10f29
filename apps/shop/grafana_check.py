"""``python -m shop.grafana_check``: refuse to let Grafana start beyond loopback with a known password.

Compose runs it as a one-shot container before Grafana (which waits for it to succeed), with the two
``.env`` values it judges. On loopback any password will do: only this machine can reach Grafana. Beyond
it, the repository's default, Grafana's own, an empty or a short password stops Grafana from starting,
with one line and exit status 2 (docs/configuration.md#running-it-on-a-shared-machine says why this
refuses rather than generating a password).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping

from shop.settings import SettingsError, ip_address, is_loopback

ADDRESS_VARIABLE = "PUBLIC_BIND_ADDRESS"
PASSWORD_VARIABLE = "GRAFANA_ADMIN_PASSWORD"  # noqa: S105 (the name of a variable)
# Printed in this repository's .env (a test keeps them equal), and Grafana's own first-start password.
KNOWN_PASSWORDS = frozenset({"change-me", "admin"})
MIN_LENGTH = 12


def refusal(env: Mapping[str, str]) -> str | None:
    """Why Grafana must not start with these values, or None when it may."""
    address = env.get(ADDRESS_VARIABLE, "").strip()
    ip_address(ADDRESS_VARIABLE, address)  # compose publishes on an IP address; anything else is a mistake
    if is_loopback(address):
        return None
    password = env.get(PASSWORD_VARIABLE, "")
    if password in KNOWN_PASSWORDS:
        problem = "is a published default"
    elif len(password) < MIN_LENGTH:
        problem = f"is shorter than {MIN_LENGTH} characters"
    else:
        return None
    return (
        f"{PASSWORD_VARIABLE} {problem} and Grafana is published on {address} ({ADDRESS_VARIABLE}), beyond "
        f"loopback: set a password of at least {MIN_LENGTH} characters in .env, or {ADDRESS_VARIABLE}=127.0.0.1"
    )


def main(env: Mapping[str, str] | None = None) -> int:
    try:
        reason = refusal(os.environ if env is None else env)
    except SettingsError as exc:
        reason = str(exc)
    if reason is None:
        return 0
    print(f"configuration error: {reason}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
