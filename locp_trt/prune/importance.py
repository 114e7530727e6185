"""Channel importance per group, from Torch-Pruning's criteria.

Scores are computed over every member of the group (Torch-Pruning's group reduction "mean":
the average over the coupled conv/linear/BN parameters of each channel) and then divided by the
group's sum, so each group's scores add up to 1. `importance_lost(scores, keep)` is therefore the
fraction of a group's importance that pruning it to `keep` channels removes, in [0, 1], which is
comparable across groups of different sizes and layer types.

Every criterion is a scorer (`Scorer`) with one interface, as Torch-Pruning's `Importance` has:
`scorer(model, graph, group_id)` scores one group, `scorer.scores(model, graph, groups)` several
(a data-driven scorer does its passes over the data once for all of them). `scorer_for` builds the
one an `Importance` names: magnitude (L1, L2), BatchNorm scale, Torch-Pruning's Taylor on gradients
already there, or Taylor over training batches (`TaylorScorer`, which carries its data).

Taylor importance over several batches (`taylor_scores`, what `--importance taylor` means) is the
group Taylor criterion of Molchanov et al. (CVPR 2019), the one HALP (Shen et al. 2022) ranks
channels with. Removing channel c is, to first order, putting a gate z_c = 1 -> 0 on it; the loss
changes by about g_b,c = dL_b/dz_c on batch b. With the gate placed where the channel enters its
consumers (every conv/linear that reads it), g_b,c = sum of w * dL_b/dw over the input-channel
slice c of those consumers' weights: exact for convs and linears, whatever lies in between (ReLU,
pooling, residual adds, concat, flatten), and equal to HALP's BatchNorm gate
gamma * dL/dgamma + beta * dL/dbeta when a BN's output reaches the consumers through a ReLU. The
score is the mean over batches of g_b,c squared, as in both papers: squaring per batch, rather than
summing the gradients first, keeps the signal of a trained model, whose gradient over the whole
data set is near zero and would cancel. A channel whose consumers' weights are zero, or whose
activations are zero, scores 0.

Weighing groups against each other (`weigh_by_reach`): a score normalised within its group says
which of the group's channels matter, not how much the group matters beside the others. Left at
that, a ResNet stage's residual trunk (one group, read and written by every block of the stage)
costs as much to halve as one block's inner conv, while removing it saves the latency of every
layer it touches, so a latency-greedy search strips the trunk first: on the H200 run of
benchmarks/accuracy.py, LOCP cut ResNet-56's 64-wide stage-3 trunk to 8 channels (its floor) at
2.5x and lost 1.8 points more than Torch-Pruning's global ranking after the same fine-tuning.
`weigh_by_reach` multiplies each group's scores by its reach, the number of conv/linear layers
that hold a slice of its channels, relative to the mean over the groups scored: a ResNet-56 trunk
reaches about 20 layers, a block's inner conv 2. (Weighing by the parameters a channel carries
was tried first and rejected: it also favours pruning the wide-image early stages, whose channels
carry few parameters, and cut ResNet-56's first stage to its floor.)
"""

from __future__ import annotations

import enum
import itertools
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from ..errors import DatasetError, InvalidConfigError

__all__ = ["Importance", "Scorer", "CriterionScorer", "TaylorScorer", "scorer_for", "group_importance",
           "importance_lost", "accumulate_taylor", "taylor_scores", "most_important", "channel_reach",
           "weigh_by_reach", "share_blocks"]


