"""Say which options differ between two runs' configs (e.g. an interrupted run and its `--resume`).

`config_differences` compares two JSON-like dicts (`OptimizeConfig.to_json()`; nested dicts are
compared key by key and named with dotted keys) and returns one readable line per difference.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

__all__ = ["config_differences"]

_ABSENT = object()


def _show(value: Any) -> str:
    if value is _ABSENT:
        return "absent"
    if value is None:
        return "none"
    if isinstance(value, str):
        return value
    if isinstance(value, (bool, list, tuple, Mapping)):
        return json.dumps(value, sort_keys=True, default=str)
    return str(value)


def config_differences(old: Mapping[str, Any], new: Mapping[str, Any], *,
                       old_label: str = "interrupted run", new_label: str = "now") -> list[str]:
    """One line per option whose value differs, e.g. "speedup: 2.0 (interrupted run) vs 1.5 (now)".

    Args:
        old: the config recorded by the earlier run.
        new: the config of this run.
        old_label: how the lines name `old`.
        new_label: how the lines name `new`.

    Returns:
        Lines in `old`'s key order, then keys only `new` has; empty when the configs agree.
    """
    lines: list[str] = []

    def walk(a: Mapping[str, Any], b: Mapping[str, Any], prefix: str) -> None:
        for key in [*a, *(k for k in b if k not in a)]:
            va, vb = a.get(key, _ABSENT), b.get(key, _ABSENT)
            if isinstance(va, Mapping) and isinstance(vb, Mapping):
                walk(va, vb, f"{prefix}{key}.")
            elif va != vb:
                lines.append(f"{prefix}{key}: {_show(va)} ({old_label}) vs {_show(vb)} ({new_label})")

    walk(old, new, "")
    return lines
