"""Channel groups that must be pruned together, and the layer configs each group touches.

Built on Torch-Pruning's `DependencyGraph` (one traced forward pass), not a home-made tracer:
every group Torch-Pruning reports (a conv/linear output plus everything coupled to it through
BatchNorm, residual adds, depthwise convs, concats, flattens) becomes one `ChannelGroup`. A second
forward pass with hooks records each conv/linear layer's real input size, giving a `LayerSite`
whose `LayerConfig` is what the latency model measures.

How a layer's input width follows the groups: `LayerSite.in_parts` lists the pieces of its input
in channel order, each `InputPart(group, features)` (`group=None`: fixed, e.g. the image). When a
group narrows from `W` to `w`, a part contributes `features * w // W` inputs. For an ordinary conv
that is just `w`; for the Linear after a flatten (LeNet5 `conv2` -> `linear1`: 64 channels x 7x7
= 3136 features) it is `w * 49`, so `linear1`'s config at `conv2` width 40 has in_channels 1960;
for a conv after a concat the parts add up.

Grouped convs (groups > 1, not depthwise: ResNeXt, RegNet) are pruned evenly inside each of their
conv groups, keeping `groups`: a channel group that a grouped conv reads or writes has `blocks` =
its `groups` (the lcm when several grouped convs touch it), its widths are multiples of `blocks`,
and the same positions are dropped in every block (`ChannelGroup.blocks`, `block_kept`). Not by
whole conv groups: Torch-Pruning 1.6 never changes a non-depthwise conv's `groups` (only its
depthwise pruner does), and its `ConvPruner.prune_in_channels` slices the grouped weight with the
first conv group's kept positions (`keep_idxs[:len(keep_idxs) // groups]`), so it is right only
when every conv group keeps the same positions; its own pruners repeat the indices per conv group
and average the importance over them. Dropping whole conv groups would also tie the grouped conv's
input and output channel groups into one decision. So a RegNet block's group width shrinks (16 ->
8 at half width) while its `groups` stays, and the grouped staircase is measured at those widths
(the `LayerConfig` carries `groups`, and the store keys on it). A grouped conv that reads only part
of its input from the group (a concat before it), or writes only part of it, keeps it fixed.

Groups that cannot change width are kept and marked (`prunable=False`, with a `reason`), never
dropped: the model's output (every conv/linear whose output channels reach a graph output, found
by walking back from the outputs, whatever the head: conv, linear, pooling, flatten), width 1,
channels that pass through a split/slice (sizes fixed in the forward code), channels a grouped
conv reads or writes only in part (or with one channel per conv group), channels that pass an op
moving them in a way Torch-Pruning cannot follow
(a channel shuffle's view/transpose, permute, pixel_shuffle; see `_graph_tp`), a reshape that
does not map whole channels, the channels into and out of a transposed conv (left unpruned, and
not measured: no `LayerSite`), and layers the forward pass never reaches. The groups around such
an op (a ShuffleNet branch's inner convs) stay prunable.

A group may hold several concat parts (branches concatenated, then added to a wider tensor):
`ChannelGroup.parts` lists their channels, and no width or kept-channel choice may empty one.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn as nn

from ..errors import InvalidConfigError, PlanError, UnsupportedLayerError, first_line, short_list
from ..latency.config import LayerConfig, Op, Precision
from ._graph_tp import (
    channel_op_problem,
    coupled_groups,
    mark_channels_last,
    nearest_layer,
    output_layers,
    tp_guard,
)

__all__ = ["InputPart", "LayerSite", "ChannelGroup", "ModelGraph", "build_graph", "count_params", "width_floor",
           "group_floor"]


def count_params(model: nn.Module) -> int:
    """The parameter count every locp_trt report, table and listing uses: all of the model's
    parameters (conv/linear weights and biases, BatchNorm affine weights and biases, any other
    learned tensor), each shared tensor once; buffers (BatchNorm running statistics) excluded."""
    return int(sum(p.numel() for p in model.parameters()))


@dataclass(frozen=True)
class InputPart:
    """A slice of a layer's input that one group (or nothing: `group=None`) sets."""

    group: str | None  # channel group id; None: fixed (the image input, or an unpruned source)
    features: int  # input channels (conv) or features (linear) this part gives at original widths