class Importance(str, enum.Enum):
    """Channel importance criteria."""

    L1 = "l1"  # sum of |w| of the channel's weights in every coupled layer
    L2 = "l2"  # sum of w^2
    BN_SCALE = "bn_scale"  # |gamma| of the coupled BatchNorms (network slimming)
    # first-order Taylor (Molchanov et al. 2019) over several batches: `taylor_scores`. In
    # `group_importance` (and `apply_plan`) it is Torch-Pruning's |w * dL/dw| on gradients already
    # there (see accumulate_taylor).
    TAYLOR = "taylor"

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
    from ._graph_tp import tp_guard
    from .graph import ModelGraph

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
                "accumulate_taylor(model, batches, loss_fn) first (or score every group over several "
                "batches with taylor_scores), or use l1/l2/bn_scale"
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
    arr = arr / total if total > 0 else np.zeros_like(arr)
    return share_blocks(arr, _blocks_of(graph_or_DG, group_id))


def _blocks_of(graph: Any, group_id: str) -> int:
    group = getattr(graph, "groups", {}).get(group_id)
    return int(getattr(group, "blocks", 1)) if group is not None else 1


def share_blocks(scores: np.ndarray, blocks: int) -> np.ndarray:
    """Scores of a group a grouped conv splits into `blocks` conv groups: each channel gets the
    mean of its position over the blocks (the same sum), because the same positions are pruned in
    every block (`prune.graph`); as Torch-Pruning averages a grouped layer's importance over its
    conv groups. `importance_lost` is then exact for any width that is a multiple of `blocks`."""
    if blocks <= 1:
        return scores
    if scores.size % blocks:
        raise InvalidConfigError(f"{scores.size} scores cannot be split into {blocks} conv groups")
    per_position = scores.reshape(blocks, -1).mean(0)
    return np.tile(per_position, blocks)


class Scorer:
    """Channel importance of channel groups, normalised to sum to 1 per group.

    Attributes:
        importance: the criterion (recorded in plans and reports).
        needs_grads: scores read the gradients already on the model's weights (a pruned copy
            must carry them).
    """

    importance: Importance
    needs_grads: bool = False

    def __call__(self, model: nn.Module, graph: Any, group_id: str) -> np.ndarray:
        """Scores of one group's channels (numpy float64 [width])."""
        raise NotImplementedError

    def scores(self, model: nn.Module, graph: Any, groups: Iterable[str]) -> dict[str, np.ndarray]:
        """Scores of several groups."""
        return {g: self(model, graph, g) for g in groups}


class CriterionScorer(Scorer):
    """A Torch-Pruning criterion on the weights as they are (`group_importance`): L1, L2,
    BatchNorm scale, or Taylor on gradients already computed (`accumulate_taylor`)."""

    def __init__(self, importance: Importance) -> None:
        self.importance = importance
        self.needs_grads = importance is Importance.TAYLOR

    def __call__(self, model: nn.Module, graph: Any, group_id: str) -> np.ndarray:
        return group_importance(model, graph, group_id, self.importance, grads_available=self.needs_grads)


