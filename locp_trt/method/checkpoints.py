"""Checkpoints of the loop: after every step, the model and the run's history, written atomically
into `OUT/checkpoints/`, so an interrupted run resumes where it stopped (`--resume`).

`state.json` holds the schema, the loop's config (a resume with other options is refused, naming
each option that differs: `config_differences`), the last step, its weights file and the history;
`step_NNN.pt` is that step's pruned model (`prune.plan.save_pruned`).
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from ..errors import LocpError
from ..prune.plan import PruningPlan, pruned_from_payload, save_pruned
from .records import StepRecord

__all__ = ["STATE_SCHEMA", "Checkpoints", "Resumed", "last_checkpoint", "config_differences"]

STATE_SCHEMA = "locp_trt.optimize_state/2"

#: Options older runs recorded that are gone, with the value that did what the code does now: a
#: state holding that value resumes as if the option were absent; any other value stays in the
#: config, so resuming it is refused as a difference. (`search`: the knapsack ladder was removed,
#: docs/METHOD.md §4.)
_RETIRED = {"search": "greedy"}


@dataclass(frozen=True)
class Resumed:
    """The last completed step of a run: what `--resume` continues from."""

    model: nn.Module
    plan: PruningPlan
    history: list[StepRecord]
    target_speedup: float


class Checkpoints:
    """The checkpoints of one run in `out_dir / "checkpoints"`.

    Args:
        out_dir: the run's output folder.
        config: the loop's config as JSON (`OptimizeConfig.to_json()`), recorded and compared.
        original: the unpruned model, rebuilt for each checkpoint (its pruned channels removed
            by the recorded plan, its weights replaced).
    """

    def __init__(self, out_dir: Path, config: Mapping[str, Any], original: Callable[[], nn.Module]) -> None:
        self.dir = Path(out_dir) / "checkpoints"
        self.config = _current(config)
        self._original = original

    def save(self, model: nn.Module, plan: PruningPlan, history: list[StepRecord], target_speedup: float) -> None:
        """Checkpoint the last step of `history` (its model and plan)."""
        self.dir.mkdir(parents=True, exist_ok=True)
        step = history[-1].step
        weights = self.dir / f"step_{step:03d}.pt"
        tmp = weights.with_suffix(".pt.tmp")
        save_pruned(model.cpu(), plan, tmp)
        os.replace(tmp, weights)
        state = {"schema": STATE_SCHEMA, "config": self.config, "step": step,
                 "weights": weights.name, "target_speedup": target_speedup,
                 "history": [asdict(h) for h in history]}
        tmp_state = self.dir / "state.json.tmp"
        tmp_state.write_text(json.dumps(state, indent=1))
        os.replace(tmp_state, self.dir / "state.json")

    def _read_state(self) -> dict[str, Any] | None:
        path = self.dir / "state.json"
        if not path.is_file():
            return None
        try:
            state = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise LocpError(f"cannot resume: {path} is unreadable ({e}); delete {self.dir} "
                            "to start afresh") from None
        if state.get("schema") != STATE_SCHEMA:
            raise LocpError(f"cannot resume: {path} has schema {state.get('schema')!r}, "
                            f"expected {STATE_SCHEMA!r}; delete {self.dir} to start afresh")
        old = _current(state.get("config") or {})
        if old != self.config:
            diffs = config_differences(old, self.config)
            raise LocpError(f"cannot resume: the options differ from the interrupted run's "
                            f"({'; '.join(diffs) or 'the saved config does not match'}); rerun with "
                            "the same options, or with --force to start afresh")
        return state

    def load_step(self, step: int) -> tuple[nn.Module, PruningPlan]:
        """The model and plan checkpointed at `step`."""
        path = self.dir / f"step_{step:03d}.pt"
        payload = torch.load(path, map_location="cpu", weights_only=True)
        return pruned_from_payload(payload, arch_factory=self._original, source=str(path))

    def last(self) -> Resumed | None:
        """The last completed step, or None when nothing was checkpointed.

        What a resumed run continues from; also how a caller keeps the best result of a run it
        had to stop early.
        """
        state = self._read_state()
        if state is None:
            return None
        model, plan = self.load_step(int(state["step"]))
        history = [StepRecord(**h) for h in state["history"]]
        return Resumed(model, plan, history, float(state["target_speedup"]))


def last_checkpoint(out_dir: str | Path, original: nn.Module) -> Resumed | None:
    """The last completed step of the run in `out_dir`, whatever its options (e.g. to keep what a
    run stopped early had reached); None when it checkpointed nothing. `original` is its unpruned
    model."""
    path = Path(out_dir) / "checkpoints" / "state.json"
    try:
        config = json.loads(path.read_text()).get("config") or {}
    except (OSError, json.JSONDecodeError):
        return None
    return Checkpoints(Path(out_dir), config, lambda: copy.deepcopy(original)).last()


def _current(config: Mapping[str, Any]) -> dict[str, Any]:
    """`config` without the retired options that kept their surviving value (`_RETIRED`)."""
    return {k: v for k, v in config.items() if k not in _RETIRED or v != _RETIRED[k]}


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