@dataclass(frozen=True)
class LayerSite:
    """One conv/linear layer of the model."""

    name: str  # qualified module name
    config: LayerConfig  # at the ORIGINAL widths, real input H, W, the given batch and precision
    in_group: str | None  # group that sets its input channels (first one after a concat); None: fixed
    out_group: str | None  # group that sets its output channels; None: fixed
    in_parts: tuple[InputPart, ...] = ()  # all pieces of its input, in channel order

    def in_channels(self, widths: Mapping[str, int], groups: Mapping[str, ChannelGroup]) -> int:
        """Input channels (conv) or features (linear) at the given group widths."""
        total = 0
        for part in self.in_parts:
            if part.group is None:
                total += part.features
            else:
                full = groups[part.group].width
                total += part.features * int(widths.get(part.group, full)) // full
        return total


@dataclass(frozen=True)
class ChannelGroup:
    """Channels pruned together: one index removed here is removed from every member."""

    id: str  # name of the first conv/linear (model order) whose output is in the group
    width: int  # original channel count
    members: tuple[str, ...]  # "module:out", "module:in", "module:dw", "module:bn", ...
    prunable: bool
    reason: str = ""  # why not prunable
    # Channels (indices into the group) of each concat part inside it, e.g. two branches
    # concatenated and then added to a wider tensor; each part must keep some of its channels.
    parts: tuple[tuple[int, ...], ...] = ()
    # Conv groups of the grouped conv(s) reading or writing these channels (1: none): widths are
    # multiples of it and every block of width / blocks channels keeps the same positions.
    blocks: int = 1

    def fits(self, width: int) -> bool:
        """Whether `width` is a width this group can take: a multiple of `blocks`, within 1..width."""
        return 1 <= int(width) <= self.width and int(width) % self.blocks == 0

    def block_kept(self, order: Iterable[int], width: int) -> list[int]:
        """`width` channels taken from `order` (best first) that keep the same positions in every
        block, sorted: the positions are ranked by the first time `order` names any of their
        channels (with scores already shared across blocks, as `importance.share_blocks` does,
        that is the positions' rank)."""
        size = self.width // self.blocks
        if not self.fits(width):
            raise PlanError(f"width {width} for group {self.id!r} is not a multiple of its {self.blocks} "
                            f"conv groups (grouped conv; widths {self.blocks}, {2 * self.blocks}, ...)")
        positions = list(dict.fromkeys(int(i) % size for i in order))[: width // self.blocks]
        return sorted(b * size + p for b in range(self.blocks) for p in positions)

    def must_keep(self, order: Iterable[int], floor: Callable[[int], int] = lambda n: 1) -> list[int]:
        """Channels, taken from `order` (best first), that keep `floor(len(part))` of every part.

        Smaller parts are served first, so nested parts (a concat inside a concat) share them.
        Returns them in the order taken; empty for a group without parts.
        """
        ranked = list(order)
        chosen: list[int] = []
        for part in sorted(self.parts, key=len):
            members = set(part)
            need = min(len(part), max(1, int(floor(len(part))))) - len(members.intersection(chosen))
            for i in ranked:
                if need <= 0:
                    break
                if i in members and i not in chosen:
                    chosen.append(i)
                    need -= 1
        return chosen

    def min_width(self, floor: Callable[[int], int] = lambda n: 1) -> int:
        """Narrowest width that keeps `floor(len(part))` channels (at least 1) of every part."""
        return max(self.blocks, len(self.must_keep(range(self.width), floor)))

    def __str__(self) -> str:
        state = "prunable" if self.prunable else f"fixed ({self.reason})"
        extra = f", concat parts {'+'.join(str(len(p)) for p in self.parts)}" if self.parts else ""
        if self.blocks > 1:
            extra += f", {self.blocks} conv groups: widths in steps of {self.blocks}"
        return f"group {self.id} [{self.width} ch{extra}, {state}]: {', '.join(self.members)}"


@dataclass
class ModelGraph:
    """Channel groups and layer sites of one model, traced at one input shape."""

    model: nn.Module
    input_shape: tuple[int, ...]  # one sample, e.g. (3, 32, 32)
    groups: dict[str, ChannelGroup]
    layers: dict[str, LayerSite]
    batch: int = 1
    precision: Precision = Precision.FP32
    # Torch-Pruning handles, for importance and pruning: group id -> (DG, root module, out fn).
    _tp: dict[str, Any] = field(default_factory=dict, repr=False)
    _dg: Any = field(default=None, repr=False)
    # Parameters besides conv/linear weights and biases (see `params`): per channel of each group
    # (BatchNorm weight + bias: 2), and the rest, which no group's width changes.
    _params_per_channel: dict[str, int] = field(default_factory=dict, repr=False)
    _params_fixed: int = field(default=0, repr=False)

    def _check_widths(self, widths: Mapping[str, int]) -> None:
        for gid, w in widths.items():
            g = self.groups.get(gid)
            if g is None:
                raise PlanError(f"unknown channel group {gid!r}; groups: {short_list(self.groups)}")
            if not 1 <= int(w) <= g.width:
                raise PlanError(f"width {w} for group {gid!r} is outside 1..{g.width}")
            if not g.prunable and int(w) != g.width:
                raise PlanError(f"group {gid!r} cannot be pruned ({g.reason}); keep width {g.width}")
            if not g.fits(w):
                raise PlanError(f"width {w} for group {gid!r} is not a multiple of {g.blocks}: a grouped "
                                f"conv splits its channels into {g.blocks} conv groups, each pruned alike")
            if int(w) < g.min_width():
                raise PlanError(f"width {w} for group {gid!r} would empty one of its concat parts "
                                f"({'+'.join(str(len(p)) for p in g.parts)} channels); keep at least "
                                f"{g.min_width()}")

    def layer_configs(self, widths: Mapping[str, int], names: Iterable[str] | None = None, *,
                      check: bool = True) -> dict[str, LayerConfig]:
        """Config of every conv/linear layer (or of the layers `names`) with group widths
        replaced (missing: original). A staircase asks only for the layers its group touches: on
        a dense-concat graph (DenseNet-121: 121 layers, most groups touching 2-26) computing
        every layer's config for each width was a third of a step's time.

        Args:
            widths: width per group (original where absent).
            names: the layers to configure (None: all).
            check: validate `widths` (a caller that varies one group of widths it has checked
                passes False and checks that group's width itself).

        Raises:
            PlanError: unknown group, width out of range, or an unprunable group changed.
        """
        if check:
            self._check_widths(widths)
        out: dict[str, LayerConfig] = {}
        sites = self.layers.items() if names is None else ((n, self.layers[n]) for n in names)
        for name, site in sites:
            cfg = site.config
            cin = site.in_channels(widths, self.groups)
            cout = cfg.out_channels
            if site.out_group is not None:
                cout = int(widths.get(site.out_group, cout))
            if cin == cfg.in_channels and cout == cfg.out_channels:
                out[name] = cfg
            elif cfg.is_depthwise:
                out[name] = cfg.with_channels(out_channels=cout)
            else:
                out[name] = cfg.with_channels(in_channels=cin, out_channels=cout)
        return out

    def touched_layers(self, group_id: str) -> list[str]:
        """Layers whose input or output width is set (at least in part) by this group."""
        if group_id not in self.groups:
            raise PlanError(f"unknown channel group {group_id!r}; groups: {short_list(self.groups)}")
        return [
            n for n, s in self.layers.items()
            if s.out_group == group_id or any(p.group == group_id for p in s.in_parts)
        ]

    def flops(self, widths: Mapping[str, int] | None = None) -> int:
        """Conv/linear FLOPs (2 x MACs) of one forward pass of the whole batch."""
        return sum(c.flops for c in self.layer_configs(widths or {}).values())

    def params(self, widths: Mapping[str, int] | None = None) -> int:
        """Parameters of the model at these widths, as `count_params` counts them (BatchNorm affine
        weights and biases included, running statistics not): at the original widths the model's
        own count, after pruning to `widths` the pruned model's."""
        widths = widths or {}
        layers = sum(math.prod(c.weight_shape) + (c.out_channels if c.bias else 0)
                     for c in self.layer_configs(widths).values())
        per_channel = sum(n * int(widths.get(gid, self.groups[gid].width))
                          for gid, n in self._params_per_channel.items())
        return layers + per_channel + self._params_fixed

    def prunable(self) -> list[ChannelGroup]:
        """Groups whose width may change, in model order."""
        return [g for g in self.groups.values() if g.prunable]

    def unprunable(self) -> list[ChannelGroup]:
        """Groups that keep their width, each with its reason, in model order."""
        return [g for g in self.groups.values() if not g.prunable]

    def prunable_layers(self) -> list[str]:
        """Layers whose input or output width some prunable group sets (in model order): the
        layers pruning can make cheaper; the rest keep their config in every plan."""
        movable = {g.id for g in self.prunable()}
        return [n for n, s in self.layers.items()
                if s.out_group in movable or any(p.group in movable for p in s.in_parts)]

    def fixed_reason(self, layer: str) -> str:
        """Why layer `layer`'s widths never change: its output group's reason ('' if none)."""
        site = self.layers[layer]
        group = self.groups.get(site.out_group) if site.out_group is not None else None
        return group.reason if group is not None else ""

    def widths(self) -> dict[str, int]:
        """Original width of every group."""
        return {gid: g.width for gid, g in self.groups.items()}

    def tp_group(self, group_id: str) -> Any:
        """A fresh Torch-Pruning `Group` over all current channels of `group_id` (for importance)."""
        if group_id not in self._tp:
            raise PlanError(f"group {group_id!r} has no Torch-Pruning group (it is {self.groups[group_id].reason})"
                            if group_id in self.groups else f"unknown channel group {group_id!r}")
        module, fn, get_out = self._tp[group_id]
        with tp_guard():
            return self._dg.get_pruning_group(module, fn, list(range(get_out(module))))

    def prune_group(self, group_id: str, drop: Iterable[int]) -> None:
        """Physically remove channels `drop` (indices into the group) from every member."""
        drop = sorted(int(i) for i in drop)
        if drop:
            group = self.tp_group(group_id)
            with tp_guard():
                group.prune(drop)

    def __str__(self) -> str:
        lines = [f"ModelGraph {tuple(self.input_shape)}: {len(self.groups)} groups, {len(self.layers)} layers"]
        lines += [f"  {g}" for g in self.groups.values()]
        return "\n".join(lines)


# ---- building ---------------------------------------------------------------------------------

#: Transposed convs are left unpruned: the channels into and out of them keep their width, and
#: they have no `LayerSite` (their time is the fixed rest of the model, as pooling's is).
_TRANSPOSED = nn.modules.conv._ConvTransposeNd

_NORM_TYPES = (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.LayerNorm,
               nn.modules.instancenorm._InstanceNorm)


def _single(value: Any, what: str, name: str) -> int:
    """An int from an int or a tuple of equal ints; LayerConfig models square kernels only."""
    if isinstance(value, str):
        raise UnsupportedLayerError(f"layer {name}: padding={value!r} is not supported; use an int padding")
    vals = tuple(value) if isinstance(value, Iterable) else (value,)
    if len(set(vals)) != 1:
        raise UnsupportedLayerError(
            f"layer {name}: non-square {what} {vals} is not supported by the latency model "
            "(square kernels, strides and paddings only)"
        )
    return int(vals[0])


def _record_inputs(model: nn.Module, example: torch.Tensor) -> tuple[dict[str, list[tuple[int, ...]]], set[str]]:
    """Input shapes of every conv/linear call in one forward pass (name -> one shape per call),
    and the layers whose input is a LayerNorm's output over their input channels (each LayerNorm
    counted with its first such reader only)."""
    seen: dict[str, list[tuple[int, ...]]] = {}
    norm_out: dict[int, tuple[torch.Tensor, int]] = {}  # id(output) -> (output kept alive, channels)
    pre_norm: set[str] = set()
    handles = []
    for name, m in model.named_modules():
        if isinstance(m, (nn.modules.conv._ConvNd, nn.Linear)):
            def hook(_m: nn.Module, args: tuple[Any, ...], _name: str = name) -> None:
                x = args[0]
                seen.setdefault(_name, []).append(tuple(x.shape))
                norm = norm_out.pop(id(x), None)
                features = _m.in_features if isinstance(_m, nn.Linear) else _m.in_channels
                if norm is not None and norm[0] is x and norm[1] == features:
                    pre_norm.add(_name)
            handles.append(m.register_forward_pre_hook(hook))
        elif isinstance(m, nn.LayerNorm) and len(m.normalized_shape) == 1:
            def out_hook(_m: nn.Module, _args: tuple[Any, ...], out: Any) -> None:
                if isinstance(out, torch.Tensor):
                    norm_out[id(out)] = (out, int(_m.normalized_shape[0]))
            handles.append(m.register_forward_hook(out_hook))
    try:
        with torch.no_grad():
            model(example)
    finally:
        for h in handles:
            h.remove()
    return seen, pre_norm


def _site_config(name: str, m: nn.Module, shape: tuple[int, ...], batch: int,
                 precision: Precision, pre_norm: bool = False) -> LayerConfig:
    if isinstance(m, nn.Linear):
        rows = math.prod(shape) // m.in_features  # rows per traced sample (batch 1): usually 1
        return LayerConfig(Op.LINEAR, m.in_features, m.out_features, batch=batch * rows,
                           precision=precision, bias=m.bias is not None, pre_norm=pre_norm)
    if not isinstance(m, nn.Conv2d) or len(shape) != 4:
        raise UnsupportedLayerError(
            f"layer {name} is a {type(m).__name__}; locp_trt measures and prunes nn.Conv2d and "
            "nn.Linear layers only (and leaves nn.ConvTranspose2d unpruned)"
        )
    if _single(m.dilation, "dilation", name) != 1:
        raise UnsupportedLayerError(f"layer {name}: dilation {m.dilation} is not supported (dilation 1 only)")
    return LayerConfig(
        Op.CONV, m.in_channels, m.out_channels, kernel=_single(m.kernel_size, "kernel", name),
        stride=_single(m.stride, "stride", name), padding=_single(m.padding, "padding", name),
        groups=m.groups, input_hw=(shape[2], shape[3]), batch=batch, precision=precision,
        bias=m.bias is not None, pre_norm=pre_norm,
    )


def _tp_frame(e: BaseException) -> str:
    """'module.function' of the innermost frame of `e` (where Torch-Pruning failed)."""
    tb = e.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    if tb is None:
        return "?"
    mod = tb.tb_frame.f_globals.get("__name__", "?")
    return f"{mod}.{tb.tb_frame.f_code.co_name}"


def build_graph(model: nn.Module, input_shape: tuple[int, ...], *, batch: int = 1,
                precision: Precision = Precision.FP32) -> ModelGraph:
    """Trace `model` once and return its channel groups and layer sites.

    The model is traced in eval mode (BatchNorm statistics are not touched) with a batch-1 zero
    input on the model's device; the configs carry `batch` and `precision`.

    Args:
        model: the network; not modified (its train/eval mode is restored).
        input_shape: one sample's shape without the batch, e.g. (3, 32, 32).
        batch: batch size written into every LayerConfig.
        precision: precision written into every LayerConfig.

    Raises:
        UnsupportedLayerError: a conv that is not a square, undilated Conv2d, or a layer called
            more than once per forward pass (shared weights).
        InvalidConfigError: the model does not run on `input_shape`.
    """
    precision = Precision.coerce(precision)
    if batch < 1:
        raise InvalidConfigError(f"batch must be >= 1, got {batch}")
    input_shape = tuple(int(v) for v in input_shape)
    (shapes, pre_norm), dg, tp_groups, failed = _trace(model, input_shape)
    order = {name: i for i, (name, _) in enumerate(model.named_modules())}
    mod2name = {m: n for n, m in model.named_modules()}
    mod2name.update({p: n for n, p in model.named_parameters()})  # e.g. ConvNeXt's layer_scale
    layer_mods = [(n, m) for n, m in model.named_modules()
                  if isinstance(m, (nn.modules.conv._ConvNd, nn.Linear))]
    for name, calls in shapes.items():
        if len(calls) > 1:
            raise UnsupportedLayerError(
                f"layer {name} is called {len(calls)} times in one forward pass (shared weights); "
                "locp_trt needs one call per conv/linear layer"
            )

    groups: dict[str, ChannelGroup] = {}
    tp_handles: dict[str, Any] = {}
    out_group: dict[str, str] = {}
    in_parts: dict[str, list[tuple[int, InputPart]]] = {}  # layer -> (first index, part)
    outputs = output_layers(dg)
    for grp in tp_groups:
        found = _channel_group(grp, dg, mod2name, order, outputs, failed)
        if found is None:
            continue
        group, out_names, layer_inputs = found
        gid = group.id
        for ln, feats, first in layer_inputs:
            in_parts.setdefault(ln, []).append((first, InputPart(gid, feats)))
        for on in out_names:
            out_group[on] = gid
        groups[gid] = group
        root = grp[0].dep.target.module
        pruner = dg.get_pruner_of_module(root)
        tp_handles[gid] = (root, pruner.prune_out_channels, dg.get_out_channels)

    # Layers the forward pass never reached: reported as fixed groups, without a LayerSite.
    for name, m in layer_mods:
        if name not in shapes and name not in out_group:
            width = m.out_features if isinstance(m, nn.Linear) else m.out_channels
            groups[name] = ChannelGroup(name, int(width), (f"{name}:out",), False,
                                        "not reached in the traced forward pass")
    layers = _layer_sites(layer_mods, shapes, in_parts, out_group, batch, precision, pre_norm)
    groups = dict(sorted(groups.items(), key=lambda kv: order[kv[0]]))
    graph = ModelGraph(model, input_shape, groups, layers, batch, precision, tp_handles, dg)
    graph._params_per_channel = _params_per_channel(model, groups)
    # Everything else (unreached layers, non-channel tensors): the model's count less the rest.
    graph._params_fixed = 0
    graph._params_fixed = count_params(model) - graph.params()
    return graph


def _trace(model: nn.Module, input_shape: tuple[int, ...]):
    """One forward pass in eval mode (the model's mode restored): (each conv/linear's input
    shapes per call, Torch-Pruning's DependencyGraph, its coupled groups, the reshapes whose
    channel mapping it could not infer)."""
    import torch_pruning as tp

    try:
        device = next(model.parameters()).device
    except StopIteration:
        device = torch.device("cpu")
    example = torch.zeros((1, *input_shape), device=device)
    was_training = model.training
    model.eval()
    try:
        try:
            recorded = _record_inputs(model, example)
        except RuntimeError as e:
            raise InvalidConfigError(
                f"the model does not run on input shape {input_shape} (batch 1): {first_line(e)}; "
                "pass the input shape the model was built for"
            ) from None
        failed: set[Any] = set()  # reshapes whose channel mapping Torch-Pruning could not infer
        roots = [m for _, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear, _TRANSPOSED))]
        try:
            with torch.enable_grad(), tp_guard(failed):
                dg = tp.DependencyGraph().build_dependency(model, example_inputs=example, verbose=False)
                mark_channels_last(dg)  # permute -> LayerNorm/Linear -> permute back: channels kept
                tp_groups = coupled_groups(dg, roots)
        except Exception as e:  # noqa: BLE001 - a Torch-Pruning failure on this model: one line
            raise UnsupportedLayerError(
                f"Torch-Pruning cannot trace the channel dependencies of {type(model).__name__} "
                f"({first_line(e)}, in {_tp_frame(e)}); this model needs an op locp_trt does not "
                "handle yet: simplify that part of forward() or prune the model without it"
            ) from None
    finally:
        model.train(was_training)
    return recorded, dg, tp_groups, failed


