"""Pruning plans (a width per channel group) and applying them physically.

A plan is data: the architecture name, the input shape, the width of each group, and once applied
the channel indices kept in each group. `apply_plan` prunes a deep copy with Torch-Pruning's group
`.prune(idxs)`; `save_pruned` / `load_pruned` store a pruned model as its state_dict plus the plan,
loadable with `torch.load(weights_only=True)`: the original architecture is rebuilt, the recorded
indices pruned away (any indices give the right shapes), and the pruned weights loaded.
"""

from __future__ import annotations

import copy
import difflib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from ..errors import ModelLoadError, PlanError, UnsupportedLayerError, first_line, short_list
from ..models.arch import load_weights, rebuild_arch, rekey_state_dict
from .graph import ModelGraph, build_graph, width_floor
from .importance import Importance, Scorer, scorer_for, share_blocks

__all__ = ["PLAN_SCHEMA", "PRUNED_FORMAT", "PruningPlan", "apply_plan", "save_pruned", "load_pruned",
           "pruned_from_payload"]

PLAN_SCHEMA = "locp_trt.plan/1"
PRUNED_FORMAT = "locp_trt.pruned/1"


@dataclass(frozen=True)
class PruningPlan:
    """Target width of each channel group (groups not listed keep their width)."""

    arch: str | None  # zoo name or "package.module:callable" of the original; None: unknown
    input_shape: tuple[int, ...]  # one sample, e.g. (3, 32, 32)
    widths: dict[str, int]  # group id -> channels to keep
    kept: dict[str, list[int]] | None = None  # group id -> kept channel indices (once applied)
    meta: dict[str, Any] = field(default_factory=dict)  # JSON-able extras (num_classes, importance...)

    def __post_init__(self) -> None:
        object.__setattr__(self, "input_shape", tuple(int(v) for v in self.input_shape))
        object.__setattr__(self, "widths", {str(k): int(v) for k, v in self.widths.items()})
        if self.kept is not None:
            object.__setattr__(self, "kept", {str(k): [int(i) for i in v] for k, v in self.kept.items()})

    # ---- (de)serialisation --------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        """A JSON-able dict with "schema": "locp_trt.plan/1"."""
        return {"schema": PLAN_SCHEMA, "arch": self.arch, "input_shape": list(self.input_shape),
                "widths": dict(self.widths), "kept": None if self.kept is None else dict(self.kept),
                "meta": dict(self.meta)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | str) -> PruningPlan:
        """Inverse of `to_json`; accepts the dict or its JSON text."""
        if isinstance(data, str):
            try:
                data = json.loads(data)
            except json.JSONDecodeError as e:
                raise PlanError(f"plan is not valid JSON: {e}") from None
        if not isinstance(data, Mapping) or data.get("schema") != PLAN_SCHEMA:
            seen = data.get("schema") if isinstance(data, Mapping) else type(data).__name__
            raise PlanError(f"not a locp_trt plan: schema {seen!r}, expected {PLAN_SCHEMA!r}")
        try:
            return cls(arch=data.get("arch"), input_shape=tuple(data["input_shape"]),
                       widths=dict(data["widths"]), kept=data.get("kept"),
                       meta=dict(data.get("meta") or {}))
        except (KeyError, TypeError, ValueError) as e:
            raise PlanError(f"malformed plan ({type(e).__name__}: {e}); expected keys arch, "
                            "input_shape, widths, kept, meta") from None

    def save(self, path: str | Path) -> Path:
        """Write the plan as indented JSON; returns the path."""
        path = Path(path)
        path.write_text(json.dumps(self.to_json(), indent=2) + "\n")
        return path

    @classmethod
    def load(cls, path: str | Path) -> PruningPlan:
        """Read a plan written by `save`."""
        path = Path(path)
        if not path.is_file():
            raise PlanError(f"plan file not found: {path}")
        return cls.from_json(path.read_text())

    # ---- checks -------------------------------------------------------------------------------
    def validate(self, graph: ModelGraph) -> None:
        """Raise `PlanError` unless every width fits `graph` (and `kept`, if set, matches)."""
        if tuple(graph.input_shape) != self.input_shape:
            raise PlanError(f"plan is for input shape {self.input_shape}, the model was traced at "
                            f"{tuple(graph.input_shape)}")
        for gid, w in self.widths.items():
            g = graph.groups.get(gid)
            if g is None:
                close = difflib.get_close_matches(gid, list(graph.groups), n=3)
                hint = f" (did you mean {', '.join(close)}?)" if close else ""
                raise PlanError(f"plan names unknown channel group {gid!r}{hint}; the model has "
                                f"{len(graph.groups)} groups: {', '.join(list(graph.groups)[:12])}...")
            if not 1 <= w <= g.width:
                raise PlanError(f"plan width {w} for group {gid!r} is outside 1..{g.width}")
            if not g.prunable and w != g.width:
                raise PlanError(f"plan changes group {gid!r} to {w} channels, but it cannot be pruned "
                                f"({g.reason}); keep {g.width}")
            if not g.fits(w):
                raise PlanError(f"plan width {w} for group {gid!r} is not a multiple of {g.blocks}: a "
                                f"grouped conv splits its channels into {g.blocks} conv groups, pruned alike")
            if w < g.min_width():
                raise PlanError(f"plan width {w} for group {gid!r} would empty one of its concat parts "
                                f"({'+'.join(str(len(p)) for p in g.parts)} channels); keep at least "
                                f"{g.min_width()}")
        for gid, idxs in (self.kept or {}).items():
            g = graph.groups.get(gid)
            if g is None:
                raise PlanError(f"plan's kept indices name unknown channel group {gid!r}")
            want = self.widths.get(gid, g.width)
            if len(idxs) != want or len(set(idxs)) != len(idxs) or any(not 0 <= i < g.width for i in idxs):
                raise PlanError(f"kept indices of group {gid!r} must be {want} distinct values in "
                                f"0..{g.width - 1}, got {len(idxs)}")
            if g.blocks > 1 and sorted(idxs) != g.block_kept(idxs, want):
                raise PlanError(f"kept indices of group {gid!r} must keep the same positions in each of "
                                f"its {g.blocks} conv groups of {g.width // g.blocks} channels (grouped conv)")
            empty = [p for p in g.parts if not set(p) & set(idxs)]
            if empty:
                raise PlanError(f"kept indices of group {gid!r} leave its concat part of channels "
                                f"{empty[0][0]}..{empty[0][-1]} empty; keep at least one of them")