class TaylorScorer(Scorer):
    """First-order Taylor importance over `batches` batches of `loader` (`taylor_scores`; every
    group scored in one pass over the data).

    The batches are drawn once, at the first scoring, with torch's random state fixed to `seed`
    (restored afterwards), and every later scoring reuses them: scores then depend on the model
    alone, not on how far the loader's shuffling has gone, so a resumed run scores its next step
    as the uninterrupted run did."""

    importance = Importance.TAYLOR

    def __init__(self, loader: Iterable[tuple[torch.Tensor, torch.Tensor]], *, batches: int = 8,
                 device: torch.device | str | None = None, seed: int = 0) -> None:
        self.loader, self.batches, self.device, self.seed = loader, batches, device, seed
        self._drawn: list[tuple[torch.Tensor, torch.Tensor]] | None = None

    def __call__(self, model: nn.Module, graph: Any, group_id: str) -> np.ndarray:
        return self.scores(model, graph, [group_id])[group_id]

    def scores(self, model: nn.Module, graph: Any, groups: Iterable[str]) -> dict[str, np.ndarray]:
        return taylor_scores(model, graph, self._batches(), batches=self.batches, device=self.device,
                             groups=list(groups))

    def _batches(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        if self._drawn is None:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(self.seed)
                self._drawn = list(itertools.islice(iter(self.loader), self.batches))
        return self._drawn


def scorer_for(importance: Importance | str | Scorer, *, loader: Any = None,
               device: torch.device | str | None = None, seed: int = 0) -> Scorer:
    """The scorer an `Importance` names. Taylor scores from `loader`'s training batches (drawn
    with `seed`) where one is given, else from the gradients already on the weights."""
    if isinstance(importance, Scorer):
        return importance
    importance = Importance.parse(importance)
    if importance is Importance.TAYLOR and loader is not None:
        return TaylorScorer(loader, device=device, seed=seed)
    return CriterionScorer(importance)


def channel_reach(graph: Any, groups: Iterable[str]) -> dict[str, float]:
    """How many conv/linear layers hold a slice of each group's channels (as output or input):
    what removing one of its channels cuts into. A ResNet-56 stage trunk reaches about 20, a
    block's inner conv 2."""
    return {g: float(len(graph.touched_layers(g))) for g in groups}


def weigh_by_reach(scores: dict[str, np.ndarray], graph: Any) -> dict[str, np.ndarray]:
    """Each group's normalised scores times its `channel_reach` over the mean reach of `scores`'
    groups, so importance lost compares across groups (see the module docstring)."""
    reach = channel_reach(graph, scores)
    mean = float(np.mean(list(reach.values()))) if reach else 1.0
    return {g: s * (reach[g] / mean if mean > 0 else 1.0) for g, s in scores.items()}


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


def most_important(scores: np.ndarray | Sequence[float], keep: int) -> list[int]:
    """Indices of the `keep` highest scores, ascending (ties: the lower index), for `apply_plan(kept=)`."""
    arr = np.asarray(scores, dtype=np.float64)
    if not 0 <= keep <= arr.size:
        raise InvalidConfigError(f"keep must be in 0..{arr.size}, got {keep}")
    order = np.argsort(-arr, kind="stable")
    return sorted(int(i) for i in order[:keep])


def _is_input_slice(dep: Any) -> bool:
    """Whether a group item is a conv/linear reading the group's channels (its input channels)."""
    module = dep.target.module
    return (isinstance(module, (nn.modules.conv._ConvNd, nn.Linear))
            and getattr(dep.handler, "__name__", "") == "prune_in_channels")


def _input_gates(module: nn.Module) -> torch.Tensor:
    """sum of w * dL/dw over each input channel's slice of the weight: (in_channels,)."""
    w, g = module.weight, module.weight.grad
    wg = (w.detach() * g).float() if g is not None else torch.zeros_like(w, dtype=torch.float32)
    if isinstance(module, nn.Linear):
        return wg.sum(0)
    if getattr(module, "transposed", False):  # weight (in, out / groups, *k): input channels first
        return wg.flatten(1).sum(1)
    groups = int(module.groups)  # weight (out, in / groups, *k)
    per_out = wg.flatten(2).sum(2)  # (out, in / groups)
    out, in_per_group = per_out.shape
    return per_out.reshape(groups, out // groups, in_per_group).sum(1).reshape(-1)


def _consumers(group: Any) -> list[tuple[nn.Module, list[int], list[int]]]:
    """(module, input-channel indices, the group channel of each) for every consumer in a group.

    A module that also writes the group's channels (a depthwise conv) passes them through rather
    than consuming them: its readers further on are the consumers.
    """
    writers = {id(dep.target.module) for dep, _ in group if not _is_input_slice(dep)}
    out = []
    for i, (dep, idxs) in enumerate(group):
        module = dep.target.module
        root = list(group[i].root_idxs)
        if not _is_input_slice(dep) or id(module) in writers or any(r is None for r in root):
            continue
        out.append((module, [int(v) for v in idxs], [int(v) for v in root]))
    return out


def taylor_scores(model: nn.Module, graph: Any, loader: Iterable[tuple[torch.Tensor, torch.Tensor]], *,
                  batches: int = 8, device: torch.device | str | None = None,
                  loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
                  groups: Iterable[str] | None = None) -> dict[str, np.ndarray]:
    """Taylor importance of every channel, from the first `batches` batches of `loader`.

    Per group, channel c scores mean over batches of (sum of w * dL/dw over the input slices that
    read c); see the module docstring. Each group's scores are normalised to sum to 1 like
    `group_importance` (all zeros when every channel scores 0). The forward passes run in eval
    mode (BatchNorm uses its running statistics); the model's mode, gradients and requires_grad
    flags are restored afterwards and its weights are not changed.

    Args:
        model: the model `graph` was built on (`build_graph(model, ...)`).
        graph: its `ModelGraph`.
        loader: yields (inputs, integer labels), e.g. the training DataLoader (never the test set).
        batches: how many batches to average over (fewer if the loader ends first).
        device: where to run; the model is moved there in place. None: where the model is.
        loss_fn: loss(logits, labels); default cross-entropy.
        groups: group ids to score; default every prunable group.

    Returns:
        group id -> numpy float64 [current width], non-negative, summing to 1 (or all 0).

    Raises:
        InvalidConfigError: batches < 1, a graph of another model, or a group that no conv or
            linear layer reads (use l1 for that model).
        DatasetError: the loader yields no batch.
    """
    from ..train.finetune import resolve_torch_device

    if batches < 1:
        raise InvalidConfigError(f"Taylor importance needs batches >= 1, got {batches}")
    if getattr(graph, "model", None) is not model:
        raise InvalidConfigError("the graph was built for another model; build_graph(model) first")
    ids = [g.id for g in graph.prunable()] if groups is None else list(groups)
    consumers = {gid: _consumers(graph.tp_group(gid)) for gid in ids}
    for gid, used in consumers.items():
        if not used:
            raise InvalidConfigError(
                f"Taylor importance of group {gid!r}: no conv or linear layer reads its channels, so "
                "their effect on the loss cannot be estimated; use --importance l1"
            )
    if device is not None:
        model.to(resolve_torch_device(device))
    params = list(model.parameters())
    if not params:
        raise InvalidConfigError(f"{type(model).__name__} has no parameters to score")
    run_on, dtype = params[0].device, next((p.dtype for p in params if p.is_floating_point()), torch.float32)
    loss_fn = loss_fn or nn.functional.cross_entropy
    saved = [(p.grad, p.requires_grad) for p in params]
    was_training = model.training
    sums = {gid: torch.zeros(graph.groups[gid].width, dtype=torch.float64, device=run_on) for gid in ids}
    seen = 0
    try:
        model.eval()
        for p in params:
            p.grad = None
            p.requires_grad_(True)
        with torch.enable_grad():
            for inputs, targets in itertools.islice(iter(loader), batches):
                model.zero_grad(set_to_none=True)
                logits = model(inputs.to(run_on, dtype=dtype, non_blocking=True))
                loss_fn(logits, targets.to(run_on, non_blocking=True)).backward()
                for gid, used in consumers.items():
                    gate = torch.zeros_like(sums[gid])
                    for module, idxs, root in used:
                        per_input = _input_gates(module).double()
                        gate.index_add_(0, torch.tensor(root, device=run_on), per_input[idxs])
                    sums[gid] += gate.square()
                seen += 1
    finally:
        for p, (grad, flag) in zip(params, saved):
            p.grad = grad
            p.requires_grad_(flag)
        model.train(was_training)
    if seen == 0:
        raise DatasetError("Taylor importance: the loader yielded no batch; check --data and --train-limit")
    out = {}
    for gid, total in sums.items():
        arr = (total / seen).cpu().numpy()
        norm = float(arr.sum())
        out[gid] = share_blocks(arr / norm if norm > 0 else np.zeros_like(arr), _blocks_of(graph, gid))
    return out