def _channel_group(grp: Any, dg: Any, mod2name: Mapping[Any, str], order: Mapping[str, int],
                   outputs: Any, failed: set[Any]):
    """One Torch-Pruning group as a `ChannelGroup` (prunable, or fixed with its reasons), the
    layers whose outputs it sets, and (layer, features, first index) for the layers that read it;
    None when it sets no conv/linear output."""
    import torch_pruning as tp

    out_names, members, reasons = [], [], []
    grouped: list[tuple[str, nn.Conv2d, bool, int]] = []  # grouped convs: name, module, writes, channels
    parts: set[tuple[int, ...]] = set()
    moved: list[str] = []  # channel-moving ops the group's channels pass
    layer_inputs: dict[str, list[int]] = {}
    for item in grp:
        dep, idxs = item.dep, item.idxs
        node, target, fn = dep.target, dep.target.module, dep.handler
        is_out, is_in = dg.is_out_channel_pruning_fn(fn), dg.is_in_channel_pruning_fn(fn)
        if node.type in (tp.ops.OPTYPE.SPLIT, tp.ops.OPTYPE.SLICE, tp.ops.OPTYPE.UNBIND):
            reasons.append("passes through a split/slice whose sizes are fixed in forward()")
        op = channel_op_problem(node) or ("a reshape" if node in failed else None)
        if op:
            after = nearest_layer(node, mod2name)
            moved.append(f"{op}{f' after {after}' if after else ''}")
        name = mod2name.get(target)
        if name is None:
            continue
        if isinstance(target, _TRANSPOSED):
            reasons.append(f"{'from' if is_out else 'into'} transposed conv {name}, left unpruned")
        if isinstance(target, (nn.modules.conv._ConvNd, nn.Linear)):
            dw = isinstance(target, nn.Conv2d) and is_in and is_out
            if is_out and target in outputs:
                reasons.append("model output")
            if is_out and len(item.root_idxs) < dg.get_out_channels(grp[0].dep.target.module):
                parts.add(tuple(sorted(set(int(i) for i in item.root_idxs))))
            if isinstance(target, nn.Conv2d) and target.groups > 1 and not dw:
                grouped.append((name, target, is_out, len(set(int(i) for i in idxs))))
            if is_out:
                out_names.append(name)
            if is_in:
                layer_inputs.setdefault(name, []).extend(int(i) for i in idxs)
            members.append(f"{name}:{'dw' if dw else 'out' if is_out else 'in'}")
        elif isinstance(target, nn.modules.batchnorm._BatchNorm):
            members.append(f"{name}:bn")
        elif isinstance(target, _NORM_TYPES):
            members.append(f"{name}:norm")
        elif isinstance(target, nn.Module) and any(True for _ in target.parameters(recurse=False)):
            members.append(f"{name}:{type(target).__name__.lower()}")
        elif isinstance(target, nn.Parameter):  # a parameter outside any layer, pruned with the group
            members.append(f"{name}:param")
    if not out_names:
        return None
    if moved:
        more = f" (and {len(moved) - 1} more such ops)" if len(moved) > 1 else ""
        reasons.append(f"its channels pass {moved[0]}{more}, which moves channels in a way "
                       "Torch-Pruning cannot follow (e.g. a channel shuffle)")
    gid = min(out_names, key=order.__getitem__)
    width = dg.get_out_channels(grp[0].dep.target.module)
    reads = []
    for ln, idxs in layer_inputs.items():
        feats = len(set(idxs))
        if feats % width and not reasons:
            reasons.append(f"a reshape before {ln} does not map whole channels")
        reads.append((ln, feats, min(idxs)))
    if width == 1:
        reasons.append("width 1")
    blocks = _blocks(grouped, int(width), reasons)
    if blocks > 1 and parts:
        reasons.append(f"concat parts ({'+'.join(str(len(p)) for p in sorted(parts))} channels) read "
                       f"by a grouped conv ({blocks} conv groups)")
    members = sorted(dict.fromkeys(members), key=lambda s: _model_order(s.rsplit(":", 1)[0], order))
    reason = "; ".join(dict.fromkeys(reasons))
    group = ChannelGroup(gid, int(width), tuple(members), not reason, reason, tuple(sorted(parts)),
                         blocks if not reason else 1)
    return group, out_names, reads