def _kept_indices(scores: np.ndarray, graph: ModelGraph, gid: str, width: int,
                  part_floor: Callable[[int], int]) -> list[int]:
    """The `width` most important channels, after each concat part's own floor is served; in a
    grouped conv's group, the most important positions (scores summed over the conv groups),
    kept in every conv group."""
    group = graph.groups[gid]
    if group.blocks > 1:
        ranked = share_blocks(np.asarray(scores, dtype=np.float64), group.blocks)
        return group.block_kept((int(i) for i in np.argsort(-ranked, kind="stable")), width)
    order = [int(i) for i in np.argsort(-scores, kind="stable")]  # best first, ties: lower index
    kept = group.must_keep(order, part_floor)
    if len(kept) > width:
        raise PlanError(
            f"width {width} for group {gid!r} is below the floors of its concat parts "
            f"({'+'.join(str(len(p)) for p in group.parts)} channels need {len(kept)}); keep at "
            f"least {len(kept)}")
    taken = set(kept)
    kept += [i for i in order if i not in taken][: width - len(kept)]
    return sorted(kept)


def _outputs(model: nn.Module, input_shape: tuple[int, ...]) -> list[tuple[int, ...]]:
    """Shapes of the model's output tensors on a batch-1 zero input (eval mode, no grad)."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(torch.zeros((1, *input_shape), device=_device(model)))
    finally:
        model.train(was_training)
    flat = out if isinstance(out, (list, tuple)) else list(out.values()) if isinstance(out, dict) else [out]
    return [tuple(o.shape) for o in flat if isinstance(o, torch.Tensor)]


def _check_pruned(work: nn.Module, input_shape: tuple[int, ...], before: list[tuple[int, ...]],
                  changed: list[str]) -> None:
    """The pruned model still runs and gives the same output shapes (a guard on the graph)."""
    try:
        after = _outputs(work, input_shape)
    except RuntimeError as e:
        after = [f"an error ({first_line(e)})"]
    if after != before:
        raise UnsupportedLayerError(
            f"pruning groups {short_list(changed)} changed the model's output from {before} to "
            f"{after[0] if len(after) == 1 else after}; locp_trt's channel graph misread how they "
            "are coupled in this model: keep those groups at full width and report the model")


def apply_plan(model: nn.Module, plan: PruningPlan, input_shape: tuple[int, ...],
               importance: Importance | Scorer = Importance.L1,
               kept: Mapping[str, list[int]] | None = None, *,
               scores: Mapping[str, np.ndarray] | None = None,
               min_width_ratio: float | None = None) -> tuple[nn.Module, PruningPlan]:
    """Physically prune a deep copy of `model` to the plan's widths.

    Channels kept are exactly `kept` (else `plan.kept`) where given, otherwise the highest
    `scores` of the group where given (scores of `model`'s channels, e.g. the ones a search
    ranked them by), otherwise the highest by `importance` (a criterion or a `Scorer`) on the
    unpruned copy. The input model is not modified. Every concat part inside a group keeps at
    least `width_floor(part, min_width_ratio)` of its channels (None: at least one), however low
    its channels score.

    Returns:
        The pruned module (same train/eval mode as `model`) and the plan with `kept` filled in for
        every group it lists and `meta["num_classes"]` when the output is (batch, classes).

    Raises:
        PlanError: the plan does not fit the model (also: a width that would empty a concat part).
        UnsupportedLayerError: the pruned model would change its output shape (a guard: the
            channel graph missed a coupling).
    """
    scorer = scorer_for(importance)
    input_shape = tuple(int(v) for v in input_shape)
    if tuple(plan.input_shape) != input_shape:
        raise PlanError(f"plan is for input shape {plan.input_shape}, got {input_shape}")
    work = copy.deepcopy(model)
    if scorer.needs_grads:  # deepcopy drops .grad
        for src, dst in zip(model.parameters(), work.parameters(), strict=True):
            if src.grad is not None:
                dst.grad = src.grad.detach().clone()
    given = dict(kept) if kept is not None else dict(plan.kept or {})
    plan = replace(plan, kept=given or None)
    graph = build_graph(work, input_shape)
    plan.validate(graph)

    meta = dict(plan.meta)
    before = _outputs(work, input_shape)
    if len(before) == 1 and len(before[0]) == 2:
        meta.setdefault("num_classes", int(before[0][1]))
    meta["importance"] = scorer.importance.value

    def part_floor(n: int) -> int:
        return 1 if min_width_ratio is None else width_floor(n, min_width_ratio)

    # Decide every group's kept channels before touching any weights.
    chosen: dict[str, list[int]] = {}
    for gid, w in plan.widths.items():
        full = graph.groups[gid].width
        if gid in given:
            chosen[gid] = sorted(int(i) for i in given[gid])
        elif w == full:
            chosen[gid] = list(range(full))
        else:
            ranked = scores[gid] if scores is not None and gid in scores else scorer(work, graph, gid)
            chosen[gid] = _kept_indices(ranked, graph, gid, w, part_floor)
    changed = []
    for gid, idxs in chosen.items():
        drop = set(range(graph.groups[gid].width)) - set(idxs)
        if drop:
            graph.prune_group(gid, drop)
            changed.append(gid)
    if changed:
        _check_pruned(work, input_shape, before, changed)
    return work, replace(plan, kept=chosen, meta=meta)


def _device(model: nn.Module) -> torch.device:
    try:
        return next(model.parameters()).device
    except StopIteration:
        return torch.device("cpu")


def save_pruned(model: nn.Module, plan: PruningPlan, path: str | Path) -> Path:
    """Write {"state_dict", "plan", "format": "locp_trt.pruned/1"}; load with `load_pruned`.

    Raises:
        PlanError: the plan has no `kept` indices (use the plan `apply_plan` returned).
    """
    if plan.kept is None:
        raise PlanError("the plan has no kept channel indices; save the plan returned by apply_plan")
    path = Path(path)
    state = rekey_state_dict(model.state_dict(), convert=lambda v: v.detach().cpu())  # keeps versions
    torch.save({"state_dict": state, "plan": plan.to_json(), "format": PRUNED_FORMAT}, path)
    return path


def pruned_from_payload(payload: Mapping[str, Any],
                        arch_factory: Callable[[], nn.Module] | None = None,
                        source: str = "pruned model") -> tuple[nn.Module, PruningPlan]:
    """Rebuild a pruned model from a loaded `save_pruned` dict (see `load_pruned`)."""
    if payload.get("format") != PRUNED_FORMAT:
        raise ModelLoadError(f"{source}: format {payload.get('format')!r}, expected {PRUNED_FORMAT!r}")
    plan = PruningPlan.from_json(payload.get("plan") or {})
    if arch_factory is not None:
        base = arch_factory()
    elif plan.arch:
        base = rebuild_arch(plan.arch, plan.meta.get("num_classes"), plan.input_shape[0], source)
    else:
        raise ModelLoadError(f"{source}: the plan names no architecture (the model was loaded from a "
                             "pickled module); pass --arch NAME or package.module:callable for the "
                             "original model")
    if plan.kept is None:
        raise ModelLoadError(f"{source}: the plan has no kept channel indices")
    pruned, plan = apply_plan(base, plan, plan.input_shape, kept=plan.kept)
    state = payload.get("state_dict")
    if not isinstance(state, Mapping):
        raise ModelLoadError(f"{source}: no state_dict in the file")
    if getattr(state, "_metadata", None) is None:  # written before versions were kept: ours, so
        state = rekey_state_dict(state)                # the module's own versions are the file's
        state._metadata = pruned.state_dict()._metadata  # type: ignore[attr-defined]
    load_weights(pruned, state, source)
    return pruned.eval(), plan


def load_pruned(path: str | Path, arch_factory: Callable[[], nn.Module] | None = None
                ) -> tuple[nn.Module, PruningPlan]:
    """Load a `save_pruned` file: rebuild the original arch (zoo name `plan.arch`, or
    `arch_factory()`), prune the recorded indices, load the pruned weights. Model in eval mode.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelLoadError(f"pruned model file not found: {path}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unreadable file is one user error
        raise ModelLoadError(f"{path}: not a readable locp_trt pruned model ({type(e).__name__})") from None
    if not isinstance(payload, Mapping):
        raise ModelLoadError(f"{path}: holds a {type(payload).__name__}, not a locp_trt pruned model")
    return pruned_from_payload(payload, arch_factory, str(path))
