"""`--set KEY=VALUE`: hyperparameter overrides typed the way a person writes them on a command line.

`lr=3e-4` is a float, `max_iters=500` an int, `qk_norm=true` a bool, `positions=learned` a string. The gateway
validates names and ranges (a typo comes back as an error naming the key); this module only parses.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import typer

TRUE = ("true", "yes", "on")
FALSE = ("false", "no", "off")
NONE = ("none", "null")


def parse_value(text: str) -> Any:
    value = text.strip()
    lowered = value.lower()
    if lowered in TRUE:
        return True
    if lowered in FALSE:
        return False
    if lowered in NONE:
        return None
    # float("nan") and float("inf") parse too; the gateway rejects them, naming the key
    try:
        return int(value.replace("_", "")) if value.lstrip("+-").replace("_", "").isdigit() else float(value)
    except ValueError:
        return value


def parse_assignment(item: str) -> tuple[str, Any]:
    key, sep, value = item.partition("=")
    key = key.strip()
    if not sep or not key:
        raise typer.BadParameter(f"{item!r} is not KEY=VALUE (e.g. --set learning_rate=3e-4)", param_hint="--set")
    if not value.strip():
        raise typer.BadParameter(f"{key}= has no value", param_hint="--set")
    return key, parse_value(value)


def parse_assignments(items: Iterable[str]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for item in items:
        key, value = parse_assignment(item)
        values[key] = value
    return values


def hyperparameters(sets: Iterable[str], *, preset: str | None = None, max_iters: int | None = None) -> dict[str, Any]:
    """`--set` values, with `--preset` and `--max-iters` on top when given."""
    values = parse_assignments(sets)
    if preset is not None:
        values["preset"] = preset
    if max_iters is not None:
        values.pop("MAX_ITERS", None)
        values["max_iters"] = max_iters
    return values