def _blocks(grouped: list[tuple[str, nn.Conv2d, bool, int]], width: int, reasons: list[str]) -> int:
    """The conv groups a channel group is split into by the grouped convs that read or write it
    (the lcm of their `groups`; 1: none), adding to `reasons` where a grouped conv stops it from
    being pruned evenly inside each conv group (see the module docstring)."""
    blocks = 1
    for name, conv, writes, channels in grouped:
        own = conv.out_channels if writes else conv.in_channels
        if channels != own or own != width:
            reasons.append(f"grouped conv {name} (groups={conv.groups}) {'writes' if writes else 'reads'} "
                           f"{channels} of its {own} {'output' if writes else 'input'} channels here "
                           f"({width} in the group): its conv groups cannot be pruned alike")
            continue
        blocks = math.lcm(blocks, int(conv.groups))
    if blocks > 1 and width // blocks < 2:
        first = next(name for name, *_ in grouped)
        reasons.append(f"one channel per conv group of grouped conv {first} ({width} channels in "
                       f"{blocks} conv groups)")
    return blocks


def _model_order(name: str, order: Mapping[str, int]) -> int:
    """Position of module `name` (of a parameter: of its module) in `model.named_modules()`."""
    return order.get(name, order.get(name.rpartition(".")[0], 0))


