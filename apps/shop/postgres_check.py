"""``python -m shop.postgres_check``: refuse to let PostgreSQL start published beyond loopback with a known
or short password.

Compose runs it as a one-shot container before PostgreSQL, as ``shop.grafana_check`` before Grafana. The
database is published on ``BACKEND_BIND_ADDRESS`` (for psql from this machine); on loopback anything goes,
beyond it the repository's default or a short password stops PostgreSQL from starting, with one line and
exit status 2 (docs/configuration.md#running-it-on-a-shared-machine).
"""

from __future__ import annotations

from collections.abc import Mapping

from shop.grafana_check import MIN_LENGTH, password_problem, report
from shop.settings import ip_address, is_loopback

ADDRESS_VARIABLE = "BACKEND_BIND_ADDRESS"
PASSWORD_VARIABLE = "POSTGRES_PASSWORD"  # noqa: S105 (the name of a variable)


def refusal(env: Mapping[str, str]) -> str | None:
    """Why PostgreSQL must not start with these values, or None when it may."""
    address = env.get(ADDRESS_VARIABLE, "").strip()
    ip_address(ADDRESS_VARIABLE, address)
    if is_loopback(address):
        return None
    problem = password_problem(env.get(PASSWORD_VARIABLE, ""))
    if problem is None:
        return None
    return (
        f"{PASSWORD_VARIABLE} {problem} and PostgreSQL is published on {address} ({ADDRESS_VARIABLE}), beyond "
        f"loopback: set a password of at least {MIN_LENGTH} characters in .env, or {ADDRESS_VARIABLE}=127.0.0.1"
    )


def main(env: Mapping[str, str] | None = None) -> int:
    return report(refusal, env)


if __name__ == "__main__":
    raise SystemExit(main())
