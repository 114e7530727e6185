"""Channel importance per group, from Torch-Pruning's criteria.

Scores are computed over every member of the group (Torch-Pruning's group reduction "mean":
the average over the coupled conv/linear/BN parameters of each channel) and then divided by the
group's sum, so each group's scores add up to 1. `importance_lost(scores, keep)` is therefore the
fraction of a group's importance that pruning it to `keep` channels removes, in [0, 1], which is
comparable across groups of different sizes and layer types.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from ..errors import InvalidConfigError

__all__ = ["Importance", "group_importance", "importance_lost", "accumulate_taylor"]


class Importance(str, enum.Enum):
    """Channel importance criteria."""

    L1 = "l1"  # sum of |w| of the channel's weights in every coupled layer
    L2 = "l2"  # sum of w^2
    BN_SCALE = "bn_scale"  # |gamma| of the coupled BatchNorms (network slimming)
    TAYLOR = "taylor"  # |w * dL/dw| (Molchanov et al. 2019); needs gradients, see accumulate_taylor

    @classmethod
    def parse(cls, value: str | Importance) -> Importance:
        """Accept an Importance or its value ('l1', 'l2', 'bn_scale', 'taylor'), case-insensitive."""
        if isinstance(value, Importance):
            return value
        try:
            return cls(str(value).lower().replace("-", "_"))
        except ValueError:
            raise InvalidConfigError(
                f"unknown importance {value!r}; use one of: {', '.join(i.value for i in cls)}"
            ) from None


def _scorer(kind: Importance) -> Any:
    import torch_pruning as tp

    imp = tp.importance
    if kind is Importance.L1:
        return imp.MagnitudeImportance(p=1, group_reduction="mean", normalizer=None)
    if kind is Importance.L2:
        return imp.MagnitudeImportance(p=2, group_reduction="mean", normalizer=None)
    if kind is Importance.BN_SCALE:
        return imp.BNScaleImportance(group_reduction="mean", normalizer=None)
    return imp.TaylorImportance(group_reduction="mean", normalizer=None)


def _tp_group(model: nn.Module, graph_or_dg: Any, group_id: str) -> Any:
    from .._graph_tp import tp_guard
    from ..graph import ModelGraph

    if isinstance(graph_or_dg, ModelGraph):
        if graph_or_dg.model is not model:
            raise InvalidConfigError("the graph was built for another model; build_graph(model) first")
        return graph_or_dg.tp_group(group_id)
    # A Torch-Pruning DependencyGraph: group_id names the root conv/linear module.
    module = model.get_submodule(group_id)
    pruner = graph_or_dg.get_pruner_of_module(module)
    width = graph_or_dg.get_out_channels(module)
    with tp_guard():  # as in graph.py: no index mapping through channel shuffles
        return graph_or_dg.get_pruning_group(module, pruner.prune_out_channels, list(range(width)))


def group_importance(model: nn.Module, graph_or_DG: Any, group_id: str, kind: Importance, *,
                     grads_available: bool = False) -> np.ndarray:
    """Importance of each channel of one group, normalised to sum to 1 (numpy float64 [width]).

    Args:
        model: the model the graph was built on.
        graph_or_DG: a `ModelGraph`, or a Torch-Pruning `DependencyGraph` (then `group_id` is the
            name of the conv/linear whose output channels root the group).
        group_id: channel group id.
        kind: criterion. TAYLOR needs gradients on the weights: run `accumulate_taylor` (or your
            own backward pass) first and pass `grads_available=True`.

    Raises:
        InvalidConfigError: TAYLOR without gradients, or BN_SCALE on a group without BatchNorm.
    """
    kind = Importance.parse(kind)
    group = _tp_group(model, graph_or_DG, group_id)
    if kind is Importance.TAYLOR:
        missing = [str(dep.target.name) for dep, _ in group
                   if isinstance(dep.target.module, (nn.modules.conv._ConvNd, nn.Linear))
                   and dep.target.module.weight.grad is None]
        if not grads_available or missing:
            raise InvalidConfigError(
                f"Taylor importance of group {group_id!r} needs gradients on the weights "
                f"({'none found' if missing else 'grads_available=False'}); run "
                "accumulate_taylor(model, batches, loss_fn) first, or use l1/l2/bn_scale"
            )
    scores = _scorer(kind)(group)
    if scores is None:
        raise InvalidConfigError(
            f"importance {kind.value} found nothing to score in group {group_id!r} "
            f"({'no BatchNorm in the group' if kind is Importance.BN_SCALE else 'no weights'}); "
            "use l1 or l2"
        )
    arr = scores.detach().double().cpu().numpy()
    total = float(arr.sum())
    return arr / total if total > 0 else np.zeros_like(arr)


def importance_lost(scores: np.ndarray | Iterable[float], keep: int) -> float:
    """Sum of the smallest `len(scores) - keep` scores: what pruning to `keep` channels removes."""
    arr = np.sort(np.asarray(list(scores) if not isinstance(scores, np.ndarray) else scores,
                             dtype=np.float64))
    if not 0 <= keep <= arr.size:
        raise InvalidConfigError(f"keep must be in 0..{arr.size}, got {keep}")
    return float(arr[: arr.size - keep].sum())


def accumulate_taylor(model: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
                      loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> int:
    """Zero the gradients, then sum `loss_fn(model(x), y)` gradients over `batches`.

    The model's mode is left as it is (call `model.eval()` first to keep BatchNorm statistics).
    Returns the number of batches used.
    """
    model.zero_grad(set_to_none=True)
    n = 0
    with torch.enable_grad():
        for x, y in batches:
            loss_fn(model(x), y).backward()
            n += 1
    if n == 0:
        raise InvalidConfigError("accumulate_taylor got no batches")
    return n