def _layer_sites(layer_mods, shapes, in_parts, out_group, batch: int, precision: Precision,
                 pre_norm: set[str] = frozenset()) -> dict[str, LayerSite]:
    """A `LayerSite` for every conv/linear the forward pass reached: its config (with the
    LayerNorm right before it, when there is one), the groups its input channels come from (in
    order; fixed channels as a group-less part) and its output's."""
    layers: dict[str, LayerSite] = {}
    for name, m in layer_mods:
        if name not in shapes or isinstance(m, _TRANSPOSED):
            continue
        cfg = _site_config(name, m, shapes[name][0], batch, precision, pre_norm=name in pre_norm)
        parts = [p for _, p in sorted(in_parts.get(name, []), key=lambda t: t[0])]
        fixed = cfg.in_channels - sum(p.features for p in parts)
        if fixed > 0:
            parts.insert(0, InputPart(None, fixed))
        grouped = [p.group for p in parts if p.group is not None]
        layers[name] = LayerSite(name, cfg, grouped[0] if grouped else None, out_group.get(name),
                                 tuple(parts))
    return layers


def _params_per_channel(model: nn.Module, groups: Mapping[str, ChannelGroup]) -> dict[str, int]:
    """Group id -> parameters per channel in its non-conv/linear members: a BatchNorm's weight
    and bias give 2. A member tensor counts when its first dimension spans the channels of the
    groups holding that module (one group, or the parts of a concat)."""
    modules = dict(model.named_modules())
    params = dict(model.named_parameters())
    holders: dict[str, list[str]] = {}
    for gid, g in groups.items():
        for member in g.members:
            name, kind = member.rsplit(":", 1)
            m = modules.get(name)
            if (m is not None and not isinstance(m, (nn.modules.conv._ConvNd, nn.Linear))
                    or kind == "param" and name in params):
                holders.setdefault(name, []).append(gid)
    out: dict[str, int] = {}
    for name, gids in holders.items():
        gids = list(dict.fromkeys(gids))
        channels = sum(groups[gid].width for gid in gids)
        own = [params[name]] if name in params else modules[name].parameters(recurse=False)
        n = sum(p.numel() // channels for p in own if p.dim() >= 1 and p.shape[0] == channels)
        for gid in gids:
            if n:
                out[gid] = out.get(gid, 0) + n
    return out


# ---- floors -----------------------------------------------------------------------------------
def width_floor(original_width: int, min_width_ratio: float, round_floor: int = 1) -> int:
    """The narrowest width a group may reach: `min_width_ratio` of its original width.

    Rounded up to a multiple of `round_floor` (e.g. 8 for fp16 tensor cores), never below
    `round_floor` and never above the original width.
    """
    if not 0.0 < min_width_ratio <= 1.0:
        raise InvalidConfigError(
            f"min_width_ratio must be in (0, 1], got {min_width_ratio}; e.g. 0.1 keeps at least 10%"
        )
    if round_floor < 1:
        raise InvalidConfigError(f"round_floor must be >= 1, got {round_floor}")
    lo = math.ceil(min_width_ratio * original_width - 1e-9)
    lo = max(round_floor, math.ceil(lo / round_floor) * round_floor)
    return max(1, min(lo, original_width))


def group_floor(group, min_width_ratio: float, round_floor: int = 1) -> int:
    """The narrowest width a `ChannelGroup` may reach: `width_floor` of its original width, and
    enough channels for every concat part inside it to keep its own `width_floor` (never 0),
    rounded up to a multiple of the group's `blocks` (a grouped conv's conv groups).

    Two branches of 4 and 12 channels concatenated and added to a 16-channel tensor form one
    group of 16; at ratio 0.1 the group alone could go to 2, and both could come from the
    12-channel branch, emptying the other. Here the floor is 1 + 2 = 3.
    """
    def part(n: int) -> int:
        return width_floor(n, min_width_ratio)

    floor = width_floor(group.width, min_width_ratio, round_floor)
    blocks = getattr(group, "blocks", 1)
    if blocks > 1:  # a grouped conv's channel group: whole steps of `blocks` (never above the width)
        floor = min(group.width, -(-floor // blocks) * blocks)
    return max(floor, group.min_width(part)) if getattr(group, "parts", ()) else floor
