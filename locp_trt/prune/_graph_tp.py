"""What Torch-Pruning's dependency graph cannot follow, and how `graph.py` works around it.

Torch-Pruning (TP) 1.6 maps channel indices through concat, split, slice and a flatten of
(N, C, H, W) to (N, C*H*W). Every other op it treats as element-wise: index i in, index i out.
That is wrong for ops that move channels: a channel shuffle (`view` to (N, g, C/g, H, W),
`transpose(1, 2)`, `view` back, as in ShuffleNetV2), `permute`, `pixel_shuffle`, `roll` over
channels. Pruning across them keeps the shapes right but removes the wrong channels, and on some
models TP's own reshape inference divides by zero while building the graph.

A channels-last region is the exception: `x.permute(0, 2, 3, 1)`, ops over the last dim
(LayerNorm(C), Linear, activations, the views inside a Linear on a 4-D input), then
`permute(0, 3, 1, 2)` (torchvision's ConvNeXt block, LayerNorm2d). There TP's index-i-in,
index-i-out is right, channels being the last dim between the two permutes; `mark_channels_last`
finds such regions (closed on every path) and `channel_op_problem` lets their ops pass.

So: `channel_op_problem` names such ops; `tp_guard` keeps TP from mapping indices through them
(and from crashing on them); `graph.py` marks every group that passes one as unprunable. The
groups on either side (a branch's internal convs) stay prunable.

Also here: `output_layers` (which conv/linear layers' output channels reach a model output,
whatever the head: conv, linear, pooling, flatten) and `coupled_groups` (TP's groups, each
rooted where it spans every coupled channel, so a concat part never roots a partial group).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterable, Iterator
from typing import Any

import torch.nn as nn

__all__ = ["channel_op_problem", "tp_guard", "output_layers", "coupled_groups", "nearest_layer",
           "mark_channels_last"]

_LAYERS = (nn.modules.conv._ConvNd, nn.Linear)
_ALWAYS_MOVES = {"PixelShuffleBackward0": "pixel_shuffle", "PixelUnshuffleBackward0": "pixel_unshuffle",
                 "ChannelShuffleBackward0": "channel_shuffle"}


def _out_shape(grad_fn: Any) -> tuple[int, ...] | None:
    meta = getattr(grad_fn, "_input_metadata", None)  # the forward output's metadata (torch >= 2.1)
    try:
        return tuple(int(v) for v in meta[0].shape)
    except (TypeError, IndexError, AttributeError):
        return None


def _reshape_moves_channels(src: tuple[int, ...], dst: tuple[int, ...]) -> bool:
    """True unless a view from `src` to `dst` keeps dim 1 as whole channels TP can follow."""
    if src == dst:
        return False
    if len(src) < 2 or len(dst) < 2 or src[0] != dst[0]:
        return True
    if src[:2] == dst[:2]:  # channels untouched, spatial dims merged or split
        return False
    if len(dst) == 2 and dst[1] == math.prod(src[1:]):  # flatten: TP maps (N, C, H, W) only
        return len(src) != 4 and math.prod(src[2:]) != 1
    if len(src) == 2 and dst[1] == src[1] and math.prod(dst[2:]) == 1:  # (N, C) -> (N, C, 1, 1)
        return False
    return True


def channel_op_problem(node: Any) -> str | None:
    """'view (1, 16, 8, 8) -> (1, 2, 8, 8, 8)' etc. when TP node `node` moves channels in a way
    TP cannot follow; None when TP maps it right (or it does not touch channels)."""
    if getattr(node, "_locp_channels_last", False) or isinstance(getattr(node, "module", None), nn.Linear):
        return None  # inside a closed channels-last region, or a Linear's own view of N-D input
    grad_fn = getattr(node, "grad_fn", None)
    name = grad_fn.name() if grad_fn is not None and hasattr(grad_fn, "name") else ""
    if name in _ALWAYS_MOVES:
        return _ALWAYS_MOVES[name]
    low = name.lower()
    if "view" in low or "reshape" in low:
        src = getattr(grad_fn, "_saved_self_sym_sizes", None)
        dst = _out_shape(grad_fn)
        if src is None or dst is None:
            return None  # no shapes to judge by: leave it to TP, as before
        src = tuple(int(v) for v in src)
        return f"view {src} -> {dst}" if _reshape_moves_channels(src, dst) else None
    if name.startswith("TransposeBackward"):
        ndim = len(_out_shape(grad_fn) or ()) or 4
        d0, d1 = (int(getattr(grad_fn, a, 0)) % ndim for a in ("_saved_dim0", "_saved_dim1"))
        return f"transpose({d0}, {d1})" if d0 != d1 and {d0, d1} & {0, 1} else None
    if name.startswith("PermuteBackward"):
        dims = tuple(int(d) for d in getattr(grad_fn, "_saved_dims", ()))
        return f"permute{dims}" if dims[:2] != (0, 1) else None
    if name.startswith(("RollBackward", "FlipBackward")):
        dims = tuple(int(d) for d in getattr(grad_fn, "_saved_dims", ()))
        return f"{name[:4].lower()} over dims {dims}" if 1 in dims or not dims else None
    return None


def _permute_dims(node: Any) -> tuple[int, ...] | None:
    grad_fn = getattr(node, "grad_fn", None)
    name = grad_fn.name() if grad_fn is not None and hasattr(grad_fn, "name") else ""
    if not name.startswith("PermuteBackward"):
        return None
    return tuple(int(d) for d in getattr(grad_fn, "_saved_dims", ()))


def _to_last(dims: tuple[int, ...]) -> bool:
    """(0, 2, 3, 1): channels moved to the last dim."""
    return len(dims) >= 3 and dims == (0, *range(2, len(dims)), 1)


def _to_first(dims: tuple[int, ...]) -> bool:
    """(0, 3, 1, 2): the last dim moved back to channels."""
    return len(dims) >= 3 and dims == (0, len(dims) - 1, *range(1, len(dims) - 1))


def _last_dim_op(node: Any, channels: int) -> int | None:
    """The channel count after `node` inside a channels-last region (`channels` before it), or
    None when `node` does not act on the last dim as channels (the region is then not marked)."""
    from torch_pruning import ops

    module = node.module
    out = _out_shape(node.grad_fn)
    if isinstance(module, nn.Linear):  # its node may be the view after the matmul (N-D input)
        return int(module.out_features) if channels in (module.in_features, module.out_features) else None
    if isinstance(module, nn.LayerNorm):
        return channels if tuple(module.normalized_shape) == (channels,) else None
    if node.type == ops.OPTYPE.RESHAPE:
        src = getattr(node.grad_fn, "_saved_self_sym_sizes", None)
        keeps = src is not None and out is not None and int(src[-1]) == out[-1] == channels
        return channels if keeps else None
    if node.type == ops.OPTYPE.ELEMENTWISE and not isinstance(module, _LAYERS):
        if out is None or (len(out) >= 2 and out[-1] == channels):
            return channels
        # the matmul of a Linear on an N-D input (view, addmm, view): the Linear's node follows
        linears = [n.module for n in node.outputs if isinstance(n.module, nn.Linear)]
        if len(out) >= 2 and linears and len(linears) == len(node.outputs) and all(
                m.in_features == channels and m.out_features == out[-1] for m in linears):
            return out[-1]
    return None


def _closes_back(node: Any, channels: int) -> bool:
    dims = _permute_dims(node)
    return dims is not None and _to_first(dims)


def _feeds_linear(node: Any, channels: int) -> bool:
    """`node` is a Linear reading `channels` features, or the matmul just before one."""
    if isinstance(node.module, nn.Linear):
        return node.module.in_features == channels
    return bool(node.outputs) and all(isinstance(o.module, nn.Linear) and o.module.in_features == channels
                                      and not isinstance(node.module, _LAYERS) for o in node.outputs)


def _last_dim_region(start: Any, channels: int, closes: Any) -> list[Any] | None:
    """The nodes after `start` up to where `closes(node, channels)` on every path, all acting on
    the last dim as channels; None when a path meets anything else (a conv, a concat, another
    permute, a model output)."""
    region, seen = [start], {id(start)}
    stack = [(n, channels) for n in start.outputs]
    while stack:
        node, channels = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        region.append(node)
        if closes(node, channels):
            continue
        after = None if _permute_dims(node) is not None else _last_dim_op(node, channels)
        if after is None or not node.outputs:
            return None
        stack.extend((n, after) for n in node.outputs)
    return region


def mark_channels_last(dg: Any) -> int:
    """Mark the ops of every closed channels-last region of TP graph `dg` (see the module
    docstring), and the views between two Linears on N-D inputs (an MLP's hidden features),
    as mapping channels right; returns how many regions were marked."""
    marked = 0
    for node in list(dg.module2node.values()):
        dims = _permute_dims(node)
        shape = _out_shape(node.grad_fn) if getattr(node, "grad_fn", None) is not None else None
        region = None
        if dims is not None and _to_last(dims) and shape is not None:
            region = _last_dim_region(node, shape[-1], _closes_back)
        elif isinstance(node.module, nn.Linear) and shape is not None and len(shape) > 2:
            region = _last_dim_region(node, int(node.module.out_features), _feeds_linear)
        if region is not None:
            for n in region:
                n._locp_channels_last = True
            marked += 1
    return marked


def _fix_split(node: Any) -> bool:
    """Give a channel split (`chunk`, `split`) its real sizes, outputs in chunk order.

    TP reads the sizes off attributes older torch versions saved; on torch 2.x it falls back to
    inferring them from the consumers, which goes wrong after a concat or shuffle (ShuffleNetV2's
    `chunk`), and it pairs sizes with consumers in the order it traced them, not chunk order.
    Here both come from the autograd node: the saved input size and split size(s), and the
    output number each consumer reads. False when that is not possible (then TP must not map).
    """
    if getattr(node, "_locp_split", None) is not None:
        return node._locp_split
    grad_fn = node.grad_fn
    ok = False
    sizes_in = getattr(grad_fn, "_saved_self_sym_sizes", None)
    dim = getattr(grad_fn, "_saved_dim", None)
    if sizes_in is not None and dim is not None and int(dim) % len(sizes_in) == 1:
        total = int(sizes_in[1])
        if hasattr(grad_fn, "_saved_split_sizes"):
            sizes = [int(v) for v in grad_fn._saved_split_sizes]
        else:
            step = int(getattr(grad_fn, "_saved_split_size", 0)) or total
            sizes = [min(step, total - i) for i in range(0, total, step)]
        chunk_of = {}
        for out in node.outputs:
            nrs = {nr for fn, nr in getattr(out.grad_fn, "next_functions", ()) if fn is grad_fn}
            if len(nrs) == 1:
                chunk_of[out] = nrs.pop()
        if len(chunk_of) == len(node.outputs) and len(set(chunk_of.values())) == len(chunk_of):
            starts = [sum(sizes[:i]) for i in range(len(sizes))]
            used = sorted(node.outputs, key=chunk_of.__getitem__)
            kept = [sizes[chunk_of[o]] for o in used]
            # TP pairs outputs[i] with contiguous offsets: right only if the chunks read are too.
            ok = [starts[chunk_of[o]] for o in used] == [sum(kept[:i]) for i in range(len(kept))]
            if ok:
                node.outputs[:] = used
                node.module.split_sizes = kept
                node.module.offsets = [sum(kept[:i]) for i in range(len(kept) + 1)]
    node._locp_split = ok
    return ok


@contextlib.contextmanager
def tp_guard(failed: set[Any] | None = None) -> Iterator[None]:
    """Keep TP from mapping indices through reshapes that move channels while the block runs.

    TP recomputes its index mappings in `build_dependency` and in every `get_pruning_group`
    (also inside `Group.prune`), so each call into TP must run inside this. A reshape whose
    mapping TP fails to infer (it divides by a channel count of 0 on ShuffleNetV2) is left
    unmapped and added to `failed`, for the caller to mark its groups unprunable.
    """
    from torch_pruning.dependency import index_mapping as im

    original, original_split = im.update_reshape_index_mapping, im.update_split_index_mapping

    def guarded(graph: Any, node: Any) -> None:
        if channel_op_problem(node) is not None or getattr(node, "_locp_channels_last", False):
            return  # moves channels (groups marked fixed), or channels-last: index i in, i out
        try:
            original(graph, node)
        except ZeroDivisionError:
            if failed is not None:
                failed.add(node)

    def guarded_split(graph: Any, node: Any) -> None:
        if not _fix_split(node):  # its groups are unprunable anyway (a split): just do not crash
            node.enable_index_mapping = False
        original_split(graph, node)

    im.update_reshape_index_mapping, im.update_split_index_mapping = guarded, guarded_split
    try:
        yield
    finally:
        im.update_reshape_index_mapping, im.update_split_index_mapping = original, original_split


def output_layers(dg: Any) -> set[nn.Module]:
    """Conv/linear modules whose output channels reach a model output.

    Walks back from every output node through every op that is not a conv/linear (activations,
    pooling, flatten, concat, adds, BatchNorm), stopping at the first conv/linear on each path;
    a depthwise conv passes its input channels on, so the walk goes through it too.
    """
    from torch_pruning import ops

    found: set[nn.Module] = set()
    stack = [n for n in dg.module2node.values() if not n.outputs]
    seen: set[int] = set()
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node.module, _LAYERS):
            found.add(node.module)
            if node.type != ops.OPTYPE.DEPTHWISE_CONV:
                continue
        stack.extend(node.inputs)
    return found


def nearest_layer(node: Any, names: dict[Any, str]) -> str | None:
    """Name of the closest conv/linear upstream of TP node `node` (None: the model input)."""
    stack, seen = list(node.inputs), set()
    while stack:
        n = stack.pop(0)
        if id(n) in seen:
            continue
        seen.add(id(n))
        if isinstance(n.module, _LAYERS) and n.module in names:
            return names[n.module]
        stack.extend(n.inputs)
    return None


def coupled_groups(dg: Any, modules: Iterable[nn.Module], max_reroots: int = 8) -> list[Any]:
    """One TP group per set of coupled channels, each rooted at a layer it covers in full.

    TP's `get_all_groups` roots a group at whichever layer it meets first; rooted at one part of
    a concat that is then added to a wider tensor, the group holds only that part's share of
    the wider layer's channels. Here a group with such a partly covered layer is rebuilt from
    that layer, until every conv/linear in it is covered in full.
    """
    groups, visited = [], set()
    for m in modules:
        if m in visited or m not in dg.module2node:
            continue
        pruner = dg.get_pruner_of_module(m)
        if pruner is None or pruner.get_out_channels(m) is None:
            continue
        root, grp = m, None
        for _ in range(max_reroots):
            grp = dg.get_pruning_group(root, pruner.prune_out_channels,
                                       list(range(pruner.get_out_channels(root))))
            partial = [item.dep.target.module for item in grp
                       if dg.is_out_channel_pruning_fn(item.dep.handler)
                       and isinstance(item.dep.target.module, _LAYERS)
                       and len(set(item.idxs)) < dg.get_out_channels(item.dep.target.module)]
            if not partial:
                break
            root = max(partial, key=dg.get_out_channels)
            pruner = dg.get_pruner_of_module(root)
        for item in grp:
            if dg.is_out_channel_pruning_fn(item.dep.handler):
                visited.add(item.dep.target.module)
        groups.append(grp)
    return groups
