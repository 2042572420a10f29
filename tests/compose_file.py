"""docker-compose.yml as compose reads it, since `docker compose config` cannot run here.

``interpolate`` follows the Compose specification's interpolation rules: ``$VAR`` and ``${VAR}`` (blank
when unset, as compose makes them after its warning), ``${VAR:-default}`` / ``${VAR-default}``,
``${VAR:?error}`` / ``${VAR?error}``, ``${VAR:+replacement}`` / ``${VAR+replacement}``, nesting inside
the default, error and replacement, and ``$$`` for a literal ``$``. As in compose, it applies to the
values of the parsed YAML, not to its keys, and not to the text before parsing (so a value holding
``: `` or ``#`` stays one value).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import yaml

from harness import ROOT

COMPOSE = ROOT / "docker-compose.yml"
NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# Longest first, so that ":-" is not read as ":" followed by "-".
OPERATORS = (":-", ":?", ":+", "-", "?", "+")


class InterpolationError(ValueError):
    """What compose refuses: ``${VAR?error}`` with VAR unset, or a malformed ``$``."""


def interpolate(text: str, env: Mapping[str, str]) -> str:
    out: list[str] = []
    i = 0
    while i < len(text):
        if text[i] != "$":
            out.append(text[i])
            i += 1
        elif text.startswith("$$", i):
            out.append("$")
            i += 2
        elif text.startswith("${", i):
            end = _closing_brace(text, i + 1)
            out.append(_braced(text[i + 2 : end], env))
            i = end + 1
        elif name := NAME.match(text, i + 1):
            out.append(env.get(name.group(), ""))
            i = name.end()
        else:
            raise InterpolationError(f"invalid interpolation format in {text!r}: a lone $ (write $$)")
    return "".join(out)


def _closing_brace(text: str, opening: int) -> int:
    depth = 0
    for index in range(opening, len(text)):
        if text[index] == "{":
            depth += 1
        elif text[index] == "}":
            depth -= 1
            if depth == 0:
                return index
    raise InterpolationError(f"invalid interpolation format in {text!r}: no closing brace")


def _braced(body: str, env: Mapping[str, str]) -> str:
    name = NAME.match(body)
    if name is None:
        raise InterpolationError(f"invalid interpolation format: ${{{body}}}")
    variable, rest = name.group(), body[name.end() :]
    if not rest:
        return env.get(variable, "")
    operator = next((op for op in OPERATORS if rest.startswith(op)), None)
    if operator is None:
        raise InterpolationError(f"invalid interpolation format: ${{{body}}}")
    argument = rest[len(operator) :]  # interpolated only where it is used, as compose does
    value = env.get(variable)
    # With a colon, an empty value counts as unset.
    present = value is not None and (value != "" or not operator.startswith(":"))
    if operator.endswith("-"):
        return value if present and value is not None else interpolate(argument, env)
    if operator.endswith("?"):
        if not present or value is None:
            raise InterpolationError(f"required variable {variable} is missing a value: {interpolate(argument, env)}")
        return value
    return interpolate(argument, env) if present else ""


def interpolated(node: Any, env: Mapping[str, str]) -> Any:
    if isinstance(node, str):
        return interpolate(node, env)
    if isinstance(node, dict):
        return {key: interpolated(value, env) for key, value in node.items()}
    if isinstance(node, list):
        return [interpolated(item, env) for item in node]
    return node


def raw_compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return loaded


def load_compose(env: Mapping[str, str]) -> dict[str, Any]:
    """The compose file with ``env`` (``.env`` values, perhaps overridden) interpolated."""
    loaded: dict[str, Any] = interpolated(raw_compose(), env)
    return loaded
