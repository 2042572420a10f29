"""``python -m shop.grafana_check``: refuse to let Grafana start beyond loopback with a known password,
or with anonymous viewers.

Compose runs it as a one-shot container before Grafana (which waits for it to succeed), with the
``.env`` values it judges. On loopback anything goes: only this machine can reach Grafana. Beyond it,
the repository's default, Grafana's own, an empty or a short password stops Grafana from starting, and
so do anonymous viewers (a Viewer queries Prometheus, Tempo and Loki through Grafana's data sources,
which would undo keeping the backends on loopback), with one line and exit status 2
(docs/configuration.md#running-it-on-a-shared-machine says why this refuses rather than generating a
password).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Mapping

from shop.settings import SettingsError, boolean, ip_address, is_loopback

ADDRESS_VARIABLE = "PUBLIC_BIND_ADDRESS"
PASSWORD_VARIABLE = "GRAFANA_ADMIN_PASSWORD"  # noqa: S105 (the name of a variable)
ANONYMOUS_VARIABLE = "GRAFANA_ANONYMOUS_VIEWERS"
# Printed in this repository's .env (a test keeps them equal), and Grafana's own first-start password.
KNOWN_PASSWORDS = frozenset({"change-me", "admin"})
MIN_LENGTH = 12


def password_problem(password: str) -> str | None:
    """What is wrong with a password that others can try, or None: a published default, or too short."""
    if password in KNOWN_PASSWORDS:
        return "is a published default"
    if len(password) < MIN_LENGTH:
        return f"is shorter than {MIN_LENGTH} characters"
    return None


def refusal(env: Mapping[str, str]) -> str | None:
    """Why Grafana must not start with these values, or None when it may."""
    address = env.get(ADDRESS_VARIABLE, "").strip()
    ip_address(ADDRESS_VARIABLE, address)  # compose publishes on an IP address; anything else is a mistake
    if is_loopback(address):
        return None
    beyond = f"Grafana is published on {address} ({ADDRESS_VARIABLE}), beyond loopback"
    problem = password_problem(env.get(PASSWORD_VARIABLE, ""))
    if problem is None and boolean(ANONYMOUS_VARIABLE, env.get(ANONYMOUS_VARIABLE, "false")):
        return (
            f"{ANONYMOUS_VARIABLE} is true and {beyond}: anyone who reaches it could read every trace and log "
            f"line; set {ANONYMOUS_VARIABLE}=false in .env, or {ADDRESS_VARIABLE}=127.0.0.1"
        )
    if problem is None:
        return None
    return (
        f"{PASSWORD_VARIABLE} {problem} and {beyond}: set a password of at least {MIN_LENGTH} characters "
        f"in .env, or {ADDRESS_VARIABLE}=127.0.0.1"
    )


def report(judge: Callable[[Mapping[str, str]], str | None], env: Mapping[str, str] | None = None) -> int:
    """Exit status 0 when ``judge`` finds nothing to refuse in the environment, else 2 and one line."""
    try:
        reason = judge(os.environ if env is None else env)
    except SettingsError as exc:
        reason = str(exc)
    if reason is None:
        return 0
    print(f"configuration error: {reason}", file=sys.stderr)
    return 2


def main(env: Mapping[str, str] | None = None) -> int:
    return report(refusal, env)


if __name__ == "__main__":
    raise SystemExit(main())
